//! The write pipeline compress → encrypt → durable file, and the matching authenticated reader.
//! Both hold fixed-size buffers only (one compression block, one AEAD chunk, one I/O buffer), so
//! memory does not grow with the file. Sync code: async callers run it on blocking threads.

use crate::compress::{Compression, Decoder, Encoder};
use crate::crypto::chunked::{
    validate_identity, ChunkOpener, ChunkSealer, DEFAULT_CHUNK_SIZE, FILE_MAGIC,
};
use crate::crypto::keyring::Keyring;
use crate::crypto::{Aead, DataKey};
use crate::file_error::FileError;
use crate::store::{ObjectWriter, PutMode, Store, StoreError};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const IO_BUFFER: usize = 64 * 1024;

/// Encryption settings for files: the cipher, the repository's data keys and the chunk size.
#[derive(Debug, Clone)]
pub struct FileEncryption {
    /// Cipher for the chunks.
    pub aead: Aead,
    /// The repository's data keys: new files use the active one, readers the one a file's
    /// header names (per-file keys are derived from it).
    pub keys: Arc<Keyring>,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Write headers that name the key (encrypted-file format 2, repositories of format 2);
    /// `false` writes format 1 (key 0 implied), which older versions read.
    pub key_ids: bool,
}

impl FileEncryption {
    /// The id and key new files are written with.
    pub fn active_key(&self) -> (u32, &DataKey) {
        self.keys.active()
    }

    /// The key id new headers carry: `None` for format 1.
    pub fn header_key_id(&self) -> Option<u32> {
        self.key_ids.then(|| self.keys.active().0)
    }
}

/// How files are encoded: what a repository hands to its writers and readers.
#[derive(Debug, Clone)]
pub struct FileCodec {
    /// Compression of new files (and of unencrypted files being read).
    pub compression: Compression,
    /// `None` for an unencrypted repository.
    pub encryption: Option<FileEncryption>,
}

impl FileCodec {
    /// An unencrypted codec.
    pub fn plain(compression: Compression) -> Self {
        FileCodec {
            compression,
            encryption: None,
        }
    }

    /// An encrypted codec with the default chunk size and one data key (format 1 headers).
    pub fn encrypted(compression: Compression, aead: Aead, key: DataKey) -> Self {
        FileCodec {
            compression,
            encryption: Some(FileEncryption {
                aead,
                keys: Arc::new(Keyring::single(key)),
                chunk_size: DEFAULT_CHUNK_SIZE,
                key_ids: false,
            }),
        }
    }
}

/// Why writing a file failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Creating or committing the object failed (an existing name is
    /// [`StoreError::AlreadyExists`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the stream failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The destination.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The logical file name cannot be stored.
    #[error("invalid file identity for {}: {reason}", path.display())]
    BadIdentity {
        /// The destination.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What a finished file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkSummary {
    /// Bytes written by the caller (before compression).
    pub raw_bytes: u64,
    /// Bytes in the stored file.
    pub stored_bytes: u64,
    /// CRC-32C of the stored file, for verification without keys.
    pub stored_crc32c: u32,
}

/// Counts and checksums what reaches the file.
struct Counting<W> {
    inner: W,
    bytes: u64,
    crc: crate::crc::Crc32c,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The store's writer buffers itself (the local one aligned, for direct I/O), so no
/// `BufWriter` in between.
type Out = Counting<Box<dyn ObjectWriter>>;

enum Stage {
    Plain(Out),
    Sealed(ChunkSealer<Out>),
}

impl Stage {
    fn finish(self) -> io::Result<Out> {
        match self {
            Stage::Plain(w) => Ok(w),
            Stage::Sealed(s) => s.finish(),
        }
    }
}

impl Write for Stage {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stage::Plain(w) => w.write(buf),
            Stage::Sealed(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stage::Plain(w) => w.flush(),
            Stage::Sealed(s) => s.flush(),
        }
    }
}

/// A file being written through compression and encryption. Nothing is visible under its name
/// until [`FileSink::finish`] returns; dropping the sink discards what was written.
pub struct FileSink {
    path: PathBuf,
    raw_bytes: u64,
    encoder: Encoder<Stage>,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("path", &self.path)
            .field("raw_bytes", &self.raw_bytes)
            .finish_non_exhaustive()
    }
}

impl FileSink {
    /// Starts writing object `name` of `store`; the name is also the file's identity,
    /// authenticated in every chunk.
    pub fn create(store: &dyn Store, name: &str, codec: &FileCodec) -> Result<Self, SinkError> {
        let identity = name;
        let path = PathBuf::from(store.describe(name));
        let path = path.as_path();
        validate_identity(identity).map_err(|reason| SinkError::BadIdentity {
            path: path.into(),
            reason,
        })?;
        let out = Counting {
            inner: store.create(name)?,
            bytes: 0,
            crc: crate::crc::Crc32c::new(),
        };
        let werr = |source| SinkError::Write {
            path: path.into(),
            source,
        };
        let sealed = codec.encryption.is_some();
        let stage = match &codec.encryption {
            None => Stage::Plain(out),
            Some(enc) => Stage::Sealed(
                ChunkSealer::new(
                    out,
                    enc.aead,
                    enc.active_key().1,
                    enc.header_key_id(),
                    codec.compression.id(),
                    enc.chunk_size,
                    identity,
                )
                .map_err(werr)?,
            ),
        };
        Ok(FileSink {
            path: path.into(),
            raw_bytes: 0,
            encoder: Encoder::with_lz4_checksum(stage, codec.compression, !sealed).map_err(werr)?,
        })
    }

    /// Where the object goes (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ends the stream and makes the file durable under its name; refuses to replace an
    /// existing file (backup files are written once).
    pub fn finish(self) -> Result<SinkSummary, SinkError> {
        self.finish_with(PutMode::Create)
    }

    /// Like [`FileSink::finish`] but atomically replaces an existing file.
    pub fn finish_replacing(self) -> Result<SinkSummary, SinkError> {
        self.finish_with(PutMode::Replace)
    }

    fn finish_with(self, mode: PutMode) -> Result<SinkSummary, SinkError> {
        let werr = |source| SinkError::Write {
            path: self.path.clone(),
            source,
        };
        let stage = self.encoder.finish().map_err(werr)?;
        let counting = stage.finish().map_err(werr)?;
        let summary = SinkSummary {
            raw_bytes: self.raw_bytes,
            stored_bytes: counting.bytes,
            stored_crc32c: counting.crc.value(),
        };
        counting.inner.commit(mode)?;
        Ok(summary)
    }
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.encoder.write(buf)?;
        self.raw_bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.encoder.flush()
    }
}

/// Wraps OS read errors of the stored file so they name it.
struct Source<R> {
    inner: R,
    path: PathBuf,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|source| {
            if FileError::from_io(&source).is_some() {
                return source;
            }
            FileError::Io {
                path: self.path.clone(),
                source,
            }
            .into_io()
        })
    }
}

type Raw = BufReader<Box<dyn Read + Send>>;

/// A stored file being read back: authenticated (if encrypted) and decompressed.
pub struct FileReader {
    path: PathBuf,
    compression: Compression,
    decoder: Decoder<Source<Box<dyn Read + Send>>>,
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("path", &self.path)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

impl FileReader {
    /// The compression of the stored stream.
    pub fn compression(&self) -> Compression {
        self.compression
    }
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.decoder.read(buf).map_err(|e| {
            if FileError::from_io(&e).is_some() {
                return e;
            }
            // Anything not raised by the source (already a FileError) is the decoder's verdict.
            FileError::Decompress {
                path: self.path.clone(),
                compression: self.compression.family().into(),
                source: e,
            }
            .into_io()
        })
    }
}

/// Opens object `name` of `store` for reading (the name is the identity its chunks were
/// sealed with). For an encrypted codec the header is checked now (magic, version, identity)
/// and every chunk is authenticated as it is read; a failure surfaces as an `io::Error` whose
/// [`FileError`] (see [`FileError::from_io`]) names the file and the chunk.
pub fn open_reader(
    store: &dyn Store,
    name: &str,
    codec: &FileCodec,
) -> Result<FileReader, FileError> {
    let identity = name;
    let path = PathBuf::from(store.describe(name));
    let path = path.as_path();
    let file = store.open(name).map_err(|e| FileError::Io {
        path: path.into(),
        source: match e {
            StoreError::Io { source, .. } => source,
            other => io::Error::from(other.kind()),
        },
    })?;
    let mut raw: Raw = BufReader::with_capacity(IO_BUFFER, file);
    let (inner, compression): (Box<dyn Read + Send>, Compression) = match &codec.encryption {
        Some(enc) => {
            let opener = ChunkOpener::new(raw, path, identity, &enc.keys)?;
            let compression = Compression::from_id(opener.header().compression_id)
                .expect("validated when the header was read");
            (Box::new(opener), compression)
        }
        None => {
            let start = raw.fill_buf().map_err(|source| FileError::Io {
                path: path.into(),
                source,
            })?;
            if start.starts_with(FILE_MAGIC) {
                return Err(FileError::NoKey { path: path.into() });
            }
            (Box::new(raw), codec.compression)
        }
    };
    let source = Source {
        inner,
        path: path.into(),
    };
    let decoder = Decoder::new(source, compression).map_err(|source| FileError::Decompress {
        path: path.into(),
        compression: compression.family().into(),
        source,
    })?;
    Ok(FileReader {
        path: path.into(),
        compression,
        decoder,
    })
}
