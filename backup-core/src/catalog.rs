//! The backup catalog: one record per complete backup, in `backups/<id>/backup.json`.
//!
//! A backup is built in `backups/.<id>.inprogress/` and renamed to `backups/<id>/` only after
//! its last file and its record are durable, so a directory named like a backup id is always a
//! complete, verified backup. An in-progress directory holds a `lock` file locked by the
//! process writing it; a later run removes in-progress directories whose lock is free (their
//! writer died). Layout and fields are documented in docs/format.md.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use pgwire_repl::{Lsn, TimelineId};
use serde::{Deserialize, Serialize};

/// Version of the backup record format.
pub const RECORD_FORMAT: u32 = 1;
/// Name of the record inside a backup directory.
pub const RECORD_FILE: &str = "backup.json";
/// The directory of backups inside a repository.
pub const BACKUPS_DIR: &str = "backups";
const IN_PROGRESS_SUFFIX: &str = ".inprogress";
const LOCK_FILE: &str = "lock";

/// A catalog problem.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("backup record {path} is invalid: {reason}")]
    InvalidRecord { path: PathBuf, reason: String },
    #[error("no backup {id:?} in the repository (see `pgstream list`)")]
    NoSuchBackup { id: String },
    #[error("the repository has no complete backup yet")]
    NoBackups,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CatalogError + '_ {
    move |source| CatalogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One archive (tar stream) of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRecord {
    /// The server's name for it: `base.tar`, `<oid>.tar` (plus `.gz`/`.lz4`/`.zst` when the
    /// server compressed it).
    pub name: String,
    /// The file in the backup directory holding it.
    pub file: String,
    /// The tablespace OID; `None` for the main data directory.
    pub tablespace_oid: Option<u32>,
    /// The tablespace's location on the source server.
    pub tablespace_location: Option<String>,
    /// Bytes of tar data (uncompressed).
    pub raw_bytes: u64,
    /// Bytes stored in the repository.
    pub stored_bytes: u64,
    /// The server-side compression the archive arrived with, if any.
    pub server_compression: Option<String>,
}

/// Lifecycle state; only complete backups are ever visible under their id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupStatus {
    Complete,
}

/// Everything the catalog records of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub format: u32,
    pub id: String,
    pub label: String,
    pub status: BackupStatus,
    #[serde(with = "lsn_text")]
    pub start_lsn: Lsn,
    pub start_timeline: u32,
    #[serde(with = "lsn_text")]
    pub end_lsn: Lsn,
    pub end_timeline: u32,
    /// RFC 3339, UTC.
    pub start_time: String,
    pub end_time: String,
    pub duration_seconds: f64,
    pub server_version: String,
    pub server_major: u32,
    /// As a string: JSON numbers lose precision above 2^53.
    pub system_identifier: String,
    pub wal_segment_size: u64,
    /// Uncompressed bytes of all archives.
    pub raw_bytes: u64,
    /// Bytes stored for this backup (archives, manifest, its own WAL), before the record.
    pub stored_bytes: u64,
    pub compression: String,
    pub encryption: String,
    pub archives: Vec<ArchiveRecord>,
    /// The server's backup_manifest, as stored.
    pub manifest_file: String,
    /// Files checked against the manifest while streaming.
    pub files_verified: u64,
    /// WAL segments from the start to the end of the backup, in order. Complete ones are in
    /// the repository's `wal/`; the last may be a partial segment kept in the backup's
    /// directory (see `partial_wal_file`).
    pub wal_segments: Vec<String>,
    /// The partial segment holding the end of the backup, if the server had not finished
    /// it: the file in the backup directory, and how many bytes of it are real WAL.
    pub partial_wal_file: Option<PartialWal>,
    /// Timeline history files the backup needs (timelines above 1), in `wal/`.
    pub history_files: Vec<String>,
}

/// The unfinished segment at the end of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialWal {
    pub segment: String,
    pub file: String,
    pub valid_bytes: u64,
}

impl BackupRecord {
    pub fn start_timeline(&self) -> TimelineId {
        TimelineId(self.start_timeline)
    }

    pub fn end_timeline(&self) -> TimelineId {
        TimelineId(self.end_timeline)
    }

    pub fn system_identifier(&self) -> Option<u64> {
        self.system_identifier.parse().ok()
    }
}

mod lsn_text {
    use pgwire_repl::Lsn;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(lsn: &Lsn, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&lsn.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// RFC 3339 in UTC with second precision, e.g. `2026-11-21T06:15:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A new backup id from its start time: `YYYYMMDDTHHMMSSZ`, sortable and filesystem-safe.
/// `taken` says whether an id is in use; a suffix `-2`, `-3`, ... keeps ids unique.
pub fn new_backup_id(start: SystemTime, taken: impl Fn(&str) -> bool) -> String {
    let base: String = rfc3339(start)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|id| !taken(id))
        .unwrap_or(base)
}

/// Whether `s` has the shape of a backup id (and so is safe as a path component).
pub fn is_backup_id(s: &str) -> bool {
    let (stamp, suffix) = match s.split_once('-') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let b = stamp.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
        && suffix.is_none_or(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
}

/// Where a backup's files live.
#[derive(Debug, Clone)]
pub struct Catalog {
    backups: PathBuf,
}

impl Catalog {
    /// The catalog of the repository at `repo`.
    pub fn new(repo: &Path) -> Catalog {
        Catalog {
            backups: repo.join(BACKUPS_DIR),
        }
    }

    /// `backups/`.
    pub fn dir(&self) -> &Path {
        &self.backups
    }

    /// The directory of a complete backup.
    pub fn backup_dir(&self, id: &str) -> PathBuf {
        self.backups.join(id)
    }

    /// The directory a backup is built in.
    pub fn in_progress_dir(&self, id: &str) -> PathBuf {
        self.backups.join(format!(".{id}{IN_PROGRESS_SUFFIX}"))
    }

    /// The lock file of an in-progress backup.
    pub fn lock_path(dir: &Path) -> PathBuf {
        dir.join(LOCK_FILE)
    }

    /// Whether an id is used by a complete or in-progress backup.
    pub fn id_taken(&self, id: &str) -> bool {
        self.backup_dir(id).exists() || self.in_progress_dir(id).exists()
    }

    /// Every complete backup, oldest first. A damaged record is an error naming its file
    /// (never silently skipped: a backup that cannot be listed cannot be trusted).
    pub fn list(&self) -> Result<Vec<BackupRecord>, CatalogError> {
        let entries = match fs::read_dir(&self.backups) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.backups)(e)),
        };
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&self.backups))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !is_backup_id(name) {
                continue;
            }
            records.push(self.read(name)?);
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    /// The record of backup `id`.
    pub fn read(&self, id: &str) -> Result<BackupRecord, CatalogError> {
        if !is_backup_id(id) {
            return Err(CatalogError::NoSuchBackup { id: id.to_string() });
        }
        let path = self.backup_dir(id).join(RECORD_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CatalogError::NoSuchBackup { id: id.to_string() })
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let record: BackupRecord =
            serde_json::from_slice(&bytes).map_err(|e| CatalogError::InvalidRecord {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if record.format != RECORD_FORMAT {
            return Err(CatalogError::InvalidRecord {
                path,
                reason: format!(
                    "record format {} is not supported by this pgstream (it reads format {RECORD_FORMAT})",
                    record.format
                ),
            });
        }
        if record.id != id {
            return Err(CatalogError::InvalidRecord {
                path,
                reason: format!("it records id {:?}", record.id),
            });
        }
        Ok(record)
    }

    /// `id`, or the newest backup for `latest`.
    pub fn resolve(&self, id: &str) -> Result<BackupRecord, CatalogError> {
        if id == "latest" {
            self.list()?.pop().ok_or(CatalogError::NoBackups)
        } else {
            self.read(id)
        }
    }

    /// In-progress directories whose writer is gone (their lock is free). The caller removes
    /// them; a directory whose lock is held belongs to a running backup and is left alone.
    pub fn stale_in_progress(&self) -> Result<Vec<PathBuf>, CatalogError> {
        let entries = match fs::read_dir(&self.backups) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.backups)(e)),
        };
        let mut stale = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&self.backups))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with('.') && name.ends_with(IN_PROGRESS_SUFFIX)) {
                continue;
            }
            let dir = entry.path();
            let lock = Self::lock_path(&dir);
            let free = match fs::File::open(&lock) {
                Ok(f) => match f.try_lock() {
                    Ok(()) => true,
                    Err(fs::TryLockError::WouldBlock) => false,
                    Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock)(e)),
                },
                // Died before creating its lock.
                Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                Err(e) => return Err(io_err(&lock)(e)),
            };
            if free {
                stale.push(dir);
            }
        }
        Ok(stale)
    }
}

#[cfg(test)]
mod tests;
