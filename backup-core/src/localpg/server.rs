//! Starting, waiting for and stopping a local PostgreSQL server run by this process.
//!
//! The server is `postgres` itself, a child of this process (not daemonised by `pg_ctl start`),
//! so its exit is noticed at once ([`LocalServer::check_running`]). Its stdout and stderr go to a
//! log file whose tail is quoted in errors. It listens on a private Unix-socket directory (0700,
//! owned by the server's user) and, unless told otherwise, on 127.0.0.1 at a free port.
//! [`LocalServer::stop`] runs `pg_ctl stop -m fast`, then `-m immediate`, then kills the process;
//! dropping a [`LocalServer`] stops it the same way, so no server outlives its owner.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgwire_repl::config::{Config, Host, SslMode, Target};
use pgwire_repl::Connection;
use tokio_util::sync::CancellationToken;

use super::{LocalPgError, PgBin, RunAs};

/// Longest Unix-socket path (sun_path is 108 bytes with its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;
/// How long `pg_ctl stop -m fast` may take before the immediate stop.
const FAST_STOP_SECS: u64 = 60;
/// How long `pg_ctl stop -m immediate` may take before the process is killed.
const IMMEDIATE_STOP_SECS: u64 = 20;
/// How much of the end of the log [`LocalServer::log_tail`] reads at most.
const TAIL_BYTES: u64 = 64 * 1024;

/// A free TCP port on 127.0.0.1 (bound and released; another process could take it before the
/// server does, in which case the server exits and [`LocalServer::wait_ready`] says so).
pub fn free_port() -> Result<u16, LocalPgError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| LocalPgError::io("binding", Path::new("127.0.0.1:0"), e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| LocalPgError::io("reading the address of", Path::new("127.0.0.1:0"), e))
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub bin: PgBin,
    pub run_as: RunAs,
    /// The data directory, owned by `run_as`.
    pub data_dir: PathBuf,
    /// A private directory for the socket directory (`socket/`, created) and the log
    /// (`server.log`, unless `log_file` says otherwise). `run_as` must be able to enter it.
    pub work_dir: PathBuf,
    /// The TCP port (also in the socket's name). `None`: [`free_port`].
    pub port: Option<u16>,
    /// `listen_addresses`: `127.0.0.1` by default; empty for Unix sockets only.
    pub listen_addresses: String,
    /// Further `-c name=value` settings; they override postgresql.conf and
    /// postgresql.auto.conf.
    pub settings: Vec<(String, String)>,
    /// Where stdout and stderr go; default `work_dir/server.log`.
    pub log_file: Option<PathBuf>,
}

impl StartOptions {
    /// Defaults: a free port, 127.0.0.1, no extra settings, the log in `work_dir/server.log`.
    pub fn new(bin: PgBin, run_as: RunAs, data_dir: PathBuf, work_dir: &Path) -> StartOptions {
        StartOptions {
            bin,
            run_as,
            data_dir,
            work_dir: work_dir.to_path_buf(),
            port: None,
            listen_addresses: "127.0.0.1".into(),
            settings: Vec::new(),
            log_file: None,
        }
    }

    /// Adds a `-c name=value` setting.
    pub fn setting(mut self, name: &str, value: &str) -> StartOptions {
        self.settings.push((name.to_string(), value.to_string()));
        self
    }
}

/// A running server, stopped on drop.
#[derive(Debug)]
pub struct LocalServer {
    child: Option<Child>,
    bin: PgBin,
    run_as: RunAs,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
}

impl LocalServer {
    /// Starts `postgres` (it is running, not yet ready, when this returns: see
    /// [`LocalServer::wait_ready`]).
    pub fn start(opts: StartOptions) -> Result<LocalServer, LocalPgError> {
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let socket_dir = opts.work_dir.join("socket");
        let socket_path = socket_dir.join(format!(".s.PGSQL.{port}"));
        if socket_path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(LocalPgError::User(format!(
                "the server's socket path {} is longer than {MAX_SOCKET_PATH} bytes, the limit \
                 of Unix sockets: choose a shorter working directory",
                socket_path.display()
            )));
        }
        if socket_dir.to_string_lossy().contains([',', '\'', '\\']) {
            return Err(LocalPgError::User(format!(
                "{}: choose a working directory whose path has no comma, quote or backslash \
                 (unix_socket_directories is a comma-separated list)",
                socket_dir.display()
            )));
        }
        opts.run_as.prepare_dir(&socket_dir)?;
        let log_file = opts
            .log_file
            .clone()
            .unwrap_or_else(|| opts.work_dir.join("server.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_file)
            .map_err(|e| LocalPgError::io("opening the server log", &log_file, e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| LocalPgError::io("opening the server log", &log_file, e))?;
        let mut cmd = server_command(&opts.bin, &opts.run_as, "postgres", &opts.work_dir);
        cmd.arg("-D")
            .arg(&opts.data_dir)
            .arg("-p")
            .arg(port.to_string())
            .arg("-c")
            .arg(format!("listen_addresses={}", opts.listen_addresses))
            .arg("-c")
            .arg(format!("unix_socket_directories={}", socket_dir.display()));
        for (k, v) in &opts.settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            // Its own process group: a Ctrl-C at the terminal reaches only us, and we stop the
            // server in order (and notice that it was us).
            .process_group(0);
        let child = cmd.spawn().map_err(|e| LocalPgError::Spawn {
            program: opts.bin.program("postgres").display().to_string(),
            source: e,
        })?;
        tracing::debug!(pid = child.id(), port, data_dir = %opts.data_dir.display(), "started postgres");
        Ok(LocalServer {
            child: Some(child),
            bin: opts.bin,
            run_as: opts.run_as,
            data_dir: opts.data_dir,
            socket_dir,
            log_file,
            port,
        })
    }

    /// The TCP port (127.0.0.1 unless listen_addresses said otherwise).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The private directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    pub fn bin(&self) -> &PgBin {
        &self.bin
    }

    /// The process id of `postgres`, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Client settings for the Unix socket, as `user` to `dbname`, without TLS and without
    /// reading any PG* environment variable.
    pub fn config(&self, user: &str, dbname: &str) -> Config {
        Config {
            targets: vec![Target {
                host: Host::Unix(self.socket_dir.clone()),
                hostaddr: None,
                port: self.port,
            }],
            user: Some(user.to_string()),
            dbname: Some(dbname.to_string()),
            sslmode: SslMode::Disable,
            connect_timeout: Some(Duration::from_secs(10)),
            application_name: Some("pgstream".into()),
            ..Config::default()
        }
    }

    /// A libpq connection string for TCP on 127.0.0.1 (for other programs, or `pgstream base`).
    pub fn tcp_conninfo(&self, user: &str, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={} dbname={}",
            self.port,
            conninfo_quote(user),
            conninfo_quote(dbname)
        )
    }

    /// A libpq connection string for the Unix socket.
    pub fn socket_conninfo(&self, user: &str, dbname: &str) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            conninfo_quote(&self.socket_dir.to_string_lossy()),
            self.port,
            conninfo_quote(user),
            conninfo_quote(dbname)
        )
    }

    /// One connection attempt over the Unix socket.
    pub async fn connect(
        &self,
        user: &str,
        dbname: &str,
    ) -> Result<Connection, pgwire_repl::Error> {
        Connection::connect(&self.config(user, dbname)).await
    }

    /// Waits until the server accepts a connection as `user` to `dbname` and answers
    /// `SELECT 1` (also while it is in hot-standby recovery), and returns that connection.
    /// Fails when the server exits (with the end of its log), when `timeout` passes (with the
    /// last connection error and the log), or when `cancel` fires.
    pub async fn wait_ready(
        &mut self,
        user: &str,
        dbname: &str,
        timeout: Duration,
        cancel: Option<&CancellationToken>,
    ) -> Result<Connection, LocalPgError> {
        let deadline = Instant::now() + timeout;
        loop {
            if cancel.is_some_and(CancellationToken::is_cancelled) {
                return Err(LocalPgError::Cancelled);
            }
            self.check_running("it accepted connections")?;
            // Connect only once the postmaster says it accepts connections, as pg_ctl waits:
            // every refused attempt is logged, and reaching consistency can take minutes.
            let status = postmaster_status(&self.data_dir);
            if !status.accepts_connections() {
                if Instant::now() >= deadline {
                    return Err(self.timeout("accept connections", timeout, status.describe()));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let last = match self.connect(user, dbname).await {
                Ok(mut conn) => match conn.simple_query("SELECT 1").await {
                    Ok(_) => return Ok(conn),
                    Err(e) => e.to_string(),
                },
                // Waiting would not help: a missing role or database, refused authentication.
                Err(e) if is_permanent(&e) => {
                    return Err(LocalPgError::Query {
                        sql: format!("connecting as {user} to database {dbname}"),
                        source: e,
                    })
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(self.timeout("accept connections", timeout, last));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `Ok` while the server process runs; [`LocalPgError::Exited`] (with the log's tail) once
    /// it has ended, `what` saying what it ended before.
    pub fn check_running(&mut self, what: &str) -> Result<(), LocalPgError> {
        let Some(child) = self.child.as_mut() else {
            return Err(self.exited("stopped by pgstream".into(), what));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.child = None;
                Err(self.exited(status.to_string(), what))
            }
            Err(e) => Err(LocalPgError::io(
                "waiting for",
                &self.bin.program("postgres"),
                e,
            )),
        }
    }

    fn exited(&self, status: String, what: &str) -> LocalPgError {
        LocalPgError::Exited {
            status,
            what: what.to_string(),
            log: self.log_file.clone(),
            tail: self.log_tail(30),
        }
    }

    /// A [`LocalPgError::Timeout`] for `what`, quoting `last` and the log's tail.
    pub fn timeout(&self, what: &str, waited: Duration, last: String) -> LocalPgError {
        LocalPgError::Timeout {
            what: what.to_string(),
            seconds: waited.as_secs(),
            last,
            log: self.log_file.clone(),
            tail: self.log_tail(30),
        }
    }

    /// The last `lines` lines of the server log (from at most its last 64 KiB); empty when it
    /// cannot be read.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_of_file(&self.log_file, lines).unwrap_or_default()
    }

    /// Runs `pg_ctl ARGS -D DATA` as the server's user and returns its output when it succeeds.
    pub fn pg_ctl(&self, args: &[&str]) -> Result<String, LocalPgError> {
        let mut cmd = server_command(
            &self.bin,
            &self.run_as,
            "pg_ctl",
            parent_or_root(&self.data_dir),
        );
        cmd.args(args).arg("-D").arg(&self.data_dir);
        run_checked(cmd, "pg_ctl")
    }

    /// Stops the server: `pg_ctl stop -m fast` (60 s), then `-m immediate` (20 s), then kills
    /// it; waits until the process has ended. Idempotent. An error means a stop mode failed but
    /// the process is gone nonetheless (it is never left running).
    pub fn stop(&mut self) -> Result<(), LocalPgError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return Ok(());
        }
        let fast = self.pg_ctl(&[
            "stop",
            "-m",
            "fast",
            "-w",
            "-t",
            &FAST_STOP_SECS.to_string(),
        ]);
        let mut result = fast.map(|_| ());
        if result.is_err() {
            let immediate = self.pg_ctl(&[
                "stop",
                "-m",
                "immediate",
                "-w",
                "-t",
                &IMMEDIATE_STOP_SECS.to_string(),
            ]);
            if immediate.is_ok() {
                // The server is stopped; the fast stop's failure is still worth reporting.
                tracing::warn!(error = %result.as_ref().unwrap_err(), "fast stop failed; stopped in immediate mode");
                result = Ok(());
            }
        }
        // postgres is our child: reap it, and kill it if neither stop worked.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        result
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Err(e) = self.stop() {
                tracing::warn!(error = %e, "stopping the local server");
            }
        }
    }
}

/// What `postmaster.pid` says about the server (its 8th line, PostgreSQL 10+).
#[derive(Debug, Clone, PartialEq, Eq)]
enum PmStatus {
    /// No pid file yet, or no status line yet.
    Starting,
    /// `starting`, `ready`, `standby` or `stopping`.
    Line(String),
    /// The file cannot be read: connection attempts decide.
    Unknown,
}

impl PmStatus {
    fn accepts_connections(&self) -> bool {
        match self {
            PmStatus::Starting => false,
            PmStatus::Line(l) => l == "ready" || l == "standby",
            PmStatus::Unknown => true,
        }
    }

    fn describe(&self) -> String {
        match self {
            PmStatus::Starting => "no postmaster.pid status yet".into(),
            PmStatus::Line(l) => format!("postmaster.pid says {l:?}"),
            PmStatus::Unknown => "postmaster.pid unreadable".into(),
        }
    }
}

fn postmaster_status(data_dir: &Path) -> PmStatus {
    match std::fs::read_to_string(data_dir.join("postmaster.pid")) {
        Ok(text) => parse_pm_status(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PmStatus::Starting,
        Err(_) => PmStatus::Unknown,
    }
}

fn parse_pm_status(text: &str) -> PmStatus {
    match text.lines().nth(7).map(str::trim) {
        Some(l) if !l.is_empty() => PmStatus::Line(l.to_string()),
        _ => PmStatus::Starting,
    }
}

/// A connection error that retrying will not cure: authentication or authorization refused
/// (class 28, which includes a missing role) or a missing database (3D000).
fn is_permanent(e: &pgwire_repl::Error) -> bool {
    match e {
        pgwire_repl::Error::Server(db) => db.code.starts_with("28") || db.code == "3D000",
        pgwire_repl::Error::AllHostsFailed(all) => all.iter().all(is_permanent) && !all.is_empty(),
        _ => false,
    }
}

/// A server program run as `run_as` in `cwd`, with no PG* variables from our environment
/// (PGDATA, PGPORT, ... would change what it does).
pub(super) fn server_command(bin: &PgBin, run_as: &RunAs, program: &str, cwd: &Path) -> Command {
    let mut cmd = Command::new(bin.program(program));
    cmd.current_dir(cwd);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    run_as.apply(&mut cmd);
    cmd
}

pub(super) fn parent_or_root(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// Runs `cmd` to completion; its combined output on success, [`LocalPgError::Failed`] quoting
/// the end of it otherwise.
pub(super) fn run_checked(mut cmd: Command, program: &str) -> Result<String, LocalPgError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LocalPgError::Spawn {
            program: program.to_string(),
            source: e,
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(LocalPgError::Failed {
            program: program.to_string(),
            status: out.status.to_string(),
            output: last_lines(text.trim(), 20),
        })
    }
}

fn tail_of_file(path: &Path, lines: usize) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    // A partial first line (cut by the 64 KiB window) is dropped.
    let text = if start > 0 {
        text.split_once('\n')
            .map_or("", |(_, rest)| rest)
            .to_string()
    } else {
        text.into_owned()
    };
    Ok(last_lines(text.trim_end(), lines))
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

/// Quotes a postgresql.conf value.
pub(super) fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quotes a conninfo value when it needs it (libpq's rules: single quotes, backslash escapes).
pub fn conninfo_quote(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '\'', '\\']) {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable() {
        let port = free_port().unwrap();
        assert!(port > 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }

    #[test]
    fn postmaster_pid_status_line_decides_when_to_connect() {
        let pid = "4242\n/d\n1700000000\n5432\n/s\n127.0.0.1\n  1234  5678\n";
        assert_eq!(parse_pm_status(pid), PmStatus::Starting);
        for (line, ready) in [
            ("starting", false),
            ("standby ", true),
            ("ready   ", true),
            ("stopping", false),
        ] {
            let status = parse_pm_status(&format!("{pid}{line}\n"));
            assert_eq!(status.accepts_connections(), ready, "{line}");
        }
        assert!(PmStatus::Unknown.accepts_connections());
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail_of_file(&path, 2).unwrap(), "c\nd");
        let long: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, long).unwrap();
        assert_eq!(tail_of_file(&path, 2).unwrap(), "line 19998\nline 19999");
    }

    #[test]
    fn conninfo_values_are_quoted_when_needed() {
        assert_eq!(conninfo_quote("postgres"), "postgres");
        assert_eq!(conninfo_quote("a b"), "'a b'");
        assert_eq!(conninfo_quote("it's"), r"'it\'s'");
        assert_eq!(conninfo_quote(""), "''");
        // The demo's passfile path.
        assert_eq!(conninfo_quote("/tmp/my dir/it's"), r"'/tmp/my dir/it\'s'");
    }
}
