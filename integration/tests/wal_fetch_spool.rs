//! wal-fetch's prefetch spool, end to end: `pgstream restore` writes restore_command with
//! `--spool-dir pg_wal/pgstream-spool`, and recovery over several archived segments of an
//! encrypted repository gets most of them from the spool, without opening the repository (no
//! key derivation). One major, the newest: the spool does not depend on the server version.

mod support;

use support::archiving::switch_and_archive;
use support::restored::start_promoted;
use support::setup::Setup;
use support::{newest_major, ok};

const PASSPHRASE: &str = "spool passphrase";
const SEGMENTS: usize = 6;

#[test]
fn restore_recovery_serves_segments_from_the_prefetch_spool_without_opening_the_repository() {
    let major = newest_major();
    let started = std::time::Instant::now();
    let setup = Setup::new(PASSPHRASE);
    let pg = setup.archiving_cluster(major).start();
    pg.psql("CREATE TABLE spool (id int PRIMARY KEY)");
    ok(setup.base(&pg.conninfo("postgres")), "base");
    for i in 1..=SEGMENTS {
        pg.psql(&format!("INSERT INTO spool VALUES ({i})"));
        switch_and_archive(&pg);
    }
    let dir = setup.path("restored");
    ok(setup.restore(&dir, &["--target-latest"]), "restore");
    let conf = dir.join("postgresql.auto.conf");
    let auto = std::fs::read_to_string(&conf).unwrap();
    assert!(
        auto.contains(" --spool-dir ''pg_wal/pgstream-spool'' %f %p"),
        "{auto}"
    );
    // wal-fetch's debug lines (in the server log) tell a spooled segment from a fetched one.
    std::fs::write(
        &conf,
        auto.replace(
            "restore_command = '",
            "restore_command = 'PGSTREAM_LOG=debug ",
        ),
    )
    .unwrap();
    let restored = start_promoted(major, &dir);
    let ids = restored.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM spool");
    assert_eq!(ids, "1,2,3,4,5,6");
    let log = restored.server_log();
    let count = |s: &str| log.lines().filter(|l| l.contains(s)).count();
    let restored_segments = count("restored log file \"0000000");
    let from_spool = count("served from the spool");
    // wal-fetch logs "prefetched" each time it opened the repository for a complete segment.
    let repository_opens = count("prefetched");
    assert!(
        restored_segments > SEGMENTS,
        "{restored_segments} segments restored:\n{log}"
    );
    // The first segment opens the repository and prefetches the rest; at most a segment or
    // two at the end of the WAL (written after the prefetch) come from the repository again.
    assert!(
        from_spool >= SEGMENTS - 1,
        "{from_spool} of {restored_segments} segments from the spool:\n{log}"
    );
    assert!(
        (1..from_spool).contains(&repository_opens),
        "{repository_opens} repository fetches:\n{log}"
    );
    // What is left is bounded by --prefetch (8), and only spool entries.
    let left: Vec<String> = std::fs::read_dir(dir.join("pg_wal/pgstream-spool"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.len() <= 8 && left.iter().all(|n| n.ends_with(".prefetched")),
        "{left:?}"
    );
    eprintln!(
        "PostgreSQL {major}: {from_spool} of {restored_segments} segments from the spool, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
