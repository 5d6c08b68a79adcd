//! The point the drill recovers to: a row written before a target time T, rows after it, and
//! proof from the server that receive-wal holds that WAL; and the SQL file with which the drill
//! checks that recovery stopped exactly there.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use backup_core::localpg::sql;
use pgwire_repl::Connection;
use tokio_util::sync::CancellationToken;

use super::child::{Background, Interrupted};

/// The replication slot receive-wal streams from.
pub const SLOT: &str = "pgstream_demo";
/// How long receive-wal may take to start streaming, or to receive the marked WAL.
const WAL_WAIT: Duration = Duration::from_secs(120);
/// Rows written after the target.
const AFTER_ROWS: usize = 3;

/// Inserts the row before the target, reads T from the server's clock, inserts the rows after
/// it; returns T (UTC, RFC 3339 with microseconds).
pub async fn write_rows_around_target(
    conn: &mut Connection,
    cancel: &CancellationToken,
) -> anyhow::Result<String> {
    let before = "INSERT INTO demo_marks (phase) VALUES ('before the target')";
    println!("  SQL: {before};");
    sql::query_rows(conn, before).await?;
    // The server's clock after that commit: the commit's timestamp is not later than this, and
    // every later commit's is later. UTC with an explicit Z, as --target-time requires.
    let target = sql::query_value(
        conn,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', \
         'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .await?
    .context("the server returned no time")?;
    println!("  target time T = {target} (the server's clock after that commit)");
    pause(Duration::from_millis(20), cancel).await?;
    let after = "INSERT INTO demo_marks (phase) VALUES ('after the target')";
    for _ in 0..AFTER_ROWS {
        println!("  SQL: {after};");
        sql::query_rows(conn, after).await?;
    }
    Ok(target)
}

/// Waits until receive-wal streams from [`SLOT`] (pg_stat_replication).
pub async fn wait_streaming(
    conn: &mut Connection,
    receive_wal: &mut Background,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let query = format!(
        "SELECT r.state FROM pg_replication_slots s JOIN pg_stat_replication r \
         ON r.pid = s.active_pid WHERE s.slot_name = {}",
        sql::quote_literal(SLOT)
    );
    let deadline = Instant::now() + WAL_WAIT;
    loop {
        receive_wal.check_running()?;
        let state = sql::query_value(conn, &query).await?;
        if state.as_deref() == Some("streaming") {
            println!("  receive-wal is streaming from slot {SLOT} (pg_stat_replication)");
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "receive-wal did not start streaming within {} s; the end of its log {}:\n{}",
                WAL_WAIT.as_secs(),
                receive_wal.log.display(),
                super::child::log_tail(&receive_wal.log, 20)
            );
        }
        pause(Duration::from_millis(200), cancel).await?;
    }
}

/// Waits until receive-wal has flushed the WAL up to the server's current write position
/// (`pg_stat_replication.flush_lsn` of [`SLOT`]'s walsender): after `switch-wal`, the whole
/// segment holding the rows around the target is then in the repository.
pub async fn wait_flushed(
    conn: &mut Connection,
    receive_wal: &mut Background,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let needed = sql::query_value(conn, "SELECT pg_current_wal_lsn()")
        .await?
        .context("no WAL position")?;
    let query = format!(
        "SELECT r.flush_lsn >= {}::pg_lsn, r.flush_lsn FROM pg_replication_slots s \
         JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = {}",
        sql::quote_literal(&needed),
        sql::quote_literal(SLOT)
    );
    println!(
        "  waiting until receive-wal has flushed WAL up to {needed} \
         (pg_stat_replication.flush_lsn)"
    );
    let deadline = Instant::now() + WAL_WAIT;
    loop {
        receive_wal.check_running()?;
        let rows = sql::query_rows(conn, &query).await?;
        let row = rows.into_iter().next().unwrap_or_default();
        let done = row.first().cloned().flatten();
        let flushed = row.get(1).cloned().flatten();
        if done.as_deref() == Some("t") {
            println!(
                "  receive-wal has flushed up to {}: the rows on both sides of T are in the \
                 repository",
                flushed.unwrap_or_default()
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "receive-wal did not flush WAL up to {needed} within {} s (it is at {}); the end \
                 of its log {}:\n{}",
                WAL_WAIT.as_secs(),
                flushed.as_deref().unwrap_or("unknown"),
                receive_wal.log.display(),
                super::child::log_tail(&receive_wal.log, 20)
            );
        }
        pause(Duration::from_millis(200), cancel).await?;
    }
}

/// The drill's `--check-sql` file: an error unless the copy has the row before the target,
/// none of the rows after it, and all `rows` rows of `table`.
pub fn check_sql(table: &str, rows: u64) -> String {
    format!(
        "-- pgstream demo: run by `pgstream drill` on the copy recovered to the target time;\n\
         -- any error fails the drill.\n\
         DO $$\n\
         BEGIN\n\
         \x20 IF (SELECT count(*) FROM demo_marks WHERE phase = 'before the target') <> 1 THEN\n\
         \x20   RAISE EXCEPTION 'the row written before the target time is missing';\n\
         \x20 END IF;\n\
         \x20 IF (SELECT count(*) FROM demo_marks WHERE phase = 'after the target') <> 0 THEN\n\
         \x20   RAISE EXCEPTION 'rows written after the target time are there: recovery did not \
         stop at the target';\n\
         \x20 END IF;\n\
         \x20 IF (SELECT count(*) FROM {table}) <> {rows} THEN\n\
         \x20   RAISE EXCEPTION '{table} does not have its {rows} rows';\n\
         \x20 END IF;\n\
         END\n\
         $$;\n"
    )
}

/// Sleeps, unless cancelled.
pub async fn pause(d: Duration, cancel: &CancellationToken) -> anyhow::Result<()> {
    tokio::select! {
        () = tokio::time::sleep(d) => Ok(()),
        () = cancel.cancelled() => Err(anyhow!(Interrupted)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_file_asserts_both_sides_of_the_target_and_the_data() {
        let sql = check_sql("pgbench_accounts", 500_000);
        assert!(sql.contains("phase = 'before the target') <> 1"), "{sql}");
        assert!(sql.contains("phase = 'after the target') <> 0"), "{sql}");
        assert!(sql.contains("FROM pgbench_accounts) <> 500000"), "{sql}");
        assert!(sql.trim_end().ends_with("$$;"), "{sql}");
    }
}
