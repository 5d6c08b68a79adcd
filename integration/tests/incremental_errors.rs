//! Every way an incremental backup cannot be taken says why and what to do, with its exit
//! code, and leaves nothing behind: summarize_wal off (and `check --incremental` printing the
//! fix), WAL summaries that do not reach back to the parent (and `--full-every` taking a full
//! backup instead), a parent that is missing or expired, on another timeline, of another
//! cluster, and a server older than 17.

mod support;

use support::incremental::*;
use support::{init_repo, pgstream, s, wait_for_server, Run};

fn base_run(repo: &std::path::Path, pg: &integration::Cluster, args: &[&str]) -> Run {
    let conninfo = pg.conninfo("postgres");
    let mut all = vec![
        "base",
        "--repo",
        s(repo),
        "--source",
        &conninfo,
        "--no-progress",
    ];
    all.extend_from_slice(args);
    pgstream(&all, Some(PASSPHRASE))
}

fn backups(repo: &std::path::Path) -> usize {
    std::fs::read_dir(repo.join("backups"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("backup.json").exists())
                .count()
        })
        .unwrap_or(0)
}

fn check(pg: &integration::Cluster) -> Run {
    pgstream(
        &[
            "check",
            "--source",
            &pg.conninfo("postgres"),
            "--incremental",
        ],
        None,
    )
}

#[test]
fn summaries_off_then_too_short_then_parent_missing_or_expired() {
    for major in incremental_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = integration::cluster(major).start();
        let scratch = integration::scratch_dir();
        let repo = scratch.path().join("repo");
        init_repo(&repo, PASSPHRASE);
        pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g");
        let first = base(&repo, &pg, &[]);

        // summarize_wal is off by default: refused before the server does any work.
        let off = base_run(&repo, &pg, &["--incremental"]);
        assert_eq!(off.code, 4, "{ctx}: {off:?}");
        assert!(
            off.stderr.contains("summarize_wal = off")
                && off.stderr.contains("ALTER SYSTEM SET summarize_wal = on"),
            "{ctx}: {off:?}"
        );
        let c = check(&pg);
        assert_eq!(c.code, 10, "{ctx}: {c:?}");
        assert!(
            c.stdout.contains("PROBLEM  summarize_wal")
                && c.stdout.contains("ALTER SYSTEM SET summarize_wal = on;")
                && c.stdout.contains("SELECT pg_reload_conf();"),
            "{ctx}: {c:?}"
        );

        // Turned on once the first backup's WAL is gone from pg_wal (the summarizer starts
        // from the oldest WAL the server still has): summaries cannot reach back to it.
        let first_segment = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
        for _ in 0..4 {
            pg.psql(
                "INSERT INTO t SELECT generate_series(1, 10); SELECT pg_switch_wal(); CHECKPOINT;",
            );
        }
        let oldest = pg.psql("SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'");
        assert!(
            oldest > first_segment,
            "{ctx}: {first_segment} is still in pg_wal ({oldest})"
        );
        pg.psql("ALTER SYSTEM SET summarize_wal = on");
        pg.psql("SELECT pg_reload_conf()");
        wait_for_server(&pg, "the WAL summarizer runs", || {
            pg.psql("SELECT summarized_lsn > '0/0' FROM pg_get_wal_summarizer_state()") == "t"
        });
        settle(&pg);
        let short = base_run(&repo, &pg, &["--incremental"]);
        assert_eq!(short.code, 4, "{ctx}: {short:?}");
        assert!(
            short.stderr.contains("do not reach back to backup")
                && short.stderr.contains(first["id"].as_str().unwrap())
                && short.stderr.contains("take a full backup"),
            "{ctx}: {short:?}"
        );
        assert_eq!(backups(&repo), 1, "{ctx}: a refused backup left something");
        // The schedule policy takes a full backup instead, and says why.
        let policy = base_run(&repo, &pg, &["--full-every", "7d", "--json"]);
        assert_eq!(policy.code, 0, "{ctx}: {policy:?}");
        assert!(
            policy.stderr.contains("taking a full backup instead"),
            "{ctx}: {policy:?}"
        );
        let full: serde_json::Value = serde_json::from_str(&policy.stdout).unwrap();
        assert!(full["incremental"].is_null(), "{ctx}: {full}");
        let c = check(&pg);
        assert_eq!(c.code, 0, "{ctx}: {c:?}");
        assert!(
            c.stdout.contains("OK       summarize_wal: on"),
            "{ctx}: {c:?}"
        );

        // Now the policy takes an incremental backup of it, until its full backup is too old.
        pg.psql("INSERT INTO t SELECT generate_series(1, 100)");
        settle(&pg);
        let inc = base(&repo, &pg, &["--full-every", "7d"]);
        assert_eq!(inc["incremental"]["parent"], full["id"], "{ctx}: {inc}");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let again = base(&repo, &pg, &["--full-every", "1s"]);
        assert!(again["incremental"].is_null(), "{ctx}: {again}");

        // A parent that does not exist.
        let missing = base_run(&repo, &pg, &["--incremental", "--from", "20000101T000000Z"]);
        assert_eq!(missing.code, 5, "{ctx}: {missing:?}");
        assert!(
            missing
                .stderr
                .contains("20000101T000000Z is not in the repository")
                && missing.stderr.contains("--from"),
            "{ctx}: {missing:?}"
        );
        // A parent whose own parent is gone (deleted by hand, or by an expire that did not
        // know about chains): nothing can build on it, and it cannot be restored.
        let inc_id = inc["id"].as_str().unwrap();
        let full_id = full["id"].as_str().unwrap();
        std::fs::remove_dir_all(repo.join("backups").join(full_id)).unwrap();
        let broken = base_run(&repo, &pg, &["--incremental", "--from", inc_id]);
        assert_eq!(broken.code, 5, "{ctx}: {broken:?}");
        assert!(
            broken.stderr.contains(full_id) && broken.stderr.contains("take a new full backup"),
            "{ctx}: {broken:?}"
        );
        let target = scratch.path().join("restored");
        let restore = pgstream(
            &[
                "restore",
                "--repo",
                s(&repo),
                "--to",
                s(&target),
                "--backup",
                inc_id,
            ],
            Some(PASSPHRASE),
        );
        assert_eq!(restore.code, 5, "{ctx}: {restore:?}");
        assert!(restore.stderr.contains(full_id), "{ctx}: {restore:?}");
        let listed = pgstream(&["list", "--repo", s(&repo)], Some(PASSPHRASE));
        assert!(listed.stdout.contains("BROKEN"), "{ctx}: {listed:?}");
        let verify = pgstream(
            &["verify", "--repo", s(&repo), "--backup", inc_id],
            Some(PASSPHRASE),
        );
        assert_eq!(verify.code, 6, "{ctx}: {verify:?}");
        assert!(verify.stdout.contains(full_id), "{ctx}: {verify:?}");
    }
}

#[test]
fn server_before_17_is_refused_and_check_says_so() {
    let Some(&major) = integration::test_majors().iter().find(|&&m| m < 17) else {
        eprintln!("note: no major before 17 under test; the refusal is checked against PostgreSQL 16 by the fake walsender tests");
        return;
    };
    let pg = integration::cluster(major).start();
    let scratch = integration::scratch_dir();
    let repo = scratch.path().join("repo");
    init_repo(&repo, PASSPHRASE);
    base(&repo, &pg, &[]);
    for args in [&["--incremental"][..], &["--full-every", "7d"]] {
        let run = base_run(&repo, &pg, args);
        assert_eq!(run.code, 4, "PostgreSQL {major} {args:?}: {run:?}");
        assert!(run.stderr.contains("need PostgreSQL 17"), "{run:?}");
    }
    let c = check(&pg);
    assert_eq!(c.code, 10, "{c:?}");
    assert!(c.stdout.contains("PROBLEM  incremental backups"), "{c:?}");
    assert_eq!(backups(&repo), 1);
}

#[test]
fn parent_on_another_timeline_or_of_another_cluster_is_refused() {
    let Some(&major) = incremental_majors().last() else {
        return;
    };
    let ctx = format!("PostgreSQL {major}");
    let pg = summarizing(major).start();
    let scratch = integration::scratch_dir();
    let repo = scratch.path().join("repo");
    init_repo(&repo, PASSPHRASE);
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g");
    let first = base(&repo, &pg, &[]);
    pg.psql("INSERT INTO t SELECT generate_series(1, 100)");
    settle(&pg);
    let second = base(&repo, &pg, &[]);
    // A copy of the server as it was at the first backup, promoted: timeline 2 forks before
    // the second backup ended, so the second is not in its history; the first is.
    let dir = scratch.path().join("promoted");
    support::ok(
        pgstream(
            &[
                "restore",
                "--repo",
                s(&repo),
                "--to",
                s(&dir),
                "--backup",
                first["id"].as_str().unwrap(),
                "--target-immediate",
                "--target-action",
                "promote",
                "--copy-wal",
            ],
            Some(PASSPHRASE),
        ),
        "restore of the first backup",
    );
    let promoted =
        support::restored::start_and_wait_promoted(summarizing(major).restored_data_dir(&dir));
    promoted.psql("INSERT INTO t SELECT generate_series(1, 100)");
    settle(&promoted);
    let second_id = second["id"].as_str().unwrap();
    let other = base_run(&repo, &promoted, &["--incremental", "--from", second_id]);
    assert_eq!(other.code, 4, "{ctx}: {other:?}");
    assert!(
        other
            .stderr
            .contains("not in the history of the server's timeline 2"),
        "{ctx}: {other:?}"
    );
    // The first backup is in the new timeline's history (and the promoted copy summarized
    // the WAL it was restored with): an incremental backup of it across the switch restores.
    let across = base(
        &repo,
        &promoted,
        &["--incremental", "--from", first["id"].as_str().unwrap()],
    );
    assert_eq!(across["start_timeline"], 2, "{ctx}: {across}");
    let target = scratch.path().join("across");
    restore(&repo, &target, across["id"].as_str().unwrap(), &[], &[]);
    verifybackup(major, &target);
    // Another cluster is refused by the repository's binding before anything else.
    let stranger = summarizing(major).start();
    let foreign = base_run(&repo, &stranger, &["--incremental"]);
    assert_eq!(foreign.code, 5, "{ctx}: {foreign:?}");
    assert!(
        foreign.stderr.contains("belongs to the cluster"),
        "{ctx}: {foreign:?}"
    );
}
