//! `pgstream restore` with recovery targets, end to end against real servers: the runbook drill
//! (base backup, then test1 / T1, test2 / its xid / a restore point, test3, switch WAL) restored
//! to a time, a restore point, an LSN, an xid and the latest state, each started and queried;
//! targets outside the recoverable window refused with the window stated; a non-empty target
//! refused without --force and emptied with it; recovery along a new timeline (a promoted
//! server archiving 00000002.history); and --copy-wal recovering with the repository moved away.
//! It runs on the oldest and the newest of the majors under test.

mod support;

use std::path::Path;

use integration::{server_user, Cluster};
use support::archiving::switch_and_archive;
use support::restored::start_promoted;
use support::setup::Setup;
use support::{ok, oldest_and_newest_majors, s};

const PASSPHRASE: &str = "pitr drill passphrase";
const RESTORE_POINT: &str = "drill after test2";

/// Starts the restored directory, waits for the end of recovery (promotion) and returns the
/// drill rows, in order.
fn recovered_rows(major: u32, dir: &Path) -> (Cluster, String) {
    let pg = start_promoted(major, dir);
    let rows = drill_rows(&pg);
    (pg, rows)
}

fn drill_rows(pg: &Cluster) -> String {
    pg.psql("SELECT string_agg(note, ',' ORDER BY id) FROM drill")
}

#[test]
fn runbook_drill_point_in_time_restores() {
    // The oldest and the newest major: the drill takes well over a minute per major (seven
    // restores, each started), too long to repeat for every one.
    for major in oldest_and_newest_majors() {
        let started = std::time::Instant::now();
        let ctx = format!("PostgreSQL {major}");
        let setup = Setup::new(PASSPHRASE);
        let pg = setup.archiving_cluster(major).start();
        pg.psql("CREATE TABLE drill (id int PRIMARY KEY, note text)");
        ok(setup.base(&pg.conninfo("postgres")), "base");
        pg.psql("INSERT INTO drill VALUES (1, 'test1')");
        let lsn1 = pg.psql("SELECT pg_current_wal_lsn()");
        // now() with the session's offset (timestamptz output always carries one).
        let t1 = pg.psql("SELECT now()");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let xid2 = pg.psql("INSERT INTO drill VALUES (2, 'test2') RETURNING txid_current()");
        support::restore_point(&pg, RESTORE_POINT);
        pg.psql("INSERT INTO drill VALUES (3, 'test3')");
        switch_and_archive(&pg);

        // Each target gives exactly the expected rows.
        let cases: [(&str, Vec<&str>, &str); 4] = [
            ("time", vec!["--target-time", &t1], "test1"),
            ("name", vec!["--target-name", RESTORE_POINT], "test1,test2"),
            ("lsn", vec!["--target-lsn", &lsn1], "test1"),
            ("xid", vec!["--target-xid", &xid2], "test1,test2"),
        ];
        for (what, args, expected) in cases {
            let dir = setup.path(&format!("restore-{what}"));
            let mut args = args.clone();
            args.extend(["--target-action", "promote"]);
            if what == "xid" {
                // A non-empty target is refused untouched; --force empties it (only it).
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("junk"), b"old").unwrap();
                std::fs::write(setup.path("beside-target"), b"keep").unwrap();
                server_user().chown(&dir);
                let refused = setup.restore(&dir, &args);
                assert_eq!(refused.code, 2, "{ctx}: non-empty target: {refused:?}");
                assert!(refused.stderr.contains("not empty"), "{ctx}: {refused:?}");
                assert!(
                    dir.join("junk").exists(),
                    "{ctx}: the refused restore touched it"
                );
                args.push("--force");
            }
            let run = ok(
                setup.restore(&dir, &args),
                &format!("{ctx}: restore --target-{what}"),
            );
            assert!(
                run.stdout.contains("start it with: pg_ctl -D")
                    && run.stdout.contains("recoverable window for timeline 1"),
                "{ctx}: {run:?}"
            );
            assert!(!dir.join("junk").exists(), "{ctx}: --force left old files");
            let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
            assert!(
                auto.contains("wal-fetch") && auto.contains("--passphrase-file"),
                "{ctx}: {auto}"
            );
            assert!(
                !auto.contains(PASSPHRASE),
                "{ctx}: the passphrase was written"
            );
            assert!(dir.join("recovery.signal").exists(), "{ctx}");
            let wal_files = std::fs::read_dir(dir.join("pg_wal"))
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_file())
                .count();
            assert_eq!(wal_files, 0, "{ctx}: pg_wal is not empty");
            let (restored, rows) = recovered_rows(major, &dir);
            assert_eq!(
                rows, expected,
                "{ctx}: rows after recovery to the {what} target"
            );
            drop(restored);
        }
        assert_eq!(
            std::fs::read(setup.path("beside-target")).unwrap(),
            b"keep",
            "{ctx}: --force touched a file outside the target"
        );

        // Targets outside the window: refused, the window stated, nothing written.
        let outside = setup.path("outside");
        for (args, expect) in [
            (
                vec!["--target-lsn", "FF/0"],
                "recoverable window for timeline 1",
            ),
            (
                vec!["--target-time", "2000-01-01T00:00:00Z"],
                "before the end of every backup",
            ),
            (vec!["--target-time", "2030-01-01 00:00:00"], "offset"),
        ] {
            let run = setup.restore(&outside, &args);
            assert_eq!(run.code, 2, "{ctx}: {args:?}: {run:?}");
            assert!(run.stderr.contains(expect), "{ctx}: {args:?}: {run:?}");
            assert!(
                !outside.exists(),
                "{ctx}: a refused restore created its target"
            );
        }
        let run = setup.restore(&outside, &["--target-lsn", "FF/0"]);
        assert!(
            run.stderr.contains("is outside it") && run.stderr.contains("(end of backup"),
            "{ctx}: {run:?}"
        );
        // An encrypted repository without a passphrase file: restore_command could not work.
        let run = support::pgstream(
            &[
                "restore",
                "--repo",
                s(&setup.repo),
                "--to",
                s(&outside),
                "--target-latest",
            ],
            Some(PASSPHRASE),
        );
        assert_eq!(run.code, 2, "{ctx}: {run:?}");
        assert!(run.stderr.contains("--passphrase-file"), "{ctx}: {run:?}");
        assert!(!outside.exists(), "{ctx}");

        // The latest state; the promoted copy archives into the same repository, so its new
        // timeline (00000002.history and its segments) lands there.
        let latest = setup.path("restore-latest");
        ok(
            setup.restore(&latest, &["--target-latest"]),
            "restore latest",
        );
        let promoted = setup.start_promoted_archiving(major, &latest);
        assert_eq!(drill_rows(&promoted), "test1,test2,test3", "{ctx}: latest");
        promoted.psql("INSERT INTO drill VALUES (4, 'test4 on timeline 2')");
        switch_and_archive(&promoted);
        let history = std::fs::read(latest.join("pg_wal/00000002.history")).unwrap();
        drop(promoted);
        assert!(!history.is_empty(), "{ctx}");

        // Across the timeline switch: latest follows timeline 2.
        let tl2 = setup.path("restore-timeline-2");
        let run = ok(
            setup.restore(&tl2, &["--target-latest"]),
            "restore timeline 2",
        );
        assert!(
            run.stdout
                .contains("recoverable window for timeline 2 (timeline path 1 -> 2)"),
            "{ctx}: {run:?}"
        );
        let (restored, rows) = recovered_rows(major, &tl2);
        assert_eq!(rows, "test1,test2,test3,test4 on timeline 2", "{ctx}");
        drop(restored);
        // --target-timeline current stays on timeline 1.
        let tl1 = setup.path("restore-timeline-1");
        ok(
            setup.restore(&tl1, &["--target-timeline", "current"]),
            "restore timeline current",
        );
        let (restored, rows) = recovered_rows(major, &tl1);
        assert_eq!(rows, "test1,test2,test3", "{ctx}: timeline current");
        drop(restored);

        // --copy-wal: the directory recovers with the repository gone.
        drop(pg);
        let copied = setup.path("restore-copy-wal");
        let run = ok(
            setup.restore(&copied, &["--copy-wal"]),
            "restore --copy-wal",
        );
        assert!(run.stdout.contains("copied"), "{ctx}: {run:?}");
        let auto = std::fs::read_to_string(copied.join("postgresql.auto.conf")).unwrap();
        assert!(
            auto.contains("restore_command = 'false'") && !auto.contains("wal-fetch"),
            "{ctx}: {auto}"
        );
        let moved = setup.path("repo-moved-away");
        std::fs::rename(&setup.repo, &moved).unwrap();
        let (restored, rows) = recovered_rows(major, &copied);
        assert_eq!(
            rows, "test1,test2,test3,test4 on timeline 2",
            "{ctx}: --copy-wal"
        );
        drop(restored);
        std::fs::rename(&moved, &setup.repo).unwrap();
        eprintln!("{ctx}: drill took {:.1} s", started.elapsed().as_secs_f64());
    }
}
