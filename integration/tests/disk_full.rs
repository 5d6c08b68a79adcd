//! ENOSPC on every write path (docs/RELIABILITY.md): a small tmpfs as the repository of
//! `receive-wal` and `archive-push`, and as the target of `restore`, fills up. Each fails with
//! exit 7 and "No space left on device" naming the file, leaves nothing half-done (no segment
//! with other bytes than the server's, nothing archived, a directory that cannot be started),
//! and works once space is freed. `base` on a full disk: base_faults.rs. One cluster of the
//! newest major (1 MB WAL segments) for all three; mounting needs root, which CI has.

mod support;

use std::path::Path;
use std::time::Instant;

use backup_core::receive::start::ArchiveState;
use integration::{cluster, scratch_dir, server_user, Cluster};
use support::faults::{
    assert_cannot_start, error_line, pg_verifybackup, temporaries, verify_clean, Faulted,
};
use support::receiver::{wait_caught_up, Receiver};
use support::tmpfs::Tmpfs;
use support::wal::{archived, partial, Keyed};
use support::{newest_major, ok, s, Run};

const KEY: Keyed = Keyed("disk full passphrase");
const SLOT: &str = "full";

/// About `mb` MB of WAL that compresses poorly (random bytes), ending with a switch.
fn incompressible_wal(pg: &Cluster, mb: u32) {
    pg.psql(&format!(
        "CREATE TABLE IF NOT EXISTS filler (g int, pad bytea);
         INSERT INTO filler SELECT g, decode(md5(g::text) || md5((-g)::text)
             || md5((g * 7)::text) || md5((g * 13)::text), 'hex')
           FROM generate_series(1, {}) g;
         SELECT pg_switch_wal();",
        mb * 9000
    ));
}

fn assert_disk_full(run: &Run, ctx: &str) {
    assert_eq!(run.code, 7, "{ctx}: expected exit 7 (local I/O): {run:?}");
    let line = error_line(run, ctx);
    eprintln!("{ctx}: {line}");
    assert!(
        line.contains("No space left on device"),
        "{ctx}: the error does not say the disk is full: {line}"
    );
}

/// Every complete segment of the archive is the server's, every partial a prefix of it.
fn assert_archive_true(repo_dir: &Path, pg: &Cluster, ctx: &str) -> usize {
    let repo = KEY.open_repo(repo_dir);
    let state = ArchiveState::scan(repo.store().as_ref(), repo.config()).unwrap();
    let pg_wal = pg.data_dir().join("pg_wal");
    for seg in &state.complete {
        let server = std::fs::read(pg_wal.join(seg.to_string())).unwrap();
        assert!(
            archived(&repo, seg).unwrap() == server,
            "{ctx}: archived {seg} differs from the server's"
        );
    }
    for (seg, _) in &state.partials {
        let server = std::fs::read(pg_wal.join(seg.to_string())).unwrap();
        assert!(
            server.starts_with(&partial(&repo, seg).unwrap()),
            "{ctx}: the partial of {seg} is not a prefix of the server's"
        );
    }
    state.complete.len()
}

fn receive_wal_into_a_full_repository(pg: &Cluster, scratch: &Path) {
    let ctx = format!("PostgreSQL {} receive-wal, full repository", pg.major());
    let started = Instant::now();
    let disk = Tmpfs::require(&scratch.join("receive-disk"), "3M");
    let repo = disk.path().join("repo");
    KEY.init_repo(&repo);
    let conninfo = pg.conninfo("postgres");
    let args = [
        "receive-wal",
        "--repo",
        s(&repo),
        "--source",
        &conninfo,
        "--slot",
        SLOT,
        "--create-slot",
        "--status-interval",
        "1",
    ];
    let p = Faulted::spawn(&args, Some(KEY.0), "", &[]);
    support::wait_until(&format!("{ctx}: receive-wal streams"), || {
        p.stderr().contains("streaming from")
    });
    incompressible_wal(pg, 6);
    let run = p.wait(120);
    assert_disk_full(&run, &ctx);
    assert_archive_true(&repo, pg, &ctx);
    // What the server was told is durable is in the archive.
    let told = support::wal::slot_flush(pg, SLOT);
    let repo_opened = KEY.open_repo(&repo);
    let state = ArchiveState::scan(repo_opened.store().as_ref(), repo_opened.config()).unwrap();
    let size = 1u64 << 20;
    let archived_to = state
        .complete
        .iter()
        .map(|s| (s.segno + 1) * size)
        .chain(
            state
                .partials
                .iter()
                .map(|(s, _)| s.segno * size + partial(&repo_opened, s).unwrap().len() as u64),
        )
        .max()
        .unwrap_or(0);
    assert!(
        told.0 <= archived_to,
        "{ctx}: the server was told {told} is durable, the archive reaches {archived_to:#x}"
    );
    // Space freed: the next run catches up.
    disk.resize("128M");
    let r = Receiver::start(
        &repo,
        &conninfo,
        KEY.0,
        &["--slot", SLOT],
        scratch.join("receive.log"),
    );
    pg.psql("SELECT pg_switch_wal()");
    wait_caught_up(pg, SLOT, &r);
    assert_eq!(r.terminate(), 0, "{ctx}");
    let n = assert_archive_true(&repo, pg, &ctx);
    assert!(n >= 6, "{ctx}: only {n} segments archived");
    let opened = KEY.open_repo(&repo);
    let state = ArchiveState::scan(opened.store().as_ref(), opened.config()).unwrap();
    assert_eq!(state.stale_partials(), Vec::<String>::new(), "{ctx}");
    verify_clean(&repo, KEY.0, None, &ctx);
    eprintln!("{ctx}: {:.1} s", started.elapsed().as_secs_f64());
}

fn archive_push_into_a_full_repository(pg: &Cluster, scratch: &Path) {
    let ctx = format!("PostgreSQL {} archive-push, full repository", pg.major());
    let started = Instant::now();
    let disk = Tmpfs::require(&scratch.join("push-disk"), "256k");
    let repo = disk.path().join("repo");
    KEY.init_repo(&repo);
    let name = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    incompressible_wal(pg, 1);
    let segment = scratch.join(&name);
    std::fs::copy(pg.data_dir().join("pg_wal").join(&name), &segment).unwrap();
    let args = ["archive-push", "--repo", s(&repo), s(&segment)];
    let run = KEY.pgstream(&args);
    assert_disk_full(&run, &ctx);
    let fetched = scratch.join("fetched");
    let fetch = KEY.pgstream(&["wal-fetch", "--repo", s(&repo), &name, s(&fetched)]);
    assert_eq!(
        fetch.code, 1,
        "{ctx}: archived although the disk was full: {fetch:?}"
    );
    assert_eq!(
        temporaries(&repo),
        Vec::<std::path::PathBuf>::new(),
        "{ctx}"
    );
    disk.resize("64M");
    ok(KEY.pgstream(&args), &format!("{ctx}: the retry"));
    ok(
        KEY.pgstream(&["wal-fetch", "--repo", s(&repo), &name, s(&fetched)]),
        &ctx,
    );
    assert!(std::fs::read(&fetched).unwrap() == std::fs::read(&segment).unwrap());
    eprintln!("{ctx}: {:.1} s", started.elapsed().as_secs_f64());
}

fn restore_onto_a_full_disk(pg: &Cluster, scratch: &Path) {
    let ctx = format!("PostgreSQL {} restore, full target", pg.major());
    let started = Instant::now();
    let repo = scratch.join("repo");
    KEY.init_repo(&repo);
    ok(
        KEY.pgstream(&[
            "base",
            "--repo",
            s(&repo),
            "--source",
            &pg.conninfo("postgres"),
            "--no-progress",
        ]),
        &format!("{ctx}: base"),
    );
    let disk = Tmpfs::require(&scratch.join("restore-disk"), "8M");
    server_user().chown(disk.path());
    let target = disk.path().join("data");
    let args = ["restore", "--repo", s(&repo), "--to", s(&target)];
    let run = KEY.pgstream(&args);
    assert_disk_full(&run, &ctx);
    assert!(!target.join("backup_manifest").exists(), "{ctx}");
    assert_cannot_start(pg.major(), &target, &ctx);
    disk.resize("512M");
    let mut forced = args.to_vec();
    forced.push("--force");
    ok(KEY.pgstream(&forced), &format!("{ctx}: restore --force"));
    pg_verifybackup(pg.major(), &target, &ctx);
    eprintln!("{ctx}: {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn a_full_disk_fails_every_write_path_with_exit_7_and_space_freed_recovers() {
    let pg = cluster(newest_major())
        .initdb_arg("--wal-segsize=1")
        .setting("wal_keep_size", "256MB")
        .start();
    let scratch = scratch_dir();
    receive_wal_into_a_full_repository(&pg, scratch.path());
    archive_push_into_a_full_repository(&pg, scratch.path());
    restore_onto_a_full_disk(&pg, scratch.path());
}
