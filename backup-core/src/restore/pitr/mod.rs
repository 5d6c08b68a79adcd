//! Point-in-time restore: choose the backup for a target, check the target against the
//! recoverable window, unpack the backup with an empty `pg_wal/`, and write `recovery.signal` and
//! the recovery settings. Recovery then fetches WAL through `restore_command` = `pgstream
//! wal-fetch`, or, with `copy_wal`, from the segments copied into `pg_wal/` (the directory then
//! stands alone and `restore_command` is `false`, which PostgreSQL reads as "not archived").

mod choose;
mod settings;
mod target;
mod validate;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use pgwire_repl::{Lsn, TimelineId};

use super::window::{self, Window};
use super::{RestoreError, RestorePlan, RestoreSummary, WalPlacement};
use crate::catalog::{BackupRecord, CatalogError};
use crate::fsutil::{self, FsError};
use crate::repo::{RepoError, Repository};
use crate::wal::archive::{WalArchive, WalArchiveError};
use crate::wal::{HistoryError, WalSegmentSize};

use choose::choose_backup;
use settings::{restore_command, write_settings};
use validate::{check_force_safe, check_recovery_options, check_target};

pub use settings::conf_quote;
pub use target::{RecoveryTarget, TargetAction, TargetTime, TargetTimeline};

/// The recovery part of a restore.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub target: RecoveryTarget,
    /// `None`: the server's default (pause).
    pub action: Option<TargetAction>,
    pub timeline: TargetTimeline,
    /// `recovery_target_inclusive` (time, LSN and xid targets).
    pub inclusive: bool,
    /// Copy the WAL needed into `pg_wal/` instead of fetching it through restore_command.
    pub copy_wal: bool,
    /// The passphrase file restore_command passes to wal-fetch (absolute). Required for an
    /// encrypted repository unless `copy_wal`.
    pub passphrase_file: Option<PathBuf>,
    /// The pgstream executable restore_command runs (absolute).
    pub program: PathBuf,
    /// wal-fetch's prefetch spool (`--spool-dir`); `None`: [`DEFAULT_SPOOL_DIR`] in the data
    /// directory.
    pub spool_dir: Option<PathBuf>,
}

/// The prefetch spool restore_command uses unless told otherwise, relative to the data
/// directory (restore_command runs there): under `pg_wal/`, whose contents base backups leave
/// out and whose non-WAL names the server ignores, and on pg_wal's file system, so serving a
/// spooled segment is a rename. It holds at most 8 segments, and is left after recovery.
pub const DEFAULT_SPOOL_DIR: &str = "pg_wal/pgstream-spool";

/// A restore, with or without recovery settings.
#[derive(Debug, Clone)]
pub struct PitrPlan {
    /// A backup id, `latest`, or `None`: the newest backup that suits the target.
    pub backup: Option<String>,
    pub target: PathBuf,
    pub tablespace_map: BTreeMap<PathBuf, PathBuf>,
    pub force: bool,
    /// `None`: the backup alone, its WAL in `pg_wal/`, no recovery settings.
    pub recovery: Option<Recovery>,
}

/// What a point-in-time restore set up.
#[derive(Debug, Clone)]
pub struct RecoverySummary {
    pub target: RecoveryTarget,
    pub window: Window,
    pub restore_command: String,
    /// Segments copied into `pg_wal/` (`copy_wal`).
    pub copied_segments: usize,
    /// Notes for the user: what the server will do at the end, what cannot be known here.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PitrSummary {
    pub restore: RestoreSummary,
    pub recovery: Option<RecoverySummary>,
}

/// Why a point-in-time restore was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum PitrError {
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Archive(#[from] WalArchiveError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    History(HistoryError),
    #[error("reading {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: io::Error,
    },
    /// A usage problem: the message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// The target is outside the window; the message states the window.
    #[error("{window}; {what} is outside it")]
    OutsideWindow { window: String, what: String },
    #[error("no backup suits {target}: {why}")]
    NoBackup { target: String, why: String },
    #[error(
        "the repository has no history file for timeline {timeline} ({:08X}.history): archive \
         it (archive_command on the promoted server) or choose another --target-timeline",
        timeline.0
    )]
    NoHistory { timeline: TimelineId },
    #[error(
        "the WAL archive does not reach the end of backup {backup} ({end}): {window}; the \
         server would stop with \"WAL ends before end of online backup\""
    )]
    ArchiveShort {
        backup: String,
        end: Lsn,
        window: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Restores `plan`. Blocking. Every check happens before anything is written.
pub fn run(repo: &Repository, plan: &PitrPlan) -> Result<PitrSummary, PitrError> {
    let catalog = repo.catalog();
    let Some(recovery) = &plan.recovery else {
        check_force_safe(repo, plan, None)?;
        let backup = plan.backup.as_deref().unwrap_or("latest");
        let restore = super::run(repo, &restore_plan(plan, backup, WalPlacement::BackupWal))?;
        return Ok(PitrSummary {
            restore,
            recovery: None,
        });
    };
    check_recovery_options(recovery)?;
    if repo.codec().encryption.is_some() && !recovery.copy_wal && recovery.passphrase_file.is_none()
    {
        return Err(PitrError::Invalid(
            "the repository is encrypted: restore_command needs --passphrase-file FILE (an \
             absolute path the server's user can read; the passphrase itself is never written \
             into the data directory), or use --copy-wal"
                .into(),
        ));
    }
    let restore_command = restore_command(repo, recovery)?;
    let (record, history) = choose_backup(repo, &catalog, plan.backup.as_deref(), recovery)?;
    check_force_safe(repo, plan, Some(&record))?;
    let window = window::compute(repo, &record, &history)?;
    // Only a time target needs it: it stops at a commit or abort.
    let last_commit = match recovery.target {
        RecoveryTarget::Time(_) if window.reaches_backup_end() => {
            super::last_commit::last_commit(repo, &window)?
        }
        _ => None,
    };
    let notes = check_target(&record, &window, recovery, last_commit)?;
    let restore = super::run(repo, &restore_plan(plan, &record.id, WalPlacement::Empty))?;
    let copied = if recovery.copy_wal {
        copy_wal(repo, &record, &window, recovery, &plan.target)?
    } else {
        0
    };
    write_settings(&plan.target, &record, recovery, &restore_command)?;
    fsutil::write_new_file_durably(&plan.target.join("recovery.signal"), b"", 0o600)?;
    Ok(PitrSummary {
        restore,
        recovery: Some(RecoverySummary {
            target: recovery.target.clone(),
            window,
            restore_command,
            copied_segments: copied,
            notes,
        }),
    })
}

/// The backup [`run`] would restore for `plan`, for callers that must know it first (a drill
/// maps every tablespace of it into its scratch directory). Passing its id as `plan.backup`
/// then restores exactly this backup. Its tablespace locations are checked here already.
pub fn chosen_backup(repo: &Repository, plan: &PitrPlan) -> Result<BackupRecord, PitrError> {
    let catalog = repo.catalog();
    let record = match &plan.recovery {
        None => catalog.resolve(plan.backup.as_deref().unwrap_or("latest"))?,
        Some(recovery) => {
            check_recovery_options(recovery)?;
            choose_backup(repo, &catalog, plan.backup.as_deref(), recovery)?.0
        }
    };
    super::plan_tablespaces(&record, &plan.tablespace_map)?;
    Ok(record)
}

fn restore_plan(plan: &PitrPlan, backup: &str, wal: WalPlacement) -> RestorePlan {
    RestorePlan {
        backup: backup.to_string(),
        target: plan.target.clone(),
        tablespace_map: plan.tablespace_map.clone(),
        force: plan.force,
        wal,
    }
}

/// Copies the segments recovery needs (and the history files of the path) into `pg_wal/`.
fn copy_wal(
    repo: &Repository,
    record: &BackupRecord,
    window: &Window,
    recovery: &Recovery,
    target: &Path,
) -> Result<usize, PitrError> {
    let seg_size = WalSegmentSize::new(record.wal_segment_size)
        .map_err(|e| PitrError::Internal(format!("backup record {}: {e}", record.id)))?;
    let end = match &recovery.target {
        RecoveryTarget::Immediate => record.end_lsn,
        // The record at or after the LSN may start in the next segment.
        RecoveryTarget::Lsn(l) => {
            Lsn(((seg_size.segno_of(*l) + 2) * seg_size.bytes()).min(window.end.0))
        }
        _ => window.end,
    };
    let pg_wal = target.join("pg_wal");
    let archive = WalArchive::new(repo);
    let mut copied = 0;
    for segment in window
        .history
        .segments_between(record.start_lsn, end, seg_size)
    {
        let name = segment.to_string();
        archive.fetch(&name, &pg_wal.join(&name))?;
        copied += 1;
    }
    for span in window.history.spans() {
        if span.timeline.0 > 1 {
            let name = format!("{:08X}.history", span.timeline.0);
            archive.fetch(&name, &pg_wal.join(&name))?;
        }
    }
    fsutil::fsync_dir(&pg_wal)?;
    Ok(copied)
}
