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

use crate::crypto::{self, DataKey};

pub mod chain;
pub use chain::{ChainError, IncrementalOf};

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
    /// The record's checksum or MAC does not match: damaged or altered.
    #[error("backup record {path} is damaged or was altered: {reason}")]
    Damaged { path: PathBuf, reason: String },
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
    /// For an incremental backup (PostgreSQL 17+): the backup it is relative to (chain.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalOf>,
    /// SHA-256 (hex) of the record serialized without `checksum` and `mac`: catches damage,
    /// checked on every read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// In encrypted repositories, HMAC-SHA256 (hex) of the same bytes under a key derived from
    /// the data key: catches alteration, checked when the repository is opened with its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The unfinished segment at the end of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialWal {
    pub segment: String,
    pub file: String,
    pub valid_bytes: u64,
}

/// HKDF info for the catalog MAC key (docs/format.md §8.2).
const MAC_KEY_INFO: &[u8] = b"pgstream-catalog-record";

impl BackupRecord {
    /// The bytes the checksum and MAC cover: the record without them, as serialized.
    fn sealed_body(&self) -> Vec<u8> {
        let mut body = self.clone();
        body.checksum = None;
        body.mac = None;
        serde_json::to_vec(&body).expect("a record always serializes")
    }

    fn mac_of(key: &DataKey, body: &[u8]) -> Result<String, CatalogError> {
        let fail = |e: String| CatalogError::InvalidRecord {
            path: PathBuf::from(RECORD_FILE),
            reason: format!("computing its MAC: {e}"),
        };
        // An all-zero salt is RFC 5869's "no salt" (OpenSSL refuses an empty HMAC key).
        let mac_key = crypto::hkdf_sha256(key.bytes(), &[0u8; 32], MAC_KEY_INFO)
            .map_err(|e| fail(e.to_string()))?;
        let mac = crypto::hmac_sha256(&mac_key, &[body]).map_err(|e| fail(e.to_string()))?;
        Ok(hex::encode(mac))
    }

    /// Sets `checksum` (always) and `mac` (when `key` is given) before the record is written.
    pub fn seal(&mut self, key: Option<&DataKey>) -> Result<(), CatalogError> {
        let body = self.sealed_body();
        self.checksum = Some(hex::encode(crypto::sha256(&[&body])));
        self.mac = key.map(|k| Self::mac_of(k, &body)).transpose()?;
        Ok(())
    }

    fn verify_checksum(&self, path: &Path) -> Result<(), CatalogError> {
        let body = self.sealed_body();
        match &self.checksum {
            Some(c) if *c == hex::encode(crypto::sha256(&[&body])) => Ok(()),
            Some(_) => Err(CatalogError::Damaged {
                path: path.to_path_buf(),
                reason: "its checksum does not match its contents".into(),
            }),
            None => Err(CatalogError::Damaged {
                path: path.to_path_buf(),
                reason: "it has no checksum".into(),
            }),
        }
    }

    /// Checks the MAC with the repository's data key (`None` for an unencrypted repository,
    /// where only the checksum exists). `path` names the record in errors.
    pub fn verify_mac(&self, key: Option<&DataKey>, path: &Path) -> Result<(), CatalogError> {
        let Some(key) = key else { return Ok(()) };
        let expected = Self::mac_of(key, &self.sealed_body())?;
        match &self.mac {
            Some(m) if crypto::constant_time_eq(m.as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(CatalogError::Damaged {
                path: path.to_path_buf(),
                reason: "its MAC does not verify with this repository's key".into(),
            }),
            None => Err(CatalogError::Damaged {
                path: path.to_path_buf(),
                reason: "it has no MAC, but the repository is encrypted".into(),
            }),
        }
    }

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

    /// The path of a backup's record, for messages.
    pub fn record_path(&self, id: &str) -> PathBuf {
        self.backup_dir(id).join(RECORD_FILE)
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
        record.verify_checksum(&path)?;
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
