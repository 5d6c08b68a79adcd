//! A repository directory: create it (`init`), open it with its passphrase, change the passphrase
//! (`rekey`, rewrapping the data key only), bind it to one cluster, and create or open its files
//! through the sink pipeline. Layout and formats: docs/format.md.

pub mod config;
pub mod passphrase;

use crate::compress::Compression;
use crate::crypto::chunked::{DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use crate::crypto::kdf::KdfParams;
use crate::crypto::{keywrap, random_bytes, Aead, CryptoError, DataKey, Encryption, Secret};
use crate::file_error::FileError;
use crate::fsutil::{self, FsError, PRIVATE_FILE_MODE};
use crate::sink::{open_reader, FileCodec, FileEncryption, FileReader, FileSink, SinkError};
use config::{
    ClusterIdentity, DecodeError, EncryptionConfig, RepoConfig, CONFIG_FILE, FORMAT_VERSION,
};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// Repository-level failures.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A filesystem operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// `init` on a directory with content.
    #[error("{} is not empty (it contains {entry:?}); choose a new or empty directory", dir.display())]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
        /// One of its entries.
        entry: String,
    },
    /// `init` on an existing repository.
    #[error("{} already holds a pgstream repository (id {id}); nothing was changed", dir.display())]
    AlreadyRepository {
        /// The directory.
        dir: PathBuf,
        /// Its repository id.
        id: String,
    },
    /// `open` on a directory without a config.
    #[error("{} is not a pgstream repository (no {CONFIG_FILE}); create one with `pgstream init --repo {}`", dir.display(), dir.display())]
    NotRepository {
        /// The directory.
        dir: PathBuf,
    },
    /// The config file is damaged or invalid.
    #[error("{}: invalid repository config: {detail}", path.display())]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The config has a newer format version.
    #[error("{} has repository format version {version}; this pgstream supports version {FORMAT_VERSION}; upgrade pgstream", path.display())]
    UnsupportedVersion {
        /// The config file.
        path: PathBuf,
        /// Version found.
        version: u32,
    },
    /// Encrypted repository, no passphrase.
    #[error("repository {} is encrypted: {source}", dir.display())]
    Passphrase {
        /// The directory.
        dir: PathBuf,
        /// Why no passphrase.
        #[source]
        source: passphrase::PassphraseError,
    },
    /// The passphrase does not unwrap the data key.
    #[error("repository {}: {source}", dir.display())]
    Key {
        /// The directory.
        dir: PathBuf,
        /// `WrongPassphrase` or another key failure.
        #[source]
        source: CryptoError,
    },
    /// `rekey` on an unencrypted repository.
    #[error("repository {} is not encrypted; there is no passphrase to change", dir.display())]
    NotEncrypted {
        /// The directory.
        dir: PathBuf,
    },
    /// A backup from another cluster.
    #[error(
        "repository {} belongs to the cluster with {bound}, but this server is the cluster with \
         {offered}; use a separate repository for each cluster",
        dir.display()
    )]
    ClusterMismatch {
        /// The directory.
        dir: PathBuf,
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

/// Whether `bind_cluster` recorded a new binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindOutcome {
    /// The repository was unbound and is now bound to this cluster.
    Bound,
    /// The repository was already bound to this cluster.
    AlreadyBound,
}

/// An open repository (with its data key, if encrypted).
#[derive(Debug)]
pub struct Repository {
    dir: PathBuf,
    config: RepoConfig,
    codec: FileCodec,
}

fn required(dir: &Path, passphrase: Option<&Secret>) -> Result<Secret, RepoError> {
    let missing = |source| RepoError::Passphrase {
        dir: dir.into(),
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

/// The configuration of the repository in `dir`, read without its passphrase (for commands
/// that only look at names and records).
pub fn read_config(dir: &Path) -> Result<RepoConfig, RepoError> {
    let path = dir.join(CONFIG_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RepoError::NotRepository { dir: dir.into() })
        }
        Err(e) => return Err(FsError::new("reading", &path, e).into()),
    };
    config::decode(&bytes).map_err(|e| match e {
        DecodeError::BadMagic => RepoError::BadConfig {
            path,
            detail: "bad magic: not a pgstream repository config".into(),
        },
        DecodeError::UnsupportedVersion(version) => RepoError::UnsupportedVersion { path, version },
        DecodeError::Invalid(detail) => RepoError::BadConfig { path, detail },
    })
}

fn write_config(dir: &Path, config: &RepoConfig, new: bool) -> Result<(), RepoError> {
    let path = dir.join(CONFIG_FILE);
    let bytes = config::encode(config);
    if new {
        fsutil::write_new_file_durably(&path, &bytes, PRIVATE_FILE_MODE)?;
    } else {
        fsutil::write_file_durably(&path, &bytes, PRIVATE_FILE_MODE)?;
    }
    Ok(())
}

fn key_err(dir: &Path) -> impl Fn(CryptoError) -> RepoError + '_ {
    move |source| RepoError::Key {
        dir: dir.into(),
        source,
    }
}

impl Repository {
    /// Creates a repository in `dir` (created if missing; must be empty if present). The config
    /// file is written last, so an interrupted init leaves no half-repository.
    pub fn init(
        dir: &Path,
        options: InitOptions,
        passphrase: Option<&Secret>,
    ) -> Result<Repository, RepoError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&options.chunk_size) {
            return Err(RepoError::Invalid(format!(
                "chunk size {} outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
                options.chunk_size
            )));
        }
        // Check the passphrase before touching the filesystem: a refused init creates nothing.
        let passphrase = match options.encryption {
            Encryption::None => None,
            Encryption::Aead(_) => Some(required(dir, passphrase)?),
        };
        match std::fs::read_dir(dir) {
            Ok(mut entries) => {
                if let Ok(existing) = read_config(dir) {
                    return Err(RepoError::AlreadyRepository {
                        dir: dir.into(),
                        id: existing.repository_id,
                    });
                }
                if let Some(entry) = entries.next() {
                    let entry = entry.map_err(|e| FsError::new("listing", dir, e))?;
                    return Err(RepoError::NotEmpty {
                        dir: dir.into(),
                        entry: entry.file_name().to_string_lossy().into_owned(),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fsutil::create_dir_all_durably(dir)?,
            Err(e) => return Err(FsError::new("opening directory", dir, e).into()),
        }
        let id: [u8; 16] = random_bytes().map_err(key_err(dir))?;
        let encryption = match options.encryption {
            Encryption::None => None,
            Encryption::Aead(aead) => {
                let passphrase = passphrase.as_ref().expect("checked above");
                let cost = options.kdf_cost;
                let kdf = KdfParams::generate(cost.log2_n, cost.r, cost.p)
                    .map_err(|e| RepoError::Invalid(e.to_string()))?;
                let data_key = keywrap::generate_data_key().map_err(key_err(dir))?;
                let kek = kdf.derive(passphrase).map_err(key_err(dir))?;
                let key_wrap =
                    keywrap::wrap(&kek, &data_key, &id, FORMAT_VERSION).map_err(key_err(dir))?;
                Some(EncryptionConfig {
                    algorithm: aead,
                    chunk_size: options.chunk_size,
                    kdf,
                    key_wrap,
                })
            }
        };
        let config = RepoConfig {
            repository_id: hex::encode(id),
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            compression: options.compression,
            encryption,
            cluster: None,
        };
        write_config(dir, &config, true).map_err(|e| match e {
            RepoError::Fs(fe) if fe.source.kind() == io::ErrorKind::AlreadyExists => {
                RepoError::AlreadyRepository {
                    dir: dir.into(),
                    id: "created concurrently".into(),
                }
            }
            other => other,
        })?;
        Repository::open(dir, passphrase.as_ref())
    }

    /// Opens the repository in `dir`. An encrypted repository needs its passphrase (a wrong one
    /// gives [`RepoError::is_wrong_passphrase`]); an unencrypted one ignores it.
    pub fn open(dir: &Path, passphrase: Option<&Secret>) -> Result<Repository, RepoError> {
        let config = read_config(dir)?;
        let codec = match &config.encryption {
            None => FileCodec::plain(config.compression),
            Some(enc) => {
                let key = unwrap_data_key(dir, &config, enc, &required(dir, passphrase)?)?;
                FileCodec {
                    compression: config.compression,
                    encryption: Some(FileEncryption {
                        aead: enc.algorithm,
                        key: Arc::new(key),
                        chunk_size: enc.chunk_size,
                    }),
                }
            }
        };
        Ok(Repository {
            dir: dir.into(),
            config,
            codec,
        })
    }

    /// Changes the passphrase: unwraps the data key with `old`, rewraps it under `new` with a
    /// fresh salt (same scrypt cost) and rewrites the config durably. No data file changes.
    pub fn rekey(dir: &Path, old: &Secret, new: &Secret) -> Result<(), RepoError> {
        Self::rekey_with_cost(dir, old, new, None)
    }

    /// [`Repository::rekey`] with a new scrypt cost (`None` keeps the current one).
    pub fn rekey_with_cost(
        dir: &Path,
        old: &Secret,
        new: &Secret,
        cost: Option<KdfCost>,
    ) -> Result<(), RepoError> {
        let mut config = read_config(dir)?;
        let Some(enc) = config.encryption.clone() else {
            return Err(RepoError::NotEncrypted { dir: dir.into() });
        };
        let new = required(dir, Some(new))?;
        let data_key = unwrap_data_key(dir, &config, &enc, &required(dir, Some(old))?)?;
        let kdf = match cost {
            None => enc.kdf.with_fresh_salt(),
            Some(c) => KdfParams::generate(c.log2_n, c.r, c.p),
        }
        .map_err(|e| RepoError::Invalid(e.to_string()))?;
        let kek = kdf.derive(&new).map_err(key_err(dir))?;
        let id = config
            .repository_id_bytes()
            .map_err(|detail| RepoError::BadConfig {
                path: dir.join(CONFIG_FILE),
                detail,
            })?;
        let key_wrap = keywrap::wrap(&kek, &data_key, &id, FORMAT_VERSION).map_err(key_err(dir))?;
        config.encryption = Some(EncryptionConfig {
            kdf,
            key_wrap,
            ..enc
        });
        write_config(dir, &config, false)
    }

    /// Records the cluster on the first backup; afterwards accepts only the same cluster.
    /// Re-reads the config first so a concurrent rekey is not undone.
    pub fn bind_cluster(&mut self, cluster: ClusterIdentity) -> Result<BindOutcome, RepoError> {
        let mut fresh = read_config(&self.dir)?;
        if fresh.repository_id != self.config.repository_id {
            return Err(RepoError::BadConfig {
                path: self.dir.join(CONFIG_FILE),
                detail: "the repository id changed while the repository was open".into(),
            });
        }
        let outcome = match fresh.cluster {
            Some(bound) if bound == cluster => BindOutcome::AlreadyBound,
            Some(bound) => {
                return Err(RepoError::ClusterMismatch {
                    dir: self.dir.clone(),
                    bound,
                    offered: cluster,
                })
            }
            None => {
                fresh.cluster = Some(cluster);
                write_config(&self.dir, &fresh, false)?;
                BindOutcome::Bound
            }
        };
        self.config = fresh;
        Ok(outcome)
    }

    /// The repository directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// Absolute path and identity of a repository-relative name such as
    /// `backups/<id>/base.tar.lz4`. The name is the file's authenticated identity.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, RepoError> {
        let p = Path::new(name);
        let ok = !name.is_empty()
            && name != CONFIG_FILE
            && !name.contains('\\')
            && !name.split('/').any(|c| c.is_empty())
            && p.components().all(|c| matches!(c, Component::Normal(_)));
        if !ok {
            return Err(RepoError::Invalid(format!(
                "invalid repository file name {name:?}: use a relative path of plain components"
            )));
        }
        Ok(self.dir.join(p))
    }

    /// Starts writing repository file `name` (its parent directory must exist).
    pub fn create_file(&self, name: &str) -> Result<FileSink, RepoError> {
        Ok(FileSink::create(&self.resolve(name)?, name, &self.codec)?)
    }

    /// Opens repository file `name` for authenticated, decompressed reading.
    pub fn open_file(&self, name: &str) -> Result<FileReader, RepoError> {
        Ok(open_reader(&self.resolve(name)?, name, &self.codec)?)
    }

    /// The cipher of new files, if encrypted.
    pub fn aead(&self) -> Option<Aead> {
        self.codec.encryption.as_ref().map(|e| e.aead)
    }
}

fn unwrap_data_key(
    dir: &Path,
    config: &RepoConfig,
    enc: &EncryptionConfig,
    passphrase: &Secret,
) -> Result<DataKey, RepoError> {
    let id = config
        .repository_id_bytes()
        .map_err(|detail| RepoError::BadConfig {
            path: dir.join(CONFIG_FILE),
            detail,
        })?;
    let kek = enc.kdf.derive(passphrase).map_err(key_err(dir))?;
    keywrap::unwrap(&kek, &enc.key_wrap, &id, FORMAT_VERSION).map_err(key_err(dir))
}
