//! What `pgstream status` looks at in a repository, read without the passphrase: the newest
//! archived WAL segment and the partial segment `receive-wal` is writing, by name and
//! modification time (their contents are encrypted; their names and times are not).

use std::time::SystemTime;

use crate::index::{self, WalFileKind};
use crate::repo::config::RepoConfig;
use crate::store::{Store, StoreError};

/// One file of the WAL archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalFile {
    /// The segment's 24-hex-digit name.
    pub segment: String,
    /// The stored file's modification time: when it was archived (or last written, for a
    /// partial segment being received).
    pub modified: SystemTime,
}

/// The newest files of the WAL archive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalActivity {
    /// The most recently archived complete segment.
    pub newest_segment: Option<WalFile>,
    /// The most recently written `receive-wal` partial segment.
    pub receiving: Option<WalFile>,
    /// How many complete segments the archive holds.
    pub segments: usize,
}

/// Looks at `wal/` by name and modification time (the repository index). Archived `.partial`
/// segments and anything not named like WAL of this repository are ignored. A repository
/// without WAL has an empty archive.
pub fn wal_activity(store: &dyn Store, config: &RepoConfig) -> Result<WalActivity, StoreError> {
    let listing = index::scan_wal(store, config)?;
    let mut out = WalActivity::default();
    for o in &listing.files {
        let slot = match o.file.kind {
            WalFileKind::Segment => {
                out.segments += 1;
                &mut out.newest_segment
            }
            WalFileKind::Receiving => &mut out.receiving,
            _ => continue,
        };
        let file = WalFile {
            segment: o.file.segment.to_string(),
            modified: o.modified.unwrap_or(SystemTime::UNIX_EPOCH),
        };
        let replace = match slot {
            Some(f) => newer(&file, f),
            None => true,
        };
        if replace {
            *slot = Some(file);
        }
    }
    Ok(out)
}

/// Later modification time wins; the higher segment name breaks a tie.
fn newer(a: &WalFile, b: &WalFile) -> bool {
    (a.modified, &a.segment) > (b.modified, &b.segment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mem::MemStore;
    use crate::store::PutMode;

    #[test]
    fn newest_files_are_found() {
        let store = MemStore::default();
        let config = crate::test_support::bound_config();
        let shard = "wal/0000000100000000";
        assert_eq!(wal_activity(&store, &config).unwrap().newest_segment, None);
        for f in [
            "000000010000000000000003.lz4",
            "000000010000000000000004.lz4",
            "000000010000000000000005.partial.recv",
            "000000010000000000000006.partial.lz4",
        ] {
            store
                .put(&format!("{shard}/{f}"), b"x", PutMode::Create)
                .unwrap();
        }
        let a = wal_activity(&store, &config).unwrap();
        assert_eq!(a.segments, 2);
        assert_eq!(
            a.receiving.unwrap().segment,
            "000000010000000000000005".to_string()
        );
        assert!(a.newest_segment.is_some());
    }

    #[test]
    fn a_repository_without_wal_is_empty() {
        let config = crate::test_support::bound_config();
        assert_eq!(
            wal_activity(&MemStore::default(), &config).unwrap(),
            WalActivity::default()
        );
    }
}
