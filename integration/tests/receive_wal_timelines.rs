//! `pgstream receive-wal` across timelines, end to end through the binary:
//! - streaming from a standby that is promoted: it follows timeline 2, archives
//!   00000002.history (equal to the server's), keeps timeline 1's last partial segment, and
//!   the segments of timeline 2 equal the server's;
//! - a failover with a multi-host conninfo (`target_session_attrs=primary`): the primary is
//!   stopped (immediate), the standby promoted; it reconnects to the new primary, creates its
//!   slot there (`--create-slot`), follows timeline 2, and the archive has no gap along the
//!   timeline history;
//! - the same failover when receive-wal had received WAL the standby never got (asynchronous
//!   replication): it continues on timeline 2 from the fork point instead of failing, and says
//!   that the WAL after the fork was lost with the old primary.
//!
//! What a DBA must do for failover: list every host in the conninfo with
//! `target_session_attrs=primary`, and either pass `--create-slot` (the slot is created on
//! whichever primary receive-wal connects to, so on the new one right after the failover) or
//! create the slot on the new primary before pointing receive-wal at it. A slot created in
//! advance on a standby is not advanced while receive-wal streams from the primary, so that
//! standby keeps all WAL from then on.
//!
//! Timeline switches, standby detection (13 has no in_hot_standby) and READ_REPLICATION_SLOT
//! (15+) differ by version: the promotion and failover tests run on the oldest and the newest
//! major of PGSTREAM_TEST_MAJORS (a standby per major makes all six too slow); the "ahead of
//! the standby" case on the newest.

mod support;

use std::path::{Path, PathBuf};

use backup_core::receive::start::ArchiveState;
use backup_core::wal::{SegmentName, TimelineHistory, WalSegmentSize};
use integration::{scratch_dir, Cluster};
use pgwire_repl::{Lsn, TimelineId};
use support::receiver::{wait_caught_up, wait_for, Receiver};
use support::standby::{wait_for_replay, Pair};
use support::wal::{archived, current_segment, partial, slot_flush, write_wal, Keyed};
use support::{newest_major, oldest_and_newest_majors};

const PASSPHRASE: &str = "receive-wal timelines test passphrase";
const KEY: Keyed = Keyed(PASSPHRASE);

/// A primary and a pg_basebackup -R standby (as in timelines.rs). wal_keep_size on both keeps
/// the segments compared at the end.
fn primary_with_standby(major: u32) -> Pair {
    support::standby::primary_with_standby(major, "512MB")
}

/// A scratch directory with an initialised repository in it.
fn scratch_with_repo() -> (tempfile::TempDir, PathBuf) {
    let scratch = scratch_dir();
    let repo_dir = scratch.path().join("repo");
    KEY.init_repo(&repo_dir);
    (scratch, repo_dir)
}

/// Both servers of `pair` in one conninfo: receive-wal connects to whichever is the primary.
fn failover_conninfo(pair: &Pair) -> String {
    format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres \
         sslmode=disable target_session_attrs=primary",
        pair.primary.port(),
        pair.standby.port()
    )
}

/// Writes `rows` rows and `switches` segment switches on `server` (on timeline `tli`), then
/// waits until `r` has archived the segment before the one being written, which it returns.
fn write_wal_and_wait_archived(
    server: &Cluster,
    tli: u32,
    rows: u32,
    switches: usize,
    repo_dir: &Path,
    r: &Receiver,
) -> SegmentName {
    write_wal(server, rows, switches);
    let size = WalSegmentSize::DEFAULT;
    let cur = current_segment(server, tli, size);
    let seg = SegmentName::new(TimelineId(tli), cur.segno - 1, size);
    wait_archived(repo_dir, seg, r);
    seg
}

fn wait_archived(repo_dir: &Path, seg: SegmentName, r: &Receiver) {
    wait_for(
        &format!("{seg} is archived"),
        40,
        || archived(&KEY.open_repo(repo_dir), &seg).is_some(),
        || r.log(),
    );
}

/// `00000002.history` through `pgstream wal-fetch`, checked equal to the new primary's file.
fn fetched_history(repo_dir: &Path, new_primary: &Cluster, dir: &Path, ctx: &str) -> Vec<u8> {
    let dest = dir.join("fetched.history");
    let run = KEY.pgstream(&[
        "wal-fetch",
        "--repo",
        repo_dir.to_str().unwrap(),
        "00000002.history",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{ctx}: wal-fetch 00000002.history: {run:?}");
    let ours = std::fs::read(&dest).unwrap();
    let theirs = std::fs::read(new_primary.data_dir().join("pg_wal/00000002.history")).unwrap();
    assert_eq!(ours, theirs, "{ctx}: 00000002.history differs");
    ours
}

/// Walks segment names along the history of timeline 2, from the first archived segment up to
/// `last`: each must be archived complete on the timeline recovery reads it from (the newest
/// one that began by then), and equal to that timeline's server file (`old` wrote timeline 1,
/// `new` timeline 2). Returns the fork point.
fn walk_history(
    repo_dir: &Path,
    history: &[u8],
    last: SegmentName,
    old: &Cluster,
    new: &Cluster,
    ctx: &str,
) -> Lsn {
    let size = last.seg_size;
    let history = TimelineHistory::parse(TimelineId(2), history).unwrap();
    assert_eq!(history.parent(), Some(TimelineId(1)), "{ctx}");
    let fork = history.fork_point();
    let fork_seg = SegmentName::from_lsn(TimelineId(1), fork, size);
    let repo = KEY.open_repo(repo_dir);
    let state = ArchiveState::scan(repo.store().as_ref(), repo.config()).unwrap();
    let first = state
        .complete
        .iter()
        .map(|s| s.segno)
        .min()
        .expect("segments archived");
    assert!(
        first < fork_seg.segno && last.segno > fork_seg.segno,
        "{ctx}: the archive spans the fork at {fork}: {first:X}..={}",
        last
    );
    for segno in first..=last.segno {
        let tli = history
            .spans()
            .iter()
            .rev()
            .find(|span| span.begin.0 / size.bytes() <= segno)
            .unwrap()
            .timeline;
        let seg = SegmentName::new(tli, segno, size);
        let ours = archived(&repo, &seg)
            .unwrap_or_else(|| panic!("{ctx}: {seg} is missing: archive {state:?}"));
        let server = if tli == TimelineId(1) { old } else { new };
        let theirs = std::fs::read(server.data_dir().join("pg_wal").join(seg.to_string()))
            .unwrap_or_else(|e| panic!("{ctx}: the server's {seg}: {e}"));
        assert!(ours == theirs, "{ctx}: {seg} differs from the server's");
    }
    fork
}

/// Timeline 1's last segment (the one holding the fork point) stays as a partial whose bytes
/// up to the fork are the old primary's.
fn assert_old_partial_kept(repo_dir: &Path, fork: Lsn, old: &Cluster, ctx: &str) {
    let seg = SegmentName::from_lsn(TimelineId(1), fork, WalSegmentSize::DEFAULT);
    let held = partial(&KEY.open_repo(repo_dir), &seg)
        .or_else(|| archived(&KEY.open_repo(repo_dir), &seg))
        .unwrap_or_else(|| panic!("{ctx}: timeline 1's last segment {seg} was not kept"));
    let upto = (fork.0 - seg.start_lsn().0) as usize;
    assert!(
        held.len() >= upto,
        "{ctx}: {seg} holds {} bytes",
        held.len()
    );
    let theirs = std::fs::read(old.data_dir().join("pg_wal").join(seg.to_string())).unwrap();
    assert!(
        held[..upto] == theirs[..upto],
        "{ctx}: timeline 1's {seg} differs from the old primary's before {fork}"
    );
}

#[test]
fn promoted_standby_is_followed_to_timeline_2() {
    for major in oldest_and_newest_majors() {
        let ctx = format!("PostgreSQL {major} promotion");
        let pair = primary_with_standby(major);
        let (primary, standby) = (&pair.primary, &pair.standby);
        let size = WalSegmentSize::DEFAULT;
        let (scratch, repo_dir) = scratch_with_repo();
        let source = format!("{} target_session_attrs=any", standby.conninfo("postgres"));
        let r = KEY.start_streaming_new_slot(
            &repo_dir,
            &source,
            "archiver",
            scratch.path().join("log"),
        );
        write_wal_and_wait_archived(primary, 1, 2000, 2, &repo_dir, &r);
        wait_for_replay(primary, standby);
        // The fork point lands inside a segment.
        write_wal(primary, 3000, 0);
        wait_for_replay(primary, standby);

        standby.promote();
        let last = write_wal_and_wait_archived(standby, 2, 2000, 2, &repo_dir, &r);
        let log = r.log();
        assert_eq!(r.terminate(), 0, "{ctx}: SIGTERM");
        assert!(
            log.contains("continuing on timeline 2")
                && log.contains("as the last partial segment of timeline 1")
                && !log.contains("reconnecting"),
            "{ctx}: the switch is followed on the same connection:\n{log}"
        );

        let history = fetched_history(&repo_dir, standby, scratch.path(), &ctx);
        let fork = walk_history(&repo_dir, &history, last, primary, standby, &ctx);
        assert_old_partial_kept(&repo_dir, fork, primary, &ctx);
        let fork_seg = SegmentName::from_lsn(TimelineId(1), fork, size);
        assert!(
            partial(&KEY.open_repo(&repo_dir), &fork_seg).is_some(),
            "{ctx}: {fork_seg} stays a partial"
        );
    }
}

#[test]
fn failover_with_a_multi_host_conninfo_follows_the_new_primary() {
    for major in oldest_and_newest_majors() {
        let ctx = format!("PostgreSQL {major} failover");
        let pair = primary_with_standby(major);
        let (primary, standby) = (&pair.primary, &pair.standby);
        let (scratch, repo_dir) = scratch_with_repo();
        let slot = "archiver";
        let source = failover_conninfo(&pair);
        let r = KEY.start_streaming_new_slot(&repo_dir, &source, slot, scratch.path().join("log"));
        write_wal_and_wait_archived(primary, 1, 2000, 2, &repo_dir, &r);
        write_wal(primary, 3000, 0);
        wait_for_replay(primary, standby);
        wait_caught_up(primary, slot, &r);
        assert_eq!(
            standby.psql("SELECT count(*) FROM pg_replication_slots"),
            "0",
            "{ctx}: no slot on the standby beforehand"
        );

        primary.stop_immediate();
        standby.promote();
        let last = write_wal_and_wait_archived(standby, 2, 2000, 2, &repo_dir, &r);
        let log = r.log();
        assert_eq!(r.terminate(), 0, "{ctx}: SIGTERM");
        assert!(
            log.contains("reconnecting in") && log.contains("continuing on timeline 2"),
            "{ctx}: reconnected and followed timeline 2:\n{log}"
        );
        assert!(
            slot_flush(standby, slot) >= last.end_lsn(),
            "{ctx}: the slot on the new primary advances"
        );

        let history = fetched_history(&repo_dir, standby, scratch.path(), &ctx);
        let fork = walk_history(&repo_dir, &history, last, primary, standby, &ctx);
        assert_old_partial_kept(&repo_dir, fork, primary, &ctx);
    }
}

#[test]
fn failover_after_wal_the_standby_never_got_continues_at_the_fork() {
    let major = newest_major();
    let ctx = format!("PostgreSQL {major} failover, receive-wal ahead of the standby");
    let pair = primary_with_standby(major);
    let (primary, standby) = (&pair.primary, &pair.standby);
    let (scratch, repo_dir) = scratch_with_repo();
    let slot = "archiver";
    let source = failover_conninfo(&pair);
    let r = KEY.start_streaming_new_slot(&repo_dir, &source, slot, scratch.path().join("log"));
    write_wal(primary, 2000, 1);
    wait_for_replay(primary, standby);
    wait_caught_up(primary, slot, &r);

    // The standby stops receiving; the primary goes on, and receive-wal gets it all.
    standby.psql("ALTER SYSTEM SET primary_conninfo = ''");
    standby.reload();
    support::wait_until(&format!("{ctx}: the standby disconnects"), || {
        primary.psql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'standby'")
            == "0"
    });
    write_wal(primary, 3000, 1);
    write_wal(primary, 1000, 0);
    wait_caught_up(primary, slot, &r);
    let ahead = slot_flush(primary, slot);

    primary.stop_immediate();
    standby.promote();
    let last = write_wal_and_wait_archived(standby, 2, 2000, 3, &repo_dir, &r);
    let log = r.log();
    assert_eq!(r.terminate(), 0, "{ctx}: SIGTERM");

    let history = fetched_history(&repo_dir, standby, scratch.path(), &ctx);
    let fork = walk_history(&repo_dir, &history, last, primary, standby, &ctx);
    assert!(fork < ahead, "{ctx}: fork {fork}, received {ahead}");
    assert!(
        log.contains("never became part of the server's history")
            && log.contains(&format!("continuing on timeline 2 from {fork}")),
        "{ctx}: the lost WAL is named:\n{log}"
    );
    assert_old_partial_kept(&repo_dir, fork, primary, &ctx);

    // The next start resumes on timeline 2, not on the longer timeline 1.
    let r = KEY.start_receiver(
        &repo_dir,
        &source,
        &["--slot", slot],
        scratch.path().join("log2"),
    );
    r.wait_streaming();
    wait_for(
        "the restart streams",
        30,
        || r.log().contains("streaming from"),
        || r.log(),
    );
    let log = r.log();
    assert_eq!(r.terminate(), 0, "{ctx}: SIGTERM after the restart");
    assert!(
        log.contains("archive holds 00000002") || log.contains("resuming partial segment 00000002"),
        "{ctx}:\n{log}"
    );
}
