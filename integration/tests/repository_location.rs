//! `--repo` takes a location, not only a path: `file:///path` works for every command, the
//! `restore_command` a restore writes reaches the repository by an absolute location, and
//! locations this build cannot serve are refused with exit code 2 and a clear message (s3://
//! locations: s3_repository.rs, s3_errors.rs). Not version dependent: the newest major only.

mod support;

use integration::cluster;
use support::restored::start_promoted;
use support::setup::Setup;
use support::{newest_major, ok};

const PASSPHRASE: &str = "location test passphrase";

#[test]
fn a_file_url_serves_every_command_and_the_restore_command() {
    let major = newest_major();
    let ctx = format!("PostgreSQL {major}");
    let setup = Setup::new(PASSPHRASE);
    let url = format!("file://{}", setup.repo.display());
    let pg = cluster(major).start();
    pg.psql("CREATE TABLE loc (note text); INSERT INTO loc VALUES ('in the backup')");
    ok(
        setup.run(
            &[
                "base",
                "--repo",
                &url,
                "--source",
                &pg.conninfo("postgres"),
                "--no-progress",
            ],
            true,
        ),
        "base through a file URL",
    );
    let list = ok(setup.run(&["list", "--repo", &url, "--json"], true), "list");
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(v["backups"].as_array().unwrap().len(), 1, "{ctx}: {v}");
    ok(setup.run(&["verify", "--repo", &url], true), "verify");

    // restore_command runs in the server's directory: it names the repository absolutely
    // (as a shell word inside a postgresql.conf string, so its quotes are doubled).
    let dir = setup.path("restored");
    ok(
        setup.run(
            &[
                "restore",
                "--repo",
                &url,
                "--to",
                dir.to_str().unwrap(),
                "--target-immediate",
                "--target-action",
                "promote",
            ],
            true,
        ),
        "restore through a file URL",
    );
    let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    let repo_abs = setup.repo.canonicalize().unwrap();
    assert!(
        auto.contains(&format!("--repo ''{}''", repo_abs.display())),
        "{ctx}: {auto}"
    );
    let restored = start_promoted(major, &dir);
    assert_eq!(
        restored.psql("SELECT note FROM loc"),
        "in the backup",
        "{ctx}"
    );
}

#[test]
fn locations_this_build_cannot_serve_are_refused_clearly() {
    for (repo, says) in [
        ("gs://bucket/prefix", "unknown scheme"),
        ("file://host/path", "absolute path and no host"),
    ] {
        let run = support::pgstream(&["list", "--repo", repo], None);
        assert_eq!(run.code, 2, "{repo}: {run:?}");
        assert!(run.stderr.contains(says), "{repo}: {run:?}");
    }
}
