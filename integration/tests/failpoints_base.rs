//! `pgstream base` at every failpoint on its way (docs/RELIABILITY.md): each injected failure
//! ends with the documented exit code and an error naming what failed, each stop is killed -9
//! there, and afterwards nothing half-done is visible (`list` shows only complete backups,
//! `verify` is clean, no replication slot is left) and the next run completes, removing what
//! the failed one left. Failpoint behaviour does not depend on the server version: the newest
//! major only, one cluster (1 MB WAL segments) and one repository for every case.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use integration::{cluster, scratch_dir, Cluster};
use support::faults::{
    backup_dirs, case, expire_removes_abandoned_temporaries, listed_ids, run_case, temporaries,
    verify_backups_clean, verify_clean, Case, Outcome,
};
use support::wal::Keyed;
use support::{newest_major, ok, s};

const KEY: Keyed = Keyed("base failpoints passphrase");

use Outcome::{Fails, Killed};

/// In the order a backup meets them (the first case binds the repository to the cluster).
const CASES: &[Case] = &[
    // The first backup binds the repository: killed between reading and writing the config.
    case("repo.bind-cluster=stop", Killed),
    // Protocol: the connection lost as BASE_BACKUP goes out, and on the WAL stream.
    case("base.start=return", Fails(3, "failpoint base.start")),
    case(
        "base.wal-status=return",
        Fails(3, "failpoint base.wal-status"),
    ),
    // Claiming the backup id.
    case("store.lease=return", Fails(7, "failpoint store.lease")),
    case("store.delete=return", Fails(7, "failpoint store.delete")),
    // The first object committed (an archive or a WAL segment): fsync fails.
    case(
        "store.commit=return(EIO)",
        Fails(
            7,
            "Input/output error (os error 5), injected at failpoint store.commit",
        ),
    ),
    // A later commit fails and so does the cleanup: the next run removes the leftover.
    case(
        "store.commit=2*off->return(ENOSPC);store.delete=1*off->return",
        Fails(
            7,
            "No space left on device (os error 28), injected at failpoint store.commit",
        ),
    ),
    case("base.archive-stored=stop", Killed),
    case("base.manifest-stored=stop", Killed),
    case("base.wal-stored=stop", Killed),
    case("base.before-record=stop", Killed),
    // The record is the commit: writing it fails.
    case("store.put=return(EIO)", Fails(7, "failpoint store.put")),
    // Killed just after the record is durable: the backup is complete.
    case("base.after-record=stop", Killed),
];

fn base_args<'a>(repo: &'a Path, conninfo: &'a str) -> Vec<&'a str> {
    vec![
        "base",
        "--repo",
        s(repo),
        "--source",
        conninfo,
        "--no-progress",
        "--json",
    ]
}

fn slot_count(pg: &Cluster) -> String {
    pg.psql("SELECT count(*) FROM pg_replication_slots")
}

/// The backup's temporary slot is gone (the server drops it with the connection).
fn assert_no_slot_soon(pg: &Cluster, ctx: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while slot_count(pg) != "0" {
        assert!(
            Instant::now() < deadline,
            "{ctx}: a replication slot is left: {}",
            pg.psql("SELECT slot_name, active FROM pg_replication_slots")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Nothing half-done is visible: `list` shows exactly `complete`, every directory with a
/// record is one of them, the newest backup verifies (`strict`: with no gap after it either),
/// and the server holds no slot of ours.
fn assert_nothing_half_done(
    repo: &Path,
    pg: &Cluster,
    complete: &[String],
    strict: bool,
    ctx: &str,
) {
    assert_eq!(
        listed_ids(repo, KEY.0, ctx),
        complete,
        "{ctx}: list shows other backups"
    );
    for (id, has_record) in backup_dirs(repo) {
        assert!(
            !has_record || complete.contains(&id),
            "{ctx}: {id} has a record but is not listed"
        );
    }
    if strict {
        verify_clean(repo, KEY.0, Some("latest"), ctx);
    } else if !complete.is_empty() {
        verify_backups_clean(repo, KEY.0, Some("latest"), ctx);
    }
    assert_no_slot_soon(pg, ctx);
}

#[test]
fn base_fails_cleanly_at_every_failpoint_and_the_next_run_recovers() {
    let started = Instant::now();
    let pg = cluster(newest_major())
        .initdb_arg("--wal-segsize=1")
        .start();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    KEY.init_repo(&repo);
    let conninfo = pg.conninfo("postgres");
    let mut complete: Vec<String> = Vec::new();
    for c in CASES {
        let case_started = Instant::now();
        let ctx = format!("PostgreSQL {} {}", pg.major(), c.failpoints);
        pg.psql("CREATE TABLE IF NOT EXISTS t (id serial, note text); INSERT INTO t (note) VALUES ('x')");
        let run = run_case(
            c,
            &base_args(&repo, &conninfo),
            Some(KEY.0),
            &[],
            &ctx,
            || {},
        );
        if c.failpoints.starts_with("base.after-record") {
            // Killed after its commit: complete, and listed.
            let ids = listed_ids(&repo, KEY.0, &ctx);
            assert_eq!(ids.len(), complete.len() + 1, "{ctx}: {ids:?}");
            complete = ids;
        } else {
            assert_eq!(run.stdout, "", "{ctx}: a failed run printed a summary");
        }
        assert_nothing_half_done(&repo, &pg, &complete, false, &ctx);

        // The next run completes, and removes what the failed one left.
        let next = ok(
            KEY.pgstream(&base_args(&repo, &conninfo)),
            &format!("{ctx}: the next base"),
        );
        let record: serde_json::Value = serde_json::from_str(&next.stdout).unwrap();
        complete.push(record["id"].as_str().unwrap().to_string());
        // Strictly: the new backup and the WAL chain from it to the end of the archive.
        assert_nothing_half_done(&repo, &pg, &complete, true, &ctx);
        assert_eq!(
            backup_dirs(&repo),
            complete
                .iter()
                .map(|id| (id.clone(), true))
                .collect::<Vec<_>>(),
            "{ctx}: the next run left an unfinished backup behind"
        );
        assert_eq!(
            temporaries(&repo.join("backups")),
            Vec::<std::path::PathBuf>::new(),
            "{ctx}: temporary files left under backups/"
        );
        eprintln!("{ctx}: {:.1} s", case_started.elapsed().as_secs_f64());
    }
    verify_backups_clean(&repo, KEY.0, None, "all cases");
    // WAL segments being stored when a run was killed left temporary files: expire removes
    // them.
    expire_removes_abandoned_temporaries(&repo, KEY.0, "after the cases");
    assert_eq!(listed_ids(&repo, KEY.0, "after expire"), complete);
    eprintln!(
        "{} base failpoint cases in {:.1} s",
        CASES.len(),
        started.elapsed().as_secs_f64()
    );
}
