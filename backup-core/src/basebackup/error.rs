//! Why a base backup failed.

use pgwire_repl::{Lsn, TimelineId};

use crate::catalog::CatalogError;
use crate::fsutil::FsError;
use crate::manifest::ManifestError;
use crate::repo::RepoError;
use crate::sink::SinkError;
use crate::tarwalk::TarError;

use super::MIN_SERVER_MAJOR;

/// Why a base backup failed. In every case no complete backup was recorded.
#[derive(Debug, thiserror::Error)]
pub enum BaseBackupError {
    #[error(transparent)]
    Client(#[from] pgwire_repl::Error),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("writing {file}: {source}")]
    Sink {
        file: String,
        #[source]
        source: SinkError,
    },
    #[error("archive {archive} is not a valid tar stream: {source}")]
    Tar {
        archive: String,
        #[source]
        source: TarError,
    },
    #[error("decompressing the server-compressed archive {archive}: {source}")]
    Decompress {
        archive: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the server's backup manifest is invalid: {0}")]
    Manifest(#[source] ManifestError),
    #[error("the backup does not match the server's backup manifest ({count} problem(s)); nothing was marked complete:\n{list}")]
    Verification { count: usize, list: String },
    #[error("the source server runs PostgreSQL {major}; pgstream backs up PostgreSQL {MIN_SERVER_MAJOR} and later")]
    UnsupportedServer { major: u32 },
    #[error("the two connections reached different clusters (system identifiers {first} and {second}); use a connection string that names one server")]
    DifferentClusters { first: u64, second: u64 },
    #[error("the server's timeline changed from {from} to {to} at {at} during the backup (a promotion?); run the backup again")]
    TimelineChanged {
        from: TimelineId,
        to: TimelineId,
        at: Lsn,
    },
    #[error("the WAL stream ended at {at} before the backup's WAL was complete (the server shut down or the connection was lost)")]
    WalStreamEnded { at: Lsn },
    #[error("WAL file {segment} is already in the repository with different contents; the repository may hold another cluster's WAL")]
    WalConflict { segment: String },
    #[error(transparent)]
    Archive(#[from] crate::wal::archive::WalArchiveError),
    #[error("the server sent no backup manifest")]
    NoManifest,
    #[error("stopped before the backup finished; nothing was marked complete")]
    Cancelled,
    /// The caller could not open the repository ([`run_opening`]); it reports why.
    #[error("the repository could not be opened")]
    RepositoryNotOpened,
    #[error(transparent)]
    Incremental(#[from] super::incremental::IncrementalError),
    /// A tablespace location the server reported (its tablespace list, or a `pg_tblspc` link
    /// in the main archive) that a restore could not safely write to.
    #[error(
        "the server reports tablespace {what} at a location pgstream refuses to record (a \
         restore would write there): {source}; check SELECT oid, spcname, \
         pg_tablespace_location(oid) FROM pg_tablespace on the server"
    )]
    UnsafeTablespace {
        what: String,
        #[source]
        source: crate::tablespace::UnsafeLocation,
    },
    #[error("internal error: {0}")]
    Internal(String),
}
