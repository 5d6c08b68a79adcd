//! `archive-push` as a real server's archive_command, `wal-fetch` as a restored server's
//! restore_command, `switch-wal` and `restore-point`, end to end through the binary: segments are
//! archived and come back byte for byte, pushing again is idempotent, a different file under a
//! stored name is refused without touching the stored one, missing files exit 1 silently, a
//! `.partial` segment serves its segment while it is the newest, a promoted server's history file
//! is archived and served, a base backup's partial segment is served from a fresh repository, and
//! a point-in-time restore stops at a named restore point.

mod support;

use integration::{cluster, server_user, test_majors, Cluster};
use support::setup::Setup;
use support::{ok, s, wait_for_server as wait_for};

const PASSPHRASE: &str = "archive command passphrase";
const SEG: usize = 16 << 20;
/// The PITR target; the quote and backslash check the quoting on the way to the server.
const RESTORE_POINT: &str = "pitr 'target' \\ one";

fn psql(pg: &Cluster, sql: &str) -> String {
    pg.psql(sql)
}

/// Waits until the server has archived `segment` (names on one timeline sort in WAL order).
fn wait_archived(pg: &Cluster, segment: &str) {
    wait_for(pg, &format!("{segment} is archived"), || {
        psql(
            pg,
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        )
        .as_str()
            >= segment
    });
}

fn switch_wal(pg: &Cluster) -> String {
    let run = ok(
        support::pgstream(&["switch-wal", "--source", &pg.conninfo("postgres")], None),
        "switch-wal",
    );
    let lsn = run.stdout.trim().to_string();
    assert!(lsn.contains('/'), "switch-wal printed {lsn:?}");
    lsn
}

/// The segment holding the byte before `lsn` (where WAL ending at `lsn` was written).
/// (Computed here: PostgreSQL 13 has no `pg_lsn - integer`.) The test cluster stays on timeline 1.
fn segment_before(lsn: &str) -> String {
    let (hi, lo) = lsn.split_once('/').expect("an LSN X/X");
    let lsn = (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
    support::segment_file_name(1, lsn - 1, SEG as u64)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// postgresql.conf string literal (backslashes are escapes there too).
fn conf_literal(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// A hot standby of `pg` restored from the repository's latest backup, catching up from the
/// archive (wal-fetch) and then by streaming.
fn standby_of(setup: &Setup, pg: &Cluster) -> Cluster {
    let target = setup.scratch.path().join("standby");
    ok(
        setup.run(
            &["restore", "--repo", s(&setup.repo), "--to", s(&target)],
            true,
        ),
        "restore for a standby",
    );
    let mut auto = std::fs::read_to_string(target.join("postgresql.auto.conf")).unwrap();
    auto.push_str(&format!(
        // The PITR test's promoted copy archived timeline 2: follow the primary's, timeline 1.
        "restore_command = {}\nprimary_conninfo = {}\nrecovery_target_timeline = 'current'\n",
        conf_literal(&setup.command("wal-fetch", "%f %p")),
        conf_literal(&pg.conninfo("postgres"))
    ));
    std::fs::write(target.join("postgresql.auto.conf"), auto).unwrap();
    std::fs::write(target.join("standby.signal"), b"").unwrap();
    cluster(pg.major()).restored_data_dir(&target).start()
}

#[test]
fn archive_command_restore_command_and_point_in_time_restore() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let setup = Setup::new(PASSPHRASE);
        let pg = cluster(major)
            .setting("archive_mode", "on")
            .setting("archive_command", &setup.command("archive-push", "%p"))
            .start();
        let pg_wal = pg.data_dir().join("pg_wal");
        psql(
            &pg,
            "CREATE TABLE t (id int, phase text);
             INSERT INTO t SELECT g, 'load' FROM generate_series(1, 20000) g;",
        );
        let switched = segment_before(&switch_wal(&pg));
        wait_archived(&pg, &switched);

        // Every segment the server archived and still has comes back byte for byte.
        let mut compared = 0;
        let mut first_archived = None;
        for e in std::fs::read_dir(pg_wal.join("archive_status")).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let Some(seg) = name.strip_suffix(".done") else {
                continue;
            };
            if seg.len() != 24 {
                continue;
            }
            let on_disk = std::fs::read(pg_wal.join(seg)).unwrap();
            assert_eq!(setup.fetch(seg), on_disk, "{ctx}: {seg}");
            compared += 1;
            first_archived.get_or_insert(seg.to_string());
        }
        assert!(compared >= 1, "{ctx}: no archived segment to compare");
        let seg = first_archived.unwrap();

        // The same file again: success. Different content under the name: refused, unchanged.
        ok(setup.push(&pg_wal.join(&seg)), "archive-push again");
        let original = std::fs::read(pg_wal.join(&seg)).unwrap();
        let mut changed = original.clone();
        changed[SEG / 2 + 100] ^= 0xFF;
        let other = setup.dir("other").join(&seg);
        std::fs::write(&other, &changed).unwrap();
        server_user().chown(&other);
        let run = setup.push(&other);
        assert_eq!(run.code, 5, "{ctx}: conflicting push: {run:?}");
        assert!(
            run.stderr.contains("different content") && run.stderr.contains(&seg),
            "{ctx}: {run:?}"
        );
        assert_eq!(setup.fetch(&seg), original, "{ctx}: stored segment changed");
        // A truncated segment is refused; so is an unknown name.
        let short = setup.dir("other").join("0000000100000000000000F1");
        std::fs::write(&short, &original[..SEG / 2]).unwrap();
        server_user().chown(&short);
        let run = setup.push(&short);
        assert_eq!(run.code, 2, "{ctx}: short segment: {run:?}");
        let junk = setup.dir("other").join("RECOVERYXLOG");
        std::fs::write(&junk, b"x").unwrap();
        assert_eq!(setup.push(&junk).code, 2, "{ctx}");

        // Missing files: exit 1 and not a word, as restore_command must.
        for missing in ["0000000100000000000000F0", "00000009.history"] {
            let (run, _) = setup.fetch_from(&setup.repo, missing);
            assert_eq!(run.code, 1, "{ctx}: wal-fetch {missing}: {run:?}");
            assert_eq!(run.stderr, "", "{ctx}: wal-fetch {missing} is not quiet");
        }

        // A .partial pushed by hand (as a promoted server would) serves the segment while it
        // is the newest of its timeline; the complete segment wins once archived.
        psql(
            &pg,
            "INSERT INTO t SELECT g, 'partial' FROM generate_series(1, 100) g",
        );
        let current = psql(&pg, "SELECT pg_walfile_name(pg_current_wal_lsn())");
        let partial_copy = std::fs::read(pg_wal.join(&current)).unwrap();
        let partial = setup.dir("partial").join(format!("{current}.partial"));
        std::fs::write(&partial, &partial_copy).unwrap();
        server_user().chown(&partial);
        ok(setup.push(&partial), "archive-push .partial");
        let (run, served) = setup.fetch_from(&setup.repo, &current);
        assert_eq!(run.code, 0, "{ctx}: {run:?}");
        assert!(run.stderr.contains("partial"), "{ctx}: {run:?}");
        assert_eq!(served.unwrap(), partial_copy, "{ctx}: served partial");

        // A base backup (its backup history file is archived too), then a named restore point
        // between rows that must come back and rows that must not.
        let backup = ok(setup.base(&pg.conninfo("postgres")), "base");
        assert!(backup.stdout.contains("complete"), "{ctx}: {backup:?}");
        psql(
            &pg,
            "INSERT INTO t SELECT g, 'before' FROM generate_series(1, 500) g",
        );
        let rp = support::restore_point(&pg, RESTORE_POINT);
        let rp_lsn = rp.stdout.trim().to_string();
        psql(
            &pg,
            "INSERT INTO t SELECT g, 'after' FROM generate_series(1, 700) g",
        );
        let last = segment_before(&switch_wal(&pg));
        wait_archived(&pg, &last);
        // The record is in the archived segment, with the name exactly as given (it may be
        // split by a page header, hence the halves).
        let rp_segment = segment_before(&rp_lsn);
        let wal = setup.fetch(&rp_segment);
        let (a, b) = RESTORE_POINT.as_bytes().split_at(RESTORE_POINT.len() / 2);
        assert!(
            contains(&wal, RESTORE_POINT.as_bytes()) || (contains(&wal, a) && contains(&wal, b)),
            "{ctx}: restore point {RESTORE_POINT:?} not found in {rp_segment}"
        );
        // The complete segment replaced the partial copy as what is served.
        assert_eq!(
            setup.fetch(&current),
            std::fs::read(pg_wal.join(&current)).unwrap(),
            "{ctx}: {current}"
        );
        // Names the server refuses are refused before connecting.
        let long = "x".repeat(64);
        let run = support::pgstream(
            &["restore-point", "--source", &pg.conninfo("postgres"), &long],
            None,
        );
        assert_eq!(run.code, 2, "{ctx}: {run:?}");

        // Point-in-time restore: restore_command is wal-fetch, the target the restore point.
        let target = setup.scratch.path().join("restored");
        ok(
            setup.run(
                &["restore", "--repo", s(&setup.repo), "--to", s(&target)],
                true,
            ),
            "restore",
        );
        let mut auto = std::fs::read_to_string(target.join("postgresql.auto.conf")).unwrap();
        auto.push_str(&format!(
            "restore_command = {}\nrecovery_target_name = {}\nrecovery_target_action = 'promote'\n",
            conf_literal(&setup.command("wal-fetch", "%f %p")),
            conf_literal(RESTORE_POINT)
        ));
        std::fs::write(target.join("postgresql.auto.conf"), auto).unwrap();
        std::fs::write(target.join("recovery.signal"), b"").unwrap();
        let restored = cluster(major)
            .restored_data_dir(&target)
            .setting("archive_mode", "on")
            .setting("archive_command", &setup.command("archive-push", "%p"))
            .start();
        wait_for(&restored, "the restored server is promoted", || {
            restored.try_psql("SELECT pg_is_in_recovery()").as_deref() == Ok("f")
        });
        assert_eq!(
            restored.psql("SELECT count(*) FILTER (WHERE phase = 'before'), count(*) FILTER (WHERE phase = 'after') FROM t"),
            "500|0",
            "{ctx}: rows after recovery to the restore point"
        );
        assert!(
            restored
                .server_log()
                .contains("recovery stopping at restore point"),
            "{ctx}: {}",
            restored.server_log()
        );

        // The promoted server archives its history file; wal-fetch serves it. (The old
        // timeline's last segment came from the archive, so the server archives no .partial.)
        let history_path = target.join("pg_wal/00000002.history");
        let history = std::fs::read(&history_path).expect("00000002.history after promotion");
        wait_for(&restored, "00000002.history is archived", || {
            setup.fetch_from(&setup.repo, "00000002.history").0.code == 0
        });
        assert_eq!(setup.fetch("00000002.history"), history, "{ctx}");
        drop(restored);

        // A fresh repository holding only a base backup taken on a standby (which cannot
        // switch segments, so the backup ends in a partial segment): wal-fetch serves that
        // segment padded with zeros, so recovery can reach the backup's end.
        let standby = standby_of(&setup, &pg);
        psql(&pg, "INSERT INTO t VALUES (1, 'standby')");
        let primary_lsn = psql(&pg, "SELECT pg_current_wal_lsn()");
        wait_for(&standby, "the standby replays", || {
            standby
                .try_psql(&format!(
                    "SELECT pg_last_wal_replay_lsn() >= '{primary_lsn}'"
                ))
                .as_deref()
                == Ok("t")
        });
        let repo2 = setup.scratch.path().join("repo2");
        setup.init(&repo2);
        let record: serde_json::Value = serde_json::from_str(
            &ok(
                setup.run(
                    &[
                        "base",
                        "--repo",
                        s(&repo2),
                        "--source",
                        &standby.conninfo("postgres"),
                        "--json",
                        "--no-progress",
                    ],
                    true,
                ),
                "base from the standby",
            )
            .stdout,
        )
        .unwrap();
        let partial = &record["partial_wal_file"];
        let segment = partial["segment"]
            .as_str()
            .unwrap_or_else(|| panic!("{ctx}: no partial segment in {record}"));
        let valid = partial["valid_bytes"].as_u64().unwrap() as usize;
        let (run, served) = setup.fetch_from(&repo2, segment);
        assert_eq!(run.code, 0, "{ctx}: {run:?}");
        let served = served.unwrap();
        assert_eq!(served.len(), SEG, "{ctx}");
        let on_standby = std::fs::read(standby.data_dir().join("pg_wal").join(segment)).unwrap();
        assert_eq!(&served[..valid], &on_standby[..valid], "{ctx}: {segment}");
        assert!(served[valid..].iter().all(|&b| b == 0), "{ctx}: padding");
    }
}
