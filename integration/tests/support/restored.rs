//! Starting a restored data directory as a server and waiting for it to leave recovery.

use std::path::Path;

use integration::{cluster, Cluster};

use super::wait_for_server;

/// Starts the restored directory `dir` with `settings` and waits until recovery has ended
/// (promoted, or the target reached with `--target-action promote`).
pub fn start_promoted(major: u32, dir: &Path, settings: &[(&str, &str)]) -> Cluster {
    let mut builder = cluster(major).restored_data_dir(dir);
    for (k, v) in settings {
        builder = builder.setting(k, v);
    }
    let pg = builder.start();
    wait_for_server(&pg, "recovery ends", || {
        pg.try_psql("SELECT pg_is_in_recovery()").as_deref() == Ok("f")
    });
    pg
}
