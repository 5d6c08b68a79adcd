//! Command-line arguments. Help texts are the user documentation of each flag.

use std::path::PathBuf;

use backup_core::store::RepoLocation;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// pgstream: PostgreSQL backups over the streaming-replication protocol.
#[derive(Parser, Debug)]
#[command(name = "pgstream", version, about, long_about = None)]
pub struct Cli {
    /// Log level: error, warn, info, debug or trace (or a tracing filter such as
    /// `pgstream=debug`). Also read from PGSTREAM_LOG.
    #[arg(long, global = true, env = "PGSTREAM_LOG", default_value = "info")]
    pub log_level: String,

    /// Log lines as text (colours only on a terminal) or as JSON objects, one a line, with
    /// the backup id, LSN and timeline as fields. Also read from PGSTREAM_LOG_FORMAT.
    #[arg(long, global = true, env = "PGSTREAM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The configuration file. Default: /etc/pgstream/pgstream.toml when it exists. Also read
    /// from PGSTREAM_CONFIG.
    #[arg(
        long = "config",
        global = true,
        env = "PGSTREAM_CONFIG",
        value_name = "FILE"
    )]
    pub config_file: Option<PathBuf>,

    /// Apply the settings of this cluster's section of the configuration file
    /// ([cluster.NAME]). Also read from PGSTREAM_CLUSTER.
    #[arg(long, global = true, env = "PGSTREAM_CLUSTER", value_name = "NAME")]
    pub cluster: Option<String>,

    /// s3:// repositories: read the S3 credentials from this shared credentials file (profile
    /// AWS_PROFILE, or default), ahead of AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. A restore's
    /// restore_command names it too, so the restored server (which has none of your
    /// environment) can reach the repository: it must be readable by the server's user.
    #[arg(long, global = true, value_name = "FILE")]
    pub s3_credentials_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a repository: its configuration, encryption key and layout.
    Init(InitArgs),
    /// Change the repository passphrase without rewriting any data; rotate or retire data keys.
    Rekey(RekeyArgs),
    /// Bring a repository of format version 1 to version 2 (authenticated configuration,
    /// records and pins; data-key rotation). One atomic rewrite of its configuration.
    Upgrade(UpgradeArgs),
    /// Take a base backup of a (remote) server into the repository.
    Base(BaseArgs),
    /// Restore a backup into an empty directory, optionally to a point in time.
    Restore(RestoreArgs),
    /// List the repository's backups.
    List(ListArgs),
    /// Store one WAL file in the repository's WAL archive (archive_command).
    ArchivePush(ArchivePushArgs),
    /// Write one archived WAL file to a path (restore_command); exit 1 quietly when absent.
    WalFetch(WalFetchArgs),
    /// Switch the server to a new WAL segment (pg_switch_wal) and print the LSN.
    SwitchWal(SwitchWalArgs),
    /// Create a named restore point on the server (pg_create_restore_point) and print its LSN.
    RestorePoint(RestorePointArgs),
    /// Stream WAL into the repository continuously, as a long-lived service (like
    /// pg_receivewal, but encrypted and durable).
    ReceiveWal(ReceiveWalArgs),
    /// Repository health, and with --source the server's: for people and monitoring
    /// (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    Status(StatusArgs),
    /// Check the server's settings, role and pg_hba.conf for pgstream, printing the fix for
    /// each problem (exit 10 when problems are found).
    Check(CheckArgs),
    /// Read back and authenticate every file: backups against their manifests, and the WAL
    /// chain from each backup to the end of the archive. Exit 6 naming every bad or missing file.
    Verify(VerifyArgs),
    /// Delete old backups, and only the WAL no kept backup needs (timeline-aware).
    Expire(crate::cmd::expire::ExpireArgs),
    /// Pin a backup so that expire never deletes it (or unpin it with --unpin).
    Keep(crate::cmd::keep::KeepArgs),
    /// Copy backups (and with --wal all archived WAL) into another repository, an offsite
    /// copy with its own passphrase and keys: every file authenticated and sealed again,
    /// records last; resumable, and a no-op when there is nothing new.
    Copy(crate::cmd::copy::CopyArgs),
    /// Restore drill: restore into a scratch directory, start PostgreSQL on it, recover to the
    /// target, promote, run checks, clean up and write a report (non-zero when a check fails).
    Drill(crate::cmd::drill::DrillArgs),
    /// The main job on a throwaway local cluster: receive-wal, a base backup under load and a
    /// point-in-time drill, with a report. Needs only the PostgreSQL server binaries.
    Demo(crate::cmd::demo::DemoArgs),
    /// The configuration file: `config show` prints the settings a command would use and
    /// where each comes from (flag, environment, file and line, default).
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print every setting the configuration file can hold, resolved (flags, then environment,
    /// then the file, then the default), with where each value comes from. Secrets are masked.
    Show,
}

/// Where the repository is and how to unlock it.
#[derive(Args, Debug, Clone)]
pub struct RepoArgs {
    /// The repository: a directory (or file:///path), or s3://BUCKET/PREFIX on S3-compatible
    /// object storage (credentials, region and endpoint as the AWS tools read them; docs/cli.md).
    #[arg(long, env = "PGSTREAM_REPO", value_name = "LOCATION")]
    pub repo: RepoLocation,

    /// Read the passphrase from this file (mode 0600 or stricter) instead of the
    /// PGSTREAM_PASSPHRASE environment variable. Passphrases are never taken from the
    /// command line, where other users could read them.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// Encryption of every file in the repository.
    #[arg(long, value_enum, default_value_t = EncryptionArg::Aes256Gcm)]
    pub encryption: EncryptionArg,

    /// Compression: lz4, zstd[:LEVEL] (1-11), gzip[:LEVEL] (1-9) or none.
    #[arg(long, default_value = "lz4", value_name = "METHOD[:LEVEL]")]
    pub compression: String,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum EncryptionArg {
    #[value(name = "aes-256-gcm")]
    Aes256Gcm,
    #[value(name = "chacha20-poly1305")]
    Chacha20Poly1305,
    /// No encryption (files are still checked against the backup manifest).
    None,
}

#[derive(Args, Debug)]
pub struct RekeyArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// Read the new passphrase from this file instead of PGSTREAM_NEW_PASSPHRASE. With
    /// --rotate-data-key or --retire-key and no new passphrase, the passphrase stays.
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,

    /// Also add a new data key: every file written afterwards uses it, so the old passphrase
    /// with an old copy of the configuration opens none of them. Older keys stay, for reading.
    #[arg(long)]
    pub rotate_data_key: bool,

    /// Remove data key ID from the keyring, once nothing stored under it remains (records and
    /// pins sealed with it are sealed again with the active key). Refused while a receive-wal
    /// or base runs, and while a file needs the key.
    #[arg(long, value_name = "ID", conflicts_with_all = ["rotate_data_key", "new_passphrase_file"])]
    pub retire_key: Option<u32>,
}

#[derive(Args, Debug)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
}

#[derive(Args, Debug)]
pub struct BaseArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// The server to back up, as a libpq connection string or URI
    /// (`host=db1 user=backup`, `postgresql://backup@db1/`). PG* environment variables,
    /// ~/.pgpass and ~/.postgresql/ certificates apply as with libpq. Put passwords in
    /// PGPASSWORD or a .pgpass file, never here.
    #[arg(long, env = "PGSTREAM_SOURCE", value_name = "CONNINFO")]
    pub source: String,

    /// A label for the backup, shown by `list` and stored in backup_label.
    #[arg(long)]
    pub label: Option<String>,

    /// fast: start at once with an immediate checkpoint (I/O burst on the server);
    /// spread: wait for a spread checkpoint.
    #[arg(long, value_enum, default_value_t = CheckpointArg::Fast)]
    pub checkpoint: CheckpointArg,

    /// Limit the server's transfer rate, in kB/s (32 to 1048576), or with a unit:
    /// 500k, 20M.
    #[arg(long, value_name = "RATE")]
    pub max_rate: Option<String>,

    /// Let the server compress (PostgreSQL 15+): lz4, zstd or gzip, with an optional detail
    /// (`zstd:level=3,workers=4`). The compressed archives are stored as they arrive.
    #[arg(long, value_name = "METHOD[:DETAIL]")]
    pub server_compression: Option<String>,

    /// Do not ask the server to verify page checksums while it reads the files.
    #[arg(long)]
    pub no_verify_checksums: bool,

    /// Seconds a connection may deliver nothing, once the files stream, before the backup
    /// fails as a lost connection (a stalled network, a server gone without closing the
    /// connection). 0: wait forever.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub stall_timeout: u64,

    /// Print a JSON summary of the backup on stdout.
    #[arg(long)]
    pub json: bool,

    /// Never show a progress bar, even on a terminal (log lines instead).
    #[arg(long)]
    pub no_progress: bool,

    /// Take an incremental backup (PostgreSQL 17+, with summarize_wal = on): only the blocks
    /// changed since the parent backup (--from). Restore rebuilds full files from the chain.
    #[arg(long)]
    pub incremental: bool,

    /// The parent of an incremental backup: a backup id, or latest (the default).
    #[arg(long, value_name = "ID|latest", requires = "incremental")]
    pub from: Option<String>,

    /// Schedule policy for a daily job: an incremental backup of the newest backup, but a full
    /// one when there is none yet, when the newest chain's full backup started more than
    /// DURATION ago (7d: a full backup weekly), or when the newest backup cannot be a parent
    /// (another timeline, a broken chain, WAL summaries gone).
    #[arg(long, value_name = "DURATION", conflicts_with_all = ["incremental", "from"])]
    pub full_every: Option<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum CheckpointArg {
    Fast,
    Spread,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// The directory to restore into. It must not exist or be empty (see --force).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,

    #[command(flatten)]
    pub target: RecoveryTargetArgs,

    /// Restore the tablespace that was at OLD into NEW (repeatable). Tablespaces not
    /// mapped go back to their original location, which must then be empty.
    #[arg(long = "tablespace-map", value_name = "OLD=NEW")]
    pub tablespace_map: Vec<String>,

    /// What the server does at the target: pause (the server's default), promote or shutdown.
    #[arg(long, value_name = "ACTION", value_parser = ["pause", "promote", "shutdown"])]
    pub target_action: Option<String>,

    /// Copy the WAL recovery needs into pg_wal/ so the directory stands alone (no
    /// restore_command reading the repository).
    #[arg(long)]
    pub copy_wal: bool,

    /// Empty a non-empty --to directory (and --tablespace-map destinations) first. Original
    /// tablespace locations are never emptied.
    #[arg(long)]
    pub force: bool,

    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The backup and the recovery target: shared by `restore` and `drill`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("recovery_target").multiple(false)))]
pub struct RecoveryTargetArgs {
    /// The backup to restore: its id, or `latest`. Without it: the newest backup, or with
    /// --target-time/--target-lsn the newest that ends before the target.
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,

    /// Point-in-time recovery: stop at the first commit after this time, which needs an
    /// explicit offset (2024-05-01T12:34:56+02:00, 2024-05-01 10:34:56.5Z).
    #[arg(long, value_name = "TIME", group = "recovery_target")]
    pub target_time: Option<String>,

    /// Point-in-time recovery: stop at this WAL location (X/X).
    #[arg(long, value_name = "LSN", group = "recovery_target")]
    pub target_lsn: Option<String>,

    /// Point-in-time recovery: stop at the commit of this transaction id.
    #[arg(long, value_name = "XID", group = "recovery_target")]
    pub target_xid: Option<u64>,

    /// Point-in-time recovery: stop at this restore point (pgstream restore-point).
    #[arg(long, value_name = "NAME", group = "recovery_target")]
    pub target_name: Option<String>,

    /// Recovery that stops as soon as the backup is consistent (its end).
    #[arg(long, group = "recovery_target")]
    pub target_immediate: bool,

    /// Recovery through all archived WAL (the target when any other recovery option is given
    /// without a target).
    #[arg(long, group = "recovery_target")]
    pub target_latest: bool,

    /// The timeline to recover along: latest (default), current (the backup's) or a number.
    #[arg(long, value_name = "latest|current|N")]
    pub target_timeline: Option<String>,

    /// Whether recovery stops just after (on, the default) or just before the target
    /// (time, LSN and xid targets).
    #[arg(long, value_name = "on|off", value_parser = on_off())]
    pub target_inclusive: Option<bool>,
}

/// PostgreSQL's spelling of a boolean setting (`on`, `off`), as docs/cli.md shows it; `true`,
/// `false`, `yes`, `no`, `1` and `0` are accepted too, as the server accepts them.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    #[value(alias = "true", alias = "yes", alias = "1")]
    On,
    #[value(alias = "false", alias = "no", alias = "0")]
    Off,
}

fn on_off() -> impl clap::builder::TypedValueParser<Value = bool> {
    use clap::builder::TypedValueParser as _;
    clap::builder::EnumValueParser::<OnOff>::new().map(|v| v == OnOff::On)
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// The repository, and in an encrypted one optionally its passphrase: without one, backups,
    /// segment ranges and gaps are listed, but not branch points or recoverable windows.
    #[command(flatten)]
    pub repo: RepoArgs,

    /// Print JSON (the shape documented in docs/cli.md) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ArchivePushArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// The file to archive: archive_command's %p (a path relative to the data directory). Its
    /// name says what it is: a WAL segment, a `.partial` segment, a timeline history file or a
    /// backup history file; any other name is refused.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

#[derive(Args, Debug)]
pub struct WalFetchArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// The archived file to fetch: restore_command's %f.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Where to write it: restore_command's %p.
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,

    /// Prefetch spool: after serving a complete segment from the repository, also write the
    /// next --prefetch complete segments of its timeline here (one key derivation for all),
    /// and serve later requests from here without opening the repository. A directory for
    /// pgstream alone (created if missing); without it nothing is prefetched.
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    /// How many segments the spool holds ahead of the one requested (0 disables the spool).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub prefetch: u32,
}

#[derive(Args, Debug)]
pub struct SwitchWalArgs {
    /// The server, as a libpq connection string or URI (an ordinary connection; the role
    /// needs superuser or EXECUTE on pg_switch_wal). Passwords belong in PGPASSWORD or .pgpass.
    #[arg(long, env = "PGSTREAM_SOURCE", value_name = "CONNINFO")]
    pub source: String,
}

#[derive(Args, Debug)]
pub struct RestorePointArgs {
    /// The server, as a libpq connection string or URI (an ordinary connection; the role
    /// needs superuser or EXECUTE on pg_create_restore_point).
    #[arg(long, env = "PGSTREAM_SOURCE", value_name = "CONNINFO")]
    pub source: String,

    /// The restore point's name (1 to 63 bytes), for recovery_target_name.
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct ReceiveWalArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// The server to stream from, as a libpq connection string or URI. With several hosts
    /// and target_session_attrs=primary, a failover to a new primary is followed. Passwords
    /// go in PGPASSWORD or .pgpass, never here.
    #[arg(long, env = "PGSTREAM_SOURCE", value_name = "CONNINFO")]
    pub source: String,

    /// Stream from this physical replication slot, so the server keeps WAL until it is
    /// archived. Without a slot, the server may remove WAL before it is received.
    #[arg(long, value_name = "NAME")]
    pub slot: Option<String>,

    /// Create the slot (with RESERVE_WAL) if it does not exist yet.
    #[arg(long)]
    pub create_slot: bool,

    /// fsync and acknowledge after every batch of WAL, so the server can count this receiver
    /// as a synchronous standby (name it in synchronous_standby_names).
    #[arg(long)]
    pub synchronous: bool,

    /// The application_name the server sees (what synchronous_standby_names refers to).
    /// Default: the conninfo's, else `pgstream`.
    #[arg(long, value_name = "NAME")]
    pub application_name: Option<String>,

    /// Seconds between status updates sent without being asked.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub status_interval: u64,

    /// Seconds the connection may deliver nothing before it is taken for lost and
    /// reconnected (a stalled network, a server gone without closing the connection); the
    /// server is asked for a reply after half of it. 0: wait forever.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub stall_timeout: u64,

    /// Exit on a lost connection instead of reconnecting.
    #[arg(long)]
    pub no_reconnect: bool,

    /// Serve OpenMetrics (received, flushed and archived LSN, lag, segments archived,
    /// reconnects, errors) over HTTP at this address, e.g. 127.0.0.1:9187 (GET /metrics).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// Verify only this backup (its id, or `latest`) and the WAL chain from it; every file in
    /// the WAL archive is still authenticated.
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Also write the report as JSON to this file (durably, replaced; mode 0644), for
    /// `status --verify-report`.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The repository: a directory (or file:///path), or s3://BUCKET/PREFIX on S3-compatible
    /// object storage (credentials, region and endpoint as the AWS tools read them; docs/cli.md). No passphrase is needed.
    #[arg(long, env = "PGSTREAM_REPO", value_name = "LOCATION")]
    pub repo: RepoLocation,

    /// Also check the server: reachability (an ordinary connection), and with --slot the slot.
    #[arg(long, env = "PGSTREAM_SOURCE", value_name = "CONNINFO")]
    pub source: Option<String>,

    /// The replication slot to report on (active, restart_lsn lag, wal_status); needs --source.
    #[arg(long, value_name = "NAME", requires = "source")]
    pub slot: Option<String>,

    /// WARNING when the newest backup ended longer ago than this (90m, 26h, 2d).
    #[arg(long, default_value = "26h", value_name = "AGE", value_parser = crate::cmd::parse_duration)]
    pub warn_backup_age: std::time::Duration,

    /// CRITICAL when the newest backup ended longer ago than this.
    #[arg(long, default_value = "50h", value_name = "AGE", value_parser = crate::cmd::parse_duration)]
    pub crit_backup_age: std::time::Duration,

    /// WARNING when no WAL was archived (or received) for longer than this.
    #[arg(long, default_value = "15m", value_name = "AGE", value_parser = crate::cmd::parse_duration)]
    pub warn_wal_age: std::time::Duration,

    /// CRITICAL when no WAL was archived (or received) for longer than this.
    #[arg(long, default_value = "1h", value_name = "AGE", value_parser = crate::cmd::parse_duration)]
    pub crit_wal_age: std::time::Duration,

    /// Print the report as JSON on stdout (the same as --format json).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,

    /// text, json, or openmetrics (for node_exporter's textfile collector; exits 0 whenever
    /// the report was written, the health being in the metrics).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<StatusFormat>,

    /// Write the report to this file instead of stdout, atomically (a temporary file renamed
    /// over it, mode 0644), as node_exporter's textfile collector needs.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Also report the last verify: the JSON report `pgstream verify --report FILE` wrote
    /// (CRITICAL when it found problems, WARNING when there is none yet).
    #[arg(long, value_name = "FILE")]
    pub verify_report: Option<PathBuf>,

    /// Also report the last restore drill: the JSON report `pgstream drill --json --report
    /// FILE` wrote (CRITICAL when it failed, WARNING when there is none yet).
    #[arg(long, value_name = "FILE")]
    pub drill_report: Option<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
    #[value(name = "openmetrics")]
    OpenMetrics,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The server to check, as a libpq connection string or URI, with the role pgstream uses.
    /// Passwords belong in PGPASSWORD or .pgpass.
    #[arg(long, env = "PGSTREAM_SOURCE", value_name = "CONNINFO")]
    pub source: String,

    /// Also check this replication slot: it exists, is physical, and has not lost WAL.
    #[arg(long, value_name = "NAME")]
    pub slot: Option<String>,

    /// The server archives with `pgstream archive-push`: check archive_mode and
    /// archive_command.
    #[arg(long)]
    pub archive_push: bool,

    /// Incremental backups are taken (`base --incremental`, `--full-every`): check the
    /// version (17+), summarize_wal and how long WAL summaries are kept.
    #[arg(long)]
    pub incremental: bool,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    fn help(sub: &str) -> String {
        let mut cmd = super::Cli::command();
        cmd.build();
        cmd.find_subcommand_mut(sub)
            .unwrap()
            .render_long_help()
            .to_string()
    }

    #[test]
    fn target_inclusive_help_says_on_off_as_the_docs_do() {
        let text = help("restore");
        let line = text
            .split("--target-inclusive")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .unwrap();
        assert!(line.contains("possible values: on, off"), "{line}");
        assert!(!line.contains("true, false"), "{line}");
        let parse = |v: &str| {
            super::Cli::try_parse_from(
                ["pgstream", "restore", "--repo", "r", "--to", "t"]
                    .into_iter()
                    .chain(["--target-inclusive", v]),
            )
            .map(|c| match c.command {
                super::Command::Restore(r) => r.target.target_inclusive,
                _ => unreachable!(),
            })
        };
        assert_eq!(parse("on").unwrap(), Some(true));
        assert_eq!(parse("off").unwrap(), Some(false));
        assert_eq!(parse("false").unwrap(), Some(false));
        assert!(parse("maybe").is_err());
        let docs = include_str!("../../docs/cli.md");
        assert!(
            docs.contains("--target-inclusive on|off"),
            "docs/cli.md changed its spelling"
        );
    }

    #[test]
    fn init_help_names_the_zstd_levels_accepted() {
        let max = backup_core::compress::MAX_ZSTD_LEVEL;
        let text = help("init");
        assert!(text.contains(&format!("zstd[:LEVEL] (1-{max})")), "{text}");
        assert!(format!("zstd:{max}")
            .parse::<backup_core::Compression>()
            .is_ok());
        assert!(format!("zstd:{}", max + 1)
            .parse::<backup_core::Compression>()
            .is_err());
    }
}
