//! The drill half of `just bench`: how long `pgstream drill --target-time T` takes to bring a
//! pgbench database of about 1.5 GB back to T, beside the same recovery done by hand from
//! `pg_basebackup` and `pg_receivewal`.
//!
//! Setup, untimed: one cluster, `pgbench -i -s SCALE`; `pgstream receive-wal` and
//! `pg_receivewal` stream on their own slots (both as the server's user, as a real deployment
//! runs them); `pgstream base`, then `pg_basebackup -Ft -Xs --compress=client-lz4`; pgbench
//! (`-c 4 -j 2`, in chunks of a fixed transaction count) until about `wal_mb` of WAL exists past
//! the backups; T is read from the server's clock; one more chunk of load after T;
//! `pg_switch_wal()` and a wait until both receivers report that WAL flushed; receivers and
//! source stop.
//!
//! Then, alternating, `runs` times each:
//! - *drill*: `pgstream drill --target-time T --json` (restore into its scratch directory,
//!   start, replay through `restore_command = pgstream wal-fetch`, pause at T, promote, checks).
//!   Its own timings are reported, plus the wall time of the whole command.
//! - *by hand*: the runbook an operator would follow with PostgreSQL's tools: `lz4 -dc | tar -xf`
//!   of base.tar.lz4 and pg_wal.tar (.lz4 when compressed), `sync -f`, `recovery.signal`,
//!   `restore_command = 'cp <pg_receivewal dir>/%f %p'`, `recovery_target_time = T`,
//!   `recovery_target_action = promote`, start (the test harness: chown to the server user,
//!   `pg_ctl start -w`), then poll `SELECT pg_is_in_recovery()` with a new psql connection every
//!   50 ms until it says `f`. No checks: this is the drill's `total_recovery_seconds` without
//!   them.
//!
//! Numbers are measured, never asserted: this is not a test.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration::{client_tool, cluster, server_user, Cluster, ClusterBuilder, ServerUser};

use super::load_average;

mod report;

const PASSPHRASE: &str = "benchmark passphrase, not a secret";
/// The source's settings, also given to the by-hand restore so both recover under the same
/// ones. synchronous_commit = off only makes the load faster to generate; replay is the same.
const SETTINGS: [(&str, &str); 2] = [("max_wal_size", "2GB"), ("synchronous_commit", "off")];
const PGSTREAM_SLOT: &str = "bench_drill_pgstream";
const RECEIVEWAL_SLOT: &str = "bench_drill_pg_receivewal";
/// pgbench transactions per client in one chunk of load (4 clients).
const CHUNK_TX: u32 = 2000;
const MIB: f64 = 1048576.0;

/// What `bench` passes on from its own options.
pub struct Options<'a> {
    pub major: u32,
    pub scale: u32,
    pub runs: usize,
    pub out: &'a Path,
    pub pgstream: &'a Path,
}

/// One recovery, either way; `None` where that way has no such phase.
#[derive(Clone, Debug, Default)]
struct Run {
    restore: f64,
    server_start: Option<f64>,
    replay: Option<f64>,
    promote: Option<f64>,
    total_recovery: f64,
    checks: Option<f64>,
    /// Wall time of the whole command (drill: cleanup included).
    wall: f64,
    /// From the backup's start LSN to the LSN replay stopped at.
    replayed_bytes: u64,
    /// Bytes of the unpacked data directory, where measured (by hand: before the start).
    restored_bytes: Option<u64>,
}

struct Way {
    way: &'static str,
    runs: Vec<Run>,
    /// Check names whose status was not `pass`, with that status (drill only).
    not_passed: Vec<String>,
}

/// `X/Y` as a byte position.
fn parse_lsn(lsn: &str) -> u64 {
    let (hi, lo) = lsn
        .trim()
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {lsn:?}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// `program` as the server's user (PostgreSQL's own tools and pgstream's WAL side run so in
/// production), from `cwd`.
fn as_server_user(program: &Path, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd).env("PGSTREAM_PASSPHRASE", PASSPHRASE);
    server_user().apply(&mut cmd);
    cmd
}

fn check(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM (both receivers flush and exit cleanly on it), then wait.
fn terminate(mut child: Child, what: &str) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill -TERM {what}");
    let exited = child.wait().expect("waiting for a receiver");
    eprintln!("bench drill: {what} stopped ({exited})");
}

/// Everything the recoveries need, made once.
struct Prepared {
    repo: PathBuf,
    pgstream: PathBuf,
    pg_backup: PathBuf,
    receivewal_dir: PathBuf,
    target_time: String,
    pg_backup_start: u64,
    db_bytes: u64,
    load_wal_bytes: u64,
    load_seconds: f64,
    after_target_wal_bytes: u64,
    transactions: u64,
}

fn pgbench(pg: &Cluster, args: &[&str]) -> String {
    let out = Command::new(client_tool(pg.major(), "pgbench"))
        .args(args)
        .arg("-d")
        .arg(pg.conninfo("postgres"))
        .output()
        .expect("pgbench");
    check(out, &format!("pgbench {args:?}"))
}

fn prepare(o: &Options, pg: &Cluster, scratch: &Path) -> Prepared {
    let user = server_user();
    let conninfo = pg.conninfo("postgres");
    // The server's user runs restore_command, so it needs its own copy of the binary.
    let pgstream = scratch.join("pgstream");
    std::fs::copy(o.pgstream, &pgstream).expect("copying the pgstream binary");
    std::fs::set_permissions(&pgstream, std::fs::Permissions::from_mode(0o755)).unwrap();
    let repo = scratch.join("repo");
    let receivewal_dir = scratch.join("pg_receivewal");
    std::fs::create_dir(&receivewal_dir).unwrap();
    user.chown(&receivewal_dir);

    eprintln!(
        "bench drill: pgbench -i -s {} on PostgreSQL {}",
        o.scale, o.major
    );
    pgbench(pg, &["-i", "-q", "-s", &o.scale.to_string()]);
    pg.psql("CHECKPOINT");
    let db_bytes: u64 = pg
        .psql("SELECT sum(pg_database_size(oid)) FROM pg_database")
        .parse()
        .unwrap();
    check(
        as_server_user(&pgstream, scratch)
            .args(["init", "--repo"])
            .arg(&repo)
            .output()
            .unwrap(),
        "pgstream init",
    );
    pg.psql(&format!(
        "SELECT pg_create_physical_replication_slot('{PGSTREAM_SLOT}', true);
         SELECT pg_create_physical_replication_slot('{RECEIVEWAL_SLOT}', true);"
    ));
    let log = std::fs::File::create(scratch.join("receive-wal.log")).unwrap();
    let receive_wal = as_server_user(&pgstream, scratch)
        .args(["receive-wal", "--repo"])
        .arg(&repo)
        .arg("--source")
        .arg(&conninfo)
        .args([
            "--slot",
            PGSTREAM_SLOT,
            "--application-name",
            PGSTREAM_SLOT,
            "--status-interval",
            "1",
        ])
        .env("PGSTREAM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("pgstream receive-wal");
    let log = std::fs::File::create(scratch.join("pg_receivewal.log")).unwrap();
    let pg_receivewal = as_server_user(&client_tool(o.major, "pg_receivewal"), scratch)
        .arg("-D")
        .arg(&receivewal_dir)
        .args(["--slot", RECEIVEWAL_SLOT, "--no-loop", "-s", "1", "-d"])
        .arg(format!("{conninfo} application_name={RECEIVEWAL_SLOT}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("pg_receivewal");
    wait_until("both receivers stream", Duration::from_secs(60), || {
        pg.psql(&format!(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'
             AND application_name IN ('{PGSTREAM_SLOT}', '{RECEIVEWAL_SLOT}')"
        )) == "2"
    });

    eprintln!("bench drill: pgstream base, pg_basebackup");
    check(
        as_server_user(&pgstream, scratch)
            .args(["base", "--no-progress", "--checkpoint", "fast", "--repo"])
            .arg(&repo)
            .arg("--source")
            .arg(&conninfo)
            .env("PGSTREAM_LOG", "warn")
            .output()
            .unwrap(),
        "pgstream base",
    );
    let pg_backup = scratch.join("pg_basebackup");
    check(
        Command::new(client_tool(o.major, "pg_basebackup"))
            .args(["-Ft", "-Xs", "--compress=client-lz4", "-c", "fast", "-D"])
            .arg(&pg_backup)
            .arg("-d")
            .arg(&conninfo)
            .output()
            .unwrap(),
        "pg_basebackup",
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pg_backup.join("backup_manifest")).unwrap())
            .expect("pg_basebackup's backup_manifest");
    let pg_backup_start = parse_lsn(manifest["WAL-Ranges"][0]["Start-LSN"].as_str().unwrap());

    // A fixed amount of WAL, in whole chunks of a fixed transaction count.
    let wal_mb: u64 = if o.scale >= 100 { 1024 } else { 256 };
    let lsn = || parse_lsn(&pg.psql("SELECT pg_current_wal_lsn()"));
    let load_start = lsn();
    let load_started = Instant::now();
    let mut transactions = 0u64;
    let chunk = |transactions: &mut u64| {
        pgbench(
            pg,
            &[
                "-c",
                "4",
                "-j",
                "2",
                "-M",
                "prepared",
                "-t",
                &CHUNK_TX.to_string(),
            ],
        );
        *transactions += 4 * u64::from(CHUNK_TX);
    };
    while lsn() - load_start < wal_mb * 1048576 {
        chunk(&mut transactions);
        eprintln!(
            "bench drill: load: {transactions} transactions, {:.0} MiB of WAL",
            (lsn() - load_start) as f64 / MIB
        );
    }
    let load_seconds = load_started.elapsed().as_secs_f64();
    let load_wal_bytes = lsn() - load_start;
    // The server's clock after the last commit before it: UTC with a Z, as --target-time wants.
    let target_time = pg.psql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    std::thread::sleep(Duration::from_millis(50));
    let after_target = lsn();
    chunk(&mut transactions);
    let after_target_wal_bytes = lsn() - after_target;
    // The switch record's end, not the current LSN: WAL written after the switch (autovacuum)
    // would sit in a segment pg_receivewal flushes only when it is full.
    let end = pg.psql("SELECT pg_switch_wal()");
    wait_until(
        "both receivers have flushed the switched WAL",
        Duration::from_secs(600),
        || {
            pg.psql(&format!(
                "SELECT count(*) FROM pg_stat_replication WHERE flush_lsn >= '{end}'
                 AND application_name IN ('{PGSTREAM_SLOT}', '{RECEIVEWAL_SLOT}')"
            )) == "2"
        },
    );
    terminate(receive_wal, "pgstream receive-wal");
    terminate(pg_receivewal, "pg_receivewal");
    Prepared {
        repo,
        pgstream,
        pg_backup,
        receivewal_dir,
        target_time,
        pg_backup_start,
        db_bytes,
        load_wal_bytes,
        load_seconds,
        after_target_wal_bytes,
        transactions,
    }
}

fn seconds(v: &serde_json::Value) -> Option<f64> {
    v.as_f64()
}

/// `pgstream drill --target-time T --json`, as root with the server as the server's user;
/// with `copy_wal`, `--copy-wal` (the WAL decrypted into pg_wal/ during the restore phase).
fn drill_run(
    o: &Options,
    p: &Prepared,
    scratch: &Path,
    copy_wal: bool,
    not_passed: &mut Vec<String>,
) -> Run {
    let mut cmd = Command::new(&p.pgstream);
    cmd.args(["drill", "--json", "--repo"])
        .arg(&p.repo)
        .args(copy_wal.then_some("--copy-wal"))
        .args(["--target-time", &p.target_time, "--pg-bin"])
        .arg(integration::pg_bin_dir(o.major))
        .arg("--scratch")
        .arg(scratch)
        .env("PGSTREAM_PASSPHRASE", PASSPHRASE)
        .env("PGSTREAM_LOG", "warn");
    if let ServerUser::Switch { name, .. } = server_user() {
        cmd.args(["--os-user", name]);
    }
    let started = Instant::now();
    let out = cmd.output().expect("pgstream drill");
    let wall = started.elapsed().as_secs_f64();
    let json = check(out, "pgstream drill");
    let report: serde_json::Value = serde_json::from_str(&json).expect("the drill's JSON report");
    assert_eq!(report["result"], "PASS", "the drill failed:\n{json}");
    for c in report["checks"].as_array().unwrap() {
        if c["status"] != "pass" {
            let name = format!("{} ({})", c["name"].as_str().unwrap(), c["status"]);
            if !not_passed.contains(&name) {
                not_passed.push(name);
            }
        }
    }
    let t = &report["timings"];
    let start = parse_lsn(report["backup"]["start_lsn"].as_str().unwrap());
    let reached = parse_lsn(report["reached"]["lsn"].as_str().unwrap());
    Run {
        restore: seconds(&t["restore_seconds"]).unwrap(),
        server_start: seconds(&t["server_start_seconds"]),
        replay: seconds(&t["wal_replay_seconds"]),
        promote: seconds(&t["promote_seconds"]),
        total_recovery: seconds(&t["total_recovery_seconds"]).unwrap(),
        checks: seconds(&t["checks_seconds"]),
        wall,
        replayed_bytes: reached - start,
        restored_bytes: None,
    }
}

/// `2026-11-21T09:22:46.231675Z` in the form `pgstream restore` writes for
/// recovery_target_time, `2026-11-21 09:22:46.231675+00` (PostgreSQL 16 refused the first as
/// an invalid value).
fn server_time(rfc3339: &str) -> String {
    format!("{}+00", rfc3339.replacen('T', " ", 1).trim_end_matches('Z'))
}

/// The runbook by hand: unpack pg_basebackup's tars, point restore_command at pg_receivewal's
/// directory, start, wait until promoted.
fn by_hand_run(o: &Options, p: &Prepared, target: &Path) -> Run {
    let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let script = format!(
        "set -e -o pipefail
         mkdir -p {t}/pg_wal
         /usr/bin/lz4 -dc {b}/base.tar.lz4 | tar -xf - -C {t}
         if [ -e {b}/pg_wal.tar.lz4 ]; then
             /usr/bin/lz4 -dc {b}/pg_wal.tar.lz4 | tar -xf - -C {t}/pg_wal
         else
             tar -xf {b}/pg_wal.tar -C {t}/pg_wal
         fi
         touch {t}/recovery.signal
         sync -f {t}",
        t = q(target),
        b = q(&p.pg_backup)
    );
    let started = Instant::now();
    check(
        Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap(),
        "unpacking pg_basebackup's tars",
    );
    let restore = started.elapsed().as_secs_f64();
    // Files counted, not the filesystem's allocation. Not part of the runbook: its time moves
    // the start.
    let counting = Instant::now();
    let restored_bytes = super::dir_size(target);
    let started = started + counting.elapsed();
    let mut builder: ClusterBuilder = cluster(o.major).restored_data_dir(target);
    for (k, v) in SETTINGS {
        builder = builder.setting(k, v);
    }
    let restore_command = format!("cp {}/%f %p", p.receivewal_dir.display());
    let pg = builder
        .setting("restore_command", &format!("'{restore_command}'"))
        .setting(
            "recovery_target_time",
            &format!("'{}'", server_time(&p.target_time)),
        )
        .setting("recovery_target_action", "promote")
        .start();
    let server_start = started.elapsed().as_secs_f64() - restore;
    let deadline = Instant::now() + Duration::from_secs(3600);
    while pg.try_psql("SELECT pg_is_in_recovery()").as_deref() != Ok("f") {
        assert!(Instant::now() < deadline, "recovery by hand did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    let total_recovery = started.elapsed().as_secs_f64();
    let reached = parse_lsn(&pg.psql("SELECT pg_last_wal_replay_lsn()"));
    drop(pg);
    std::fs::remove_dir_all(target).ok();
    Run {
        restore,
        server_start: Some(server_start),
        replay: None,
        promote: None,
        total_recovery,
        checks: None,
        wall: total_recovery,
        replayed_bytes: reached - p.pg_backup_start,
        restored_bytes: Some(restored_bytes),
    }
}

/// Runs the drill benchmark and writes its section of `o.out`.
pub fn run(o: &Options) {
    assert!(
        Path::new("/usr/bin/lz4").exists(),
        "/usr/bin/lz4 is missing: apt-get install lz4"
    );
    let load_before = load_average();
    let memory = integration::memory();
    let scratch = integration::scratch_dir();
    let mut builder = cluster(o.major);
    for (k, v) in SETTINGS {
        builder = builder.setting(k, v);
    }
    let pg = builder.start();
    let prepared = prepare(o, &pg, scratch.path());
    // The recoveries need nothing from the source: stopped, it competes for nothing.
    pg.stop();
    let mut ways = [
        Way {
            way: "pgstream drill (restore_command = pgstream wal-fetch)",
            runs: Vec::new(),
            not_passed: Vec::new(),
        },
        Way {
            way: "pgstream drill --copy-wal",
            runs: Vec::new(),
            not_passed: Vec::new(),
        },
        Way {
            way: "by hand (pg_basebackup tar + pg_receivewal, cp)",
            runs: Vec::new(),
            not_passed: Vec::new(),
        },
    ];
    for run in 0..o.runs {
        // Each way goes first once in three runs, so caches and neighbours favour none.
        for k in 0..ways.len() {
            let i = (run + k) % ways.len();
            // Untimed: whatever else is dirty is written now, not charged to the next run.
            let flushed = Command::new("sync").arg("-f").arg(scratch.path()).status();
            assert!(flushed.is_ok_and(|s| s.success()), "sync -f failed");
            let way = &mut ways[i];
            let r = match i {
                0 | 1 => drill_run(o, &prepared, scratch.path(), i == 1, &mut way.not_passed),
                _ => by_hand_run(o, &prepared, &scratch.path().join(format!("by-hand{run}"))),
            };
            eprintln!(
                "bench drill: run {run}, {}: total recovery {:.2} s (restore {:.2} s), wall {:.2} s",
                way.way, r.total_recovery, r.restore, r.wall
            );
            way.runs.push(r);
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let load = format!(
        "{load_before} / {}; memory at the start: {memory}",
        load_average()
    );
    let section = report::report(o, &prepared, &ways, &load);
    println!("{section}");
    super::section::write_section(o.out, "drill", &section);
}
