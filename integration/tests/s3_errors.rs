//! An S3 repository that cannot be used: refused credentials, a missing bucket, an unreachable
//! endpoint, plain http to another host, no credentials at all. Each is a clear error naming
//! what is wrong and what to check, exit code 8 (docs/cli.md), no secret in the output, and
//! nothing written. (A wrong region cannot be shown against s3s-fs, which accepts any region;
//! its message is unit-tested in backup-core's store/s3.)

mod support;

use integration::{free_port, S3Server};
use support::s3repo::run_with;
use support::{ok, Run};

const PASSPHRASE: &str = "s3 errors passphrase";

/// pgstream with the server's environment, then `over` applied on top.
fn run(s3: &S3Server, args: &[&str], over: &[(&str, &str)], remove: &[&str]) -> Run {
    let mut cmd = support::pgstream_command(args, Some(PASSPHRASE));
    cmd.envs(s3.env());
    cmd.envs(over.iter().copied());
    for k in remove {
        cmd.env_remove(k);
    }
    // HOME without an ~/.aws: only what the test gives counts.
    cmd.env("HOME", "/nonexistent");
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn refused(run: &Run, what: &str, says: &[&str]) {
    assert_eq!(run.code, 8, "{what}: {run:?}");
    for s in says {
        assert!(run.stderr.contains(s), "{what}: no {s:?} in {run:?}");
    }
}

#[test]
fn unusable_s3_repositories_are_refused_clearly_with_exit_code_8() {
    let s3 = S3Server::start();
    let repo = s3.location("errors");
    let wrong_secret = "0123456789abcdef-wrong-secret";

    // Refused credentials: nothing is written.
    let r = run(
        &s3,
        &["init", "--repo", &repo],
        &[("AWS_SECRET_ACCESS_KEY", wrong_secret)],
        &[],
    );
    refused(&r, "wrong secret", &["credentials were refused", "errors"]);
    assert!(!r.stderr.contains(wrong_secret), "{r:?}");
    assert!(s3.keys("").is_empty(), "{:?}", s3.keys(""));

    // A missing bucket: named as such, not as an empty repository.
    let r = run(&s3, &["init", "--repo", "s3://no-such-bucket/x"], &[], &[]);
    refused(&r, "init, missing bucket", &["bucket does not exist"]);
    let r = run(&s3, &["list", "--repo", "s3://no-such-bucket/x"], &[], &[]);
    refused(&r, "list, missing bucket", &["bucket does not exist"]);

    // Nothing listening at the endpoint (after the retries, a few seconds).
    let dead = format!("http://127.0.0.1:{}", free_port());
    let r = run(
        &s3,
        &["list", "--repo", &repo],
        &[("AWS_ENDPOINT_URL", &dead)],
        &[],
    );
    refused(
        &r,
        "unreachable endpoint",
        &["could not be reached", "AWS_ENDPOINT_URL"],
    );

    // Plain http to another host: refused before anything is sent.
    let r = run(
        &s3,
        &["list", "--repo", &repo],
        &[("AWS_ENDPOINT_URL", "http://s3.example.com")],
        &[],
    );
    refused(&r, "plain http", &["use https", "loopback"]);

    // No credentials at all.
    let r = run(
        &s3,
        &["list", "--repo", &repo],
        &[],
        &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
    );
    refused(
        &r,
        "no credentials",
        &["no S3 credentials", "AWS_ACCESS_KEY_ID"],
    );
    assert!(s3.keys("").is_empty(), "{:?}", s3.keys(""));

    // An initialised repository: a push with refused credentials stores nothing.
    ok(
        run_with(
            &s3,
            support::pgstream_command(&["init", "--repo", &repo], Some(PASSPHRASE)),
        ),
        "init",
    );
    let before = s3.keys("");
    let scratch = integration::scratch_dir();
    let seg = scratch.path().join("000000010000000000000001");
    std::fs::write(&seg, vec![0u8; 16 << 20]).unwrap();
    let r = run(
        &s3,
        &["archive-push", "--repo", &repo, seg.to_str().unwrap()],
        &[("AWS_SECRET_ACCESS_KEY", wrong_secret)],
        &[],
    );
    refused(
        &r,
        "archive-push, wrong secret",
        &["credentials were refused"],
    );
    assert_eq!(s3.keys(""), before);
    assert!(before.iter().all(|k| k.starts_with("errors/")));
    assert!(s3
        .object_path(&format!("errors/{}", "pgstream.repo"))
        .exists());
}
