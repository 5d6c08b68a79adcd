//! Where streaming starts: after the archive's newest segment, inside a partial being
//! resumed, or (on an empty archive) at the slot's restart_lsn or the server's position.

use std::sync::Arc;

use pgwire_repl::{Connection, Lsn, TimelineId};

use super::start::{self, ArchiveState, Newest};
use super::{blocking, PartialEnd, PartialWriter, ReceiveError, Receiver};
use crate::wal::SegmentName;

/// Where a stream on one timeline starts.
pub(super) struct Start {
    pub(super) timeline: TimelineId,
    pub(super) lsn: Lsn,
    pub(super) writer: Option<PartialWriter>,
}

impl Receiver {
    pub(super) async fn decide_start(
        &mut self,
        conn: &mut Connection,
        identity: &pgwire_repl::commands::SystemIdentity,
    ) -> Result<Start, ReceiveError> {
        let repo = Arc::clone(&self.repo);
        let state = blocking(move || {
            Ok(ArchiveState::scan(repo.store().as_ref(), repo.config())
                .map_err(crate::repo::RepoError::from)?)
        })
        .await?;
        if let Some(tli) = state.max_timeline() {
            if tli > identity.timeline {
                return Err(ReceiveError::TimelineBehind {
                    archive: tli,
                    server: identity.timeline,
                });
            }
        }
        let stale = state.stale_partials();
        if !stale.is_empty() {
            tracing::info!(
                "removing {}: its segment is stored complete",
                stale.join(", ")
            );
            let repo = Arc::clone(&self.repo);
            blocking(move || {
                Ok(repo
                    .store()
                    .delete(&stale)
                    .map_err(crate::repo::RepoError::from)?)
            })
            .await?;
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
            Some(Newest::Partial(seg, name)) => {
                let repo = Arc::clone(&self.repo);
                let (writer, end) = blocking(move || {
                    Ok(PartialWriter::resume(
                        repo.store().as_ref(),
                        &name,
                        seg,
                        repo.codec(),
                    )?)
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
                        writer.describe()
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
}
