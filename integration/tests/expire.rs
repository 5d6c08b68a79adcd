//! `pgstream expire` and `pgstream keep` end to end against real servers archiving into the
//! repository: three backups with WAL between them, a dead branch (timeline 2, a restore of the
//! first backup to an earlier point, promoted) and a live one (timeline 3, a restore of the
//! newest backup, promoted after it). A dry run deletes nothing; keep-last removes old backups
//! and only the WAL no kept backup needs (the dead branch goes, history files stay); pinned
//! backups survive; keep-within keeps the newest backup before the window; `pgstream verify`
//! passes after each run and point-in-time restores of the oldest kept backup follow the
//! timeline switch to the latest row. Refusals (unknown id, damaged record, bad policy) change
//! nothing. It runs on the oldest and the newest of the majors under test. A second test runs
//! expire beside `receive-wal` and a running `base` (newest major only): no WAL is deleted while
//! the backup runs, receive-wal streams on, and verify passes.

mod support;

use std::path::Path;

use backup_core::catalog::{BackupRecord, Catalog};
use backup_core::store::local::LocalStore;
use integration::{cluster, Cluster};
use serde_json::Value;
use support::archiving::sql_switch_and_archive;
use support::receiver::{wait_caught_up, Receiver};
use support::restored::start_promoted;
use support::setup::Setup;
use support::{files_under, ok, oldest_and_newest_majors, s};

const PASSPHRASE: &str = "expire test passphrase";

fn ids(pg: &Cluster) -> String {
    pg.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")
}

fn backups(setup: &Setup) -> Vec<BackupRecord> {
    Catalog::new(&LocalStore::new(&setup.repo)).list().unwrap()
}

/// `pgstream expire ARGS --json` as the server user, checked to succeed.
fn expire_json(setup: &Setup, args: &[&str], ctx: &str) -> Value {
    let mut all = vec!["expire", "--repo", s(&setup.repo), "--json"];
    all.extend_from_slice(args);
    let run = ok(setup.run(&all, true), &format!("{ctx}: expire {args:?}"));
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{ctx}: {e}: {run:?}"))
}

fn expired_ids(report: &Value) -> Vec<String> {
    report["expired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

fn verify_ok(setup: &Setup, ctx: &str) {
    let run = setup.run(&["verify", "--repo", s(&setup.repo)], true);
    assert_eq!(run.code, 0, "{ctx}: verify after expire: {run:?}");
}

/// Repository names of the archived WAL files of `tli` (segments, partials, backup history).
fn wal_files(setup: &Setup, tli: u32) -> Vec<String> {
    let prefix = format!("{tli:08X}");
    files_under(&setup.repo.join("wal"))
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .filter(|n| n.starts_with(&prefix) && !n.contains(".history"))
        .collect()
}

#[test]
fn expire_keeps_the_wal_kept_backups_need_across_timelines_and_verify_passes() {
    // The oldest and the newest major: timelines behave alike in between.
    for major in oldest_and_newest_majors() {
        let started = std::time::Instant::now();
        let ctx = format!("PostgreSQL {major}");
        let setup = Setup::new(PASSPHRASE);
        let pg = setup.archiving_cluster(major).start();
        let conninfo = pg.conninfo("postgres");
        pg.psql("CREATE TABLE t (id int PRIMARY KEY)");

        // Backup 1, then the point the dead branch will fork at.
        ok(setup.base(&conninfo), "base 1");
        pg.psql("INSERT INTO t VALUES (1)");
        let fork = pg.psql("SELECT pg_current_wal_lsn()");
        sql_switch_and_archive(&pg);
        ok(setup.base(&conninfo), "base 2");
        pg.psql("INSERT INTO t VALUES (2)");
        sql_switch_and_archive(&pg);

        // Timeline 2: backup 1 restored to `fork` and promoted, archiving into the repository.
        // It forked before backup 2 started, so once backup 1 is gone no backup can reach it.
        let branch = setup.path("branch");
        ok(
            setup.restore(
                &branch,
                &["--target-lsn", &fork, "--target-action", "promote"],
            ),
            "restore for the dead branch",
        );
        let dead = setup.start_promoted_archiving(major, &branch);
        assert_eq!(ids(&dead), "1", "{ctx}: the dead branch");
        dead.psql("INSERT INTO t VALUES (100)");
        sql_switch_and_archive(&dead);
        drop(dead);

        pg.psql("INSERT INTO t VALUES (3)");
        ok(setup.base(&conninfo), "base 3");
        pg.psql("INSERT INTO t VALUES (4)");
        sql_switch_and_archive(&pg);

        // Timeline 3: backup 3 replayed to the end of timeline 1's archive and promoted.
        let live = setup.path("live");
        ok(
            setup.restore(&live, &["--target-timeline", "current"]),
            "restore for timeline 3",
        );
        let tl3 = setup.start_promoted_archiving(major, &live);
        assert_eq!(
            tl3.psql("SELECT timeline_id FROM pg_control_checkpoint()"),
            "3",
            "{ctx}"
        );
        tl3.psql("INSERT INTO t VALUES (200)");
        sql_switch_and_archive(&tl3);
        drop(tl3);
        // Timeline 1 goes on past the fork to timeline 3.
        pg.psql("INSERT INTO t VALUES (5)");
        let after_fork = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
        sql_switch_and_archive(&pg);
        drop(pg);

        let all = backups(&setup);
        assert_eq!(all.len(), 3, "{ctx}");
        let (b1, b2, b3) = (all[0].id.clone(), all[1].id.clone(), all[2].id.clone());
        assert!(
            !wal_files(&setup, 2).is_empty(),
            "{ctx}: timeline 2 archived"
        );

        // A dry run deletes nothing and says what a real run would.
        let before = files_under(&setup.repo);
        let run = ok(
            setup.run(
                &[
                    "expire",
                    "--repo",
                    s(&setup.repo),
                    "--keep-last",
                    "1",
                    "--dry-run",
                ],
                true,
            ),
            "expire --dry-run",
        );
        assert_eq!(
            files_under(&setup.repo),
            before,
            "{ctx}: the dry run changed files"
        );
        for expect in [
            format!("delete  backup {b1}"),
            format!("delete  backup {b2}"),
            "delete  WAL timeline 2:".to_string(),
            "would delete 2 backups".to_string(),
        ] {
            assert!(run.stdout.contains(&expect), "{ctx}: {expect:?}: {run:?}");
        }

        // Pin backup 2; keep-last 1 then removes backup 1 only, and the dead branch.
        let run = ok(
            setup.run(&["keep", "--repo", s(&setup.repo), &b2], true),
            "keep",
        );
        assert!(run.stdout.contains("pinned backup"), "{ctx}: {run:?}");
        let dry = expire_json(&setup, &["--keep-last", "1", "--dry-run"], &ctx);
        let real = expire_json(&setup, &["--keep-last", "1"], &ctx);
        assert_eq!(expired_ids(&real), vec![b1.clone()], "{ctx}: {real}");
        assert_eq!(dry["expired"], real["expired"], "{ctx}");
        assert_eq!(dry["wal"], real["wal"], "{ctx}: the dry run differs");
        assert_eq!(real["dry_run"], false);
        let kept: Vec<(&str, &Value)> = real["kept"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["id"].as_str().unwrap(), &k["reasons"]))
            .collect();
        assert_eq!(
            kept,
            vec![
                (b2.as_str(), &serde_json::json!(["pinned"])),
                (b3.as_str(), &serde_json::json!(["newest", "keep-last"]))
            ],
            "{ctx}"
        );
        assert!(
            wal_files(&setup, 2).is_empty(),
            "{ctx}: the dead branch stayed"
        );
        assert!(
            real["wal"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["timeline"] != 3),
            "{ctx}: {real}"
        );
        assert!(
            setup.repo.join("wal/00000002.history.lz4.enc").exists(),
            "{ctx}"
        );
        assert!(!setup.repo.join("backups").join(&b1).exists(), "{ctx}");
        // Timeline 1 from backup 2's start on is all there; before it, nothing is.
        let b2_first = all[1].wal_segments[0].clone();
        for f in wal_files(&setup, 1) {
            assert!(
                f[..24] >= *b2_first,
                "{ctx}: {f} is older than backup 2's start"
            );
        }
        for seg in all[1].wal_segments.iter().chain(&all[2].wal_segments) {
            assert!(
                wal_files(&setup, 1)
                    .iter()
                    .any(|f| f.starts_with(seg.as_str()))
                    || all.iter().any(|b| b
                        .partial_wal_file
                        .as_ref()
                        .is_some_and(|p| &p.segment == seg)),
                "{ctx}: {seg} is gone"
            );
        }
        verify_ok(&setup, &format!("{ctx}: keep-last"));

        // The oldest kept backup recovers along timeline 3 to its last row.
        let pitr = setup.path("pitr-b2");
        let run = ok(
            setup.restore(&pitr, &["--backup", &b2, "--target-latest"]),
            "restore of backup 2",
        );
        assert!(
            run.stdout.contains("timeline path 1 -> 3"),
            "{ctx}: {run:?}"
        );
        let restored = start_promoted(major, &pitr);
        assert_eq!(
            ids(&restored),
            "1,2,3,4,200",
            "{ctx}: backup 2 to the latest row"
        );
        drop(restored);

        // Unpinned, keep-within keeps only the newest backup that ended before the window.
        ok(
            setup.run(&["keep", "--repo", s(&setup.repo), &b2, "--unpin"], true),
            "keep --unpin",
        );
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let report = expire_json(&setup, &["--keep-within", "1s"], &ctx);
        assert_eq!(expired_ids(&report), vec![b2.clone()], "{ctx}: {report}");
        assert_eq!(
            report["kept"][0]["reasons"],
            serde_json::json!(["newest", "before-window"]),
            "{ctx}"
        );
        // Timeline 1 past the fork to timeline 3 stays: recovery may still follow timeline 1.
        assert!(
            wal_files(&setup, 1)
                .iter()
                .any(|f| f.starts_with(&after_fork)),
            "{ctx}: {after_fork} is gone"
        );
        verify_ok(&setup, &format!("{ctx}: keep-within"));
        let pitr = setup.path("pitr-b3");
        ok(
            setup.restore(&pitr, &["--target-latest"]),
            "restore of backup 3",
        );
        let restored = start_promoted(major, &pitr);
        assert_eq!(
            ids(&restored),
            "1,2,3,4,200",
            "{ctx}: backup 3 to the latest row"
        );
        drop(restored);

        refusals_change_nothing(&setup, &b3, &ctx);
        eprintln!("{ctx}: took {:.1} s", started.elapsed().as_secs_f64());
    }
}

/// Bad input is refused with its documented exit code, and the repository is left as it was.
fn refusals_change_nothing(setup: &Setup, newest: &str, ctx: &str) {
    let repo = s(&setup.repo);
    let before = files_under(&setup.repo);
    let nowhere = setup.path("nowhere");
    let cases: [(&[&str], i32, &str); 5] = [
        (
            &["keep", "--repo", repo, "20200101T000000Z"],
            5,
            "no backup",
        ),
        (&["expire", "--repo", repo], 2, "--keep-last"),
        (
            &["expire", "--repo", repo, "--keep-last", "0"],
            2,
            "0 is not in",
        ),
        (
            &["expire", "--repo", repo, "--keep-within", "soon"],
            2,
            "examples",
        ),
        (
            &["expire", "--repo", s(&nowhere), "--keep-last", "1"],
            5,
            "not a pgstream repository",
        ),
    ];
    for (args, code, expect) in cases {
        let run = setup.run(args, true);
        assert_eq!(run.code, code, "{ctx}: {args:?}: {run:?}");
        assert!(run.stderr.contains(expect), "{ctx}: {args:?}: {run:?}");
    }
    let wrong = support::pgstream(
        &["expire", "--repo", repo, "--keep-last", "1"],
        Some("wrong"),
    );
    assert_eq!(wrong.code, 5, "{ctx}: wrong passphrase: {wrong:?}");

    // A damaged record: expire refuses and deletes nothing, even what it could.
    let record = Catalog::new(&LocalStore::new(&setup.repo)).record_path(newest);
    let original = std::fs::read(&record).unwrap();
    let mut json: Value = serde_json::from_slice(&original).unwrap();
    json["files_verified"] = Value::from(json["files_verified"].as_u64().unwrap() + 1);
    std::fs::write(&record, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    let run = setup.run(&["expire", "--repo", repo, "--keep-last", "1"], true);
    assert_eq!(run.code, 6, "{ctx}: damaged record: {run:?}");
    assert!(
        run.stderr.contains("cannot be trusted") && run.stderr.contains(newest),
        "{ctx}: {run:?}"
    );
    std::fs::write(&record, &original).unwrap();
    assert_eq!(
        files_under(&setup.repo),
        before,
        "{ctx}: a refusal changed files"
    );
}

/// `pgstream base` of `conninfo` into `repo` as root, checked to succeed.
fn base_as_root(repo: &Path, conninfo: &str, what: &str) {
    ok(
        support::pgstream(
            &[
                "base",
                "--repo",
                s(repo),
                "--source",
                conninfo,
                "--no-progress",
            ],
            Some(PASSPHRASE),
        ),
        what,
    );
}

#[test]
fn expire_beside_receive_wal_and_a_running_base_deletes_no_wal_they_need() {
    let major = support::newest_major();
    let ctx = format!("PostgreSQL {major}");
    let scratch = integration::scratch_dir();
    let repo = scratch.path().join("repo");
    support::init_repo(&repo, PASSPHRASE);
    let pg = cluster(major).start();
    let conninfo = pg.conninfo("postgres");
    pg.psql("CREATE TABLE t (id int PRIMARY KEY)");
    let rx = Receiver::start(
        &repo,
        &conninfo,
        PASSPHRASE,
        &["--slot", "pgstream", "--create-slot"],
        scratch.path().join("receive-wal.log"),
    );
    rx.wait_streaming();
    base_as_root(&repo, &conninfo, "base 1");
    for i in 1..=3 {
        pg.psql(&format!(
            "INSERT INTO t VALUES ({i}); SELECT pg_switch_wal()"
        ));
    }
    base_as_root(&repo, &conninfo, "base 2");
    pg.psql("INSERT INTO t VALUES (4); SELECT pg_switch_wal()");
    wait_caught_up(&pg, "pgstream", &rx);

    // A third backup, slowed down, is running: backups are expired, WAL is not.
    let running = support::pgstream_command(
        &[
            "base",
            "--repo",
            s(&repo),
            "--source",
            &conninfo,
            "--no-progress",
            "--max-rate",
            "4M",
        ],
        Some(PASSPHRASE),
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // Its id is claimed (the lease `locks/backup.<id>`) before it writes anything.
    support::wait_until("the third backup is in progress", || {
        std::fs::read_dir(repo.join("locks")).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("backup."))
        })
    });
    let wal_before = files_under(&repo.join("wal"));
    let run = ok(
        support::pgstream(
            &["expire", "--repo", s(&repo), "--keep-last", "1", "--json"],
            Some(PASSPHRASE),
        ),
        "expire during a base",
    );
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        report["expired"].as_array().unwrap().len(),
        1,
        "{ctx}: {report}"
    );
    assert!(
        report["wal_note"]
            .as_str()
            .unwrap_or("")
            .contains("being written"),
        "{ctx}: {report}"
    );
    assert_eq!(report["wal_files"], 0, "{ctx}: {report}");
    // receive-wal may have added files meanwhile, and replaces its partial segment by the
    // complete one; nothing else was removed.
    let wal_after = files_under(&repo.join("wal"));
    for f in &wal_before {
        assert!(
            wal_after.contains(f) || f.to_string_lossy().contains(".partial.recv"),
            "{ctx}: {} was deleted while a backup ran",
            f.display()
        );
    }
    let out = running.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{ctx}: the third backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Now the WAL before the newest backup goes, while receive-wal goes on streaming.
    let report = ok(
        support::pgstream(
            &["expire", "--repo", s(&repo), "--keep-last", "1", "--json"],
            Some(PASSPHRASE),
        ),
        "expire after the base",
    );
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(
        report["expired"].as_array().unwrap().len(),
        1,
        "{ctx}: {report}"
    );
    assert!(report["wal_files"].as_u64().unwrap() > 0, "{ctx}: {report}");
    pg.psql("INSERT INTO t VALUES (5); SELECT pg_switch_wal()");
    wait_caught_up(&pg, "pgstream", &rx);
    assert_eq!(rx.terminate(), 0, "{ctx}: receive-wal");
    let run = support::pgstream(&["verify", "--repo", s(&repo)], Some(PASSPHRASE));
    assert_eq!(run.code, 0, "{ctx}: verify: {run:?}");
}
