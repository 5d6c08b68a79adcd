//! `archive-push`, `restore`, `expire`, `rekey` and `copy` at every failpoint on their way
//! (docs/RELIABILITY.md): each injected failure ends with the documented exit code and an
//! error naming what failed, each stop is killed -9 there; afterwards nothing half-done is
//! visible and the next run completes. Failpoint behaviour does not depend on the server
//! version: the newest major only, one cluster (1 MB WAL segments) per test.

mod support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use integration::{cluster, scratch_dir, Cluster};
use support::faults::{
    assert_cannot_start, backup_dirs, case, listed_ids, pg_verifybackup, run_case, temporaries,
    verify_backups_clean, verify_clean, Case, Outcome,
};
use support::wal::Keyed;
use support::{newest_major, ok, pgstream, s, Run};

const KEY: Keyed = Keyed("command failpoints passphrase");

use Outcome::{Fails, Killed};

fn newest_cluster() -> Cluster {
    cluster(newest_major())
        .initdb_arg("--wal-segsize=1")
        .setting("wal_keep_size", "256MB")
        .start()
}

fn elapsed(what: &str, started: Instant) {
    eprintln!("{what} in {:.1} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// archive-push

/// Cases in the order an archive-push meets them (the first binds the repository).
const ARCHIVE_PUSH_CASES: &[Case] = &[
    // The first segment binds the repository to its cluster: the config write fails.
    case("store.put=return(EIO)", Fails(7, "failpoint store.put")),
    case(
        "store.commit=return(EIO)",
        Fails(
            7,
            "Input/output error (os error 5), injected at failpoint store.commit",
        ),
    ),
    case("store.commit=stop", Killed),
    // Below the store: written, not yet fsynced and linked into place.
    case("fsutil.commit=stop", Killed),
    // Durable, but the server never heard archive_command succeed: it will push it again.
    case("wal-archive.stored=stop", Killed),
];

/// `segments` completed WAL segments of `pg`, copied out of its pg_wal.
fn completed_segments(pg: &Cluster, segments: usize, into: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(into).unwrap();
    pg.psql("CREATE TABLE IF NOT EXISTS t (id serial, note text)");
    (0..segments)
        .map(|_| {
            let name = pg.psql(
                "INSERT INTO t (note) SELECT md5(g::text) FROM generate_series(1, 3000) g;
                 SELECT pg_walfile_name(pg_current_wal_lsn())",
            );
            pg.psql("SELECT pg_switch_wal()");
            let dest = into.join(&name);
            std::fs::copy(pg.data_dir().join("pg_wal").join(&name), &dest).unwrap();
            dest
        })
        .collect()
}

/// `wal-fetch` of `name`: its bytes, or `None` when the archive does not have it (exit 1).
fn fetched(repo: &Path, name: &str, scratch: &Path, ctx: &str) -> Option<Vec<u8>> {
    let dest = scratch.join(format!("fetched-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&dest);
    let run = KEY.pgstream(&["wal-fetch", "--repo", s(repo), name, s(&dest)]);
    match run.code {
        0 => Some(std::fs::read(&dest).unwrap()),
        1 => None,
        _ => panic!("{ctx}: wal-fetch {name}: {run:?}"),
    }
}

#[test]
fn archive_push_fails_cleanly_at_every_failpoint_and_the_retry_archives() {
    let started = Instant::now();
    let pg = newest_cluster();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    KEY.init_repo(&repo);
    let segments = completed_segments(&pg, ARCHIVE_PUSH_CASES.len(), &scratch.path().join("wal"));
    for (c, segment) in ARCHIVE_PUSH_CASES.iter().zip(&segments) {
        let ctx = format!("PostgreSQL {} {}", pg.major(), c.failpoints);
        let name = segment.file_name().unwrap().to_str().unwrap();
        let original = std::fs::read(segment).unwrap();
        let args = ["archive-push", "--repo", s(&repo), s(segment)];
        run_case(c, &args, Some(KEY.0), &[], &ctx, || {});
        // Either not archived at all, or archived whole (and then a retry is accepted).
        match fetched(&repo, name, scratch.path(), &ctx) {
            None => assert!(
                !c.failpoints.starts_with("wal-archive.stored"),
                "{ctx}: stored durably, yet not fetched"
            ),
            Some(bytes) => assert!(bytes == original, "{ctx}: archived with other bytes"),
        }
        verify_clean(&repo, KEY.0, None, &ctx);
        // The server's retry (archive_command runs again until it succeeds).
        let retry = ok(KEY.pgstream(&args), &format!("{ctx}: the retry"));
        if c.failpoints.starts_with("wal-archive.stored") {
            assert!(
                retry
                    .stderr
                    .contains("already archived with the same content"),
                "{ctx}: {retry:?}"
            );
        }
        let bytes = fetched(&repo, name, scratch.path(), &ctx).expect("archived");
        assert!(bytes == original, "{ctx}: archived with other bytes");
        verify_clean(&repo, KEY.0, None, &ctx);
    }
    // Bound to its cluster by the retry of the first case.
    let status = pgstream(&["status", "--repo", s(&repo)], None);
    assert!(status.stdout.contains("bound to system"), "{status:?}");
    elapsed(
        &format!("{} archive-push failpoint cases", ARCHIVE_PUSH_CASES.len()),
        started,
    );
}

// ---------------------------------------------------------------------------------------------
// restore

/// Cases in the order a restore meets them; `true`: a point-in-time restore.
const RESTORE_CASES: &[(Case, bool)] = &[
    // The extracted files' fsyncs (on helper threads): EIO, then killed mid-extract.
    (
        case(
            "restore.fsync=return(EIO)",
            Fails(
                7,
                "Input/output error (os error 5), injected at failpoint restore.fsync",
            ),
        ),
        false,
    ),
    (case("restore.fsync=stop", Killed), false),
    // The WAL copied into pg_wal (and the manifest, last): a full disk, then killed there.
    (
        case(
            "fsutil.commit=return(ENOSPC)",
            Fails(
                7,
                "No space left on device (os error 28), injected at failpoint fsutil.commit",
            ),
        ),
        false,
    ),
    (case("fsutil.commit=stop", Killed), false),
    // Point-in-time recovery: killed before its recovery settings are written.
    (case("fsutil.write-file=stop", Killed), true),
];

#[test]
fn restore_fails_cleanly_at_every_failpoint_and_a_forced_rerun_restores() {
    let started = Instant::now();
    let pg = newest_cluster();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    KEY.init_repo(&repo);
    pg.psql("CREATE TABLE kept AS SELECT g AS id FROM generate_series(1, 1000) g");
    ok(
        KEY.pgstream(&[
            "base",
            "--repo",
            s(&repo),
            "--source",
            &pg.conninfo("postgres"),
            "--no-progress",
        ]),
        "base",
    );
    let major = pg.major();
    let target = scratch.path().join("restored");
    let pass = scratch.path().join("passphrase");
    std::fs::write(&pass, KEY.0).unwrap();
    std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    for (i, (c, pitr)) in RESTORE_CASES.iter().enumerate() {
        let ctx = format!("PostgreSQL {major} {}", c.failpoints);
        let target = target.with_extension(i.to_string());
        let mut args = vec!["restore", "--repo", s(&repo), "--to", s(&target)];
        if *pitr {
            // restore_command reads the repository with a passphrase file.
            args.extend(["--target-latest", "--passphrase-file", s(&pass)]);
        }
        run_case(c, &args, Some(KEY.0), &[], &ctx, || {});
        // The backup alone writes its manifest last; a point-in-time restore writes its
        // recovery settings after it.
        assert!(
            *pitr || !target.join("backup_manifest").exists(),
            "{ctx}: a failed restore looks complete (backup_manifest is written last)"
        );
        assert!(
            !target.join("recovery.signal").exists(),
            "{ctx}: a failed restore is set to recover"
        );
        if c.outcome == Killed {
            assert_cannot_start(major, &target, &ctx);
        }
        // Restoring again refuses the non-empty directory, and writes nothing.
        let refused = KEY.pgstream(&args);
        assert_eq!(refused.code, 2, "{ctx}: {refused:?}");
        assert!(refused.stderr.contains("--force"), "{ctx}: {refused:?}");
        // With --force it empties the directory and restores.
        let mut forced = args.clone();
        forced.push("--force");
        ok(KEY.pgstream(&forced), &format!("{ctx}: restore --force"));
        if !*pitr {
            pg_verifybackup(major, &target, &ctx);
        }
        assert_eq!(
            temporaries(&target),
            Vec::<PathBuf>::new(),
            "{ctx}: temporary files in the restored directory"
        );
    }
    // The last forced restore (the plain one before the point-in-time case) runs.
    let last_plain = target.with_extension((RESTORE_CASES.len() - 2).to_string());
    let restored = integration::cluster(major)
        .restored_data_dir(&last_plain)
        .start();
    assert_eq!(restored.psql("SELECT count(*) FROM kept"), "1000");
    elapsed(
        &format!("{} restore failpoint cases", RESTORE_CASES.len()),
        started,
    );
}

// ---------------------------------------------------------------------------------------------
// expire

/// Cases in the order an expire meets them; each run is asked to delete the oldest backup.
const EXPIRE_CASES: &[Case] = &[
    // The expire lease.
    case("store.lease=return", Fails(7, "failpoint store.lease")),
    // Deleting the record fails: nothing is deleted.
    case(
        "store.delete=return(EIO)",
        Fails(7, "failpoint store.delete"),
    ),
    // The record deleted, then killed: no longer a backup, its files a leftover.
    case("expire.record-deleted=stop", Killed),
    // The record deleted, deleting the rest fails.
    case(
        "store.delete=1*off->return",
        Fails(7, "failpoint store.delete"),
    ),
    // Backups deleted, killed before the WAL they alone needed.
    case("expire.before-wal=stop", Killed),
];

fn base(repo: &Path, pg: &Cluster) -> String {
    let run = ok(
        KEY.pgstream(&[
            "base",
            "--repo",
            s(repo),
            "--source",
            &pg.conninfo("postgres"),
            "--no-progress",
            "--json",
        ]),
        "base",
    );
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    v["id"].as_str().unwrap().to_string()
}

fn expire_args(repo: &Path, keep: usize) -> Vec<String> {
    vec![
        "expire".into(),
        "--repo".into(),
        s(repo).into(),
        "--keep-last".into(),
        keep.to_string(),
        "--json".into(),
    ]
}

fn wal_files(repo: &Path) -> Vec<PathBuf> {
    if !repo.join("wal").exists() {
        return Vec::new();
    }
    support::files_under(&repo.join("wal"))
}

/// Backups only, no continuous archiving: the WAL between two backups is not in the archive,
/// so `verify` reports those gaps (point-in-time recovery cannot pass them); every backup and
/// every WAL file must still verify.
#[test]
fn expire_fails_cleanly_at_every_failpoint_and_the_next_run_finishes() {
    let started = Instant::now();
    let pg = newest_cluster();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    KEY.init_repo(&repo);
    pg.psql("CREATE TABLE t (id serial, note text)");
    let mut ids = Vec::new();
    for _ in 0..=EXPIRE_CASES.len() {
        ids.push(base(&repo, &pg));
        pg.psql(
            "INSERT INTO t (note) SELECT md5(g::text) FROM generate_series(1, 5000) g;
             SELECT pg_switch_wal()",
        );
    }
    elapsed("expire setup", started);
    for (i, c) in EXPIRE_CASES.iter().enumerate() {
        let ctx = format!("PostgreSQL {} {}", pg.major(), c.failpoints);
        let keep = ids.len() - 1;
        let oldest = ids[0].clone();
        let wal_before = wal_files(&repo);
        let args = expire_args(&repo, keep);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_case(c, &args, Some(KEY.0), &[], &ctx, || {});
        // What list shows is complete: the oldest is either still whole or gone entirely
        // from the catalog; everything else is untouched.
        let listed = listed_ids(&repo, KEY.0, &ctx);
        assert!(
            listed == ids || listed == ids[1..],
            "{ctx}: list shows {listed:?}, expected {ids:?} or without the oldest"
        );
        for (id, has_record) in backup_dirs(&repo) {
            assert!(
                !has_record || listed.contains(&id),
                "{ctx}: {id} has a record but is not listed"
            );
        }
        verify_backups_clean(&repo, KEY.0, None, &ctx);
        // The next expire finishes the job: the oldest gone, leftovers removed.
        let next = ok(KEY.pgstream(&args), &format!("{ctx}: the next expire"));
        let report: serde_json::Value = serde_json::from_str(&next.stdout).unwrap();
        if listed.len() < ids.len() {
            assert!(
                report["expired"].as_array().unwrap().is_empty(),
                "{ctx}: {report}"
            );
        }
        ids.remove(0);
        assert_eq!(listed_ids(&repo, KEY.0, &ctx), ids, "{ctx}");
        assert_eq!(
            backup_dirs(&repo),
            ids.iter().map(|id| (id.clone(), true)).collect::<Vec<_>>(),
            "{ctx}: a leftover of {oldest} is still there"
        );
        assert!(
            wal_files(&repo).len() <= wal_before.len(),
            "{ctx}: WAL grew"
        );
        verify_backups_clean(&repo, KEY.0, None, &ctx);
        // Nothing is left to do.
        let dry = ok(
            KEY.pgstream(&[
                "expire",
                "--repo",
                s(&repo),
                "--keep-last",
                &keep.to_string(),
                "--dry-run",
                "--json",
            ]),
            &format!("{ctx}: dry run"),
        );
        let report: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
        assert_eq!(report["wal_files"], 0, "{ctx} (case {i}): {report}");
        assert!(
            report["leftovers"].as_array().unwrap().is_empty(),
            "{ctx}: {report}"
        );
    }
    // The backups that remain restore (verify read every file of each).
    elapsed(
        &format!("{} expire failpoint cases", EXPIRE_CASES.len()),
        started,
    );
}

// ---------------------------------------------------------------------------------------------
// rekey

/// Cases in the order a rekey meets them; `true`: with `--rotate-data-key` too.
const REKEY_CASES: &[(Case, bool)] = &[
    // The config lease.
    (
        case("store.lease=return", Fails(7, "failpoint store.lease")),
        false,
    ),
    // The config write, its only write: refused, killed before, killed with the new config
    // written under its temporary name but not yet fsynced and renamed into place.
    (
        case("store.put=return(EIO)", Fails(7, "failpoint store.put")),
        true,
    ),
    (case("store.put=stop", Killed), false),
    (case("fsutil.commit=stop", Killed), true),
];

/// A rekey from `old` to `new` (and to a new data key when `rotate`).
fn rekey(
    repo: &Path,
    old: &str,
    new: &str,
    rotate: bool,
    failpoints: &str,
) -> support::faults::Faulted {
    let mut args = vec!["rekey", "--repo", s(repo)];
    if rotate {
        args.push("--rotate-data-key");
    }
    support::faults::Faulted::spawn(
        &args,
        Some(old),
        failpoints,
        &[("PGSTREAM_NEW_PASSPHRASE", new)],
    )
}

/// `wal-fetch` of the history file with `passphrase`.
fn fetch_with(repo: &Path, passphrase: &str, dest: &Path) -> Run {
    let _ = std::fs::remove_file(dest);
    pgstream(
        &["wal-fetch", "--repo", s(repo), "00000002.history", s(dest)],
        Some(passphrase),
    )
}

#[test]
fn rekey_fails_cleanly_at_every_failpoint_and_the_old_passphrase_still_opens() {
    let started = Instant::now();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    KEY.init_repo(&repo);
    // Something encrypted with the data key: a timeline history file, archived.
    let history = scratch.path().join("00000002.history");
    let content = b"1\t0/3000000\tno recovery target specified\n";
    std::fs::write(&history, content).unwrap();
    ok(
        KEY.pgstream(&["archive-push", "--repo", s(&repo), s(&history)]),
        "archive-push",
    );
    let dest = scratch.path().join("fetched");
    let new = "the new rekey passphrase";
    for (c, rotate) in REKEY_CASES {
        let ctx = format!("{} (rotate: {rotate})", c.failpoints);
        let p = rekey(&repo, KEY.0, new, *rotate, c.failpoints);
        match c.outcome {
            Fails(code, text) => {
                let run = p.wait(60);
                assert_eq!(run.code, code, "{ctx}: {run:?}");
                let line = support::faults::error_line(&run, &ctx);
                assert!(line.contains(text), "{ctx}: {line}");
            }
            _ => {
                let mut p = p;
                assert!(p.wait_stopped(60), "{ctx}: exited before its failpoint");
                p.kill9();
            }
        }
        // Nothing changed: the old passphrase opens the repository and its files, the new
        // one does not.
        let run = fetch_with(&repo, KEY.0, &dest);
        assert_eq!(run.code, 0, "{ctx}: {run:?}");
        assert_eq!(std::fs::read(&dest).unwrap(), content);
        let run = fetch_with(&repo, new, &dest);
        assert_eq!(run.code, 5, "{ctx}: the new passphrase opens it: {run:?}");
    }
    // The next rekey (and rotation) completes: the new passphrase opens everything (the old
    // data key stays in the keyring for reading), the old passphrase nothing.
    let run = rekey(&repo, KEY.0, new, true, "").wait(60);
    assert_eq!(run.code, 0, "{run:?}");
    let run = fetch_with(&repo, new, &dest);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), content);
    assert_eq!(fetch_with(&repo, KEY.0, &dest).code, 5);
    // The config written by the killed rekey under its temporary name: removed by expire
    // (which then finds no backup: exit 5).
    let root_temps = temporaries(&repo);
    assert_eq!(root_temps.len(), 1, "{root_temps:?}");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&root_temps[0])
        .unwrap()
        .set_modified(old)
        .unwrap();
    let expire = pgstream(
        &["expire", "--repo", s(&repo), "--keep-last", "1"],
        Some(new),
    );
    assert_eq!(expire.code, 5, "{expire:?}");
    assert_eq!(temporaries(&repo), Vec::<PathBuf>::new());
    elapsed(
        &format!("{} rekey failpoint cases", REKEY_CASES.len()),
        started,
    );
}

// ---------------------------------------------------------------------------------------------
// copy

const COPY_PASS: &str = "the copy destination's own passphrase";

/// Cases in the order a copy into a fresh, unbound destination meets them.
const COPY_CASES: &[Case] = &[
    // Binding the destination to the source's cluster is its first write.
    case("store.put=return(EIO)", Fails(7, "failpoint store.put")),
    case("store.lease=return(EIO)", Fails(7, "failpoint store.lease")),
    // The first WAL segment or backup file committed at the destination.
    case(
        "store.commit=return(EIO)",
        Fails(7, "failpoint store.commit"),
    ),
    case("store.commit=stop", Killed),
    case("copy.before-record=stop", Killed),
];

/// `copy` at every failpoint on its way: the failure is reported, the destination shows no
/// backup, and the next copy completes and verifies. A fresh destination for each case.
#[test]
fn copy_fails_cleanly_at_every_failpoint_and_the_next_run_finishes() {
    let pg = newest_cluster();
    let scratch = scratch_dir();
    let from = scratch.path().join("main");
    KEY.init_repo(&from);
    let base = ok(
        KEY.pgstream(&[
            "base",
            "--repo",
            s(&from),
            "--source",
            &pg.conninfo("postgres"),
            "--no-progress",
            "--json",
        ]),
        "base",
    );
    let record: serde_json::Value = serde_json::from_str(&base.stdout).unwrap();
    let id = record["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    for (n, c) in COPY_CASES.iter().enumerate() {
        let ctx = format!("copy, {}", c.failpoints);
        let to = scratch.path().join(format!("offsite-{n}"));
        ok(
            pgstream(&["init", "--repo", s(&to)], Some(COPY_PASS)),
            "init",
        );
        let args = ["copy", "--from", s(&from), "--to", s(&to), "--wal"];
        let env = [("PGSTREAM_TO_PASSPHRASE", COPY_PASS)];
        run_case(c, &args, Some(KEY.0), &env, &ctx, || {});
        assert_eq!(
            listed_ids(&to, COPY_PASS, &ctx),
            Vec::<String>::new(),
            "{ctx}: a backup is visible at the destination after the failure"
        );
        let mut again = support::pgstream_command(&args, Some(KEY.0));
        again.env("PGSTREAM_TO_PASSPHRASE", COPY_PASS);
        let out = again.output().unwrap();
        assert!(
            out.status.success(),
            "{ctx}: the next copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(listed_ids(&to, COPY_PASS, &ctx), vec![id.clone()], "{ctx}");
        verify_clean(&to, COPY_PASS, None, &ctx);
    }
    elapsed("copy cases", started);
}
