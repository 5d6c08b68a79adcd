//! A repository's data keys once unwrapped: every key a stored file, partial segment, record or
//! pin may have been written under, by id, and the active one new writes use (docs/format.md
//! §3.2). A repository of format version 1 has one key, id 0; `rekey --rotate-data-key` adds one.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::DataKey;

/// The unwrapped data keys of a repository.
#[derive(Clone)]
pub struct Keyring {
    keys: BTreeMap<u32, Arc<DataKey>>,
    active: u32,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish()
    }
}

impl Keyring {
    /// A keyring of one key, id 0 (format version 1, and tests).
    pub fn single(key: DataKey) -> Keyring {
        Keyring {
            keys: BTreeMap::from([(0, Arc::new(key))]),
            active: 0,
        }
    }

    /// A keyring of `keys`; `active` must be one of them.
    pub fn new(keys: BTreeMap<u32, Arc<DataKey>>, active: u32) -> Option<Keyring> {
        keys.contains_key(&active)
            .then_some(Keyring { keys, active })
    }

    /// The id and key new writes use.
    pub fn active(&self) -> (u32, &DataKey) {
        (self.active, &self.keys[&self.active])
    }

    /// Key `id`, if the keyring has it (a retired key is gone).
    pub fn get(&self, id: u32) -> Option<&DataKey> {
        self.keys.get(&id).map(|k| k.as_ref())
    }

    /// Every key id, ascending.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }
}
