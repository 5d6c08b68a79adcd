//! `pgstream receive-wal`: a long-lived service that keeps the repository's WAL archive
//! complete, like pg_receivewal, with every file encrypted.
//!
//! - The segment being received is a partial file (`wal/<shard>/<segment>.partial.recv[.enc]`,
//!   format in [`partial`]), fsynced before its position is reported as flushed.
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

pub mod partial;
pub mod start;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pgwire_repl::config::{Config, ReplicationMode};
use pgwire_repl::message::StandbyStatusUpdate;
use pgwire_repl::replication::{ReplicationEvent, ReplicationStream};
use pgwire_repl::{Connection, Lsn, PgTimestamp, TimelineId};
use tokio_util::sync::CancellationToken;

use crate::fsutil::{self, FsError};
use crate::layout;
use crate::repo::config::ClusterIdentity;
use crate::repo::{RepoError, Repository};
use crate::wal::archive::{StoreOutcome, WalArchive, WalArchiveError};
use crate::wal::{SegmentName, TimelineHistory, WalFileName, WalSegmentSize};
pub use partial::{PartialEnd, PartialError, PartialReader, PartialWriter};
use start::{ArchiveState, Newest};

/// The oldest server supported (as for base backups).
pub const MIN_SERVER_MAJOR: u32 = 13;
/// Most bytes gathered from the socket before they are written out.
const BATCH_BYTES: usize = 8 << 20;
/// First and largest reconnect delay.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The repository name of receive-wal's partial file for `segment`.
pub fn partial_file(segment: &SegmentName, encrypted: bool) -> String {
    format!(
        "{}/{segment}{}{}",
        layout::wal_segment_dir(segment),
        start::PARTIAL_SUFFIX,
        if encrypted { ".enc" } else { "" }
    )
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
    /// Retry after a lost connection or server restart (otherwise return the error).
    pub reconnect: bool,
}

/// Why receive-wal stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error(transparent)]
    Client(#[from] pgwire_repl::Error),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Partial(#[from] PartialError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Archive(#[from] WalArchiveError),
    #[error("PostgreSQL {major} is not supported: receive-wal needs PostgreSQL {MIN_SERVER_MAJOR} or later")]
    UnsupportedServer { major: u32 },
    #[error(
        "the archive already holds WAL of timeline {archive}, but the server is on timeline \
         {server}: this is not the server the archive follows (or it was restored from an old \
         backup); use a new repository for it"
    )]
    TimelineBehind {
        archive: TimelineId,
        server: TimelineId,
    },
    #[error(
        "WAL is missing: the server no longer has WAL from {from} (segment {segment}) on \
         ({server_message}). The archive is complete up to {from}; the WAL after it is lost, so \
         point-in-time recovery from the existing base backups cannot go past {from}. Take a \
         new base backup (pgstream base) to cover the time from now on, and stream with a \
         replication slot (--slot NAME --create-slot) so the server keeps WAL until it is \
         archived"
    )]
    WalRemoved {
        from: Lsn,
        segment: String,
        server_message: String,
    },
    #[error(
        "replication slot {slot:?} was invalidated (the server removed WAL it reserved, \
         max_slot_wal_keep_size): WAL from {from} (segment {segment}) on is missing. The archive \
         is complete up to {from} only; point-in-time recovery cannot go past {from} with the \
         existing base backups. Drop and recreate the slot, take a new base backup, then restart \
         receive-wal"
    )]
    SlotInvalidated {
        slot: String,
        from: Lsn,
        segment: String,
    },
    #[error("replication slot {slot:?} does not exist; create it with --create-slot")]
    SlotMissing { slot: String },
    #[error("the server broke the replication protocol: {0}")]
    Protocol(String),
    #[error("the server shut down")]
    ServerShutdown,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ReceiveError {
    /// Whether reconnecting may help (a lost connection, a restarting server, a failover).
    pub fn is_transient(&self) -> bool {
        match self {
            ReceiveError::ServerShutdown => true,
            ReceiveError::Client(e) => client_error_is_transient(e),
            _ => false,
        }
    }
}

fn client_error_is_transient(e: &pgwire_repl::Error) -> bool {
    use pgwire_repl::Error as E;
    match e {
        E::ConnectionLost(_) | E::Connect { .. } | E::ConnectTimeout { .. } => true,
        E::SessionAttrs { .. } => true,
        // Not when every host refused us for good (authentication, TLS).
        E::AllHostsFailed(all) => all.iter().any(client_error_is_transient),
        // Shutting down / starting up / crash recovery (57P01..57P03) and other FATALs that
        // end the session; not authentication failures.
        E::Server(db) => {
            db.code.starts_with("57P") || (e.is_connection_lost() && !db.code.starts_with("28"))
        }
        _ => false,
    }
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

/// Logs `e` and waits the backoff of `attempt`; false when cancelled meanwhile.
async fn wait_to_retry(e: &ReceiveError, attempt: u32, cancel: &CancellationToken) -> bool {
    let delay = backoff(attempt);
    tracing::warn!(
        "{e}; reconnecting in {:.1} s (attempt {attempt})",
        delay.as_secs_f64()
    );
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// Exponential backoff from 1 s to 60 s, with up to 50 % random jitter.
fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_MIN
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(BACKOFF_MAX);
    let r: [u8; 2] = crate::crypto::random_bytes().unwrap_or([0, 0]);
    let frac = f64::from(u16::from_be_bytes(r)) / f64::from(u16::MAX) * 0.5;
    base.mul_f64(1.0 + frac).min(BACKOFF_MAX.mul_f64(1.5))
}

struct Receiver {
    repo: Arc<Repository>,
    options: ReceiveOptions,
    seg_size: WalSegmentSize,
    system_id: u64,
    cancel: CancellationToken,
    /// The last durable position, for the summary.
    flushed: Option<(TimelineId, Lsn)>,
    /// WAL arrived since the last reconnect (resets the backoff).
    progressed: bool,
}

/// Where a stream on one timeline starts.
struct Start {
    timeline: TimelineId,
    lsn: Lsn,
    writer: Option<PartialWriter>,
}

/// How streaming one timeline ended.
enum TimelineEnd {
    Cancelled,
    Next { timeline: TimelineId, start: Lsn },
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
                dir: self.repo.dir().into(),
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

    /// Stores every history file up to the server's timeline that the archive lacks.
    async fn archive_histories(
        &self,
        conn: &mut Connection,
        server: TimelineId,
    ) -> Result<(), ReceiveError> {
        for tli in 2..=server.0 {
            let name = layout::history_file(tli, self.repo.codec());
            if self.repo.resolve(&name)?.exists() {
                continue;
            }
            self.store_history(conn, TimelineId(tli)).await?;
        }
        Ok(())
    }

    async fn store_history(
        &self,
        conn: &mut Connection,
        tli: TimelineId,
    ) -> Result<(), ReceiveError> {
        let history = match conn.timeline_history(tli).await {
            Ok(h) => h,
            Err(pgwire_repl::Error::Server(db)) if !db.code.starts_with("57") => {
                tracing::warn!(
                    "the server has no history file for timeline {}: {}",
                    tli.0,
                    db.message
                );
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let repo = Arc::clone(&self.repo);
        blocking(move || store_history_file(&repo, tli.0, &history.content)).await
    }

    async fn decide_start(
        &mut self,
        conn: &mut Connection,
        identity: &pgwire_repl::commands::SystemIdentity,
    ) -> Result<Start, ReceiveError> {
        let repo = Arc::clone(&self.repo);
        let seg_size = self.seg_size;
        let state = blocking(move || Ok(ArchiveState::scan(repo.dir(), seg_size)?)).await?;
        if let Some(tli) = state.max_timeline() {
            if tli > identity.timeline {
                return Err(ReceiveError::TimelineBehind {
                    archive: tli,
                    server: identity.timeline,
                });
            }
        }
        for stale in state.stale_partials() {
            tracing::info!(
                "removing {}: its segment is stored complete",
                stale.display()
            );
            fsutil::remove_durably(&stale)?;
        }
        let slot_state = match &self.options.slot {
            Some(slot) if conn.server_version().major >= 15 => {
                match conn.read_replication_slot(slot).await? {
                    None => return Err(ReceiveError::SlotMissing { slot: slot.clone() }),
                    Some(s) => Some(s),
                }
            }
            _ => None,
        };
        let start = match state.newest() {
            Some(Newest::Complete(seg)) => {
                let next = seg.next();
                tracing::info!("archive holds {seg}: starting at {}", next.start_lsn());
                Start {
                    timeline: seg.timeline,
                    lsn: next.start_lsn(),
                    writer: None,
                }
            }
            Some(Newest::Partial(seg, path)) => {
                let codec = self.repo.codec().clone();
                let encrypted = codec.encryption.is_some();
                let (writer, end) = blocking(move || {
                    let identity = partial_file(&seg, encrypted);
                    Ok(PartialWriter::resume(&path, &identity, seg, &codec)?)
                })
                .await?;
                if let PartialEnd::Invalid {
                    file_offset,
                    reason,
                } = &end
                {
                    tracing::warn!(
                        "{}: ignoring what follows the valid records at byte {file_offset} \
                         ({reason}); a write cut short by a crash was never reported flushed",
                        writer.path().display()
                    );
                }
                let lsn = Lsn(seg.start_lsn().0 + writer.len());
                tracing::info!("resuming partial segment {seg} at {lsn}");
                Start {
                    timeline: seg.timeline,
                    lsn,
                    writer: Some(writer),
                }
            }
            None => {
                let slot_pos = match (&slot_state, &self.options.slot) {
                    (Some(s), Some(name)) => match (s.restart_lsn, s.restart_timeline) {
                        (Some(lsn), Some(tli)) if lsn.is_valid() => Some((lsn, tli)),
                        (Some(lsn), None) if lsn.is_valid() => Some((lsn, identity.timeline)),
                        _ => {
                            return Err(ReceiveError::SlotInvalidated {
                                slot: name.clone(),
                                from: Lsn(0),
                                segment: "(none archived yet)".into(),
                            })
                        }
                    },
                    _ => None,
                };
                let (lsn, timeline) = start::fresh_start(
                    slot_pos,
                    (identity.xlogpos, identity.timeline),
                    self.seg_size,
                );
                tracing::info!(
                    "the archive holds no WAL yet: starting at {lsn} on timeline {} ({})",
                    timeline.0,
                    if slot_pos.is_some() {
                        "the slot's restart_lsn"
                    } else {
                        "the server's current position"
                    }
                );
                Start {
                    timeline,
                    lsn,
                    writer: None,
                }
            }
        };
        let start = self.follow_fork(conn, identity.timeline, start).await?;
        if let (Some(s), Some(name)) = (&slot_state, &self.options.slot) {
            if s.restart_lsn.is_none() {
                return Err(ReceiveError::SlotInvalidated {
                    slot: name.clone(),
                    from: start.lsn,
                    segment: SegmentName::from_lsn(start.timeline, start.lsn, self.seg_size)
                        .to_string(),
                });
            }
        }
        Ok(start)
    }

    /// When the archive's timeline is an ancestor of the server's, but the archive holds WAL of
    /// it past the point where the server's history forked (the old primary sent us WAL that
    /// its standby never got before the failover), continues on the child timeline from the
    /// fork point's segment. That WAL is not part of the server's history; the old timeline's
    /// file stays in the archive as its last segment. (Otherwise START_REPLICATION fails: "not
    /// in this server's history".)
    async fn follow_fork(
        &self,
        conn: &mut Connection,
        server: TimelineId,
        start: Start,
    ) -> Result<Start, ReceiveError> {
        if start.timeline >= server {
            return Ok(start);
        }
        let content = conn.timeline_history(server).await?.content;
        let history = TimelineHistory::parse(server, &content)
            .map_err(|e| ReceiveError::Protocol(e.to_string()))?;
        let entries = history.entries();
        let Some(i) = entries.iter().position(|e| e.parent == start.timeline) else {
            return Ok(start);
        };
        let fork = entries[i].switch_point;
        if start.lsn <= fork {
            return Ok(start);
        }
        let child = entries.get(i + 1).map_or(server, |e| e.parent);
        tracing::warn!(
            "the archive holds WAL of timeline {} up to {}, past {fork}, where the server's \
             timeline {} forked from it: that WAL never became part of the server's history \
             (the old primary had not sent it to its standby before the failover). Keeping it \
             in the archive and continuing on timeline {} from {fork}",
            start.timeline.0,
            start.lsn,
            child.0,
            child.0
        );
        Ok(Start {
            timeline: child,
            lsn: fork.segment_start(self.seg_size.bytes()),
            writer: None,
        })
    }

    async fn stream_timeline(
        &mut self,
        conn: &mut Connection,
        start: Start,
    ) -> Result<TimelineEnd, ReceiveError> {
        let Start {
            timeline,
            lsn,
            writer,
        } = start;
        let slot = self.options.slot.clone();
        let mut stream = match conn
            .start_replication(slot.as_deref(), lsn, Some(timeline))
            .await
        {
            Ok(s) => s,
            Err(e) => return Err(self.map_start_error(e, lsn, timeline)),
        };
        tracing::info!(timeline = timeline.0, "streaming from {lsn}");
        let mut st = StreamState {
            repo: Arc::clone(&self.repo),
            seg_size: self.seg_size,
            timeline,
            pos: lsn,
            writer,
            reported: (Lsn(0), Lsn(0)),
        };
        self.flushed = Some((timeline, st.flushed()));
        let mut timer = tokio::time::interval(self.options.status_interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer.tick().await;
        loop {
            let first = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    self.finish(&mut st, &mut stream).await?;
                    return Ok(TimelineEnd::Cancelled);
                }
                _ = timer.tick() => {
                    st.sync().await?;
                    st.report(&mut stream, false, true).await?;
                    self.flushed = Some((timeline, st.flushed()));
                    continue;
                }
                ev = stream.next() => ev,
            };
            let mut batch: Vec<Bytes> = Vec::new();
            let mut batch_len = 0usize;
            let mut reply = false;
            let mut terminal = None;
            let mut ev = first;
            loop {
                match ev {
                    Err(e) => {
                        // Keep what arrived before the error.
                        st.write(std::mem::take(&mut batch)).await?;
                        st.sync().await?;
                        self.flushed = Some((timeline, st.flushed()));
                        return Err(self.map_start_error(e, st.pos, timeline));
                    }
                    Ok(Some(ReplicationEvent::XLogData(x))) => {
                        let expected = Lsn(st.pos.0 + batch_len as u64);
                        if x.wal_start != expected {
                            return Err(ReceiveError::Protocol(format!(
                                "WAL arrived for {} while {expected} was expected",
                                x.wal_start
                            )));
                        }
                        batch_len += x.data.len();
                        batch.push(x.data);
                    }
                    Ok(Some(ReplicationEvent::Keepalive(k))) => reply |= k.reply_requested,
                    Ok(Some(other)) => {
                        terminal = Some(other);
                        break;
                    }
                    Ok(None) => {
                        terminal = Some(ReplicationEvent::ServerShutdown);
                        break;
                    }
                }
                if batch_len >= BATCH_BYTES {
                    break;
                }
                // Take whatever else is already there, without waiting.
                ev = tokio::select! {
                    biased;
                    ev = stream.next() => ev,
                    _ = std::future::ready(()) => break,
                };
            }
            if !batch.is_empty() {
                self.progressed = true;
            }
            st.write(batch).await?;
            if self.options.synchronous || reply || terminal.is_some() {
                st.sync().await?;
            }
            self.flushed = Some((timeline, st.flushed()));
            match terminal {
                None => {
                    st.report(&mut stream, false, reply || self.options.synchronous)
                        .await?;
                }
                Some(ReplicationEvent::EndOfTimeline {
                    next_timeline,
                    next_start,
                }) => {
                    if next_timeline <= timeline || next_start > st.pos {
                        return Err(ReceiveError::Protocol(format!(
                            "timeline {} ended with next timeline {} at {next_start}, but we \
                             are on {} at {}",
                            timeline.0, next_timeline.0, timeline.0, st.pos
                        )));
                    }
                    if let Some(w) = &st.writer {
                        tracing::info!(
                            "keeping {} as the last partial segment of timeline {}",
                            w.path().display(),
                            timeline.0
                        );
                    }
                    return Ok(TimelineEnd::Next {
                        timeline: next_timeline,
                        start: next_start,
                    });
                }
                Some(ReplicationEvent::ServerShutdown) => {
                    tracing::info!("the server shut down; archived up to {}", st.pos);
                    return Err(ReceiveError::ServerShutdown);
                }
                Some(other) => {
                    return Err(ReceiveError::Protocol(format!(
                        "unexpected {other:?} while streaming"
                    )))
                }
            }
        }
    }

    /// On SIGINT/SIGTERM: fsync, tell the server, stop streaming politely.
    async fn finish(
        &mut self,
        st: &mut StreamState,
        stream: &mut ReplicationStream<'_>,
    ) -> Result<(), ReceiveError> {
        st.sync().await?;
        self.flushed = Some((st.timeline, st.flushed()));
        let _ = st.report(stream, false, true).await;
        tracing::info!(
            "stopping: WAL up to {} on timeline {} is durably archived",
            st.flushed(),
            st.timeline.0
        );
        if stream.stop().await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while let Ok(Some(ev)) = stream.next().await {
                    if matches!(ev, ReplicationEvent::Stopped) {
                        break;
                    }
                }
            })
            .await;
        }
        Ok(())
    }

    fn map_start_error(&self, e: pgwire_repl::Error, at: Lsn, tli: TimelineId) -> ReceiveError {
        if let pgwire_repl::Error::Server(db) = &e {
            let msg = db.message.as_str();
            if msg.contains("has already been removed") {
                return ReceiveError::WalRemoved {
                    from: at,
                    segment: SegmentName::from_lsn(tli, at, self.seg_size).to_string(),
                    server_message: msg.to_string(),
                };
            }
            if msg.contains("invalidated") || msg.contains("cannot read from") {
                if let Some(slot) = &self.options.slot {
                    return ReceiveError::SlotInvalidated {
                        slot: slot.clone(),
                        from: at,
                        segment: SegmentName::from_lsn(tli, at, self.seg_size).to_string(),
                    };
                }
            }
            if db.code == "42704" {
                if let Some(slot) = &self.options.slot {
                    return ReceiveError::SlotMissing { slot: slot.clone() };
                }
            }
        }
        e.into()
    }
}

/// The stream's position and the segment being written.
struct StreamState {
    repo: Arc<Repository>,
    seg_size: WalSegmentSize,
    timeline: TimelineId,
    /// Everything before this was received and written.
    pos: Lsn,
    writer: Option<PartialWriter>,
    /// The last (write, flush) reported.
    reported: (Lsn, Lsn),
}

impl StreamState {
    /// Everything before this is durable.
    fn flushed(&self) -> Lsn {
        match &self.writer {
            Some(w) => Lsn(w.segment().start_lsn().0 + w.synced_len()),
            None => self.pos,
        }
    }

    async fn write(&mut self, batch: Vec<Bytes>) -> Result<(), ReceiveError> {
        if batch.is_empty() {
            return Ok(());
        }
        let repo = Arc::clone(&self.repo);
        let (seg_size, tli, pos) = (self.seg_size, self.timeline, self.pos);
        let writer = self.writer.take();
        let (writer, pos) =
            blocking(move || write_batch(&repo, seg_size, tli, pos, writer, batch)).await?;
        self.writer = writer;
        self.pos = pos;
        Ok(())
    }

    async fn sync(&mut self) -> Result<(), ReceiveError> {
        let Some(mut w) = self.writer.take() else {
            return Ok(());
        };
        if w.synced_len() == w.len() {
            self.writer = Some(w);
            return Ok(());
        }
        let w = blocking(move || {
            w.sync()?;
            Ok(w)
        })
        .await?;
        self.writer = Some(w);
        Ok(())
    }

    /// Sends write and flush when the flush position moved (or `force`). Only a new flush
    /// position is news to the server (slot, synchronous commit); the write position alone
    /// would send a message per batch for nothing, and goes out with the next one or at the
    /// status interval (which forces).
    async fn report(
        &mut self,
        stream: &mut ReplicationStream<'_>,
        reply_requested: bool,
        force: bool,
    ) -> Result<(), ReceiveError> {
        let now = (self.pos, self.flushed());
        if !force && now.1 == self.reported.1 {
            return Ok(());
        }
        stream
            .send_status(StandbyStatusUpdate {
                write: now.0,
                flush: now.1,
                apply: Lsn::INVALID,
                send_time: PgTimestamp::now(),
                reply_requested,
            })
            .await?;
        tracing::debug!(write = %now.0, flush = %now.1, "status sent");
        self.reported = now;
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReceiveError> + Send + 'static,
) -> Result<T, ReceiveError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ReceiveError::Internal(format!("writer task failed: {e}")))?
}

/// Appends `batch` (WAL from `pos`) to the partial segments, storing each one that completes.
fn write_batch(
    repo: &Repository,
    seg_size: WalSegmentSize,
    tli: TimelineId,
    mut pos: Lsn,
    mut writer: Option<PartialWriter>,
    batch: Vec<Bytes>,
) -> Result<(Option<PartialWriter>, Lsn), ReceiveError> {
    let codec = repo.codec();
    for mut data in batch {
        while !data.is_empty() {
            let w = match writer.as_mut() {
                Some(w) => w,
                None => {
                    let seg = SegmentName::from_lsn(tli, pos, seg_size);
                    if pos != seg.start_lsn() {
                        return Err(ReceiveError::Internal(format!(
                            "a new segment would start at {pos}, inside {seg}"
                        )));
                    }
                    let name = partial_file(&seg, codec.encryption.is_some());
                    let path = repo.resolve(&name)?;
                    fsutil::create_dir_all_durably(path.parent().expect("wal/<shard>"))?;
                    writer.insert(PartialWriter::create(&path, &name, seg, codec)?)
                }
            };
            let room = (seg_size.bytes() - w.len()) as usize;
            let piece = data.split_to(room.min(data.len()));
            w.append(&piece)?;
            pos = Lsn(pos.0 + piece.len() as u64);
            if w.is_complete() {
                let w = writer.take().expect("just written");
                complete_segment(repo, w)?;
            }
        }
    }
    Ok((writer, pos))
}

/// fsyncs a complete partial, stores the segment in `wal/`, then removes the partial.
fn complete_segment(repo: &Repository, mut w: PartialWriter) -> Result<(), ReceiveError> {
    w.sync()?;
    let seg = w.segment();
    let path: PathBuf = w.path().into();
    drop(w);
    let codec = repo.codec();
    let identity = partial_file(&seg, codec.encryption.is_some());
    let reader = PartialReader::open(&path, &identity, codec)?;
    store_segment(repo, seg, reader)?;
    fsutil::remove_durably(&path)?;
    tracing::info!(segment = %seg, "segment archived");
    Ok(())
}

/// Stores a complete segment durably in `wal/` (page headers checked against the cluster). If
/// it is there already (a base backup or an earlier run stored it), it must be identical.
fn store_segment(
    repo: &Repository,
    seg: SegmentName,
    mut reader: PartialReader,
) -> Result<(), ReceiveError> {
    WalArchive::new(repo).store(&WalFileName::Segment(seg), &mut reader)?;
    Ok(())
}

/// Stores a timeline history file (or checks that the stored one is the same).
fn store_history_file(repo: &Repository, tli: u32, content: &[u8]) -> Result<(), ReceiveError> {
    let file = WalFileName::History(TimelineId(tli));
    let outcome = WalArchive::new(repo).store(&file, &mut &content[..])?;
    if outcome == StoreOutcome::Stored {
        tracing::info!("archived {file}");
    }
    Ok(())
}

/// The valid bytes of receive-wal's partial file for `segment`, if the archive has one: for
/// `wal-fetch` and restore (the server never asks for `.partial` names; serve it under the
/// segment's name, zero-padded, only as the newest segment of the timeline being replayed).
pub fn open_partial(
    repo: &Repository,
    segment: &SegmentName,
) -> Result<Option<PartialReader>, ReceiveError> {
    let encrypted = repo.codec().encryption.is_some();
    let name = partial_file(segment, encrypted);
    let path = repo.resolve(&name)?;
    if !Path::new(&path).exists() {
        return Ok(None);
    }
    Ok(Some(PartialReader::open(&path, &name, repo.codec())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for attempt in 1..20 {
            let d = backoff(attempt);
            let base = Duration::from_secs(1 << (attempt - 1).min(6)).min(BACKOFF_MAX);
            assert!(d >= base && d <= base.mul_f64(1.5) && d <= BACKOFF_MAX.mul_f64(1.5));
        }
    }

    #[test]
    fn all_hosts_refusing_authentication_is_not_retried() {
        use pgwire_repl::{DbError, Error as E};
        let fatal = |code: &str| {
            E::Server(Box::new(DbError {
                severity: "FATAL".into(),
                code: code.into(),
                ..DbError::default()
            }))
        };
        let refused = || E::Connect {
            target: "127.0.0.1:1".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        let transient = |e: E| ReceiveError::Client(e).is_transient();
        assert!(transient(refused()));
        assert!(transient(fatal("57P03")));
        assert!(!transient(fatal("28P01")));
        assert!(transient(E::AllHostsFailed(vec![
            fatal("28P01"),
            refused()
        ])));
        assert!(!transient(E::AllHostsFailed(vec![
            fatal("28P01"),
            fatal("28000")
        ])));
    }

    #[test]
    fn partial_names() {
        let seg = SegmentName::new(TimelineId(2), 0x1_05, WalSegmentSize::DEFAULT);
        assert_eq!(
            partial_file(&seg, true),
            "wal/0000000200000001/000000020000000100000005.partial.recv.enc"
        );
        assert_eq!(
            partial_file(&seg, false),
            "wal/0000000200000001/000000020000000100000005.partial.recv"
        );
    }
}
