//! A repository and a copy of the binary that the server user can run, for archive_command and
//! restore_command tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use integration::{cluster, scratch_dir, server_user, Cluster, ClusterBuilder};

use super::{ok, s, Run};

/// A scratch directory the server user owns, with a copy of the binary (the server runs it from
/// archive_command and restore_command), a private passphrase file and a repository.
pub struct Setup {
    pub scratch: tempfile::TempDir,
    pub bin: PathBuf,
    pub pass: PathBuf,
    pub repo: PathBuf,
}

impl Setup {
    /// A fresh setup whose passphrase file holds `passphrase`, its repository initialised.
    pub fn new(passphrase: &str) -> Setup {
        let scratch = scratch_dir();
        let bin = scratch.path().join("pgstream");
        std::fs::copy(super::pgstream_bin(), &bin).expect("copying the pgstream binary");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pass = scratch.path().join("passphrase");
        std::fs::write(&pass, format!("{passphrase}\n")).unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        server_user().chown(&pass);
        let repo = scratch.path().join("repo");
        let setup = Setup {
            scratch,
            bin,
            pass,
            repo,
        };
        setup.init(&setup.repo);
        setup
    }

    pub fn init(&self, repo: &Path) {
        ok(self.run(&["init", "--repo", s(repo)], true), "init");
    }

    /// `name` in the scratch directory (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// The directory `name` in the scratch directory, created and owned by the server user.
    pub fn dir(&self, name: &str) -> PathBuf {
        let d = self.scratch.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        server_user().chown(&d);
        d
    }

    /// pgstream as the server user (as archive_command and restore_command run it), with
    /// `--passphrase-file` appended when `pass`, and none of the caller's PG* variables.
    pub fn run(&self, args: &[&str], pass: bool) -> Run {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).current_dir(self.scratch.path());
        if pass {
            cmd.arg("--passphrase-file").arg(&self.pass);
        }
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") {
                cmd.env_remove(&k);
            }
        }
        super::no_config_file(&mut cmd);
        server_user().apply(&mut cmd);
        let out = cmd.output().expect("running pgstream");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn push(&self, path: &Path) -> Run {
        self.run(&["archive-push", "--repo", s(&self.repo), s(path)], true)
    }

    /// wal-fetch into a fresh file; its content when found.
    pub fn fetch_from(&self, repo: &Path, name: &str) -> (Run, Option<Vec<u8>>) {
        let dest = self
            .dir("fetched")
            .join(format!("{name}.{}", rand_suffix()));
        let run = self.run(&["wal-fetch", "--repo", s(repo), name, s(&dest)], true);
        let content = (run.code == 0).then(|| std::fs::read(&dest).expect("fetched file"));
        (run, content)
    }

    pub fn fetch(&self, name: &str) -> Vec<u8> {
        let (run, content) = self.fetch_from(&self.repo, name);
        ok(run, &format!("wal-fetch {name}"));
        content.unwrap()
    }

    /// The archive_command (or restore_command) line for this setup.
    pub fn command(&self, sub: &str, args: &str) -> String {
        format!(
            "{} {sub} --repo {} --passphrase-file {} {args}",
            s(&self.bin),
            s(&self.repo),
            s(&self.pass)
        )
    }

    /// The archive_command line: `archive-push … %p`.
    pub fn archive_command(&self) -> String {
        self.command("archive-push", "%p")
    }

    /// A cluster of `major` archiving into this setup's repository (archive_mode on, this
    /// archive_command); more settings can be added before it starts.
    pub fn archiving_cluster(&self, major: u32) -> ClusterBuilder {
        cluster(major)
            .setting("archive_mode", "on")
            .setting("archive_command", &self.archive_command())
    }

    /// The restored directory `dir` started archiving into this setup's repository (a new
    /// timeline's history file and segments land there), once recovery has ended.
    pub fn start_promoted_archiving(&self, major: u32, dir: &Path) -> Cluster {
        super::restored::start_and_wait_promoted(
            self.archiving_cluster(major).restored_data_dir(dir),
        )
    }

    /// `pgstream base --repo REPO --source CONNINFO --no-progress --passphrase-file FILE`.
    pub fn base(&self, conninfo: &str) -> Run {
        self.run(
            &[
                "base",
                "--repo",
                s(&self.repo),
                "--source",
                conninfo,
                "--no-progress",
            ],
            true,
        )
    }

    /// `pgstream drill --repo REPO --passphrase-file FILE --scratch SCRATCH ARGS...` run by us
    /// (the copy's server runs as `--os-user` when we are root) on a backup of `major`.
    pub fn drill(&self, major: u32, scratch: &Path, args: &[&str]) -> Drill {
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "drill",
            "--repo",
            s(&self.repo),
            "--passphrase-file",
            s(&self.pass),
            "--scratch",
            s(scratch),
        ]);
        cmd.args(args);
        if let Some(user) = super::os_user() {
            cmd.args(["--os-user", &user]);
        }
        let out = cmd.output().expect("running pgstream drill");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let ctx = format!(
            "PostgreSQL {major}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Drill {
            code: out.status.code(),
            stdout,
            ctx,
        }
    }

    /// `pgstream restore --repo REPO --to DIR ARGS... --passphrase-file FILE`.
    pub fn restore(&self, dir: &Path, args: &[&str]) -> Run {
        let mut all = vec!["restore", "--repo", s(&self.repo), "--to", s(dir)];
        all.extend_from_slice(args);
        self.run(&all, true)
    }
}

/// What [`Setup::drill`] saw.
pub struct Drill {
    pub code: Option<i32>,
    pub stdout: String,
    /// The major, stdout and stderr, for assertion messages.
    pub ctx: String,
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
