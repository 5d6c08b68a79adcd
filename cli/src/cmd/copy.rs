//! `pgstream copy`: backups and archived WAL from one repository into another (an offsite
//! copy), each file authenticated with the source's keys and sealed again with the
//! destination's. Re-running after an interruption finishes the job; a second run with nothing
//! new writes nothing.

use anyhow::Context as _;
use backup_core::copy::{self, CopyError, CopyOptions, CopySummary, Selection};
use backup_core::store::RepoLocation;
use backup_core::{Repository, Secret};
use clap::Args;
use std::path::PathBuf;

use crate::args::RepoArgs;
use crate::exit::{classified, Failure};

/// The environment variable with the destination's passphrase.
pub const TO_PASSPHRASE_ENV: &str = "PGSTREAM_TO_PASSPHRASE";

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The source repository (a directory, file:///path or s3://bucket/prefix); its passphrase
    /// comes from PGSTREAM_PASSPHRASE or --passphrase-file, as for every command. With
    /// --cluster, the cluster's `repo` from the configuration file.
    #[arg(long = "from", alias = "repo", value_name = "LOCATION")]
    pub from: RepoLocation,

    /// Read the source's passphrase from this file (mode 0600 or stricter) instead of
    /// PGSTREAM_PASSPHRASE.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,

    /// The destination repository, initialised (`pgstream init`) with the same compression
    /// and encryption (encrypted or not) as the source; bound to the same cluster, or to none.
    /// With --cluster, the cluster's `to` from the configuration file.
    #[arg(long = "to", value_name = "LOCATION")]
    pub to: RepoLocation,

    /// Read the destination's passphrase from this file (mode 0600 or stricter) instead of
    /// PGSTREAM_TO_PASSPHRASE. Never on the command line.
    #[arg(long, value_name = "FILE")]
    pub to_passphrase_file: Option<PathBuf>,

    /// Which backups: an id, `latest` or `all` (the default).
    #[arg(long, value_name = "ID|latest|all")]
    pub backup: Option<String>,

    /// Also copy every archived WAL file (segments, .partial segments, history files) the
    /// destination lacks, for point-in-time recovery from the copy.
    #[arg(long)]
    pub wal: bool,

    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: CopyArgs) -> anyhow::Result<()> {
    let backups = match args.backup.as_deref() {
        None | Some("all") => Selection::All,
        Some("latest") => Selection::Latest,
        Some(id) => Selection::Id(id.to_string()),
    };
    let from_args = RepoArgs {
        repo: args.from.clone(),
        passphrase_file: args.passphrase_file.clone(),
    };
    let src = super::open_repo(&from_args)?;
    let to_pass = destination_passphrase(&args)?;
    let mut dst = Repository::open(&args.to, to_pass.as_ref())
        .with_context(|| format!("opening destination repository {}", args.to))?;
    let options = CopyOptions {
        backups,
        wal: args.wal,
    };
    let (from, to) = (args.from.clone(), args.to.clone());
    let summary = tokio::task::spawn_blocking(move || copy::copy(&src, &mut dst, &options))
        .await
        .context("the copy task failed")?
        .map_err(|e| {
            classified(
                failure(&e),
                anyhow::Error::new(e).context(format!("copying from {from} to {to}")),
            )
        })?;
    print_summary(&args, &summary)
}

/// The destination's passphrase: needed when it is encrypted; one given to a destination that
/// says it is not is passed on, and refused there (as for the source).
fn destination_passphrase(args: &CopyArgs) -> anyhow::Result<Option<Secret>> {
    let given = args.to_passphrase_file.is_some()
        || std::env::var_os(TO_PASSPHRASE_ENV).is_some_and(|v| !v.is_empty());
    let encrypted = backup_core::store::open(&args.to)
        .map_err(backup_core::RepoError::from)
        .and_then(|s| backup_core::repo::read_config(s.as_ref()))
        .map(|c| c.encryption.is_some())
        .unwrap_or(true);
    if !given && !encrypted {
        return Ok(None);
    }
    if !given {
        return Err(classified(
            Failure::Usage,
            anyhow::anyhow!(
                "destination repository {} is encrypted: give its passphrase with \
                 --to-passphrase-file FILE or {TO_PASSPHRASE_ENV} (never on the command line)",
                args.to
            ),
        ));
    }
    let secret = backup_core::repo::passphrase::passphrase_from(
        args.to_passphrase_file.as_deref(),
        std::env::var_os(TO_PASSPHRASE_ENV),
    )
    .with_context(|| {
        format!("the destination's passphrase (--to-passphrase-file or {TO_PASSPHRASE_ENV})")
    })?;
    Ok(Some(secret))
}

/// Exit codes (docs/cli.md): a damaged or incomplete source is a verification failure (6); a
/// destination that cannot take the copy, or holds other bytes under a name, is the
/// repository's state (5); the object store, 8; local I/O, 7.
pub fn failure(e: &CopyError) -> Failure {
    use crate::exit::{classify_catalog, classify_repo, classify_store};
    match e {
        CopyError::Repo(r) => classify_repo(r),
        CopyError::Catalog(c) => classify_catalog(c),
        CopyError::Store(s) => classify_store(s),
        CopyError::Source { io: true, .. } => Failure::LocalIo,
        CopyError::Source { .. }
        | CopyError::SourceMissing { .. }
        | CopyError::SourceMismatch { .. }
        | CopyError::BadRecord { .. } => Failure::Verification,
        CopyError::Chain { source, .. } => match source.as_ref() {
            backup_core::catalog::ChainError::UnreadableParent { source, .. } => {
                classify_catalog(source)
            }
            _ => Failure::Repository,
        },
        CopyError::Incompatible { .. }
        | CopyError::Conflict { .. }
        | CopyError::Destination { .. } => Failure::Repository,
    }
}

fn print_summary(args: &CopyArgs, s: &CopySummary) -> anyhow::Result<()> {
    if args.json {
        let json = serde_json::json!({
            "from": args.from.to_string(),
            "to": args.to.to_string(),
            "backups_copied": s.backups_copied,
            "backups_present": s.backups_present,
            "backup_files_copied": s.files_copied,
            "wal_files_copied": s.wal_copied,
            "wal_files_present": s.wal_present,
            "bytes_written": s.bytes_written,
            "destination_bound": s.bound,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let list = |ids: &[String]| {
        if ids.is_empty() {
            "none".to_string()
        } else {
            ids.join(", ")
        }
    };
    println!("copied from {} to {}", args.from, args.to);
    println!("  backups copied:          {}", list(&s.backups_copied));
    println!("  backups already there:   {}", list(&s.backups_present));
    println!(
        "  WAL files copied:        {} ({} already there)",
        s.wal_copied, s.wal_present
    );
    println!("  backup files copied:     {}", s.files_copied);
    println!(
        "  written:                 {}",
        super::human_bytes(s.bytes_written)
    );
    if s.bound {
        println!("  the destination is now bound to the source's cluster");
    }
    Ok(())
}
