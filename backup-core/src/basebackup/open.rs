//! The start of a backup: BASE_BACKUP sent, and the repository the caller is opening waited
//! for, checked to be the one asked for and bound to the cluster. A full backup sends
//! BASE_BACKUP first, so the server's checkpoint overlaps the key derivation; an incremental one
//! needs the parent's manifest from the repository before it can send anything.

use std::sync::Arc;

use pgwire_repl::basebackup::{BaseBackupOptions, BaseBackupStream};
use pgwire_repl::commands::SystemIdentity;
use pgwire_repl::Connection;
use tokio_util::sync::CancellationToken;

use super::incremental::{self, IncrementalPlan};
use super::{mark, BaseBackupError, OpeningRepository};
use crate::catalog::IncrementalOf;
use crate::repo::config::ClusterIdentity;
use crate::repo::Repository;
use crate::store::RepoLocation;

/// What [`start`] needs to know of the cluster (its identity, major and WAL segment size) and
/// the plan.
pub(super) type Source<'a> = (&'a SystemIdentity, u32, u64, Option<&'a IncrementalPlan>);

/// Sends BASE_BACKUP (with INCREMENTAL when the plan's parent was uploaded) and opens the
/// repository, in the order the kind of backup needs.
pub(super) async fn start<'c>(
    conn: &'c mut Connection,
    options: &mut BaseBackupOptions,
    opening: OpeningRepository,
    cancel: &CancellationToken,
    location: &RepoLocation,
    (identity, major, seg_bytes, incremental): Source<'_>,
) -> Result<(BaseBackupStream<'c>, Arc<Repository>, Option<IncrementalOf>), BaseBackupError> {
    let cluster = ClusterIdentity {
        system_identifier: identity.system_id,
        major,
        wal_segment_size: seg_bytes as u32,
    };
    match incremental {
        Some(inc) => {
            let repo = open_and_bind(opening, cancel, location, cluster).await?;
            let of = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(BaseBackupError::Cancelled),
                r = incremental::prepare(conn, &repo, identity, major, inc) => r?,
            };
            options.incremental = of.is_some();
            crate::failpoint!("base.start", |e| pgwire_repl::Error::ConnectionLost(e)
                .into());
            let stream = conn.base_backup(options).await?;
            mark("BASE_BACKUP sent");
            Ok((stream, repo, of))
        }
        None => {
            crate::failpoint!("base.start", |e| pgwire_repl::Error::ConnectionLost(e)
                .into());
            let stream = conn.base_backup(options).await?;
            mark("BASE_BACKUP sent");
            // An early return closes the connection, which ends the backup on the server too.
            let repo = open_and_bind(opening, cancel, location, cluster).await?;
            Ok((stream, repo, None))
        }
    }
}

/// Waits for the repository the caller is opening and binds it to the cluster (or refuses
/// another cluster).
async fn open_and_bind(
    opening: OpeningRepository,
    cancel: &CancellationToken,
    location: &RepoLocation,
    cluster: ClusterIdentity,
) -> Result<Arc<Repository>, BaseBackupError> {
    let mut repo = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(BaseBackupError::Cancelled),
        r = opening => r.ok_or(BaseBackupError::RepositoryNotOpened)?,
    };
    mark("repository open");
    if repo.location() != location {
        return Err(BaseBackupError::Internal(format!(
            "the repository opened is {}, not {location}",
            repo.location()
        )));
    }
    repo.bind_cluster(cluster)?;
    mark("repository bound");
    Ok(Arc::new(repo))
}
