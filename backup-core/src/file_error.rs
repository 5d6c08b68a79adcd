//! Errors met while reading a stored file back. Each names the file and what is wrong with it.

use crate::crypto::CryptoError;
use std::io;
use std::path::PathBuf;

/// Why a stored file could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The OS refused (open, read).
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file ends too early.
    #[error("{} is truncated: {detail}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where it ends and what was missing.
        detail: String,
    },
    /// The file does not start with the encrypted-file magic.
    #[error("{} is not a pgstream encrypted file (bad magic){hint}", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// What the file looks like instead, if recognisable (starts with "; ").
        hint: String,
    },
    /// A format version this build does not know.
    #[error(
        "{} uses encrypted-file format version {version}, but this pgstream reads only version {supported}; upgrade pgstream",
        path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version found in the header.
        version: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// A header field is invalid.
    #[error("{} has an invalid header: {detail}", path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// Which field and why.
        detail: String,
    },
    /// The file was written under another logical name (swapped or renamed files).
    #[error(
        "{} was written as {found:?} but is being read as {expected:?}: files were swapped or renamed",
        path.display()
    )]
    IdentityMismatch {
        /// The file.
        path: PathBuf,
        /// The name the caller expected.
        expected: String,
        /// The name recorded in the header.
        found: String,
    },
    /// A chunk did not authenticate: corruption, tampering, reordering or the wrong key.
    #[error(
        "{}: authentication failed at chunk {chunk} (byte offset {offset}){hint}; the file is corrupt or was tampered with",
        path.display()
    )]
    AuthFailed {
        /// The file.
        path: PathBuf,
        /// Index of the failing chunk (0-based).
        chunk: u64,
        /// Byte offset of the chunk in the file.
        offset: u64,
        /// Extra context (starts with ", ").
        hint: String,
    },
    /// Bytes follow the chunk marked final.
    #[error("{}: data follows the final chunk {chunk}; the file was appended to or spliced", path.display())]
    TrailingData {
        /// The file.
        path: PathBuf,
        /// Index of the final chunk.
        chunk: u64,
    },
    /// The decrypted (or plain) stream is not valid for its compression format.
    #[error("{}: {compression} stream is invalid: {source}", path.display())]
    Decompress {
        /// The file.
        path: PathBuf,
        /// The compression name.
        compression: String,
        /// What the decoder said.
        #[source]
        source: io::Error,
    },
    /// The file was written under a data key the repository no longer has (retired) or never
    /// had (a file from elsewhere).
    #[error(
        "{} was written with data key {key_id}, which this repository's keyring does not hold \
         (retired, or the file comes from another repository)",
        path.display()
    )]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key id its header names.
        key_id: u32,
    },
    /// The file is encrypted but no key was supplied.
    #[error("{} is encrypted, but the repository was opened without its data key", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// Key derivation failed inside OpenSSL.
    #[error("{}: {source}", path.display())]
    Crypto {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: CryptoError,
    },
}

impl FileError {
    /// Wraps into an `io::Error` (for `Read` implementations), keeping the `FileError` retrievable
    /// with [`FileError::from_io`].
    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            FileError::Io { source, .. } => source.kind(),
            FileError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }

    /// The `FileError` inside an `io::Error` produced by a reader of this crate, if any.
    pub fn from_io(e: &io::Error) -> Option<&FileError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<FileError>())
    }
}
