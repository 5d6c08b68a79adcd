//! The throwaway source cluster: its secrets (a 0600 passfile for the backup role, the
//! repository passphrase), initdb with data checksums, a start on a free loopback port, the
//! backup role and the demo database.
//!
//! The bootstrap superuser `postgres` has no password: it is reachable only over the private
//! Unix socket (trust, as initdb's `--auth-local` default), which the demo itself, pgbench and
//! the server's own user use. Over TCP everything is SCRAM: pgstream connects as
//! `pgstream_backup`, a REPLICATION role with a generated password in the passfile.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use backup_core::localpg::server::conninfo_quote;
use backup_core::localpg::{self, sql, InitdbOptions, LocalServer, PgBin, RunAs, StartOptions};
use pgwire_repl::Connection;
use tokio_util::sync::CancellationToken;

/// The role pgstream connects as.
pub const BACKUP_ROLE: &str = "pgstream_backup";
/// The database the demo loads and checks.
pub const DATABASE: &str = "demo";
/// The bootstrap superuser.
pub const SUPERUSER: &str = "postgres";

/// Files of the demo directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn secrets(&self) -> PathBuf {
        self.dir.join("secrets")
    }
    pub fn passfile(&self) -> PathBuf {
        self.secrets().join("pgpass")
    }
    pub fn passphrase_file(&self) -> PathBuf {
        self.secrets().join("passphrase")
    }
    pub fn repo(&self) -> PathBuf {
        self.dir.join("repo")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn drill(&self) -> PathBuf {
        self.dir.join("drill")
    }
    pub fn check_sql(&self) -> PathBuf {
        self.dir.join("check.sql")
    }
    pub fn report(&self) -> PathBuf {
        self.dir.join("drill-report.md")
    }
}

/// The running source cluster.
#[derive(Debug)]
pub struct Source {
    pub server: LocalServer,
    /// The conninfo pgstream uses: TCP, SCRAM, the passfile.
    pub conninfo: String,
    /// A superuser connection to the demo database over the socket.
    pub conn: Connection,
}

/// `n` random bytes from the kernel, as hex (passwords and passphrases; no extra crate).
pub fn random_hex(n: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a private file (0600, durably) owned by the server's user.
pub fn write_private(run_as: &RunAs, path: &Path, text: &str) -> anyhow::Result<()> {
    backup_core::fsutil::write_new_file_durably(path, text.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))?;
    run_as
        .chown(path)
        .with_context(|| format!("handing {} to the server's user", path.display()))
}

/// Makes the secrets (the passfile and the repository passphrase), initdb's the cluster and
/// starts it; returns the backup role's password for [`create_roles`].
pub fn init_and_start(
    layout: &Layout,
    bin: &PgBin,
    run_as: &RunAs,
) -> anyhow::Result<(LocalServer, String)> {
    run_as.prepare_dir(&layout.secrets())?;
    let password = random_hex(24)?;
    // Any port: the server's port is chosen just before it starts.
    write_private(
        run_as,
        &layout.passfile(),
        &format!("127.0.0.1:*:*:{BACKUP_ROLE}:{password}\n"),
    )?;
    write_private(run_as, &layout.passphrase_file(), &random_hex(32)?)?;
    println!(
        "  secrets: {} (the backup role's password) and {} (the repository passphrase), \
         both 0600",
        layout.passfile().display(),
        layout.passphrase_file().display()
    );
    let opts = InitdbOptions {
        settings: vec![
            // 13's default is md5, which SCRAM pg_hba lines refuse.
            ("password_encryption".into(), "scram-sha-256".into()),
            ("wal_level".into(), "replica".into()),
        ],
        ..InitdbOptions::default()
    };
    println!(
        "$ initdb -D {} -U {SUPERUSER} --auth-local=trust --auth-host=scram-sha-256 \
         --data-checksums --encoding=UTF8 --locale=C",
        layout.data().display()
    );
    localpg::initdb(bin, run_as, &layout.data(), &opts)?;
    let settings: Vec<String> = opts
        .settings
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    println!("  added to postgresql.conf: {}", settings.join(", "));
    let server = LocalServer::start(StartOptions::new(
        bin.clone(),
        run_as.clone(),
        layout.data(),
        &layout.dir,
    ))?;
    println!(
        "$ postgres -D {} -p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
        layout.data().display(),
        server.port(),
        server.socket_dir().display()
    );
    Ok((server, password))
}

/// Waits for the server, creates the backup role (REPLICATION, SCRAM password, allowed to
/// switch WAL) and the demo database, and returns the [`Source`].
pub async fn connect_and_prepare(
    mut server: LocalServer,
    password: &str,
    layout: &Layout,
    cancel: &CancellationToken,
) -> anyhow::Result<Source> {
    let mut conn = server
        .wait_ready(
            SUPERUSER,
            "postgres",
            Duration::from_secs(120),
            Some(cancel),
        )
        .await?;
    let version = sql::query_value(&mut conn, "SHOW server_version").await?;
    println!(
        "  PostgreSQL {} is up on 127.0.0.1:{} (log: {})",
        version.unwrap_or_default(),
        server.port(),
        server.log_file().display()
    );
    // The password travels in this statement over the private socket: never in argv or a log
    // (log_statement is off).
    let setup = [
        format!(
            "CREATE ROLE {BACKUP_ROLE} LOGIN REPLICATION PASSWORD {}",
            sql::quote_literal(password)
        ),
        format!("GRANT EXECUTE ON FUNCTION pg_switch_wal() TO {BACKUP_ROLE}"),
        format!("CREATE DATABASE {DATABASE}"),
    ];
    println!(
        "  SQL: CREATE ROLE {BACKUP_ROLE} LOGIN REPLICATION PASSWORD '…'; GRANT EXECUTE ON \
         FUNCTION pg_switch_wal() TO {BACKUP_ROLE}; CREATE DATABASE {DATABASE};"
    );
    for stmt in &setup {
        sql::query_rows(&mut conn, stmt).await?;
    }
    conn.close().await;
    let conn = server
        .connect(SUPERUSER, DATABASE)
        .await
        .context("connecting to the demo database")?;
    let conninfo = format!(
        "{} passfile={}",
        server.tcp_conninfo(BACKUP_ROLE, "postgres"),
        conninfo_quote(&layout.passfile().to_string_lossy())
    );
    Ok(Source {
        server,
        conninfo,
        conn,
    })
}
