//! MACs of the repository's small JSON files (config, catalog records, pins): HMAC-SHA256 under
//! `HKDF-SHA256(ikm = data key, salt = 32 zero bytes, info = label)`, hex (docs/format.md §3.4).
//! Only a holder of the data key (so of the passphrase) can make one that verifies.

use super::{constant_time_eq, hkdf_sha256, hmac_sha256, CryptoError, DataKey};

/// The label of configuration MACs.
pub const CONFIG: &[u8] = b"pgstream-config";
/// The label of catalog record MACs.
pub const RECORD: &[u8] = b"pgstream-catalog-record";
/// The label of pin MACs.
pub const PIN: &[u8] = b"pgstream-pin-record";

/// The MAC of `body` under `key` for files labelled `label`, hex.
pub fn mac(key: &DataKey, label: &[u8], body: &[u8]) -> Result<String, CryptoError> {
    // An all-zero salt is RFC 5869's "no salt" (OpenSSL refuses an empty HMAC key).
    let mac_key = hkdf_sha256(key.bytes(), &[0u8; 32], label)?;
    Ok(hex::encode(hmac_sha256(&mac_key, &[body])?))
}

/// Whether `expected` (hex) is the MAC of `body`, compared in constant time.
pub fn verify(
    key: &DataKey,
    label: &[u8],
    body: &[u8],
    expected: &str,
) -> Result<bool, CryptoError> {
    let actual = mac(key, label, body)?;
    Ok(constant_time_eq(actual.as_bytes(), expected.as_bytes()))
}
