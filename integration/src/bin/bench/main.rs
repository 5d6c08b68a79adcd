//! `just bench`: pgstream side by side with PostgreSQL's own tools, on throwaway clusters.
//!
//! For each dataset it alternates `pg_basebackup -Ft -Xs --compress=client-lz4` and
//! `pgstream base` (lz4 + AES-256-GCM, fsynced) against the same cluster, measures wall time,
//! CPU and peak RSS of each run with GNU time, and writes medians and ratios to
//! docs/BENCHMARKS.md. Then it restores the last backup of each tool, alternating: `pgstream
//! restore` against `lz4 -dc | tar -xf` of pg_basebackup's output (restore.rs). Numbers are
//! measured, never asserted: this is not a test.
//!
//! Usage: bench [--quick] [--major N] [--scale S] [--noise-mb M] [--runs R] [--out FILE]
//! [--pgstream PATH] [--no-restore] [--tablespace] [--no-drill | --drill-only] [--drop-caches]
//! [--no-incremental | --incremental-only] [--incremental-major N]
//!
//! `--tablespace` puts each dataset's table in a tablespace, so the tablespace paths of both
//! tools (an extra archive each, `--tablespace-map` on restore) are exercised too.
//!
//! Default datasets are sized like a small production database (pgbench scale 100, about
//! 1.5 GiB, and 1.5 GB of poorly compressible rows) so the ~0.1-0.2 s fixed cost of a backup
//! (process start, connections, checkpoint, key derivation) does not dominate; `--quick`
//! uses scale 30 and 400 MB.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use integration::{client_tool, cluster, machine, Cluster};

mod drill;
mod incremental;
mod restore;
mod section;
use restore::RestoreRow;

struct Options {
    major: u32,
    scale: u32,
    noise_mb: u32,
    runs: usize,
    out: PathBuf,
    pgstream: PathBuf,
    restore: bool,
    tablespace: bool,
    /// The drill benchmark (drill.rs): after the others, or alone with `--drill-only`.
    drill: bool,
    drill_only: bool,
    /// Empty the page cache first (`--drop-caches`, root only).
    drop_caches: bool,
    /// The incremental benchmark (incremental.rs): after the others, or alone with
    /// `--incremental-only`; on `incremental_major` (17+).
    incremental: bool,
    incremental_only: bool,
    incremental_major: u32,
}

fn parse_args() -> Options {
    let mut o = Options {
        major: 16,
        scale: 100,
        noise_mb: 1500,
        runs: 5,
        out: PathBuf::from("docs/BENCHMARKS.md"),
        pgstream: PathBuf::from("target/release/pgstream"),
        restore: true,
        tablespace: false,
        drill: true,
        drill_only: false,
        drop_caches: false,
        incremental: true,
        incremental_only: false,
        incremental_major: 18,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--quick" => {
                o.scale = 30;
                o.noise_mb = 400;
            }
            "--major" => o.major = value().parse().expect("--major N"),
            "--scale" => o.scale = value().parse().expect("--scale S"),
            "--noise-mb" => o.noise_mb = value().parse().expect("--noise-mb M"),
            "--runs" => o.runs = value().parse().expect("--runs R"),
            "--out" => o.out = PathBuf::from(value()),
            "--pgstream" => o.pgstream = PathBuf::from(value()),
            "--no-restore" => o.restore = false,
            "--tablespace" => o.tablespace = true,
            "--no-drill" => o.drill = false,
            "--drill-only" => o.drill_only = true,
            "--drop-caches" => o.drop_caches = true,
            "--no-incremental" => o.incremental = false,
            "--incremental-only" => o.incremental_only = true,
            "--incremental-major" => {
                o.incremental_major = value().parse().expect("--incremental-major N")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

/// One measured command run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    wall: f64,
    cpu: f64,
    /// CPU the server spent meanwhile (the walsender and the checkpoint).
    server_cpu: f64,
    max_rss_kb: u64,
    stored_bytes: u64,
}

/// CPU seconds of the postmaster and its reaped children (a finished walsender's time lands
/// in the postmaster's cutime/cstime), plus the live children's.
fn server_cpu(pg: &Cluster) -> f64 {
    let pid_file = std::fs::read_to_string(pg.data_dir().join("postmaster.pid")).unwrap();
    let postmaster: u32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
    let ticks = 100.0; // USER_HZ
    let stat = |pid: u32| -> Option<(u32, f64, f64)> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
        let n = |i: usize| f[i].parse::<f64>().unwrap_or(0.0);
        // After the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
        Some((f[1].parse().ok()?, n(11) + n(12), n(13) + n(14)))
    };
    let mut total = 0.0;
    if let Some((_, own, reaped)) = stat(postmaster) {
        total += own + reaped;
    }
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((ppid, own, _)) = stat(pid) {
            if ppid == postmaster {
                total += own;
            }
        }
    }
    total / ticks
}

/// The 1, 5 and 15 minute load averages, as `uptime` shows them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| "?".into())
}

/// Runs `cmd` under GNU time and returns its measurements; `pg`'s CPU is counted meanwhile.
fn measure(cmd: Command, output: &Path, pg: Option<&Cluster>) -> Sample {
    let server_before = pg.map_or(0.0, server_cpu);
    let stats = tempfile::NamedTempFile::new().unwrap();
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%e %U %S %M")
        .arg("-o")
        .arg(stats.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let out = timed
        .output()
        .expect("running /usr/bin/time (apt-get install time)");
    assert!(
        out.status.success(),
        "{:?} failed:\n{}{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let server = pg.map_or(0.0, server_cpu) - server_before;
    let text = std::fs::read_to_string(stats.path()).unwrap();
    let f: Vec<&str> = text.split_whitespace().collect();
    let num = |i: usize| f[i].parse::<f64>().unwrap();
    Sample {
        wall: num(0),
        cpu: num(1) + num(2),
        server_cpu: server,
        max_rss_kb: f[3].parse().unwrap(),
        stored_bytes: dir_size(output),
    }
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            let m = e.metadata().unwrap();
            total += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

/// Seconds since midnight UTC of an RFC 3339 timestamp such as `2026-11-21T07:06:45.921014Z`.
fn seconds_of_day(stamp: &str) -> Option<f64> {
    let time = stamp.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// One more pgstream run with the backup's debug timeline on: seconds from process start to
/// each mark, and to exit.
fn timeline(o: &Options, conninfo: &str, dir: &Path, passphrase: &str) -> Vec<(String, f64)> {
    let init = Command::new(&o.pgstream)
        .args(["init", "--repo"])
        .arg(dir)
        .env("PGSTREAM_PASSPHRASE", passphrase)
        .output()
        .expect("pgstream init");
    assert!(init.status.success());
    let now_of_day = || {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        t % 86400.0
    };
    let start = now_of_day();
    let out = Command::new(&o.pgstream)
        .args(["base", "--no-progress", "--checkpoint", "fast", "--repo"])
        .arg(dir)
        .arg("--source")
        .arg(conninfo)
        .env("PGSTREAM_PASSPHRASE", passphrase)
        .env("PGSTREAM_LOG", "warn,backup_core::basebackup=debug")
        .output()
        .expect("pgstream base");
    let end = now_of_day();
    assert!(out.status.success());
    let since = |t: f64| {
        if t < start {
            t + 86400.0 - start
        } else {
            t - start
        }
    };
    let mut marks = Vec::new();
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        // Strip ANSI colours.
        let mut plain = String::new();
        let mut in_escape = false;
        for c in line.chars() {
            match (in_escape, c) {
                (false, '\u{1b}') => in_escape = true,
                (true, 'm') => in_escape = false,
                (true, _) => {}
                (false, c) => plain.push(c),
            }
        }
        if !plain.contains("base backup timeline") {
            continue;
        }
        let Some(at) = plain.split_whitespace().next().and_then(seconds_of_day) else {
            continue;
        };
        let Some(phase) = plain.split("phase=").nth(1) else {
            continue;
        };
        marks.push((phase.trim_matches('"').to_string(), since(at)));
    }
    marks.push(("exit".to_string(), since(end)));
    std::fs::remove_dir_all(dir).ok();
    marks
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Row {
    dataset: String,
    db_bytes: u64,
    tool: &'static str,
    samples: Vec<Sample>,
    /// pgstream's timeline of one extra run (empty for pg_basebackup).
    timeline: Vec<(String, f64)>,
}

impl Row {
    fn wall(&self) -> f64 {
        median(self.samples.iter().map(|s| s.wall).collect())
    }
    fn cpu(&self) -> f64 {
        median(self.samples.iter().map(|s| s.cpu).collect())
    }
    fn spread(&self) -> (f64, f64) {
        let w: Vec<f64> = self.samples.iter().map(|s| s.wall).collect();
        (
            w.iter().cloned().fold(f64::INFINITY, f64::min),
            w.iter().cloned().fold(0.0, f64::max),
        )
    }
    fn server_cpu(&self) -> f64 {
        median(self.samples.iter().map(|s| s.server_cpu).collect())
    }
    fn rss_mb(&self) -> f64 {
        self.samples.iter().map(|s| s.max_rss_kb).max().unwrap() as f64 / 1024.0
    }
    fn stored_mb(&self) -> f64 {
        self.samples.last().unwrap().stored_bytes as f64 / 1048576.0
    }
}

fn bench_dataset(
    o: &Options,
    pg: &Cluster,
    dataset: &str,
    rows: &mut Vec<Row>,
    restores: &mut Vec<RestoreRow>,
) {
    let db_bytes: u64 = pg
        .psql("SELECT sum(pg_database_size(oid)) FROM pg_database")
        .parse()
        .unwrap();
    let conninfo = pg.conninfo("postgres");
    let scratch = integration::scratch_dir();
    let tablespaces: Vec<(u32, String)> = pg
        .psql(
            "SELECT oid || ' ' || pg_tablespace_location(oid) FROM pg_tablespace
             WHERE pg_tablespace_location(oid) <> ''",
        )
        .lines()
        .filter_map(|l| {
            let (oid, location) = l.split_once(' ')?;
            Some((oid.parse().ok()?, location.to_string()))
        })
        .collect();
    let passphrase = "benchmark passphrase, not a secret";
    let mut basebackup = Vec::new();
    let mut pgstream = Vec::new();
    for run in 0..o.runs {
        // Alternate which tool goes first so caches favour neither.
        let order: [bool; 2] = if run % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_pg in order {
            let dir = scratch
                .path()
                .join(format!("run{run}-{}", if is_pg { "pg" } else { "ps" }));
            if is_pg {
                let mut cmd = Command::new(client_tool(o.major, "pg_basebackup"));
                cmd.args(["-Ft", "-Xs", "--compress=client-lz4", "-c", "fast", "-D"])
                    .arg(&dir)
                    .arg("-d")
                    .arg(&conninfo);
                basebackup.push(measure(cmd, &dir, Some(pg)));
            } else {
                let init = Command::new(&o.pgstream)
                    .args(["init", "--repo"])
                    .arg(&dir)
                    .env("PGSTREAM_PASSPHRASE", passphrase)
                    .output()
                    .expect("pgstream init");
                assert!(
                    init.status.success(),
                    "{}",
                    String::from_utf8_lossy(&init.stderr)
                );
                let mut cmd = Command::new(&o.pgstream);
                cmd.args(["base", "--no-progress", "--checkpoint", "fast", "--repo"])
                    .arg(&dir)
                    .arg("--source")
                    .arg(&conninfo)
                    .env("PGSTREAM_PASSPHRASE", passphrase)
                    .env("PGSTREAM_LOG", "warn");
                pgstream.push(measure(cmd, &dir, Some(pg)));
            }
            // The last backup of each tool is kept for the restore benchmark.
            if run + 1 < o.runs || !o.restore {
                std::fs::remove_dir_all(&dir).ok();
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    if o.restore {
        let last = o.runs - 1;
        let (pg_backup, repo) = (
            scratch.path().join(format!("run{last}-pg")),
            scratch.path().join(format!("run{last}-ps")),
        );
        let (tar, ours) = restore::bench(
            dataset,
            o.runs,
            &o.pgstream,
            passphrase,
            &restore::Backups {
                pg_backup: &pg_backup,
                repo: &repo,
                tablespaces: &tablespaces,
            },
            scratch.path(),
        );
        restores.push(tar);
        restores.push(ours);
        std::fs::remove_dir_all(&pg_backup).ok();
        std::fs::remove_dir_all(&repo).ok();
    }
    let timeline = timeline(o, &conninfo, &scratch.path().join("timeline"), passphrase);
    rows.push(Row {
        dataset: dataset.to_string(),
        db_bytes,
        tool: "pg_basebackup -Ft -Xs --compress=client-lz4",
        samples: basebackup,
        timeline: Vec::new(),
    });
    rows.push(Row {
        dataset: dataset.to_string(),
        db_bytes,
        tool: "pgstream base (lz4, AES-256-GCM)",
        samples: pgstream,
        timeline,
    });
}

fn report(o: &Options, rows: &[Row], load: &str) -> String {
    let mut s = String::new();
    let machine = machine();
    writeln!(s, "## Base backup: pgstream base vs pg_basebackup\n").unwrap();
    writeln!(
        s,
        "Measured by `just bench` (integration/src/bin/bench/main.rs): PostgreSQL {}, {} runs per tool, alternating, medians shown (spread: min–max wall; peak RSS: the maximum). Machine: {machine}; load average before / after: {load}. Both write to the same local disk and fsync. CPU is the client process's (user + system); server CPU is what the PostgreSQL processes used meanwhile (walsender, checkpoint), on the same machine.\n",
        o.major, o.runs
    )
    .unwrap();
    writeln!(
        s,
        "| dataset | database size | tool | wall (s) | wall min–max (s) | MiB/s | CPU (s) | server CPU (s) | peak RSS (MiB) | stored (MiB) |"
    )
    .unwrap();
    writeln!(s, "|---|---|---|---|---|---|---|---|---|---|").unwrap();
    for r in rows {
        let (lo, hi) = r.spread();
        writeln!(
            s,
            "| {} | {:.0} MiB | {} | {:.2} | {lo:.2}–{hi:.2} | {:.0} | {:.2} | {:.2} | {:.1} | {:.0} |",
            r.dataset,
            r.db_bytes as f64 / 1048576.0,
            r.tool,
            r.wall(),
            r.db_bytes as f64 / 1048576.0 / r.wall(),
            r.cpu(),
            r.server_cpu(),
            r.rss_mb(),
            r.stored_mb()
        )
        .unwrap();
    }
    writeln!(
        s,
        "\n| dataset | wall ratio (pgstream / pg_basebackup) | CPU ratio | RSS ratio |"
    )
    .unwrap();
    writeln!(s, "|---|---|---|---|").unwrap();
    for pair in rows.chunks(2) {
        let (pg, ps) = (&pair[0], &pair[1]);
        writeln!(
            s,
            "| {} | {:.2} | {:.2} | {:.2} |",
            pg.dataset,
            ps.wall() / pg.wall(),
            ps.cpu() / pg.cpu(),
            ps.rss_mb() / pg.rss_mb()
        )
        .unwrap();
    }
    writeln!(
        s,
        "\nWhere one more pgstream run's wall time went (its debug timeline; seconds from process start to the end of each phase, duration in brackets):\n"
    )
    .unwrap();
    writeln!(
        s,
        "| dataset | connected, BASE_BACKUP sent | checkpoint done, repository unlocked | last archive received | archives durable, manifest verified, WAL stored | record durable | exit |"
    )
    .unwrap();
    writeln!(s, "|---|---|---|---|---|---|---|").unwrap();
    for r in rows.iter().filter(|r| !r.timeline.is_empty()) {
        let at = |phase: &str| {
            r.timeline
                .iter()
                .rev()
                .find(|(p, _)| p == phase)
                .map(|(_, t)| *t)
        };
        let steps = [
            at("BASE_BACKUP sent"),
            at("checkpoint done"),
            at("archive received"),
            at("WAL stored"),
            at("record durable"),
            at("exit"),
        ];
        let mut cells = Vec::new();
        let mut prev = 0.0;
        for t in steps {
            match t {
                Some(t) => {
                    cells.push(format!("{t:.2} ({:.2})", t - prev));
                    prev = t;
                }
                None => cells.push("?".into()),
            }
        }
        writeln!(s, "| {} | {} |", r.dataset, cells.join(" | ")).unwrap();
    }
    s
}

const BENCH_TABLESPACE: &str = "bench_ts";

fn start_cluster(o: &Options) -> Cluster {
    let mut builder = cluster(o.major).setting("max_wal_size", "2GB");
    if o.tablespace {
        builder = builder.tablespace(BENCH_TABLESPACE);
    }
    builder.start()
}

fn main() {
    let o = parse_args();
    assert!(
        o.pgstream.exists(),
        "{} not found: build it with `cargo build --release -p pgstream-cli`",
        o.pgstream.display()
    );
    if o.drop_caches {
        if let Err(e) = integration::drop_caches() {
            panic!("--drop-caches: {e}");
        }
    }
    if o.drill_only {
        return drill::run(&drill_options(&o));
    }
    if o.incremental_only {
        return bench_incremental(&o);
    }
    let mut rows = Vec::new();
    let mut restores = Vec::new();
    let load_before = load_average();
    let memory = integration::memory();
    {
        eprintln!("bench: pgbench scale {} on PostgreSQL {}", o.scale, o.major);
        let pg = start_cluster(&o);
        let status = Command::new(client_tool(o.major, "pgbench"))
            .args(["-i", "-q", "-s", &o.scale.to_string(), "-d"])
            .arg(pg.conninfo("postgres"))
            .args(
                o.tablespace
                    .then_some(format!("--tablespace={BENCH_TABLESPACE}")),
            )
            .status()
            .expect("pgbench");
        assert!(status.success(), "pgbench -i failed");
        pg.psql("CHECKPOINT");
        bench_dataset(
            &o,
            &pg,
            &format!("pgbench scale {}", o.scale),
            &mut rows,
            &mut restores,
        );
    }
    {
        eprintln!("bench: {} MB of poorly compressible data", o.noise_mb);
        let pg = start_cluster(&o);
        let in_tablespace = match o.tablespace {
            true => format!(" TABLESPACE {BENCH_TABLESPACE}"),
            false => String::new(),
        };
        // md5 text, base64 and raw bytes from md5: lz4 keeps most of it.
        let rows_needed = o.noise_mb as u64 * 1024 * 1024 / 200;
        pg.psql(&format!(
            "CREATE TABLE noise{in_tablespace} AS SELECT g,
                 md5(random()::text) || md5(random()::text) AS hex,
                 encode(decode(md5(random()::text) || md5(random()::text), 'hex'), 'base64') AS b64,
                 decode(md5(random()::text) || md5(random()::text) || md5(random()::text), 'hex') AS raw
             FROM generate_series(1, {rows_needed}) g;
             CHECKPOINT;"
        ));
        bench_dataset(
            &o,
            &pg,
            &format!("{} MB poorly compressible", o.noise_mb),
            &mut rows,
            &mut restores,
        );
    }
    let load = format!(
        "{load_before} / {}; memory at the start: {memory}",
        load_average()
    );
    let section = report(&o, &rows, &load);
    println!("{section}");
    let existing = std::fs::read_to_string(&o.out).unwrap_or_default();
    let marker_start = "<!-- bench:base:start -->";
    let marker_end = "<!-- bench:base:end -->";
    let block = format!("{marker_start}\n{section}{marker_end}\n");
    let updated = match (existing.find(marker_start), existing.find(marker_end)) {
        (Some(a), Some(b)) => format!(
            "{}{}{}",
            &existing[..a],
            block,
            &existing[b + marker_end.len()..].trim_start_matches('\n')
        ),
        _ => format!("{existing}\n{block}"),
    };
    std::fs::write(&o.out, updated).unwrap();
    if o.restore {
        let section = restore::report(o.major, o.runs, &machine(), &load, &restores);
        println!("{section}");
        section::write_section(&o.out, "restore", &section);
    }
    if o.drill {
        drill::run(&drill_options(&o));
    }
    if o.incremental {
        bench_incremental(&o);
    }
    eprintln!("bench: wrote {}", o.out.display());
}

fn bench_incremental(o: &Options) {
    let load_before = load_average();
    let memory = integration::memory();
    let io = incremental::Options {
        major: o.incremental_major,
        scale: o.scale,
        runs: o.runs.min(3),
        pgstream: &o.pgstream,
    };
    let results = incremental::run(&io);
    let load = format!(
        "{load_before} / {}; memory at the start: {memory}",
        load_average()
    );
    let section = incremental::report(&io, &results, &machine(), &load);
    println!("{section}");
    section::write_section(&o.out, "incremental", &section);
}

fn drill_options(o: &Options) -> drill::Options<'_> {
    drill::Options {
        major: o.major,
        scale: o.scale,
        runs: o.runs.min(3),
        out: &o.out,
        pgstream: &o.pgstream,
    }
}
