//! The stream's state: writing WAL into partial segments, storing each one that completes,
//! syncing, and reporting write and flush positions to the server.

use std::sync::Arc;

use bytes::Bytes;
use pgwire_repl::message::StandbyStatusUpdate;
use pgwire_repl::replication::ReplicationStream;
use pgwire_repl::{Lsn, PgTimestamp, TimelineId};

use super::{receiving_name, run_here, PartialReader, PartialWriter, ReceiveError};
use crate::repo::Repository;
use crate::wal::archive::WalArchive;
use crate::wal::{SegmentName, WalFileName, WalSegmentSize};

/// The stream's position and the segment being written.
pub(super) struct StreamState {
    pub(super) repo: Arc<Repository>,
    pub(super) seg_size: WalSegmentSize,
    pub(super) timeline: TimelineId,
    /// Everything before this was received and written.
    pub(super) pos: Lsn,
    pub(super) writer: Option<PartialWriter>,
    /// The last (write, flush) reported.
    pub(super) reported: (Lsn, Lsn),
}

impl StreamState {
    /// Everything before this is durable.
    pub(super) fn flushed(&self) -> Lsn {
        match &self.writer {
            Some(w) => Lsn(w.segment().start_lsn().0 + w.synced_len()),
            None => self.pos,
        }
    }

    /// Appends `batch` to the partial segments (storing each one that completes), then, if
    /// `sync`, makes what was written durable. Runs on this thread (see [`run_here`]).
    pub(super) fn write_and_sync(
        &mut self,
        batch: Vec<Bytes>,
        sync: bool,
    ) -> Result<(), ReceiveError> {
        run_here(|| {
            if !batch.is_empty() {
                let writer = self.writer.take();
                let (writer, pos) = write_batch(
                    &self.repo,
                    self.seg_size,
                    self.timeline,
                    self.pos,
                    writer,
                    batch,
                )?;
                self.writer = writer;
                self.pos = pos;
            }
            if sync {
                if let Some(w) = self.writer.as_mut() {
                    w.sync()?;
                }
            }
            Ok(())
        })
    }

    /// Makes everything written durable.
    pub(super) fn sync(&mut self) -> Result<(), ReceiveError> {
        self.write_and_sync(Vec::new(), true)
    }

    /// Sends write and flush when the flush position moved (or `force`). Only a new flush
    /// position is news to the server (slot, synchronous commit); the write position alone
    /// would send a message per batch for nothing, and goes out with the next one or at the
    /// status interval (which forces).
    pub(super) async fn report(
        &mut self,
        stream: &mut ReplicationStream<'_>,
        reply_requested: bool,
        force: bool,
    ) -> Result<(), ReceiveError> {
        let now = (self.pos, self.flushed());
        if !force && now.1 == self.reported.1 {
            return Ok(());
        }
        crate::failpoint!("receive.status", |e| pgwire_repl::Error::ConnectionLost(e)
            .into());
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
                    let name = receiving_name(&seg, codec.encryption.is_some());
                    writer.insert(PartialWriter::create(
                        repo.store().as_ref(),
                        &name,
                        seg,
                        codec,
                    )?)
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
    drop(w);
    let codec = repo.codec();
    let name = receiving_name(&seg, codec.encryption.is_some());
    let reader = PartialReader::open(repo.store().as_ref(), &name, codec)?;
    store_segment(repo, seg, reader)?;
    crate::failpoint!("receive.segment-stored");
    repo.store().delete(&[name])?;
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
