//! The repository config file `pgstream.repo`: magic "PGSTREAM", format version, a JSON body and
//! a trailing CRC-32C (layout in docs/format.md). It holds the repository id, the compression and
//! encryption choices, the scrypt parameters, the wrapped data key and the cluster binding.

use crate::compress::Compression;
use crate::crypto::kdf::KdfParams;
use crate::crypto::keywrap::WrappedKey;
use crate::crypto::Aead;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Name of the config file inside the repository directory.
pub const CONFIG_FILE: &str = "pgstream.repo";
/// Magic at offset 0 of the config file.
pub const CONFIG_MAGIC: &[u8; 8] = b"PGSTREAM";
/// Repository format version written and read by this build.
pub const FORMAT_VERSION: u32 = 1;
/// Largest JSON body accepted (a config is a few hundred bytes).
const MAX_BODY: usize = 1024 * 1024;

/// The PostgreSQL cluster a repository is bound to at its first backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterIdentity {
    /// `IDENTIFY_SYSTEM`'s systemid. Stored as a decimal string: JSON tools that read numbers as
    /// doubles would corrupt a 64-bit value.
    #[serde(serialize_with = "ser_u64_str", deserialize_with = "de_u64_str")]
    pub system_identifier: u64,
    /// Server major version (e.g. 16).
    pub major: u32,
    /// `wal_segment_size` in bytes.
    pub wal_segment_size: u32,
}

impl fmt::Display for ClusterIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "system identifier {} (PostgreSQL {}, {} MiB WAL segments)",
            self.system_identifier,
            self.major,
            self.wal_segment_size >> 20
        )
    }
}

fn ser_u64_str<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn de_u64_str<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// Encryption settings and key material (`"encryption"` object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// Cipher for new files.
    pub algorithm: Aead,
    /// Plaintext bytes per chunk for new files.
    pub chunk_size: u32,
    /// Passphrase → key-encryption key.
    pub kdf: KdfParams,
    /// The data key wrapped by the key-encryption key.
    pub key_wrap: WrappedKey,
}

/// The JSON body of `pgstream.repo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// 16 random bytes, hex.
    pub repository_id: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Compression of new files.
    pub compression: Compression,
    /// `null` for an unencrypted repository.
    pub encryption: Option<EncryptionConfig>,
    /// `null` until the first backup.
    pub cluster: Option<ClusterIdentity>,
}

impl RepoConfig {
    /// The repository id as bytes (validated by [`decode`]).
    pub fn repository_id_bytes(&self) -> Result<[u8; 16], String> {
        hex::decode(&self.repository_id)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| "repository_id is not 16 hex bytes".to_string())
    }
}

/// Why a config file could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a config file (wrong magic or too short for one).
    BadMagic,
    /// A version this build does not read.
    UnsupportedVersion(u32),
    /// Damaged or invalid content.
    Invalid(String),
}

/// Serialises a config file.
pub fn encode(config: &RepoConfig) -> Vec<u8> {
    let body = serde_json::to_vec_pretty(config).expect("config serialises");
    let mut out = Vec::with_capacity(body.len() + 21);
    out.extend_from_slice(CONFIG_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Parses and validates a config file.
pub fn decode(bytes: &[u8]) -> Result<RepoConfig, DecodeError> {
    if bytes.len() < 8 || &bytes[..8] != CONFIG_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let invalid = |m: &str| DecodeError::Invalid(m.to_string());
    if bytes.len() < 20 {
        return Err(invalid("file is shorter than its fixed fields"));
    }
    let version = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let len = u32::from_be_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    if len > MAX_BODY || bytes.len() != 16 + len + 4 {
        return Err(invalid(
            "length field does not match the file size (truncated?)",
        ));
    }
    let stored = u32::from_be_bytes(bytes[16 + len..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..16 + len]) != stored {
        return Err(invalid("CRC-32C mismatch (the file is damaged)"));
    }
    let config: RepoConfig = serde_json::from_slice(&bytes[16..16 + len])
        .map_err(|e| DecodeError::Invalid(format!("JSON body: {e}")))?;
    config.repository_id_bytes().map_err(DecodeError::Invalid)?;
    if let Some(enc) = &config.encryption {
        enc.kdf
            .validate()
            .map_err(|e| DecodeError::Invalid(e.to_string()))?;
        if !(crate::crypto::chunked::MIN_CHUNK_SIZE..=crate::crypto::chunked::MAX_CHUNK_SIZE)
            .contains(&enc.chunk_size)
        {
            return Err(invalid("chunk_size out of range"));
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RepoConfig {
        RepoConfig {
            repository_id: "00112233445566778899aabbccddeeff".into(),
            created_unix: 1_700_000_000,
            compression: Compression::Zstd(5),
            encryption: None,
            cluster: Some(ClusterIdentity {
                system_identifier: u64::MAX - 1,
                major: 16,
                wal_segment_size: 16 << 20,
            }),
        }
    }

    #[test]
    fn round_trip_and_sysid_as_string() {
        let bytes = encode(&sample());
        assert!(String::from_utf8_lossy(&bytes).contains("\"18446744073709551614\""));
        assert_eq!(decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn damage_is_detected() {
        let bytes = encode(&sample());
        assert_eq!(decode(b"nonsense"), Err(DecodeError::BadMagic));
        let mut v = bytes.clone();
        v[11] = 9;
        assert_eq!(decode(&v), Err(DecodeError::UnsupportedVersion(9)));
        for i in 16..bytes.len() {
            let mut v = bytes.clone();
            v[i] ^= 0x20;
            assert!(
                matches!(decode(&v), Err(DecodeError::Invalid(_))),
                "byte {i}"
            );
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
