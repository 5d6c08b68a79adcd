//! Restoring an incremental backup: its chain (full backup first) is applied archive by
//! archive into the target while it streams, rebuilding full files as pg_combinebackup does,
//! with no intermediate copy on disk and no pg_combinebackup.
//!
//! 1. The chain is read and every link checked: records (checksum, MAC), parents present and
//!    fitting (catalog/chain.rs), each parent's manifest the one its child uploaded (SHA-256).
//! 2. The manifests decide which backup supplies each file (plan.rs), before anything is
//!    written; a broken file history stops the restore there.
//! 3. Each backup's archives are applied oldest first (apply.rs), read and decrypted on this
//!    thread while another writes.
//! 4. `backup_manifest` is written for the result (output.rs): the last backup's, with the
//!    rebuilt files' sizes and CRC-32Cs, so `pg_verifybackup` checks the directory.
//!
//! The result equals pg_combinebackup's output file for file (the integration tests compare
//! them byte for byte); the WAL step is a full backup's.

mod apply;
mod output;
mod plan;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use super::{
    empty_pg_wal, restore_wal, server_family, ChannelReader, Filled, RestoreError, RestorePlan,
    RestoreSummary, WalPlacement, HANDOFFS, HANDOFF_BYTES,
};
use crate::catalog::{BackupRecord, CatalogError, ChainError};
use crate::compress::{Compression, Decoder};
use crate::fsutil::{self, FsError};
use crate::layout;
use crate::repo::Repository;
use crate::restore::extract::ExtractError;
use crate::restore::incremental_file::{reconstructed_path, IncrementalError};
use crate::sink::{open_reader, FileCodec};
use apply::{Applier, Pass};
use output::{IncrementalFrom, OutputFile};

/// Why a chain could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum ChainRestoreError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(
        "backup {child} was taken relative to another manifest than the stored one of its \
         parent {parent}: the chain is not whole"
    )]
    WrongParent { child: String, parent: String },
    #[error("backup {backup}: {why}")]
    Record { backup: String, why: String },
    #[error("{file}: {why}")]
    Manifest { file: String, why: String },
    #[error("backup {backup} breaks the history of {file}: {why}")]
    Broken {
        backup: String,
        file: String,
        why: String,
    },
    #[error("backup {backup}: {why}")]
    Label { backup: String, why: String },
    #[error("archive {archive}: incremental file {member}: {source}")]
    Incremental {
        archive: String,
        member: String,
        #[source]
        source: IncrementalError,
    },
    #[error("archive {archive}: refusing member {member:?}: {reason}")]
    Refused {
        archive: String,
        member: String,
        reason: &'static str,
    },
    #[error("reading {archive}: {source}")]
    Read {
        archive: String,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{file} is in the manifest of backup {backup} but in none of the chain's archives")]
    Missing { backup: String, file: String },
    #[error("archive {archive}: refusing tablespace link {member:?}: {source}")]
    UnsafeLink {
        archive: String,
        member: String,
        #[source]
        source: crate::tablespace::UnsafeLocation,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl From<ExtractError> for ChainRestoreError {
    fn from(e: ExtractError) -> Self {
        match e {
            ExtractError::Write { path, source } => ChainRestoreError::Write { path, source },
            ExtractError::Read { archive, source } => ChainRestoreError::Read { archive, source },
            ExtractError::Refused {
                archive,
                member,
                reason,
            } => ChainRestoreError::Refused {
                archive,
                member,
                reason,
            },
            ExtractError::UnsafeLink {
                archive,
                member,
                source,
            } => ChainRestoreError::UnsafeLink {
                archive,
                member,
                source,
            },
        }
    }
}

/// Restores the chain ending with `record` into `plan.target` (checked empty by the caller)
/// and the tablespace locations `tablespaces` (those of `record`). Blocking.
pub(super) fn run(
    repo: &Repository,
    plan: &RestorePlan,
    record: BackupRecord,
    tablespaces: BTreeMap<u32, PathBuf>,
    started: Instant,
) -> Result<RestoreSummary, RestoreError> {
    let catalog = repo.catalog();
    let chain = catalog.chain(&record).map_err(ChainRestoreError::from)?;
    let key = repo.keyring();
    for r in &chain {
        r.verify_mac(key, &catalog.record_path(&r.id))?;
    }
    let ids: Vec<&str> = chain.iter().map(|r| r.id.as_str()).collect();
    tracing::info!(chain = %ids.join(" <- "), "restoring an incremental backup with its chain");
    let planned = plan::plan(repo, &chain)?;
    let last = chain.len() - 1;
    let mut applier = Applier::new(
        planned.base,
        planned.geometry,
        last,
        plan.target.clone(),
        tablespaces.clone(),
    );
    for (k, backup) in chain.iter().enumerate() {
        let expect_from = k.checked_sub(1).map(|p| IncrementalFrom {
            lsn: chain[p].start_lsn,
            timeline: chain[p].start_timeline(),
        });
        // Tablespaces first, as for a full backup; a tablespace the last backup no longer has
        // was dropped, and nothing of it is restored.
        let mut archives: Vec<_> = backup
            .archives
            .iter()
            .filter(|a| {
                a.tablespace_oid
                    .is_none_or(|o| tablespaces.contains_key(&o))
            })
            .collect();
        archives.sort_by_key(|a| a.tablespace_oid.is_none());
        for archive in archives {
            let (root, prefix) = match archive.tablespace_oid {
                Some(oid) => (tablespaces[&oid].clone(), format!("pg_tblspc/{oid}/")),
                None => (plan.target.clone(), String::new()),
            };
            let name = layout::backup_file(&backup.id, &archive.file);
            let pass = Pass {
                index: k,
                backup: backup.id.clone(),
                archive: name.clone(),
                root,
                prefix,
                expect_from,
            };
            let reader = open_archive(repo, &name, archive.server_compression.as_deref())?;
            applier = overlapped(applier, pass, reader, &name)?;
        }
        tracing::info!(backup = %backup.id, step = k + 1, of = chain.len(), "applied");
    }
    let files = applier.finish()?;
    let (count, bytes) = write_manifest(&plan.target, &planned.last, &files, &record.id)?;
    let segments = match plan.wal {
        WalPlacement::BackupWal => restore_wal(repo, &record, &plan.target)?,
        WalPlacement::Empty => {
            empty_pg_wal(&plan.target)?;
            0
        }
    };
    fsutil::fsync_dir(&plan.target)?;
    Ok(RestoreSummary {
        target: plan.target.clone(),
        files: count,
        bytes,
        wal_segments: segments,
        tablespaces,
        seconds: started.elapsed().as_secs_f64(),
        backup: record,
    })
}

/// The manifest for the restored directory: the last backup's entries in its order (rebuilt
/// files under their own names), then anything its archives held that it does not list.
fn write_manifest(
    target: &std::path::Path,
    last: &crate::manifest::Manifest,
    files: &HashMap<Vec<u8>, apply::FileState>,
    backup: &str,
) -> Result<(u64, u64), ChainRestoreError> {
    let mut listed = Vec::with_capacity(files.len());
    let mut seen = std::collections::HashSet::with_capacity(files.len());
    for f in last.files() {
        let key = match f.path.to_str().and_then(reconstructed_path) {
            Some(whole) => whole.into_bytes(),
            None => f.path.as_bytes().to_vec(),
        };
        if !files.contains_key(&key) {
            return Err(ChainRestoreError::Missing {
                backup: backup.to_string(),
                file: String::from_utf8_lossy(&key).into_owned(),
            });
        }
        listed.push((key.clone(), f.last_modified.clone()));
        seen.insert(key);
    }
    let mut extra: Vec<&Vec<u8>> = files.keys().filter(|k| !seen.contains(*k)).collect();
    extra.sort();
    listed.extend(extra.into_iter().map(|k| (k.clone(), None)));
    let (mut count, mut bytes) = (0u64, 0u64);
    let entries = listed.iter().map(|(key, modified)| {
        let state = files[key];
        count += 1;
        bytes += state.len;
        OutputFile {
            path: key,
            size: state.len,
            crc32c: state.crc.unwrap_or_default(),
            last_modified: modified.as_deref(),
        }
    });
    output::write_manifest(target, last, entries)?;
    Ok((count, bytes))
}

/// Opens an archive for reading: authenticated, decompressed (also when the server
/// compressed it).
fn open_archive(
    repo: &Repository,
    name: &str,
    server_compression: Option<&str>,
) -> Result<Box<dyn Read + Send>, RestoreError> {
    let codec = match server_compression {
        Some(_) => FileCodec {
            compression: Compression::None,
            encryption: repo.codec().encryption.clone(),
        },
        None => repo.codec().clone(),
    };
    let read_err = |source| RestoreError::Read {
        file: name.to_string(),
        source,
    };
    let reader =
        open_reader(repo.store().as_ref(), name, &codec).map_err(|e| read_err(e.into_io()))?;
    Ok(match server_compression {
        None => Box::new(reader),
        Some(family) => Box::new(Decoder::new(reader, server_family(family)?).map_err(read_err)?),
    })
}

/// Reads on this thread, applies on another, as restore::unpack_overlapped does for a full
/// backup.
fn overlapped(
    mut applier: Applier,
    pass: Pass,
    mut reader: Box<dyn Read + Send>,
    name: &str,
) -> Result<Applier, RestoreError> {
    let (tx, rx) = sync_channel::<Filled>(HANDOFFS);
    let (back_tx, back_rx) = sync_channel::<Vec<u8>>(HANDOFFS);
    let writer = std::thread::spawn(move || {
        let input = ChannelReader {
            rx,
            back: back_tx,
            current: Filled::default(),
        };
        let result = applier.apply(&pass, input);
        (applier, result)
    });
    let mut read_error = None;
    loop {
        let mut buf = back_rx
            .try_recv()
            .unwrap_or_else(|_| vec![0u8; HANDOFF_BYTES]);
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tx
                    .send(Filled {
                        buf,
                        len: n,
                        pos: 0,
                    })
                    .is_err()
                {
                    break; // the writer failed; its error wins
                }
            }
            Err(source) => {
                read_error = Some(RestoreError::Read {
                    file: name.to_string(),
                    source,
                });
                break;
            }
        }
    }
    drop(tx);
    let (applier, written) = writer
        .join()
        .map_err(|_| RestoreError::Internal("the applying thread panicked".into()))?;
    // An authentication or decompression failure explains a truncated tar better than the
    // tar error it causes.
    if let Some(e) = read_error {
        return Err(e);
    }
    written?;
    Ok(applier)
}

#[cfg(test)]
mod tests;
