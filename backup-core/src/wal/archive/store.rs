//! Storing into the archive: idempotent, never overwriting, streamed and validated.

use std::io::{Read, Write};

use super::{
    read_full, read_some, ArchiveFileName, StoreOutcome, WalArchive, WalArchiveError, BUFFER,
};
use crate::crc::Crc32c;
use crate::sink::SinkError;
use crate::wal::WalFileName;

impl WalArchive<'_> {
    /// Stores a complete segment (exactly the segment size, page headers checked against the
    /// repository's cluster when it is bound), a `.partial` segment (at most the segment size)
    /// or a timeline history file, read from `src`.
    pub fn store(
        &self,
        file: &WalFileName,
        src: &mut dyn Read,
    ) -> Result<StoreOutcome, WalArchiveError> {
        self.store_file(&ArchiveFileName::Wal(*file), src)
    }

    /// [`WalArchive::store`] for any archivable name, backup history files included.
    pub fn store_file(
        &self,
        file: &ArchiveFileName,
        src: &mut dyn Read,
    ) -> Result<StoreOutcome, WalArchiveError> {
        let name = file.to_string();
        let stored = self.stored_name(file);
        if self.repo.store().head(&stored)?.is_some() {
            return self.compare_existing(&name, &stored, src);
        }
        let mut check = self.checker(file)?;
        let mut sink = self.repo.create_file(&stored)?;
        let (mut crc, mut len) = (Crc32c::new(), 0u64);
        let mut buf = vec![0u8; BUFFER];
        loop {
            let n = read_some(src, &mut buf).map_err(|source| WalArchiveError::Source {
                name: name.clone(),
                source,
            })?;
            if n == 0 {
                break;
            }
            check.push(&buf[..n])?;
            crc.update(&buf[..n]);
            len += n as u64;
            sink.write_all(&buf[..n])
                .map_err(|source| WalArchiveError::Sink {
                    stored: stored.clone(),
                    source: SinkError::Write {
                        path: sink.path().into(),
                        source,
                    },
                })?;
        }
        // An invalid file is refused here: dropping the sink removes its temporary file.
        check.finish()?;
        match sink.finish() {
            Ok(_) => {
                crate::failpoint!("wal-archive.stored");
                tracing::debug!(file = %name, stored = %stored, "stored in the WAL archive");
                Ok(StoreOutcome::Stored)
            }
            Err(SinkError::Store(e)) if e.is_already_exists() => {
                // Someone stored the name meanwhile: same content or a conflict.
                let (theirs_crc, theirs_len) = self.stored_crc(&stored)?;
                if (theirs_crc, theirs_len) == (crc.value(), len) {
                    Ok(StoreOutcome::AlreadyPresent)
                } else {
                    Err(WalArchiveError::Conflict { name, stored })
                }
            }
            Err(source) => Err(WalArchiveError::Sink { stored, source }),
        }
    }

    /// Streams `src` against the stored copy, byte for byte.
    fn compare_existing(
        &self,
        name: &str,
        stored: &str,
        src: &mut dyn Read,
    ) -> Result<StoreOutcome, WalArchiveError> {
        let mut ours = self.repo.open_file(stored)?;
        let (mut a, mut b) = (vec![0u8; BUFFER], vec![0u8; BUFFER]);
        loop {
            let n = read_some(src, &mut a).map_err(|source| WalArchiveError::Source {
                name: name.to_string(),
                source,
            })?;
            let m = read_full(&mut ours, &mut b[..n.max(1)]).map_err(|source| {
                WalArchiveError::Stored {
                    stored: stored.to_string(),
                    source,
                }
            })?;
            if n == 0 {
                return if m == 0 {
                    Ok(StoreOutcome::AlreadyPresent)
                } else {
                    Err(WalArchiveError::Conflict {
                        name: name.to_string(),
                        stored: stored.to_string(),
                    })
                };
            }
            if m != n || a[..n] != b[..n] {
                return Err(WalArchiveError::Conflict {
                    name: name.to_string(),
                    stored: stored.to_string(),
                });
            }
        }
    }

    /// CRC-32C and length of a stored file's content.
    pub(crate) fn stored_crc(&self, stored: &str) -> Result<(u32, u64), WalArchiveError> {
        let mut reader = self.repo.open_file(stored)?;
        let (mut crc, mut len) = (Crc32c::new(), 0u64);
        let mut buf = vec![0u8; BUFFER];
        loop {
            let n = read_some(&mut reader, &mut buf).map_err(|source| WalArchiveError::Stored {
                stored: stored.to_string(),
                source,
            })?;
            if n == 0 {
                return Ok((crc.value(), len));
            }
            crc.update(&buf[..n]);
            len += n as u64;
        }
    }
}
