//! `pgstream base` when something goes wrong mid-backup: SIGINT, SIGTERM, SIGKILL, the server
//! stopping, the connection dropping, the disk filling up, the server failing to read a file.
//! Every case must end with a clear message, a documented non-zero exit code, no backup that
//! looks complete, leftovers cleaned by the next run, and no replication slot on the server.
//!
//! These tests are about pgstream's side of a failure, which does not depend on the server
//! version, so they run on the newest major only (`test_majors().last()`) to bound CI time.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration::{cluster, scratch_dir, Cluster};
use support::proxy::Proxy;
use support::tmpfs::Tmpfs;
use support::{newest_major, ok, pgstream, pgstream_command, Run};

const PASSPHRASE: &str = "correct horse battery staple";

fn init_repo(dir: &Path) {
    support::init_repo(dir, PASSPHRASE);
}

fn base_args<'a>(repo: &'a Path, conninfo: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "base",
        "--repo",
        repo.to_str().unwrap(),
        "--source",
        conninfo,
    ];
    args.extend_from_slice(extra);
    args
}

/// `pgstream base` into `repo` from `conninfo`, throttled so it is still running when the test
/// interrupts it (a fresh cluster is over 20 MB: more than ten minutes at 32 kB/s).
fn spawn_slow_base(repo: &Path, conninfo: &str) -> Child {
    pgstream_command(
        &base_args(repo, conninfo, &["--max-rate", "32k"]),
        Some(PASSPHRASE),
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawning pgstream base")
}

/// Waits (at most 60 s) for `child` to exit and collects its output.
fn finish(mut child: Child) -> Run {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("waiting for pgstream").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let run = collect(child);
            panic!("pgstream did not exit within 60 s: {run:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    collect(child)
}

fn collect(child: Child) -> Run {
    let out = child
        .wait_with_output()
        .expect("collecting pgstream output");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Names in `repo/backups`: backup ids, complete (with their record) or not.
fn backup_entries(repo: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(repo.join("backups")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Backups being written or left by a run that died: ids without a record.
fn in_progress_dirs(repo: &Path) -> Vec<PathBuf> {
    backup_entries(repo)
        .into_iter()
        .map(|n| repo.join("backups").join(n))
        .filter(|d| !d.join("backup.json").exists())
        .collect()
}

/// Backups that look complete: their record exists.
fn complete_looking(repo: &Path) -> Vec<String> {
    backup_entries(repo)
        .into_iter()
        .filter(|n| repo.join("backups").join(n).join("backup.json").exists())
        .collect()
}

/// `pgstream list --json` of `repo`.
fn listed(repo: &Path) -> Vec<serde_json::Value> {
    let run = ok(
        pgstream(&["list", "--repo", repo.to_str().unwrap(), "--json"], None),
        "list --json",
    );
    serde_json::from_str::<serde_json::Value>(&run.stdout)
        .unwrap_or_else(|e| panic!("list --json: {e}: {run:?}"))["backups"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("list --json has no backups array: {run:?}"))
}

/// Nothing in `repo` looks like a complete backup, and `list` agrees.
fn assert_nothing_complete(repo: &Path, ctx: &str) {
    assert_eq!(
        complete_looking(repo),
        Vec::<String>::new(),
        "{ctx}: a failed backup left a complete-looking directory"
    );
    assert_eq!(listed(repo).len(), 0, "{ctx}: list shows a failed backup");
}

/// The error line says each cause once (`{:#}` used to print "lost: X: X").
fn assert_causes_said_once(run: &Run, ctx: &str) {
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("pgstream: error: "))
        .unwrap_or_else(|| panic!("{ctx}: no error line: {run:?}"));
    let parts: Vec<&str> = line.split(": ").collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(p),
            "{ctx}: {p:?} repeated in {line:?}"
        );
    }
}

fn slot_count(pg: &Cluster) -> String {
    pg.psql("SELECT count(*) FROM pg_replication_slots")
}

/// The server no longer holds a replication slot (the backup's temporary slot is gone).
fn assert_no_slot_soon(pg: &Cluster, ctx: &str) {
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        last = slot_count(pg);
        if last == "0" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{ctx}: {last} replication slot(s) still on the server: {}",
        pg.psql("SELECT slot_name, temporary, active FROM pg_replication_slots")
    );
}

/// Waits until the backup is well under way: both walsenders (archives and WAL) are on the
/// server and the first archive is being written into the in-progress directory.
fn wait_streaming(pg: &Cluster, repo: &Path, mut child: Child) -> Child {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("polling pgstream").is_some() {
            panic!(
                "pgstream ended before the test interrupted it: {:?}",
                collect(child)
            );
        }
        let senders = pg.psql("SELECT count(*) FROM pg_stat_replication");
        let writing = in_progress_dirs(repo).iter().any(|d| {
            std::fs::read_dir(d).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("base.tar"))
            })
        });
        if senders == "2" && writing {
            // A moment more, so archive data and WAL are both flowing.
            std::thread::sleep(Duration::from_millis(500));
            return child;
        }
        assert!(
            Instant::now() < deadline,
            "the backup did not start streaming within 60 s (walsenders: {senders})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} failed");
}

/// A successful backup after a failure: it removes what the failed run left and is the one
/// backup listed.
fn next_backup_succeeds(repo: &Path, pg: &Cluster, ctx: &str) {
    let run = ok(
        pgstream(
            &base_args(repo, &pg.conninfo("postgres"), &["--json"]),
            Some(PASSPHRASE),
        ),
        &format!("{ctx}: the next base"),
    );
    let record: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{ctx}: {e}: {run:?}"));
    let id = record["id"].as_str().unwrap().to_string();
    assert_eq!(
        backup_entries(repo),
        vec![id.clone()],
        "{ctx}: after a successful run the repository holds exactly the new backup"
    );
    let list = listed(repo);
    assert_eq!(list.len(), 1, "{ctx}: {list:?}");
    assert_eq!(list[0]["id"], id.as_str(), "{ctx}");
    assert_no_slot_soon(pg, ctx);
}

fn interrupted_by(sig: &str) {
    let pg = cluster(newest_major()).start();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    init_repo(&repo);
    let ctx = format!("PostgreSQL {} SIG{sig}", pg.major());
    let child = wait_streaming(&pg, &repo, spawn_slow_base(&repo, &pg.conninfo("postgres")));
    signal(&child, sig);
    let run = finish(child);
    assert_eq!(run.code, 130, "{ctx}: {run:?}");
    assert!(
        run.stderr.contains(&format!("SIG{sig} received")),
        "{ctx}: {run:?}"
    );
    assert!(
        run.stderr.contains("stopped before the backup finished")
            && run.stderr.contains("nothing was marked complete"),
        "{ctx}: {run:?}"
    );
    assert_eq!(run.stdout, "", "{ctx}");
    // Interrupted cleanly: the in-progress directory is removed on the spot.
    assert_eq!(backup_entries(&repo), Vec::<String>::new(), "{ctx}");
    assert_nothing_complete(&repo, &ctx);
    assert_no_slot_soon(&pg, &ctx);
    next_backup_succeeds(&repo, &pg, &ctx);
}

#[test]
fn sigint_mid_backup_exits_130_and_leaves_nothing() {
    interrupted_by("INT");
}

#[test]
fn sigterm_mid_backup_exits_130_and_leaves_nothing() {
    interrupted_by("TERM");
}

#[test]
fn sigkill_mid_backup_leaves_nothing_complete_and_next_run_cleans_up() {
    let pg = cluster(newest_major()).start();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    init_repo(&repo);
    let ctx = format!("PostgreSQL {} SIGKILL", pg.major());
    let child = wait_streaming(&pg, &repo, spawn_slow_base(&repo, &pg.conninfo("postgres")));
    let leftover = in_progress_dirs(&repo);
    assert_eq!(leftover.len(), 1, "{ctx}: {:?}", backup_entries(&repo));
    signal(&child, "KILL");
    let run = finish(child);
    assert_eq!(run.code, -1, "{ctx}: killed by a signal: {run:?}");
    // No chance to clean up: the in-progress directory stays, but nothing looks complete.
    assert!(leftover[0].exists(), "{ctx}");
    assert_nothing_complete(&repo, &ctx);
    // The kernel closed the sockets, so the server dropped the temporary slot.
    assert_no_slot_soon(&pg, &ctx);
    next_backup_succeeds(&repo, &pg, &ctx);
    assert!(!leftover[0].exists(), "{ctx}: the leftover was not removed");
}

#[test]
fn server_stopped_mid_backup_fails_as_connection_lost() {
    let pg = cluster(newest_major()).start();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    init_repo(&repo);
    let ctx = format!("PostgreSQL {} stopped", pg.major());
    let child = wait_streaming(&pg, &repo, spawn_slow_base(&repo, &pg.conninfo("postgres")));
    pg.stop_immediate();
    let run = finish(child);
    assert!(
        run.code == 3 || run.code == 4,
        "{ctx}: expected exit 3 or 4: {run:?}"
    );
    assert!(
        run.stderr.contains("connection to the server was lost")
            || run.stderr.contains("terminating connection"),
        "{ctx}: the message does not say the connection was lost: {run:?}"
    );
    assert!(!run.stderr.contains("stopped before"), "{ctx}: {run:?}");
    assert_causes_said_once(&run, &ctx);
    assert_eq!(backup_entries(&repo), Vec::<String>::new(), "{ctx}");
    assert_nothing_complete(&repo, &ctx);
    pg.start();
    // Temporary slots do not survive a restart, but check anyway.
    assert_no_slot_soon(&pg, &ctx);
    next_backup_succeeds(&repo, &pg, &ctx);
}

#[test]
fn dropped_connection_mid_backup_fails_cleanly() {
    let pg = cluster(newest_major()).start();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    init_repo(&repo);
    let ctx = format!("PostgreSQL {} connection dropped", pg.major());
    let proxy = Proxy::start(pg.port());
    let via_proxy = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
        proxy.port
    );
    let child = wait_streaming(&pg, &repo, spawn_slow_base(&repo, &via_proxy));
    assert_eq!(
        proxy.connections(),
        2,
        "{ctx}: both connections go through the proxy"
    );
    proxy.cut();
    let run = finish(child);
    // Whichever connection notices first, the loss is reported, not an interruption (the
    // WAL streamer's failure used to surface as "stopped before the backup finished", 130).
    assert_eq!(run.code, 3, "{ctx}: {run:?}");
    assert!(
        run.stderr.contains("connection to the server was lost"),
        "{ctx}: {run:?}"
    );
    assert!(!run.stderr.contains("stopped before"), "{ctx}: {run:?}");
    assert_causes_said_once(&run, &ctx);
    assert_eq!(backup_entries(&repo), Vec::<String>::new(), "{ctx}");
    assert_nothing_complete(&repo, &ctx);
    assert_no_slot_soon(&pg, &ctx);
    next_backup_succeeds(&repo, &pg, &ctx);
}

/// About 25 MB of incompressible rows (random bytes), so neither lz4 nor the archive fits.
fn incompressible_source(major: u32) -> Cluster {
    let pg = cluster(major).start();
    pg.psql(
        "CREATE TABLE filler AS
           SELECT g, decode(md5(g::text) || md5((-g)::text) || md5((g * 7)::text)
                            || md5((g * 13)::text), 'hex') AS pad
           FROM generate_series(1, 250000) g",
    );
    pg
}

fn assert_write_failure(run: &Run, repo: &Path, why: &str, ctx: &str) {
    assert_eq!(run.code, 7, "{ctx}: expected a local I/O failure: {run:?}");
    assert!(run.stderr.contains(why), "{ctx}: {run:?}");
    assert_causes_said_once(run, ctx);
    // The message names the repository file being written.
    assert!(
        run.stderr.contains("writing backups/")
            || run.stderr.contains("writing wal/")
            || run.stderr.contains(&repo.display().to_string()),
        "{ctx}: no file named: {run:?}"
    );
    assert_nothing_complete(repo, ctx);
}

/// A full disk: a small tmpfs when this environment may mount one, and (always) a file size
/// limit (RLIMIT_FSIZE, with SIGXFSZ ignored so writes fail with EFBIG instead of killing).
#[test]
fn disk_full_mid_backup_fails_with_local_io_naming_the_file() {
    let pg = incompressible_source(newest_major());
    let scratch = scratch_dir();

    let mount_point = scratch.path().join("small-disk");
    if let Some(tmpfs) = Tmpfs::mount(&mount_point, "8M") {
        let ctx = format!("PostgreSQL {} full tmpfs", pg.major());
        let repo = mount_point.join("repo");
        init_repo(&repo);
        let run = pgstream(
            &base_args(&repo, &pg.conninfo("postgres"), &[]),
            Some(PASSPHRASE),
        );
        assert_write_failure(&run, &repo, "No space left on device", &ctx);
        assert_no_slot_soon(&pg, &ctx);
        tmpfs.resize("512M");
        next_backup_succeeds(&repo, &pg, &ctx);
    }

    let ctx = format!("PostgreSQL {} RLIMIT_FSIZE", pg.major());
    let repo = scratch.path().join("repo");
    init_repo(&repo);
    let conninfo = pg.conninfo("postgres");
    let args = base_args(&repo, &conninfo, &[]);
    // sh applies the limit to itself, then becomes pgstream (the limit and the ignored
    // signal survive exec).
    let bin = support::pgstream_bin();
    let mut sh = Command::new("sh");
    sh.args(["-c", "trap '' XFSZ; ulimit -f 2048 && exec \"$0\" \"$@\""])
        .arg(&bin)
        .args(&args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            sh.env_remove(&k);
        }
    }
    let out = sh
        .env("PGSTREAM_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::null())
        .output()
        .expect("running pgstream under sh");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_write_failure(&run, &repo, "File too large", &ctx);
    assert_no_slot_soon(&pg, &ctx);
    next_backup_succeeds(&repo, &pg, &ctx);
}

/// The server fails mid-backup (it cannot read a file in its data directory): its error, with
/// SQLSTATE, reaches the user; after the cause is fixed the backup works.
#[test]
fn server_error_mid_backup_keeps_the_servers_message() {
    let pg = cluster(newest_major()).start();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    init_repo(&repo);
    let ctx = format!("PostgreSQL {} unreadable file", pg.major());
    // Mode 000: unreadable to the server, which never runs as root (the harness switches to
    // an unprivileged user when the tests run as root).
    let unreadable = pg.data_dir().join("pgstream_unreadable");
    std::fs::write(&unreadable, b"the server cannot read this").unwrap();
    std::fs::set_permissions(
        &unreadable,
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    let run = pgstream(
        &base_args(&repo, &pg.conninfo("postgres"), &[]),
        Some(PASSPHRASE),
    );
    assert_eq!(run.code, 4, "{ctx}: {run:?}");
    assert_causes_said_once(&run, &ctx);
    assert!(
        run.stderr.contains("pgstream_unreadable")
            && run.stderr.contains("Permission denied")
            && run.stderr.contains("SQLSTATE 42501"),
        "{ctx}: the server's message and SQLSTATE are not kept: {run:?}"
    );
    assert_eq!(backup_entries(&repo), Vec::<String>::new(), "{ctx}");
    assert_nothing_complete(&repo, &ctx);
    assert_no_slot_soon(&pg, &ctx);
    std::fs::remove_file(&unreadable).unwrap();
    next_backup_succeeds(&repo, &pg, &ctx);
}
