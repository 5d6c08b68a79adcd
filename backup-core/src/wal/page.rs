//! WAL page headers (xlog_internal.h XLogPageHeaderData / XLogLongPageHeaderData): does a
//! segment file belong to the cluster, and how far does its valid data reach? Fields are in
//! the server's byte order, little-endian on every platform PostgreSQL packages ship for.

use pgwire_repl::Lsn;

use super::segment::SegmentName;

/// XLOG_PAGE_MAGIC by major version.
pub const XLOG_PAGE_MAGICS: [(u32, u16); 7] = [
    (12, 0xD101),
    (13, 0xD106),
    (14, 0xD10D),
    (15, 0xD110),
    (16, 0xD113),
    (17, 0xD116),
    (18, 0xD118),
];

const XLP_LONG_HEADER: u16 = 0x0002;
const XLP_ALL_FLAGS: u16 = 0x000F;
const SHORT_HEADER: usize = 24;
const LONG_HEADER: usize = 40;

pub fn major_for_magic(magic: u16) -> Option<u32> {
    XLOG_PAGE_MAGICS
        .iter()
        .find(|(_, m)| *m == magic)
        .map(|(v, _)| *v)
}

pub fn magic_for_major(major: u32) -> Option<u16> {
    XLOG_PAGE_MAGICS
        .iter()
        .find(|(v, _)| *v == major)
        .map(|(_, m)| *m)
}

/// A segment that is not a valid WAL segment of the expected cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalPageError {
    #[error("invalid WAL block size {0}: it must be a power of two from 1 kB to 64 kB (SHOW wal_block_size)")]
    BlockSize(u32),
    #[error("WAL segment {name} has {actual} bytes, expected {expected}")]
    WrongSize {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("WAL segment {name}: unknown page magic {magic:#06X} at offset {offset} (not PostgreSQL 12-18 WAL)")]
    UnknownMagic {
        name: String,
        offset: u64,
        magic: u16,
    },
    #[error("WAL segment {name}: written by PostgreSQL {found}, expected {expected}")]
    WrongMajor {
        name: String,
        found: u32,
        expected: u32,
    },
    #[error("WAL segment {name}: page at offset {offset} has magic {magic:#06X}, the first page {first:#06X}")]
    MagicChanged {
        name: String,
        offset: u64,
        magic: u16,
        first: u16,
    },
    #[error("WAL segment {name}: invalid info bits {info:#06X} at offset {offset}")]
    InfoBits {
        name: String,
        offset: u64,
        info: u16,
    },
    #[error("WAL segment {name}: the first page lacks the long header")]
    NoLongHeader { name: String },
    #[error("WAL segment {name} belongs to system {found}, not to this cluster ({expected})")]
    SystemIdentifier {
        name: String,
        found: u64,
        expected: u64,
    },
    #[error("WAL segment {name} was written with {found}-byte segments, expected {expected}")]
    SegmentSize {
        name: String,
        found: u32,
        expected: u64,
    },
    #[error("WAL segment {name} was written with {found}-byte WAL blocks, expected {expected}")]
    PageSize {
        name: String,
        found: u32,
        expected: u32,
    },
    #[error("WAL segment {name}: page at offset {offset} is of timeline {found}, later than the file name's")]
    TimelineAhead {
        name: String,
        offset: u64,
        found: u32,
    },
    #[error(
        "WAL segment {name}: page at offset {offset} goes back from timeline {previous} to {found}"
    )]
    TimelineBackwards {
        name: String,
        offset: u64,
        found: u32,
        previous: u32,
    },
}

/// What a segment is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCheck {
    pub name: SegmentName,
    /// IDENTIFY_SYSTEM's systemid, when known.
    pub system_identifier: Option<u64>,
    /// wal_block_size (XLOG_BLCKSZ), normally 8192.
    pub block_size: u32,
    /// The server's major version, when known.
    pub major: Option<u32>,
}

impl SegmentCheck {
    pub fn new(name: SegmentName) -> SegmentCheck {
        SegmentCheck {
            name,
            system_identifier: None,
            block_size: 8192,
            major: None,
        }
    }
}

/// Why the valid data ended before the segment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndOfData {
    /// A page with magic 0: never written (zero padding of a new or streamed segment).
    ZeroPage { offset: u64 },
    /// A page whose address is not its own: left over from a recycled segment.
    WrongPageAddress { offset: u64, found: Lsn },
}

/// The outcome of a successful check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Identified by the magic; `None` when not even the first page is valid.
    pub major: Option<u32>,
    pub system_identifier: Option<u64>,
    /// Bytes from the segment start covered by pages with valid headers.
    pub valid_up_to: u64,
    /// `None` when every page is valid.
    pub end: Option<EndOfData>,
}

/// Checks a segment's page headers as its bytes stream past (keeps one header at a time).
#[derive(Debug)]
pub struct SegmentValidator {
    check: SegmentCheck,
    header: [u8; LONG_HEADER],
    pos: u64,
    magic: Option<u16>,
    sysid: Option<u64>,
    tli: u32,
    end: Option<EndOfData>,
}

impl SegmentValidator {
    pub fn new(check: SegmentCheck) -> Result<SegmentValidator, WalPageError> {
        let b = check.block_size;
        if !b.is_power_of_two() || !(1024..=65536).contains(&b) {
            return Err(WalPageError::BlockSize(b));
        }
        Ok(SegmentValidator {
            check,
            header: [0; LONG_HEADER],
            pos: 0,
            magic: None,
            sysid: None,
            tli: 0,
            end: None,
        })
    }

    pub fn push(&mut self, mut chunk: &[u8]) -> Result<(), WalPageError> {
        let blcksz = u64::from(self.check.block_size);
        while !chunk.is_empty() {
            let in_page = self.pos % blcksz;
            let want = if self.pos < blcksz {
                LONG_HEADER
            } else {
                SHORT_HEADER
            } as u64;
            if self.end.is_some() || in_page >= want {
                // Skip to the next page header.
                let n = (blcksz - in_page).min(chunk.len() as u64) as usize;
                chunk = &chunk[n..];
                self.pos += n as u64;
                continue;
            }
            let n = (want - in_page).min(chunk.len() as u64) as usize;
            let at = in_page as usize;
            self.header[at..at + n].copy_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            self.pos += n as u64;
            if self.pos % blcksz == want {
                self.check_page(self.pos - want)?;
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Result<SegmentSummary, WalPageError> {
        let expected = self.check.name.seg_size.bytes();
        if self.pos != expected {
            return Err(WalPageError::WrongSize {
                name: self.check.name.to_string(),
                expected,
                actual: self.pos,
            });
        }
        Ok(SegmentSummary {
            major: self.magic.and_then(major_for_magic),
            system_identifier: self.sysid,
            valid_up_to: match self.end {
                Some(EndOfData::ZeroPage { offset })
                | Some(EndOfData::WrongPageAddress { offset, .. }) => offset,
                None => expected,
            },
            end: self.end,
        })
    }

    fn check_page(&mut self, offset: u64) -> Result<(), WalPageError> {
        let h = &self.header;
        let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        let (magic, info, tli, pageaddr) = (u16_at(0), u16_at(2), u32_at(4), u64_at(8));
        let name = || self.check.name.to_string();
        if magic == 0 {
            self.end = Some(EndOfData::ZeroPage { offset });
            return Ok(());
        }
        let Some(major) = major_for_magic(magic) else {
            return Err(WalPageError::UnknownMagic {
                name: name(),
                offset,
                magic,
            });
        };
        let expected_addr = self.check.name.start_lsn().0 + offset;
        if pageaddr != expected_addr {
            self.end = Some(EndOfData::WrongPageAddress {
                offset,
                found: Lsn(pageaddr),
            });
            return Ok(());
        }
        if info & !XLP_ALL_FLAGS != 0 {
            return Err(WalPageError::InfoBits {
                name: name(),
                offset,
                info,
            });
        }
        if offset == 0 {
            if info & XLP_LONG_HEADER == 0 {
                return Err(WalPageError::NoLongHeader { name: name() });
            }
            if let Some(expected) = self.check.major.filter(|&m| m != major) {
                return Err(WalPageError::WrongMajor {
                    name: name(),
                    found: major,
                    expected,
                });
            }
            let (sysid, seg_size, blcksz) = (u64_at(24), u32_at(32), u32_at(36));
            if let Some(expected) = self.check.system_identifier.filter(|&s| s != sysid) {
                return Err(WalPageError::SystemIdentifier {
                    name: name(),
                    found: sysid,
                    expected,
                });
            }
            let expected_seg = self.check.name.seg_size.bytes();
            if u64::from(seg_size) != expected_seg {
                return Err(WalPageError::SegmentSize {
                    name: name(),
                    found: seg_size,
                    expected: expected_seg,
                });
            }
            if blcksz != self.check.block_size {
                return Err(WalPageError::PageSize {
                    name: name(),
                    found: blcksz,
                    expected: self.check.block_size,
                });
            }
            self.magic = Some(magic);
            self.sysid = Some(sysid);
        } else if let Some(first) = self.magic.filter(|&m| m != magic) {
            return Err(WalPageError::MagicChanged {
                name: name(),
                offset,
                magic,
                first,
            });
        }
        if tli == 0 || tli > self.check.name.timeline.0 {
            return Err(WalPageError::TimelineAhead {
                name: name(),
                offset,
                found: tli,
            });
        }
        if tli < self.tli {
            return Err(WalPageError::TimelineBackwards {
                name: name(),
                offset,
                found: tli,
                previous: self.tli,
            });
        }
        self.tli = tli;
        Ok(())
    }
}

/// Checks a whole segment held in memory (tests, small tools); prefer [`SegmentValidator`].
pub fn validate_segment(data: &[u8], check: SegmentCheck) -> Result<SegmentSummary, WalPageError> {
    let mut v = SegmentValidator::new(check)?;
    v.push(data)?;
    v.finish()
}
