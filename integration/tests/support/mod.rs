//! Helpers shared by the end-to-end tests of the protocol client.
#![allow(dead_code)]

pub mod archiving;
pub mod openmetrics;
pub mod proxy;
pub mod receiver;
pub mod restored;
pub mod s3repo;
pub mod setup;
pub mod standby;
pub mod wal;

use integration::Cluster;
use pgwire_repl::config::{Config, ReplicationMode};
use pgwire_repl::Connection;

/// Client settings for `conninfo`, parsed without consulting the PG* environment.
pub fn config(conninfo: &str) -> Config {
    Config::parse(conninfo).unwrap_or_else(|e| panic!("parsing {conninfo:?}: {e}"))
}

/// A physical replication connection to `pg` as `postgres` over TCP.
pub async fn replication(pg: &Cluster) -> Connection {
    let mut cfg = config(&pg.conninfo("postgres"));
    cfg.replication = ReplicationMode::Physical;
    Connection::connect(&cfg)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL {}: connecting: {e}", pg.major()))
}

/// An ordinary SQL connection to `pg` as `postgres` over TCP.
pub async fn sql(pg: &Cluster) -> Connection {
    let cfg = config(&pg.conninfo("postgres"));
    Connection::connect(&cfg)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL {}: connecting: {e}", pg.major()))
}

/// The WAL file name of the segment holding `lsn` (protocol.md §6).
pub fn segment_file_name(tli: u32, lsn: u64, seg_size: u64) -> String {
    let segno = lsn / seg_size;
    let per_id = 0x1_0000_0000u64 / seg_size;
    format!("{:08X}{:08X}{:08X}", tli, segno / per_id, segno % per_id)
}

/// Polls `check` every 100 ms for up to 30 s.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out waiting until {what}");
}

/// A running standby and the scratch directory holding its data directory. Fields drop in
/// declaration order: the server is stopped before its directory is removed, even on panic.
pub struct Standby {
    pub cluster: Cluster,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Standby {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

/// A hot standby of `primary`, made with `pg_basebackup -R` (as the harness self-test does) and
/// started on its own port, in recovery when this returns.
pub fn start_standby(primary: &Cluster) -> Standby {
    let major = primary.major();
    let scratch = integration::scratch_dir();
    let standby_dir = scratch.path().join("standby");
    let out = std::process::Command::new(integration::client_tool(major, "pg_basebackup"))
        .arg("-D")
        .arg(&standby_dir)
        .args([
            "-d",
            &primary.conninfo("postgres"),
            "-X",
            "stream",
            "-R",
            "-c",
            "fast",
        ])
        .env_remove("PGPASSWORD")
        .output()
        .unwrap_or_else(|e| panic!("PostgreSQL {major}: cannot run pg_basebackup: {e}"));
    assert!(
        out.status.success(),
        "PostgreSQL {major}: pg_basebackup for a standby failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let standby = Standby {
        cluster: integration::cluster(major)
            .restored_data_dir(&standby_dir)
            .start(),
        _dir: scratch,
    };
    wait_until(
        &format!("the PostgreSQL {major} standby is in recovery"),
        || standby.try_psql("SELECT pg_is_in_recovery()").as_deref() == Ok("t"),
    );
    standby
}

/// The `pgstream` binary, built once per test process (cheap when it is up to date).
pub fn pgstream_bin() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = std::process::Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "pgstream-cli",
                    "--bin",
                    "pgstream",
                    // Failpoints stay off unless a test sets PGSTREAM_FAILPOINTS.
                    "--features",
                    "failpoints",
                ])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .status()
                .expect("running cargo build for the pgstream binary");
            assert!(status.success(), "building the pgstream binary failed");
            // target/<profile>/deps/<test> → target/<profile>/pgstream
            let exe = std::env::current_exe().expect("test executable path");
            let bin = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("target directory")
                .join("pgstream");
            assert!(bin.exists(), "{} was not built", bin.display());
            bin
        })
        .clone()
}

/// Output of one pgstream run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs pgstream with `args`, the given passphrase in PGSTREAM_PASSPHRASE (if any), and none
/// of the caller's PG* or PGSTREAM_* variables.
pub fn pgstream(args: &[&str], passphrase: Option<&str>) -> Run {
    let mut cmd = std::process::Command::new(pgstream_bin());
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    no_config_file(&mut cmd);
    if let Some(p) = passphrase {
        cmd.env("PGSTREAM_PASSPHRASE", p);
    }
    let out = cmd.output().expect("running pgstream");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An unstarted `pgstream` command with `args`, the passphrase (if any), and none of the
/// caller's PG* or PGSTREAM_* variables: for tests that spawn, signal or wrap the process.
pub fn pgstream_command(args: &[&str], passphrase: Option<&str>) -> std::process::Command {
    let mut cmd = std::process::Command::new(pgstream_bin());
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    no_config_file(&mut cmd);
    if let Some(p) = passphrase {
        cmd.env("PGSTREAM_PASSPHRASE", p);
    }
    cmd
}

/// An empty configuration file, so that a /etc/pgstream/pgstream.toml on the machine (its
/// top-level keys apply to every command) never changes what a test runs.
pub fn no_config_file(cmd: &mut std::process::Command) {
    cmd.env("PGSTREAM_CONFIG", "/dev/null");
}

/// The newest of the majors under test, for tests whose subject does not depend on the version.
pub fn newest_major() -> u32 {
    *integration::test_majors().last().unwrap()
}

/// A started cluster of the newest major under test and a scratch directory with the path of
/// a repository in it (not created), for tests whose subject does not depend on the version.
pub fn newest_cluster_and_repo_path(
) -> (integration::Cluster, tempfile::TempDir, std::path::PathBuf) {
    let pg = integration::cluster(newest_major()).start();
    let scratch = integration::scratch_dir();
    let repo = scratch.path().join("repo");
    (pg, scratch, repo)
}

/// The oldest and the newest of the majors under test (one when they are the same), for tests
/// where versions differ at the ends (recovery functions, timelines) but a run per major would
/// take too long.
pub fn oldest_and_newest_majors() -> Vec<u32> {
    let majors = integration::test_majors();
    let (Some(&oldest), Some(&newest)) = (majors.iter().min(), majors.iter().max()) else {
        return majors;
    };
    if oldest == newest {
        vec![oldest]
    } else {
        vec![oldest, newest]
    }
}

/// The `--os-user` the harness's server user stands for (none when not root).
pub fn os_user() -> Option<String> {
    match integration::server_user() {
        integration::ServerUser::Current => None,
        integration::ServerUser::Switch { name, .. } => Some(name.clone()),
    }
}

/// `run`, checked to have exited 0.
pub fn ok(run: Run, what: &str) -> Run {
    assert_eq!(run.code, 0, "{what} failed: {run:?}");
    run
}

/// `pgstream restore-point --source <pg> NAME`, checked to exit 0.
pub fn restore_point(pg: &integration::Cluster, name: &str) -> Run {
    ok(
        pgstream(
            &["restore-point", "--source", &pg.conninfo("postgres"), name],
            None,
        ),
        "restore-point",
    )
}

pub fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `pgstream init` of `repo` with `passphrase`, checked to succeed.
pub fn init_repo(repo: &std::path::Path, passphrase: &str) {
    ok(
        pgstream(
            &["init", "--repo", repo.to_str().unwrap()],
            Some(passphrase),
        ),
        "init",
    );
}

/// Polls `check` every 200 ms for up to 60 s; the server log's tail when it never holds.
pub fn wait_for_server(pg: &Cluster, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let log = pg.server_log();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    panic!(
        "PostgreSQL {}: timed out waiting until {what}; server log tail:\n{}",
        pg.major(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

/// Every file under `dir`, recursively, sorted.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
