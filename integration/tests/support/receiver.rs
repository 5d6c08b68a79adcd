//! A running `pgstream receive-wal`, spawned through the binary with its stderr in a log file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the log file is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LogFile {
    /// Created (or truncated) for this run.
    Create,
    /// Appended to, so the runs of one test share a log.
    Append,
}

/// A running `pgstream receive-wal`, its stderr in a log file. Killed on drop.
pub struct Receiver {
    child: Child,
    log: PathBuf,
}

impl Receiver {
    /// `pgstream receive-wal --repo REPO --source CONNINFO --status-interval 1 EXTRA...`, the
    /// passphrase in the environment, its log created afresh.
    pub fn start(
        repo: &Path,
        conninfo: &str,
        passphrase: &str,
        extra: &[&str],
        log: PathBuf,
    ) -> Receiver {
        Receiver::spawn(&[], repo, conninfo, passphrase, extra, log, LogFile::Create)
    }

    /// As [`Receiver::start`], with `global` options before the subcommand (`--log-level
    /// debug`) and the log opened as `mode` says.
    pub fn spawn(
        global: &[&str],
        repo: &Path,
        conninfo: &str,
        passphrase: &str,
        extra: &[&str],
        log: PathBuf,
        mode: LogFile,
    ) -> Receiver {
        let mut args = global.to_vec();
        args.extend_from_slice(&[
            "receive-wal",
            "--repo",
            repo.to_str().unwrap(),
            "--source",
            conninfo,
            "--status-interval",
            "1",
        ]);
        args.extend_from_slice(extra);
        let mut cmd = super::pgstream_command(&args, Some(passphrase));
        let file = match mode {
            LogFile::Create => std::fs::File::create(&log).unwrap(),
            LogFile::Append => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap(),
        };
        cmd.stdout(Stdio::null()).stderr(file);
        Receiver {
            child: cmd.spawn().expect("spawning receive-wal"),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until it streams: without a slot position (before 15) it starts at the server's
    /// current segment, so WAL written before then would not be received.
    pub fn wait_streaming(&self) {
        wait_for(
            "receive-wal streams",
            30,
            || self.log().contains("streaming from"),
            || self.log(),
        );
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends `sig` (a name for `kill -s`).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends `sig` and waits (at most 30 s) for the exit code.
    pub fn stop_with(mut self, sig: &str) -> i32 {
        self.signal(sig);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "receive-wal did not stop on SIG{sig}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(self) -> i32 {
        self.stop_with("TERM")
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms for up to `secs`; panics with `log()` (receive-wal's log) when it
/// never holds.
pub fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "timed out waiting until {what}; receive-wal log:\n{}",
        log()
    );
}

/// Waits until receive-wal has reported everything `pg` flushed so far as durable through
/// `slot`; returns that position.
pub fn wait_caught_up(pg: &integration::Cluster, slot: &str, r: &Receiver) -> pgwire_repl::Lsn {
    let target = super::wal::lsn(&pg.psql("SELECT pg_current_wal_flush_lsn()"));
    wait_for(
        &format!("receive-wal reports {target} flushed"),
        30,
        || super::wal::slot_flush(pg, slot) >= target,
        || r.log(),
    );
    target
}
