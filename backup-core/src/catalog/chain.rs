//! Incremental backups (PostgreSQL 17+) and their chains: what a record says of the backup it
//! is relative to, and the walk from any backup back to the full backup its chain starts with.
//!
//! A chain is `full ← incremental ← incremental …`; each incremental names its parent (the
//! backup whose manifest was uploaded before it), the chain's full backup and its depth, and
//! pins the parent by the SHA-256 of the parent's stored `backup_manifest`. Restoring any
//! member needs every backup before it in the chain.

use serde::{Deserialize, Serialize};

use super::{BackupRecord, Catalog, CatalogError};

/// What an incremental backup is relative to (`incremental` in its record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementalOf {
    /// The backup whose manifest the server compared against.
    pub parent: String,
    /// Hex SHA-256 of the parent's stored `backup_manifest` (decrypted, decompressed): the
    /// link to exactly that parent.
    pub parent_manifest_sha256: String,
    /// The full backup the chain starts with.
    pub full: String,
    /// Backups in the chain up to this one: 2 for an incremental of a full backup.
    pub depth: u32,
    /// BLCKSZ of the cluster (`SHOW block_size`).
    pub block_size: u32,
    /// RELSEG_SIZE in blocks (`SHOW segment_size` / `block_size`).
    pub segment_blocks: u32,
}

/// Why a chain cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(
        "backup {child} is an incremental backup of {parent}, which is not in the repository \
         (expired or deleted): {child} cannot be restored; take a new full backup"
    )]
    MissingParent { child: String, parent: String },
    #[error("backup {child}: its parent {parent} cannot be read: {source}")]
    UnreadableParent {
        child: String,
        parent: String,
        #[source]
        source: CatalogError,
    },
    #[error("backup {child} does not fit its parent {parent}: {why}")]
    WrongParent {
        child: String,
        parent: String,
        why: String,
    },
}

impl BackupRecord {
    /// Whether this is an incremental backup.
    pub fn is_incremental(&self) -> bool {
        self.incremental.is_some()
    }

    /// The parent's id, for an incremental backup.
    pub fn parent(&self) -> Option<&str> {
        self.incremental.as_ref().map(|i| i.parent.as_str())
    }

    /// The full backup its chain starts with (itself, for a full backup).
    pub fn chain_full(&self) -> &str {
        self.incremental
            .as_ref()
            .map_or(self.id.as_str(), |i| i.full.as_str())
    }

    /// Backups in its chain up to it (1 for a full backup).
    pub fn chain_depth(&self) -> u32 {
        self.incremental.as_ref().map_or(1, |i| i.depth)
    }
}

/// Checks what `child` records of `parent` against the parent's own record (not the manifest
/// link, which needs the parent's files).
pub fn check_link(child: &BackupRecord, parent: &BackupRecord) -> Result<(), ChainError> {
    let Some(inc) = &child.incremental else {
        return Ok(());
    };
    let wrong = |why: String| ChainError::WrongParent {
        child: child.id.clone(),
        parent: parent.id.clone(),
        why,
    };
    if inc.parent != parent.id {
        return Err(wrong(format!("it names {} as its parent", inc.parent)));
    }
    if inc.full != parent.chain_full() || inc.depth != parent.chain_depth() + 1 {
        return Err(wrong(format!(
            "it records chain {} at depth {}, the parent is at depth {} of chain {}",
            inc.full,
            inc.depth,
            parent.chain_depth(),
            parent.chain_full()
        )));
    }
    if parent.system_identifier != child.system_identifier {
        return Err(wrong(format!(
            "system identifiers differ ({} and {})",
            parent.system_identifier, child.system_identifier
        )));
    }
    if parent.server_major != child.server_major {
        return Err(wrong(format!(
            "PostgreSQL {} and {}",
            parent.server_major, child.server_major
        )));
    }
    if parent.end_lsn > child.start_lsn {
        return Err(wrong(format!(
            "the parent ends at {}, after this backup starts at {}",
            parent.end_lsn, child.start_lsn
        )));
    }
    if let Some(p) = &parent.incremental {
        if (p.block_size, p.segment_blocks) != (inc.block_size, inc.segment_blocks) {
            return Err(wrong("the block geometry differs".into()));
        }
    }
    Ok(())
}

impl Catalog<'_> {
    /// The chain of `record`, full backup first and `record` last (just `record` for a full
    /// backup). Every link is checked with [`check_link`]; a missing parent is an error naming
    /// it.
    pub fn chain(&self, record: &BackupRecord) -> Result<Vec<BackupRecord>, ChainError> {
        let mut chain = vec![record.clone()];
        while let Some(parent_id) = chain.last().and_then(|r| r.parent()).map(str::to_string) {
            // check_link makes depths fall by one per link, so the walk ends.
            let child = chain.last().expect("not empty");
            let parent = match self.read(&parent_id) {
                Ok(p) => p,
                Err(CatalogError::NoSuchBackup { .. }) => {
                    return Err(ChainError::MissingParent {
                        child: child.id.clone(),
                        parent: parent_id,
                    })
                }
                Err(source) => {
                    return Err(ChainError::UnreadableParent {
                        child: child.id.clone(),
                        parent: parent_id,
                        source,
                    })
                }
            };
            check_link(child, &parent)?;
            chain.push(parent);
        }
        chain.reverse();
        Ok(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mem::MemStore;
    use crate::test_support::backup_record;

    fn incremental(id: &str, segno: u64, parent: &BackupRecord) -> BackupRecord {
        BackupRecord {
            incremental: Some(IncrementalOf {
                parent: parent.id.clone(),
                parent_manifest_sha256: "00".repeat(32),
                full: parent.chain_full().to_string(),
                depth: parent.chain_depth() + 1,
                block_size: 8192,
                segment_blocks: 131_072,
            }),
            ..backup_record(id, segno)
        }
    }

    fn write(cat: &Catalog, r: &BackupRecord) {
        let mut r = r.clone();
        r.seal(None).unwrap();
        cat.write(&r).unwrap();
    }

    #[test]
    fn a_chain_is_walked_back_to_its_full_backup() {
        let store = MemStore::new("chain");
        let cat = Catalog::new(&store);
        let full = backup_record("20261121T060000Z", 2);
        let i1 = incremental("20261122T060000Z", 4, &full);
        let i2 = incremental("20261123T060000Z", 6, &i1);
        for r in [&full, &i1, &i2] {
            write(&cat, r);
        }
        let ids = |c: Vec<BackupRecord>| c.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(cat.chain(&full).unwrap()),
            std::slice::from_ref(&full.id)
        );
        assert_eq!(
            ids(cat.chain(&i2).unwrap()),
            [full.id.clone(), i1.id.clone(), i2.id.clone()]
        );
        assert_eq!((i2.chain_full(), i2.chain_depth()), (full.id.as_str(), 3));
        // An older record (no `incremental` field) reads as a full backup.
        let json = serde_json::to_string(&full).unwrap();
        assert!(!json.contains("incremental"), "{json}");
    }

    #[test]
    fn a_missing_parent_is_named() {
        let store = MemStore::new("chain");
        let cat = Catalog::new(&store);
        let full = backup_record("20261121T060000Z", 2);
        let i1 = incremental("20261122T060000Z", 4, &full);
        write(&cat, &i1);
        let e = cat.chain(&i1).unwrap_err();
        assert!(matches!(e, ChainError::MissingParent { .. }), "{e}");
        assert!(e.to_string().contains(&full.id), "{e}");
    }

    #[test]
    fn a_link_to_the_wrong_parent_is_refused() {
        let full = backup_record("20261121T060000Z", 2);
        let other = backup_record("20261120T060000Z", 1);
        let i1 = incremental("20261122T060000Z", 4, &full);
        // Another backup under the parent's name: its chain does not match.
        let impostor = BackupRecord {
            id: full.id.clone(),
            ..incremental("20261121T060000Z", 2, &other)
        };
        let e = check_link(&i1, &impostor).unwrap_err();
        assert!(matches!(e, ChainError::WrongParent { .. }), "{e}");
        // A parent that ends after the child starts.
        let late = BackupRecord {
            end_lsn: pgwire_repl::Lsn(u64::MAX),
            ..full.clone()
        };
        assert!(check_link(&i1, &late).is_err());
        let foreign = BackupRecord {
            system_identifier: "1".into(),
            ..full.clone()
        };
        assert!(check_link(&i1, &foreign).is_err());
        assert!(check_link(&i1, &full).is_ok());
    }
}
