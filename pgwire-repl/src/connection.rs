//! The tokio connection: one socket, its buffers, and the message-level operations that the
//! replication commands and streams are built from.
//!
//! Reading is pull-based: bytes are read from the socket only when a caller asks for the next
//! message and the buffer does not hold a complete one, so a slow consumer slows the server
//! down through TCP instead of growing a buffer. [`Connection::read_message`] is
//! cancellation-safe: partial messages stay in the buffer when its future is dropped, so it can
//! be used in `tokio::select!` beside timers.

mod result;
mod startup;
mod stream;

use std::collections::HashMap;
use std::future::Future;
use std::io;

use bytes::BytesMut;
use std::collections::VecDeque;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::codec::{self, BackendMessage};
use crate::config::Target;
use crate::error::{DbError, Error, ProtocolError};

pub use result::ResultSet;
pub use stream::Transport;

/// Bytes asked of the socket per read. Bounded so a fast server cannot make one read balloon.
const READ_CHUNK: usize = 512 * 1024;
/// Smallest read worth a system call.
const MIN_READ: usize = 8 * 1024;
/// Read buffers kept for reuse: enough to cover the messages a consumer holds in its queues
/// (a few MiB), at most `MAX_SPARE_READS × READ_CHUNK` bytes.
const MAX_SPARE_READS: usize = 16;

/// In a bulk transfer, after a read that had to wait for data (the server is the slower
/// side), how long to let data pile up in the socket before the next read, instead of waking
/// per message. At 1 GB/s that is ~250 KB: one read instead of eight wake-ups for 32 KiB
/// messages; the kernel grows the receive buffer well past it.
const BULK_READ_PAUSE: std::time::Duration = std::time::Duration::from_micros(250);

/// At most this many notices are kept for [`Connection::take_notices`]; all are logged.
const MAX_KEPT_NOTICES: usize = 64;

/// The server's version, from the `server_version` parameter it reports at startup.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
}

impl ServerVersion {
    /// Parses `16.2`, `16.2 (Debian 16.2-1)`, `15beta1`, `18devel`.
    pub fn parse(s: &str) -> Option<ServerVersion> {
        let digits = |s: &str| -> (Option<u32>, usize) {
            let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            (s[..end].parse().ok(), end)
        };
        let (major, end) = digits(s);
        let major = major?;
        let rest = &s[end..];
        let minor = rest
            .strip_prefix('.')
            .and_then(|r| digits(r).0)
            .unwrap_or(0);
        Some(ServerVersion { major, minor })
    }
}

impl std::fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// An authenticated connection, ready for commands.
#[derive(Debug)]
pub struct Connection {
    transport: Transport,
    rbuf: BytesMut,
    /// Earlier read buffers, oldest first, reused once every message cut from them is gone.
    spare_reads: VecDeque<BytesMut>,
    /// `rbuf` was allocated with `READ_CHUNK` bytes (and may join `spare_reads`).
    rbuf_is_standard: bool,
    wbuf: BytesMut,
    max_message_size: usize,
    parameters: HashMap<String, String>,
    server_version: ServerVersion,
    process_id: i32,
    target: Target,
    replication: bool,
    notices: Vec<DbError>,
    /// A bulk transfer is under way (see [`Connection::set_bulk_reads`]).
    bulk_reads: bool,
    /// The last socket read found nothing waiting and had to wait for the server.
    last_read_waited: bool,
    /// Set when the protocol state is unknown (an abandoned COPY, a protocol error); every
    /// later command fails instead of misreading leftover messages.
    broken: Option<String>,
}

impl Connection {
    /// The server's version.
    pub fn server_version(&self) -> ServerVersion {
        self.server_version
    }

    /// A run-time parameter the server reported (ParameterStatus), such as `server_version`,
    /// `in_hot_standby` (14+) or `integer_datetimes`.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// The backend process id, for `pg_stat_replication` and logs.
    pub fn process_id(&self) -> i32 {
        self.process_id
    }

    /// The host and port this connection reached.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Whether this is a physical replication (walsender) connection.
    pub fn is_replication(&self) -> bool {
        self.replication
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.transport.ssl().is_some()
    }

    /// Notices (warnings, "WAL archiving is not enabled", ...) received so far, oldest first.
    pub fn take_notices(&mut self) -> Vec<DbError> {
        std::mem::take(&mut self.notices)
    }

    /// Limits the size of a single message the server may send (default 64 MiB).
    pub fn set_max_message_size(&mut self, bytes: usize) {
        self.max_message_size = bytes;
    }

    /// Runs a simple query and returns its result sets. For replication commands and SQL
    /// alike. A server error is returned after the server is ready again, so the connection
    /// stays usable unless the error was FATAL.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<ResultSet>, Error> {
        self.send_query(sql).await?;
        self.read_results(sql).await
    }

    /// Sends a simple Query without waiting for the answer.
    pub async fn send_query(&mut self, sql: &str) -> Result<(), Error> {
        self.check_usable()?;
        tracing::debug!(query = sql, "sending query");
        codec::write::query(sql, &mut self.wbuf)?;
        self.flush().await
    }

    /// Reads result sets up to ReadyForQuery. `command` names the query in errors.
    pub async fn read_results(&mut self, command: &str) -> Result<Vec<ResultSet>, Error> {
        let mut results = Vec::new();
        let mut current: Option<ResultSet> = None;
        let mut error: Option<DbError> = None;
        loop {
            match self.read_message().await? {
                BackendMessage::RowDescription(columns) => {
                    current = Some(ResultSet {
                        columns,
                        ..ResultSet::default()
                    })
                }
                BackendMessage::DataRow(values) => match current.as_mut() {
                    Some(rs) => rs.rows.push(values),
                    None => {
                        return Err(self.protocol_violation('D', "before RowDescription"));
                    }
                },
                BackendMessage::CommandComplete(tag) => {
                    let mut rs = current.take().unwrap_or_default();
                    rs.tag = tag;
                    results.push(rs);
                }
                BackendMessage::EmptyQueryResponse => {}
                BackendMessage::ErrorResponse(e) => {
                    if is_fatal(&e) {
                        self.broken = Some(format!("the server ended the session: {}", e.message));
                        return Err(Error::Server(Box::new(e)));
                    }
                    error = Some(e);
                    current = None;
                }
                BackendMessage::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(Error::Server(Box::new(e))),
                        None => Ok(results),
                    };
                }
                other => {
                    let _ = command;
                    return Err(self.protocol_violation(other.tag(), "in a simple query result"));
                }
            }
        }
    }

    /// Reads the next message, handling NoticeResponse and ParameterStatus on the way (they
    /// may come at any time, even inside COPY). Cancellation-safe.
    pub async fn read_message(&mut self) -> Result<BackendMessage, Error> {
        self.check_usable()?;
        loop {
            match codec::decode(&mut self.rbuf, self.max_message_size) {
                Ok(Some(BackendMessage::NoticeResponse(n))) => {
                    tracing::info!(
                        severity = %n.severity,
                        code = %n.code,
                        "server notice: {}",
                        n.message
                    );
                    if self.notices.len() < MAX_KEPT_NOTICES {
                        self.notices.push(n);
                    }
                }
                Ok(Some(BackendMessage::ParameterStatus { name, value })) => {
                    self.parameters.insert(name, value);
                }
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {
                    self.make_read_room();
                    if pause_before_read(self.bulk_reads, self.last_read_waited) {
                        // A thread sleep, not a tokio timer: a thread parked in epoll would be
                        // woken by every segment that arrives, which is the cost avoided here
                        // (and tokio timers tick in whole milliseconds). Short and bounded.
                        std::thread::sleep(BULK_READ_PAUSE);
                    }
                    let mut waited = false;
                    let read = {
                        let mut read = std::pin::pin!(self.transport.read_buf(&mut self.rbuf));
                        std::future::poll_fn(|cx| {
                            let poll = read.as_mut().poll(cx);
                            waited |= poll.is_pending();
                            poll
                        })
                        .await
                    };
                    self.last_read_waited = waited;
                    let n = match read {
                        Ok(n) => n,
                        Err(e) => return Err(self.lost(e)),
                    };
                    if n == 0 {
                        let e = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection unexpectedly",
                        );
                        return Err(self.lost(e));
                    }
                }
                Err(e) => {
                    self.broken = Some(format!("protocol error: {e}"));
                    return Err(Error::Protocol(e));
                }
            }
        }
    }

    /// Ensures room to read the rest of the current message (at least `MIN_READ` bytes).
    ///
    /// Messages handed out share `rbuf`'s allocation. Growing it in place (`reserve`) would,
    /// whenever those messages are gone, reallocate and copy everything received into it so
    /// far; so a full buffer is instead set aside and the partial message moves to another:
    /// the oldest set-aside buffer if every message cut from it has been dropped (memory the
    /// process already has, instead of fresh pages from the allocator at every read), else a
    /// new one.
    fn make_read_room(&mut self) {
        let need = codec::frame_len(&self.rbuf)
            .unwrap_or(5)
            .min(self.max_message_size + 1)
            .max(self.rbuf.len() + MIN_READ);
        if self.rbuf.capacity() >= need {
            return;
        }
        let size = need.max(READ_CHUNK);
        let reusable = size == READ_CHUNK
            && self
                .spare_reads
                .front_mut()
                .is_some_and(|oldest| oldest.try_reclaim(READ_CHUNK));
        let mut next = match reusable {
            true => self.spare_reads.pop_front().expect("front exists"),
            false => BytesMut::with_capacity(size),
        };
        next.extend_from_slice(&self.rbuf);
        let mut old = std::mem::replace(&mut self.rbuf, next);
        // Only standard-size buffers are kept: a huge message's buffer is freed with it.
        if self.rbuf_is_standard {
            old.clear();
            if self.spare_reads.len() == MAX_SPARE_READS {
                self.spare_reads.pop_front();
            }
            self.spare_reads.push_back(old);
        }
        self.rbuf_is_standard = size == READ_CHUNK;
    }

    /// Queues and sends one CopyData message.
    pub async fn send_copy_data(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.check_usable()?;
        codec::write::copy_data(payload, &mut self.wbuf);
        self.flush().await
    }

    /// Sends CopyDone.
    pub async fn send_copy_done(&mut self) -> Result<(), Error> {
        self.check_usable()?;
        codec::write::copy_done(&mut self.wbuf);
        self.flush().await
    }

    /// Sends Terminate and closes the socket. Errors are ignored: the session ends either way.
    pub async fn close(mut self) {
        if self.broken.is_none() {
            codec::write::terminate(&mut self.wbuf);
            let _ = self.flush().await;
        }
        let _ = self.transport.shutdown().await;
    }

    /// Marks a bulk transfer (BASE_BACKUP's CopyOut), where throughput matters and latency
    /// does not: after a read that found little waiting, the next read first lets data pile
    /// up for [`BULK_READ_PAUSE`]. When the consumer is faster than the server, reading every
    /// ~32 KiB message as it arrives cost one thread wake-up each (14.8k context switches for
    /// 470 MiB, against pg_basebackup's 564). Never for replication streams, where a
    /// synchronous standby's latency counts.
    pub(crate) fn set_bulk_reads(&mut self, on: bool) {
        self.bulk_reads = on;
        self.last_read_waited = false;
    }

    /// Marks the connection unusable, for streams abandoned in the middle of COPY.
    pub(crate) fn mark_broken(&mut self, why: impl Into<String>) {
        if self.broken.is_none() {
            self.broken = Some(why.into());
        }
    }

    pub(crate) fn protocol_violation(&mut self, tag: char, context: &'static str) -> Error {
        self.mark_broken(format!("unexpected message {tag:?} {context}"));
        Error::Protocol(ProtocolError::Unexpected { tag, context })
    }

    /// Writes out everything queued. Resumable: `write_buf` consumes the buffer as bytes
    /// go out, so if this future is dropped half-way the rest is sent by the next flush
    /// instead of being lost or sent twice.
    pub(crate) async fn flush(&mut self) -> Result<(), Error> {
        while !self.wbuf.is_empty() {
            match self.transport.write_buf(&mut self.wbuf).await {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "the socket accepted no data");
                    return Err(self.lost(e));
                }
                Ok(_) => {}
                Err(e) => return Err(self.lost(e)),
            }
        }
        if let Err(e) = self.transport.flush().await {
            return Err(self.lost(e));
        }
        Ok(())
    }

    /// Queues CopyDone without sending it (see [`Connection::flush`]).
    pub(crate) fn queue_copy_done(&mut self) {
        codec::write::copy_done(&mut self.wbuf);
    }

    fn lost(&mut self, e: io::Error) -> Error {
        self.broken = Some(format!("connection lost: {e}"));
        Error::lost(e)
    }

    fn check_usable(&self) -> Result<(), Error> {
        match &self.broken {
            None => Ok(()),
            Some(why) => Err(Error::lost(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("the connection is no longer usable ({why})"),
            ))),
        }
    }
}

/// Whether a bulk read should first let data pile up: only when the read before it had to
/// wait, i.e. had drained everything the server had sent. Not after a read that merely came
/// back short: over TLS every read returns one record (at most 16 KiB), and pausing before
/// each of those capped a TLS backup at ~64 MB/s (21.7 s instead of 1.55 s for 470 MiB).
fn pause_before_read(bulk: bool, last_read_waited: bool) -> bool {
    bulk && last_read_waited
}

/// FATAL and PANIC errors end the session.
pub(crate) fn is_fatal(e: &DbError) -> bool {
    e.severity == "FATAL" || e.severity == "PANIC"
}

#[cfg(test)]
mod tests {
    use super::{pause_before_read, ServerVersion};

    #[test]
    fn bulk_reads_pause_only_after_a_read_that_waited_not_after_short_tls_records() {
        assert!(pause_before_read(true, true));
        // A 16 KiB TLS record read straight from the buffer: more is waiting, read on.
        assert!(!pause_before_read(true, false));
        assert!(!pause_before_read(false, true));
    }

    #[test]
    fn parses_server_versions() {
        let v = |s| ServerVersion::parse(s).unwrap();
        assert_eq!(
            v("16.2"),
            ServerVersion {
                major: 16,
                minor: 2
            }
        );
        assert_eq!(
            v("15.18 (Debian 15.18-0+deb12u1)"),
            ServerVersion {
                major: 15,
                minor: 18
            }
        );
        assert_eq!(
            v("15beta1"),
            ServerVersion {
                major: 15,
                minor: 0
            }
        );
        assert_eq!(
            v("18devel"),
            ServerVersion {
                major: 18,
                minor: 0
            }
        );
        assert_eq!(ServerVersion::parse("x"), None);
    }
}
