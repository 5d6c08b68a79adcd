//! Why storing into or fetching from the WAL archive failed.

use std::io;

use crate::catalog::CatalogError;
use crate::file_error::FileError;
use crate::fsutil::FsError;
use crate::repo::config::ClusterIdentity;
use crate::repo::RepoError;
use crate::sink::SinkError;
use crate::store::StoreError;
use crate::wal::WalPageError;

/// Why storing or fetching failed.
#[derive(Debug, thiserror::Error)]
pub enum WalArchiveError {
    /// Not in the archive (restore_command's normal "no such file").
    #[error("{name} is not in the WAL archive")]
    NotFound { name: String },
    /// A name that is not a WAL, history or backup history file name.
    #[error("{name:?} is not a file pgstream archives: {reason}")]
    InvalidName { name: String, reason: String },
    /// The name is stored with other content. Nothing was changed.
    #[error(
        "the WAL archive already holds {name} ({stored}) with different content; nothing was \
         overwritten. Is a second cluster, or a restored copy on the same timeline, archiving \
         into this repository? Give each cluster its own repository"
    )]
    Conflict { name: String, stored: String },
    /// A segment that is not exactly the segment size (or a partial that is larger).
    #[error("{name} has {actual} bytes, but a WAL segment of this cluster has {expected}")]
    WrongSize {
        name: String,
        expected: u64,
        actual: u64,
    },
    /// A segment written by another cluster than the one the repository is bound to.
    #[error("{name} does not belong to the cluster of this repository ({bound}): {source}")]
    OtherCluster {
        name: String,
        bound: ClusterIdentity,
        #[source]
        source: WalPageError,
    },
    /// A segment whose page headers are not valid WAL.
    #[error("{name} is not a valid WAL segment: {source}")]
    InvalidSegment {
        name: String,
        #[source]
        source: WalPageError,
    },
    /// A segment whose first page has no header at all (zeros, or not WAL).
    #[error("{name} is not WAL: its first page has no WAL page header")]
    NotWal { name: String },
    /// A timeline history file that does not parse.
    #[error("{name} is not a valid timeline history file: {detail}")]
    InvalidHistory { name: String, detail: String },
    /// A segment is missing although later ones of its timeline are archived: serving a
    /// partial copy would end recovery early, so nothing is served.
    #[error(
        "segment {name} is missing from the WAL archive although later segments of its \
         timeline are there (up to {newest}); the archive has a gap"
    )]
    Gap { name: String, newest: String },
    /// Reading the file to store failed.
    #[error("reading {name}: {source}")]
    Source {
        name: String,
        #[source]
        source: io::Error,
    },
    /// Reading a stored file failed (I/O, authentication, decompression: see
    /// [`FileError::from_io`]).
    #[error("reading {stored} from the WAL archive: {source}")]
    Stored {
        stored: String,
        #[source]
        source: io::Error,
    },
    /// A stored file holds more or fewer bytes than it must.
    #[error(
        "{stored} in the WAL archive holds {actual} bytes, expected {expected}; it is damaged"
    )]
    StoredSize {
        stored: String,
        expected: u64,
        actual: u64,
    },
    /// Writing into the repository failed.
    #[error("storing {stored}: {source}")]
    Sink {
        stored: String,
        #[source]
        source: SinkError,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl WalArchiveError {
    /// The [`FileError`] of a stored file that failed to read, if that is what happened.
    pub fn file_error(&self) -> Option<&FileError> {
        match self {
            WalArchiveError::Stored { source, .. } => FileError::from_io(source),
            WalArchiveError::Repo(RepoError::File(f)) => Some(f),
            _ => None,
        }
    }
}
