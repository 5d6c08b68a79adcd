//! Offsite copies (`pgstream copy`): backups and archived WAL from one repository into another,
//! on any two storage backends. Each repository keeps its own passphrase and data keys: every
//! file is decrypted and authenticated with the source's keys and sealed again under the
//! destination's active key; the compressed stream is kept as it is (so both repositories must
//! use the same compression, which names the files). Records are sealed again with the
//! destination's key.
//!
//! Order, so the destination never shows a backup it cannot restore: for each backup, the WAL
//! it needs (its segments and history files) and its files first, its record last, under the
//! destination's `backup.<id>` lease (as `base` commits: [`crate::catalog::lifecycle`]). While
//! that lease is live, `expire` on the destination deletes neither the half-copied backup nor
//! any WAL. Re-running skips what is complete at the destination (a backup whose record exists,
//! a WAL file with the same content) and removes what an interrupted run left under a backup id;
//! a WAL file stored there with different content is an error, as in `archive-push`.

mod backup;
mod file;
#[cfg(test)]
mod tests;
mod wal;

use crate::catalog::CatalogError;
use crate::repo::config::FORMAT_VERSION;
use crate::repo::{BindOutcome, RepoError, Repository};
use crate::store::StoreError;

pub use file::Copied;

/// Which backups to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The newest backup.
    Latest,
    /// One backup, by id.
    Id(String),
    /// Every backup.
    All,
    /// No backup (only WAL, with `wal`).
    None,
}

/// What to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    /// The backups.
    pub backups: Selection,
    /// Also every archived WAL file (segments, `.partial` segments, backup history and
    /// timeline history files) not yet at the destination.
    pub wal: bool,
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopySummary {
    /// Backups copied now.
    pub backups_copied: Vec<String>,
    /// Backups the destination already had.
    pub backups_present: Vec<String>,
    /// WAL files (segments, partials, history files) copied now.
    pub wal_copied: u64,
    /// WAL files the destination already had with the same content.
    pub wal_present: u64,
    /// Backup files (archives, manifests, partial segments) copied now.
    pub files_copied: u64,
    /// Bytes written to the destination.
    pub bytes_written: u64,
    /// Whether the destination was unbound and is now bound to the source's cluster.
    pub bound: bool,
}

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The two repositories cannot hold the same files.
    #[error("cannot copy from {from} to {to}: {reason}")]
    Incompatible {
        from: String,
        to: String,
        reason: String,
    },
    /// A source file failed authentication or its checks (or could not be read: `io`).
    #[error("source file {detail}; nothing was committed for it at the destination")]
    Source {
        file: String,
        detail: String,
        io: bool,
    },
    /// A file a source backup needs is missing from the source.
    #[error("source file {file} is missing (a backup being copied needs it)")]
    SourceMissing { file: String },
    /// A source file's size or length differs from what the backup's record says.
    #[error("source file {file} does not match its backup record: {detail}")]
    SourceMismatch { file: String, detail: String },
    /// The destination holds different content under a name being copied.
    #[error("{file} exists at the destination with different content; refusing to overwrite it (compare both repositories with `pgstream verify`)")]
    Conflict { file: String },
    /// A destination file could not be read back for comparison.
    #[error("destination file {file} cannot be read back: {detail}")]
    Destination { file: String, detail: String },
    /// An incremental backup's chain is broken at the source (a parent missing or not its own).
    #[error("cannot copy the chain of backup {id}: {source}")]
    Chain {
        id: String,
        #[source]
        source: Box<crate::catalog::ChainError>,
    },
    /// A backup record names a file that cannot be one of its files.
    #[error("backup record {id}: {detail}")]
    BadRecord { id: String, detail: String },
}

/// Copies from `src` to `dst` as `options` say. `dst` must be an initialised repository of
/// format 2 with the same encryption (encrypted or not) and compression as `src`, bound to the
/// same cluster or to none (then it is bound here).
pub fn copy(
    src: &Repository,
    dst: &mut Repository,
    options: &CopyOptions,
) -> Result<CopySummary, CopyError> {
    let mut summary = CopySummary::default();
    check_compatible(src, dst)?;
    if let Some(cluster) = src.cluster() {
        summary.bound = dst.bind_cluster(cluster)? == BindOutcome::Bound;
        if summary.bound {
            tracing::info!(%cluster, "destination bound to the source's cluster");
        }
    }
    let dst: &Repository = dst;
    let catalog = src.catalog();
    let chosen = match &options.backups {
        Selection::None => None,
        Selection::All => None,
        Selection::Latest => Some(catalog.resolve("latest")?),
        Selection::Id(id) => Some(catalog.read(id)?),
    };
    let ids: Vec<String> = match chosen {
        // Ids sort by start time, so every parent comes before its incrementals.
        None if matches!(options.backups, Selection::All) => catalog.ids()?,
        None => Vec::new(),
        // An incremental backup is useless without its chain: the full backup first, each
        // parent before its child, so the destination never shows a broken chain.
        Some(record) => {
            let chain = catalog.chain(&record).map_err(|source| CopyError::Chain {
                id: record.id.clone(),
                source: Box::new(source),
            })?;
            chain.into_iter().map(|r| r.id).collect()
        }
    };
    for id in &ids {
        backup::copy_backup(src, dst, id, &mut summary)?;
    }
    if options.wal {
        wal::copy_all_wal(src, dst, &mut summary)?;
    }
    Ok(summary)
}

/// Refuses a destination that cannot take the source's files as they are.
fn check_compatible(src: &Repository, dst: &Repository) -> Result<(), CopyError> {
    let incompatible = |reason: String| CopyError::Incompatible {
        from: src.location().to_string(),
        to: dst.location().to_string(),
        reason,
    };
    if src.id() == dst.id() {
        return Err(incompatible(
            "they are the same repository (the same repository id)".into(),
        ));
    }
    if dst.config().format_version != FORMAT_VERSION {
        return Err(CopyError::Repo(RepoError::NeedsUpgrade {
            location: dst.location().to_string(),
            what: "a copy destination",
        }));
    }
    let (s, d) = (src.config(), dst.config());
    match (s.encryption.is_some(), d.encryption.is_some()) {
        (true, false) => {
            return Err(incompatible(
                "the source is encrypted and the destination is not; pgstream does not store \
                 an encrypted repository's backups in plaintext (initialise the destination \
                 with encryption)"
                    .into(),
            ))
        }
        (false, true) => {
            return Err(incompatible(
                "the source is not encrypted and the destination is; copy into an unencrypted \
                 repository, or take new backups into the encrypted one"
                    .into(),
            ))
        }
        _ => {}
    }
    if s.compression.family() != d.compression.family() {
        return Err(incompatible(format!(
            "the source compresses with {} and the destination with {}; files are copied \
             without recompressing them, so initialise the destination with --compression {}",
            s.compression, d.compression, s.compression
        )));
    }
    if let (Some(a), Some(b)) = (s.cluster, d.cluster) {
        if a != b {
            return Err(CopyError::Repo(RepoError::ClusterMismatch {
                location: dst.location().to_string(),
                bound: b,
                offered: a,
            }));
        }
    }
    Ok(())
}
