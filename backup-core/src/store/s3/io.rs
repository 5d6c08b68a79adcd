//! Streamed writes (one PUT, or a multipart upload completed on commit) and streamed reads of
//! S3 objects, with bounded memory: a writer holds at most its current part plus
//! [`PARTS_IN_FLIGHT`] being uploaded; a reader about one refill.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::TryStreamExt;
use object_store::{MultipartUpload, ObjectStore, PutPayload};
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

/// An object being read.
pub(crate) struct S3Reader {
    inner: Arc<Inner>,
    name: String,
    stream: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    chunks: VecDeque<Bytes>,
}

impl S3Reader {
    pub(crate) fn open(inner: Arc<Inner>, name: &str) -> Result<S3Reader, StoreError> {
        let client = Arc::clone(&inner.client);
        let key = inner.key(name);
        let got = inner
            .run(async move { client.get(&key).await })
            .map_err(|e| inner.error("reading", name, e))?;
        Ok(S3Reader {
            stream: Some(got.into_stream()),
            inner,
            name: name.to_string(),
            chunks: VecDeque::new(),
        })
    }

    fn refill(&mut self) -> io::Result<()> {
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
                self.chunks.extend(chunks);
                if more {
                    self.stream = Some(stream);
                }
                Ok(())
            }
            Err(e) => Err(self.inner.error("reading", &self.name, e).into_io()),
        }
    }
}

impl Read for S3Reader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunks.front().is_none_or(|c| c.is_empty()) {
            self.chunks.pop_front();
            if self.stream.is_none() && self.chunks.is_empty() {
                return Ok(0);
            }
            if self.chunks.is_empty() {
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
