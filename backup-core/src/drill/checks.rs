//! The checks run on the promoted copy: `count(*)` over every table of every database that
//! allows connections, an optional SQL file, and amcheck where the server has it
//! (`bt_index_check` on every btree index; `verify_heapam` on every table from 14 on).
//! Each produces a [`CheckResult`] with its duration; a failure never stops the others.

use std::time::Instant;

use pgwire_repl::Connection;
use tokio_util::sync::CancellationToken;

use super::report::{CheckResult, CheckStatus, TableCount};
use crate::localpg::sql::{query_rows, query_value, quote_ident};
use crate::localpg::{LocalPgError, LocalServer};

/// The schema amcheck is created in when a database does not have it yet (in the scratch copy
/// only).
const AMCHECK_SCHEMA: &str = "pgstream_drill";
/// Failures quoted in one check's detail at most.
const MAX_QUOTED: usize = 10;

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The role to connect as (a superuser of the restored cluster).
    pub db_user: String,
    /// The database the SQL file runs in, and the first one connected to.
    pub check_db: String,
    /// The SQL file: its name (for the report) and its text.
    pub check_sql: Option<(String, String)>,
    pub amcheck: bool,
    pub major: u32,
}

/// Runs every check; returns the results and the row counts.
pub async fn run_checks(
    server: &LocalServer,
    opts: &CheckOptions,
    cancel: &CancellationToken,
) -> Result<(Vec<CheckResult>, Vec<TableCount>), LocalPgError> {
    let mut results = Vec::new();
    let mut counts = Vec::new();
    let databases = {
        let mut conn = server
            .connect(&opts.db_user, &opts.check_db)
            .await
            .map_err(|source| query_err("connecting", source))?;
        let rows = query_rows(
            &mut conn,
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname",
        )
        .await?;
        conn.close().await;
        rows.into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect::<Vec<_>>()
    };
    for db in &databases {
        if cancel.is_cancelled() {
            return Err(LocalPgError::Cancelled);
        }
        let started = Instant::now();
        let mut conn = match server.connect(&opts.db_user, db).await {
            Ok(c) => c,
            Err(e) => {
                results.push(result("row counts", Some(db), Err(e.to_string()), started));
                continue;
            }
        };
        let outcome = count_rows(&mut conn, db, &mut counts, cancel).await?;
        results.push(result("row counts", Some(db), outcome, started));
        if opts.amcheck {
            let started = Instant::now();
            let outcome = amcheck(&mut conn, opts.major, cancel).await?;
            results.push(match outcome {
                Ok(None) => CheckResult {
                    name: "amcheck".into(),
                    database: Some(db.clone()),
                    status: CheckStatus::Skipped,
                    detail: "amcheck is not installed with this server (install the PostgreSQL \
                             contrib modules to run it)"
                        .into(),
                    seconds: started.elapsed().as_secs_f64(),
                },
                Ok(Some(detail)) => result("amcheck", Some(db), Ok(detail), started),
                Err(e) => result("amcheck", Some(db), Err(e), started),
            });
        }
        conn.close().await;
    }
    if let Some((name, sql)) = &opts.check_sql {
        let started = Instant::now();
        let outcome = match server.connect(&opts.db_user, &opts.check_db).await {
            Err(e) => Err(e.to_string()),
            Ok(mut conn) => {
                let r = tokio::select! {
                    r = conn.simple_query(sql) => r,
                    _ = cancel.cancelled() => return Err(LocalPgError::Cancelled),
                };
                conn.close().await;
                match r {
                    Ok(sets) => {
                        let rows = sets.last().map_or(0, |s| s.rows.len());
                        Ok(format!(
                            "{name}: {} result(s), the last with {rows} row(s)",
                            sets.len()
                        ))
                    }
                    Err(e) => Err(format!("{name}: {e}")),
                }
            }
        };
        results.push(result("check-sql", Some(&opts.check_db), outcome, started));
    }
    Ok((results, counts))
}

fn query_err(what: &str, source: pgwire_repl::Error) -> LocalPgError {
    LocalPgError::Query {
        sql: what.to_string(),
        source,
    }
}

fn result(
    name: &str,
    database: Option<&String>,
    outcome: Result<String, String>,
    started: Instant,
) -> CheckResult {
    let (status, detail) = match outcome {
        Ok(d) => (CheckStatus::Pass, d),
        Err(e) => (CheckStatus::Fail, e),
    };
    CheckResult {
        name: name.to_string(),
        database: database.cloned(),
        status,
        detail,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The user tables of the connected database, as `schema.table`: ordinary tables, populated
/// materialized views and partitioned tables (their partitions are counted through them, not
/// again); not other sessions' temporary tables.
const USER_TABLES: &str = "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'm', 'p') AND NOT c.relispartition AND c.relpersistence <> 't' \
     AND (c.relkind <> 'm' OR c.relispopulated) \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1";

/// `count(*)` of every user table; `Err` lists the tables that could not be counted. Only a
/// lost connection or cancellation is an `Err` of the outer result.
async fn count_rows(
    conn: &mut Connection,
    db: &str,
    counts: &mut Vec<TableCount>,
    cancel: &CancellationToken,
) -> Result<Result<String, String>, LocalPgError> {
    let tables = match query_rows(conn, USER_TABLES).await {
        Ok(rows) => rows,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let mut failed = Vec::new();
    let (mut n, mut total) = (0u64, 0u64);
    for row in tables {
        if cancel.is_cancelled() {
            return Err(LocalPgError::Cancelled);
        }
        let Some(table) = row.into_iter().next().flatten() else {
            continue;
        };
        let sql = format!("SELECT count(*) FROM {table}");
        match cancellable(cancel, query_value(conn, &sql)).await? {
            Ok(v) => {
                let rows = v.and_then(|v| v.parse().ok()).unwrap_or(0);
                n += 1;
                total += rows;
                counts.push(TableCount {
                    database: db.to_string(),
                    table,
                    rows,
                });
            }
            Err(e) => failed.push(format!("{table}: {}", source_text(&e))),
        }
    }
    Ok(if failed.is_empty() {
        Ok(format!("{n} table(s), {total} row(s)"))
    } else {
        Err(quote_failures("could not count", &failed))
    })
}

/// amcheck in the connected database: `Ok(None)` when the server does not have it.
async fn amcheck(
    conn: &mut Connection,
    major: u32,
    cancel: &CancellationToken,
) -> Result<Result<Option<String>, String>, LocalPgError> {
    let available = query_value(
        conn,
        "SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'",
    )
    .await;
    match available {
        Ok(None) => return Ok(Ok(None)),
        Ok(Some(_)) => {}
        Err(e) => return Ok(Err(e.to_string())),
    }
    let schema_sql = "SELECT quote_ident(n.nspname) FROM pg_extension e \
                      JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'";
    let schema = match query_value(conn, schema_sql).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            let create = format!(
                "CREATE SCHEMA IF NOT EXISTS {s}; CREATE EXTENSION amcheck SCHEMA {s}",
                s = quote_ident(AMCHECK_SCHEMA)
            );
            if let Err(e) = query_rows(conn, &create).await {
                return Ok(Err(format!(
                    "creating the amcheck extension: {}",
                    source_text(&e)
                )));
            }
            quote_ident(AMCHECK_SCHEMA)
        }
        Err(e) => return Ok(Err(e.to_string())),
    };
    let indexes = match query_rows(
        conn,
        "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am am ON am.oid = c.relam \
         WHERE am.amname = 'btree' AND i.indisvalid AND i.indisready \
         AND c.relpersistence <> 't' ORDER BY 2",
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let mut failed = Vec::new();
    let mut checked_indexes = 0;
    for row in &indexes {
        if cancel.is_cancelled() {
            return Err(LocalPgError::Cancelled);
        }
        let (Some(Some(oid)), Some(Some(name))) = (row.first(), row.get(1)) else {
            continue;
        };
        let sql = format!("SELECT {schema}.bt_index_check({oid}::oid::regclass)");
        match cancellable(cancel, query_rows(conn, &sql)).await? {
            Ok(_) => checked_indexes += 1,
            Err(e) => failed.push(format!("index {name}: {}", source_text(&e))),
        }
    }
    let mut detail = format!("bt_index_check: {checked_indexes} btree index(es)");
    let has_heapam = major >= 14
        && matches!(
            query_value(
                conn,
                "SELECT 1 FROM pg_proc p JOIN pg_extension e ON e.extnamespace = p.pronamespace \
                 WHERE e.extname = 'amcheck' AND p.proname = 'verify_heapam'",
            )
            .await,
            Ok(Some(_))
        );
    if has_heapam {
        let tables = match query_rows(
            conn,
            "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't' ORDER BY 2",
        )
        .await
        {
            Ok(r) => r,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let mut checked_tables = 0;
        for row in &tables {
            if cancel.is_cancelled() {
                return Err(LocalPgError::Cancelled);
            }
            let (Some(Some(oid)), Some(Some(name))) = (row.first(), row.get(1)) else {
                continue;
            };
            let sql = format!("SELECT count(*) FROM {schema}.verify_heapam({oid}::oid::regclass)");
            match cancellable(cancel, query_value(conn, &sql)).await? {
                Ok(Some(n)) if n == "0" => checked_tables += 1,
                Ok(n) => failed.push(format!(
                    "table {name}: verify_heapam found {} problem(s)",
                    n.unwrap_or_default()
                )),
                Err(e) => failed.push(format!("table {name}: {}", source_text(&e))),
            }
        }
        detail.push_str(&format!("; verify_heapam: {checked_tables} table(s)"));
    } else {
        detail.push_str("; verify_heapam: not available (PostgreSQL 14+)");
    }
    Ok(if failed.is_empty() {
        Ok(Some(detail))
    } else {
        Err(quote_failures("amcheck found problems", &failed))
    })
}

/// `query`, or [`LocalPgError::Cancelled`] as soon as `cancel` fires (a long `count(*)` or SQL
/// file must not hold up a SIGTERM; the server is stopped right after).
async fn cancellable<T>(
    cancel: &CancellationToken,
    query: impl std::future::Future<Output = Result<T, LocalPgError>>,
) -> Result<Result<T, LocalPgError>, LocalPgError> {
    tokio::select! {
        r = query => Ok(r),
        _ = cancel.cancelled() => Err(LocalPgError::Cancelled),
    }
}

/// The server's error without the repeated query text.
fn source_text(e: &LocalPgError) -> String {
    match e {
        LocalPgError::Query { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

fn quote_failures(what: &str, failed: &[String]) -> String {
    let mut s = format!("{what}: {}", failed.len());
    for f in failed.iter().take(MAX_QUOTED) {
        s.push_str("; ");
        s.push_str(f);
    }
    if failed.len() > MAX_QUOTED {
        s.push_str(&format!("; and {} more", failed.len() - MAX_QUOTED));
    }
    s
}
