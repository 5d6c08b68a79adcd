//! PostgreSQL's backup_manifest (versions 1 and 2): parsing with the rules of
//! src/common/parse_manifest.c, the Manifest-Checksum, and verification of what the tar walker
//! saw against it (the checks of pg_verifybackup that need no data directory).

mod checksum;
mod parse;
mod path;
mod verify;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use openssl::sha::Sha256;
use pgwire_repl::{Lsn, TimelineId};

pub use checksum::{ChecksumAlgorithm, FileChecksum, FileChecksummer};
pub use path::BackupPath;
pub use verify::{ManifestVerifier, Mismatch, PG_VERIFYBACKUP_IGNORED};

use crate::tarwalk::SeenFile;

/// A manifest that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The JSON is malformed or breaks one of PostgreSQL's rules; the position is the point
    /// where the parser noticed (the end of the offending entry: entries are one per line).
    #[error("backup manifest line {line}, column {column}: {message}")]
    Invalid {
        line: usize,
        column: usize,
        message: String,
    },
    /// The byte layout the checksum rule needs is missing.
    #[error("backup manifest: {0}")]
    Layout(&'static str),
    #[error("backup manifest: invalid Manifest-Checksum {0:?}: expected 64 hexadecimal digits")]
    BadManifestChecksum(String),
    #[error(
        "backup manifest checksum mismatch: it records {recorded}, its contents hash to \
         {computed}; the manifest is damaged or was edited"
    )]
    ChecksumMismatch { recorded: String, computed: String },
    /// The manifest uses a checksum algorithm other than the one the archives were hashed with.
    #[error(
        "backup manifest: file {path} has a {found} checksum but the archives were checksummed \
         with {wanted}; ask the server for MANIFEST_CHECKSUMS '{wanted}'"
    )]
    UnexpectedChecksumAlgorithm {
        path: BackupPath,
        found: ChecksumAlgorithm,
        wanted: String,
    },
}

/// One `Files` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    pub path: BackupPath,
    pub size: u64,
    pub checksum: Option<FileChecksum>,
    /// Informational only (pg_verifybackup never checks it).
    pub last_modified: Option<String>,
}

/// One `WAL-Ranges` entry: the WAL of `timeline` from `start` to `end` is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalRange {
    pub timeline: TimelineId,
    pub start: Lsn,
    pub end: Lsn,
}

/// A parsed, checksum-verified backup manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    version: u32,
    system_identifier: Option<u64>,
    files: Vec<ManifestFile>,
    index: HashMap<BackupPath, usize>,
    wal_ranges: Vec<WalRange>,
    manifest_checksum: [u8; 32],
}

impl Manifest {
    /// Parses and checks a whole backup_manifest, including its Manifest-Checksum.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let parsed = parse::parse_json(bytes).map_err(|e| {
            let mut message = e.to_string();
            if let Some(at) = message.rfind(" at line ") {
                message.truncate(at);
            }
            ManifestError::Invalid {
                line: e.line(),
                column: e.column(),
                message,
            }
        })?;
        let manifest_checksum = verify_manifest_checksum(bytes, &parsed.manifest_checksum)?;
        Ok(Manifest {
            version: parsed.version,
            system_identifier: parsed.system_identifier,
            files: parsed.files,
            index: parsed.index,
            wal_ranges: parsed.wal_ranges,
            manifest_checksum,
        })
    }

    /// 1 (PostgreSQL 13-16) or 2 (17+).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The cluster's system identifier (version 2 manifests).
    pub fn system_identifier(&self) -> Option<u64> {
        self.system_identifier
    }

    /// The file entries, in manifest order.
    pub fn files(&self) -> &[ManifestFile] {
        &self.files
    }

    pub fn file(&self, path: &[u8]) -> Option<&ManifestFile> {
        self.index.get(path).map(|&i| &self.files[i])
    }

    /// Newest timeline first, as the server writes them.
    pub fn wal_ranges(&self) -> &[WalRange] {
        &self.wal_ranges
    }

    /// Where the backup's WAL starts: the last range's Start-LSN.
    pub fn start_lsn(&self) -> Option<Lsn> {
        self.wal_ranges.last().map(|r| r.start)
    }

    /// The backup's end (consistency point): the first range's End-LSN.
    pub fn end_lsn(&self) -> Option<Lsn> {
        self.wal_ranges.first().map(|r| r.end)
    }

    /// The recorded (and verified) SHA-256 of the manifest.
    pub fn manifest_checksum(&self) -> &[u8; 32] {
        &self.manifest_checksum
    }

    /// The checksum algorithm of the files that have one (the server uses one for all).
    pub fn checksum_algorithm(&self) -> Option<ChecksumAlgorithm> {
        self.files
            .iter()
            .find_map(|f| f.checksum.as_ref().map(FileChecksum::algorithm))
    }

    /// Errors if any file's checksum is not of `algorithm` (what the archives were hashed
    /// with; `None`: they were not hashed, so any recorded checksum is unexpected).
    pub fn require_checksum_algorithm(
        &self,
        algorithm: Option<ChecksumAlgorithm>,
    ) -> Result<(), ManifestError> {
        for f in &self.files {
            if let Some(found) = f.checksum.as_ref().map(FileChecksum::algorithm) {
                if Some(found) != algorithm {
                    return Err(ManifestError::UnexpectedChecksumAlgorithm {
                        path: f.path.clone(),
                        found,
                        wanted: algorithm
                            .map_or("NONE", ChecksumAlgorithm::name)
                            .to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Compares everything the tar walkers saw (all archives of the backup) with the
    /// manifest, with pg_verifybackup's default ignore list. Empty means the backup matches.
    pub fn verify_files(&self, seen: &[SeenFile]) -> Vec<Mismatch> {
        let mut v = ManifestVerifier::new(self);
        for s in seen {
            v.observe(s);
        }
        v.finish()
    }
}

/// SHA-256 over the bytes up to and including the second-to-last '\n' (`pm`
/// verify_manifest_checksum).
fn verify_manifest_checksum(bytes: &[u8], recorded: &str) -> Result<[u8; 32], ManifestError> {
    let mut newlines = bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .map(|(i, _)| i);
    let (Some(last), Some(penultimate)) = (newlines.next_back(), newlines.next_back()) else {
        return Err(ManifestError::Layout("expected at least 2 lines"));
    };
    if last != bytes.len() - 1 {
        return Err(ManifestError::Layout("last line not newline-terminated"));
    }
    let recorded_bytes: [u8; 32] = match hex::decode(recorded) {
        Ok(b) if recorded.len() == 64 => b.try_into().expect("64 hex digits are 32 bytes"),
        _ => return Err(ManifestError::BadManifestChecksum(recorded.to_string())),
    };
    let mut h = Sha256::new();
    h.update(&bytes[..=penultimate]);
    let computed = h.finish();
    if computed != recorded_bytes {
        return Err(ManifestError::ChecksumMismatch {
            recorded: recorded.to_ascii_lowercase(),
            computed: hex::encode(computed),
        });
    }
    Ok(recorded_bytes)
}
