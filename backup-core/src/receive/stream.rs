//! Streaming one timeline: batching what arrives, writing and syncing it, reporting, and
//! stopping politely when cancelled.

use std::sync::Arc;

use bytes::Bytes;
use pgwire_repl::replication::{ReplicationEvent, ReplicationStream};
use pgwire_repl::{Connection, Lsn};

use super::position::Start;
use super::state::StreamState;
use super::timeline::TimelineEnd;
use super::{ReceiveError, Receiver};
use crate::replication::{Liveness, Silence};

/// Most bytes gathered from the socket before they are written out.
const BATCH_BYTES: usize = 8 << 20;

impl Receiver {
    pub(super) async fn stream_timeline(
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
        crate::failpoint!("receive.start-replication", |e| {
            pgwire_repl::Error::ConnectionLost(e).into()
        });
        let mut stream = match conn
            .start_replication(slot.as_deref(), lsn, Some(timeline))
            .await
        {
            Ok(s) => s,
            Err(e) => return Err(self.map_start_error(e, lsn, timeline)),
        };
        tracing::info!(timeline = timeline.0, %lsn, "streaming from {lsn}");
        let mut st = StreamState {
            repo: Arc::clone(&self.repo),
            seg_size: self.seg_size,
            timeline,
            pos: lsn,
            writer,
            reported: (Lsn(0), Lsn(0)),
        };
        self.note(&st);
        let mut timer = tokio::time::interval(self.options.status_interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer.tick().await;
        let mut live = Liveness::new(self.options.stall_timeout);
        loop {
            let first = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    self.finish(&mut st, &mut stream).await?;
                    return Ok(TimelineEnd::Cancelled);
                }
                _ = timer.tick() => {
                    st.sync()?;
                    st.report(&mut stream, false, true).await?;
                    self.note(&st);
                    continue;
                }
                silence = live.silence() => {
                    if silence == Silence::Lost {
                        st.sync()?;
                        self.flushed = Some((timeline, st.flushed()));
                        return Err(live.lost_error().into());
                    }
                    st.report(&mut stream, true, true).await?;
                    live.pinged();
                    continue;
                }
                ev = stream.next() => ev,
            };
            live.heard();
            let mut batch: Vec<Bytes> = Vec::new();
            let mut batch_len = 0usize;
            let mut reply = false;
            let mut terminal = None;
            let mut ev = first;
            loop {
                match ev {
                    Err(e) => {
                        // Keep what arrived before the error.
                        st.write_and_sync(std::mem::take(&mut batch), true)?;
                        self.note(&st);
                        return Err(self.map_start_error(e, st.pos, timeline));
                    }
                    Ok(Some(ReplicationEvent::XLogData(x))) => {
                        self.server_end(x.wal_end);
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
                    Ok(Some(ReplicationEvent::Keepalive(k))) => {
                        self.server_end(k.wal_end);
                        reply |= k.reply_requested;
                    }
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
            let sync = self.options.synchronous || reply || terminal.is_some();
            st.write_and_sync(batch, sync)?;
            self.note(&st);
            match terminal {
                None => {
                    st.report(&mut stream, false, reply || self.options.synchronous)
                        .await?;
                    // Back to waiting: the time our disk took is not the server's silence.
                    live.heard();
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
                            w.describe(),
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

    /// Records the durable position (for the summary and the metrics).
    fn note(&mut self, st: &StreamState) {
        self.flushed = Some((st.timeline, st.flushed()));
        if let Some(m) = &self.options.metrics {
            m.streamed(st.timeline, st.pos, st.flushed(), self.seg_size.bytes());
        }
    }

    /// The server's end of WAL, for the metrics' lag.
    fn server_end(&self, end: Lsn) {
        if let Some(m) = &self.options.metrics {
            m.server_end(end);
        }
    }

    /// On SIGINT/SIGTERM: fsync, tell the server, stop streaming politely.
    async fn finish(
        &mut self,
        st: &mut StreamState,
        stream: &mut ReplicationStream<'_>,
    ) -> Result<(), ReceiveError> {
        st.sync()?;
        self.note(st);
        let _ = st.report(stream, false, true).await;
        tracing::info!(
            "stopping: WAL up to {} on timeline {} is durably archived",
            st.flushed(),
            st.timeline.0
        );
        crate::replication::stop_politely(stream).await;
        Ok(())
    }
}
