//! Restoring a backup: every archive authenticated, decompressed and unpacked, the WAL the
//! backup needs placed in `pg_wal/`, and `backup_manifest` left for `pg_verifybackup`.
//!
//! Reading (decrypt + decompress) and writing (unpack + fsync) run on different threads joined
//! by a bounded channel, so they overlap. Nothing outside the target directory and the
//! tablespace locations is touched, and those must be empty: a restore never overwrites.

pub mod chain;
pub mod extract;
pub mod incremental_file;
pub mod last_commit;
pub mod pitr;
pub mod window;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Instant;

use crate::catalog::{BackupRecord, CatalogError};
use crate::compress::{Compression, Decoder};
use crate::fsutil::{self, FsError};
use crate::layout;
use crate::repo::{RepoError, Repository};
use crate::sink::{open_reader, FileCodec};
use crate::tablespace::{check as check_location, UnsafeLocation};
use crate::wal::{SegmentName, WalSegmentSize};
use extract::{ExtractError, Extractor, TablespaceLink};

/// What to restore where.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    /// A backup id, or `latest`.
    pub backup: String,
    /// The new data directory: absent or empty.
    pub target: PathBuf,
    /// Tablespace locations to change: original location → new location.
    pub tablespace_map: BTreeMap<PathBuf, PathBuf>,
    /// Empty a non-empty target (and tablespace locations) first instead of refusing.
    pub force: bool,
    /// What goes into `pg_wal/`.
    pub wal: WalPlacement,
}

/// What a restore puts into `pg_wal/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalPlacement {
    /// The backup's own WAL: a stand-alone copy, consistent at the backup's end.
    BackupWal,
    /// Nothing: recovery fetches every segment (or a later step copies them in).
    Empty,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    pub backup: BackupRecord,
    pub target: PathBuf,
    pub files: u64,
    pub bytes: u64,
    pub wal_segments: usize,
    /// Tablespace OID → where it was restored.
    pub tablespaces: BTreeMap<u32, PathBuf>,
    pub seconds: f64,
}

/// Why a restore failed. Files already written stay for inspection; the target was empty.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(
        "{path} is not empty; restore only into a new or empty directory, or pass --force to empty it first (nothing was written)"
    )]
    TargetNotEmpty { path: PathBuf },
    #[error("--tablespace-map {old}: backup {backup} has no tablespace there (its tablespaces: {known})")]
    UnknownTablespace {
        old: PathBuf,
        backup: String,
        known: String,
    },
    /// A tablespace location in the backup record that a restore must not write to: the record
    /// was damaged or altered (by someone with write access to the repository).
    #[error(
        "backup {backup}: its record names tablespace {oid} at an unsafe location, so it was \
         damaged or altered; nothing was written: {source}"
    )]
    UnsafeRecordedTablespace {
        backup: String,
        oid: u32,
        #[source]
        source: UnsafeLocation,
    },
    #[error("--tablespace-map {}={}: {source}", old.display(), new.display())]
    UnsafeTablespaceMap {
        old: PathBuf,
        new: PathBuf,
        #[source]
        source: UnsafeLocation,
    },
    #[error("reading {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error(transparent)]
    Chain(#[from] chain::ChainRestoreError),
    #[error("{file} holds {got} bytes of WAL segment {segment}, expected {expected}")]
    WalSize {
        file: String,
        segment: String,
        got: u64,
        expected: u64,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Restores a backup. Blocking: call it from a blocking thread.
pub fn run(repo: &Repository, plan: &RestorePlan) -> Result<RestoreSummary, RestoreError> {
    let started = Instant::now();
    let catalog = repo.catalog();
    let record = catalog.resolve(&plan.backup)?;
    record.verify_mac(repo.keyring(), &catalog.record_path(&record.id))?;
    let tablespaces = plan_tablespaces(&record, &plan.tablespace_map)?;
    // Check every destination before writing anything; with --force, empty them only once
    // all are known to be usable.
    let mut to_empty = Vec::new();
    for dir in std::iter::once(&plan.target).chain(tablespaces.values()) {
        // --force never empties a tablespace's original location: it may be a live server's.
        let force =
            plan.force && (dir == &plan.target || plan.tablespace_map.values().any(|v| v == dir));
        if !ensure_empty_dir(dir, force)? {
            to_empty.push(dir.clone());
        }
    }
    for dir in &to_empty {
        tracing::warn!(dir = %dir.display(), "--force: removing the directory's contents");
        empty_dir(dir)?;
    }
    let span = tracing::info_span!("restore", backup_id = %record.id);
    let _enter = span.enter();
    if record.is_incremental() {
        return chain::run(repo, plan, record, tablespaces, started);
    }
    let mut files = 0;
    let mut bytes = 0;
    // Tablespaces first, so the links in base.tar point at directories that exist.
    let mut ordered: Vec<_> = record.archives.iter().collect();
    ordered.sort_by_key(|a| a.tablespace_oid.is_none());
    for archive in ordered {
        let root = match archive.tablespace_oid {
            Some(oid) => tablespaces[&oid].clone(),
            None => plan.target.clone(),
        };
        let links = tablespaces.clone();
        let map: Box<dyn Fn(&TablespaceLink) -> PathBuf + Send> = Box::new(move |l| {
            links
                .get(&l.oid)
                .cloned()
                .unwrap_or_else(|| l.original_target.clone())
        });
        let codec = match archive.server_compression {
            Some(_) => FileCodec {
                compression: Compression::None,
                encryption: repo.codec().encryption.clone(),
            },
            None => repo.codec().clone(),
        };
        let name = layout::backup_file(&record.id, &archive.file);
        let reader =
            open_reader(repo.store().as_ref(), &name, &codec).map_err(|e| RestoreError::Read {
                file: name.clone(),
                source: e.into_io(),
            })?;
        let reader: Box<dyn Read + Send> = match archive.server_compression.as_deref() {
            None => Box::new(reader),
            Some(family) => Box::new(Decoder::new(reader, server_family(family)?).map_err(
                |source| RestoreError::Read {
                    file: name.clone(),
                    source,
                },
            )?),
        };
        let summary = unpack_overlapped(
            reader,
            &name,
            Extractor::new(root, archive.name.clone(), map),
        )?;
        files += summary.files;
        bytes += summary.bytes;
        tracing::info!(archive = %archive.name, files = summary.files, "unpacked");
    }
    let segments = match plan.wal {
        WalPlacement::BackupWal => restore_wal(repo, &record, &plan.target)?,
        WalPlacement::Empty => {
            empty_pg_wal(&plan.target)?;
            0
        }
    };
    copy_out(
        repo,
        &layout::backup_file(&record.id, &record.manifest_file),
        &plan.target.join("backup_manifest"),
        None,
    )?;
    fsutil::fsync_dir(&plan.target)?;
    Ok(RestoreSummary {
        target: plan.target.clone(),
        files,
        bytes,
        wal_segments: segments,
        tablespaces,
        seconds: started.elapsed().as_secs_f64(),
        backup: record,
    })
}

fn server_family(family: &str) -> Result<Compression, RestoreError> {
    match family {
        "lz4" => Ok(Compression::Lz4),
        "gzip" => Ok(Compression::Gzip(1)),
        "zstd" => Ok(Compression::Zstd(1)),
        other => Err(RestoreError::Internal(format!(
            "unknown server compression {other:?} in the backup record"
        ))),
    }
}

/// Where each tablespace goes: mapped, or back to its original location. Every location, in the
/// record or the map, is checked first (see [`crate::tablespace`]).
pub(crate) fn plan_tablespaces(
    record: &BackupRecord,
    map: &BTreeMap<PathBuf, PathBuf>,
) -> Result<BTreeMap<u32, PathBuf>, RestoreError> {
    let mut out = BTreeMap::new();
    let known: Vec<(u32, PathBuf)> = record
        .archives
        .iter()
        .filter_map(|a| {
            Some((
                a.tablespace_oid?,
                PathBuf::from(a.tablespace_location.as_ref()?),
            ))
        })
        .collect();
    for (oid, location) in &known {
        check_location(location).map_err(|source| RestoreError::UnsafeRecordedTablespace {
            backup: record.id.clone(),
            oid: *oid,
            source,
        })?;
    }
    for (old, new) in map {
        for location in [old, new] {
            check_location(location).map_err(|source| RestoreError::UnsafeTablespaceMap {
                old: old.clone(),
                new: new.clone(),
                source,
            })?;
        }
    }
    for old in map.keys() {
        if !known.iter().any(|(_, loc)| loc == old) {
            return Err(RestoreError::UnknownTablespace {
                old: old.clone(),
                backup: record.id.clone(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known
                        .iter()
                        .map(|(_, l)| l.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            });
        }
    }
    for (oid, loc) in known {
        let dest = map.get(&loc).cloned().unwrap_or(loc);
        out.insert(oid, dest);
    }
    Ok(out)
}

/// Creates `dir` (0700) if missing and returns whether it is empty; refuses one with anything
/// in it unless `force`.
fn ensure_empty_dir(dir: &Path, force: bool) -> Result<bool, RestoreError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                if !force {
                    return Err(RestoreError::TargetNotEmpty { path: dir.into() });
                }
                return Ok(false);
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fsutil::create_dir_all_durably(dir)?;
            Ok(true)
        }
        Err(e) => Err(FsError::new("opening directory", dir, e).into()),
    }
}

/// Removes everything inside `dir`, never following symbolic links (a link is removed, not
/// what it points at), and fsyncs `dir`.
fn empty_dir(dir: &Path) -> Result<(), RestoreError> {
    let entries = fs::read_dir(dir).map_err(|e| FsError::new("opening directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| FsError::new("reading directory", dir, e))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| FsError::new("inspecting", &path, e))?;
        let removed = if kind.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| FsError::new("removing", &path, e))?;
    }
    fsutil::fsync_dir(dir)?;
    Ok(())
}

/// Leaves `pg_wal/` (and `pg_wal/archive_status/`) present and empty: whatever WAL the tar held
/// is stale for a recovery that fetches its WAL.
fn empty_pg_wal(target: &Path) -> Result<(), RestoreError> {
    let pg_wal = target.join("pg_wal");
    fsutil::create_dir_all_durably(&pg_wal)?;
    empty_dir(&pg_wal)?;
    fsutil::create_dir_durably(&pg_wal.join("archive_status"))?;
    fsutil::fsync_dir(&pg_wal)?;
    Ok(())
}

/// Bytes per hand-off from the reading to the unpacking thread.
const HANDOFF_BYTES: usize = 256 * 1024;
/// Hand-offs in flight. Buffers go back to the reader for reuse (fresh 256 KiB allocations
/// cost a page fault per 4 KiB: 52k faults restoring 421 MiB), so at most this many plus
/// two exist.
const HANDOFFS: usize = 16;

/// Reads on this thread, unpacks on another: decryption and writing overlap.
fn unpack_overlapped(
    mut reader: Box<dyn Read + Send>,
    name: &str,
    mut extractor: Extractor,
) -> Result<extract::ExtractSummary, RestoreError> {
    let (tx, rx) = sync_channel::<Filled>(HANDOFFS);
    let (back_tx, back_rx) = sync_channel::<Vec<u8>>(HANDOFFS);
    let writer = std::thread::spawn(move || -> Result<_, ExtractError> {
        extractor.unpack(ChannelReader {
            rx,
            back: back_tx,
            current: Filled::default(),
        })?;
        extractor.finish()
    });
    let mut read_error = None;
    loop {
        let mut buf = back_rx
            .try_recv()
            .unwrap_or_else(|_| vec![0u8; HANDOFF_BYTES]);
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tx
                    .send(Filled {
                        buf,
                        len: n,
                        pos: 0,
                    })
                    .is_err()
                {
                    break; // the writer failed; its error wins
                }
            }
            Err(source) => {
                read_error = Some(RestoreError::Read {
                    file: name.to_string(),
                    source,
                });
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .join()
        .map_err(|_| RestoreError::Internal("the unpacking thread panicked".into()))?;
    // An authentication or decompression failure explains a truncated tar better than the
    // tar error it causes.
    if let Some(e) = read_error {
        return Err(e);
    }
    Ok(written?)
}

/// A buffer and how much of it holds data (`pos` of it already consumed).
#[derive(Default)]
struct Filled {
    buf: Vec<u8>,
    len: usize,
    pos: usize,
}

struct ChannelReader {
    rx: Receiver<Filled>,
    /// Returns emptied buffers to the reader.
    back: SyncSender<Vec<u8>>,
    current: Filled,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.pos == self.current.len {
            match self.rx.recv() {
                Ok(next) => {
                    let done = std::mem::replace(&mut self.current, next);
                    if !done.buf.is_empty() {
                        // A full return queue (or a finished reader) just frees it.
                        let _ = self.back.try_send(done.buf);
                    }
                }
                Err(_) => return Ok(0),
            }
        }
        let c = &mut self.current;
        let n = buf.len().min(c.len - c.pos);
        buf[..n].copy_from_slice(&c.buf[c.pos..c.pos + n]);
        c.pos += n;
        Ok(n)
    }
}

/// Places the backup's WAL (and timeline history) in `pg_wal/`; returns the segment count.
fn restore_wal(
    repo: &Repository,
    record: &BackupRecord,
    target: &Path,
) -> Result<usize, RestoreError> {
    let pg_wal = target.join("pg_wal");
    fsutil::create_dir_all_durably(&pg_wal)?;
    let seg_size = WalSegmentSize::new(record.wal_segment_size)
        .map_err(|e| RestoreError::Internal(format!("backup record: {e}")))?;
    for name in &record.wal_segments {
        let segment = SegmentName::parse(name, seg_size)
            .map_err(|e| RestoreError::Internal(format!("backup record: {e}")))?;
        let dest = pg_wal.join(name);
        match &record.partial_wal_file {
            Some(p) if &p.segment == name => {
                // The server had not finished this segment: the rest is zeros, which
                // recovery reads as the end of WAL.
                copy_out(
                    repo,
                    &layout::backup_file(&record.id, &p.file),
                    &dest,
                    Some(seg_size.bytes()),
                )?;
            }
            _ => {
                let stored = layout::wal_segment_file(&segment, repo.codec());
                let got = copy_out(repo, &stored, &dest, None)?;
                if got != seg_size.bytes() {
                    return Err(RestoreError::WalSize {
                        file: stored,
                        segment: name.clone(),
                        got,
                        expected: seg_size.bytes(),
                    });
                }
            }
        }
    }
    for stored in &record.history_files {
        let file_name = stored
            .rsplit('/')
            .next()
            .and_then(|f| f.split(".history").next())
            .map(|tli| format!("{tli}.history"))
            .ok_or_else(|| RestoreError::Internal(format!("bad history file name {stored}")))?;
        copy_out(repo, stored, &pg_wal.join(file_name), None)?;
    }
    fsutil::fsync_dir(&pg_wal)?;
    Ok(record.wal_segments.len())
}

/// Decrypts and decompresses repository file `name` into `dest` durably, zero-padding it to
/// `pad_to` bytes if given. Returns the bytes of real content.
fn copy_out(
    repo: &Repository,
    name: &str,
    dest: &Path,
    pad_to: Option<u64>,
) -> Result<u64, RestoreError> {
    let read_err = |source| RestoreError::Read {
        file: name.to_string(),
        source,
    };
    let mut reader = repo.open_file(name)?;
    let mut out = fsutil::DurableFile::create(dest)?;
    let write_err = |e| FsError::new("writing", dest, e);
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(write_err)?;
        total += n as u64;
    }
    if let Some(size) = pad_to {
        let zeros = vec![0u8; 64 * 1024];
        let mut left = size.saturating_sub(total);
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            out.write_all(&zeros[..n]).map_err(write_err)?;
            left -= n as u64;
        }
    }
    out.commit(fsutil::Replace::Refuse)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ArchiveRecord;

    fn record_with_tablespace(location: &str) -> BackupRecord {
        let mut record = crate::test_support::backup_record("20240501T120000Z", 2);
        for (oid, location) in [(Some(16385), Some(location)), (None, None)] {
            record.archives.push(ArchiveRecord {
                name: oid.map_or("base.tar".into(), |o| format!("{o}.tar")),
                file: String::new(),
                tablespace_oid: oid,
                tablespace_location: location.map(str::to_string),
                raw_bytes: 0,
                stored_bytes: 0,
                server_compression: None,
            });
        }
        record
    }

    fn map(old: &str, new: &str) -> BTreeMap<PathBuf, PathBuf> {
        BTreeMap::from([(PathBuf::from(old), PathBuf::from(new))])
    }

    /// Regression: a backup record's tablespace location (which someone with write access to
    /// the repository can change) was where a restore wrote, relative or with `..` alike.
    #[test]
    fn unsafe_tablespace_location_in_the_record_is_refused_before_restoring() {
        let ok = plan_tablespaces(&record_with_tablespace("/srv/ts1"), &BTreeMap::new());
        assert_eq!(
            ok.unwrap(),
            BTreeMap::from([(16385, PathBuf::from("/srv/ts1"))])
        );
        for bad in ["srv/ts1", "/srv/../../etc", "/srv/ts1\nx", "/srv/ts\u{0}1"] {
            let record = record_with_tablespace(bad);
            // Mapping it elsewhere does not make the record trustworthy.
            for m in [BTreeMap::new(), map(bad, "/new/ts1")] {
                match plan_tablespaces(&record, &m) {
                    Err(e @ RestoreError::UnsafeRecordedTablespace { oid: 16385, .. }) => {
                        let msg = e.to_string();
                        assert!(msg.contains(&format!("{bad:?}")), "{msg}");
                        assert!(msg.contains("20240501T120000Z"), "{msg}");
                    }
                    other => panic!("{bad:?}: expected a refusal, got {other:?}"),
                }
            }
        }
    }

    /// Regression: `--tablespace-map OLD=NEW` took a NEW with `..` components.
    #[test]
    fn unsafe_tablespace_map_location_is_refused() {
        let record = record_with_tablespace("/srv/ts1");
        let ok = plan_tablespaces(&record, &map("/srv/ts1", "/new/ts1")).unwrap();
        assert_eq!(ok[&16385], PathBuf::from("/new/ts1"));
        for (old, new) in [
            ("/srv/ts1", "/new/../../etc"),
            ("/srv/ts1", "new/ts1"),
            ("/srv/ts1", "/new/ts\n1"),
            ("/srv/../srv/ts1", "/new/ts1"),
        ] {
            match plan_tablespaces(&record, &map(old, new)) {
                Err(e @ RestoreError::UnsafeTablespaceMap { .. }) => {
                    assert!(e.to_string().starts_with("--tablespace-map"), "{e}");
                }
                other => panic!("{old}={new}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn channel_reader_reads_across_hand_offs_and_returns_their_buffers() {
        let (tx, rx) = sync_channel(4);
        let (back_tx, back_rx) = sync_channel(4);
        let filled = |s: &[u8]| {
            let mut buf = s.to_vec();
            buf.extend_from_slice(b"unused tail");
            Filled {
                buf,
                len: s.len(),
                pos: 0,
            }
        };
        tx.send(filled(b"hel")).unwrap();
        tx.send(filled(b"")).unwrap();
        tx.send(filled(b"lo")).unwrap();
        drop(tx);
        let mut r = ChannelReader {
            rx,
            back: back_tx,
            current: Filled::default(),
        };
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        // Every consumed buffer but the last one held went back for reuse.
        assert_eq!(back_rx.try_iter().count(), 2);
    }
}
