//! The chunked AEAD file format (docs/format.md, "Encrypted files"): a header, then the
//! plaintext (a compressed stream) cut into fixed-size chunks, each sealed with a per-file key,
//! a counter nonce and AAD = SHA-256(header) ‖ chunk index ‖ final flag. The last chunk, and only
//! it, carries the final flag, so truncation at a chunk boundary, dropped, reordered or appended
//! chunks and swapped files all fail authentication. Memory is one chunk each way.

use super::filekey::{counter_nonce, derive_file_key, KeyDomain};
use super::keyring::Keyring;
use super::{random_bytes, sha256, Aead, AeadKey, DataKey, TAG_LEN};
use crate::file_error::FileError;
use crate::ioutil::read_full;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Magic at offset 0 of every encrypted file.
pub const FILE_MAGIC: &[u8; 8] = b"PGSTFILE";
/// The newest encrypted-file format version, written in repositories of format version 2 (its
/// header names the data key: see docs/format.md §4.3).
pub const FILE_FORMAT_VERSION: u16 = 2;
/// The encrypted-file format of repositories of format version 1 (one data key, id 0).
pub const FILE_FORMAT_V1: u16 = 1;
/// Default plaintext bytes per chunk.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Smallest chunk size accepted in a header.
pub const MIN_CHUNK_SIZE: u32 = 1024;
/// Largest chunk size accepted in a header (bounds reader memory on a hostile header).
pub const MAX_CHUNK_SIZE: u32 = 4 * 1024 * 1024;
/// Longest file identity, in bytes.
pub const MAX_IDENTITY_LEN: usize = 1024;
/// Length of the random per-file salt.
pub const FILE_SALT_LEN: usize = 32;
const FIXED_HEADER_LEN: usize = 8 + 2 + 1 + 1 + 4 + FILE_SALT_LEN + 2;
/// Version 2 adds the data key id after the chunk size.
const FIXED_HEADER_LEN_V2: usize = FIXED_HEADER_LEN + 4;

/// A parsed encrypted-file header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    /// Format version: 1 (no key id: key 0) or 2.
    pub version: u16,
    /// The data key the file key was derived from (0 in version 1).
    pub key_id: u32,
    /// Cipher of the chunks.
    pub aead: Aead,
    /// Compression family id of the plaintext stream (see `Compression::id`).
    pub compression_id: u8,
    /// Plaintext bytes per non-final chunk.
    pub chunk_size: u32,
    /// Random per-file salt for the file key.
    pub salt: [u8; FILE_SALT_LEN],
    /// The logical name the file was written under.
    pub identity: String,
}

impl FileHeader {
    /// Serialises the header exactly as stored.
    pub fn encode(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(FIXED_HEADER_LEN_V2 + self.identity.len());
        h.extend_from_slice(FILE_MAGIC);
        h.extend_from_slice(&self.version.to_be_bytes());
        h.push(self.aead.id());
        h.push(self.compression_id);
        h.extend_from_slice(&self.chunk_size.to_be_bytes());
        if self.version >= 2 {
            h.extend_from_slice(&self.key_id.to_be_bytes());
        }
        h.extend_from_slice(&self.salt);
        h.extend_from_slice(&(self.identity.len() as u16).to_be_bytes());
        h.extend_from_slice(self.identity.as_bytes());
        h
    }

    /// Reads and validates a header; returns it with its raw bytes (for the header hash).
    pub fn read_from(r: &mut impl Read, path: &Path) -> Result<(FileHeader, Vec<u8>), FileError> {
        let mut raw = vec![0u8; FIXED_HEADER_LEN];
        let got = read_full(r, &mut raw).map_err(|e| io_err(path, e))?;
        let magic_len = got.min(FILE_MAGIC.len());
        if raw[..magic_len] != FILE_MAGIC[..magic_len] || got == 0 {
            return Err(FileError::BadMagic {
                path: path.into(),
                hint: sniff(&raw[..got]),
            });
        }
        if got < FIXED_HEADER_LEN {
            return Err(FileError::Truncated {
                path: path.into(),
                detail: format!(
                    "it is {got} bytes, shorter than the {FIXED_HEADER_LEN}-byte header"
                ),
            });
        }
        let bad = |detail: String| FileError::BadHeader {
            path: path.into(),
            detail,
        };
        let version = u16::from_be_bytes([raw[8], raw[9]]);
        if !(FILE_FORMAT_V1..=FILE_FORMAT_VERSION).contains(&version) {
            return Err(FileError::UnsupportedVersion {
                path: path.into(),
                version,
                supported: FILE_FORMAT_VERSION,
            });
        }
        // Version 2's key id sits before the salt: read the 4 more bytes and take it out, so
        // the rest parses as in version 1 (the raw bytes, key id included, stay for the hash).
        let mut key_id = 0;
        if version >= 2 {
            raw.resize(FIXED_HEADER_LEN_V2, 0);
            let more = read_full(r, &mut raw[FIXED_HEADER_LEN..]).map_err(|e| io_err(path, e))?;
            if more < 4 {
                return Err(FileError::Truncated {
                    path: path.into(),
                    detail: "it ends inside the header".into(),
                });
            }
            key_id = u32::from_be_bytes(raw[16..20].try_into().expect("4 bytes"));
        }
        let fixed_len = raw.len();
        let at = fixed_len - FIXED_HEADER_LEN; // 0 in version 1, 4 in version 2
        let aead =
            Aead::from_id(raw[10]).ok_or_else(|| bad(format!("unknown cipher id {}", raw[10])))?;
        let compression_id = raw[11];
        if crate::compress::Compression::from_id(compression_id).is_none() {
            return Err(bad(format!("unknown compression id {compression_id}")));
        }
        let chunk_size = u32::from_be_bytes(raw[12..16].try_into().expect("4 bytes"));
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(bad(format!(
                "chunk size {chunk_size} outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
            )));
        }
        let salt: [u8; FILE_SALT_LEN] = raw[at + 16..at + 48].try_into().expect("32 bytes");
        let id_len = usize::from(u16::from_be_bytes([raw[at + 48], raw[at + 49]]));
        if id_len == 0 || id_len > MAX_IDENTITY_LEN {
            return Err(bad(format!(
                "identity length {id_len} outside 1..={MAX_IDENTITY_LEN}"
            )));
        }
        raw.resize(fixed_len + id_len, 0);
        let got = read_full(r, &mut raw[fixed_len..]).map_err(|e| io_err(path, e))?;
        if got < id_len {
            return Err(FileError::Truncated {
                path: path.into(),
                detail: "it ends inside the header's file identity".into(),
            });
        }
        let identity = String::from_utf8(raw[fixed_len..].to_vec())
            .map_err(|_| bad("file identity is not UTF-8".into()))?;
        let header = FileHeader {
            version,
            key_id,
            aead,
            compression_id,
            chunk_size,
            salt,
            identity,
        };
        Ok((header, raw))
    }
}

/// Names what a non-pgstream file looks like, to make "bad magic" actionable.
fn sniff(start: &[u8]) -> String {
    let what = if start.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
        "an unencrypted lz4 frame"
    } else if start.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "an unencrypted zstd frame"
    } else if start.starts_with(&[0x1f, 0x8b]) {
        "an unencrypted gzip stream"
    } else if start.is_empty() {
        return "; the file is empty".into();
    } else {
        return String::new();
    };
    format!("; it looks like {what}, but this repository is encrypted")
}

fn io_err(path: &Path, source: io::Error) -> FileError {
    FileError::Io {
        path: path.into(),
        source,
    }
}

/// Per-file key: HKDF-SHA256(data key, salt, "pgstream-file-key" ‖ SHA-256(identity)).
fn file_key(
    data_key: &DataKey,
    salt: &[u8],
    identity: &str,
) -> Result<DataKey, super::CryptoError> {
    derive_file_key(data_key, salt, KeyDomain::StoredFile, identity)
}

fn chunk_aad(header_hash: &[u8; 32], index: u64, last: bool) -> [u8; 41] {
    let mut a = [0u8; 41];
    a[..32].copy_from_slice(header_hash);
    a[32..40].copy_from_slice(&index.to_be_bytes());
    a[40] = u8::from(last);
    a
}

/// Checks a caller-supplied identity before it goes into a header.
pub fn validate_identity(identity: &str) -> Result<(), String> {
    if identity.is_empty() || identity.len() > MAX_IDENTITY_LEN {
        return Err(format!(
            "file identity must be 1..={MAX_IDENTITY_LEN} bytes, got {}",
            identity.len()
        ));
    }
    Ok(())
}

/// Encrypting writer: header first, then sealed chunks; `finish` seals the final chunk.
pub struct ChunkSealer<W: Write> {
    inner: W,
    key: AeadKey,
    header_hash: [u8; 32],
    chunk_size: usize,
    buf: Vec<u8>,
    sealed: Vec<u8>,
    index: u64,
}

impl<W: Write> ChunkSealer<W> {
    /// Writes the header for `identity` to `inner` and returns the sealer. `key_id` is the id
    /// of `data_key` in a version 2 header; `None` writes a version 1 header (key 0).
    pub fn new(
        inner: W,
        aead: Aead,
        data_key: &DataKey,
        key_id: Option<u32>,
        compression_id: u8,
        chunk_size: u32,
        identity: &str,
    ) -> io::Result<Self> {
        validate_identity(identity).map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("chunk size {chunk_size} outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"),
            ));
        }
        let salt = random_bytes::<FILE_SALT_LEN>().map_err(io::Error::other)?;
        Self::with_salt(
            inner,
            aead,
            data_key,
            key_id,
            compression_id,
            chunk_size,
            identity,
            salt,
        )
    }

    /// [`ChunkSealer::new`] with a given salt: only the format's worked example pins one.
    #[allow(clippy::too_many_arguments)]
    fn with_salt(
        mut inner: W,
        aead: Aead,
        data_key: &DataKey,
        key_id: Option<u32>,
        compression_id: u8,
        chunk_size: u32,
        identity: &str,
        salt: [u8; FILE_SALT_LEN],
    ) -> io::Result<Self> {
        let header = FileHeader {
            version: if key_id.is_some() {
                FILE_FORMAT_VERSION
            } else {
                FILE_FORMAT_V1
            },
            key_id: key_id.unwrap_or(0),
            aead,
            compression_id,
            chunk_size,
            salt,
            identity: identity.to_owned(),
        }
        .encode();
        inner.write_all(&header)?;
        let key = file_key(data_key, &salt, identity).map_err(io::Error::other)?;
        Ok(ChunkSealer {
            inner,
            key: AeadKey::new(aead, key.bytes()).map_err(io::Error::other)?,
            header_hash: sha256(&[&header]),
            chunk_size: chunk_size as usize,
            buf: Vec::with_capacity(chunk_size as usize),
            sealed: Vec::with_capacity(chunk_size as usize + TAG_LEN),
            index: 0,
        })
    }

    fn seal_chunk(&mut self, last: bool) -> io::Result<()> {
        let plain = std::mem::take(&mut self.buf);
        let r = self.seal_from(&plain, last);
        self.buf = plain;
        self.buf.clear();
        r
    }

    /// Seals `plain` as the next chunk and writes it.
    fn seal_from(&mut self, plain: &[u8], last: bool) -> io::Result<()> {
        self.sealed.clear();
        self.key
            .seal_append(
                &counter_nonce(self.index),
                &chunk_aad(&self.header_hash, self.index, last),
                plain,
                &mut self.sealed,
            )
            .map_err(io::Error::other)?;
        self.inner.write_all(&self.sealed)?;
        self.index = self
            .index
            .checked_add(1)
            .ok_or_else(|| io::Error::other("chunk counter exhausted"))?;
        Ok(())
    }

    /// Seals the final chunk (possibly empty) and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal_chunk(true)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ChunkSealer<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // A full buffer is sealed only once more data arrives: until then it may be the last.
        if self.buf.len() == self.chunk_size && !data.is_empty() {
            self.seal_chunk(false)?;
        }
        // A whole chunk with more after it is not the last: sealed straight from the
        // caller's buffer, without copying it into ours first.
        if self.buf.is_empty() && data.len() > self.chunk_size {
            self.seal_from(&data[..self.chunk_size], false)?;
            return Ok(self.chunk_size);
        }
        let take = (self.chunk_size - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypting reader over a file's bytes; yields the plaintext (compressed) stream.
pub struct ChunkOpener<R: Read> {
    inner: R,
    path: PathBuf,
    header: FileHeader,
    key: AeadKey,
    header_hash: [u8; 32],
    record: Vec<u8>,
    carry: Option<u8>,
    plain: Vec<u8>,
    pos: usize,
    index: u64,
    offset: u64,
    done: bool,
}

impl<R: Read> ChunkOpener<R> {
    /// Reads the header, checks it against `expected_identity` and derives the file key from
    /// the key of `keys` the header names.
    pub fn new(
        mut inner: R,
        path: &Path,
        expected_identity: &str,
        keys: &Keyring,
    ) -> Result<Self, FileError> {
        let (header, raw) = FileHeader::read_from(&mut inner, path)?;
        if header.identity != expected_identity {
            return Err(FileError::IdentityMismatch {
                path: path.into(),
                expected: expected_identity.into(),
                found: header.identity,
            });
        }
        let data_key = keys.get(header.key_id).ok_or(FileError::UnknownKey {
            path: path.into(),
            key_id: header.key_id,
        })?;
        // The expected identity (not the stored one) feeds the key, so a reader that skipped the
        // check above would still fail authentication on a swapped file.
        let key = file_key(data_key, &header.salt, expected_identity).map_err(|source| {
            FileError::Crypto {
                path: path.into(),
                source,
            }
        })?;
        let key = AeadKey::new(header.aead, key.bytes()).map_err(|source| FileError::Crypto {
            path: path.into(),
            source,
        })?;
        let record_len = header.chunk_size as usize + TAG_LEN;
        Ok(ChunkOpener {
            inner,
            path: path.into(),
            key,
            header_hash: sha256(&[&raw]),
            record: Vec::with_capacity(record_len),
            carry: None,
            plain: Vec::new(),
            pos: 0,
            index: 0,
            offset: raw.len() as u64,
            done: false,
            header,
        })
    }

    /// The header as read.
    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// Opens the record read into `self.plain`; false if it does not authenticate as chunk
    /// `self.index` with this end-of-file flag.
    fn open_with(&mut self, last: bool) -> bool {
        self.key.open_into(
            &counter_nonce(self.index),
            &chunk_aad(&self.header_hash, self.index, last),
            &self.record,
            &mut self.plain,
        )
    }

    /// Reads, authenticates and decrypts the next chunk into `plain`.
    fn next_chunk(&mut self) -> Result<(), FileError> {
        let record_len = self.header.chunk_size as usize + TAG_LEN;
        self.record.clear();
        self.record.resize(record_len, 0);
        let mut got = 0;
        if let Some(b) = self.carry.take() {
            self.record[0] = b;
            got = 1;
        }
        got += read_full(&mut self.inner, &mut self.record[got..])
            .map_err(|e| io_err(&self.path, e))?;
        self.record.truncate(got);
        // A full record is the last one only if nothing follows it: peek one byte.
        let last = if got < record_len {
            true
        } else {
            let mut one = [0u8; 1];
            let n = read_full(&mut self.inner, &mut one).map_err(|e| io_err(&self.path, e))?;
            self.carry = (n == 1).then_some(one[0]);
            n == 0
        };
        if got < TAG_LEN {
            return Err(FileError::Truncated {
                path: self.path.clone(),
                detail: if got == 0 && self.index == 0 {
                    "it has a header but no chunks".into()
                } else {
                    format!(
                        "chunk {} is {got} bytes, shorter than its {TAG_LEN}-byte tag",
                        self.index
                    )
                },
            });
        }
        match self.open_with(last) {
            true => {
                self.pos = 0;
                self.offset += got as u64;
                self.index += 1;
                self.done = last;
                Ok(())
            }
            // Same bytes with the other flag tell "cut short" and "appended to" apart from damage.
            false => match (last, self.open_with(!last)) {
                (true, true) => Err(FileError::Truncated {
                    path: self.path.clone(),
                    detail: format!(
                        "it ends after chunk {}, which is not the final chunk",
                        self.index
                    ),
                }),
                (false, true) => Err(FileError::TrailingData {
                    path: self.path.clone(),
                    chunk: self.index,
                }),
                _ => Err(FileError::AuthFailed {
                    path: self.path.clone(),
                    chunk: self.index,
                    offset: self.offset,
                    hint: if last && got < record_len && self.index > 0 {
                        ", the last chunk is short (truncated mid-chunk?)".into()
                    } else if self.index == 0 {
                        ", the first chunk (or the header, or the key, is wrong)".into()
                    } else {
                        String::new()
                    },
                }),
            },
        }
    }
}

impl<R: Read> Read for ChunkOpener<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done || out.is_empty() {
                return Ok(0);
            }
            self.next_chunk().map_err(FileError::into_io)?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of docs/format.md, byte for byte.
    #[test]
    fn worked_example_from_format_md() {
        let data_key = DataKey::from_bytes(std::array::from_fn(|i| i as u8));
        let salt: [u8; 32] = std::array::from_fn(|i| 0x20 + i as u8);
        let identity = "wal/000000010000000000000001";
        let mut s = ChunkSealer::with_salt(
            Vec::new(),
            Aead::Aes256Gcm,
            &data_key,
            None,
            0,
            1024,
            identity,
            salt,
        )
        .unwrap();
        s.write_all(b"hello, pgstream\n").unwrap();
        let file = s.finish().unwrap();
        let header = "5047535446494c4500010100000004002021222324252627\
                      28292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\
                      001c77616c2f303030303030303130303030303030303030\
                      303030303031";
        let chunk0 = "b7b8ea24aa128770c6acc5e4cdae86c2d6355d2693b3dab340bdf29a8ebb1a95";
        assert_eq!(hex::encode(&file), format!("{header}{chunk0}"));
        let key = file_key(&data_key, &salt, identity).unwrap();
        assert_eq!(
            hex::encode(key.bytes()),
            "88999d52ccc917d60b86c0f904466674268a5df5e78cd7737922724e6e52ac6d"
        );
        let mut out = Vec::new();
        ChunkOpener::new(
            &file[..],
            Path::new("example"),
            identity,
            &Keyring::single(data_key),
        )
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
        assert_eq!(out, b"hello, pgstream\n");
    }

    /// Version 2 names the data key after the chunk size; the header hash covers it, and a
    /// keyring without that key says which key is missing.
    #[test]
    fn a_version_2_header_names_its_data_key() {
        let k0 = DataKey::from_bytes([1; 32]);
        let k7 = DataKey::from_bytes([7; 32]);
        let identity = "backups/x/base.tar";
        let mut s =
            ChunkSealer::new(Vec::new(), Aead::Aes256Gcm, &k7, Some(7), 0, 1024, identity).unwrap();
        s.write_all(&[5u8; 3000]).unwrap();
        let file = s.finish().unwrap();
        assert_eq!(&file[8..10], &[0, 2]);
        assert_eq!(&file[16..20], &[0, 0, 0, 7]);
        let both = Keyring::new(
            [(0, std::sync::Arc::new(k0)), (7, std::sync::Arc::new(k7))].into(),
            7,
        )
        .unwrap();
        let mut out = Vec::new();
        ChunkOpener::new(&file[..], Path::new("f"), identity, &both)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, vec![5u8; 3000]);
        let only_k0 = Keyring::single(DataKey::from_bytes([1; 32]));
        let err = ChunkOpener::new(&file[..], Path::new("f"), identity, &only_k0)
            .err()
            .unwrap();
        assert!(
            matches!(err, FileError::UnknownKey { key_id: 7, .. }),
            "{err}"
        );
        // The key id is authenticated: naming key 0 instead fails chunk 0.
        let mut moved = file.clone();
        moved[19] = 0;
        let keys = Keyring::new(
            [
                (0, std::sync::Arc::new(DataKey::from_bytes([7; 32]))),
                (7, std::sync::Arc::new(DataKey::from_bytes([7; 32]))),
            ]
            .into(),
            7,
        )
        .unwrap();
        let mut r = ChunkOpener::new(&moved[..], Path::new("f"), identity, &keys).unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }
}
