//! The WAL a base backup needs, streamed on a second connection while the archives arrive, as
//! `pg_basebackup -X stream` does, but into the repository's WAL archive.
//!
//! The temporary slot is created *before* BASE_BACKUP starts, so the server keeps every
//! segment from before the backup's checkpoint until we have it (pg_basebackup creates its slot
//! afterwards, leaving a small window). Complete segments go to `wal/` in the archive format
//! `receive-wal` uses; the unfinished segment holding the backup's end is kept with the
//! backup as `<segment>.partial`, so the backup restores on its own.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pgwire_repl::config::{Config, ReplicationMode};
use pgwire_repl::message::StandbyStatusUpdate;
use pgwire_repl::replication::ReplicationEvent;
use pgwire_repl::{Connection, Lsn, PgTimestamp, TimelineId};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::BaseBackupError;
use crate::catalog::PartialWal;
use crate::crc::Crc32c;
use crate::layout;
use crate::replication::{Liveness, Silence};
use crate::repo::Repository;
use crate::sink::FileSink;
use crate::wal::archive::{ArchiveFileName, WalArchive};
use crate::wal::{SegmentName, WalFileName, WalSegmentSize};

/// How long to wait, once the end position is received, for the rest of its segment (a
/// primary switches segments at the end of a backup, so it normally comes at once).
const SEGMENT_TAIL_WAIT: Duration = Duration::from_secs(2);

/// What the streamer stored.
#[derive(Debug, Default)]
pub(crate) struct WalOutcome {
    pub segments: Vec<String>,
    pub partial: Option<PartialWal>,
    pub history_files: Vec<String>,
    pub stored_bytes: u64,
}

/// A connection with the temporary slot already created.
pub(crate) struct PreparedStream {
    conn: Connection,
    slot: String,
}

/// Opens the second replication connection.
pub(crate) async fn connect(source: &Config) -> Result<Connection, BaseBackupError> {
    let mut cfg = source.clone();
    cfg.replication = ReplicationMode::Physical;
    Ok(Connection::connect(&cfg).await?)
}

/// Checks the second connection reaches the cluster `system_id` and reserves WAL on it with a
/// temporary slot.
pub(crate) async fn prepare(
    mut conn: Connection,
    system_id: u64,
) -> Result<PreparedStream, BaseBackupError> {
    let id = conn.identify_system().await?;
    if id.system_id != system_id {
        return Err(BaseBackupError::DifferentClusters {
            first: system_id,
            second: id.system_id,
        });
    }
    let rand: [u8; 4] =
        crate::crypto::random_bytes().map_err(|e| BaseBackupError::Internal(e.to_string()))?;
    let slot = format!("pgstream_base_{}_{}", std::process::id(), hex::encode(rand));
    conn.create_physical_slot(&slot, true, true).await?;
    Ok(PreparedStream { conn, slot })
}

/// The running streamer.
pub(crate) struct WalStreamer {
    end_tx: watch::Sender<Option<Lsn>>,
    stop: CancellationToken,
    task: JoinHandle<Result<WalOutcome, BaseBackupError>>,
}

impl WalStreamer {
    /// Starts streaming from the segment holding `start` on `timeline`; a connection silent
    /// for `stall_timeout` is taken for lost.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        prepared: PreparedStream,
        start: Lsn,
        timeline: TimelineId,
        seg_size: WalSegmentSize,
        repo: Arc<Repository>,
        backup_id: String,
        cancel: CancellationToken,
        stall_timeout: Option<Duration>,
    ) -> WalStreamer {
        let (end_tx, end_rx) = watch::channel(None);
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let result = stream(
                prepared,
                start,
                timeline,
                seg_size,
                repo,
                backup_id,
                end_rx,
                cancel.clone(),
                stall_timeout,
            )
            .await;
            if result.is_err() {
                // Stop the archives too: the backup cannot complete without its WAL.
                cancel.cancel();
            }
            result
        });
        WalStreamer { end_tx, stop, task }
    }

    /// Tells the streamer where the backup ended and waits until that WAL is stored.
    pub async fn finish(self, end: Lsn) -> Result<WalOutcome, BaseBackupError> {
        let _ = self.end_tx.send(Some(end));
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(BaseBackupError::Internal(format!(
                "WAL streamer failed: {e}"
            ))),
        }
    }

    /// Why the streamer failed, once it cancelled the backup because of it; `None` if it
    /// stopped without an error of its own.
    pub async fn failure(self) -> Option<BaseBackupError> {
        match self.task.await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(BaseBackupError::Internal(format!(
                "WAL streamer failed: {e}"
            ))),
        }
    }

    /// Stops the streamer without letting it finish its work, and returns once its writer has
    /// let go of every file (so that what it wrote can be removed: a writer still draining its
    /// queue used to create a segment after the unfinished backup had been removed).
    pub async fn abort(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn stream(
    prepared: PreparedStream,
    start: Lsn,
    timeline: TimelineId,
    seg_size: WalSegmentSize,
    repo: Arc<Repository>,
    backup_id: String,
    mut end_rx: watch::Receiver<Option<Lsn>>,
    cancel: CancellationToken,
    stall_timeout: Option<Duration>,
) -> Result<WalOutcome, BaseBackupError> {
    let PreparedStream { mut conn, slot } = prepared;
    let mut history_files = Vec::new();
    if timeline.0 > 1 {
        let history = conn.timeline_history(timeline).await?;
        let repo2 = Arc::clone(&repo);
        let name = tokio::task::spawn_blocking(move || {
            store_history(&repo2, timeline.0, &history.content)
        })
        .await
        .map_err(|e| BaseBackupError::Internal(e.to_string()))??;
        history_files.push(name);
    }

    let seg_bytes = seg_size.bytes();
    let first = start.segment_start(seg_bytes);
    let (wtx, wrx) = sync_channel::<WalMsg>(32);
    let abandoned = Arc::new(AtomicBool::new(false));
    let writer = {
        let repo = Arc::clone(&repo);
        let backup_id = backup_id.clone();
        let abandoned = Arc::clone(&abandoned);
        tokio::task::spawn_blocking(move || {
            write_wal(
                &repo, &backup_id, timeline, seg_size, first, wrx, &abandoned,
            )
        })
    };
    // Every way out of the stream goes past the writer: it must have let go of its files
    // before the caller may remove the unfinished backup.
    let streamed: Result<(Lsn, Option<Lsn>), BaseBackupError> = async {
    let wtx = wtx;
    let mut stream = conn
        .start_replication(Some(&slot), first, Some(timeline))
        .await?;
    let mut pos = first;
    let mut end: Option<Lsn> = None;
    let mut tail_deadline: Option<tokio::time::Instant> = None;
    let mut status_timer = tokio::time::interval(Duration::from_secs(10));
    let mut live = Liveness::new(stall_timeout);
    let status = |pos: Lsn, reply: bool| StandbyStatusUpdate {
        write: pos,
        flush: Lsn::INVALID,
        apply: Lsn::INVALID,
        send_time: PgTimestamp::now(),
        reply_requested: reply,
    };
    loop {
        if let Some(e) = end {
            if pos >= e {
                // The segment holding the backup's last WAL byte is complete once the stream
                // reaches its end, or has gone past it: other sessions (autovacuum after a
                // bulk load) keep writing WAL, and waiting for an exact boundary then
                // cost the whole SEGMENT_TAIL_WAIT.
                let end_segment_done =
                    Lsn(e.0.saturating_sub(1)).segment_start(seg_bytes).0 + seg_bytes;
                let deadline = *tail_deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + SEGMENT_TAIL_WAIT);
                if pos.0 >= end_segment_done {
                    super::mark("WAL: end segment complete");
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    super::mark("WAL: gave up waiting for the end segment's tail");
                    break;
                }
            }
        }
        let sleep_until = tail_deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(BaseBackupError::Cancelled),
            changed = end_rx.changed(), if end.is_none() => {
                if changed.is_err() {
                    return Err(BaseBackupError::Cancelled);
                }
                end = *end_rx.borrow();
                if end.is_some_and(|e| pos >= e) {
                    // Ask for a keepalive so the rest of the segment, if flushed, comes now.
                    stream.send_status(status(pos, true)).await?;
                }
            }
            _ = status_timer.tick() => {
                crate::failpoint!("base.wal-status", |e| pgwire_repl::Error::ConnectionLost(e).into());
                stream.send_status(status(pos, false)).await?;
            }
            _ = tokio::time::sleep_until(sleep_until) => {}
            silence = live.silence() => match silence {
                Silence::Ping => {
                    stream.send_status(status(pos, true)).await?;
                    live.pinged();
                }
                Silence::Lost => return Err(live.lost_error().into()),
            },
            ev = stream.next() => match ev? {
                Some(ReplicationEvent::XLogData(x)) => {
                    if x.wal_start != pos {
                        return Err(BaseBackupError::Internal(format!(
                            "WAL stream jumped from {pos} to {}", x.wal_start
                        )));
                    }
                    pos = Lsn(pos.0 + x.data.len() as u64);
                    if wtx.send(WalMsg::Data(x.data)).is_err() {
                        break; // the writer failed: its error is collected below
                    }
                    // Heard, and the wait for a slow disk is not the server's silence.
                    live.heard();
                }
                Some(ReplicationEvent::Keepalive(k)) => {
                    live.heard();
                    if k.reply_requested {
                        stream.send_status(status(pos, false)).await?;
                    }
                }
                Some(ReplicationEvent::EndOfTimeline { next_timeline, next_start }) => {
                    return Err(BaseBackupError::TimelineChanged {
                        from: timeline,
                        to: next_timeline,
                        at: next_start,
                    });
                }
                Some(ReplicationEvent::ServerShutdown | ReplicationEvent::Stopped) | None => {
                    return Err(BaseBackupError::WalStreamEnded { at: pos });
                }
            }
        }
    }
        let _ = wtx.send(WalMsg::Finish);
        drop(wtx);
        // Stop streaming politely; the temporary slot goes with the connection.
        crate::replication::stop_politely(&mut stream).await;
        drop(stream);
        conn.close().await;
        Ok((pos, end))
    }
    .await;
    let (pos, end) = match streamed {
        Ok(v) => v,
        Err(e) => {
            abandoned.store(true, Ordering::Relaxed);
            let _ = writer.await;
            return Err(e);
        }
    };
    let mut outcome = writer
        .await
        .map_err(|e| BaseBackupError::Internal(format!("WAL writer failed: {e}")))??;
    if let Some(e) = end {
        if pos < e {
            return Err(BaseBackupError::WalStreamEnded { at: pos });
        }
    }
    outcome.history_files = history_files;
    Ok(outcome)
}

enum WalMsg {
    Data(Bytes),
    Finish,
}

/// The segment being written: the archive copy, and the copy kept if it stays partial.
struct OpenSegment {
    name: SegmentName,
    archive: FileSink,
    tail: FileSink,
    tail_file: String,
    written: u64,
    crc: Crc32c,
}

fn write_wal(
    repo: &Repository,
    backup_id: &str,
    timeline: TimelineId,
    seg_size: WalSegmentSize,
    first: Lsn,
    rx: Receiver<WalMsg>,
    abandoned: &AtomicBool,
) -> Result<WalOutcome, BaseBackupError> {
    let mut outcome = WalOutcome::default();
    let seg_bytes = seg_size.bytes();
    let mut next_name = SegmentName::from_lsn(timeline, first, seg_size);
    let mut open: Option<OpenSegment> = None;
    for msg in rx {
        if abandoned.load(Ordering::Relaxed) {
            // The backup failed: what is still queued is not worth writing.
            return Ok(outcome);
        }
        let mut data = match msg {
            WalMsg::Data(d) => d,
            WalMsg::Finish => {
                if let Some(seg) = open.take() {
                    outcome.partial = Some(finish_partial(seg)?);
                    outcome.segments.push(next_name.to_string());
                }
                return Ok(outcome);
            }
        };
        while !data.is_empty() {
            let seg = match open.as_mut() {
                Some(s) => s,
                None => open.insert(open_segment(repo, backup_id, next_name)?),
            };
            let room = (seg_bytes - seg.written) as usize;
            let piece = data.split_to(room.min(data.len()));
            write_both(seg, &piece)?;
            if seg.written == seg_bytes {
                let seg = open.take().expect("just written");
                outcome.stored_bytes += finish_segment(repo, seg)?;
                outcome.segments.push(next_name.to_string());
                next_name = next_name.next();
            }
        }
    }
    // The streamer dropped the channel without Finish: it failed and reports why.
    Ok(outcome)
}

fn open_segment(
    repo: &Repository,
    backup_id: &str,
    name: SegmentName,
) -> Result<OpenSegment, BaseBackupError> {
    let codec = repo.codec();
    let store = repo.store().as_ref();
    let archive_name = layout::wal_segment_file(&name, codec);
    let archive =
        FileSink::create(store, &archive_name, codec).map_err(|source| BaseBackupError::Sink {
            file: archive_name.clone(),
            source,
        })?;
    let tail_file = format!("{}{}", name.partial_name(), layout::suffix(codec));
    let tail_identity = layout::backup_file(backup_id, &tail_file);
    let tail =
        FileSink::create(store, &tail_identity, codec).map_err(|source| BaseBackupError::Sink {
            file: tail_identity.clone(),
            source,
        })?;
    Ok(OpenSegment {
        name,
        archive,
        tail,
        tail_file,
        written: 0,
        crc: Crc32c::new(),
    })
}

fn write_both(seg: &mut OpenSegment, piece: &[u8]) -> Result<(), BaseBackupError> {
    let err = |file: String, e: std::io::Error| BaseBackupError::Sink {
        file,
        source: crate::sink::SinkError::Write {
            path: std::path::PathBuf::new(),
            source: e,
        },
    };
    seg.archive
        .write_all(piece)
        .map_err(|e| err(seg.name.to_string(), e))?;
    seg.tail
        .write_all(piece)
        .map_err(|e| err(seg.tail_file.clone(), e))?;
    seg.written += piece.len() as u64;
    seg.crc.update(piece);
    Ok(())
}

/// Stores a complete segment in the archive. If the archive already has it (another backup or
/// `receive-wal` got there first), the stored copy must hold the same bytes.
fn finish_segment(repo: &Repository, seg: OpenSegment) -> Result<u64, BaseBackupError> {
    let archive_name = layout::wal_segment_file(&seg.name, repo.codec());
    drop(seg.tail);
    let stored = repo
        .store()
        .head(&archive_name)
        .map_err(crate::repo::RepoError::from)?;
    if stored.is_none() {
        match seg.archive.finish() {
            Ok(summary) => return Ok(summary.stored_bytes),
            Err(crate::sink::SinkError::Store(e)) if e.is_already_exists() => {}
            Err(source) => {
                return Err(BaseBackupError::Sink {
                    file: archive_name,
                    source,
                })
            }
        }
    } else {
        drop(seg.archive);
    }
    let (crc, len) = WalArchive::new(repo).stored_crc(&archive_name)?;
    if (crc, len) != (seg.crc.value(), seg.written) {
        return Err(BaseBackupError::WalConflict {
            segment: seg.name.to_string(),
        });
    }
    Ok(0)
}

/// Keeps the unfinished last segment with the backup.
fn finish_partial(seg: OpenSegment) -> Result<PartialWal, BaseBackupError> {
    drop(seg.archive);
    seg.tail.finish().map_err(|source| BaseBackupError::Sink {
        file: seg.tail_file.clone(),
        source,
    })?;
    Ok(PartialWal {
        segment: seg.name.to_string(),
        file: seg.tail_file,
        valid_bytes: seg.written,
    })
}

/// Stores a timeline history file in the archive through [`WalArchive`], which checks that it
/// parses and, if the archive already has it, that it is the same.
fn store_history(
    repo: &Repository,
    timeline: u32,
    content: &[u8],
) -> Result<String, BaseBackupError> {
    let file = WalFileName::History(TimelineId(timeline));
    let archive = WalArchive::new(repo);
    archive.store(&file, &mut &content[..])?;
    Ok(archive.stored_name(&ArchiveFileName::Wal(file)))
}
