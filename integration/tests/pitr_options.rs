//! `pgstream restore` options that pitr.rs does not cover, end to end against real servers:
//! `--target-inclusive off` (the xid's own transaction left out), `--target-action pause` (the
//! server stays in recovery, paused at the target, until resumed), `--target-action shutdown`
//! (the server stops at the target, keeps recovery.signal, and stops there again on every start
//! until the action is changed), `--target-immediate` (nothing after the backup's end) and a
//! numeric `--target-timeline` (that timeline followed, not the latest). One cluster and one
//! backup per major; it runs on the oldest and the newest of the majors under test, because
//! the pause-state functions differ between them (pg_get_wal_replay_pause_state is 14+).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration::{cluster, free_port, pg_bin_dir, server_user, Cluster};
use support::archiving::switch_and_archive;
use support::restored::start_promoted;
use support::setup::Setup;
use support::{ok, oldest_and_newest_majors, wait_for_server as wait_for};

const PASSPHRASE: &str = "pitr options passphrase";

fn rows(pg: &Cluster) -> String {
    pg.psql("SELECT coalesce(string_agg(note, ',' ORDER BY id), '') FROM opts")
}

/// Whether replay is paused: pg_get_wal_replay_pause_state() from 14 on (pg_is_wal_replay_paused
/// only says a pause was requested there); 13 has only pg_is_wal_replay_paused().
fn replay_paused(pg: &Cluster) -> bool {
    let sql = if pg.major() >= 14 {
        "SELECT pg_get_wal_replay_pause_state() = 'paused'"
    } else {
        "SELECT pg_is_wal_replay_paused()"
    };
    pg.try_psql(sql).as_deref() == Ok("t")
}

/// Runs `postgres` in the foreground on a restored directory (no pg_ctl: the server is
/// expected to stop by itself) and returns its exit status and log. Panics after 120 s.
fn run_until_it_stops(major: u32, dir: &Path, socket_dir: &Path) -> (Option<i32>, String) {
    let log_path = socket_dir.join(format!("server-{}.log", free_port()));
    let log = std::fs::File::create(&log_path).unwrap();
    server_user().chown(&log_path);
    let mut cmd = Command::new(pg_bin_dir(major).join("postgres"));
    cmd.arg("-D")
        .arg(dir)
        .args(["-c", &format!("port={}", free_port())])
        .args(["-c", "listen_addresses="])
        .args([
            "-c",
            &format!("unix_socket_directories={}", socket_dir.display()),
        ])
        .args(["-c", "archive_mode=off"])
        .current_dir(socket_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    server_user().apply(&mut cmd);
    let mut child = cmd.spawn().expect("starting postgres");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "PostgreSQL {major} on {} did not stop by itself within 120 s:\n{}",
                dir.display(),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (
        status.code(),
        std::fs::read_to_string(&log_path).unwrap_or_default(),
    )
}

#[test]
fn restore_options_inclusive_pause_shutdown_immediate_numeric_timeline() {
    for major in oldest_and_newest_majors() {
        let started = Instant::now();
        let ctx = format!("PostgreSQL {major}");
        let setup = Setup::new(PASSPHRASE);
        let pg = setup.archiving_cluster(major).start();
        pg.psql("CREATE TABLE opts (id int PRIMARY KEY, note text)");
        ok(setup.base(&pg.conninfo("postgres")), "base");
        pg.psql("INSERT INTO opts VALUES (1, 'after backup')");
        let xid = pg.psql("INSERT INTO opts VALUES (2, 'xid target') RETURNING txid_current()");
        pg.psql("INSERT INTO opts VALUES (3, 'after target')");
        switch_and_archive(&pg);
        drop(pg);

        // --target-inclusive off: recovery stops just before the target transaction commits.
        let dir = setup.path("inclusive-off");
        let run = ok(
            setup.restore(
                &dir,
                &[
                    "--target-xid",
                    &xid,
                    "--target-inclusive",
                    "off",
                    "--target-action",
                    "promote",
                ],
            ),
            "restore --target-inclusive off",
        );
        let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
        assert!(
            auto.contains("recovery_target_inclusive = off")
                && auto.contains(&format!("recovery_target_xid = '{xid}'")),
            "{ctx}: {auto}\n{run:?}"
        );
        let restored = start_promoted(major, &dir);
        assert_eq!(rows(&restored), "after backup", "{ctx}: inclusive off");
        drop(restored);

        // --target-action pause: in recovery, paused at the target (inclusive: the xid's row
        // is there) and readable; resuming ends recovery and promotes.
        let dir = setup.path("pause");
        ok(
            setup.restore(&dir, &["--target-xid", &xid, "--target-action", "pause"]),
            "restore --target-action pause",
        );
        let restored = cluster(major).restored_data_dir(&dir).start();
        wait_for(&restored, "replay is paused at the target", || {
            replay_paused(&restored)
        });
        assert_eq!(restored.psql("SELECT pg_is_in_recovery()"), "t", "{ctx}");
        assert_eq!(rows(&restored), "after backup,xid target", "{ctx}: paused");
        assert!(dir.join("recovery.signal").exists(), "{ctx}: paused");
        restored.psql("SELECT pg_wal_replay_resume()");
        wait_for(&restored, "recovery ends after resume", || {
            restored.try_psql("SELECT pg_is_in_recovery()").as_deref() == Ok("f")
        });
        restored.psql("INSERT INTO opts VALUES (9, 'written after resume')");
        assert_eq!(
            rows(&restored),
            "after backup,xid target,written after resume",
            "{ctx}: resumed"
        );
        assert!(!dir.join("recovery.signal").exists(), "{ctx}: resumed");
        drop(restored);

        // --target-action shutdown: the server stops by itself at the target (exit 0) and
        // keeps recovery.signal, so the next start recovers to the target and stops again.
        let dir = setup.path("shutdown");
        ok(
            setup.restore(&dir, &["--target-xid", &xid, "--target-action", "shutdown"]),
            "restore --target-action shutdown",
        );
        let sockets = setup.dir("shutdown-sockets");
        for start in ["first", "second"] {
            let (code, log) = run_until_it_stops(major, &dir, &sockets);
            assert_eq!(code, Some(0), "{ctx}: {start} start: {log}");
            assert!(
                log.contains("shutdown at recovery target"),
                "{ctx}: {start} start: {log}"
            );
            if start == "second" {
                assert!(
                    log.contains("shut down in recovery"),
                    "{ctx}: the second start did not begin from a shutdown in recovery: {log}"
                );
            }
            assert!(
                dir.join("recovery.signal").exists(),
                "{ctx}: {start} start removed recovery.signal"
            );
            assert!(
                !dir.join("postmaster.pid").exists(),
                "{ctx}: {start} start left postmaster.pid"
            );
        }
        // Changing the action (a later line wins) lets it finish: the target's rows.
        let auto_path = dir.join("postgresql.auto.conf");
        let mut auto = std::fs::read_to_string(&auto_path).unwrap();
        auto.push_str("recovery_target_action = 'promote'\n");
        std::fs::write(&auto_path, auto).unwrap();
        let restored = start_promoted(major, &dir);
        assert_eq!(
            rows(&restored),
            "after backup,xid target",
            "{ctx}: shutdown"
        );
        drop(restored);

        // --target-immediate: consistent at the backup's end, so none of the rows written
        // after it. Promoted with archiving on, it starts timeline 2 in the same repository.
        let dir = setup.path("immediate");
        ok(
            setup.restore(&dir, &["--target-immediate", "--target-action", "promote"]),
            "restore --target-immediate",
        );
        let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
        assert!(
            auto.contains("recovery_target = 'immediate'"),
            "{ctx}: {auto}"
        );
        let tl2 = setup.start_promoted_archiving(major, &dir);
        assert_eq!(rows(&tl2), "", "{ctx}: immediate");
        tl2.psql("INSERT INTO opts VALUES (4, 'on timeline 2')");
        switch_and_archive(&tl2);
        drop(tl2);

        // The latest timeline (2), promoted again: timeline 3.
        let dir = setup.path("latest");
        ok(
            setup.restore(&dir, &["--target-latest"]),
            "restore --target-latest",
        );
        let tl3 = setup.start_promoted_archiving(major, &dir);
        assert_eq!(rows(&tl3), "on timeline 2", "{ctx}: latest");
        tl3.psql("INSERT INTO opts VALUES (5, 'on timeline 3')");
        switch_and_archive(&tl3);
        assert_eq!(
            tl3.psql("CHECKPOINT; SELECT timeline_id FROM pg_control_checkpoint()"),
            "3",
            "{ctx}"
        );
        drop(tl3);

        // --target-timeline 2 follows timeline 2 although 3 is the latest; the promoted server
        // then takes timeline 4, because 00000003.history is in the archive.
        let dir = setup.path("timeline-2");
        let run = ok(
            setup.restore(&dir, &["--target-timeline", "2"]),
            "restore --target-timeline 2",
        );
        assert!(
            run.stdout
                .contains("recoverable window for timeline 2 (timeline path 1 -> 2)"),
            "{ctx}: {run:?}"
        );
        let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
        assert!(
            auto.contains("recovery_target_timeline = '2'"),
            "{ctx}: {auto}"
        );
        let restored = start_promoted(major, &dir);
        assert_eq!(rows(&restored), "on timeline 2", "{ctx}: timeline 2");
        assert_eq!(
            restored.psql("CHECKPOINT; SELECT timeline_id FROM pg_control_checkpoint()"),
            "4",
            "{ctx}: timeline after promotion"
        );
        drop(restored);
        eprintln!("{ctx}: took {:.1} s", started.elapsed().as_secs_f64());
    }
}
