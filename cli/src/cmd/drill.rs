//! `pgstream drill`: restore a backup into a scratch directory, start PostgreSQL on it, recover
//! to the target, promote, run checks, stop, clean up, and print (and with --report, write) the
//! drill report. Exit 11 when anything failed; the report says what.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use backup_core::drill::{self, DrillError, DrillPlan};
use backup_core::localpg::LocalPgError;
use clap::Args;

use crate::args::{RecoveryTargetArgs, RepoArgs};
use crate::exit::{classified, Failure};

#[derive(Args, Debug)]
pub struct DrillArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    #[command(flatten)]
    pub target: RecoveryTargetArgs,

    /// Copy the WAL recovery needs into pg_wal/ during the restore, instead of the server
    /// fetching it through restore_command = `pgstream wal-fetch` (the default, which the drill
    /// then proves works).
    #[arg(long)]
    pub copy_wal: bool,

    /// A SQL file to run on the promoted copy (in --check-db); any error fails the drill.
    #[arg(long, value_name = "FILE")]
    pub check_sql: Option<PathBuf>,

    /// The database --check-sql runs in, and the first one connected to.
    #[arg(long, default_value = "postgres", value_name = "DB")]
    pub check_db: String,

    /// The role the drill connects as: a superuser of the backed-up cluster.
    #[arg(long, default_value = "postgres", value_name = "ROLE")]
    pub db_user: String,

    /// Do not run amcheck (bt_index_check on every btree index, verify_heapam on 14+).
    #[arg(long)]
    pub no_amcheck: bool,

    /// Also write the report to this file (durably; replaced if it exists), in the format
    /// printed: markdown, or JSON with --json.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Print the report as JSON instead of markdown.
    #[arg(long)]
    pub json: bool,

    /// Where to make the drill's private scratch directory (default: the system temp
    /// directory, $TMPDIR or /tmp). It needs room for the whole restored cluster.
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,

    /// Keep the scratch directory (the restored copy, its server log) for inspection.
    #[arg(long)]
    pub keep: bool,

    /// The directory holding postgres and pg_ctl of the backup's major (default: found through
    /// pg_config, PATH and the usual package layouts).
    #[arg(long, env = "PGSTREAM_PG_BIN", value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,

    /// When run as root: the unprivileged OS user the server runs as (default: postgres). It
    /// must be able to read the repository and run this pgstream binary (for wal-fetch).
    #[arg(long, value_name = "NAME")]
    pub os_user: Option<String>,

    /// A server setting for the restored copy, NAME=VALUE (repeatable), e.g.
    /// shared_buffers=256MB or shared_preload_libraries= when the source's libraries are not
    /// installed here.
    #[arg(long = "server-setting", value_name = "NAME=VALUE")]
    pub server_settings: Vec<String>,

    /// The longest wait from starting the server until it is promoted (90s, 30m, 2h).
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = crate::cmd::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(args: DrillArgs) -> anyhow::Result<()> {
    let usage = |msg: String| classified(Failure::Usage, anyhow::anyhow!(msg));
    let (target, timeline, inclusive) = super::restore::parse_target(&args.target)?;
    let mut server_settings = Vec::new();
    for s in &args.server_settings {
        server_settings.push(drill::settings::parse_setting(s).map_err(usage)?);
    }
    // Everything that could refuse the drill is checked before it starts: a long drill must
    // not fail at the end for want of a report directory.
    let check_sql = match &args.check_sql {
        Some(p) => Some((
            p.display().to_string(),
            std::fs::read_to_string(p)
                .map_err(|e| usage(format!("--check-sql {}: {e}", p.display())))?,
        )),
        None => None,
    };
    if let Some(r) = &args.report {
        let parent = match r.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() || r.is_dir() {
            return Err(usage(format!(
                "--report {}: its directory must exist and it must not be a directory",
                r.display()
            )));
        }
    }
    let repo = super::open_repo(&args.repo)?;
    let passphrase = if repo.codec().encryption.is_some() {
        Some(backup_core::passphrase_from_env_or_file(
            args.repo.passphrase_file.as_deref(),
        )?)
    } else {
        None
    };
    let plan = DrillPlan {
        backup: args.target.backup.clone(),
        target,
        timeline,
        inclusive,
        copy_wal: args.copy_wal,
        program: std::env::current_exe().context("finding the pgstream executable's path")?,
        passphrase,
        scratch_parent: args.scratch.clone().unwrap_or_else(std::env::temp_dir),
        keep: args.keep,
        pg_bin: args.pg_bin.clone(),
        os_user: args.os_user.clone(),
        db_user: args.db_user.clone(),
        check_db: args.check_db.clone(),
        check_sql,
        amcheck: !args.no_amcheck,
        server_settings,
        timeout: args.timeout,
    };
    let cancel = crate::signals::install().context("installing signal handlers")?;
    let report = drill::run(repo, plan, cancel)
        .await
        .map_err(cli_error)
        .context("drill refused")?;
    let text = if args.json {
        format!("{}\n", serde_json::to_string_pretty(&report)?)
    } else {
        report.markdown()
    };
    print!("{text}");
    if let Some(path) = &args.report {
        backup_core::fsutil::write_file_durably(path, text.as_bytes(), 0o600)
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    if report.interrupted {
        return Err(classified(
            Failure::Interrupted,
            anyhow::anyhow!(
                "drill interrupted; the server was stopped and the scratch directory cleaned up"
            ),
        ));
    }
    if !report.passed {
        return Err(classified(
            Failure::DrillFailed,
            anyhow::anyhow!(
                "drill FAILED: {}",
                report.failure.clone().unwrap_or_else(|| {
                    let failed: Vec<String> = report
                        .checks
                        .iter()
                        .filter(|c| c.status == drill::report::CheckStatus::Fail)
                        .map(|c| c.name.clone())
                        .collect();
                    format!("failed check(s): {}", failed.join(", "))
                })
            ),
        ));
    }
    Ok(())
}

/// Exit codes of a refused drill: the restore's own, 2 for what the user must change
/// (binaries, OS user, arguments), 7 for local I/O.
fn cli_error(e: DrillError) -> anyhow::Error {
    match e {
        DrillError::Pitr(e) => super::restore::cli_error(e),
        e @ DrillError::Invalid(_) => classified(Failure::Usage, e),
        DrillError::LocalPg(e) => match e {
            LocalPgError::NoBinaries(_) | LocalPgError::User(_) => classified(Failure::Usage, e),
            LocalPgError::Io { .. } | LocalPgError::Fs(_) => classified(Failure::LocalIo, e),
            LocalPgError::Cancelled => classified(Failure::Interrupted, e),
            e => classified(Failure::Other, e),
        },
    }
}
