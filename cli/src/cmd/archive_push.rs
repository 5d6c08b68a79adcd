//! `pgstream archive-push`: archive_command. Stores one WAL segment, `.partial` segment, timeline
//! history or backup history file in the repository's WAL archive. Storing the same content
//! again succeeds (the server retries after a crash); different content under a stored name is
//! refused and nothing is overwritten.

use std::fs::File;
use std::io::{BufReader, Read as _, Seek as _, SeekFrom};

use anyhow::Context as _;
use backup_core::wal::archive::{
    segment_cluster, ArchiveFileName, StoreOutcome, WalArchive, WalArchiveError,
};
use backup_core::wal::{is_partial_wal_file_name, is_wal_file_name, WalSegmentSize};
use backup_core::{BindOutcome, FileError};

use crate::args::ArchivePushArgs;
use crate::exit::{classified, Failure};

pub fn run(args: ArchivePushArgs) -> anyhow::Result<()> {
    let path = &args.path;
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Err(classified(
            Failure::Usage,
            anyhow::anyhow!("{} does not end in a WAL file name", path.display()),
        ));
    };
    let name = name.to_string();
    // Refuse unknown names before asking for a passphrase or opening anything.
    // (1 MB segments allow the widest range of names; the real size is applied below.)
    let smallest = WalSegmentSize::new(1 << 20).expect("1 MB is a valid segment size");
    ArchiveFileName::parse(&name, smallest).map_err(|e| classified(Failure::Usage, e))?;
    let mut repo = super::open_repo(&args.repo)?;
    let mut file = File::open(path)
        .with_context(|| format!("opening {} to archive it", path.display()))
        .map_err(|e| classified(Failure::LocalIo, e))?;
    if repo.cluster().is_none() && looks_like_segment(&name) {
        // The first segment binds the repository to its cluster, as a first backup does.
        let mut header = [0u8; 40];
        let n = file
            .read(&mut header)
            .and_then(|n| file.seek(SeekFrom::Start(0)).map(|_| n))
            .with_context(|| format!("reading {}", path.display()))
            .map_err(|e| classified(Failure::LocalIo, e))?;
        let Some(cluster) = segment_cluster(&header[..n]) else {
            return Err(classified(
                Failure::Usage,
                anyhow::anyhow!(
                    "{} is not a WAL segment: its first page has no WAL long page header",
                    path.display()
                ),
            ));
        };
        if repo.bind_cluster(cluster)? == BindOutcome::Bound {
            tracing::info!(%cluster, "repository bound to the cluster");
        }
    }
    let seg_size = repo
        .cluster()
        .and_then(|c| WalSegmentSize::new(u64::from(c.wal_segment_size)).ok())
        .unwrap_or(WalSegmentSize::DEFAULT);
    let file_name =
        ArchiveFileName::parse(&name, seg_size).map_err(|e| classified(Failure::Usage, e))?;
    let archive = WalArchive::new(&repo);
    match archive.store_file(&file_name, &mut BufReader::with_capacity(64 * 1024, file)) {
        Ok(StoreOutcome::Stored) => {
            tracing::info!(file = %name, "archived");
            Ok(())
        }
        Ok(StoreOutcome::AlreadyPresent) => {
            tracing::info!(file = %name, "already archived with the same content");
            Ok(())
        }
        Err(e) => Err(cli_error(e).context(format!("archiving {}", path.display()))),
    }
}

fn looks_like_segment(name: &str) -> bool {
    is_wal_file_name(name) || is_partial_wal_file_name(name)
}

/// A WAL archive error with its documented exit code (docs/cli.md).
pub fn cli_error(e: WalArchiveError) -> anyhow::Error {
    use WalArchiveError as W;
    let failure = match &e {
        // Let the repository's own classification apply (exit::classify sees it in the chain).
        W::Repo(_) => {
            let W::Repo(r) = e else { unreachable!() };
            return anyhow::Error::new(r);
        }
        W::NotFound { .. } => Failure::Other,
        W::InvalidName { .. }
        | W::WrongSize { .. }
        | W::InvalidSegment { .. }
        | W::NotWal { .. }
        | W::InvalidHistory { .. } => Failure::Usage,
        W::Conflict { .. } | W::OtherCluster { .. } | W::Gap { .. } | W::Catalog(_) => {
            Failure::Repository
        }
        W::Stored { .. } => match e.file_error() {
            Some(FileError::Io { .. }) | None => Failure::LocalIo,
            Some(FileError::NoKey { .. } | FileError::UnsupportedVersion { .. }) => {
                Failure::Repository
            }
            Some(_) => Failure::Verification,
        },
        W::StoredSize { .. } => Failure::Verification,
        W::Sink {
            source: backup_core::SinkError::Store(s),
            ..
        }
        | W::Store(s) => crate::exit::classify_store(s),
        W::Source { .. } | W::Sink { .. } | W::Fs(_) => Failure::LocalIo,
    };
    classified(failure, e)
}
