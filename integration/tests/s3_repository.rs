//! Repositories on S3-compatible object storage (`--repo s3://bucket/prefix`), end to end
//! through the binary against a real S3 server (s3s-fs, started by the test) and real
//! PostgreSQL: init, base with a tablespace, list, restore with a tablespace map checked by
//! pg_verifybackup and pg_dumpall, no plaintext in any stored object, verify naming a flipped
//! byte and a deleted object, keep, expire, status, rekey and drill.

mod support;

use std::process::Command;

use integration::{client_tool, client_tool_major, cluster, test_majors, Cluster, S3Server};
use support::s3repo::{contains, credentials_file, pgstream_s3, setup_run};
use support::setup::Setup;
use support::{ok, s, Run};

const PASSPHRASE: &str = "s3 repository passphrase";
/// Written into the database; must appear in no stored object.
const MARKER: &str = "pgstream-s3-plaintext-marker-91be";

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

fn chown_to_server_user(dir: &std::path::Path) {
    if let integration::ServerUser::Switch { name, .. } = integration::server_user() {
        let mut cmd = Command::new("chown");
        cmd.arg("-R").arg(format!("{name}:")).arg(dir);
        run_tool(cmd, "chown");
    }
}

fn p(s3: &S3Server, args: &[&str]) -> Run {
    pgstream_s3(s3, args, Some(PASSPHRASE))
}

#[test]
fn base_restore_verify_and_maintenance_on_s3() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let s3 = S3Server::start();
        let repo = s3.location(&format!("pg{major}/main"));
        let pg = cluster(major).tablespace("ts1").start();
        pg.psql(&format!(
            "CREATE TABLE in_ts (id int, note text) TABLESPACE ts1;
             INSERT INTO in_ts SELECT g, '{MARKER}' || g FROM generate_series(1, 5000) g;
             CREATE TABLE big AS SELECT g, md5(g::text) AS h FROM generate_series(1, 300000) g;"
        ));
        ok(p(&s3, &["init", "--repo", &repo]), "init");
        let run = ok(
            p(
                &s3,
                &[
                    "base",
                    "--repo",
                    &repo,
                    "--source",
                    &pg.conninfo("postgres"),
                    "--json",
                    "--no-progress",
                ],
            ),
            "base",
        );
        let record: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let id = record["id"].as_str().unwrap().to_string();

        // Encrypted: the marker is in no object the server stores (nor in its bookkeeping).
        let stored = s3.all_files();
        assert!(stored.len() > 3, "{ctx}: {stored:?}");
        for f in &stored {
            let bytes = std::fs::read(f).unwrap();
            assert!(
                !contains(&bytes, MARKER.as_bytes()),
                "{ctx}: plaintext in {}",
                f.display()
            );
        }
        let keys = s3.keys(&format!("pg{major}/main/"));
        assert!(
            keys.iter().any(|k| k.ends_with("/pgstream.repo")),
            "{ctx}: {keys:?}"
        );
        assert!(
            keys.iter().any(|k| k.contains(&format!("backups/{id}/"))),
            "{ctx}: {keys:?}"
        );

        let list = ok(p(&s3, &["list", "--repo", &repo]), "list");
        assert!(list.stdout.contains(&id), "{ctx}: {list:?}");

        // Restore with the tablespace moved, check it, start it, compare.
        let scratch = integration::scratch_dir();
        let target = scratch.path().join("restored");
        let new_ts = scratch.path().join("ts1-restored");
        let old_ts = pg.tablespace_dir("ts1");
        let mapping = format!("{}={}", old_ts.display(), new_ts.display());
        ok(
            p(
                &s3,
                &[
                    "restore",
                    "--repo",
                    &repo,
                    "--to",
                    s(&target),
                    "--tablespace-map",
                    &mapping,
                ],
            ),
            "restore",
        );
        let (verify, tool_major) = client_tool_major(major, "pg_verifybackup");
        let mut cmd = Command::new(verify);
        if tool_major != major {
            cmd.arg("-n");
        }
        cmd.arg(&target);
        run_tool(cmd, "pg_verifybackup");
        chown_to_server_user(&new_ts);
        {
            let restored = cluster(major).restored_data_dir(&target).start();
            let a = dumpall(&pg).replace(&old_ts.display().to_string(), "TS");
            let b = dumpall(&restored).replace(&new_ts.display().to_string(), "TS");
            assert!(a == b, "{ctx}: pg_dumpall of the restored cluster differs");
        }

        ok(p(&s3, &["verify", "--repo", &repo]), "verify");
        let status = p(&s3, &["status", "--repo", &repo]);
        assert!(status.stdout.contains(&repo), "{ctx}: {status:?}");
        assert!(status.code <= 1, "{ctx}: {status:?}");

        // keep, then expire keeps the pinned backup; a second backup.
        ok(p(&s3, &["keep", "--repo", &repo, &id]), "keep");
        ok(
            p(
                &s3,
                &[
                    "base",
                    "--repo",
                    &repo,
                    "--source",
                    &pg.conninfo("postgres"),
                    "--no-progress",
                ],
            ),
            "second base",
        );
        ok(
            p(&s3, &["expire", "--repo", &repo, "--keep-last", "1"]),
            "expire",
        );
        let list = ok(p(&s3, &["list", "--repo", &repo, "--json"]), "list");
        let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
        assert_eq!(v["backups"].as_array().unwrap().len(), 2, "{ctx}: {v}");
        ok(p(&s3, &["keep", "--repo", &repo, "--unpin", &id]), "unpin");
        ok(
            p(&s3, &["expire", "--repo", &repo, "--keep-last", "1"]),
            "expire",
        );
        let list = ok(p(&s3, &["list", "--repo", &repo, "--json"]), "list");
        let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
        assert_eq!(v["backups"].as_array().unwrap().len(), 1, "{ctx}: {v}");
        assert!(
            s3.keys(&format!("pg{major}/main/backups/{id}/")).is_empty(),
            "{ctx}: the expired backup's objects are gone"
        );

        // Tampering: a flipped byte, then a deleted object; verify names each (exit 6).
        let remaining = v["backups"][0]["id"].as_str().unwrap().to_string();
        let data_keys = s3.keys(&format!("pg{major}/main/backups/{remaining}/"));
        let victim = data_keys
            .iter()
            .max_by_key(|k| s3.read(k).len())
            .unwrap()
            .clone();
        let original = s3.read(&victim);
        let mut flipped = original.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 0x01;
        s3.overwrite(&victim, &flipped);
        let name = victim.rsplit('/').next().unwrap();
        let run = p(&s3, &["verify", "--repo", &repo]);
        assert_eq!(run.code, 6, "{ctx}: {run:?}");
        assert!(
            run.stdout.contains(name) || run.stderr.contains(name),
            "{ctx}: verify does not name {name}: {run:?}"
        );
        s3.overwrite(&victim, &original);
        ok(p(&s3, &["verify", "--repo", &repo]), "verify after repair");
        s3.delete(&victim);
        let run = p(&s3, &["verify", "--repo", &repo]);
        assert_eq!(run.code, 6, "{ctx}: {run:?}");
        assert!(
            run.stdout.contains(name) || run.stderr.contains(name),
            "{ctx}: verify does not name the deleted {name}: {run:?}"
        );
        s3.overwrite(&victim, &original);

        // rekey: the new passphrase opens it, the old one no longer does.
        let new_pass = "the new s3 passphrase";
        let mut cmd = support::pgstream_command(&["rekey", "--repo", &repo], Some(PASSPHRASE));
        cmd.env("PGSTREAM_NEW_PASSPHRASE", new_pass);
        ok(support::s3repo::run_with(&s3, cmd), "rekey");
        ok(
            pgstream_s3(&s3, &["verify", "--repo", &repo], Some(new_pass)),
            "verify with the new passphrase",
        );
        let run = p(&s3, &["list", "--repo", &repo]);
        assert_eq!(run.code, 5, "{ctx}: the old passphrase: {run:?}");
    }
}

/// `drill` restores from S3 into a scratch directory, recovers through restore_command (which
/// reaches S3 with the credentials file it names) and checks the copy.
#[test]
fn a_drill_runs_from_s3() {
    let major = support::newest_major();
    let s3 = S3Server::start();
    let setup = Setup::new(PASSPHRASE);
    let creds = credentials_file(&setup, &s3, "default");
    let repo = s3.location("drill");
    let pg = cluster(major).start();
    pg.psql("CREATE TABLE d (x int); INSERT INTO d SELECT generate_series(1, 1000)");
    ok(
        setup_run(&setup, &s3, &["init", "--repo", &repo], true),
        "init",
    );
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
    let scratch = setup.dir("drill-scratch");
    let mut cmd = Command::new(&setup.bin);
    cmd.args([
        "drill",
        "--repo",
        &repo,
        "--passphrase-file",
        s(&setup.pass),
    ])
    .args(["--scratch", s(&scratch), "--s3-credentials-file", s(&creds)]);
    if let Some(user) = support::os_user() {
        cmd.args(["--os-user", &user]);
    }
    support::no_config_file(&mut cmd);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    cmd.env("AWS_ENDPOINT_URL", s3.endpoint())
        .env("AWS_REGION", "us-east-1");
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "drill failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
