//! Waiting for archive_command: tests that read the repository need the WAL they wrote there.

use integration::Cluster;

use super::{ok, pgstream, wait_for_server};

/// Switches WAL on `pg` (`pgstream switch-wal`) and waits until the segment it was writing is
/// archived.
pub fn switch_and_archive(pg: &Cluster) {
    let current = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    ok(
        pgstream(&["switch-wal", "--source", &pg.conninfo("postgres")], None),
        "switch-wal",
    );
    wait_for_server(pg, &format!("{current} is archived"), || {
        pg.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            .as_str()
            >= current.as_str()
    });
}
