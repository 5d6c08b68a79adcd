//! Backend (server → client) messages as raw bytes, plus the replication payloads that travel
//! inside CopyData.
//!
//! Every function returns a complete frame (tag byte, Int32 big-endian length counting itself
//! but not the tag, body) unless its name says "payload": payloads are the *contents* of a
//! CopyData message and must be wrapped with [`copy_data`] before they go on the wire. All
//! integers are big-endian, all strings are NUL-terminated (`proto` §Message Formats).
//!
//! These builders double as byte fixtures for codec unit tests: `wire::ready_for_query(b'I')`
//! is exactly `5A 00 00 00 05 49`. They panic when given a string with an interior NUL, because
//! such a message cannot be framed; build deliberately malformed bytes with [`frame`] instead.

use bytes::BufMut;

/// Type OIDs used by walsender result sets (pg_type.dat).
pub mod oid {
    /// `bool`.
    pub const BOOL: u32 = 16;
    /// `bytea` (TIMELINE_HISTORY content in v12–13).
    pub const BYTEA: u32 = 17;
    /// `int8` (timeline in v16+ IDENTIFY_SYSTEM, BASE_BACKUP `tli` and `size`).
    pub const INT8: u32 = 20;
    /// `int2`.
    pub const INT2: u32 = 21;
    /// `int4` (timeline in v12–15 IDENTIFY_SYSTEM).
    pub const INT4: u32 = 23;
    /// `text`.
    pub const TEXT: u32 = 25;
    /// `oid` (BASE_BACKUP `spcoid`).
    pub const OID: u32 = 26;
}

/// ReadyForQuery status: idle (the only one a walsender ever reports).
pub const TX_IDLE: u8 = b'I';
/// ReadyForQuery status: in a transaction block.
pub const TX_IN_TRANSACTION: u8 = b'T';
/// ReadyForQuery status: in a failed transaction block.
pub const TX_FAILED: u8 = b'E';

/// Microseconds from the Unix epoch to the PostgreSQL epoch (2000-01-01 00:00:00 UTC).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// The current time as PostgreSQL sends it in replication messages: µs since 2000-01-01 UTC.
pub fn now_pg_micros() -> i64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    unix - PG_EPOCH_OFFSET_MICROS
}

/// Formats an LSN the way the server prints it: `%X/%X`, upper-case hex, unpadded.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Frames `body` under `tag`: `tag`, Int32 length (`body.len() + 4`), `body`.
pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.put_u8(tag);
    out.put_u32(u32::try_from(body.len() + 4).expect("message body larger than 4 GiB"));
    out.put_slice(body);
    out
}

/// Appends `s` and a terminating NUL.
pub(crate) fn put_cstr(out: &mut Vec<u8>, s: &str) {
    assert!(
        !s.contains('\0'),
        "string {s:?} contains a NUL byte and cannot be framed"
    );
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

fn authentication(code: i32, extra: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + extra.len());
    body.put_i32(code);
    body.put_slice(extra);
    frame(b'R', &body)
}

/// AuthenticationOk: `R`, Int32 0. Bytes: `52 00 00 00 08 00 00 00 00`.
pub fn auth_ok() -> Vec<u8> {
    authentication(0, &[])
}

/// AuthenticationCleartextPassword: `R`, Int32 3. The client answers with a PasswordMessage
/// holding the password and a NUL.
pub fn auth_cleartext_password() -> Vec<u8> {
    authentication(3, &[])
}

/// AuthenticationMD5Password: `R`, Int32 5, then the 4-byte salt.
pub fn auth_md5_password(salt: [u8; 4]) -> Vec<u8> {
    authentication(5, &salt)
}

/// AuthenticationSASL: `R`, Int32 10, each mechanism name NUL-terminated, then an empty string
/// (one more NUL). Real servers list `SCRAM-SHA-256-PLUS` first, and only over TLS.
pub fn auth_sasl(mechanisms: &[&str]) -> Vec<u8> {
    let mut extra = Vec::new();
    for m in mechanisms {
        put_cstr(&mut extra, m);
    }
    extra.put_u8(0);
    authentication(10, &extra)
}

/// AuthenticationSASLContinue: `R`, Int32 11, then the server-first message (not terminated),
/// e.g. `r=<nonce>,s=<salt>,i=4096`.
pub fn auth_sasl_continue(data: &[u8]) -> Vec<u8> {
    authentication(11, data)
}

/// AuthenticationSASLFinal: `R`, Int32 12, then the server-final message (`v=<signature>`).
pub fn auth_sasl_final(data: &[u8]) -> Vec<u8> {
    authentication(12, data)
}

/// ParameterStatus: `S`, name, value (both NUL-terminated). May arrive at any time, even
/// inside COPY.
pub fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_cstr(&mut body, name);
    put_cstr(&mut body, value);
    frame(b'S', &body)
}

/// BackendKeyData: `K`, Int32 process id, Int32 secret key (protocol 3.0 fixed size).
pub fn backend_key_data(pid: i32, secret: i32) -> Vec<u8> {
    let mut body = Vec::with_capacity(8);
    body.put_i32(pid);
    body.put_i32(secret);
    frame(b'K', &body)
}

/// ReadyForQuery: `Z`, one status byte ([`TX_IDLE`], [`TX_IN_TRANSACTION`], [`TX_FAILED`]).
pub fn ready_for_query(status: u8) -> Vec<u8> {
    frame(b'Z', &[status])
}

/// The `typlen` the server reports for a type (`pg_type.typlen`): -1 for varlena.
fn type_len(type_oid: u32) -> i16 {
    match type_oid {
        oid::BOOL => 1,
        oid::INT2 => 2,
        oid::INT4 | oid::OID => 4,
        oid::INT8 => 8,
        _ => -1,
    }
}

/// RowDescription: `T`, Int16 column count, then per column: name, Int32 table oid (0),
/// Int16 attribute number (0), Int32 type oid, Int16 type length (from the oid: 8 for int8,
/// 4 for int4/oid, -1 for text/bytea), Int32 type modifier (-1), Int16 format (0 = text).
/// Walsender result sets are always text format.
pub fn row_description(columns: &[(&str, u32)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.put_i16(i16::try_from(columns.len()).expect("too many columns"));
    for (name, type_oid) in columns {
        put_cstr(&mut body, name);
        body.put_i32(0);
        body.put_i16(0);
        body.put_u32(*type_oid);
        body.put_i16(type_len(*type_oid));
        body.put_i32(-1);
        body.put_i16(0);
    }
    frame(b'T', &body)
}

/// DataRow: `D`, Int16 value count, then per value Int32 length (-1 for NULL) and the bytes.
pub fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
    let mut body = Vec::new();
    body.put_i16(i16::try_from(values.len()).expect("too many values"));
    for v in values {
        match v {
            None => body.put_i32(-1),
            Some(bytes) => {
                body.put_i32(i32::try_from(bytes.len()).expect("value larger than 2 GiB"));
                body.put_slice(bytes);
            }
        }
    }
    frame(b'D', &body)
}

/// [`data_row`] for text values.
pub fn data_row_text(values: &[Option<&str>]) -> Vec<u8> {
    let vals: Vec<Option<&[u8]>> = values.iter().map(|v| v.map(str::as_bytes)).collect();
    data_row(&vals)
}

/// CommandComplete: `C`, the command tag (e.g. `IDENTIFY_SYSTEM`, `SELECT`, `COPY 0`).
pub fn command_complete(tag: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_cstr(&mut body, tag);
    frame(b'C', &body)
}

/// The fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    /// `S` and `V`: ERROR, FATAL, PANIC, WARNING, NOTICE, DEBUG, INFO or LOG.
    pub severity: String,
    /// `C`: the SQLSTATE, five characters.
    pub code: String,
    /// `M`: the primary message.
    pub message: String,
    /// `D`: optional detail.
    pub detail: Option<String>,
    /// `H`: optional hint.
    pub hint: Option<String>,
}

impl ErrorFields {
    /// Fields with the given severity, SQLSTATE and message, no detail or hint.
    pub fn new(severity: &str, code: &str, message: &str) -> Self {
        ErrorFields {
            severity: severity.to_owned(),
            code: code.to_owned(),
            message: message.to_owned(),
            detail: None,
            hint: None,
        }
    }

    /// Sets the detail (`D`).
    pub fn with_detail(mut self, detail: &str) -> Self {
        self.detail = Some(detail.to_owned());
        self
    }

    /// Sets the hint (`H`).
    pub fn with_hint(mut self, hint: &str) -> Self {
        self.hint = Some(hint.to_owned());
        self
    }

    /// The body shared by `E` and `N`: field-type byte + string pairs in the order a server
    /// sends them (`S`, `V`, `C`, `M`, `D`, `H`), then a final NUL.
    fn body(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut field = |t: u8, v: &str| {
            body.put_u8(t);
            put_cstr(&mut body, v);
        };
        field(b'S', &self.severity);
        field(b'V', &self.severity);
        field(b'C', &self.code);
        field(b'M', &self.message);
        if let Some(d) = &self.detail {
            field(b'D', d);
        }
        if let Some(h) = &self.hint {
            field(b'H', h);
        }
        body.put_u8(0);
        body
    }
}

/// ErrorResponse: `E`, fields `S` severity, `V` severity (non-localized, as v9.6+ send it),
/// `C` SQLSTATE, `M` message, optional `D` detail and `H` hint, then a NUL.
pub fn error_response(fields: &ErrorFields) -> Vec<u8> {
    frame(b'E', &fields.body())
}

/// NoticeResponse: `N`, same body as [`error_response`]. May arrive at any time.
pub fn notice_response(fields: &ErrorFields) -> Vec<u8> {
    frame(b'N', &fields.body())
}

fn copy_response(tag: u8) -> Vec<u8> {
    // Int8 overall format 0 (text), Int16 zero columns: what walsenders send.
    frame(tag, &[0, 0, 0])
}

/// CopyOutResponse `H` as BASE_BACKUP sends it: `48 00 00 00 07 00 00 00`.
pub fn copy_out_response() -> Vec<u8> {
    copy_response(b'H')
}

/// CopyInResponse `G` (UPLOAD_MANIFEST): `47 00 00 00 07 00 00 00`.
pub fn copy_in_response() -> Vec<u8> {
    copy_response(b'G')
}

/// CopyBothResponse `W` (START_REPLICATION): `57 00 00 00 07 00 00 00`.
pub fn copy_both_response() -> Vec<u8> {
    copy_response(b'W')
}

/// CopyData `d` wrapping `payload`. Same layout in both directions.
pub fn copy_data(payload: &[u8]) -> Vec<u8> {
    frame(b'd', payload)
}

/// CopyDone `c`: `63 00 00 00 04`. Same in both directions.
pub fn copy_done() -> Vec<u8> {
    frame(b'c', &[])
}

/// NegotiateProtocolVersion `v`: Int32 newest minor version supported, Int32 count of
/// unrecognized `_pq_.` options, then their names.
pub fn negotiate_protocol_version(newest_minor: i32, unrecognized: &[&str]) -> Vec<u8> {
    let mut body = Vec::new();
    body.put_i32(newest_minor);
    body.put_i32(i32::try_from(unrecognized.len()).expect("too many options"));
    for o in unrecognized {
        put_cstr(&mut body, o);
    }
    frame(b'v', &body)
}

/// XLogData payload: `w`, Int64 dataStart, Int64 walEnd, Int64 sendTime (µs since 2000), then
/// the WAL bytes. Header is 25 bytes. Wrap in [`copy_data`].
pub fn xlog_data_payload(start: u64, wal_end: u64, send_time: i64, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(25 + data.len());
    p.put_u8(b'w');
    p.put_u64(start);
    p.put_u64(wal_end);
    p.put_i64(send_time);
    p.put_slice(data);
    p
}

/// Primary keepalive payload: `k`, Int64 walEnd, Int64 sendTime, Byte1 replyRequested
/// (1 = answer now). 18 bytes. Wrap in [`copy_data`].
pub fn keepalive_payload(wal_end: u64, send_time: i64, reply_requested: bool) -> Vec<u8> {
    let mut p = Vec::with_capacity(18);
    p.put_u8(b'k');
    p.put_u64(wal_end);
    p.put_i64(send_time);
    p.put_u8(u8::from(reply_requested));
    p
}

/// BASE_BACKUP (v15+) new-archive payload: `n`, archive name, tablespace location (`""` for
/// the main data directory). Wrap in [`copy_data`].
pub fn bb_new_archive_payload(name: &str, location: &str) -> Vec<u8> {
    let mut p = vec![b'n'];
    put_cstr(&mut p, name);
    put_cstr(&mut p, location);
    p
}

/// BASE_BACKUP (v15+) data payload: `d` then archive or manifest bytes.
pub fn bb_data_payload(data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + data.len());
    p.put_u8(b'd');
    p.put_slice(data);
    p
}

/// BASE_BACKUP (v15+) progress payload: `p`, Int64 cumulative uncompressed bytes of the
/// whole backup so far.
pub fn bb_progress_payload(bytes_done: i64) -> Vec<u8> {
    let mut p = Vec::with_capacity(9);
    p.put_u8(b'p');
    p.put_i64(bytes_done);
    p
}

/// BASE_BACKUP (v15+) manifest-start payload: the single byte `m`; the following `d`
/// payloads are the manifest.
pub fn bb_manifest_payload() -> Vec<u8> {
    vec![b'm']
}
