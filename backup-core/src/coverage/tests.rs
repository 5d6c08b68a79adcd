//! Coverage from names (gaps, partials, several timelines, no WAL), and read from a real
//! (temporary) encrypted repository with and without its keys.

use std::io::Write as _;

use super::*;
use crate::crypto::{Aead, Encryption};
use crate::layout;
use crate::repo::Repository;
use crate::store::mem::MemStore;
use crate::test_support::{cluster, mem_repo};

const MIB: u64 = 1 << 20;

fn size() -> WalSegmentSize {
    WalSegmentSize::new(MIB).unwrap()
}

fn seg(tli: u32, segno: u64) -> SegmentName {
    SegmentName::new(TimelineId(tli), segno, size())
}

fn files(complete: &[u64], partials: &[(u64, PartialSource, Option<u64>)]) -> TimelineFiles {
    TimelineFiles {
        complete: complete.iter().copied().collect(),
        partials: partials
            .iter()
            .map(|&(segno, source, bytes)| PartialCopy {
                segment: seg(0, segno),
                source,
                stored: format!("{source:?}-{segno}"),
                bytes,
            })
            .collect(),
        has_history: false,
    }
}

/// `files` placed on `tli` (segment names carry the timeline).
fn on(tli: u32, mut f: TimelineFiles) -> (TimelineId, TimelineFiles) {
    for p in &mut f.partials {
        p.segment = seg(tli, p.segment.segno);
    }
    f.has_history = tli > 1;
    (TimelineId(tli), f)
}

fn history(tli: u32, text: &str) -> (TimelineId, TimelineHistory) {
    (
        TimelineId(tli),
        TimelineHistory::parse(TimelineId(tli), text.as_bytes()).unwrap(),
    )
}

fn range(tli: u32, first: u64, last: u64) -> SegmentRange {
    SegmentRange::new(TimelineId(tli), first, last, size())
}

fn one(f: TimelineFiles) -> TimelineCoverage {
    let all = BTreeMap::from([on(1, f)]);
    let mut out = compute(
        size(),
        &all,
        &BTreeMap::new(),
        BranchUnknown::NeedsPassphrase,
    );
    assert_eq!(out.len(), 1);
    out.remove(0)
}

#[test]
fn no_wal_means_no_timelines() {
    let out = compute(
        size(),
        &BTreeMap::new(),
        &BTreeMap::new(),
        BranchUnknown::NeedsPassphrase,
    );
    assert!(out.is_empty());
}

#[test]
fn gaps_between_runs_are_named() {
    let t = one(files(&[2, 3, 4, 7, 9, 10], &[]));
    assert_eq!(t.branch, Branch::Root);
    assert_eq!(
        t.complete,
        vec![range(1, 2, 4), range(1, 7, 7), range(1, 9, 10)]
    );
    assert_eq!(t.gaps, vec![range(1, 5, 6), range(1, 8, 8)]);
    assert_eq!(t.gaps[0].segments(), 2);
    assert_eq!(t.complete[0].start_lsn(), Lsn(2 * MIB));
    assert_eq!(t.complete_end(), Some(Lsn(11 * MIB)));
    assert_eq!(t.partial, None);
}

#[test]
fn a_trailing_partial_follows_the_last_complete_segment() {
    let t = one(files(&[2, 3], &[(4, PartialSource::Receiving, Some(4096))]));
    assert!(t.gaps.is_empty());
    let p = t.partial.unwrap();
    assert_eq!(p.segment, seg(1, 4));
    assert_eq!(p.end_lsn(), Some(Lsn(4 * MIB + 4096)));
}

#[test]
fn a_partial_past_a_hole_leaves_a_gap_before_it() {
    let t = one(files(&[2], &[(5, PartialSource::Archived, None)]));
    assert_eq!(t.gaps, vec![range(1, 3, 4)]);
    let p = t.partial.unwrap();
    assert_eq!((p.segment.segno, p.end_lsn()), (5, None));
}

#[test]
fn partials_superseded_by_complete_segments_are_ignored() {
    let t = one(files(&[2, 3, 4], &[(3, PartialSource::Archived, None)]));
    assert_eq!(t.partial, None);
    assert!(t.gaps.is_empty());
}

#[test]
fn the_partial_served_is_the_newest_in_wal_fetch_order_and_not_empty() {
    let t = one(files(
        &[2],
        &[
            (3, PartialSource::Backup, Some(100)),
            (3, PartialSource::Receiving, Some(0)),
            (3, PartialSource::Archived, Some(50)),
        ],
    ));
    assert_eq!(t.partial.unwrap().source, PartialSource::Archived);
    // An empty receive-wal file is passed over, as wal-fetch does.
    let t = one(files(
        &[2],
        &[
            (3, PartialSource::Backup, Some(100)),
            (3, PartialSource::Receiving, Some(0)),
        ],
    ));
    assert_eq!(t.partial.unwrap().source, PartialSource::Backup);
    // Only partial copies: the newest one.
    let t = one(files(
        &[],
        &[
            (3, PartialSource::Backup, Some(10)),
            (6, PartialSource::Receiving, None),
        ],
    ));
    assert_eq!(t.partial.unwrap().segment.segno, 6);
    assert!(t.complete.is_empty() && t.gaps.is_empty());
}

#[test]
fn several_timelines_with_branch_points_and_a_gap_after_the_fork() {
    // Timeline 1 up to segment 5 (5 partial: promoted there); 2 forked at 0/5000A0 in
    // segment 5 and holds 5..7; 3 forked from 2 at 7/0x80000 but holds only 9.., so 7..8 of
    // timeline 3 are missing although timeline 2 reaches the fork.
    let all = BTreeMap::from([
        on(
            1,
            files(&[1, 2, 3, 4], &[(5, PartialSource::Archived, None)]),
        ),
        on(2, files(&[5, 6, 7], &[])),
        on(3, files(&[9, 10], &[])),
        on(4, files(&[], &[])),
    ]);
    let histories = BTreeMap::from([
        history(2, "1\t0/5000A0\tno recovery target specified\n"),
        history(3, "1\t0/5000A0\tx\n2\t0/780000\ty\n"),
    ]);
    let out = compute(size(), &all, &histories, BranchUnknown::NeedsPassphrase);
    assert_eq!(out.len(), 4);
    assert_eq!(out[0].branch, Branch::Root);
    assert_eq!(out[0].partial.as_ref().unwrap().segment, seg(1, 5));
    assert_eq!(
        out[1].branch,
        Branch::Forked {
            parent: TimelineId(1),
            switch_point: Lsn(0x5000A0)
        }
    );
    assert!(out[1].gaps.is_empty(), "{:?}", out[1].gaps);
    assert_eq!(
        out[2].branch,
        Branch::Forked {
            parent: TimelineId(2),
            switch_point: Lsn(0x780000)
        }
    );
    assert_eq!(out[2].gaps, vec![range(3, 7, 8)]);
    // A history file that was not read (no passphrase) leaves the branch unknown; a timeline
    // with a history file and no segments yet is listed empty.
    assert_eq!(
        out[3].branch,
        Branch::Unknown(BranchUnknown::NeedsPassphrase)
    );
    assert!(out[3].complete.is_empty() && out[3].partial.is_none() && out[3].gaps.is_empty());
}

#[test]
fn a_timeline_without_a_history_file_says_so() {
    let mut f = files(&[3], &[]);
    f.has_history = false;
    let all = BTreeMap::from([(TimelineId(2), f)]);
    let out = compute(
        size(),
        &all,
        &BTreeMap::new(),
        BranchUnknown::NeedsPassphrase,
    );
    assert_eq!(out[0].branch, Branch::Unknown(BranchUnknown::NoHistoryFile));
}

fn unbound_repo() -> (MemStore, Repository) {
    mem_repo(Encryption::Aead(Aead::Aes256Gcm), None)
}

fn encrypted_repo() -> (MemStore, Repository) {
    mem_repo(Encryption::Aead(Aead::Aes256Gcm), Some(cluster(MIB as u32)))
}

fn store(repo: &Repository, name: &str, content: &[u8]) {
    let mut sink = repo.create_file(name).unwrap();
    sink.write_all(content).unwrap();
    sink.finish().unwrap();
}

#[test]
fn an_encrypted_repository_gives_names_without_keys_and_contents_with_them() {
    let (mem, repo) = encrypted_repo();
    let suffix = layout::suffix(repo.codec());
    for s in [1, 2, 4] {
        store(
            &repo,
            &format!("wal/0000000100000000/{}{suffix}", seg(1, s)),
            b"x",
        );
    }
    store(
        &repo,
        &format!("wal/0000000100000000/{}.partial{suffix}", seg(1, 5)),
        &[7u8; 3000],
    );
    store(
        &repo,
        &format!("wal/00000002.history{suffix}"),
        b"1\t0/580000\tpromoted\n",
    );
    store(
        &repo,
        &format!("wal/0000000200000000/{}{suffix}", seg(2, 5)),
        b"x",
    );
    // Other names do not count.
    mem.overwrite("wal/0000000100000000/README", b"x".to_vec());
    mem.overwrite(
        &format!("wal/0000000100000000/{}.zst", seg(1, 3)),
        b"x".to_vec(),
    );

    let names = wal_coverage(&mem, None).unwrap();
    assert!(!names.contents_read);
    assert_eq!(names.segment_size, Some(size()));
    let t1 = &names.timelines[0];
    assert_eq!(t1.complete, vec![range(1, 1, 2), range(1, 4, 4)]);
    assert_eq!(t1.gaps, vec![range(1, 3, 3)]);
    let p = t1.partial.as_ref().unwrap();
    assert_eq!(
        (p.segment, p.source, p.bytes),
        (seg(1, 5), PartialSource::Archived, None)
    );
    assert_eq!(
        names.timelines[1].branch,
        Branch::Unknown(BranchUnknown::NeedsPassphrase)
    );

    let read = wal_coverage(&mem, Some(&repo)).unwrap();
    assert!(read.contents_read);
    assert_eq!(
        read.timelines[0].partial.as_ref().unwrap().end_lsn(),
        Some(Lsn(5 * MIB + 3000))
    );
    assert_eq!(
        read.timelines[1].branch,
        Branch::Forked {
            parent: TimelineId(1),
            switch_point: Lsn(0x580000)
        }
    );
    assert_eq!(read.timelines[0].complete, t1.complete);
}

#[test]
fn an_unbound_repository_has_no_wal() {
    let (mem, _repo) = unbound_repo();
    let c = wal_coverage(&mem, None).unwrap();
    assert_eq!(c.segment_size, None);
    assert!(c.timelines.is_empty());
}
