//! The one owner of per-file key derivation and of nonces (docs/format.md §8.3, §8.4).
//!
//! Every sealed file (a stored file's chunks, a partial segment's records) has its own key,
//! derived from the repository data key, a random salt in the file's header and the file's
//! identity, with a domain label that keeps the two formats' keys apart. Within a file, the
//! nonce is a counter (chunk or record index), so a nonce never repeats under one key: a
//! writer never reuses a salt (a rewrite of a partial takes a fresh one).

use super::{hkdf_sha256, sha256, CryptoError, DataKey, NONCE_LEN};

/// Which format a per-file key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDomain {
    /// A stored file's chunks (`crypto::chunked`).
    StoredFile,
    /// A partial segment's records (`wal::partial`).
    PartialSegment,
}

impl KeyDomain {
    /// The HKDF info prefix (SHA-256 of the identity follows).
    pub fn info_prefix(self) -> &'static [u8] {
        match self {
            KeyDomain::StoredFile => b"pgstream-file-key",
            KeyDomain::PartialSegment => b"pgstream-partial-key",
        }
    }
}

/// HKDF-SHA256(data key, salt, prefix ‖ SHA-256(identity)).
pub fn derive_file_key(
    data_key: &DataKey,
    salt: &[u8],
    domain: KeyDomain,
    identity: &str,
) -> Result<DataKey, CryptoError> {
    let info = [domain.info_prefix(), &sha256(&[identity.as_bytes()])].concat();
    Ok(DataKey::from_bytes(hkdf_sha256(
        data_key.bytes(),
        salt,
        &info,
    )?))
}

/// The nonce of chunk or record `index`: 4 zero bytes, then the index big-endian.
pub fn counter_nonce(index: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&index.to_be_bytes());
    n
}
