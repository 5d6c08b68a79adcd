//! Reading a repository for [`super::compute`]: file names (no passphrase needed), and with the
//! repository open, the history files, the sizes of partial copies, and the backups' windows.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use pgwire_repl::TimelineId;

use super::{
    compute, BranchUnknown, CoverageError, PartialCopy, PartialSource, TimelineFiles, WalCoverage,
};
use crate::catalog::{BackupRecord, Catalog};
use crate::index::{self, WalFileKind};
use crate::layout;
use crate::repo::config::{RepoConfig, CONFIG_FILE};
use crate::repo::{RepoError, Repository};
use crate::restore::pitr::PitrError;
use crate::restore::window::{self, Window};
use crate::store::Store;
use crate::wal::{SegmentName, TimelineHistory, WalSegmentSize};

/// The WAL coverage of the repository in `store`. With `repo` (the same repository, open with
/// its keys) the history files and the partial copies are read too; without it only names are
/// (enough for ranges and gaps, not for branch points or a partial copy's end).
pub fn wal_coverage(
    store: &dyn Store,
    repo: Option<&Repository>,
) -> Result<WalCoverage, CoverageError> {
    let config = crate::repo::read_config(store)?;
    let contents_read = repo.is_some();
    let Some(cluster) = config.cluster else {
        return Ok(WalCoverage {
            segment_size: None,
            contents_read,
            timelines: Vec::new(),
        });
    };
    let seg_size = WalSegmentSize::new(u64::from(cluster.wal_segment_size)).map_err(|e| {
        RepoError::BadConfig {
            location: store.describe(CONFIG_FILE),
            detail: e.to_string(),
        }
    })?;
    let mut files = scan_names(store, &config)?;
    let catalog = match repo {
        Some(r) => r.catalog(),
        None => Catalog::new(store),
    };
    for record in catalog.list()? {
        add_backup_partial(&record, seg_size, &mut files);
    }
    let mut histories = BTreeMap::new();
    if let Some(repo) = repo {
        for (&timeline, own) in files.iter_mut() {
            if timeline.0 > 1 && own.has_history {
                histories.insert(timeline, window::load_history(repo, timeline)?);
            }
            let last = own.complete.last().copied();
            for p in own.partials.iter_mut() {
                if p.bytes.is_none() && last.is_none_or(|l| p.segment.segno > l) {
                    p.bytes = Some(partial_bytes(repo, p)?);
                }
            }
        }
    }
    Ok(WalCoverage {
        segment_size: Some(seg_size),
        contents_read,
        timelines: compute(seg_size, &files, &histories, BranchUnknown::NeedsPassphrase),
    })
}

/// The recoverable windows of `record`: one along each timeline of `coverage` whose history is
/// known and holds the backup (its own timeline always, when no later switch left it first).
pub fn backup_windows(
    repo: &Repository,
    record: &BackupRecord,
    coverage: &WalCoverage,
) -> Result<Vec<Window>, CoverageError> {
    let mut timelines: BTreeSet<TimelineId> =
        coverage.timelines.iter().map(|t| t.timeline).collect();
    timelines.insert(record.end_timeline());
    let mut out = Vec::new();
    for timeline in timelines {
        let known = coverage
            .timelines
            .iter()
            .find(|t| t.timeline == timeline)
            .and_then(|t| t.history.clone());
        let history = match known {
            Some(h) => h,
            None if timeline.0 == 1 => TimelineHistory::root(timeline),
            None => continue,
        };
        if window::backup_on_path(record, &history) {
            out.push(window::compute(repo, record, &history)?);
        }
    }
    Ok(out)
}

/// Segments, partial copies and history files in `wal/`, by name (the repository index).
fn scan_names(
    store: &dyn Store,
    config: &RepoConfig,
) -> Result<BTreeMap<TimelineId, TimelineFiles>, CoverageError> {
    let listing = index::scan_wal(store, config)?;
    let mut files: BTreeMap<TimelineId, TimelineFiles> = BTreeMap::new();
    for &timeline in listing.histories.keys() {
        files.entry(timeline).or_default().has_history = true;
    }
    for o in &listing.files {
        let segment = o.file.segment;
        let source = match o.file.kind {
            WalFileKind::Segment => None,
            WalFileKind::Partial => Some(PartialSource::Archived),
            WalFileKind::Receiving => Some(PartialSource::Receiving),
            WalFileKind::BackupHistory => continue,
        };
        let own = files.entry(segment.timeline).or_default();
        match source {
            None => {
                own.complete.insert(segment.segno);
            }
            Some(source) => own.partials.push(PartialCopy {
                segment,
                source,
                stored: o.file.stored.clone(),
                bytes: None,
            }),
        }
    }
    Ok(files)
}

/// A backup's own partial last segment (its size is in the record, readable without keys).
fn add_backup_partial(
    record: &BackupRecord,
    seg_size: WalSegmentSize,
    files: &mut BTreeMap<TimelineId, TimelineFiles>,
) {
    let Some(p) = &record.partial_wal_file else {
        return;
    };
    if record.wal_segment_size != seg_size.bytes() {
        return;
    }
    let Ok(segment) = SegmentName::parse(&p.segment, seg_size) else {
        return;
    };
    files
        .entry(segment.timeline)
        .or_default()
        .partials
        .push(PartialCopy {
            segment,
            source: PartialSource::Backup,
            stored: layout::backup_file(&record.id, &p.file),
            bytes: Some(p.valid_bytes),
        });
}

/// The bytes of WAL a partial copy holds, read through the repository's codec.
fn partial_bytes(repo: &Repository, p: &PartialCopy) -> Result<u64, CoverageError> {
    let read_err = |source| PitrError::Read {
        file: p.stored.clone(),
        source,
    };
    let mut sink = io::sink();
    let bytes = match p.source {
        PartialSource::Archived => {
            let mut reader = repo.open_file(&p.stored)?;
            io::copy(&mut reader, &mut sink).map_err(read_err)?
        }
        PartialSource::Receiving => {
            let reader = crate::wal::partial::open_receiving(repo, &p.segment).map_err(|e| {
                PitrError::Internal(format!("reading the segment being received: {e}"))
            })?;
            match reader {
                Some(mut reader) => io::copy(&mut reader, &mut sink).map_err(read_err)?,
                // Finished and renamed since the scan.
                None => 0,
            }
        }
        PartialSource::Backup => p.bytes.unwrap_or(0),
    };
    Ok(bytes)
}
