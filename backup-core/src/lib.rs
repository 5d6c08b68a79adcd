//! pgstream's backup engine: repository format, sinks (compress, encrypt, durable file),
//! manifests, WAL segments and timelines. It knows nothing of the command line.
//!
//! Storage foundation:
//! - [`fsutil`]: the one module that writes durably (temp name, fsync, rename, fsync directory).
//! - [`crypto`]: scrypt KDF, the wrapped repository data key, per-file keys, chunked AEAD.
//! - [`compress`]: lz4 frame, zstd and gzip streaming encoders and decoders.
//! - [`sink`]: [`sink::FileSink`] (compress → encrypt → durable file) and [`sink::open_reader`].
//! - [`repo`]: [`repo::Repository`] (init, open, rekey, cluster binding) and passphrase sources.
//!
//! The on-disk formats are specified in `docs/format.md`.

pub mod basebackup;
pub mod catalog;
pub mod compress;
pub mod copy;
pub mod coverage;
pub mod crc;
pub mod crypto;
pub mod drill;
pub mod expire;
pub mod failpoint;
pub mod file_error;
pub mod fsutil;
pub mod health;
pub mod index;
mod ioutil;
pub mod layout;
pub mod localpg;
pub mod manifest;
pub mod receive;
mod replication;
pub mod repo;
pub mod restore;
pub mod sink;
pub mod store;
pub mod tablespace;
pub mod tarwalk;
#[cfg(test)]
mod test_support;
pub mod verify;
pub mod wal;

pub use compress::Compression;
pub use crypto::{Aead, Encryption, Secret};
pub use file_error::FileError;
pub use repo::config::ClusterIdentity;
pub use repo::passphrase::{passphrase_from_env_or_file, PassphraseError, PASSPHRASE_ENV};
pub use repo::{BindOutcome, InitOptions, KdfCost, RepoError, Repository};
pub use sink::{open_reader, FileCodec, FileReader, FileSink, SinkError, SinkSummary};
