//! A drill whose replay pauses for a reason other than its target: on PostgreSQL 14+, a WAL
//! record raising a setting (max_connections) above the copy's pauses replay, the drill takes
//! that pause for its target, and the server exits with FATAL when promoted. The drill must
//! fail naming the server's exit and quoting why, not a lost connection. Newest major only
//! (13 stops with FATAL at the record itself, also an exit, which the test accepts there).

mod support;

use std::time::Duration;

use support::archiving::switch_and_archive;
use support::setup::Setup;
use support::{newest_major, ok};

#[test]
fn drill_reports_the_servers_exit_when_a_pause_for_a_raised_setting_cannot_be_promoted() {
    let major = newest_major();
    let setup = Setup::new("drill pause passphrase");
    let pg = setup.archiving_cluster(major).start();
    pg.psql("CREATE TABLE t (id int)");
    ok(setup.base(&pg.conninfo("postgres")), "base");
    // The backup (its configuration and pg_control) has the old max_connections; the restart
    // logs the new one (XLOG_PARAMETER_CHANGE) before the target.
    pg.psql("ALTER SYSTEM SET max_connections = 150");
    pg.restart();
    pg.psql("INSERT INTO t VALUES (1)");
    let target = pg.psql("SELECT now()");
    std::thread::sleep(Duration::from_millis(20));
    pg.psql("INSERT INTO t VALUES (2)");
    switch_and_archive(&pg);

    let parent = setup.dir("drills");
    let drill = setup.drill(
        major,
        &parent,
        &["--target-time", &target, "--timeout", "5m"],
    );
    let (stdout, ctx) = (drill.stdout, drill.ctx);
    assert_eq!(drill.code, Some(11), "{ctx}");
    let failure = stdout
        .split("## Failure")
        .nth(1)
        .unwrap_or_else(|| panic!("no failure section: {ctx}"));
    assert!(failure.contains("the server exited"), "{ctx}");
    assert!(failure.contains("max_connections"), "{ctx}");
    if major >= 14 {
        assert!(failure.contains("before the server was promoted"), "{ctx}");
        assert!(failure.contains("insufficient parameter settings"), "{ctx}");
    }
    assert!(
        std::fs::read_dir(&parent).unwrap().next().is_none(),
        "the scratch directory is left: {ctx}"
    );
}
