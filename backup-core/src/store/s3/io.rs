//! Streamed writes (one PUT, or a multipart upload completed on commit) and streamed reads of
//! S3 objects, with bounded memory: a writer holds at most its current part plus
//! [`PARTS_IN_FLIGHT`] being uploaded; a reader about one refill.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::TryStreamExt;
use object_store::{GetOptions, GetRange, MultipartUpload, ObjectStore, PutPayload};
use tokio::task::JoinHandle;

use super::{Inner, PARTS_IN_FLIGHT, PART_SIZE, SINGLE_PUT_MAX};
use crate::store::{ObjectWriter, PutMode, StoreError};

/// An object being written.
pub(crate) struct S3Writer {
    inner: Arc<Inner>,
    name: String,
    buf: BytesMut,
    upload: Option<Box<dyn MultipartUpload>>,
    inflight: VecDeque<JoinHandle<object_store::Result<()>>>,
    /// Bytes written so far.
    written: u64,
}

impl S3Writer {
    pub(crate) fn new(inner: Arc<Inner>, name: &str) -> S3Writer {
        S3Writer {
            inner,
            name: name.to_string(),
            buf: BytesMut::new(),
            upload: None,
            inflight: VecDeque::new(),
            written: 0,
        }
    }

    fn err(&self, op: &'static str, e: object_store::Error) -> io::Error {
        self.inner.error(op, &self.name, e).into_io()
    }

    /// Sends `part`, waiting while [`PARTS_IN_FLIGHT`] others are still uploading.
    fn send_part(&mut self, part: Bytes) -> io::Result<()> {
        let upload = self.upload.as_mut().expect("a multipart upload is started");
        let fut = upload.put_part(PutPayload::from(part));
        let handle = self.inner.spawn(fut);
        self.inflight.push_back(handle);
        while self.inflight.len() > PARTS_IN_FLIGHT {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self) -> io::Result<()> {
        if let Some(h) = self.inflight.pop_front() {
            let r = self.inner.run(h);
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(self.err("uploading a part of", e)),
                Err(e) => return Err(io::Error::other(format!("a part upload failed: {e}"))),
            }
        }
        Ok(())
    }

    fn start_multipart(&mut self) -> io::Result<()> {
        let client = Arc::clone(&self.inner.client);
        let key = self.inner.key(&self.name);
        let upload = self
            .inner
            .run(async move { client.put_multipart(&key).await })
            .map_err(|e| self.err("starting the upload of", e))?;
        self.upload = Some(upload);
        Ok(())
    }

    fn commit_inner(&mut self, mode: PutMode) -> Result<(), StoreError> {
        let location = self.inner.describe(&self.name);
        let to_store = |e: io::Error| match StoreError::from_io(&e) {
            Some(_) => crate::store::io_to_store(e, "writing", String::new),
            None => StoreError::Remote {
                op: "writing",
                location: location.clone(),
                detail: e.to_string(),
            },
        };
        if self.upload.is_none() {
            let payload = std::mem::take(&mut self.buf).freeze();
            return self.inner.put_whole(&self.name, payload, mode);
        }
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf).freeze();
            self.send_part(rest).map_err(to_store)?;
        }
        while !self.inflight.is_empty() {
            self.wait_oldest().map_err(to_store)?;
        }
        if mode == PutMode::Create {
            // Completion cannot be conditional through the client: look just before.
            let client = Arc::clone(&self.inner.client);
            let key = self.inner.key(&self.name);
            if self
                .inner
                .run(async move { client.head(&key).await })
                .is_ok()
            {
                return Err(StoreError::AlreadyExists {
                    location: self.inner.describe(&self.name),
                });
            }
        }
        let mut upload = self.upload.take().expect("checked above");
        let done = self.inner.run(async move {
            let r = upload.complete().await;
            (upload, r)
        });
        match done {
            (_, Ok(_)) => Ok(()),
            // The completion was done but its answer lost, and the retry found no upload:
            // the object is there, whole (it was absent just before, for a create).
            (_, Err(e)) if self.completed_anyway() => {
                tracing::debug!(object = %self.name, "a retried completion found its object: {e}");
                Ok(())
            }
            (upload, Err(e)) => {
                self.upload = Some(upload);
                Err(self.inner.error("completing the upload of", &self.name, e))
            }
        }
    }
}

impl S3Writer {
    fn completed_anyway(&self) -> bool {
        let client = Arc::clone(&self.inner.client);
        let key = self.inner.key(&self.name);
        let written = self.written;
        self.inner
            .run(async move { client.head(&key).await })
            .is_ok_and(|m| m.size == written)
    }
}

impl Write for S3Writer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.upload.is_none() && self.buf.len() > SINGLE_PUT_MAX {
            self.start_multipart()?;
        }
        if self.upload.is_some() {
            while self.buf.len() >= PART_SIZE {
                let part = self.buf.split_to(PART_SIZE).freeze();
                self.send_part(part)?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn commit(mut self: Box<Self>, mode: PutMode) -> Result<(), StoreError> {
        self.commit_inner(mode)
    }
}

impl Drop for S3Writer {
    /// An upload that was not completed is aborted, so its parts do not linger in the bucket.
    fn drop(&mut self) {
        for h in self.inflight.drain(..) {
            h.abort();
        }
        if let Some(mut upload) = self.upload.take() {
            let _ = self.inner.run(async move { upload.abort().await });
        }
    }
}

/// How much one refill fetches from the body stream.
const REFILL: usize = 1 << 20;

/// An object is read in ranged requests of this size: each must finish within the client's
/// request timeout (which covers the whole body), and a body error is retried only within
/// the retry budget counted from its request's start, so one request for a many-gigabyte
/// object would fail however healthy the transfer. 16 MiB in 120 s needs about 140 KB/s.
pub const READ_WINDOW: u64 = 16 << 20;

/// An object being read, one window (a ranged GET, all of the same version) at a time.
pub(crate) struct S3Reader {
    inner: Arc<Inner>,
    name: String,
    size: u64,
    /// The version being read: every window must be of it.
    e_tag: Option<String>,
    /// Where the next window starts.
    next: u64,
    /// Bytes the current window has still to deliver.
    window_left: u64,
    stream: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    chunks: VecDeque<Bytes>,
}

impl S3Reader {
    pub(crate) fn open(inner: Arc<Inner>, name: &str) -> Result<S3Reader, StoreError> {
        let client = Arc::clone(&inner.client);
        let key = inner.key(name);
        let meta = inner
            .run(async move { client.head(&key).await })
            .map_err(|e| inner.error("reading", name, e))?;
        Ok(S3Reader {
            size: meta.size,
            e_tag: meta.e_tag,
            next: 0,
            window_left: 0,
            stream: None,
            inner,
            name: name.to_string(),
            chunks: VecDeque::new(),
        })
    }

    /// Starts the next window's request.
    fn open_window(&mut self) -> io::Result<()> {
        let client = Arc::clone(&self.inner.client);
        let key = self.inner.key(&self.name);
        let range = self.next..self.size.min(self.next + READ_WINDOW);
        let options = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            if_match: self.e_tag.clone(),
            ..GetOptions::default()
        };
        let got = self
            .inner
            .run(async move { client.get_opts(&key, options).await })
            .map_err(|e| self.inner.error("reading", &self.name, e).into_io())?;
        // If-Match asks the store to refuse another version; not every store does, so look too.
        if got.meta.e_tag != self.e_tag {
            return Err(io::Error::other(format!(
                "{} was replaced while it was being read (ETag {:?}, then {:?}); read it again",
                self.inner.describe(&self.name),
                self.e_tag.as_deref().unwrap_or(""),
                got.meta.e_tag.as_deref().unwrap_or("")
            )));
        }
        self.next = range.end;
        self.window_left = range.end - range.start;
        self.stream = Some(got.into_stream());
        Ok(())
    }

    fn refill(&mut self) -> io::Result<()> {
        if self.stream.is_none() {
            if self.next >= self.size {
                return Ok(());
            }
            self.open_window()?;
        }
        let Some(mut stream) = self.stream.take() else {
            return Ok(());
        };
        let (stream, got) = self.inner.run(async move {
            let mut got = Vec::new();
            let mut bytes = 0;
            let result = loop {
                match stream.try_next().await {
                    Ok(Some(b)) => {
                        bytes += b.len();
                        got.push(b);
                        if bytes >= REFILL {
                            break Ok(true);
                        }
                    }
                    Ok(None) => break Ok(false),
                    Err(e) => break Err(e),
                }
            };
            (stream, result.map(|more| (more, got)))
        });
        match got {
            Ok((more, chunks)) => {
                let got: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                self.window_left = self.window_left.saturating_sub(got);
                self.chunks.extend(chunks);
                if more {
                    self.stream = Some(stream);
                } else if self.window_left > 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{}: the store ended a ranged read {} bytes short",
                            self.inner.describe(&self.name),
                            self.window_left
                        ),
                    ));
                }
                Ok(())
            }
            Err(e) => Err(self.inner.error("reading", &self.name, e).into_io()),
        }
    }

    fn done(&self) -> bool {
        self.stream.is_none() && self.next >= self.size
    }
}

impl Read for S3Reader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunks.front().is_none_or(|c| c.is_empty()) {
            self.chunks.pop_front();
            if self.chunks.is_empty() {
                if self.done() {
                    return Ok(0);
                }
                self.refill()?;
            }
        }
        let front = self.chunks.front_mut().expect("checked above");
        let n = out.len().min(front.len());
        out[..n].copy_from_slice(&front[..n]);
        let _ = front.split_to(n);
        Ok(n)
    }
}
