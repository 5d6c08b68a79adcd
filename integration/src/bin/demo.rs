//! `just demo`: the main job on a throwaway local cluster, start to finish.
//!
//! Starts a PostgreSQL cluster in a temporary directory (with a user tablespace), loads pgbench
//! data, creates an encrypted repository, takes a base backup with `pgstream base`, restores it
//! with `pgstream restore` to new locations, checks it with `pg_verifybackup`, starts the
//! restored cluster and compares its contents with the source. Everything is removed at the end
//! (set PGSTREAM_KEEP_CLUSTERS=1 to keep it).
//!
//! Usage: demo [--major N] [--scale S] [--pgstream PATH]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use integration::{client_tool, client_tool_major, cluster, scratch_dir, server_user, ServerUser};

const PASSPHRASE: &str = "demo passphrase: use a real secret";

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not run {:?}: {e}", cmd.get_program()));
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        panic!("{what} failed ({})", out.status);
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pgstream(bin: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(bin);
    cmd.args(args).env("PGSTREAM_PASSPHRASE", PASSPHRASE);
    let out = run(&mut cmd, &format!("pgstream {}", args[0]));
    for line in out.lines() {
        println!("    {line}");
    }
    out
}

fn count(pg: &integration::Cluster, sql: &str) -> String {
    pg.psql(sql)
}

fn main() {
    let mut major = 16;
    let mut scale = 5;
    let mut bin = PathBuf::from("target/release/pgstream");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--major" => major = args.next().and_then(|v| v.parse().ok()).expect("--major N"),
            "--scale" => scale = args.next().and_then(|v| v.parse().ok()).expect("--scale S"),
            "--pgstream" => bin = PathBuf::from(args.next().expect("--pgstream PATH")),
            other => panic!(
                "unknown argument {other} (usage: demo [--major N] [--scale S] [--pgstream PATH])"
            ),
        }
    }
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build --release -p pgstream-cli` (`just demo` does)",
        bin.display()
    );
    let t0 = Instant::now();

    step(
        1,
        &format!("starting a throwaway PostgreSQL {major} cluster with a tablespace"),
    );
    let pg = cluster(major).tablespace("ts_demo").start();
    println!("    {} (port {})", pg.data_dir().display(), pg.port());

    step(
        2,
        &format!("loading pgbench data (scale {scale}) and a table in the tablespace"),
    );
    run(
        Command::new(client_tool(major, "pgbench"))
            .args(["-i", "-q", "-s", &scale.to_string(), "-d"])
            .arg(pg.conninfo("postgres")),
        "pgbench -i",
    );
    pg.psql(
        "CREATE TABLE demo_events (id bigint, at timestamptz, payload text) TABLESPACE ts_demo;
         INSERT INTO demo_events SELECT g, now(), md5(g::text) FROM generate_series(1, 100000) g;",
    );
    let accounts = count(&pg, "SELECT count(*) FROM pgbench_accounts");
    let events = count(&pg, "SELECT count(*) FROM demo_events");
    println!("    pgbench_accounts: {accounts} rows, demo_events: {events} rows");

    let scratch = scratch_dir();
    let repo = scratch.path().join("repository");
    let repo_s = repo.to_str().unwrap().to_string();

    step(3, "creating an encrypted repository (lz4 + AES-256-GCM)");
    pgstream(&bin, &["init", "--repo", &repo_s]);

    step(4, "taking a base backup over the replication protocol");
    let conninfo = pg.conninfo("postgres");
    pgstream(
        &bin,
        &[
            "base",
            "--repo",
            &repo_s,
            "--source",
            &conninfo,
            "--label",
            "demo",
            "--no-progress",
        ],
    );
    pgstream(&bin, &["list", "--repo", &repo_s]);

    step(
        5,
        "restoring it into a new directory, with the tablespace moved",
    );
    let target = scratch.path().join("restored");
    let new_ts = scratch.path().join("restored-tablespace");
    let mapping = format!(
        "{}={}",
        pg.tablespace_dir("ts_demo").display(),
        new_ts.display()
    );
    pgstream(
        &bin,
        &[
            "restore",
            "--repo",
            &repo_s,
            "--to",
            target.to_str().unwrap(),
            "--tablespace-map",
            &mapping,
        ],
    );

    step(6, "checking the restored directory with pg_verifybackup");
    let (verify, tool_major) = client_tool_major(major, "pg_verifybackup");
    let mut cmd = Command::new(verify);
    if tool_major != major {
        cmd.arg("-n"); // pg_waldump reads only its own major's WAL
    }
    let out = run(cmd.arg(&target), "pg_verifybackup");
    println!("    {}", out.trim());

    step(
        7,
        "starting the restored cluster and comparing it with the source",
    );
    if let ServerUser::Switch { name, .. } = server_user() {
        run(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{name}:"))
                .arg(&new_ts),
            "chown",
        );
    }
    let restored = cluster(major).restored_data_dir(&target).start();
    let r_accounts = count(&restored, "SELECT count(*) FROM pgbench_accounts");
    let r_events = count(&restored, "SELECT count(*) FROM demo_events");
    let same = |q: &str| count(&pg, q) == count(&restored, q);
    let checksum = "SELECT md5(string_agg(aid::text || abalance::text, ',' ORDER BY aid)) FROM pgbench_accounts";
    println!("    pgbench_accounts: {r_accounts} rows, demo_events: {r_events} rows");
    assert_eq!(
        (accounts, events),
        (r_accounts, r_events),
        "row counts differ"
    );
    assert!(same(checksum), "pgbench_accounts contents differ");
    println!("    contents match the source");
    drop(restored);
    drop(pg);
    println!(
        "\ndemo complete in {:.1} s: backed up, restored, verified and started. Everything was temporary and has been removed.",
        t0.elapsed().as_secs_f64()
    );
}
