//! `pgstream status --format openmetrics`: the report's figures as metrics for node_exporter's
//! textfile collector. Everything comes from what `status` has already read (the catalog
//! records, the WAL archive's names and times, the verify and drill reports it was given);
//! nothing is read again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::{Exposition, Type};

/// One check of the report: its name, monitoring code (0 OK, 1 WARNING, 2 CRITICAL,
/// 3 UNKNOWN) and the values `--json` shows.
pub struct Check<'a> {
    pub name: &'static str,
    pub code: i32,
    pub data: &'a Map<String, Value>,
}

/// Backups are all full ones today; the label is there for the kinds to come.
const KIND: &str = "full";

pub fn render(repo: &str, overall: i32, checks: &[Check<'_>], now: SystemTime) -> String {
    let r = [("repo", repo)];
    let mut e = Exposition::new();
    e.family(
        "pgstream_status",
        Type::Gauge,
        None,
        "Overall status as a monitoring code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
    )
    .sample(&r, f64::from(overall));
    e.family(
        "pgstream_check_status",
        Type::Gauge,
        None,
        "Each check's status as a monitoring code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
    );
    for c in checks {
        e.sample(&[("repo", repo), ("check", c.name)], f64::from(c.code));
    }
    e.family(
        "pgstream_status_timestamp_seconds",
        Type::Gauge,
        Some("seconds"),
        "When this report was made (Unix time): alert when it stops moving.",
    )
    .sample(&r, unix(now));
    let get = |check: &str, key: &str| -> Option<&Value> {
        checks
            .iter()
            .find(|c| c.name == check)
            .and_then(|c| c.data.get(key))
            .filter(|v| !v.is_null())
    };
    let num = |check: &str, key: &str| get(check, key).and_then(Value::as_f64);
    let time = |check: &str, key: &str| {
        get(check, key)
            .and_then(Value::as_str)
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
    };
    let rk = [("repo", repo), ("kind", KIND)];
    let gauge = |e: &mut Exposition,
                 name: &str,
                 unit: Option<&str>,
                 help: &str,
                 labels: &[(&str, &str)],
                 v: Option<f64>| {
        e.family(name, Type::Gauge, unit, help);
        if let Some(v) = v {
            e.sample(labels, v);
        }
    };
    gauge(
        &mut e,
        "pgstream_backups",
        None,
        "Complete backups in the repository.",
        &r,
        num("backups", "count"),
    );
    let newest_end = time("backups", "newest_backup_end_time");
    gauge(
        &mut e,
        "pgstream_backup_last_end_timestamp_seconds",
        Some("seconds"),
        "When the newest backup of each kind ended (Unix time).",
        &rk,
        newest_end.map(unix),
    );
    gauge(
        &mut e,
        "pgstream_backup_last_age_seconds",
        Some("seconds"),
        "How long ago the newest backup of each kind ended.",
        &rk,
        num("backups", "newest_backup_age_seconds"),
    );
    gauge(
        &mut e,
        "pgstream_backup_last_size_bytes",
        Some("bytes"),
        "The size of the newest backup of each kind (the cluster's files).",
        &rk,
        num("backups", "newest_backup_bytes"),
    );
    gauge(
        &mut e,
        "pgstream_backup_last_stored_bytes",
        Some("bytes"),
        "The newest backup of each kind as stored (compressed, encrypted).",
        &rk,
        num("backups", "newest_backup_stored_bytes"),
    );
    gauge(
        &mut e,
        "pgstream_wal_archive_segments",
        None,
        "Complete WAL segments in the archive.",
        &r,
        num("wal archive", "segments"),
    );
    let wal_age = num("wal archive", "wal_age_seconds");
    gauge(
        &mut e,
        "pgstream_wal_archive_age_seconds",
        Some("seconds"),
        "How long ago WAL last arrived (archived segment or receive-wal's partial segment).",
        &r,
        wal_age,
    );
    let wal_end = wal_age.map(|a| now - Duration::from_secs_f64(a));
    gauge(
        &mut e,
        "pgstream_wal_archive_last_timestamp_seconds",
        Some("seconds"),
        "When WAL last arrived (Unix time).",
        &r,
        wal_end.map(unix),
    );
    // The nominal window: from the oldest backup's end to the newest WAL. Gaps are not looked
    // for here (that reads the archive's contents); `pgstream list` and `verify` find them.
    let window_start = time("backups", "oldest_backup_end_time");
    gauge(
        &mut e,
        "pgstream_recovery_window_start_timestamp_seconds",
        Some("seconds"),
        "The earliest time a point-in-time restore can reach: the oldest backup's end.",
        &r,
        window_start.map(unix),
    );
    gauge(
        &mut e,
        "pgstream_recovery_window_end_timestamp_seconds",
        Some("seconds"),
        "The latest time the WAL archive reaches (its newest WAL; gaps are not checked here).",
        &r,
        window_start.and(wal_end).map(unix),
    );
    gauge(
        &mut e,
        "pgstream_recovery_window_seconds",
        Some("seconds"),
        "The nominal recoverable window: from the oldest backup's end to the newest WAL.",
        &r,
        match (window_start, wal_end) {
            (Some(s), Some(w)) => Some(w.duration_since(s).unwrap_or_default().as_secs_f64()),
            _ => None,
        },
    );
    for (check, what) in [("verify", "verify"), ("drill", "restore drill")] {
        let Some(passed) = get(check, "passed").and_then(Value::as_bool) else {
            continue;
        };
        gauge(
            &mut e,
            &format!("pgstream_{check}_passed"),
            None,
            &format!("1 when the last {what} passed, 0 when it failed."),
            &r,
            Some(f64::from(u8::from(passed))),
        );
        gauge(
            &mut e,
            &format!("pgstream_{check}_last_run_timestamp_seconds"),
            Some("seconds"),
            &format!("When the last {what} report was written (Unix time)."),
            &r,
            num(check, "last_run_age_seconds").map(|a| unix(now) - a),
        );
    }
    if let Some(n) = num("verify", "problems") {
        gauge(
            &mut e,
            "pgstream_verify_problems",
            None,
            "Problems the last verify found (damaged or missing files, gaps).",
            &r,
            Some(n),
        );
    }
    if let Some(secs) = num("drill", "recovery_seconds") {
        gauge(
            &mut e,
            "pgstream_drill_recovery_seconds",
            Some("seconds"),
            "The last drill's recovery time: from its start to the promoted copy answering.",
            &r,
            Some(secs),
        );
    }
    if let Some(slot) = get("slot", "slot").and_then(Value::as_str) {
        let rs = [("repo", repo), ("slot", slot)];
        gauge(
            &mut e,
            "pgstream_slot_active",
            None,
            "1 when something streams from the replication slot.",
            &rs,
            get("slot", "active")
                .and_then(Value::as_bool)
                .map(|a| f64::from(u8::from(a))),
        );
        gauge(
            &mut e,
            "pgstream_slot_lag_bytes",
            Some("bytes"),
            "WAL the server keeps for the slot (current position - restart_lsn).",
            &rs,
            num("slot", "lag_bytes"),
        );
    }
    e.finish()
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
