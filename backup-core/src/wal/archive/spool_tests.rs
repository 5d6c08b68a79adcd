//! The prefetch spool against a real (temporary, encrypted) repository.

use std::path::{Path, PathBuf};

use pgwire_repl::TimelineId;

use super::tests::{name, repo, seg_name, segment};
use super::*;
use crate::test_support::SYSID;

const MIB: u64 = 1 << 20;

fn seg(tli: u32, segno: u64) -> SegmentName {
    SegmentName::new(TimelineId(tli), segno, WalSegmentSize::new(MIB).unwrap())
}

fn store_segments(a: &WalArchive<'_>, tli: u32, segnos: impl IntoIterator<Item = u64>) {
    for n in segnos {
        a.store(
            &name(&seg_name(tli, n)),
            &mut &segment(SYSID, tli, n, 4)[..],
        )
        .unwrap();
    }
}

/// The file names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn spooled(tli: u32, segnos: impl IntoIterator<Item = u64>) -> Vec<String> {
    segnos
        .into_iter()
        .map(|n| format!("{}.prefetched", seg_name(tli, n)))
        .collect()
}

fn setup() -> (tempfile::TempDir, Repository, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let r = repo(&d.path().join("r"), true);
    let spool = d.path().join("spool");
    (d, r, spool)
}

#[test]
fn prefetch_spools_at_most_depth_complete_segments_that_serve_exactly_what_fetch_serves() {
    let (d, r, dir) = setup();
    let a = WalArchive::new(&r);
    store_segments(&a, 1, 3..=12);
    let spool = Spool::new(&dir, 4);
    let got = spool.prefetch(&a, &seg(1, 3)).unwrap();
    assert_eq!((got.written, got.already, got.failed), (4, 0, None));
    assert_eq!(entries(&dir), spooled(1, 4..=7));
    // Again: nothing rewritten, still bounded.
    let got = spool.prefetch(&a, &seg(1, 3)).unwrap();
    assert_eq!((got.written, got.already), (0, 4));
    let dest = d.path().join("RECOVERYXLOG");
    std::fs::write(&dest, b"the previous segment").unwrap();
    assert!(spool.take(&seg_name(1, 4), &dest).unwrap());
    assert_eq!(std::fs::read(&dest).unwrap(), segment(SYSID, 1, 4, 4));
    let fetched = d.path().join("fetched");
    a.fetch(&seg_name(1, 4), &fetched).unwrap();
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(&dest).unwrap()
    );
    assert_eq!(entries(&dir), spooled(1, 5..=7));
    // Serving 6 drops 5, which recovery has moved past.
    assert!(spool.take(&seg_name(1, 6), &dest).unwrap());
    assert_eq!(std::fs::read(&dest).unwrap(), segment(SYSID, 1, 6, 4));
    assert_eq!(entries(&dir), spooled(1, [7]));
    // Not spooled: the repository must serve it.
    assert!(!spool.take(&seg_name(1, 9), &dest).unwrap());
    assert_eq!(std::fs::read(&dest).unwrap(), segment(SYSID, 1, 6, 4));
    // The window moves on: what is outside it goes, the spool never holds more than 4.
    let got = spool.prefetch(&a, &seg(1, 9)).unwrap();
    assert_eq!((got.written, got.already), (3, 0));
    assert_eq!(entries(&dir), spooled(1, 10..=12));
}

#[test]
fn prefetch_stops_at_an_absent_segment_and_never_spools_a_partial() {
    let (d, r, dir) = setup();
    let a = WalArchive::new(&r);
    store_segments(&a, 1, [3, 4]);
    let full = segment(SYSID, 1, 5, 20);
    let p = name(&format!("{}.partial", seg_name(1, 5)));
    a.store(&p, &mut &full[..3 * 8192]).unwrap();
    let spool = Spool::new(&dir, 8);
    let got = spool.prefetch(&a, &seg(1, 3)).unwrap();
    assert_eq!((got.written, got.failed), (1, None));
    assert_eq!(entries(&dir), spooled(1, [4]));
    // The partial and the absent segment are answered by the repository, as without a spool.
    let dest = d.path().join("out");
    assert!(!spool.take(&seg_name(1, 5), &dest).unwrap());
    assert!(!dest.exists());
    assert!(!spool.take(&seg_name(1, 6), &dest).unwrap());
    let e = a.fetch(&seg_name(1, 6), &dest).unwrap_err();
    assert!(matches!(e, WalArchiveError::NotFound { .. }), "{e}");
    // History files, .partial names and anything else never come from the spool.
    for other in [
        "00000002.history".to_string(),
        format!("{}.partial", seg_name(1, 4)),
        "RECOVERYHISTORY".to_string(),
    ] {
        assert!(!spool.take(&other, &dest).unwrap(), "{other}");
    }
    assert!(!dest.exists());
    assert_eq!(entries(&dir), spooled(1, [4]));
    // Timeline 2 lacks segment 4: nothing past the hole is spooled.
    store_segments(&a, 2, [3, 5]);
    let got = spool.prefetch(&a, &seg(2, 3)).unwrap();
    assert_eq!((got.written, got.already, got.failed), (0, 0, None));
    assert_eq!(entries(&dir), Vec::<String>::new());
}

#[test]
fn a_damaged_segment_is_not_spooled_and_stays_an_error_for_its_own_request() {
    let (d, r, dir) = setup();
    let a = WalArchive::new(&r);
    store_segments(&a, 1, 3..=6);
    let stored = a.stored_name(&ArchiveFileName::Wal(WalFileName::Segment(seg(1, 5))));
    let path = std::path::PathBuf::from(r.store().describe(&stored));
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let spool = Spool::new(&dir, 8);
    let got = spool.prefetch(&a, &seg(1, 3)).unwrap();
    assert_eq!(got.written, 1);
    let (failed, why) = got.failed.expect("segment 5 failed");
    assert_eq!(failed, seg_name(1, 5));
    assert!(!why.is_empty());
    // Nothing of 5 is left (no temporary either), and nothing after it was prefetched.
    assert_eq!(entries(&dir), spooled(1, [4]));
    let dest = d.path().join("out");
    assert!(spool.take(&seg_name(1, 4), &dest).unwrap());
    assert!(!spool.take(&seg_name(1, 5), &dest).unwrap());
    let e = a.fetch(&seg_name(1, 5), &dest).unwrap_err();
    assert!(!matches!(e, WalArchiveError::NotFound { .. }), "{e}");
}

#[test]
fn depth_zero_disables_the_spool() {
    let (d, r, dir) = setup();
    let a = WalArchive::new(&r);
    store_segments(&a, 1, 3..=5);
    let spool = Spool::new(&dir, 0);
    assert_eq!(
        spool.prefetch(&a, &seg(1, 3)).unwrap(),
        Prefetched::default()
    );
    assert!(!dir.exists());
    assert!(!spool.take(&seg_name(1, 4), &d.path().join("out")).unwrap());
}

#[test]
fn cleanup_removes_only_spool_entries_and_their_temporaries() {
    let (d, r, dir) = setup();
    let a = WalArchive::new(&r);
    store_segments(&a, 1, 3..=5);
    std::fs::create_dir_all(&dir).unwrap();
    let foreign = [
        "notes.txt".to_string(),
        seg_name(1, 1),
        format!("{}.partial", seg_name(1, 2)),
    ];
    for f in &foreign {
        std::fs::write(dir.join(f), b"not ours").unwrap();
    }
    // A temporary left by a killed wal-fetch, an old timeline's entry and one past the window.
    let stale = [
        format!("{}.prefetched.tmp.0123456789abcdef", seg_name(1, 4)),
        format!("{}.prefetched", seg_name(1, 2)),
        format!("{}.prefetched", seg_name(2, 4)),
        format!("{}.prefetched", seg_name(1, 9)),
    ];
    for f in &stale {
        std::fs::write(dir.join(f), b"stale").unwrap();
    }
    let spool = Spool::new(&dir, 2);
    let got = spool.prefetch(&a, &seg(1, 3)).unwrap();
    assert_eq!(got.written, 2);
    let mut want: Vec<String> = foreign.to_vec();
    want.extend(spooled(1, 4..=5));
    want.sort();
    assert_eq!(entries(&dir), want);
    assert_eq!(
        std::fs::read(dir.join(format!("{}.prefetched", seg_name(1, 4)))).unwrap(),
        segment(SYSID, 1, 4, 4)
    );
    // Serving from the spool: entries up to the served one go, other files stay.
    assert!(spool.take(&seg_name(1, 5), &d.path().join("out")).unwrap());
    assert_eq!(entries(&dir), {
        let mut f = foreign.to_vec();
        f.sort();
        f
    });
}
