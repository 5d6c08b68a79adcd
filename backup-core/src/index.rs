//! The repository index: what a repository holds, from one listing per area, classified once
//! for every reader (catalog, verify, expire, coverage, status, receive-wal, the WAL archive).
//!
//! - `backups/<id>/…`: per backup id, whether its record (`backup.json`) and pin exist and every
//!   object under it. A backup id without a record is unfinished: being written (its
//!   `backup.<id>` lease is live) or left by a run that died (see [`crate::catalog::lifecycle`]).
//! - `wal/<shard>/<segment>…`: the files of each segment by kind, and `wal/<tli>.history…`.
//!   Only names with the repository's own suffix are recognised; anything else is listed as
//!   unrecognised and never deleted.

use std::collections::BTreeMap;
use std::time::SystemTime;

use pgwire_repl::TimelineId;

use crate::catalog::{is_backup_id, BACKUPS_DIR, RECORD_FILE};
use crate::layout::{self, WAL_DIR};
use crate::repo::config::RepoConfig;
use crate::store::{ObjectMeta, Store, StoreError};
use crate::wal::{history_file_timeline, is_wal_file_name, SegmentName, WalSegmentSize};

/// The suffix (before `.enc`) of the segment `receive-wal` is receiving.
pub const RECEIVING_SUFFIX: &str = ".partial.recv";
/// A pin's name inside a backup's prefix.
pub const PIN_FILE: &str = "pin.json";

/// The kind of a file of the WAL archive that belongs to a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WalFileKind {
    /// A complete segment.
    Segment,
    /// A `.partial` segment (a promoted server's last segment of its old timeline).
    Partial,
    /// The segment `receive-wal` is receiving (`.partial.recv`): its live state, never deleted.
    Receiving,
    /// A backup history file `<segment>.<offset>.backup`: goes with its segment.
    BackupHistory,
}

/// One file of the WAL archive that belongs to a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalFile {
    /// Its repository name.
    pub stored: String,
    pub kind: WalFileKind,
    pub segment: SegmentName,
    /// Bytes stored.
    pub bytes: u64,
}

/// A WAL file with its modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalObject {
    pub file: WalFile,
    pub modified: Option<SystemTime>,
}

/// What `wal/` holds.
#[derive(Debug, Clone, Default)]
pub struct WalListing {
    /// The segment size of the bound cluster (`None`: unbound, so no segment is recognised).
    pub seg_size: Option<WalSegmentSize>,
    /// Files that belong to a segment, sorted by name.
    pub files: Vec<WalObject>,
    /// Timeline history files by timeline.
    pub histories: BTreeMap<TimelineId, ObjectMeta>,
    /// Objects under `wal/` of no recognised kind (another codec's suffix, stray files).
    pub unrecognised: Vec<ObjectMeta>,
}

impl WalListing {
    /// Files of one kind.
    pub fn of_kind(&self, kind: WalFileKind) -> impl Iterator<Item = &WalObject> {
        self.files.iter().filter(move |f| f.file.kind == kind)
    }

    /// Files of `timeline`, by segment number.
    pub fn of_timeline(&self, timeline: TimelineId) -> impl Iterator<Item = &WalObject> {
        self.files
            .iter()
            .filter(move |f| f.file.segment.timeline == timeline)
    }
}

/// The suffix of the repository's stored files, and of receive-wal's partial.
pub fn suffixes(config: &RepoConfig) -> (String, String) {
    let encrypted = config.encryption.is_some();
    let suffix = layout::suffix_for(config.compression, encrypted);
    let receiving = if encrypted {
        format!("{RECEIVING_SUFFIX}.enc")
    } else {
        RECEIVING_SUFFIX.to_string()
    };
    (suffix, receiving)
}

/// Lists and classifies `wal/`.
pub fn scan_wal(store: &dyn Store, config: &RepoConfig) -> Result<WalListing, StoreError> {
    let seg_size = config
        .cluster
        .and_then(|c| WalSegmentSize::new(u64::from(c.wal_segment_size)).ok());
    let (suffix, receiving) = suffixes(config);
    let mut out = WalListing {
        seg_size,
        ..WalListing::default()
    };
    let prefix = format!("{WAL_DIR}/");
    for object in store.list(&prefix)? {
        let rest = &object.name[prefix.len()..];
        match rest.split_once('/') {
            None => {
                let timeline = rest
                    .strip_suffix(suffix.as_str())
                    .and_then(history_file_timeline);
                match timeline {
                    Some(t) => {
                        out.histories.insert(t, object);
                    }
                    None => out.unrecognised.push(object),
                }
            }
            Some((dir, file)) => {
                let kind = (dir.len() == 16 && !file.contains('/'))
                    .then(|| classify(file, dir, &suffix, &receiving))
                    .flatten();
                let segment =
                    seg_size.and_then(|s| SegmentName::parse(&file[..24.min(file.len())], s).ok());
                match (kind, segment) {
                    (Some(kind), Some(segment)) => out.files.push(WalObject {
                        file: WalFile {
                            stored: object.name.clone(),
                            kind,
                            segment,
                            bytes: object.size,
                        },
                        modified: object.modified,
                    }),
                    _ => out.unrecognised.push(object),
                }
            }
        }
    }
    Ok(out)
}

/// The kind of `file` in directory `dir` of `wal/`, or `None` for a name that is not one of a
/// segment's files there.
pub fn classify(file: &str, dir: &str, suffix: &str, receiving: &str) -> Option<WalFileKind> {
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

/// One backup id's objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupEntry {
    pub id: String,
    /// Its record exists: the backup is complete (whether the record is valid is the
    /// catalog's to check).
    pub has_record: bool,
    /// It has a pin.
    pub has_pin: bool,
    /// Every object under `backups/<id>/`.
    pub objects: Vec<ObjectMeta>,
}

impl BackupEntry {
    /// Bytes stored under the backup.
    pub fn bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }

    /// The newest modification time of its objects.
    pub fn last_modified(&self) -> Option<SystemTime> {
        self.objects.iter().filter_map(|o| o.modified).max()
    }
}

/// What `backups/` holds.
#[derive(Debug, Clone, Default)]
pub struct BackupListing {
    /// By id (ids sort in time order).
    pub backups: BTreeMap<String, BackupEntry>,
    /// Directories an older pgstream used while writing or deleting a backup
    /// (`backups/.<id>.inprogress/`, `backups/.<id>.expiring/`), with their objects.
    pub legacy: BTreeMap<String, Vec<ObjectMeta>>,
}

impl BackupListing {
    /// Complete backups' ids (with a record), oldest first.
    pub fn complete_ids(&self) -> Vec<String> {
        self.backups
            .values()
            .filter(|b| b.has_record)
            .map(|b| b.id.clone())
            .collect()
    }
}

/// Lists `backups/`.
pub fn scan_backups(store: &dyn Store) -> Result<BackupListing, StoreError> {
    let prefix = format!("{BACKUPS_DIR}/");
    let mut out = BackupListing::default();
    for object in store.list(&prefix)? {
        let rest = &object.name[prefix.len()..];
        let Some((dir, file)) = rest.split_once('/') else {
            continue;
        };
        if is_backup_id(dir) {
            let entry = out
                .backups
                .entry(dir.to_string())
                .or_insert_with(|| BackupEntry {
                    id: dir.to_string(),
                    ..BackupEntry::default()
                });
            if file == RECORD_FILE {
                entry.has_record = true;
            } else if file == PIN_FILE {
                entry.has_pin = true;
            }
            entry.objects.push(object);
        } else if dir.starts_with('.')
            && (dir.ends_with(".inprogress") || dir.ends_with(".expiring"))
        {
            out.legacy.entry(dir.to_string()).or_default().push(object);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mem::MemStore;
    use crate::store::PutMode;

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

    #[test]
    fn one_listing_classifies_wal_and_backups() {
        let store = MemStore::default();
        for name in [
            "wal/0000000100000000/000000010000000000000003.lz4",
            "wal/0000000100000000/000000010000000000000004.partial.recv",
            "wal/0000000100000000/000000010000000000000004.zst",
            "wal/00000002.history.lz4",
            "wal/README",
            "backups/20260101T000000Z/backup.json",
            "backups/20260101T000000Z/base.tar.lz4",
            "backups/20260101T000000Z/pin.json",
            "backups/20260102T000000Z/base.tar.lz4",
            "backups/.20251231T000000Z.inprogress/base.tar.lz4",
            "backups/notes/x",
        ] {
            store.put(name, b"12345", PutMode::Create).unwrap();
        }
        let wal = scan_wal(&store, &crate::test_support::bound_config()).unwrap();
        let kinds: Vec<_> = wal.files.iter().map(|f| f.file.kind).collect();
        assert_eq!(kinds, vec![WalFileKind::Segment, WalFileKind::Receiving]);
        assert_eq!(
            wal.histories.keys().copied().collect::<Vec<_>>(),
            vec![TimelineId(2)]
        );
        assert_eq!(wal.unrecognised.len(), 2);
        let backups = scan_backups(&store).unwrap();
        assert_eq!(backups.complete_ids(), vec!["20260101T000000Z"]);
        let first = &backups.backups["20260101T000000Z"];
        assert!(first.has_pin);
        assert_eq!(first.bytes(), 15);
        assert!(!backups.backups["20260102T000000Z"].has_record);
        assert_eq!(backups.legacy.len(), 1);
    }
}
