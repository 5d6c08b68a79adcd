//! `pgstream check --incremental`: can this server take incremental backups?

use super::{alter_system, problem_owned, Report, ServerFacts};

pub(super) fn check_incremental(facts: &ServerFacts, report: &mut Report) {
    if facts.version_num < 170000 {
        report.problem(
            "incremental backups",
            format!(
                "server_version_num {} is older than PostgreSQL 17, which has no incremental \
                 backups",
                facts.version_num
            ),
            &["upgrade the server to PostgreSQL 17 or later, or take full backups only"],
        );
        return;
    }
    let get = |k: &str| facts.settings.get(k).map(String::as_str);
    match get("summarize_wal") {
        Some("on") => report.ok("summarize_wal", "on"),
        other => {
            let mut fix = alter_system("summarize_wal", "on", false).to_vec();
            fix.push(
                "then take a full backup: incremental backups build only on backups taken \
                 while WAL was summarized"
                    .to_string(),
            );
            problem_owned(
                report,
                "summarize_wal",
                format!(
                    "summarize_wal is {}; incremental backups need the server's WAL summaries",
                    other.unwrap_or("unknown")
                ),
                &fix,
            );
        }
    }
    if let Some(keep) = get("wal_summary_keep_time") {
        // In minutes; 0 keeps them forever.
        let text = match keep.parse::<u64>() {
            Ok(0) => "0 (summaries are never removed)".to_string(),
            Ok(m) => format!(
                "{m} min: an incremental backup's parent must have started within the last {:.1} days",
                m as f64 / 1440.0
            ),
            Err(_) => keep.to_string(),
        };
        report.ok("wal_summary_keep_time", text);
    }
}
