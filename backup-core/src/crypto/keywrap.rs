//! Repository data keys, wrapped (AES-256-GCM) by the key-encryption key derived from the
//! passphrase. Rekeying rewraps them; no data file changes. Format version 1 has one data key;
//! version 2 a keyring whose wraps also bind each key's id (docs/format.md §3.2).

use super::{random_bytes, Aead, CryptoError, DataKey, KEY_LEN, NONCE_LEN, TAG_LEN};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Prefix of the key-wrap AAD; the repository id and format version follow (see docs/format.md).
pub const KEYWRAP_AAD_PREFIX: &[u8] = b"pgstream-data-key";

/// The wrapped data key as stored in the config (`"key_wrap"` object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    /// Always `"aes-256-gcm"` in format version 1.
    pub algorithm: String,
    /// 12-byte random nonce, hex.
    pub nonce: String,
    /// Encrypted 32-byte data key followed by the 16-byte tag, hex (96 hex digits).
    pub ciphertext: String,
}

/// AAD binding a wrapped key to its repository, format version and (from version 2) key id, so
/// a wrapped key copied from another repository, replayed across versions or moved to another
/// id does not unwrap.
pub fn keywrap_aad(repository_id: &[u8; 16], format_version: u32, key_id: Option<u32>) -> Vec<u8> {
    let mut aad = KEYWRAP_AAD_PREFIX.to_vec();
    aad.extend_from_slice(repository_id);
    aad.extend_from_slice(&format_version.to_be_bytes());
    if let Some(id) = key_id {
        aad.extend_from_slice(&id.to_be_bytes());
    }
    aad
}

/// Creates a new random data key.
pub fn generate_data_key() -> Result<DataKey, CryptoError> {
    Ok(DataKey::from_bytes(random_bytes::<KEY_LEN>()?))
}

/// Wraps `data_key` under `kek` with a fresh random nonce.
pub fn wrap(
    kek: &DataKey,
    data_key: &DataKey,
    repository_id: &[u8; 16],
    format_version: u32,
    key_id: Option<u32>,
) -> Result<WrappedKey, CryptoError> {
    wrap_with_nonce(
        kek,
        data_key,
        repository_id,
        format_version,
        key_id,
        random_bytes()?,
    )
}

fn wrap_with_nonce(
    kek: &DataKey,
    data_key: &DataKey,
    repository_id: &[u8; 16],
    format_version: u32,
    key_id: Option<u32>,
    nonce: [u8; NONCE_LEN],
) -> Result<WrappedKey, CryptoError> {
    let mut sealed = Vec::with_capacity(KEY_LEN + TAG_LEN);
    Aead::Aes256Gcm.seal(
        kek.bytes(),
        &nonce,
        &keywrap_aad(repository_id, format_version, key_id),
        data_key.bytes(),
        &mut sealed,
    )?;
    Ok(WrappedKey {
        algorithm: Aead::Aes256Gcm.name().into(),
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(sealed),
    })
}

/// Unwraps the data key; a failed authentication is reported as a wrong passphrase, the one
/// likely cause (tampering with the wrapped key looks the same, and is equally fatal).
pub fn unwrap(
    kek: &DataKey,
    wrapped: &WrappedKey,
    repository_id: &[u8; 16],
    format_version: u32,
    key_id: Option<u32>,
) -> Result<DataKey, CryptoError> {
    if wrapped.algorithm != Aead::Aes256Gcm.name() {
        return Err(CryptoError::BadKeyMaterial(format!(
            "key wrap algorithm {:?} is not supported (only aes-256-gcm)",
            wrapped.algorithm
        )));
    }
    let nonce: [u8; NONCE_LEN] = hex::decode(&wrapped.nonce)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| CryptoError::BadKeyMaterial("key wrap nonce is not 12 hex bytes".into()))?;
    let sealed = hex::decode(&wrapped.ciphertext)
        .ok()
        .filter(|v| v.len() == KEY_LEN + TAG_LEN)
        .ok_or_else(|| {
            CryptoError::BadKeyMaterial("wrapped key is not 48 hex bytes (key and tag)".into())
        })?;
    let plain = Aead::Aes256Gcm
        .open(
            kek.bytes(),
            &nonce,
            &keywrap_aad(repository_id, format_version, key_id),
            &sealed,
        )
        .map(Zeroizing::new)
        .ok_or(CryptoError::WrongPassphrase)?;
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&plain);
    Ok(DataKey::from_bytes(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key-wrap part of the worked example in docs/format.md.
    #[test]
    fn worked_example_from_format_md() {
        let kdf = crate::crypto::kdf::KdfParams {
            algorithm: "scrypt".into(),
            n: 1024,
            r: 8,
            p: 1,
            salt: "40".repeat(32),
        };
        let kek = kdf
            .derive(&crate::crypto::Secret::from("example passphrase"))
            .unwrap();
        assert_eq!(
            hex::encode(kek.bytes()),
            "6d154809a7763c4715d7cee67ce6265e5249878680af5df8b355011fe395e12d"
        );
        let data_key = DataKey::from_bytes(std::array::from_fn(|i| i as u8));
        let id: [u8; 16] = std::array::from_fn(|i| 0x50 + i as u8);
        let w = wrap_with_nonce(&kek, &data_key, &id, 1, None, [0x60; 12]).unwrap();
        assert_eq!(
            w.ciphertext,
            "0fe2903da47d8759d79138eff01fac788311b83498307ec2b7014dfd9305a759\
             ff8e1572ccbc3b731809aa12d70cd316"
        );
        assert_eq!(
            unwrap(&kek, &w, &id, 1, None).unwrap().bytes(),
            data_key.bytes()
        );
    }

    #[test]
    fn wrap_unwrap_binds_repository_and_version() {
        let kek = generate_data_key().unwrap();
        let dk = generate_data_key().unwrap();
        let id = [9u8; 16];
        let w = wrap(&kek, &dk, &id, 1, None).unwrap();
        assert_eq!(unwrap(&kek, &w, &id, 1, None).unwrap().bytes(), dk.bytes());
        let other = generate_data_key().unwrap();
        assert!(matches!(
            unwrap(&other, &w, &id, 1, None),
            Err(CryptoError::WrongPassphrase)
        ));
        assert!(unwrap(&kek, &w, &[8u8; 16], 1, None).is_err());
        assert!(unwrap(&kek, &w, &id, 2, None).is_err());
        // Version 2 binds the key id: a wrap moved to another id does not unwrap.
        let w2 = wrap(&kek, &dk, &id, 2, Some(3)).unwrap();
        assert_eq!(
            unwrap(&kek, &w2, &id, 2, Some(3)).unwrap().bytes(),
            dk.bytes()
        );
        assert!(unwrap(&kek, &w2, &id, 2, Some(4)).is_err());
        assert!(unwrap(&kek, &w2, &id, 2, None).is_err());
        let mut bad = w.clone();
        bad.ciphertext.truncate(10);
        assert!(matches!(
            unwrap(&kek, &bad, &id, 1, None),
            Err(CryptoError::BadKeyMaterial(_))
        ));
    }
}
