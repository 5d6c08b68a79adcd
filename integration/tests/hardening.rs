//! Regression tests for the defects of issue 11 that only show end to end, each named after its
//! defect. They do not depend on the server version, so they run on the newest major only.

mod support;

use std::process::Stdio;

use support::{init_repo, newest_cluster_and_repo_path, ok, pgstream, pgstream_command, s};

const PASSPHRASE: &str = "hardening test passphrase";

/// Regression: `pgstream list | head` panicked ("failed printing to stdout: Broken pipe") when
/// the reader went away. Now any command whose stdout is closed stops quietly with exit 141.
#[test]
fn closed_stdout_exits_141_without_a_panic() {
    let (pg, _scratch, repo) = newest_cluster_and_repo_path();
    init_repo(&repo, PASSPHRASE);
    for _ in 0..3 {
        ok(
            pgstream(
                &[
                    "base",
                    "--repo",
                    s(&repo),
                    "--source",
                    &pg.conninfo("postgres"),
                    "--no-progress",
                ],
                Some(PASSPHRASE),
            ),
            "base",
        );
    }
    let listed = ok(
        pgstream(&["list", "--repo", s(&repo)], Some(PASSPHRASE)),
        "list",
    );
    assert!(listed.stdout.lines().count() > 3, "{listed:?}");

    for args in [
        &["list", "--repo", s(&repo)][..],
        &["list", "--json", "--repo", s(&repo)],
        &["verify", "--repo", s(&repo)],
        &["--help"],
    ] {
        // A pipe whose reader has already gone: the first write fails with EPIPE, every time
        // (a reader such as `head -n 1` closes only after the output fits its pipe).
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = pgstream_command(args, Some(PASSPHRASE))
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr, "", "{args:?}: quietly");
    }
}
