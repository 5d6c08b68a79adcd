//! Rough edges a new user hit (issue 16), one regression test each. The subjects do not depend
//! on the version: newest major only, where a server is needed.

mod support;

use std::time::{Duration, Instant};

use integration::cluster;
use support::{newest_major, pgstream};

/// A host that accepts the TCP connection but never answers: the listener is never accepted
/// from, so the kernel completes the handshake and nothing more comes.
#[test]
fn host_that_accepts_but_never_answers_times_out_after_the_default_connect_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let run = pgstream(
        &[
            "check",
            "--source",
            &format!("host=127.0.0.1 port={port} user=backup sslmode=disable"),
        ],
        None,
    );
    let took = started.elapsed();
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains("timed out after 30 s") && run.stderr.contains("connect_timeout"),
        "{run:?}"
    );
    assert!(
        took >= Duration::from_secs(29) && took < Duration::from_secs(60),
        "{took:?}"
    );
    drop(silent);
}

#[test]
fn check_as_a_role_without_its_own_database_falls_back_to_dbname_postgres() {
    let pg = cluster(newest_major()).start();
    pg.psql("CREATE ROLE nodb LOGIN REPLICATION");
    // No dbname: libpq's default is the role's name, and there is no database `nodb`.
    let conninfo = format!(
        "host={} port={} user=nodb sslmode=disable",
        pg.host(),
        pg.port()
    );
    let run = pgstream(&["check", "--source", &conninfo], None);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("all "), "{run:?}");
    // Regression: the version was printed as server_version_num (150018).
    let version = pg.psql("SHOW server_version");
    let num = pg.psql("SHOW server_version_num");
    assert!(
        run.stdout.contains(&format!(
            "OK       server version: PostgreSQL {version} ({num})"
        )),
        "{run:?}"
    );
}

#[test]
fn base_refused_for_a_role_without_replication_prints_the_alter_role_fix() {
    let pg = cluster(newest_major()).start();
    pg.psql("CREATE ROLE plain LOGIN");
    let scratch = integration::scratch_dir();
    let repo = scratch.path().join("repo");
    support::init_repo(&repo, "rough edges");
    let run = pgstream(
        &[
            "base",
            "--repo",
            repo.to_str().unwrap(),
            "--source",
            &pg.conninfo("plain"),
        ],
        Some("rough edges"),
    );
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr.contains(
            "pgstream: hint: the role needs the REPLICATION attribute; as a superuser run: \
             ALTER ROLE plain WITH REPLICATION;"
        ),
        "{run:?}"
    );
}

#[test]
fn log_lines_written_to_a_pipe_have_no_ansi_colour_codes() {
    // A refused connection logs each attempt (INFO) before the error.
    let port = integration::free_port();
    let run = pgstream(
        &[
            "status",
            "--repo",
            "/nonexistent",
            "--source",
            &format!("host=127.0.0.1 port={port} user=backup sslmode=disable"),
        ],
        None,
    );
    assert!(run.stderr.contains("INFO"), "{run:?}");
    assert!(
        !run.stderr.contains('\u{1b}'),
        "escape codes in {:?}",
        run.stderr
    );
    assert!(
        !run.stdout.contains('\u{1b}'),
        "escape codes in {:?}",
        run.stdout
    );
}
