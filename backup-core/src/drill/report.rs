//! The drill report: what was restored, the target asked and reached, the timings, every check
//! and the verdict. Serialised as JSON (`--json`) or rendered as markdown.

use serde::Serialize;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Fail,
    /// Not run, and not a failure (amcheck not installed).
    Skipped,
}

impl CheckStatus {
    fn label(self) -> &'static str {
        match self {
            CheckStatus::Pass => "PASS",
            CheckStatus::Fail => "FAIL",
            CheckStatus::Skipped => "skipped",
        }
    }
}

/// One check: `connect`, `row counts`, `check-sql`, `amcheck`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    /// The database it ran in, when it ran in one.
    pub database: Option<String>,
    pub status: CheckStatus,
    /// What was found (counts, the error, why it was skipped).
    pub detail: String,
    pub seconds: f64,
}

/// `count(*)` of one table.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TableCount {
    pub database: String,
    /// `schema.table`, quoted as needed.
    pub table: String,
    pub rows: u64,
}

/// The backup restored.
#[derive(Debug, Clone, Serialize)]
pub struct BackupUsed {
    pub id: String,
    pub server_version: String,
    pub start_lsn: String,
    pub end_lsn: String,
    pub end_time: String,
    pub timeline: u32,
}

/// Where recovery stopped.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Reached {
    /// `pg_last_wal_replay_lsn()` when replay paused at the target (or ended).
    pub lsn: Option<String>,
    /// `pg_last_xact_replay_timestamp()`: the commit time of the last transaction replayed.
    pub last_transaction_time: Option<String>,
    /// The timeline after promotion.
    pub timeline: Option<u32>,
}

/// Durations in seconds; `None` for a phase that was not reached.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Timings {
    /// Choosing the backup, unpacking it and writing the recovery settings.
    pub restore_seconds: Option<f64>,
    /// From starting the server until it accepted connections (consistent).
    pub server_start_seconds: Option<f64>,
    /// From starting the server until replay reached the target (paused there, or recovery
    /// ended for the latest target): server start plus WAL replay.
    pub wal_replay_seconds: Option<f64>,
    /// From the target until the server was promoted (out of recovery).
    pub promote_seconds: Option<f64>,
    /// From the start of the drill until the server was promoted and a new connection
    /// succeeded: the recovery time objective this drill measured.
    pub total_recovery_seconds: Option<f64>,
    /// All checks.
    pub checks_seconds: Option<f64>,
    /// The whole drill, cleanup included.
    pub total_seconds: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// `PASS` or `FAIL`.
    pub result: &'static str,
    pub passed: bool,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub repository: String,
    pub backup: Option<BackupUsed>,
    /// The recovery target asked for, in words.
    pub target: String,
    pub target_timeline: String,
    pub reached: Reached,
    /// `restore_command (pgstream wal-fetch)` or `copied into pg_wal/`.
    pub wal_source: String,
    /// `postgres --version` of the binaries used, and their directory.
    pub server: Option<String>,
    pub os_user: String,
    pub timings: Timings,
    pub checks: Vec<CheckResult>,
    pub row_counts: Vec<TableCount>,
    /// Why the drill failed, when it did before its checks (restore, start, recovery).
    pub failure: Option<String>,
    /// The end of the server log, when the server failed.
    pub server_log_tail: Option<String>,
    pub scratch_dir: String,
    /// Whether the scratch directory was kept (`--keep`) or removed.
    pub scratch_kept: bool,
    pub interrupted: bool,
}

impl DrillReport {
    /// PASS when nothing failed: no failure, no failed check.
    pub fn finish(&mut self) {
        self.passed = self.failure.is_none()
            && !self.interrupted
            && self.checks.iter().all(|c| c.status != CheckStatus::Fail);
        self.result = if self.passed { "PASS" } else { "FAIL" };
    }

    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let line = |m: &mut String, s: String| {
            m.push_str(&s);
            m.push('\n');
        };
        line(&mut m, format!("# pgstream restore drill: {}", self.result));
        line(&mut m, String::new());
        line(&mut m, format!("- started: {}", self.started_at));
        line(&mut m, format!("- repository: {}", self.repository));
        match &self.backup {
            Some(b) => line(
                &mut m,
                format!(
                    "- backup: {} (PostgreSQL {}, timeline {}, {} to {}, ended {})",
                    b.id, b.server_version, b.timeline, b.start_lsn, b.end_lsn, b.end_time
                ),
            ),
            None => line(&mut m, "- backup: none chosen".into()),
        }
        line(
            &mut m,
            format!(
                "- target asked: {} (timeline {})",
                self.target, self.target_timeline
            ),
        );
        line(
            &mut m,
            format!(
                "- target reached: LSN {}, last transaction replayed at {}, timeline after promotion {}",
                opt(&self.reached.lsn),
                opt(&self.reached.last_transaction_time),
                self.reached
                    .timeline
                    .map_or("unknown".to_string(), |t| t.to_string())
            ),
        );
        line(&mut m, format!("- WAL from: {}", self.wal_source));
        if let Some(s) = &self.server {
            line(&mut m, format!("- server: {s}, run as {}", self.os_user));
        }
        line(
            &mut m,
            format!(
                "- scratch directory: {} ({})",
                self.scratch_dir,
                if self.scratch_kept { "kept" } else { "removed" }
            ),
        );
        line(&mut m, String::new());
        line(&mut m, "## Timings".into());
        line(&mut m, String::new());
        line(&mut m, "| phase | seconds |".into());
        line(&mut m, "|---|---|".into());
        let t = &self.timings;
        for (name, v) in [
            ("restore (unpack)", t.restore_seconds),
            ("server start until consistent", t.server_start_seconds),
            (
                "server start + WAL replay to the target",
                t.wal_replay_seconds,
            ),
            ("promotion", t.promote_seconds),
            (
                "**total recovery** (drill start to promoted and connected)",
                t.total_recovery_seconds,
            ),
            ("checks", t.checks_seconds),
            ("whole drill", Some(t.total_seconds)),
        ] {
            line(&mut m, format!("| {name} | {} |", secs(v)));
        }
        line(&mut m, String::new());
        line(&mut m, "## Checks".into());
        line(&mut m, String::new());
        if self.checks.is_empty() {
            line(&mut m, "No check ran.".into());
        } else {
            line(
                &mut m,
                "| check | database | result | seconds | detail |".into(),
            );
            line(&mut m, "|---|---|---|---|---|".into());
            for c in &self.checks {
                line(
                    &mut m,
                    format!(
                        "| {} | {} | {} | {:.3} | {} |",
                        c.name,
                        c.database.as_deref().unwrap_or(""),
                        c.status.label(),
                        c.seconds,
                        cell(&c.detail)
                    ),
                );
            }
        }
        if !self.row_counts.is_empty() {
            line(&mut m, String::new());
            line(&mut m, "## Row counts".into());
            line(&mut m, String::new());
            line(&mut m, "| database | table | rows |".into());
            line(&mut m, "|---|---|---|".into());
            for r in &self.row_counts {
                line(
                    &mut m,
                    format!(
                        "| {} | {} | {} |",
                        cell(&r.database),
                        cell(&r.table),
                        r.rows
                    ),
                );
            }
        }
        if let Some(f) = &self.failure {
            line(&mut m, String::new());
            line(&mut m, "## Failure".into());
            line(&mut m, String::new());
            line(&mut m, f.clone());
        }
        if let Some(tail) = &self.server_log_tail {
            line(&mut m, String::new());
            line(&mut m, "## End of the server log".into());
            line(&mut m, String::new());
            line(&mut m, "```".into());
            line(&mut m, tail.clone());
            line(&mut m, "```".into());
        }
        m
    }
}

fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("unknown")
}

fn secs(v: Option<f64>) -> String {
    v.map_or("not reached".to_string(), |s| format!("{s:.3}"))
}

/// Text fit for one markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> DrillReport {
        DrillReport {
            result: "FAIL",
            passed: false,
            started_at: "2026-01-01T00:00:00Z".into(),
            repository: "/r".into(),
            backup: None,
            target: "the end of the archived WAL".into(),
            target_timeline: "latest".into(),
            reached: Reached::default(),
            wal_source: "restore_command (pgstream wal-fetch)".into(),
            server: None,
            os_user: "postgres".into(),
            timings: Timings {
                restore_seconds: Some(1.5),
                total_seconds: 3.0,
                ..Timings::default()
            },
            checks: vec![CheckResult {
                name: "check-sql".into(),
                database: Some("postgres".into()),
                status: CheckStatus::Pass,
                detail: "a | b\nc".into(),
                seconds: 0.25,
            }],
            row_counts: vec![],
            failure: None,
            server_log_tail: None,
            scratch_dir: "/tmp/x".into(),
            scratch_kept: false,
            interrupted: false,
        }
    }

    #[test]
    fn a_failed_check_fails_the_drill() {
        let mut r = report();
        r.finish();
        assert_eq!(r.result, "PASS");
        r.checks[0].status = CheckStatus::Fail;
        r.finish();
        assert_eq!(r.result, "FAIL");
        let mut r = report();
        r.checks[0].status = CheckStatus::Skipped;
        r.failure = None;
        r.finish();
        assert!(r.passed, "a skipped check is not a failure");
    }

    #[test]
    fn markdown_shows_timings_and_keeps_cells_on_one_line() {
        let mut r = report();
        r.finish();
        let md = r.markdown();
        assert!(md.contains("| restore (unpack) | 1.500 |"), "{md}");
        assert!(md.contains("| promotion | not reached |"), "{md}");
        assert!(md.contains("a \\| b c"), "{md}");
        assert!(md.starts_with("# pgstream restore drill: PASS"), "{md}");
    }
}
