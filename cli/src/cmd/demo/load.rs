//! The write load the base backup runs under: pgbench when the server binaries include it,
//! else a small SQL load generator of the same shape over pgwire-repl (random single-row updates
//! plus a history insert per transaction, on two connections). The demo says which it used.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use backup_core::localpg::{sql, LocalServer};
use pgwire_repl::config::Config;
use pgwire_repl::Connection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::child::{log_tail, Background, Cmd, Runner};
use super::source::{DATABASE, SUPERUSER};

/// Rows per unit of scale, as pgbench's accounts table.
const ROWS_PER_SCALE: u64 = 100_000;
/// Concurrent clients of the load.
const CLIENTS: u32 = 2;

/// Which load generator.
#[derive(Debug, Clone)]
pub enum Generator {
    Pgbench(PathBuf),
    Sql,
}

impl Generator {
    pub fn describe(&self) -> String {
        match self {
            Generator::Pgbench(p) => format!("pgbench ({})", p.display()),
            Generator::Sql => "pgstream's SQL load generator (pgbench is not installed with \
                               these server binaries)"
                .into(),
        }
    }

    /// The table the data lives in and the rows it must have (updates never change it).
    pub fn table(&self, scale: u32) -> (&'static str, u64) {
        let table = match self {
            Generator::Pgbench(_) => "pgbench_accounts",
            Generator::Sql => "demo_load",
        };
        (table, u64::from(scale) * ROWS_PER_SCALE)
    }

    fn pgbench_cmd(&self, server: &LocalServer, args: &[String]) -> Option<Cmd> {
        let Generator::Pgbench(program) = self else {
            return None;
        };
        let mut all = vec![
            "-h".to_string(),
            server.socket_dir().display().to_string(),
            "-p".into(),
            server.port().to_string(),
            "-U".into(),
            SUPERUSER.into(),
        ];
        all.extend_from_slice(args);
        all.push(DATABASE.into());
        Some(Cmd {
            name: "pgbench".into(),
            program: program.clone(),
            args: all,
            env: Vec::new(),
        })
    }

    /// Creates and fills the tables.
    pub async fn initialize(
        &self,
        runner: &Runner,
        server: &LocalServer,
        conn: &mut Connection,
        scale: u32,
    ) -> anyhow::Result<()> {
        if let Some(cmd) = self.pgbench_cmd(
            server,
            &["-i".into(), "-q".into(), "-s".into(), scale.to_string()],
        ) {
            return runner.run(&cmd).await;
        }
        let rows = u64::from(scale) * ROWS_PER_SCALE;
        let stmts = [
            "CREATE TABLE demo_load (id int PRIMARY KEY, n bigint NOT NULL, filler text) \
             WITH (fillfactor = 90)"
                .to_string(),
            format!(
                "INSERT INTO demo_load SELECT g, 0, repeat('x', 84) FROM generate_series(1, {rows}) g"
            ),
            "CREATE TABLE demo_load_history (id int, delta int, at timestamptz)".to_string(),
            "VACUUM ANALYZE demo_load".to_string(),
        ];
        for stmt in &stmts {
            println!("  SQL: {stmt};");
            tokio::select! {
                r = sql::query_rows(conn, stmt) => { r?; }
                () = runner.cancel.cancelled() => return Err(anyhow!(super::child::Interrupted)),
            }
        }
        Ok(())
    }

    /// Starts `seconds` of load in the background.
    pub fn start(
        &self,
        runner: &Runner,
        server: &LocalServer,
        scale: u32,
        seconds: u32,
        log: PathBuf,
    ) -> anyhow::Result<Running> {
        let started = Instant::now();
        let limit = Duration::from_secs(u64::from(seconds));
        if let Some(cmd) = self.pgbench_cmd(
            server,
            &[
                "-c".into(),
                CLIENTS.to_string(),
                "-j".into(),
                CLIENTS.to_string(),
                "-T".into(),
                seconds.to_string(),
            ],
        ) {
            return Ok(Running::Pgbench {
                child: runner.spawn(&cmd, &log)?,
                limit,
            });
        }
        println!(
            "  SQL load: {CLIENTS} connections, each running BEGIN; UPDATE demo_load SET n = n + \
             d WHERE id = <random>; INSERT INTO demo_load_history ...; COMMIT; for {seconds} s"
        );
        let stop = runner.cancel.child_token();
        let done = Arc::new(AtomicU64::new(0));
        let rows = u64::from(scale) * ROWS_PER_SCALE;
        let mut tasks = Vec::new();
        for client in 0..CLIENTS {
            let config = server.config(SUPERUSER, DATABASE);
            tasks.push(tokio::spawn(sql_client(
                config,
                rows,
                started + limit,
                stop.clone(),
                done.clone(),
                u64::from(client) + 1,
            )));
        }
        Ok(Running::Sql {
            tasks,
            stop,
            done,
            started,
        })
    }
}

/// A load in progress.
#[derive(Debug)]
pub enum Running {
    Pgbench {
        child: Background,
        limit: Duration,
    },
    Sql {
        tasks: Vec<JoinHandle<anyhow::Result<Instant>>>,
        stop: CancellationToken,
        done: Arc<AtomicU64>,
        started: Instant,
    },
}

impl Running {
    /// Waits for the load's end and returns what it did (`pgbench`'s tps line, or the SQL
    /// generator's transactions per second).
    pub async fn finish(&mut self, cancel: &CancellationToken) -> anyhow::Result<String> {
        match self {
            Running::Pgbench { child, limit } => {
                child
                    .wait(*limit + Duration::from_secs(120), cancel)
                    .await?;
                let log = log_tail(&child.log, 40);
                let summary: Vec<&str> = log
                    .lines()
                    .filter(|l| {
                        l.starts_with("number of transactions actually processed")
                            || l.starts_with("tps")
                    })
                    .collect();
                Ok(if summary.is_empty() {
                    format!("pgbench finished (its output: {})", child.log.display())
                } else {
                    format!("pgbench: {}", summary.join("; "))
                })
            }
            Running::Sql {
                tasks,
                done,
                started,
                ..
            } => {
                // The load ran until its last client stopped, not until we asked.
                let mut ended = *started;
                for task in tasks.drain(..) {
                    let end = task
                        .await
                        .map_err(|e| anyhow!("the SQL load task failed: {e}"))?
                        .context("the SQL load")?;
                    ended = ended.max(end);
                }
                if cancel.is_cancelled() {
                    return Err(anyhow!(super::child::Interrupted));
                }
                let n = done.load(Ordering::Relaxed);
                let secs = (ended - *started).as_secs_f64();
                Ok(format!(
                    "SQL load: {n} transactions in {secs:.1} s ({:.0} tps)",
                    n as f64 / secs.max(0.001)
                ))
            }
        }
    }

    /// Stops the load at once (cleanup).
    pub async fn stop_quietly(&mut self) {
        match self {
            Running::Pgbench { child, .. } => child.stop_quietly().await,
            Running::Sql { tasks, stop, .. } => {
                stop.cancel();
                for task in tasks.drain(..) {
                    let _ = task.await;
                }
            }
        }
    }
}

/// One client of the SQL load: transactions until `deadline` or `stop`.
async fn sql_client(
    config: Config,
    rows: u64,
    deadline: Instant,
    stop: CancellationToken,
    done: Arc<AtomicU64>,
    seed: u64,
) -> anyhow::Result<Instant> {
    let mut conn = Connection::connect(&config)
        .await
        .context("connecting for the SQL load")?;
    // A small xorshift: the ids need only be spread, not unpredictable.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while Instant::now() < deadline && !stop.is_cancelled() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let id = x % rows + 1;
        let delta = (x >> 32) % 10_000;
        let txn = format!(
            "BEGIN; UPDATE demo_load SET n = n + {delta} WHERE id = {id}; \
             INSERT INTO demo_load_history VALUES ({id}, {delta}, now()); COMMIT"
        );
        tokio::select! {
            r = conn.simple_query(&txn) => { r.context("a load transaction")?; }
            () = stop.cancelled() => break,
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    let ended = Instant::now();
    conn.close().await;
    Ok(ended)
}
