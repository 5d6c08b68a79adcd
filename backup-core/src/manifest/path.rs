//! `BackupPath`: a path inside a backup, kept as raw bytes because PostgreSQL file names need
//! not be UTF-8 (the manifest's `Encoded-Path`).

use std::borrow::Borrow;
use std::fmt;

/// A relative path as a base backup names it (`base/5/16384`, `pg_tblspc/16385/PG_15_.../5/1`),
/// '/'-separated, raw bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupPath(Vec<u8>);

impl BackupPath {
    pub fn new(bytes: impl Into<Vec<u8>>) -> BackupPath {
        BackupPath(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The path as UTF-8, if it is.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Whether this is `dir` itself or lies under it (`dir` without trailing '/').
    pub fn is_at_or_under(&self, dir: &[u8]) -> bool {
        self.0.starts_with(dir) && (self.0.len() == dir.len() || self.0[dir.len()] == b'/')
    }
}

impl Borrow<[u8]> for BackupPath {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for BackupPath {
    fn from(s: &str) -> BackupPath {
        BackupPath(s.as_bytes().to_vec())
    }
}

impl From<&[u8]> for BackupPath {
    fn from(s: &[u8]) -> BackupPath {
        BackupPath(s.to_vec())
    }
}

/// Lossy UTF-8 for messages; non-UTF-8 bytes show as U+FFFD.
impl fmt::Display for BackupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for BackupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}
