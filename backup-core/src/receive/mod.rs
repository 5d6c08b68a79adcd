//! `pgstream receive-wal`: a long-lived service that keeps the repository's WAL archive
//! complete, like pg_receivewal, with every file encrypted.
//!
//! - One receiver per repository: it holds the repository's `receive-wal` lease from before it
//!   connects until it stops, and a second one is refused, naming the holder, before it
//!   touches anything.
//! - The segment being received is a partial file (`wal/<shard>/<segment>.partial.recv[.enc]`,
//!   format in [`crate::wal::partial`]), fsynced before its position is reported as flushed.
//! - At each segment boundary the segment is read back, compressed and encrypted into `wal/`
//!   durably, and only then is the partial removed. A crash in between leaves both; the next
//!   start removes the partial.
//! - Status updates carry write and flush after every fsync, when the server asks, and every
//!   `status_interval`; `synchronous` fsyncs and acknowledges after each batch (RPO zero when
//!   the server names us in synchronous_standby_names).
//! - At the end of a timeline the history file is stored, the old timeline's last partial
//!   stays, and streaming continues on the next timeline.
//! - A lost connection or a server restart is retried with backoff and jitter; WAL the server
//!   no longer has is an error naming the gap, never skipped.

pub mod metrics;
pub mod start;

mod error;
mod position;
mod reconnect;
mod state;
mod stream;
mod timeline;

use std::sync::Arc;
use std::time::Duration;

use pgwire_repl::config::{Config, ReplicationMode};
use pgwire_repl::{Connection, Lsn, TimelineId};
use tokio_util::sync::CancellationToken;

use crate::repo::config::ClusterIdentity;
use crate::repo::{RepoError, Repository};
use crate::store::lease::{LeaseGuard, LeaseHolder};
pub use crate::wal::partial::{
    open_receiving, receiving_name, PartialEnd, PartialError, PartialReader, PartialWriter,
};
use crate::wal::WalSegmentSize;
pub use error::ReceiveError;
pub use metrics::{MetricsSnapshot, ReceiveMetrics};
use position::Start;
use reconnect::wait_to_retry;
use timeline::TimelineEnd;

/// The oldest server supported (as for base backups).
pub const MIN_SERVER_MAJOR: u32 = 13;

/// The lease that makes a receiver the only one of its repository.
pub const LEASE: &str = "receive-wal";

/// Takes the repository's receive-wal lease, or fails naming the receiver that holds it.
pub fn take_lease(repo: &Repository) -> Result<Box<dyn LeaseGuard>, ReceiveError> {
    Ok(repo
        .store()
        .acquire_lease(LEASE, &LeaseHolder::this_process("pgstream receive-wal"))
        .map_err(RepoError::from)?)
}

/// What to stream and how.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    /// The server (replication=true is set here). `application_name` names us in
    /// synchronous_standby_names.
    pub source: Config,
    /// A physical replication slot to stream from.
    pub slot: Option<String>,
    /// Create the slot (with RESERVE_WAL) if it does not exist.
    pub create_slot: bool,
    /// fsync and acknowledge after every batch.
    pub synchronous: bool,
    /// How often to send a status update without being asked.
    pub status_interval: Duration,
    /// How long the connection may deliver nothing before it is taken for lost and
    /// reconnected (a ping goes out after half of it); `None`: forever.
    pub stall_timeout: Option<Duration>,
    /// Retry after a lost connection or server restart (otherwise return the error).
    pub reconnect: bool,
    /// Counters for monitoring (`receive-wal --metrics-listen`), updated as WAL arrives.
    pub metrics: Option<Arc<ReceiveMetrics>>,
}

/// The position reached when receive-wal stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveSummary {
    pub timeline: TimelineId,
    /// Everything before this is durably in the archive.
    pub flushed: Lsn,
}

/// Runs until `cancel` (then fsyncs, sends a final status and returns) or a permanent error.
/// `None`: cancelled before streaming began.
pub async fn run(
    mut repo: Repository,
    options: ReceiveOptions,
    cancel: CancellationToken,
) -> Result<Option<ReceiveSummary>, ReceiveError> {
    // Before anything else: a second receiver must not even bind the repository.
    let lease = take_lease(&repo)?;
    let mut source = options.source.clone();
    source.replication = ReplicationMode::Physical;
    if options.slot.is_none() {
        tracing::warn!(
            "no replication slot: the server may remove WAL before it is received \
             (use --slot NAME --create-slot)"
        );
    }
    // The first connection binds the repository to the cluster (or refuses another one). A
    // server that is not up yet is waited for like a lost connection: a service may start
    // before its server.
    let mut attempt = 0u32;
    let (conn, identity, seg_bytes) = loop {
        match first_connection(&source).await {
            Ok(first) => break first,
            Err(e) if e.is_transient() && options.reconnect => {
                if let Some(m) = &options.metrics {
                    m.reconnect(&e);
                }
                attempt += 1;
                if !wait_to_retry(&e, attempt, &cancel).await {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    };
    let major = conn.server_version().major;
    let seg_size = WalSegmentSize::new(seg_bytes)
        .map_err(|e| ReceiveError::Internal(format!("wal_segment_size: {e}")))?;
    repo.bind_cluster(ClusterIdentity {
        system_identifier: identity.system_id,
        major,
        wal_segment_size: seg_bytes as u32,
    })?;
    let repo = Arc::new(repo);
    let mut receiver = Receiver {
        repo,
        _lease: lease,
        options,
        seg_size,
        system_id: identity.system_id,
        cancel,
        flushed: None,
        progressed: false,
    };
    let mut first = Some(conn);
    let mut attempt = 0u32;
    loop {
        let result = receiver.session(first.take()).await;
        let summary = receiver
            .flushed
            .map(|(timeline, flushed)| ReceiveSummary { timeline, flushed });
        match result {
            Ok(()) => return Ok(summary),
            Err(e) if e.is_transient() && receiver.options.reconnect => {
                if let Some(m) = &receiver.options.metrics {
                    m.reconnect(&e);
                }
                if receiver.cancel.is_cancelled() {
                    return Ok(summary);
                }
                attempt = if receiver.progressed { 1 } else { attempt + 1 };
                receiver.progressed = false;
                if !wait_to_retry(&e, attempt, &receiver.cancel).await {
                    return Ok(summary);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Connects and reads what binding the repository needs: (connection, identity, segment size).
async fn first_connection(
    source: &Config,
) -> Result<(Connection, pgwire_repl::commands::SystemIdentity, u64), ReceiveError> {
    tracing::info!("connecting to {}", source.redacted());
    let mut conn = Connection::connect(source).await?;
    let major = conn.server_version().major;
    if major < MIN_SERVER_MAJOR {
        return Err(ReceiveError::UnsupportedServer { major });
    }
    let identity = conn.identify_system().await?;
    let seg_bytes = conn.wal_segment_size().await?;
    Ok((conn, identity, seg_bytes))
}

struct Receiver {
    repo: Arc<Repository>,
    /// Held while the receiver lives.
    _lease: Box<dyn LeaseGuard>,
    options: ReceiveOptions,
    seg_size: WalSegmentSize,
    system_id: u64,
    cancel: CancellationToken,
    /// The last durable position, for the summary.
    flushed: Option<(TimelineId, Lsn)>,
    /// WAL arrived since the last reconnect (resets the backoff).
    progressed: bool,
}

impl Receiver {
    async fn session(&mut self, conn: Option<Connection>) -> Result<(), ReceiveError> {
        let mut source = self.options.source.clone();
        source.replication = ReplicationMode::Physical;
        let mut conn = match conn {
            Some(c) => c,
            None => {
                tracing::info!("connecting to {}", source.redacted());
                Connection::connect(&source).await?
            }
        };
        let identity = conn.identify_system().await?;
        if identity.system_id != self.system_id {
            return Err(RepoError::ClusterMismatch {
                location: self.repo.location().to_string(),
                bound: self.repo.cluster().expect("bound at start"),
                offered: ClusterIdentity {
                    system_identifier: identity.system_id,
                    major: conn.server_version().major,
                    wal_segment_size: self.seg_size.bytes() as u32,
                },
            }
            .into());
        }
        // On every connection: after a failover the new primary may lack the slot.
        if let (Some(slot), true) = (&self.options.slot, self.options.create_slot) {
            match conn.create_physical_slot(slot, false, true).await {
                Ok(_) => tracing::info!(slot = %slot, "created replication slot (RESERVE_WAL)"),
                Err(pgwire_repl::Error::Server(db))
                    if db.code == pgwire_repl::commands::SQLSTATE_DUPLICATE_OBJECT =>
                {
                    tracing::info!(slot = %slot, "replication slot exists already");
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.archive_histories(&mut conn, identity.timeline).await?;
        let mut start = self.decide_start(&mut conn, &identity).await?;
        loop {
            match self.stream_timeline(&mut conn, start).await? {
                TimelineEnd::Cancelled => {
                    conn.close().await;
                    return Ok(());
                }
                TimelineEnd::Next {
                    timeline,
                    start: at,
                } => {
                    tracing::info!(
                        timeline = timeline.0,
                        "timeline switch at {at}: continuing on timeline {}",
                        timeline.0
                    );
                    self.store_history(&mut conn, timeline).await?;
                    start = Start {
                        timeline,
                        lsn: at.segment_start(self.seg_size.bytes()),
                        writer: None,
                    };
                }
            }
        }
    }
}

/// Runs `f`, which blocks on the disk, on this thread: on a multi-thread runtime the worker's
/// other tasks move elsewhere meanwhile (`block_in_place`); on a current-thread runtime (unit
/// tests) it simply runs. For the per-batch write and fsync, where the two hand-offs to the
/// blocking pool and back that [`blocking`] costs came on every commit a synchronous server
/// waits for.
fn run_here<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Runs `f` on the blocking pool (file writes, fsyncs, reading the archive).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReceiveError> + Send + 'static,
) -> Result<T, ReceiveError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ReceiveError::Internal(format!("writer task failed: {e}")))?
}
