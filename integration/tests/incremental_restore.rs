//! Incremental backups end to end on PostgreSQL 17+: a full backup, changes, an incremental,
//! more changes, another incremental; every point restored through the binary, checked by
//! pg_verifybackup, equal byte for byte to pg_combinebackup's result, started, and equal to
//! the source at that point (pg_dumpall). The changes between backups cover what rebuilding
//! files must get right: a relation truncated by VACUUM (and one regrown after), a dropped
//! database and table, a tablespace created between two backups, new and rewritten tables.

mod support;

use std::path::Path;

use support::incremental::*;
use support::{init_repo, s};

/// What the source looked like at one backup.
struct Point {
    record: serde_json::Value,
    dump: String,
}

fn pgbench(pg: &integration::Cluster, args: &[&str]) {
    let mut cmd = std::process::Command::new(integration::client_tool(pg.major(), "pgbench"));
    cmd.args(args).arg("-d").arg(pg.conninfo("postgres"));
    run_tool(cmd, "pgbench");
}

/// Restores `point` (its chain) and checks it against every oracle.
fn check_point(
    ctx: &str,
    major: u32,
    repo: &Path,
    scratch: &Path,
    chain: &[serde_json::Value],
    point: &Point,
    source_ts: &[(String, &str)],
) {
    let id = point.record["id"].as_str().unwrap();
    // Directly in the scratch directory: the server user must reach it.
    let target = scratch.join(format!("restore-{id}"));
    let mut maps = Vec::new();
    let mut ours = std::collections::BTreeMap::new();
    for a in point.record["archives"].as_array().unwrap() {
        if let (Some(oid), Some(loc)) = (
            a["tablespace_oid"].as_u64(),
            a["tablespace_location"].as_str(),
        ) {
            let dir = scratch.join(format!("restore-{id}-ts-{oid}"));
            maps.push(format!("{loc}={}", dir.display()));
            ours.insert(oid as u32, dir);
        }
    }
    let started = std::time::Instant::now();
    let run = restore(repo, &target, id, &maps, &["--json"]);
    eprintln!(
        "{ctx}: restore of {id} (chain of {}) took {:.1?}",
        chain.len(),
        started.elapsed()
    );
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["backup"], id, "{ctx}");
    verifybackup(major, &target);
    if chain.len() > 1 {
        let oracle = scratch.join(format!("combined-{id}"));
        let theirs = combine(major, repo, chain, &oracle);
        assert_same_tree(ctx, &oracle.join("data"), &target);
        assert_eq!(
            theirs.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>(),
            "{ctx}"
        );
        for (oid, dir) in &theirs {
            assert_same_tree(ctx, dir, &ours[oid]);
        }
    }
    for dir in ours.values() {
        chown_to_server_user(dir);
    }
    let restored = integration::cluster(major)
        .restored_data_dir(&target)
        .start();
    let mut got = dumpall(&restored);
    let mut want = point.dump.clone();
    for (i, (loc, _)) in source_ts.iter().enumerate() {
        want = want.replace(loc.as_str(), &format!("TS{i}"));
    }
    for a in point.record["archives"].as_array().unwrap() {
        if let (Some(oid), Some(loc)) = (
            a["tablespace_oid"].as_u64(),
            a["tablespace_location"].as_str(),
        ) {
            let i = source_ts.iter().position(|(l, _)| l == loc).unwrap();
            got = got.replace(
                &ours[&(oid as u32)].display().to_string(),
                &format!("TS{i}"),
            );
        }
    }
    assert_same_dump(ctx, &want, &got);
}

#[test]
fn chain_of_three_restores_every_point_equal_to_pg_combinebackup_and_the_source() {
    for major in incremental_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = summarizing(major).tablespace("ts1").start();
        let scratch = integration::scratch_dir();
        let repo = scratch.path().join("repo");
        init_repo(&repo, PASSPHRASE);
        pgbench(&pg, &["-i", "-q", "-s", "2"]);
        pg.psql(
            "CREATE TABLE shrinking AS SELECT g AS id, repeat('s', 500) AS pad FROM generate_series(1, 20000) g;
             CREATE TABLE in_ts (id int, note text) TABLESPACE ts1;
             INSERT INTO in_ts SELECT g, 'ts1 row ' || g FROM generate_series(1, 3000) g;
             CREATE TABLE doomed AS SELECT g FROM generate_series(1, 1000) g;
             CREATE DATABASE gone;
             VACUUM (FREEZE) shrinking;
             VACUUM (FREEZE) in_ts;",
        );
        let ts1 = pg.tablespace_dir("ts1").display().to_string();
        let full = Point {
            record: base(&repo, &pg, &["--label", "full"]),
            dump: dumpall(&pg),
        };
        assert!(full.record["incremental"].is_null(), "{ctx}");

        // About 2% of pgbench's rows change; a relation shrinks (VACUUM truncates it, and its
        // frozen head is not rewritten, so it is sent as an incremental file shorter than the
        // full backup's copy); a database and a table go; a tablespace appears with a table.
        pgbench(&pg, &["-n", "-t", "300", "-c", "2"]);
        pg.psql(
            "DELETE FROM shrinking WHERE id > 5000; VACUUM shrinking;
             DROP DATABASE gone;
             DROP TABLE doomed;
             UPDATE in_ts SET note = note || ' changed' WHERE id % 10 = 0;",
        );
        let ts2 = create_tablespace(&pg, "ts2");
        pg.psql(
            "CREATE TABLE later (id int PRIMARY KEY, v text) TABLESPACE ts2;
             INSERT INTO later SELECT g, md5(g::text) FROM generate_series(1, 5000) g;",
        );
        settle(&pg);
        let first = Point {
            record: base(
                &repo,
                &pg,
                &["--incremental", "--label", "first incremental"],
            ),
            dump: dumpall(&pg),
        };
        let inc = &first.record["incremental"];
        assert_eq!(inc["parent"], full.record["id"], "{ctx}: {inc}");
        assert_eq!(inc["depth"], 2, "{ctx}");

        // The shrunk relation grows again past its old end; another is rewritten whole.
        pgbench(&pg, &["-n", "-t", "300", "-c", "2"]);
        pg.psql(
            "INSERT INTO shrinking SELECT g, repeat('r', 300) FROM generate_series(5001, 30000) g;
             DELETE FROM in_ts WHERE id > 2500; VACUUM in_ts;
             VACUUM FULL pgbench_branches;
             UPDATE later SET v = 'x' WHERE id < 100;",
        );
        settle(&pg);
        let second = Point {
            record: base(&repo, &pg, &["--incremental", "--from", "latest"]),
            dump: dumpall(&pg),
        };
        assert_eq!(
            second.record["incremental"]["parent"], first.record["id"],
            "{ctx}"
        );
        assert_eq!(second.record["incremental"]["depth"], 3, "{ctx}");
        assert_eq!(
            second.record["incremental"]["full"], full.record["id"],
            "{ctx}"
        );
        let stored = |p: &Point| p.record["stored_bytes"].as_u64().unwrap();
        assert!(
            stored(&second) < stored(&full) / 2,
            "{ctx}: an incremental stored {} bytes, the full backup {}",
            stored(&second),
            stored(&full)
        );

        let source_ts = vec![(ts1, "ts1"), (ts2.display().to_string(), "ts2")];
        let records = [
            full.record.clone(),
            first.record.clone(),
            second.record.clone(),
        ];
        for (i, point) in [&full, &first, &second].into_iter().enumerate() {
            check_point(
                &ctx,
                major,
                &repo,
                scratch.path(),
                &records[..=i],
                point,
                &source_ts,
            );
        }
        let _ = s(&repo);
    }
}
