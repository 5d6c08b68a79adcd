//! Which WAL files the kept backups need: a pure function of the kept backups, the timeline
//! histories and the archive's listing (no I/O, so every timeline case is unit-tested).
//!
//! A kept backup needs, for its own consistency, the segments its record names, and for
//! point-in-time recovery from it to now, every segment from its start onward along every
//! timeline that descends from it: a timeline whose history contains the backup's (end)
//! timeline and leaves it at or after the backup's start (or never). Along such a history each
//! segment is read from one timeline's file, the newest that began in or before it, as
//! PostgreSQL's XLogFileReadAnyTLI reads it (`TimelineHistory::timeline_for_segment`). A file
//! is needed when some kept backup needs its timeline's copy of its segment; everything else may
//! go. Never by file-name order alone: a file of a later timeline can be unneeded (a branch that
//! forked before every kept backup) and a file of an earlier one needed.

use std::collections::{BTreeMap, BTreeSet};

use pgwire_repl::{Lsn, TimelineId};

use crate::wal::{SegmentName, TimelineHistory, WalSegmentSize};

/// What a kept backup needs of the WAL archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptBackup {
    pub id: String,
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
    pub end_timeline: TimelineId,
    pub seg_size: WalSegmentSize,
    /// The segments from its start to its end, as its record names them.
    pub wal_segments: Vec<SegmentName>,
}

pub use crate::index::{WalFile, WalFileKind};

/// What [`wal_to_delete`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// The files no kept backup needs, in the order given.
    pub delete: Vec<WalFile>,
    /// Timelines that have files but no history file (and are not timeline 1): where they came
    /// from is unknown, so all their files are kept.
    pub unknown_timelines: BTreeSet<TimelineId>,
    /// The newest timeline, when no kept backup reaches it: all its files are kept (see
    /// [`wal_to_delete`]).
    pub newest_timeline_kept: Option<TimelineId>,
}

/// Segment numbers `[from, to)`; `to` is `u64::MAX` for a timeline that is still open.
type Range = (u64, u64);

/// The segments each timeline's files serve along `history`.
fn served_ranges(history: &TimelineHistory, seg_size: WalSegmentSize) -> Vec<(TimelineId, Range)> {
    let spans = history.spans();
    spans
        .iter()
        .enumerate()
        .map(|(i, span)| {
            let from = seg_size.segno_of(span.begin);
            // The segment holding a switch point is read from the child's file.
            let to = spans
                .get(i + 1)
                .map_or(u64::MAX, |next| seg_size.segno_of(next.begin));
            (span.timeline, (from, to.max(from)))
        })
        .collect()
}

/// Whether recovery from `backup` can follow `history`: the history passes through the backup's
/// timeline and leaves it at or after the backup's start. (At or after the start rather than
/// the end: a branch that forked while the backup ran is of no use to it, but keeping its WAL
/// costs little and errs on the safe side.)
fn reaches(backup: &KeptBackup, history: &TimelineHistory) -> bool {
    history.contains(backup.end_timeline)
        && history
            .switch_point(backup.end_timeline)
            .is_none_or(|switch| switch >= backup.start_lsn)
}

/// The files of `files` that no kept backup needs. `histories` holds the history of every
/// timeline whose history file the archive has; timeline 1 needs none. Receiving files are
/// always kept, as are all files of a timeline whose history is unknown, and all files of the
/// newest timeline when no kept backup reaches it: PostgreSQL numbers a new timeline after the
/// newest it finds in the archive, so that is the one a server is writing now (a primary
/// promoted from a restore to a point before every kept backup), and a base backup starting
/// on it, after expire looked for backups in progress, needs its WAL.
pub fn wal_to_delete(
    kept: &[KeptBackup],
    histories: &BTreeMap<TimelineId, TimelineHistory>,
    files: &[WalFile],
) -> Retention {
    let root = TimelineHistory::root(TimelineId(1));
    let mut all: Vec<&TimelineHistory> = histories.values().collect();
    if !histories.contains_key(&TimelineId(1)) {
        all.push(&root);
    }
    // (timeline, segment size) → ranges of segment numbers some kept backup needs.
    let mut needed: BTreeMap<(TimelineId, WalSegmentSize), Vec<Range>> = BTreeMap::new();
    let mut exact: BTreeSet<(TimelineId, u64, WalSegmentSize)> = BTreeSet::new();
    for backup in kept {
        let first = backup.seg_size.segno_of(backup.start_lsn);
        for history in all.iter().filter(|h| reaches(backup, h)) {
            for (tli, (from, to)) in served_ranges(history, backup.seg_size) {
                let from = from.max(first);
                if from < to {
                    needed
                        .entry((tli, backup.seg_size))
                        .or_default()
                        .push((from, to));
                }
            }
        }
        exact.extend(
            backup
                .wal_segments
                .iter()
                .map(|s| (s.timeline, s.segno, s.seg_size)),
        );
    }
    let known = |tli: TimelineId| tli.0 == 1 || histories.contains_key(&tli);
    let mut retention = Retention::default();
    let newest = histories
        .keys()
        .copied()
        .chain(files.iter().map(|f| f.segment.timeline))
        .max();
    retention.newest_timeline_kept = newest.filter(|&tli| {
        let reached = match histories.get(&tli) {
            Some(h) => kept.iter().any(|b| reaches(b, h)),
            None => kept.iter().any(|b| reaches(b, &TimelineHistory::root(tli))),
        };
        known(tli) && !reached && files.iter().any(|f| f.segment.timeline == tli)
    });
    for file in files {
        let s = &file.segment;
        if !known(s.timeline) {
            retention.unknown_timelines.insert(s.timeline);
            continue;
        }
        if Some(s.timeline) == retention.newest_timeline_kept {
            continue;
        }
        let keep = file.kind == WalFileKind::Receiving
            || exact.contains(&(s.timeline, s.segno, s.seg_size))
            || needed
                .get(&(s.timeline, s.seg_size))
                .is_some_and(|ranges| ranges.iter().any(|&(a, b)| a <= s.segno && s.segno < b));
        if !keep {
            retention.delete.push(file.clone());
        }
    }
    retention
}

#[cfg(test)]
mod tests;
