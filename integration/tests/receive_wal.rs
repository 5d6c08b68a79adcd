//! `pgstream receive-wal` end to end, through the binary, against real servers on every major:
//! - every complete segment equals, byte for byte, what pg_receivewal receives, and no
//!   repository file holds plaintext; SIGTERM and SIGINT exit 0; a restart resumes with no gap;
//! - kill -9 under pgbench load, repeated: everything the server saw reported as flushed
//!   survives, and the archive equals the server's own WAL with no gap;
//! - `--synchronous` as a synchronous standby: the server stopped with -m immediate right after
//!   commits, every committed row comes back from a base backup plus the archive;
//! - WAL removed from the server: a clear error naming the gap.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use backup_core::wal::{SegmentName, WalSegmentSize};
use integration::{client_tool, cluster, scratch_dir, test_majors, Cluster};
use pgwire_repl::Lsn;
use support::files_under;
use support::receiver::{wait_for, LogFile, Receiver};
use support::wal::{archived, lsn, partial, seg_size, Keyed};

const PASSPHRASE: &str = "receive-wal test passphrase";
const KEY: Keyed = Keyed(PASSPHRASE);
/// Written into the database; must appear in no repository file.
const MARKER: &str = "pgstream-receive-marker-8e21a7";

/// The segment currently being written on the server (timeline 1).
fn current_segment(pg: &Cluster, size: WalSegmentSize) -> SegmentName {
    support::wal::current_segment(pg, 1, size)
}

/// receive-wal from `pg` with debug logging, all runs of a test appending to `log`.
fn start_receiver(repo: &Path, pg: &Cluster, extra: &[&str], log: PathBuf) -> Receiver {
    Receiver::spawn(
        &["--log-level", "debug"],
        repo,
        &pg.conninfo("postgres"),
        PASSPHRASE,
        extra,
        log,
        LogFile::Append,
    )
}

/// Complete segments in the archive, in order, checked to be contiguous.
fn archived_segments(repo_dir: &Path, size: WalSegmentSize) -> Vec<SegmentName> {
    let repo = KEY.open_repo(repo_dir);
    assert_eq!(
        repo.cluster().map(|c| u64::from(c.wal_segment_size)),
        Some(size.bytes())
    );
    let state =
        backup_core::receive::start::ArchiveState::scan(repo.store().as_ref(), repo.config())
            .unwrap();
    let mut segs = state.complete.clone();
    segs.sort_by_key(|s| s.segno);
    for w in segs.windows(2) {
        assert_eq!(
            w[1].segno,
            w[0].segno + 1,
            "gap in the archive between {} and {}",
            w[0],
            w[1]
        );
    }
    segs
}

/// How far the archive reaches durably: the end of the last complete segment or of the partial
/// after it.
fn archive_end(repo_dir: &Path, size: WalSegmentSize) -> Lsn {
    let repo = KEY.open_repo(repo_dir);
    let segs = archived_segments(repo_dir, size);
    let last = *segs.last().expect("no complete segment archived");
    match partial(&repo, &last.next()) {
        Some(p) => Lsn(last.end_lsn().0 + p.len() as u64),
        None => last.end_lsn(),
    }
}

fn assert_no_plaintext(repo: &Path, ctx: &str) {
    for f in files_under(repo) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "{ctx}: plaintext found in {}",
            f.display()
        );
    }
}

/// Writes WAL over three segment switches and waits (60 s) until `r` has archived the segment
/// before the one now being written. Returns the segment being written.
fn write_wal_and_wait_archived(
    pg: &Cluster,
    repo_dir: &Path,
    size: WalSegmentSize,
    r: &Receiver,
    what: &str,
) -> SegmentName {
    write_wal(pg, 3);
    let target = current_segment(pg, size);
    wait_for(
        what,
        60,
        || {
            archived(
                &KEY.open_repo(repo_dir),
                &SegmentName::new(target.timeline, target.segno - 1, size),
            )
            .is_some()
        },
        || r.log(),
    );
    target
}

fn write_wal(pg: &Cluster, switches: usize) {
    pg.psql(&format!(
        "CREATE TABLE IF NOT EXISTS t (id serial, note text);
         INSERT INTO t (note) SELECT '{MARKER}' || g FROM generate_series(1, 2000) g;"
    ));
    for _ in 0..switches {
        pg.psql(&format!(
            "INSERT INTO t (note) SELECT '{MARKER}' || g FROM generate_series(1, 500) g;
             SELECT pg_switch_wal();"
        ));
    }
    pg.psql(&format!("INSERT INTO t (note) VALUES ('{MARKER} tail');"));
}

#[test]
fn segments_equal_pg_receivewal_and_restarts_resume_without_gap() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major).setting("wal_keep_size", "512MB").start();
        let size = seg_size(&pg);
        let scratch = scratch_dir();
        let repo_dir = scratch.path().join("repo");
        KEY.init_repo(&repo_dir);
        let rw_dir = scratch.path().join("pg_receivewal");
        std::fs::create_dir(&rw_dir).unwrap();
        let mut rw = Command::new(client_tool(major, "pg_receivewal"))
            .arg("-D")
            .arg(&rw_dir)
            .args(["-d", &pg.conninfo("postgres"), "-n", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let first = current_segment(&pg, size);
        let r = start_receiver(
            &repo_dir,
            &pg,
            &["--slot", "pgstream_eq", "--create-slot"],
            scratch.path().join("log1"),
        );
        wait_for(
            "receive-wal streams",
            30,
            || {
                partial(&KEY.open_repo(&repo_dir), &first).is_some()
                    || archived(&KEY.open_repo(&repo_dir), &first).is_some()
            },
            || r.log(),
        );
        write_wal_and_wait_archived(
            &pg,
            &repo_dir,
            size,
            &r,
            "the switched segments are archived",
        );
        let log = r.log();
        assert_eq!(r.stop_with("TERM"), 0, "{ctx}: SIGTERM exit code");
        let end_first_run = archive_end(&repo_dir, size);

        // Restart: resumes from the partial (or the next segment), no gap.
        let r = start_receiver(
            &repo_dir,
            &pg,
            &["--slot", "pgstream_eq"],
            scratch.path().join("log2"),
        );
        let target = write_wal_and_wait_archived(
            &pg,
            &repo_dir,
            size,
            &r,
            "the second run archives its segments",
        );
        let log2 = r.log();
        assert_eq!(r.stop_with("INT"), 0, "{ctx}: SIGINT exit code");
        assert!(
            log2.contains("resuming partial segment") || log2.contains("archive holds"),
            "{ctx}: {log2}"
        );
        assert!(archive_end(&repo_dir, size) > end_first_run, "{ctx}");

        // pg_receivewal has what it will have of those segments once its files are renamed.
        let want = SegmentName::new(target.timeline, target.segno - 1, size);
        wait_for(
            "pg_receivewal has the same segments",
            60,
            || rw_dir.join(want.to_string()).exists(),
            String::new,
        );
        let _ = Command::new("kill")
            .args(["-s", "INT", &rw.id().to_string()])
            .status();
        let _ = rw.wait();

        let repo = KEY.open_repo(&repo_dir);
        let segs = archived_segments(&repo_dir, size);
        let mut compared = 0;
        for seg in &segs {
            let theirs = rw_dir.join(seg.to_string());
            if !theirs.exists() {
                assert!(
                    seg.segno < first.segno + 1,
                    "{ctx}: pg_receivewal lacks {seg}"
                );
                continue;
            }
            let ours = archived(&repo, seg).unwrap();
            assert!(
                ours == std::fs::read(&theirs).unwrap(),
                "{ctx}: {seg} differs from pg_receivewal's"
            );
            compared += 1;
        }
        assert!(
            compared >= 6,
            "{ctx}: only {compared} segments compared; archive {segs:?}\n{log}"
        );
        assert_no_plaintext(&repo_dir, &ctx);
    }
}

/// The server's own copy of a segment (kept by wal_keep_size and the slot).
fn server_segment(pg: &Cluster, seg: &SegmentName) -> Vec<u8> {
    std::fs::read(pg.data_dir().join("pg_wal").join(seg.to_string())).unwrap()
}

fn reported_flush(pg: &Cluster, slot: &str) -> Lsn {
    let v = pg.psql(&format!(
        "SELECT coalesce(confirmed_flush_lsn, restart_lsn) FROM pg_replication_slots WHERE slot_name = '{slot}'"
    ));
    if v.is_empty() {
        Lsn(0)
    } else {
        lsn(&v)
    }
}

#[test]
fn kill_9_under_load_loses_nothing_reported_flushed() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major).setting("wal_keep_size", "1GB").start();
        let size = seg_size(&pg);
        let bench = client_tool(major, "pgbench");
        let out = Command::new(&bench)
            .args(["-i", "-q", "-s", "1", "-d", &pg.conninfo("postgres")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{ctx}: pgbench -i: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let scratch = scratch_dir();
        let repo_dir = scratch.path().join("repo");
        KEY.init_repo(&repo_dir);
        let slot = "pgstream_kill";
        for round in 0..3 {
            let r = start_receiver(
                &repo_dir,
                &pg,
                &["--slot", slot, "--create-slot"],
                scratch.path().join(format!("log{round}")),
            );
            let mut load = Command::new(&bench)
                .args(["-n", "-T", "4", "-c", "2", "-d", &pg.conninfo("postgres")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(1500 + 500 * round));
            pg.psql("SELECT pg_switch_wal()");
            std::thread::sleep(Duration::from_millis(1200));
            // What the server was told is durable, then kill -9 at once.
            let flushed = reported_flush(&pg, slot);
            r.kill9();
            let _ = load.wait();
            assert!(
                flushed.0 > 0,
                "{ctx}: nothing reported flushed in round {round}"
            );
            let end = archive_end(&repo_dir, size);
            assert!(
                end >= flushed,
                "{ctx} round {round}: archive ends at {end}, but {flushed} was reported flushed"
            );
        }
        // A last clean run catches up to the server.
        let r = start_receiver(
            &repo_dir,
            &pg,
            &["--slot", slot],
            scratch.path().join("last"),
        );
        pg.psql("SELECT pg_switch_wal()");
        let target = lsn(&pg.psql("SELECT pg_current_wal_flush_lsn()"));
        wait_for(
            "the last run catches up",
            60,
            || reported_flush(&pg, slot) >= target,
            || r.log(),
        );
        assert_eq!(r.stop_with("TERM"), 0, "{ctx}");
        let repo = KEY.open_repo(&repo_dir);
        let segs = archived_segments(&repo_dir, size);
        assert!(segs.len() >= 3, "{ctx}: {segs:?}");
        for seg in &segs {
            assert!(
                archived(&repo, seg).unwrap() == server_segment(&pg, seg),
                "{ctx}: {seg} differs from the server's"
            );
        }
        let next = segs.last().unwrap().next();
        if let Some(p) = partial(&repo, &next) {
            assert!(
                server_segment(&pg, &next).starts_with(&p),
                "{ctx}: the partial {next} differs"
            );
        }
    }
}

#[test]
fn synchronous_mode_keeps_every_committed_row() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let app = "pgstream_rpo";
        let pg = cluster(major)
            .setting("synchronous_standby_names", app)
            .setting("synchronous_commit", "on")
            .start();
        let size = seg_size(&pg);
        let scratch = scratch_dir();
        let repo_dir = scratch.path().join("repo");
        KEY.init_repo(&repo_dir);
        // No synchronous standby yet: this commit must not wait for one.
        pg.psql(&format!(
            "SET synchronous_commit = local;
             CREATE TABLE rpo (id bigserial primary key, note text DEFAULT '{MARKER}')"
        ));
        // The base backup must not wait for a synchronous standby that is not there yet.
        let run = KEY.pgstream(&[
            "base",
            "--repo",
            repo_dir.to_str().unwrap(),
            "--source",
            &pg.conninfo("postgres"),
        ]);
        assert_eq!(run.code, 0, "{ctx}: base: {run:?}");
        let r = start_receiver(
            &repo_dir,
            &pg,
            &[
                "--slot",
                "rpo",
                "--create-slot",
                "--synchronous",
                "--application-name",
                app,
            ],
            scratch.path().join("log"),
        );
        wait_for(
            "receive-wal is the synchronous standby",
            30,
            || {
                pg.psql(&format!(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = '{app}'"
                )) == "sync"
            },
            || r.log(),
        );
        let script = scratch.path().join("insert.sql");
        std::fs::write(&script, "INSERT INTO rpo DEFAULT VALUES;\n").unwrap();
        let out = Command::new(client_tool(major, "pgbench"))
            .args(["-n", "-t", "100", "-c", "4", "-f"])
            .arg(&script)
            .args(["-d", &pg.conninfo("postgres")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{ctx}: pgbench: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let committed: u64 = pg.psql("SELECT count(*) FROM rpo").parse().unwrap();
        assert_eq!(committed, 400, "{ctx}");
        pg.stop_immediate();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(r.stop_with("TERM"), 0, "{ctx}");
        assert_no_plaintext(&repo_dir, &ctx);

        // Restore the base backup, add the archive's WAL, and let crash recovery replay it.
        archived_segments(&repo_dir, size);
        let restored = support::wal::restore_with_received_wal(
            &KEY,
            major,
            &repo_dir,
            &scratch.path().join("restored"),
            &ctx,
        );
        let recovered: u64 = restored.psql("SELECT count(*) FROM rpo").parse().unwrap();
        assert!(
            recovered >= committed,
            "{ctx}: {recovered} of {committed} committed rows recovered"
        );
    }
}

#[test]
fn wal_removed_from_the_server_is_a_clear_error() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major).setting("wal_keep_size", "0").start();
        let size = seg_size(&pg);
        let scratch = scratch_dir();
        let repo_dir = scratch.path().join("repo");
        KEY.init_repo(&repo_dir);
        let first = current_segment(&pg, size);
        let r = start_receiver(&repo_dir, &pg, &[], scratch.path().join("log1"));
        wait_for(
            "receive-wal streams",
            30,
            || partial(&KEY.open_repo(&repo_dir), &first).is_some(),
            || r.log(),
        );
        assert!(
            r.log().contains("no replication slot"),
            "{ctx}: the missing slot is warned about"
        );
        assert_eq!(r.stop_with("TERM"), 0, "{ctx}");
        for _ in 0..4 {
            write_wal(&pg, 1);
            pg.psql("CHECKPOINT");
        }
        let run = KEY.pgstream(&[
            "receive-wal",
            "--repo",
            repo_dir.to_str().unwrap(),
            "--source",
            &pg.conninfo("postgres"),
        ]);
        assert_eq!(run.code, 4, "{ctx}: {run:?}");
        assert!(run.stderr.contains("WAL is missing"), "{ctx}: {run:?}");
        assert!(
            run.stderr.contains(&first.to_string()),
            "{ctx}: the error names the segment: {run:?}"
        );
        assert!(
            run.stderr.contains("point-in-time recovery"),
            "{ctx}: {run:?}"
        );
    }
}
