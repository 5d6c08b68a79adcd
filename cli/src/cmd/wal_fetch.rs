//! `pgstream wal-fetch`: restore_command. Writes one archived file, decrypted and decompressed,
//! to the path the server gives. A file that is not archived exits 1 without a word: the server
//! probes for files that do not exist (history files of future timelines, the segment after the
//! end of the archive) and treats any non-zero exit as "not there".
//!
//! With `--spool-dir`, a segment already prefetched is served from the spool without opening
//! the repository (no key derivation), and serving a complete segment from the repository
//! prefetches the next ones (backup-core's `Spool`).

use backup_core::wal::archive::{FetchOutcome, Spool, WalArchive, WalArchiveError};
use backup_core::wal::SegmentName;

use crate::args::WalFetchArgs;

pub fn run(args: WalFetchArgs) -> anyhow::Result<()> {
    let spool = args
        .spool_dir
        .as_ref()
        .map(|d| Spool::new(d, args.prefetch));
    if let Some(spool) = &spool {
        match spool.take(&args.name, &args.dest) {
            Ok(true) => {
                tracing::debug!(file = %args.name, spool = %spool.dir().display(), "served from the spool");
                return Ok(());
            }
            Ok(false) => {}
            // The repository still has it: a broken spool costs time, not the segment.
            Err(e) => tracing::warn!(file = %args.name, "not served from the spool: {e}"),
        }
    }
    let repo = super::open_repo(&args.repo)?;
    let archive = WalArchive::new(&repo);
    let result = archive.fetch(&args.name, &args.dest);
    match result {
        Ok(FetchOutcome::Archived { stored }) => {
            tracing::debug!(file = %args.name, %stored, "fetched");
            if let Some(spool) = &spool {
                prefetch(spool, &archive, &args.name);
            }
            Ok(())
        }
        Ok(FetchOutcome::FromPartial { stored, bytes }) => {
            tracing::info!(
                file = %args.name,
                %stored,
                bytes,
                "served the newest partial copy of the segment, padded with zeros"
            );
            Ok(())
        }
        Err(WalArchiveError::NotFound { name }) => {
            tracing::debug!(file = %name, "not in the archive");
            drop(repo);
            std::process::exit(1);
        }
        Err(e) => Err(super::archive_push::cli_error(e)
            .context(format!("fetching {} from the WAL archive", args.name))),
    }
}

/// Spools the segments after `name` (served). The requested segment is already in place, so a
/// failure here is only a warning: the server's own request for a segment that could not be
/// prefetched reaches the repository and fails there, as it would without a spool.
fn prefetch(spool: &Spool, archive: &WalArchive<'_>, name: &str) {
    let Some(segment) = archive
        .segment_size()
        .and_then(|size| SegmentName::parse(name, size).ok())
    else {
        return; // a history or backup history file: nothing follows it
    };
    match spool.prefetch(archive, &segment) {
        Ok(p) => {
            tracing::debug!(
                after = name,
                written = p.written,
                already = p.already,
                "prefetched"
            );
            if let Some((seg, why)) = p.failed {
                tracing::warn!(segment = %seg, "not prefetched (left to its own request): {why}");
            }
        }
        Err(e) => tracing::warn!(after = name, "prefetching into the spool failed: {e}"),
    }
}
