//! Copying one backup: its WAL and files first, its record last, under the destination's
//! `backup.<id>` lease (docs/format.md §8.1).

use std::time::Duration;

use crate::catalog::lifecycle;
use crate::catalog::BackupRecord;
use crate::compress::Compression;
use crate::layout;
use crate::repo::Repository;
use crate::store::lease::LeaseHolder;
use crate::wal::{SegmentName, WalSegmentSize};

use super::file::{copy_file, size_of};
use super::wal::{copy_wal_file, count, WalOutcome};
use super::{CopyError, CopySummary};

/// How long a copy waits for another holder of a backup id's lease at the destination.
const CLAIM_WAIT: Duration = Duration::from_secs(600);

/// Copies backup `id` unless the destination has its record.
pub(super) fn copy_backup(
    src: &Repository,
    dst: &Repository,
    id: &str,
    summary: &mut CopySummary,
) -> Result<(), CopyError> {
    let record = src.catalog().read(id)?;
    let dcat = dst.catalog();
    if dcat.exists(id)? {
        // Read it to authenticate it with the destination's keys.
        dcat.read(id)?;
        tracing::info!(backup_id = %id, "already at the destination");
        summary.backups_present.push(id.to_string());
        return Ok(());
    }
    let holder = LeaseHolder::this_process("pgstream copy");
    let Some(claim) = lifecycle::claim_id(dst.store().as_ref(), id, &holder, CLAIM_WAIT)? else {
        dcat.read(id)?;
        summary.backups_present.push(id.to_string());
        return Ok(());
    };
    tracing::info!(backup_id = %id, "copying backup");
    let mut record = record;
    let mut delta: i128 = 0;
    copy_backup_wal(src, dst, &record, summary, &mut delta)?;
    copy_backup_files(src, dst, &mut record, summary, &mut delta)?;
    record.stored_bytes = (i128::from(record.stored_bytes) + delta).max(0) as u64;
    record.encryption = dst
        .aead()
        .map_or_else(|| "none".to_string(), |a| a.name().to_string());
    record.seal(dst.sealing_key())?;
    crate::failpoint!("copy.before-record");
    claim.lease().check()?;
    dcat.write(&record)?;
    tracing::info!(backup_id = %id, "backup copied");
    summary.backups_copied.push(id.to_string());
    Ok(())
}

fn bad(id: &str, detail: String) -> CopyError {
    CopyError::BadRecord {
        id: id.to_string(),
        detail,
    }
}

/// The WAL the backup needs: its timeline history files, then its segments from start to end
/// (the last one, when unfinished, is a file of the backup itself).
fn copy_backup_wal(
    src: &Repository,
    dst: &Repository,
    record: &BackupRecord,
    summary: &mut CopySummary,
    delta: &mut i128,
) -> Result<(), CopyError> {
    let seg_size =
        WalSegmentSize::new(record.wal_segment_size).map_err(|e| bad(&record.id, e.to_string()))?;
    let mut names = Vec::new();
    for h in &record.history_files {
        if !h.starts_with("wal/") || crate::store::check_name(h).is_err() {
            return Err(bad(
                &record.id,
                format!("{h:?} is not a WAL history file name"),
            ));
        }
        names.push((h.clone(), None));
    }
    for seg in &record.wal_segments {
        if record
            .partial_wal_file
            .as_ref()
            .is_some_and(|p| &p.segment == seg)
        {
            continue;
        }
        let segment =
            SegmentName::parse(seg, seg_size).map_err(|e| bad(&record.id, e.to_string()))?;
        names.push((
            layout::wal_segment_file(&segment, src.codec()),
            Some(seg_size.bytes()),
        ));
    }
    for (name, len) in names {
        let outcome = copy_wal_file(src, dst, &name, len)?;
        if let WalOutcome::Copied(bytes) = outcome {
            *delta += i128::from(bytes) - i128::from(size_of(src, &name)?.unwrap_or(bytes));
        }
        count(summary, outcome);
    }
    Ok(())
}

/// The archives, the manifest and the unfinished segment, each checked against the record.
fn copy_backup_files(
    src: &Repository,
    dst: &Repository,
    record: &mut BackupRecord,
    summary: &mut CopySummary,
    delta: &mut i128,
) -> Result<(), CopyError> {
    let id = record.id.clone();
    let compression = src.config().compression;
    let check_file = |file: &str| -> Result<String, CopyError> {
        if file.contains('/') || crate::store::check_name(file).is_err() {
            return Err(bad(&id, format!("{file:?} is not a file name")));
        }
        Ok(layout::backup_file(&id, file))
    };
    let mut one = |name: &str,
                   plain: Compression,
                   stored: Option<u64>,
                   content: Option<u64>|
     -> Result<u64, CopyError> {
        let size = size_of(src, name)?.ok_or_else(|| CopyError::SourceMissing {
            file: src.store().describe(name),
        })?;
        if let Some(expected) = stored.filter(|&s| s != size) {
            return Err(CopyError::SourceMismatch {
                file: src.store().describe(name),
                detail: format!("it is {size} bytes, the record says {expected}"),
            });
        }
        let copied = copy_file(src, dst, name, plain, content)?;
        summary.files_copied += 1;
        summary.bytes_written += copied.stored_bytes;
        *delta += i128::from(copied.stored_bytes) - i128::from(size);
        tracing::info!(file = %name, bytes = copied.stored_bytes, "copied");
        Ok(copied.stored_bytes)
    };
    for a in &mut record.archives {
        let name = check_file(&a.file)?;
        // An archive the server compressed is stored without compression of ours.
        let (plain, content) = match a.server_compression {
            Some(_) => (Compression::None, None),
            None => (compression, Some(a.raw_bytes)),
        };
        a.stored_bytes = one(&name, plain, Some(a.stored_bytes), content)?;
    }
    let manifest = check_file(&record.manifest_file)?;
    one(&manifest, compression, None, None)?;
    if let Some(p) = &record.partial_wal_file {
        let name = check_file(&p.file)?;
        one(&name, compression, None, Some(p.valid_bytes))?;
    }
    Ok(())
}
