//! `pgstream expire` and `pgstream keep`: delete old backups, and only the WAL that no kept
//! backup needs, following timeline history (never by file-name order alone).
//!
//! - [`policy`]: which backups are kept (`--keep-last`, `--keep-within`, pins, the newest).
//! - [`retain`]: which WAL files the kept backups need (a pure function, unit-tested per
//!   timeline case).
//! - [`pin`]: `backups/<id>/pin.json`, sealed like a catalog record.
//! - [`scan`]: what the repository holds: the WAL archive by kind, backups in progress,
//!   leftovers, and the lease between `expire` and `keep` runs.
//! - [`delete`]: deleting, crash-safe.
//!
//! Expire refuses (deleting nothing) when a backup record, a pin or a history file cannot be
//! read and authenticated: what such a backup or timeline needs would be a guess. While a
//! backup is being written no WAL is deleted, because its start is not yet recorded.

mod chain;
mod delete;
mod error;
pub mod pin;
pub mod policy;
pub mod retain;
pub mod scan;

use std::collections::BTreeMap;
use std::time::SystemTime;

use pgwire_repl::TimelineId;
use serde::Serialize;

use crate::catalog::{BackupRecord, Catalog, CatalogError};
use crate::repo::Repository;
use crate::restore::window;
use crate::wal::{SegmentName, TimelineHistory, WalSegmentSize};
pub use error::{ExpireError, PinError};
pub use pin::{is_pinned, read_pin, Pin};
pub use policy::{KeepReason, Policy};
use retain::{KeptBackup, WalFile};

/// What to expire.
#[derive(Debug, Clone)]
pub struct ExpireOptions {
    pub policy: Policy,
    /// Decide and report, delete nothing.
    pub dry_run: bool,
    /// The time `--keep-within` counts back from.
    pub now: SystemTime,
}

/// A backup that stays, and why.
#[derive(Debug, Clone, Serialize)]
pub struct KeptEntry {
    pub id: String,
    pub end_time: String,
    pub reasons: Vec<KeepReason>,
    /// The kept incremental backups whose chains need this backup.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needed_by: Vec<String>,
}

/// A backup that is (or, in a dry run, would be) deleted.
#[derive(Debug, Clone, Serialize)]
pub struct ExpiredBackup {
    pub id: String,
    pub end_time: String,
    pub start_lsn: String,
    pub end_timeline: u32,
    /// Bytes stored under it.
    pub bytes: u64,
}

/// Consecutive segments of one timeline whose files are (or would be) deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalRange {
    pub timeline: u32,
    /// The first and last segment.
    pub first: String,
    pub last: String,
    /// Files: segments, `.partial` segments and backup history files.
    pub files: u64,
    pub bytes: u64,
}

/// What expire decided, and with `dry_run: false` did.
#[derive(Debug, Clone, Serialize)]
pub struct ExpireReport {
    pub dry_run: bool,
    pub kept: Vec<KeptEntry>,
    pub expired: Vec<ExpiredBackup>,
    pub wal: Vec<WalRange>,
    pub wal_files: u64,
    pub wal_bytes: u64,
    /// Backups and WAL together.
    pub total_bytes: u64,
    /// Unfinished backups whose writer is gone (a crashed base, or a crashed expire that had
    /// begun to delete them), removed now.
    pub leftovers: Vec<String>,
    /// Why no WAL is deleted this time, if none is for a reason other than need.
    pub wal_note: Option<String>,
    /// Timelines with WAL but no history file: all their WAL is kept.
    pub unknown_timelines: Vec<u32>,
    /// The newest timeline, which no kept backup reaches: all its WAL is kept, because a server
    /// may be writing it and a backup starting on it needs it.
    pub newest_timeline_kept: Option<u32>,
    #[serde(skip)]
    delete_files: Vec<WalFile>,
}

impl ExpireReport {
    /// Whether there is nothing to delete.
    pub fn is_empty(&self) -> bool {
        self.expired.is_empty() && self.delete_files.is_empty() && self.leftovers.is_empty()
    }
}

/// Every complete backup, oldest first, each record checked against its checksum and (in an
/// encrypted repository) its MAC. Any record that fails stops expire.
fn read_records(repo: &Repository, catalog: &Catalog) -> Result<Vec<BackupRecord>, ExpireError> {
    let mut records = Vec::new();
    for id in catalog.ids()? {
        let record = catalog
            .read(&id)
            .and_then(|r| {
                r.verify_mac(repo.keyring(), &catalog.record_path(&id))
                    .map(|()| r)
            })
            .map_err(|source| ExpireError::Record {
                id: id.clone(),
                source,
            })?;
        records.push(record);
    }
    Ok(records)
}

fn invalid_record(record: &BackupRecord, catalog: &Catalog, reason: String) -> ExpireError {
    ExpireError::Record {
        id: record.id.clone(),
        source: CatalogError::InvalidRecord {
            path: catalog.record_path(&record.id),
            reason,
        },
    }
}

fn kept_backup(record: &BackupRecord, catalog: &Catalog) -> Result<KeptBackup, ExpireError> {
    let seg_size = WalSegmentSize::new(record.wal_segment_size)
        .map_err(|e| invalid_record(record, catalog, e.to_string()))?;
    let wal_segments = record
        .wal_segments
        .iter()
        .map(|s| SegmentName::parse(s, seg_size))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid_record(record, catalog, format!("wal_segments: {e}")))?;
    Ok(KeptBackup {
        id: record.id.clone(),
        start_lsn: record.start_lsn,
        end_lsn: record.end_lsn,
        end_timeline: record.end_timeline(),
        seg_size,
        wal_segments,
    })
}

/// Decides what to delete and, unless `dry_run`, deletes it. Blocking.
pub fn expire(repo: &Repository, options: &ExpireOptions) -> Result<ExpireReport, ExpireError> {
    options.policy.validate()?;
    let catalog = repo.catalog();
    let _lock = if options.dry_run {
        None
    } else {
        Some(scan::lock(repo, "pgstream expire")?)
    };
    if !options.dry_run {
        delete::abandoned_temporaries(repo);
    }
    let mut report = decide(repo, &catalog, options)?;
    if !options.dry_run {
        apply(repo, &mut report)?;
    }
    Ok(report)
}

/// What to delete (with the lease held), leftovers of dead runs included.
fn decide(
    repo: &Repository,
    catalog: &Catalog,
    options: &ExpireOptions,
) -> Result<ExpireReport, ExpireError> {
    // Before the records: a backup that completes in between (its record written, then its
    // lease released) is then either seen in progress or listed complete, never missed.
    let seen = scan::scan_backups(repo)?;
    let in_progress: Vec<String> = seen.in_progress.iter().map(|u| u.id.clone()).collect();
    let records = read_records(repo, catalog)?;
    if records.is_empty() {
        return Err(ExpireError::NoBackups);
    }
    let mut candidates = Vec::new();
    for r in &records {
        let end_time = humantime::parse_rfc3339(&r.end_time)
            .map_err(|e| invalid_record(r, catalog, format!("end_time {:?}: {e}", r.end_time)))?;
        let pinned = pin::read_pin(repo.store().as_ref(), &r.id, repo.keyring())
            .map_err(ExpireError::UnreadablePin)?
            .is_some();
        candidates.push(policy::Candidate {
            id: r.id.clone(),
            end_time,
            pinned,
        });
    }
    let mut reasons = policy::select(&candidates, &options.policy, options.now);
    let mut needed_by = chain::protect_chains(&records, &mut reasons).into_iter();

    let mut kept = Vec::new();
    let mut kept_wal = Vec::new();
    let mut expired = Vec::new();
    for (record, reasons) in records.iter().zip(reasons) {
        let needed_by = needed_by.next().unwrap_or_default();
        if reasons.is_empty() {
            expired.push(ExpiredBackup {
                id: record.id.clone(),
                end_time: record.end_time.clone(),
                start_lsn: record.start_lsn.to_string(),
                end_timeline: record.end_timeline,
                bytes: seen.bytes.get(&record.id).copied().unwrap_or(0),
            });
        } else {
            kept_wal.push(kept_backup(record, catalog)?);
            kept.push(KeptEntry {
                id: record.id.clone(),
                end_time: record.end_time.clone(),
                reasons,
                needed_by,
            });
        }
    }

    let listing = scan::scan_wal(repo)?;
    let mut histories: BTreeMap<TimelineId, TimelineHistory> = BTreeMap::new();
    for &tli in &listing.history_timelines {
        let history = window::load_history(repo, tli).map_err(|e| ExpireError::History {
            timeline: tli,
            reason: e.to_string(),
        })?;
        histories.insert(tli, history);
    }
    let retention = retain::wal_to_delete(&kept_wal, &histories, &listing.files);
    let (delete_files, wal_note) = if in_progress.is_empty() {
        (retention.delete, None)
    } else {
        (Vec::new(), Some(in_progress_note(&in_progress)))
    };
    let wal = wal_ranges(&delete_files);
    let wal_files = delete_files.len() as u64;
    let wal_bytes: u64 = delete_files.iter().map(|f| f.bytes).sum();
    let report = ExpireReport {
        dry_run: options.dry_run,
        total_bytes: wal_bytes + expired.iter().map(|b| b.bytes).sum::<u64>(),
        kept,
        expired,
        wal,
        wal_files,
        wal_bytes,
        leftovers: seen.leftovers,
        wal_note,
        unknown_timelines: retention.unknown_timelines.iter().map(|t| t.0).collect(),
        newest_timeline_kept: retention.newest_timeline_kept.map(|t| t.0),
        delete_files,
    };
    Ok(report)
}

/// Deletes what `report` decided: leftovers, expired backups, then WAL, unless a backup started
/// since the decision. Such a backup could not be seen then, and it may need WAL the decision
/// found unneeded: a backup of a standby starts at the standby's last restartpoint, which can
/// be older than every kept backup's start. Deleting the backups can take long, so the
/// backups in progress are looked at again just before the WAL goes.
fn apply(repo: &Repository, report: &mut ExpireReport) -> Result<(), ExpireError> {
    if !report.leftovers.is_empty() {
        delete::leftovers(repo)?;
    }
    for b in &report.expired {
        let _span = tracing::info_span!("expire", backup_id = %b.id).entered();
        delete::backup(repo, &b.id)?;
    }
    let started = scan::backups_in_progress(repo)?;
    if !started.is_empty() && !report.delete_files.is_empty() {
        tracing::info!(backups = %started.join(", "), "a backup started while expire ran: no WAL is deleted this time");
        report.total_bytes -= report.wal_bytes;
        report.wal = Vec::new();
        report.wal_files = 0;
        report.wal_bytes = 0;
        report.wal_note = Some(in_progress_note(&started));
        report.delete_files.clear();
    }
    crate::failpoint!("expire.before-wal");
    delete::wal_files(repo, &report.delete_files)?;
    report.delete_files.clear();
    Ok(())
}

fn in_progress_note(in_progress: &[String]) -> String {
    format!(
        "a backup is being written ({}): its start is not recorded yet, so no WAL is deleted \
         this time; run expire again after it finishes",
        in_progress.join(", ")
    )
}

/// Runs of consecutive segments per timeline.
fn wal_ranges(files: &[WalFile]) -> Vec<WalRange> {
    let mut by_segment: Vec<&WalFile> = files.iter().collect();
    by_segment.sort_by_key(|f| (f.segment.timeline, f.segment.segno));
    let mut out: Vec<(WalRange, SegmentName)> = Vec::new();
    for f in by_segment {
        let s = f.segment;
        match out.last_mut() {
            Some((range, last))
                if last.timeline == s.timeline
                    && (last.segno == s.segno || last.segno + 1 == s.segno) =>
            {
                range.last = s.to_string();
                range.files += 1;
                range.bytes += f.bytes;
                *last = s;
            }
            _ => out.push((
                WalRange {
                    timeline: s.timeline.0,
                    first: s.to_string(),
                    last: s.to_string(),
                    files: 1,
                    bytes: f.bytes,
                },
                s,
            )),
        }
    }
    out.into_iter().map(|(r, _)| r).collect()
}

/// What [`keep`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinOutcome {
    Pinned(Pin),
    /// It was pinned already (the existing pin is kept).
    AlreadyPinned(Pin),
    Unpinned,
    /// `--unpin` of a backup that was not pinned.
    NotPinned,
}

/// Pins backup `id` (or `latest`), or with `unpin` removes its pin. Returns the backup's id.
/// The record must exist and authenticate.
pub fn keep(
    repo: &Repository,
    id: &str,
    unpin: bool,
    now: SystemTime,
) -> Result<(String, PinOutcome), ExpireError> {
    let catalog = repo.catalog();
    let record = catalog.resolve(id)?;
    let _lock = scan::lock(repo, "pgstream keep")?;
    // Still there under the lease (an expire may have just deleted it), and authentic.
    let record = catalog.read(&record.id)?;
    record.verify_mac(repo.keyring(), &catalog.record_path(&record.id))?;
    let id = record.id;
    let store = repo.store().as_ref();
    let outcome = if unpin {
        if pin::remove_pin(store, &id)? {
            PinOutcome::Unpinned
        } else {
            PinOutcome::NotPinned
        }
    } else {
        // A damaged pin is replaced by a good one: pinning is what was asked.
        match pin::read_pin(store, &id, repo.keyring()) {
            Ok(Some(p)) => PinOutcome::AlreadyPinned(p),
            Ok(None) | Err(PinError::Damaged { .. }) => {
                PinOutcome::Pinned(pin::write_pin(store, &id, now, repo.sealing_key())?)
            }
            Err(e) => return Err(e.into()),
        }
    };
    Ok((id, outcome))
}

#[cfg(test)]
mod tests;
