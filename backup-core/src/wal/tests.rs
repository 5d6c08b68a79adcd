use pgwire_repl::{Lsn, TimelineId};

use super::*;

const MB16: WalSegmentSize = WalSegmentSize::DEFAULT;

fn gb1() -> WalSegmentSize {
    WalSegmentSize::new(1 << 30).unwrap()
}

#[test]
fn segment_sizes_are_validated() {
    for ok in [1u64 << 20, 1 << 24, 1 << 30] {
        assert_eq!(WalSegmentSize::new(ok).unwrap().bytes(), ok);
    }
    for bad in [0u64, 1 << 19, 1 << 31, 3 << 20, 16_000_000] {
        assert!(WalSegmentSize::new(bad).is_err(), "{bad}");
    }
    assert_eq!(MB16.segments_per_xlog_id(), 256);
    assert_eq!(gb1().segments_per_xlog_id(), 4);
}

#[test]
fn names_from_lsns() {
    let s = SegmentName::from_lsn(TimelineId(1), "0/3000028".parse().unwrap(), MB16);
    assert_eq!(s.to_string(), "000000010000000000000003");
    assert_eq!(s.start_lsn(), Lsn(0x300_0000));
    assert_eq!(s.end_lsn(), Lsn(0x400_0000));
    let s = SegmentName::from_lsn(TimelineId(0x1A), "16/B374D848".parse().unwrap(), MB16);
    assert_eq!(s.to_string(), "0000001A00000016000000B3");
    let s = SegmentName::from_lsn(TimelineId(2), "16/B374D848".parse().unwrap(), gb1());
    assert_eq!(s.to_string(), "000000020000001600000002");
    assert_eq!(s.start_lsn(), Lsn(0x16_8000_0000));
    // The segment an end LSN was written in.
    let end = SegmentName::containing_end(TimelineId(1), Lsn(0x400_0000), MB16);
    assert_eq!(end.to_string(), "000000010000000000000003");
    assert_eq!(end.next().to_string(), "000000010000000000000004");
    assert_eq!(
        SegmentName::from_lsn(TimelineId(1), Lsn(0xFF_FFFF_FFFF), MB16).to_string(),
        "00000001000000FF000000FF"
    );
    assert_eq!(
        SegmentName::from_lsn(TimelineId(1), Lsn(0x1_0000_0000), MB16).to_string(),
        "000000010000000100000000"
    );
}

#[test]
fn names_round_trip_and_reject_garbage() {
    for (size, name) in [
        (MB16, "000000010000000000000003"),
        (MB16, "0000000A000001FF000000FF"),
        (gb1(), "000000030000000700000003"),
        (
            WalSegmentSize::new(1 << 20).unwrap(),
            "000000010000000000000FFF",
        ),
    ] {
        let s = SegmentName::parse(name, size).unwrap();
        assert_eq!(s.to_string(), name);
        assert_eq!(SegmentName::from_lsn(s.timeline, s.start_lsn(), size), s);
        assert_eq!(
            WalFileName::parse(&s.partial_name(), size),
            Ok(WalFileName::Partial(s))
        );
        assert_eq!(WalFileName::parse(name, size), Ok(WalFileName::Segment(s)));
    }
    for bad in [
        "00000001000000000000003",
        "0000000100000000000000031",
        "00000001000000000000000g",
        "0000000100000000000000a3",
        "000000000000000000000003",
        "000000010000000000000100", // 256 segments per xlogid at 16 MB
    ] {
        assert!(SegmentName::parse(bad, MB16).is_err(), "{bad}");
    }
    assert!(SegmentName::parse("000000010000000000000004", gb1()).is_err());
    assert!(is_wal_file_name("000000010000000000000003"));
    assert!(!is_wal_file_name("000000010000000000000003.partial"));
    assert!(is_partial_wal_file_name("000000010000000000000003.partial"));
    assert!(!is_partial_wal_file_name("00000001000000000000003.partial"));
    assert!(is_history_file_name("00000002.history"));
    assert!(!is_history_file_name("00000000.history"));
    assert!(!is_history_file_name("0000002.history"));
    assert!(!is_history_file_name("0000000a.history"));
    assert_eq!(history_file_name(TimelineId(0x1B)), "0000001B.history");
    assert_eq!(
        WalFileName::parse("0000001B.history", MB16),
        Ok(WalFileName::History(TimelineId(0x1B)))
    );
    assert_eq!(
        WalFileName::parse("0000001B.history", MB16)
            .unwrap()
            .to_string(),
        "0000001B.history"
    );
    assert!(WalFileName::parse("000000010000000000000003.gz", MB16).is_err());
    assert!(WalFileName::parse("x.partial", MB16).is_err());
}

// What PostgreSQL writes (writeTimeLineHistory): the parent's content, a blank line, then
// "parentTLI\tX/X\treason\n".
const HISTORY_3: &str = "1\t0/3000158\tno recovery target specified\n\n\
    2\t0/5000000\tbefore 2024-05-01 10:00:00.000000+00\n";

#[test]
fn history_files_parse_and_answer_path_questions() {
    let h = TimelineHistory::parse(TimelineId(3), HISTORY_3.as_bytes()).unwrap();
    assert_eq!(h.timeline(), TimelineId(3));
    assert_eq!(h.parent(), Some(TimelineId(2)));
    assert_eq!(h.fork_point(), Lsn(0x500_0000));
    assert_eq!(h.entries().len(), 2);
    assert_eq!(h.entries()[0].reason, "no recovery target specified");
    assert_eq!(h.switch_point(TimelineId(1)), Some(Lsn(0x300_0158)));
    assert_eq!(h.switch_point(TimelineId(2)), Some(Lsn(0x500_0000)));
    assert_eq!(h.switch_point(TimelineId(3)), None);
    assert!(h.contains(TimelineId(1)) && h.contains(TimelineId(3)));
    assert!(!h.contains(TimelineId(4)));
    assert_eq!(h.timeline_of(Lsn(0x300_0157)), TimelineId(1));
    assert_eq!(h.timeline_of(Lsn(0x300_0158)), TimelineId(2));
    assert_eq!(h.timeline_of(Lsn(0x900_0000)), TimelineId(3));
    assert_eq!(
        h.spans(),
        vec![
            TimelineSpan {
                timeline: TimelineId(1),
                begin: Lsn(0),
                end: Some(Lsn(0x300_0158))
            },
            TimelineSpan {
                timeline: TimelineId(2),
                begin: Lsn(0x300_0158),
                end: Some(Lsn(0x500_0000))
            },
            TimelineSpan {
                timeline: TimelineId(3),
                begin: Lsn(0x500_0000),
                end: None
            },
        ]
    );
    // The segment holding a switch point is read from the child's file.
    let names: Vec<String> = h
        .segments_between(Lsn(0x200_0028), Lsn(0x600_0010), MB16)
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "000000010000000000000002",
            "000000020000000000000003",
            "000000020000000000000004",
            "000000030000000000000005",
            "000000030000000000000006",
        ]
    );
    assert_eq!(h.segments_between(Lsn(5), Lsn(5), MB16).count(), 0);
    let root = TimelineHistory::root(TimelineId(1));
    assert_eq!(root.timeline_of(Lsn(123)), TimelineId(1));
    assert_eq!(root.parent(), None);
    assert_eq!(root.spans().len(), 1);
}

#[test]
fn history_comments_whitespace_and_errors() {
    let text = "# comment\n\n   \n  1 0/3000000\n\t2\t0/3000000 \treason\twith tabs\n";
    let h = TimelineHistory::parse(TimelineId(5), text.as_bytes()).unwrap();
    assert_eq!(h.entries().len(), 2);
    assert_eq!(h.entries()[0].reason, "");
    assert_eq!(h.entries()[1].reason, "reason\twith tabs");
    for (text, line, want) in [
        ("x\t0/1\tr\n", 1, "numeric timeline ID"),
        ("0\t0/1\tr\n", 1, "numeric timeline ID"),
        ("1\n", 1, "switch point"),
        ("1\tzz\n", 1, "switch point"),
        ("1\t0/1x\n", 1, "malformed"),
        ("1\t0/5\n\n1\t0/6\n", 3, "increasing"),
        ("1\t0/5\n2\t0/4\n", 2, "before"),
        ("1\t0/5\n3\t0/6\n", 2, "less than the child"),
    ] {
        let e = TimelineHistory::parse(TimelineId(3), text.as_bytes()).unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.message.contains(want), "{text:?}: {e}");
    }
}

const BLCKSZ: usize = 8192;
const SYSID: u64 = 7_300_000_000_000_000_001;

/// A 1 MB segment with valid headers on every page (no records: headers are all we check).
fn segment(name: &SegmentName, magic: u16, tli: u32) -> Vec<u8> {
    let size = name.seg_size.bytes() as usize;
    let mut seg = vec![0u8; size];
    for (k, page) in seg.chunks_mut(BLCKSZ).enumerate() {
        page[0..2].copy_from_slice(&magic.to_le_bytes());
        let info: u16 = if k == 0 { 0x0002 } else { 0x0001 };
        page[2..4].copy_from_slice(&info.to_le_bytes());
        page[4..8].copy_from_slice(&tli.to_le_bytes());
        let addr = name.start_lsn().0 + (k * BLCKSZ) as u64;
        page[8..16].copy_from_slice(&addr.to_le_bytes());
        if k == 0 {
            page[24..32].copy_from_slice(&SYSID.to_le_bytes());
            page[32..36].copy_from_slice(&(size as u32).to_le_bytes());
            page[36..40].copy_from_slice(&(BLCKSZ as u32).to_le_bytes());
        }
        page[100] = 0xAB; // record bytes, never looked at
    }
    seg
}

fn check(name: SegmentName) -> SegmentCheck {
    SegmentCheck {
        system_identifier: Some(SYSID),
        major: Some(16),
        ..SegmentCheck::new(name)
    }
}

fn mb1_name() -> SegmentName {
    SegmentName::parse(
        "000000030000000200000A05",
        WalSegmentSize::new(1 << 20).unwrap(),
    )
    .unwrap()
}

#[test]
fn magic_table() {
    for (major, magic) in [
        (13, 0xD106),
        (14, 0xD10D),
        (15, 0xD110),
        (16, 0xD113),
        (17, 0xD116),
        (18, 0xD118),
    ] {
        assert_eq!(magic_for_major(major), Some(magic));
        assert_eq!(major_for_magic(magic), Some(major));
    }
    assert_eq!(major_for_magic(0xD000), None);
}

#[test]
fn a_valid_segment_in_any_chunking() {
    let name = mb1_name();
    let seg = segment(&name, 0xD113, 3);
    let full = validate_segment(&seg, check(name)).unwrap();
    assert_eq!(
        full,
        SegmentSummary {
            major: Some(16),
            system_identifier: Some(SYSID),
            valid_up_to: 1 << 20,
            end: None
        }
    );
    for chunk in [1usize, 7, 24, 40, 4096, 8191, 8193, 100_000] {
        let mut v = SegmentValidator::new(check(name)).unwrap();
        for c in seg.chunks(chunk) {
            v.push(c).unwrap();
        }
        assert_eq!(v.finish().unwrap(), full, "chunk {chunk}");
    }
    // Without expectations the major is detected.
    let s = validate_segment(&seg, SegmentCheck::new(name)).unwrap();
    assert_eq!(s.major, Some(16));
}

#[test]
fn end_of_valid_data() {
    let name = mb1_name();
    let mut seg = segment(&name, 0xD116, 2);
    seg[50 * BLCKSZ..].fill(0);
    let s = validate_segment(&seg, SegmentCheck::new(name)).unwrap();
    assert_eq!(s.valid_up_to, (50 * BLCKSZ) as u64);
    assert_eq!(
        s.end,
        Some(EndOfData::ZeroPage {
            offset: (50 * BLCKSZ) as u64
        })
    );
    assert_eq!(s.major, Some(17));

    // Recycled: pages from an older segment past page 60.
    let mut seg = segment(&name, 0xD116, 3);
    let old = segment(
        &SegmentName::new(TimelineId(3), name.segno - 4, name.seg_size),
        0xD116,
        3,
    );
    seg[60 * BLCKSZ..].copy_from_slice(&old[60 * BLCKSZ..]);
    let s = validate_segment(&seg, SegmentCheck::new(name)).unwrap();
    assert_eq!(s.valid_up_to, (60 * BLCKSZ) as u64);
    assert!(
        matches!(s.end, Some(EndOfData::WrongPageAddress { offset, .. }) if offset == (60 * BLCKSZ) as u64)
    );

    // Entirely zero (a fresh .partial) or entirely recycled.
    let s = validate_segment(&vec![0; 1 << 20], SegmentCheck::new(name)).unwrap();
    assert_eq!((s.valid_up_to, s.major), (0, None));
    let s = validate_segment(&old, SegmentCheck::new(name)).unwrap();
    assert_eq!(s.valid_up_to, 0);
}

#[test]
fn segments_that_do_not_belong() {
    let name = mb1_name();
    let good = segment(&name, 0xD113, 3);
    let run = |seg: &[u8], c: SegmentCheck| validate_segment(seg, c).unwrap_err();

    let e = run(
        &good,
        SegmentCheck {
            system_identifier: Some(1),
            ..check(name)
        },
    );
    assert!(
        matches!(
            e,
            WalPageError::SystemIdentifier {
                found: SYSID,
                expected: 1,
                ..
            }
        ),
        "{e}"
    );
    let e = run(
        &good,
        SegmentCheck {
            major: Some(15),
            ..check(name)
        },
    );
    assert!(
        matches!(
            e,
            WalPageError::WrongMajor {
                found: 16,
                expected: 15,
                ..
            }
        ),
        "{e}"
    );
    let e = run(
        &good,
        SegmentCheck {
            block_size: 4096,
            ..check(name)
        },
    );
    assert!(matches!(e, WalPageError::PageSize { .. }), "{e}");
    assert!(SegmentValidator::new(SegmentCheck {
        block_size: 1000,
        ..check(name)
    })
    .is_err());
    let e = run(&good[..good.len() - 1], check(name));
    assert!(matches!(e, WalPageError::WrongSize { .. }), "{e}");
    // Named for timeline 2 but written on 3.
    let e = run(&good, check(name.on_timeline(TimelineId(2))));
    assert!(
        matches!(e, WalPageError::TimelineAhead { found: 3, .. }),
        "{e}"
    );

    let mut seg = good.clone();
    seg[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
    assert!(matches!(
        run(&seg, check(name)),
        WalPageError::SegmentSize { .. }
    ));
    let mut seg = good.clone();
    seg[2] = 0x01; // no long header
    assert!(matches!(
        run(&seg, check(name)),
        WalPageError::NoLongHeader { .. }
    ));
    let mut seg = good.clone();
    seg[3] = 0x01; // info bit 0x0100
    assert!(matches!(
        run(&seg, check(name)),
        WalPageError::InfoBits { .. }
    ));
    let mut seg = good.clone();
    seg[0..2].copy_from_slice(&0x1234u16.to_le_bytes());
    assert!(matches!(
        run(&seg, check(name)),
        WalPageError::UnknownMagic { offset: 0, .. }
    ));
    let mut seg = good.clone();
    seg[9 * BLCKSZ..9 * BLCKSZ + 2].copy_from_slice(&0xD110u16.to_le_bytes());
    assert!(matches!(
        run(&seg, check(name)),
        WalPageError::MagicChanged { .. }
    ));
    // Lower timeline on earlier pages is fine (switch segment), going back is not.
    let mut seg = good.clone();
    for k in 0..10 {
        seg[k * BLCKSZ + 4..k * BLCKSZ + 8].copy_from_slice(&2u32.to_le_bytes());
    }
    validate_segment(&seg, check(name)).unwrap();
    seg[20 * BLCKSZ + 4..20 * BLCKSZ + 8].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        run(&seg, check(name)),
        WalPageError::TimelineBackwards { .. }
    ));
}

fn xorshift(mut s: u64) -> impl FnMut() -> u64 {
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

#[test]
fn wal_parsers_never_panic() {
    let mut next = xorshift(0xDEAD_BEEF_CAFE_F00D);
    let name = mb1_name();
    let good = segment(&name, 0xD113, 3);
    for round in 0..300 {
        let mut seg = if round % 3 < 1 {
            (0..(next() % 20_000)).map(|_| next() as u8).collect()
        } else {
            good.clone()
        };
        for _ in 0..(next() % 8) {
            if seg.is_empty() {
                break;
            }
            let i = if next() % 2 < 1 {
                (next() as usize % (seg.len() / BLCKSZ + 1)) * BLCKSZ + (next() as usize % 40)
            } else {
                next() as usize
            } % seg.len();
            seg[i] = next() as u8;
        }
        let _ = validate_segment(&seg, SegmentCheck::new(name));
        let _ = validate_segment(&seg, check(name));
    }
    let alphabet = b"0123456789ABCDEFabcdef/\t \n#.xhistorypartial";
    for _ in 0..5000 {
        let s: Vec<u8> = (0..(next() % 40))
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let text = String::from_utf8(s.clone()).unwrap();
        let _ = WalFileName::parse(&text, MB16);
        let _ = WalFileName::parse(&text, gb1());
        let _ = TimelineHistory::parse(TimelineId((next() % 5) as u32 + 1), &s);
        let raw: Vec<u8> = (0..(next() % 64)).map(|_| next() as u8).collect();
        let _ = TimelineHistory::parse(TimelineId(9), &raw);
    }
}
