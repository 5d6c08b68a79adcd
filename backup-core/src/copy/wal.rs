//! Copying WAL files: each name once, the same content or an error.

use crate::compress::Compression;
use crate::index::{self, WalFileKind};
use crate::repo::Repository;

use super::file::{copy_file, same_content};
use super::{CopyError, CopySummary};

/// Whether a WAL file was copied or already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WalOutcome {
    Copied(u64),
    Present,
}

/// Copies WAL file `name` (a repository name under `wal/`) unless the destination has it with
/// the same content; different content there is [`CopyError::Conflict`]. `content_len` is the
/// length a complete segment must have.
pub(super) fn copy_wal_file(
    src: &Repository,
    dst: &Repository,
    name: &str,
    content_len: Option<u64>,
) -> Result<WalOutcome, CopyError> {
    let compression: Compression = src.config().compression;
    if dst.store().head(name)?.is_none() {
        match copy_file(src, dst, name, compression, content_len) {
            Ok(c) => {
                tracing::debug!(file = %name, "WAL file copied");
                return Ok(WalOutcome::Copied(c.stored_bytes));
            }
            // Another copy (or archive-push, receive-wal) stored it meanwhile: compare.
            Err(CopyError::Store(e)) if e.is_already_exists() => {}
            Err(e) => return Err(e),
        }
    }
    if same_content(src, dst, name)? {
        Ok(WalOutcome::Present)
    } else {
        Err(CopyError::Conflict {
            file: dst.store().describe(name),
        })
    }
}

pub(super) fn count(summary: &mut CopySummary, outcome: WalOutcome) {
    match outcome {
        WalOutcome::Copied(bytes) => {
            summary.wal_copied += 1;
            summary.bytes_written += bytes;
        }
        WalOutcome::Present => summary.wal_present += 1,
    }
}

/// Copies every archived WAL file of `src` (timeline histories first, then segments,
/// `.partial` segments and backup history files in name order) that `dst` lacks. The segment
/// `receive-wal` is writing is not copied: it is archived as a segment once complete.
pub(super) fn copy_all_wal(
    src: &Repository,
    dst: &Repository,
    summary: &mut CopySummary,
) -> Result<(), CopyError> {
    let listing = index::scan_wal(src.store().as_ref(), src.config())?;
    let seg_bytes = listing.seg_size.map(|s| s.bytes());
    for meta in listing.histories.values() {
        let outcome = copy_wal_file(src, dst, &meta.name, None)?;
        count(summary, outcome);
    }
    for object in &listing.files {
        let f = &object.file;
        let len = match f.kind {
            WalFileKind::Receiving => continue,
            WalFileKind::Segment => seg_bytes,
            WalFileKind::Partial | WalFileKind::BackupHistory => None,
        };
        let outcome = copy_wal_file(src, dst, &f.stored, len)?;
        count(summary, outcome);
        if matches!(outcome, WalOutcome::Copied(_)) {
            tracing::info!(file = %f.stored, "copied");
        }
    }
    Ok(())
}
