//! Verification of the tar walkers' observations against a manifest (pg_verifybackup's
//! checks 2, 3 and 5 for files that arrived as a stream).

use std::fmt;

use super::checksum::{ChecksumAlgorithm, FileChecksum};
use super::path::BackupPath;
use super::Manifest;
use crate::tarwalk::{EntryKind, SeenFile};

/// What pg_verifybackup never reports as extra or missing (`vb`): the manifest itself, WAL,
/// and the files `pg_basebackup -R` rewrites without updating the manifest. A path is ignored
/// if it equals an entry or lies under it.
pub const PG_VERIFYBACKUP_IGNORED: [&str; 5] = [
    "backup_manifest",
    "pg_wal",
    "postgresql.auto.conf",
    "recovery.signal",
    "standby.signal",
];

/// One disagreement between the archives and the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    MissingFromArchives {
        path: BackupPath,
    },
    NotInManifest {
        path: BackupPath,
    },
    SizeMismatch {
        path: BackupPath,
        manifest: u64,
        archive: u64,
    },
    ChecksumMismatch {
        path: BackupPath,
        manifest: FileChecksum,
        archive: FileChecksum,
    },
    /// The manifest has a checksum the walker did not compute (another algorithm, or none).
    ChecksumNotVerifiable {
        path: BackupPath,
        manifest: ChecksumAlgorithm,
        computed: Option<ChecksumAlgorithm>,
    },
    DuplicateInArchives {
        path: BackupPath,
    },
    /// Listed or unexpected, but not a regular file (or a directory or tablespace symlink).
    NotARegularFile {
        path: BackupPath,
        typeflag: u8,
    },
}

impl Mismatch {
    pub fn path(&self) -> &BackupPath {
        match self {
            Mismatch::MissingFromArchives { path }
            | Mismatch::NotInManifest { path }
            | Mismatch::SizeMismatch { path, .. }
            | Mismatch::ChecksumMismatch { path, .. }
            | Mismatch::ChecksumNotVerifiable { path, .. }
            | Mismatch::DuplicateInArchives { path }
            | Mismatch::NotARegularFile { path, .. } => path,
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::MissingFromArchives { path } => {
                write!(
                    f,
                    "\"{path}\" is present in the manifest but not in the archives"
                )
            }
            Mismatch::NotInManifest { path } => {
                write!(
                    f,
                    "\"{path}\" is present in the archives but not in the manifest"
                )
            }
            Mismatch::SizeMismatch {
                path,
                manifest,
                archive,
            } => write!(
                f,
                "\"{path}\" has size {archive} in the archives but size {manifest} in the manifest"
            ),
            Mismatch::ChecksumMismatch {
                path,
                manifest,
                archive,
            } => write!(
                f,
                "checksum mismatch for file \"{path}\": manifest {manifest}, archives {archive}"
            ),
            Mismatch::ChecksumNotVerifiable {
                path,
                manifest,
                computed,
            } => write!(
                f,
                "\"{path}\": cannot verify the manifest's {manifest} checksum, the archives were \
                 checksummed with {}",
                computed.map_or("nothing", ChecksumAlgorithm::name)
            ),
            Mismatch::DuplicateInArchives { path } => {
                write!(f, "\"{path}\" appears more than once in the archives")
            }
            Mismatch::NotARegularFile { path, typeflag } => write!(
                f,
                "\"{path}\" is not a regular file or directory (tar type {:?})",
                char::from(*typeflag)
            ),
        }
    }
}

/// Incremental verifier: feed every entry of every archive with [`observe`], then
/// [`finish`] reports what the manifest lists but no archive had.
///
/// Ignored paths are never reported as extra or missing, but when the manifest lists one
/// that an archive has (pg_wal/archive_status/*.done with the WAL option), it is compared.
///
/// [`observe`]: ManifestVerifier::observe
/// [`finish`]: ManifestVerifier::finish
#[derive(Debug)]
pub struct ManifestVerifier<'m> {
    manifest: &'m Manifest,
    matched: Vec<bool>,
    ignored: Vec<BackupPath>,
    mismatches: Vec<Mismatch>,
}

impl<'m> ManifestVerifier<'m> {
    /// A verifier with pg_verifybackup's default ignore list.
    pub fn new(manifest: &'m Manifest) -> ManifestVerifier<'m> {
        ManifestVerifier {
            manifest,
            matched: vec![false; manifest.files().len()],
            ignored: PG_VERIFYBACKUP_IGNORED.iter().map(|&p| p.into()).collect(),
            mismatches: Vec::new(),
        }
    }

    /// Ignores `path` and everything under it too (pg_verifybackup `-i`).
    pub fn ignore(mut self, path: impl Into<BackupPath>) -> Self {
        self.ignored.push(path.into());
        self
    }

    fn is_ignored(&self, path: &BackupPath) -> bool {
        self.ignored
            .iter()
            .any(|i| path.is_at_or_under(i.as_bytes()))
    }

    /// Checks one archive member.
    pub fn observe(&mut self, seen: &SeenFile) {
        let idx = self.manifest.index.get(&seen.path).copied();
        let typeflag = match &seen.kind {
            EntryKind::File => None,
            // Directories are never listed; tablespace links are listed as pg_tblspc/<oid>/...
            EntryKind::Directory | EntryKind::Symlink { .. } if idx.is_none() => return,
            EntryKind::Directory => Some(b'5'),
            EntryKind::Symlink { .. } => Some(b'2'),
            EntryKind::HardLink { .. } => Some(b'1'),
            EntryKind::Other { typeflag } => Some(*typeflag),
        };
        let Some(idx) = idx else {
            if !self.is_ignored(&seen.path) {
                self.mismatches.push(match typeflag {
                    None => Mismatch::NotInManifest {
                        path: seen.path.clone(),
                    },
                    Some(typeflag) => Mismatch::NotARegularFile {
                        path: seen.path.clone(),
                        typeflag,
                    },
                });
            }
            return;
        };
        let path = || seen.path.clone();
        if std::mem::replace(&mut self.matched[idx], true) {
            self.mismatches
                .push(Mismatch::DuplicateInArchives { path: path() });
            return;
        }
        if let Some(typeflag) = typeflag {
            self.mismatches.push(Mismatch::NotARegularFile {
                path: path(),
                typeflag,
            });
            return;
        }
        let listed = &self.manifest.files[idx];
        if listed.size != seen.size {
            // As pg_verifybackup: a wrong size makes the checksum moot.
            self.mismatches.push(Mismatch::SizeMismatch {
                path: path(),
                manifest: listed.size,
                archive: seen.size,
            });
            return;
        }
        let Some(want) = &listed.checksum else { return };
        match &seen.checksum {
            Some(got) if got.algorithm() == want.algorithm() => {
                if got != want {
                    self.mismatches.push(Mismatch::ChecksumMismatch {
                        path: path(),
                        manifest: want.clone(),
                        archive: got.clone(),
                    });
                }
            }
            got => self.mismatches.push(Mismatch::ChecksumNotVerifiable {
                path: path(),
                manifest: want.algorithm(),
                computed: got.as_ref().map(FileChecksum::algorithm),
            }),
        }
    }

    /// Everything found wrong, in the order noticed, then the files no archive had.
    pub fn finish(mut self) -> Vec<Mismatch> {
        for (f, &matched) in self.manifest.files.iter().zip(&self.matched) {
            if !matched && !self.is_ignored(&f.path) {
                self.mismatches.push(Mismatch::MissingFromArchives {
                    path: f.path.clone(),
                });
            }
        }
        self.mismatches
    }
}
