//! `pgstream drill` end to end, and the local-server module it runs on (backup_core::localpg),
//! against real servers. Lean: one source cluster per major for the drills, on the oldest and the
//! newest of the majors under test; the localpg test on the newest only (it does not depend on
//! the version).
//!
//! The source: a table in a user tablespace, a base backup, row 1, the time T1, row 2 in the next
//! WAL segment, all archived. Drills to T1 must show row 1 only.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use backup_core::localpg::{self, InitdbOptions, LocalServer, PgBin, RunAs, StartOptions};
use integration::{server_user, Cluster, ServerUser};
use support::archiving::switch_and_archive;
use support::setup::Setup;
use support::{ok, oldest_and_newest_majors, os_user, s, Run};

const PASSPHRASE: &str = "drill passphrase";

#[test]
fn localpg_initdb_start_query_and_stop_leave_no_server_behind() {
    let major = support::newest_major();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let scratch = integration::scratch_dir();
    let bin = PgBin::find(major, Some(&integration::pg_bin_dir(major))).unwrap();
    assert_eq!(bin.major, major);
    let run_as = RunAs::resolve(os_user().as_deref()).unwrap();
    let data = scratch.path().join("data");
    localpg::initdb(
        &bin,
        &run_as,
        &data,
        &InitdbOptions {
            superuser: "drill_su".into(),
            settings: vec![("wal_level".into(), "replica".into())],
            ..InitdbOptions::default()
        },
    )
    .unwrap();
    let mut server = LocalServer::start(StartOptions::new(
        bin.clone(),
        run_as.clone(),
        data.clone(),
        scratch.path(),
    ))
    .unwrap();
    let pid = server.pid().unwrap();
    rt.block_on(async {
        let mut conn = server
            .wait_ready("drill_su", "postgres", Duration::from_secs(60), None)
            .await
            .unwrap();
        let rows = localpg::sql::query_rows(
            &mut conn,
            "SELECT current_user, current_setting('wal_level'), current_setting('data_checksums')",
        )
        .await
        .unwrap();
        assert_eq!(
            rows,
            vec![vec![
                Some("drill_su".to_string()),
                Some("replica".to_string()),
                Some("on".to_string())
            ]]
        );
        let err = localpg::sql::query_value(&mut conn, "SELECT * FROM no_such_table")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no_such_table"), "{err}");
        // A missing role is final: no waiting for the timeout.
        let asked = std::time::Instant::now();
        let err = server
            .wait_ready("no_such_role", "postgres", Duration::from_secs(60), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no_such_role"), "{err}");
        assert!(asked.elapsed() < Duration::from_secs(20), "{err}");
    });
    // TCP on 127.0.0.1 is refused by initdb's scram default without a password: the listener
    // is there all the same.
    std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    drop(server);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "postgres {pid} is still running after drop"
    );
    // A second start on the same directory, and a server that exits at once (a bad setting),
    // is reported with its log.
    let mut bad = LocalServer::start(
        StartOptions::new(bin, run_as, data, scratch.path()).setting("shared_buffers", "lots"),
    )
    .unwrap();
    let err = rt
        .block_on(bad.wait_ready("drill_su", "postgres", Duration::from_secs(30), None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("exited"), "{err}");
}

/// A source cluster archiving into a repository, with a backup and the drill rows.
struct Source {
    setup: Setup,
    pg: Cluster,
    /// The user tablespace's original location.
    tablespace: PathBuf,
    /// Between row 1 and row 2.
    t1: String,
    /// The archived segment holding row 2.
    row2_segment: String,
}

fn source(major: u32) -> Source {
    let setup = Setup::new(PASSPHRASE);
    let pg = setup.archiving_cluster(major).start();
    let tablespace = setup.dir("ts1");
    pg.psql(&format!(
        "CREATE TABLESPACE ts1 LOCATION {}",
        integration::quote_literal(s(&tablespace))
    ));
    pg.psql("CREATE TABLE drill (id int PRIMARY KEY, note text) TABLESPACE ts1");
    pg.psql("CREATE INDEX drill_note ON drill (note) TABLESPACE ts1");
    ok(setup.base(&pg.conninfo("postgres")), "base");
    pg.psql("INSERT INTO drill VALUES (1, 'before the target')");
    switch_and_archive(&pg);
    let t1 = pg.psql("SELECT now()");
    std::thread::sleep(Duration::from_millis(20));
    pg.psql("INSERT INTO drill VALUES (2, 'after the target')");
    let row2_segment = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    switch_and_archive(&pg);
    Source {
        setup,
        pg,
        tablespace,
        t1,
        row2_segment,
    }
}

/// Every path under `dir`, relative to it.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.insert(p.strip_prefix(root).unwrap().to_path_buf());
            if p.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// `pgstream drill` as root (the servers run as `--os-user`), with the setup's copy of the
/// binary, which the server user can run for restore_command.
fn drill_command(src: &Source, scratch_parent: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(&src.setup.bin);
    cmd.args([
        "drill",
        "--repo",
        s(&src.setup.repo),
        "--passphrase-file",
        s(&src.setup.pass),
        "--scratch",
        s(scratch_parent),
        "--timeout",
        "2m",
    ])
    .args(args);
    if let Some(user) = os_user() {
        cmd.args(["--os-user", &user]);
    }
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    cmd
}

fn drill(src: &Source, scratch_parent: &Path, args: &[&str]) -> Run {
    let out = drill_command(src, scratch_parent, args)
        .output()
        .expect("running pgstream drill");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The seconds in the markdown timings row `name`.
fn timing(md: &str, name: &str) -> f64 {
    let line = md
        .lines()
        .find(|l| l.starts_with(&format!("| {name} |")))
        .unwrap_or_else(|| panic!("no timing {name:?} in:\n{md}"));
    line.trim_end_matches(" |")
        .rsplit("| ")
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("timing {name:?} is not a number: {line}"))
}

/// No postgres runs on a data directory under `parent` (this test's drills).
fn assert_no_drill_server_left(ctx: &str, parent: &Path) {
    let ps = Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    let left: Vec<&str> = ps
        .lines()
        .filter(|l| l.contains("postgres") && l.contains(s(parent)))
        .collect();
    assert!(
        left.is_empty(),
        "{ctx}: a drill server is still running: {left:?}"
    );
}

#[test]
fn drill_passes_at_a_time_target_with_timings_row_counts_amcheck_tablespace_untouched_and_with_copy_wal_keep(
) {
    // The oldest and the newest major: the recovery functions differ between 13 and 14+, and a
    // drill per major would add a minute each.
    for major in oldest_and_newest_majors() {
        let ctx = format!("PostgreSQL {major}");
        let started = std::time::Instant::now();
        let src = source(major);
        let before = tree(&src.tablespace);
        let parent = src.setup.dir("drills");
        let report = src.setup.path("report.md");
        let sql = src.setup.path("check.sql");
        std::fs::write(&sql, "SELECT count(*) FROM drill WHERE id = 1").unwrap();
        let run = drill(
            &src,
            &parent,
            &[
                "--target-time",
                &src.t1,
                "--check-sql",
                s(&sql),
                "--report",
                s(&report),
            ],
        );
        assert_eq!(run.code, 0, "{ctx}: {run:?}");
        let md = &run.stdout;
        eprintln!("{ctx}: the drill's report:\n{md}");
        assert!(
            md.starts_with("# pgstream restore drill: PASS"),
            "{ctx}: {md}"
        );
        assert_eq!(std::fs::read_to_string(&report).unwrap(), *md, "{ctx}");
        // The target asked and reached.
        assert!(
            md.contains(&format!("- target asked: time {}", src.t1))
                || md.contains("- target asked: time "),
            "{ctx}: {md}"
        );
        let reached = md
            .lines()
            .find(|l| l.starts_with("- target reached: LSN "))
            .unwrap_or_else(|| panic!("{ctx}: {md}"));
        assert!(
            !reached.contains("unknown"),
            "{ctx}: the reached LSN, time and timeline are all known: {reached}"
        );
        assert!(
            reached.ends_with("timeline after promotion 2"),
            "{ctx}: {reached}"
        );
        assert!(
            md.contains("- WAL from: restore_command = pgstream wal-fetch"),
            "{ctx}"
        );
        // Timings: every phase ran and took time; total recovery covers restore and replay.
        for name in [
            "restore (unpack)",
            "server start until consistent",
            "server start + WAL replay to the target",
            "promotion",
            "**total recovery** (drill start to promoted and connected)",
            "checks",
        ] {
            assert!(timing(md, name) > 0.0, "{ctx}: {name} is zero:\n{md}");
        }
        let total = timing(
            md,
            "**total recovery** (drill start to promoted and connected)",
        );
        assert!(
            total
                >= timing(md, "restore (unpack)")
                    + timing(md, "server start + WAL replay to the target"),
            "{ctx}: {md}"
        );
        // Row 2 came after the target: one row, counted in the remapped tablespace.
        assert!(
            md.contains("| postgres | public.drill | 1 |"),
            "{ctx}: {md}"
        );
        for check in ["connect", "row counts", "check-sql", "amcheck", "shutdown"] {
            assert!(
                md.lines()
                    .any(|l| l.starts_with(&format!("| {check} |")) && l.contains("| PASS |")),
                "{ctx}: check {check} did not pass:\n{md}"
            );
        }
        assert!(
            md.contains("bt_index_check: "),
            "{ctx}: amcheck did not run:\n{md}"
        );
        if major >= 14 {
            assert!(md.contains("verify_heapam: "), "{ctx}: {md}");
        }
        // Nothing outside the scratch directory was touched, and it is gone.
        assert_eq!(
            tree(&src.tablespace),
            before,
            "{ctx}: the original tablespace changed"
        );
        assert_eq!(
            std::fs::read_dir(&parent).unwrap().count(),
            0,
            "{ctx}: the scratch directory was left behind"
        );
        assert_eq!(src.pg.psql("SELECT count(*) FROM drill"), "2", "{ctx}");
        assert_no_drill_server_left(&ctx, &parent);

        // --copy-wal, no target (all the WAL), --keep: both rows; the copy is kept for
        // inspection, stopped, without the passphrase file.
        let run = drill(
            &src,
            &parent,
            &["--copy-wal", "--keep", "--no-amcheck", "--json"],
        );
        assert_eq!(run.code, 0, "{ctx}: {run:?}");
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(json["result"], "PASS", "{ctx}: {json:#}");
        assert!(
            json["wal_source"].as_str().unwrap().contains("--copy-wal"),
            "{ctx}: {json:#}"
        );
        assert_eq!(json["target"], "the end of the archived WAL", "{ctx}");
        let drill_rows: Vec<_> = json["row_counts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["table"] == "public.drill")
            .collect();
        assert_eq!(drill_rows[0]["rows"], 2, "{ctx}: {json:#}");
        assert!(
            json["checks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["name"] != "amcheck"),
            "{ctx}: --no-amcheck ran amcheck"
        );
        assert_eq!(json["scratch_kept"], true, "{ctx}");
        let kept = PathBuf::from(json["scratch_dir"].as_str().unwrap());
        assert!(kept.starts_with(&parent), "{ctx}: {}", kept.display());
        assert!(kept.join("data/PG_VERSION").exists(), "{ctx}");
        assert!(kept.join("server.log").exists(), "{ctx}");
        assert!(
            !kept.join("wal-fetch.passphrase").exists(),
            "{ctx}: --keep kept the passphrase file"
        );
        assert!(
            !kept.join("data/postmaster.pid").exists(),
            "{ctx}: not stopped"
        );
        std::fs::remove_dir_all(&kept).unwrap();
        assert_no_drill_server_left(&ctx, &parent);
        eprintln!("{ctx}: drill test took {:?}", started.elapsed());
    }
}

#[test]
fn drill_fails_with_its_report_on_a_failing_check_sql_and_on_missing_wal() {
    // The oldest and the newest major: the recovery functions differ between 13 and 14+, and a
    // drill per major would add a minute each.
    for major in oldest_and_newest_majors() {
        let ctx = format!("PostgreSQL {major}");
        let src = source(major);
        let parent = src.setup.dir("drills");
        // A failing --check-sql: exit 11, the JSON report names the check and the error; the
        // other checks still ran. No target: recovery through all the WAL.
        let sql = src.setup.path("bad.sql");
        std::fs::write(&sql, "SELECT * FROM no_such_table").unwrap();
        let report = src.setup.path("report.json");
        let run = drill(
            &src,
            &parent,
            &["--check-sql", s(&sql), "--json", "--report", s(&report)],
        );
        assert_eq!(run.code, 11, "{ctx}: {run:?}");
        assert!(run.stderr.contains("drill FAILED"), "{ctx}: {run:?}");
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert_eq!(json, written, "{ctx}");
        assert_eq!(json["result"], "FAIL", "{ctx}: {json:#}");
        let checks = json["checks"].as_array().unwrap();
        let failed: Vec<_> = checks.iter().filter(|c| c["status"] == "fail").collect();
        assert_eq!(failed.len(), 1, "{ctx}: {json:#}");
        assert_eq!(failed[0]["name"], "check-sql", "{ctx}");
        assert!(
            failed[0]["detail"]
                .as_str()
                .unwrap()
                .contains("no_such_table"),
            "{ctx}: {json:#}"
        );
        let rows: Vec<_> = json["row_counts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["table"] == "public.drill")
            .collect();
        assert_eq!(rows.len(), 1, "{ctx}: {json:#}");
        assert_eq!(rows[0]["rows"], 2, "{ctx}: the latest target has both rows");
        assert!(json["timings"]["total_recovery_seconds"].as_f64().unwrap() > 0.0);
        assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0, "{ctx}");

        // A target outside the recoverable window is refused as for restore (exit 2), with no
        // report and nothing left behind.
        let run = drill(&src, &parent, &["--target-lsn", "FF/0"]);
        assert_eq!(run.code, 2, "{ctx}: {run:?}");
        assert!(
            run.stderr.contains("is outside it") && run.stdout.is_empty(),
            "{ctx}: {run:?}"
        );
        assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0, "{ctx}");

        // A repository the server's user cannot read (restore_command would find no WAL): refused
        // up front with what to do.
        if let ServerUser::Switch { uid, gid, .. } = server_user() {
            let mode = std::fs::metadata(&src.setup.repo)
                .unwrap()
                .permissions()
                .mode();
            std::os::unix::fs::chown(&src.setup.repo, Some(0), Some(0)).unwrap();
            std::fs::set_permissions(&src.setup.repo, std::fs::Permissions::from_mode(0o700))
                .unwrap();
            let run = drill(&src, &parent, &["--target-time", &src.t1]);
            std::os::unix::fs::chown(&src.setup.repo, Some(*uid), Some(*gid)).unwrap();
            std::fs::set_permissions(&src.setup.repo, std::fs::Permissions::from_mode(mode))
                .unwrap();
            assert_eq!(run.code, 2, "{ctx}: {run:?}");
            assert!(
                run.stderr.contains("cannot run") && run.stderr.contains("--copy-wal"),
                "{ctx}: {run:?}"
            );
            assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0, "{ctx}");
        }

        // WAL the target needs cannot be fetched (unreadable for the server's user, so the
        // window check, which only lists names, passes): the server gives up and exits, and the
        // report quotes its log.
        // REPO/wal/<timeline+log id>/<segment>.<suffixes>
        let wal_dir = src.setup.repo.join("wal").join(&src.row2_segment[..16]);
        let segment = std::fs::read_dir(&wal_dir)
            .unwrap_or_else(|e| panic!("{ctx}: {}: {e}", wal_dir.display()))
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&src.row2_segment)
            })
            .unwrap_or_else(|| panic!("{ctx}: {} is not archived", src.row2_segment));
        let mode = std::fs::metadata(&segment).unwrap().permissions().mode();
        std::fs::set_permissions(&segment, std::fs::Permissions::from_mode(0o000)).unwrap();
        let run = drill(&src, &parent, &["--target-time", &src.t1]);
        std::fs::set_permissions(&segment, std::fs::Permissions::from_mode(mode)).unwrap();
        assert_eq!(run.code, 11, "{ctx}: {run:?}");
        let md = &run.stdout;
        assert!(
            md.starts_with("# pgstream restore drill: FAIL"),
            "{ctx}: {md}"
        );
        assert!(
            md.contains("## Failure") && md.contains("the server exited"),
            "{ctx}: {md}"
        );
        assert!(
            md.contains("## End of the server log")
                && md.contains("recovery ended before configured recovery target was reached"),
            "{ctx}: {md}"
        );
        assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0, "{ctx}");
        assert_no_drill_server_left(&ctx, &parent);
    }
}

#[test]
fn drill_stops_its_server_and_cleans_up_on_sigterm() {
    let major = support::newest_major();
    let ctx = format!("PostgreSQL {major}");
    let src = source(major);
    let parent = src.setup.dir("drills");
    let sql = src.setup.path("slow.sql");
    std::fs::write(&sql, "SELECT pg_sleep(120)").unwrap();
    let child = drill_command(&src, &parent, &["--check-sql", s(&sql), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Signal it while the SQL file runs on the promoted copy.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
        if String::from_utf8_lossy(&ps.stdout)
            .lines()
            .any(|l| l.contains("pgstream-drill:") && l.contains("SELECT"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{ctx}: the drill never ran its SQL file"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{ctx}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["interrupted"], true, "{ctx}: {json:#}");
    assert_eq!(json["result"], "FAIL", "{ctx}: {json:#}");
    assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0, "{ctx}");
    assert_no_drill_server_left(&ctx, &parent);
}
