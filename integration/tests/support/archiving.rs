//! Waiting for archive_command: tests that read the repository need the WAL they wrote there.

use integration::Cluster;

use super::{ok, pgstream, wait_for_server};

/// Switches WAL on `pg` (`pgstream switch-wal`) and waits until the segment it was writing is
/// archived.
pub fn switch_and_archive(pg: &Cluster) {
    let current = current_segment(pg);
    ok(
        pgstream(&["switch-wal", "--source", &pg.conninfo("postgres")], None),
        "switch-wal",
    );
    wait_archived(pg, &current);
}

/// Like [`switch_and_archive`], switching with `SELECT pg_switch_wal()` instead of pgstream.
pub fn sql_switch_and_archive(pg: &Cluster) {
    let current = current_segment(pg);
    pg.psql("SELECT pg_switch_wal()");
    wait_archived(pg, &current);
}

fn current_segment(pg: &Cluster) -> String {
    pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
}

fn wait_archived(pg: &Cluster, segment: &str) {
    wait_for_server(pg, &format!("{segment} is archived"), || {
        pg.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            .as_str()
            >= segment
    });
}
