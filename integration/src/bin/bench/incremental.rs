//! The incremental half of `just bench` (PostgreSQL 17+, summarize_wal on): after about 2% of
//! a pgbench database changed, what an incremental backup costs against a full one, and against
//! `pg_basebackup --incremental`; then what restoring a chain of three costs against restoring
//! a full backup of the same data, and against PostgreSQL's own route for tar backups
//! (unpacking each backup, then pg_combinebackup).
//!
//! The change is 2% of pgbench_accounts' rows, in one contiguous range of account ids (so about
//! 2% of its pages, the new row versions and the index entries change, as a day of a real
//! workload touches part of a table rather than one row on every page), then a checkpoint and
//! a WAL switch so the summaries cover it.
//!
//! Backups: `pgstream base --incremental --from F` against `pgstream base` (lz4, AES-256-GCM,
//! fsynced, the WAL streamed alongside), and `pg_basebackup -Ft -Xs --compress=client-lz4
//! --incremental=P/backup_manifest` against the full pg_basebackup P, runs alternating; every
//! incremental run is relative to the same full backup. Restores: `pgstream restore` of the
//! third backup of a chain, of a full pgstream backup of the same state, and a shell script that
//! unpacks the three pg_basebackup backups (`lz4 -dc | tar -x`), runs `pg_combinebackup` (which
//! fsyncs its output) and syncs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use integration::{client_tool, cluster, Cluster};

use super::{measure, median, Sample};

const PASSPHRASE: &str = "benchmark passphrase, not a secret";

pub struct Options<'a> {
    pub major: u32,
    pub scale: u32,
    pub runs: usize,
    pub pgstream: &'a Path,
}

/// Runs of one kind.
struct Runs {
    what: &'static str,
    samples: Vec<Sample>,
}

impl Runs {
    fn new(what: &'static str) -> Runs {
        Runs {
            what,
            samples: Vec::new(),
        }
    }
    fn wall(&self) -> f64 {
        median(self.samples.iter().map(|s| s.wall).collect())
    }
    fn cpu(&self) -> f64 {
        median(self.samples.iter().map(|s| s.cpu).collect())
    }
    fn server_cpu(&self) -> f64 {
        median(self.samples.iter().map(|s| s.server_cpu).collect())
    }
    fn stored(&self) -> f64 {
        median(self.samples.iter().map(|s| s.stored_bytes as f64).collect())
    }
    fn spread(&self) -> (f64, f64) {
        let w: Vec<f64> = self.samples.iter().map(|s| s.wall).collect();
        (
            w.iter().cloned().fold(f64::INFINITY, f64::min),
            w.iter().cloned().fold(0.0, f64::max),
        )
    }
}

fn pgstream(o: &Options, args: &[&str]) -> Command {
    let mut cmd = Command::new(o.pgstream);
    cmd.args(args)
        .env("PGSTREAM_PASSPHRASE", PASSPHRASE)
        .env("PGSTREAM_LOG", "warn");
    cmd
}

fn run_ok(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Changes about 2% of the database: account ids `from..from+count`, then makes the WAL
/// summarizer catch up.
fn change(pg: &Cluster, from: u64, count: u64) {
    pg.psql(&format!(
        "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid > {from} AND aid <= {}",
        from + count
    ));
    pg.psql("CHECKPOINT");
    pg.psql("SELECT pg_switch_wal()");
    pg.psql("CHECKPOINT");
    // The summarizer works a segment behind: give it the switch.
    std::thread::sleep(std::time::Duration::from_secs(2));
}

/// `pgstream base` of `pg` into `repo` (with `extra`); the record's id and stored bytes.
fn pgstream_base(o: &Options, pg: &Cluster, repo: &Path, extra: &[&str]) -> (Sample, String) {
    let conninfo = pg.conninfo("postgres");
    let mut args = vec!["base", "--no-progress", "--json", "--repo"];
    let repo_s = repo.to_str().unwrap();
    args.push(repo_s);
    args.extend(["--source", &conninfo]);
    args.extend_from_slice(extra);
    let json = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("exec \"$0\" \"$@\" > '{}'", json.path().display()))
        .arg(o.pgstream)
        .args(&args)
        .env("PGSTREAM_PASSPHRASE", PASSPHRASE)
        .env("PGSTREAM_LOG", "warn");
    let mut sample = measure(cmd, repo, Some(pg));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json.path()).unwrap()).unwrap();
    sample.stored_bytes = record["stored_bytes"].as_u64().unwrap();
    (sample, record["id"].as_str().unwrap().to_string())
}

/// `pg_basebackup -Ft -Xs --compress=client-lz4 -c fast -D dir` (incremental on `of`).
fn pg_basebackup(o: &Options, pg: &Cluster, dir: &Path, of: Option<&Path>) -> Sample {
    let mut cmd = Command::new(client_tool(o.major, "pg_basebackup"));
    cmd.args(["-Ft", "-Xs", "--compress=client-lz4", "-c", "fast", "-D"])
        .arg(dir)
        .arg("-d")
        .arg(pg.conninfo("postgres"));
    if let Some(parent) = of {
        cmd.arg(format!(
            "--incremental={}",
            parent.join("backup_manifest").display()
        ));
    }
    measure(cmd, dir, Some(pg))
}

/// The results, for the report.
pub struct Results {
    db_bytes: u64,
    changed_rows: u64,
    backups: Vec<Runs>,
    restores: Vec<Runs>,
    restored_bytes: u64,
}

pub fn run(o: &Options) -> Results {
    eprintln!(
        "bench: incremental backups, pgbench scale {} on PostgreSQL {}",
        o.scale, o.major
    );
    let pg = cluster(o.major)
        .setting("max_wal_size", "2GB")
        .setting("summarize_wal", "on")
        .start();
    run_ok(
        {
            let mut c = Command::new(client_tool(o.major, "pgbench"));
            c.args(["-i", "-q", "-s", &o.scale.to_string(), "-d"])
                .arg(pg.conninfo("postgres"));
            c
        },
        "pgbench -i",
    );
    pg.psql("VACUUM (FREEZE, ANALYZE); CHECKPOINT");
    let db_bytes: u64 = pg
        .psql("SELECT sum(pg_database_size(oid)) FROM pg_database")
        .parse()
        .unwrap();
    let rows = u64::from(o.scale) * 100_000;
    let changed = rows / 50;
    let scratch = integration::scratch_dir();
    let dir = |name: &str| scratch.path().join(name);

    // The full backups everything is relative to, then 2% changes.
    let repo = dir("repo");
    run_ok(
        pgstream(o, &["init", "--repo", repo.to_str().unwrap()]),
        "init",
    );
    let (_, full_id) = pgstream_base(o, &pg, &repo, &[]);
    let pg_full = dir("pg-full");
    pg_basebackup(o, &pg, &pg_full, None);
    change(&pg, 0, changed);

    let mut full = Runs::new("pgstream base (full)");
    let mut inc = Runs::new("pgstream base --incremental");
    let mut pg_full_runs = Runs::new("pg_basebackup (full)");
    let mut pg_inc = Runs::new("pg_basebackup --incremental");
    let mut first_inc = None;
    let mut first_pg_inc = None;
    for run in 0..o.runs {
        eprintln!("bench: incremental, run {} of {}", run + 1, o.runs);
        // Full backups go into a repository of their own, removed after.
        let full_repo = dir(&format!("full-{run}"));
        run_ok(
            pgstream(o, &["init", "--repo", full_repo.to_str().unwrap()]),
            "init",
        );
        let steps: [u8; 4] = if run % 2 == 0 {
            [0, 1, 2, 3]
        } else {
            [3, 2, 1, 0]
        };
        for step in steps {
            match step {
                0 => full.samples.push(pgstream_base(o, &pg, &full_repo, &[]).0),
                1 => {
                    let (s, id) =
                        pgstream_base(o, &pg, &repo, &["--incremental", "--from", &full_id]);
                    inc.samples.push(s);
                    first_inc.get_or_insert(id);
                }
                2 => {
                    let d = dir(&format!("pg-full-{run}"));
                    pg_full_runs.samples.push(pg_basebackup(o, &pg, &d, None));
                    std::fs::remove_dir_all(&d).ok();
                }
                _ => {
                    let d = dir(&format!("pg-inc-{run}"));
                    pg_inc
                        .samples
                        .push(pg_basebackup(o, &pg, &d, Some(&pg_full)));
                    if first_pg_inc.is_none() {
                        first_pg_inc = Some(d);
                    } else {
                        std::fs::remove_dir_all(&d).ok();
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        std::fs::remove_dir_all(&full_repo).ok();
    }

    // A chain of three: another 2% changes, a second incremental of each tool, and a full
    // pgstream backup of the same state to compare the chain's restore with.
    change(&pg, changed, changed);
    let first_inc = first_inc.expect("runs >= 1");
    let first_pg_inc = first_pg_inc.expect("runs >= 1");
    let (_, last_id) = pgstream_base(o, &pg, &repo, &["--incremental", "--from", &first_inc]);
    let pg_last = dir("pg-last");
    pg_basebackup(o, &pg, &pg_last, Some(&first_pg_inc));
    let (_, same_full_id) = pgstream_base(o, &pg, &repo, &[]);
    drop(pg);

    let mut chain_restore = Runs::new("pgstream restore of a chain of three");
    let mut full_restore = Runs::new("pgstream restore of a full backup");
    let mut combine = Runs::new("`lz4 -dc \\| tar -x` of three backups, then pg_combinebackup");
    let mut restored_bytes = 0;
    for run in 0..o.runs {
        eprintln!("bench: chain restore, run {} of {}", run + 1, o.runs);
        let steps: [u8; 3] = if run % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
        for step in steps {
            let target = dir(&format!("restore-{run}-{step}"));
            sync(scratch.path());
            let sample = match step {
                0 | 1 => {
                    let id = if step == 0 { &last_id } else { &same_full_id };
                    let cmd = pgstream(
                        o,
                        &[
                            "restore",
                            "--repo",
                            repo.to_str().unwrap(),
                            "--to",
                            target.to_str().unwrap(),
                            "--backup",
                            id,
                        ],
                    );
                    measure(cmd, &target, None)
                }
                _ => {
                    let script =
                        combine_script(o.major, &[&pg_full, &first_pg_inc, &pg_last], &target);
                    let mut cmd = Command::new("bash");
                    cmd.arg("-c").arg(script);
                    measure(cmd, &target.join("data"), None)
                }
            };
            restored_bytes = restored_bytes.max(if step == 0 { sample.stored_bytes } else { 0 });
            match step {
                0 => chain_restore.samples.push(sample),
                1 => full_restore.samples.push(sample),
                _ => combine.samples.push(sample),
            }
            std::fs::remove_dir_all(&target).ok();
        }
    }
    Results {
        db_bytes,
        changed_rows: changed,
        backups: vec![full, inc, pg_full_runs, pg_inc],
        restores: vec![full_restore, chain_restore, combine],
        restored_bytes,
    }
}

fn sync(dir: &Path) {
    let _ = Command::new("sync").arg("-f").arg(dir).status();
}

/// Unpacks each pg_basebackup tar backup (`lz4 -dc | tar -x`, with its manifest) into its own
/// directory under `target/inputs`, then pg_combinebackup into `target/data`, then syncs.
fn combine_script(major: u32, backups: &[&PathBuf], target: &Path) -> String {
    let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let mut script = String::from("set -e -o pipefail\n");
    let mut inputs = Vec::new();
    for (i, b) in backups.iter().enumerate() {
        let d = target.join("inputs").join(i.to_string());
        let wal = if b.join("pg_wal.tar.lz4").exists() {
            format!(
                "/usr/bin/lz4 -dc {}/pg_wal.tar.lz4 | tar -xf - -C {}/pg_wal",
                q(b),
                q(&d)
            )
        } else {
            format!("tar -xf {}/pg_wal.tar -C {}/pg_wal", q(b), q(&d))
        };
        script += &format!(
            "mkdir -p {d} {d}/pg_wal && /usr/bin/lz4 -dc {b}/base.tar.lz4 | tar -xf - -C {d} && \
             {wal} && cp {b}/backup_manifest {d}/\n",
            d = q(&d),
            b = q(b)
        );
        inputs.push(q(&d));
    }
    script += &format!(
        "{} {} -o {}\nsync -f {}\n",
        q(&client_tool(major, "pg_combinebackup")),
        inputs.join(" "),
        q(&target.join("data")),
        q(target)
    );
    script
}

pub fn report(o: &Options, r: &Results, machine: &str, load: &str) -> String {
    let mut s = String::new();
    let mib = |b: f64| b / 1048576.0;
    writeln!(s, "## Incremental backups (PostgreSQL {}+)\n", 17).unwrap();
    writeln!(
        s,
        "Measured by `just bench` (integration/src/bin/bench/incremental.rs): PostgreSQL {}, pgbench scale {} ({:.0} MiB), {} runs per kind, alternating, medians shown. Machine: {machine}; load average before / after: {load}. Between the full backups and the incremental ones, {} of pgbench_accounts' {} rows (2%, one contiguous range of ids) were updated. Every incremental run is relative to the same full backup. Server CPU is what the PostgreSQL processes used meanwhile.\n",
        o.major,
        o.scale,
        mib(r.db_bytes as f64),
        o.runs,
        r.changed_rows,
        r.changed_rows * 50
    )
    .unwrap();
    writeln!(
        s,
        "| backup | wall (s) | wall min–max (s) | CPU (s) | server CPU (s) | stored (MiB) |"
    )
    .unwrap();
    writeln!(s, "|---|---|---|---|---|---|").unwrap();
    for b in &r.backups {
        let (lo, hi) = b.spread();
        writeln!(
            s,
            "| {} | {:.2} | {lo:.2}–{hi:.2} | {:.2} | {:.2} | {:.1} |",
            b.what,
            b.wall(),
            b.cpu(),
            b.server_cpu(),
            mib(b.stored())
        )
        .unwrap();
    }
    let [full, inc, pg_full, pg_inc] = [&r.backups[0], &r.backups[1], &r.backups[2], &r.backups[3]];
    writeln!(s, "\n| ratio | measured | goal |").unwrap();
    writeln!(s, "|---|---|---|").unwrap();
    let goal = |v: f64, max: f64| if v <= max { "met" } else { "**missed**" };
    let stored = inc.stored() / full.stored();
    let wall = inc.wall() / full.wall();
    writeln!(
        s,
        "| incremental / full, stored bytes | {stored:.3} | ≤ 0.10: {} |",
        goal(stored, 0.10)
    )
    .unwrap();
    writeln!(
        s,
        "| incremental / full, wall | {wall:.3} | ≤ 0.30: {} |",
        goal(wall, 0.30)
    )
    .unwrap();
    writeln!(
        s,
        "| incremental / full, server CPU | {:.3} | |",
        inc.server_cpu() / full.server_cpu()
    )
    .unwrap();
    writeln!(
        s,
        "| pgstream / pg_basebackup, incremental wall | {:.3} | |",
        inc.wall() / pg_inc.wall()
    )
    .unwrap();
    writeln!(
        s,
        "| pgstream / pg_basebackup, incremental stored bytes | {:.3} | |",
        inc.stored() / pg_inc.stored()
    )
    .unwrap();
    writeln!(
        s,
        "| pg_basebackup incremental / full, wall | {:.3} | |",
        pg_inc.wall() / pg_full.wall()
    )
    .unwrap();
    writeln!(
        s,
        "\nRestores of the state after a second 2% change: the chain full → incremental → incremental, a full pgstream backup of the same state, and PostgreSQL's route for the same chain of tar backups. {:.0} MiB restored.\n",
        mib(r.restored_bytes as f64)
    )
    .unwrap();
    writeln!(s, "| restore | wall (s) | wall min–max (s) | CPU (s) |").unwrap();
    writeln!(s, "|---|---|---|---|").unwrap();
    for x in &r.restores {
        let (lo, hi) = x.spread();
        writeln!(
            s,
            "| {} | {:.2} | {lo:.2}–{hi:.2} | {:.2} |",
            x.what,
            x.wall(),
            x.cpu()
        )
        .unwrap();
    }
    let [full_r, chain_r, combine_r] = [&r.restores[0], &r.restores[1], &r.restores[2]];
    let vs_full = chain_r.wall() / full_r.wall();
    let vs_combine = chain_r.wall() / combine_r.wall();
    writeln!(s, "\n| ratio | measured | goal |").unwrap();
    writeln!(s, "|---|---|---|").unwrap();
    writeln!(
        s,
        "| chain restore / full restore, wall | {vs_full:.3} | ≤ 1.2: {} |",
        goal(vs_full, 1.2)
    )
    .unwrap();
    writeln!(
        s,
        "| chain restore / untar + pg_combinebackup, wall | {vs_combine:.3} | ≤ 0.5: {} |",
        goal(vs_combine, 0.5)
    )
    .unwrap();
    s
}
