//! expire and keep against an in-memory repository with hand-made records and WAL files
//! (their content is never read: expire decides from names, records and history files).

use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::catalog::lifecycle;
use crate::crypto::{Aead, Encryption};
use crate::store::lease::LeaseHolder;
use crate::store::mem::MemStore;
use crate::store::{PutMode, Store};
use crate::test_support::{backup_record, cluster, mem_repo};
use crate::wal::archive::WalArchive;
use crate::wal::WalFileName;

const IDS: [&str; 3] = ["20261101T000000Z", "20261102T000000Z", "20261103T000000Z"];

fn repo() -> (MemStore, Repository) {
    repo_with(Encryption::Aead(Aead::Aes256Gcm))
}

fn repo_with(encryption: Encryption) -> (MemStore, Repository) {
    mem_repo(encryption, Some(cluster(16 << 20)))
}

fn write_record(repo: &Repository, r: &BackupRecord) {
    let mut r = r.clone();
    r.seal(repo.sealing_key()).unwrap();
    repo.store()
        .put(
            &format!("backups/{}/base.tar.lz4.enc", r.id),
            &[0u8; 1000],
            PutMode::Create,
        )
        .unwrap();
    repo.catalog().write(&r).unwrap();
}

/// A complete-segment file of timeline `tli` (content irrelevant here).
fn segment_file(repo: &Repository, tli: u32, segno: u64) -> String {
    let suffix = crate::layout::suffix(repo.codec());
    let name = format!("wal/{tli:08X}00000000/{tli:08X}00000000{segno:08X}{suffix}");
    repo.store()
        .put(&name, b"segment", PutMode::Create)
        .unwrap();
    name
}

/// A repository with backups starting in segments 2, 5 and 8 and timeline 1's segments 1–10.
fn three_backups() -> (MemStore, Repository) {
    let (store, repo) = repo();
    for (id, segno) in IDS.iter().zip([2, 5, 8]) {
        write_record(&repo, &backup_record(id, segno));
    }
    for segno in 1..=10 {
        segment_file(&repo, 1, segno);
    }
    (store, repo)
}

fn options(keep_last: u32, dry_run: bool) -> ExpireOptions {
    ExpireOptions {
        policy: Policy {
            keep_last: Some(keep_last),
            keep_within: None,
        },
        dry_run,
        now: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    }
}

/// Every object under `prefix`, relative to it, sorted.
fn files(store: &dyn Store, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .unwrap()
        .into_iter()
        .map(|o| o.name[prefix.len()..].to_string())
        .collect()
}

fn segments_left(repo: &Repository) -> Vec<u64> {
    files(repo.store().as_ref(), "wal/0000000100000000/")
        .iter()
        .map(|f| u64::from_str_radix(&f[16..24], 16).unwrap())
        .collect()
}

#[test]
fn keep_last_deletes_old_backups_and_only_their_wal_and_a_dry_run_deletes_nothing() {
    let (store, repo) = three_backups();
    let before = files(&store, "");
    let report = expire(&repo, &options(1, true)).unwrap();
    assert_eq!(files(&store, ""), before, "the dry run changed files");
    assert!(report.dry_run);
    let expired: Vec<&str> = report.expired.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(expired, IDS[..2]);
    assert_eq!(report.kept.len(), 1);
    assert_eq!(
        report.kept[0].reasons,
        vec![KeepReason::Newest, KeepReason::KeepLast]
    );
    assert_eq!(
        report.wal,
        vec![WalRange {
            timeline: 1,
            first: "000000010000000000000001".into(),
            last: "000000010000000000000007".into(),
            files: 7,
            bytes: 7 * 7,
        }]
    );
    assert_eq!(
        report.expired[0].bytes,
        1000 + report_record_bytes(&repo, IDS[0])
    );

    let real = expire(&repo, &options(1, false)).unwrap();
    assert!(!real.dry_run);
    assert_eq!(real.wal, report.wal);
    assert_eq!(segments_left(&repo), vec![8, 9, 10]);
    let backups = files(&store, "backups/");
    assert!(backups.iter().all(|f| f.starts_with(IDS[2])), "{backups:?}");
    assert!(files(&store, "locks/").is_empty(), "the lease was released");
    // Nothing more to do.
    assert!(expire(&repo, &options(1, false)).unwrap().is_empty());
}

fn report_record_bytes(repo: &Repository, id: &str) -> u64 {
    repo.store()
        .head(&Catalog::record_name(id))
        .unwrap()
        .unwrap()
        .size
}

#[test]
fn pinned_backups_survive_with_the_wal_they_need() {
    let (store, repo) = three_backups();
    let (id, outcome) = keep(&repo, IDS[0], false, UNIX_EPOCH).unwrap();
    assert_eq!(id, IDS[0]);
    assert!(matches!(outcome, PinOutcome::Pinned(_)));
    assert!(matches!(
        keep(&repo, IDS[0], false, UNIX_EPOCH).unwrap().1,
        PinOutcome::AlreadyPinned(_)
    ));
    assert!(is_pinned(&store, IDS[0]).unwrap());
    let report = expire(&repo, &options(1, false)).unwrap();
    assert_eq!(report.expired.len(), 1);
    assert_eq!(report.expired[0].id, IDS[1]);
    assert_eq!(report.kept[0].reasons, vec![KeepReason::Pinned]);
    assert_eq!(segments_left(&repo), (2..=10).collect::<Vec<_>>());
    // Unpinned, it goes.
    assert_eq!(
        keep(&repo, IDS[0], true, UNIX_EPOCH).unwrap().1,
        PinOutcome::Unpinned
    );
    assert_eq!(
        keep(&repo, IDS[0], true, UNIX_EPOCH).unwrap().1,
        PinOutcome::NotPinned
    );
    expire(&repo, &options(1, false)).unwrap();
    assert_eq!(segments_left(&repo), vec![8, 9, 10]);
}

#[test]
fn keep_refuses_an_unknown_id_and_resolves_latest() {
    let (_store, repo) = three_backups();
    let err = keep(&repo, "20990101T000000Z", false, UNIX_EPOCH).unwrap_err();
    assert!(
        matches!(err, ExpireError::Catalog(CatalogError::NoSuchBackup { .. })),
        "{err}"
    );
    let err = keep(&repo, "../etc", false, UNIX_EPOCH).unwrap_err();
    assert!(err.to_string().contains("pgstream list"), "{err}");
    assert_eq!(keep(&repo, "latest", false, UNIX_EPOCH).unwrap().0, IDS[2]);
}

#[test]
fn a_damaged_record_stops_expire_before_anything_is_deleted() {
    let (store, repo) = three_backups();
    let name = Catalog::record_name(IDS[1]);
    let text = String::from_utf8(store.bytes(&name).unwrap()).unwrap();
    store.overwrite(&name, text.replace("16.2", "16.3").into_bytes());
    let before = files(&store, "");
    let err = expire(&repo, &options(1, false)).unwrap_err();
    assert!(
        matches!(err, ExpireError::Record { ref id, .. } if id == IDS[1]),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was deleted"), "{err}");
    assert_eq!(files(&store, ""), before);
}

#[test]
fn a_record_resealed_without_the_key_fails_its_mac_and_stops_expire() {
    let (store, repo) = three_backups();
    let mut forged = backup_record(IDS[0], 2);
    forged.seal(None).unwrap();
    store.overwrite(
        &Catalog::record_name(IDS[0]),
        serde_json::to_vec(&forged).unwrap(),
    );
    let err = expire(&repo, &options(1, false)).unwrap_err();
    assert!(err.to_string().contains("MAC"), "{err}");
    assert_eq!(segments_left(&repo), (1..=10).collect::<Vec<_>>());
}

#[test]
fn a_damaged_pin_stops_expire() {
    let (store, repo) = three_backups();
    keep(&repo, IDS[0], false, UNIX_EPOCH).unwrap();
    store.overwrite(&pin::pin_name(IDS[0]), b"{}".to_vec());
    let err = expire(&repo, &options(1, false)).unwrap_err();
    assert!(matches!(err, ExpireError::UnreadablePin(_)), "{err}");
    assert!(err.to_string().contains("nothing was deleted"), "{err}");
    assert_eq!(segments_left(&repo), (1..=10).collect::<Vec<_>>());
    // Pinning again repairs it.
    assert!(matches!(
        keep(&repo, IDS[0], false, UNIX_EPOCH).unwrap().1,
        PinOutcome::Pinned(_)
    ));
}

#[test]
fn a_history_file_that_cannot_be_read_stops_expire() {
    let (store, repo) = three_backups();
    store.overwrite("wal/00000002.history.lz4.enc", b"garbage".to_vec());
    let err = expire(&repo, &options(1, false)).unwrap_err();
    assert!(
        matches!(err, ExpireError::History { timeline, .. } if timeline.0 == 2),
        "{err}"
    );
    assert_eq!(segments_left(&repo), (1..=10).collect::<Vec<_>>());
}

#[test]
fn a_dead_branch_goes_and_history_files_stay() {
    let (store, repo) = three_backups();
    // Timeline 2 forked from timeline 1 in segment 3: before the kept backup (segment 8).
    let history = b"1\t0/3800000\tpitr\n";
    WalArchive::new(&repo)
        .store(&WalFileName::History(TimelineId(2)), &mut &history[..])
        .unwrap();
    for segno in 3..=6 {
        segment_file(&repo, 2, segno);
    }
    // As the newest timeline it might be the live primary's: kept.
    let report = expire(&repo, &options(1, true)).unwrap();
    assert_eq!(report.newest_timeline_kept, Some(2));
    assert!(
        report.wal.iter().all(|r| r.timeline == 1),
        "{:?}",
        report.wal
    );
    // Timeline 3 forks from timeline 1 after the kept backup: now timeline 2 is dead.
    let history = b"1\t0/A000000\tlater\n";
    WalArchive::new(&repo)
        .store(&WalFileName::History(TimelineId(3)), &mut &history[..])
        .unwrap();
    segment_file(&repo, 3, 10);
    let report = expire(&repo, &options(1, false)).unwrap();
    assert_eq!(report.newest_timeline_kept, None);
    assert_eq!(report.wal.len(), 2, "{:?}", report.wal);
    assert_eq!(report.wal[1].timeline, 2);
    assert_eq!(report.wal[1].files, 4);
    assert!(files(&store, "wal/0000000200000000/").is_empty());
    assert!(!files(&store, "wal/0000000300000000/").is_empty());
    assert!(store
        .head("wal/00000002.history.lz4.enc")
        .unwrap()
        .is_some());
}

/// Backup `id` being written, as a running `base` has it: its lease held and a file stored;
/// the lease is released when the returned guard is dropped.
fn backup_in_progress(store: &MemStore, id: &str) -> Box<dyn crate::store::LeaseGuard> {
    let lease = store
        .acquire_lease(
            &lifecycle::lease_name(id),
            &LeaseHolder::this_process("test base"),
        )
        .unwrap();
    store
        .put(
            &format!("backups/{id}/base.tar.lz4.enc"),
            b"x",
            PutMode::Create,
        )
        .unwrap();
    lease
}

fn assert_wal_held_for_a_running_backup(report: &ExpireReport) {
    assert!(
        report
            .wal_note
            .as_deref()
            .unwrap()
            .contains("being written"),
        "{report:?}"
    );
}

#[test]
fn no_wal_is_deleted_while_a_backup_is_in_progress() {
    let (store, repo) = three_backups();
    let lock = backup_in_progress(&store, "20261104T000000Z");
    let report = expire(&repo, &options(1, false)).unwrap();
    assert_eq!(report.expired.len(), 2);
    assert!(report.wal.is_empty());
    assert_wal_held_for_a_running_backup(&report);
    assert_eq!(segments_left(&repo), (1..=10).collect::<Vec<_>>());
    // A dead one (its writer gone, no record) does not hold WAL back, and is removed.
    store.kill_lease_holders();
    let report = expire(&repo, &options(1, false)).unwrap();
    assert!(report.wal_note.is_none());
    assert_eq!(report.leftovers, vec!["20261104T000000Z".to_string()]);
    assert_eq!(segments_left(&repo), vec![8, 9, 10]);
    assert!(files(&store, "backups/20261104T000000Z/").is_empty());
    drop(lock);
}

#[test]
fn no_wal_is_deleted_when_a_backup_starts_after_expire_decided() {
    // A backup that starts while expire deletes the expired backups was not seen when it
    // decided; it may need WAL older than every kept backup's start (a standby's backup
    // starts at its last restartpoint), so the WAL stays.
    let (store, repo) = three_backups();
    let catalog = repo.catalog();
    let mut report = decide(&repo, &catalog, &options(1, false)).unwrap();
    assert_eq!(report.wal_files, 7);
    let _lock = backup_in_progress(&store, "20261104T000000Z");
    apply(&repo, &mut report).unwrap();
    assert_eq!(report.expired.len(), 2);
    assert!(files(&store, &format!("backups/{}/", IDS[0])).is_empty());
    assert_eq!(segments_left(&repo), (1..=10).collect::<Vec<_>>());
    assert!(report.wal.is_empty() && report.wal_files == 0 && report.wal_bytes == 0);
    assert_eq!(
        report.total_bytes,
        report.expired.iter().map(|b| b.bytes).sum::<u64>()
    );
    assert_wal_held_for_a_running_backup(&report);
}

#[test]
fn a_crashed_expire_is_finished_by_the_next_run() {
    let (store, repo) = three_backups();
    let catalog = repo.catalog();
    // What a crash right after deleting the record leaves: the backup's other files.
    store.delete(&[Catalog::record_name(IDS[0])]).unwrap();
    let listed: Vec<String> = catalog.list().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(
        listed,
        IDS[1..],
        "a backup without its record is no longer listed"
    );
    let dry = expire(&repo, &options(3, true)).unwrap();
    assert_eq!(dry.leftovers, vec![IDS[0].to_string()]);
    assert!(!files(&store, &format!("backups/{}/", IDS[0])).is_empty());
    let real = expire(&repo, &options(3, false)).unwrap();
    assert_eq!(real.leftovers.len(), 1);
    assert!(files(&store, &format!("backups/{}/", IDS[0])).is_empty());
    // The oldest remaining backup starts in segment 5.
    assert_eq!(segments_left(&repo), (5..=10).collect::<Vec<_>>());
}

#[test]
fn no_backups_and_bad_policies_are_refused() {
    let (store, repo) = repo();
    segment_file(&repo, 1, 1);
    let err = expire(&repo, &options(1, false)).unwrap_err();
    assert!(matches!(err, ExpireError::NoBackups), "{err}");
    store
        .put("backups/notes/x", b"not a backup", PutMode::Create)
        .unwrap();
    let err = expire(&repo, &options(1, false)).unwrap_err();
    assert!(matches!(err, ExpireError::NoBackups), "{err}");
    let err = expire(&repo, &options(0, false)).unwrap_err();
    assert!(matches!(err, ExpireError::Policy(_)), "{err}");
    assert_eq!(segments_left(&repo), vec![1]);
}

#[test]
fn an_unencrypted_repository_is_expired_the_same_way() {
    let (store, repo) = repo_with(Encryption::None);
    for (id, segno) in IDS.iter().zip([2, 5, 8]) {
        write_record(&repo, &backup_record(id, segno));
    }
    for segno in 1..=10 {
        segment_file(&repo, 1, segno);
    }
    // receive-wal's segment in progress, and a file of another codec: never deleted.
    let wal = "wal/0000000100000000/";
    for (f, b) in [
        ("000000010000000000000001.partial.recv", b"r"),
        ("000000010000000000000001.zst", b"z"),
    ] {
        store.put(&format!("{wal}{f}"), b, PutMode::Create).unwrap();
    }
    keep(&repo, IDS[1], false, UNIX_EPOCH).unwrap();
    let report = expire(&repo, &options(1, false)).unwrap();
    assert_eq!(report.expired.len(), 1);
    let left = files(&store, wal);
    assert_eq!(
        left.iter().filter(|f| f.ends_with(".lz4")).count(),
        6,
        "{left:?}"
    );
    assert!(left.contains(&"000000010000000000000001.partial.recv".to_string()));
    assert!(left.contains(&"000000010000000000000001.zst".to_string()));
}

#[test]
fn wal_ranges_merge_consecutive_segments_per_timeline() {
    let s = WalSegmentSize::DEFAULT;
    let f = |tli: u32, segno: u64, kind| WalFile {
        stored: String::new(),
        kind,
        segment: SegmentName::new(TimelineId(tli), segno, s),
        bytes: 10,
    };
    let files = vec![
        f(1, 3, retain::WalFileKind::Segment),
        f(1, 1, retain::WalFileKind::Segment),
        f(1, 2, retain::WalFileKind::Segment),
        f(1, 2, retain::WalFileKind::BackupHistory),
        f(1, 5, retain::WalFileKind::Partial),
        f(2, 5, retain::WalFileKind::Segment),
    ];
    let r = wal_ranges(&files);
    let summary: Vec<(u32, &str, &str, u64)> = r
        .iter()
        .map(|r| (r.timeline, &r.first[16..], &r.last[16..], r.files))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "00000001", "00000003", 4),
            (1, "00000005", "00000005", 1),
            (2, "00000005", "00000005", 1)
        ]
    );
}
