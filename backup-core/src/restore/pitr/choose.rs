//! Which backup a point-in-time restore starts from, and the timeline history recovery follows.

use super::{PitrError, Recovery, RecoveryTarget, TargetTime, TargetTimeline};
use crate::catalog::{BackupRecord, Catalog, CatalogError};
use crate::repo::Repository;
use crate::restore::window;
use crate::wal::TimelineHistory;

/// The backup to restore and the history recovery will follow.
pub(super) fn choose_backup(
    repo: &Repository,
    catalog: &Catalog,
    named: Option<&str>,
    recovery: &Recovery,
) -> Result<(BackupRecord, TimelineHistory), PitrError> {
    let history_for = |record: &BackupRecord| -> Result<TimelineHistory, PitrError> {
        let tli = match recovery.timeline {
            TargetTimeline::Current => record.end_timeline(),
            TargetTimeline::Number(n) => n,
            TargetTimeline::Latest => window::newest_timeline(repo, record.end_timeline())?,
        };
        window::load_history(repo, tli)
    };
    if let Some(id) = named {
        let record = catalog.resolve(id)?;
        let history = history_for(&record)?;
        if !window::backup_on_path(&record, &history) {
            return Err(not_on_path(&record, &history));
        }
        return Ok((record, history));
    }
    let records = catalog.list()?;
    if records.is_empty() {
        return Err(CatalogError::NoBackups.into());
    }
    let mut first_error = None;
    for record in records.iter().rev() {
        let history = match history_for(record) {
            Ok(h) => h,
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        if !window::backup_on_path(record, &history) {
            first_error.get_or_insert_with(|| not_on_path(record, &history));
            continue;
        }
        let fits = match &recovery.target {
            RecoveryTarget::Time(t) => end_time(record)? <= *t,
            RecoveryTarget::Lsn(l) => record.end_lsn <= *l,
            _ => true,
        };
        if fits {
            return Ok((record.clone(), history));
        }
    }
    let oldest = &records[0];
    let why = match &recovery.target {
        RecoveryTarget::Time(_) | RecoveryTarget::Lsn(_) if first_error.is_none() => {
            let window = window::compute(repo, oldest, &history_for(oldest)?)?;
            return Err(PitrError::OutsideWindow {
                window: format!("the earliest {window}"),
                what: format!("{} (before the end of every backup)", recovery.target),
            });
        }
        _ => match first_error {
            Some(e) => return Err(e),
            None => "no backup on the timeline path".to_string(),
        },
    };
    Err(PitrError::NoBackup {
        target: recovery.target.to_string(),
        why,
    })
}

fn not_on_path(record: &BackupRecord, history: &TimelineHistory) -> PitrError {
    PitrError::Invalid(format!(
        "backup {} ends at {} on timeline {}, which is not on the history of timeline {} \
         (choose another backup or --target-timeline)",
        record.id,
        record.end_lsn,
        record.end_timeline(),
        history.timeline()
    ))
}

pub(super) fn end_time(record: &BackupRecord) -> Result<TargetTime, PitrError> {
    humantime::parse_rfc3339_weak(&record.end_time)
        .map(TargetTime::from_system_time)
        .map_err(|e| {
            PitrError::Internal(format!(
                "backup {}: end time {:?}: {e}",
                record.id, record.end_time
            ))
        })
}
