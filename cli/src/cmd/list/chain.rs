//! What `list` shows of an incremental backup's chain: the backups a restore reads, and how
//! much they store together.

use backup_core::catalog::BackupRecord;

/// The chain of one incremental backup, from the listed records.
pub(super) struct ChainInfo {
    pub parent: String,
    pub full: String,
    pub depth: u32,
    /// Its chain as far as it is in the repository, full backup first, itself last.
    pub ids: Vec<String>,
    /// Bytes stored by those backups together: what a restore reads.
    pub stored_bytes: u64,
    /// The first backup of the chain that is not in the repository (the chain cannot be
    /// restored then).
    pub missing: Option<String>,
}

/// `record`'s chain among `all`; `None` for a full backup.
pub(super) fn chain_info(all: &[BackupRecord], record: &BackupRecord) -> Option<ChainInfo> {
    let inc = record.incremental.as_ref()?;
    let mut ids = vec![record.id.clone()];
    let mut stored_bytes = record.stored_bytes;
    let mut missing = None;
    let mut parent = record.parent();
    while let Some(p) = parent {
        match all.iter().find(|r| r.id == p) {
            Some(r) => {
                ids.push(r.id.clone());
                stored_bytes += r.stored_bytes;
                parent = r.parent();
            }
            None => {
                missing = Some(p.to_string());
                break;
            }
        }
    }
    ids.reverse();
    Some(ChainInfo {
        parent: inc.parent.clone(),
        full: inc.full.clone(),
        depth: inc.depth,
        ids,
        stored_bytes,
        missing,
    })
}
