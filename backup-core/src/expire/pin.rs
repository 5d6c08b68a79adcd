//! Pins (`pgstream keep`): `backups/<id>/pin.json` marks a backup that `expire` never deletes
//! (docs/format.md §8.6). The file is sealed like a catalog record: a SHA-256 checksum, and in
//! an encrypted repository an HMAC under a key derived from the data key, over the pin with the
//! backup's id inside, so a damaged, forged or copied pin is detected. Removing the file unpins
//! (that cannot be detected, but whoever can remove files can remove backups too).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::PinError;
use crate::catalog::{rfc3339, BACKUPS_DIR};
use crate::crypto::keyring::Keyring;
use crate::crypto::{self, metamac};
pub use crate::index::PIN_FILE;
use crate::repo::SealKey;
use crate::store::{get_if_exists, PutMode, Store};

/// Largest pin read back (a pin is a few hundred bytes).
const MAX_PIN_BYTES: u64 = 64 * 1024;
/// Version of the pin format.
pub const PIN_FORMAT: u32 = 1;

/// The content of a pin file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub format: u32,
    /// The backup it pins (must be the directory it is in).
    pub id: String,
    /// When it was pinned, RFC 3339 UTC.
    pub pinned_time: String,
    /// SHA-256 (hex) of the pin serialized without `checksum` and `mac`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Encrypted repositories: HMAC-SHA256 (hex) of the same bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The data key of the MAC (repository format 2); absent means key 0. Covered by the MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<u32>,
}

impl Pin {
    fn sealed_body(&self) -> Vec<u8> {
        let mut body = self.clone();
        body.checksum = None;
        body.mac = None;
        serde_json::to_vec(&body).expect("a pin always serializes")
    }

    /// A sealed pin of backup `id`.
    fn new(id: &str, now: SystemTime, key: Option<SealKey<'_>>) -> Result<Pin, String> {
        let mut pin = Pin {
            format: PIN_FORMAT,
            id: id.to_string(),
            pinned_time: rfc3339(now),
            checksum: None,
            mac: None,
            key_id: key.and_then(|k| k.id),
        };
        let body = pin.sealed_body();
        pin.checksum = Some(hex::encode(crypto::sha256(&[&body])));
        pin.mac = key
            .map(|k| metamac::mac(k.key, metamac::PIN, &body))
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(pin)
    }

    /// Why this pin, read from backup `id`'s directory, cannot be trusted, if it cannot.
    fn check(&self, id: &str, keys: Option<&Keyring>) -> Result<(), String> {
        if self.format != PIN_FORMAT {
            return Err(format!(
                "pin format {} is not supported by this pgstream (it reads format {PIN_FORMAT}); \
                 upgrade pgstream",
                self.format
            ));
        }
        let body = self.sealed_body();
        match &self.checksum {
            Some(c) if *c == hex::encode(crypto::sha256(&[&body])) => {}
            Some(_) => return Err("its checksum does not match its contents".into()),
            None => return Err("it has no checksum".into()),
        }
        if self.id != id {
            return Err(format!("it pins backup {:?}, not this one", self.id));
        }
        if let Some(keys) = keys {
            let Some(mac) = &self.mac else {
                return Err("it has no MAC, but the repository is encrypted".into());
            };
            let key_id = self.key_id.unwrap_or(0);
            let key = keys.get(key_id).ok_or_else(|| {
                format!("its MAC names data key {key_id}, which this repository does not hold")
            })?;
            if !metamac::verify(key, metamac::PIN, &body, mac).map_err(|e| e.to_string())? {
                return Err("its MAC does not verify with this repository's key".into());
            }
        }
        Ok(())
    }
}

/// `pin` sealed again with `key` (same backup, same time): `rekey --retire-key`.
pub(crate) fn seal_again(pin: &Pin, key: SealKey<'_>) -> Result<Pin, String> {
    let mut p = Pin::new(&pin.id, SystemTime::UNIX_EPOCH, Some(key))?;
    p.pinned_time = pin.pinned_time.clone();
    let body = p.sealed_body();
    p.checksum = Some(hex::encode(crypto::sha256(&[&body])));
    p.mac = Some(metamac::mac(key.key, metamac::PIN, &body).map_err(|e| e.to_string())?);
    Ok(p)
}

/// `backups/<id>/pin.json`: the stored name of backup `id`'s pin.
pub fn pin_name(id: &str) -> String {
    format!("{BACKUPS_DIR}/{id}/{PIN_FILE}")
}

/// The pin of backup `id`, if it has one. `key` is the repository's data key (`None`: the MAC
/// is not checked, as for an unencrypted repository or a caller without the passphrase).
pub fn read_pin(
    store: &dyn Store,
    id: &str,
    key: Option<&Keyring>,
) -> Result<Option<Pin>, PinError> {
    let name = pin_name(id);
    let path = store.describe(&name);
    let Some(bytes) = get_if_exists(store, &name, MAX_PIN_BYTES)? else {
        return Ok(None);
    };
    let damaged = |reason: String| PinError::Damaged {
        path: path.clone(),
        id: id.to_string(),
        reason,
    };
    let pin: Pin = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    pin.check(id, key).map_err(damaged)?;
    Ok(Some(pin))
}

/// Whether backup `id` is pinned, checking the pin's checksum and id but not its MAC (no
/// passphrase needed: for `pgstream list`). A damaged pin is an error, not a guess.
pub fn is_pinned(store: &dyn Store, id: &str) -> Result<bool, PinError> {
    read_pin(store, id, None).map(|p| p.is_some())
}

/// Writes a new pin for backup `id` durably, replacing any pin it had.
pub(super) fn write_pin(
    store: &dyn Store,
    id: &str,
    now: SystemTime,
    key: Option<SealKey<'_>>,
) -> Result<Pin, PinError> {
    let name = pin_name(id);
    let pin = Pin::new(id, now, key).map_err(|reason| PinError::Damaged {
        path: store.describe(&name),
        id: id.to_string(),
        reason: format!("sealing it failed: {reason}"),
    })?;
    let mut bytes = serde_json::to_vec_pretty(&pin).expect("a pin always serializes");
    bytes.push(b'\n');
    store.put(&name, &bytes, PutMode::Replace)?;
    Ok(pin)
}

/// Removes backup `id`'s pin durably; `false` when it had none.
pub(super) fn remove_pin(store: &dyn Store, id: &str) -> Result<bool, PinError> {
    let name = pin_name(id);
    if store.head(&name)?.is_none() {
        return Ok(false);
    }
    store.delete(&[name])?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mem::MemStore;

    fn repo_with_backup(id: &str) -> MemStore {
        let store = MemStore::default();
        store
            .put(
                &format!("{BACKUPS_DIR}/{id}/backup.json"),
                b"{}",
                PutMode::Create,
            )
            .unwrap();
        store
    }

    fn key(byte: u8) -> Keyring {
        Keyring::single(crate::crypto::DataKey::from_bytes([byte; 32]))
    }

    fn seal(keys: &Keyring) -> SealKey<'_> {
        SealKey {
            id: None,
            key: keys.active().1,
        }
    }

    const ID: &str = "20260101T000000Z";

    #[test]
    fn a_pin_round_trips_and_is_removed() {
        let s = repo_with_backup(ID);
        assert!(!is_pinned(&s, ID).unwrap());
        let k = key(7);
        let pin = write_pin(&s, ID, SystemTime::UNIX_EPOCH, Some(seal(&k))).unwrap();
        assert_eq!(pin.pinned_time, "1970-01-01T00:00:00Z");
        assert_eq!(read_pin(&s, ID, Some(&k)).unwrap(), Some(pin));
        assert!(is_pinned(&s, ID).unwrap());
        assert!(remove_pin(&s, ID).unwrap());
        assert!(!remove_pin(&s, ID).unwrap());
        assert!(!is_pinned(&s, ID).unwrap());
    }

    #[test]
    fn an_altered_pin_is_damaged() {
        let s = repo_with_backup(ID);
        write_pin(&s, ID, SystemTime::UNIX_EPOCH, None).unwrap();
        let text = String::from_utf8(s.bytes(&pin_name(ID)).unwrap()).unwrap();
        s.overwrite(&pin_name(ID), text.replace("1970", "1971").into_bytes());
        let err = is_pinned(&s, ID).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        s.overwrite(&pin_name(ID), b"{not json".to_vec());
        assert!(matches!(is_pinned(&s, ID), Err(PinError::Damaged { .. })));
    }

    #[test]
    fn a_pin_copied_from_another_backup_is_damaged() {
        let other = "20260102T000000Z";
        let s = repo_with_backup(ID);
        write_pin(&s, other, SystemTime::UNIX_EPOCH, None).unwrap();
        s.overwrite(&pin_name(ID), s.bytes(&pin_name(other)).unwrap());
        let err = is_pinned(&s, ID).unwrap_err();
        assert!(err.to_string().contains("not this one"), "{err}");
    }

    #[test]
    fn a_pin_sealed_without_the_key_fails_its_mac_check() {
        let s = repo_with_backup(ID);
        // Someone without the key writes a pin with a valid checksum.
        write_pin(&s, ID, SystemTime::UNIX_EPOCH, None).unwrap();
        assert!(is_pinned(&s, ID).unwrap());
        let err = read_pin(&s, ID, Some(&key(1))).unwrap_err();
        assert!(err.to_string().contains("no MAC"), "{err}");
        write_pin(&s, ID, SystemTime::UNIX_EPOCH, Some(seal(&key(2)))).unwrap();
        let err = read_pin(&s, ID, Some(&key(1))).unwrap_err();
        assert!(err.to_string().contains("MAC does not verify"), "{err}");
    }
}
