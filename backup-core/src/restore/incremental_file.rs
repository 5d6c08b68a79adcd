//! PostgreSQL 17's `INCREMENTAL.<file>`: the changed blocks of one relation segment file, as an
//! incremental base backup sends them (basebackup_incremental.c; the reader is
//! pg_combinebackup's reconstruct.c).
//!
//! ```text
//! magic 0xd3ae1f0d | nblocks | truncation_block_length | nblocks block numbers
//!   (u32 each, the server's byte order)
//! zero padding to a multiple of BLCKSZ, only when nblocks > 0
//! nblocks blocks of BLCKSZ bytes, in the order of the block numbers
//! ```
//!
//! Block numbers are relative to the segment file. The reconstructed file is
//! [`IncrementalHeader::block_length`] blocks long: these blocks, older versions of the others
//! below `truncation_block_length`, and zeros for the rest. The magic also tells the byte order,
//! so a backup of a big-endian server reads here too. The header is read from the stream (at
//! most `segment_blocks` block numbers, 512 KiB for 1 GB segments) and checked against the
//! member's size before a byte of it is used.

use std::io::{self, Read};

/// The magic number, in the server's byte order.
pub const INCREMENTAL_MAGIC: u32 = 0xd3ae_1f0d;
/// The prefix the server puts before the name of the file an incremental file replaces.
pub const INCREMENTAL_PREFIX: &str = "INCREMENTAL.";

/// The cluster's page and segment geometry, which bounds every number in a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockGeometry {
    /// BLCKSZ: a power of two from 1 to 32 KiB (8 KiB unless compiled otherwise).
    pub block_size: u32,
    /// RELSEG_SIZE: blocks per relation segment file (131072 for 1 GB of 8 KiB blocks).
    pub segment_blocks: u32,
}

impl Default for BlockGeometry {
    fn default() -> Self {
        BlockGeometry {
            block_size: 8192,
            segment_blocks: 131_072,
        }
    }
}

impl BlockGeometry {
    /// Checks the values a backup record carries.
    pub fn validate(self) -> Result<Self, String> {
        let b = self.block_size;
        if !(b.is_power_of_two() && (1024..=32768).contains(&b)) {
            return Err(format!(
                "block size {b} is not a power of two from 1 to 32 kB"
            ));
        }
        if self.segment_blocks == 0 || u64::from(self.segment_blocks) * u64::from(b) > 1 << 40 {
            return Err(format!(
                "relation segment size {} blocks is out of range",
                self.segment_blocks
            ));
        }
        Ok(self)
    }
}

/// A header that cannot be right.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IncrementalError {
    #[error("bad magic number 0x{0:08x} (an incremental file starts with 0xd3ae1f0d)")]
    BadMagic(u32),
    #[error("{what} {value} exceeds the relation segment size of {limit} blocks")]
    OutOfRange {
        what: &'static str,
        value: u32,
        limit: u32,
    },
    #[error("the header and {blocks} block(s) take {expected} bytes, but the file has {size}")]
    SizeMismatch {
        blocks: u32,
        expected: u64,
        size: u64,
    },
    #[error("the file ends inside its header ({0})")]
    Truncated(String),
    #[error("block numbers are not in ascending order ({next} after {previous})")]
    Unsorted { previous: u32, next: u32 },
}

/// The header of one incremental file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncrementalHeader {
    /// Blocks below this that the file does not hold come from the previous backup.
    pub truncation_blocks: u32,
    /// The blocks the file holds, relative to the segment, in file order.
    pub blocks: Vec<u32>,
    /// Bytes before the first block (the header, padded).
    pub header_bytes: u64,
}

impl IncrementalHeader {
    /// Reads the header (and its padding) of a `size`-byte incremental file from `input`,
    /// leaving it at the first block.
    pub fn read(
        input: &mut impl Read,
        size: u64,
        geometry: BlockGeometry,
    ) -> Result<IncrementalHeader, IncrementalError> {
        let mut fixed = [0u8; 12];
        read_exact(input, &mut fixed, "the first 12 bytes")?;
        let word = |i: usize| [fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]];
        let little = match (u32::from_le_bytes(word(0)), u32::from_be_bytes(word(0))) {
            (INCREMENTAL_MAGIC, _) => true,
            (_, INCREMENTAL_MAGIC) => false,
            (m, _) => return Err(IncrementalError::BadMagic(m)),
        };
        let decode = |w: [u8; 4]| {
            if little {
                u32::from_le_bytes(w)
            } else {
                u32::from_be_bytes(w)
            }
        };
        let limit = geometry.segment_blocks;
        let range = |what, value: u32| {
            if value > limit {
                Err(IncrementalError::OutOfRange { what, value, limit })
            } else {
                Ok(value)
            }
        };
        let nblocks = range("block count", decode(word(4)))?;
        let truncation_blocks = range("truncation block length", decode(word(8)))?;
        let block_size = u64::from(geometry.block_size);
        let mut header_bytes = 12 + 4 * u64::from(nblocks);
        if nblocks > 0 {
            header_bytes = header_bytes.div_ceil(block_size) * block_size;
        }
        let expected = header_bytes + u64::from(nblocks) * block_size;
        if expected != size {
            return Err(IncrementalError::SizeMismatch {
                blocks: nblocks,
                expected,
                size,
            });
        }
        let mut raw = vec![0u8; 4 * nblocks as usize];
        read_exact(input, &mut raw, "the block numbers")?;
        let blocks = raw
            .chunks_exact(4)
            .map(|c| {
                let b = decode([c[0], c[1], c[2], c[3]]);
                if b >= limit {
                    Err(IncrementalError::OutOfRange {
                        what: "block number",
                        value: b,
                        limit,
                    })
                } else {
                    Ok(b)
                }
            })
            .collect::<Result<Vec<u32>, _>>()?;
        // The server sorts them (and a block is changed or not): each comes once, in order.
        if let Some(w) = blocks.windows(2).find(|w| w[0] >= w[1]) {
            return Err(IncrementalError::Unsorted {
                previous: w[0],
                next: w[1],
            });
        }
        let padding = header_bytes - 12 - raw.len() as u64;
        let skipped = io::copy(&mut input.take(padding), &mut io::sink())
            .map_err(|e| IncrementalError::Truncated(e.to_string()))?;
        if skipped != padding {
            return Err(IncrementalError::Truncated("the header's padding".into()));
        }
        Ok(IncrementalHeader {
            truncation_blocks,
            blocks,
            header_bytes,
        })
    }

    /// Blocks in the reconstructed file: the truncation length, or further to hold every block
    /// the file carries (reconstruct.c `find_reconstructed_block_length`).
    pub fn block_length(&self) -> u32 {
        self.blocks
            .iter()
            .map(|&b| b + 1)
            .fold(self.truncation_blocks, u32::max)
    }
}

fn read_exact(input: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), IncrementalError> {
    input.read_exact(buf).map_err(|e| {
        IncrementalError::Truncated(if e.kind() == io::ErrorKind::UnexpectedEof {
            what.to_string()
        } else {
            format!("{what}: {e}")
        })
    })
}

/// Whether a member at `path` (`/`-separated, relative to the data directory; tablespace
/// members as `pg_tblspc/<oid>/…`) named `INCREMENTAL.x` is an incremental file to reconstruct,
/// and if so the path of the file it stands for. As in pg_combinebackup, only files in
/// `global/`, below `base/` and below `pg_tblspc/` are: anything else is an ordinary file that
/// happens to have the name.
pub fn reconstructed_path(path: &str) -> Option<String> {
    let (dir, name) = path.rsplit_once('/')?;
    let bare = name.strip_prefix(INCREMENTAL_PREFIX)?;
    let in_relation_dir =
        dir == "global" || dir.starts_with("base/") || dir.starts_with("pg_tblspc/");
    (in_relation_dir && !bare.is_empty()).then(|| format!("{dir}/{bare}"))
}

#[cfg(test)]
mod tests;
