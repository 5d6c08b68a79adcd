//! Timelines: storing history files, following a fork after a failover, and how streaming
//! one timeline ends.

use std::sync::Arc;

use pgwire_repl::{Connection, Lsn, TimelineId};

use super::position::Start;
use super::{blocking, ReceiveError, Receiver};
use crate::layout;
use crate::repo::Repository;
use crate::wal::archive::{StoreOutcome, WalArchive};
use crate::wal::{TimelineHistory, WalFileName};

/// How streaming one timeline ended.
pub(super) enum TimelineEnd {
    Cancelled,
    Next { timeline: TimelineId, start: Lsn },
}

impl Receiver {
    /// Stores every history file up to the server's timeline that the archive lacks.
    pub(super) async fn archive_histories(
        &self,
        conn: &mut Connection,
        server: TimelineId,
    ) -> Result<(), ReceiveError> {
        for tli in 2..=server.0 {
            let name = layout::history_file(tli, self.repo.codec());
            if self
                .repo
                .store()
                .head(&name)
                .map_err(crate::repo::RepoError::from)?
                .is_some()
            {
                continue;
            }
            self.store_history(conn, TimelineId(tli)).await?;
        }
        Ok(())
    }

    pub(super) async fn store_history(
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

    /// When the archive's timeline is an ancestor of the server's, but the archive holds WAL of
    /// it past the point where the server's history forked (the old primary sent us WAL that
    /// its standby never got before the failover), continues on the child timeline from the
    /// fork point's segment. That WAL is not part of the server's history; the old timeline's
    /// file stays in the archive as its last segment. (Otherwise START_REPLICATION fails: "not
    /// in this server's history".)
    pub(super) async fn follow_fork(
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
