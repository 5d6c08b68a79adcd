//! Commit and abort records in a WAL segment (access/xlogrecord.h, access/xact.h): where they are
//! and their times, so a recoverable window can state its last archived commit, the last point a
//! time target can stop at. Sans-IO and streaming: bytes are pushed a chunk at a time, pages are
//! taken whole, records are followed across page boundaries, and only transaction records are
//! assembled (the others are skipped by length), so memory stays at one page and one commit.
//!
//! The scan starts at a segment's first page: a record continued from the previous segment is
//! skipped (the previous segment's scan completes it by reading on, see
//! [`CommitScanner::ends_inside_xact`]). It ends at the end of the data: a zero page, a page of another address (a recycled
//! file), a zero length where a record should start, an XLOG_SWITCH, or a record cut short.

use pgwire_repl::Lsn;

use super::page::major_for_magic;

const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
const SHORT_HEADER: usize = 24;
const LONG_HEADER: usize = 40;
/// sizeof(XLogRecord).
const RECORD_HEADER: usize = 24;
const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const XLOG_SWITCH: u8 = 0x40;
/// Transaction records larger than this (thousands of subtransactions) are skipped, not read:
/// memory stays bounded.
const MAX_XACT_RECORD: usize = 4 << 20;
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// What a transaction record ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XactEnd {
    Commit,
    Abort,
}

/// A commit or abort record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XactRecord {
    /// Where the record starts.
    pub lsn: Lsn,
    pub kind: XactEnd,
    /// `xact_time`: microseconds since 2000-01-01 00:00 UTC.
    pub time: i64,
}

impl XactRecord {
    /// Its time as microseconds since the Unix epoch.
    pub fn unix_micros(&self) -> i64 {
        self.time + POSTGRES_EPOCH_UNIX_MICROS
    }
}

enum State {
    /// At the segment's start: a continued record may have to be skipped first.
    Start,
    /// Between records, at a MAXALIGNed offset.
    Between,
    /// Inside a record that continues on the next page.
    InRecord(Record),
    Done,
}

struct Record {
    lsn: Lsn,
    total: usize,
    /// Bytes of it seen so far.
    seen: usize,
    /// Its bytes, while they are wanted: the header, then all of a transaction record.
    bytes: Vec<u8>,
    /// The whole record is being kept.
    keep: bool,
}

/// Scans one segment for commit and abort records.
pub struct CommitScanner {
    segment_start: Lsn,
    /// 0 until the first page's long header says.
    page_size: usize,
    page: Vec<u8>,
    /// Bytes of the segment consumed into whole pages.
    offset: u64,
    major: Option<u32>,
    state: State,
    found: Vec<XactRecord>,
}

impl CommitScanner {
    /// A scanner for the segment that starts at `segment_start`.
    pub fn new(segment_start: Lsn) -> CommitScanner {
        CommitScanner {
            segment_start,
            page_size: 0,
            page: Vec::new(),
            offset: 0,
            major: None,
            state: State::Start,
            found: Vec::new(),
        }
    }

    /// Feeds the next bytes of the segment.
    pub fn push(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() && !matches!(self.state, State::Done) {
            let want = if self.page_size == 0 {
                LONG_HEADER
            } else {
                self.page_size
            };
            let take = (want - self.page.len()).min(chunk.len());
            self.page.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.page.len() < want {
                return;
            }
            if self.page_size == 0 {
                // The first page's long header: xlp_xlog_blcksz at 36.
                let size = u32_at(&self.page, 36) as usize;
                if !(1024..=65536).contains(&size) || !size.is_power_of_two() {
                    self.state = State::Done;
                    return;
                }
                self.page_size = size;
                continue;
            }
            let page = std::mem::take(&mut self.page);
            self.scan_page(&page);
            self.offset += page.len() as u64;
            self.page = page;
            self.page.clear();
        }
    }

    /// Whether the segment ended inside a record that may be a commit or abort (a transaction
    /// record, or one whose header is cut): pushing the next segment's bytes after this one's
    /// completes it (its pages follow on, the first with a long header).
    pub fn ends_inside_xact(&self) -> bool {
        matches!(&self.state, State::InRecord(r) if r.keep || r.seen < RECORD_HEADER)
    }

    /// The commit and abort records found, in WAL order.
    pub fn finish(self) -> Vec<XactRecord> {
        self.found
    }

    fn scan_page(&mut self, page: &[u8]) {
        let page_lsn = self.segment_start.0 + self.offset;
        let magic = u16_at(page, 0);
        let info = u16_at(page, 2);
        if magic == 0 || u64_at(page, 8) != page_lsn {
            self.state = State::Done;
            return;
        }
        if self.major.is_none() {
            self.major = major_for_magic(magic);
        }
        let header = if info & XLP_LONG_HEADER != 0 {
            LONG_HEADER
        } else {
            SHORT_HEADER
        };
        // xlp_rem_len follows magic, info, tli and pageaddr.
        let rem_len = u32_at(page, 16) as usize;
        let continued = info & XLP_FIRST_IS_CONTRECORD != 0;
        let mut off = header;
        match std::mem::replace(&mut self.state, State::Between) {
            State::Start if continued => {
                if header + rem_len > page.len() {
                    self.state = State::Start;
                    return;
                }
                off = header + maxalign(rem_len);
            }
            State::Start | State::Between => {}
            // PostgreSQL 15+ marks a page whose continuation was lost in a crash: the cut
            // record is abandoned and records start after the header.
            State::InRecord(_) if !continued && info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0 => {}
            State::InRecord(mut record) => {
                let need = record.total - record.seen;
                if !continued || rem_len != need {
                    self.state = State::Done;
                    return;
                }
                let take = need.min(page.len() - header);
                self.feed(&mut record, &page[header..header + take]);
                if record.seen < record.total {
                    self.state = State::InRecord(record);
                    return;
                }
                if !self.complete(record) {
                    return;
                }
                off = header + maxalign(take);
            }
            State::Done => {
                self.state = State::Done;
                return;
            }
        }
        while off + 4 <= page.len() {
            let total = u32_at(page, off) as usize;
            if total < RECORD_HEADER {
                self.state = State::Done;
                return;
            }
            let mut record = Record {
                lsn: Lsn(page_lsn + off as u64),
                total,
                seen: 0,
                bytes: Vec::new(),
                keep: false,
            };
            let take = total.min(page.len() - off);
            self.feed(&mut record, &page[off..off + take]);
            if record.seen < total {
                self.state = State::InRecord(record);
                return;
            }
            if !self.complete(record) {
                return;
            }
            off += maxalign(total);
        }
    }

    fn feed(&self, record: &mut Record, bytes: &[u8]) {
        let mut bytes = bytes;
        if record.seen < RECORD_HEADER {
            let take = (RECORD_HEADER - record.seen).min(bytes.len());
            record.bytes.extend_from_slice(&bytes[..take]);
            record.seen += take;
            bytes = &bytes[take..];
            if record.seen == RECORD_HEADER {
                record.keep = record.bytes[17] == RM_XACT_ID && record.total <= MAX_XACT_RECORD;
            }
        }
        if record.keep {
            record.bytes.extend_from_slice(bytes);
        }
        record.seen += bytes.len();
    }

    /// Handles a complete record; false when the data ends with it.
    fn complete(&mut self, record: Record) -> bool {
        let (info, rmid) = (record.bytes[16], record.bytes[17]);
        if rmid == RM_XLOG_ID && info & 0xF0 == XLOG_SWITCH {
            self.state = State::Done;
            return false;
        }
        if record.keep {
            if let Some(x) = xact_record(&record, self.major) {
                self.found.push(x);
            }
        }
        true
    }
}

/// The commit or abort a whole transaction record describes, if it is one and its CRC holds.
fn xact_record(record: &Record, major: Option<u32>) -> Option<XactRecord> {
    let rec = &record.bytes;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&rec[RECORD_HEADER..]), &rec[..20]);
    if crc != u32_at(rec, 20) {
        return None;
    }
    let kind = match rec[16] & 0x70 {
        0x00 | 0x30 => XactEnd::Commit,
        0x20 | 0x40 => XactEnd::Abort,
        _ => return None,
    };
    let main = main_data_len(rec, major)?;
    let data = rec.get(rec.len().checked_sub(main)?..)?;
    let time = i64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    Some(XactRecord {
        lsn: record.lsn,
        kind,
        time,
    })
}

/// The length of a record's main data, from its block headers (xlogreader.c
/// DecodeXLogRecord); the main data is the last thing in the record.
fn main_data_len(rec: &[u8], major: Option<u32>) -> Option<usize> {
    let compressed_bits: u8 = if major.is_some_and(|m| m >= 15) {
        0x1C
    } else {
        0x02
    };
    let mut pos = RECORD_HEADER;
    let mut datatotal = 0usize;
    let remaining = rec.len() - RECORD_HEADER;
    while remaining > datatotal + (pos - RECORD_HEADER) {
        let id = *rec.get(pos)?;
        pos += 1;
        match id {
            255 => return rec.get(pos).map(|&n| usize::from(n)),
            254 => return rec.get(pos..pos + 4).map(|b| u32_at(b, 0) as usize),
            253 => pos += 2,
            252 => pos += 4,
            0..=32 => {
                let fork_flags = *rec.get(pos)?;
                datatotal += usize::from(u16_at(rec.get(pos + 1..pos + 3)?, 0));
                pos += 3;
                if fork_flags & 0x10 != 0 {
                    let image = rec.get(pos..pos + 5)?;
                    datatotal += usize::from(u16_at(image, 0));
                    let bimg_info = image[4];
                    pos += 5;
                    if bimg_info & compressed_bits != 0 && bimg_info & 0x01 != 0 {
                        pos += 2;
                    }
                }
                if fork_flags & 0x80 == 0 {
                    pos += 12;
                }
                pos += 4;
            }
            _ => return None,
        }
    }
    None
}

fn maxalign(n: usize) -> usize {
    (n + 7) & !7
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
#[path = "commits_tests.rs"]
mod tests;
