//! `pgstream check` (server setup, with the fix for each problem) and `pgstream status`
//! (repository and server health with monitoring exit codes), against real servers.

mod support;

use integration::{cluster, scratch_dir};
use support::{newest_major as newest, pgstream, Run};

const PASSPHRASE: &str = "status check passphrase";

fn check(conninfo: &str, extra: &[&str]) -> Run {
    let mut args = vec!["check", "--source", conninfo];
    args.extend_from_slice(extra);
    pgstream(&args, None)
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"))
}

fn item<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report:#}"))
}

#[test]
fn check_passes_on_a_well_configured_cluster_and_names_the_alter_role_fix() {
    let pg = cluster(newest()).start();
    pg.psql(
        "CREATE ROLE plain LOGIN;
         SELECT pg_create_physical_replication_slot('pgstream', true);",
    );

    let run = check(&pg.conninfo("postgres"), &["--slot", "pgstream"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("all "), "{run:?}");
    assert!(!run.stdout.contains("PROBLEM"), "{run:?}");
    assert!(run.stdout.contains("replication slot"), "{run:?}");

    let run = check(&pg.conninfo("plain"), &["--slot", "missing"]);
    assert_eq!(run.code, 10, "{run:?}");
    assert!(
        run.stdout.contains("ALTER ROLE plain WITH REPLICATION;"),
        "{run:?}"
    );
    // The refused walsender is a finding (42501), not a failed command.
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("PROBLEM") && l.contains("replication connection")),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("pg_create_physical_replication_slot('missing', true)"),
        "{run:?}"
    );
}

#[test]
fn check_names_the_pg_hba_line_when_replication_is_not_allowed() {
    let pg = cluster(newest())
        .replace_hba(["local all all trust", "host all all 127.0.0.1/32 trust"])
        .start();
    let run = check(&pg.conninfo("postgres"), &[]);
    assert_eq!(run.code, 10, "{run:?}");
    assert!(
        run.stdout
            .contains("host replication postgres 127.0.0.1/32 scram-sha-256"),
        "{run:?}"
    );
    assert!(run.stdout.contains("SELECT pg_reload_conf();"), "{run:?}");
    // Only the pg_hba entry is missing.
    assert_eq!(run.stdout.matches("PROBLEM").count(), 1, "{run:?}");
}

#[test]
fn check_reports_wal_level_minimal_and_archiving_with_fixes() {
    let pg = cluster(newest())
        .setting("wal_level", "minimal")
        .setting("max_wal_senders", "0")
        .start();
    let run = check(&pg.conninfo("postgres"), &["--archive-push"]);
    assert_eq!(run.code, 10, "{run:?}");
    for fix in [
        "ALTER SYSTEM SET wal_level = replica;",
        "ALTER SYSTEM SET max_wal_senders = 10;",
        "ALTER SYSTEM SET archive_mode = on;",
        "pgstream archive-push",
        "restart the server",
    ] {
        assert!(run.stdout.contains(fix), "missing {fix:?}: {run:?}");
    }
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("PROBLEM") && l.contains("replication connection")),
        "{run:?}"
    );
}

#[test]
fn check_cannot_connect_exits_3() {
    let port = integration::free_port();
    let run = check(
        &format!("host=127.0.0.1 port={port} user=postgres connect_timeout=5"),
        &[],
    );
    assert_eq!(run.code, 3, "{run:?}");
}

#[test]
fn status_uses_monitoring_exit_codes() {
    let pg = cluster(newest()).start();
    let dir = scratch_dir();
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    let init = pgstream(&["init", "--repo", repo], Some(PASSPHRASE));
    assert_eq!(init.code, 0, "{init:?}");

    // Empty: no backup is CRITICAL. No passphrase is given to status.
    let run = pgstream(&["status", "--repo", repo], None);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stdout.contains("CRITICAL"), "{run:?}");
    let run = pgstream(&["status", "--repo", repo, "--json"], None);
    assert_eq!(run.code, 2, "{run:?}");
    let report = json(&run);
    assert_eq!(report["status"], "CRITICAL");
    assert_eq!(item(&report, "backups")["status"], "CRITICAL");

    let base = pgstream(
        &["base", "--repo", repo, "--source", &pg.conninfo("postgres")],
        Some(PASSPHRASE),
    );
    assert_eq!(base.code, 0, "{base:?}");

    let run = pgstream(&["status", "--repo", repo, "--json"], None);
    assert_eq!(run.code, 0, "{run:?}");
    let report = json(&run);
    assert_eq!(report["status"], "OK", "{report:#}");
    assert_eq!(item(&report, "backups")["count"], 1);
    assert!(item(&report, "wal archive")["segments"].as_u64().unwrap() >= 1);

    std::thread::sleep(std::time::Duration::from_secs(2));
    let run = pgstream(&["status", "--repo", repo, "--warn-backup-age", "1s"], None);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.starts_with("pgstream status WARNING"), "{run:?}");

    // With the server: reachable, and the slot's lag is reported. Nothing streams from the
    // slot, so it is inactive: WARNING.
    pg.psql(
        "SELECT pg_create_physical_replication_slot('st', true);
         CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g;",
    );
    let run = pgstream(
        &[
            "status",
            "--repo",
            repo,
            "--source",
            &pg.conninfo("postgres"),
            "--slot",
            "st",
            "--json",
        ],
        None,
    );
    assert_eq!(run.code, 1, "{run:?}");
    let report = json(&run);
    assert_eq!(item(&report, "server")["status"], "OK", "{report:#}");
    let slot = item(&report, "slot");
    assert_eq!(slot["active"], false, "{report:#}");
    assert!(slot["lag_bytes"].as_i64().unwrap() > 0, "{report:#}");
    assert_eq!(slot["wal_status"], "reserved", "{report:#}");

    // A missing slot and an unreachable server are CRITICAL.
    let port = integration::free_port();
    let run = pgstream(
        &[
            "status",
            "--repo",
            repo,
            "--source",
            &format!("host=127.0.0.1 port={port} user=postgres connect_timeout=5"),
        ],
        None,
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stdout.contains("unreachable"), "{run:?}");
}
