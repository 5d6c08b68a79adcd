//! `pgstream list` end to end: backup fields, and the WAL coverage of a real archive with two
//! timelines (a restored copy promoted onto timeline 2 while the original goes on writing
//! timeline 1) and a gap (an archived segment removed): per timeline the segment ranges, the
//! branch point (checked against the server's own history file) and the gap; per backup its
//! recoverable window along each timeline, and its pin (`pgstream keep`). With the passphrase
//! and without it (ranges, gaps and pins still listed, windows and branch points not, a note
//! saying why), a wrong passphrase (exit 5) and a directory that is no repository (exit 5). The
//! version does not matter here, so it runs on the newest major under test only.

mod support;

use serde_json::Value;
use support::archiving::switch_and_archive;
use support::restored::start_and_wait_promoted;
use support::setup::Setup;
use support::{newest_major, ok, s};

const PASSPHRASE: &str = "list coverage passphrase";

fn list_json(setup: &Setup, pass: bool) -> (Value, String) {
    let run = ok(
        setup.run(&["list", "--repo", s(&setup.repo), "--json"], pass),
        "list --json",
    );
    let v = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("list --json does not parse: {e}: {run:?}"));
    (v, run.stderr)
}

fn timeline(list: &Value, tli: u64) -> &Value {
    list["wal"]["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["timeline"] == tli)
        .unwrap_or_else(|| panic!("no timeline {tli} in {list:#}"))
}

#[test]
fn list_shows_backups_timelines_branch_points_gaps_and_windows() {
    let major = newest_major();
    let ctx = format!("PostgreSQL {major}");
    let setup = Setup::new(PASSPHRASE);
    let pg = setup.archiving_cluster(major).start();
    pg.psql("CREATE TABLE t (id int)");
    ok(setup.base(&pg.conninfo("postgres")), "base");
    pg.psql("INSERT INTO t VALUES (1)");
    switch_and_archive(&pg);

    // A copy promoted onto timeline 2, archiving into the same repository.
    let dir = setup.path("promoted");
    ok(setup.restore(&dir, &["--target-latest"]), "restore");
    let promoted = start_and_wait_promoted(
        setup
            .archiving_cluster(major)
            .restored_data_dir(&dir)
            // Its insert is then the last commit of timeline 2, with a time to compare.
            .setting("track_commit_timestamp", "on")
            .setting("autovacuum", "off"),
    );
    let xid = promoted.psql("INSERT INTO t VALUES (2) RETURNING txid_current()");
    let committed = promoted.psql(&format!(
        "SELECT to_char(pg_xact_commit_timestamp('{xid}'::xid) AT TIME ZONE 'UTC', \
         'YYYY-MM-DD HH24:MI:SS.US')"
    ));
    switch_and_archive(&promoted);
    let history = std::fs::read_to_string(dir.join("pg_wal/00000002.history")).unwrap();
    drop(promoted);
    let switch_point = history
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("{ctx}: history {history:?}"))
        .to_string();

    // Timeline 1 goes on; then one of its archived segments is lost.
    for _ in 0..3 {
        pg.psql("INSERT INTO t VALUES (3)");
        switch_and_archive(&pg);
    }
    let (before, _) = list_json(&setup, true);
    let t1 = timeline(&before, 1);
    assert_eq!(t1["gaps"], serde_json::json!([]), "{ctx}: {before:#}");
    let last = t1["complete"].as_array().unwrap().last().unwrap()["last_segment"]
        .as_str()
        .unwrap()
        .to_string();
    let lost_segno = u64::from_str_radix(&last[16..], 16).unwrap() - 1;
    let lost = format!("{}{lost_segno:08X}", &last[..16]);
    let lost_file = setup
        .repo
        .join("wal")
        .join(&lost[..16])
        .join(format!("{lost}.lz4.enc"));
    std::fs::remove_file(&lost_file)
        .unwrap_or_else(|e| panic!("{ctx}: removing {}: {e}", lost_file.display()));

    // With the passphrase: everything.
    let (list, _) = list_json(&setup, true);
    assert_eq!(list["encrypted"], true, "{ctx}");
    assert_eq!(list["contents_read"], true, "{ctx}");
    let backups = list["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "{ctx}: {list:#}");
    let b = &backups[0];
    for field in [
        "id",
        "label",
        "start_time",
        "end_time",
        "start_lsn",
        "end_lsn",
        "compression",
        "encryption",
    ] {
        assert!(b[field].is_string(), "{ctx}: backup {field}: {b:#}");
    }
    assert_eq!(b["status"], "complete", "{ctx}");
    assert_eq!(b["end_timeline"], 1, "{ctx}");
    assert_eq!(b["compression"], "lz4", "{ctx}");
    assert!(b["stored_bytes"].as_u64().unwrap() > 0, "{ctx}");
    assert!(b["raw_bytes"].as_u64().unwrap() > 0, "{ctx}");

    let t1 = timeline(&list, 1);
    assert_eq!(t1["branch"], "root", "{ctx}");
    let gaps = t1["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{ctx}: {t1:#}");
    assert_eq!(gaps[0]["first_segment"], lost.as_str(), "{ctx}");
    assert_eq!(gaps[0]["last_segment"], lost.as_str(), "{ctx}");
    assert_eq!(t1["complete"].as_array().unwrap().len(), 2, "{ctx}: {t1:#}");
    let t2 = timeline(&list, 2);
    assert_eq!(t2["branch"], "forked", "{ctx}: {t2:#}");
    assert_eq!(t2["parent"], 1, "{ctx}");
    assert_eq!(t2["switch_point"], switch_point.as_str(), "{ctx}");
    assert!(!t2["complete"].as_array().unwrap().is_empty(), "{ctx}");
    assert_eq!(t2["gaps"], serde_json::json!([]), "{ctx}: {t2:#}");

    // One window per timeline holding the backup: timeline 1 stops at the gap, timeline 2
    // follows 1 -> 2 past the branch point.
    let windows = b["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2, "{ctx}: {b:#}");
    assert_eq!(windows[0]["timeline"], 1, "{ctx}");
    assert_eq!(windows[0]["first_missing_segment"], lost.as_str(), "{ctx}");
    assert_eq!(windows[0]["gap_before"], last.as_str(), "{ctx}");
    assert_eq!(windows[0]["start_lsn"], b["end_lsn"], "{ctx}");
    assert_eq!(windows[1]["timeline"], 2, "{ctx}");
    assert_eq!(
        windows[1]["timeline_path"],
        serde_json::json!([1, 2]),
        "{ctx}"
    );
    assert_eq!(windows[1]["reaches_backup_end"], true, "{ctx}");
    // The last commit read from the archived WAL is the promoted server's insert, to the
    // microsecond (the server's own commit timestamp).
    let last_commit = &windows[1]["last_commit"];
    assert_eq!(
        last_commit["time"],
        format!("{committed}+00").as_str(),
        "{ctx}: {b:#}"
    );
    assert_eq!(last_commit["kind"], "commit", "{ctx}");
    assert!(windows[0]["last_commit"].is_object(), "{ctx}: {b:#}");

    // A time target after that commit gets a note saying it would not be reached; one before
    // it, the commit recovery will stop at, at the latest.
    for (target, expected) in [
        (
            "2100-01-01 00:00:00+00",
            "after the last commit archived in the window",
        ),
        (
            b["end_time"].as_str().unwrap(),
            "recovery stops at the first commit after",
        ),
    ] {
        let dir = setup.path(&format!("time-{}", target.len()));
        let run = ok(
            setup.restore(&dir, &["--target-time", target, "--target-timeline", "2"]),
            "restore --target-time",
        );
        assert!(
            run.stdout.contains(expected) && run.stdout.contains(&committed),
            "{ctx}: {target}: {run:?}"
        );
    }

    // The text form says the same.
    let text = ok(setup.run(&["list", "--repo", s(&setup.repo)], true), "list");
    let id = b["id"].as_str().unwrap();
    for expected in [
        id.to_string(),
        format!("timeline 2 (branched from timeline 1 at {switch_point})"),
        format!("gap       {lost} .. {lost}"),
        format!("gap: {lost} is missing although the later {last} is archived"),
        "window    timeline 2 (path 1 -> 2)".to_string(),
    ] {
        assert!(
            text.stdout.contains(&expected),
            "{ctx}: no {expected:?} in {text:?}"
        );
    }

    // A pinned backup says so, read with the key and without it.
    assert_eq!(b["pinned"], false, "{ctx}");
    ok(
        setup.run(&["keep", "--repo", s(&setup.repo), id], true),
        "keep",
    );
    assert_eq!(
        list_json(&setup, true).0["backups"][0]["pinned"],
        true,
        "{ctx}"
    );

    // Without a passphrase: backups, ranges and gaps; no windows or branch points; a note.
    let (names, stderr) = list_json(&setup, false);
    assert_eq!(names["backups"][0]["pinned"], true, "{ctx}");
    assert_eq!(names["contents_read"], false, "{ctx}");
    assert_eq!(names["backups"][0]["id"], b["id"], "{ctx}");
    assert_eq!(names["backups"][0]["windows"], Value::Null, "{ctx}");
    assert_eq!(timeline(&names, 1)["gaps"], t1["gaps"], "{ctx}");
    assert_eq!(timeline(&names, 1)["complete"], t1["complete"], "{ctx}");
    assert_eq!(timeline(&names, 2)["branch"], "needs_passphrase", "{ctx}");
    assert!(stderr.contains("PGSTREAM_PASSPHRASE"), "{ctx}: {stderr}");
    let text = ok(
        setup.run(&["list", "--repo", s(&setup.repo)], false),
        "list without a passphrase",
    );
    assert!(
        text.stdout
            .contains("note: the repository is encrypted and no passphrase was given")
            && !text.stdout.contains("  window "),
        "{ctx}: {text:?}"
    );

    // A wrong passphrase is an error, not a quiet fallback; so is a directory that is not a
    // repository.
    let run = support::pgstream(
        &["list", "--repo", s(&setup.repo)],
        Some("not the passphrase"),
    );
    assert_eq!(run.code, 5, "{ctx}: {run:?}");
    let run = support::pgstream(&["list", "--repo", s(&setup.path("nothing"))], None);
    assert_eq!(run.code, 5, "{ctx}: {run:?}");
    assert!(run.stderr.contains("pgstream init"), "{ctx}: {run:?}");
}
