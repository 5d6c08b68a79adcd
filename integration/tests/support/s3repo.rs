//! pgstream against an `s3://` repository on a throwaway S3 server: the binary run with the
//! server's endpoint and keys in its environment, and (for archive_command and
//! restore_command, which the PostgreSQL server runs without our environment) a shared
//! credentials file its user can read.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use integration::{server_user, S3Server};

use super::setup::Setup;
use super::{s, Run};

/// Runs `cmd` with the S3 server's environment (endpoint, region, keys) added.
pub fn run_with(s3: &S3Server, mut cmd: Command) -> Run {
    cmd.envs(s3.env());
    let out = cmd.output().expect("running pgstream");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `pgstream ARGS` with the S3 environment and the passphrase (if any) in PGSTREAM_PASSPHRASE.
pub fn pgstream_s3(s3: &S3Server, args: &[&str], passphrase: Option<&str>) -> Run {
    run_with(s3, super::pgstream_command(args, passphrase))
}

/// pgstream as the server user (as archive_command and restore_command run it) from `setup`'s
/// copy of the binary, with `--passphrase-file` when `pass`, and the S3 environment.
pub fn setup_run(setup: &Setup, s3: &S3Server, args: &[&str], pass: bool) -> Run {
    setup_run_env(setup, s3, args, pass, &[])
}

/// [`setup_run`] with `extra` variables set too.
pub fn setup_run_env(
    setup: &Setup,
    s3: &S3Server,
    args: &[&str],
    pass: bool,
    extra: &[(&str, &str)],
) -> Run {
    let mut cmd = Command::new(&setup.bin);
    cmd.args(args).current_dir(setup.scratch.path());
    if pass {
        cmd.arg("--passphrase-file").arg(&setup.pass);
    }
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    super::no_config_file(&mut cmd);
    server_user().apply(&mut cmd);
    cmd.envs(s3.env());
    cmd.envs(extra.iter().copied());
    let out = cmd.output().expect("running pgstream");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A shared credentials file holding the server's keys as profile `profile`, in `setup`'s
/// scratch directory, mode 0600 and owned by the server user (who runs archive_command and
/// restore_command).
pub fn credentials_file(setup: &Setup, s3: &S3Server, profile: &str) -> PathBuf {
    let path = setup.path(&format!("aws-credentials-{profile}"));
    std::fs::write(
        &path,
        format!(
            "[{profile}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            s3.access_key(),
            s3.secret_key()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    server_user().chown(&path);
    path
}

/// An archive_command (or restore_command) line for the S3 repository `repo`: the endpoint,
/// region, profile and credentials file as environment assignments (none of them secret),
/// then `pgstream SUB --repo REPO --passphrase-file FILE ARGS`.
pub fn server_command(
    setup: &Setup,
    s3: &S3Server,
    creds: &std::path::Path,
    profile: &str,
    repo: &str,
    sub: &str,
    args: &str,
) -> String {
    format!(
        "AWS_SHARED_CREDENTIALS_FILE={} AWS_PROFILE={profile} AWS_REGION=us-east-1 \
         AWS_ENDPOINT_URL={} {} {sub} --repo {repo} --passphrase-file {} {args}",
        s(creds),
        s3.endpoint(),
        s(&setup.bin),
        s(&setup.pass)
    )
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
