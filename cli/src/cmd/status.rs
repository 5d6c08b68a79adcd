//! `pgstream status`: repository health (and, with a source, the server's) for people and for
//! monitoring. Exits with monitoring plugin codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
//! Needs no passphrase: it reads the configuration header, the catalog records (checked against
//! their checksums) and the WAL archive's file names and times.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use backup_core::catalog::Catalog;
use pgwire_repl::config::ReplicationMode;
use pgwire_repl::Connection;
use serde_json::{json, Map, Value};

use crate::args::{StatusArgs, StatusFormat};

/// A check's outcome, in rising order of severity (the overall status is the worst one).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok,
    Warning,
    Unknown,
    Critical,
}

impl Level {
    fn exit_code(self) -> i32 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
            Level::Unknown => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
            Level::Unknown => "UNKNOWN",
        }
    }
}

struct Item {
    name: &'static str,
    level: Level,
    message: String,
    data: Map<String, Value>,
}

#[derive(Default)]
struct Report {
    items: Vec<Item>,
}

impl Report {
    fn add(&mut self, name: &'static str, level: Level, message: impl Into<String>) -> &mut Item {
        self.items.push(Item {
            name,
            level,
            message: message.into(),
            data: Map::new(),
        });
        self.items.last_mut().expect("just pushed")
    }

    fn overall(&self) -> Level {
        self.items
            .iter()
            .map(|i| i.level)
            .max()
            .unwrap_or(Level::Unknown)
    }
}

impl Item {
    fn with(&mut self, key: &str, value: impl Into<Value>) -> &mut Item {
        self.data.insert(key.to_string(), value.into());
        self
    }
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let mut report = Report::default();
    let now = SystemTime::now();
    repository(&args, now, &mut report);
    if let Some(path) = &args.verify_report {
        last_run(
            "verify",
            super::status_reports::verify(path),
            now,
            &mut report,
        );
    }
    if let Some(path) = &args.drill_report {
        last_run(
            "drill",
            super::status_reports::drill(path),
            now,
            &mut report,
        );
    }
    if let Some(source) = &args.source {
        server(source, args.slot.as_deref(), &mut report).await;
    }
    let overall = report.overall();
    let format = match (args.format, args.json) {
        (Some(f), _) => f,
        (None, true) => StatusFormat::Json,
        (None, false) => StatusFormat::Text,
    };
    if format == StatusFormat::OpenMetrics {
        let checks: Vec<crate::metrics::status::Check<'_>> = report
            .items
            .iter()
            .map(|i| crate::metrics::status::Check {
                name: i.name,
                code: i.level.exit_code(),
                data: &i.data,
            })
            .collect();
        let text = crate::metrics::status::render(
            &args.repo.to_string(),
            overall.exit_code(),
            &checks,
            now,
        );
        write_out(args.output.as_deref(), &text)?;
        // The health is in the metrics: a textfile timer fails only when it could not write.
        return Ok(());
    }
    let mut out = String::new();
    if format == StatusFormat::Json {
        let checks: Vec<Value> = report
            .items
            .iter()
            .map(|i| {
                let mut o = Map::new();
                o.insert("name".into(), i.name.into());
                o.insert("status".into(), i.level.name().into());
                o.insert("message".into(), i.message.clone().into());
                o.extend(i.data.clone());
                Value::Object(o)
            })
            .collect();
        let json = json!({
            "status": overall.name(),
            "exit_code": overall.exit_code(),
            "repo": args.repo.to_string(),
            "checks": checks,
        });
        out = format!("{}\n", serde_json::to_string_pretty(&json)?);
    } else {
        out.push_str(&format!(
            "pgstream status {}: {}\n",
            overall.name(),
            args.repo
        ));
        for i in &report.items {
            out.push_str(&format!(
                "{:<8} {}: {}\n",
                i.level.name(),
                i.name,
                i.message
            ));
        }
    }
    write_out(args.output.as_deref(), &out)?;
    if overall != Level::Ok {
        std::process::exit(overall.exit_code());
    }
    Ok(())
}

/// Prints `text`, or with `--output` replaces the file atomically (node_exporter's textfile
/// collector must never read half a file), readable by the collector.
fn write_out(output: Option<&std::path::Path>, text: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    match output {
        None => {
            print!("{text}");
            let _ = std::io::stdout().flush();
            Ok(())
        }
        Some(path) => backup_core::fsutil::write_file_durably(path, text.as_bytes(), 0o644)
            .with_context(|| format!("writing the report to {}", path.display())),
    }
}

/// The verify or drill check, from its last report.
fn last_run(
    name: &'static str,
    result: Result<super::status_reports::LastRun, super::status_reports::Missing>,
    now: SystemTime,
    report: &mut Report,
) {
    use super::status_reports::Missing;
    let run = match result {
        Ok(r) => r,
        Err(Missing::NotYet(why)) => {
            report.add(name, Level::Warning, why);
            return;
        }
        Err(Missing::Unreadable(why)) => {
            report.add(name, Level::Unknown, why);
            return;
        }
    };
    let a = age(now, run.at);
    let level = if run.passed {
        Level::Ok
    } else {
        Level::Critical
    };
    report
        .add(name, level, format!("{}, {} ago", run.summary, human(a)))
        .with("passed", run.passed)
        .with("last_run_age_seconds", a.as_secs())
        .with(
            "last_run_time",
            humantime::format_rfc3339_seconds(run.at).to_string(),
        )
        .with("problems", run.problems)
        .with("recovery_seconds", run.recovery_seconds);
}

fn age(now: SystemTime, then: SystemTime) -> Duration {
    // A time in the future (clock skew) counts as fresh.
    now.duration_since(then).unwrap_or_default()
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

fn by_age(d: Duration, warn: Duration, crit: Duration) -> Level {
    if d > crit {
        Level::Critical
    } else if d > warn {
        Level::Warning
    } else {
        Level::Ok
    }
}

fn repository(args: &StatusArgs, now: SystemTime, report: &mut Report) {
    let location = &args.repo;
    let store = match backup_core::store::open(location) {
        Ok(s) => s,
        Err(e) => {
            report.add(
                "repository",
                Level::Unknown,
                format!("cannot open {location}: {e}"),
            );
            return;
        }
    };
    let repo = store.as_ref();
    let config_path = repo.describe(backup_core::repo::config::CONFIG_FILE);
    let config = match backup_core::repo::read_config(repo) {
        Ok(c) => c,
        Err(backup_core::RepoError::NotRepository { .. }) => {
            report.add(
                "repository",
                Level::Critical,
                format!(
                    "{location} is not a pgstream repository (no {})",
                    backup_core::repo::config::CONFIG_FILE
                ),
            );
            return;
        }
        Err(
            e @ (backup_core::RepoError::BadConfig { .. }
            | backup_core::RepoError::UnsupportedVersion { .. }),
        ) => {
            report.add(
                "repository",
                Level::Critical,
                format!("{config_path} is damaged: {e}"),
            );
            return;
        }
        Err(e) => {
            report.add(
                "repository",
                Level::Unknown,
                format!("cannot read {config_path}: {e}"),
            );
            return;
        }
    };
    let bound = match &config.cluster {
        Some(id) => format!(
            "bound to system {} (PostgreSQL {})",
            id.system_identifier, id.major
        ),
        None => "not bound to a cluster yet".to_string(),
    };
    report.add(
        "repository",
        Level::Ok,
        format!(
            "configuration readable, {}, {bound}",
            if config.encryption.is_some() {
                "encrypted"
            } else {
                "unencrypted"
            }
        ),
    );
    backups(repo, args, now, report);
    wal(repo, &config, args, now, report);
}

fn backups(
    repo: &dyn backup_core::store::Store,
    args: &StatusArgs,
    now: SystemTime,
    report: &mut Report,
) {
    let list = match Catalog::new(repo).list() {
        Ok(l) => l,
        Err(e) => {
            report.add(
                "backups",
                Level::Critical,
                format!("catalog: {}", crate::exit::message(&e.into())),
            );
            return;
        }
    };
    let Some(newest) = list.last() else {
        report
            .add(
                "backups",
                Level::Critical,
                "no backup in the repository (take one with pgstream base)",
            )
            .with("count", 0);
        return;
    };
    let Ok(end) = humantime::parse_rfc3339_weak(&newest.end_time) else {
        report.add(
            "backups",
            Level::Unknown,
            format!(
                "newest backup {} has an unreadable end time {:?}",
                newest.id, newest.end_time
            ),
        );
        return;
    };
    let a = age(now, end);
    let level = by_age(a, args.warn_backup_age, args.crit_backup_age);
    let limit = match level {
        Level::Critical => format!(" (older than {})", human(args.crit_backup_age)),
        Level::Warning => format!(" (older than {})", human(args.warn_backup_age)),
        _ => String::new(),
    };
    report
        .add(
            "backups",
            level,
            format!(
                "{} backup{}, records intact; newest {} ended {} ago{limit}",
                list.len(),
                if list.len() == 1 { "" } else { "s" },
                newest.id,
                human(a)
            ),
        )
        .with("count", list.len())
        .with("newest_backup", newest.id.clone())
        .with("newest_backup_end_time", newest.end_time.clone())
        .with("newest_backup_age_seconds", a.as_secs())
        .with("newest_backup_bytes", newest.raw_bytes)
        .with("newest_backup_stored_bytes", newest.stored_bytes)
        .with(
            "oldest_backup_end_time",
            list.first().map(|b| b.end_time.clone()),
        );
}

fn wal(
    repo: &dyn backup_core::store::Store,
    config: &backup_core::repo::config::RepoConfig,
    args: &StatusArgs,
    now: SystemTime,
    report: &mut Report,
) {
    let activity = match backup_core::health::wal_activity(repo, config) {
        Ok(a) => a,
        Err(e) => {
            report.add(
                "wal archive",
                Level::Unknown,
                format!("cannot read {}: {e}", repo.describe("wal")),
            );
            return;
        }
    };
    let seg_age = activity
        .newest_segment
        .as_ref()
        .map(|f| age(now, f.modified));
    let recv_age = activity.receiving.as_ref().map(|f| age(now, f.modified));
    // Either kind of file proves WAL is still arriving; the fresher one counts.
    let freshest = match (seg_age, recv_age) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let Some(freshest) = freshest else {
        report
            .add(
                "wal archive",
                Level::Critical,
                "no WAL archived (run pgstream receive-wal, or archive-push as archive_command)",
            )
            .with("segments", 0);
        return;
    };
    let level = by_age(freshest, args.warn_wal_age, args.crit_wal_age);
    let mut parts = Vec::new();
    if let (Some(f), Some(a)) = (&activity.newest_segment, seg_age) {
        parts.push(format!(
            "{} segments, newest archived {} ago ({})",
            activity.segments,
            human(a),
            f.segment
        ));
    }
    if let (Some(f), Some(a)) = (&activity.receiving, recv_age) {
        parts.push(format!(
            "receive-wal partial {} last written {} ago",
            f.segment,
            human(a)
        ));
    }
    match level {
        Level::Critical => parts.push(format!("nothing newer than {}", human(args.crit_wal_age))),
        Level::Warning => parts.push(format!("nothing newer than {}", human(args.warn_wal_age))),
        _ => {}
    }
    let item = report
        .add("wal archive", level, parts.join("; "))
        .with("segments", activity.segments)
        .with("wal_age_seconds", freshest.as_secs());
    if let (Some(f), Some(a)) = (&activity.newest_segment, seg_age) {
        item.with("newest_segment", f.segment.clone())
            .with("newest_segment_age_seconds", a.as_secs());
    }
    if let (Some(f), Some(a)) = (&activity.receiving, recv_age) {
        item.with("receiving_segment", f.segment.clone())
            .with("receiving_age_seconds", a.as_secs());
    }
}

async fn server(source: &str, slot: Option<&str>, report: &mut Report) {
    let mut config = match super::base::source_config(source) {
        Ok(c) => c,
        Err(e) => {
            report.add("server", Level::Unknown, crate::exit::message(&e));
            return;
        }
    };
    config.replication = ReplicationMode::Off;
    let mut conn = match Connection::connect(&config).await {
        Ok(c) => c,
        Err(e) => {
            report.add(
                "server",
                Level::Critical,
                format!("{} is unreachable: {e}", config.redacted()),
            );
            return;
        }
    };
    let version = conn.server_version();
    report
        .add(
            "server",
            Level::Ok,
            format!("reachable, PostgreSQL {}", version.major),
        )
        .with("server_major", version.major);
    if let Some(name) = slot {
        slot_status(&mut conn, name, report).await;
    }
    conn.close().await;
}

async fn slot_status(conn: &mut Connection, name: &str, report: &mut Report) {
    let sql = format!(
        "SELECT active, restart_lsn, wal_status, \
           ((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() \
                  ELSE pg_current_wal_lsn() END) - restart_lsn)::bigint \
         FROM pg_replication_slots WHERE slot_name = '{}'",
        name.replace('\'', "''")
    );
    let rs = match conn.simple_query(&sql).await {
        Ok(rs) => rs,
        Err(e) => {
            report.add(
                "slot",
                Level::Unknown,
                format!("reading pg_replication_slots: {e}"),
            );
            return;
        }
    };
    let Some(row) = rs.first().and_then(|r| r.rows.first()) else {
        report.add(
            "slot",
            Level::Critical,
            format!("replication slot {name} does not exist"),
        );
        return;
    };
    let text = |i: usize| {
        row.get(i)
            .cloned()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    let active = text(0).as_deref() == Some("t");
    let restart_lsn = text(1);
    let wal_status = text(2).unwrap_or_else(|| "unknown".to_string());
    let lag: Option<i64> = text(3).and_then(|v| v.parse().ok());
    let mut level = if active { Level::Ok } else { Level::Warning };
    match wal_status.as_str() {
        "lost" => level = Level::Critical,
        "unreserved" => level = level.max(Level::Warning),
        _ => {}
    }
    let lag_text = match lag {
        Some(b) => format!("restart_lsn lag {}", super::human_bytes(b.max(0) as u64)),
        None => "restart_lsn lag unknown (the slot has no restart_lsn)".to_string(),
    };
    report
        .add(
            "slot",
            level,
            format!(
                "{name}: {}, wal_status {wal_status}, {lag_text}",
                if active {
                    "active"
                } else {
                    "inactive (nothing is streaming from it)"
                }
            ),
        )
        .with("slot", name)
        .with("active", active)
        .with("wal_status", wal_status)
        .with("restart_lsn", restart_lsn)
        .with("lag_bytes", lag);
}

/// clap parser for `--warn-backup-age 26h` and the like.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 90s, 15m, 26h, 2d)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_map_to_levels() {
        let h = Duration::from_secs(3600);
        assert_eq!(by_age(h, 2 * h, 3 * h), Level::Ok);
        assert_eq!(by_age(h * 5 / 2, 2 * h, 3 * h), Level::Warning);
        assert_eq!(by_age(4 * h, 2 * h, 3 * h), Level::Critical);
        assert!(Level::Critical > Level::Unknown && Level::Unknown > Level::Warning);
        assert_eq!(parse_duration("26h").unwrap(), 26 * h);
        assert!(parse_duration("soon").is_err());
    }
}
