//! The commands the demo runs, as a user would type them: each command line is printed before it
//! runs (secrets are never in it: they are in 0600 files named on the command line). When the
//! demo runs as root, every command runs as the unprivileged server user, as a service would.
//!
//! Children get their own process group, so a Ctrl-C at the terminal reaches only the demo,
//! which then stops them in order: SIGTERM (every pgstream command stops cleanly on it), then,
//! after a grace period, SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use backup_core::localpg::RunAs;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// How long a child may take to stop after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(30);

/// Runs the demo's commands.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The pgstream executable the children run.
    pub pgstream: PathBuf,
    pub run_as: RunAs,
    /// HOME of the children (the demo directory: nothing of the caller's home is read).
    pub home: PathBuf,
    pub cancel: CancellationToken,
}

/// A command ready to run: the program, its arguments and extra environment.
#[derive(Debug, Clone)]
pub struct Cmd {
    /// The name printed (`pgstream`, `pgbench`).
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Cmd {
    /// The command line as printed: environment, name, arguments, shell-quoted.
    pub fn display(&self) -> String {
        let mut parts: Vec<String> = self
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", shell_quote(v)))
            .collect();
        parts.push(self.name.clone());
        parts.extend(self.args.iter().map(|a| shell_quote(a)));
        parts.join(" ")
    }
}

impl Runner {
    /// `pgstream ARGS`.
    pub fn pgstream(&self, args: &[&str]) -> Cmd {
        Cmd {
            name: "pgstream".into(),
            program: self.pgstream.clone(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
        }
    }

    fn command(&self, cmd: &Cmd) -> Command {
        let mut std_cmd = std::process::Command::new(&cmd.program);
        std_cmd.args(&cmd.args);
        // The caller's PG* and PGSTREAM_* settings (PGHOST, PGSSLMODE, PGSTREAM_PASSPHRASE...)
        // would change what the printed command does.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") {
                std_cmd.env_remove(&k);
            }
        }
        std_cmd.env("HOME", &self.home);
        // The caller's log filter, else info without the client's retry lines (a drill's
        // server takes a few seconds to accept connections, logged every 100 ms).
        std_cmd.env(
            "PGSTREAM_LOG",
            std::env::var("PGSTREAM_LOG").unwrap_or_else(|_| "info,pgwire_repl=warn".into()),
        );
        for (k, v) in &cmd.env {
            std_cmd.env(k, v);
        }
        self.run_as.apply(&mut std_cmd);
        std::os::unix::process::CommandExt::process_group(&mut std_cmd, 0);
        std_cmd.current_dir(&self.home);
        let mut cmd = Command::from(std_cmd);
        // A safety net: a child is never left running if the demo unwinds without stopping it.
        cmd.kill_on_drop(true);
        cmd
    }

    /// Prints and runs `cmd` in the foreground, its output going to ours (indented by the
    /// child's own logger, not by us), and fails unless it exits 0. A cancellation stops it.
    pub async fn run(&self, cmd: &Cmd) -> anyhow::Result<()> {
        println!("$ {}", cmd.display());
        let mut child = self
            .command(cmd)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", cmd.program.display()))?;
        let status = self.wait_or_stop(&mut child, &cmd.name).await?;
        check_status(&cmd.name, status)
    }

    /// Prints and starts `cmd` in the background (`&`), its output going to `log`.
    pub fn spawn(&self, cmd: &Cmd, log: &Path) -> anyhow::Result<Background> {
        println!("$ {} > {} 2>&1 &", cmd.display(), log.display());
        let out = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(log)
            .with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log handle")?;
        self.run_as
            .chown(log)
            .with_context(|| format!("handing {} to the server's user", log.display()))?;
        let child = self
            .command(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("starting {}", cmd.program.display()))?;
        println!("  ({} runs as process {})", cmd.name, pid(&child));
        Ok(Background {
            name: cmd.name.clone(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Waits for `child`; on cancellation stops it (SIGTERM, then SIGKILL) and reports the
    /// interruption.
    async fn wait_or_stop(&self, child: &mut Child, name: &str) -> anyhow::Result<ExitStatus> {
        tokio::select! {
            status = child.wait() => status.with_context(|| format!("waiting for {name}")),
            () = self.cancel.cancelled() => {
                stop(child, name).await;
                Err(anyhow!(Interrupted))
            }
        }
    }
}

/// The demo was interrupted (SIGINT or SIGTERM).
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted by SIGINT or SIGTERM")
    }
}

impl std::error::Error for Interrupted {}

/// A child running in the background, stopped (SIGTERM, then SIGKILL) when dropped unstopped.
#[derive(Debug)]
pub struct Background {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Background {
    /// An error quoting its log when it has exited (it should still be running).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(anyhow!("{} was already stopped", self.name));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.child = None;
                Err(anyhow!(
                    "{} exited unexpectedly ({status}); the end of its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    log_tail(&self.log, 20)
                ))
            }
            Err(e) => Err(anyhow!("waiting for {}: {e}", self.name)),
        }
    }

    /// Waits until it exits on its own (up to `limit`, then it is stopped and that is an
    /// error), and fails unless it exited 0.
    pub async fn wait(
        &mut self,
        limit: Duration,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let name = self.name.clone();
        let status = tokio::select! {
            status = tokio::time::timeout(limit, child.wait()) => match status {
                Ok(s) => s.with_context(|| format!("waiting for {name}"))?,
                Err(_) => {
                    stop(&mut child, &name).await;
                    return Err(anyhow!("{name} did not finish within {} s", limit.as_secs()));
                }
            },
            () = cancel.cancelled() => {
                stop(&mut child, &name).await;
                return Err(anyhow!(Interrupted));
            }
        };
        check_status(&name, status).map_err(|e| {
            anyhow!(
                "{e}; the end of its log {}:\n{}",
                self.log.display(),
                log_tail(&self.log, 20)
            )
        })
    }

    /// Stops it as a user would (`kill -TERM PID`, printed), waits for it, and fails unless it
    /// then exited 0 (pgstream's commands exit 0 on SIGTERM).
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            println!(
                "$ kill -TERM {pid}    # {} stops cleanly on SIGTERM",
                self.name
            );
        }
        let status = stop(&mut child, &self.name).await;
        match status {
            Some(s) => check_status(&self.name, s).map_err(|e| {
                anyhow!(
                    "{e}; the end of its log {}:\n{}",
                    self.log.display(),
                    log_tail(&self.log, 20)
                )
            }),
            None => Err(anyhow!(
                "{} did not stop within {} s of SIGTERM and was killed",
                self.name,
                GRACE.as_secs()
            )),
        }
    }

    /// Stops it without printing or judging how it ended (cleanup after a failure).
    pub async fn stop_quietly(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child, &self.name).await;
        }
    }
}

/// SIGTERM, up to [`GRACE`] for the child to exit, then SIGKILL. The exit status when it
/// stopped on SIGTERM (or had already exited), `None` when it had to be killed.
async fn stop(child: &mut Child, name: &str) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    if let Some(pid) = child.id() {
        // std and tokio can only SIGKILL; kill(1) sends SIGTERM without unsafe code.
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if sent {
            if let Ok(Ok(status)) = tokio::time::timeout(GRACE, child.wait()).await {
                return Some(status);
            }
            tracing::warn!(
                "{name} did not stop within {} s of SIGTERM: killing it",
                GRACE.as_secs()
            );
        }
    }
    let _ = child.kill().await;
    None
}

fn pid(child: &Child) -> String {
    child.id().map_or_else(|| "?".into(), |p| p.to_string())
}

fn check_status(name: &str, status: ExitStatus) -> anyhow::Result<()> {
    if status.success() {
        return Ok(());
    }
    Err(match status.code() {
        Some(code) => anyhow!("{name} exited with code {code}"),
        None => anyhow!("{name} was ended by a signal ({status})"),
    })
}

/// The last `lines` lines of a log file (empty when unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    backup_core::localpg::server::last_lines(text.trim_end(), lines)
}

/// Quotes `s` for a POSIX shell when it needs it, so a printed command can be pasted.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_commands_quote_what_the_shell_would_split() {
        let cmd = Cmd {
            name: "pgstream".into(),
            program: PathBuf::from("/x/pgstream"),
            args: vec![
                "base".into(),
                "--source".into(),
                "host=127.0.0.1 port=5432".into(),
                "it's".into(),
            ],
            env: vec![("PGPASSFILE".into(), "/d/pgpass".into())],
        };
        assert_eq!(
            cmd.display(),
            r#"PGPASSFILE=/d/pgpass pgstream base --source 'host=127.0.0.1 port=5432' 'it'\''s'"#
        );
    }
}
