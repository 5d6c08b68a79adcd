//! Writers that share one repository cannot trample each other (issue 10): two `base` runs at
//! once, `base` killed -9 before and after its record, a second `receive-wal` refused while the
//! first keeps every acknowledged commit, `rekey` racing the first backup's cluster binding, and
//! `expire` while a backup is being published. What is tested is pgstream's own locking, which
//! does not depend on the server version: the oldest and newest majors only.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration::{client_tool, cluster, scratch_dir, Cluster};
use serde_json::Value;
use support::receiver::wait_for;
use support::wal::Keyed;
use support::{ok, oldest_and_newest_majors, pgstream_command, s, Run};

const KEY: Keyed = Keyed("concurrency test passphrase");

fn base(repo: &Path, pg: &Cluster, failpoints: Option<&str>, extra: &[&str]) -> Child {
    let conninfo = pg.conninfo("postgres");
    let mut args = vec![
        "base",
        "--repo",
        s(repo),
        "--source",
        &conninfo,
        "--no-progress",
        "--json",
    ];
    args.extend_from_slice(extra);
    let mut cmd = pgstream_command(&args, Some(KEY.0));
    if let Some(f) = failpoints {
        cmd.env("PGSTREAM_FAILPOINTS", f);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning pgstream base")
}

fn collect(child: Child) -> Run {
    let out = child.wait_with_output().expect("waiting for pgstream");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn kill9(mut child: Child) -> Run {
    child.kill().unwrap();
    collect(child)
}

/// `pgstream list --json`'s backup ids.
fn listed_ids(repo: &Path, ctx: &str) -> Vec<String> {
    let run = ok(KEY.pgstream(&["list", "--repo", s(repo), "--json"]), ctx);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    v["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

fn verify_ok(repo: &Path, ctx: &str) {
    ok(
        KEY.pgstream(&["verify", "--repo", s(repo)]),
        &format!("{ctx}: verify"),
    );
}

/// `verify` finds every backup and every stored file sound. The WAL between two backups may
/// have a gap here (no WAL archiving runs in these tests, and a killed run takes the WAL it
/// streamed with it): gaps are allowed, damage is not.
fn verify_sound(repo: &Path, ctx: &str) {
    let run = KEY.pgstream(&["verify", "--repo", s(repo)]);
    assert!(run.code == 0 || run.code == 6, "{ctx}: verify: {run:?}");
    let backups = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("backup "))
        .count();
    assert!(backups > 0, "{ctx}: {run:?}");
    assert!(
        run.stdout
            .lines()
            .filter(|l| l.starts_with("backup "))
            .all(|l| l.ends_with(": OK")),
        "{ctx}: {run:?}"
    );
    assert!(
        run.stdout.contains("WAL archive: OK") || run.stdout.contains(" 0 bad file(s)"),
        "{ctx}: {run:?}"
    );
}

/// Directories under `backups/`, and whether each has its record.
fn backup_dirs(repo: &Path) -> Vec<(String, bool)> {
    let Ok(dir) = std::fs::read_dir(repo.join("backups")) else {
        return Vec::new();
    };
    let mut out: Vec<(String, bool)> = dir
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.path().join("backup.json").exists(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits until the unfinished backup (no record yet) has stored its manifest: its archives
/// are all stored, and what remains is its WAL and its record.
fn wait_manifest_stored(repo: &Path, ctx: &str) -> String {
    let mut found = None;
    support::wait_until(&format!("{ctx}: the backup's manifest is stored"), || {
        for (id, complete) in backup_dirs(repo) {
            let manifest = std::fs::read_dir(repo.join("backups").join(&id))
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with("backup_manifest") && !n.contains(".tmp.")
                });
            if !complete && manifest {
                found = Some(id);
                return true;
            }
        }
        false
    });
    found.unwrap()
}

#[test]
fn two_bases_at_once_on_one_repository_both_complete() {
    for major in oldest_and_newest_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major).start();
        let scratch = scratch_dir();
        let repo = scratch.path().join("repo");
        KEY.init_repo(&repo);
        // Started together, in the same second as a rule: each owns its own id.
        let a = base(&repo, &pg, None, &[]);
        let b = base(&repo, &pg, None, &[]);
        let (a, b) = (collect(a), collect(b));
        assert_eq!(a.code, 0, "{ctx}: first: {a:?}");
        assert_eq!(b.code, 0, "{ctx}: second: {b:?}");
        let id = |r: &Run| {
            let v: Value = serde_json::from_str(&r.stdout).unwrap();
            v["id"].as_str().unwrap().to_string()
        };
        let (ia, ib) = (id(&a), id(&b));
        assert_ne!(ia, ib, "{ctx}");
        let mut both = vec![ia, ib];
        both.sort();
        assert_eq!(listed_ids(&repo, &ctx), both, "{ctx}");
        assert_eq!(
            backup_dirs(&repo),
            both.iter().map(|i| (i.clone(), true)).collect::<Vec<_>>(),
            "{ctx}: no directory of the other run was removed"
        );
        verify_ok(&repo, &ctx);
    }
}

#[test]
fn a_base_killed_after_its_record_is_complete_and_one_killed_before_is_removed() {
    for major in oldest_and_newest_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major).start();
        let scratch = scratch_dir();
        let repo = scratch.path().join("repo");
        KEY.init_repo(&repo);

        // Killed -9 right after its record is durable (still holding its lease).
        let child = base(&repo, &pg, Some("base.after-record=pause"), &[]);
        let mut complete = String::new();
        support::wait_until(
            &format!("{ctx}: the record is written"),
            || match backup_dirs(&repo).into_iter().find(|(_, c)| *c) {
                Some((id, _)) => {
                    complete = id;
                    true
                }
                None => false,
            },
        );
        let killed = kill9(child);
        assert_eq!(killed.code, -1, "{ctx}: {killed:?}");
        assert!(
            std::fs::read_dir(repo.join("locks")).unwrap().count() > 0,
            "{ctx}: the lease of the killed run is left behind"
        );
        assert_eq!(listed_ids(&repo, &ctx), vec![complete.clone()], "{ctx}");
        verify_ok(&repo, &ctx);

        // Killed -9 with everything stored but its record.
        let child = base(&repo, &pg, Some("base.before-record=pause"), &[]);
        let unfinished = wait_manifest_stored(&repo, &ctx);
        std::thread::sleep(Duration::from_secs(2));
        kill9(child);
        assert_eq!(listed_ids(&repo, &ctx), vec![complete.clone()], "{ctx}");
        verify_sound(&repo, &ctx);
        let dry = ok(
            KEY.pgstream(&[
                "expire",
                "--repo",
                s(&repo),
                "--keep-last",
                "5",
                "--dry-run",
                "--json",
            ]),
            &format!("{ctx}: expire --dry-run"),
        );
        let report: Value = serde_json::from_str(&dry.stdout).unwrap();
        assert_eq!(
            report["leftovers"],
            Value::from(vec![unfinished.clone()]),
            "{ctx}: {report}"
        );
        assert!(report["expired"].as_array().unwrap().is_empty(), "{ctx}");

        // The next base removes what the dead run left, and never the complete backup.
        let next = collect(base(&repo, &pg, None, &[]));
        assert_eq!(next.code, 0, "{ctx}: {next:?}");
        let ids = listed_ids(&repo, &ctx);
        assert_eq!(ids.len(), 2, "{ctx}: {ids:?}");
        assert_eq!(ids[0], complete, "{ctx}");
        assert!(
            backup_dirs(&repo)
                .iter()
                .all(|(id, c)| *c && id != &unfinished),
            "{ctx}: {:?}",
            backup_dirs(&repo)
        );
        verify_sound(&repo, &ctx);
        let run = ok(
            KEY.pgstream(&["expire", "--repo", s(&repo), "--keep-last", "5", "--json"]),
            &format!("{ctx}: expire"),
        );
        let report: Value = serde_json::from_str(&run.stdout).unwrap();
        assert!(report["expired"].as_array().unwrap().is_empty(), "{ctx}");
        assert_eq!(listed_ids(&repo, &ctx), ids, "{ctx}");
    }
}

#[test]
fn a_second_receive_wal_is_refused_naming_the_first_which_keeps_every_commit() {
    for major in oldest_and_newest_majors() {
        let ctx = format!("PostgreSQL {major}");
        let app = "pgstream_sync";
        let pg = cluster(major)
            .setting("synchronous_standby_names", app)
            .setting("synchronous_commit", "on")
            .start();
        let scratch = scratch_dir();
        let repo = scratch.path().join("repo");
        KEY.init_repo(&repo);
        pg.psql(
            "SET synchronous_commit = local;
             CREATE TABLE acked (id bigserial primary key, t text DEFAULT 'x')",
        );
        let run = KEY.pgstream(&[
            "base",
            "--repo",
            s(&repo),
            "--source",
            &pg.conninfo("postgres"),
            "--no-progress",
        ]);
        assert_eq!(run.code, 0, "{ctx}: base: {run:?}");
        let first = KEY.start_receiver(
            &repo,
            &pg.conninfo("postgres"),
            &[
                "--slot",
                "first",
                "--create-slot",
                "--synchronous",
                "--application-name",
                app,
            ],
            scratch.path().join("first.log"),
        );
        wait_for(
            "the first receiver is the synchronous standby",
            30,
            || {
                pg.psql(&format!(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = '{app}'"
                )) == "sync"
            },
            || first.log(),
        );
        // The second is refused before it touches anything, naming the first.
        let started = Instant::now();
        let second = KEY.pgstream(&[
            "receive-wal",
            "--repo",
            s(&repo),
            "--source",
            &pg.conninfo("postgres"),
            "--slot",
            "second",
            "--create-slot",
        ]);
        assert_eq!(second.code, 5, "{ctx}: {second:?}");
        assert!(
            second.stderr.contains("receive-wal")
                && second.stderr.contains("pid ")
                && second.stderr.contains("one receive-wal per repository"),
            "{ctx}: the holder is not named: {second:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(20), "{ctx}");
        assert_eq!(
            pg.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'second'"),
            "0",
            "{ctx}: the refused receiver created its slot"
        );
        // The first goes on: every commit acknowledged to a client is in the repository.
        let script = scratch.path().join("insert.sql");
        std::fs::write(&script, "INSERT INTO acked DEFAULT VALUES;\n").unwrap();
        let out = Command::new(client_tool(major, "pgbench"))
            .args(["-n", "-t", "50", "-c", "2", "-f"])
            .arg(&script)
            .args(["-d", &pg.conninfo("postgres")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{ctx}: pgbench: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let committed: u64 = pg.psql("SELECT count(*) FROM acked").parse().unwrap();
        assert_eq!(committed, 100, "{ctx}");
        pg.stop_immediate();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(first.terminate(), 0, "{ctx}");
        let restored = support::wal::restore_with_received_wal(
            &KEY,
            major,
            &repo,
            &scratch.path().join("restored"),
            &ctx,
        );
        let recovered: u64 = restored.psql("SELECT count(*) FROM acked").parse().unwrap();
        assert!(
            recovered >= committed,
            "{ctx}: {recovered} of {committed} acknowledged rows restored"
        );
    }
}

#[test]
fn rekey_racing_the_first_backup_keeps_the_new_passphrase() {
    for major in oldest_and_newest_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major).start();
        let scratch = scratch_dir();
        let repo = scratch.path().join("repo");
        KEY.init_repo(&repo);
        // The first backup binds the repository to the cluster; it is held between reading and
        // writing the config while a rekey runs.
        let child = base(&repo, &pg, Some("repo.bind-cluster=sleep(3000)"), &[]);
        support::wait_until(&format!("{ctx}: the base holds the config lease"), || {
            repo.join("locks/config").exists()
        });
        let new = "the new passphrase";
        let mut cmd = pgstream_command(&["rekey", "--repo", s(&repo)], Some(KEY.0));
        let rekey = cmd.env("PGSTREAM_NEW_PASSPHRASE", new).output().unwrap();
        assert!(
            rekey.status.success(),
            "{ctx}: rekey: {}",
            String::from_utf8_lossy(&rekey.stderr)
        );
        let run = collect(child);
        assert_eq!(run.code, 0, "{ctx}: base: {run:?}");
        // The binding did not undo the rekey, nor the rekey the binding.
        let old = KEY.pgstream(&["verify", "--repo", s(&repo)]);
        assert_eq!(
            old.code, 5,
            "{ctx}: the old passphrase still opens it: {old:?}"
        );
        let with_new = support::pgstream(&["verify", "--repo", s(&repo)], Some(new));
        assert_eq!(with_new.code, 0, "{ctx}: {with_new:?}");
        let status = ok(
            support::pgstream(&["status", "--repo", s(&repo)], None),
            &format!("{ctx}: status"),
        );
        assert!(
            status.stdout.contains("bound to system"),
            "{ctx}: {status:?}"
        );
    }
}

#[test]
fn expire_while_a_backup_is_published_deletes_nothing_it_needs() {
    for major in oldest_and_newest_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major).start();
        let scratch = scratch_dir();
        let repo = scratch.path().join("repo");
        KEY.init_repo(&repo);
        for _ in 0..2 {
            let run = collect(base(&repo, &pg, None, &[]));
            assert_eq!(run.code, 0, "{ctx}: {run:?}");
            pg.psql("SELECT pg_switch_wal()");
        }
        // The third stops with everything stored but its record.
        let child = base(&repo, &pg, Some("base.before-record=sleep(4000)"), &[]);
        wait_manifest_stored(&repo, &ctx);
        let run = ok(
            KEY.pgstream(&["expire", "--repo", s(&repo), "--keep-last", "1", "--json"]),
            &format!("{ctx}: expire"),
        );
        let report: Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(report["wal_files"], 0, "{ctx}: {report}");
        assert!(
            report["wal_note"]
                .as_str()
                .unwrap_or("")
                .contains("being written"),
            "{ctx}: {report}"
        );
        let third = collect(child);
        assert_eq!(third.code, 0, "{ctx}: {third:?}");
        // The published backup has all it needs.
        verify_ok(&repo, &ctx);
    }
}
