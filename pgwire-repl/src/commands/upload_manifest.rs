//! UPLOAD_MANIFEST (PostgreSQL 17+): the first half of an incremental backup. The client sends
//! the manifest of the backup the next one is relative to; the server keeps it for the rest of
//! the session, and a `BASE_BACKUP (INCREMENTAL, …)` on the same connection then sends only
//! what changed since (protocol.md §3.8).
//!
//! The exchange (walsender.c `UploadManifest`):
//! 1. Query `UPLOAD_MANIFEST`; the server answers CopyInResponse `G`, or an error then `Z`.
//! 2. CopyData with the manifest, in any number of pieces, then CopyDone.
//! 3. CommandComplete `UPLOAD_MANIFEST`, ReadyForQuery. A manifest the server cannot use (from
//!    another cluster, version 1, malformed) is refused with an ErrorResponse instead, possibly
//!    before all the data was sent: the server then ignores the rest of the copy, as every
//!    backend does after a failed COPY FROM STDIN.
//!
//! [`UploadExchange`] follows the server's side of that exchange without doing any I/O, so it is
//! tested message by message; [`ManifestUpload`] drives it over a [`Connection`].

use crate::codec::BackendMessage;
use crate::connection::Connection;
use crate::error::{DbError, Error, ProtocolError};

/// The command text.
pub const UPLOAD_MANIFEST: &str = "UPLOAD_MANIFEST";

/// The largest CopyData the upload sends: the manifest streams in pieces of at most this.
pub const UPLOAD_CHUNK: usize = 64 * 1024;

/// What the client does next, after a backend message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read another message.
    Read,
    /// CopyIn is open: send the manifest, then CopyDone (and call
    /// [`UploadExchange::copy_done_sent`]).
    SendManifest,
    /// The server took the manifest and is ready for BASE_BACKUP.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// The query was sent; CopyInResponse (or an error) comes next.
    AwaitCopyIn,
    /// CopyIn is open; the client is sending. Only an error (or a notice) can arrive now.
    Sending,
    /// CopyDone was sent; CommandComplete then ReadyForQuery come next.
    AwaitCompletion {
        completed: bool,
    },
    /// The server refused; reading up to its ReadyForQuery.
    Refused(Box<DbError>),
    Finished,
}

/// The server's side of one UPLOAD_MANIFEST exchange, fed the backend messages in order.
#[derive(Debug, Clone)]
pub struct UploadExchange {
    state: State,
}

impl Default for UploadExchange {
    fn default() -> Self {
        UploadExchange::new()
    }
}

/// Why an exchange failed: the server refused (the session stays usable), or it broke the
/// protocol (the session does not).
#[derive(Debug)]
pub enum ExchangeError {
    Server(Box<DbError>),
    Protocol(ProtocolError),
}

impl From<ExchangeError> for Error {
    fn from(e: ExchangeError) -> Error {
        match e {
            ExchangeError::Server(db) => Error::Server(db),
            ExchangeError::Protocol(p) => Error::Protocol(p),
        }
    }
}

impl UploadExchange {
    /// An exchange whose query has just been sent.
    pub fn new() -> Self {
        UploadExchange {
            state: State::AwaitCopyIn,
        }
    }

    /// Whether the client is in the middle of sending (CopyIn open, CopyDone not yet sent).
    pub fn is_sending(&self) -> bool {
        self.state == State::Sending
    }

    /// Whether the exchange is over (successfully or not).
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// The client sent CopyDone.
    pub fn copy_done_sent(&mut self) {
        if self.state == State::Sending {
            self.state = State::AwaitCompletion { completed: false };
        }
    }

    /// Takes the next backend message (notices and parameter statuses are handled by the
    /// connection before they get here).
    pub fn on_message(&mut self, msg: BackendMessage) -> Result<Next, ExchangeError> {
        let unexpected = |tag: char, context: &'static str| {
            ExchangeError::Protocol(ProtocolError::Unexpected { tag, context })
        };
        match (std::mem::replace(&mut self.state, State::Finished), msg) {
            (State::AwaitCopyIn, BackendMessage::CopyInResponse) => {
                self.state = State::Sending;
                Ok(Next::SendManifest)
            }
            (
                State::AwaitCopyIn | State::Sending | State::AwaitCompletion { .. },
                BackendMessage::ErrorResponse(e),
            ) => {
                self.state = State::Refused(Box::new(e));
                Ok(Next::Read)
            }
            (State::AwaitCompletion { completed: false }, BackendMessage::CommandComplete(_)) => {
                self.state = State::AwaitCompletion { completed: true };
                Ok(Next::Read)
            }
            (State::AwaitCompletion { completed: true }, BackendMessage::ReadyForQuery(_)) => {
                Ok(Next::Done)
            }
            (State::Refused(e), BackendMessage::ReadyForQuery(_)) => Err(ExchangeError::Server(e)),
            // Whatever else a refused command sends before ReadyForQuery is of no interest.
            (State::Refused(e), _) => {
                self.state = State::Refused(e);
                Ok(Next::Read)
            }
            (State::AwaitCopyIn, other) => {
                Err(unexpected(other.tag(), "in reply to UPLOAD_MANIFEST"))
            }
            (State::Sending, other) => Err(unexpected(
                other.tag(),
                "while the client was sending the manifest (UPLOAD_MANIFEST)",
            )),
            (State::AwaitCompletion { .. }, other) => Err(unexpected(
                other.tag(),
                "after the manifest was sent (UPLOAD_MANIFEST)",
            )),
            (State::Finished, other) => Err(unexpected(
                other.tag(),
                "after UPLOAD_MANIFEST had finished",
            )),
        }
    }
}

/// An UPLOAD_MANIFEST in progress: send the manifest with [`ManifestUpload::send`], then
/// [`ManifestUpload::finish`]. Dropped before `finish`, it leaves the connection unusable
/// (the server still waits for the rest of the copy).
pub struct ManifestUpload<'a> {
    conn: &'a mut Connection,
    exchange: UploadExchange,
    bytes: u64,
}

impl Connection {
    /// Starts UPLOAD_MANIFEST (PostgreSQL 17+, replication connections): returns once the
    /// server is ready for the manifest, or with its refusal.
    pub async fn start_manifest_upload(&mut self) -> Result<ManifestUpload<'_>, Error> {
        self.require_replication(UPLOAD_MANIFEST)?;
        self.require_major(UPLOAD_MANIFEST, 17)?;
        self.send_query(UPLOAD_MANIFEST).await?;
        let mut exchange = UploadExchange::new();
        loop {
            let msg = self.read_message().await?;
            match exchange.on_message(msg) {
                Ok(Next::SendManifest) => break,
                Ok(Next::Read) => {}
                Ok(Next::Done) => {
                    return Err(self.protocol_violation('Z', "before the manifest was sent"))
                }
                Err(ExchangeError::Server(e)) => return Err(Error::Server(e)),
                Err(ExchangeError::Protocol(p)) => {
                    self.mark_broken(format!("protocol error: {p}"));
                    return Err(Error::Protocol(p));
                }
            }
        }
        Ok(ManifestUpload {
            conn: self,
            exchange,
            bytes: 0,
        })
    }

    /// UPLOAD_MANIFEST of `manifest`, whole (for manifests already in memory).
    pub async fn upload_manifest(&mut self, manifest: &[u8]) -> Result<(), Error> {
        let mut upload = self.start_manifest_upload().await?;
        upload.send(manifest).await?;
        upload.finish().await
    }
}

impl ManifestUpload<'_> {
    /// Sends the next piece of the manifest (split into CopyData of at most [`UPLOAD_CHUNK`]).
    pub async fn send(&mut self, data: &[u8]) -> Result<(), Error> {
        for piece in data.chunks(UPLOAD_CHUNK) {
            self.conn.send_copy_data(piece).await?;
            self.bytes += piece.len() as u64;
        }
        Ok(())
    }

    /// Bytes sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes
    }

    /// Sends CopyDone and waits until the server has taken (or refused) the manifest.
    pub async fn finish(mut self) -> Result<(), Error> {
        self.conn.send_copy_done().await?;
        self.exchange.copy_done_sent();
        loop {
            let msg = self.conn.read_message().await?;
            match self.exchange.on_message(msg) {
                Ok(Next::Done) => return Ok(()),
                Ok(Next::Read) => {}
                Ok(Next::SendManifest) => {
                    return Err(self
                        .conn
                        .protocol_violation('G', "twice in UPLOAD_MANIFEST"))
                }
                Err(ExchangeError::Server(e)) => {
                    self.exchange.state = State::Finished;
                    return Err(Error::Server(e));
                }
                Err(ExchangeError::Protocol(p)) => {
                    self.conn.mark_broken(format!("protocol error: {p}"));
                    return Err(Error::Protocol(p));
                }
            }
        }
    }
}

impl Drop for ManifestUpload<'_> {
    fn drop(&mut self) {
        if self.exchange.is_sending() {
            self.conn
                .mark_broken("an UPLOAD_MANIFEST was abandoned in the middle of its copy");
        }
    }
}

#[cfg(test)]
mod tests;
