//! Point-in-time restore: choose the backup for a target, check the target against the
//! recoverable window, unpack the backup with an empty `pg_wal/`, and write `recovery.signal` and
//! the recovery settings. Recovery then fetches WAL through `restore_command` = `pgstream
//! wal-fetch`, or, with `copy_wal`, from the segments copied into `pg_wal/` (the directory then
//! stands alone and `restore_command` is `false`, which PostgreSQL reads as "not archived").

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use pgwire_repl::{Lsn, TimelineId};

use super::window::{self, Window};
use super::{RestoreError, RestorePlan, RestoreSummary, WalPlacement};
use crate::catalog::{BackupRecord, Catalog, CatalogError};
use crate::fsutil::{self, FsError};
use crate::repo::{RepoError, Repository};
use crate::wal::archive::{WalArchive, WalArchiveError};
use crate::wal::commits::XactRecord;
use crate::wal::{HistoryError, TimelineHistory, WalSegmentSize};

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// The end of the archived WAL (no recovery_target_* setting).
    Latest,
    /// The backup's end (`recovery_target = 'immediate'`).
    Immediate,
    Time(TargetTime),
    Lsn(Lsn),
    Xid(u64),
    Name(String),
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryTarget::Latest => f.write_str("the end of the archived WAL"),
            RecoveryTarget::Immediate => f.write_str("the end of the backup (immediate)"),
            RecoveryTarget::Time(t) => write!(f, "time {}", t.postgres()),
            RecoveryTarget::Lsn(l) => write!(f, "LSN {l}"),
            RecoveryTarget::Xid(x) => write!(f, "transaction {x}"),
            RecoveryTarget::Name(n) => write!(f, "restore point {n:?}"),
        }
    }
}

/// A target time with an explicit UTC offset, to the microsecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TargetTime {
    /// Microseconds since 1970-01-01 00:00:00 UTC.
    pub unix_micros: i64,
}

impl TargetTime {
    /// Parses RFC 3339 or PostgreSQL's timestamptz output: `YYYY-MM-DD[T ]HH:MM[:SS[.ffffff]]`
    /// followed by `Z` or `±HH[[:]MM]`. A time without an offset is refused: the server would
    /// read it in its own TimeZone, which may not be the one meant.
    pub fn parse(text: &str) -> Result<TargetTime, String> {
        let t = text.trim();
        let bad = |why: &str| {
            format!(
                "{text:?} is not a time with an offset ({why}); write e.g. \
                 2024-05-01T12:34:56.5+02:00 or 2024-05-01 10:34:56Z"
            )
        };
        let num = |s: &str| -> Result<i64, String> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("digits expected"));
            }
            s.parse::<i64>().map_err(|_| bad("number out of range"))
        };
        if t.len() < 16 {
            return Err(bad("too short"));
        }
        let (date, rest) = t.split_at(10);
        let d: Vec<&str> = date.split('-').collect();
        if d.len() != 3 || d[0].len() != 4 || d[1].len() != 2 || d[2].len() != 2 {
            return Err(bad("the date must be YYYY-MM-DD"));
        }
        let (year, month, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
        let rest = rest
            .strip_prefix('T')
            .or_else(|| rest.strip_prefix('t'))
            .or_else(|| rest.strip_prefix(' '))
            .ok_or_else(|| bad("expected T or a space after the date"))?;
        // The offset starts at the first Z, + or - after the clock time.
        let split = rest
            .find(['Z', 'z', '+', '-'])
            .ok_or_else(|| bad("no offset: add Z or +HH:MM"))?;
        let (clock, offset) = rest.split_at(split);
        let clock = clock.trim_end();
        let (hms, frac) = match clock.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (clock, None),
        };
        let c: Vec<&str> = hms.split(':').collect();
        if !(2..=3).contains(&c.len()) || c.iter().any(|p| p.len() != 2) {
            return Err(bad("the time must be HH:MM[:SS[.ffffff]]"));
        }
        let (hour, minute) = (num(c[0])?, num(c[1])?);
        let second = if c.len() == 3 { num(c[2])? } else { 0 };
        let micros = match frac {
            None => 0,
            Some(f) if f.is_empty() || f.len() > 6 => {
                return Err(bad("1 to 6 digits of fractional seconds"))
            }
            Some(f) => num(f)? * 10i64.pow(6 - f.len() as u32),
        };
        let offset_secs = if offset.eq_ignore_ascii_case("z") {
            0
        } else {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let o = offset[1..].replace(':', "");
            let (h, m) = match o.len() {
                2 => (num(&o)?, 0),
                4 => (num(&o[..2])?, num(&o[2..])?),
                _ => return Err(bad("the offset must be Z, ±HH, ±HHMM or ±HH:MM")),
            };
            if h > 15 || m > 59 {
                return Err(bad("offset out of range"));
            }
            sign * (h * 3600 + m * 60)
        };
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(bad("a field is out of range"));
        }
        let days = days_from_civil(year, month, day);
        let secs = days * 86400 + hour * 3600 + minute * 60 + second - offset_secs;
        Ok(TargetTime {
            unix_micros: secs * 1_000_000 + micros,
        })
    }

    pub fn from_system_time(t: SystemTime) -> TargetTime {
        let micros = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_micros() as i64,
            Err(e) => -(e.duration().as_micros() as i64),
        };
        TargetTime {
            unix_micros: micros,
        }
    }

    /// The time as the server will read it: ISO 8601 in UTC, unambiguous under any DateStyle
    /// and TimeZone.
    pub fn postgres(&self) -> String {
        let secs = self.unix_micros.div_euclid(1_000_000);
        let micros = self.unix_micros.rem_euclid(1_000_000);
        let (days, sod) = (secs.div_euclid(86400), secs.rem_euclid(86400));
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{micros:06}+00",
            sod / 3600,
            sod % 3600 / 60,
            sod % 60
        )
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `recovery_target_timeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetTimeline {
    Latest,
    Current,
    Number(TimelineId),
}

impl TargetTimeline {
    pub fn parse(s: &str) -> Result<TargetTimeline, String> {
        match s {
            "latest" => Ok(TargetTimeline::Latest),
            "current" => Ok(TargetTimeline::Current),
            n => {
                let v = match n.strip_prefix("0x").or_else(|| n.strip_prefix("0X")) {
                    Some(h) => u32::from_str_radix(h, 16),
                    None => n.parse::<u32>(),
                };
                match v {
                    Ok(v) if v >= 1 => Ok(TargetTimeline::Number(TimelineId(v))),
                    _ => Err(format!(
                        "{s:?}: expected latest, current or a timeline number (1 or more)"
                    )),
                }
            }
        }
    }
}

/// `recovery_target_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetAction {
    Pause,
    Promote,
    Shutdown,
}

impl TargetAction {
    fn setting(self) -> &'static str {
        match self {
            TargetAction::Pause => "pause",
            TargetAction::Promote => "promote",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

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
    let catalog = Catalog::new(repo.dir());
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
    let restore_command = restore_command(repo, recovery);
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
/// then restores exactly this backup.
pub fn chosen_backup(repo: &Repository, plan: &PitrPlan) -> Result<BackupRecord, PitrError> {
    let catalog = Catalog::new(repo.dir());
    match &plan.recovery {
        None => Ok(catalog.resolve(plan.backup.as_deref().unwrap_or("latest"))?),
        Some(recovery) => {
            check_recovery_options(recovery)?;
            Ok(choose_backup(repo, &catalog, plan.backup.as_deref(), recovery)?.0)
        }
    }
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

fn check_recovery_options(r: &Recovery) -> Result<(), PitrError> {
    if r.action.is_some() && r.target == RecoveryTarget::Latest {
        return Err(PitrError::Invalid(
            "--target-action applies only with a target (--target-time, --target-lsn, \
             --target-xid, --target-name or --target-immediate): without one, recovery replays \
             all archived WAL and then promotes"
                .into(),
        ));
    }
    if let RecoveryTarget::Name(n) = &r.target {
        if n.is_empty() || n.len() > 63 {
            return Err(PitrError::Invalid(format!(
                "--target-name {n:?}: a restore point name is 1 to 63 bytes"
            )));
        }
    }
    if let Some(p) = &r.passphrase_file {
        if !p.is_absolute() {
            return Err(PitrError::Invalid(format!(
                "--passphrase-file {}: restore_command runs in the data directory, so the path \
                 must be absolute",
                p.display()
            )));
        }
    }
    if !r.program.is_absolute() {
        return Err(PitrError::Internal(format!(
            "the pgstream executable path {} is not absolute",
            r.program.display()
        )));
    }
    Ok(())
}

/// `--force` empties directories: never one that holds the repository (or lies inside it), and
/// never one a server may be running on.
fn check_force_safe(
    repo: &Repository,
    plan: &PitrPlan,
    record: Option<&BackupRecord>,
) -> Result<(), PitrError> {
    if !plan.force {
        return Ok(());
    }
    let record = match record {
        Some(r) => r.clone(),
        None => Catalog::new(repo.dir()).resolve(plan.backup.as_deref().unwrap_or("latest"))?,
    };
    let tablespaces = super::plan_tablespaces(&record, &plan.tablespace_map)?;
    let repo_dir = repo
        .dir()
        .canonicalize()
        .unwrap_or_else(|_| repo.dir().to_path_buf());
    for dir in std::iter::once(&plan.target).chain(tablespaces.values()) {
        let Ok(real) = dir.canonicalize() else {
            continue; // missing: nothing to empty
        };
        if real.parent().is_none() || repo_dir.starts_with(&real) || real.starts_with(&repo_dir) {
            return Err(PitrError::Invalid(format!(
                "--force would empty {}, which holds or lies in the repository {}; nothing was \
                 written",
                dir.display(),
                repo.dir().display()
            )));
        }
        if real.join("postmaster.pid").exists() {
            return Err(PitrError::Invalid(format!(
                "{} has a postmaster.pid: a server may be running there. Stop it (or remove \
                 postmaster.pid if it is stale) before --force; nothing was written",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// The backup to restore and the history recovery will follow.
fn choose_backup(
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

fn end_time(record: &BackupRecord) -> Result<TargetTime, PitrError> {
    humantime::parse_rfc3339_weak(&record.end_time)
        .map(TargetTime::from_system_time)
        .map_err(|e| {
            PitrError::Internal(format!(
                "backup {}: end time {:?}: {e}",
                record.id, record.end_time
            ))
        })
}

/// Checks the target against the window; returns notes for the user.
fn check_target(
    record: &BackupRecord,
    window: &Window,
    recovery: &Recovery,
    last_commit: Option<XactRecord>,
) -> Result<Vec<String>, PitrError> {
    if !window.reaches_backup_end() {
        return Err(PitrError::ArchiveShort {
            backup: record.id.clone(),
            end: record.end_lsn,
            window: window.to_string(),
        });
    }
    let outside = |what: String| PitrError::OutsideWindow {
        window: window.to_string(),
        what,
    };
    let mut notes = Vec::new();
    if window.gap_before.is_some() {
        notes.push(format!(
            "the WAL archive has a gap: recovery cannot go past {}",
            window.end
        ));
    }
    match &recovery.target {
        RecoveryTarget::Lsn(l) => {
            if *l < window.start {
                return Err(outside(format!(
                    "LSN {l} (before the backup's end, where recovery becomes consistent)"
                )));
            }
            if *l > window.end {
                return Err(outside(format!("LSN {l}")));
            }
        }
        RecoveryTarget::Time(t) => {
            let end = end_time(record)?;
            if *t < end {
                return Err(outside(format!(
                    "time {} (before the backup's end, where recovery becomes consistent)",
                    t.postgres()
                )));
            }
            // The catalog keeps whole seconds; within that second nothing here can tell.
            if t.unix_micros < end.unix_micros + 1_000_000 {
                notes.push(format!(
                    "the target time is within a second of the backup's end ({}): if a commit of \
                     the backup's last moments is after it, the server stops with \"requested \
                     recovery stop point is before consistent recovery point\"",
                    record.end_time
                ));
            }
            notes.push(time_target_note(t, window, recovery.inclusive, last_commit));
        }
        RecoveryTarget::Xid(_) | RecoveryTarget::Name(_) => notes.push(
            "the position of this target is not known here: the backup chosen is the newest on \
             the timeline path unless --backup is given; if the target is not in the WAL after \
             the backup's end, PostgreSQL 13+ stops with \"recovery ended before configured \
             recovery target was reached\""
                .into(),
        ),
        RecoveryTarget::Latest | RecoveryTarget::Immediate => {}
    }
    Ok(notes)
}

/// What the last archived commit says about a time target. Recovery stops at the first commit
/// or abort after the target (at or after it with inclusive off); with none archived the server
/// stops with FATAL, unless more WAL is archived (receive-wal) before recovery gets there, so
/// this is a note and not a refusal. Commit times are nearly, not strictly, in WAL order.
fn time_target_note(
    target: &TargetTime,
    window: &Window,
    inclusive: bool,
    last_commit: Option<XactRecord>,
) -> String {
    const NOT_REACHED: &str = "PostgreSQL 13+ stops with \"recovery ended before configured \
                               recovery target was reached\"";
    let Some(last) = last_commit else {
        return format!(
            "no commit or abort is archived between the backup's end and the end of the window \
             ({}): unless one is archived before recovery gets there, {NOT_REACHED}; use \
             --target-lsn or --target-latest instead",
            window.end
        );
    };
    let when = TargetTime {
        unix_micros: last.unix_micros(),
    }
    .postgres();
    let stops = if inclusive {
        last.unix_micros() > target.unix_micros
    } else {
        last.unix_micros() >= target.unix_micros
    };
    if stops {
        format!(
            "the last commit archived in the window is at {when} (LSN {}): recovery stops at \
             the first commit after the target time, at the latest there",
            last.lsn
        )
    } else {
        format!(
            "the target time is after the last commit archived in the window ({when}, LSN {}): \
             unless later WAL is archived before recovery gets there, {NOT_REACHED}; to recover \
             everything archived use --target-latest",
            last.lsn
        )
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

/// Quotes `s` for /bin/sh (restore_command runs through the shell).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Quotes `s` as a postgresql.conf string literal.
pub fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn restore_command(repo: &Repository, r: &Recovery) -> String {
    if r.copy_wal {
        // Every segment is in pg_wal/; a failing command makes the server read it from there.
        return "false".into();
    }
    let repo_dir = if repo.dir().is_absolute() {
        repo.dir().to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(repo.dir()))
            .unwrap_or_else(|_| repo.dir().to_path_buf())
    };
    let mut cmd = format!(
        "{} wal-fetch --repo {}",
        shell_quote(&r.program.to_string_lossy()),
        shell_quote(&repo_dir.to_string_lossy())
    );
    if let Some(p) = &r.passphrase_file {
        cmd.push_str(&format!(
            " --passphrase-file {}",
            shell_quote(&p.to_string_lossy())
        ));
    }
    let spool = r
        .spool_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL_DIR));
    cmd.push_str(&format!(
        " --spool-dir {}",
        shell_quote(&spool.to_string_lossy())
    ));
    cmd.push_str(" %f %p");
    cmd
}

/// Settings that would conflict with ours: commented out in the restored postgresql.auto.conf
/// (a backup of a restored server carries its recovery settings).
fn is_recovery_setting(line: &str) -> bool {
    let key = line
        .trim_start()
        .split(|c: char| c == '=' || c.is_whitespace())
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    key == "restore_command" || key.starts_with("recovery_target")
}

/// The settings that name a recovery target; at most one may be set.
const TARGET_SETTINGS: [&str; 5] = [
    "recovery_target",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
];

fn write_settings(
    target: &Path,
    record: &BackupRecord,
    r: &Recovery,
    restore_command: &str,
) -> Result<(), PitrError> {
    let path = target.join("postgresql.auto.conf");
    let existing = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(FsError::new("reading", &path, e).into()),
    };
    let mut out = String::new();
    for line in existing.lines() {
        if is_recovery_setting(line) {
            out.push_str("# disabled by pgstream restore: ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!(
        "# Recovery settings written by pgstream restore (backup {}, {}).\n",
        record.id,
        crate::catalog::rfc3339(SystemTime::now())
    ));
    let mut set = |k: &str, v: String| out.push_str(&format!("{k} = {v}\n"));
    set("restore_command", conf_quote(restore_command));
    let inclusive = Some(if r.inclusive { "on" } else { "off" }.to_string());
    let (key, value, with_inclusive) = match &r.target {
        RecoveryTarget::Latest => (None, String::new(), None),
        RecoveryTarget::Immediate => (Some("recovery_target"), conf_quote("immediate"), None),
        RecoveryTarget::Time(t) => (
            Some("recovery_target_time"),
            conf_quote(&t.postgres()),
            inclusive,
        ),
        RecoveryTarget::Lsn(l) => (
            Some("recovery_target_lsn"),
            conf_quote(&l.to_string()),
            inclusive,
        ),
        RecoveryTarget::Xid(x) => (
            Some("recovery_target_xid"),
            conf_quote(&x.to_string()),
            inclusive,
        ),
        RecoveryTarget::Name(n) => (Some("recovery_target_name"), conf_quote(n), None),
    };
    // A target left in the restored postgresql.conf (a server once recovered with its settings
    // there, which PostgreSQL ignores outside recovery) would otherwise count: with ours, FATAL
    // "multiple recovery targets specified"; without one, a silent stop at it. Empty values
    // here outrank it. They come before our target: PostgreSQL refuses any of them, even an
    // empty one, once another target is set.
    for other in TARGET_SETTINGS.iter().filter(|&&k| Some(k) != key) {
        set(other, "''".into());
    }
    if let Some(key) = key {
        set(key, value);
        // Explicit, for the same reason: the server's default unless asked otherwise.
        let action = r.action.unwrap_or(TargetAction::Pause);
        set("recovery_target_action", conf_quote(action.setting()));
    }
    if let Some(v) = with_inclusive {
        set("recovery_target_inclusive", v);
    }
    let timeline = match r.timeline {
        TargetTimeline::Latest => "latest".to_string(),
        TargetTimeline::Current => "current".to_string(),
        TargetTimeline::Number(n) => n.0.to_string(),
    };
    set("recovery_target_timeline", conf_quote(&timeline));
    fsutil::write_file_durably(&path, out.as_bytes(), 0o600)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_target_notes_state_the_last_archived_commit() {
        use crate::wal::commits::XactEnd;
        let seg_size = WalSegmentSize::DEFAULT;
        let window = Window {
            backup_id: "B".into(),
            start: Lsn(0x2000100),
            start_time: "2026-11-21T08:00:00Z".into(),
            history: TimelineHistory::root(TimelineId(1)),
            end: Lsn(0x5000000),
            ends_in_partial: false,
            missing: crate::wal::SegmentName::new(TimelineId(1), 5, seg_size),
            gap_before: None,
        };
        let at = TargetTime::parse("2026-11-21T08:30:00Z").unwrap();
        // xact_time counts from 2000-01-01.
        let commit = XactRecord {
            lsn: Lsn(0x4000170),
            kind: XactEnd::Commit,
            time: at.unix_micros - 946_684_800_000_000,
        };
        let note = |target: &str, inclusive: bool, last: Option<XactRecord>| {
            let t = TargetTime::parse(target).unwrap();
            time_target_note(&t, &window, inclusive, last)
        };
        let before = note("2026-11-21T08:29:59Z", true, Some(commit));
        assert!(
            before.contains("recovery stops at the first commit after the target time")
                && before.contains("2026-11-21 08:30:00.000000+00")
                && before.contains("0/4000170"),
            "{before}"
        );
        // At the commit's own time: inclusive on stops only at a later commit (none), off at it.
        let exact = note("2026-11-21T08:30:00Z", true, Some(commit));
        assert!(exact.contains("after the last commit archived"), "{exact}");
        let exclusive = note("2026-11-21T08:30:00Z", false, Some(commit));
        assert!(exclusive.contains("recovery stops at"), "{exclusive}");
        let none = note("2026-11-21T08:29:59Z", true, None);
        assert!(
            none.contains("no commit or abort is archived") && none.contains("0/5000000"),
            "{none}"
        );
    }

    #[test]
    fn times_need_an_offset_and_normalise_to_utc() {
        let t = TargetTime::parse("2024-05-01 12:34:56.123456+02").unwrap();
        assert_eq!(t.postgres(), "2024-05-01 10:34:56.123456+00");
        let u = TargetTime::parse("2024-05-01T10:34:56.123456Z").unwrap();
        assert_eq!(t, u);
        assert_eq!(
            TargetTime::parse("2024-02-29T23:59:59-05:30")
                .unwrap()
                .postgres(),
            "2024-03-01 05:29:59.000000+00"
        );
        assert_eq!(
            TargetTime::parse("1999-12-31 23:00+0100")
                .unwrap()
                .postgres(),
            "1999-12-31 22:00:00.000000+00"
        );
        for bad in [
            "2024-05-01 12:34:56",
            "2024-05-01T12:34:56.5",
            "2024-13-01 00:00:00Z",
            "2023-02-29 00:00:00Z",
            "yesterday",
            "2024-05-01 12:34:56+2",
        ] {
            let e = TargetTime::parse(bad).unwrap_err();
            assert!(e.contains("offset"), "{bad}: {e}");
        }
        let epoch = TargetTime::from_system_time(UNIX_EPOCH + Duration::from_secs(86400 * 365));
        assert_eq!(epoch.postgres(), "1971-01-01 00:00:00.000000+00");
    }

    #[test]
    fn quoting_survives_quotes_and_backslashes() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(conf_quote(r"a'b\c"), r"'a''b\\c'");
        assert!(is_recovery_setting("  Recovery_Target_Name = 'x'"));
        assert!(is_recovery_setting("restore_command='x'"));
        assert!(!is_recovery_setting("# restore_command = 'x'"));
        assert!(!is_recovery_setting("shared_buffers = 1MB"));
    }

    /// The restored postgresql.auto.conf for `target` and `action`, the source's being `existing`.
    fn settings_written(
        target: RecoveryTarget,
        action: Option<TargetAction>,
        existing: &str,
    ) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("postgresql.auto.conf"), existing).unwrap();
        let record: crate::catalog::BackupRecord = serde_json::from_str(
            r#"{"format":1,"id":"B","label":"","status":"complete","start_lsn":"0/2000028",
            "start_timeline":1,"end_lsn":"0/2000100","end_timeline":1,"start_time":"",
            "end_time":"","duration_seconds":0,"server_version":"16","server_major":16,
            "system_identifier":"1","wal_segment_size":16777216,"raw_bytes":0,
            "stored_bytes":0,"compression":"lz4","encryption":"none","archives":[],
            "manifest_file":"","files_verified":0,"wal_segments":[],"partial_wal_file":null,
            "history_files":[]}"#,
        )
        .unwrap();
        let r = Recovery {
            target,
            action,
            timeline: TargetTimeline::Latest,
            inclusive: true,
            copy_wal: true,
            passphrase_file: None,
            program: PathBuf::from("/bin/pgstream"),
            spool_dir: None,
        };
        write_settings(dir.path(), &record, &r, "false").unwrap();
        std::fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap()
    }

    /// The settings lines (not comments), in order.
    fn setting_lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn a_stale_recovery_target_in_postgresql_conf_is_overridden_not_combined() {
        // Empty values for the other targets, before ours (PostgreSQL refuses even an empty
        // one once a target is set: checked with postgres -C on 18), and an explicit action.
        let text = settings_written(
            RecoveryTarget::Lsn(Lsn(0x3000000)),
            None,
            "recovery_target_lsn = '0/1'\nwork_mem = 4MB\n",
        );
        assert_eq!(
            setting_lines(&text),
            vec![
                "work_mem = 4MB",
                "restore_command = 'false'",
                "recovery_target = ''",
                "recovery_target_name = ''",
                "recovery_target_time = ''",
                "recovery_target_xid = ''",
                "recovery_target_lsn = '0/3000000'",
                "recovery_target_action = 'pause'",
                "recovery_target_inclusive = on",
                "recovery_target_timeline = 'latest'",
            ]
        );
        assert!(text.contains("# disabled by pgstream restore: recovery_target_lsn = '0/1'"));
        // The latest point: no target may count at all.
        let text = settings_written(RecoveryTarget::Latest, Some(TargetAction::Promote), "");
        let lines = setting_lines(&text);
        for key in TARGET_SETTINGS {
            assert!(
                lines.contains(&format!("{key} = ''").as_str()),
                "{key}: {text}"
            );
        }
        assert!(!text.contains("recovery_target_action"), "{text}");
    }

    #[test]
    fn timelines_parse() {
        assert_eq!(TargetTimeline::parse("latest"), Ok(TargetTimeline::Latest));
        assert_eq!(
            TargetTimeline::parse("0x1A"),
            Ok(TargetTimeline::Number(TimelineId(26)))
        );
        assert!(TargetTimeline::parse("0").is_err());
    }
}
