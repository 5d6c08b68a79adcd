//! One tar archive of a base backup on its way into the repository.
//!
//! The network task hands chunks to a bounded channel; a blocking worker writes them through
//! the repository sink (compress → encrypt → durable file) while a second thread walks the
//! tar stream and checksums every member for the manifest check. The two threads overlap with
//! each other and with the network, and every channel is bounded, so a slow disk slows the
//! server down instead of filling memory.

use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::BaseBackupError;
use crate::catalog::ArchiveRecord;
use crate::compress::{Compression, Decoder};
use crate::layout;
use crate::repo::Repository;
use crate::sink::{FileCodec, FileSink};
use crate::tarwalk::{SeenFile, TarWalker};

/// Batches in flight between the network and the writer, and between writer and verifier.
const CHANNEL_BATCHES: usize = 4;
/// The network hands over its ~32 KiB messages in batches of about this many bytes: one
/// thread wake-up per batch instead of per message (a wake-up costs more than moving 32 KiB).
const BATCH_BYTES: usize = 1024 * 1024;

/// Received chunks, passed on without copying.
type Batch = Arc<Vec<Bytes>>;

/// The tablespace an archive belongs to.
#[derive(Debug, Clone)]
pub(crate) struct TablespaceOf {
    pub oid: u32,
    pub location: String,
}

/// What a finished archive left behind.
pub(crate) struct ArchiveOutcome {
    pub record: ArchiveRecord,
    pub seen: Vec<SeenFile>,
}

/// An archive being written.
pub(crate) struct ArchiveWriter {
    tx: Option<mpsc::Sender<Batch>>,
    batch: Vec<Bytes>,
    batch_bytes: usize,
    task: JoinHandle<Result<ArchiveOutcome, BaseBackupError>>,
    /// The task's result was taken (it ended early and said why).
    ended: bool,
}

/// The server-side compression an archive arrived with, from its name.
fn server_compression(name: &str) -> Option<Compression> {
    if name.ends_with(".gz") {
        Some(Compression::Gzip(1))
    } else if name.ends_with(".lz4") {
        Some(Compression::Lz4)
    } else if name.ends_with(".zst") {
        Some(Compression::Zstd(1))
    } else {
        None
    }
}

impl ArchiveWriter {
    /// Starts writing archive `name` (as the server named it) of backup `backup_id`.
    pub fn start(
        repo: Arc<Repository>,
        backup_id: &str,
        name: String,
        tablespace: Option<TablespaceOf>,
    ) -> ArchiveWriter {
        let (tx, rx) = mpsc::channel::<Batch>(CHANNEL_BATCHES);
        let backup_id = backup_id.to_string();
        let task = tokio::task::spawn_blocking(move || {
            write_archive(&repo, &backup_id, &name, tablespace, rx)
        });
        ArchiveWriter {
            tx: Some(tx),
            batch: Vec::new(),
            batch_bytes: 0,
            task,
            ended: false,
        }
    }

    /// Hands over the next chunk; waits while the writer is behind.
    pub async fn send(&mut self, chunk: Bytes) -> Result<(), BaseBackupError> {
        self.batch_bytes += chunk.len();
        self.batch.push(chunk);
        if self.batch_bytes >= BATCH_BYTES {
            self.send_batch().await?;
        }
        Ok(())
    }

    async fn send_batch(&mut self) -> Result<(), BaseBackupError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = Arc::new(std::mem::take(&mut self.batch));
        self.batch_bytes = 0;
        let Some(tx) = self.tx.as_ref() else {
            return Err(BaseBackupError::Internal(
                "archive data after the end of the archive".into(),
            ));
        };
        if tx.send(batch).await.is_err() {
            // The worker stopped early: its result says why.
            self.tx = None;
            self.ended = true;
            return match (&mut self.task).await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(_)) => Err(BaseBackupError::Internal(
                    "the archive writer stopped before the end of the archive".into(),
                )),
                Err(e) => Err(BaseBackupError::Internal(format!(
                    "the archive writer failed: {e}"
                ))),
            };
        }
        Ok(())
    }

    /// Stops writing: the archive is abandoned, and this returns once its writer has let go of
    /// every file (so what it wrote can be removed).
    pub async fn abort(mut self) {
        self.tx = None;
        self.batch.clear();
        if !self.ended {
            let _ = (&mut self.task).await;
        }
    }

    /// Ends the archive and waits until it is durable and walked.
    pub async fn finish(mut self) -> Result<ArchiveOutcome, BaseBackupError> {
        self.send_batch().await?;
        self.tx = None;
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(BaseBackupError::Internal(format!(
                "the archive writer failed: {e}"
            ))),
        }
    }
}

fn write_archive(
    repo: &Repository,
    backup_id: &str,
    name: &str,
    tablespace: Option<TablespaceOf>,
    mut rx: mpsc::Receiver<Batch>,
) -> Result<ArchiveOutcome, BaseBackupError> {
    let server_comp = server_compression(name);
    // Archives the server compressed are stored as they came (only encrypted).
    let codec = match server_comp {
        Some(_) => FileCodec {
            compression: Compression::None,
            encryption: repo.codec().encryption.clone(),
        },
        None => repo.codec().clone(),
    };
    let file = format!("{name}{}", layout::suffix(&codec));
    let identity = layout::backup_file(backup_id, &file);
    let sink_err = |source| BaseBackupError::Sink {
        file: identity.clone(),
        source,
    };
    let mut sink = FileSink::create(repo.store().as_ref(), &identity, &codec).map_err(sink_err)?;
    let path = sink.path().to_path_buf();

    let (vtx, vrx) = sync_channel::<Batch>(CHANNEL_BATCHES);
    let prefix = tablespace
        .as_ref()
        .map(|t| format!("pg_tblspc/{}", t.oid))
        .unwrap_or_default();
    let archive_name = name.to_string();
    let verifier =
        std::thread::spawn(move || walk_archive(&archive_name, vrx, server_comp, &prefix));

    let mut received: u64 = 0;
    let mut write_error = None;
    'batches: while let Some(batch) = rx.blocking_recv() {
        if vtx.send(Arc::clone(&batch)).is_err() {
            break; // the verifier failed; its error is collected below
        }
        for chunk in batch.iter() {
            received += chunk.len() as u64;
            if let Err(e) = sink.write_all(chunk) {
                write_error = Some(BaseBackupError::Sink {
                    file: identity.clone(),
                    source: crate::sink::SinkError::Write {
                        path: path.clone(),
                        source: e,
                    },
                });
                break 'batches;
            }
        }
    }
    drop(vtx);
    drop(rx);
    let walked = verifier
        .join()
        .map_err(|_| BaseBackupError::Internal(format!("the verifier of {name} panicked")))?;
    if let Some(e) = write_error {
        return Err(e);
    }
    let (seen, raw_tar_bytes) = walked?;
    let summary = sink.finish().map_err(sink_err)?;
    Ok(ArchiveOutcome {
        record: ArchiveRecord {
            name: name.to_string(),
            file,
            tablespace_oid: tablespace.as_ref().map(|t| t.oid),
            tablespace_location: tablespace.map(|t| t.location),
            raw_bytes: if server_comp.is_some() {
                raw_tar_bytes
            } else {
                received
            },
            stored_bytes: summary.stored_bytes,
            server_compression: server_comp.map(|c| c.family().to_string()),
        },
        seen,
    })
}

/// Walks the tar stream (decompressing it first when the server compressed it) and returns
/// every member with its checksum, and the uncompressed size.
fn walk_archive(
    name: &str,
    rx: Receiver<Batch>,
    compression: Option<Compression>,
    prefix: &str,
) -> Result<(Vec<SeenFile>, u64), BaseBackupError> {
    let tar_err = |source| BaseBackupError::Tar {
        archive: name.to_string(),
        source,
    };
    let mut walker = TarWalker::new();
    if !prefix.is_empty() {
        walker = walker.path_prefix(prefix);
    }
    let mut total = 0u64;
    match compression {
        None => {
            for batch in rx {
                for chunk in batch.iter() {
                    total += chunk.len() as u64;
                    walker.push(chunk).map_err(tar_err)?;
                }
            }
        }
        Some(c) => {
            let mut decoder = Decoder::new(ChannelReader::new(rx), c).map_err(|e| {
                BaseBackupError::Decompress {
                    archive: name.to_string(),
                    source: e,
                }
            })?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = decoder
                    .read(&mut buf)
                    .map_err(|e| BaseBackupError::Decompress {
                        archive: name.to_string(),
                        source: e,
                    })?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                walker.push(&buf[..n]).map_err(tar_err)?;
            }
        }
    }
    Ok((walker.finish().map_err(tar_err)?, total))
}

/// `Read` over a channel of chunks, for the pull-based decompressors.
struct ChannelReader {
    rx: Receiver<Batch>,
    batch: Batch,
    next: usize,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: Receiver<Batch>) -> Self {
        ChannelReader {
            rx,
            batch: Arc::new(Vec::new()),
            next: 0,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if let Some(chunk) = self.batch.get(self.next) {
                self.current = chunk.clone();
                self.next += 1;
                continue;
            }
            match self.rx.recv() {
                Ok(batch) => {
                    self.batch = batch;
                    self.next = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_compression_from_names() {
        assert_eq!(server_compression("base.tar"), None);
        assert_eq!(server_compression("base.tar.lz4"), Some(Compression::Lz4));
        assert!(matches!(
            server_compression("16384.tar.gz"),
            Some(Compression::Gzip(_))
        ));
        assert!(matches!(
            server_compression("base.tar.zst"),
            Some(Compression::Zstd(_))
        ));
    }

    #[test]
    fn channel_reader_reads_across_chunks() {
        let (tx, rx) = sync_channel(4);
        tx.send(Arc::new(vec![
            Bytes::from_static(b"he"),
            Bytes::from_static(b"l"),
        ]))
        .unwrap();
        tx.send(Arc::new(vec![Bytes::new()])).unwrap();
        tx.send(Arc::new(Vec::new())).unwrap();
        tx.send(Arc::new(vec![Bytes::from_static(b"lo")])).unwrap();
        drop(tx);
        let mut s = String::new();
        ChannelReader::new(rx).read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
    }
}
