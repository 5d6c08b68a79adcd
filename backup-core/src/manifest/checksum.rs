//! Per-file checksums as backup manifests spell them (src/common/checksum_helper.c).

use std::fmt;

use openssl::sha::{Sha224, Sha256, Sha384, Sha512};

/// A file checksum algorithm a backup manifest can name. `NONE` in a manifest is represented
/// as "no checksum" (`Option::None`) rather than as a variant.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ChecksumAlgorithm {
    Crc32c,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl ChecksumAlgorithm {
    /// Parses a `Checksum-Algorithm` value, case-insensitively as pg_checksum_parse_type does.
    /// `Ok(None)` is `NONE`.
    pub fn parse(name: &str) -> Result<Option<ChecksumAlgorithm>, String> {
        let alg = match name.to_ascii_uppercase().as_str() {
            "NONE" => return Ok(None),
            "CRC32C" => ChecksumAlgorithm::Crc32c,
            "SHA224" => ChecksumAlgorithm::Sha224,
            "SHA256" => ChecksumAlgorithm::Sha256,
            "SHA384" => ChecksumAlgorithm::Sha384,
            "SHA512" => ChecksumAlgorithm::Sha512,
            _ => {
                return Err(format!(
                    "unrecognized checksum algorithm {name:?} \
                     (expected NONE, CRC32C, SHA224, SHA256, SHA384 or SHA512)"
                ))
            }
        };
        Ok(Some(alg))
    }

    /// The name PostgreSQL writes in manifests.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Sha224 => "SHA224",
            ChecksumAlgorithm::Sha256 => "SHA256",
            ChecksumAlgorithm::Sha384 => "SHA384",
            ChecksumAlgorithm::Sha512 => "SHA512",
        }
    }

    /// Length of the raw checksum in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Crc32c => 4,
            ChecksumAlgorithm::Sha224 => 28,
            ChecksumAlgorithm::Sha256 => 32,
            ChecksumAlgorithm::Sha384 => 48,
            ChecksumAlgorithm::Sha512 => 64,
        }
    }
}

impl fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A computed or recorded checksum: the raw bytes whose hex the manifest's `Checksum` holds.
/// For CRC32C these are the u32's bytes in little-endian order (what the server writes on
/// x86/ARM), for SHA-x the digest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FileChecksum {
    algorithm: ChecksumAlgorithm,
    bytes: Vec<u8>,
}

impl FileChecksum {
    /// A checksum from raw bytes; `None` if the length does not fit the algorithm.
    pub fn new(algorithm: ChecksumAlgorithm, bytes: Vec<u8>) -> Option<FileChecksum> {
        (bytes.len() == algorithm.digest_len()).then_some(FileChecksum { algorithm, bytes })
    }

    /// A CRC32C value as the manifest spells it.
    pub fn crc32c(crc: u32) -> FileChecksum {
        FileChecksum {
            algorithm: ChecksumAlgorithm::Crc32c,
            bytes: crc.to_le_bytes().to_vec(),
        }
    }

    pub fn algorithm(&self) -> ChecksumAlgorithm {
        self.algorithm
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Lower-case hex, as in the manifest.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.bytes)
    }
}

impl fmt::Display for FileChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.to_hex())
    }
}

impl fmt::Debug for FileChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileChecksum({self})")
    }
}

/// Streaming checksum of one file's content, fed in chunks of any size.
#[derive(Clone)]
pub enum FileChecksummer {
    Crc32c(crate::crc::Crc32c),
    Sha224(Sha224),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl FileChecksummer {
    pub fn new(algorithm: ChecksumAlgorithm) -> FileChecksummer {
        match algorithm {
            ChecksumAlgorithm::Crc32c => FileChecksummer::Crc32c(crate::crc::Crc32c::new()),
            ChecksumAlgorithm::Sha224 => FileChecksummer::Sha224(Sha224::new()),
            ChecksumAlgorithm::Sha256 => FileChecksummer::Sha256(Sha256::new()),
            ChecksumAlgorithm::Sha384 => FileChecksummer::Sha384(Sha384::new()),
            ChecksumAlgorithm::Sha512 => FileChecksummer::Sha512(Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> ChecksumAlgorithm {
        match self {
            FileChecksummer::Crc32c(_) => ChecksumAlgorithm::Crc32c,
            FileChecksummer::Sha224(_) => ChecksumAlgorithm::Sha224,
            FileChecksummer::Sha256(_) => ChecksumAlgorithm::Sha256,
            FileChecksummer::Sha384(_) => ChecksumAlgorithm::Sha384,
            FileChecksummer::Sha512(_) => ChecksumAlgorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            FileChecksummer::Crc32c(crc) => crc.update(data),
            FileChecksummer::Sha224(h) => h.update(data),
            FileChecksummer::Sha256(h) => h.update(data),
            FileChecksummer::Sha384(h) => h.update(data),
            FileChecksummer::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> FileChecksum {
        let algorithm = self.algorithm();
        let bytes = match self {
            FileChecksummer::Crc32c(crc) => crc.value().to_le_bytes().to_vec(),
            FileChecksummer::Sha224(h) => h.finish().to_vec(),
            FileChecksummer::Sha256(h) => h.finish().to_vec(),
            FileChecksummer::Sha384(h) => h.finish().to_vec(),
            FileChecksummer::Sha512(h) => h.finish().to_vec(),
        };
        FileChecksum { algorithm, bytes }
    }

    /// Checksum of a whole buffer at once.
    pub fn digest(algorithm: ChecksumAlgorithm, data: &[u8]) -> FileChecksum {
        let mut c = FileChecksummer::new(algorithm);
        c.update(data);
        c.finish()
    }
}

impl std::fmt::Debug for FileChecksummer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileChecksummer({})", self.algorithm())
    }
}
