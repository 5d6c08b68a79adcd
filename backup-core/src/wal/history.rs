//! Timeline history files (`%08X.history`, timeline.c readTimeLineHistory): which timelines a
//! timeline descends from and where it forked from each.

use pgwire_repl::{Lsn, TimelineId};

use super::segment::{SegmentName, WalSegmentSize};

/// A history file that does not parse; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("history file of timeline {timeline}, line {line}: {message}")]
pub struct HistoryError {
    pub timeline: TimelineId,
    pub line: usize,
    pub message: String,
}

/// One line: timeline `parent` was left at `switch_point` (the first LSN of its child).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub parent: TimelineId,
    pub switch_point: Lsn,
    pub reason: String,
}

/// The WAL of `timeline` that belongs to the history: `[begin, end)`; `end` is `None` for
/// the newest timeline (still open). The first span begins at 0/0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineSpan {
    pub timeline: TimelineId,
    pub begin: Lsn,
    pub end: Option<Lsn>,
}

/// The history of one timeline: its ancestors, oldest first, with their switch points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistory {
    timeline: TimelineId,
    entries: Vec<HistoryEntry>,
}

impl TimelineHistory {
    /// A timeline without ancestors (timeline 1 has no history file).
    pub fn root(timeline: TimelineId) -> TimelineHistory {
        TimelineHistory {
            timeline,
            entries: Vec::new(),
        }
    }

    /// Parses the content of `timeline`'s history file (or TIMELINE_HISTORY's content).
    /// Lines are `parentTLI <whitespace> X/X [<whitespace> reason]`; blank lines and `#`
    /// comments are skipped.
    pub fn parse(timeline: TimelineId, content: &[u8]) -> Result<TimelineHistory, HistoryError> {
        let mut entries: Vec<HistoryEntry> = Vec::new();
        for (i, raw) in content.split(|&b| b == b'\n').enumerate() {
            let fail = |message: String| HistoryError {
                timeline,
                line: i + 1,
                message,
            };
            let line = String::from_utf8_lossy(raw);
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let digits = line.bytes().take_while(u8::is_ascii_digit).count();
            let parent: u32 = line[..digits]
                .parse()
                .ok()
                .filter(|&t| t != 0)
                .ok_or_else(|| fail(format!("expected a numeric timeline ID: {line:?}")))?;
            let rest = line[digits..].trim_start();
            let lsn_len = rest
                .bytes()
                .take_while(|b| b.is_ascii_hexdigit() || *b == b'/')
                .count();
            let switch_point: Lsn = rest[..lsn_len].parse().map_err(|_| {
                fail(format!(
                    "expected a WAL switch point location after {parent}: {line:?}"
                ))
            })?;
            let reason = &rest[lsn_len..];
            if !reason.is_empty() && !reason.starts_with(char::is_whitespace) {
                return Err(fail(format!("malformed switch point location: {line:?}")));
            }
            if let Some(prev) = entries.last() {
                if parent <= prev.parent.0 {
                    return Err(fail(format!(
                        "timeline IDs must be in increasing sequence ({parent} after {})",
                        prev.parent
                    )));
                }
                if switch_point < prev.switch_point {
                    return Err(fail(format!(
                        "switch point {switch_point} of timeline {parent} is before {} of \
                         timeline {}",
                        prev.switch_point, prev.parent
                    )));
                }
            }
            if parent >= timeline.0 {
                return Err(fail(format!(
                    "timeline IDs must be less than the child timeline's ID {timeline} \
                     (found {parent})"
                )));
            }
            entries.push(HistoryEntry {
                parent: TimelineId(parent),
                switch_point,
                reason: reason.trim().to_string(),
            });
        }
        Ok(TimelineHistory { timeline, entries })
    }

    /// The timeline this history is of (the newest).
    pub fn timeline(&self) -> TimelineId {
        self.timeline
    }

    /// Ancestors, oldest first.
    pub fn entries(&self) -> &[HistoryEntry] {
        &self.entries
    }

    /// The timeline this one forked from.
    pub fn parent(&self) -> Option<TimelineId> {
        self.entries.last().map(|e| e.parent)
    }

    /// Where this timeline begins (0/0 for a root).
    pub fn fork_point(&self) -> Lsn {
        self.entries.last().map_or(Lsn(0), |e| e.switch_point)
    }

    /// The path from the oldest ancestor to this timeline (as timeline.c's list, reversed).
    pub fn spans(&self) -> Vec<TimelineSpan> {
        let mut begin = Lsn(0);
        let mut spans: Vec<TimelineSpan> = self
            .entries
            .iter()
            .map(|e| {
                let s = TimelineSpan {
                    timeline: e.parent,
                    begin,
                    end: Some(e.switch_point),
                };
                begin = e.switch_point;
                s
            })
            .collect();
        spans.push(TimelineSpan {
            timeline: self.timeline,
            begin,
            end: None,
        });
        spans
    }

    /// Whether `tli` is this timeline or one of its ancestors.
    pub fn contains(&self, tli: TimelineId) -> bool {
        tli == self.timeline || self.entries.iter().any(|e| e.parent == tli)
    }

    /// Where `tli` was left on the way to this timeline; `None` for this timeline itself
    /// (still open) and for timelines not in the history.
    pub fn switch_point(&self, tli: TimelineId) -> Option<Lsn> {
        self.entries
            .iter()
            .find(|e| e.parent == tli)
            .map(|e| e.switch_point)
    }

    /// The timeline that wrote `lsn` on this history (tliOfPointInHistory): a switch point
    /// itself belongs to the child.
    pub fn timeline_of(&self, lsn: Lsn) -> TimelineId {
        self.entries
            .iter()
            .find(|e| lsn < e.switch_point)
            .map_or(self.timeline, |e| e.parent)
    }

    /// The timeline whose file recovery reads for segment `segno` (XLogFileReadAnyTLI): the
    /// newest timeline that began in or before that segment. The segment holding a switch
    /// point is read from the child's file, which has the parent's WAL up to the switch.
    pub fn timeline_for_segment(&self, segno: u64, seg_size: WalSegmentSize) -> TimelineId {
        self.spans()
            .iter()
            .rev()
            .find(|s| seg_size.segno_of(s.begin) <= segno)
            .map_or(self.timeline, |s| s.timeline)
    }

    /// The segment files needed to replay `[start, end)` along this history, in order.
    pub fn segments_between(
        &self,
        start: Lsn,
        end: Lsn,
        seg_size: WalSegmentSize,
    ) -> impl Iterator<Item = SegmentName> + '_ {
        let first = seg_size.segno_of(start);
        let past_last = if end > start {
            end.0.saturating_sub(1) / seg_size.bytes() + 1
        } else {
            first
        };
        (first..past_last).map(move |segno| {
            SegmentName::new(self.timeline_for_segment(segno, seg_size), segno, seg_size)
        })
    }
}
