//! verify over the in-memory backend: every WAL file read back, gaps in a backup's chain, a
//! damaged segment, a record altered without the key, a backup missing its files.

use super::*;
use crate::catalog::Catalog;
use crate::crypto::{Aead, Encryption};
use crate::store::Store;
use crate::test_support::{backup_record, cluster, mem_repo, wal_segment, SYSID};
use crate::wal::archive::WalArchive;
use crate::wal::WalFileName;

const MIB: u64 = 1 << 20;

fn seg(segno: u64) -> SegmentName {
    SegmentName::new(TimelineId(1), segno, WalSegmentSize::new(MIB).unwrap())
}

/// An encrypted repository (1 MiB segments) holding segments 1–6 of timeline 1 and the record
/// of a backup in segment 2 (whose archives and manifest were never stored).
fn repository() -> (crate::store::mem::MemStore, Repository) {
    let (mem, repo) = mem_repo(Encryption::Aead(Aead::Aes256Gcm), Some(cluster(MIB as u32)));
    let archive = WalArchive::new(&repo);
    for segno in 1..=6 {
        let bytes = wal_segment(SYSID, 1, segno, 4);
        archive
            .store(&WalFileName::Segment(seg(segno)), &mut &bytes[..])
            .unwrap();
    }
    let mut r = backup_record("20261101T000000Z", 2);
    r.wal_segment_size = MIB;
    r.start_lsn = Lsn(2 * MIB + 0x28);
    r.end_lsn = Lsn(2 * MIB + 0x100);
    r.wal_segments = vec![seg(2).to_string()];
    r.seal(repo.sealing_key()).unwrap();
    repo.catalog().write(&r).unwrap();
    (mem, repo)
}

#[test]
fn every_wal_file_is_read_back_and_a_missing_manifest_is_named() {
    let (_mem, repo) = repository();
    let report = verify(&repo, None).unwrap();
    assert!(report.wal.ok, "{:?}", report.wal);
    assert_eq!(report.wal.files_checked, 6);
    assert_eq!(report.backups.len(), 1);
    let b = &report.backups[0];
    assert!(!b.ok);
    assert!(
        b.problems
            .iter()
            .any(|p| p.file.contains("backup_manifest")),
        "{:?}",
        b.problems
    );
}

#[test]
fn a_missing_segment_is_a_gap_and_a_damaged_one_a_bad_file() {
    let (mem, repo) = repository();
    let stored = |segno| crate::layout::wal_segment_file(&seg(segno), repo.codec());
    mem.delete(&[stored(4)]).unwrap();
    let mut bytes = mem.bytes(&stored(5)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    mem.overwrite(&stored(5), bytes);
    let report = verify(&repo, None).unwrap();
    assert!(!report.wal.ok);
    assert_eq!(report.wal.bad_files.len(), 1, "{:?}", report.wal.bad_files);
    assert_eq!(report.wal.bad_files[0].file, stored(5));
    assert!(
        report.wal.bad_files[0]
            .problem
            .contains("authentication failed"),
        "{:?}",
        report.wal.bad_files
    );
    let gap = &report.wal.gaps[0];
    assert_eq!(gap.first, seg(4).to_string(), "{:?}", report.wal.gaps);
    assert_eq!(gap.backups, vec!["20261101T000000Z".to_string()]);
}

#[test]
fn a_record_resealed_without_the_key_is_a_problem_of_its_backup() {
    let (mem, repo) = repository();
    let name = Catalog::record_name("20261101T000000Z");
    let mut forged: BackupRecord = serde_json::from_slice(&mem.bytes(&name).unwrap()).unwrap();
    forged.label = "forged".into();
    forged.seal(None).unwrap();
    mem.overwrite(&name, serde_json::to_vec(&forged).unwrap());
    let report = verify(&repo, None).unwrap();
    let problems = &report.backups[0].problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].problem.contains("MAC"), "{problems:?}");
}
