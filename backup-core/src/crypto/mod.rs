//! Cryptography for the repository: passphrase → key-encryption key (scrypt), the wrapped random
//! repository data key, per-file keys (HKDF-SHA256) and the chunked AEAD file format. The AEADs
//! come from AWS-LC (its AES-GCM uses VAES/AVX-512 where the CPU has it, four times OpenSSL
//! 3.0's speed here); everything else from OpenSSL. The byte-level formats are specified in
//! `docs/format.md`.

pub mod chunked;
pub mod filekey;
pub mod kdf;
pub mod keyring;
pub mod keywrap;
pub mod metamac;
mod secret;

pub use secret::{DataKey, Secret};

use aws_lc_rs::aead::{self as lc, LessSafeKey, UnboundKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use std::fmt;
use std::str::FromStr;

/// Length of every AEAD tag in the formats (both ciphers use 128-bit tags).
pub const TAG_LEN: usize = 16;
/// Length of every AEAD nonce in the formats (96 bits, as both ciphers define them).
pub const NONCE_LEN: usize = 12;
/// Length of every symmetric key (256 bits).
pub const KEY_LEN: usize = 32;

/// Errors of the key hierarchy.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The passphrase did not unwrap the data key (or the key material was tampered with).
    #[error(
        "wrong passphrase: it does not unlock this repository's data key \
         (check PGSTREAM_PASSPHRASE or --passphrase-file)"
    )]
    WrongPassphrase,
    /// KDF parameters outside the accepted bounds (a corrupt or hostile config).
    #[error("invalid key-derivation parameters: {0}")]
    BadKdfParams(String),
    /// A malformed stored value (bad length, bad hex).
    #[error("invalid key material: {0}")]
    BadKeyMaterial(String),
    /// OpenSSL itself failed.
    #[error("OpenSSL error: {0}")]
    OpenSsl(#[from] ErrorStack),
    /// The AEAD library refused an operation (a key or buffer it does not accept).
    #[error("AEAD sealing failed")]
    Aead,
}

/// The AEAD used for file contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Aead {
    /// AES-256 in GCM mode, 96-bit nonce, 128-bit tag.
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// ChaCha20-Poly1305 as in RFC 8439, 96-bit nonce, 128-bit tag.
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
}

impl Aead {
    /// The id stored in encrypted file headers.
    pub fn id(self) -> u8 {
        match self {
            Aead::Aes256Gcm => 1,
            Aead::ChaCha20Poly1305 => 2,
        }
    }

    /// Inverse of [`Aead::id`].
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Aead::Aes256Gcm),
            2 => Some(Aead::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// The name used in the config file and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Aead::Aes256Gcm => "aes-256-gcm",
            Aead::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }

    fn algorithm(self) -> &'static lc::Algorithm {
        match self {
            Aead::Aes256Gcm => &lc::AES_256_GCM,
            Aead::ChaCha20Poly1305 => &lc::CHACHA20_POLY1305,
        }
    }

    /// Encrypts `plain`, appending ciphertext then the 16-byte tag to `out`.
    pub(crate) fn seal(
        self,
        key: &[u8; KEY_LEN],
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        AeadKey::new(self, key)?.seal_append(nonce, aad, plain, out)
    }

    /// Decrypts ciphertext‖tag; `None` if authentication fails.
    pub(crate) fn open(
        self,
        key: &[u8; KEY_LEN],
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        let mut plain = Vec::new();
        AeadKey::new(self, key)
            .ok()?
            .open_into(nonce, aad, sealed, &mut plain)
            .then_some(plain)
    }
}

/// A key set up once for many seal or open operations (one file's chunks).
pub(crate) struct AeadKey(LessSafeKey);

impl AeadKey {
    pub(crate) fn new(aead: Aead, key: &[u8; KEY_LEN]) -> Result<AeadKey, CryptoError> {
        let unbound = UnboundKey::new(aead.algorithm(), key).map_err(|_| CryptoError::Aead)?;
        Ok(AeadKey(LessSafeKey::new(unbound)))
    }

    /// Appends the ciphertext of `plain`, then its tag, to `out`.
    pub(crate) fn seal_append(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                lc::Nonce::assume_unique_for_key(*nonce),
                lc::Aad::from(aad),
                &mut out[start..],
            )
            .map_err(|_| CryptoError::Aead)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Authenticates and decrypts ciphertext‖tag into `plain` (replacing its contents);
    /// false if authentication fails.
    pub(crate) fn open_into(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        sealed: &[u8],
        plain: &mut Vec<u8>,
    ) -> bool {
        plain.clear();
        plain.extend_from_slice(sealed);
        let len = match self.0.open_in_place(
            lc::Nonce::assume_unique_for_key(*nonce),
            lc::Aad::from(aad),
            plain,
        ) {
            Ok(p) => p.len(),
            Err(_) => {
                plain.clear();
                return false;
            }
        };
        plain.truncate(len);
        true
    }
}

impl fmt::Display for Aead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Aead {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "aes-256-gcm" => Ok(Aead::Aes256Gcm),
            "chacha20-poly1305" => Ok(Aead::ChaCha20Poly1305),
            _ => Err(format!(
                "unknown encryption algorithm {s:?}; expected aes-256-gcm or chacha20-poly1305"
            )),
        }
    }
}

/// The `--encryption` choice: an AEAD or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// Files are stored as plain compressed streams.
    None,
    /// Files are stored in the chunked AEAD format with this cipher.
    Aead(Aead),
}

impl Default for Encryption {
    fn default() -> Self {
        Encryption::Aead(Aead::Aes256Gcm)
    }
}

impl fmt::Display for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encryption::None => f.write_str("none"),
            Encryption::Aead(a) => a.fmt(f),
        }
    }
}

impl FromStr for Encryption {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(Encryption::None);
        }
        s.parse().map(Encryption::Aead).map_err(|_| {
            format!("unknown encryption {s:?}; expected aes-256-gcm, chacha20-poly1305 or none")
        })
    }
}

/// Fills a buffer from OpenSSL's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut b = [0u8; N];
    openssl::rand::rand_bytes(&mut b)?;
    Ok(b)
}

pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], ErrorStack> {
    let pkey = PKey::hmac(key)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &pkey)?;
    for p in parts {
        signer.update(p)?;
    }
    let mut out = [0u8; 32];
    signer.sign(&mut out)?;
    Ok(out)
}

/// HKDF-SHA256 (RFC 5869) with a 32-byte output: one HMAC block, so Expand is a single step.
pub fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[u8]) -> Result<[u8; 32], CryptoError> {
    let mut prk = hmac_sha256(salt, &[ikm])?;
    let okm = hmac_sha256(&prk, &[info, &[1u8]]);
    zeroize::Zeroize::zeroize(&mut prk);
    Ok(okm?)
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = openssl::sha::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hkdf_matches_rfc5869_case_1_prefix() {
        let ikm = [0x0bu8; 22];
        let salt = hex::decode("000102030405060708090a0b0c").unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let okm = hkdf_sha256(&ikm, &salt, &info).unwrap();
        // First 32 bytes of the RFC's 42-byte OKM.
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        );
    }

    #[test]
    fn aead_round_trip_and_tamper() {
        for aead in [Aead::Aes256Gcm, Aead::ChaCha20Poly1305] {
            let key = [7u8; 32];
            let nonce = [1u8; 12];
            let mut out = Vec::new();
            aead.seal(&key, &nonce, b"aad", b"hello", &mut out).unwrap();
            assert_eq!(out.len(), 5 + TAG_LEN);
            assert_eq!(aead.open(&key, &nonce, b"aad", &out).unwrap(), b"hello");
            assert!(aead.open(&key, &nonce, b"aaX", &out).is_none());
            out[0] ^= 1;
            assert!(aead.open(&key, &nonce, b"aad", &out).is_none());
            assert!(aead.open(&key, &nonce, b"aad", &out[..3]).is_none());
        }
    }

    #[test]
    fn names_parse() {
        assert_eq!("none".parse::<Encryption>().unwrap(), Encryption::None);
        assert_eq!(
            "chacha20-poly1305".parse::<Encryption>().unwrap(),
            Encryption::Aead(Aead::ChaCha20Poly1305)
        );
        assert!("aes".parse::<Encryption>().is_err());
        assert_eq!(Encryption::default().to_string(), "aes-256-gcm");
    }
}
