//! The S3 backend's retries, through a fault-injecting proxy in front of the test server:
//! `base` (multipart uploads) and `archive-push` succeed through throttling (503 SlowDown),
//! server errors (500) and connections closed in the middle of a request body; when the faults
//! persist they fail with exit code 8 and leave no visible backup and no archived segment.
//! Not version dependent: the newest major only.

mod support;

use integration::{Fault, FaultProxy, S3Server};
use support::{ok, Run};

const PASSPHRASE: &str = "s3 faults passphrase";

fn run(env: &[(String, String)], args: &[&str]) -> Run {
    let mut cmd = support::pgstream_command(args, Some(PASSPHRASE));
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A cluster big enough that its base backup's main archive is a multipart upload (> 17 MiB
/// compressed), and a WAL segment it has finished, copied out.
fn cluster_and_segment(scratch: &std::path::Path) -> (integration::Cluster, std::path::PathBuf) {
    let pg = integration::cluster(support::newest_major()).start();
    pg.psql(
        "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS h \
         FROM generate_series(1, 400000) g",
    );
    let name = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    pg.psql("SELECT pg_switch_wal()");
    let seg = scratch.join(&name);
    std::fs::copy(pg.data_dir().join("pg_wal").join(&name), &seg).unwrap();
    (pg, seg)
}

#[test]
fn base_and_archive_push_retry_through_transient_faults() {
    let s3 = S3Server::start();
    let proxy = FaultProxy::start(&s3);
    let direct = s3.env();
    let via = proxy.env(&s3);
    let repo = s3.location("transient");
    let scratch = integration::scratch_dir();
    let (pg, seg) = cluster_and_segment(scratch.path());
    ok(
        run(&via, &["init", "--repo", &repo]),
        "init through the proxy",
    );

    proxy.inject("PUT", "partNumber", Fault::InternalError, 1);
    proxy.inject("PUT", "partNumber", Fault::ResetMidBody, 1);
    proxy.inject("POST", "uploads", Fault::SlowDown, 1);
    proxy.inject("PUT", "", Fault::SlowDown, 2);
    proxy.inject("PUT", "", Fault::ResetMidBody, 1);
    let base = run(
        &via,
        &[
            "base",
            "--repo",
            &repo,
            "--source",
            &pg.conninfo("postgres"),
            "--no-progress",
        ],
    );
    let log = proxy.log();
    ok(base, "base through transient faults");
    assert_eq!(proxy.faults_applied(), 6, "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("partNumber") && l.ends_with("forwarded")),
        "the backup was not a multipart upload: {log:#?}"
    );
    ok(run(&direct, &["verify", "--repo", &repo]), "verify");

    proxy.clear();
    proxy.inject("PUT", "wal", Fault::SlowDown, 1);
    proxy.inject("PUT", "wal", Fault::InternalError, 1);
    proxy.inject("PUT", "wal", Fault::ResetMidBody, 1);
    let before = proxy.faults_applied();
    ok(
        run(
            &via,
            &["archive-push", "--repo", &repo, seg.to_str().unwrap()],
        ),
        "archive-push through transient faults",
    );
    assert_eq!(proxy.faults_applied() - before, 3, "{:#?}", proxy.log());
    let name = seg.file_name().unwrap().to_str().unwrap();
    let back = scratch.path().join("fetched");
    ok(
        run(
            &direct,
            &["wal-fetch", "--repo", &repo, name, back.to_str().unwrap()],
        ),
        "wal-fetch",
    );
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&seg).unwrap());
}

#[test]
fn persistent_faults_leave_no_backup_and_no_segment() {
    let s3 = S3Server::start();
    let proxy = FaultProxy::start(&s3);
    let direct = s3.env();
    let via = proxy.env(&s3);
    let repo = s3.location("persistent");
    let scratch = integration::scratch_dir();
    let (pg, seg) = cluster_and_segment(scratch.path());
    ok(run(&direct, &["init", "--repo", &repo]), "init");

    // Every part upload fails: the backup fails, and nothing of it is visible.
    proxy.inject("PUT", "partNumber", Fault::InternalError, usize::MAX);
    let base = run(
        &via,
        &[
            "base",
            "--repo",
            &repo,
            "--source",
            &pg.conninfo("postgres"),
            "--no-progress",
        ],
    );
    assert_eq!(base.code, 8, "{base:?}");
    assert!(
        base.stderr.contains("500") && base.stderr.contains("kept failing"),
        "{base:?}"
    );
    let list = ok(run(&direct, &["list", "--repo", &repo, "--json"]), "list");
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert!(
        v["backups"].as_array().unwrap().is_empty(),
        "a failed backup is listed: {v}"
    );
    assert!(
        !s3.keys("persistent/")
            .iter()
            .any(|k| k.ends_with("backup.json")),
        "{:?}",
        s3.keys("persistent/")
    );
    // Its multipart upload was aborted: no parts are left on the server.
    let root = s3.root();
    let parts: Vec<_> = s3
        .all_files()
        .into_iter()
        .filter(|p| {
            p.strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .contains("upload")
        })
        .collect();
    assert!(parts.is_empty(), "{parts:?}");

    // Every WAL upload fails: archive-push fails, and no segment (whole or half) is stored.
    proxy.clear();
    proxy.inject("PUT", "wal", Fault::ResetMidBody, usize::MAX);
    let push = run(
        &via,
        &["archive-push", "--repo", &repo, seg.to_str().unwrap()],
    );
    assert_eq!(push.code, 8, "{push:?}");
    assert!(
        s3.keys("persistent/wal/").is_empty(),
        "{:?}",
        s3.keys("persistent/wal/")
    );
}
