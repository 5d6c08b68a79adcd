//! Passphrase → key-encryption key with scrypt. The parameters and salt are stored in the
//! repository config; they are bounds-checked on load so a tampered config cannot make us allocate
//! or spin without limit.

use super::{random_bytes, CryptoError, DataKey, Secret, KEY_LEN};
use serde::{Deserialize, Serialize};

/// Largest scrypt working set we accept (128·r·N bytes). pgstream promises a 64 MiB peak RSS, and
/// the KDF runs in the same process as the backup, so it must fit in that budget too.
pub const MAX_SCRYPT_MEMORY: u64 = 64 * 1024 * 1024;
const MIN_LOG2_N: u32 = 10;
const MAX_LOG2_N: u32 = 20;
const MAX_R: u32 = 32;
const MAX_P: u32 = 16;
/// Salt length for new configs; loaded salts may be 16..=64 bytes.
pub const SALT_LEN: usize = 32;

/// scrypt parameters as stored in the config (`"kdf"` object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    /// Always `"scrypt"` in format version 1.
    pub algorithm: String,
    /// CPU/memory cost N (a power of two).
    pub n: u64,
    /// Block size r.
    pub r: u32,
    /// Parallelism p (computed sequentially: more time, no more memory).
    pub p: u32,
    /// Random salt, hex.
    pub salt: String,
}

impl KdfParams {
    /// Defaults: N=2^15, r=8, p=1 — scrypt's usual interactive cost: a 32 MiB working set and
    /// about 70 ms of one core, paid by every command that opens the repository (p=4 cost a
    /// quarter of a second per command; see docs/format.md 3.1).
    pub fn generate_default() -> Result<Self, CryptoError> {
        Self::generate(15, 8, 1)
    }

    /// Fresh salt with the given cost; fails if the cost is outside the accepted bounds.
    pub fn generate(log2_n: u32, r: u32, p: u32) -> Result<Self, CryptoError> {
        let params = KdfParams {
            algorithm: "scrypt".into(),
            n: 1u64.checked_shl(log2_n).unwrap_or(0),
            r,
            p,
            salt: hex::encode(random_bytes::<SALT_LEN>()?),
        };
        params.validate()?;
        Ok(params)
    }

    /// Same cost, new salt (used by rekey).
    pub fn with_fresh_salt(&self) -> Result<Self, CryptoError> {
        let mut p = self.clone();
        p.salt = hex::encode(random_bytes::<SALT_LEN>()?);
        p.validate()?;
        Ok(p)
    }

    fn scrypt_memory(&self) -> u64 {
        // OpenSSL's accounting: V is 128·r·(N+2) bytes, B is 128·r·p bytes.
        128 * u64::from(self.r) * (self.n + 2) + 128 * u64::from(self.r) * u64::from(self.p)
    }

    /// Checks algorithm, bounds and salt; returns the decoded salt.
    pub fn validate(&self) -> Result<Vec<u8>, CryptoError> {
        let bad = |m: String| Err(CryptoError::BadKdfParams(m));
        if self.algorithm != "scrypt" {
            return bad(format!(
                "algorithm {:?} is not supported (only scrypt)",
                self.algorithm
            ));
        }
        if !self.n.is_power_of_two() || self.n < (1 << MIN_LOG2_N) || self.n > (1 << MAX_LOG2_N) {
            return bad(format!(
                "scrypt N={} must be a power of two between 2^{MIN_LOG2_N} and 2^{MAX_LOG2_N}",
                self.n
            ));
        }
        if self.r == 0 || self.r > MAX_R || self.p == 0 || self.p > MAX_P {
            return bad(format!(
                "scrypt r={} p={} out of range (1..={MAX_R}, 1..={MAX_P})",
                self.r, self.p
            ));
        }
        if 128 * u64::from(self.r) * self.n > MAX_SCRYPT_MEMORY {
            return bad(format!(
                "scrypt N={} r={} needs {} MiB, more than the {} MiB limit",
                self.n,
                self.r,
                (128 * u64::from(self.r) * self.n) >> 20,
                MAX_SCRYPT_MEMORY >> 20
            ));
        }
        let salt = hex::decode(&self.salt)
            .map_err(|e| CryptoError::BadKdfParams(format!("salt is not hex: {e}")))?;
        if !(16..=64).contains(&salt.len()) {
            return bad(format!("salt is {} bytes; expected 16 to 64", salt.len()));
        }
        Ok(salt)
    }

    /// Derives the 32-byte key-encryption key from the passphrase.
    pub fn derive(&self, passphrase: &Secret) -> Result<DataKey, CryptoError> {
        let salt = self.validate()?;
        let mut key = [0u8; KEY_LEN];
        openssl::pkcs5::scrypt(
            passphrase.expose(),
            &salt,
            self.n,
            u64::from(self.r),
            u64::from(self.p),
            // Headroom over the exact need so OpenSSL's own accounting never refuses valid params.
            self.scrypt_memory() + 1024 * 1024,
            &mut key,
        )?;
        Ok(DataKey::from_bytes(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_is_deterministic_and_salted() {
        let a = KdfParams::generate(10, 8, 1).unwrap();
        let pw = Secret::from("pw");
        assert_eq!(
            a.derive(&pw).unwrap().bytes(),
            a.derive(&pw).unwrap().bytes()
        );
        let b = a.with_fresh_salt().unwrap();
        assert_ne!(
            a.derive(&pw).unwrap().bytes(),
            b.derive(&pw).unwrap().bytes()
        );
    }

    #[test]
    fn rfc7914_vector() {
        // RFC 7914 section 12, second vector (first 32 bytes of the 64-byte output).
        let p = KdfParams {
            algorithm: "scrypt".into(),
            n: 1024,
            r: 8,
            p: 16,
            salt: hex::encode(b"NaCl"),
        };
        // The 4-byte salt is below our stored-salt minimum, so call scrypt the way derive does.
        let mut key = [0u8; 32];
        openssl::pkcs5::scrypt(
            b"password",
            b"NaCl",
            p.n,
            8,
            16,
            p.scrypt_memory() + (1 << 20),
            &mut key,
        )
        .unwrap();
        assert_eq!(
            hex::encode(key),
            "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
        );
    }

    #[test]
    fn default_fits_memory_budget_and_bounds_refuse_huge_costs() {
        let d = KdfParams::generate_default().unwrap();
        assert!(d.scrypt_memory() <= MAX_SCRYPT_MEMORY);
        let mut p = d.clone();
        p.n = 1 << 30;
        assert!(matches!(p.validate(), Err(CryptoError::BadKdfParams(_))));
        p.n = (1 << 16) + 1;
        assert!(p.validate().is_err());
        p.n = 1 << 20;
        p.r = 32; // 4 GiB
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("MiB"), "{e}");
        p.r = 8;
        p.n = 1 << 16;
        p.p = 1000;
        assert!(p.validate().is_err());
        let mut q = d.clone();
        q.salt = "zz".into();
        assert!(q.validate().is_err());
        q.algorithm = "argon2id".into();
        assert!(q.validate().unwrap_err().to_string().contains("argon2id"));
    }
}
