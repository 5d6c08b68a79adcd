//! Point-in-time recovery and the restore drill on top of an incremental backup (PostgreSQL
//! 17+): the chain is rebuilt, then recovery replays archived WAL past the incremental's end
//! to a restore point; the drill restores the incremental, recovers, promotes and checks it.

mod support;

use support::archiving::switch_and_archive;
use support::incremental::{incremental_majors, settle};
use support::restored::start_promoted;
use support::setup::Setup;
use support::{ok, restore_point};

const PASSPHRASE: &str = "pitr on an incremental";

#[test]
fn pitr_to_a_restore_point_after_an_incremental_and_a_drill_of_it() {
    for major in incremental_majors() {
        let ctx = format!("PostgreSQL {major}");
        let setup = Setup::new(PASSPHRASE);
        let pg = setup
            .archiving_cluster(major)
            .setting("summarize_wal", "on")
            .start();
        let conninfo = pg.conninfo("postgres");
        pg.psql(
            "CREATE TABLE marks (id int PRIMARY KEY, note text);
             CREATE TABLE bulk AS SELECT g AS id, repeat('b', 200) AS pad FROM generate_series(1, 20000) g;",
        );
        ok(setup.base(&conninfo), "full base");
        pg.psql("INSERT INTO marks VALUES (1, 'in the incremental'); UPDATE bulk SET pad = 'u' WHERE id % 50 = 0");
        settle(&pg);
        let run = ok(
            setup.run(
                &[
                    "base",
                    "--repo",
                    support::s(&setup.repo),
                    "--source",
                    &conninfo,
                    "--no-progress",
                    "--incremental",
                    "--json",
                ],
                true,
            ),
            "incremental base",
        );
        let record: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let id = record["id"].as_str().unwrap().to_string();
        assert!(!record["incremental"].is_null(), "{ctx}: {record}");
        pg.psql("INSERT INTO marks VALUES (2, 'before the target')");
        restore_point(&pg, "after the incremental");
        pg.psql("INSERT INTO marks VALUES (3, 'after the target')");
        switch_and_archive(&pg);

        let dir = setup.path("pitr");
        ok(
            setup.restore(
                &dir,
                &[
                    "--backup",
                    &id,
                    "--target-name",
                    "after the incremental",
                    "--target-action",
                    "promote",
                ],
            ),
            &format!("{ctx}: restore of the incremental to a restore point"),
        );
        let restored = start_promoted(major, &dir);
        assert_eq!(
            restored.psql("SELECT string_agg(note, ',' ORDER BY id) FROM marks"),
            "in the incremental,before the target",
            "{ctx}"
        );
        assert_eq!(
            restored.psql("SELECT count(*) FROM bulk WHERE pad = 'u'"),
            "400",
            "{ctx}"
        );
        drop(restored);

        let scratch = setup.dir("drill");
        let drill = setup.drill(
            major,
            &scratch,
            &["--backup", &id, "--target-name", "after the incremental"],
        );
        assert_eq!(drill.code, Some(0), "{}", drill.ctx);
        assert!(drill.stdout.contains("PASS"), "{}", drill.ctx);
        assert!(drill.stdout.contains(&id), "{}", drill.ctx);
    }
}
