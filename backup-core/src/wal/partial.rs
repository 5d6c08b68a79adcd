//! The segment being received: an append-only, crash-safe, authenticated file
//! (docs/format.md §8.4, "Partial segments").
//!
//! ```text
//! header ‖ record 0 ‖ record 1 ‖ … ‖ zeros (pre-allocated, not yet written)
//! record i = offset u64 ‖ len u32 ‖ sealed(payload) ‖ tag
//! ```
//!
//! Each record holds WAL bytes `[offset, offset+len)` of the segment, appended in order. It is
//! sealed with the per-file key, nonce = record index and AAD = header hash ‖ index ‖ offset ‖
//! len, so a record moved, reordered, spliced from another file or cut short fails. After a crash
//! the valid content is the records that authenticate in order, up to the first that does not:
//! a torn last record was never fsynced, so never reported flushed. With an unencrypted
//! repository the same framing is used with a CRC-32C instead of an AEAD tag.
//!
//! Reopening never appends to a file that may hold a torn record: [`PartialWriter::resume`]
//! copies the valid prefix into a fresh file with a fresh salt (so a fresh key: no nonce is ever
//! used twice) and publishes it over the old one.
//!
//! For `wal-fetch` (and anyone else serving a partial): [`PartialReader`] opens such a file and
//! reads exactly its valid bytes, verifying every record; [`PartialReader::end`] then says
//! whether the file ended cleanly or with a torn/damaged record.

use std::io::{self, BufReader, Read};

use crate::crypto::filekey::{counter_nonce, derive_file_key, KeyDomain};
use crate::crypto::{random_bytes, sha256, Aead, AeadKey, TAG_LEN};
use crate::ioutil::read_full;
use crate::sink::FileCodec;
use crate::store::{AppendFile, Store, StoreError};
use crate::wal::{SegmentName, WalSegmentSize};
use pgwire_repl::TimelineId;

/// Magic at offset 0 of a partial segment.
pub const PARTIAL_MAGIC: &[u8; 8] = b"PGSTPART";
/// The newest partial-segment format version: 2 names the data key (repositories of format 2);
/// 1 (key 0 implied) is still written in repositories of format 1 and read everywhere.
pub const PARTIAL_FORMAT_VERSION: u16 = 2;
/// Cipher id of an unencrypted partial (records carry a CRC-32C).
pub const CIPHER_NONE: u8 = 0;
/// Largest payload of one record (bounds reader memory on a hostile file).
pub const MAX_RECORD_LEN: u32 = 1 << 20;
/// Longest identity in a header.
const MAX_IDENTITY: usize = 1024;
/// Bytes of a record before its payload.
pub const RECORD_HEADER_LEN: usize = 12;
const FIXED_HEADER_LEN: usize = 8 + 2 + 1 + 1 + 4 + 4 + 8 + 32 + 2;
/// Version 2 adds the data key id after the segment number.
const FIXED_HEADER_LEN_V2: usize = FIXED_HEADER_LEN + 4;

/// The fixed header length of format `version` (the identity follows it).
fn fixed_len(version: u16) -> usize {
    if version >= 2 {
        FIXED_HEADER_LEN_V2
    } else {
        FIXED_HEADER_LEN
    }
}
const CRC_LEN: usize = 4;

/// Why a partial file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PartialError {
    /// Creating, writing or syncing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading failed.
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    /// Not a partial segment of this repository, or of another segment.
    #[error("{path}: not a usable partial WAL segment: {detail}")]
    BadHeader { path: String, detail: String },
    /// A write would go past the end of the segment.
    #[error("{path}: {len} more bytes do not fit in the segment (at offset {at} of {seg_size})")]
    Overflow {
        path: String,
        at: u64,
        len: usize,
        seg_size: u64,
    },
    /// Key derivation or sealing failed (OpenSSL).
    #[error("{path}: encryption failed: {detail}")]
    Crypto { path: String, detail: String },
}

/// How the records of a partial file end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartialEnd {
    /// Reading has not reached the end yet.
    NotYet,
    /// After the last record: zeros (pre-allocated space) or the end of the file.
    Clean,
    /// A record that does not authenticate or is out of place: a write torn by a crash (never
    /// reported flushed), or damage. Everything before it is valid.
    Invalid { file_offset: u64, reason: String },
}

/// The fields of a partial file's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialHeader {
    /// Format version, 1 or 2.
    pub version: u16,
    /// The data key the file's key is derived from (0 in version 1 and when unencrypted).
    pub key_id: u32,
    /// `None` for an unencrypted repository.
    pub aead: Option<Aead>,
    pub segment: SegmentName,
    pub salt: [u8; 32],
    pub identity: String,
}

impl PartialHeader {
    /// The header bytes, exactly as stored.
    pub fn encode(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(fixed_len(self.version) + self.identity.len());
        h.extend_from_slice(PARTIAL_MAGIC);
        h.extend_from_slice(&self.version.to_be_bytes());
        h.push(self.aead.map_or(CIPHER_NONE, Aead::id));
        h.push(0);
        h.extend_from_slice(&(self.segment.seg_size.bytes() as u32).to_be_bytes());
        h.extend_from_slice(&self.segment.timeline.0.to_be_bytes());
        h.extend_from_slice(&self.segment.segno.to_be_bytes());
        if self.version >= 2 {
            h.extend_from_slice(&self.key_id.to_be_bytes());
        }
        h.extend_from_slice(&self.salt);
        h.extend_from_slice(&(self.identity.len() as u16).to_be_bytes());
        h.extend_from_slice(self.identity.as_bytes());
        h
    }

    fn parse(raw: &[u8], path: &str) -> Result<(PartialHeader, usize), PartialError> {
        let bad = |detail: String| PartialError::BadHeader {
            path: path.into(),
            detail,
        };
        if raw.len() < FIXED_HEADER_LEN || &raw[..8] != PARTIAL_MAGIC {
            return Err(bad("bad magic (expected PGSTPART)".into()));
        }
        let version = u16::from_be_bytes([raw[8], raw[9]]);
        if !(1..=PARTIAL_FORMAT_VERSION).contains(&version) {
            return Err(bad(format!(
                "format version {version}; this pgstream reads versions 1 to \
                 {PARTIAL_FORMAT_VERSION}: upgrade pgstream"
            )));
        }
        let fixed = fixed_len(version);
        if raw.len() < fixed {
            return Err(bad("the file ends inside its header".into()));
        }
        let at = fixed - FIXED_HEADER_LEN; // where the salt moved: 0 in version 1, 4 in 2
        let key_id = if version >= 2 {
            u32::from_be_bytes(raw[28..32].try_into().expect("4 bytes"))
        } else {
            0
        };
        let aead = match raw[10] {
            CIPHER_NONE => None,
            id => Some(Aead::from_id(id).ok_or_else(|| bad(format!("unknown cipher id {id}")))?),
        };
        if raw[11] != 0 {
            return Err(bad(format!("reserved byte is {}", raw[11])));
        }
        let seg_size = u32::from_be_bytes(raw[12..16].try_into().expect("4 bytes"));
        let seg_size = WalSegmentSize::new(u64::from(seg_size)).map_err(|e| bad(e.to_string()))?;
        let tli = u32::from_be_bytes(raw[16..20].try_into().expect("4 bytes"));
        let segno = u64::from_be_bytes(raw[20..28].try_into().expect("8 bytes"));
        let salt: [u8; 32] = raw[at + 28..at + 60].try_into().expect("32 bytes");
        let id_len = usize::from(u16::from_be_bytes([raw[at + 60], raw[at + 61]]));
        if id_len == 0 || raw.len() < fixed + id_len {
            return Err(bad(format!("identity length {id_len} out of range")));
        }
        let identity = String::from_utf8(raw[fixed..fixed + id_len].to_vec())
            .map_err(|_| bad("identity is not UTF-8".into()))?;
        if tli == 0 {
            return Err(bad("timeline 0".into()));
        }
        let header = PartialHeader {
            version,
            key_id,
            aead,
            segment: SegmentName::new(TimelineId(tli), segno, seg_size),
            salt,
            identity,
        };
        Ok((header, fixed + id_len))
    }
}

/// Seals and opens the records of one file.
struct Sealer {
    /// The cipher with the file's key, set up once: records are small and many (one per
    /// commit in synchronous mode), so a key schedule per record would show.
    cipher: Option<AeadKey>,
    header_hash: [u8; 32],
}

impl Sealer {
    fn new(header: &PartialHeader, raw: &[u8], codec: &FileCodec) -> Result<Sealer, String> {
        let cipher = match (header.aead, &codec.encryption) {
            (None, _) => None,
            (Some(aead), Some(enc)) => {
                let data_key = enc.keys.get(header.key_id).ok_or_else(|| {
                    format!(
                        "written with data key {}, which this repository's keyring does not hold",
                        header.key_id
                    )
                })?;
                let key = derive_file_key(
                    data_key,
                    &header.salt,
                    KeyDomain::PartialSegment,
                    &header.identity,
                )
                .map_err(|e| e.to_string())?;
                Some(AeadKey::new(aead, key.bytes()).map_err(|e| e.to_string())?)
            }
            (Some(_), None) => {
                return Err("the file is encrypted but the repository has no key".into())
            }
        };
        Ok(Sealer {
            cipher,
            header_hash: sha256(&[raw]),
        })
    }

    fn tag_len(&self) -> usize {
        if self.cipher.is_some() {
            TAG_LEN
        } else {
            CRC_LEN
        }
    }

    fn aad(&self, index: u64, offset: u64, len: u32) -> [u8; 52] {
        let mut a = [0u8; 52];
        a[..32].copy_from_slice(&self.header_hash);
        a[32..40].copy_from_slice(&index.to_be_bytes());
        a[40..48].copy_from_slice(&offset.to_be_bytes());
        a[48..52].copy_from_slice(&len.to_be_bytes());
        a
    }

    /// Appends record `index` (header, sealed payload, tag) to `out`.
    fn seal(
        &self,
        index: u64,
        offset: u64,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let len = payload.len() as u32;
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        let aad = self.aad(index, offset, len);
        match &self.cipher {
            Some(cipher) => cipher
                .seal_append(&counter_nonce(index), &aad, payload, out)
                .map_err(|e| e.to_string()),
            None => {
                out.extend_from_slice(payload);
                let crc = crc32c::crc32c_append(crc32c::crc32c(&aad), payload);
                out.extend_from_slice(&crc.to_be_bytes());
                Ok(())
            }
        }
    }

    /// The payload of record `index` if `sealed` (payload ‖ tag) authenticates.
    fn open(&self, index: u64, offset: u64, len: u32, sealed: &[u8]) -> Option<Vec<u8>> {
        let aad = self.aad(index, offset, len);
        match &self.cipher {
            Some(cipher) => {
                let mut plain = Vec::new();
                cipher
                    .open_into(&counter_nonce(index), &aad, sealed, &mut plain)
                    .then_some(plain)
            }
            None => {
                let (payload, crc) = sealed.split_at(sealed.len().checked_sub(CRC_LEN)?);
                let want = crc32c::crc32c_append(crc32c::crc32c(&aad), payload);
                (crc == want.to_be_bytes()).then(|| payload.to_vec())
            }
        }
    }
}

/// Reads the valid WAL bytes of a partial file, verifying each record in order. It stops (with
/// EOF) at the first record that is missing, torn or does not authenticate; [`Self::end`] tells
/// which. Memory: one record.
pub struct PartialReader {
    file: BufReader<Box<dyn Read + Send>>,
    path: String,
    header: PartialHeader,
    sealer: Sealer,
    file_pos: u64,
    index: u64,
    valid: u64,
    buf: Vec<u8>,
    buf_pos: usize,
    end: PartialEnd,
}

impl std::fmt::Debug for PartialReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartialReader")
            .field("path", &self.path)
            .field("segment", &self.header.segment.to_string())
            .field("valid", &self.valid)
            .finish_non_exhaustive()
    }
}

impl PartialReader {
    /// Opens partial file `name` (also its identity) of the repository in `store`, whose
    /// files use `codec`.
    pub fn open(store: &dyn Store, name: &str, codec: &FileCodec) -> Result<Self, PartialError> {
        let identity = name;
        let path = store.describe(name);
        let path = path.as_str();
        let read_err = |source| PartialError::Read {
            path: path.into(),
            source,
        };
        let mut file = BufReader::with_capacity(256 * 1024, store.open(name)?);
        // The version says how long the fixed part is; the identity's length ends it.
        let mut raw = vec![0u8; FIXED_HEADER_LEN];
        let got = read_full(&mut file, &mut raw).map_err(read_err)?;
        raw.truncate(got);
        if got == FIXED_HEADER_LEN && &raw[..8] == PARTIAL_MAGIC {
            let fixed = fixed_len(u16::from_be_bytes([raw[8], raw[9]]));
            raw.resize(fixed, 0);
            let more = read_full(&mut file, &mut raw[FIXED_HEADER_LEN..]).map_err(read_err)?;
            raw.truncate(FIXED_HEADER_LEN + more);
            if raw.len() == fixed {
                let id_len = usize::from(u16::from_be_bytes([raw[fixed - 2], raw[fixed - 1]]));
                let mut id = vec![0u8; id_len.min(MAX_IDENTITY)];
                let got = read_full(&mut file, &mut id).map_err(read_err)?;
                raw.extend_from_slice(&id[..got]);
            }
        }
        let (header, header_len) = PartialHeader::parse(&raw, path)?;
        let bad = |detail: String| PartialError::BadHeader {
            path: path.into(),
            detail,
        };
        if header.identity != identity {
            return Err(bad(format!(
                "it was written as {:?}, not {identity:?} (a file moved or copied from elsewhere)",
                header.identity
            )));
        }
        if header.aead.is_some() != codec.encryption.is_some() {
            return Err(bad(if codec.encryption.is_some() {
                "it is unencrypted, but the repository is encrypted".into()
            } else {
                "it is encrypted, but the repository is not".into()
            }));
        }
        let sealer = Sealer::new(&header, &raw[..header_len], codec).map_err(bad)?;
        Ok(PartialReader {
            file,
            path: path.into(),
            header,
            sealer,
            file_pos: header_len as u64,
            index: 0,
            valid: 0,
            buf: Vec::new(),
            buf_pos: 0,
            end: PartialEnd::NotYet,
        })
    }

    /// The segment this file holds the beginning of.
    pub fn segment(&self) -> SegmentName {
        self.header.segment
    }

    /// Valid bytes returned so far (after reading to EOF: the valid length).
    pub fn valid_len(&self) -> u64 {
        self.valid
    }

    /// How the records ended (after reading to EOF).
    pub fn end(&self) -> &PartialEnd {
        &self.end
    }

    /// Reads to the end and returns the valid length and how the records ended.
    pub fn scan(mut self) -> Result<(u64, PartialEnd), PartialError> {
        io::copy(&mut self, &mut io::sink()).map_err(|source| PartialError::Read {
            path: self.path.clone(),
            source,
        })?;
        Ok((self.valid, self.end))
    }

    /// Loads the next record into `buf`; false at the end.
    fn next_record(&mut self) -> io::Result<bool> {
        if self.end != PartialEnd::NotYet {
            return Ok(false);
        }
        let at = self.file_pos;
        let mut head = [0u8; RECORD_HEADER_LEN];
        let got = read_full(&mut self.file, &mut head)?;
        if got == 0 || (head == [0u8; RECORD_HEADER_LEN]) {
            self.end = PartialEnd::Clean;
            return Ok(false);
        }
        let invalid = |reason: String| PartialEnd::Invalid {
            file_offset: at,
            reason,
        };
        if got < RECORD_HEADER_LEN {
            self.end = invalid("the file ends inside a record header".into());
            return Ok(false);
        }
        let offset = u64::from_be_bytes(head[..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(head[8..].try_into().expect("4 bytes"));
        let seg_size = self.header.segment.seg_size.bytes();
        if offset != self.valid || len == 0 || len > MAX_RECORD_LEN {
            self.end = invalid(format!(
                "record {} claims {len} bytes at segment offset {offset}, expected offset {}",
                self.index, self.valid
            ));
            return Ok(false);
        }
        if offset + u64::from(len) > seg_size {
            self.end = invalid(format!("record {} runs past the segment end", self.index));
            return Ok(false);
        }
        let mut sealed = vec![0u8; len as usize + self.sealer.tag_len()];
        let got = read_full(&mut self.file, &mut sealed)?;
        if got < sealed.len() {
            self.end = invalid(format!("the file ends inside record {}", self.index));
            return Ok(false);
        }
        match self.sealer.open(self.index, offset, len, &sealed) {
            Some(plain) => {
                self.buf = plain;
                self.buf_pos = 0;
                self.file_pos += (RECORD_HEADER_LEN + sealed.len()) as u64;
                self.index += 1;
                self.valid += u64::from(len);
                Ok(true)
            }
            None => {
                self.end = invalid(format!("record {} does not authenticate", self.index));
                Ok(false)
            }
        }
    }
}

impl Read for PartialReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf_pos == self.buf.len() {
            if !self.next_record()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.buf_pos);
        out[..n].copy_from_slice(&self.buf[self.buf_pos..self.buf_pos + n]);
        self.buf_pos += n;
        Ok(n)
    }
}

/// Appends WAL to a partial file. Not durable until [`Self::sync`].
#[derive(Debug)]
pub struct PartialWriter {
    file: Box<dyn AppendFile>,
    sealer: SealerBox,
    segment: SegmentName,
    file_pos: u64,
    allocated: u64,
    index: u64,
    written: u64,
    synced: u64,
    resized: bool,
    record: Vec<u8>,
}

/// `Sealer` holds key material and has no useful Debug.
struct SealerBox(Sealer);

impl std::fmt::Debug for SealerBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

/// Space reserved at creation: the header, the whole segment, and the record overhead of
/// one record per 4 kB, with more added if ever needed.
fn initial_size(header_len: usize, seg_size: u64, tag_len: usize) -> u64 {
    header_len as u64 + seg_size + (seg_size / 4096 + 16) * (RECORD_HEADER_LEN + tag_len) as u64
}

impl PartialWriter {
    /// Creates a new, empty partial file for `segment` as object `name` of `store` (its
    /// identity), replacing any file there. The store must offer files written in place.
    pub fn create(
        store: &dyn Store,
        name: &str,
        segment: SegmentName,
        codec: &FileCodec,
    ) -> Result<Self, PartialError> {
        Self::start(store, name, segment, codec, None)
    }

    /// Reopens partial file `name` after a stop or a crash: its valid prefix is copied into a
    /// fresh file (new salt, so new key) that replaces it, and writing continues after it. A
    /// missing file is created. Returns the writer and how the old file ended.
    pub fn resume(
        store: &dyn Store,
        name: &str,
        segment: SegmentName,
        codec: &FileCodec,
    ) -> Result<(Self, PartialEnd), PartialError> {
        match PartialReader::open(store, name, codec) {
            Ok(reader) => {
                if reader.segment() != segment {
                    return Err(PartialError::BadHeader {
                        path: store.describe(name),
                        detail: format!("it holds segment {}, not {segment}", reader.segment()),
                    });
                }
                let mut reader = reader;
                let w = Self::start(store, name, segment, codec, Some(&mut reader))?;
                Ok((w, reader.end.clone()))
            }
            Err(PartialError::Store(e)) if e.is_not_found() => Ok((
                Self::create(store, name, segment, codec)?,
                PartialEnd::Clean,
            )),
            Err(e) => Err(e),
        }
    }

    fn start(
        store: &dyn Store,
        name: &str,
        segment: SegmentName,
        codec: &FileCodec,
        prefix: Option<&mut PartialReader>,
    ) -> Result<Self, PartialError> {
        let identity = name;
        let path = store.describe(name);
        let crypto = |detail: String| PartialError::Crypto {
            path: path.clone(),
            detail,
        };
        let enc = codec.encryption.as_ref();
        let header = PartialHeader {
            version: if enc.is_some_and(|e| e.key_ids) { 2 } else { 1 },
            key_id: enc.map_or(0, |e| e.active_key().0),
            aead: enc.map(|e| e.aead),
            segment,
            salt: random_bytes().map_err(|e| crypto(e.to_string()))?,
            identity: identity.to_string(),
        };
        if identity.len() > MAX_IDENTITY {
            return Err(PartialError::BadHeader {
                path,
                detail: "identity longer than 1024 bytes".into(),
            });
        }
        let raw = header.encode();
        let sealer = Sealer::new(&header, &raw, codec).map_err(crypto)?;
        let allocated = initial_size(raw.len(), segment.seg_size.bytes(), sealer.tag_len());
        let file = store.create_appendable(name, allocated)?;
        file.write_at(&raw, 0)?;
        let mut w = PartialWriter {
            file,
            sealer: SealerBox(sealer),
            segment,
            file_pos: raw.len() as u64,
            allocated,
            index: 0,
            written: 0,
            synced: 0,
            resized: false,
            record: Vec::new(),
        };
        if let Some(reader) = prefix {
            let mut buf = vec![0u8; MAX_RECORD_LEN as usize];
            loop {
                let n = read_full(reader, &mut buf).map_err(|source| PartialError::Read {
                    path: path.clone(),
                    source,
                })?;
                if n == 0 {
                    break;
                }
                w.append(&buf[..n])?;
            }
        }
        w.file.publish()?;
        w.synced = w.written;
        w.resized = false;
        Ok(w)
    }

    /// The segment being written.
    pub fn segment(&self) -> SegmentName {
        self.segment
    }

    /// Segment bytes written (the next write goes at this offset).
    pub fn len(&self) -> u64 {
        self.written
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Segment bytes known durable.
    pub fn synced_len(&self) -> u64 {
        self.synced
    }

    /// Whether the whole segment is written.
    pub fn is_complete(&self) -> bool {
        self.written == self.segment.seg_size.bytes()
    }

    /// Where the file is, for messages.
    pub fn describe(&self) -> String {
        self.file.describe()
    }

    /// Appends `data` (one record per [`MAX_RECORD_LEN`] bytes).
    pub fn append(&mut self, data: &[u8]) -> Result<(), PartialError> {
        let seg_size = self.segment.seg_size.bytes();
        if self.written + data.len() as u64 > seg_size {
            return Err(PartialError::Overflow {
                path: self.file.describe(),
                at: self.written,
                len: data.len(),
                seg_size,
            });
        }
        for piece in data.chunks(MAX_RECORD_LEN as usize) {
            self.record.clear();
            let mut record = std::mem::take(&mut self.record);
            let sealed = self
                .sealer
                .0
                .seal(self.index, self.written, piece, &mut record);
            if let Err(detail) = sealed {
                return Err(PartialError::Crypto {
                    path: self.file.describe(),
                    detail,
                });
            }
            let end = self.file_pos + record.len() as u64;
            if end > self.allocated {
                // Many tiny records (one per commit in synchronous mode) can outgrow the
                // estimate: grow in steps; the next sync is a full fsync.
                self.allocated = end + (4 << 20);
                self.file.set_len(self.allocated)?;
                self.resized = true;
            }
            self.file.write_at(&record, self.file_pos)?;
            self.record = record;
            self.file_pos = end;
            self.index += 1;
            self.written += piece.len() as u64;
        }
        Ok(())
    }

    /// Makes everything appended so far durable (fdatasync; fsync after a resize).
    pub fn sync(&mut self) -> Result<(), PartialError> {
        if self.synced == self.written && !self.resized {
            return Ok(());
        }
        if self.resized {
            self.file.sync_all()?;
            self.resized = false;
        } else {
            self.file.sync_data()?;
        }
        self.synced = self.written;
        Ok(())
    }
}

/// The stored name of receive-wal's partial file for `segment`:
/// `wal/<shard>/<segment>.partial.recv[.enc]`.
pub fn receiving_name(segment: &SegmentName, encrypted: bool) -> String {
    format!(
        "{}/{segment}{}{}",
        crate::layout::wal_segment_dir(segment),
        crate::index::RECEIVING_SUFFIX,
        if encrypted { ".enc" } else { "" }
    )
}

/// The partial file receive-wal is writing for `segment`, if the archive has one, opened for
/// reading its valid bytes (wal-fetch and restore serve it under the segment's name, padded
/// with zeros, only as the newest segment of the timeline being replayed).
pub fn open_receiving(
    repo: &crate::repo::Repository,
    segment: &SegmentName,
) -> Result<Option<PartialReader>, PartialError> {
    let name = receiving_name(segment, repo.codec().encryption.is_some());
    match PartialReader::open(repo.store().as_ref(), &name, repo.codec()) {
        Ok(r) => Ok(Some(r)),
        Err(PartialError::Store(e)) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
