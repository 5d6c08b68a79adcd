//! The recoverable window of a backup: from the backup's end to the last WAL the repository can
//! serve along a timeline path (complete segments in `wal/`, then the partial copy `wal-fetch`
//! would serve for the first segment that is not complete). Computed from file names, the
//! timeline history files and the catalog; no WAL is parsed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;

use pgwire_repl::{Lsn, TimelineId};

use super::pitr::PitrError;
use crate::catalog::BackupRecord;
use crate::layout;
use crate::repo::Repository;
use crate::wal::archive::{longest_backup_partial, WalArchive};
use crate::wal::{SegmentName, TimelineHistory, WalSegmentSize};

/// How far recovery from one backup can go along one timeline path.
#[derive(Debug, Clone)]
pub struct Window {
    pub backup_id: String,
    /// The backup's end: the earliest point recovery may stop at.
    pub start: Lsn,
    /// The backup's end time as recorded (RFC 3339, whole seconds).
    pub start_time: String,
    /// The history recovery follows (the target timeline's).
    pub history: TimelineHistory,
    /// The end of the WAL the repository can serve along that path.
    pub end: Lsn,
    /// The last segment served is a partial copy (its real end may be lower than `end`).
    pub ends_in_partial: bool,
    /// The first segment on the path that the repository cannot serve.
    pub missing: SegmentName,
    /// A later segment of the same timeline that is archived although `missing` is not.
    pub gap_before: Option<SegmentName>,
}

impl Window {
    /// The timelines on the path, oldest first.
    pub fn path(&self) -> Vec<TimelineId> {
        self.history.spans().iter().map(|s| s.timeline).collect()
    }

    /// Whether the repository serves WAL at least to the backup's end.
    pub fn reaches_backup_end(&self) -> bool {
        self.end >= self.start
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recoverable window for timeline {}",
            self.history.timeline()
        )?;
        let path = self.path();
        if path.len() > 1 {
            let names: Vec<String> = path.iter().map(|t| t.0.to_string()).collect();
            write!(f, " (timeline path {})", names.join(" -> "))?;
        }
        write!(
            f,
            ": {} (end of backup {} at {}) to {} (end of archived WAL",
            self.start, self.backup_id, self.start_time, self.end
        )?;
        if self.ends_in_partial {
            write!(f, ", at most: the last segment is a partial copy")?;
        }
        write!(f, "; {} is not in the archive", self.missing)?;
        if let Some(later) = &self.gap_before {
            write!(
                f,
                ", although the later {later} is: the archive has a gap there"
            )?;
        }
        write!(f, ")")
    }
}

/// The history of `timeline` as the repository holds it (timeline 1 has none).
pub fn load_history(repo: &Repository, timeline: TimelineId) -> Result<TimelineHistory, PitrError> {
    if timeline.0 == 1 {
        return Ok(TimelineHistory::root(timeline));
    }
    let stored = layout::history_file(timeline.0, repo.codec());
    if !repo.has_file(&stored)? {
        return Err(PitrError::NoHistory { timeline });
    }
    let mut content = Vec::new();
    repo.open_file(&stored)?
        .read_to_end(&mut content)
        .map_err(|source| PitrError::Read {
            file: stored.clone(),
            source,
        })?;
    TimelineHistory::parse(timeline, &content).map_err(PitrError::History)
}

/// Whether the repository holds the history file of `timeline`.
pub fn has_history(repo: &Repository, timeline: TimelineId) -> Result<bool, PitrError> {
    Ok(repo.has_file(&layout::history_file(timeline.0, repo.codec()))?)
}

/// What `recovery_target_timeline = 'latest'` finds starting from `from`: like the server
/// (findNewestTimeLine), the last of the consecutive timelines above it that have a history file.
pub fn newest_timeline(repo: &Repository, from: TimelineId) -> Result<TimelineId, PitrError> {
    let mut newest = from;
    while has_history(repo, TimelineId(newest.0 + 1))? {
        newest = TimelineId(newest.0 + 1);
    }
    Ok(newest)
}

/// Whether a backup lies on `history`: its end timeline is on the path and it ended before that
/// timeline was left.
pub fn backup_on_path(record: &BackupRecord, history: &TimelineHistory) -> bool {
    let tli = record.end_timeline();
    history.contains(tli)
        && history
            .switch_point(tli)
            .is_none_or(|switch| record.end_lsn <= switch)
}

/// Computes the window of `record` along `history`.
pub fn compute(
    repo: &Repository,
    record: &BackupRecord,
    history: &TimelineHistory,
) -> Result<Window, PitrError> {
    let seg_size = WalSegmentSize::new(record.wal_segment_size)
        .map_err(|e| PitrError::Internal(format!("backup record {}: {e}", record.id)))?;
    let archive = WalArchive::new(repo);
    let mut listings: BTreeMap<TimelineId, Listing> = BTreeMap::new();
    let mut segno = seg_size.segno_of(record.start_lsn);
    loop {
        let tli = history.timeline_for_segment(segno, seg_size);
        if let std::collections::btree_map::Entry::Vacant(slot) = listings.entry(tli) {
            let mut listing = Listing::default();
            for s in archive.list_segments(tli)? {
                if s.partial {
                    listing.partial.insert(s.name.segno, s.stored);
                } else {
                    listing.complete.insert(s.name.segno);
                }
            }
            slot.insert(listing);
        }
        let listing = &listings[&tli];
        if listing.complete.contains(&segno) {
            segno += 1;
            continue;
        }
        let segment = SegmentName::new(tli, segno, seg_size);
        let gap_before = listing
            .complete
            .range(segno + 1..)
            .next()
            .or_else(|| listing.partial.range(segno + 1..).next().map(|(n, _)| n))
            .map(|&n| SegmentName::new(tli, n, seg_size));
        let base = Lsn(segno * seg_size.bytes());
        // wal-fetch serves a partial copy only when no later segment is archived.
        let partial = match gap_before {
            Some(_) => None,
            None => served_partial_bytes(repo, listing.partial.get(&segno), &segment)?,
        };
        let (end, ends_in_partial, missing) = match partial {
            Some(bytes) if bytes > 0 => (
                Lsn(base.0 + bytes.min(seg_size.bytes())),
                true,
                SegmentName::new(tli, segno + 1, seg_size),
            ),
            _ => (base, false, segment),
        };
        return Ok(Window {
            backup_id: record.id.clone(),
            start: record.end_lsn,
            start_time: record.end_time.clone(),
            history: history.clone(),
            end,
            ends_in_partial,
            missing,
            gap_before,
        });
    }
}

#[derive(Default)]
struct Listing {
    complete: BTreeSet<u64>,
    /// segno → stored name of a `.partial`.
    partial: BTreeMap<u64, String>,
}

/// How many bytes of `segment` the partial copy wal-fetch would serve holds, in wal-fetch's order:
/// a `.partial` in the archive (`archived`, its stored name), receive-wal's segment in progress,
/// a base backup's partial.
pub(crate) fn served_partial_bytes(
    repo: &Repository,
    archived: Option<&String>,
    segment: &SegmentName,
) -> Result<Option<u64>, PitrError> {
    if let Some(stored) = archived {
        let reader = repo.open_file(stored)?;
        return count(reader, stored).map(Some);
    }
    let receiving = crate::wal::partial::open_receiving(repo, segment)
        .map_err(|e| PitrError::Internal(format!("reading the segment being received: {e}")))?;
    if let Some(reader) = receiving {
        let stored =
            crate::wal::partial::receiving_name(segment, repo.codec().encryption.is_some());
        let bytes = count(reader, &stored)?;
        if bytes > 0 {
            return Ok(Some(bytes));
        }
    }
    Ok(longest_backup_partial(repo, segment)?.map(|(valid_bytes, _)| valid_bytes))
}

fn count(mut reader: impl Read, stored: &str) -> Result<u64, PitrError> {
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(|source| PitrError::Read {
        file: stored.to_string(),
        source,
    })
}
