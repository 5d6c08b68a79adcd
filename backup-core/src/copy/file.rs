//! Copying one stored file between repositories: decrypted and authenticated with the source's
//! keys, re-sealed under the destination's active key, the compressed stream kept as it is.
//! The stream is also decompressed on the way (into nothing), so a damaged compressed stream
//! (an unencrypted repository's only check besides sizes) fails the copy, and the caller learns
//! the content's length to check against the record. Fixed buffers only.

use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;

use crate::compress::{Compression, Decoder};
use crate::crypto::chunked::ChunkOpener;
use crate::file_error::FileError;
use crate::repo::Repository;
use crate::store::{io_to_store, ObjectWriter, PutMode, StoreError};

use super::CopyError;

const BUFFER: usize = 64 * 1024;

/// What a copied file held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Bytes of the stored object at the destination.
    pub stored_bytes: u64,
    /// Bytes of the content (decompressed).
    pub content_bytes: u64,
}

/// Counts what reaches the destination object.
struct Counting {
    inner: Box<dyn ObjectWriter>,
    bytes: u64,
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Out {
    Plain(Counting),
    Sealed(crate::crypto::chunked::ChunkSealer<Counting>),
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Out::Plain(w) => w.write(buf),
            Out::Sealed(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::Plain(w) => w.flush(),
            Out::Sealed(w) => w.flush(),
        }
    }
}

impl Out {
    fn finish(self) -> io::Result<Counting> {
        match self {
            Out::Plain(w) => Ok(w),
            Out::Sealed(w) => w.finish(),
        }
    }
}

/// Passes what it reads on to the destination; a destination failure is kept apart, so it is
/// not taken for a damaged source.
struct Tee<R> {
    src: R,
    out: Out,
    dest_error: Option<io::Error>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let marker = io::Error::other("writing the copy failed");
            self.dest_error = Some(e);
            return Err(marker);
        }
        Ok(n)
    }
}

/// The source file `name`, authenticated (if encrypted) but still compressed, and the
/// compression of its stream. `plain_compression` is what an unencrypted file holds.
fn open_source(
    src: &Repository,
    name: &str,
    plain_compression: Compression,
) -> Result<(Box<dyn Read + Send>, Compression), CopyError> {
    let path = PathBuf::from(src.store().describe(name));
    let raw = src.store().open(name).map_err(|e| match e {
        e if e.is_not_found() => CopyError::SourceMissing {
            file: src.store().describe(name),
        },
        e => CopyError::Store(e),
    })?;
    let raw = BufReader::with_capacity(BUFFER, raw);
    match &src.codec().encryption {
        Some(enc) => {
            let opener = ChunkOpener::new(raw, &path, name, &enc.keys)
                .map_err(|e| CopyError::source_file(src, name, e))?;
            let compression = Compression::from_id(opener.header().compression_id)
                .expect("validated when the header was read");
            Ok((Box::new(opener), compression))
        }
        None => Ok((Box::new(raw), plain_compression)),
    }
}

/// Copies `name` from `src` to `dst` under the same name, create-only. The file is checked as
/// it streams (every chunk authenticated, the compressed stream decoded to its end, its length
/// compared with `content_len` when given); a file that fails is not committed.
pub fn copy_file(
    src: &Repository,
    dst: &Repository,
    name: &str,
    plain_compression: Compression,
    content_len: Option<u64>,
) -> Result<Copied, CopyError> {
    let (reader, compression) = open_source(src, name, plain_compression)?;
    let writer = dst.store().create(name)?;
    let counting = Counting {
        inner: writer,
        bytes: 0,
    };
    let werr =
        |e: io::Error| CopyError::Store(io_to_store(e, "writing", || dst.store().describe(name)));
    let out = match &dst.codec().encryption {
        None => Out::Plain(counting),
        Some(enc) => Out::Sealed(
            crate::crypto::chunked::ChunkSealer::new(
                counting,
                enc.aead,
                enc.active_key().1,
                enc.header_key_id(),
                compression.id(),
                enc.chunk_size,
                name,
            )
            .map_err(werr)?,
        ),
    };
    let mut tee = Tee {
        src: reader,
        out,
        dest_error: None,
    };
    let content_bytes = {
        let read_err = |tee: &mut Tee<_>, e: io::Error| match tee.dest_error.take() {
            Some(d) => werr(d),
            None => CopyError::source_io(src, name, compression, e),
        };
        let mut decoder = Decoder::new(&mut tee, compression)
            .map_err(|e| CopyError::source_io(src, name, compression, e))?;
        let mut buf = vec![0u8; BUFFER];
        let mut total = 0u64;
        let result = loop {
            match decoder.read(&mut buf) {
                Ok(0) => break Ok(total),
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        drop(decoder);
        match result {
            Ok(t) => t,
            Err(e) => return Err(read_err(&mut tee, e)),
        }
    };
    // Whatever follows the compressed stream is copied too, so the bytes stay the same.
    let mut rest = vec![0u8; BUFFER];
    loop {
        match tee.read(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(match tee.dest_error.take() {
                    Some(d) => werr(d),
                    None => CopyError::source_io(src, name, compression, e),
                })
            }
        }
    }
    if let Some(expected) = content_len {
        if expected != content_bytes {
            return Err(CopyError::SourceMismatch {
                file: src.store().describe(name),
                detail: format!("it holds {content_bytes} bytes, {expected} expected"),
            });
        }
    }
    let counting = tee.out.finish().map_err(werr)?;
    let stored_bytes = counting.bytes;
    counting.inner.commit(PutMode::Create)?;
    Ok(Copied {
        stored_bytes,
        content_bytes,
    })
}

/// Whether `name` holds the same content in both repositories (decrypted and decompressed,
/// streamed and compared byte for byte). A damaged source is an error, not a difference.
pub fn same_content(src: &Repository, dst: &Repository, name: &str) -> Result<bool, CopyError> {
    let mut a = src
        .open_file(name)
        .map_err(|e| CopyError::source_repo(src, name, e))?;
    let mut b = dst.open_file(name).map_err(|e| CopyError::Destination {
        file: dst.store().describe(name),
        detail: e.to_string(),
    })?;
    let (mut x, mut y) = (vec![0u8; BUFFER], vec![0u8; BUFFER]);
    loop {
        let n = read_full(&mut a, &mut x)
            .map_err(|e| CopyError::source_io(src, name, Compression::None, e))?;
        let m = read_full(&mut b, &mut y).map_err(|e| CopyError::Destination {
            file: dst.store().describe(name),
            detail: e.to_string(),
        })?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The size of `name` in `repo`, or `None`.
pub fn size_of(repo: &Repository, name: &str) -> Result<Option<u64>, StoreError> {
    Ok(repo.store().head(name)?.map(|m| m.size))
}

/// `detail`, starting with the file's name unless it already names it.
fn with_file(file: &str, detail: String) -> String {
    if detail.contains(file) {
        detail
    } else {
        format!("{file}: {detail}")
    }
}

impl CopyError {
    fn source_file(src: &Repository, name: &str, e: FileError) -> CopyError {
        if let FileError::Io { source, .. } = &e {
            if source.kind() == io::ErrorKind::NotFound {
                return CopyError::SourceMissing {
                    file: src.store().describe(name),
                };
            }
        }
        let file = src.store().describe(name);
        CopyError::Source {
            detail: with_file(&file, e.to_string()),
            file,
            io: matches!(e, FileError::Io { .. }),
        }
    }

    fn source_io(
        src: &Repository,
        name: &str,
        compression: Compression,
        e: io::Error,
    ) -> CopyError {
        let file = src.store().describe(name);
        match FileError::from_io(&e) {
            Some(f) => CopyError::Source {
                detail: with_file(&file, f.to_string()),
                file,
                io: matches!(f, FileError::Io { .. }),
            },
            None => CopyError::Source {
                detail: format!(
                    "{file}: its {} stream is damaged: {e}",
                    compression.family()
                ),
                file,
                io: false,
            },
        }
    }

    fn source_repo(src: &Repository, name: &str, e: crate::repo::RepoError) -> CopyError {
        match e {
            crate::repo::RepoError::File(f) => Self::source_file(src, name, f),
            crate::repo::RepoError::Store(s) if s.is_not_found() => CopyError::SourceMissing {
                file: src.store().describe(name),
            },
            other => CopyError::Repo(other),
        }
    }
}
