//! `pgstream check`: is the server set up for pgstream? Each item is OK or a PROBLEM with the
//! exact fix. A refused replication connection is a finding, not a failure of the command.

use std::io::Write as _;

use anyhow::Context as _;
use pgwire_repl::config::ReplicationMode;
use pgwire_repl::Connection;

use crate::args::CheckArgs;

mod incremental;

/// Exit code when the check ran and found problems (docs/cli.md).
pub const PROBLEMS_FOUND: i32 = 10;

/// `base` uses two walsenders (the tar stream and the WAL stream).
const MIN_WAL_SENDERS: i64 = 2;

struct Item {
    what: String,
    problem: bool,
    text: String,
    fix: Vec<String>,
}

#[derive(Default)]
struct Report {
    items: Vec<Item>,
}

impl Report {
    fn ok(&mut self, what: &str, text: impl Into<String>) {
        self.items.push(Item {
            what: what.to_string(),
            problem: false,
            text: text.into(),
            fix: Vec::new(),
        });
    }

    fn problem(&mut self, what: &str, text: impl Into<String>, fix: &[&str]) {
        self.items.push(Item {
            what: what.to_string(),
            problem: true,
            text: text.into(),
            fix: fix.iter().map(|s| s.to_string()).collect(),
        });
    }

    fn problems(&self) -> usize {
        self.items.iter().filter(|i| i.problem).count()
    }
}

/// The server's view of us and its settings, from the ordinary connection.
struct ServerFacts {
    version_num: i64,
    /// `server_version`, as the server spells it (`15.18`, `18.1 (Debian 18.1-1)`).
    version: String,
    role: String,
    rolreplication: bool,
    rolsuper: bool,
    client_addr: Option<String>,
    settings: std::collections::HashMap<String, String>,
}

pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let mut config = super::base::source_config(&args.source)?;
    config.replication = ReplicationMode::Off;
    let mut conn = connect_for_sql(&config).await?;
    let facts = server_facts(&mut conn).await;
    let slot = match (&facts, &args.slot) {
        (Ok(_), Some(name)) => Some(slot_state(&mut conn, name).await),
        _ => None,
    };
    conn.close().await;
    let facts = facts?;

    let mut report = Report::default();
    check_settings(&facts, &mut report);
    check_role(&facts, &mut report);
    let mut repl_config = config.clone();
    repl_config.replication = ReplicationMode::Physical;
    check_replication_connection(&repl_config, &facts, &mut report).await;
    if let (Some(name), Some(state)) = (&args.slot, slot) {
        check_slot(name, state?, &mut report);
    }
    if args.archive_push {
        check_archiving(&facts, &mut report);
    }
    if args.incremental {
        incremental::check_incremental(&facts, &mut report);
    }
    print(&report);
    if report.problems() > 0 {
        let _ = std::io::stdout().flush();
        std::process::exit(PROBLEMS_FOUND);
    }
    Ok(())
}

fn print(report: &Report) {
    for item in &report.items {
        let tag = if item.problem { "PROBLEM" } else { "OK" };
        println!("{tag:<8} {}: {}", item.what, item.text);
        for (i, line) in item.fix.iter().enumerate() {
            let lead = if i == 0 { "fix:" } else { "" };
            println!("         {lead:<4} {line}");
        }
    }
    match report.problems() {
        0 => println!("all {} checks passed", report.items.len()),
        n => println!(
            "{n} problem{} found in {} checks",
            if n == 1 { "" } else { "s" },
            report.items.len()
        ),
    }
}

async fn server_facts(conn: &mut Connection) -> anyhow::Result<ServerFacts> {
    const SQL: &str = "SELECT current_setting('server_version_num'), r.rolname, \
         r.rolreplication, r.rolsuper, host(inet_client_addr()), \
         current_setting('server_version') \
         FROM pg_roles r WHERE r.rolname = current_user";
    let rs = conn
        .simple_query(SQL)
        .await
        .context("reading the role and version")?;
    let row = rs
        .first()
        .and_then(|r| r.rows.first())
        .context("the server returned no row for the current role")?;
    let text = |i: usize| {
        row.get(i)
            .cloned()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    let version_num = text(0).and_then(|v| v.parse().ok()).unwrap_or(0);
    let role = text(1).unwrap_or_default();
    let rolreplication = text(2).as_deref() == Some("t");
    let rolsuper = text(3).as_deref() == Some("t");
    let client_addr = text(4);
    let version = text(5).unwrap_or_default();
    // Settings a role cannot read (archive_command without pg_read_all_settings) are absent.
    const SETTINGS: &str = "SELECT name, setting FROM pg_settings WHERE name IN \
         ('wal_level', 'max_wal_senders', 'max_replication_slots', 'archive_mode', \
          'archive_command', 'archive_library', 'summarize_wal', 'wal_summary_keep_time')";
    let rs = conn
        .simple_query(SETTINGS)
        .await
        .context("reading pg_settings")?;
    let mut settings = std::collections::HashMap::new();
    for row in rs.iter().flat_map(|r| r.rows.iter()) {
        if let (Some(Some(k)), Some(Some(v))) = (row.first(), row.get(1)) {
            settings.insert(
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            );
        }
    }
    Ok(ServerFacts {
        version_num,
        version,
        role,
        rolreplication,
        rolsuper,
        client_addr,
        settings,
    })
}

/// The ordinary connection for the checks' SQL. A role without a database of its own name
/// (the default dbname) is common for a backup role: then `postgres` is used, as the SQL
/// reads only cluster-wide catalogs and settings.
async fn connect_for_sql(config: &pgwire_repl::config::Config) -> anyhow::Result<Connection> {
    let first = Connection::connect(config).await;
    let e = match first {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    if config.dbname.is_some() || e.code() != Some(SQLSTATE_INVALID_CATALOG_NAME) {
        return Err(e).with_context(|| format!("connecting to {}", config.redacted()));
    }
    let mut fallback = config.clone();
    fallback.dbname = Some("postgres".to_string());
    tracing::info!(
        "database {} does not exist; checking through dbname=postgres",
        config.effective_dbname()
    );
    Connection::connect(&fallback)
        .await
        .with_context(|| format!("connecting to {}", fallback.redacted()))
}

/// `database "x" does not exist`.
const SQLSTATE_INVALID_CATALOG_NAME: &str = "3D000";

/// `PostgreSQL 15.18 (150018)`: the release as people know it, and the number.
fn server_version_text(facts: &ServerFacts) -> String {
    if facts.version.is_empty() {
        return format!("server_version_num {}", facts.version_num);
    }
    format!("PostgreSQL {} ({})", facts.version, facts.version_num)
}

/// `ALTER SYSTEM SET name = value;` followed by how to apply it.
fn alter_system(name: &str, value: &str, restart: bool) -> [String; 2] {
    [
        format!("ALTER SYSTEM SET {name} = {value};"),
        if restart {
            "then restart the server (pg_ctl restart, systemctl restart postgresql)".to_string()
        } else {
            "SELECT pg_reload_conf();".to_string()
        },
    ]
}

fn problem_owned(report: &mut Report, what: &str, text: String, fix: &[String]) {
    let fix: Vec<&str> = fix.iter().map(String::as_str).collect();
    report.problem(what, text, &fix);
}

fn check_settings(facts: &ServerFacts, report: &mut Report) {
    if facts.version_num >= 130000 {
        report.ok("server version", server_version_text(facts));
    } else {
        report.problem(
            "server version",
            format!(
                "server_version_num {} is older than PostgreSQL 13, which pgstream does not support",
                facts.version_num
            ),
            &["upgrade the server to PostgreSQL 13 or later"],
        );
    }
    let get = |k: &str| facts.settings.get(k).map(String::as_str);
    match get("wal_level") {
        Some(l @ ("replica" | "logical")) => report.ok("wal_level", l),
        other => problem_owned(
            report,
            "wal_level",
            format!(
                "wal_level is {}; streaming backups need replica or logical",
                other.unwrap_or("unknown")
            ),
            &alter_system("wal_level", "replica", true),
        ),
    }
    let int = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok());
    match int("max_wal_senders") {
        Some(n) if n >= MIN_WAL_SENDERS => report.ok("max_wal_senders", n.to_string()),
        n => problem_owned(
            report,
            "max_wal_senders",
            format!(
                "max_wal_senders is {}; pgstream base uses {MIN_WAL_SENDERS} walsenders at once \
                 (receive-wal one more)",
                n.map_or("unknown".to_string(), |n| n.to_string())
            ),
            &alter_system("max_wal_senders", "10", true),
        ),
    }
    match int("max_replication_slots") {
        Some(n) if n >= 1 => report.ok("max_replication_slots", n.to_string()),
        n => problem_owned(
            report,
            "max_replication_slots",
            format!(
                "max_replication_slots is {}; pgstream base and receive-wal --slot need slots",
                n.map_or("unknown".to_string(), |n| n.to_string())
            ),
            &alter_system("max_replication_slots", "10", true),
        ),
    }
}

fn alter_role_fix(role: &str) -> String {
    crate::exit::alter_role_replication(role)
}

fn check_role(facts: &ServerFacts, report: &mut Report) {
    let what = "role REPLICATION";
    if facts.rolsuper {
        report.ok(what, format!("{} is a superuser", facts.role));
    } else if facts.rolreplication {
        report.ok(what, format!("{} has REPLICATION", facts.role));
    } else {
        report.problem(
            what,
            format!(
                "role {} has neither REPLICATION nor SUPERUSER, so it cannot start a walsender",
                facts.role
            ),
            &[&alter_role_fix(&facts.role)],
        );
    }
}

fn hba_fix(facts: &ServerFacts, config: &pgwire_repl::config::Config) -> Vec<String> {
    let over_socket = facts.client_addr.is_none()
        && config
            .targets
            .first()
            .is_some_and(|t| matches!(t.host, pgwire_repl::config::Host::Unix(_)));
    let line = if over_socket {
        format!("local replication {} scram-sha-256", facts.role)
    } else {
        let addr = match facts.client_addr.as_deref() {
            Some(a) if a.contains(':') => format!("{a}/128"),
            Some(a) => format!("{a}/32"),
            None => "<client address>/32".to_string(),
        };
        format!("host replication {} {addr} scram-sha-256", facts.role)
    };
    vec![
        format!("add to pg_hba.conf, before any line that rejects it: {line}"),
        "SELECT pg_reload_conf();".to_string(),
    ]
}

async fn check_replication_connection(
    config: &pgwire_repl::config::Config,
    facts: &ServerFacts,
    report: &mut Report,
) {
    let what = "replication connection";
    let err = match Connection::connect(config).await {
        Ok(mut conn) => {
            let r = conn.identify_system().await;
            conn.close().await;
            match r {
                Ok(id) => {
                    report.ok(
                        what,
                        format!(
                            "accepted (system identifier {}, timeline {})",
                            id.system_id, id.timeline
                        ),
                    );
                    return;
                }
                Err(e) => e,
            }
        }
        Err(e) => e,
    };
    let message = err.to_string();
    match err.code() {
        Some("28000") => problem_owned(
            report,
            what,
            format!("refused by pg_hba.conf: {message}"),
            &hba_fix(facts, config),
        ),
        Some("42501") => problem_owned(
            report,
            what,
            format!("refused for lack of the REPLICATION attribute: {message}"),
            &[alter_role_fix(&facts.role)],
        ),
        Some("53300") => problem_owned(
            report,
            what,
            format!("no walsender available: {message}"),
            &alter_system("max_wal_senders", "10", true),
        ),
        Some(code) if code.starts_with("28") => problem_owned(
            report,
            what,
            format!("authentication failed: {message}"),
            &[
                "check the password (PGPASSWORD, .pgpass) and the method of the pg_hba.conf \
               line for replication connections of this role"
                    .to_string(),
            ],
        ),
        _ => problem_owned(
            report,
            what,
            format!("failed: {message}"),
            &["see the server log for the reason".to_string()],
        ),
    }
}

struct SlotState {
    slot_type: String,
    active: bool,
    wal_status: Option<String>,
    safe_wal_size: Option<String>,
}

async fn slot_state(conn: &mut Connection, name: &str) -> anyhow::Result<Option<SlotState>> {
    let sql = format!(
        "SELECT slot_type, active, wal_status, safe_wal_size FROM pg_replication_slots \
         WHERE slot_name = {}",
        sql_literal(name)
    );
    let rs = conn
        .simple_query(&sql)
        .await
        .context("reading pg_replication_slots")?;
    let Some(row) = rs.first().and_then(|r| r.rows.first()) else {
        return Ok(None);
    };
    let text = |i: usize| {
        row.get(i)
            .cloned()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    Ok(Some(SlotState {
        slot_type: text(0).unwrap_or_default(),
        active: text(1).as_deref() == Some("t"),
        wal_status: text(2),
        safe_wal_size: text(3),
    }))
}

fn check_slot(name: &str, state: Option<SlotState>, report: &mut Report) {
    let what = "replication slot";
    let lit = sql_literal(name);
    let Some(s) = state else {
        problem_owned(
            report,
            what,
            format!("slot {name} does not exist"),
            &[
                format!("SELECT pg_create_physical_replication_slot({lit}, true);"),
                "or run pgstream receive-wal with --slot and --create-slot".to_string(),
            ],
        );
        return;
    };
    if s.slot_type != "physical" {
        problem_owned(
            report,
            what,
            format!(
                "slot {name} is a {} slot; pgstream needs a physical one",
                s.slot_type
            ),
            &[
                format!("SELECT pg_drop_replication_slot({lit});"),
                format!("SELECT pg_create_physical_replication_slot({lit}, true);"),
            ],
        );
        return;
    }
    let wal_status = s.wal_status.as_deref().unwrap_or("unknown");
    let active = if s.active { "active" } else { "inactive" };
    let safe = s
        .safe_wal_size
        .as_deref()
        .map(|b| format!(", safe_wal_size {b} bytes"))
        .unwrap_or_default();
    match wal_status {
        "lost" => problem_owned(
            report,
            what,
            format!(
                "slot {name} ({active}) has lost WAL it needed: the archive has a gap; \
                 recreate it and take a new base backup"
            ),
            &[
                format!("SELECT pg_drop_replication_slot({lit});"),
                format!("SELECT pg_create_physical_replication_slot({lit}, true);"),
                "pgstream base --source ... --repo ...".to_string(),
            ],
        ),
        "unreserved" => problem_owned(
            report,
            what,
            format!("slot {name} ({active}) is about to lose WAL (wal_status unreserved{safe})"),
            &[
                "start pgstream receive-wal on this slot, or raise max_slot_wal_keep_size"
                    .to_string(),
                "ALTER SYSTEM SET max_slot_wal_keep_size = -1; SELECT pg_reload_conf();"
                    .to_string(),
            ],
        ),
        _ => report.ok(
            what,
            format!("slot {name} is physical, {active}, wal_status {wal_status}{safe}"),
        ),
    }
}

fn check_archiving(facts: &ServerFacts, report: &mut Report) {
    let get = |k: &str| facts.settings.get(k).map(String::as_str);
    match get("archive_mode") {
        Some(m @ ("on" | "always")) => report.ok("archive_mode", m),
        other => problem_owned(
            report,
            "archive_mode",
            format!(
                "archive_mode is {}; archive-push runs only when archiving is on",
                other.unwrap_or("unknown")
            ),
            &alter_system("archive_mode", "on", true),
        ),
    }
    if let Some(lib) = get("archive_library").filter(|l| !l.is_empty()) {
        problem_owned(
            report,
            "archive_library",
            format!("archive_library is {lib}, which replaces archive_command"),
            &[
                "ALTER SYSTEM RESET archive_library;".to_string(),
                "SELECT pg_reload_conf();".to_string(),
            ],
        );
    }
    let push = "ALTER SYSTEM SET archive_command = 'pgstream archive-push --repo /backups/main \
                --passphrase-file /etc/pgstream/passphrase %p';";
    match get("archive_command") {
        None => report.problem(
            "archive_command",
            format!(
                "role {} cannot read archive_command (it needs superuser or \
                 pg_read_all_settings)",
                facts.role
            ),
            &[&format!(
                "GRANT pg_read_all_settings TO {};",
                quote_ident(&facts.role)
            )],
        ),
        Some(cmd) if cmd.contains("pgstream archive-push") || cmd.contains(" archive-push ") => {
            report.ok("archive_command", cmd)
        }
        Some(cmd) => report.problem(
            "archive_command",
            format!("archive_command is {cmd:?}, which does not run pgstream archive-push"),
            &[push, "SELECT pg_reload_conf();"],
        ),
    }
}

use crate::exit::quote_ident;

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_when_needed() {
        assert_eq!(quote_ident("backup"), "backup");
        assert_eq!(quote_ident("Backup"), "\"Backup\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(sql_literal("it's"), "'it''s'");
    }
}
