//! `pgstream base` options end to end: server-side compression (15+, refused clearly before),
//! the JSON summary, labels, spread checkpoints, rate limits, checksum verification off,
//! progress logging without a terminal, and an unencrypted repository readable by standard
//! tools.
//!
//! Server compression and the BASE_BACKUP options change syntax between 14 and 15, so those
//! tests loop over every major in `test_majors()`; progress logging and the unencrypted
//! repository are pgstream-side behaviour and run on the newest major only.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use integration::{client_tool_major, cluster, scratch_dir, test_majors, Cluster};
use support::{newest_cluster_and_repo_path, pgstream, pgstream_command, s, Run};

const PASSPHRASE: &str = "correct horse battery staple";

fn ok(run: Run, what: &str) -> Run {
    assert_eq!(run.code, 0, "{what} failed: {run:?}");
    run
}

fn init_repo(dir: &Path, extra: &[&str]) {
    let mut args = vec!["init", "--repo", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(pgstream(&args, Some(PASSPHRASE)), "init");
}

fn base_run(repo: &Path, pg: &Cluster, extra: &[&str]) -> Run {
    let conninfo = pg.conninfo("postgres");
    let mut args = vec![
        "base",
        "--repo",
        repo.to_str().unwrap(),
        "--source",
        &conninfo,
    ];
    args.extend_from_slice(extra);
    pgstream(&args, Some(PASSPHRASE))
}

/// `base --json` with `extra` options; the parsed summary.
fn base_json(repo: &Path, pg: &Cluster, extra: &[&str], ctx: &str) -> serde_json::Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let run = ok(base_run(repo, pg, &args), &format!("{ctx}: base {extra:?}"));
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{ctx}: base --json: {e}: {run:?}"))
}

fn list_json(repo: &Path) -> Vec<serde_json::Value> {
    let run = ok(
        pgstream(&["list", "--repo", repo.to_str().unwrap(), "--json"], None),
        "list --json",
    );
    serde_json::from_str::<serde_json::Value>(&run.stdout)
        .unwrap_or_else(|e| panic!("list --json does not parse: {e}: {run:?}"))["backups"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("list --json has no backups array: {run:?}"))
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

/// Restores backup `id` into a new directory (the tablespace moved) and runs pg_verifybackup
/// on it: files, sizes, checksums and WAL against the server's manifest.
fn restore_and_verify(repo: &Path, pg: &Cluster, id: &str, scratch: &Path, ctx: &str) {
    let target = scratch.join(format!("restore-{id}"));
    let mapping = format!(
        "{}={}",
        pg.tablespace_dir("ts1").display(),
        scratch.join(format!("ts-{id}")).display()
    );
    ok(
        pgstream(
            &[
                "restore",
                "--repo",
                repo.to_str().unwrap(),
                "--backup",
                id,
                "--to",
                target.to_str().unwrap(),
                "--tablespace-map",
                &mapping,
            ],
            Some(PASSPHRASE),
        ),
        &format!("{ctx}: restore {id}"),
    );
    let (verify, tool_major) = client_tool_major(pg.major(), "pg_verifybackup");
    let mut cmd = Command::new(verify);
    if tool_major != pg.major() {
        // pg_waldump reads only its own major's WAL.
        cmd.arg("-n");
    }
    cmd.arg(&target);
    run_tool(cmd, &format!("{ctx}: pg_verifybackup"));
}

#[test]
fn server_compression_stores_server_archives_and_restores() {
    for major in test_majors() {
        let pg = cluster(major).tablespace("ts1").start();
        pg.psql(
            "CREATE TABLE in_ts TABLESPACE ts1 AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g",
        );
        let scratch = scratch_dir();
        let repo = scratch.path().join("repo");
        init_repo(&repo, &[]);
        if major < 15 {
            let ctx = format!("PostgreSQL {major} --server-compression");
            let run = base_run(&repo, &pg, &["--server-compression", "lz4"]);
            assert_eq!(run.code, 2, "{ctx}: a usage error: {run:?}");
            assert!(
                run.stderr
                    .contains("server-side compression needs PostgreSQL 15"),
                "{ctx}: {run:?}"
            );
            assert_eq!(list_json(&repo).len(), 0, "{ctx}");
            assert_eq!(
                std::fs::read_dir(repo.join("backups"))
                    .map(|d| d.count())
                    .unwrap_or(0),
                0,
                "{ctx}: a refused backup left a directory"
            );
            assert_eq!(
                pg.psql("SELECT count(*) FROM pg_replication_slots"),
                "0",
                "{ctx}"
            );
            continue;
        }
        for (option, family, extension) in [
            ("lz4", "lz4", ".lz4"),
            ("zstd", "zstd", ".zst"),
            ("gzip:5", "gzip", ".gz"),
        ] {
            let ctx = format!("PostgreSQL {major} --server-compression {option}");
            if !server_supports(&pg, family) {
                // A server built without this library refuses it with its own message.
                let listed = list_json(&repo).len();
                let run = base_run(&repo, &pg, &["--server-compression", option]);
                assert_eq!(run.code, 4, "{ctx}: {run:?}");
                assert!(
                    run.stderr
                        .contains("this build does not support compression")
                        && run.stderr.contains("SQLSTATE"),
                    "{ctx}: {run:?}"
                );
                assert_eq!(list_json(&repo).len(), listed, "{ctx}");
                continue;
            }
            let record = base_json(&repo, &pg, &["--server-compression", option], &ctx);
            let id = record["id"].as_str().unwrap().to_string();
            let archives = record["archives"].as_array().unwrap();
            assert_eq!(
                archives.len(),
                2,
                "{ctx}: base and the tablespace: {record}"
            );
            for a in archives {
                let name = a["name"].as_str().unwrap();
                assert!(name.ends_with(extension), "{ctx}: {a}");
                assert_eq!(a["server_compression"], family, "{ctx}: {a}");
                // Stored as the server compressed it: the server's name, encrypted only.
                assert_eq!(a["file"], format!("{name}.enc"), "{ctx}: {a}");
                let dir = repo.join("backups").join(&id);
                assert!(dir.join(format!("{name}.enc")).is_file(), "{ctx}: {name}");
                assert!(!dir.join(name).exists(), "{ctx}: {name} stored unencrypted");
                assert!(
                    a["raw_bytes"].as_u64().unwrap() > a["stored_bytes"].as_u64().unwrap(),
                    "{ctx}: raw_bytes counts the uncompressed tar: {a}"
                );
            }
            assert!(
                record["files_verified"].as_u64().unwrap() > 500,
                "{ctx}: {record}"
            );
            restore_and_verify(&repo, &pg, &id, scratch.path(), &ctx);
        }
        assert!(!list_json(&repo).is_empty(), "PostgreSQL {major}");
        assert!(
            std::fs::read_dir(repo.join("backups"))
                .unwrap()
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().starts_with('.')),
            "PostgreSQL {major}: an in-progress directory was left"
        );
    }
}

/// Whether the server was built with `method` (the packaged PostgreSQL 15 here lacks zstd):
/// wal_compression accepts lz4 and zstd only when built with them; gzip is always there.
fn server_supports(pg: &Cluster, method: &str) -> bool {
    method == "gzip"
        || pg
            .try_psql(&format!("SET wal_compression = {method}"))
            .is_ok()
}

#[test]
fn json_summary_label_and_backup_options() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        // log_checkpoints shows which checkpoint the server ran (off by default before 15).
        let pg = cluster(major)
            .tablespace("ts1")
            .setting("log_checkpoints", "on")
            .start();
        let scratch = scratch_dir();
        let repo = scratch.path().join("repo");
        init_repo(&repo, &[]);
        let log_before = pg.server_log().len();
        let record = base_json(
            &repo,
            &pg,
            &[
                "--label",
                "nightly (options test)",
                "--checkpoint",
                "spread",
                "--max-rate",
                "20M",
                "--no-verify-checksums",
            ],
            &ctx,
        );
        let id = record["id"].as_str().unwrap().to_string();
        assert_eq!(record["label"], "nightly (options test)", "{ctx}");
        for field in ["start_lsn", "end_lsn"] {
            let lsn = record[field].as_str().unwrap_or_else(|| panic!("{field}"));
            assert!(lsn.contains('/'), "{ctx}: {field} {lsn}");
        }
        assert_eq!(record["start_timeline"], 1, "{ctx}");
        assert_eq!(record["end_timeline"], 1, "{ctx}");
        assert!(record["raw_bytes"].as_u64().unwrap() > 1 << 20, "{ctx}");
        assert!(record["stored_bytes"].as_u64().unwrap() > 0, "{ctx}");
        assert_eq!(record["compression"], "lz4", "{ctx}");
        assert_eq!(record["encryption"], "aes-256-gcm", "{ctx}: {record}");
        assert!(record["duration_seconds"].as_f64().unwrap() > 0.0, "{ctx}");
        assert_eq!(record["server_major"], major, "{ctx}");

        // The server ran a spread checkpoint: "force wait" without "immediate".
        let log = pg.server_log();
        let started: Vec<&str> = log[log_before..]
            .lines()
            .filter(|l| l.contains("checkpoint starting:"))
            .collect();
        assert!(
            started
                .iter()
                .any(|l| l.contains("force wait") && !l.contains("immediate")),
            "{ctx}: no spread checkpoint in the server log: {started:?}"
        );

        // The label is in `list` and in `list --json`.
        let listed = ok(
            pgstream(&["list", "--repo", repo.to_str().unwrap()], None),
            "list",
        );
        assert!(
            listed.stdout.contains(&id) && listed.stdout.contains("nightly (options test)"),
            "{ctx}: {listed:?}"
        );
        let list = list_json(&repo);
        assert_eq!(list.len(), 1, "{ctx}");
        assert_eq!(list[0]["id"], id.as_str(), "{ctx}");
        assert_eq!(list[0]["label"], "nightly (options test)", "{ctx}");
        assert_eq!(list[0]["end_lsn"], record["end_lsn"], "{ctx}");

        restore_and_verify(&repo, &pg, &id, scratch.path(), &ctx);
    }
}

/// Without a terminal, progress goes to the log: the phases, then a line every 10 s. The
/// backup is throttled to take about 13 s so one periodic line is due.
#[test]
fn progress_is_logged_without_a_terminal() {
    let (pg, _scratch, repo) = newest_cluster_and_repo_path();
    init_repo(&repo, &[]);
    let kb: u64 = pg
        .psql("SELECT (sum(pg_database_size(oid)) / 1024)::bigint FROM pg_database")
        .parse()
        .unwrap();
    let rate = format!("{}k", (kb / 13).max(32));
    let conninfo = pg.conninfo("postgres");
    let out = pgstream_command(
        &[
            "base",
            "--repo",
            repo.to_str().unwrap(),
            "--source",
            &conninfo,
            "--max-rate",
            &rate,
        ],
        Some(PASSPHRASE),
    )
    .env("PGSTREAM_LOG", "info")
    .stdin(Stdio::null())
    .output()
    .expect("running pgstream base");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "base --max-rate {rate}: {stderr}");
    for phase in [
        "base backup: connecting",
        "base backup: waiting for the server's checkpoint",
        "base backup: streaming",
        "base backup: verifying the manifest and storing the last WAL",
    ] {
        assert!(stderr.contains(phase), "no {phase:?} line: {stderr}");
    }
    let periodic: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("base backup: ") && l.contains("/s"))
        .collect();
    assert!(
        !periodic.is_empty(),
        "no periodic progress line in a backup at {rate}/s: {stderr}"
    );
    assert!(
        periodic
            .iter()
            .any(|l| l.contains('%') && l.contains("left")),
        "progress lines have no percentage or estimate: {periodic:?}"
    );
    // No terminal: no bar drawing (carriage returns, cursor movement).
    assert!(
        !stderr.contains('\r') && !stderr.contains("\x1b[2K"),
        "{stderr:?}"
    );
}

/// An unencrypted lz4 repository stores standard LZ4 frames: the archive decodes with an
/// independent LZ4 implementation into a tar holding PG_VERSION.
#[test]
fn unencrypted_repository_holds_standard_lz4_frames() {
    let (pg, _scratch, repo) = newest_cluster_and_repo_path();
    init_repo(&repo, &["--encryption", "none", "--compression", "lz4"]);
    // Given a passphrase, an unencrypted repository is refused: the caller thinks it encrypted
    // (a configuration altered to say "unencrypted" must not get plaintext backups).
    let refused = base_run(&repo, &pg, &[]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(
        refused.stderr.contains("says it is not encrypted"),
        "{refused:?}"
    );
    let conninfo = pg.conninfo("postgres");
    let run = ok(
        pgstream(
            &["base", "--repo", s(&repo), "--source", &conninfo, "--json"],
            None,
        ),
        "unencrypted: base without a passphrase",
    );
    let record: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(record["encryption"], "none", "{record}");
    assert_eq!(record["compression"], "lz4", "{record}");
    let id = record["id"].as_str().unwrap();
    let archive = &record["archives"][0];
    assert_eq!(archive["name"], "base.tar", "{record}");
    assert_eq!(archive["file"], "base.tar.lz4", "{record}");
    let path = repo.join("backups").join(id).join("base.tar.lz4");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..4], &[0x04, 0x22, 0x4d, 0x18], "LZ4 frame magic");
    let mut tar_bytes = Vec::new();
    lz4_flex::frame::FrameDecoder::new(&bytes[..])
        .read_to_end(&mut tar_bytes)
        .unwrap_or_else(|e| panic!("{} is not a standard LZ4 frame: {e}", path.display()));
    assert_eq!(
        tar_bytes.len() as u64,
        archive["raw_bytes"].as_u64().unwrap()
    );
    let mut names = Vec::new();
    let mut version = String::new();
    for entry in tar::Archive::new(&tar_bytes[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if name == "PG_VERSION" {
            entry.read_to_string(&mut version).unwrap();
        }
        names.push(name);
    }
    assert_eq!(
        version.trim(),
        support::newest_major().to_string(),
        "PG_VERSION in {names:?}"
    );
    // The manifest too is a plain LZ4 frame holding the server's JSON.
    let manifest = std::fs::read(
        repo.join("backups")
            .join(id)
            .join(record["manifest_file"].as_str().unwrap()),
    )
    .unwrap();
    let mut json = String::new();
    lz4_flex::frame::FrameDecoder::new(&manifest[..])
        .read_to_string(&mut json)
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        manifest["Files"].as_array().unwrap().len() as u64
            == record["files_verified"].as_u64().unwrap()
    );
}
