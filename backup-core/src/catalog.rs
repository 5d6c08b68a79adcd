//! The backup catalog: one record per complete backup, in `backups/<id>/backup.json`.
//!
//! A backup is committed by its record: its files are written under `backups/<id>/` first,
//! and the record, written last and create-only, is what makes it a backup (this works on
//! every storage backend, object stores included). Until then the id is owned by the writer's
//! `backup.<id>` lease; [`lifecycle`] claims ids, finds unfinished backups and removes those
//! whose writer is provably dead. Layout and fields are documented in docs/format.md.

pub mod lifecycle;

use std::time::SystemTime;

use pgwire_repl::{Lsn, TimelineId};
use serde::{Deserialize, Serialize};

use crate::crypto::keyring::Keyring;
use crate::crypto::{self, metamac};
use crate::repo::SealKey;
use crate::store::{PutMode, Store, StoreError};

pub mod chain;
pub use chain::{ChainError, IncrementalOf};

/// Version of the backup record format.
pub const RECORD_FORMAT: u32 = 1;
/// Name of the record inside a backup's prefix.
pub const RECORD_FILE: &str = "backup.json";
/// The directory (key prefix) of backups inside a repository.
pub const BACKUPS_DIR: &str = "backups";
/// Largest record read back (records are a few kB; a huge one is damage or an attack).
const MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;

/// A catalog problem. `path` names the record where it is (a path or a URL).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("backup record {path} is invalid: {reason}")]
    InvalidRecord { path: String, reason: String },
    #[error("no backup {id:?} in the repository (see `pgstream list`)")]
    NoSuchBackup { id: String },
    #[error("the repository has no complete backup yet")]
    NoBackups,
    /// The record's checksum or MAC does not match: damaged or altered.
    #[error("backup record {path} is damaged or was altered: {reason}")]
    Damaged { path: String, reason: String },
    /// Another run owns the backup id (it is being written or deleted).
    #[error("backup {id} is being written or deleted by another run: {holder}")]
    Busy { id: String, holder: String },
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
    /// a data key: catches alteration, checked whenever the repository is open with its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The data key of the MAC (repository format 2); absent means key 0. Covered by the MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<u32>,
}

/// The unfinished segment at the end of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialWal {
    pub segment: String,
    pub file: String,
    pub valid_bytes: u64,
}

impl BackupRecord {
    /// The bytes the checksum and MAC cover: the record without them, as serialized (the key
    /// id is covered).
    fn sealed_body(&self) -> Vec<u8> {
        let mut body = self.clone();
        body.checksum = None;
        body.mac = None;
        serde_json::to_vec(&body).expect("a record always serializes")
    }

    /// Sets `checksum` (always) and `mac` and `key_id` (when a key is given) before the record
    /// is written.
    pub fn seal(&mut self, key: Option<SealKey<'_>>) -> Result<(), CatalogError> {
        self.key_id = key.and_then(|k| k.id);
        let body = self.sealed_body();
        self.checksum = Some(hex::encode(crypto::sha256(&[&body])));
        self.mac = key
            .map(|k| metamac::mac(k.key, metamac::RECORD, &body))
            .transpose()
            .map_err(|e| CatalogError::InvalidRecord {
                path: RECORD_FILE.to_string(),
                reason: format!("computing its MAC: {e}"),
            })?;
        Ok(())
    }

    fn verify_checksum(&self, path: &str) -> Result<(), CatalogError> {
        let body = self.sealed_body();
        match &self.checksum {
            Some(c) if *c == hex::encode(crypto::sha256(&[&body])) => Ok(()),
            Some(_) => Err(CatalogError::Damaged {
                path: path.to_string(),
                reason: "its checksum does not match its contents".into(),
            }),
            None => Err(CatalogError::Damaged {
                path: path.to_string(),
                reason: "it has no checksum".into(),
            }),
        }
    }

    /// Checks the MAC with the repository's data keys (`None` for an unencrypted repository,
    /// where only the checksum exists). `path` names the record in errors.
    pub fn verify_mac(&self, keys: Option<&Keyring>, path: &str) -> Result<(), CatalogError> {
        let Some(keys) = keys else { return Ok(()) };
        let damaged = |reason: String| CatalogError::Damaged {
            path: path.to_string(),
            reason,
        };
        let Some(mac) = &self.mac else {
            return Err(damaged(
                "it has no MAC, but the repository is encrypted".into(),
            ));
        };
        let key_id = self.key_id.unwrap_or(0);
        let key = keys.get(key_id).ok_or_else(|| {
            damaged(format!(
                "its MAC names data key {key_id}, which this repository does not hold"
            ))
        })?;
        match metamac::verify(key, metamac::RECORD, &self.sealed_body(), mac) {
            Ok(true) => Ok(()),
            Ok(false) => Err(damaged(
                "its MAC does not verify with this repository's key".into(),
            )),
            Err(e) => Err(damaged(format!("checking its MAC: {e}"))),
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

/// The backups of one repository, read through its storage port.
#[derive(Debug, Clone, Copy)]
pub struct Catalog<'a> {
    store: &'a dyn Store,
    /// With the repository's keys, every record read is authenticated (its MAC checked).
    keys: Option<&'a Keyring>,
}

impl<'a> Catalog<'a> {
    /// The catalog of the repository in `store`, read without its keys: records are checked
    /// against their checksum only (for commands that run without the passphrase).
    pub fn new(store: &'a dyn Store) -> Catalog<'a> {
        Catalog { store, keys: None }
    }

    /// The catalog of an encrypted repository: every record read must carry a MAC that
    /// verifies with one of `keys`, or it is refused as altered.
    pub fn with_keys(store: &'a dyn Store, keys: &'a Keyring) -> Catalog<'a> {
        Catalog {
            store,
            keys: Some(keys),
        }
    }

    /// The store.
    pub fn store(&self) -> &'a dyn Store {
        self.store
    }

    /// `backups/<id>/`: the prefix of everything a backup stores.
    pub fn prefix(id: &str) -> String {
        format!("{BACKUPS_DIR}/{id}/")
    }

    /// The stored name of a backup's record.
    pub fn record_name(id: &str) -> String {
        format!("{BACKUPS_DIR}/{id}/{RECORD_FILE}")
    }

    /// Where a backup's record is, for messages.
    pub fn record_path(&self, id: &str) -> String {
        self.store.describe(&Self::record_name(id))
    }

    /// Whether backup `id` has a record (is complete).
    pub fn exists(&self, id: &str) -> Result<bool, CatalogError> {
        Ok(is_backup_id(id) && self.store.head(&Self::record_name(id))?.is_some())
    }

    /// The ids of complete backups, oldest first.
    pub fn ids(&self) -> Result<Vec<String>, CatalogError> {
        let prefix = format!("{BACKUPS_DIR}/");
        let mut ids: Vec<String> = self
            .store
            .list(&prefix)?
            .into_iter()
            .filter_map(|o| {
                let (id, file) = o.name[prefix.len()..].split_once('/')?;
                (file == RECORD_FILE && is_backup_id(id)).then(|| id.to_string())
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Every complete backup, oldest first. A damaged record is an error naming its file
    /// (never silently skipped: a backup that cannot be listed cannot be trusted).
    pub fn list(&self) -> Result<Vec<BackupRecord>, CatalogError> {
        self.ids()?.iter().map(|id| self.read(id)).collect()
    }

    /// The record of backup `id`.
    pub fn read(&self, id: &str) -> Result<BackupRecord, CatalogError> {
        if !is_backup_id(id) {
            return Err(CatalogError::NoSuchBackup { id: id.to_string() });
        }
        let name = Self::record_name(id);
        let path = self.store.describe(&name);
        let bytes = match crate::store::get(self.store, &name, MAX_RECORD_BYTES) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(CatalogError::NoSuchBackup { id: id.to_string() })
            }
            Err(e) => return Err(e.into()),
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
        record.verify_mac(self.keys, &path)?;
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
            match self.ids()?.pop() {
                Some(id) => self.read(&id),
                None => Err(CatalogError::NoBackups),
            }
        } else {
            self.read(id)
        }
    }

    /// Writes a sealed record, create-only: this is the moment the backup becomes visible.
    pub fn write(&self, record: &BackupRecord) -> Result<(), CatalogError> {
        let mut bytes =
            serde_json::to_vec_pretty(record).map_err(|e| CatalogError::InvalidRecord {
                path: self.record_path(&record.id),
                reason: e.to_string(),
            })?;
        bytes.push(b'\n');
        self.store
            .put(&Self::record_name(&record.id), &bytes, PutMode::Create)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
