//! Storing, fetching and listing against a real (temporary) repository.

use std::path::Path;

use pgwire_repl::TimelineId;

use super::*;
use crate::crypto::{Aead, Encryption};
use crate::repo::config::ClusterIdentity;
use crate::test_support::{cluster, test_repo, SYSID};

const MIB: u32 = 1 << 20;

pub(super) fn repo(dir: &Path, bound: bool) -> Repository {
    test_repo(
        dir,
        Encryption::Aead(Aead::Aes256Gcm),
        bound.then(|| cluster(MIB)),
    )
}

/// A 1 MiB segment with `valid` page headers (the rest zero), like the server's files.
pub(super) fn segment(sysid: u64, tli: u32, segno: u64, valid: usize) -> Vec<u8> {
    crate::test_support::wal_segment(sysid, tli, segno, valid)
}

pub(super) fn name(s: &str) -> WalFileName {
    WalFileName::parse(s, WalSegmentSize::new(MIB.into()).unwrap()).unwrap()
}

pub(super) fn seg_name(tli: u32, segno: u64) -> String {
    SegmentName::new(
        TimelineId(tli),
        segno,
        WalSegmentSize::new(MIB.into()).unwrap(),
    )
    .to_string()
}

#[test]
fn store_is_idempotent_and_refuses_conflicts() {
    let d = tempfile::tempdir().unwrap();
    let repo = repo(&d.path().join("r"), true);
    let a = WalArchive::new(&repo);
    let n = name(&seg_name(1, 3));
    let data = segment(SYSID, 1, 3, 128);
    assert_eq!(a.store(&n, &mut &data[..]).unwrap(), StoreOutcome::Stored);
    assert_eq!(
        a.store(&n, &mut &data[..]).unwrap(),
        StoreOutcome::AlreadyPresent
    );
    let mut other = data.clone();
    other[100_000] ^= 1;
    let e = a.store(&n, &mut &other[..]).unwrap_err();
    assert!(matches!(e, WalArchiveError::Conflict { .. }), "{e}");
    assert!(e.to_string().contains(&n.to_string()), "{e}");
    // A shorter or longer copy conflicts too, and the stored one is unchanged.
    let e = a.store(&n, &mut &data[..data.len() - 1]).unwrap_err();
    assert!(matches!(e, WalArchiveError::Conflict { .. }), "{e}");
    let out = d.path().join("out");
    assert_eq!(
        a.fetch(&n.to_string(), &out).unwrap(),
        FetchOutcome::Archived {
            stored: a.stored_name(&ArchiveFileName::Wal(n))
        }
    );
    assert_eq!(std::fs::read(&out).unwrap(), data);
    let listed = a.list_segments(TimelineId(1)).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        a.newest_segment(TimelineId(1)).unwrap(),
        Some(listed[0].name)
    );
    assert_eq!(a.newest_segment(TimelineId(2)).unwrap(), None);
}

#[test]
fn the_race_loser_compares_instead_of_replacing() {
    let d = tempfile::tempdir().unwrap();
    let repo = repo(&d.path().join("r"), true);
    let a = WalArchive::new(&repo);
    let n = name(&seg_name(1, 4));
    let data = segment(SYSID, 1, 4, 10);
    // The other writer finishes while we stream: simulated by storing from inside read().
    struct Racing<'x> {
        data: &'x [u8],
        archive: &'x WalArchive<'x>,
        other: Option<Vec<u8>>,
        n: WalFileName,
    }
    impl Read for Racing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if let Some(other) = self.other.take() {
                self.archive.store(&self.n, &mut &other[..]).unwrap();
            }
            self.data.read(buf)
        }
    }
    let mut r = Racing {
        data: &data,
        archive: &a,
        other: Some(data.clone()),
        n,
    };
    assert_eq!(a.store(&n, &mut r).unwrap(), StoreOutcome::AlreadyPresent);
    let n5 = name(&seg_name(1, 5));
    let data5 = segment(SYSID, 1, 5, 10);
    let mut changed = data5.clone();
    changed[9000] = 1;
    let mut r = Racing {
        data: &data5,
        archive: &a,
        other: Some(changed.clone()),
        n: n5,
    };
    let e = a.store(&n5, &mut r).unwrap_err();
    assert!(matches!(e, WalArchiveError::Conflict { .. }), "{e}");
    let out = d.path().join("out");
    a.fetch(&n5.to_string(), &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), changed);
}

#[test]
fn wrong_size_other_cluster_and_garbage_are_refused_and_leave_nothing() {
    let d = tempfile::tempdir().unwrap();
    let repo = repo(&d.path().join("r"), true);
    let a = WalArchive::new(&repo);
    let n = name(&seg_name(1, 6));
    let data = segment(SYSID, 1, 6, 3);
    let e = a.store(&n, &mut &data[..1000]).unwrap_err();
    assert!(matches!(e, WalArchiveError::WrongSize { .. }), "{e}");
    let e = a
        .store(&n, &mut &segment(SYSID + 1, 1, 6, 3)[..])
        .unwrap_err();
    assert!(matches!(e, WalArchiveError::OtherCluster { .. }), "{e}");
    assert!(e.to_string().contains(&SYSID.to_string()), "{e}");
    let e = a.store(&n, &mut &segment(SYSID, 1, 7, 3)[..]).unwrap_err();
    assert!(matches!(e, WalArchiveError::NotWal { .. }), "{e}");
    let e = a.store(&n, &mut &vec![7u8; MIB as usize][..]).unwrap_err();
    assert!(matches!(e, WalArchiveError::InvalidSegment { .. }), "{e}");
    let h = name("00000002.history");
    let e = a.store(&h, &mut &b"garbage\n"[..]).unwrap_err();
    assert!(matches!(e, WalArchiveError::InvalidHistory { .. }), "{e}");
    assert!(a.list_segments(TimelineId(1)).unwrap().is_empty());
    let e = a.fetch(&n.to_string(), &d.path().join("o")).unwrap_err();
    assert!(matches!(e, WalArchiveError::NotFound { .. }), "{e}");
    assert!(!d.path().join("o").exists());
    let e = ArchiveFileName::parse("RECOVERYXLOG", WalSegmentSize::DEFAULT).unwrap_err();
    assert!(matches!(e, WalArchiveError::InvalidName { .. }), "{e}");
}

#[test]
fn history_and_backup_history_files_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let repo = repo(&d.path().join("r"), false);
    let a = WalArchive::new(&repo);
    let h = name("00000002.history");
    let content = b"1\t0/3000000\tno recovery target specified\n";
    assert_eq!(
        a.store(&h, &mut &content[..]).unwrap(),
        StoreOutcome::Stored
    );
    let out = d.path().join("h");
    a.fetch("00000002.history", &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), content);
    let b = ArchiveFileName::parse(
        "000000010000000000000002.00000028.backup",
        WalSegmentSize::DEFAULT,
    )
    .unwrap();
    assert_eq!(
        a.store_file(&b, &mut &b"START WAL LOCATION: 0/2000028\n"[..])
            .unwrap(),
        StoreOutcome::Stored
    );
    // Unbound: no segment size, so no segment can be there.
    let e = a.fetch(&seg_name(1, 2), &out).unwrap_err();
    assert!(matches!(e, WalArchiveError::NotFound { .. }), "{e}");
    let e = a.fetch("00000003.history", &out).unwrap_err();
    assert!(matches!(e, WalArchiveError::NotFound { .. }), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), content);
}

#[test]
fn a_partial_is_served_padded_only_as_the_newest_of_its_timeline() {
    let d = tempfile::tempdir().unwrap();
    let repo = repo(&d.path().join("r"), true);
    let a = WalArchive::new(&repo);
    let full = segment(SYSID, 1, 8, 20);
    let prefix = &full[..5 * 8192 + 100];
    let p = name(&format!("{}.partial", seg_name(1, 8)));
    assert_eq!(a.store(&p, &mut &prefix[..]).unwrap(), StoreOutcome::Stored);
    let out = d.path().join("out");
    let got = a.fetch(&seg_name(1, 8), &out).unwrap();
    assert!(
        matches!(got, FetchOutcome::FromPartial { bytes, .. } if bytes == prefix.len() as u64),
        "{got:?}"
    );
    let fetched = std::fs::read(&out).unwrap();
    assert_eq!(fetched.len(), MIB as usize);
    assert_eq!(&fetched[..prefix.len()], prefix);
    assert!(fetched[prefix.len()..].iter().all(|&b| b == 0));
    // Asked for by its own name, the partial comes back as stored.
    a.fetch(&p.to_string(), &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), prefix);
    // A later segment of the timeline: the partial is no longer the end, so it is a gap.
    let n9 = name(&seg_name(1, 9));
    a.store(&n9, &mut &segment(SYSID, 1, 9, 2)[..]).unwrap();
    let e = a.fetch(&seg_name(1, 8), &out).unwrap_err();
    assert!(matches!(e, WalArchiveError::Gap { .. }), "{e}");
    // The complete segment wins once archived.
    a.store(&name(&seg_name(1, 8)), &mut &full[..]).unwrap();
    let got = a.fetch(&seg_name(1, 8), &out).unwrap();
    assert!(matches!(got, FetchOutcome::Archived { .. }), "{got:?}");
    assert_eq!(std::fs::read(&out).unwrap(), full);
    let listed: Vec<(u64, bool)> = a
        .list_segments(TimelineId(1))
        .unwrap()
        .iter()
        .map(|s| (s.name.segno, s.partial))
        .collect();
    assert_eq!(listed, vec![(8, false), (8, true), (9, false)]);
    assert_eq!(
        a.newest_segment(TimelineId(1)).unwrap().map(|s| s.segno),
        Some(9)
    );
}

#[test]
fn segment_cluster_reads_the_long_header() {
    let s = segment(SYSID, 1, 3, 1);
    assert_eq!(
        segment_cluster(&s[..40]),
        Some(ClusterIdentity {
            system_identifier: SYSID,
            major: 16,
            wal_segment_size: MIB
        })
    );
    assert_eq!(segment_cluster(&[0u8; 40]), None);
    assert_eq!(segment_cluster(&s[..39]), None);
}

/// The segment `receive-wal` is still writing is served, zero-padded, so recovery reaches
/// the last byte received; once a later segment exists it is a gap instead.
#[test]
fn fetch_serves_receive_wal_partial_padded() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), true);
    let archive = WalArchive::new(&repo);
    let seg_size = WalSegmentSize::new(MIB.into()).unwrap();
    let seg = SegmentName::new(pgwire_repl::TimelineId(1), 5, seg_size);
    let data = segment_bytes_prefix(5, 3 * 8192);
    let identity = crate::wal::partial::receiving_name(&seg, true);
    let mut w = crate::wal::partial::PartialWriter::create(
        repo.store().as_ref(),
        &identity,
        seg,
        repo.codec(),
    )
    .unwrap();
    w.append(&data).unwrap();
    w.sync().unwrap();
    drop(w);
    let dest = dir.path().join("RECOVERYXLOG");
    match archive.fetch(&seg.to_string(), &dest).unwrap() {
        FetchOutcome::FromPartial { bytes, .. } => assert_eq!(bytes, data.len() as u64),
        other => panic!("{other:?}"),
    }
    let got = std::fs::read(&dest).unwrap();
    assert_eq!(got.len(), MIB as usize);
    assert_eq!(&got[..data.len()], &data[..]);
    assert!(got[data.len()..].iter().all(|&b| b == 0));

    // A later complete segment makes the partial's segment a gap, not a short answer.
    let later = segment(SYSID, 1, 6, 128);
    archive
        .store(&name(&seg_name(1, 6)), &mut &later[..])
        .unwrap();
    assert!(matches!(
        archive.fetch(&seg.to_string(), &dest),
        Err(WalArchiveError::Gap { .. })
    ));
}

fn segment_bytes_prefix(segno: u64, len: usize) -> Vec<u8> {
    segment(SYSID, 1, segno, len / 8192)[..len].to_vec()
}
