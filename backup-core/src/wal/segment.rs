//! WAL file names (xlog_internal.h): segments `%08X%08X%08X`, `.partial`, `%08X.history`.

use std::fmt;

use pgwire_repl::{Lsn, TimelineId};

/// A WAL name or size that is not what PostgreSQL would use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalNameError {
    #[error(
        "invalid WAL segment size {0} bytes: it must be a power of two from 1 MB to 1 GB \
         (SHOW wal_segment_size)"
    )]
    SegmentSize(u64),
    #[error("{0:?} is not a WAL file name (expected 24 upper-case hex digits, e.g. 000000010000000000000003)")]
    NotAWalFileName(String),
    #[error("{name:?} is not a valid WAL segment name for {seg_size}-byte segments: {why}")]
    OutOfRange {
        name: String,
        seg_size: u64,
        why: &'static str,
    },
}

/// wal_segment_size: a power of two from 1 MiB to 1 GiB.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WalSegmentSize(u32);

impl WalSegmentSize {
    /// The initdb default, 16 MiB.
    pub const DEFAULT: WalSegmentSize = WalSegmentSize(16 * 1024 * 1024);

    pub fn new(bytes: u64) -> Result<WalSegmentSize, WalNameError> {
        if bytes.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&bytes) {
            Ok(WalSegmentSize(bytes as u32))
        } else {
            Err(WalNameError::SegmentSize(bytes))
        }
    }

    pub fn bytes(self) -> u64 {
        u64::from(self.0)
    }

    /// Segments per 4 GiB "xlogid" (XLogSegmentsPerXLogId).
    pub fn segments_per_xlog_id(self) -> u64 {
        0x1_0000_0000 / self.bytes()
    }

    /// The number of the segment holding `lsn` (XLByteToSeg).
    pub fn segno_of(self, lsn: Lsn) -> u64 {
        lsn.0 / self.bytes()
    }
}

impl fmt::Display for WalSegmentSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

/// One WAL segment: timeline and segment number, with the segment size that gives the name
/// its meaning.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SegmentName {
    pub timeline: TimelineId,
    pub segno: u64,
    pub seg_size: WalSegmentSize,
}

impl SegmentName {
    pub fn new(timeline: TimelineId, segno: u64, seg_size: WalSegmentSize) -> SegmentName {
        SegmentName {
            timeline,
            segno,
            seg_size,
        }
    }

    /// The segment that holds `lsn` (e.g. a start LSN).
    pub fn from_lsn(timeline: TimelineId, lsn: Lsn, seg_size: WalSegmentSize) -> SegmentName {
        SegmentName::new(timeline, seg_size.segno_of(lsn), seg_size)
    }

    /// The segment that holds the byte before `end` (XLByteToPrevSeg): where WAL ending at
    /// `end` was last written. `end` 0/0 gives segment 0.
    pub fn containing_end(timeline: TimelineId, end: Lsn, seg_size: WalSegmentSize) -> SegmentName {
        SegmentName::new(
            timeline,
            end.0.saturating_sub(1) / seg_size.bytes(),
            seg_size,
        )
    }

    /// Parses a 24-hex-digit segment name (no suffix).
    pub fn parse(name: &str, seg_size: WalSegmentSize) -> Result<SegmentName, WalNameError> {
        if !is_wal_file_name(name) {
            return Err(WalNameError::NotAWalFileName(name.to_string()));
        }
        let field = |i: usize| u32::from_str_radix(&name[i..i + 8], 16).expect("checked hex");
        let (tli, log, seg) = (field(0), field(8), field(16));
        let out_of_range = |why| WalNameError::OutOfRange {
            name: name.to_string(),
            seg_size: seg_size.bytes(),
            why,
        };
        if tli == 0 {
            return Err(out_of_range("timeline 0 does not exist"));
        }
        let per_id = seg_size.segments_per_xlog_id();
        if u64::from(seg) >= per_id {
            return Err(out_of_range(
                "the last 8 digits exceed the segments per 4 GB",
            ));
        }
        Ok(SegmentName::new(
            TimelineId(tli),
            u64::from(log) * per_id + u64::from(seg),
            seg_size,
        ))
    }

    /// First byte of the segment.
    pub fn start_lsn(&self) -> Lsn {
        Lsn(self.segno * self.seg_size.bytes())
    }

    /// First byte after the segment.
    pub fn end_lsn(&self) -> Lsn {
        Lsn((self.segno + 1).saturating_mul(self.seg_size.bytes()))
    }

    pub fn next(&self) -> SegmentName {
        SegmentName::new(self.timeline, self.segno + 1, self.seg_size)
    }

    /// The same segment number on another timeline.
    pub fn on_timeline(&self, timeline: TimelineId) -> SegmentName {
        SegmentName::new(timeline, self.segno, self.seg_size)
    }

    /// `<name>.partial`.
    pub fn partial_name(&self) -> String {
        format!("{self}.partial")
    }
}

/// `%08X%08X%08X`.
impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_id = self.seg_size.segments_per_xlog_id();
        write!(
            f,
            "{:08X}{:08X}{:08X}",
            self.timeline.0,
            self.segno / per_id,
            self.segno % per_id
        )
    }
}

/// Any file a WAL archive holds, by name.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum WalFileName {
    Segment(SegmentName),
    /// `<segment>.partial`: an incomplete segment (pg_receivewal, or a promoted timeline's last).
    Partial(SegmentName),
    /// `%08X.history`.
    History(TimelineId),
}

impl WalFileName {
    pub fn parse(name: &str, seg_size: WalSegmentSize) -> Result<WalFileName, WalNameError> {
        if let Some(seg) = name.strip_suffix(".partial") {
            return SegmentName::parse(seg, seg_size)
                .map(WalFileName::Partial)
                .map_err(|e| match e {
                    WalNameError::NotAWalFileName(_) => {
                        WalNameError::NotAWalFileName(name.to_string())
                    }
                    e => e,
                });
        }
        if let Some(tli) = history_file_timeline(name) {
            return Ok(WalFileName::History(tli));
        }
        SegmentName::parse(name, seg_size).map(WalFileName::Segment)
    }

    pub fn timeline(&self) -> TimelineId {
        match self {
            WalFileName::Segment(s) | WalFileName::Partial(s) => s.timeline,
            WalFileName::History(t) => *t,
        }
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalFileName::Segment(s) => write!(f, "{s}"),
            WalFileName::Partial(s) => write!(f, "{s}.partial"),
            WalFileName::History(t) => f.write_str(&history_file_name(*t)),
        }
    }
}

fn is_upper_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// 24 upper-case hex digits (IsXLogFileName).
pub fn is_wal_file_name(name: &str) -> bool {
    name.len() == 24 && is_upper_hex(name)
}

/// `<24 hex>.partial` (IsPartialXLogFileName).
pub fn is_partial_wal_file_name(name: &str) -> bool {
    name.strip_suffix(".partial").is_some_and(is_wal_file_name)
}

/// `%08X.history` (IsTLHistoryFileName).
pub fn is_history_file_name(name: &str) -> bool {
    history_file_timeline(name).is_some()
}

/// `%08X.history` for `tli`.
pub fn history_file_name(tli: TimelineId) -> String {
    format!("{:08X}.history", tli.0)
}

/// The timeline a history file name is for; `None` if it is not one (or names timeline 0).
pub fn history_file_timeline(name: &str) -> Option<TimelineId> {
    let hex = name.strip_suffix(".history")?;
    if hex.len() != 8 || !is_upper_hex(hex) {
        return None;
    }
    let tli = u32::from_str_radix(hex, 16).ok()?;
    (tli != 0).then_some(TimelineId(tli))
}
