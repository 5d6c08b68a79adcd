//! The repository config file `pgstream.repo`: magic "PGSTREAM", format version, a JSON body and
//! a trailing CRC-32C (layout in docs/format.md §2). It holds the repository id, the compression
//! and encryption choices, the scrypt parameters, the wrapped data keys and the cluster binding.
//!
//! Format version 1 has one wrapped data key (`key_wrap`) and is protected by its CRC only.
//! Version 2 has a keyring (`keys`, `active_key`) and, when encrypted, a MAC under a key derived
//! from the active data key (`mac`), so nobody without the passphrase can alter it unnoticed.

use crate::compress::Compression;
use crate::crypto::kdf::KdfParams;
use crate::crypto::keywrap::WrappedKey;
use crate::crypto::Aead;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Name of the config file inside the repository.
pub const CONFIG_FILE: &str = "pgstream.repo";
/// Magic at offset 0 of the config file.
pub const CONFIG_MAGIC: &[u8; 8] = b"PGSTREAM";
/// The newest repository format version, written by `init` and `upgrade`.
pub const FORMAT_VERSION: u32 = 2;
/// The first repository format version, still read (and written by `rekey` until upgraded).
pub const FORMAT_V1: u32 = 1;
/// Largest JSON body accepted (a config is a few hundred bytes).
const MAX_BODY: usize = 1024 * 1024;
/// Most data keys a keyring holds (bounds the work of opening a tampered config).
pub const MAX_KEYS: usize = 64;

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

/// One data key of the keyring, wrapped by the key-encryption key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredKey {
    /// Its id, named by the headers of the files written with it and by records and pins.
    pub id: u32,
    /// When it was made, seconds since the Unix epoch.
    pub created_unix: u64,
    /// The key, wrapped (its AAD binds the id: docs/format.md §3.2).
    pub wrap: WrappedKey,
}

/// Encryption settings and key material (`"encryption"` object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionConfig {
    /// Cipher for new files.
    pub algorithm: Aead,
    /// Plaintext bytes per chunk for new files.
    pub chunk_size: u32,
    /// Passphrase → key-encryption key.
    pub kdf: KdfParams,
    /// The data keys (format 1: one, id 0).
    pub keys: Vec<StoredKey>,
    /// The key new files are written with.
    pub active_key: u32,
}

/// The MAC of a format 2 encrypted config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigMac {
    /// The data key it is computed with.
    pub key_id: u32,
    /// HMAC-SHA256, hex.
    pub hmac: String,
}

/// The content of `pgstream.repo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoConfig {
    /// The repository format version the file has (1 or 2).
    pub format_version: u32,
    /// 16 random bytes, hex.
    pub repository_id: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Compression of new files.
    pub compression: Compression,
    /// `None` for an unencrypted repository.
    pub encryption: Option<EncryptionConfig>,
    /// `None` until the first backup.
    pub cluster: Option<ClusterIdentity>,
    /// Format 2, encrypted: the MAC over the rest (see [`mac_body`]).
    pub mac: Option<ConfigMac>,
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

/// The JSON body of a format 1 config.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyV1 {
    repository_id: String,
    created_unix: u64,
    compression: Compression,
    encryption: Option<EncryptionV1>,
    cluster: Option<ClusterIdentity>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptionV1 {
    algorithm: Aead,
    chunk_size: u32,
    kdf: KdfParams,
    key_wrap: WrappedKey,
}

/// The JSON body of a format 2 config (fields in this order; the MAC covers the compact
/// serialization of this object without `mac`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyV2 {
    repository_id: String,
    created_unix: u64,
    compression: Compression,
    encryption: Option<EncryptionV2>,
    cluster: Option<ClusterIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<ConfigMac>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptionV2 {
    algorithm: Aead,
    chunk_size: u32,
    kdf: KdfParams,
    keys: Vec<StoredKey>,
    active_key: u32,
}

fn body_v2(config: &RepoConfig, with_mac: bool) -> BodyV2 {
    BodyV2 {
        repository_id: config.repository_id.clone(),
        created_unix: config.created_unix,
        compression: config.compression,
        encryption: config.encryption.as_ref().map(|e| EncryptionV2 {
            algorithm: e.algorithm,
            chunk_size: e.chunk_size,
            kdf: e.kdf.clone(),
            keys: e.keys.clone(),
            active_key: e.active_key,
        }),
        cluster: config.cluster,
        mac: if with_mac { config.mac.clone() } else { None },
    }
}

/// The bytes a format 2 config's MAC covers: its body without `mac`, as compact JSON.
pub fn mac_body(config: &RepoConfig) -> Vec<u8> {
    serde_json::to_vec(&body_v2(config, false)).expect("config serialises")
}

/// Serialises a config file, in the format version it has.
pub fn encode(config: &RepoConfig) -> Vec<u8> {
    let body = if config.format_version == FORMAT_V1 {
        let enc = config.encryption.as_ref().map(|e| EncryptionV1 {
            algorithm: e.algorithm,
            chunk_size: e.chunk_size,
            kdf: e.kdf.clone(),
            key_wrap: e.keys[0].wrap.clone(),
        });
        serde_json::to_vec_pretty(&BodyV1 {
            repository_id: config.repository_id.clone(),
            created_unix: config.created_unix,
            compression: config.compression,
            encryption: enc,
            cluster: config.cluster,
        })
    } else {
        serde_json::to_vec_pretty(&body_v2(config, true))
    }
    .expect("config serialises");
    let mut out = Vec::with_capacity(body.len() + 21);
    out.extend_from_slice(CONFIG_MAGIC);
    out.extend_from_slice(&config.format_version.to_be_bytes());
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
    if !(FORMAT_V1..=FORMAT_VERSION).contains(&version) {
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
    let json = &bytes[16..16 + len];
    let json_err = |e: serde_json::Error| DecodeError::Invalid(format!("JSON body: {e}"));
    let config = if version == FORMAT_V1 {
        let b: BodyV1 = serde_json::from_slice(json).map_err(json_err)?;
        RepoConfig {
            format_version: version,
            repository_id: b.repository_id,
            created_unix: b.created_unix,
            compression: b.compression,
            encryption: b.encryption.map(|e| EncryptionConfig {
                algorithm: e.algorithm,
                chunk_size: e.chunk_size,
                kdf: e.kdf,
                keys: vec![StoredKey {
                    id: 0,
                    created_unix: b.created_unix,
                    wrap: e.key_wrap,
                }],
                active_key: 0,
            }),
            cluster: b.cluster,
            mac: None,
        }
    } else {
        let b: BodyV2 = serde_json::from_slice(json).map_err(json_err)?;
        RepoConfig {
            format_version: version,
            repository_id: b.repository_id,
            created_unix: b.created_unix,
            compression: b.compression,
            encryption: b.encryption.map(|e| EncryptionConfig {
                algorithm: e.algorithm,
                chunk_size: e.chunk_size,
                kdf: e.kdf,
                keys: e.keys,
                active_key: e.active_key,
            }),
            cluster: b.cluster,
            mac: b.mac,
        }
    };
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
        if enc.keys.is_empty() || enc.keys.len() > MAX_KEYS {
            return Err(invalid("the keyring must hold 1 to 64 keys"));
        }
        let mut ids: Vec<u32> = enc.keys.iter().map(|k| k.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != enc.keys.len() {
            return Err(invalid("two keys have the same id"));
        }
        if !ids.contains(&enc.active_key) {
            return Err(invalid("active_key names no key of the keyring"));
        }
        if version >= 2 && config.mac.is_none() {
            return Err(invalid(
                "an encrypted repository of format 2 must carry a MAC (it was removed)",
            ));
        }
    } else if config.mac.is_some() {
        return Err(invalid("an unencrypted repository has no MAC"));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RepoConfig {
        RepoConfig {
            format_version: FORMAT_VERSION,
            mac: None,
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
        let v1 = RepoConfig {
            format_version: FORMAT_V1,
            ..sample()
        };
        assert_eq!(decode(&encode(&v1)).unwrap(), v1);
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
