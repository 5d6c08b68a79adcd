//! Waiting for recovery: until replay pauses at an explicit target (then ending recovery, which
//! promotes), or until recovery of all the WAL ends and the server promotes itself; then a fresh
//! connection proves the promoted server serves.

use std::time::{Duration, Instant};

use pgwire_repl::Connection;
use tokio_util::sync::CancellationToken;

use super::report::Reached;
use crate::localpg::sql::{query_rows, query_value};
use crate::localpg::{LocalPgError, LocalServer};

/// Poll interval while waiting for recovery.
const POLL: Duration = Duration::from_millis(100);
/// What a server exit after the end of recovery was asked for came before.
const PROMOTED: &str = "the server was promoted";

/// When recovery reached its target and when the server was promoted.
#[derive(Debug)]
pub struct Recovered {
    pub reached: Reached,
    pub target_at: Instant,
    pub promoted_at: Instant,
}

/// One look at the recovery state.
struct State {
    in_recovery: bool,
    paused: bool,
    lsn: Option<String>,
    xact_time: Option<String>,
}

async fn poll(conn: &mut Connection, major: u32) -> Result<State, LocalPgError> {
    // The pause functions fail outside recovery, hence the CASE.
    let paused = if major >= 14 {
        "pg_get_wal_replay_pause_state() = 'paused'"
    } else {
        "pg_is_wal_replay_paused()"
    };
    let sql = format!(
        "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN {paused} ELSE false END, \
         pg_last_wal_replay_lsn(), pg_last_xact_replay_timestamp()"
    );
    let row = query_rows(conn, &sql)
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    let flag = |i: usize| row.get(i).cloned().flatten().as_deref() == Some("t");
    Ok(State {
        in_recovery: flag(0),
        paused: flag(1),
        lsn: row.get(2).cloned().flatten(),
        xact_time: row.get(3).cloned().flatten(),
    })
}

/// Waits until recovery reaches the target and the server is promoted. `explicit_target`:
/// recovery pauses there (recovery_target_action = pause) and is promoted here; otherwise
/// the server ends recovery and promotes itself. Fails when the server exits (a missing WAL
/// segment, recovery ending before the target), at `deadline`, or on `cancel`.
pub async fn recover(
    server: &mut LocalServer,
    conn: &mut Connection,
    major: u32,
    explicit_target: bool,
    deadline: Instant,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Recovered, LocalPgError> {
    let (state, target_at) = loop {
        wait_step(
            server,
            deadline,
            timeout,
            cancel,
            "reach the recovery target",
        )?;
        let state = poll_or_exit(server, conn, major, "recovery reached the target").await?;
        if !state.in_recovery || (explicit_target && state.paused) {
            break (state, Instant::now());
        }
        tokio::time::sleep(POLL).await;
    };
    let reached = Reached {
        lsn: state.lsn.clone(),
        last_transaction_time: state.xact_time.clone(),
        timeline: None,
    };
    if state.in_recovery {
        if let Err(e) = query_value(conn, end_recovery_sql(major)).await {
            // A pause that was not the target (PostgreSQL 14+ pauses when the WAL raises a
            // setting above the copy's) ends in FATAL on promotion or resume: the server's exit
            // and log say why, the lost connection does not.
            server_exit_or(server, e, PROMOTED).await?;
        }
    }
    loop {
        // pg_wal_replay_resume() returns at once: a FATAL at the end of recovery (a pause for a
        // raised setting) shows here, and is reported as it was when pg_promote() failed.
        server.check_running(PROMOTED)?;
        wait_step(server, deadline, timeout, cancel, "finish promotion")?;
        if !poll_or_exit(server, conn, major, PROMOTED)
            .await?
            .in_recovery
        {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(Recovered {
        reached,
        target_at,
        promoted_at: Instant::now(),
    })
}

/// Ends recovery paused at its target. On 14+ the paused startup process sleeps on a condition
/// variable (1 s timeout) that a promote signal does not wake, so pg_promote() took 1.0-1.4 s;
/// pg_wal_replay_resume() wakes it, and at a target with action pause recovery then ends and
/// promotes at once. On 13 the pause is a pg_usleep that the promote signal interrupts, while
/// resume would wait out the second: pg_promote() (wait => true: it returns once the server is
/// out of recovery, or its wait ends, which the caller's loop covers).
fn end_recovery_sql(major: u32) -> &'static str {
    if major >= 14 {
        "SELECT pg_wal_replay_resume()"
    } else {
        "SELECT pg_promote(true, 60)"
    }
}

/// [`poll`], but when the query fails because the server is going down (a FATAL in the
/// startup process ends every connection first), the server's exit is the error: its log says
/// why, a lost connection does not.
async fn poll_or_exit(
    server: &mut LocalServer,
    conn: &mut Connection,
    major: u32,
    what: &str,
) -> Result<State, LocalPgError> {
    match poll(conn, major).await {
        Ok(state) => Ok(state),
        Err(e) => server_exit_or(server, e, what).await,
    }
}

/// After a failed query: the server's exit (within 5 s) as the error if it is exiting, else `e`.
async fn server_exit_or<T>(
    server: &mut LocalServer,
    e: LocalPgError,
    what: &str,
) -> Result<T, LocalPgError> {
    for _ in 0..50 {
        server.check_running(what)?;
        tokio::time::sleep(POLL).await;
    }
    Err(e)
}

fn wait_step(
    server: &mut LocalServer,
    deadline: Instant,
    timeout: Duration,
    cancel: &CancellationToken,
    what: &str,
) -> Result<(), LocalPgError> {
    if cancel.is_cancelled() {
        return Err(LocalPgError::Cancelled);
    }
    server.check_running(&format!("recovery could {what}"))?;
    if Instant::now() >= deadline {
        return Err(server.timeout(what, timeout, "still in recovery".into()));
    }
    Ok(())
}

/// The timeline the promoted server writes, from its current WAL file name.
pub async fn current_timeline(conn: &mut Connection) -> Result<Option<u32>, LocalPgError> {
    let name = query_value(conn, "SELECT pg_walfile_name(pg_current_wal_lsn())").await?;
    Ok(name
        .as_deref()
        .and_then(|n| n.get(..8))
        .and_then(|t| u32::from_str_radix(t, 16).ok()))
}
