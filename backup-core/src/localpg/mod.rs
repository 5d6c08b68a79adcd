//! Running a local PostgreSQL server from this process: for `pgstream drill` (a restored copy,
//! recovered and checked) and `pgstream demo` (a throwaway cluster). Product code, independent
//! of the test harness.
//!
//! - [`bin`]: finding a major's server binaries ([`PgBin::find`]) and checking their version.
//! - [`user`]: who the server programs run as ([`RunAs`]): initdb and postgres refuse to run
//!   as root, so a root caller names an unprivileged OS user (default `postgres`).
//! - [`initdb`]: a new cluster ([`initdb()`], [`InitdbOptions`]).
//! - [`server`]: a free loopback port ([`free_port`]), starting
//!   `postgres` with its log in a file ([`LocalServer::start`]), waiting until it accepts
//!   connections ([`LocalServer::wait_ready`]) and a clean stop ([`LocalServer::stop`], also on
//!   drop, so a server is never left running).
//! - [`sql`]: rows as text from a query, and SQL quoting.
//!
//! Typical use:
//! ```no_run
//! # async fn demo() -> Result<(), backup_core::localpg::LocalPgError> {
//! use std::time::Duration;
//! use backup_core::localpg::{self, PgBin, RunAs, StartOptions, LocalServer, InitdbOptions};
//! let bin = PgBin::find(16, None)?;
//! let run_as = RunAs::resolve(None)?;
//! let dir = std::path::Path::new("/tmp/pg-demo");
//! run_as.prepare_dir(dir)?;
//! localpg::initdb(&bin, &run_as, &dir.join("data"), &InitdbOptions::default())?;
//! let mut server = LocalServer::start(StartOptions::new(bin, run_as, dir.join("data"), dir))?;
//! let mut conn = server.wait_ready("postgres", "postgres", Duration::from_secs(60), None).await?;
//! let rows = localpg::sql::query_rows(&mut conn, "SELECT version()").await?;
//! server.stop()?;
//! # Ok(()) }
//! ```

pub mod bin;
pub mod initdb;
pub mod server;
pub mod sql;
pub mod user;

use std::path::PathBuf;

pub use bin::PgBin;
pub use initdb::{initdb, InitdbOptions};
pub use server::{free_port, LocalServer, StartOptions};
pub use user::RunAs;

/// Why a local server could not be found, set up, started, queried or stopped. Every message
/// says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    /// No binaries of the wanted major: the message lists where we looked and what to install.
    #[error("{0}")]
    NoBinaries(String),
    /// The OS user to run the server as is missing or unsuitable.
    #[error("{0}")]
    User(String),
    /// A program could not be started at all.
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A program ran and failed; its output is quoted.
    #[error("{program} failed ({status}): {output}")]
    Failed {
        program: String,
        status: String,
        output: String,
    },
    /// The server process ended while we waited for it.
    #[error("the server exited ({status}) before {what}; the end of its log {}:\n{tail}", log.display())]
    Exited {
        status: String,
        what: String,
        log: PathBuf,
        tail: String,
    },
    /// The server did not get somewhere in time.
    #[error("the server did not {what} within {seconds} s ({last}); the end of its log {}:\n{tail}", log.display())]
    Timeout {
        what: String,
        seconds: u64,
        last: String,
        log: PathBuf,
        tail: String,
    },
    /// A query failed.
    #[error("query {sql:?}: {source}")]
    Query {
        sql: String,
        #[source]
        source: pgwire_repl::Error,
    },
    /// A local file or directory operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Fs(#[from] crate::fsutil::FsError),
    /// The caller's cancellation token fired (SIGINT/SIGTERM).
    #[error("cancelled")]
    Cancelled,
}

impl LocalPgError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        LocalPgError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
