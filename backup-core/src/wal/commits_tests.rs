//! The commit scanner on segments built here page by page (records with valid CRCs, crossing
//! pages, continued from the previous segment); real WAL is checked against pg_waldump in
//! integration/tests/list_coverage.rs.

use super::*;

const PAGE: usize = 8192;
const SEG: usize = 1 << 20;
const START: u64 = 5 * SEG as u64;
const MAGIC_16: u16 = 0xD113;

/// Writes records into pages the way the server lays them out.
struct Wal {
    buf: Vec<u8>,
}

impl Wal {
    /// A segment whose first page continues a record of `continued` more bytes.
    fn new(continued: usize) -> Wal {
        let mut w = Wal { buf: Vec::new() };
        w.page_header(continued);
        w.skip(continued);
        w
    }

    fn page_header(&mut self, rem_len: usize) {
        let offset = self.buf.len();
        let long = offset.is_multiple_of(SEG);
        let mut info: u16 = if long { 0x0002 } else { 0 };
        if rem_len > 0 {
            info |= 0x0001;
        }
        self.buf.extend_from_slice(&MAGIC_16.to_le_bytes());
        self.buf.extend_from_slice(&info.to_le_bytes());
        self.buf.extend_from_slice(&1u32.to_le_bytes());
        self.buf
            .extend_from_slice(&(START + offset as u64).to_le_bytes());
        self.buf.extend_from_slice(&(rem_len as u32).to_le_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        if long {
            self.buf.extend_from_slice(&7u64.to_le_bytes());
            self.buf.extend_from_slice(&(SEG as u32).to_le_bytes());
            self.buf.extend_from_slice(&(PAGE as u32).to_le_bytes());
        }
    }

    /// Writes `bytes` of a record (zeros for `skip`), starting new pages as needed.
    fn put(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.buf.len().is_multiple_of(PAGE) {
                self.page_header(bytes.len());
            }
            let room = PAGE - self.buf.len() % PAGE;
            let take = room.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
    }

    fn skip(&mut self, n: usize) {
        // The continued record's bytes on the first page(s).
        let room = PAGE - self.buf.len();
        let here = room.min(n);
        self.buf.resize(self.buf.len() + here, 0xAB);
        if n > here {
            self.put(&vec![0xAB; n - here]);
        }
        self.align();
    }

    fn align(&mut self) {
        while !self.buf.len().is_multiple_of(8) {
            self.buf.push(0);
        }
    }

    /// A record of `rmid`/`info` with `main` as its main data; returns its LSN.
    fn record(&mut self, rmid: u8, info: u8, main: &[u8]) -> Lsn {
        self.align();
        if self.buf.len().is_multiple_of(PAGE) {
            self.page_header(0);
        }
        let lsn = Lsn(START + self.buf.len() as u64);
        let mut body = Vec::new();
        if main.len() <= 255 {
            body.extend_from_slice(&[255, main.len() as u8]);
        } else {
            body.push(254);
            body.extend_from_slice(&(main.len() as u32).to_le_bytes());
        }
        body.extend_from_slice(main);
        let total = 24 + body.len();
        let mut rec = Vec::new();
        rec.extend_from_slice(&(total as u32).to_le_bytes());
        rec.extend_from_slice(&1234u32.to_le_bytes());
        rec.extend_from_slice(&0u64.to_le_bytes());
        rec.extend_from_slice(&[info, rmid, 0, 0]);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&body), &rec[..20]);
        rec.extend_from_slice(&crc.to_le_bytes());
        rec.extend_from_slice(&body);
        self.put(&rec);
        lsn
    }

    fn commit(&mut self, time: i64, extra: usize) -> Lsn {
        let mut main = time.to_le_bytes().to_vec();
        main.resize(8 + extra, 0x11);
        self.record(RM_XACT_ID, 0x00, &main)
    }

    fn segment(mut self) -> Vec<u8> {
        self.buf.resize(SEG, 0);
        self.buf
    }
}

fn scan(data: &[u8], chunk: usize) -> Vec<XactRecord> {
    let mut s = CommitScanner::new(Lsn(START));
    for c in data.chunks(chunk) {
        s.push(c);
    }
    s.finish()
}

#[test]
fn commits_and_aborts_are_found_with_their_times_and_other_records_skipped() {
    let mut w = Wal::new(0);
    w.record(10, 0x00, &[1; 100]);
    let c1 = w.commit(700_000_000_000_000, 0);
    w.record(10, 0x10, &[2; 3000]);
    let a = w.record(RM_XACT_ID, 0x20, &701_000_000_000_000i64.to_le_bytes());
    let c2 = w.commit(702_000_000_000_000, 16);
    let found = scan(&w.segment(), SEG);
    assert_eq!(
        found,
        vec![
            XactRecord {
                lsn: c1,
                kind: XactEnd::Commit,
                time: 700_000_000_000_000
            },
            XactRecord {
                lsn: a,
                kind: XactEnd::Abort,
                time: 701_000_000_000_000
            },
            XactRecord {
                lsn: c2,
                kind: XactEnd::Commit,
                time: 702_000_000_000_000
            },
        ]
    );
    assert_eq!(
        found[0].unix_micros(),
        700_000_000_000_000 + 946_684_800_000_000
    );
}

#[test]
fn records_crossing_pages_are_followed_whatever_the_chunk_size() {
    let mut w = Wal::new(0);
    // Fill most of the first page, then a commit whose header straddles the boundary, then
    // one larger than a page.
    w.record(10, 0, &vec![3; PAGE - 85]);
    let across = w.commit(1, 0);
    let big = w.commit(2, 20_000);
    let last = w.commit(3, 0);
    let data = w.segment();
    assert!(across.0 % PAGE as u64 > (PAGE - 24) as u64, "{across}");
    for chunk in [SEG, PAGE, 4096, 1000, 7] {
        let found = scan(&data, chunk);
        let lsns: Vec<Lsn> = found.iter().map(|x| x.lsn).collect();
        assert_eq!(lsns, vec![across, big, last], "chunk {chunk}");
        assert_eq!(found[2].time, 3);
    }
}

#[test]
fn a_record_continued_from_the_previous_segment_is_skipped() {
    for continued in [100, PAGE + 500] {
        let mut w = Wal::new(continued);
        let c = w.commit(42, 0);
        let found = scan(&w.segment(), PAGE);
        assert_eq!(found.len(), 1, "continued {continued}");
        assert_eq!((found[0].lsn, found[0].time), (c, 42));
    }
}

#[test]
fn the_scan_ends_at_a_switch_a_zero_length_or_a_cut_record() {
    let mut w = Wal::new(0);
    w.commit(1, 0);
    w.record(RM_XLOG_ID, XLOG_SWITCH, &[]);
    // Not WAL any more: garbage after the switch is never read.
    w.commit(2, 0);
    assert_eq!(scan(&w.segment(), SEG).len(), 1);

    let mut w = Wal::new(0);
    w.commit(1, 0);
    w.commit(2, 12_000);
    let mut data = w.segment();
    // A partial copy: the second commit is cut short (zeros from the next page on).
    let cut = PAGE;
    data[cut..].fill(0);
    let found = scan(&data, SEG);
    assert_eq!(found.iter().map(|x| x.time).collect::<Vec<_>>(), vec![1]);
}

#[test]
fn a_commit_with_a_bad_crc_is_not_believed() {
    let mut w = Wal::new(0);
    let c = w.commit(9, 0);
    let mut data = w.segment();
    let time_at = (c.0 - START) as usize + 24 + 2;
    data[time_at] ^= 0xFF;
    assert!(scan(&data, SEG).is_empty());
}

#[test]
fn a_segment_of_another_address_or_no_wal_gives_nothing() {
    let mut w = Wal::new(0);
    w.commit(1, 0);
    let mut data = w.segment();
    data[8] ^= 1;
    assert!(scan(&data, SEG).is_empty());
    assert!(scan(&vec![0; SEG], SEG).is_empty());
}

#[test]
fn a_commit_crossing_into_the_next_segment_is_found_by_reading_on() {
    // Fillers (another resource manager) up to a few bytes before the segment's end, so the
    // commit's header, or the commit after it, is cut by the segment boundary.
    for left in [8usize, 16, 24, 32] {
        let mut w = Wal::new(0);
        let filler = |w: &mut Wal, total: usize| {
            w.record(10, 0, &vec![0x22; total - 26]);
        };
        while SEG - w.buf.len() - left > 64 {
            filler(&mut w, 40);
        }
        let rest = SEG - w.buf.len() - left;
        filler(&mut w, rest);
        assert_eq!(SEG - w.buf.len(), left);
        let c = w.commit(77, 0);
        let next = w.commit(78, 0);
        w.buf.resize(2 * SEG, 0);
        let (first, second) = w.buf.split_at(SEG);

        let mut s = CommitScanner::new(Lsn(START));
        s.push(first);
        assert!(s.ends_inside_xact(), "left {left}");
        s.push(second);
        assert!(!s.ends_inside_xact());
        let found: Vec<(Lsn, i64)> = s.finish().iter().map(|x| (x.lsn, x.time)).collect();
        assert_eq!(found, vec![(c, 77), (next, 78)], "left {left}");
        // The next segment's own scan skips it as a continuation.
        let mut s = CommitScanner::new(Lsn(START + SEG as u64));
        s.push(second);
        assert_eq!(s.finish().len(), 1);
    }
    // A segment ending between records, or inside another record, needs nothing more.
    let mut w = Wal::new(0);
    w.commit(1, 0);
    let mut s = CommitScanner::new(Lsn(START));
    s.push(&w.segment());
    assert!(!s.ends_inside_xact());
}
