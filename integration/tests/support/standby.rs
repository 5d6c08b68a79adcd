//! A primary with a streaming standby made by `pg_basebackup -R`.

use std::process::Command;

use integration::{client_tool, cluster, scratch_dir, Cluster};
use pgwire_repl::Lsn;

/// A primary and a standby streaming from it through a physical slot. Fields drop in order:
/// the standby's server stops before its data directory (in `scratch`) is removed.
pub struct Pair {
    pub standby: Cluster,
    _scratch: tempfile::TempDir,
    pub primary: Cluster,
}

/// A throwaway primary plus a pg_basebackup -R standby (slot `standby`, application_name
/// `standby`) that streams from it. `wal_keep_size` on both keeps the segments the tests read
/// back.
pub fn primary_with_standby(major: u32, wal_keep_size: &str) -> Pair {
    let primary = cluster(major)
        .setting("fsync", "off")
        .setting("wal_keep_size", wal_keep_size)
        .start();
    let scratch = scratch_dir();
    let standby_dir = scratch.path().join("standby");
    let out = Command::new(client_tool(major, "pg_basebackup"))
        .arg("-D")
        .arg(&standby_dir)
        .args(["-d", &primary.conninfo("postgres")])
        .args(["-X", "stream", "-R", "-c", "fast", "-C", "-S", "standby"])
        .arg("--no-sync")
        .output()
        .unwrap_or_else(|e| panic!("PostgreSQL {major}: cannot run pg_basebackup: {e}"));
    assert!(
        out.status.success(),
        "PostgreSQL {major}: pg_basebackup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // -R copies every option of the pg_basebackup's own libpq into primary_conninfo, and a
    // newer client's options (sslcertmode, ...) are unknown to an older server's walreceiver:
    // a later line of postgresql.auto.conf wins, so name just what the standby needs.
    let auto_conf = standby_dir.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto_conf)
        .unwrap_or_else(|e| panic!("PostgreSQL {major}: reading {}: {e}", auto_conf.display()));
    assert!(
        text.contains("primary_slot_name") && standby_dir.join("standby.signal").exists(),
        "PostgreSQL {major}: pg_basebackup -R did not configure a standby:\n{text}"
    );
    text.push_str(&format!(
        "primary_conninfo = 'host={} port={} user=postgres sslmode=disable application_name=standby'\n",
        primary.host(),
        primary.port()
    ));
    std::fs::write(&auto_conf, text)
        .unwrap_or_else(|e| panic!("PostgreSQL {major}: writing {}: {e}", auto_conf.display()));
    let standby = cluster(major)
        .restored_data_dir(&standby_dir)
        .setting("fsync", "off")
        .setting("wal_keep_size", wal_keep_size)
        .start();
    super::wait_until(&format!("PostgreSQL {major}: the standby streams"), || {
        primary.psql(
            "SELECT count(*) FROM pg_stat_replication \
             WHERE application_name = 'standby' AND state = 'streaming'",
        ) == "1"
    });
    Pair {
        standby,
        _scratch: scratch,
        primary,
    }
}

/// Waits until `standby` has replayed everything `primary` has flushed so far; returns that
/// position.
pub fn wait_for_replay(primary: &Cluster, standby: &Cluster) -> Lsn {
    let target = super::wal::lsn(&primary.psql("SELECT pg_current_wal_flush_lsn()"));
    super::wait_until(
        &format!(
            "PostgreSQL {}: the standby replays {target}",
            standby.major()
        ),
        || {
            standby.psql(&format!(
                "SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"
            )) == "t"
        },
    );
    target
}
