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

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backup_core::receive::start::ArchiveState;
use backup_core::receive::{partial_file, PartialReader};
use backup_core::wal::{SegmentName, WalSegmentSize};
use backup_core::{layout, Repository, Secret};
use integration::{cluster, scratch_dir, test_majors, Cluster};
use pgwire_repl::{Lsn, TimelineId};

const PASSPHRASE: &str = "receive-wal reconnect test passphrase";

fn newest_major() -> u32 {
    *test_majors().last().unwrap()
}

fn pgstream(args: &[&str]) -> support::Run {
    support::pgstream(args, Some(PASSPHRASE))
}

fn init_repo(repo: &Path) {
    let run = pgstream(&["init", "--repo", repo.to_str().unwrap()]);
    assert_eq!(run.code, 0, "init: {run:?}");
}

/// A running `pgstream receive-wal`, its stderr in a log file.
struct Receiver {
    child: Child,
    log: PathBuf,
}

impl Receiver {
    fn start(repo: &Path, conninfo: &str, extra: &[&str], log: PathBuf) -> Receiver {
        let mut args = vec![
            "receive-wal",
            "--repo",
            repo.to_str().unwrap(),
            "--source",
            conninfo,
            "--status-interval",
            "1",
        ];
        args.extend_from_slice(extra);
        let mut cmd = support::pgstream_command(&args, Some(PASSPHRASE));
        let file = std::fs::File::create(&log).unwrap();
        cmd.stdout(Stdio::null()).stderr(file);
        Receiver {
            child: cmd.spawn().expect("spawning receive-wal"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until it streams: without a slot position (before 15) it starts at the server's
    /// current segment, so WAL written before then would not be received.
    fn wait_streaming(&self) {
        wait_for(
            "receive-wal streams",
            30,
            || self.log().contains("streaming from"),
            || self.log(),
        );
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM and waits for the exit code.
    fn terminate(mut self) -> i32 {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "receive-wal did not stop on SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open_repo(repo: &Path) -> Repository {
    Repository::open(repo, Some(&Secret::new(PASSPHRASE.as_bytes().to_vec()))).unwrap()
}

fn seg_size(pg: &Cluster) -> WalSegmentSize {
    let bytes: u64 = pg
        .psql("SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'")
        .parse()
        .unwrap();
    WalSegmentSize::new(bytes).unwrap()
}

fn lsn(text: &str) -> Lsn {
    text.trim().parse().unwrap()
}

fn current_segment(pg: &Cluster, size: WalSegmentSize) -> SegmentName {
    SegmentName::from_lsn(
        TimelineId(1),
        lsn(&pg.psql("SELECT pg_current_wal_lsn()")),
        size,
    )
}

fn archived(repo: &Repository, seg: &SegmentName) -> Option<Vec<u8>> {
    let name = layout::wal_segment_file(seg, repo.codec());
    if !repo.resolve(&name).unwrap().exists() {
        return None;
    }
    let mut out = Vec::new();
    repo.open_file(&name)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    Some(out)
}

/// The valid bytes of receive-wal's partial for `seg`, if any.
fn partial(repo: &Repository, seg: &SegmentName) -> Option<Vec<u8>> {
    let name = partial_file(seg, true);
    let path = repo.resolve(&name).unwrap();
    if !path.exists() {
        return None;
    }
    let mut out = Vec::new();
    PartialReader::open(&path, &name, repo.codec())
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    Some(out)
}

fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "timed out waiting until {what}; receive-wal log:\n{}",
        log()
    );
}

/// What the server was told is durably received through `slot`.
fn slot_flush(pg: &Cluster, slot: &str) -> Lsn {
    let v = pg.psql(&format!(
        "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
    ));
    if v.is_empty() {
        Lsn(0)
    } else {
        lsn(&v)
    }
}

/// Waits until receive-wal has reported everything the server flushed so far as durable.
fn wait_caught_up(pg: &Cluster, slot: &str, r: &Receiver) -> Lsn {
    let target = lsn(&pg.psql("SELECT pg_current_wal_flush_lsn()"));
    wait_for(
        &format!("receive-wal reports {target} flushed"),
        30,
        || slot_flush(pg, slot) >= target,
        || r.log(),
    );
    target
}

fn write_wal(pg: &Cluster, rows: u32, switches: usize) {
    pg.psql(&format!(
        "CREATE TABLE IF NOT EXISTS t (id serial, note text);
         INSERT INTO t (note) SELECT 'row ' || g FROM generate_series(1, {rows}) g;"
    ));
    for _ in 0..switches {
        pg.psql("INSERT INTO t (note) SELECT 'more' FROM generate_series(1, 500); SELECT pg_switch_wal();");
    }
}

/// Checks the archive against the server's own WAL: complete segments contiguous from `first`
/// (or earlier) and byte-equal to pg_wal's, the partial after them a prefix of the server's file. Returns
/// the complete segments.
fn assert_archive_equals_server(
    repo_dir: &Path,
    pg: &Cluster,
    first: SegmentName,
    ctx: &str,
) -> Vec<SegmentName> {
    let size = first.seg_size;
    let repo = open_repo(repo_dir);
    let state = ArchiveState::scan(repo_dir, size).unwrap();
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

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[test]
fn server_restart_and_stop_start_resume_without_gap() {
    let major = newest_major();
    let ctx = format!("PostgreSQL {major}");
    let pg = cluster(major).setting("wal_keep_size", "512MB").start();
    let size = seg_size(&pg);
    let scratch = scratch_dir();
    let repo_dir = scratch.path().join("repo");
    init_repo(&repo_dir);
    let slot = "restarts";
    let first = current_segment(&pg, size);
    let r = Receiver::start(
        &repo_dir,
        &pg.conninfo("postgres"),
        &["--slot", slot, "--create-slot"],
        scratch.path().join("log"),
    );
    r.wait_streaming();
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

/// A TCP proxy on 127.0.0.1 in front of a server port: `cut` drops every connection through
/// it, `refuse` makes it close new connections at once (the server "unreachable").
struct Proxy {
    port: u16,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    refusing: Arc<AtomicBool>,
    accepted: Arc<Mutex<usize>>,
}

impl Proxy {
    fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let port = listener.local_addr().unwrap().port();
        let sockets: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let refusing: Arc<AtomicBool> = Arc::default();
        let accepted: Arc<Mutex<usize>> = Arc::default();
        let (held, refuse, n) = (
            Arc::clone(&sockets),
            Arc::clone(&refusing),
            Arc::clone(&accepted),
        );
        // The accept thread lives as long as the test process; it only forwards.
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if refuse.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                *n.lock().unwrap() += 1;
                let mut list = held.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy {
            port,
            sockets,
            refusing,
            accepted,
        }
    }

    fn connections(&self) -> usize {
        *self.accepted.lock().unwrap()
    }

    fn refuse(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }

    /// Shuts both directions of every proxied connection down, on both sides.
    fn cut(&self) {
        for s in self.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

#[test]
fn connection_cut_mid_segment_resumes_the_partial() {
    let major = newest_major();
    let ctx = format!("PostgreSQL {major} connection cut");
    let pg = cluster(major).setting("wal_keep_size", "512MB").start();
    let size = seg_size(&pg);
    let scratch = scratch_dir();
    let repo_dir = scratch.path().join("repo");
    init_repo(&repo_dir);
    let proxy = Proxy::start(pg.port());
    let via_proxy = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
        proxy.port
    );
    let slot = "cut";
    // Start on a fresh segment, so the cut is well inside the one being received.
    pg.psql("SELECT pg_switch_wal()");
    let first = current_segment(&pg, size);
    let r = Receiver::start(
        &repo_dir,
        &via_proxy,
        &["--slot", slot, "--create-slot"],
        scratch.path().join("log"),
    );
    r.wait_streaming();
    write_wal(&pg, 5000, 0);
    let before = wait_caught_up(&pg, slot, &r);
    let seg = SegmentName::from_lsn(TimelineId(1), before, size);
    assert_eq!(seg, first, "{ctx}: still in the first segment");
    let held = partial(&open_repo(&repo_dir), &seg).expect("a partial segment");
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
    let major = newest_major();
    let ctx = format!("PostgreSQL {major} not up yet");
    let pg = cluster(major).setting("wal_keep_size", "512MB").start();
    let size = seg_size(&pg);
    pg.stop();
    let scratch = scratch_dir();
    let repo_dir = scratch.path().join("repo");
    init_repo(&repo_dir);
    let source = pg.conninfo("postgres");

    // --no-reconnect: exit 3 (the server could not be reached) at once.
    let started = Instant::now();
    let run = pgstream(&[
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
    let mut r = Receiver::start(&repo_dir, &source, &[], scratch.path().join("log0"));
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
    assert_eq!(
        ArchiveState::scan(&repo_dir, size).unwrap(),
        ArchiveState::default(),
        "{ctx}"
    );

    // By default it retries with backoff, logging each attempt, until the server is up.
    let slot = "late";
    let mut r = Receiver::start(
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
    let first = current_segment(&pg, size);
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
        init_repo(&repo_dir);
        let slot = "doomed";
        let r = Receiver::start(
            &repo_dir,
            &pg.conninfo("postgres"),
            &["--slot", slot, "--create-slot"],
            scratch.path().join("log"),
        );
        r.wait_streaming();
        write_wal(&pg, 2000, 0);
        let reached = wait_caught_up(&pg, slot, &r);
        assert_eq!(r.terminate(), 0, "{ctx}");
        let held = ArchiveState::scan(&repo_dir, size).unwrap();
        let resume = SegmentName::from_lsn(TimelineId(1), reached, size);
        assert_eq!(
            held.partials.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![resume],
            "{ctx}"
        );

        let held_end =
            Lsn(resume.start_lsn().0
                + partial(&open_repo(&repo_dir), &resume).unwrap().len() as u64);
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

        let run = pgstream(&[
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
        let after = ArchiveState::scan(&repo_dir, size).unwrap();
        assert_eq!(after.complete, held.complete, "{ctx}");
        assert_eq!(
            after.partials.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![resume],
            "{ctx}"
        );
    }
}
