//! `pgstream receive-wal` when the connection goes away, end to end through the binary:
//! - the server restarts (`pg_ctl restart`, and stop … start): each reconnect attempt is
//!   logged, streaming resumes, the archive equals the server's WAL with no gap, SIGTERM
//!   still exits 0;
//! - the connection is cut mid-segment by a TCP proxy that then refuses connections for a
//!   while: it reconnects when the proxy accepts again and resumes the partial segment at its
//!   last durable byte (no gap, no duplicate);
//! - the server is not up yet when it starts: it retries with backoff (a service may start
//!   before its server), while `--no-reconnect` exits 3 at once;
//! - its slot is invalidated (max_slot_wal_keep_size) while it is stopped: exit 4, naming the
//!   missing position and segment and the cost for point-in-time recovery.
//!
//! Restarts, the proxy and the first connection do not depend on the server version: they run
//! on the newest major of PGSTREAM_TEST_MAJORS. Slot invalidation does (READ_REPLICATION_SLOT
//! on 15+, a removed-segment error inside COPY before): it runs on every major.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backup_core::receive::start::ArchiveState;
use backup_core::wal::{SegmentName, WalSegmentSize};
use integration::{cluster, scratch_dir, test_majors, Cluster};
use pgwire_repl::{Lsn, TimelineId};
use support::newest_major;
use support::proxy::Proxy;
use support::receiver::{wait_caught_up, wait_for};
use support::wal::{archived, current_segment, partial, seg_size, write_wal, Keyed};

const PASSPHRASE: &str = "receive-wal reconnect test passphrase";
const KEY: Keyed = Keyed(PASSPHRASE);

/// Checks the archive against the server's own WAL: complete segments contiguous from `first`
/// (or earlier) and byte-equal to pg_wal's, the partial after them a prefix of the server's file. Returns
/// the complete segments.
fn assert_archive_equals_server(
    repo_dir: &Path,
    pg: &Cluster,
    first: SegmentName,
    ctx: &str,
) -> Vec<SegmentName> {
    let repo = KEY.open_repo(repo_dir);
    let state = ArchiveState::scan(repo.store().as_ref(), repo.config()).unwrap();
    let mut segs = state.complete.clone();
    segs.sort_by_key(|s| s.segno);
    // An empty archive starts at the slot's restart_lsn (15+): at `first` or before.
    assert!(
        segs.first().is_some_and(|s| s.segno <= first.segno),
        "{ctx}: archive {segs:?} should begin by {first}"
    );
    for w in segs.windows(2) {
        assert_eq!(
            w[1].segno,
            w[0].segno + 1,
            "{ctx}: gap in the archive between {} and {}",
            w[0],
            w[1]
        );
    }
    let pg_wal = pg.data_dir().join("pg_wal");
    for seg in &segs {
        let ours = archived(&repo, seg).unwrap();
        let theirs = std::fs::read(pg_wal.join(seg.to_string())).unwrap();
        assert!(ours == theirs, "{ctx}: {seg} differs from the server's");
    }
    let next = segs.last().unwrap().next();
    for (seg, _) in &state.partials {
        assert_eq!(
            *seg, next,
            "{ctx}: partial {seg} is not after the last segment"
        );
    }
    if let Some(p) = partial(&repo, &next) {
        let theirs = std::fs::read(pg_wal.join(next.to_string())).unwrap();
        assert!(
            theirs.starts_with(&p),
            "{ctx}: the partial {next} differs from the server's"
        );
    }
    segs
}

/// The version-independent tests' setup: a cluster of the newest major under test, keeping
/// 512MB of WAL so the archive can be compared with pg_wal, and an initialised repository.
/// Fields in drop order: the scratch directory goes before the server, as the locals did.
struct Newest {
    scratch: tempfile::TempDir,
    pg: Cluster,
    size: WalSegmentSize,
    repo_dir: PathBuf,
    /// "PostgreSQL <major>" followed by the test's `what`.
    ctx: String,
}

fn newest_with_repo(what: &str) -> Newest {
    let major = newest_major();
    let pg = cluster(major).setting("wal_keep_size", "512MB").start();
    let size = seg_size(&pg);
    let scratch = scratch_dir();
    let repo_dir = scratch.path().join("repo");
    KEY.init_repo(&repo_dir);
    Newest {
        scratch,
        pg,
        size,
        repo_dir,
        ctx: format!("PostgreSQL {major}{what}"),
    }
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[test]
fn server_restart_and_stop_start_resume_without_gap() {
    let Newest {
        scratch,
        pg,
        size,
        repo_dir,
        ctx,
    } = newest_with_repo("");
    let slot = "restarts";
    let first = current_segment(&pg, 1, size);
    let r = KEY.start_streaming_new_slot(
        &repo_dir,
        &pg.conninfo("postgres"),
        slot,
        scratch.path().join("log"),
    );
    write_wal(&pg, 2000, 1);
    wait_caught_up(&pg, slot, &r);

    // pg_ctl restart: the walsender ends the stream at shutdown; one reconnect suffices.
    pg.restart();
    write_wal(&pg, 2000, 1);
    wait_caught_up(&pg, slot, &r);
    let log = r.log();
    assert!(
        count(&log, "reconnecting in") >= 1 && log.contains("the server shut down"),
        "{ctx}: the restart is logged:\n{log}"
    );

    // Stopped for a while: every attempt is logged, with a growing delay.
    pg.stop();
    std::thread::sleep(Duration::from_secs(4));
    let log = r.log();
    assert!(
        log.contains("(attempt 1)") && log.contains("(attempt 2)"),
        "{ctx}: each attempt is logged:\n{log}"
    );
    pg.start();
    write_wal(&pg, 2000, 2);
    let target = wait_caught_up(&pg, slot, &r);
    assert!(
        count(&r.log(), "resuming partial segment") >= 2,
        "{ctx}: resumed after each outage:\n{}",
        r.log()
    );
    assert_eq!(r.terminate(), 0, "{ctx}: SIGTERM after reconnects");

    let segs = assert_archive_equals_server(&repo_dir, &pg, first, &ctx);
    assert!(
        segs.last().unwrap().end_lsn() <= target && segs.len() >= 4,
        "{ctx}: {segs:?} up to {target}"
    );
}

#[test]
fn connection_cut_mid_segment_resumes_the_partial() {
    let Newest {
        scratch,
        pg,
        size,
        repo_dir,
        ctx,
    } = newest_with_repo(" connection cut");
    let proxy = Proxy::start(pg.port());
    let via_proxy = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
        proxy.port
    );
    let slot = "cut";
    // Start on a fresh segment, so the cut is well inside the one being received.
    pg.psql("SELECT pg_switch_wal()");
    let first = current_segment(&pg, 1, size);
    let r = KEY.start_streaming_new_slot(&repo_dir, &via_proxy, slot, scratch.path().join("log"));
    write_wal(&pg, 5000, 0);
    let before = wait_caught_up(&pg, slot, &r);
    let seg = SegmentName::from_lsn(TimelineId(1), before, size);
    assert_eq!(seg, first, "{ctx}: still in the first segment");
    let held = partial(&KEY.open_repo(&repo_dir), &seg).expect("a partial segment");
    let offset = before.0 - seg.start_lsn().0;
    assert!(
        held.len() as u64 >= offset && offset > 0 && offset < size.bytes() / 2,
        "{ctx}: {} bytes held, {offset} expected",
        held.len()
    );
    assert_eq!(proxy.connections(), 1, "{ctx}");

    proxy.refuse(true);
    proxy.cut();
    // WAL written while receive-wal is away comes after the reconnect.
    write_wal(&pg, 5000, 0);
    std::thread::sleep(Duration::from_secs(4));
    let log = r.log();
    assert!(
        log.contains("connection to the server was lost") && log.contains("(attempt 2)"),
        "{ctx}: the loss and each failed attempt are logged:\n{log}"
    );
    assert_eq!(proxy.connections(), 1, "{ctx}: nothing got through");

    proxy.refuse(false);
    wait_caught_up(&pg, slot, &r);
    let log = r.log();
    assert!(
        log.contains(&format!("resuming partial segment {seg} at")),
        "{ctx}: the partial is resumed:\n{log}"
    );
    assert!(proxy.connections() >= 2, "{ctx}: reconnected via the proxy");
    write_wal(&pg, 1000, 2);
    wait_caught_up(&pg, slot, &r);
    assert_eq!(r.terminate(), 0, "{ctx}: SIGTERM");

    // The segment cut in the middle is whole and equal to the server's: no gap, no duplicate.
    let segs = assert_archive_equals_server(&repo_dir, &pg, first, &ctx);
    assert!(segs.len() >= 2, "{ctx}: {segs:?}");
}

#[test]
fn first_connection_is_retried_unless_no_reconnect() {
    let Newest {
        scratch,
        pg,
        size,
        repo_dir,
        ctx,
    } = newest_with_repo(" not up yet");
    pg.stop();
    let source = pg.conninfo("postgres");

    // --no-reconnect: exit 3 (the server could not be reached) at once.
    let started = Instant::now();
    let run = KEY.pgstream(&[
        "receive-wal",
        "--repo",
        repo_dir.to_str().unwrap(),
        "--source",
        &source,
        "--no-reconnect",
    ]);
    assert_eq!(run.code, 3, "{ctx}: {run:?}");
    assert!(
        run.stderr.contains("could not connect") && !run.stderr.contains("reconnecting"),
        "{ctx}: {run:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{ctx}");

    // SIGTERM while waiting for the server: exit 0, nothing in the archive.
    let mut r = KEY.start_receiver(&repo_dir, &source, &[], scratch.path().join("log0"));
    wait_for(
        "the first attempt fails",
        30,
        || r.log().contains("(attempt 1)"),
        || r.log(),
    );
    assert!(r.is_running(), "{ctx}: it waits for the server");
    let log = scratch.path().join("log0");
    assert_eq!(r.terminate(), 0, "{ctx}: SIGTERM while waiting");
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains("stopped before it could start streaming"),
        "{ctx}: {log}"
    );
    assert_eq!(scan_archive(&repo_dir), ArchiveState::default(), "{ctx}");

    // By default it retries with backoff, logging each attempt, until the server is up.
    let slot = "late";
    let mut r = KEY.start_receiver(
        &repo_dir,
        &source,
        &["--slot", slot, "--create-slot"],
        scratch.path().join("log"),
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(r.is_running(), "{ctx}: exited:\n{}", r.log());
    let log = r.log();
    assert!(
        log.contains("could not connect")
            && log.contains("(attempt 1)")
            && log.contains("(attempt 2)"),
        "{ctx}: each attempt is logged:\n{log}"
    );
    pg.start();
    r.wait_streaming();
    let first = current_segment(&pg, 1, size);
    write_wal(&pg, 2000, 1);
    wait_caught_up(&pg, slot, &r);
    assert_eq!(r.terminate(), 0, "{ctx}");
    let segs = assert_archive_equals_server(&repo_dir, &pg, first, &ctx);
    assert!(!segs.is_empty(), "{ctx}");
}

#[test]
fn invalidated_slot_is_a_clear_error() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major} slot invalidated");
        // max_slot_wal_keep_size came with 13; 16 MB keeps at most one segment for the slot.
        let pg = cluster(major)
            .setting("wal_keep_size", "0")
            .setting("max_slot_wal_keep_size", "16MB")
            .start();
        let size = seg_size(&pg);
        let scratch = scratch_dir();
        let repo_dir = scratch.path().join("repo");
        KEY.init_repo(&repo_dir);
        let slot = "doomed";
        let r = KEY.start_streaming_new_slot(
            &repo_dir,
            &pg.conninfo("postgres"),
            slot,
            scratch.path().join("log"),
        );
        write_wal(&pg, 2000, 0);
        let reached = wait_caught_up(&pg, slot, &r);
        assert_eq!(r.terminate(), 0, "{ctx}");
        let held = scan_archive(&repo_dir);
        let resume = SegmentName::from_lsn(TimelineId(1), reached, size);
        assert_eq!(
            held.partials.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![resume],
            "{ctx}"
        );

        let held_end = Lsn(resume.start_lsn().0
            + partial(&KEY.open_repo(&repo_dir), &resume).unwrap().len() as u64);
        assert!(held_end >= reached, "{ctx}");

        // While it is stopped, the server moves on and gives up the slot's WAL.
        let mut lost = false;
        for _ in 0..10 {
            write_wal(&pg, 500, 1);
            pg.psql("CHECKPOINT");
            if pg.psql(&format!(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot}'"
            )) == "lost"
            {
                lost = true;
                break;
            }
        }
        assert!(lost, "{ctx}: the slot was not invalidated");
        assert!(
            !pg.data_dir()
                .join("pg_wal")
                .join(resume.to_string())
                .exists(),
            "{ctx}: {resume} is still on the server"
        );

        let run = KEY.pgstream(&[
            "receive-wal",
            "--repo",
            repo_dir.to_str().unwrap(),
            "--source",
            &pg.conninfo("postgres"),
            "--slot",
            slot,
        ]);
        assert_eq!(run.code, 4, "{ctx}: {run:?}");
        // 15+ sees the invalid slot in READ_REPLICATION_SLOT; 13 and 14 learn it from the
        // removed segment.
        let why = if major >= 15 {
            "was invalidated"
        } else {
            "WAL is missing"
        };
        assert!(run.stderr.contains(why), "{ctx}: {run:?}");
        assert!(
            run.stderr.contains(&resume.to_string()),
            "{ctx}: the error names the first missing segment {resume}: {run:?}"
        );
        assert!(
            run.stderr.contains("point-in-time recovery")
                && run.stderr.contains(&format!("cannot go past {held_end}")),
            "{ctx}: {run:?}"
        );
        assert!(
            !run.stderr.contains("reconnecting"),
            "{ctx}: not retried: {run:?}"
        );
        // Nothing skipped: the archive still ends with the same partial.
        let after = scan_archive(&repo_dir);
        assert_eq!(after.complete, held.complete, "{ctx}");
        assert_eq!(
            after.partials.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![resume],
            "{ctx}"
        );
    }
}

/// What the archive holds (complete segments, receive-wal partials).
fn scan_archive(repo_dir: &std::path::Path) -> ArchiveState {
    let repo = KEY.open_repo(repo_dir);
    ArchiveState::scan(repo.store().as_ref(), repo.config()).unwrap()
}
