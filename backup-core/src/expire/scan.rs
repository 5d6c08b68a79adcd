//! What `expire` reads from disk before deciding: the files of the WAL archive by kind, the
//! history files, backups being written, and directories a crashed expire left behind; and the
//! lock that keeps two `expire`/`keep` runs from interleaving.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use pgwire_repl::TimelineId;

use super::retain::{WalFile, WalFileKind};
use super::ExpireError;
use crate::catalog::{Catalog, RECORD_FILE};
use crate::fsutil::PRIVATE_FILE_MODE;
use crate::layout::{self, WAL_DIR};
use crate::receive::start::PARTIAL_SUFFIX;
use crate::repo::Repository;
use crate::wal::{history_file_timeline, is_wal_file_name, SegmentName, WalSegmentSize};

/// The lock `expire` and `keep` hold, in `backups/`.
pub const LOCK_FILE: &str = ".expire.lock";
/// The suffix of a backup directory being deleted: `backups/.<id>.expiring`.
pub const EXPIRING_SUFFIX: &str = ".expiring";

/// Held while `expire` or `keep` runs (an exclusive `flock`, released when dropped).
#[derive(Debug)]
pub struct ExpireLock {
    _file: File,
}

/// Takes the lock in `backups_dir` (which must exist), waiting for another run to finish.
/// Without `create` (a dry run, which must not change a single file) a missing lock file is not
/// created and `None` is returned: no expire or keep ever ran to race with.
pub fn lock(backups_dir: &Path, create: bool) -> Result<Option<ExpireLock>, ExpireError> {
    let path = backups_dir.join(LOCK_FILE);
    let io_err = |source| ExpireError::Lock {
        path: path.clone(),
        source,
    };
    let opened = OpenOptions::new()
        .create(create)
        .truncate(false)
        .write(true)
        .mode(PRIVATE_FILE_MODE)
        .open(&path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            tracing::info!(lock = %path.display(), "waiting for another pgstream expire or keep on this repository");
            file.lock().map_err(io_err)?;
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err(e)),
    }
    Ok(Some(ExpireLock { _file: file }))
}

/// Entry names of `dir` (missing: none), without temporary files of writes in progress.
fn names(dir: &Path) -> Result<Vec<String>, ExpireError> {
    let err = |source| ExpireError::List {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        if let Ok(name) = entry.map_err(err)?.file_name().into_string() {
            if !name.contains(".tmp.") {
                out.push(name);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn size_of(path: &Path) -> Result<u64, ExpireError> {
    fs::symlink_metadata(path)
        .map(|m| m.len())
        .map_err(|source| ExpireError::List {
            path: path.to_path_buf(),
            source,
        })
}

/// Bytes of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> Result<u64, ExpireError> {
    let mut total = 0;
    for name in names(dir)? {
        let path = dir.join(&name);
        let meta = fs::symlink_metadata(&path).map_err(|source| ExpireError::List {
            path: path.clone(),
            source,
        })?;
        total += if meta.is_dir() {
            dir_bytes(&path)?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// The WAL archive as expire sees it.
#[derive(Debug, Default)]
pub struct WalListing {
    /// Files that belong to a segment (candidates for deletion).
    pub files: Vec<WalFile>,
    /// Timelines whose history file is in the archive.
    pub history_timelines: Vec<TimelineId>,
}

/// Lists `wal/`. Names expire does not recognise (another codec's suffix, stray files) are not
/// listed, so they are never deleted.
pub fn scan_wal(repo: &Repository, seg_size: WalSegmentSize) -> Result<WalListing, ExpireError> {
    let suffix = layout::suffix(repo.codec());
    let receiving = if repo.codec().encryption.is_some() {
        format!("{PARTIAL_SUFFIX}.enc")
    } else {
        PARTIAL_SUFFIX.to_string()
    };
    let wal = repo.dir().join(WAL_DIR);
    let mut listing = WalListing::default();
    for top in names(&wal)? {
        let path = wal.join(&top);
        if path.is_dir() {
            if top.len() != 16 {
                continue;
            }
            for file in names(&path)? {
                let Some(kind) = classify(&file, &top, &suffix, &receiving) else {
                    continue;
                };
                let Ok(segment) = SegmentName::parse(&file[..24], seg_size) else {
                    continue;
                };
                listing.files.push(WalFile {
                    stored: format!("{WAL_DIR}/{top}/{file}"),
                    kind,
                    segment,
                    bytes: size_of(&path.join(&file))?,
                });
            }
        } else if let Some(tli) = top
            .strip_suffix(suffix.as_str())
            .and_then(history_file_timeline)
        {
            listing.history_timelines.push(tli);
        }
    }
    Ok(listing)
}

/// The kind of `file` in directory `dir` of `wal/`, or `None` for a name that is not one of
/// a segment's files there.
fn classify(file: &str, dir: &str, suffix: &str, receiving: &str) -> Option<WalFileKind> {
    let (segment, rest) = (file.get(..24)?, file.get(24..)?);
    if !is_wal_file_name(segment) || !file.starts_with(dir) {
        return None;
    }
    if rest == receiving {
        return Some(WalFileKind::Receiving);
    }
    let rest = rest.strip_suffix(suffix)?;
    if rest.is_empty() {
        return Some(WalFileKind::Segment);
    }
    if rest == ".partial" {
        return Some(WalFileKind::Partial);
    }
    // `.<8 hex>.backup`
    let offset = rest.strip_prefix('.')?.strip_suffix(".backup")?;
    (offset.len() == 8 && offset.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(WalFileKind::BackupHistory)
}

/// Backups being written: `backups/.<id>.inprogress` directories whose lock is held, or that
/// already hold their record (about to be renamed into place). Their start is not recorded
/// anywhere expire can read, so while one exists no WAL is deleted.
pub fn backups_in_progress(catalog: &Catalog) -> Result<Vec<String>, ExpireError> {
    let mut out = Vec::new();
    for name in names(catalog.dir())? {
        if !(name.starts_with('.') && name.ends_with(".inprogress")) {
            continue;
        }
        let dir = catalog.dir().join(&name);
        let lock = Catalog::lock_path(&dir);
        let held = match File::open(&lock) {
            Ok(f) => match f.try_lock() {
                Ok(()) => false,
                Err(fs::TryLockError::WouldBlock) => true,
                Err(fs::TryLockError::Error(source)) => {
                    return Err(ExpireError::List { path: lock, source })
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(source) => return Err(ExpireError::List { path: lock, source }),
        };
        if held || dir.join(RECORD_FILE).exists() {
            out.push(name);
        }
    }
    Ok(out)
}

/// `backups/.<id>.expiring` directories: backups a crashed expire had begun to delete.
pub fn leftovers(catalog: &Catalog) -> Result<Vec<PathBuf>, ExpireError> {
    Ok(names(catalog.dir())?
        .into_iter()
        .filter(|n| n.starts_with('.') && n.ends_with(EXPIRING_SUFFIX))
        .map(|n| catalog.dir().join(n))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_files_of_a_segment() {
        let dir = "0000000100000000";
        let c = |f: &str| classify(f, dir, ".lz4.enc", ".partial.recv.enc");
        let seg = "000000010000000000000003";
        assert_eq!(c(&format!("{seg}.lz4.enc")), Some(WalFileKind::Segment));
        assert_eq!(
            c(&format!("{seg}.partial.lz4.enc")),
            Some(WalFileKind::Partial)
        );
        assert_eq!(
            c(&format!("{seg}.partial.recv.enc")),
            Some(WalFileKind::Receiving)
        );
        assert_eq!(
            c(&format!("{seg}.00000028.backup.lz4.enc")),
            Some(WalFileKind::BackupHistory)
        );
        // Another codec, unknown suffixes, a segment in the wrong directory: never touched.
        assert_eq!(c(&format!("{seg}.zst.enc")), None);
        assert_eq!(c(&format!("{seg}.lz4.enc.bak")), None);
        assert_eq!(c(&format!("{seg}.0028.backup.lz4.enc")), None);
        assert_eq!(c("000000020000000000000003.lz4.enc"), None);
        assert_eq!(c("README"), None);
        let plain = |f: &str| classify(f, dir, "", ".partial.recv");
        assert_eq!(plain(seg), Some(WalFileKind::Segment));
        assert_eq!(
            plain(&format!("{seg}.partial.recv")),
            Some(WalFileKind::Receiving)
        );
        assert_eq!(plain(&format!("{seg}.partial")), Some(WalFileKind::Partial));
    }
}
