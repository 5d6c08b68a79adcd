//! Starting a restored data directory as a server and waiting for it to leave recovery.

use std::path::Path;

use integration::{cluster, Cluster, ClusterBuilder};

use super::wait_for_server;

/// Starts the restored directory `dir` and waits until recovery has ended (promoted, or the
/// target reached with `--target-action promote`).
pub fn start_promoted(major: u32, dir: &Path) -> Cluster {
    start_and_wait_promoted(cluster(major).restored_data_dir(dir))
}

/// Starts `restored` (a builder given a restored data directory, with any settings) and waits
/// until recovery has ended.
pub fn start_and_wait_promoted(restored: ClusterBuilder) -> Cluster {
    let pg = restored.start();
    wait_for_server(&pg, "recovery ends", || {
        pg.try_psql("SELECT pg_is_in_recovery()").as_deref() == Ok("f")
    });
    pg
}
