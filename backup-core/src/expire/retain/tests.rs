use super::*;

const MIB: u64 = 1 << 20;

fn size(bytes: u64) -> WalSegmentSize {
    WalSegmentSize::new(bytes).unwrap()
}

fn seg(tli: u32, segno: u64, seg_size: WalSegmentSize) -> SegmentName {
    SegmentName::new(TimelineId(tli), segno, seg_size)
}

fn file(tli: u32, segno: u64, kind: WalFileKind, seg_size: WalSegmentSize) -> WalFile {
    let segment = seg(tli, segno, seg_size);
    let suffix = match kind {
        WalFileKind::Segment => ".lz4.enc",
        WalFileKind::Partial => ".partial.lz4.enc",
        WalFileKind::Receiving => ".partial.recv.enc",
        WalFileKind::BackupHistory => ".00000028.backup.lz4.enc",
    };
    WalFile {
        stored: format!("wal/{}/{segment}{suffix}", &segment.to_string()[..16]),
        kind,
        segment,
        bytes: 100,
    }
}

/// Complete segments `segnos` of `tli`, 16 MiB.
fn segments(tli: u32, segnos: std::ops::RangeInclusive<u64>) -> Vec<WalFile> {
    segnos
        .map(|n| file(tli, n, WalFileKind::Segment, WalSegmentSize::DEFAULT))
        .collect()
}

fn lsn(text: &str) -> Lsn {
    text.parse().unwrap()
}

/// A backup on `tli` from `start` to `end` (16 MiB segments), naming its segments.
fn backup(tli: u32, start: &str, end: &str) -> KeptBackup {
    backup_sized(tli, start, end, WalSegmentSize::DEFAULT)
}

fn backup_sized(tli: u32, start: &str, end: &str, seg_size: WalSegmentSize) -> KeptBackup {
    let (start, end) = (lsn(start), lsn(end));
    let history = TimelineHistory::root(TimelineId(tli));
    KeptBackup {
        id: format!("backup at {start}"),
        start_lsn: start,
        end_lsn: end,
        end_timeline: TimelineId(tli),
        seg_size,
        wal_segments: history.segments_between(start, end, seg_size).collect(),
    }
}

/// Histories from `(timeline, content)`.
fn histories(list: &[(u32, &str)]) -> BTreeMap<TimelineId, TimelineHistory> {
    list.iter()
        .map(|(tli, text)| {
            let tli = TimelineId(*tli);
            (tli, TimelineHistory::parse(tli, text.as_bytes()).unwrap())
        })
        .collect()
}

type Key = (u32, u64, WalFileKind);

/// (timeline, segno, kind) of the files to delete, sorted.
fn deleted(r: &Retention) -> Vec<Key> {
    sorted(
        r.delete
            .iter()
            .map(|f| (f.segment.timeline.0, f.segment.segno, f.kind))
            .collect(),
    )
}

fn sorted(mut v: Vec<Key>) -> Vec<Key> {
    v.sort();
    v
}

fn seg_kind(tli: u32, segnos: std::ops::RangeInclusive<u64>) -> Vec<Key> {
    segnos.map(|n| (tli, n, WalFileKind::Segment)).collect()
}

#[test]
fn linear_history_deletes_only_segments_before_the_oldest_kept_start() {
    let mut files = segments(1, 1..=10);
    files.push(file(
        1,
        2,
        WalFileKind::BackupHistory,
        WalSegmentSize::DEFAULT,
    ));
    files.push(file(
        1,
        4,
        WalFileKind::BackupHistory,
        WalSegmentSize::DEFAULT,
    ));
    let kept = [
        backup(1, "0/4000028", "0/4000138"),
        backup(1, "0/8000028", "0/9000100"),
    ];
    let r = wal_to_delete(&kept, &BTreeMap::new(), &files);
    let mut expected = seg_kind(1, 1..=3);
    expected.push((1, 2, WalFileKind::BackupHistory));
    assert_eq!(deleted(&r), sorted(expected));
    assert!(r.unknown_timelines.is_empty());
}

#[test]
fn a_timeline_switch_after_the_backup_keeps_both_timelines_from_its_start() {
    // Timeline 2 forked at 0/6800000; the old primary went on writing timeline 1 to segment 8,
    // and the promoted server archived timeline 1's segment 6 as a .partial too.
    let h = histories(&[(2, "1\t0/6800000\tno recovery target specified\n")]);
    let mut files = segments(1, 1..=8);
    files.push(file(1, 6, WalFileKind::Partial, WalSegmentSize::DEFAULT));
    files.extend(segments(2, 6..=9));
    let kept = [backup(1, "0/3000028", "0/3000100")];
    let r = wal_to_delete(&kept, &h, &files);
    assert_eq!(deleted(&r), seg_kind(1, 1..=2));
}

#[test]
fn a_dead_branch_that_forked_before_the_oldest_kept_backup_is_deleted() {
    // Timeline 2 forked at 0/3800000 (a restore to an earlier point, promoted), then the
    // primary went on on timeline 1 and took the kept backup in segment 5; later timeline 3
    // forked from timeline 1 after it (so timeline 2 is not the newest).
    let h = histories(&[
        (2, "1\t0/3800000\tbefore 2000-01-01\n"),
        (3, "1\t0/7000000\tlater\n"),
    ]);
    let mut files = segments(1, 1..=7);
    files.push(file(1, 3, WalFileKind::Partial, WalSegmentSize::DEFAULT));
    files.extend(segments(2, 3..=6));
    files.extend(segments(3, 7..=8));
    let kept = [backup(1, "0/5000028", "0/5000100")];
    let r = wal_to_delete(&kept, &h, &files);
    let mut expected = seg_kind(1, 1..=4);
    expected.push((1, 3, WalFileKind::Partial));
    expected.extend(seg_kind(2, 3..=6));
    assert_eq!(deleted(&r), sorted(expected));
    assert_eq!(r.newest_timeline_kept, None);
}

#[test]
fn the_newest_timeline_is_kept_whole_while_no_kept_backup_reaches_it() {
    // The same branch as the newest timeline: it may be the live primary's (restored to a
    // point before every kept backup and promoted), and a backup starting on it needs its WAL.
    let h = histories(&[(2, "1\t0/3800000\tbefore 2000-01-01\n")]);
    let mut files = segments(1, 1..=7);
    files.extend(segments(2, 3..=6));
    let kept = [backup(1, "0/5000028", "0/5000100")];
    let r = wal_to_delete(&kept, &h, &files);
    assert_eq!(deleted(&r), seg_kind(1, 1..=4));
    assert_eq!(r.newest_timeline_kept, Some(TimelineId(2)));
    // Once a kept backup is on it, the usual rule applies.
    let kept = [
        backup(1, "0/5000028", "0/5000100"),
        backup(2, "0/5000028", "0/5000100"),
    ];
    let r = wal_to_delete(&kept, &h, &files);
    let mut expected = seg_kind(1, 1..=4);
    expected.extend(seg_kind(2, 3..=4));
    assert_eq!(deleted(&r), sorted(expected));
    assert_eq!(r.newest_timeline_kept, None);
}

#[test]
fn a_branch_that_forked_after_the_oldest_kept_backup_is_kept() {
    // The same branch, but a kept backup precedes the fork: recovery from it can follow
    // timeline 2 (recovery_target_timeline = 2), so all of timeline 2 stays.
    let h = histories(&[(2, "1\t0/3800000\tbefore 2000-01-01\n")]);
    let mut files = segments(1, 1..=7);
    files.extend(segments(2, 3..=6));
    let kept = [
        backup(1, "0/2000028", "0/2000100"),
        backup(1, "0/5000028", "0/5000100"),
    ];
    let r = wal_to_delete(&kept, &h, &files);
    assert_eq!(deleted(&r), seg_kind(1, 1..=1));
}

#[test]
fn a_backup_on_timeline_two_needs_nothing_of_timeline_one() {
    // Timeline 2 forked at 0/5000100; timeline 1 went on to segment 6 (a failover that lost
    // WAL). Timeline 3 forked from 2 at 0/9000000. The only kept backup is on timeline 2.
    let h = histories(&[
        (2, "1\t0/5000100\tfailover\n"),
        (3, "1\t0/5000100\tfailover\n2\t0/9000000\tagain\n"),
    ]);
    let mut files = segments(1, 1..=6);
    files.push(file(1, 5, WalFileKind::Partial, WalSegmentSize::DEFAULT));
    files.extend(segments(2, 5..=10));
    files.extend(segments(3, 9..=11));
    let kept = [backup(2, "0/7000028", "0/7000100")];
    let r = wal_to_delete(&kept, &h, &files);
    let mut expected = seg_kind(1, 1..=5);
    expected.push((1, 5, WalFileKind::Partial));
    expected.push((1, 6, WalFileKind::Segment));
    expected.extend(seg_kind(2, 5..=6));
    assert_eq!(deleted(&r), sorted(expected));
}

#[test]
fn a_backup_taken_after_a_fork_on_the_old_timeline_does_not_keep_the_branch() {
    // Timelines 2 and 3 descend from timeline 1 at 0/4000000, before the kept backup: both are
    // unreachable from it (the old primary's timeline went on, the backup was taken there).
    let h = histories(&[
        (2, "1\t0/4000000\tpitr\n"),
        (3, "1\t0/4000000\tpitr\n2\t0/6000000\tagain\n"),
    ]);
    let mut files = segments(1, 1..=9);
    files.extend(segments(2, 4..=7));
    files.extend(segments(3, 6..=8));
    let kept = [backup(1, "0/8000028", "0/8000100")];
    let r = wal_to_delete(&kept, &h, &files);
    let mut expected = seg_kind(1, 1..=7);
    expected.extend(seg_kind(2, 4..=7));
    // Timeline 3 is the newest: kept whole (see the_newest_timeline_is_kept_whole_...).
    assert_eq!(deleted(&r), sorted(expected));
    assert_eq!(r.newest_timeline_kept, Some(TimelineId(3)));
}

#[test]
fn a_grandchild_timeline_is_kept_through_its_parent() {
    // 1 → 2 at segment 4 → 3 at segment 6, all after the kept backup on timeline 1. Timeline 2
    // beyond segment 6 (the old timeline 2 primary went on) stays too: recovery may target 2.
    let h = histories(&[
        (2, "1\t0/4000000\tpitr\n"),
        (3, "1\t0/4000000\tpitr\n2\t0/6000100\tagain\n"),
    ]);
    let mut files = segments(1, 1..=5);
    files.extend(segments(2, 4..=8));
    files.extend(segments(3, 6..=8));
    let kept = [backup(1, "0/2000028", "0/2000100")];
    let r = wal_to_delete(&kept, &h, &files);
    assert_eq!(deleted(&r), seg_kind(1, 1..=1));
}

#[test]
fn partial_segments_follow_their_segment_and_receiving_ones_are_never_deleted() {
    let h = histories(&[(2, "1\t0/3800000\tpitr\n"), (3, "1\t0/6000000\tpitr\n")]);
    let d = WalSegmentSize::DEFAULT;
    let files = vec![
        file(1, 1, WalFileKind::Partial, d),
        file(1, 2, WalFileKind::Receiving, d),
        file(1, 5, WalFileKind::Partial, d),
        file(2, 3, WalFileKind::Partial, d),
        // receive-wal of a dead branch: its live state, still kept.
        file(2, 4, WalFileKind::Receiving, d),
        file(1, 6, WalFileKind::Receiving, d),
    ];
    let kept = [backup(1, "0/5000028", "0/5000100")];
    let r = wal_to_delete(&kept, &h, &files);
    assert_eq!(
        deleted(&r),
        vec![(1, 1, WalFileKind::Partial), (2, 3, WalFileKind::Partial)]
    );
}

#[test]
fn one_mebibyte_segments() {
    let s = size(MIB);
    // 0/5180028 is in segment 0x51 of 1 MiB; timeline 2 forks at 0/5800000 (segment 0x58).
    let h = histories(&[(2, "1\t0/5800000\tpitr\n")]);
    let mut files: Vec<WalFile> = (0x40..=0x5A)
        .map(|n| file(1, n, WalFileKind::Segment, s))
        .collect();
    files.extend((0x58..=0x5C).map(|n| file(2, n, WalFileKind::Segment, s)));
    let kept = [backup_sized(1, "0/5180028", "0/5200100", s)];
    assert_eq!(kept[0].wal_segments.len(), 2);
    let r = wal_to_delete(&kept, &h, &files);
    let expected: Vec<_> = (0x40..0x51).map(|n| (1, n, WalFileKind::Segment)).collect();
    assert_eq!(deleted(&r), sorted(expected));
    assert_eq!(r.delete[0].segment.to_string(), "000000010000000000000040");
}

#[test]
fn sixty_four_mebibyte_segments() {
    let s = size(64 * MIB);
    // 1/15000000 with 64 MiB segments: 64 segments per 4 GiB, so segment 64 + 5.
    let start = "1/15000000";
    assert_eq!(s.segno_of(lsn(start)), 69);
    let h = histories(&[(2, "1\t1/2A000000\tpitr\n")]);
    let mut files: Vec<WalFile> = (66..=72)
        .map(|n| file(1, n, WalFileKind::Segment, s))
        .collect();
    files.extend((74..=75).map(|n| file(2, n, WalFileKind::Segment, s)));
    let kept = [backup_sized(1, start, "1/15000100", s)];
    let r = wal_to_delete(&kept, &h, &files);
    assert_eq!(deleted(&r), seg_kind(1, 66..=68));
    assert_eq!(r.delete[0].segment.to_string(), "000000010000000100000002");
}

#[test]
fn a_timeline_without_a_history_file_is_kept_whole_and_reported() {
    let mut files = segments(1, 1..=3);
    files.extend(segments(4, 1..=2));
    let kept = [backup(1, "0/3000028", "0/3000100")];
    let r = wal_to_delete(&kept, &BTreeMap::new(), &files);
    assert_eq!(deleted(&r), seg_kind(1, 1..=2));
    assert_eq!(
        r.unknown_timelines.into_iter().collect::<Vec<_>>(),
        vec![TimelineId(4)]
    );
}

#[test]
fn segments_a_record_names_are_kept_whatever_the_histories_say() {
    // A backup of a standby promoted while it ran: it started on timeline 1 and ended on 2, and
    // its record names timeline 1's segment 6 (the switch segment), which no history reads.
    let h = histories(&[(2, "1\t0/6000100\tpromoted\n")]);
    let mut files = segments(1, 4..=6);
    files.extend(segments(2, 6..=7));
    let mut b = backup(2, "0/5000028", "0/6000200");
    b.wal_segments = vec![
        seg(1, 5, WalSegmentSize::DEFAULT),
        seg(1, 6, WalSegmentSize::DEFAULT),
    ];
    let r = wal_to_delete(&[b], &h, &files);
    assert_eq!(deleted(&r), seg_kind(1, 4..=4));
}

#[test]
fn served_ranges_agree_with_timeline_for_segment() {
    // Two switches in one segment (8): timeline 3 serves it, timeline 2 serves nothing.
    let h = TimelineHistory::parse(
        TimelineId(4),
        b"1\t0/3000000\ta\n2\t0/8000100\tb\n3\t0/8000200\tc\n",
    )
    .unwrap();
    let d = WalSegmentSize::DEFAULT;
    let ranges = served_ranges(&h, d);
    for segno in 0..20 {
        let serving: Vec<TimelineId> = ranges
            .iter()
            .filter(|(_, (a, b))| *a <= segno && segno < *b)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            serving,
            vec![h.timeline_for_segment(segno, d)],
            "segment {segno}"
        );
    }
}

#[test]
fn without_a_kept_backup_only_older_timelines_go() {
    // The caller never calls it without a backup; the function itself is still total.
    let d = WalSegmentSize::DEFAULT;
    let h = histories(&[(2, "1\t0/2000000\tpitr\n")]);
    let files = vec![
        file(1, 1, WalFileKind::Segment, d),
        file(1, 2, WalFileKind::Receiving, d),
        file(2, 2, WalFileKind::Segment, d),
    ];
    let r = wal_to_delete(&[], &h, &files);
    assert_eq!(deleted(&r), vec![(1, 1, WalFileKind::Segment)]);
    assert_eq!(r.newest_timeline_kept, Some(TimelineId(2)));
}
