//! `pgstream switch-wal` and `pgstream restore-point`: pg_switch_wal() and
//! pg_create_restore_point() over an ordinary (non-replication) connection.

use anyhow::Context as _;
use pgwire_repl::config::ReplicationMode;
use pgwire_repl::Connection;

use crate::args::{RestorePointArgs, SwitchWalArgs};
use crate::exit::{classified, Failure};

/// MAXFNAMELEN - 1: the longest restore point name the server keeps.
const MAX_RESTORE_POINT_NAME: usize = 63;

pub async fn switch_wal(args: SwitchWalArgs) -> anyhow::Result<()> {
    let lsn = query_one(&args.source, "SELECT pg_switch_wal()").await?;
    println!("{lsn}");
    Ok(())
}

pub async fn restore_point(args: RestorePointArgs) -> anyhow::Result<()> {
    let name = &args.name;
    let bad = |why: &str| {
        classified(
            Failure::Usage,
            anyhow::anyhow!("invalid restore point name {name:?}: {why}"),
        )
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_RESTORE_POINT_NAME {
        return Err(bad(&format!(
            "it is {} bytes long; the server keeps at most {MAX_RESTORE_POINT_NAME}",
            name.len()
        )));
    }
    if name.contains('\0') {
        return Err(bad("it contains a NUL byte"));
    }
    let sql = format!("SELECT pg_create_restore_point({})", sql_literal(name));
    let lsn = query_one(&args.source, &sql).await?;
    println!("{lsn}");
    Ok(())
}

/// `s` as an SQL string literal that means the same whatever standard_conforming_strings says:
/// an `E'…'` string with `\` and `'` doubled. The session's client_encoding is UTF8 (set at
/// startup), so no multi-byte character can end in a byte that looks like a quote.
fn sql_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("E'");
    for c in s.chars() {
        if c == '\\' || c == '\'' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Runs `sql` (one row, one column) on an ordinary connection and returns the value.
async fn query_one(source: &str, sql: &str) -> anyhow::Result<String> {
    let mut config = super::base::source_config(source)?;
    // SQL functions need a normal backend, not a walsender.
    config.replication = ReplicationMode::Off;
    let mut conn = Connection::connect(&config)
        .await
        .with_context(|| format!("connecting to {}", config.redacted()))?;
    let results = conn.simple_query(sql).await;
    conn.close().await;
    let results = results.with_context(|| format!("running {sql}"))?;
    results
        .first()
        .and_then(|rs| rs.rows.first())
        .and_then(|row| row.first().cloned().flatten())
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .ok_or_else(|| classified(Failure::Server, anyhow::anyhow!("{sql} returned no value")))
}

#[cfg(test)]
mod tests {
    use super::sql_literal;

    #[test]
    fn literals_cannot_break_out() {
        assert_eq!(sql_literal("before-load"), "E'before-load'");
        assert_eq!(sql_literal("it's"), "E'it''s'");
        assert_eq!(
            sql_literal("a\\'); DROP TABLE t; --"),
            "E'a\\\\''); DROP TABLE t; --'"
        );
        assert_eq!(sql_literal("ü\\"), "E'ü\\\\'");
    }
}
