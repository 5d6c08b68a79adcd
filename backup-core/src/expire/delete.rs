//! Deleting what expire decided, so that a crash at any point leaves nothing that looks
//! complete but is not: a backup directory is first renamed to the hidden
//! `backups/.<id>.expiring` (and `backups/` fsynced), and only then removed; a later expire
//! finishes such leftovers. WAL files are removed after the backups, so a kept backup never
//! lacks WAL it needs, and their directories are fsynced.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::retain::WalFile;
use super::scan::EXPIRING_SUFFIX;
use super::ExpireError;
use crate::catalog::Catalog;
use crate::fsutil::{self, FsError};
use crate::layout::WAL_DIR;

/// Finishes deleting backups a crashed expire had marked.
pub(super) fn leftovers(dirs: &[PathBuf]) -> Result<(), ExpireError> {
    for dir in dirs {
        tracing::info!(dir = %dir.display(), "finishing the deletion of an expired backup");
        fsutil::remove_dir_all_durably(dir)?;
    }
    Ok(())
}

/// Marks backup `id` as being deleted (it stops being a backup at once), then removes it.
pub(super) fn backup(catalog: &Catalog, id: &str) -> Result<(), ExpireError> {
    let marked = catalog.dir().join(format!(".{id}{EXPIRING_SUFFIX}"));
    fsutil::rename_durably(&catalog.backup_dir(id), &marked)?;
    fsutil::remove_dir_all_durably(&marked)?;
    tracing::info!("backup deleted");
    Ok(())
}

/// Removes WAL files, then fsyncs every directory they were in; directories left empty are
/// removed too.
pub(super) fn wal_files(repo: &Path, files: &[WalFile]) -> Result<(), ExpireError> {
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut result: Result<(), ExpireError> = Ok(());
    for f in files {
        let path = repo.join(&f.stored);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                result = Err(FsError::new("removing", &path, e).into());
                break;
            }
        }
        if let Some(parent) = path.parent() {
            dirs.insert(parent.to_path_buf());
        }
    }
    // Even after a failure: what was removed stays removed after a crash.
    for dir in &dirs {
        fsutil::fsync_dir(dir)?;
    }
    result?;
    let mut removed_dir = false;
    for dir in &dirs {
        // Fails, harmlessly, when something is left in it (or was just written to it).
        if fs::remove_dir(dir).is_ok() {
            removed_dir = true;
        }
    }
    if removed_dir {
        fsutil::fsync_dir(&repo.join(WAL_DIR))?;
    }
    if !files.is_empty() {
        tracing::info!(files = files.len(), "WAL files deleted");
    }
    Ok(())
}
