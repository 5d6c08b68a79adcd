//! A repository's key material: making it at `init`, unwrapping it with the passphrase at
//! open, rewrapping it (`rekey`), adding a data key (`rekey --rotate-data-key`), and the MAC
//! of a format 2 configuration (docs/format.md §3).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::config::{
    mac_body, ConfigMac, EncryptionConfig, RepoConfig, StoredKey, CONFIG_FILE, FORMAT_V1, MAX_KEYS,
};
use super::{KdfCost, RepoError};
use crate::crypto::kdf::KdfParams;
use crate::crypto::keyring::Keyring;
use crate::crypto::{keywrap, metamac, CryptoError, DataKey, Secret};
use crate::store::Store;

/// The key-wrap parameters of `config`: format 1 binds no key id.
fn wrap_id(config: &RepoConfig, id: u32) -> Option<u32> {
    (config.format_version > FORMAT_V1).then_some(id)
}

fn repo_id(store: &dyn Store, config: &RepoConfig) -> Result<[u8; 16], RepoError> {
    config
        .repository_id_bytes()
        .map_err(|detail| RepoError::BadConfig {
            location: store.describe(CONFIG_FILE),
            detail,
        })
}

fn key_err(store: &dyn Store) -> impl Fn(CryptoError) -> RepoError + '_ {
    move |source| RepoError::Key {
        location: store.location().to_string(),
        source,
    }
}

/// Unwraps every key of `config`'s keyring with `passphrase`, and checks the configuration's
/// MAC (format 2): a wrong passphrase, or a configuration someone without it altered, fails.
pub(super) fn open_keyring(
    store: &dyn Store,
    config: &RepoConfig,
    enc: &EncryptionConfig,
    passphrase: &Secret,
) -> Result<Keyring, RepoError> {
    let id = repo_id(store, config)?;
    let kek = enc.kdf.derive(passphrase).map_err(key_err(store))?;
    let mut keys = BTreeMap::new();
    for k in &enc.keys {
        let key = keywrap::unwrap(
            &kek,
            &k.wrap,
            &id,
            config.format_version,
            wrap_id(config, k.id),
        )
        .map_err(key_err(store))?;
        keys.insert(k.id, Arc::new(key));
    }
    let keyring = Keyring::new(keys, enc.active_key).ok_or_else(|| RepoError::BadConfig {
        location: store.describe(CONFIG_FILE),
        detail: "active_key names no key of the keyring".into(),
    })?;
    if config.format_version > FORMAT_V1 {
        verify_mac(store, config, &keyring)?;
    }
    Ok(keyring)
}

/// Checks a format 2 configuration's MAC with `keyring`.
fn verify_mac(store: &dyn Store, config: &RepoConfig, keyring: &Keyring) -> Result<(), RepoError> {
    let altered = |why: &str| RepoError::BadConfig {
        location: store.describe(CONFIG_FILE),
        detail: format!(
            "{why}: the configuration was altered by someone without the passphrase, or is \
             damaged; do not write to this repository until you know why"
        ),
    };
    let Some(mac) = &config.mac else {
        return Err(altered("it has no MAC"));
    };
    let key = keyring
        .get(mac.key_id)
        .ok_or_else(|| altered("its MAC names a key it does not hold"))?;
    if !metamac::verify(key, metamac::CONFIG, &mac_body(config), &mac.hmac)
        .map_err(key_err(store))?
    {
        return Err(altered("its MAC does not verify"));
    }
    Ok(())
}

/// Checks a configuration read again while the repository is open (another process may have
/// rewritten it: a rekey) against the keys it was opened with.
pub(super) fn check_fresh(
    store: &dyn Store,
    fresh: &RepoConfig,
    keyring: &Keyring,
) -> Result<(), RepoError> {
    if fresh.format_version == FORMAT_V1 {
        return Ok(());
    }
    let unknown = fresh
        .encryption
        .as_ref()
        .is_some_and(|e| e.keys.iter().any(|k| keyring.get(k.id).is_none()));
    if unknown {
        return Err(RepoError::BadConfig {
            location: store.describe(CONFIG_FILE),
            detail: "its data keys changed while it was open (rekey --rotate-data-key): run \
                     the command again"
                .into(),
        });
    }
    verify_mac(store, fresh, keyring)
}

/// Sets the MAC of a format 2 encrypted configuration (under the active key).
pub(super) fn seal(
    store: &dyn Store,
    config: &mut RepoConfig,
    keyring: &Keyring,
) -> Result<(), RepoError> {
    if config.format_version == FORMAT_V1 || config.encryption.is_none() {
        config.mac = None;
        return Ok(());
    }
    config.mac = None;
    let active = config.encryption.as_ref().map_or(0, |e| e.active_key);
    let key = keyring.get(active).ok_or_else(|| RepoError::BadConfig {
        location: store.describe(CONFIG_FILE),
        detail: "its active key is not one this process holds: run the command again".into(),
    })?;
    let id = active;
    let hmac = metamac::mac(key, metamac::CONFIG, &mac_body(config)).map_err(key_err(store))?;
    config.mac = Some(ConfigMac { key_id: id, hmac });
    Ok(())
}

/// The key material of a new repository: one data key, id 0, wrapped under `passphrase`.
pub(super) fn generate(
    store: &dyn Store,
    config: &RepoConfig,
    aead: crate::crypto::Aead,
    chunk_size: u32,
    cost: KdfCost,
    passphrase: &Secret,
    now: u64,
) -> Result<(EncryptionConfig, Keyring), RepoError> {
    let id = repo_id(store, config)?;
    let kdf = KdfParams::generate(cost.log2_n, cost.r, cost.p)
        .map_err(|e| RepoError::Invalid(e.to_string()))?;
    let data_key = keywrap::generate_data_key().map_err(key_err(store))?;
    let kek = kdf.derive(passphrase).map_err(key_err(store))?;
    let wrap = keywrap::wrap(
        &kek,
        &data_key,
        &id,
        config.format_version,
        wrap_id(config, 0),
    )
    .map_err(key_err(store))?;
    let enc = EncryptionConfig {
        algorithm: aead,
        chunk_size,
        kdf,
        keys: vec![StoredKey {
            id: 0,
            created_unix: now,
            wrap,
        }],
        active_key: 0,
    };
    Ok((enc, Keyring::single(data_key)))
}

/// Rewraps every key of `keyring` under `new` (fresh salt; `cost` or the current scrypt cost)
/// into `config`, as format `config.format_version` binds them. With `add` the keyring first
/// gets a new random key, which becomes the active one.
pub(super) fn rewrap(
    store: &dyn Store,
    config: &mut RepoConfig,
    keyring: Keyring,
    new: &Secret,
    cost: Option<KdfCost>,
    add: Option<u64>,
) -> Result<Keyring, RepoError> {
    let id = repo_id(store, config)?;
    let enc = config
        .encryption
        .as_mut()
        .ok_or_else(|| RepoError::NotEncrypted {
            location: store.location().to_string(),
        })?;
    let mut keys: BTreeMap<u32, Arc<DataKey>> = BTreeMap::new();
    let mut created: BTreeMap<u32, u64> = enc.keys.iter().map(|k| (k.id, k.created_unix)).collect();
    for kid in keyring.ids() {
        let key = keyring.get(kid).expect("an id of the keyring");
        keys.insert(kid, Arc::new(DataKey::from_bytes(*key.bytes())));
    }
    let mut active = keyring.active().0;
    if let Some(now) = add {
        if keys.len() >= MAX_KEYS {
            return Err(RepoError::Invalid(format!(
                "the keyring already holds {MAX_KEYS} keys: retire old ones first \
                 (pgstream rekey --retire-key ID)"
            )));
        }
        let next = keys.keys().max().map_or(0, |m| m + 1);
        keys.insert(
            next,
            Arc::new(keywrap::generate_data_key().map_err(key_err(store))?),
        );
        created.insert(next, now);
        active = next;
    }
    let kdf = match cost {
        None => enc.kdf.with_fresh_salt(),
        Some(c) => KdfParams::generate(c.log2_n, c.r, c.p),
    }
    .map_err(|e| RepoError::Invalid(e.to_string()))?;
    let kek = kdf.derive(new).map_err(key_err(store))?;
    let version = config.format_version;
    let bind = |kid: u32| (version > FORMAT_V1).then_some(kid);
    let mut stored = Vec::new();
    for (&kid, key) in &keys {
        stored.push(StoredKey {
            id: kid,
            created_unix: created.get(&kid).copied().unwrap_or(config.created_unix),
            wrap: keywrap::wrap(&kek, key, &id, version, bind(kid)).map_err(key_err(store))?,
        });
    }
    enc.kdf = kdf;
    enc.keys = stored;
    enc.active_key = active;
    Ok(Keyring::new(keys, active).expect("the active key is in the keyring"))
}
