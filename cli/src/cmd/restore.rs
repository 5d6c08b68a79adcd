//! `pgstream restore`: a backup alone (its WAL in pg_wal/, consistent at its end), or with
//! recovery settings for point-in-time recovery (restore_command = `pgstream wal-fetch`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use backup_core::restore::pitr::{
    self, PitrError, PitrPlan, Recovery, RecoveryTarget, TargetAction, TargetTime, TargetTimeline,
};

use crate::args::{RecoveryTargetArgs, RestoreArgs};
use crate::exit::{classified, Failure};

pub async fn run(args: RestoreArgs) -> anyhow::Result<()> {
    let usage = |msg: String| classified(Failure::Usage, anyhow::anyhow!(msg));
    let mut tablespace_map = BTreeMap::new();
    for m in &args.tablespace_map {
        let (old, new) = m
            .split_once('=')
            .ok_or_else(|| usage(format!("--tablespace-map {m:?}: expected OLD=NEW")))?;
        let (old, new) = (PathBuf::from(old), PathBuf::from(new));
        if !old.is_absolute() || !new.is_absolute() {
            return Err(usage(format!(
                "--tablespace-map {m:?}: both paths must be absolute"
            )));
        }
        tablespace_map.insert(old, new);
    }
    let recovery = recovery_options(&args)?;
    let target = absolute(&args.to)?;
    let repo = super::open_repo(&args.repo)?;
    let plan = PitrPlan {
        backup: args.target.backup.clone(),
        target: target.clone(),
        tablespace_map,
        force: args.force,
        recovery,
    };
    let summary = tokio::task::spawn_blocking(move || pitr::run(&repo, &plan))
        .await
        .context("the restore task failed")?
        .map_err(cli_error)
        .context("restore failed")?;
    let restored = &summary.restore;
    if args.json {
        let recovery = summary.recovery.as_ref().map(|r| {
            serde_json::json!({
                "target": r.target.to_string(),
                "timeline": r.window.history.timeline().0,
                "window_start": r.window.start.to_string(),
                "window_end": r.window.end.to_string(),
                "window": r.window.to_string(),
                "restore_command": r.restore_command,
                "copied_segments": r.copied_segments,
                "notes": r.notes,
            })
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "backup": restored.backup.id,
                "target": restored.target,
                "files": restored.files,
                "bytes": restored.bytes,
                "wal_segments": restored.wal_segments,
                "tablespaces": restored.tablespaces,
                "seconds": restored.seconds,
                "end_lsn": restored.backup.end_lsn.to_string(),
                "recovery": recovery,
            }))?
        );
        return Ok(());
    }
    println!(
        "restored backup {} (ended {} at {}) into {}: {} files ({}), {:.1} s",
        restored.backup.id,
        restored.backup.end_lsn,
        restored.backup.end_time,
        restored.target.display(),
        restored.files,
        super::base::human_bytes(restored.bytes),
        restored.seconds
    );
    for (oid, dir) in &restored.tablespaces {
        println!("  tablespace {oid} restored into {}", dir.display());
    }
    let dir = restored.target.display();
    let major = restored.backup.server_major;
    match &summary.recovery {
        None => {
            println!(
                "{} WAL segment(s) in pg_wal/; no recovery settings were written",
                restored.wal_segments
            );
            println!(
                "start it with: pg_ctl -D {dir} start   (PostgreSQL {major}; it replays WAL up to {} and is then consistent)",
                restored.backup.end_lsn
            );
            println!("check it first with: pg_verifybackup {dir}");
        }
        Some(r) => {
            println!("{}", r.window);
            if r.copied_segments > 0 {
                println!(
                    "copied {} WAL segment(s) into pg_wal/: the directory does not need the repository",
                    r.copied_segments
                );
            } else {
                println!("restore_command = {}", pitr::conf_quote(&r.restore_command));
            }
            println!("recovery.signal and the recovery settings are in {dir}/postgresql.auto.conf");
            let then = match (&r.target, args.target_action.as_deref()) {
                (RecoveryTarget::Latest, _) => {
                    "then it ends recovery and opens on a new timeline".to_string()
                }
                (_, Some("promote")) => "then it opens on a new timeline (promote)".into(),
                (_, Some("shutdown")) => "then it shuts down (recovery.signal stays)".into(),
                _ => "then it pauses: check the data, then SELECT pg_wal_replay_resume() to open it (needs hot_standby = on, the default)".into(),
            };
            println!(
                "start it with: pg_ctl -D {dir} start   (PostgreSQL {major}; it recovers along timeline {} to {}; {then})",
                r.window.history.timeline(),
                r.target,
            );
            for note in &r.notes {
                println!("note: {note}");
            }
        }
    }
    Ok(())
}

/// The target asked for by the shared options (`Latest` when none), the timeline to follow
/// and recovery_target_inclusive. Also used by `pgstream drill`.
pub(super) fn parse_target(
    t: &RecoveryTargetArgs,
) -> anyhow::Result<(RecoveryTarget, TargetTimeline, bool)> {
    let usage = |msg: String| classified(Failure::Usage, anyhow::anyhow!(msg));
    let target = if let Some(time) = &t.target_time {
        RecoveryTarget::Time(
            TargetTime::parse(time).map_err(|e| usage(format!("--target-time {e}")))?,
        )
    } else if let Some(l) = &t.target_lsn {
        RecoveryTarget::Lsn(l.parse().map_err(|_| {
            usage(format!(
                "--target-lsn {l:?}: expected an LSN such as 0/3000060"
            ))
        })?)
    } else if let Some(x) = t.target_xid {
        RecoveryTarget::Xid(x)
    } else if let Some(n) = &t.target_name {
        RecoveryTarget::Name(n.clone())
    } else if t.target_immediate {
        RecoveryTarget::Immediate
    } else {
        RecoveryTarget::Latest
    };
    let timeline = match &t.target_timeline {
        Some(tl) => {
            TargetTimeline::parse(tl).map_err(|e| usage(format!("--target-timeline {e}")))?
        }
        None => TargetTimeline::Latest,
    };
    Ok((target, timeline, t.target_inclusive.unwrap_or(true)))
}

/// The recovery part, when any recovery option is given.
fn recovery_options(args: &RestoreArgs) -> anyhow::Result<Option<Recovery>> {
    let (target, timeline, inclusive) = parse_target(&args.target)?;
    let wanted = target != RecoveryTarget::Latest
        || args.target.target_latest
        || args.target_action.is_some()
        || args.target.target_timeline.is_some()
        || args.target.target_inclusive.is_some()
        || args.copy_wal;
    if !wanted {
        return Ok(None);
    }
    let action = args.target_action.as_deref().map(|a| match a {
        "promote" => TargetAction::Promote,
        "shutdown" => TargetAction::Shutdown,
        _ => TargetAction::Pause,
    });
    let passphrase_file = match &args.repo.passphrase_file {
        Some(p) => Some(absolute(p)?),
        None => None,
    };
    let program = std::env::current_exe().context("finding the pgstream executable's path")?;
    Ok(Some(Recovery {
        target,
        action,
        timeline,
        inclusive,
        copy_wal: args.copy_wal,
        passphrase_file,
        program,
        spool_dir: None,
    }))
}

/// Exit codes: a refused target or option is a usage error (2); the library errors keep their
/// own classification.
pub(super) fn cli_error(e: PitrError) -> anyhow::Error {
    match e {
        PitrError::Restore(e) => anyhow::Error::new(e),
        PitrError::Catalog(e) => anyhow::Error::new(e),
        PitrError::Repo(e) => anyhow::Error::new(e),
        PitrError::Archive(e) => super::archive_push::cli_error(e),
        e @ (PitrError::Invalid(_)
        | PitrError::OutsideWindow { .. }
        | PitrError::NoBackup { .. }
        | PitrError::NoHistory { .. }) => classified(Failure::Usage, e),
        e @ (PitrError::ArchiveShort { .. } | PitrError::History(_)) => {
            classified(Failure::Repository, e)
        }
        e @ PitrError::Read { .. } => classified(Failure::Verification, e),
        e @ PitrError::Fs(_) => classified(Failure::LocalIo, e),
        e @ PitrError::Internal(_) => classified(Failure::Other, e),
    }
}

fn absolute(p: &std::path::Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("finding the current directory")?
            .join(p))
    }
}
