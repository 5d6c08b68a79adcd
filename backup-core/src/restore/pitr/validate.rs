//! The checks a point-in-time restore makes before it writes anything: the recovery options,
//! that `--force` empties nothing it must not, and the target against the recoverable window.

use super::choose::end_time;
use super::{PitrError, PitrPlan, Recovery, RecoveryTarget, TargetTime};
use crate::catalog::BackupRecord;
use crate::repo::Repository;
use crate::restore::window::Window;
use crate::wal::commits::XactRecord;

pub(super) fn check_recovery_options(r: &Recovery) -> Result<(), PitrError> {
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
pub(super) fn check_force_safe(
    repo: &Repository,
    plan: &PitrPlan,
    record: Option<&BackupRecord>,
) -> Result<(), PitrError> {
    if !plan.force {
        return Ok(());
    }
    let record = match record {
        Some(r) => r.clone(),
        None => repo
            .catalog()
            .resolve(plan.backup.as_deref().unwrap_or("latest"))?,
    };
    let tablespaces = super::super::plan_tablespaces(&record, &plan.tablespace_map)?;
    // Only a local repository can be inside (or around) a data directory.
    let repo_dir = repo
        .location()
        .absolute()
        .local_path()
        .map(|p| p.to_path_buf());
    for dir in std::iter::once(&plan.target).chain(tablespaces.values()) {
        let Ok(real) = dir.canonicalize() else {
            continue; // missing: nothing to empty
        };
        let overlaps = repo_dir
            .as_ref()
            .is_some_and(|r| r.starts_with(&real) || real.starts_with(r));
        if real.parent().is_none() || overlaps {
            return Err(PitrError::Invalid(format!(
                "--force would empty {}, which holds or lies in the repository {}; nothing was \
                 written",
                dir.display(),
                repo.location()
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

/// Checks the target against the window; returns notes for the user.
pub(super) fn check_target(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{TimelineHistory, WalSegmentSize};
    use pgwire_repl::{Lsn, TimelineId};

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
}
