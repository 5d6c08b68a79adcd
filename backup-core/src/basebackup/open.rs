//! The repository end of a backup's start: wait for the caller to finish opening it, clean up
//! after dead runs, and bind it to the cluster.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{mark, remove_stale, BaseBackupError, OpeningRepository};
use crate::catalog::Catalog;
use crate::repo::config::ClusterIdentity;
use crate::repo::Repository;

/// Waits for the repository the caller is opening, removes what dead runs left and binds it
/// to the cluster (or refuses another cluster).
pub(super) async fn open_and_bind(
    opening: OpeningRepository,
    cancel: &CancellationToken,
    catalog: &Catalog,
    cluster: ClusterIdentity,
) -> Result<Arc<Repository>, BaseBackupError> {
    let mut repo = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(BaseBackupError::Cancelled),
        r = opening => r.ok_or(BaseBackupError::RepositoryNotOpened)?,
    };
    mark("repository open");
    remove_stale(catalog);
    repo.bind_cluster(cluster)?;
    mark("repository bound");
    Ok(Arc::new(repo))
}
