//! Validation of what is stored: segment page headers against the repository's cluster,
//! segment sizes, history files that parse.

use pgwire_repl::TimelineId;

use super::{ArchiveFileName, WalArchive, WalArchiveError, BUFFER, MAX_TEXT_FILE};
use crate::repo::config::ClusterIdentity;
use crate::wal::{
    major_for_magic, SegmentCheck, SegmentValidator, TimelineHistory, WalFileName, WalPageError,
    WalSegmentSize,
};

/// The cluster a segment's first page names (its long header), if it has one: what an unbound
/// repository is bound to when the first segment arrives.
pub fn segment_cluster(first_page: &[u8]) -> Option<ClusterIdentity> {
    if first_page.len() < 40 {
        return None;
    }
    let u16_at = |i: usize| u16::from_le_bytes([first_page[i], first_page[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(first_page[i..i + 4].try_into().expect("4"));
    let u64_at = |i: usize| u64::from_le_bytes(first_page[i..i + 8].try_into().expect("8"));
    let major = major_for_magic(u16_at(0))?;
    if u16_at(2) & 0x0002 == 0 {
        return None;
    }
    let wal_segment_size = u32_at(32);
    WalSegmentSize::new(u64::from(wal_segment_size)).ok()?;
    Some(ClusterIdentity {
        system_identifier: u64_at(24),
        major,
        wal_segment_size,
    })
}

impl WalArchive<'_> {
    pub(super) fn checker(&self, file: &ArchiveFileName) -> Result<Checker, WalArchiveError> {
        let name = file.to_string();
        Ok(match file {
            ArchiveFileName::Wal(WalFileName::Segment(s) | WalFileName::Partial(s)) => {
                let bound = self.repo.cluster();
                if let Some(b) = bound {
                    if u64::from(b.wal_segment_size) != s.seg_size.bytes() {
                        return Err(WalArchiveError::InvalidName {
                            name,
                            reason: format!(
                                "it was parsed for {} segments, but the repository's cluster \
                                 uses {}",
                                s.seg_size, b.wal_segment_size
                            ),
                        });
                    }
                }
                let mut check = SegmentCheck::new(*s);
                check.system_identifier = bound.map(|b| b.system_identifier);
                check.major = bound.map(|b| b.major);
                let validator = SegmentValidator::new(check).map_err(|source| {
                    WalArchiveError::InvalidSegment {
                        name: name.clone(),
                        source,
                    }
                })?;
                Checker::Segment {
                    name,
                    partial: matches!(file, ArchiveFileName::Wal(WalFileName::Partial(_))),
                    seg_bytes: s.seg_size.bytes(),
                    len: 0,
                    validator,
                    bound,
                }
            }
            ArchiveFileName::Wal(WalFileName::History(t)) => Checker::Text {
                name,
                history: Some(*t),
                content: Vec::new(),
            },
            ArchiveFileName::BackupHistory { .. } => Checker::Text {
                name,
                history: None,
                content: Vec::new(),
            },
        })
    }
}

/// Validation of a file while it streams into the archive.
pub(super) enum Checker {
    Segment {
        name: String,
        partial: bool,
        seg_bytes: u64,
        len: u64,
        validator: SegmentValidator,
        bound: Option<ClusterIdentity>,
    },
    /// Small text files, kept in memory up to [`MAX_TEXT_FILE`]; history files are parsed.
    Text {
        name: String,
        history: Option<TimelineId>,
        content: Vec<u8>,
    },
}

impl Checker {
    pub(super) fn push(&mut self, chunk: &[u8]) -> Result<(), WalArchiveError> {
        match self {
            Checker::Segment {
                name,
                seg_bytes,
                len,
                validator,
                bound,
                ..
            } => {
                *len += chunk.len() as u64;
                if *len > *seg_bytes {
                    return Err(WalArchiveError::WrongSize {
                        name: name.clone(),
                        expected: *seg_bytes,
                        actual: *len,
                    });
                }
                validator
                    .push(chunk)
                    .map_err(|source| page_error(name, *bound, source))
            }
            Checker::Text { name, content, .. } => {
                if (content.len() + chunk.len()) as u64 > MAX_TEXT_FILE {
                    return Err(WalArchiveError::WrongSize {
                        name: name.clone(),
                        expected: MAX_TEXT_FILE,
                        actual: (content.len() + chunk.len()) as u64,
                    });
                }
                content.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    pub(super) fn finish(self) -> Result<(), WalArchiveError> {
        match self {
            Checker::Segment {
                name,
                partial,
                seg_bytes,
                len,
                mut validator,
                bound,
            } => {
                if len != seg_bytes && !partial {
                    return Err(WalArchiveError::WrongSize {
                        name,
                        expected: seg_bytes,
                        actual: len,
                    });
                }
                if len == 0 {
                    return Err(WalArchiveError::WrongSize {
                        name,
                        expected: seg_bytes,
                        actual: 0,
                    });
                }
                // A partial segment is checked as if padded with zeros, as it is served.
                let zeros = vec![0u8; BUFFER];
                let mut left = seg_bytes - len;
                while left > 0 {
                    let n = left.min(BUFFER as u64) as usize;
                    validator
                        .push(&zeros[..n])
                        .map_err(|source| page_error(&name, bound, source))?;
                    left -= n as u64;
                }
                let summary = validator
                    .finish()
                    .map_err(|source| page_error(&name, bound, source))?;
                if summary.major.is_none() {
                    // Not even the first page is valid: this is not WAL at all.
                    return Err(WalArchiveError::NotWal { name });
                }
                Ok(())
            }
            Checker::Text {
                name,
                history: Some(t),
                content,
            } => TimelineHistory::parse(t, &content)
                .map(|_| ())
                .map_err(|e| WalArchiveError::InvalidHistory {
                    name,
                    detail: e.to_string(),
                }),
            Checker::Text { .. } => Ok(()),
        }
    }
}

fn page_error(name: &str, bound: Option<ClusterIdentity>, source: WalPageError) -> WalArchiveError {
    let other_cluster = matches!(
        source,
        WalPageError::SystemIdentifier { .. }
            | WalPageError::SegmentSize { .. }
            | WalPageError::WrongMajor { .. }
    );
    match bound {
        Some(bound) if other_cluster => WalArchiveError::OtherCluster {
            name: name.to_string(),
            bound,
            source,
        },
        _ => WalArchiveError::InvalidSegment {
            name: name.to_string(),
            source,
        },
    }
}
