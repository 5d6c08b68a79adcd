//! Which backup of a chain supplies each file of the restored directory, decided from the
//! manifests alone before anything is written.
//!
//! The restored directory holds exactly the files of the last backup's manifest, with
//! `INCREMENTAL.` removed from the names of incremental files (pg_combinebackup's output).
//! A file the last backup holds whole comes from it; an incremental one is rebuilt on the
//! newest whole version an earlier backup holds, by every later incremental version in order.
//! Walking the manifests newest first finds that version, and refuses a chain where a file's
//! history breaks (an incremental file whose predecessor has neither form of it), as
//! pg_combinebackup does. Each manifest's SHA-256 must also be the one its child recorded when
//! it uploaded it: the link to exactly that parent.

use std::collections::HashMap;
use std::io::Read;

use super::ChainRestoreError;
use crate::catalog::BackupRecord;
use crate::layout;
use crate::manifest::Manifest;
use crate::repo::Repository;
use crate::restore::incremental_file::{reconstructed_path, BlockGeometry, INCREMENTAL_PREFIX};

/// What the restore of a chain needs to know up front.
pub(super) struct ChainPlan {
    /// Every file of the restored directory, by manifest path: the index in the chain of the
    /// backup holding its newest whole version (the last index: the last backup holds it whole).
    pub base: HashMap<Vec<u8>, usize>,
    /// The last backup's manifest, the model of the manifest written for the result.
    pub last: Manifest,
    pub geometry: BlockGeometry,
}

/// The manifest path of the incremental version of `path` (`dir/INCREMENTAL.name`).
pub(super) fn incremental_name(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/{INCREMENTAL_PREFIX}{name}"),
        None => format!("{INCREMENTAL_PREFIX}{path}"),
    }
}

/// Plans the restore of `chain` (full backup first).
pub(super) fn plan(
    repo: &Repository,
    chain: &[BackupRecord],
) -> Result<ChainPlan, ChainRestoreError> {
    let n = chain.len() - 1;
    let last_record = &chain[n];
    let geometry = last_record
        .incremental
        .as_ref()
        .map(|i| BlockGeometry {
            block_size: i.block_size,
            segment_blocks: i.segment_blocks,
        })
        .unwrap_or_default()
        .validate()
        .map_err(|why| ChainRestoreError::Record {
            backup: last_record.id.clone(),
            why,
        })?;
    let mut base: HashMap<Vec<u8>, usize> = HashMap::new();
    // Incremental in every backup from the last down to the one being read.
    let mut pending: Vec<String> = Vec::new();
    let mut last = None;
    for k in (0..=n).rev() {
        let record = &chain[k];
        let (manifest, sha256) = read_manifest(repo, record)?;
        if let Some(child) = chain.get(k + 1) {
            let want = child
                .incremental
                .as_ref()
                .map(|i| i.parent_manifest_sha256.as_str());
            if want != Some(sha256.as_str()) {
                return Err(ChainRestoreError::WrongParent {
                    child: child.id.clone(),
                    parent: record.id.clone(),
                });
            }
        }
        if manifest.system_identifier() != last_record.system_identifier() {
            return Err(ChainRestoreError::Record {
                backup: record.id.clone(),
                why: "its manifest names another system identifier than the chain's".into(),
            });
        }
        if k == n {
            for f in manifest.files() {
                match f.path.to_str().and_then(reconstructed_path) {
                    Some(whole) => pending.push(whole),
                    None => {
                        base.insert(f.path.as_bytes().to_vec(), n);
                    }
                }
            }
            last = Some(manifest);
            continue;
        }
        let mut still = Vec::with_capacity(pending.len());
        for path in pending {
            if manifest.file(path.as_bytes()).is_some() {
                base.insert(path.into_bytes(), k);
            } else if manifest.file(incremental_name(&path).as_bytes()).is_some() {
                still.push(path);
            } else {
                return Err(ChainRestoreError::Broken {
                    backup: record.id.clone(),
                    file: path,
                    why: "it holds neither that file nor an incremental version of it, but the \
                          next backup of the chain holds an incremental version"
                        .into(),
                });
            }
        }
        pending = still;
    }
    if let Some(path) = pending.into_iter().next() {
        return Err(ChainRestoreError::Broken {
            backup: chain[0].id.clone(),
            file: path,
            why: "the chain's full backup holds only an incremental version of it".into(),
        });
    }
    Ok(ChainPlan {
        base,
        last: last.expect("the loop reads the last manifest first"),
        geometry,
    })
}

/// The backup's stored manifest, parsed and checked, and the SHA-256 (hex) of its bytes.
fn read_manifest(
    repo: &Repository,
    record: &BackupRecord,
) -> Result<(Manifest, String), ChainRestoreError> {
    let file = layout::backup_file(&record.id, &record.manifest_file);
    let fail = |why: String| ChainRestoreError::Manifest {
        file: file.clone(),
        why,
    };
    let mut bytes = Vec::new();
    repo.open_file(&file)
        .map_err(|e| fail(e.to_string()))?
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    let sha256 = hex::encode(crate::crypto::sha256(&[&bytes]));
    let manifest = Manifest::parse(&bytes).map_err(|e| fail(e.to_string()))?;
    if manifest.start_lsn() != Some(record.start_lsn) || manifest.end_lsn() != Some(record.end_lsn)
    {
        return Err(fail(format!(
            "its WAL range is not the backup's {}..{}",
            record.start_lsn, record.end_lsn
        )));
    }
    Ok((manifest, sha256))
}
