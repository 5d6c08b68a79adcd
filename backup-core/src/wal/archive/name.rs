//! The names archive_command and restore_command are given: WAL, history and backup history
//! files.

use super::WalArchiveError;
use crate::wal::{is_wal_file_name, SegmentName, WalFileName, WalSegmentSize};

/// A file an archive holds, by the name PostgreSQL gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveFileName {
    Wal(WalFileName),
    /// `<segment>.<offset 8 hex>.backup`: the backup history file a primary writes (and
    /// archives) at the end of every base backup.
    BackupHistory {
        segment: SegmentName,
        name: String,
    },
}

impl ArchiveFileName {
    /// Parses any name archive_command may be given. `seg_size` is needed for segment names.
    pub fn parse(name: &str, seg_size: WalSegmentSize) -> Result<ArchiveFileName, WalArchiveError> {
        let invalid = |reason: String| WalArchiveError::InvalidName {
            name: name.to_string(),
            reason,
        };
        if let Some(stem) = name.strip_suffix(".backup") {
            let ok = stem.len() == 33
                && stem.as_bytes()[24] == b'.'
                && is_wal_file_name(&stem[..24])
                && stem[25..]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
            if !ok {
                return Err(invalid(
                    "a backup history file is named <24 hex digits>.<8 hex digits>.backup".into(),
                ));
            }
            let segment =
                SegmentName::parse(&stem[..24], seg_size).map_err(|e| invalid(e.to_string()))?;
            return Ok(ArchiveFileName::BackupHistory {
                segment,
                name: name.to_string(),
            });
        }
        WalFileName::parse(name, seg_size)
            .map(ArchiveFileName::Wal)
            .map_err(|e| invalid(e.to_string()))
    }
}

impl std::fmt::Display for ArchiveFileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveFileName::Wal(w) => write!(f, "{w}"),
            ArchiveFileName::BackupHistory { name, .. } => f.write_str(name),
        }
    }
}
