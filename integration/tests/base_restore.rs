//! `pgstream base` and `pgstream restore` end to end, through the binary, against real servers:
//! pgbench data and a user tablespace are backed up, restored to new places, checked by
//! pg_verifybackup, started, and compared with pg_dumpall.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use integration::{client_tool, client_tool_major, cluster, scratch_dir, test_majors, Cluster};
use support::{files_under, newest_cluster_and_repo_path, pgstream, Run};

const PASSPHRASE: &str = "correct horse battery staple";
/// Written into the database; must appear in no repository file when encrypted.
const MARKER: &str = "pgstream-plaintext-marker-4f1d2c";

fn ok(run: Run, what: &str) -> Run {
    assert_eq!(run.code, 0, "{what} failed: {run:?}");
    run
}

fn run_tool(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A source cluster with pgbench data, a table in a user tablespace, and a marker string.
fn source(major: u32) -> Cluster {
    let pg = cluster(major).tablespace("ts1").start();
    let mut bench = Command::new(client_tool(major, "pgbench"));
    bench
        .args(["-i", "-q", "-s", "2", "-d"])
        .arg(pg.conninfo("postgres"));
    run_tool(bench, "pgbench -i");
    pg.psql(&format!(
        "CREATE TABLE in_ts (id int, note text) TABLESPACE ts1;
         INSERT INTO in_ts SELECT g, '{MARKER}' || g FROM generate_series(1, 5000) g;
         CREATE INDEX ON in_ts (id) TABLESPACE ts1;"
    ));
    pg
}

fn dumpall(pg: &Cluster) -> String {
    let mut cmd = Command::new(client_tool(pg.major(), "pg_dumpall"));
    cmd.arg("-d").arg(pg.conninfo("postgres"));
    // Recent pg_dump versions fence each database with a random \restrict key.
    run_tool(cmd, "pg_dumpall")
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn init_repo(dir: &Path) {
    ok(
        pgstream(&["init", "--repo", dir.to_str().unwrap()], Some(PASSPHRASE)),
        "init",
    );
}

/// A started cluster of the newest major, backed up once into an initialised repository in a
/// scratch directory.
fn newest_with_backup() -> (Cluster, tempfile::TempDir, PathBuf) {
    let (pg, scratch, repo) = newest_cluster_and_repo_path();
    init_repo(&repo);
    base(&repo, &pg);
    (pg, scratch, repo)
}

fn base(repo: &Path, pg: &Cluster) -> serde_json::Value {
    let run = ok(
        pgstream(
            &[
                "base",
                "--repo",
                repo.to_str().unwrap(),
                "--source",
                &pg.conninfo("postgres"),
                "--json",
                "--label",
                "test backup",
            ],
            Some(PASSPHRASE),
        ),
        "base",
    );
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("base --json: {e}: {run:?}"))
}

fn chown_to_server_user(dir: &Path) {
    if let integration::ServerUser::Switch { name, .. } = integration::server_user() {
        let mut cmd = Command::new("chown");
        cmd.arg("-R").arg(format!("{name}:")).arg(dir);
        run_tool(cmd, "chown");
    }
}

#[test]
fn backup_restores_verifies_starts_and_matches_source() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = source(major);
        let scratch = scratch_dir();
        let repo = scratch.path().join("repo");
        init_repo(&repo);
        let record = base(&repo, &pg);
        let id = record["id"].as_str().unwrap().to_string();
        assert_eq!(record["label"], "test backup", "{ctx}");
        assert_eq!(record["archives"].as_array().unwrap().len(), 2, "{ctx}");
        assert!(record["files_verified"].as_u64().unwrap() > 500, "{ctx}");

        // Encrypted: the marker is in no repository file, compressed or not.
        for f in files_under(&repo) {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
                "{ctx}: plaintext found in {}",
                f.display()
            );
        }
        let listed = ok(
            pgstream(&["list", "--repo", repo.to_str().unwrap()], None),
            "list",
        );
        assert!(listed.stdout.contains(&id), "{ctx}: {listed:?}");

        // Restore the tablespace somewhere new: the source still uses the original.
        let target = scratch.path().join("restored");
        let new_ts = scratch.path().join("ts1-restored");
        let old_ts = pg.tablespace_dir("ts1");
        let mapping = format!("{}={}", old_ts.display(), new_ts.display());
        let restored = ok(
            pgstream(
                &[
                    "restore",
                    "--repo",
                    repo.to_str().unwrap(),
                    "--to",
                    target.to_str().unwrap(),
                    "--tablespace-map",
                    &mapping,
                ],
                Some(PASSPHRASE),
            ),
            "restore",
        );
        assert!(restored.stdout.contains("pg_ctl -D"), "{ctx}: {restored:?}");

        // pg_verifybackup: files, sizes and checksums against the manifest, and the WAL
        // (parsed by pg_waldump, which only reads its own major's WAL).
        let (verify, tool_major) = client_tool_major(major, "pg_verifybackup");
        let mut cmd = Command::new(verify);
        if tool_major != major {
            cmd.arg("-n");
        }
        cmd.arg(&target);
        run_tool(cmd, "pg_verifybackup");

        // The restored cluster starts, and holds what the source holds. (Restore ran as this
        // user; the server runs as the harness's server user, which must own the tablespace.)
        chown_to_server_user(&new_ts);
        let restored_pg = cluster(major).restored_data_dir(&target).start();
        let source_dump = dumpall(&pg).replace(&old_ts.display().to_string(), "TS");
        let restored_dump = dumpall(&restored_pg).replace(&new_ts.display().to_string(), "TS");
        if source_dump != restored_dump {
            let diff: Vec<String> = source_dump
                .lines()
                .zip(restored_dump.lines())
                .filter(|(a, b)| a != b)
                .take(10)
                .map(|(a, b)| format!("source:   {a}\nrestored: {b}"))
                .collect();
            panic!(
                "{ctx}: pg_dumpall of the restored cluster differs from the source ({} vs {} lines):\n{}",
                source_dump.lines().count(),
                restored_dump.lines().count(),
                diff.join("\n")
            );
        }
        assert_eq!(
            restored_pg.psql(&format!(
                "SELECT count(*) FROM in_ts WHERE note LIKE '{MARKER}%'"
            )),
            "5000",
            "{ctx}"
        );
    }
}

#[test]
fn wrong_passphrase_fails_cleanly() {
    let (pg, scratch, repo) = newest_with_backup();
    let target = scratch.path().join("restored");
    for args in [
        vec![
            "restore",
            "--repo",
            repo.to_str().unwrap(),
            "--to",
            target.to_str().unwrap(),
        ],
        vec![
            "base",
            "--repo",
            repo.to_str().unwrap(),
            "--source",
            &pg.conninfo("postgres"),
        ],
    ] {
        let run = pgstream(&args, Some("not the passphrase"));
        assert_eq!(run.code, 5, "{run:?}");
        assert!(run.stderr.contains("passphrase"), "{run:?}");
        assert!(!run.stderr.contains("not the passphrase"), "{run:?}");
    }
    // `base` sends BASE_BACKUP while the key derivation runs: when unlocking then fails, the
    // server's backup and slot end with the connections, and the repository gains nothing.
    let mut walsenders = String::new();
    for _ in 0..100 {
        walsenders = pg
            .psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'")
            + "/"
            + &pg.psql("SELECT count(*) FROM pg_replication_slots");
        if walsenders == "0/0" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        walsenders, "0/0",
        "walsenders/slots left by the failed base"
    );
    let entries = std::fs::read_dir(repo.join("backups")).unwrap().count();
    assert_eq!(entries, 1, "the failed base left something in backups/");
    assert!(!target.exists(), "a failed restore created its target");
    let none = pgstream(&args_restore(&repo, &target), None);
    assert_eq!(none.code, 2, "{none:?}");
    assert!(none.stderr.contains("PGSTREAM_PASSPHRASE"), "{none:?}");
}

fn args_restore<'a>(repo: &'a Path, target: &'a Path) -> Vec<&'a str> {
    vec![
        "restore",
        "--repo",
        repo.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ]
}

/// Every repository file a restore reads, altered by one byte, makes the restore fail and
/// name that file.
#[test]
fn flipped_byte_in_any_repository_file_fails_restore_naming_it() {
    let major = *test_majors().last().unwrap();
    let pg = cluster(major).tablespace("ts1").start();
    pg.psql("CREATE TABLE t TABLESPACE ts1 AS SELECT g FROM generate_series(1, 20000) g");
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    init_repo(&repo);
    base(&repo, &pg);
    // Every file restore reads: data, manifest, WAL, the catalog record, the config.
    let files: Vec<PathBuf> = files_under(&repo)
        .into_iter()
        .filter(|f| f.file_name().unwrap() != "lock")
        .collect();
    assert!(files.len() >= 6, "{files:?}");
    for (i, f) in files.iter().enumerate() {
        let original = std::fs::read(f).unwrap();
        let mut damaged = original.clone();
        let at = damaged.len() / 2;
        damaged[at] ^= 0x40;
        std::fs::write(f, &damaged).unwrap();
        let target = scratch.path().join(format!("restore-{i}"));
        let mapping = format!(
            "{}={}",
            pg.tablespace_dir("ts1").display(),
            scratch.path().join(format!("ts-{i}")).display()
        );
        let mut args = args_restore(&repo, &target);
        args.extend(["--tablespace-map", &mapping]);
        let run = pgstream(&args, Some(PASSPHRASE));
        std::fs::write(f, &original).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        // A damaged config is a repository problem (5); damaged contents fail verification (6).
        let expected = if name == "pgstream.repo" { 5 } else { 6 };
        assert_eq!(run.code, expected, "{name}: {run:?}");
        assert!(run.stderr.contains(&name), "{name} not named: {run:?}");
    }
    // With every file intact again, the restore works.
    let mapping = format!(
        "{}={}",
        pg.tablespace_dir("ts1").display(),
        scratch.path().join("ts-ok").display()
    );
    let target = scratch.path().join("restore-ok");
    let mut args = args_restore(&repo, &target);
    args.extend(["--tablespace-map", &mapping]);
    let run = pgstream(&args, Some(PASSPHRASE));
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn second_cluster_is_refused() {
    let major = *test_majors().last().unwrap();
    let a = cluster(major).start();
    let b = cluster(major).start();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    init_repo(&repo);
    base(&repo, &a);
    let run = pgstream(
        &[
            "base",
            "--repo",
            repo.to_str().unwrap(),
            "--source",
            &b.conninfo("postgres"),
        ],
        Some(PASSPHRASE),
    );
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stderr.contains("system identifier"), "{run:?}");
    let listed = pgstream(&["list", "--repo", repo.to_str().unwrap(), "--json"], None);
    let list: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(list["backups"].as_array().unwrap().len(), 1);
}

#[test]
fn restore_refuses_a_non_empty_target() {
    let (_pg, scratch, repo) = newest_with_backup();
    let target = scratch.path().join("busy");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep-me"), b"precious").unwrap();
    let run = pgstream(&args_restore(&repo, &target), Some(PASSPHRASE));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("not empty"), "{run:?}");
    assert_eq!(std::fs::read(target.join("keep-me")).unwrap(), b"precious");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 1);
}

#[test]
fn password_on_the_command_line_is_refused() {
    let run = pgstream(
        &[
            "base",
            "--repo",
            "/nonexistent",
            "--source",
            "host=127.0.0.1 password=hunter2",
        ],
        Some(PASSPHRASE),
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("PGPASSWORD"), "{run:?}");
    assert!(!run.stderr.contains("hunter2"), "{run:?}");
}

#[test]
fn rekey_keeps_backups_readable_with_the_new_passphrase_only() {
    let (_pg, scratch, repo) = newest_with_backup();
    let before: Vec<(PathBuf, Vec<u8>)> = files_under(&repo)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "enc"))
        .map(|f| {
            let b = std::fs::read(&f).unwrap();
            (f, b)
        })
        .collect();
    let mut cmd = Command::new(support::pgstream_bin());
    cmd.args(["rekey", "--repo", repo.to_str().unwrap()])
        .env("PGSTREAM_PASSPHRASE", PASSPHRASE)
        .env("PGSTREAM_NEW_PASSPHRASE", "a brand new passphrase");
    let out = run_tool(cmd, "rekey");
    assert!(out.contains("no data was rewritten"), "{out}");
    // No data file changed.
    for (f, bytes) in &before {
        assert!(
            std::fs::read(f).unwrap() == *bytes,
            "{} changed",
            f.display()
        );
    }
    let target = scratch.path().join("restored");
    let old = pgstream(&args_restore(&repo, &target), Some(PASSPHRASE));
    assert_eq!(old.code, 5, "the old passphrase still works: {old:?}");
    let new = pgstream(
        &args_restore(&repo, &target),
        Some("a brand new passphrase"),
    );
    assert_eq!(new.code, 0, "{new:?}");
}
