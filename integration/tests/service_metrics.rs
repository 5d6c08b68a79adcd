//! Monitoring, against a real server, every exposition parsed by prometheus_client's
//! OpenMetrics parser:
//! - `receive-wal --metrics-listen`, scraped while the server writes WAL: its lag in bytes and
//!   flushed position agree with `pg_stat_replication` within a segment;
//! - `status --format openmetrics --output FILE`: the textfile parses and its backup age and end
//!   time are the newest backup's;
//! - `--log-format json`: every stderr line is a JSON object, with the backup id, LSNs and the
//!   timeline as fields.
//!
//! The subject does not depend on the version: newest major only.

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::openmetrics::{parse, value, Sample};
use support::receiver::{wait_for, Receiver};
use support::wal::{lsn, slot_flush};
use support::{init_repo, newest_cluster_and_repo_path, ok, pgstream, s};

const PASSPHRASE: &str = "metrics passphrase 77a1";
const SLOT: &str = "pgstream_metrics";
const SEGMENT: f64 = 16.0 * 1024.0 * 1024.0;

/// `GET /metrics` from `port`: the body.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    body.to_string()
}

/// The receiver's lag in bytes as the server sees it (its flushed WAL, which is what it sends,
/// minus the receiver's flush position), and the receiver's flush position.
const REPLICATION: &str = "SELECT pg_current_wal_flush_lsn() - flush_lsn, flush_lsn - '0/0' \
     FROM pg_stat_replication WHERE application_name = 'pgstream'";

fn sample(samples: &[Sample], name: &str) -> f64 {
    value(samples, name, &[]).unwrap_or_else(|| panic!("no {name} in {samples:#?}"))
}

#[test]
fn metrics_endpoint_during_receive_wal_under_load_matches_pg_stat_replication() {
    let (pg, scratch, repo) = newest_cluster_and_repo_path();
    init_repo(&repo, PASSPHRASE);
    pg.psql("CREATE TABLE load (id int, pad text)");
    let port = integration::free_port();
    let addr = format!("127.0.0.1:{port}");
    let r = Receiver::start(
        &repo,
        &pg.conninfo("postgres"),
        PASSPHRASE,
        &["--slot", SLOT, "--create-slot", "--metrics-listen", &addr],
        scratch.path().join("receive-wal.log"),
    );
    r.wait_streaming();
    let start = lsn(&pg.psql("SELECT pg_current_wal_lsn()"));

    wait_for(
        "pg_stat_replication shows a flush position",
        30,
        || {
            pg.psql(
                "SELECT flush_lsn IS NOT NULL FROM pg_stat_replication \
                     WHERE application_name = 'pgstream'",
            ) == "t"
        },
        || r.log(),
    );
    // A steady load, one session: about 1 MB of WAL a commit, 60 commits 50 ms apart (about
    // 60 MB, several segments), bounded. A steady rate rather than bursts: in a burst faster
    // than the receiver reads, the server's position runs ahead of anything the receiver has
    // been told, and no receiver can report WAL it has not heard of.
    let load = {
        let mut psql = pg.psql_command();
        psql.arg("-d").arg(pg.conninfo("postgres"));
        // From a file, so that each statement commits on its own (`-c` would make one
        // transaction of them all).
        let script = scratch.path().join("load.sql");
        std::fs::write(
            &script,
            "INSERT INTO load SELECT g, repeat('x', 400) FROM generate_series(1, 2000) g;\n\
             SELECT pg_sleep(0.05);\n"
                .repeat(60),
        )
        .unwrap();
        psql.arg("-f").arg(&script);
        std::thread::spawn(move || {
            let out = psql.output().expect("running psql");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
    };
    // Scrape and read pg_stat_replication back to back while the load runs; parse afterwards
    // (Python's start-up would leave few scrapes inside the load).
    let mut rounds = Vec::new();
    let mut during_load = 0;
    while !load.is_finished() || rounds.len() < 3 {
        if !load.is_finished() {
            during_load += 1;
        }
        // pg_stat_replication just before and just after: the scrape lies in between.
        let before = pg.psql(REPLICATION);
        let body = scrape(port);
        let after = pg.psql(REPLICATION);
        rounds.push((body, before, after));
        std::thread::sleep(Duration::from_millis(100));
    }
    load.join().unwrap();
    assert!(
        during_load >= 3,
        "only {during_load} scrapes while the load ran"
    );
    let pair = |row: &str| {
        let mut cols = row.split('|').map(|v| v.trim().parse::<f64>().unwrap());
        (cols.next().unwrap(), cols.next().unwrap())
    };
    for (i, (body, before, after)) in rounds.iter().enumerate() {
        let ((lag0, flush0), (lag1, flush1)) = (pair(before), pair(after));
        let m = parse(body);
        let lag = sample(&m, "pgstream_receive_lag_bytes");
        let flushed = sample(&m, "pgstream_receive_flushed_lsn_bytes");
        let received = sample(&m, "pgstream_receive_received_lsn_bytes");
        let archived = sample(&m, "pgstream_receive_archived_lsn_bytes");
        let ctx = format!(
            "round {i}: lag {lag}, flushed {flushed}; pg_stat_replication before: lag {lag0}, \
             flush {flush0}; after: lag {lag1}, flush {flush1}\n{body}"
        );
        assert!(
            lag >= lag0.min(lag1) - SEGMENT && lag <= lag0.max(lag1) + SEGMENT,
            "lag bytes differ by a segment or more: {ctx}"
        );
        assert!(
            flushed >= flush0 - SEGMENT && flushed <= flush1 + SEGMENT,
            "flush position: {ctx}"
        );
        assert!(received >= flushed && flushed >= archived, "{ctx}");
        assert!(sample(&m, "pgstream_receive_lag_seconds") < 30.0, "{ctx}");
        assert_eq!(sample(&m, "pgstream_receive_timeline"), 1.0, "{ctx}");
    }
    let end = lsn(&pg.psql("SELECT pg_current_wal_lsn()"));
    wait_for(
        "receive-wal flushes the load",
        60,
        || slot_flush(&pg, SLOT) >= end,
        || r.log(),
    );
    let m = parse(&scrape(port));
    let crossed = (end.0 / (16 << 20)) - (start.0 / (16 << 20));
    assert!(crossed >= 2, "the load wrote {start}..{end}");
    // Every segment the load filled was archived (one more when other WAL followed `end`).
    let archived = sample(&m, "pgstream_receive_segments_archived_total");
    assert!(
        archived >= crossed as f64 && archived <= crossed as f64 + 1.0,
        "{archived} archived, {crossed} crossed: {m:#?}"
    );
    assert_eq!(sample(&m, "pgstream_receive_reconnects_total"), 0.0);
    for kind in ["connection", "server", "io", "repository"] {
        assert_eq!(
            value(&m, "pgstream_receive_errors_total", &[("kind", kind)]),
            Some(0.0),
            "{kind}"
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last_flush = sample(&m, "pgstream_receive_last_flush_timestamp_seconds");
    assert!(
        (now - last_flush).abs() < 60.0,
        "last flush {last_flush}, now {now}"
    );
    assert!(value(
        &m,
        "pgstream_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))]
    )
    .is_some());
    assert_eq!(r.terminate(), 0);
}

#[test]
fn status_textfile_parses_with_the_right_backup_age_and_json_logs_carry_backup_id_lsn_timeline() {
    let (pg, scratch, repo) = newest_cluster_and_repo_path();
    init_repo(&repo, PASSPHRASE);
    let base = ok(
        pgstream(
            &[
                "--log-format",
                "json",
                "base",
                "--repo",
                s(&repo),
                "--source",
                &pg.conninfo("postgres"),
            ],
            Some(PASSPHRASE),
        ),
        "base with JSON logs",
    );
    let lines: Vec<serde_json::Value> = base
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect();
    let done = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.ends_with("stored and verified"))
        })
        .unwrap_or_else(|| panic!("no 'stored and verified' line: {base:?}"));
    for field in [
        "backup_id",
        "start_lsn",
        "end_lsn",
        "timeline",
        "timestamp",
        "level",
    ] {
        assert!(!done[field].is_null(), "no {field} in {done}");
    }
    // Lines inside the backup carry its id from the span.
    assert!(
        lines
            .iter()
            .any(|l| l["backup_id"] == done["backup_id"] && l["spans"].is_array()),
        "{base:?}"
    );
    let listed: serde_json::Value = serde_json::from_str(
        &ok(
            pgstream(&["list", "--repo", s(&repo), "--json"], None),
            "list",
        )
        .stdout,
    )
    .unwrap();
    let backup = &listed["backups"][0];
    assert_eq!(backup["id"], done["backup_id"]);

    let verified = scratch.path().join("verify.json");
    ok(
        pgstream(
            &["verify", "--repo", s(&repo), "--report", s(&verified)],
            Some(PASSPHRASE),
        ),
        "verify --report",
    );
    let prom = scratch.path().join("pgstream.prom");
    let run = ok(
        pgstream(
            &[
                "status",
                "--repo",
                s(&repo),
                "--format",
                "openmetrics",
                "--output",
                s(&prom),
                "--warn-backup-age",
                "1s",
                "--verify-report",
                s(&verified),
                "--drill-report",
                s(&scratch.path().join("no-drill-yet.json")),
            ],
            None,
        ),
        "status --format openmetrics (exit 0 although a check warns)",
    );
    assert_eq!(run.stdout, "");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&prom).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);
    let m = parse(&std::fs::read_to_string(&prom).unwrap());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let end = humantime::parse_rfc3339_weak(backup["end_time"].as_str().unwrap())
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let repo_label = [("repo", s(&repo)), ("kind", "full")];
    let got_end = value(
        &m,
        "pgstream_backup_last_end_timestamp_seconds",
        &repo_label,
    )
    .unwrap();
    assert!((got_end - end).abs() < 1.0, "end {got_end} vs {end}");
    let age = value(&m, "pgstream_backup_last_age_seconds", &repo_label).unwrap();
    assert!(
        (age - (now - end)).abs() <= 5.0,
        "age {age}, expected about {}",
        now - end
    );
    assert_eq!(
        value(&m, "pgstream_backup_last_size_bytes", &repo_label),
        backup["raw_bytes"].as_f64()
    );
    assert_eq!(
        value(&m, "pgstream_backups", &[("repo", s(&repo))]),
        Some(1.0)
    );
    assert!(value(&m, "pgstream_wal_archive_segments", &[]).unwrap() >= 1.0);
    assert!(value(&m, "pgstream_recovery_window_seconds", &[]).is_some());
    assert_eq!(value(&m, "pgstream_verify_passed", &[]), Some(1.0));
    assert_eq!(value(&m, "pgstream_verify_problems", &[]), Some(0.0));
    let verified_at = value(&m, "pgstream_verify_last_run_timestamp_seconds", &[]).unwrap();
    assert!(
        (now - verified_at).abs() < 30.0,
        "verify at {verified_at}, now {now}"
    );
    // No drill report yet: a WARNING check, and no drill metrics.
    assert_eq!(
        value(&m, "pgstream_check_status", &[("check", "drill")]),
        Some(1.0)
    );
    assert_eq!(value(&m, "pgstream_drill_passed", &[]), None);
    // --warn-backup-age 1s: the backups check warns (1), and so does the overall status.
    std::thread::sleep(Duration::from_millis(1100));
    ok(
        pgstream(
            &[
                "status",
                "--repo",
                s(&repo),
                "--format",
                "openmetrics",
                "--output",
                s(&prom),
                "--warn-backup-age",
                "1s",
            ],
            None,
        ),
        "status again",
    );
    let m = parse(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(
        value(&m, "pgstream_check_status", &[("check", "backups")]),
        Some(1.0)
    );
    assert_eq!(value(&m, "pgstream_status", &[]), Some(1.0));
}
