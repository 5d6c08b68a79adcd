//! `pgstream demo` end to end, as `just demo` runs it: a throwaway cluster, receive-wal, a base
//! backup under pgbench load, a drill to a time between rows, the report, and nothing left
//! behind (no process, no directory), also after a Ctrl-C (with the SQL load generator that
//! replaces a missing pgbench). The demo's subject does not depend on the version, so it runs on
//! the newest major under test only, at pgbench scale 1.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{os_user, s};

/// The demo's arguments: small, short, in `dir`, with the binaries in `bin`.
fn demo_args(dir: &Path, bin: &Path, load_seconds: u32) -> Vec<String> {
    let mut args: Vec<String> = [
        "demo",
        "--scale",
        "1",
        "--load-seconds",
        &load_seconds.to_string(),
        "--pg-bin",
        s(bin),
        "--dir",
        s(dir),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    // As root, the demo runs everything as the harness's server user.
    args.extend(
        os_user()
            .into_iter()
            .flat_map(|name| ["--os-user".to_string(), name]),
    );
    args
}

/// A directory of links to the newest major's binaries, without pgbench.
fn bin_without_pgbench(parent: &Path) -> std::path::PathBuf {
    let bin = parent.join("bin");
    std::fs::create_dir(&bin).unwrap();
    for entry in std::fs::read_dir(integration::pg_bin_dir(support::newest_major())).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "pgbench" {
            std::os::unix::fs::symlink(entry.path(), bin.join(entry.file_name())).unwrap();
        }
    }
    bin
}

/// Processes whose command line mentions `dir` (servers, receive-wal, pgbench, a drill's
/// server), other than this test's own.
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

fn assert_nothing_left(dir: &Path) {
    assert!(!dir.exists(), "{} was not removed", dir.display());
    // A stopped child may take a moment to be reaped by init.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_using(dir);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes left behind:\n{}",
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn demo_backs_up_under_load_drills_to_the_target_and_leaves_nothing_behind() {
    let scratch = integration::scratch_dir();
    let dir = scratch.path().join("demo");
    let bin = integration::pg_bin_dir(support::newest_major());
    let args = demo_args(&dir, &bin, 3);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = support::pgstream(&args, None);
    assert_eq!(run.code, 0, "pgstream demo failed: {run:?}");
    for expected in [
        "$ pgstream init --repo",
        "$ pgstream receive-wal",
        "$ pgstream base",
        "$ pgstream switch-wal",
        "$ pgstream verify",
        "$ pgstream drill",
        "--target-time",
        "# pgstream restore drill: PASS",
        "| check-sql | demo | PASS",
        "pgstream demo: PASS",
    ] {
        assert!(
            run.stdout.contains(expected),
            "{expected:?} missing from the demo's output: {run:?}"
        );
    }
    // The generated password is never printed (the passphrase is only ever in its file).
    for (i, _) in run.stdout.match_indices("PASSWORD '") {
        assert!(
            run.stdout[i..].starts_with("PASSWORD '…'"),
            "a password was printed: {run:?}"
        );
    }
    assert!(!run.stdout.contains("password="), "{run:?}");
    assert_nothing_left(&dir);
}

#[test]
fn demo_interrupted_by_ctrl_c_stops_everything_and_removes_its_directory_sql_load() {
    let scratch = integration::scratch_dir();
    let dir = scratch.path().join("demo");
    // The newest major's binaries without pgbench, so that the SQL load generator runs.
    let bin = bin_without_pgbench(scratch.path());
    // A long load, so that the interruption finds receive-wal, the load and the server running.
    let args = demo_args(&dir, &bin, 60);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = support::pgstream_command(&args, None)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting pgstream demo");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = String::new();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the demo ended before its base backup step:\n{seen}"))
            .unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("$ pgstream base") {
            break;
        }
    }
    assert!(seen.contains("SQL load generator"), "{seen}");
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(130),
        "the interrupted demo did not exit 130:\n{seen}{}\n--- stderr\n{stderr}",
        rest.join("\n")
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_nothing_left(&dir);
}

#[test]
fn demo_without_server_binaries_says_how_to_get_them() {
    let scratch = integration::scratch_dir();
    let dir = scratch.path().join("demo");
    let missing = scratch.path().join("no-such-bin");
    let run = support::pgstream(&["demo", "--pg-bin", s(&missing), "--dir", s(&dir)], None);
    assert_eq!(run.code, 2, "{run:?}");
    for expected in [
        "no runnable postgres",
        "apt-get install postgresql",
        "just install-postgres",
    ] {
        assert!(
            run.stderr.contains(expected),
            "{expected:?} missing: {run:?}"
        );
    }
    // A major that is nowhere: the search is named, and so is what to install.
    let out = support::pgstream_command(&["demo", "--major", "99", "--dir", s(&dir)], None)
        .env("PGSTREAM_PG_ROOT", scratch.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("PostgreSQL 99 server binaries") && stderr.contains("install-postgres.sh"),
        "{stderr}"
    );
    assert!(!dir.exists(), "the refused demo created {}", dir.display());
}

#[test]
fn demo_refuses_an_existing_dir_and_leaves_it_untouched() {
    let scratch = integration::scratch_dir();
    let dir = scratch.path().join("mine");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("keep.txt"), "precious").unwrap();
    let bin = integration::pg_bin_dir(support::newest_major());
    let args = demo_args(&dir, &bin, 1);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = support::pgstream(&args, None);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("already exists"), "{run:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("keep.txt")).unwrap(),
        "precious"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[test]
fn demo_step_that_fails_exits_12_naming_the_step_and_cleans_up() {
    let scratch = integration::scratch_dir();
    let dir = scratch.path().join("demo");
    // The newest major's binaries with a pgbench that fails: the data-loading step fails after
    // the cluster is running.
    let bin = bin_without_pgbench(scratch.path());
    let pgbench = bin.join("pgbench");
    std::fs::write(
        &pgbench,
        "#!/bin/sh\necho 'pgbench: simulated failure' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &pgbench,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let args = demo_args(&dir, &bin, 1);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = support::pgstream(&args, None);
    assert_eq!(run.code, 12, "{run:?}");
    assert!(
        run.stderr.contains("step 3/10 (loading data) failed")
            && run.stderr.contains("pgbench exited with code 3"),
        "{run:?}"
    );
    // The server log's end is shown before the directory goes.
    assert!(
        run.stderr.contains("server.log (run with --keep"),
        "{run:?}"
    );
    assert!(run.stdout.contains("Removed"), "{run:?}");
    assert!(!run.stdout.contains("pgstream demo: PASS"), "{run:?}");
    assert_nothing_left(&dir);
}
