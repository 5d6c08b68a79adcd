//! `pgstream wal-fetch`: restore_command. Writes one archived file, decrypted and decompressed,
//! to the path the server gives. A file that is not archived exits 1 without a word: the server
//! probes for files that do not exist (history files of future timelines, the segment after the
//! end of the archive) and treats any non-zero exit as "not there".

use backup_core::wal::archive::{FetchOutcome, WalArchive, WalArchiveError};

use crate::args::WalFetchArgs;

pub fn run(args: WalFetchArgs) -> anyhow::Result<()> {
    let repo = super::open_repo(&args.repo)?;
    let result = WalArchive::new(&repo).fetch(&args.name, &args.dest);
    match result {
        Ok(FetchOutcome::Archived { stored }) => {
            tracing::debug!(file = %args.name, %stored, "fetched");
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
