//! The repository passphrase a drill hands to restore_command is gone before anything runs on
//! the promoted copy as a superuser: the checks, the SQL file, and whatever the backed-up
//! database runs itself (login event triggers, for one), which could read it with
//! pg_read_file. Newest major only: the file handling does not depend on the version.

mod support;

use support::archiving::switch_and_archive;
use support::setup::Setup;
use support::{newest_major, ok, s};

#[test]
fn drill_removes_the_passphrase_file_and_the_wal_spool_before_the_checks_run_on_the_promoted_copy()
{
    let major = newest_major();
    let setup = Setup::new("drill secrets passphrase");
    let pg = setup.archiving_cluster(major).start();
    pg.psql("CREATE TABLE t (id int)");
    ok(setup.base(&pg.conninfo("postgres")), "base");
    pg.psql("INSERT INTO t VALUES (1)");
    switch_and_archive(&pg);

    // The scratch directory is the data directory's parent; the check fails if the file that
    // restore_command read is still there.
    let check = setup.path("check.sql");
    std::fs::write(
        &check,
        "DO $$ BEGIN \
           IF EXISTS (SELECT 1 FROM pg_ls_dir('..') AS f WHERE f = 'wal-fetch.passphrase') THEN \
             RAISE EXCEPTION 'the passphrase file is still in the scratch directory'; \
           END IF; \
           IF EXISTS (SELECT 1 FROM pg_ls_dir('..') AS f WHERE f = 'wal-spool') THEN \
             RAISE EXCEPTION 'wal-fetch''s spool is still in the scratch directory'; \
           END IF; \
           IF NOT EXISTS (SELECT 1 FROM pg_ls_dir('..') AS f WHERE f = 'pg_hba.drill.conf') THEN \
             RAISE EXCEPTION 'pg_ls_dir(''..'') is not the scratch directory'; \
           END IF; \
         END $$;\n\
         SELECT count(*) FROM t;\n",
    )
    .unwrap();
    let parent = setup.dir("drills");
    let drill = setup.drill(
        major,
        &parent,
        &["--check-sql", s(&check), "--no-amcheck", "--timeout", "5m"],
    );
    let (stdout, ctx) = (drill.stdout, drill.ctx);
    assert_eq!(drill.code, Some(0), "{ctx}");
    assert!(stdout.contains("restore drill: PASS"), "{ctx}");
    assert!(
        std::fs::read_dir(&parent).unwrap().next().is_none(),
        "the scratch directory is left: {ctx}"
    );
}
