//! The WAL coverage of a repository, for `pgstream list`: per timeline, the segments the archive
//! holds (runs of complete segments, then a trailing partial copy), where the timeline branched
//! from its parent, and every gap; per backup, its recoverable windows (computed by
//! [`crate::restore::window`], one per timeline the backup lies on).
//!
//! Segment ranges and gaps come from file names alone, so they need no passphrase. Branch
//! points come from the history files, and the exact end of a partial copy and the windows from
//! file contents: in an encrypted repository those need the passphrase ([`Branch::Unknown`],
//! [`PartialCopy::bytes`] `None`).

mod scan;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use pgwire_repl::{Lsn, TimelineId};

use crate::catalog::CatalogError;
use crate::repo::RepoError;
use crate::restore::pitr::PitrError;
use crate::store::StoreError;
use crate::wal::{SegmentName, TimelineHistory, WalSegmentSize};
pub use scan::{backup_windows, wal_coverage};

/// Why the coverage could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum CoverageError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Reading a history file or a partial copy, or computing a window.
    #[error(transparent)]
    Window(#[from] PitrError),
}

/// Where a partial copy of a segment is kept, in the order wal-fetch prefers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartialSource {
    /// A `.partial` in `wal/` (archive-push of a promoted server's last segment, or receive-wal
    /// stopping at a timeline switch).
    Archived,
    /// The segment `receive-wal` is writing (`.partial.recv`).
    Receiving,
    /// The unfinished last segment a base backup kept in its own directory.
    Backup,
}

impl PartialSource {
    /// The name used in `list --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            PartialSource::Archived => "archived",
            PartialSource::Receiving => "receiving",
            PartialSource::Backup => "backup",
        }
    }
}

/// One partial copy of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialCopy {
    pub segment: SegmentName,
    pub source: PartialSource,
    /// Its repository name.
    pub stored: String,
    /// Bytes of WAL it holds; `None` when unknown (its content is encrypted and no passphrase
    /// was given).
    pub bytes: Option<u64>,
}

impl PartialCopy {
    /// The end of the WAL it holds, when known.
    pub fn end_lsn(&self) -> Option<Lsn> {
        self.bytes
            .map(|b| Lsn(self.segment.start_lsn().0 + b.min(self.segment.seg_size.bytes())))
    }
}

/// What the repository's file names say about one timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimelineFiles {
    /// Segment numbers of the complete segments.
    pub complete: BTreeSet<u64>,
    /// Every partial copy, in any order.
    pub partials: Vec<PartialCopy>,
    /// Whether `wal/` holds its history file.
    pub has_history: bool,
}

impl TimelineFiles {
    /// The highest segment number held, complete or partial.
    fn last_held(&self) -> Option<u64> {
        let partial = self.partials.iter().map(|p| p.segment.segno).max();
        self.complete.last().copied().max(partial)
    }
}

/// Why a timeline's branch point is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchUnknown {
    /// The history file is encrypted and no passphrase was given.
    NeedsPassphrase,
    /// The repository has no history file for the timeline.
    NoHistoryFile,
}

/// Where a timeline comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Branch {
    /// No parent (timeline 1).
    Root,
    /// Forked from `parent` at `switch_point`, the first LSN of this timeline.
    Forked {
        parent: TimelineId,
        switch_point: Lsn,
    },
    Unknown(BranchUnknown),
}

impl Branch {
    /// The branch a history describes.
    pub fn of(history: &TimelineHistory) -> Branch {
        match history.parent() {
            None => Branch::Root,
            Some(parent) => Branch::Forked {
                parent,
                switch_point: history.fork_point(),
            },
        }
    }
}

/// Consecutive segments `first..=last` of one timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentRange {
    pub first: SegmentName,
    pub last: SegmentName,
}

impl SegmentRange {
    fn new(timeline: TimelineId, first: u64, last: u64, seg_size: WalSegmentSize) -> Self {
        SegmentRange {
            first: SegmentName::new(timeline, first, seg_size),
            last: SegmentName::new(timeline, last, seg_size),
        }
    }

    pub fn start_lsn(&self) -> Lsn {
        self.first.start_lsn()
    }

    pub fn end_lsn(&self) -> Lsn {
        self.last.end_lsn()
    }

    pub fn segments(&self) -> u64 {
        self.last.segno - self.first.segno + 1
    }
}

/// What the archive holds of one timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineCoverage {
    pub timeline: TimelineId,
    pub branch: Branch,
    /// Its history, when read (timeline 1's is the root).
    pub history: Option<TimelineHistory>,
    /// Runs of complete segments, in order.
    pub complete: Vec<SegmentRange>,
    /// The partial copy wal-fetch serves after the last complete segment, if any.
    pub partial: Option<PartialCopy>,
    /// Missing segments, in order: between runs, before the trailing partial, and between the
    /// branch point and the first segment held when the parent's WAL reaches the branch point.
    pub gaps: Vec<SegmentRange>,
}

impl TimelineCoverage {
    /// The end of the complete segments (`None`: none).
    pub fn complete_end(&self) -> Option<Lsn> {
        self.complete.last().map(SegmentRange::end_lsn)
    }
}

/// The WAL coverage of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalCoverage {
    /// `None` while the repository is bound to no cluster (it then holds no WAL).
    pub segment_size: Option<WalSegmentSize>,
    /// Whether file contents (history files, partial copies) could be read: false for an
    /// encrypted repository opened without its passphrase.
    pub contents_read: bool,
    /// By timeline.
    pub timelines: Vec<TimelineCoverage>,
}

/// The coverage of each timeline in `files`, from names alone; `histories` holds the histories
/// read (absent: not read, for `unread`).
pub fn compute(
    seg_size: WalSegmentSize,
    files: &BTreeMap<TimelineId, TimelineFiles>,
    histories: &BTreeMap<TimelineId, TimelineHistory>,
    unread: BranchUnknown,
) -> Vec<TimelineCoverage> {
    let mut out = Vec::new();
    for (&timeline, own) in files {
        let history = if timeline.0 == 1 {
            Some(TimelineHistory::root(timeline))
        } else {
            histories.get(&timeline).cloned()
        };
        let branch = match &history {
            Some(h) => Branch::of(h),
            None if !own.has_history => Branch::Unknown(BranchUnknown::NoHistoryFile),
            None => Branch::Unknown(unread),
        };
        let complete = runs(timeline, &own.complete, seg_size);
        let mut gaps: Vec<SegmentRange> = complete
            .windows(2)
            .map(|w| {
                SegmentRange::new(
                    timeline,
                    w[0].last.segno + 1,
                    w[1].first.segno - 1,
                    seg_size,
                )
            })
            .collect();
        let last_complete = own.complete.last().copied();
        let partial = trailing_partial(own, last_complete);
        if let (Some(l), Some(p)) = (last_complete, &partial) {
            if l + 1 < p.segment.segno {
                gaps.push(SegmentRange::new(
                    timeline,
                    l + 1,
                    p.segment.segno - 1,
                    seg_size,
                ));
            }
        }
        let first_held = complete
            .first()
            .map(|r| r.first.segno)
            .or(partial.as_ref().map(|p| p.segment.segno));
        if let (
            Branch::Forked {
                parent,
                switch_point,
            },
            Some(first),
        ) = (&branch, first_held)
        {
            let fork = seg_size.segno_of(*switch_point);
            let parent_reaches = files
                .get(parent)
                .and_then(TimelineFiles::last_held)
                .is_some_and(|l| l + 1 >= fork);
            if first > fork && parent_reaches {
                gaps.insert(0, SegmentRange::new(timeline, fork, first - 1, seg_size));
            }
        }
        out.push(TimelineCoverage {
            timeline,
            branch,
            history,
            complete,
            partial,
            gaps,
        });
    }
    out
}

/// Runs of consecutive segment numbers.
fn runs(
    timeline: TimelineId,
    segnos: &BTreeSet<u64>,
    seg_size: WalSegmentSize,
) -> Vec<SegmentRange> {
    let mut out: Vec<SegmentRange> = Vec::new();
    for &n in segnos {
        match out.last_mut() {
            Some(r) if r.last.segno + 1 == n => r.last = SegmentName::new(timeline, n, seg_size),
            _ => out.push(SegmentRange::new(timeline, n, n, seg_size)),
        }
    }
    out
}

/// The partial copy wal-fetch serves at the end of the timeline: the newest segment that has
/// only partial copies, past the last complete one; of its copies, the first in wal-fetch's
/// order that holds WAL (a copy known to be empty is passed over, as wal-fetch does).
fn trailing_partial(own: &TimelineFiles, last_complete: Option<u64>) -> Option<PartialCopy> {
    let candidates = own
        .partials
        .iter()
        .filter(|p| last_complete.is_none_or(|l| p.segment.segno > l) && p.bytes != Some(0));
    let newest = candidates.clone().map(|p| p.segment.segno).max()?;
    candidates
        .filter(|p| p.segment.segno == newest)
        .min_by_key(|p| p.source)
        .cloned()
}
