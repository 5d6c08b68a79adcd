//! Frontend (client → server) messages: parsers the fake walsender uses to check what a client
//! sent, and builders that produce the same bytes for tests that play the client.
//!
//! Startup-phase packets (SSLRequest, GSSENCRequest, CancelRequest, StartupMessage) have no tag:
//! Int32 length (counting itself), Int32 code, body. Every other message is a tag byte, an
//! Int32 length counting itself but not the tag, and the body. All integers are big-endian.

use bytes::{Buf, BufMut, BytesMut};
use std::fmt;

use super::backend::{format_lsn, frame, put_cstr};

/// Protocol 3.0 as sent in a StartupMessage.
pub const PROTOCOL_VERSION_3_0: i32 = 196_608;
/// SSLRequest code: `00 00 00 08 04 D2 16 2F`.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// GSSENCRequest code.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// CancelRequest code.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// The server's limit on a startup packet (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_PACKET_LENGTH: usize = 10_000;
/// The fake's limit on any other frontend message, so a broken client cannot make it allocate
/// without bound.
pub const MAX_FRONTEND_MESSAGE_LENGTH: usize = 64 << 20;

/// A frontend message that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

fn err<T>(msg: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(msg.into()))
}

/// A packet of the startup phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// SSLRequest (code 80877103); the server answers one byte, `S` or `N`.
    SslRequest,
    /// GSSENCRequest (code 80877104); the server answers one byte, `G` or `N`.
    GssEncRequest,
    /// CancelRequest (code 80877102): process id and secret key.
    CancelRequest {
        /// Backend process id.
        pid: i32,
        /// Secret key (4 bytes in protocol 3.0).
        secret: Vec<u8>,
    },
    /// StartupMessage: protocol version and key/value parameters in the order sent.
    Startup {
        /// `major << 16 | minor`; 196608 is 3.0.
        protocol: i32,
        /// Parameters such as `user`, `replication`, `application_name`.
        params: Vec<(String, String)>,
    },
}

fn take_cstr(body: &mut &[u8], what: &str) -> Result<String, WireError> {
    let Some(nul) = body.iter().position(|&b| b == 0) else {
        return err(format!("{what} is not NUL-terminated"));
    };
    let s = std::str::from_utf8(&body[..nul])
        .map_err(|_| WireError(format!("{what} is not valid UTF-8")))?
        .to_owned();
    *body = &body[nul + 1..];
    Ok(s)
}

/// Parses one complete startup-phase packet, including its length word.
pub fn parse_startup_packet(packet: &[u8]) -> Result<StartupPacket, WireError> {
    if packet.len() < 8 {
        return err(format!(
            "startup packet of {} bytes is too short",
            packet.len()
        ));
    }
    let mut p = packet;
    let len = p.get_u32() as usize;
    if len != packet.len() {
        return err(format!(
            "startup packet length word says {len}, packet has {} bytes",
            packet.len()
        ));
    }
    let code = p.get_i32();
    match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE if !p.is_empty() => err(format!(
            "SSLRequest/GSSENCRequest with {} trailing bytes",
            p.len()
        )),
        SSL_REQUEST_CODE => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            if p.len() < 8 {
                return err("CancelRequest is too short");
            }
            let pid = p.get_i32();
            Ok(StartupPacket::CancelRequest {
                pid,
                secret: p.to_vec(),
            })
        }
        protocol if protocol >> 16 == 3 => {
            let mut params = Vec::new();
            loop {
                if p.is_empty() {
                    return err("StartupMessage lacks the final NUL after its parameters");
                }
                if p[0] == 0 {
                    if p.len() != 1 {
                        return err("StartupMessage has bytes after its final NUL");
                    }
                    break;
                }
                let key = take_cstr(&mut p, "startup parameter name")?;
                let value = take_cstr(&mut p, &format!("value of startup parameter {key:?}"))?;
                params.push((key, value));
            }
            Ok(StartupPacket::Startup { protocol, params })
        }
        other => err(format!(
            "unknown startup packet code {other} (protocol {}.{})",
            other >> 16,
            other & 0xFFFF
        )),
    }
}

/// Takes one startup-phase packet off the front of `buf`; `Ok(None)` if it is incomplete.
pub fn decode_startup_packet(buf: &mut BytesMut) -> Result<Option<StartupPacket>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(8..=MAX_STARTUP_PACKET_LENGTH).contains(&len) {
        return err(format!("invalid startup packet length {len}"));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let packet = buf.split_to(len);
    parse_startup_packet(&packet).map(Some)
}

/// A frontend message after the startup phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage {
    /// `Q`: simple query text.
    Query(String),
    /// `p`: PasswordMessage, SASLInitialResponse or SASLResponse (only the authentication
    /// request tells them apart), body as sent.
    PasswordMessage(Vec<u8>),
    /// `d`: CopyData payload; see [`parse_replication_feedback`].
    CopyData(Vec<u8>),
    /// `c`: CopyDone.
    CopyDone,
    /// `f`: CopyFail with its error message.
    CopyFail(String),
    /// `X`: Terminate.
    Terminate,
    /// `S`: Sync (extended protocol; a walsender rejects it).
    Sync,
    /// `H`: Flush (extended protocol).
    Flush,
    /// Any other tag, body as sent.
    Other {
        /// The tag byte.
        tag: u8,
        /// The body after the length word.
        body: Vec<u8>,
    },
}

impl FrontendMessage {
    /// The protocol name of the message kind: `Query`, `CopyData`, ...
    pub fn name(&self) -> &'static str {
        match self {
            FrontendMessage::Query(_) => "Query",
            FrontendMessage::PasswordMessage(_) => "PasswordMessage",
            FrontendMessage::CopyData(_) => "CopyData",
            FrontendMessage::CopyDone => "CopyDone",
            FrontendMessage::CopyFail(_) => "CopyFail",
            FrontendMessage::Terminate => "Terminate",
            FrontendMessage::Sync => "Sync",
            FrontendMessage::Flush => "Flush",
            FrontendMessage::Other { .. } => "an unknown message",
        }
    }

    /// A short human description for error messages, e.g. `Query "IDENTIFY_SYSTEM"` or
    /// `CopyData (StandbyStatusUpdate write 0/3000000 flush 0/0 apply 0/0 reply 0)`.
    pub fn describe(&self) -> String {
        match self {
            FrontendMessage::Query(q) => {
                let short: String = q.chars().take(120).collect();
                let ellipsis = if short.len() < q.len() { "…" } else { "" };
                format!("Query {short:?}{ellipsis}")
            }
            FrontendMessage::CopyData(payload) => match parse_replication_feedback(payload) {
                Ok(ReplicationFeedback::StandbyStatus(s)) => format!(
                    "CopyData (StandbyStatusUpdate write {} flush {} apply {} reply {})",
                    format_lsn(s.write_lsn),
                    format_lsn(s.flush_lsn),
                    format_lsn(s.apply_lsn),
                    u8::from(s.reply_requested)
                ),
                Ok(ReplicationFeedback::HotStandbyFeedback(_)) => {
                    "CopyData (HotStandbyFeedback)".to_owned()
                }
                Err(_) => match payload.first() {
                    Some(b) => format!("CopyData ({} bytes, first 0x{b:02X})", payload.len()),
                    None => "CopyData (empty)".to_owned(),
                },
            },
            FrontendMessage::CopyFail(m) => format!("CopyFail {m:?}"),
            FrontendMessage::Other { tag, body } => {
                format!(
                    "an unknown message with tag 0x{tag:02X} ({} bytes)",
                    body.len()
                )
            }
            other => other.name().to_owned(),
        }
    }
}

/// Parses the body of a frontend message with tag `tag`.
pub fn parse_frontend_message(tag: u8, body: &[u8]) -> Result<FrontendMessage, WireError> {
    let single_cstr = |what: &str| -> Result<String, WireError> {
        let mut b = body;
        let s = take_cstr(&mut b, what)?;
        if !b.is_empty() {
            return err(format!("{what} has {} bytes after its NUL", b.len()));
        }
        Ok(s)
    };
    let empty = |m: FrontendMessage| {
        if body.is_empty() {
            Ok(m)
        } else {
            err(format!(
                "{} must have an empty body, got {} bytes",
                m.name(),
                body.len()
            ))
        }
    };
    match tag {
        b'Q' => single_cstr("Query").map(FrontendMessage::Query),
        b'p' => Ok(FrontendMessage::PasswordMessage(body.to_vec())),
        b'd' => Ok(FrontendMessage::CopyData(body.to_vec())),
        b'c' => empty(FrontendMessage::CopyDone),
        b'f' => single_cstr("CopyFail").map(FrontendMessage::CopyFail),
        b'X' => empty(FrontendMessage::Terminate),
        b'S' => empty(FrontendMessage::Sync),
        b'H' => empty(FrontendMessage::Flush),
        tag => Ok(FrontendMessage::Other {
            tag,
            body: body.to_vec(),
        }),
    }
}

/// Takes one tagged frontend message off the front of `buf`; `Ok(None)` if it is incomplete.
pub fn decode_frontend_message(buf: &mut BytesMut) -> Result<Option<FrontendMessage>, WireError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len < 4 {
        return err(format!(
            "message with tag 0x{tag:02X} has invalid length {len}"
        ));
    }
    if len > MAX_FRONTEND_MESSAGE_LENGTH {
        return err(format!("message with tag 0x{tag:02X} announces {len} bytes, over the fake's limit of {MAX_FRONTEND_MESSAGE_LENGTH}"));
    }
    if buf.len() < len + 1 {
        return Ok(None);
    }
    let mut msg = buf.split_to(len + 1);
    msg.advance(5);
    parse_frontend_message(tag, &msg).map(Some)
}

/// Standby status update (`r`, 34 bytes): positions are "last byte + 1", 0 = invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StandbyStatusUpdate {
    /// Bytes 1–8: received and written.
    pub write_lsn: u64,
    /// Bytes 9–16: durably flushed (advances a slot's restart_lsn).
    pub flush_lsn: u64,
    /// Bytes 17–24: applied (0 for an archiver).
    pub apply_lsn: u64,
    /// Bytes 25–32: µs since 2000-01-01 UTC.
    pub send_time: i64,
    /// Byte 33: 1 asks the server for an immediate keepalive.
    pub reply_requested: bool,
}

/// Hot-standby feedback (`h`, 25 bytes). All zeros means "stop holding back xmin".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HotStandbyFeedback {
    /// Bytes 1–8: µs since 2000-01-01 UTC.
    pub send_time: i64,
    /// Bytes 9–12.
    pub xmin: u32,
    /// Bytes 13–16.
    pub xmin_epoch: u32,
    /// Bytes 17–20.
    pub catalog_xmin: u32,
    /// Bytes 21–24.
    pub catalog_xmin_epoch: u32,
}

/// A client → server replication message carried in CopyData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationFeedback {
    /// `r`.
    StandbyStatus(StandbyStatusUpdate),
    /// `h`.
    HotStandbyFeedback(HotStandbyFeedback),
}

/// Parses a CopyData payload sent by a replication client. Lengths are checked exactly, as the
/// server does (`ws` ProcessStandbyReplyMessage reads fixed fields and then requires the end).
pub fn parse_replication_feedback(payload: &[u8]) -> Result<ReplicationFeedback, WireError> {
    let Some((&kind, mut p)) = payload.split_first() else {
        return err("empty CopyData payload");
    };
    match kind {
        b'r' => {
            if payload.len() != 34 {
                return err(format!(
                    "StandbyStatusUpdate must be 34 bytes, got {}",
                    payload.len()
                ));
            }
            let write_lsn = p.get_u64();
            let flush_lsn = p.get_u64();
            let apply_lsn = p.get_u64();
            let send_time = p.get_i64();
            let reply = p.get_u8();
            if reply > 1 {
                return err(format!(
                    "StandbyStatusUpdate replyRequested byte is {reply}, not 0 or 1"
                ));
            }
            Ok(ReplicationFeedback::StandbyStatus(StandbyStatusUpdate {
                write_lsn,
                flush_lsn,
                apply_lsn,
                send_time,
                reply_requested: reply == 1,
            }))
        }
        b'h' => {
            if payload.len() != 25 {
                return err(format!(
                    "HotStandbyFeedback must be 25 bytes, got {}",
                    payload.len()
                ));
            }
            Ok(ReplicationFeedback::HotStandbyFeedback(
                HotStandbyFeedback {
                    send_time: p.get_i64(),
                    xmin: p.get_u32(),
                    xmin_epoch: p.get_u32(),
                    catalog_xmin: p.get_u32(),
                    catalog_xmin_epoch: p.get_u32(),
                },
            ))
        }
        other => err(format!("unknown replication message type 0x{other:02X}")),
    }
}

/// SSLRequest: `00 00 00 08 04 D2 16 2F`.
pub fn ssl_request() -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    out.put_u32(8);
    out.put_i32(SSL_REQUEST_CODE);
    out
}

/// StartupMessage for protocol 3.0 with `params` in order, e.g.
/// `[("user", "backup"), ("replication", "true")]`.
pub fn startup_message(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.put_i32(PROTOCOL_VERSION_3_0);
    for (k, v) in params {
        put_cstr(&mut body, k);
        put_cstr(&mut body, v);
    }
    body.put_u8(0);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.put_u32(u32::try_from(body.len() + 4).expect("startup packet too large"));
    out.put_slice(&body);
    out
}

/// Query `Q`: the text and a NUL.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_cstr(&mut body, sql);
    frame(b'Q', &body)
}

/// PasswordMessage `p` for cleartext or MD5 authentication: the password and a NUL.
pub fn password_message(password: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_cstr(&mut body, password);
    frame(b'p', &body)
}

/// Standby status update payload (`r`, 34 bytes). Wrap in `copy_data`.
pub fn standby_status_update_payload(s: &StandbyStatusUpdate) -> Vec<u8> {
    let mut p = Vec::with_capacity(34);
    p.put_u8(b'r');
    p.put_u64(s.write_lsn);
    p.put_u64(s.flush_lsn);
    p.put_u64(s.apply_lsn);
    p.put_i64(s.send_time);
    p.put_u8(u8::from(s.reply_requested));
    p
}

/// Hot-standby feedback payload (`h`, 25 bytes). Wrap in `copy_data`.
pub fn hot_standby_feedback_payload(h: &HotStandbyFeedback) -> Vec<u8> {
    let mut p = Vec::with_capacity(25);
    p.put_u8(b'h');
    p.put_i64(h.send_time);
    p.put_u32(h.xmin);
    p.put_u32(h.xmin_epoch);
    p.put_u32(h.catalog_xmin);
    p.put_u32(h.catalog_xmin_epoch);
    p
}

/// CopyFail `f` with an error message.
pub fn copy_fail(message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_cstr(&mut body, message);
    frame(b'f', &body)
}

/// Terminate `X`: `58 00 00 00 04`.
pub fn terminate() -> Vec<u8> {
    frame(b'X', &[])
}
