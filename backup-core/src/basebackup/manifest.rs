//! The server's backup manifest: checked against every member the archives held, then stored.

use std::io::Write;
use std::sync::Arc;

use pgwire_repl::Lsn;

use super::{BaseBackupError, MISMATCHES_SHOWN};
use crate::layout;
use crate::manifest::{ChecksumAlgorithm, Manifest, Mismatch};
use crate::repo::Repository;
use crate::sink::SinkError;
use crate::tarwalk::SeenFile;

/// Checks every member seen in the archives against the manifest; returns how many files the
/// manifest covers.
pub(super) fn verify_manifest(
    bytes: &[u8],
    seen: &[SeenFile],
    start: Lsn,
    end: Lsn,
) -> Result<u64, BaseBackupError> {
    let manifest = Manifest::parse(bytes).map_err(BaseBackupError::Manifest)?;
    manifest
        .require_checksum_algorithm(Some(ChecksumAlgorithm::Crc32c))
        .map_err(BaseBackupError::Manifest)?;
    let mut problems: Vec<Mismatch> = manifest.verify_files(seen);
    let mut extra = Vec::new();
    if manifest.start_lsn() != Some(start) || manifest.end_lsn() != Some(end) {
        extra.push(format!(
            "the manifest's WAL range {:?}..{:?} is not the backup's {start}..{end}",
            manifest.start_lsn(),
            manifest.end_lsn()
        ));
    }
    if problems.is_empty() && extra.is_empty() {
        return Ok(manifest.files().len() as u64);
    }
    let count = problems.len() + extra.len();
    problems.truncate(MISMATCHES_SHOWN);
    let mut list: Vec<String> = extra;
    list.extend(problems.iter().map(|m| format!("  {m}")));
    if count > list.len() {
        list.push(format!("  ... and {} more", count - list.len()));
    }
    Err(BaseBackupError::Verification {
        count,
        list: list.join("\n"),
    })
}

pub(super) async fn store_manifest(
    repo: &Arc<Repository>,
    id: &str,
    file: &str,
    bytes: Vec<u8>,
) -> Result<u64, BaseBackupError> {
    let repo = Arc::clone(repo);
    let identity = layout::backup_file(id, file);
    tokio::task::spawn_blocking(move || {
        let sink_err = |source| BaseBackupError::Sink {
            file: identity.clone(),
            source,
        };
        let mut sink = repo.create_file(&identity).map_err(|e| match e {
            crate::repo::RepoError::Sink(s) => sink_err(s),
            other => BaseBackupError::Repo(other),
        })?;
        sink.write_all(&bytes).map_err(|e| {
            sink_err(SinkError::Write {
                path: sink.path().into(),
                source: e,
            })
        })?;
        Ok(sink.finish().map_err(sink_err)?.stored_bytes)
    })
    .await
    .map_err(|e| BaseBackupError::Internal(e.to_string()))?
}
