//! Why receive-wal stops, and what a failed START_REPLICATION means.

use pgwire_repl::{Lsn, TimelineId};

use super::{Receiver, MIN_SERVER_MAJOR};
use crate::fsutil::FsError;
use crate::repo::RepoError;
use crate::wal::archive::WalArchiveError;
use crate::wal::partial::PartialError;
use crate::wal::SegmentName;

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
    Store(#[from] crate::store::StoreError),
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

impl Receiver {
    /// Names the gap or the slot when the server refuses to stream from `at`.
    pub(super) fn map_start_error(
        &self,
        e: pgwire_repl::Error,
        at: Lsn,
        tli: TimelineId,
    ) -> ReceiveError {
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
            // The slot is in use (55006) after we streamed from it: by the walsender of our
            // own connection that was lost without the server noticing (a stall, a vanished
            // network path). The server ends it at its wal_sender_timeout, so this is the lost
            // connection still, and worth retrying. At the first start it is another
            // receiver's, and an error.
            if db.code == "55006" && self.flushed.is_some() {
                return pgwire_repl::Error::ConnectionLost(std::io::Error::other(format!(
                    "{msg}: the walsender of our previous connection still holds the slot; \
                     the server ends it at its wal_sender_timeout"
                )))
                .into();
            }
        }
        e.into()
    }
}
