//! `just bench` (second half): `pgstream receive-wal` beside `pg_receivewal` on one throwaway
//! PostgreSQL cluster.
//!
//! Three loads, each receiver in turn on its own physical slot:
//! 1. bulk load: `INSERT … SELECT generate_series` into a logged table until about `--bulk-mb`
//!    of WAL exists;
//! 2. pgbench (`-c 4 -j 2 -T --pgbench-secs`), receivers asynchronous;
//! 3. pgbench with the receiver as the synchronous standby (`synchronous_standby_names`,
//!    `synchronous_commit = on`), alternating, `--sync-runs` runs each.
//!
//! Every 100 ms it samples the server's view (`pg_stat_replication`): unsent backlog
//! (current LSN − sent_lsn) and unflushed backlog (current LSN − flush_lsn). It reads the
//! receiver's CPU (/proc/<pid>/stat) and peak RSS (VmHWM) before stopping it with SIGTERM, once
//! the server's current LSN (after `pg_switch_wal()`) is reported flushed by it. Results go to
//! docs/BENCHMARKS.md between `<!-- bench:wal:start -->` and `<!-- bench:wal:end -->`; text
//! after a `<!-- bench:wal:notes -->` line inside that block is kept. Numbers are measured,
//! never asserted: this is not a test.
//!
//! Usage: bench_wal [--major N] [--bulk-mb M] [--scale S] [--pgbench-secs T] [--sync-runs R]
//! [--out FILE] [--pgstream PATH]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use integration::{client_tool, cluster, machine, Cluster, SUPERUSER};

const PASSPHRASE: &str = "benchmark passphrase, not a secret";
const SEGMENT: f64 = 16.0 * 1048576.0;
const MIB: f64 = 1048576.0;

struct Options {
    major: u32,
    bulk_mb: u64,
    scale: u32,
    pgbench_secs: u32,
    sync_runs: usize,
    out: PathBuf,
    pgstream: PathBuf,
}

fn parse_args() -> Options {
    let mut o = Options {
        major: 16,
        bulk_mb: 1024,
        scale: 10,
        pgbench_secs: 20,
        sync_runs: 2,
        out: PathBuf::from("docs/BENCHMARKS.md"),
        pgstream: PathBuf::from("target/release/pgstream"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--major" => o.major = value().parse().expect("--major N"),
            "--bulk-mb" => o.bulk_mb = value().parse().expect("--bulk-mb M"),
            "--scale" => o.scale = value().parse().expect("--scale S"),
            "--pgbench-secs" => o.pgbench_secs = value().parse().expect("--pgbench-secs T"),
            "--sync-runs" => o.sync_runs = value().parse().expect("--sync-runs R"),
            "--out" => o.out = PathBuf::from(value()),
            "--pgstream" => o.pgstream = PathBuf::from(value()),
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    PgReceivewal,
    Pgstream,
}

impl Tool {
    fn label(self, synchronous: bool) -> &'static str {
        match (self, synchronous) {
            (Tool::PgReceivewal, false) => "pg_receivewal (uncompressed)",
            (Tool::PgReceivewal, true) => "pg_receivewal --synchronous",
            (Tool::Pgstream, false) => "pgstream receive-wal (lz4, AES-256-GCM)",
            (Tool::Pgstream, true) => "pgstream receive-wal --synchronous",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Load {
    Bulk,
    Pgbench,
}

/// One receiver run under one load.
#[derive(Clone, Debug)]
struct Run {
    load: Load,
    tool: Tool,
    synchronous: bool,
    wal_bytes: u64,
    load_secs: f64,
    tps: Option<f64>,
    /// (unsent, unflushed, unsent of what the server has flushed) in bytes, one per 100 ms
    /// while the load ran and until caught up.
    samples: Vec<(i64, i64, i64)>,
    cpu_secs: f64,
    peak_rss_kb: u64,
    /// From the end of the load until the server had sent everything.
    catch_up_secs: f64,
}

impl Run {
    fn unsent(&self) -> Vec<i64> {
        self.samples.iter().map(|s| s.0).collect()
    }
    fn unflushed(&self) -> Vec<i64> {
        self.samples.iter().map(|s| s.1).collect()
    }
    fn unsent_flushed(&self) -> Vec<i64> {
        self.samples.iter().map(|s| s.2).collect()
    }
}

fn max_p99(mut v: Vec<i64>) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_unstable();
    let p99 = v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1];
    (*v.last().unwrap() as f64, p99 as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A psql session kept open, so sampling every 100 ms costs one query, not one backend.
struct Session {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Session {
    fn open(pg: &Cluster) -> Session {
        let mut cmd = pg.psql_command();
        cmd.arg("-h")
            .arg(pg.socket_dir())
            .arg("-p")
            .arg(pg.port().to_string())
            .args(["-U", SUPERUSER, "-d", "postgres", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("psql");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Session {
            child,
            stdin,
            stdout,
        }
    }

    /// Runs a query returning exactly one row.
    fn one(&mut self, sql: &str) -> String {
        writeln!(self.stdin, "{sql};").expect("psql stdin");
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("psql stdout");
        assert!(!line.is_empty(), "psql session ended on {sql}");
        line.trim_end().to_string()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The receiver's row of pg_stat_replication, always one row: -1 where it has none.
fn backlog_sql(app: &str) -> String {
    format!(
        "SELECT coalesce(max(pg_current_wal_lsn() - sent_lsn), -1)::bigint || ' ' || \
         coalesce(max(pg_current_wal_lsn() - flush_lsn), -1)::bigint || ' ' || \
         coalesce(max(greatest(pg_current_wal_flush_lsn() - sent_lsn, 0)), -1)::bigint \
         FROM pg_stat_replication WHERE application_name = '{app}'"
    )
}

struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<(i64, i64, i64)>>,
}

impl Sampler {
    fn start(pg: &Cluster, app: &str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let mut session = Session::open(pg);
        let sql = backlog_sql(app);
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut samples = Vec::new();
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let row = session.one(&sql);
                let mut f = row.split(' ').map(|x| x.parse::<i64>().unwrap());
                let (unsent, unflushed) = (f.next().unwrap(), f.next().unwrap());
                let unsent_flushed = f.next().unwrap();
                if unsent >= 0 {
                    samples.push((unsent, unflushed.max(0), unsent_flushed));
                }
                next += Duration::from_millis(100);
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            samples
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> Vec<(i64, i64, i64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("sampler")
    }
}

/// utime + stime of `pid` (all its threads), in seconds.
fn proc_cpu(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("receiver /proc stat");
    let f: Vec<&str> = s.rsplit_once(')').unwrap().1.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn proc_hwm_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("receiver status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn current_lsn(pg: &Cluster) -> String {
    pg.psql("SELECT pg_current_wal_lsn()")
}

fn lsn_diff(pg: &Cluster, a: &str, b: &str) -> i64 {
    pg.psql(&format!("SELECT ('{a}'::pg_lsn - '{b}'::pg_lsn)::bigint"))
        .parse()
        .unwrap()
}

/// True once the receiver's `column` of pg_stat_replication (sent_lsn, flush_lsn) is at
/// or past `lsn`; false while it has no row.
fn reached_sql(app: &str, column: &str, lsn: &str) -> String {
    format!(
        "SELECT coalesce(bool_and({column} >= '{lsn}'), false) FROM pg_stat_replication \
         WHERE application_name = '{app}'"
    )
}

/// Polls until `sql` (one boolean) is true, or panics after `limit`.
fn wait_until(pg: &Cluster, sql: &str, limit: Duration, what: &str, child: &mut Child) {
    let start = Instant::now();
    loop {
        if pg.psql(sql) == "t" {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the receiver exited ({status}) while waiting for {what}");
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_receiver(
    o: &Options,
    pg: &Cluster,
    tool: Tool,
    dir: &Path,
    slot: &str,
    app: &str,
    synchronous: bool,
) -> Child {
    let log = dir.with_extension("log");
    let conninfo = pg.conninfo("postgres");
    let mut cmd = match tool {
        Tool::PgReceivewal => {
            std::fs::create_dir_all(dir).unwrap();
            let mut c = Command::new(client_tool(o.major, "pg_receivewal"));
            c.arg("-D")
                .arg(dir)
                .args(["--slot", slot, "--no-loop", "-d"])
                .arg(format!("{conninfo} application_name={app}"));
            if synchronous {
                c.arg("--synchronous");
            }
            c
        }
        Tool::Pgstream => {
            let init = Command::new(&o.pgstream)
                .args(["init", "--repo"])
                .arg(dir)
                .env("PGSTREAM_PASSPHRASE", PASSPHRASE)
                .output()
                .expect("pgstream init");
            assert!(
                init.status.success(),
                "pgstream init: {}",
                String::from_utf8_lossy(&init.stderr)
            );
            let mut c = Command::new(&o.pgstream);
            c.args(["receive-wal", "--source", &conninfo, "--repo"])
                .arg(dir)
                .args(["--slot", slot, "--application-name", app])
                .env("PGSTREAM_PASSPHRASE", PASSPHRASE)
                .env("PGSTREAM_LOG", "warn");
            if synchronous {
                c.arg("--synchronous");
            }
            c
        }
    };
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("PG") && !k.starts_with("PGSTREAM") {
            cmd.env_remove(&key);
        }
    }
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

fn stop_receiver(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("bench_wal: receiver ignored SIGTERM for 30 s; killed");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pgbench(o: &Options, pg: &Cluster) -> f64 {
    let out = Command::new(client_tool(o.major, "pgbench"))
        .args([
            "-c",
            "4",
            "-j",
            "2",
            "-T",
            &o.pgbench_secs.to_string(),
            "-d",
        ])
        .arg(pg.conninfo("postgres"))
        .output()
        .expect("pgbench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output:\n{text}"))
}

/// Inserts into a logged table until `bytes` of WAL exist.
fn bulk_load(pg: &Cluster, bytes: u64) {
    pg.psql("DROP TABLE IF EXISTS bulk; CREATE TABLE bulk (id bigint, pad text)");
    let start = current_lsn(pg);
    loop {
        pg.psql(
            "INSERT INTO bulk SELECT g, md5(g::text) || md5(random()::text) || repeat('x', 40) \
             FROM generate_series(1, 200000) g",
        );
        let now = current_lsn(pg);
        if lsn_diff(pg, &now, &start) as u64 >= bytes {
            return;
        }
    }
}

fn run_one(
    o: &Options,
    pg: &Cluster,
    scratch: &Path,
    n: usize,
    load: Load,
    tool: Tool,
    synchronous: bool,
) -> Run {
    let slot = format!("bench_slot_{n}");
    let app = if synchronous {
        "bench_sync".to_string()
    } else {
        format!("bench_{n}")
    };
    let dir = scratch.join(format!("run{n}"));
    eprintln!(
        "bench_wal: run {n}: {:?} load, {}",
        load,
        tool.label(synchronous)
    );
    pg.psql(&format!(
        "SELECT 1 FROM pg_create_physical_replication_slot('{slot}', true)"
    ));
    let mut child = start_receiver(o, pg, tool, &dir, &slot, &app, synchronous);
    let pid = child.id();
    let sync_cond = if synchronous {
        " AND sync_state = 'sync'"
    } else {
        ""
    };
    wait_until(
        pg,
        &format!(
            "SELECT count(*) = 1 FROM pg_stat_replication WHERE application_name = '{app}' \
             AND state = 'streaming' AND sent_lsn = pg_current_wal_lsn(){sync_cond}"
        ),
        Duration::from_secs(60),
        "the receiver to stream",
        &mut child,
    );
    let cpu0 = proc_cpu(pid);
    let sampler = Sampler::start(pg, &app);
    let lsn0 = current_lsn(pg);
    let t0 = Instant::now();
    let tps = match load {
        Load::Bulk => {
            bulk_load(pg, o.bulk_mb * 1048576);
            None
        }
        Load::Pgbench => Some(pgbench(o, pg)),
    };
    let load_secs = t0.elapsed().as_secs_f64();
    let lsn1 = current_lsn(pg);
    let t1 = Instant::now();
    let sent = reached_sql(&app, "sent_lsn", &lsn1);
    let what = "the server to send everything";
    wait_until(pg, &sent, Duration::from_secs(300), what, &mut child);
    let catch_up_secs = t1.elapsed().as_secs_f64();
    let samples = sampler.finish();
    // End the segment so that a receiver that fsyncs only at segment ends reports it flushed.
    pg.psql("SELECT pg_switch_wal()");
    let end = current_lsn(pg);
    // pg_receivewal closes (and fsyncs) a segment only when WAL of the next one arrives; on an
    // idle server none may come, and the wait below would run out. A checkpoint record is some.
    pg.psql("CHECKPOINT");
    let flushed = reached_sql(&app, "flush_lsn", &end);
    let what = "the receiver to report everything flushed";
    wait_until(pg, &flushed, Duration::from_secs(120), what, &mut child);
    let cpu_secs = proc_cpu(pid) - cpu0;
    let peak_rss_kb = proc_hwm_kb(pid);
    stop_receiver(child);
    pg.psql(&format!("SELECT pg_drop_replication_slot('{slot}')"));
    std::fs::remove_dir_all(&dir).ok();
    if load == Load::Bulk {
        pg.psql("DROP TABLE IF EXISTS bulk");
    }
    pg.psql("CHECKPOINT");
    let wal_bytes = lsn_diff(pg, &lsn1, &lsn0) as u64;
    let run = Run {
        load,
        tool,
        synchronous,
        wal_bytes,
        load_secs,
        tps,
        samples,
        cpu_secs,
        peak_rss_kb,
        catch_up_secs,
    };
    let (um, _) = max_p99(run.unsent());
    eprintln!(
        "bench_wal:   WAL {:.0} MiB in {:.1} s, unsent max {:.2} MiB, CPU {:.2} s, RSS {:.1} MiB{}",
        wal_bytes as f64 / MIB,
        load_secs,
        um / MIB,
        cpu_secs,
        peak_rss_kb as f64 / 1024.0,
        tps.map(|t| format!(", {t:.0} TPS")).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_secs(1));
    run
}

fn report(o: &Options, runs: &[Run], baseline_tps: f64) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "## WAL streaming: pgstream receive-wal vs pg_receivewal\n"
    )
    .unwrap();
    writeln!(
        s,
        "Measured by `just bench` (integration/src/bin/bench_wal.rs): PostgreSQL {}, one cluster, each receiver in turn on its own physical slot, writing to the same local disk. Machine: {}. pgstream's repository is lz4 + AES-256-GCM; pg_receivewal stores uncompressed (its default). Backlogs are the server's view, sampled every 100 ms from `pg_stat_replication` while the load ran and until the server had sent everything: *unsent* = `pg_current_wal_lsn() - sent_lsn` (this includes WAL the server has written but not yet flushed, which a walsender never sends), *unsent of flushed* = `pg_current_wal_flush_lsn() - sent_lsn` (what the server could have sent but had not: the receiver's own lag), *unflushed* = `pg_current_wal_lsn() - flush_lsn`. Receiver CPU (user + system) is over the same window plus the final flush; peak RSS is VmHWM. Catch-up: from the end of the load until `sent_lsn` reached the load's last LSN. Both receivers run with their default status interval (10 s).\n",
        o.major,
        machine()
    )
    .unwrap();
    writeln!(
        s,
        "| load | receiver | WAL (MiB) | load (s) | unsent max / p99 (MiB) | unsent of flushed max / p99 (MiB) | unflushed max / p99 (MiB) | receiver CPU (s) | peak RSS (MiB) | catch-up (s) | pgbench TPS |"
    )
    .unwrap();
    writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|").unwrap();
    for r in runs {
        let load = match r.load {
            Load::Bulk => format!("bulk INSERT (~{} MiB WAL)", o.bulk_mb),
            Load::Pgbench if r.synchronous => {
                format!(
                    "pgbench -c 4 -j 2 -T {}, synchronous standby",
                    o.pgbench_secs
                )
            }
            Load::Pgbench => format!("pgbench -c 4 -j 2 -T {}", o.pgbench_secs),
        };
        let (um, up) = max_p99(r.unsent());
        let (sm, sp) = max_p99(r.unsent_flushed());
        let (fm, fp) = max_p99(r.unflushed());
        writeln!(
            s,
            "| {load} | {} | {:.0} | {:.1} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} | {:.1} | {:.2} | {} |",
            r.tool.label(r.synchronous),
            r.wal_bytes as f64 / MIB,
            r.load_secs,
            um / MIB,
            up / MIB,
            sm / MIB,
            sp / MIB,
            fm / MIB,
            fp / MIB,
            r.cpu_secs,
            r.peak_rss_kb as f64 / 1024.0,
            r.catch_up_secs,
            r.tps.map(|t| format!("{t:.0}")).unwrap_or_else(|| "—".into())
        )
        .unwrap();
    }
    let sync_tps = |tool: Tool| -> Vec<f64> {
        runs.iter()
            .filter(|r| r.synchronous && r.tool == tool)
            .filter_map(|r| r.tps)
            .collect()
    };
    let pg_tps = sync_tps(Tool::PgReceivewal);
    let ps_tps = sync_tps(Tool::Pgstream);
    let fmt_runs = |v: &[f64]| {
        v.iter()
            .map(|t| format!("{t:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        s,
        "\nSynchronous standby (`synchronous_standby_names = 'bench_sync'`, `synchronous_commit = on`), pgbench -c 4 -j 2 -T {}, scale {}, alternating, {} runs each; for reference, {:.0} TPS with no standby at all.\n",
        o.pgbench_secs, o.scale, o.sync_runs, baseline_tps
    )
    .unwrap();
    writeln!(s, "| synchronous standby | TPS per run | median TPS |").unwrap();
    writeln!(s, "|---|---|---|").unwrap();
    let pg_med = median(pg_tps.clone());
    let ps_med = median(ps_tps.clone());
    writeln!(
        s,
        "| pg_receivewal --synchronous | {} | {:.0} |",
        fmt_runs(&pg_tps),
        pg_med
    )
    .unwrap();
    writeln!(
        s,
        "| pgstream receive-wal --synchronous | {} | {:.0} |",
        fmt_runs(&ps_tps),
        ps_med
    )
    .unwrap();
    let ratio = ps_med / pg_med;
    let worst = |tool: Tool, f: fn(&Run) -> Vec<i64>| {
        runs.iter()
            .filter(|r| r.tool == tool)
            .map(|r| max_p99(f(r)).0)
            .fold(0.0, f64::max)
    };
    let ps_unsent = worst(Tool::Pgstream, Run::unsent);
    let ps_unsent_flushed = worst(Tool::Pgstream, Run::unsent_flushed);
    let pg_unsent = worst(Tool::PgReceivewal, Run::unsent);
    writeln!(s, "\nTargets (issue):").unwrap();
    writeln!(
        s,
        "- pgstream's unsent backlog never above one segment (16 MiB): **{}** (largest sampled over all loads: {:.2} MiB, of which at most {:.2} MiB was WAL the server had flushed; pg_receivewal's largest: {:.2} MiB).",
        if ps_unsent <= SEGMENT { "met" } else { "not met" },
        ps_unsent / MIB,
        ps_unsent_flushed / MIB,
        pg_unsent / MIB
    )
    .unwrap();
    writeln!(
        s,
        "- TPS with pgstream as the synchronous standby at least 1.0× that with `pg_receivewal --synchronous`: **{}** ({:.2}×).",
        if ratio >= 1.0 { "met" } else { "not met" },
        ratio
    )
    .unwrap();
    s
}

/// Replaces our marked block (keeping hand-written notes after `<!-- bench:wal:notes -->`),
/// or appends it; the rest of the file is untouched.
fn write_section(out: &Path, section: &str) {
    let existing = std::fs::read_to_string(out).unwrap_or_default();
    let start = "<!-- bench:wal:start -->";
    let end = "<!-- bench:wal:end -->";
    let notes = "<!-- bench:wal:notes -->";
    let updated = match (existing.find(start), existing.find(end)) {
        (Some(a), Some(b)) if a < b => {
            let inner = &existing[a..b];
            let kept = inner.find(notes).map(|i| &inner[i..]).unwrap_or("");
            let block = format!("{start}\n{section}{}{end}", separator(kept));
            format!("{}{block}{}", &existing[..a], &existing[b + end.len()..])
        }
        _ => {
            let sep = if existing.ends_with('\n') || existing.is_empty() {
                ""
            } else {
                "\n"
            };
            format!("{existing}{sep}\n{start}\n{section}{end}\n")
        }
    };
    std::fs::write(out, updated).unwrap();
}

fn separator(kept: &str) -> String {
    if kept.is_empty() {
        String::new()
    } else {
        format!("\n{kept}")
    }
}

fn main() {
    let o = parse_args();
    assert!(
        o.pgstream.exists(),
        "{} not found: build it with `cargo build --release -p pgstream-cli`",
        o.pgstream.display()
    );
    let started = Instant::now();
    let pg = cluster(o.major)
        .setting("max_wal_size", "4GB")
        .setting("synchronous_commit", "on")
        .start();
    let status = Command::new(client_tool(o.major, "pgbench"))
        .args(["-i", "-q", "-s", &o.scale.to_string(), "-d"])
        .arg(pg.conninfo("postgres"))
        .output()
        .expect("pgbench -i");
    assert!(status.status.success(), "pgbench -i failed");
    pg.psql("CHECKPOINT");
    let scratch = integration::scratch_dir();
    let mut runs = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    for tool in [Tool::PgReceivewal, Tool::Pgstream] {
        runs.push(run_one(
            &o,
            &pg,
            scratch.path(),
            next(),
            Load::Bulk,
            tool,
            false,
        ));
    }
    for tool in [Tool::Pgstream, Tool::PgReceivewal] {
        runs.push(run_one(
            &o,
            &pg,
            scratch.path(),
            next(),
            Load::Pgbench,
            tool,
            false,
        ));
    }
    eprintln!("bench_wal: pgbench with no standby (reference)");
    let baseline_tps = pgbench(&o, &pg);
    pg.psql("ALTER SYSTEM SET synchronous_standby_names = 'bench_sync'; SELECT pg_reload_conf()");
    for i in 0..o.sync_runs {
        let order = if i % 2 == 0 {
            [Tool::PgReceivewal, Tool::Pgstream]
        } else {
            [Tool::Pgstream, Tool::PgReceivewal]
        };
        for tool in order {
            runs.push(run_one(
                &o,
                &pg,
                scratch.path(),
                next(),
                Load::Pgbench,
                tool,
                true,
            ));
        }
    }
    pg.psql("ALTER SYSTEM RESET synchronous_standby_names; SELECT pg_reload_conf()");
    // Table order: bulk, async pgbench, synchronous; pg_receivewal first within each.
    runs.sort_by_key(|r| {
        (
            r.synchronous,
            r.load == Load::Pgbench,
            r.tool == Tool::Pgstream,
        )
    });
    let section = report(&o, &runs, baseline_tps);
    println!("{section}");
    write_section(&o.out, &section);
    eprintln!(
        "bench_wal: wrote {} after {:.0} s",
        o.out.display(),
        started.elapsed().as_secs_f64()
    );
}
