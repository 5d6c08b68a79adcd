//! Running pgstream with failpoints (backup-core/src/failpoint.rs, docs/RELIABILITY.md): a
//! run that fails with an injected error, or one that stops at a failpoint and is killed -9
//! there, and the checks every fault-injection test makes afterwards.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration::{client_tool, scratch_dir, server_user};

use super::{pgstream_command, s, Run};

/// What a failpoint case expects of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It fails with this exit code, its error line containing the text.
    Fails(i32, &'static str),
    /// It stops at the failpoint (`stop` actions) and is killed -9 there.
    Killed,
    /// It goes on as if nothing happened (a lost connection it reconnects after).
    Survives,
}

/// One case of a table-driven fault test: `PGSTREAM_FAILPOINTS` and what must happen.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub failpoints: &'static str,
    pub outcome: Outcome,
}

/// Shorthand for a table row.
pub const fn case(failpoints: &'static str, outcome: Outcome) -> Case {
    Case {
        failpoints,
        outcome,
    }
}

/// A pgstream process started with failpoints; its output collected as it comes.
pub struct Faulted {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Faulted {
    /// `pgstream ARGS` with `PGSTREAM_FAILPOINTS=failpoints` (none when empty) and extra
    /// environment variables.
    pub fn spawn(
        args: &[&str],
        passphrase: Option<&str>,
        failpoints: &str,
        env: &[(&str, &str)],
    ) -> Faulted {
        let mut cmd = pgstream_command(args, passphrase);
        if !failpoints.is_empty() {
            cmd.env("PGSTREAM_FAILPOINTS", failpoints);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning pgstream");
        let stdout: Arc<Mutex<String>> = Arc::default();
        let stderr: Arc<Mutex<String>> = Arc::default();
        let readers = vec![
            collect(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            collect(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        Faulted {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (at most `secs`) until it stops at a failpoint; false when it exited first.
    pub fn wait_stopped(&mut self, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.stderr().contains("reached: stopped") {
                return true;
            }
            if self.child.try_wait().unwrap().is_some() {
                // Exited: let the readers catch up before the last look.
                std::thread::sleep(Duration::from_millis(50));
                return self.stderr().contains("reached: stopped");
            }
            assert!(
                Instant::now() < deadline,
                "pgstream did not stop at its failpoint within {secs} s:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Kills it (SIGKILL) and collects what it wrote.
    pub fn kill9(mut self) -> Run {
        let _ = self.child.kill();
        self.finish()
    }

    /// Sends `sig` (a name for `kill -s`).
    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (at most `secs`) for it to exit; killed and reported when it does not.
    pub fn wait(mut self, secs: u64) -> Run {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let run = self.finish();
                panic!("pgstream did not exit within {secs} s: {run:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.finish()
    }

    fn finish(mut self) -> Run {
        let status = self.child.wait().expect("waiting for pgstream");
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let stdout = self.stdout.lock().unwrap().clone();
        let stderr = self.stderr.lock().unwrap().clone();
        Run {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }
}

impl Drop for Faulted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(
    from: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(from);
        let mut line = String::new();
        while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
            into.lock().unwrap().push_str(&line);
            line.clear();
        }
    })
}

/// Runs `args` with the case's failpoints and holds it to the case's outcome: the documented
/// exit code and a one-line error naming what failed, or a stop at the failpoint and kill -9.
/// Returns the run (for `Survives`, the still-running process is left to the caller).
pub fn run_case(
    case: &Case,
    args: &[&str],
    passphrase: Option<&str>,
    env: &[(&str, &str)],
    ctx: &str,
    drive: impl FnOnce(),
) -> Run {
    let mut p = Faulted::spawn(args, passphrase, case.failpoints, env);
    drive();
    match case.outcome {
        Outcome::Fails(code, text) => {
            let run = p.wait(120);
            assert_eq!(run.code, code, "{ctx}: exit code: {run:?}");
            let line = error_line(&run, ctx);
            assert!(
                line.contains(text),
                "{ctx}: the error does not say {text:?}: {line}"
            );
            run
        }
        Outcome::Killed => {
            if !p.wait_stopped(120) {
                panic!("{ctx}: exited before its failpoint: {:?}", p.kill9());
            }
            let run = p.kill9();
            assert_eq!(run.code, -1, "{ctx}: {run:?}");
            run
        }
        Outcome::Survives => panic!("{ctx}: run_case cannot wait for a run that goes on"),
    }
}

/// The `pgstream: error: …` line of a failed run (there must be exactly one).
pub fn error_line(run: &Run, ctx: &str) -> String {
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("pgstream: error: "))
        .collect();
    assert_eq!(lines.len(), 1, "{ctx}: one error line expected: {run:?}");
    lines[0].to_string()
}

/// `pgstream list --json`'s backup ids.
pub fn listed_ids(repo: &Path, passphrase: &str, ctx: &str) -> Vec<String> {
    let run = super::pgstream(&["list", "--repo", s(repo), "--json"], Some(passphrase));
    assert_eq!(run.code, 0, "{ctx}: list: {run:?}");
    let v: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{ctx}: {e}: {run:?}"));
    v["backups"]
        .as_array()
        .unwrap_or_else(|| panic!("{ctx}: list --json has no backups: {run:?}"))
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

/// `pgstream verify` (of `backup`, or all) exits 0.
pub fn verify_clean(repo: &Path, passphrase: &str, backup: Option<&str>, ctx: &str) {
    let mut args = vec!["verify", "--repo", s(repo)];
    if let Some(b) = backup {
        args.extend(["--backup", b]);
    }
    let run = super::pgstream(&args, Some(passphrase));
    assert_eq!(run.code, 0, "{ctx}: verify: {run:?}");
}

/// `pgstream verify --json` (of `backup`, or all): every backup verifies and no WAL file is bad; returns the gaps
/// it reports (a failed `base` leaves the WAL it archived, shared with receive-wal and so
/// never deleted: without continuous archiving, the newest backup's chain then shows a gap
/// before it, which point-in-time recovery could not pass anyway).
pub fn verify_backups_clean(
    repo: &Path,
    passphrase: &str,
    backup: Option<&str>,
    ctx: &str,
) -> Vec<serde_json::Value> {
    let mut args = vec!["verify", "--repo", s(repo), "--json"];
    if let Some(b) = backup {
        args.extend(["--backup", b]);
    }
    let run = super::pgstream(&args, Some(passphrase));
    let v: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{ctx}: verify --json: {e}: {run:?}"));
    for b in v["backups"].as_array().unwrap() {
        assert_eq!(b["ok"], true, "{ctx}: verify: {b}");
    }
    assert_eq!(
        v["wal"]["bad_files"].as_array().map(Vec::len),
        Some(0),
        "{ctx}: verify: {v}"
    );
    let gaps = v["wal"]["gaps"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        run.code,
        if gaps.is_empty() { 0 } else { 6 },
        "{ctx}: {run:?}"
    );
    gaps
}

/// What killed writers left: temporary files under `repo` (a WAL segment being stored, a
/// config being rewritten) are removed by the next `expire` once old enough. Ages them past
/// that, runs expire (keeping every backup) and checks that none is left; returns how many
/// there were.
pub fn expire_removes_abandoned_temporaries(repo: &Path, passphrase: &str, ctx: &str) -> usize {
    let left = temporaries(repo);
    let old = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    for p in &left {
        std::fs::File::options()
            .write(true)
            .open(p)
            .and_then(|f| f.set_modified(old))
            .unwrap_or_else(|e| panic!("{ctx}: ageing {}: {e}", p.display()));
    }
    let run = super::pgstream(
        &["expire", "--repo", s(repo), "--keep-last", "1000"],
        Some(passphrase),
    );
    assert_eq!(run.code, 0, "{ctx}: expire: {run:?}");
    assert_eq!(
        temporaries(repo),
        Vec::<std::path::PathBuf>::new(),
        "{ctx}: expire left temporary files of killed writers"
    );
    left.len()
}

/// Directories under `backups/`, and whether each has its record.
pub fn backup_dirs(repo: &Path) -> Vec<(String, bool)> {
    let Ok(dir) = std::fs::read_dir(repo.join("backups")) else {
        return Vec::new();
    };
    let mut out: Vec<(String, bool)> = dir
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.path().join("backup.json").exists(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Temporary files (`.tmp.` names) anywhere under `dir`.
pub fn temporaries(dir: &Path) -> Vec<std::path::PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    super::files_under(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp."))
        .collect()
}

/// The half-restored `dir` cannot be started as a server (so nobody runs a cluster that is
/// missing files or WAL): the postmaster exits with an error during startup.
pub fn assert_cannot_start(major: u32, dir: &Path, ctx: &str) {
    let user = server_user();
    user.chown(dir);
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:", user.name()))
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
    let sock = scratch_dir();
    user.chown(sock.path());
    let log = sock.path().join("log");
    let port = integration::free_port().to_string();
    let mut cmd = Command::new(client_tool(major, "pg_ctl"));
    cmd.arg("-D")
        .arg(dir)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "60", "-o"])
        .arg(format!(
            "-p {port} -k {} -c listen_addresses='' -c archive_mode=off",
            s(sock.path())
        ))
        .arg("start");
    user.apply(&mut cmd);
    let out = cmd.output().unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    if out.status.success() {
        let mut stop = Command::new(client_tool(major, "pg_ctl"));
        stop.arg("-D").arg(dir).args(["-m", "immediate", "stop"]);
        user.apply(&mut stop);
        let _ = stop.status();
        panic!("{ctx}: a half-restored directory started as a server:\n{log_text}");
    }
    let why = format!("{log_text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !why.contains("could not bind") && !why.contains("Permission denied"),
        "{ctx}: the start failed for another reason:\n{why}"
    );
}

pub fn pg_verifybackup(major: u32, dir: &Path, ctx: &str) {
    let out = Command::new(client_tool(major, "pg_verifybackup"))
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{ctx}: pg_verifybackup: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
