//! START_REPLICATION PHYSICAL as a CopyBoth stream.
//!
//! The stream yields WAL ([`ReplicationEvent::XLogData`]) and keepalives, accepts standby status
//! updates, and ends in one of the ways a walsender ends a stream, none of which is an error:
//! - the end of a historic timeline ([`ReplicationEvent::EndOfTimeline`]): the server sends
//!   CopyDone, we answer CopyDone, and it reports the next timeline and where it starts; the
//!   connection is then ready for TIMELINE_HISTORY and the next START_REPLICATION;
//! - a smart or fast shutdown ([`ReplicationEvent::ServerShutdown`]): after everything was
//!   sent, a CommandComplete `COPY 0` inside CopyBoth, then the socket closes;
//! - our own [`ReplicationStream::stop`], confirmed by [`ReplicationEvent::Stopped`].
//!
//! Errors inside COPY (such as "requested WAL segment … has already been removed") are
//! [`Error::Server`]; a lost socket is [`Error::ConnectionLost`].

use bytes::BytesMut;

use crate::codec::BackendMessage;
use crate::command_text;
use crate::connection::{is_fatal, Connection, ResultSet};
use crate::error::{DbError, Error};
use crate::lsn::{Lsn, PgTimestamp, TimelineId};
use crate::message::{
    parse_replication_message, PrimaryKeepalive, ReplicationMessage, StandbyStatusUpdate, XLogData,
};

/// What a replication stream delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationEvent {
    /// WAL bytes starting at `wal_start`.
    XLogData(XLogData),
    /// A keepalive; when `reply_requested`, send a status update soon.
    Keepalive(PrimaryKeepalive),
    /// The requested timeline ended (the server was promoted past it). Streaming continues on
    /// `next_timeline` from `next_start` (which may be below what we received: the old timeline
    /// can end with half a record).
    EndOfTimeline {
        next_timeline: TimelineId,
        next_start: Lsn,
    },
    /// The server shut down cleanly after sending all WAL; the connection is closed.
    ServerShutdown,
    /// The server confirmed our [`ReplicationStream::stop`]; the connection is ready again.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// START_REPLICATION sent, CopyBothResponse not yet seen.
    Starting,
    Streaming,
    /// We sent CopyDone; WAL may still arrive until the server's CopyDone.
    Stopping,
    /// Both sides sent CopyDone; reading the optional next-timeline result up to ReadyForQuery.
    AfterCopy,
    Finished,
}

/// A running START_REPLICATION. Dropping it before a terminal event leaves the connection
/// unusable (the protocol state would be unknown).
pub struct ReplicationStream<'a> {
    conn: &'a mut Connection,
    phase: Phase,
    stopped_by_us: bool,
    result: Option<ResultSet>,
    error: Option<DbError>,
}

impl Connection {
    /// START_REPLICATION [SLOT slot] PHYSICAL start [TIMELINE tli].
    pub async fn start_replication(
        &mut self,
        slot: Option<&str>,
        start: Lsn,
        timeline: Option<TimelineId>,
    ) -> Result<ReplicationStream<'_>, Error> {
        if !self.is_replication() {
            return Err(Error::InvalidArgument(
                "START_REPLICATION needs a replication connection (replication=true)".into(),
            ));
        }
        let cmd = command_text::start_replication_physical(slot, start, timeline)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        self.send_query(&cmd).await?;
        Ok(ReplicationStream {
            conn: self,
            phase: Phase::Starting,
            stopped_by_us: false,
            result: None,
            error: None,
        })
    }
}

impl ReplicationStream<'_> {
    /// The next event; `None` after a terminal one (EndOfTimeline, ServerShutdown, Stopped).
    /// Cancellation-safe, so it can sit in `tokio::select!` beside a status-interval timer.
    pub async fn next(&mut self) -> Result<Option<ReplicationEvent>, Error> {
        loop {
            if self.phase == Phase::Finished {
                return Ok(None);
            }
            // A reply queued by an earlier call that was cancelled before it was sent.
            if let Err(e) = self.conn.flush().await {
                self.phase = Phase::Finished;
                return Err(e);
            }
            let msg = match self.conn.read_message().await {
                Ok(m) => m,
                Err(e) => {
                    self.phase = Phase::Finished;
                    return Err(e);
                }
            };
            if let Some(ev) = self.handle(msg).await? {
                return Ok(Some(ev));
            }
        }
    }

    /// Sends a standby status update. `flush` must only cover WAL that is durably stored:
    /// the server advances the slot (and releases WAL) from it, and counts it for
    /// synchronous replication.
    pub async fn send_status(&mut self, mut status: StandbyStatusUpdate) -> Result<(), Error> {
        if !matches!(self.phase, Phase::Streaming | Phase::Stopping) {
            return Ok(());
        }
        if status.send_time == PgTimestamp::default() {
            status.send_time = PgTimestamp::now();
        }
        let mut buf = BytesMut::with_capacity(34);
        status.encode(&mut buf);
        self.conn.send_copy_data(&buf).await
    }

    /// Asks the server to stop streaming (CopyDone). Keep calling [`Self::next`] until
    /// [`ReplicationEvent::Stopped`] (WAL already in flight may still arrive first).
    pub async fn stop(&mut self) -> Result<(), Error> {
        match self.phase {
            Phase::Streaming => {
                self.stopped_by_us = true;
                self.phase = Phase::Stopping;
                self.conn.send_copy_done().await
            }
            _ => Ok(()),
        }
    }

    async fn handle(&mut self, msg: BackendMessage) -> Result<Option<ReplicationEvent>, Error> {
        match (self.phase, msg) {
            (Phase::Starting, BackendMessage::CopyBothResponse) => {
                self.phase = Phase::Streaming;
            }
            // A start point exactly at the end of a historic timeline: no COPY at all, the
            // next-timeline result comes straight away.
            (Phase::Starting, BackendMessage::RowDescription(columns)) => {
                self.phase = Phase::AfterCopy;
                self.result = Some(ResultSet {
                    columns,
                    ..ResultSet::default()
                });
            }
            (Phase::Streaming | Phase::Stopping, BackendMessage::CopyData(payload)) => {
                let msg = parse_replication_message(payload).map_err(|e| {
                    self.phase = Phase::Finished;
                    self.conn.mark_broken("malformed replication message");
                    Error::Protocol(e)
                })?;
                return Ok(Some(match msg {
                    ReplicationMessage::XLogData(x) => ReplicationEvent::XLogData(x),
                    ReplicationMessage::PrimaryKeepalive(k) => ReplicationEvent::Keepalive(k),
                }));
            }
            (Phase::Streaming, BackendMessage::CopyDone) => {
                // End of a historic timeline: answer with our CopyDone. The state changes
                // before the write, so cancelling `next` here loses nothing.
                self.conn.queue_copy_done();
                self.phase = Phase::AfterCopy;
                self.conn.flush().await?;
            }
            (Phase::Stopping, BackendMessage::CopyDone) => self.phase = Phase::AfterCopy,
            // Smart/fast shutdown: the walsender ends COPY with CommandComplete, no CopyDone.
            (Phase::Streaming | Phase::Stopping, BackendMessage::CommandComplete(tag))
                if tag.starts_with("COPY") =>
            {
                self.phase = Phase::Finished;
                self.conn.mark_broken("the server shut down");
                return Ok(Some(ReplicationEvent::ServerShutdown));
            }
            (Phase::AfterCopy, BackendMessage::RowDescription(columns)) => {
                self.result = Some(ResultSet {
                    columns,
                    ..ResultSet::default()
                });
            }
            (Phase::AfterCopy, BackendMessage::DataRow(values)) => match self.result.as_mut() {
                Some(rs) => rs.rows.push(values),
                None => return Err(self.fail('D', "before RowDescription after COPY")),
            },
            (Phase::AfterCopy, BackendMessage::CommandComplete(_)) => {}
            (_, BackendMessage::ErrorResponse(e)) => {
                if is_fatal(&e) {
                    self.phase = Phase::Finished;
                    // The server closes the session: later calls must fail, not write to it.
                    self.conn
                        .mark_broken(format!("the server ended the session: {}", e.message));
                    return Err(Error::Server(Box::new(e)));
                }
                // Inside COPY the server leaves copy mode on error; ReadyForQuery follows.
                self.error.get_or_insert(e);
                self.phase = Phase::AfterCopy;
            }
            (Phase::AfterCopy | Phase::Starting, BackendMessage::ReadyForQuery(_)) => {
                self.phase = Phase::Finished;
                if let Some(e) = self.error.take() {
                    return Err(Error::Server(Box::new(e)));
                }
                return match self.result.take() {
                    Some(rs) if !rs.rows.is_empty() => {
                        let (next_timeline, next_start) = next_timeline(&rs)?;
                        Ok(Some(ReplicationEvent::EndOfTimeline {
                            next_timeline,
                            next_start,
                        }))
                    }
                    _ if self.stopped_by_us => Ok(Some(ReplicationEvent::Stopped)),
                    _ => Err(Error::unexpected_result(
                        "START_REPLICATION",
                        "the server ended streaming without naming the next timeline",
                    )),
                };
            }
            (_, other) => {
                return Err(self.fail(other.tag(), "in START_REPLICATION"));
            }
        }
        Ok(None)
    }

    fn fail(&mut self, tag: char, context: &'static str) -> Error {
        self.phase = Phase::Finished;
        self.conn.protocol_violation(tag, context)
    }
}

fn next_timeline(rs: &ResultSet) -> Result<(TimelineId, Lsn), Error> {
    const CMD: &str = "START_REPLICATION";
    let tli = rs.required_text(CMD, "next_tli")?;
    let pos = rs.required_text(CMD, "next_tli_startpos")?;
    Ok((
        TimelineId(
            tli.parse()
                .map_err(|_| Error::unexpected_result(CMD, format!("invalid next_tli {tli:?}")))?,
        ),
        pos.parse()
            .map_err(|e| Error::unexpected_result(CMD, format!("{e}")))?,
    ))
}

impl Drop for ReplicationStream<'_> {
    fn drop(&mut self) {
        if self.phase != Phase::Finished {
            self.conn
                .mark_broken("a replication stream was abandoned before its end");
        }
    }
}
