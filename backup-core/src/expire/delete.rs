//! Deleting what expire decided, so that a crash at any point leaves nothing that looks
//! complete but is not: a backup's record goes first (from then on it is no backup), then the
//! rest of its files, all under its `backup.<id>` lease; a later run finishes what a crash left
//! (catalog::lifecycle). WAL files are removed after the backups, so a kept backup never lacks
//! WAL it needs.

use super::retain::WalFile;
use super::ExpireError;
use crate::catalog::lifecycle;
use crate::repo::Repository;

/// Finishes deleting what runs that died left (unfinished backups whose writer is gone).
pub(super) fn leftovers(repo: &Repository) -> Result<(), ExpireError> {
    let removed = lifecycle::remove_dead(repo.store().as_ref(), "pgstream expire (cleanup)")?;
    for id in removed.ids.iter().chain(&removed.legacy) {
        tracing::info!(backup_id = %id, "finished removing an unfinished or expired backup");
    }
    Ok(())
}

/// Removes the temporary files writers killed mid-write left (a WAL segment being stored, a
/// config being rewritten); a failure is only worth a warning.
pub(super) fn abandoned_temporaries(repo: &Repository) {
    match repo.store().remove_abandoned_temporaries() {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            files = n,
            "removed temporary files that killed writers left"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not remove temporary files killed writers left")
        }
    }
}

/// Deletes backup `id`: record first, then its other files.
pub(super) fn backup(repo: &Repository, id: &str) -> Result<(), ExpireError> {
    lifecycle::delete_backup(repo.store().as_ref(), id, "pgstream expire")?;
    tracing::info!("backup deleted");
    Ok(())
}

/// Removes WAL files (durably; directories left empty go too).
pub(super) fn wal_files(repo: &Repository, files: &[WalFile]) -> Result<(), ExpireError> {
    if files.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = files.iter().map(|f| f.stored.clone()).collect();
    repo.store().delete(&names)?;
    tracing::info!(files = files.len(), "WAL files deleted");
    Ok(())
}
