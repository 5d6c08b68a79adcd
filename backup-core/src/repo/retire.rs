//! Retiring a data key (`rekey --retire-key ID`): once nothing stored under a key remains, it is
//! removed from the keyring, so whoever holds an old passphrase and an old copy of the config
//! can no longer use it for anything still in the repository (docs/format.md §3.2).
//!
//! Every object under `backups/` and `wal/` is looked at: stored files and partial segments by
//! the key id in their header (a ranged read of their first bytes), records and pins by their
//! `key_id`. Records and pins sealed with the key are sealed again with the active key (they
//! are small); any other file still written with it stops the retirement, naming it: expire the
//! backups and WAL that need the key first. No writer may run meanwhile (one that opened the
//! repository before a rotation still writes with the key it had).

use super::config::{RepoConfig, FORMAT_V1};
use super::{config_lease, keys, read_config, required, write_config, RepoError, SealKey};
use crate::catalog::lifecycle::lease_name;
use crate::catalog::{BackupRecord, Catalog, BACKUPS_DIR, RECORD_FILE};
use crate::crypto::chunked::FILE_MAGIC;
use crate::crypto::keyring::Keyring;
use crate::crypto::Secret;
use crate::expire::pin::{self, Pin, PIN_FILE};
use crate::layout::WAL_DIR;
use crate::store::lease::{LeaseHolder, LOCKS_DIR};
use crate::store::{PutMode, Store, StoreError};
use crate::wal::partial::PARTIAL_MAGIC;

/// What a retirement did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retired {
    pub key_id: u32,
    /// Objects whose header or key id was looked at.
    pub objects_checked: u64,
    /// Records and pins sealed again with the active key.
    pub resealed: Vec<String>,
}

/// Why a key cannot be retired yet.
#[derive(Debug, thiserror::Error)]
pub enum RetireError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "data key {key_id} is the active key; rotate first (pgstream rekey --rotate-data-key)"
    )]
    Active { key_id: u32 },
    #[error("the repository has no data key {key_id} (its keys: {ids})")]
    NoSuchKey { key_id: u32, ids: String },
    #[error(
        "data key {key_id} cannot be retired: {count} stored file(s) were written with it, for \
         example {examples}; expire the backups and WAL that need them first (nothing was changed)"
    )]
    StillUsed {
        key_id: u32,
        count: usize,
        examples: String,
    },
    #[error(
        "data key {key_id} cannot be retired while {holder} writes to the repository: it may \
         still write with that key; stop it (it uses the active key when started again)"
    )]
    WriterRunning { key_id: u32, holder: String },
    #[error("{name} could not be read: {reason}; nothing was changed")]
    Unreadable { name: String, reason: String },
}

/// Retires data key `key_id` of the repository in `store`.
pub fn retire_key(
    store: &dyn Store,
    passphrase: &Secret,
    key_id: u32,
) -> Result<Retired, RetireError> {
    let passphrase = required(store, Some(passphrase))?;
    let _lease = config_lease(store, "pgstream rekey --retire-key")?;
    let mut config = read_config(store)?;
    let Some(enc) = config.encryption.clone() else {
        return Err(RepoError::NotEncrypted {
            location: store.location().to_string(),
        }
        .into());
    };
    if config.format_version == FORMAT_V1 {
        return Err(RepoError::NeedsUpgrade {
            location: store.location().to_string(),
            what: "retiring a data key",
        }
        .into());
    }
    let keyring = keys::open_keyring(store, &config, &enc, &passphrase)?;
    if keyring.get(key_id).is_none() {
        let ids: Vec<String> = keyring.ids().map(|i| i.to_string()).collect();
        return Err(RetireError::NoSuchKey {
            key_id,
            ids: ids.join(", "),
        });
    }
    if keyring.active().0 == key_id {
        return Err(RetireError::Active { key_id });
    }
    refuse_running_writers(store, key_id)?;
    let scan = scan(store, key_id)?;
    if !scan.files.is_empty() {
        let examples: Vec<&str> = scan.files.iter().take(3).map(String::as_str).collect();
        return Err(RetireError::StillUsed {
            key_id,
            count: scan.files.len(),
            examples: examples.join(", "),
        });
    }
    let mut out = Retired {
        key_id,
        objects_checked: scan.checked,
        ..Retired::default()
    };
    let seal = {
        let (id, key) = keyring.active();
        SealKey { id: Some(id), key }
    };
    for name in &scan.sealed {
        reseal(store, &keyring, seal, name)?;
        out.resealed.push(name.clone());
    }
    remove_key(store, &mut config, &keyring, key_id)?;
    Ok(out)
}

/// A live receive-wal or base holds a lease; it may write with any key of its keyring.
fn refuse_running_writers(store: &dyn Store, key_id: u32) -> Result<(), RetireError> {
    let mut names = vec!["receive-wal".to_string()];
    let prefix = format!("{LOCKS_DIR}/backup.");
    names.extend(
        store
            .list(&prefix)?
            .into_iter()
            .map(|o| o.name[LOCKS_DIR.len() + 1..].to_string()),
    );
    for name in names {
        if let Some(info) = store.read_lease(&name)? {
            if info.live {
                return Err(RetireError::WriterRunning {
                    key_id,
                    holder: info.to_string(),
                });
            }
        }
    }
    Ok(())
}

struct Scan {
    checked: u64,
    /// Data files written with the key.
    files: Vec<String>,
    /// Records and pins sealed with it.
    sealed: Vec<String>,
}

fn scan(store: &dyn Store, key_id: u32) -> Result<Scan, RetireError> {
    let mut out = Scan {
        checked: 0,
        files: Vec::new(),
        sealed: Vec::new(),
    };
    for prefix in [format!("{BACKUPS_DIR}/"), format!("{WAL_DIR}/")] {
        for object in store.list(&prefix)? {
            out.checked += 1;
            let name = object.name;
            if name.ends_with(&format!("/{RECORD_FILE}")) || name.ends_with(&format!("/{PIN_FILE}"))
            {
                if sealed_key(store, &name)? == Some(key_id) {
                    out.sealed.push(name);
                }
            } else if header_key(store, &name)? == Some(key_id) {
                out.files.push(name);
            }
        }
    }
    Ok(out)
}

/// The key id a record or pin names (absent: 0); `None` for an unsealed (unencrypted) one.
fn sealed_key(store: &dyn Store, name: &str) -> Result<Option<u32>, RetireError> {
    let bytes = crate::store::get(store, name, 16 << 20)?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| RetireError::Unreadable {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
    if v.get("mac").is_none_or(|m| m.is_null()) {
        return Ok(None);
    }
    Ok(Some(
        v.get("key_id").and_then(|k| k.as_u64()).unwrap_or(0) as u32
    ))
}

/// The key id in an encrypted file's or a partial segment's header (format 1: 0); `None` for
/// anything else.
fn header_key(store: &dyn Store, name: &str) -> Result<Option<u32>, RetireError> {
    let head = store.read_range(name, 0, 32)?;
    let version = |h: &[u8]| h.get(8..10).map(|v| u16::from_be_bytes([v[0], v[1]]));
    let be32 = |h: &[u8], at: usize| {
        h.get(at..at + 4)
            .map(|v| u32::from_be_bytes(v.try_into().expect("4 bytes")))
    };
    if head.starts_with(FILE_MAGIC) {
        return Ok(match version(&head) {
            Some(1) => Some(0),
            Some(_) => be32(&head, 16),
            None => None,
        });
    }
    if head.starts_with(PARTIAL_MAGIC) {
        // A partial's cipher byte 0 means unencrypted: no key at all.
        if head.get(10) == Some(&0) {
            return Ok(None);
        }
        return Ok(match version(&head) {
            Some(1) => Some(0),
            Some(_) => be32(&head, 28),
            None => None,
        });
    }
    Ok(None)
}

/// Seals a record or pin again with the active key, under its backup's lease.
fn reseal(
    store: &dyn Store,
    keyring: &Keyring,
    seal: SealKey<'_>,
    name: &str,
) -> Result<(), RetireError> {
    let id = name
        .strip_prefix(&format!("{BACKUPS_DIR}/"))
        .and_then(|r| r.split('/').next())
        .unwrap_or_default()
        .to_string();
    let _lease = store
        .acquire_lease(
            &lease_name(&id),
            &LeaseHolder::this_process("pgstream rekey --retire-key"),
        )
        .map_err(RepoError::from)?;
    let unreadable = |reason: String| RetireError::Unreadable {
        name: name.to_string(),
        reason,
    };
    let bytes = if name.ends_with(RECORD_FILE) {
        let mut record: BackupRecord = Catalog::with_keys(store, keyring)
            .read(&id)
            .map_err(|e| unreadable(e.to_string()))?;
        record
            .seal(Some(seal))
            .map_err(|e| unreadable(e.to_string()))?;
        serde_json::to_vec_pretty(&record).map_err(|e| unreadable(e.to_string()))?
    } else {
        let old: Pin = pin::read_pin(store, &id, Some(keyring))
            .map_err(|e| unreadable(e.to_string()))?
            .ok_or_else(|| unreadable("it disappeared".into()))?;
        let p = pin::seal_again(&old, seal).map_err(unreadable)?;
        serde_json::to_vec_pretty(&p).map_err(|e| unreadable(e.to_string()))?
    };
    let mut bytes = bytes;
    bytes.push(b'\n');
    store.put(name, &bytes, PutMode::Replace)?;
    Ok(())
}

fn remove_key(
    store: &dyn Store,
    config: &mut RepoConfig,
    keyring: &Keyring,
    key_id: u32,
) -> Result<(), RetireError> {
    if let Some(enc) = config.encryption.as_mut() {
        enc.keys.retain(|k| k.id != key_id);
    }
    keys::seal(store, config, keyring)?;
    write_config(store, config, false)?;
    Ok(())
}
