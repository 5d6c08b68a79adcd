//! Sans-IO framing of backend messages, and the frontend messages the client writes.
//!
//! A backend message is a tag byte, an Int32 big-endian length that counts itself but not the
//! tag, and the body. [`decode`] takes one complete message off the front of a buffer, or
//! returns `Ok(None)` when more bytes are needed, so the caller decides when to read the
//! socket: that is where back-pressure comes from. Bulk payloads (`CopyData`) are split off
//! the buffer as [`Bytes`] without copying.
//!
//! We parse backend messages ourselves rather than with `postgres_protocol::message::backend`
//! because that parser cannot handle CopyBothResponse (`W`) or NegotiateProtocolVersion (`v`)
//! and has no size limit. Frontend messages are written with `postgres_protocol::message::frontend`.

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::message::frontend;

use crate::error::{DbError, ProtocolError};

/// The largest backend message accepted by default. XLogData is at most 128 kB and BASE_BACKUP
/// chunks are smaller still; anything near this size is a broken or hostile peer.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// What an `R` message asks of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    /// SASL, with the mechanisms the server offers.
    Sasl(Vec<String>),
    SaslContinue(Bytes),
    SaslFinal(Bytes),
    /// Kerberos, GSSAPI, SSPI and other methods this client does not implement.
    Unsupported(i32),
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    pub name: String,
    pub type_oid: u32,
}

/// A decoded backend message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage {
    Authentication(AuthRequest),
    ParameterStatus {
        name: String,
        value: String,
    },
    BackendKeyData {
        process_id: i32,
        secret_key: i32,
    },
    /// Transaction status: `I` idle, `T` in a transaction, `E` failed transaction.
    ReadyForQuery(u8),
    RowDescription(Vec<FieldDescription>),
    DataRow(Vec<Option<Bytes>>),
    CommandComplete(String),
    EmptyQueryResponse,
    ErrorResponse(DbError),
    NoticeResponse(DbError),
    CopyInResponse,
    CopyOutResponse,
    CopyBothResponse,
    CopyData(Bytes),
    CopyDone,
    NegotiateProtocolVersion {
        newest_minor: i32,
        unrecognized: Vec<String>,
    },
    NotificationResponse,
    ParseComplete,
    BindComplete,
    NoData,
}

impl BackendMessage {
    /// The message's tag byte as a char, for error messages.
    pub fn tag(&self) -> char {
        match self {
            BackendMessage::Authentication(_) => 'R',
            BackendMessage::ParameterStatus { .. } => 'S',
            BackendMessage::BackendKeyData { .. } => 'K',
            BackendMessage::ReadyForQuery(_) => 'Z',
            BackendMessage::RowDescription(_) => 'T',
            BackendMessage::DataRow(_) => 'D',
            BackendMessage::CommandComplete(_) => 'C',
            BackendMessage::EmptyQueryResponse => 'I',
            BackendMessage::ErrorResponse(_) => 'E',
            BackendMessage::NoticeResponse(_) => 'N',
            BackendMessage::CopyInResponse => 'G',
            BackendMessage::CopyOutResponse => 'H',
            BackendMessage::CopyBothResponse => 'W',
            BackendMessage::CopyData(_) => 'd',
            BackendMessage::CopyDone => 'c',
            BackendMessage::NegotiateProtocolVersion { .. } => 'v',
            BackendMessage::NotificationResponse => 'A',
            BackendMessage::ParseComplete => '1',
            BackendMessage::BindComplete => '2',
            BackendMessage::NoData => 'n',
        }
    }
}

/// Bytes the message at the front of `buf` occupies in all (tag and length included), once
/// its header has arrived.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let header: [u8; 5] = buf.get(..5)?.try_into().ok()?;
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    usize::try_from(len).ok().map(|l| l + 1)
}

/// Takes one complete message off the front of `buf`.
///
/// Returns `Ok(None)` when the message is incomplete (the caller sizes its next read with
/// [`frame_len`]). A length below 4 or above `max_size` is an error: the stream cannot be
/// resynchronised after it.
pub fn decode(
    buf: &mut BytesMut,
    max_size: usize,
) -> Result<Option<BackendMessage>, ProtocolError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(ProtocolError::InvalidLength {
            tag: char::from(tag),
            len: i64::from(len),
        });
    }
    // `len` is positive, so the conversion cannot fail.
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max_size {
        return Err(ProtocolError::MessageTooLarge {
            tag: char::from(tag),
            len: len as u64,
            limit: max_size as u64,
        });
    }
    let total = len + 1;
    if buf.len() < total {
        return Ok(None);
    }
    buf.advance(5);
    let body = buf.split_to(len - 4).freeze();
    parse_body(tag, body).map(Some)
}

fn parse_body(tag: u8, body: Bytes) -> Result<BackendMessage, ProtocolError> {
    let mut r = Reader::new(tag, body);
    let msg = match tag {
        b'd' => return Ok(BackendMessage::CopyData(r.rest())),
        b'R' => BackendMessage::Authentication(parse_auth(&mut r)?),
        b'S' => BackendMessage::ParameterStatus {
            name: r.cstr()?,
            value: r.cstr()?,
        },
        b'K' => BackendMessage::BackendKeyData {
            process_id: r.i32()?,
            secret_key: r.i32()?,
        },
        b'Z' => BackendMessage::ReadyForQuery(r.u8()?),
        b'T' => {
            let n = r.i16()?;
            let mut fields = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(1600));
            for _ in 0..n {
                let name = r.cstr()?;
                let _table_oid = r.i32()?;
                let _column = r.i16()?;
                let type_oid = r.i32()? as u32;
                let _type_size = r.i16()?;
                let _type_mod = r.i32()?;
                let _format = r.i16()?;
                fields.push(FieldDescription { name, type_oid });
            }
            BackendMessage::RowDescription(fields)
        }
        b'D' => {
            let n = r.i16()?;
            let mut values = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(1600));
            for _ in 0..n {
                let len = r.i32()?;
                if len == -1 {
                    values.push(None);
                } else if len < 0 {
                    return Err(r.malformed(format!("negative value length {len}")));
                } else {
                    values.push(Some(r.bytes(len as usize)?));
                }
            }
            BackendMessage::DataRow(values)
        }
        b'C' => BackendMessage::CommandComplete(r.cstr()?),
        b'I' => BackendMessage::EmptyQueryResponse,
        b'E' => BackendMessage::ErrorResponse(parse_error_fields(&mut r)?),
        b'N' => BackendMessage::NoticeResponse(parse_error_fields(&mut r)?),
        // Copy responses carry a format byte and per-column formats; replication and
        // BASE_BACKUP always use binary with zero columns, which nothing here depends on.
        b'G' => {
            r.skip_rest();
            BackendMessage::CopyInResponse
        }
        b'H' => {
            r.skip_rest();
            BackendMessage::CopyOutResponse
        }
        b'W' => {
            r.skip_rest();
            BackendMessage::CopyBothResponse
        }
        b'c' => BackendMessage::CopyDone,
        b'v' => {
            let newest_minor = r.i32()?;
            let n = r.i32()?;
            let mut unrecognized = Vec::new();
            for _ in 0..n.max(0) {
                unrecognized.push(r.cstr()?);
            }
            BackendMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognized,
            }
        }
        b'A' => {
            r.skip_rest();
            BackendMessage::NotificationResponse
        }
        b'1' => BackendMessage::ParseComplete,
        b'2' => BackendMessage::BindComplete,
        b'n' => BackendMessage::NoData,
        other => {
            return Err(ProtocolError::Unexpected {
                tag: char::from(other),
                context: "(unknown backend message type)",
            })
        }
    };
    r.finish()?;
    Ok(msg)
}

fn parse_auth(r: &mut Reader) -> Result<AuthRequest, ProtocolError> {
    Ok(match r.i32()? {
        0 => AuthRequest::Ok,
        3 => AuthRequest::CleartextPassword,
        5 => {
            let b = r.bytes(4)?;
            AuthRequest::Md5Password {
                salt: [b[0], b[1], b[2], b[3]],
            }
        }
        10 => {
            let mut mechs = Vec::new();
            loop {
                let m = r.cstr()?;
                if m.is_empty() {
                    break;
                }
                mechs.push(m);
            }
            AuthRequest::Sasl(mechs)
        }
        11 => AuthRequest::SaslContinue(r.rest()),
        12 => AuthRequest::SaslFinal(r.rest()),
        code => {
            r.skip_rest();
            AuthRequest::Unsupported(code)
        }
    })
}

fn parse_error_fields(r: &mut Reader) -> Result<DbError, ProtocolError> {
    let mut e = DbError::default();
    loop {
        let field = r.u8()?;
        if field == 0 {
            break;
        }
        let value = r.cstr()?;
        match field {
            b'S' => e.severity = value,
            b'V' => e.severity_nonlocalized = Some(value),
            b'C' => e.code = value,
            b'M' => e.message = value,
            b'D' => e.detail = Some(value),
            b'H' => e.hint = Some(value),
            b'W' => e.context = Some(value),
            b'F' => e.file = Some(value),
            b'L' => e.line = Some(value),
            b'R' => e.routine = Some(value),
            // Position, schema, table, column, ... : not useful for replication commands.
            _ => {}
        }
    }
    // Prefer the untranslated severity so callers can compare against "FATAL".
    if let Some(v) = &e.severity_nonlocalized {
        e.severity = v.clone();
    }
    Ok(e)
}

/// A bounds-checked cursor over a message body.
struct Reader {
    tag: u8,
    body: Bytes,
}

impl Reader {
    fn new(tag: u8, body: Bytes) -> Self {
        Reader { tag, body }
    }

    fn what(&self) -> &'static str {
        match self.tag {
            b'R' => "Authentication",
            b'S' => "ParameterStatus",
            b'K' => "BackendKeyData",
            b'Z' => "ReadyForQuery",
            b'T' => "RowDescription",
            b'D' => "DataRow",
            b'C' => "CommandComplete",
            b'E' => "ErrorResponse",
            b'N' => "NoticeResponse",
            b'v' => "NegotiateProtocolVersion",
            _ => "backend",
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> ProtocolError {
        ProtocolError::malformed(self.what(), reason)
    }

    fn need(&self, n: usize) -> Result<(), ProtocolError> {
        if self.body.len() < n {
            Err(self.malformed(format!(
                "needs {n} more bytes, only {} left",
                self.body.len()
            )))
        } else {
            Ok(())
        }
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        self.need(1)?;
        Ok(self.body.get_u8())
    }

    fn i16(&mut self) -> Result<i16, ProtocolError> {
        self.need(2)?;
        Ok(self.body.get_i16())
    }

    fn i32(&mut self) -> Result<i32, ProtocolError> {
        self.need(4)?;
        Ok(self.body.get_i32())
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, ProtocolError> {
        self.need(n)?;
        Ok(self.body.split_to(n))
    }

    fn cstr(&mut self) -> Result<String, ProtocolError> {
        let nul = memchr::memchr(0, &self.body)
            .ok_or_else(|| self.malformed("string without terminating NUL"))?;
        let s = self.body.split_to(nul);
        self.body.advance(1);
        String::from_utf8(s.to_vec()).map_err(|_| self.malformed("string is not valid UTF-8"))
    }

    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    fn skip_rest(&mut self) {
        self.body.clear();
    }

    fn finish(&self) -> Result<(), ProtocolError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(self.malformed(format!("{} unexpected trailing bytes", self.body.len())))
        }
    }
}

/// Frontend messages, written into an output buffer.
pub mod write {
    use super::*;

    /// The 8-byte SSLRequest.
    pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F];

    fn io_to_protocol(e: std::io::Error) -> ProtocolError {
        ProtocolError::malformed("frontend", e.to_string())
    }

    /// StartupMessage for protocol 3.0 with the given parameters.
    pub fn startup(params: &[(&str, &str)], out: &mut BytesMut) -> Result<(), ProtocolError> {
        frontend::startup_message(params.iter().copied(), out).map_err(io_to_protocol)
    }

    /// A simple Query.
    pub fn query(sql: &str, out: &mut BytesMut) -> Result<(), ProtocolError> {
        frontend::query(sql, out).map_err(io_to_protocol)
    }

    /// PasswordMessage with a cleartext or MD5-hashed password.
    pub fn password(password: &[u8], out: &mut BytesMut) -> Result<(), ProtocolError> {
        frontend::password_message(password, out).map_err(io_to_protocol)
    }

    /// SASLInitialResponse.
    pub fn sasl_initial_response(
        mechanism: &str,
        data: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), ProtocolError> {
        frontend::sasl_initial_response(mechanism, data, out).map_err(io_to_protocol)
    }

    /// SASLResponse.
    pub fn sasl_response(data: &[u8], out: &mut BytesMut) -> Result<(), ProtocolError> {
        frontend::sasl_response(data, out).map_err(io_to_protocol)
    }

    /// CopyData carrying `payload`.
    pub fn copy_data(payload: &[u8], out: &mut BytesMut) {
        use bytes::BufMut;
        out.put_u8(b'd');
        out.put_i32((payload.len() + 4) as i32);
        out.put_slice(payload);
    }

    /// CopyDone.
    pub fn copy_done(out: &mut BytesMut) {
        frontend::copy_done(out);
    }

    /// Terminate.
    pub fn terminate(out: &mut BytesMut) {
        frontend::terminate(out);
    }
}

#[cfg(test)]
mod tests;
