//! `pgstream copy` end to end: a base backup copied into a second repository with its own
//! passphrase, restored from the copy (pg_verifybackup, pg_dumpall against the source); a
//! second copy writes nothing; a damaged source file fails the copy naming it and leaves no
//! backup at the destination; a copy killed with -9 before its record is finished by the next;
//! local → S3 → local, restored from the final copy; an incremental backup copied with its chain.

mod support;

use std::path::Path;
use std::process::Command;

use integration::{client_tool, client_tool_major, cluster, scratch_dir, test_majors, Cluster};
use support::{files_under, newest_major, ok, pgstream, pgstream_command, s, Run};

const SOURCE_PASS: &str = "source passphrase for copy tests";
const OFFSITE_PASS: &str = "a different offsite passphrase";

fn run_tool(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dumpall(pg: &Cluster) -> String {
    let mut cmd = Command::new(client_tool(pg.major(), "pg_dumpall"));
    cmd.arg("-d").arg(pg.conninfo("postgres"));
    run_tool(cmd, "pg_dumpall")
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A cluster with pgbench data, backed up into an encrypted repository `from`, and an empty
/// repository `to` initialised with another passphrase. Returns the backup id.
fn backed_up(major: u32, from: &Path, to: &Path) -> (Cluster, String) {
    let pg = cluster(major).start();
    let mut bench = Command::new(client_tool(major, "pgbench"));
    bench
        .args(["-i", "-q", "-s", "1", "-d"])
        .arg(pg.conninfo("postgres"));
    run_tool(bench, "pgbench -i");
    ok(
        pgstream(&["init", "--repo", s(from)], Some(SOURCE_PASS)),
        "init",
    );
    ok(
        pgstream(&["init", "--repo", s(to)], Some(OFFSITE_PASS)),
        "init",
    );
    let run = ok(
        pgstream(
            &[
                "base",
                "--repo",
                s(from),
                "--source",
                &pg.conninfo("postgres"),
                "--json",
            ],
            Some(SOURCE_PASS),
        ),
        "base",
    );
    let record: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    (pg, record["id"].as_str().unwrap().to_string())
}

/// `pgstream copy` with the source's passphrase in PGSTREAM_PASSPHRASE and the destination's
/// in PGSTREAM_TO_PASSPHRASE.
fn copy_command(from: &Path, to: &Path, extra: &[&str]) -> Command {
    let mut args = vec!["copy", "--from", s(from), "--to", s(to)];
    args.extend_from_slice(extra);
    let mut cmd = pgstream_command(&args, Some(SOURCE_PASS));
    cmd.env("PGSTREAM_TO_PASSPHRASE", OFFSITE_PASS);
    cmd
}

fn run(mut cmd: Command) -> Run {
    let out = cmd.output().expect("running pgstream");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn copy_json(from: &Path, to: &Path) -> serde_json::Value {
    let r = ok(run(copy_command(from, to, &["--json"])), "copy");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("copy --json: {e}: {r:?}"))
}

fn record_path(repo: &Path, id: &str) -> std::path::PathBuf {
    repo.join("backups").join(id).join("backup.json")
}

#[test]
fn copy_restores_verifies_and_matches_the_source_and_again_is_a_no_op() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let scratch = scratch_dir();
        let (from, to) = (scratch.path().join("main"), scratch.path().join("offsite"));
        let (pg, id) = backed_up(major, &from, &to);

        let first = copy_json(&from, &to);
        assert_eq!(
            first["backups_copied"],
            serde_json::json!([id]),
            "{ctx}: {first}"
        );
        assert!(
            first["wal_files_copied"].as_u64().unwrap() >= 1,
            "{ctx}: {first}"
        );
        assert_eq!(first["destination_bound"], true, "{ctx}: {first}");
        let second = copy_json(&from, &to);
        assert_eq!(
            second["backups_copied"],
            serde_json::json!([]),
            "{ctx}: {second}"
        );
        assert_eq!(
            second["backups_present"],
            serde_json::json!([id]),
            "{ctx}: {second}"
        );
        assert_eq!(second["bytes_written"], 0, "{ctx}: {second}");
        let human = ok(run(copy_command(&from, &to, &[])), "copy");
        assert!(
            human
                .stdout
                .contains(&format!("backups already there:   {id}")),
            "{ctx}: {human:?}"
        );

        // The copy opens with its own passphrase only, and verifies.
        let wrong = pgstream(&["verify", "--repo", s(&to)], Some(SOURCE_PASS));
        assert_eq!(wrong.code, 5, "{ctx}: {wrong:?}");
        ok(
            pgstream(&["verify", "--repo", s(&to)], Some(OFFSITE_PASS)),
            "verify the copy",
        );

        let target = scratch.path().join("restored");
        ok(
            pgstream(
                &["restore", "--repo", s(&to), "--to", s(&target)],
                Some(OFFSITE_PASS),
            ),
            "restore from the copy",
        );
        let (verify, tool_major) = client_tool_major(major, "pg_verifybackup");
        let mut cmd = Command::new(verify);
        if tool_major != major {
            cmd.arg("-n");
        }
        cmd.arg(&target);
        run_tool(cmd, "pg_verifybackup");
        let restored = cluster(major).restored_data_dir(&target).start();
        assert!(
            dumpall(&pg) == dumpall(&restored),
            "{ctx}: pg_dumpall differs"
        );
    }
}

#[test]
fn a_flipped_byte_in_the_source_fails_naming_the_file_and_shows_no_backup() {
    let scratch = scratch_dir();
    let (from, to) = (scratch.path().join("main"), scratch.path().join("offsite"));
    let (_pg, id) = backed_up(newest_major(), &from, &to);
    let base = files_under(&from.join("backups").join(&id))
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("base.tar")
        })
        .unwrap();
    let mut bytes = std::fs::read(&base).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&base, bytes).unwrap();

    let r = run(copy_command(&from, &to, &[]));
    assert_eq!(r.code, 6, "{r:?}");
    let named = base
        .strip_prefix(&from)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(r.stderr.contains(&named), "{r:?}");
    assert!(!record_path(&to, &id).exists());
    let listed = ok(
        pgstream(&["list", "--repo", s(&to), "--json"], Some(OFFSITE_PASS)),
        "list",
    );
    assert!(!listed.stdout.contains(&id), "{listed:?}");
}

#[test]
fn a_copy_killed_before_its_record_is_finished_by_the_next_run() {
    let scratch = scratch_dir();
    let (from, to) = (scratch.path().join("main"), scratch.path().join("offsite"));
    let (_pg, id) = backed_up(newest_major(), &from, &to);

    let mut cmd = copy_command(&from, &to, &[]);
    cmd.env("PGSTREAM_FAILPOINTS", "copy.before-record=pause")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    // Every file is there once the manifest is (it is copied after the archives).
    let dir = to.join("backups").join(&id);
    support::wait_until("the copy reaches its record", || {
        dir.exists()
            && std::fs::read_dir(&dir).unwrap().flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("backup_manifest")
            })
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !record_path(&to, &id).exists(),
        "no record before the commit"
    );

    let again = copy_json(&from, &to);
    assert_eq!(again["backups_copied"], serde_json::json!([id]), "{again}");
    assert!(record_path(&to, &id).exists());
    ok(
        pgstream(&["verify", "--repo", s(&to)], Some(OFFSITE_PASS)),
        "verify the copy",
    );
}

#[test]
fn a_destination_of_another_cluster_is_refused() {
    let scratch = scratch_dir();
    let (from, to) = (scratch.path().join("main"), scratch.path().join("offsite"));
    let (_pg, _id) = backed_up(newest_major(), &from, &to);
    let other = cluster(newest_major()).start();
    ok(
        pgstream(
            &[
                "base",
                "--repo",
                s(&to),
                "--source",
                &other.conninfo("postgres"),
            ],
            Some(OFFSITE_PASS),
        ),
        "base of another cluster",
    );
    // The destination's passphrase is required, and never the source's in its place.
    let mut no_pass = copy_command(&from, &to, &[]);
    no_pass.env_remove("PGSTREAM_TO_PASSPHRASE");
    let r = run(no_pass);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("PGSTREAM_TO_PASSPHRASE"), "{r:?}");
    let r = run(copy_command(&from, &to, &[]));
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.stderr.contains("belongs to the cluster"), "{r:?}");
}

/// `pgstream copy` between repositories `from` and `to` (either may be an `s3://` location),
/// with the S3 server's environment and the two passphrases.
fn copy_via_s3(
    s3: &integration::S3Server,
    from: &str,
    from_pass: &str,
    to: &str,
    to_pass: &str,
) -> serde_json::Value {
    let mut cmd = pgstream_command(
        &["copy", "--from", from, "--to", to, "--wal", "--json"],
        Some(from_pass),
    );
    cmd.env("PGSTREAM_TO_PASSPHRASE", to_pass).envs(s3.env());
    let r = ok(run(cmd), "copy");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("copy --json: {e}: {r:?}"))
}

#[test]
fn local_to_s3_to_local_restores_from_the_final_copy() {
    const LAST_PASS: &str = "the passphrase of the copy of the copy";
    let major = newest_major();
    let s3 = integration::S3Server::start();
    let scratch = scratch_dir();
    let (from, to) = (scratch.path().join("main"), scratch.path().join("back"));
    let (pg, id) = backed_up(major, &from, &to);
    // `to` was initialised with OFFSITE_PASS by backed_up; the final copy gets its own.
    std::fs::remove_dir_all(&to).unwrap();
    ok(
        pgstream(&["init", "--repo", s(&to)], Some(LAST_PASS)),
        "init",
    );
    let bucket = s3.location("offsite");
    let mut init = pgstream_command(&["init", "--repo", &bucket], Some(OFFSITE_PASS));
    init.envs(s3.env());
    ok(run(init), "init in S3");

    let up = copy_via_s3(&s3, s(&from), SOURCE_PASS, &bucket, OFFSITE_PASS);
    assert_eq!(up["backups_copied"], serde_json::json!([id]), "{up}");
    let down = copy_via_s3(&s3, &bucket, OFFSITE_PASS, s(&to), LAST_PASS);
    assert_eq!(down["backups_copied"], serde_json::json!([id]), "{down}");
    assert_eq!(down["wal_files_copied"], up["wal_files_copied"], "{down}");
    let again = copy_via_s3(&s3, s(&from), SOURCE_PASS, &bucket, OFFSITE_PASS);
    assert_eq!(again["bytes_written"], 0, "{again}");
    // The backup really went through the bucket.
    assert!(!s3.keys("offsite/backups/").is_empty());

    let target = scratch.path().join("restored");
    ok(
        pgstream(
            &["restore", "--repo", s(&to), "--to", s(&target)],
            Some(LAST_PASS),
        ),
        "restore from the final copy",
    );
    let (verify, tool_major) = client_tool_major(major, "pg_verifybackup");
    let mut cmd = Command::new(verify);
    if tool_major != major {
        cmd.arg("-n");
    }
    cmd.arg(&target);
    run_tool(cmd, "pg_verifybackup");
    let restored = cluster(major).restored_data_dir(&target).start();
    assert!(dumpall(&pg) == dumpall(&restored), "pg_dumpall differs");
}

/// An incremental backup (17+) copied alone (`--backup latest`) brings its whole chain, full
/// backup first: the copy restores it (pg_verifybackup, pg_dumpall equal to the source), and
/// list at the destination shows the chain.
#[test]
fn an_incremental_backup_is_copied_with_its_chain() {
    use support::incremental::{self as inc, PASSPHRASE};
    for major in inc::incremental_majors() {
        let ctx = format!("PostgreSQL {major}");
        let scratch = scratch_dir();
        let (from, to) = (scratch.path().join("main"), scratch.path().join("offsite"));
        let pg = inc::summarizing(major).start();
        pg.psql("CREATE TABLE t AS SELECT g AS n FROM generate_series(1, 10000) g");
        ok(
            pgstream(&["init", "--repo", s(&from)], Some(PASSPHRASE)),
            "init",
        );
        ok(
            pgstream(&["init", "--repo", s(&to)], Some(OFFSITE_PASS)),
            "init",
        );
        let full = inc::base(&from, &pg, &[]);
        pg.psql("INSERT INTO t SELECT g FROM generate_series(10001, 12000) g");
        inc::settle(&pg);
        let incremental = inc::base(&from, &pg, &["--incremental"]);
        assert_eq!(
            incremental["incremental"]["parent"], full["id"],
            "{ctx}: {incremental}"
        );
        let want = inc::dumpall(&pg);

        let mut cmd = pgstream_command(
            &[
                "copy",
                "--from",
                s(&from),
                "--to",
                s(&to),
                "--backup",
                "latest",
                "--json",
            ],
            Some(PASSPHRASE),
        );
        cmd.env("PGSTREAM_TO_PASSPHRASE", OFFSITE_PASS);
        let r = ok(run(cmd), "copy --backup latest");
        let summary: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(
            summary["backups_copied"],
            serde_json::json!([full["id"], incremental["id"]]),
            "{ctx}: the chain, full backup first: {summary}"
        );
        // Both backups verify at the copy. The WAL between them is archived at neither end
        // (no receive-wal here): verify reports that gap at both, and nothing else.
        let id = incremental["id"].as_str().unwrap();
        let at_source = pgstream(&["verify", "--repo", s(&from)], Some(PASSPHRASE));
        let at_copy = pgstream(&["verify", "--repo", s(&to)], Some(OFFSITE_PASS));
        for b in [&full["id"], &incremental["id"]] {
            let line = format!("backup {}: OK", b.as_str().unwrap());
            assert!(at_copy.stdout.contains(&line), "{ctx}: {at_copy:?}");
        }
        assert_eq!(
            (at_copy.code, at_copy.stdout.lines().count()),
            (at_source.code, at_source.stdout.lines().count()),
            "{ctx}: the copy verifies as the source does: {at_source:?} {at_copy:?}"
        );
        let target = scratch.path().join("restored");
        ok(
            pgstream(
                &[
                    "restore",
                    "--repo",
                    s(&to),
                    "--to",
                    s(&target),
                    "--backup",
                    id,
                ],
                Some(OFFSITE_PASS),
            ),
            "restore the incremental from the copy",
        );
        inc::verifybackup(major, &target);
        let restored = cluster(major).restored_data_dir(&target).start();
        inc::assert_same_dump(&ctx, &want, &inc::dumpall(&restored));
    }
}
