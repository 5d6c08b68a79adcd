//! A running throwaway cluster: control (pg_ctl), SQL (psql), and cleanup on drop.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::bins::client_tool;
use crate::conf;
use crate::server_user::ServerUser;
use crate::tls::{ClusterTls, TlsOptions, TlsPaths};

/// The superuser every harness cluster has (initdb -U postgres).
pub const SUPERUSER: &str = "postgres";

/// Seconds pg_ctl waits for start/stop/promote.
const PG_CTL_TIMEOUT_SECS: &str = "120";

/// Lines of server log quoted in failure messages.
const LOG_TAIL_LINES: usize = 40;

/// A started cluster. Dropping it stops the server (immediate mode) even while a test panics,
/// and removes its temp dir unless `PGSTREAM_KEEP_CLUSTERS=1`.
pub struct Cluster {
    major: u32,
    bin_dir: PathBuf,
    temp_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    settings: Vec<(String, String)>,
    tls: Option<ClusterTls>,
    user: ServerUser,
}

/// Why a start failed; `port_in_use` lets the builder retry on another port.
pub(crate) struct StartFailure {
    pub(crate) port_in_use: bool,
    pub(crate) message: String,
}

impl Cluster {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        major: u32,
        bin_dir: PathBuf,
        temp_dir: PathBuf,
        data_dir: PathBuf,
        socket_dir: PathBuf,
        settings: Vec<(String, String)>,
        tls: Option<ClusterTls>,
        user: ServerUser,
    ) -> Cluster {
        Cluster {
            major,
            bin_dir,
            log_path: temp_dir.join("server.log"),
            temp_dir,
            data_dir,
            socket_dir,
            settings,
            tls,
            user,
        }
    }

    /// A server program (initdb, pg_ctl, ...) of this major, run as the server user.
    fn server_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.current_dir(&self.temp_dir);
        clear_pg_env(&mut cmd);
        self.user.apply(&mut cmd);
        cmd
    }

    fn run(&self, mut cmd: Command) -> Output {
        let shown = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
    }

    pub(crate) fn initdb(&self, extra: &[String]) {
        let mut cmd = self.server_command("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ])
            // Skips initdb's own fsyncs only; the server keeps fsync=on.
            .arg("--no-sync")
            .args(extra);
        let out = self.run(cmd);
        if !out.status.success() {
            panic!(
                "initdb of PostgreSQL {} (as {}) failed with {}:\n{}{}",
                self.major,
                self.user.name(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Files the harness wrote into the data dir as root must stay readable to the server.
    pub(crate) fn chown_config_files(&self) {
        for name in ["pg_hba.conf", "postgresql.conf", conf::HARNESS_CONF] {
            let path = self.data_dir.join(name);
            if path.exists() {
                self.user.chown(&path);
            }
        }
    }

    pub(crate) fn write_settings(&self) {
        conf::write_settings(&self.data_dir, &self.settings);
        self.chown_config_files();
    }

    pub(crate) fn set_setting(&mut self, key: &str, value: &str) {
        conf::set(&mut self.settings, key, value);
    }

    pub(crate) fn user(&self) -> &ServerUser {
        &self.user
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_path)
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS])
            .args(args);
        self.run(cmd)
    }

    fn pg_ctl_or_panic(&self, what: &str, args: &[&str]) {
        let out = self.pg_ctl(args);
        if !out.status.success() {
            panic!("{}", self.failure(&format!("pg_ctl {what}"), &out));
        }
    }

    fn failure(&self, what: &str, out: &Output) -> String {
        format!(
            "{what} of PostgreSQL {} in {} failed with {}:\n{}{}\n--- tail of {} ---\n{}",
            self.major,
            self.data_dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_path.display(),
            self.log_tail(LOG_TAIL_LINES, 0)
        )
    }

    /// The last `lines` lines of the server log from byte `from` on.
    fn log_tail(&self, lines: usize, from: usize) -> String {
        let log = self.server_log();
        let log = log.get(from..).unwrap_or(&log);
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub(crate) fn try_start(&self) -> Result<(), StartFailure> {
        let log_before = self.server_log().len();
        let out = self.pg_ctl(&["start"]);
        if out.status.success() {
            return Ok(());
        }
        let new_log = self
            .server_log()
            .get(log_before..)
            .unwrap_or("")
            .to_string();
        Err(StartFailure {
            port_in_use: new_log.contains("could not bind")
                || new_log.contains("Address already in use"),
            message: self.failure("pg_ctl start", &out),
        })
    }

    /// Starts the stopped server (same port).
    pub fn start(&self) {
        self.write_settings();
        if let Err(failure) = self.try_start() {
            panic!("{}", failure.message);
        }
    }

    /// Stops the server, fast mode (clean shutdown checkpoint).
    pub fn stop(&self) {
        self.pg_ctl_or_panic("stop", &["stop", "-m", "fast"]);
    }

    /// Stops the server, immediate mode (a crash as far as WAL is concerned).
    pub fn stop_immediate(&self) {
        self.pg_ctl_or_panic("stop -m immediate", &["stop", "-m", "immediate"]);
    }

    /// Stops (fast) and starts the server.
    pub fn restart(&self) {
        self.write_settings();
        self.pg_ctl_or_panic("restart", &["restart", "-m", "fast"]);
    }

    /// Promotes a standby and waits until it accepts writes.
    pub fn promote(&self) {
        self.pg_ctl_or_panic("promote", &["promote"]);
    }

    /// Makes the server re-read its configuration files.
    pub fn reload(&self) {
        self.pg_ctl_or_panic("reload", &["reload"]);
    }

    /// Whether a postmaster is running on this data directory (postmaster.pid present).
    pub fn is_running(&self) -> bool {
        self.data_dir.join("postmaster.pid").exists()
    }

    /// The postmaster's pid, from postmaster.pid, while running.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Everything the server logged so far.
    pub fn server_log(&self) -> String {
        fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Runs `sql` with this major's psql (or the newest installed one; 13 is server-only) as
    /// [`SUPERUSER`] over the Unix socket; returns unaligned tuples-only output without the
    /// trailing newline. Panics with psql's stderr on failure.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql).unwrap_or_else(|err| {
            panic!(
                "psql failed on PostgreSQL {} (port {}): {err}\nSQL: {sql}",
                self.major,
                self.port()
            )
        })
    }

    /// [`Cluster::psql`] returning psql's stderr as the error.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let mut cmd = self.psql_command();
        cmd.arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port().to_string())
            .args(["-U", SUPERUSER, "-d", "postgres"]);
        run_psql(cmd, sql)
    }

    /// Runs `sql` with psql connecting through `conninfo` (TCP, TLS, another user...).
    pub fn try_psql_conninfo(&self, conninfo: &str, sql: &str) -> Result<String, String> {
        let mut cmd = self.psql_command();
        cmd.arg("-d").arg(conninfo);
        run_psql(cmd, sql)
    }

    /// psql with `-XAtq -v ON_ERROR_STOP=1` and a clean PG* environment; add the connection.
    pub fn psql_command(&self) -> Command {
        let mut cmd = Command::new(client_tool(self.major, "psql"));
        clear_pg_env(&mut cmd);
        cmd.env("PGCONNECT_TIMEOUT", "30")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"]);
        cmd
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        let port = self
            .settings
            .iter()
            .find(|(k, _)| k == "port")
            .map(|(_, v)| v.as_str())
            .unwrap_or("5432");
        port.parse()
            .unwrap_or_else(|_| panic!("port setting {port:?} is not a port number"))
    }

    /// The TCP host, always loopback.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The Unix socket directory.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The temp dir holding data/, sock/, tls/, tablespaces/ and server.log.
    pub fn temp_dir(&self) -> &Path {
        &self.temp_dir
    }

    /// The PostgreSQL major.
    pub fn major(&self) -> u32 {
        self.major
    }

    /// The directory of the server binaries used.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Where tablespace `name` (from `.tablespace(name)`) lives.
    pub fn tablespace_dir(&self, name: &str) -> PathBuf {
        self.temp_dir.join("tablespaces").join(name)
    }

    /// A libpq connection string over TCP without TLS.
    pub fn conninfo(&self, user: &str) -> String {
        format!(
            "host={} port={} user={user} dbname=postgres sslmode=disable",
            self.host(),
            self.port()
        )
    }

    /// The TLS files, when the cluster was built with `.tls(..)`.
    pub fn tls_paths(&self) -> Option<&TlsPaths> {
        self.tls.as_ref().map(|t| &t.paths)
    }

    /// The TLS files; panics when the cluster was built without `.tls(..)`.
    pub fn tls(&self) -> &TlsPaths {
        self.tls_paths()
            .expect("cluster built without .tls(..): no TLS paths")
    }

    /// The TLS options the cluster was built with.
    pub fn tls_options(&self) -> Option<&TlsOptions> {
        self.tls.as_ref().map(|t| &t.options)
    }

    /// A client certificate for `user` signed by the cluster's CA: `(cert_path, key_path)`,
    /// mode 0600. Panics when the cluster was built without `.tls(..)`.
    pub fn client_cert(&self, user: &str) -> (PathBuf, PathBuf) {
        self.tls
            .as_ref()
            .expect("cluster built without .tls(..): no CA to sign a client certificate")
            .client_cert(user)
    }
}

fn run_psql(mut cmd: Command, sql: &str) -> Result<String, String> {
    cmd.arg("-f")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let mut stdin = child.stdin.take().expect("psql stdin");
    let sql = sql.to_string();
    // A writer thread: a big script and a big result must not deadlock on the pipes.
    let writer = std::thread::spawn(move || stdin.write_all(sql.as_bytes()));
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for {shown}: {e}"));
    let written = writer.join().expect("psql stdin writer panicked");
    if !out.status.success() {
        return Err(format!(
            "{} ({})",
            String::from_utf8_lossy(&out.stderr).trim_end(),
            out.status
        ));
    }
    written.map_err(|e| format!("cannot send SQL to psql: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(stdout.trim_end_matches('\n').to_string())
}

/// Drops PG* variables of the caller's environment so they cannot redirect a connection.
fn clear_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") && !key.to_string_lossy().starts_with("PGSTREAM")
        {
            cmd.env_remove(key);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- PostgreSQL {} test cluster {} (port {}), tail of server.log ---\n{}",
                self.major,
                self.data_dir.display(),
                self.port(),
                self.log_tail(LOG_TAIL_LINES, 0)
            );
        }
        if self.is_running() {
            let out = self.pg_ctl(&["stop", "-m", "immediate"]);
            if !out.status.success() {
                eprintln!("{}", self.failure("pg_ctl stop -m immediate (drop)", &out));
            }
        }
        if std::env::var("PGSTREAM_KEEP_CLUSTERS").is_ok_and(|v| v == "1") {
            eprintln!(
                "PGSTREAM_KEEP_CLUSTERS=1: keeping {} (data {})",
                self.temp_dir.display(),
                self.data_dir.display()
            );
            return;
        }
        // A restored data dir lives outside temp_dir: it belongs to the test.
        if let Err(e) = fs::remove_dir_all(&self.temp_dir) {
            eprintln!("cannot remove {}: {e}", self.temp_dir.display());
        }
    }
}
