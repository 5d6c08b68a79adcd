//! A scripted fake walsender on 127.0.0.1: plays a [`Script`] per connection and records what
//! the client sent.
//!
//! ```no_run
//! # async fn demo() {
//! use testdata::{FakeWalsender, Script};
//! let fake = FakeWalsender::start(
//!     Script::for_major(16)
//!         .expect_startup()
//!         .authenticate_ok("16.2")
//!         .expect_query("IDENTIFY_SYSTEM")
//!         .reply_identify_system(7_300_000_000_000_000_001, 1, 0x0300_0060, 16)
//!         .wait_for_client_close(),
//! );
//! // ... connect a client to fake.port() ...
//! let transcript = fake.finish().await.unwrap();
//! assert_eq!(transcript.startup_param("replication"), Some("true"));
//! # }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::script::{CopyEffect, Script, Step};
use crate::transcript::{ScriptError, Transcript};
use crate::wire::{self, FrontendMessage, ReplicationFeedback, StartupPacket};

/// How long a close keeps recording what the client sends (e.g. a Terminate after our FIN).
const DRAIN: Duration = Duration::from_millis(100);
/// How long a closed connection is then read in the background before being dropped.
const LINGER: Duration = Duration::from_secs(10);

/// A fake walsender listening on 127.0.0.1 (random port). Dropping it stops it.
pub struct FakeWalsender {
    addr: SocketAddr,
    connections: usize,
    task: Option<JoinHandle<Result<Vec<Transcript>, ScriptError>>>,
}

impl FakeWalsender {
    /// Binds 127.0.0.1:0 and accepts ONE connection, which plays `script`. Must be called
    /// inside a tokio runtime.
    pub fn start(script: Script) -> FakeWalsender {
        FakeWalsender::start_sequence(vec![script])
    }

    /// Like [`FakeWalsender::start`] for reconnect tests: accepts `scripts.len()` connections
    /// one after the other, connection i playing `scripts[i]`.
    pub fn start_sequence(scripts: Vec<Script>) -> FakeWalsender {
        assert!(
            !scripts.is_empty(),
            "a fake walsender needs at least one script"
        );
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        std_listener
            .set_nonblocking(true)
            .expect("setting the listener non-blocking");
        let listener = TcpListener::from_std(std_listener)
            .expect("FakeWalsender::start must be called inside a tokio runtime");
        let addr = listener.local_addr().expect("listener address");
        let connections = scripts.len();
        let task = tokio::spawn(serve(listener, scripts));
        FakeWalsender {
            addr,
            connections,
            task: Some(task),
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Waits for the script to end and returns the connection's transcript, or the failure.
    /// For a fake started with several scripts use [`FakeWalsender::finish_all`].
    pub async fn finish(self) -> Result<Transcript, ScriptError> {
        let n = self.connections;
        let mut all = self.finish_all().await?;
        if n != 1 {
            return Err(ScriptError {
                message: format!(
                    "this fake played {n} scripts; use finish_all() to get every transcript"
                ),
                transcript: Transcript::default(),
            });
        }
        Ok(all.remove(0))
    }

    /// Waits for every script to end and returns one transcript per connection.
    pub async fn finish_all(mut self) -> Result<Vec<Transcript>, ScriptError> {
        let task = self.task.take().expect("the task is only taken here");
        match task.await {
            Ok(result) => result,
            Err(e) => Err(ScriptError {
                message: format!("the fake walsender task failed: {e}"),
                transcript: Transcript::default(),
            }),
        }
    }
}

impl Drop for FakeWalsender {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn serve(
    listener: TcpListener,
    scripts: Vec<Script>,
) -> Result<Vec<Transcript>, ScriptError> {
    let several = scripts.len() > 1;
    let mut transcripts = Vec::with_capacity(scripts.len());
    for (i, script) in scripts.into_iter().enumerate() {
        let prefix = if several {
            format!("connection {}, ", i + 1)
        } else {
            String::new()
        };
        let stream = match tokio::time::timeout(script.timeout, listener.accept()).await {
            Ok(Ok((stream, _))) => stream,
            Ok(Err(e)) => {
                return Err(ScriptError {
                    message: format!("{prefix}accepting the connection failed: {e}"),
                    transcript: Transcript::default(),
                })
            }
            Err(_) => {
                return Err(ScriptError {
                    message: format!("{prefix}no client connected within {:?}", script.timeout),
                    transcript: Transcript::default(),
                })
            }
        };
        let _ = stream.set_nodelay(true);
        let mut conn = Conn::new(stream, &script);
        let mut failure = None;
        for (n, step) in script.steps.iter().enumerate() {
            if let Err(e) = conn.run(step, script.timeout).await {
                failure = Some(format!("{prefix}step {}: {e}", n + 1));
                break;
            }
            if conn.closed {
                break;
            }
        }
        conn.close().await;
        if let Some(message) = failure {
            return Err(ScriptError {
                message,
                transcript: conn.transcript,
            });
        }
        transcripts.push(conn.transcript);
    }
    Ok(transcripts)
}

/// The state of one connection.
struct Conn {
    /// `None` once handed to the lingering task after close.
    stream: Option<TcpStream>,
    buf: BytesMut,
    transcript: Transcript,
    copy_both: bool,
    strict: bool,
    eof: bool,
    closed: bool,
}

impl Conn {
    fn new(stream: TcpStream, script: &Script) -> Conn {
        Conn {
            stream: Some(stream),
            buf: BytesMut::with_capacity(8192),
            transcript: Transcript::default(),
            copy_both: false,
            strict: script.strict,
            eof: false,
            closed: false,
        }
    }

    /// Reads more bytes; sets `eof` on end of stream or reset.
    async fn fill(&mut self) -> Result<(), String> {
        let Some(stream) = self.stream.as_mut() else {
            self.eof = true;
            return Ok(());
        };
        match stream.read_buf(&mut self.buf).await {
            Ok(0) => {
                self.eof = true;
                self.transcript.client_closed = true;
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                self.eof = true;
                self.transcript.client_closed = true;
                Ok(())
            }
            Err(e) => Err(format!("reading from the client failed: {e}")),
        }
    }

    /// The next message, or `None` at end of stream. Every message goes into the transcript.
    async fn recv(&mut self) -> Result<Option<FrontendMessage>, String> {
        loop {
            match wire::decode_frontend_message(&mut self.buf) {
                Ok(Some(m)) => {
                    self.transcript.messages.push(m.clone());
                    return Ok(Some(m));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("malformed message from the client: {e}")),
            }
            if self.eof {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(format!(
                    "the client closed the connection in the middle of a message ({} bytes buffered)",
                    self.buf.len()
                ));
            }
            self.fill().await?;
        }
    }

    /// Whether `m` is feedback that may be skipped while waiting for something else.
    fn skippable(&self, m: &FrontendMessage, keep_status: bool) -> bool {
        if self.strict || !self.copy_both {
            return false;
        }
        match m {
            FrontendMessage::CopyData(p) => match wire::parse_replication_feedback(p) {
                Ok(ReplicationFeedback::StandbyStatus(_)) => !keep_status,
                Ok(ReplicationFeedback::HotStandbyFeedback(_)) => true,
                Err(_) => false,
            },
            _ => false,
        }
    }

    /// The next message that is not skippable feedback; `expected` words the failure at EOF.
    async fn next(&mut self, expected: &str, keep_status: bool) -> Result<FrontendMessage, String> {
        loop {
            match self.recv().await? {
                None => return Err(format!("expected {expected}, got end of connection")),
                Some(m) if self.skippable(&m, keep_status) => continue,
                Some(m) => return Ok(m),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8], what: &str) -> Result<(), String> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(format!("could not send {what}: the connection is closed"));
        };
        let r = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        r.await.map_err(|e| {
            format!("could not send {what}: {e} (did the client close the connection?)")
        })
    }

    async fn expect_startup(&mut self) -> Result<(), String> {
        loop {
            let packet = loop {
                match wire::decode_startup_packet(&mut self.buf) {
                    Ok(Some(p)) => break p,
                    Ok(None) if self.eof => {
                        return Err("expected a startup packet, got end of connection".to_owned())
                    }
                    Ok(None) => self.fill().await?,
                    Err(e) => return Err(format!("malformed startup packet: {e}")),
                }
            };
            match packet {
                StartupPacket::SslRequest => {
                    self.transcript.ssl_requested = true;
                    self.send(b"N", "the SSLRequest refusal").await?;
                }
                StartupPacket::GssEncRequest => {
                    self.send(b"N", "the GSSENCRequest refusal").await?
                }
                StartupPacket::CancelRequest { .. } => {
                    return Err("expected a StartupMessage, got CancelRequest".to_owned());
                }
                StartupPacket::Startup { protocol, params } => {
                    self.transcript.startup_params = params;
                    if protocol != wire::PROTOCOL_VERSION_3_0 {
                        return Err(format!(
                            "expected a StartupMessage for protocol 3.0 (196608), got {}.{} ({protocol})",
                            protocol >> 16,
                            protocol & 0xFFFF
                        ));
                    }
                    return Ok(());
                }
            }
        }
    }

    async fn run(&mut self, step: &Step, timeout: Duration) -> Result<(), String> {
        let waits = matches!(
            step,
            Step::ExpectStartup
                | Step::ExpectQuery(_)
                | Step::ExpectPassword(_)
                | Step::ExpectStandbyStatus(_)
                | Step::ExpectHotStandbyFeedback
                | Step::ExpectCopyDone
                | Step::ExpectCopyIn(_)
                | Step::ExpectCopyFail
                | Step::ExpectTerminate
                | Step::ShutdownWhenCaughtUp { .. }
                | Step::WaitForClientClose
        );
        if !waits {
            return self.run_inner(step).await;
        }
        match tokio::time::timeout(timeout, self.run_inner(step)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "timed out after {timeout:?} waiting for {}",
                step.waiting_for()
            )),
        }
    }

    async fn run_inner(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::ExpectStartup => self.expect_startup().await,
            Step::Send {
                what,
                bytes,
                effect,
            } => {
                self.send(bytes, what).await?;
                match effect {
                    CopyEffect::Unchanged => {}
                    CopyEffect::OpensCopyBoth => self.copy_both = true,
                    CopyEffect::EndsCopy => self.copy_both = false,
                }
                Ok(())
            }
            Step::SendThenClose { what, bytes } => {
                self.send(bytes, what).await?;
                self.close().await;
                Ok(())
            }
            Step::SendXLogData { start, data } => {
                let end = start + data.len() as u64;
                let payload = wire::xlog_data_payload(*start, end, wire::now_pg_micros(), data);
                self.send(&wire::copy_data(&payload), "XLogData").await
            }
            Step::SendKeepalive {
                wal_end,
                reply_requested,
            } => {
                let payload =
                    wire::keepalive_payload(*wal_end, wire::now_pg_micros(), *reply_requested);
                self.send(&wire::copy_data(&payload), "a keepalive").await
            }
            Step::ExpectQuery(needle) => {
                let expected = format!("Query matching {needle:?}");
                match self.next(&expected, false).await? {
                    FrontendMessage::Query(q) if q.contains(needle.as_str()) => Ok(()),
                    other => Err(format!("expected {expected}, got {}", other.describe())),
                }
            }
            Step::ExpectPassword(want) => match self.next("PasswordMessage", false).await? {
                FrontendMessage::PasswordMessage(body) => match want {
                    None => Ok(()),
                    Some(w) => {
                        let mut expected = w.as_bytes().to_vec();
                        expected.push(0);
                        if body == expected {
                            Ok(())
                        } else {
                            Err(format!(
                                "expected password {w:?}, got {:?}",
                                String::from_utf8_lossy(&body)
                            ))
                        }
                    }
                },
                other => Err(format!(
                    "expected PasswordMessage, got {}",
                    other.describe()
                )),
            },
            Step::ExpectStandbyStatus(check) => {
                let expected = match check {
                    None => "StandbyStatusUpdate".to_owned(),
                    Some(c) => format!("StandbyStatusUpdate with {}", c.description),
                };
                let m = self.next(&expected, true).await?;
                let status = match &m {
                    FrontendMessage::CopyData(p) => match wire::parse_replication_feedback(p) {
                        Ok(ReplicationFeedback::StandbyStatus(s)) => s,
                        Err(e) if p.first() == Some(&b'r') => {
                            return Err(format!("malformed StandbyStatusUpdate: {e}"))
                        }
                        _ => return Err(format!("expected {expected}, got {}", m.describe())),
                    },
                    _ => return Err(format!("expected {expected}, got {}", m.describe())),
                };
                match check {
                    Some(c) if !(c.check)(&status) => {
                        Err(format!("expected {expected}, got {}", m.describe()))
                    }
                    _ => Ok(()),
                }
            }
            Step::ExpectHotStandbyFeedback => match self.next("HotStandbyFeedback", false).await? {
                FrontendMessage::CopyData(p)
                    if matches!(
                        wire::parse_replication_feedback(&p),
                        Ok(ReplicationFeedback::HotStandbyFeedback(_))
                    ) =>
                {
                    Ok(())
                }
                other => Err(format!(
                    "expected HotStandbyFeedback, got {}",
                    other.describe()
                )),
            },
            Step::ExpectCopyDone => match self.next("CopyDone", false).await? {
                FrontendMessage::CopyDone => {
                    self.copy_both = false;
                    Ok(())
                }
                other => Err(format!("expected CopyDone, got {}", other.describe())),
            },
            Step::ExpectCopyIn(expected) => {
                let mut got = Vec::new();
                loop {
                    match self.next("CopyData or CopyDone", false).await? {
                        FrontendMessage::CopyData(p) => got.extend_from_slice(&p),
                        FrontendMessage::CopyDone => break,
                        other => {
                            return Err(format!(
                                "expected CopyData or CopyDone, got {}",
                                other.describe()
                            ))
                        }
                    }
                }
                match expected {
                    Some(want) if *want != got => Err(format!(
                        "the copy-in held {} bytes, not the {} expected (or different ones)",
                        got.len(),
                        want.len()
                    )),
                    _ => Ok(()),
                }
            }
            Step::ExpectCopyFail => match self.next("CopyFail", false).await? {
                FrontendMessage::CopyFail(_) => {
                    self.copy_both = false;
                    Ok(())
                }
                other => Err(format!("expected CopyFail, got {}", other.describe())),
            },
            Step::ExpectTerminate => match self.next("Terminate", false).await? {
                FrontendMessage::Terminate => Ok(()),
                other => Err(format!("expected Terminate, got {}", other.describe())),
            },
            Step::ShutdownWhenCaughtUp { sent_ptr } => {
                self.shutdown_when_caught_up(*sent_ptr).await
            }
            Step::Sleep(d) => {
                tokio::time::sleep(*d).await;
                Ok(())
            }
            Step::Close => {
                self.close().await;
                Ok(())
            }
            Step::WaitForClientClose => loop {
                match self.recv().await? {
                    None => return Ok(()),
                    Some(FrontendMessage::Terminate) => {}
                    Some(m) if self.skippable(&m, false) => {}
                    Some(m) => {
                        return Err(format!(
                            "expected the client to close the connection, got {}",
                            m.describe()
                        ))
                    }
                }
            },
        }
    }

    async fn shutdown_when_caught_up(&mut self, sent_ptr: u64) -> Result<(), String> {
        let payload = wire::keepalive_payload(sent_ptr, wire::now_pg_micros(), true);
        self.send(&wire::copy_data(&payload), "the shutdown keepalive")
            .await?;
        let expected = format!(
            "StandbyStatusUpdate reaching {}",
            wire::format_lsn(sent_ptr)
        );
        loop {
            let m = self.next(&expected, true).await?;
            let FrontendMessage::CopyData(p) = &m else {
                return Err(format!("expected {expected}, got {}", m.describe()));
            };
            match wire::parse_replication_feedback(p) {
                Ok(ReplicationFeedback::StandbyStatus(s)) => {
                    // The server compares sentPtr with flush if valid, else write.
                    let replicated = if s.flush_lsn != 0 {
                        s.flush_lsn
                    } else {
                        s.write_lsn
                    };
                    if replicated >= sent_ptr {
                        break;
                    }
                }
                Ok(ReplicationFeedback::HotStandbyFeedback(_)) => {}
                Err(e) => return Err(format!("expected {expected}, got a malformed message: {e}")),
            }
        }
        self.send(
            &crate::replies::shutdown_done(),
            "CommandComplete \"COPY 0\"",
        )
        .await?;
        self.close().await;
        Ok(())
    }

    /// Sends FIN, records what the client sends within [`DRAIN`], then leaves a background task
    /// reading until the client closes (at most [`LINGER`]): closing a socket with unread data
    /// sends a reset, which can make the client lose bytes we sent but it has not read yet.
    async fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let Some(stream) = self.stream.as_mut() {
            let _ = stream.shutdown().await;
        }
        let drain = async {
            while !self.eof {
                if self.fill().await.is_err() {
                    self.eof = true;
                }
                while let Ok(Some(m)) = wire::decode_frontend_message(&mut self.buf) {
                    self.transcript.messages.push(m);
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN, drain).await;
        if !self.eof {
            if let Some(mut stream) = self.stream.take() {
                tokio::spawn(async move {
                    let mut sink = [0u8; 8192];
                    let linger =
                        async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
                    let _ = tokio::time::timeout(LINGER, linger).await;
                });
            }
        }
    }
}
