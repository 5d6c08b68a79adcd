//! `pgstream receive-wal` at every failpoint on its way (docs/RELIABILITY.md): the repository
//! lease, the partial segment's creation, writes, fsyncs (EIO) and publication, storing a
//! completed segment and removing its partial, and the protocol (START_REPLICATION, status
//! updates). An injected I/O failure ends it with exit 7 naming the file; a lost connection
//! is reconnected; a stop is killed -9. Afterwards every segment in the archive holds exactly
//! the server's bytes, the partial holds a prefix of them, the backup verifies, and the next
//! run catches up and removes what the failed one left. The newest major only, one cluster
//! (1 MB WAL segments, all kept by the server for comparison) for every case.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use backup_core::receive::start::ArchiveState;
use integration::{cluster, scratch_dir, Cluster};
use support::faults::{
    case, expire_removes_abandoned_temporaries, run_case, temporaries, verify_clean, Case, Faulted,
    Outcome,
};
use support::receiver::{wait_caught_up, Receiver};
use support::wal::{archived, partial, Keyed};
use support::{newest_major, ok, s, wait_until};

const KEY: Keyed = Keyed("receive-wal failpoints passphrase");
const SLOT: &str = "fp";

use Outcome::{Fails, Killed, Survives};

/// In the order a receiver meets them.
const CASES: &[Case] = &[
    // The repository's receive-wal lease, before anything else.
    case("store.lease=return", Fails(7, "failpoint store.lease")),
    // The partial segment: created and published, written, fsynced.
    case("store.publish=return", Fails(7, "failpoint store.publish")),
    case(
        "store.write=return(ENOSPC)",
        Fails(7, "No space left on device"),
    ),
    case(
        "store.sync=return(EIO)",
        Fails(
            7,
            "Input/output error (os error 5), injected at failpoint store.sync",
        ),
    ),
    case("store.sync=stop", Killed),
    // A completed segment stored into the archive: a full disk there is local I/O (exit 7),
    // not a repository problem.
    case(
        "store.commit=return(ENOSPC)",
        Fails(
            7,
            "No space left on device (os error 28), injected at failpoint store.commit",
        ),
    ),
    case("store.commit=stop", Killed),
    // Stored, its partial not yet removed.
    case("receive.segment-stored=stop", Killed),
    case("store.delete=return", Fails(7, "failpoint store.delete")),
    // The next segment's partial, after a completed one.
    case(
        "store.publish=1*off->return(EIO)",
        Fails(7, "failpoint store.publish"),
    ),
    // Protocol: the connection lost at START_REPLICATION and at a status update.
    case("receive.start-replication=1*return", Survives),
    case("receive.status=1*return", Survives),
];

fn receive_args<'a>(repo: &'a Path, conninfo: &'a str) -> Vec<&'a str> {
    vec![
        "receive-wal",
        "--repo",
        s(repo),
        "--source",
        conninfo,
        "--slot",
        SLOT,
        "--create-slot",
        "--status-interval",
        "1",
    ]
}

/// Some WAL, and a switch so its segment completes.
fn switch(pg: &Cluster) {
    pg.psql(
        "INSERT INTO t (note) SELECT 'row ' || g FROM generate_series(1, 2000) g;
         SELECT pg_switch_wal();",
    );
}

/// The archive holds only the server's bytes: every complete segment equals the server's
/// file, and every partial holds a prefix of it.
fn assert_archive_true(repo_dir: &Path, pg: &Cluster, ctx: &str) {
    let repo = KEY.open_repo(repo_dir);
    let state = ArchiveState::scan(repo.store().as_ref(), repo.config()).unwrap();
    let pg_wal = pg.data_dir().join("pg_wal");
    for seg in &state.complete {
        let Ok(server) = std::fs::read(pg_wal.join(seg.to_string())) else {
            continue; // older than the server keeps
        };
        let ours = archived(&repo, seg).unwrap();
        assert!(
            ours == server,
            "{ctx}: archived {seg} differs from the server's"
        );
    }
    for (seg, _) in &state.partials {
        let server = std::fs::read(pg_wal.join(seg.to_string())).unwrap();
        let ours = partial(&repo, seg).unwrap();
        assert!(
            server.starts_with(&ours),
            "{ctx}: the partial of {seg} ({} bytes) is not a prefix of the server's",
            ours.len()
        );
    }
}

/// The receiver catches up and stops cleanly; afterwards the archive is true, holds no
/// partial of a segment it has whole, and no temporary file of the receiver's.
fn next_run_recovers(repo: &Path, pg: &Cluster, log: std::path::PathBuf, ctx: &str) {
    let r = Receiver::start(
        repo,
        &pg.conninfo("postgres"),
        KEY.0,
        &["--slot", SLOT, "--create-slot"],
        log,
    );
    switch(pg);
    wait_caught_up(pg, SLOT, &r);
    let code = r.terminate();
    assert_eq!(code, 0, "{ctx}: the next run stopped with {code}");
    assert_archive_true(repo, pg, ctx);
    let opened = KEY.open_repo(repo);
    let state = ArchiveState::scan(opened.store().as_ref(), opened.config()).unwrap();
    assert_eq!(
        state.stale_partials(),
        Vec::<String>::new(),
        "{ctx}: a partial of an archived segment is left"
    );
    let leftovers: Vec<_> = temporaries(&repo.join("wal"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".partial.recv"))
        .collect();
    assert_eq!(leftovers, Vec::<std::path::PathBuf>::new(), "{ctx}");
    verify_clean(repo, KEY.0, Some("latest"), ctx);
}

#[test]
fn receive_wal_fails_cleanly_at_every_failpoint_and_the_next_run_recovers() {
    let started = Instant::now();
    let pg = cluster(newest_major())
        .initdb_arg("--wal-segsize=1")
        .setting("wal_keep_size", "512MB")
        .start();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    KEY.init_repo(&repo);
    pg.psql("CREATE TABLE t (id serial, note text)");
    let conninfo = pg.conninfo("postgres");
    ok(
        KEY.pgstream(&[
            "base",
            "--repo",
            s(&repo),
            "--source",
            &conninfo,
            "--no-progress",
        ]),
        "base",
    );
    // The slot and a first archived segment, so every case starts from a receiver's state.
    next_run_recovers(&repo, &pg, scratch.path().join("first.log"), "first run");
    for (i, c) in CASES.iter().enumerate() {
        let case_started = Instant::now();
        let ctx = format!("PostgreSQL {} {}", pg.major(), c.failpoints);
        let args = receive_args(&repo, &conninfo);
        if c.outcome == Survives {
            // A lost connection: it reconnects, and WAL keeps arriving.
            let mut p = Faulted::spawn(&args, Some(KEY.0), c.failpoints, &[]);
            let name = c.failpoints.split('=').next().unwrap();
            wait_until(&format!("{ctx}: the failpoint fires"), || {
                p.stderr().contains(&format!("failpoint {name}"))
            });
            assert!(p.stderr().contains("reconnecting"), "{ctx}: {}", p.stderr());
            let before = support::wal::slot_flush(&pg, SLOT);
            switch(&pg);
            let target = support::wal::lsn(&pg.psql("SELECT pg_current_wal_flush_lsn()"));
            let deadline = Instant::now() + Duration::from_secs(60);
            while support::wal::slot_flush(&pg, SLOT) < target {
                assert!(
                    p.is_running() && Instant::now() < deadline,
                    "{ctx}: no progress after the reconnect (from {before}): {}",
                    p.stderr()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            p.signal("TERM");
            let run = p.wait(30);
            assert_eq!(run.code, 0, "{ctx}: {run:?}");
        } else {
            run_case(c, &args, Some(KEY.0), &[], &ctx, || switch(&pg));
        }
        assert_archive_true(&repo, &pg, &ctx);
        next_run_recovers(
            &repo,
            &pg,
            scratch.path().join(format!("case{i}.log")),
            &ctx,
        );
        eprintln!("{ctx}: {:.1} s", case_started.elapsed().as_secs_f64());
    }
    // Every segment the server wrote since the base is in the archive, whole.
    let repo_opened = KEY.open_repo(&repo);
    let state = ArchiveState::scan(repo_opened.store().as_ref(), repo_opened.config()).unwrap();
    let mut segs = state.complete.clone();
    segs.sort_by_key(|s| s.segno);
    for pair in segs.windows(2) {
        assert_eq!(pair[0].segno + 1, pair[1].segno, "a gap after {}", pair[0]);
    }
    assert!(segs.len() > CASES.len(), "{} segments", segs.len());
    // The segment being stored when a receiver was killed left its temporary file; expire
    // removes it (and no receiver's partial was left, as next_run_recovers checked).
    let removed = expire_removes_abandoned_temporaries(&repo, KEY.0, "after the cases");
    assert!(removed > 0, "the kills left no temporary file to remove?");
    eprintln!(
        "{} receive-wal failpoint cases in {:.1} s",
        CASES.len(),
        started.elapsed().as_secs_f64()
    );
}
