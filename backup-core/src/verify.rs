//! `pgstream verify`: reads back everything a repository holds and reports every problem.
//!
//! Per backup: the catalog record (checksum and, encrypted, MAC), the stored `backup_manifest`
//! (its own SHA-256), every archive decrypted, decompressed and walked as tar with every member
//! checked against the manifest, and the backup's partial WAL segment. Then the WAL archive: every
//! file in `wal/` authenticated (segments also have their page headers checked), and the chain of
//! segments from each backup's start to the end of the archive along its timeline path, with
//! missing segments reported as gaps. Everything streams; a problem never stops the run, so every
//! bad file is named.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};

use pgwire_repl::{Lsn, TimelineId};
use serde::Serialize;

use crate::catalog::{BackupRecord, CatalogError, BACKUPS_DIR};
use crate::compress::{Compression, Decoder};
use crate::layout::{self, WAL_DIR};
use crate::manifest::{ChecksumAlgorithm, Manifest, ManifestVerifier, Mismatch};
use crate::repo::{RepoError, Repository};
use crate::restore::window;
use crate::sink::FileCodec;
use crate::store::StoreError;
use crate::tarwalk::TarWalker;
use crate::wal::partial::PartialReader;
use crate::wal::{SegmentCheck, SegmentName, SegmentValidator, TimelineHistory, WalSegmentSize};

mod chain;

const BUFFER: usize = 256 << 10;
/// Timeline history files are small; archive-push refuses larger ones.
const MAX_HISTORY: u64 = 1 << 20;

/// A problem that stops verification before it could look at the data.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One bad or missing file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Its repository name (`backups/<id>/base.tar.lz4.enc`, `wal/…`).
    pub file: String,
    pub problem: String,
}

fn problem(file: impl Into<String>, what: impl ToString) -> Problem {
    Problem {
        file: file.into(),
        problem: what.to_string(),
    }
}

/// What was found for one backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub id: String,
    pub ok: bool,
    pub problems: Vec<Problem>,
}

/// Consecutive segments missing from the WAL chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The first and last missing segment.
    pub first: String,
    pub last: String,
    /// The WAL range the missing segments cover.
    pub start_lsn: String,
    pub end_lsn: String,
    /// Backups whose point-in-time recovery cannot pass the gap.
    pub backups: Vec<String>,
    #[serde(skip)]
    first_segno: u64,
}

/// What was found in the WAL archive.
#[derive(Debug, Clone, Serialize)]
pub struct WalReport {
    pub ok: bool,
    pub gaps: Vec<Gap>,
    pub bad_files: Vec<Problem>,
    /// Files read and authenticated.
    pub files_checked: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub backups: Vec<BackupReport>,
    pub wal: WalReport,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.wal.ok && self.backups.iter().all(|b| b.ok)
    }
}

/// Verifies backup `only` (an id or `latest`), or every backup, and the WAL archive. Blocking.
pub fn verify(repo: &Repository, only: Option<&str>) -> Result<VerifyReport, VerifyError> {
    let catalog = repo.catalog();
    let ids: Vec<String> = match only {
        // An incremental backup is verified with its chain: it is restored with it.
        Some(id) => chain::with_ancestors(&catalog, &catalog.resolve(id)?),
        None => catalog.ids()?,
    };
    let index = WalIndex::scan(repo)?;
    let mut backups = Vec::new();
    let mut gaps: BTreeMap<String, Gap> = BTreeMap::new();
    for id in &ids {
        let _span = tracing::info_span!("verify", backup_id = %id).entered();
        let mut problems = Vec::new();
        let record_file = format!("{BACKUPS_DIR}/{id}/{}", crate::catalog::RECORD_FILE);
        let record = catalog.read(id).and_then(|r| {
            r.verify_mac(repo.keyring(), &catalog.record_path(id))
                .map(|()| r)
        });
        match record {
            Ok(record) => {
                check_backup(repo, &record, &mut problems);
                check_chain(repo, &record, &index, &mut problems, &mut gaps);
            }
            Err(e) => problems.push(problem(record_file, e)),
        }
        backups.push(BackupReport {
            id: id.clone(),
            ok: problems.is_empty(),
            problems,
        });
    }
    chain::check_chains(repo, &catalog, &mut backups);
    let gaps: Vec<Gap> = gaps.into_values().collect();
    let mut bad_files = index.bad;
    // File errors start with the absolute path; `file` already names it.
    for p in backups
        .iter_mut()
        .flat_map(|b| b.problems.iter_mut())
        .chain(bad_files.iter_mut())
    {
        let prefix = format!("{}: ", repo.store().describe(&p.file));
        if let Some(rest) = p.problem.strip_prefix(&prefix) {
            p.problem = rest.to_string();
        }
    }
    Ok(VerifyReport {
        backups,
        wal: WalReport {
            ok: gaps.is_empty() && bad_files.is_empty(),
            gaps,
            bad_files,
            files_checked: index.checked,
        },
    })
}

/// Reads `reader` to its end in bounded chunks, handing each to `f`.
fn stream(
    mut reader: impl Read,
    mut f: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<u64, String> {
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        };
        total += n as u64;
        f(&buf[..n])?;
    }
}

fn server_family(family: &str) -> Option<Compression> {
    match family {
        "lz4" => Some(Compression::Lz4),
        "gzip" => Some(Compression::Gzip(1)),
        "zstd" => Some(Compression::Zstd(1)),
        _ => None,
    }
}

/// The record's files: manifest, archives against it, the partial segment, history files.
fn check_backup(repo: &Repository, record: &BackupRecord, problems: &mut Vec<Problem>) {
    let manifest_file = layout::backup_file(&record.id, &record.manifest_file);
    let manifest = read_manifest(repo, record, &manifest_file).map_err(|e| {
        problems.push(problem(&manifest_file, e));
    });
    let mut verifier = manifest.as_ref().ok().map(ManifestVerifier::new);
    let mut unreadable = false;
    for archive in &record.archives {
        let name = layout::backup_file(&record.id, &archive.file);
        let prefix = archive
            .tablespace_oid
            .map(|oid| format!("pg_tblspc/{oid}"))
            .unwrap_or_default();
        match walk_archive(repo, &name, archive.server_compression.as_deref(), &prefix) {
            Ok(seen) => {
                if let Some(v) = verifier.as_mut() {
                    seen.iter().for_each(|s| v.observe(s));
                }
            }
            Err((e, seen)) => {
                unreadable = true;
                problems.push(problem(&name, e));
                if let Some(v) = verifier.as_mut() {
                    seen.iter().for_each(|s| v.observe(s));
                }
            }
        }
    }
    if let Some(v) = verifier {
        for m in v.finish() {
            // The members after a damaged spot were never seen: that archive is already named.
            if unreadable && matches!(m, Mismatch::MissingFromArchives { .. }) {
                continue;
            }
            problems.push(problem(&manifest_file, format!("manifest mismatch: {m}")));
        }
    }
    if let Some(p) = &record.partial_wal_file {
        let name = layout::backup_file(&record.id, &p.file);
        if let Err(e) = check_backup_partial(repo, record, p, &name) {
            problems.push(problem(name, e));
        }
    }
    for h in &record.history_files {
        let present = matches!(repo.store().head(h), Ok(Some(_)));
        if !present {
            problems.push(problem(
                h,
                "missing: the backup needs this timeline history file",
            ));
        }
    }
}

fn read_manifest(repo: &Repository, record: &BackupRecord, name: &str) -> Result<Manifest, String> {
    let mut bytes = Vec::new();
    repo.open_file(name)
        .map_err(|e| e.to_string())?
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    let manifest = Manifest::parse(&bytes).map_err(|e| format!("invalid manifest: {e}"))?;
    manifest
        .require_checksum_algorithm(Some(ChecksumAlgorithm::Crc32c))
        .map_err(|e| e.to_string())?;
    if manifest.start_lsn() != Some(record.start_lsn) || manifest.end_lsn() != Some(record.end_lsn)
    {
        return Err(format!(
            "the manifest's WAL range {:?}..{:?} is not the backup's {}..{}",
            manifest.start_lsn(),
            manifest.end_lsn(),
            record.start_lsn,
            record.end_lsn
        ));
    }
    Ok(manifest)
}

type SeenFiles = Vec<crate::tarwalk::SeenFile>;

/// Decrypts, decompresses and walks one archive; on failure, also what was seen before it.
fn walk_archive(
    repo: &Repository,
    name: &str,
    server_compression: Option<&str>,
    prefix: &str,
) -> Result<SeenFiles, (String, SeenFiles)> {
    let codec = match server_compression {
        // Stored as the server compressed it: no compression of ours on top.
        Some(_) => FileCodec {
            compression: Compression::None,
            encryption: repo.codec().encryption.clone(),
        },
        None => repo.codec().clone(),
    };
    let fail = |e: String| (e, Vec::new());
    let reader = repo
        .open_file_with(name, &codec)
        .map_err(|e| fail(e.to_string()))?;
    let reader: Box<dyn Read> = match server_compression {
        None => Box::new(reader),
        Some(family) => {
            let c = server_family(family)
                .ok_or_else(|| fail(format!("unknown server compression {family:?}")))?;
            Box::new(Decoder::new(reader, c).map_err(|e| fail(e.to_string()))?)
        }
    };
    let mut walker = TarWalker::new();
    if !prefix.is_empty() {
        walker = walker.path_prefix(prefix);
    }
    let mut seen = Vec::new();
    let r = stream(reader, |chunk| {
        walker
            .push(chunk)
            .map_err(|e| format!("invalid tar: {e}"))?;
        seen.extend(walker.take_seen());
        Ok(())
    });
    match r {
        Ok(_) => match walker.finish() {
            Ok(rest) => {
                seen.extend(rest);
                Ok(seen)
            }
            Err(e) => Err((format!("invalid tar: {e}"), seen)),
        },
        Err(e) => Err((e, seen)),
    }
}

fn segment_check(repo: &Repository, name: SegmentName) -> SegmentCheck {
    let mut check = SegmentCheck::new(name);
    if let Some(c) = repo.cluster() {
        check.system_identifier = Some(c.system_identifier);
        check.major = Some(c.major);
    }
    check
}

/// Streams a segment's bytes through the page-header validator; a partial copy (`pad`) is
/// checked as if padded with zeros. Returns the bytes read.
fn validate_segment(
    repo: &Repository,
    reader: impl Read,
    name: SegmentName,
    pad: bool,
) -> Result<u64, String> {
    let mut v = SegmentValidator::new(segment_check(repo, name)).map_err(|e| e.to_string())?;
    let size = name.seg_size.bytes();
    let n = stream(reader, |chunk| v.push(chunk).map_err(|e| e.to_string()))?;
    if pad && n <= size {
        let zeros = vec![0u8; BUFFER];
        let mut left = size - n;
        while left > 0 {
            let k = left.min(BUFFER as u64) as usize;
            v.push(&zeros[..k]).map_err(|e| e.to_string())?;
            left -= k as u64;
        }
    }
    v.finish().map_err(|e| e.to_string())?;
    Ok(n)
}

fn check_backup_partial(
    repo: &Repository,
    record: &BackupRecord,
    p: &crate::catalog::PartialWal,
    name: &str,
) -> Result<(), String> {
    let seg_size = WalSegmentSize::new(record.wal_segment_size).map_err(|e| e.to_string())?;
    let segment = SegmentName::parse(&p.segment, seg_size).map_err(|e| e.to_string())?;
    let reader = repo.open_file(name).map_err(|e| e.to_string())?;
    let n = validate_segment(repo, reader, segment, true)?;
    if n != p.valid_bytes {
        return Err(format!(
            "holds {n} bytes of WAL, the record says {}",
            p.valid_bytes
        ));
    }
    Ok(())
}

/// What `wal/` holds, every file already read back.
#[derive(Default)]
struct WalIndex {
    seg_size: Option<WalSegmentSize>,
    /// (timeline, segno) of complete segments.
    complete: BTreeSet<(u32, u64)>,
    /// (timeline, segno) of partial copies (`.partial`, receive-wal's `.partial.recv`).
    partial: BTreeSet<(u32, u64)>,
    /// Stored names of complete segments that failed their check, by (timeline, segno).
    damaged: BTreeMap<(u32, u64), String>,
    bad: Vec<Problem>,
    checked: u64,
}

impl WalIndex {
    fn scan(repo: &Repository) -> Result<WalIndex, VerifyError> {
        let mut index = WalIndex {
            seg_size: repo
                .cluster()
                .and_then(|c| WalSegmentSize::new(u64::from(c.wal_segment_size)).ok()),
            ..WalIndex::default()
        };
        let prefix = format!("{WAL_DIR}/");
        for object in repo.store().list(&prefix)? {
            let file = object
                .name
                .rsplit('/')
                .next()
                .unwrap_or(&object.name)
                .to_string();
            index.check_file(repo, &object.name, &file);
        }
        Ok(index)
    }

    fn check_file(&mut self, repo: &Repository, stored: &str, file: &str) {
        self.checked += 1;
        let suffix = layout::suffix(repo.codec());
        let recv_suffix = if repo.codec().encryption.is_some() {
            ".partial.recv.enc"
        } else {
            ".partial.recv"
        };
        let segment = |base: &str| self.seg_size.and_then(|s| SegmentName::parse(base, s).ok());
        let result = if let Some(seg) = file.strip_suffix(recv_suffix).and_then(segment) {
            self.partial.insert((seg.timeline.0, seg.segno));
            PartialReader::open(repo.store().as_ref(), stored, repo.codec())
                .map_err(|e| e.to_string())
                .and_then(|reader| validate_segment(repo, reader, seg, true).map(drop))
        } else if let Some(base) = file.strip_suffix(suffix.as_str()) {
            if let Some(seg) = segment(base) {
                let r = repo
                    .open_file(stored)
                    .map_err(|e| e.to_string())
                    .and_then(|reader| validate_segment(repo, reader, seg, false).map(drop));
                self.complete.insert((seg.timeline.0, seg.segno));
                if r.is_err() {
                    self.damaged
                        .insert((seg.timeline.0, seg.segno), stored.to_string());
                }
                r
            } else if let Some(seg) = base.strip_suffix(".partial").and_then(segment) {
                self.partial.insert((seg.timeline.0, seg.segno));
                repo.open_file(stored)
                    .map_err(|e| e.to_string())
                    .and_then(|reader| validate_segment(repo, reader, seg, true).map(drop))
            } else if let Some(tli) = crate::wal::history_file_timeline(base) {
                read_history(repo, stored, tli).map(drop)
            } else {
                authenticate(repo, stored)
            }
        } else {
            authenticate(repo, stored)
        };
        if let Err(e) = result {
            self.bad.push(problem(stored, e));
        }
    }

    /// The WAL file name recovery reads for `segno` along `history`, and whether it is there.
    fn has_complete(&self, tli: TimelineId, segno: u64) -> bool {
        self.complete.contains(&(tli.0, segno))
    }

    fn has_partial(&self, tli: TimelineId, segno: u64) -> bool {
        self.partial.contains(&(tli.0, segno))
    }
}

/// Reads a stored file to its end: decrypted, authenticated, decompressed.
fn authenticate(repo: &Repository, stored: &str) -> Result<(), String> {
    let reader = repo.open_file(stored).map_err(|e| e.to_string())?;
    stream(reader, |_| Ok(())).map(drop)
}

fn read_history(
    repo: &Repository,
    stored: &str,
    tli: TimelineId,
) -> Result<TimelineHistory, String> {
    let mut content = Vec::new();
    repo.open_file(stored)
        .map_err(|e| e.to_string())?
        .take(MAX_HISTORY + 1)
        .read_to_end(&mut content)
        .map_err(|e| e.to_string())?;
    if content.len() as u64 > MAX_HISTORY {
        return Err("larger than 1 MiB: not a timeline history file".into());
    }
    TimelineHistory::parse(tli, &content).map_err(|e| e.to_string())
}

/// The history recovery from `record` follows by default (`recovery_target_timeline =
/// 'latest'`), or the backup's own when it is not on that path.
fn chain_history(repo: &Repository, record: &BackupRecord) -> Result<TimelineHistory, String> {
    let own = record.end_timeline();
    let newest = window::newest_timeline(repo, own).map_err(|e| e.to_string())?;
    let history = window::load_history(repo, newest).map_err(|e| e.to_string())?;
    if window::backup_on_path(record, &history) {
        return Ok(history);
    }
    window::load_history(repo, own).map_err(|e| e.to_string())
}

/// Every segment from the backup's start to the end of the archive along its timeline path:
/// runs of missing ones become gaps; damaged or missing ones the backup itself needs are problems
/// of the backup.
fn check_chain(
    repo: &Repository,
    record: &BackupRecord,
    index: &WalIndex,
    problems: &mut Vec<Problem>,
    gaps: &mut BTreeMap<String, Gap>,
) {
    let Ok(seg_size) = WalSegmentSize::new(record.wal_segment_size) else {
        problems.push(problem(
            format!(
                "{BACKUPS_DIR}/{}/{}",
                record.id,
                crate::catalog::RECORD_FILE
            ),
            format!("invalid wal_segment_size {}", record.wal_segment_size),
        ));
        return;
    };
    let history = match chain_history(repo, record) {
        Ok(h) => h,
        Err(e) => {
            problems.push(problem(
                WAL_DIR,
                format!("cannot follow the timelines: {e}"),
            ));
            return;
        }
    };
    let first = seg_size.segno_of(record.start_lsn);
    let backup_end = SegmentName::containing_end(record.end_timeline(), record.end_lsn, seg_size);
    let backup_end = backup_end.segno.max(first);
    // The end of the archive: the newest file on the path, complete or partial.
    let on_path = |tli: u32, segno: u64| {
        segno >= first && history.timeline_for_segment(segno, seg_size).0 == tli
    };
    let last = index
        .complete
        .iter()
        .chain(index.partial.iter())
        .filter(|(tli, segno)| on_path(*tli, *segno))
        .map(|&(_, segno)| segno)
        .max()
        .unwrap_or(first)
        .max(backup_end);
    let backup_partial = record.partial_wal_file.as_ref().map(|p| p.segment.clone());
    let mut run: Option<(SegmentName, SegmentName)> = None;
    let mut runs = Vec::new();
    for segno in first..=last {
        let tli = history.timeline_for_segment(segno, seg_size);
        let name = SegmentName::new(tli, segno, seg_size);
        let covered = index.has_complete(tli, segno)
            || (segno == last
                && (index.has_partial(tli, segno)
                    || backup_partial.as_deref() == Some(&name.to_string())));
        if let Some(stored) = index.damaged.get(&(tli.0, segno)) {
            if segno <= backup_end {
                problems.push(problem(
                    stored,
                    "damaged (see the WAL problems); restoring this backup needs it",
                ));
            }
        }
        if covered {
            if let Some(r) = run.take() {
                runs.push(r);
            }
            continue;
        }
        // The backup's own partial copy serves its last segment for a restore to its end.
        let own_partial =
            segno == backup_end && backup_partial.as_deref() == Some(&name.to_string());
        if segno <= backup_end && !own_partial {
            problems.push(problem(
                layout::wal_segment_file(&name, repo.codec()),
                "missing: restoring this backup needs it",
            ));
        }
        run = Some(match run {
            Some((start, _)) => (start, name),
            None => (name, name),
        });
    }
    runs.extend(run);
    for (start, end) in runs {
        let gap = gaps.entry(end.to_string()).or_insert_with(|| Gap {
            first: start.to_string(),
            last: end.to_string(),
            start_lsn: Lsn(start.segno * seg_size.bytes()).to_string(),
            end_lsn: Lsn((end.segno + 1) * seg_size.bytes()).to_string(),
            backups: Vec::new(),
            first_segno: start.segno,
        });
        if start.segno < gap.first_segno {
            gap.first_segno = start.segno;
            gap.first = start.to_string();
            gap.start_lsn = Lsn(start.segno * seg_size.bytes()).to_string();
        }
        gap.backups.push(record.id.clone());
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
