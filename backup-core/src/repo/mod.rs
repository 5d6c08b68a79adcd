//! A repository: create it (`init`), open it with its passphrase, change the passphrase
//! (`rekey`, rewrapping the data key only), bind it to one cluster, and create or open its files
//! through the sink pipeline, all over its storage port ([`crate::store`]). Layout and formats:
//! docs/format.md.

pub mod config;
mod keys;
pub mod passphrase;
pub mod retire;

use crate::catalog::Catalog;
use crate::compress::Compression;
use crate::crypto::chunked::{DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use crate::crypto::keyring::Keyring;
use crate::crypto::{random_bytes, Aead, CryptoError, DataKey, Encryption, Secret};
use crate::file_error::FileError;
use crate::sink::{open_reader, FileCodec, FileEncryption, FileReader, FileSink, SinkError};
use crate::store::lease::{self, LeaseGuard, LeaseHolder};
use crate::store::{PutMode, RepoLocation, SharedStore, Store, StoreError};
use config::{ClusterIdentity, DecodeError, RepoConfig, CONFIG_FILE, FORMAT_V1, FORMAT_VERSION};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// scrypt cost for a new repository or a rekey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfCost {
    /// log2 of N.
    pub log2_n: u32,
    /// r.
    pub r: u32,
    /// p.
    pub p: u32,
}

impl Default for KdfCost {
    /// N=2^15, r=8, p=1 (see `KdfParams::generate_default`).
    fn default() -> Self {
        KdfCost {
            log2_n: 15,
            r: 8,
            p: 1,
        }
    }
}

/// Choices for `pgstream init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// Compression of new files (default lz4).
    pub compression: Compression,
    /// Encryption (default AES-256-GCM).
    pub encryption: Encryption,
    /// scrypt cost.
    pub kdf_cost: KdfCost,
    /// Plaintext bytes per encrypted chunk.
    pub chunk_size: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            compression: Compression::default(),
            encryption: Encryption::default(),
            kdf_cost: KdfCost::default(),
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

/// Repository-level failures. `location` is the repository as the user named it (a path or
/// a URL).
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The storage port failed (I/O, a lease held by another process, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `init` on a place with content.
    #[error("{location} is not empty (it contains {entry:?}); choose a new or empty directory")]
    NotEmpty {
        /// The repository.
        location: String,
        /// One of its entries.
        entry: String,
    },
    /// `init` on an existing repository.
    #[error("{location} already holds a pgstream repository (id {id}); nothing was changed")]
    AlreadyRepository {
        /// The repository.
        location: String,
        /// Its repository id.
        id: String,
    },
    /// `open` on a place without a config.
    #[error("{location} is not a pgstream repository (no {CONFIG_FILE}); create one with `pgstream init --repo {location}`")]
    NotRepository {
        /// The repository.
        location: String,
    },
    /// The config file is damaged or invalid.
    #[error("{location}: invalid repository config: {detail}")]
    BadConfig {
        /// The config file.
        location: String,
        /// What is wrong.
        detail: String,
    },
    /// The config has a newer format version.
    #[error("{location} has repository format version {version}; this pgstream supports version {FORMAT_VERSION}; upgrade pgstream")]
    UnsupportedVersion {
        /// The config file.
        location: String,
        /// Version found.
        version: u32,
    },
    /// Encrypted repository, no passphrase.
    #[error("repository {location} is encrypted: {source}")]
    Passphrase {
        /// The repository.
        location: String,
        /// Why no passphrase.
        #[source]
        source: passphrase::PassphraseError,
    },
    /// The passphrase does not unwrap the data key.
    #[error("repository {location}: {source}")]
    Key {
        /// The repository.
        location: String,
        /// `WrongPassphrase` or another key failure.
        #[source]
        source: CryptoError,
    },
    /// A passphrase was given for a repository whose configuration says it is not encrypted.
    #[error(
        "repository {location} says it is not encrypted, but a passphrase was given \
         (PGSTREAM_PASSPHRASE or --passphrase-file): if it was created with --encryption none, \
         run without a passphrase; if it was created encrypted, its configuration was altered: \
         write nothing to it and restore pgstream.repo from a copy you trust"
    )]
    ClaimsUnencrypted {
        /// The repository.
        location: String,
    },
    /// An operation that needs repository format 2 on a format 1 repository.
    #[error(
        "repository {location} has format version 1; {what} needs version 2: run \
         `pgstream upgrade --repo {location}` first"
    )]
    NeedsUpgrade {
        /// The repository.
        location: String,
        /// What was asked.
        what: &'static str,
    },
    /// `rekey` on an unencrypted repository.
    #[error("repository {location} is not encrypted; there is no passphrase to change")]
    NotEncrypted {
        /// The repository.
        location: String,
    },
    /// A backup from another cluster.
    #[error(
        "repository {location} belongs to the cluster with {bound}, but this server is the \
         cluster with {offered}; use a separate repository for each cluster"
    )]
    ClusterMismatch {
        /// The repository.
        location: String,
        /// The recorded cluster.
        bound: ClusterIdentity,
        /// The cluster offered now.
        offered: ClusterIdentity,
    },
    /// An invalid option or argument.
    #[error("{0}")]
    Invalid(String),
    /// Writing a file failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Reading a file failed.
    #[error(transparent)]
    File(#[from] FileError),
}

impl RepoError {
    /// Whether this is a wrong-passphrase failure.
    pub fn is_wrong_passphrase(&self) -> bool {
        matches!(
            self,
            RepoError::Key {
                source: CryptoError::WrongPassphrase,
                ..
            }
        )
    }
}

/// What `rekey` changes besides the passphrase.
#[derive(Debug, Clone, Copy, Default)]
pub struct RekeyOptions {
    /// A new scrypt cost (`None` keeps the current one).
    pub cost: Option<KdfCost>,
    /// Add a data key and write every new file with it (format 2).
    pub rotate: bool,
}

/// A data key that seals records and pins, with the id they record (`None`: format 1).
#[derive(Clone, Copy)]
pub struct SealKey<'a> {
    pub id: Option<u32>,
    pub key: &'a DataKey,
}

impl std::fmt::Debug for SealKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Whether `bind_cluster` recorded a new binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindOutcome {
    /// The repository was unbound and is now bound to this cluster.
    Bound,
    /// The repository was already bound to this cluster.
    AlreadyBound,
}

/// An open repository (with its data key, if encrypted), over its storage port.
#[derive(Debug)]
pub struct Repository {
    store: SharedStore,
    config: RepoConfig,
    codec: FileCodec,
}

fn required(store: &dyn Store, passphrase: Option<&Secret>) -> Result<Secret, RepoError> {
    let missing = |source| RepoError::Passphrase {
        location: store.location().to_string(),
        source,
    };
    let p = passphrase.ok_or_else(|| missing(passphrase::PassphraseError::Missing))?;
    if p.is_empty() {
        return Err(missing(passphrase::PassphraseError::Empty {
            from: "the caller".into(),
        }));
    }
    Ok(p.clone())
}

/// The configuration of the repository in `store`, read without its passphrase (for commands
/// that only look at names and records).
pub fn read_config(store: &dyn Store) -> Result<RepoConfig, RepoError> {
    let location = || store.describe(CONFIG_FILE);
    let bytes = match crate::store::get(store, CONFIG_FILE, MAX_CONFIG_BYTES) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => {
            return Err(RepoError::NotRepository {
                location: store.location().to_string(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    config::decode(&bytes).map_err(|e| match e {
        DecodeError::BadMagic => RepoError::BadConfig {
            location: location(),
            detail: "bad magic: not a pgstream repository config".into(),
        },
        DecodeError::UnsupportedVersion(version) => RepoError::UnsupportedVersion {
            location: location(),
            version,
        },
        DecodeError::Invalid(detail) => RepoError::BadConfig {
            location: location(),
            detail,
        },
    })
}

/// Largest config file read (a config is a few hundred bytes; see `config::decode`).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024 + 64;

fn write_config(store: &dyn Store, config: &RepoConfig, new: bool) -> Result<(), RepoError> {
    let bytes = config::encode(config);
    let mode = if new {
        PutMode::Create
    } else {
        PutMode::Replace
    };
    store.put(CONFIG_FILE, &bytes, mode)?;
    Ok(())
}

/// How long a config rewrite waits for another one (they take milliseconds, plus a scrypt
/// derivation for `rekey`).
const CONFIG_LEASE_WAIT: Duration = Duration::from_secs(60);

/// Holds the `config` lease for a read-modify-write of `pgstream.repo`, so two rewrites
/// (a rekey and a first backup binding the cluster) never undo each other.
fn config_lease(store: &dyn Store, purpose: &str) -> Result<Box<dyn LeaseGuard>, RepoError> {
    Ok(lease::acquire_waiting(
        store,
        "config",
        &LeaseHolder::this_process(purpose),
        CONFIG_LEASE_WAIT,
    )?)
}

fn key_err(store: &dyn Store) -> impl Fn(CryptoError) -> RepoError + '_ {
    move |source| RepoError::Key {
        location: store.location().to_string(),
        source,
    }
}

impl Repository {
    /// Creates a repository at `location` (a directory is created if missing; it must be empty
    /// if present). The config is written last, so an interrupted init leaves no
    /// half-repository.
    pub fn init(
        location: &RepoLocation,
        options: InitOptions,
        passphrase: Option<&Secret>,
    ) -> Result<Repository, RepoError> {
        Self::init_in(crate::store::open(location)?, options, passphrase)
    }

    /// [`Repository::init`] in a given store.
    pub fn init_in(
        store: SharedStore,
        options: InitOptions,
        passphrase: Option<&Secret>,
    ) -> Result<Repository, RepoError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&options.chunk_size) {
            return Err(RepoError::Invalid(format!(
                "chunk size {} outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
                options.chunk_size
            )));
        }
        let s: &dyn Store = store.as_ref();
        // Check the passphrase before touching the store: a refused init creates nothing.
        let passphrase = match options.encryption {
            Encryption::None => None,
            Encryption::Aead(_) => Some(required(s, passphrase)?),
        };
        if let Ok(existing) = read_config(s) {
            return Err(RepoError::AlreadyRepository {
                location: s.location().to_string(),
                id: existing.repository_id,
            });
        }
        if let Some(entry) = s.prepare_root()? {
            return Err(RepoError::NotEmpty {
                location: s.location().to_string(),
                entry,
            });
        }
        let id: [u8; 16] = random_bytes().map_err(key_err(s))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut config = RepoConfig {
            format_version: FORMAT_VERSION,
            repository_id: hex::encode(id),
            created_unix: now,
            compression: options.compression,
            encryption: None,
            cluster: None,
            mac: None,
        };
        if let Encryption::Aead(aead) = options.encryption {
            let passphrase = passphrase.as_ref().expect("checked above");
            let (enc, keyring) = keys::generate(
                s,
                &config,
                aead,
                options.chunk_size,
                options.kdf_cost,
                passphrase,
                now,
            )?;
            config.encryption = Some(enc);
            keys::seal(s, &mut config, &keyring)?;
        }
        write_config(s, &config, true).map_err(|e| match e {
            RepoError::Store(se) if se.is_already_exists() => RepoError::AlreadyRepository {
                location: s.location().to_string(),
                id: "created concurrently".into(),
            },
            other => other,
        })?;
        Repository::open_in(store, passphrase.as_ref())
    }

    /// Opens the repository at `location`. An encrypted repository needs its passphrase (a
    /// wrong one gives [`RepoError::is_wrong_passphrase`]); an unencrypted one ignores it.
    pub fn open(
        location: &RepoLocation,
        passphrase: Option<&Secret>,
    ) -> Result<Repository, RepoError> {
        Self::open_in(crate::store::open(location)?, passphrase)
    }

    /// [`Repository::open`] over a given store.
    pub fn open_in(
        store: SharedStore,
        passphrase: Option<&Secret>,
    ) -> Result<Repository, RepoError> {
        let config = read_config(store.as_ref())?;
        let s = store.as_ref();
        let codec = match &config.encryption {
            // A passphrase given to a repository that says it is unencrypted: either a mistake,
            // or a configuration altered to make the next writer store plaintext. Refused.
            None if passphrase.is_some_and(|p| !p.is_empty()) => {
                return Err(RepoError::ClaimsUnencrypted {
                    location: s.location().to_string(),
                })
            }
            None => FileCodec::plain(config.compression),
            Some(enc) => {
                let keyring = keys::open_keyring(s, &config, enc, &required(s, passphrase)?)?;
                FileCodec {
                    compression: config.compression,
                    encryption: Some(FileEncryption {
                        aead: enc.algorithm,
                        keys: Arc::new(keyring),
                        chunk_size: enc.chunk_size,
                        key_ids: config.format_version > FORMAT_V1,
                    }),
                }
            }
        };
        Ok(Repository {
            store,
            config,
            codec,
        })
    }

    /// Changes the passphrase: unwraps the data keys with `old`, rewraps them under `new` with
    /// a fresh salt (same scrypt cost) and rewrites the config durably. No data file changes.
    pub fn rekey(location: &RepoLocation, old: &Secret, new: &Secret) -> Result<(), RepoError> {
        Self::rekey_with(location, old, new, RekeyOptions::default()).map(drop)
    }

    /// [`Repository::rekey`] with a new scrypt cost (`None` keeps the current one).
    pub fn rekey_with_cost(
        location: &RepoLocation,
        old: &Secret,
        new: &Secret,
        cost: Option<KdfCost>,
    ) -> Result<(), RepoError> {
        Self::rekey_with(
            location,
            old,
            new,
            RekeyOptions {
                cost,
                ..RekeyOptions::default()
            },
        )
        .map(drop)
    }

    /// [`Repository::rekey`] with options: a new scrypt cost, and a new data key for every file
    /// written afterwards (`rotate`). Returns the active key id afterwards.
    pub fn rekey_with(
        location: &RepoLocation,
        old: &Secret,
        new: &Secret,
        options: RekeyOptions,
    ) -> Result<u32, RepoError> {
        Self::rekey_in(crate::store::open(location)?.as_ref(), old, new, options)
    }

    /// [`Repository::rekey_with`] in a given store. The config is read and rewritten under the
    /// `config` lease.
    pub fn rekey_in(
        store: &dyn Store,
        old: &Secret,
        new: &Secret,
        options: RekeyOptions,
    ) -> Result<u32, RepoError> {
        let new = required(store, Some(new))?;
        let old = required(store, Some(old))?;
        let _lease = config_lease(store, "pgstream rekey")?;
        let mut config = read_config(store)?;
        let Some(enc) = config.encryption.clone() else {
            return Err(RepoError::NotEncrypted {
                location: store.location().to_string(),
            });
        };
        if options.rotate && config.format_version == FORMAT_V1 {
            return Err(RepoError::NeedsUpgrade {
                location: store.location().to_string(),
                what: "a data key rotation",
            });
        }
        let keyring = keys::open_keyring(store, &config, &enc, &old)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let keyring = keys::rewrap(
            store,
            &mut config,
            keyring,
            &new,
            options.cost,
            options.rotate.then_some(now),
        )?;
        keys::seal(store, &mut config, &keyring)?;
        write_config(store, &config, false)?;
        Ok(keyring.active().0)
    }

    /// Brings a format 1 repository to format 2 (a keyring whose wraps bind key ids, and a MAC
    /// over the configuration), in one atomic rewrite of `pgstream.repo` under the `config`
    /// lease. Nothing else changes: files, records and pins of format 1 stay readable (key 0).
    /// Returns whether anything was done (false: already format 2).
    pub fn upgrade(
        location: &RepoLocation,
        passphrase: Option<&Secret>,
    ) -> Result<bool, RepoError> {
        Self::upgrade_in(crate::store::open(location)?.as_ref(), passphrase)
    }

    /// [`Repository::upgrade`] in a given store.
    pub fn upgrade_in(store: &dyn Store, passphrase: Option<&Secret>) -> Result<bool, RepoError> {
        let _lease = config_lease(store, "pgstream upgrade")?;
        let mut config = read_config(store)?;
        if config.format_version >= FORMAT_VERSION {
            return Ok(false);
        }
        match config.encryption.clone() {
            None => {
                if passphrase.is_some_and(|p| !p.is_empty()) {
                    return Err(RepoError::ClaimsUnencrypted {
                        location: store.location().to_string(),
                    });
                }
                config.format_version = FORMAT_VERSION;
            }
            Some(enc) => {
                let pass = required(store, passphrase)?;
                let keyring = keys::open_keyring(store, &config, &enc, &pass)?;
                config.format_version = FORMAT_VERSION;
                // The same passphrase, a fresh salt, the same cost: the wrap now binds the id.
                let keyring = keys::rewrap(store, &mut config, keyring, &pass, None, None)?;
                keys::seal(store, &mut config, &keyring)?;
            }
        }
        write_config(store, &config, false)?;
        Ok(true)
    }

    /// Records the cluster on the first backup; afterwards accepts only the same cluster.
    /// The config is re-read under the `config` lease, so a concurrent rekey is not undone.
    pub fn bind_cluster(&mut self, cluster: ClusterIdentity) -> Result<BindOutcome, RepoError> {
        if self.config.cluster == Some(cluster) {
            return Ok(BindOutcome::AlreadyBound);
        }
        let store = self.store.as_ref();
        let _lease = match self.config.cluster {
            // Bound to another cluster: nothing to write, just refuse (below).
            Some(_) => None,
            None => Some(config_lease(
                store,
                "binding the repository to its cluster",
            )?),
        };
        let mut fresh = read_config(store)?;
        if fresh.repository_id != self.config.repository_id
            || fresh.encryption.is_some() != self.config.encryption.is_some()
        {
            return Err(RepoError::BadConfig {
                location: store.describe(CONFIG_FILE),
                detail: "the repository id or encryption changed while the repository was open"
                    .into(),
            });
        }
        let keyring = self.codec.encryption.as_ref().map(|e| Arc::clone(&e.keys));
        if let Some(k) = &keyring {
            // Rewritten (rekeyed) meanwhile: its MAC must still verify with our keys.
            keys::check_fresh(store, &fresh, k)?;
        }
        let outcome = match fresh.cluster {
            Some(bound) if bound == cluster => BindOutcome::AlreadyBound,
            Some(bound) => {
                return Err(RepoError::ClusterMismatch {
                    location: store.location().to_string(),
                    bound,
                    offered: cluster,
                })
            }
            None => {
                fresh.cluster = Some(cluster);
                if let Some(k) = &keyring {
                    keys::seal(store, &mut fresh, k)?;
                }
                crate::failpoint!("repo.bind-cluster");
                write_config(store, &fresh, false)?;
                BindOutcome::Bound
            }
        };
        self.config = fresh;
        Ok(outcome)
    }

    /// The storage port.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Where the repository is.
    pub fn location(&self) -> &RepoLocation {
        self.store.location()
    }

    /// The config as loaded (or last written by this handle).
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The repository id (32 hex digits).
    pub fn id(&self) -> &str {
        &self.config.repository_id
    }

    /// The cluster the repository is bound to, if any.
    pub fn cluster(&self) -> Option<ClusterIdentity> {
        self.config.cluster
    }

    /// The codec for this repository's files (compression, and cipher with data key).
    pub fn codec(&self) -> &FileCodec {
        &self.codec
    }

    /// The data keys, in an encrypted repository.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.codec.encryption.as_ref().map(|e| e.keys.as_ref())
    }

    /// The key that seals new records and pins (`None` for an unencrypted repository), with
    /// the id to record in them (`None` in format 1, where only key 0 exists).
    pub fn sealing_key(&self) -> Option<SealKey<'_>> {
        self.codec.encryption.as_ref().map(|e| {
            let (id, key) = e.active_key();
            SealKey {
                id: e.key_ids.then_some(id),
                key,
            }
        })
    }

    /// The backup catalog; in an encrypted repository every record read is authenticated.
    pub fn catalog(&self) -> Catalog<'_> {
        match self.keyring() {
            Some(k) => Catalog::with_keys(self.store.as_ref(), k),
            None => Catalog::new(self.store.as_ref()),
        }
    }

    /// Starts writing repository file `name` (its identity) with the repository's codec.
    pub fn create_file(&self, name: &str) -> Result<FileSink, RepoError> {
        self.create_file_with(name, &self.codec)
    }

    /// Starts writing repository file `name` with another codec (archives the server
    /// compressed are stored without compression of ours).
    pub fn create_file_with(&self, name: &str, codec: &FileCodec) -> Result<FileSink, RepoError> {
        check_file_name(name)?;
        Ok(FileSink::create(self.store.as_ref(), name, codec)?)
    }

    /// Opens repository file `name` for authenticated, decompressed reading.
    pub fn open_file(&self, name: &str) -> Result<FileReader, RepoError> {
        self.open_file_with(name, &self.codec)
    }

    /// Opens repository file `name`, written with `codec`.
    pub fn open_file_with(&self, name: &str, codec: &FileCodec) -> Result<FileReader, RepoError> {
        check_file_name(name)?;
        Ok(open_reader(self.store.as_ref(), name, codec)?)
    }

    /// Whether repository file `name` exists.
    pub fn has_file(&self, name: &str) -> Result<bool, RepoError> {
        Ok(self.store.head(name)?.is_some())
    }

    /// The cipher of new files, if encrypted.
    pub fn aead(&self) -> Option<Aead> {
        self.codec.encryption.as_ref().map(|e| e.aead)
    }
}

/// A data file's name: a valid store name, and neither the config nor a lease.
fn check_file_name(name: &str) -> Result<(), RepoError> {
    let invalid =
        |why: &str| RepoError::Invalid(format!("invalid repository file name {name:?}: {why}"));
    if let Err(e) = crate::store::check_name(name) {
        return Err(invalid(&match e {
            StoreError::BadName { reason, .. } => reason.to_string(),
            other => other.to_string(),
        }));
    }
    if name == CONFIG_FILE || name.starts_with(&format!("{}/", lease::LOCKS_DIR)) {
        return Err(invalid("it is not a data file"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
