//! The WAL archive on S3: `archive-push` as a real server's archive_command and a point-in-time
//! restore whose restore_command (`pgstream wal-fetch`, written by `restore`) reaches S3
//! through a shared credentials file, with no secret in postgresql.auto.conf; pushing the same
//! segment again succeeds, other bytes under an archived name are refused; and a restore whose
//! credentials came only from the environment is refused before anything is written.

mod support;

use integration::{server_user, S3Server};
use support::restored::start_promoted;
use support::s3repo::{credentials_file, server_command, setup_run, setup_run_env};
use support::setup::Setup;
use support::{ok, s};

const PASSPHRASE: &str = "s3 archive passphrase";
const SEG: usize = 16 << 20;

fn auto_conf(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap()
}

#[test]
fn archive_command_and_point_in_time_restore_through_s3() {
    for major in integration::test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let s3 = S3Server::start();
        let setup = Setup::new(PASSPHRASE);
        let creds = credentials_file(&setup, &s3, "backup");
        let repo = s3.location(&format!("pg{major}"));
        ok(
            setup_run(&setup, &s3, &["init", "--repo", &repo], true),
            "init",
        );
        let archive_command =
            server_command(&setup, &s3, &creds, "backup", &repo, "archive-push", "%p");
        let pg = integration::cluster(major)
            .setting("archive_mode", "on")
            .setting("archive_command", &archive_command)
            .start();
        pg.psql("CREATE TABLE t (id int PRIMARY KEY, note text)");
        ok(
            setup_run(
                &setup,
                &s3,
                &[
                    "base",
                    "--repo",
                    &repo,
                    "--source",
                    &pg.conninfo("postgres"),
                    "--no-progress",
                ],
                true,
            ),
            "base",
        );
        pg.psql("INSERT INTO t VALUES (1, 'before')");
        let t1 = pg.psql("SELECT now()");
        std::thread::sleep(std::time::Duration::from_millis(50));
        pg.psql("INSERT INTO t VALUES (2, 'after')");
        support::archiving::sql_switch_and_archive(&pg);

        // `check --archive-push` accepts the command (no secret in it to complain about).
        let check = support::pgstream(
            &[
                "check",
                "--source",
                &pg.conninfo("postgres"),
                "--archive-push",
            ],
            None,
        );
        assert!(
            check
                .stdout
                .lines()
                .any(|l| l.starts_with("OK") && l.contains("archive_command:")),
            "{ctx}: {check:?}"
        );

        // Archived segments are objects under wal/, and come back byte for byte.
        let pg_wal = pg.data_dir().join("pg_wal");
        let done: Vec<String> = std::fs::read_dir(pg_wal.join("archive_status"))
            .unwrap()
            .filter_map(|e| {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                n.strip_suffix(".done")
                    .filter(|seg| seg.len() == 24)
                    .map(str::to_string)
            })
            .collect();
        assert!(!done.is_empty(), "{ctx}: nothing archived");
        let seg = done.iter().min().unwrap().clone();
        let fetched = setup.path("fetched");
        std::fs::create_dir_all(&fetched).unwrap();
        server_user().chown(&fetched);
        let dest = fetched.join(&seg);
        ok(
            setup_run(
                &setup,
                &s3,
                &["wal-fetch", "--repo", &repo, &seg, s(&dest)],
                true,
            ),
            "wal-fetch",
        );
        let on_disk = std::fs::read(pg_wal.join(&seg)).unwrap();
        assert!(std::fs::read(&dest).unwrap() == on_disk, "{ctx}: {seg}");

        // Pushing the same bytes again succeeds; other bytes under the name are refused.
        let push = |path: &std::path::Path| {
            setup_run(
                &setup,
                &s3,
                &["archive-push", "--repo", &repo, s(path)],
                true,
            )
        };
        ok(push(&pg_wal.join(&seg)), "archive-push again");
        let other_dir = setup.dir("other");
        let other = other_dir.join(&seg);
        let mut changed = on_disk.clone();
        changed[SEG / 2] ^= 0xFF;
        std::fs::write(&other, &changed).unwrap();
        server_user().chown(&other);
        let run = push(&other);
        assert_eq!(run.code, 5, "{ctx}: conflicting push: {run:?}");
        assert!(run.stderr.contains(&seg), "{ctx}: {run:?}");

        // A restore to t1: restore_command names the credentials file, never the secret.
        let dir = setup.path("restored");
        let run = setup_run_env(
            &setup,
            &s3,
            &[
                "--s3-credentials-file",
                s(&creds),
                "restore",
                "--repo",
                &repo,
                "--to",
                s(&dir),
                "--target-time",
                &t1,
                "--target-action",
                "promote",
            ],
            true,
            &[("AWS_PROFILE", "backup")],
        );
        ok(run, "restore --target-time");
        // The profile is carried too.
        assert!(auto_conf(&dir).contains("AWS_PROFILE=''backup''"), "{ctx}");
        let auto = auto_conf(&dir);
        assert!(
            auto.contains("wal-fetch") && auto.contains(s(&creds)),
            "{ctx}: {auto}"
        );
        assert!(auto.contains(&s3.endpoint()), "{ctx}: {auto}");
        assert!(
            !auto.contains(s3.secret_key()) && !auto.contains(PASSPHRASE),
            "{ctx}: a secret was written: {auto}"
        );
        let restored = start_promoted(major, &dir);
        assert_eq!(
            restored.psql("SELECT string_agg(note, ',' ORDER BY id) FROM t"),
            "before",
            "{ctx}"
        );
        // It fetched WAL from S3 (the backup's own WAL ends before the insert).
        let log = restored.server_log();
        assert!(log.contains("restored log file"), "{ctx}: {log}");
    }
}

#[test]
fn a_restore_with_environment_credentials_only_is_refused() {
    let major = support::newest_major();
    let s3 = S3Server::start();
    let setup = Setup::new(PASSPHRASE);
    let repo = s3.location("envonly");
    ok(
        setup_run(&setup, &s3, &["init", "--repo", &repo], true),
        "init",
    );
    let pg = integration::cluster(major).start();
    ok(
        setup_run(
            &setup,
            &s3,
            &[
                "base",
                "--repo",
                &repo,
                "--source",
                &pg.conninfo("postgres"),
                "--no-progress",
            ],
            true,
        ),
        "base",
    );
    let dir = setup.path("restored");
    let run = setup_run(
        &setup,
        &s3,
        &[
            "restore",
            "--repo",
            &repo,
            "--to",
            s(&dir),
            "--target-latest",
        ],
        true,
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("--s3-credentials-file") && run.stderr.contains("AWS_ACCESS_KEY_ID"),
        "{run:?}"
    );
    assert!(
        !dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none(),
        "the refused restore wrote into {}",
        dir.display()
    );
    // --copy-wal needs no restore_command: allowed.
    ok(
        setup_run(
            &setup,
            &s3,
            &[
                "restore",
                "--repo",
                &repo,
                "--to",
                s(&dir),
                "--target-latest",
                "--copy-wal",
            ],
            true,
        ),
        "restore --copy-wal",
    );
}
