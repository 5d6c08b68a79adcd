//! The repository end of a backup's start: wait for the caller to finish opening it, check it
//! is the one asked for, and bind it to the cluster.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{mark, BaseBackupError, OpeningRepository};
use crate::repo::config::ClusterIdentity;
use crate::repo::Repository;
use crate::store::RepoLocation;

/// Waits for the repository the caller is opening and binds it to the cluster (or refuses
/// another cluster).
pub(super) async fn open_and_bind(
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
