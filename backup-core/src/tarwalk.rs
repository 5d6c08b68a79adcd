//! A push-based tar walker: feed an archive in chunks of any size as it streams past and get,
//! for every member, its path, kind, size and content checksum, without buffering content.
//!
//! Reads POSIX ustar with pax extended headers (`x`, `g`) and GNU archives (`L`/`K` long names,
//! base-256 sizes). Memory: one 512-byte header plus extended-header data up to
//! [`MAX_EXTENDED_HEADER`].

mod header;
mod pax;

#[cfg(test)]
mod tests;

use header::{Header, BLOCK};
use pax::PaxOverrides;

use crate::manifest::{BackupPath, ChecksumAlgorithm, FileChecksum, FileChecksummer};

/// Largest pax or GNU long-name payload accepted (a path is at most a few kB in practice).
pub const MAX_EXTENDED_HEADER: u64 = 1 << 20;

/// What an archive member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink {
        target: BackupPath,
    },
    HardLink {
        target: BackupPath,
    },
    /// Devices, FIFOs, GNU sparse files...: typeflag as in the header.
    Other {
        typeflag: u8,
    },
}

/// One archive member as the walker saw it. `path` is normalized (no leading `./`, no
/// trailing `/`) and carries the walker's prefix; `size` and `checksum` concern regular files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenFile {
    pub path: BackupPath,
    pub kind: EntryKind,
    pub size: u64,
    pub checksum: Option<FileChecksum>,
    pub mode: u32,
    pub mtime: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    #[error(
        "tar header at byte {offset}: checksum {stored} does not match the computed {computed}; \
         the archive is corrupt"
    )]
    HeaderChecksum {
        offset: u64,
        stored: u64,
        computed: u64,
    },
    #[error("tar header at byte {offset}: {message}")]
    BadHeader { offset: u64, message: String },
    #[error(
        "tar header at byte {offset}: extended header of {size} bytes exceeds the limit of \
         {MAX_EXTENDED_HEADER} bytes"
    )]
    ExtendedHeaderTooLarge { offset: u64, size: u64 },
    #[error(
        "tar header at byte {offset}: member size of {size} bytes overflows when padded to \
         512-byte blocks; the archive is corrupt"
    )]
    SizeOverflow { offset: u64, size: u64 },
    #[error("tar header at byte {offset}: unsafe member path {path} (absolute, or with '..')")]
    UnsafePath { offset: u64, path: BackupPath },
    #[error("tar archive truncated after {offset} bytes: {what}")]
    Truncated { offset: u64, what: &'static str },
    #[error("tar archive: non-zero data at byte {offset}, after the end-of-archive blocks")]
    DataAfterEnd { offset: u64 },
    #[error("tar walker used after an error")]
    Poisoned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    PaxLocal,
    PaxGlobal,
    LongName,
    LongLink,
}

#[derive(Debug)]
enum State {
    /// Filling `block` with a header (`zeros`: how many zero blocks preceded it).
    Header {
        zeros: u8,
    },
    Content {
        remaining: u64,
        pad: u64,
    },
    Skip {
        remaining: u64,
    },
    Meta {
        kind: Meta,
        remaining: u64,
        pad: u64,
    },
    /// Two zero blocks seen: only zero bytes may follow (record padding).
    Ended,
}

/// The walker; see the module documentation.
#[derive(Debug)]
pub struct TarWalker {
    algorithm: Option<ChecksumAlgorithm>,
    prefix: Vec<u8>,
    state: State,
    block: Box<[u8; BLOCK]>,
    block_len: usize,
    /// Bytes consumed so far.
    offset: u64,
    /// Offset of the header being handled (for errors).
    header_offset: u64,
    failed: bool,
    meta: Vec<u8>,
    local: PaxOverrides,
    globals: PaxOverrides,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pending_meta: bool,
    current: Option<(SeenFile, Option<FileChecksummer>)>,
    seen: Vec<SeenFile>,
}

impl Default for TarWalker {
    fn default() -> Self {
        TarWalker::new()
    }
}

impl TarWalker {
    /// A walker that computes CRC32C (what pgstream asks the server's manifest to use).
    pub fn new() -> TarWalker {
        TarWalker {
            algorithm: Some(ChecksumAlgorithm::Crc32c),
            prefix: Vec::new(),
            state: State::Header { zeros: 0 },
            block: Box::new([0; BLOCK]),
            block_len: 0,
            offset: 0,
            header_offset: 0,
            failed: false,
            meta: Vec::new(),
            local: PaxOverrides::default(),
            globals: PaxOverrides::default(),
            long_name: None,
            long_link: None,
            pending_meta: false,
            current: None,
            seen: Vec::new(),
        }
    }

    /// Which checksum to compute for regular files (`None`: none).
    pub fn checksum(mut self, algorithm: Option<ChecksumAlgorithm>) -> TarWalker {
        self.algorithm = algorithm;
        self
    }

    /// Reports paths as `<prefix>/<member>`: `pg_tblspc/<oid>` for a tablespace archive, so
    /// they match the manifest.
    pub fn path_prefix(mut self, prefix: impl AsRef<[u8]>) -> TarWalker {
        let p = prefix.as_ref();
        let end = p.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
        self.prefix = p[..end].to_vec();
        self
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.offset
    }

    /// Whether the end-of-archive blocks have been seen.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    /// Members completed so far.
    pub fn seen(&self) -> &[SeenFile] {
        &self.seen
    }

    /// Takes the members completed so far (later ones keep accumulating).
    pub fn take_seen(&mut self) -> Vec<SeenFile> {
        std::mem::take(&mut self.seen)
    }

    /// Consumes the next chunk of the archive. After an error the walker refuses more input.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), TarError> {
        if self.failed {
            return Err(TarError::Poisoned);
        }
        let r = self.push_inner(chunk);
        self.failed = r.is_err();
        r
    }

    /// Requires the end-of-archive blocks and returns the members not yet taken.
    pub fn finish(self) -> Result<Vec<SeenFile>, TarError> {
        if self.failed {
            return Err(TarError::Poisoned);
        }
        let what = match self.state {
            State::Ended => return Ok(self.seen),
            State::Header { zeros: 1 } => "only one of the two end-of-archive zero blocks",
            State::Header { .. } if self.block_len == 0 => "no end-of-archive zero blocks",
            State::Header { .. } => "inside a header",
            State::Content { .. } => "inside a file's content",
            State::Skip { .. } | State::Meta { .. } => "inside a member",
        };
        Err(TarError::Truncated {
            offset: self.offset,
            what,
        })
    }

    fn push_inner(&mut self, mut input: &[u8]) -> Result<(), TarError> {
        while !input.is_empty() {
            let used = match &mut self.state {
                State::Header { .. } => {
                    let n = (BLOCK - self.block_len).min(input.len());
                    self.block[self.block_len..self.block_len + n].copy_from_slice(&input[..n]);
                    self.block_len += n;
                    n
                }
                State::Content { remaining, .. } => {
                    let n = clamp(*remaining, input.len());
                    if let Some((_, Some(sum))) = &mut self.current {
                        sum.update(&input[..n]);
                    }
                    *remaining -= n as u64;
                    n
                }
                State::Skip { remaining } => {
                    let n = clamp(*remaining, input.len());
                    *remaining -= n as u64;
                    n
                }
                State::Meta { remaining, .. } => {
                    let n = clamp(*remaining, input.len());
                    self.meta.extend_from_slice(&input[..n]);
                    *remaining -= n as u64;
                    n
                }
                State::Ended => {
                    if let Some(i) = input.iter().position(|&b| b != 0) {
                        return Err(TarError::DataAfterEnd {
                            offset: self.offset + i as u64,
                        });
                    }
                    input.len()
                }
            };
            input = &input[used..];
            self.offset += used as u64;
            self.advance()?;
        }
        Ok(())
    }

    /// Moves on when the current state has all it needs.
    fn advance(&mut self) -> Result<(), TarError> {
        match self.state {
            State::Header { zeros } if self.block_len == BLOCK => {
                self.block_len = 0;
                self.header_offset = self.offset - BLOCK as u64;
                if header::is_zero_block(&self.block[..]) {
                    if self.pending_meta {
                        return Err(self.bad("extended header not followed by a member"));
                    }
                    self.state = if zeros == 1 {
                        State::Ended
                    } else {
                        State::Header { zeros: 1 }
                    };
                    return Ok(());
                }
                if zeros == 1 {
                    return Err(self.bad("a single zero block in the middle of the archive"));
                }
                let h = header::parse(&self.block, self.header_offset)?;
                self.on_header(h)
            }
            State::Content { remaining: 0, pad } => {
                if let Some((mut file, sum)) = self.current.take() {
                    file.checksum = sum.map(FileChecksummer::finish);
                    self.seen.push(file);
                }
                self.state = skip(pad);
                Ok(())
            }
            State::Skip { remaining: 0 } => {
                self.state = State::Header { zeros: 0 };
                Ok(())
            }
            State::Meta {
                kind,
                remaining: 0,
                pad,
            } => {
                let data = std::mem::take(&mut self.meta);
                match kind {
                    Meta::PaxLocal => {
                        pax::parse_records(&data, &mut self.local, self.header_offset)?
                    }
                    Meta::PaxGlobal => {
                        let mut g = PaxOverrides::default();
                        pax::parse_records(&data, &mut g, self.header_offset)?;
                        pax::merge_global(&mut self.globals, g);
                    }
                    Meta::LongName => self.long_name = Some(pax::gnu_long_name(&data)),
                    Meta::LongLink => self.long_link = Some(pax::gnu_long_name(&data)),
                }
                self.pending_meta = kind != Meta::PaxGlobal || self.pending_meta;
                self.state = skip(pad);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn bad(&self, message: &str) -> TarError {
        TarError::BadHeader {
            offset: self.header_offset,
            message: message.to_string(),
        }
    }

    fn on_header(&mut self, h: Header) -> Result<(), TarError> {
        let meta = match h.typeflag {
            b'x' => Some(Meta::PaxLocal),
            b'g' => Some(Meta::PaxGlobal),
            b'L' => Some(Meta::LongName),
            b'K' => Some(Meta::LongLink),
            _ => None,
        };
        if let Some(kind) = meta {
            if h.size > MAX_EXTENDED_HEADER {
                return Err(TarError::ExtendedHeaderTooLarge {
                    offset: self.header_offset,
                    size: h.size,
                });
            }
            self.meta.clear();
            self.state = State::Meta {
                kind,
                remaining: h.size,
                pad: padding(h.size),
            };
            return self.advance();
        }

        // Resolve this member's fields: pax per-file > GNU long name > pax global > ustar.
        let local = std::mem::take(&mut self.local);
        let long_name = self.long_name.take();
        let long_link = self.long_link.take();
        self.pending_meta = false;
        let pick =
            |l: Option<Vec<u8>>, gnu: Option<Vec<u8>>, g: &Option<Vec<u8>>, u: Vec<u8>| match l {
                Some(v) if v.is_empty() => u,
                Some(v) => v,
                None => gnu.or_else(|| g.clone()).unwrap_or(u),
            };
        let name = pick(local.path, long_name, &self.globals.path, h.name);
        let link = pick(
            local.linkpath,
            long_link,
            &self.globals.linkpath,
            h.linkname,
        );
        let size = match local.size {
            Some(s) => s.unwrap_or(h.size),
            None => self.globals.size.flatten().unwrap_or(h.size),
        };
        let mtime = match local.mtime {
            Some(m) => m.unwrap_or(h.mtime),
            None => self.globals.mtime.flatten().unwrap_or(h.mtime),
        };

        let kind = match h.typeflag {
            b'0' | 0 | b'7' => EntryKind::File,
            b'5' => EntryKind::Directory,
            b'2' => EntryKind::Symlink {
                target: BackupPath::new(link),
            },
            b'1' => EntryKind::HardLink {
                target: BackupPath::new(link),
            },
            t => EntryKind::Other { typeflag: t },
        };
        let pad = padding(size);
        // A corrupt or hostile size field (base-256 or pax) can be up to 2^64-1.
        let padded = size.checked_add(pad).ok_or(TarError::SizeOverflow {
            offset: self.header_offset,
            size,
        })?;
        let Some(path) = self.normalize(&name)? else {
            // The archive root itself ("./"): nothing to record.
            self.state = skip(padded);
            return self.advance();
        };
        let file = SeenFile {
            path,
            size: if kind == EntryKind::File { size } else { 0 },
            kind,
            checksum: None,
            mode: h.mode,
            mtime,
        };
        if file.kind == EntryKind::File {
            let sum = self.algorithm.map(FileChecksummer::new);
            self.current = Some((file, sum));
            self.state = State::Content {
                remaining: size,
                pad,
            };
        } else {
            self.seen.push(file);
            self.state = skip(padded);
        }
        self.advance()
    }

    /// Strips `./` and trailing `/`, refuses absolute paths and `..`, adds the prefix.
    fn normalize(&self, name: &[u8]) -> Result<Option<BackupPath>, TarError> {
        let mut n = name;
        while let Some(rest) = n.strip_prefix(b"./") {
            n = rest;
        }
        while let Some(rest) = n.strip_suffix(b"/") {
            n = rest;
        }
        if n == b"." || n.is_empty() && !name.starts_with(b"/") {
            return Ok(None);
        }
        if name.starts_with(b"/") || n.split(|&b| b == b'/').any(|c| c == b"..") {
            return Err(TarError::UnsafePath {
                offset: self.header_offset,
                path: BackupPath::new(name),
            });
        }
        let mut path = Vec::with_capacity(self.prefix.len() + 1 + n.len());
        if !self.prefix.is_empty() {
            path.extend_from_slice(&self.prefix);
            path.push(b'/');
        }
        path.extend_from_slice(n);
        Ok(Some(BackupPath::new(path)))
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn skip(remaining: u64) -> State {
    if remaining == 0 {
        State::Header { zeros: 0 }
    } else {
        State::Skip { remaining }
    }
}

fn clamp(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}
