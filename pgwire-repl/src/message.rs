//! Sans-IO bodies of the messages carried inside CopyData (the payload after the outer `d`
//! framing): START_REPLICATION's `w`/`k` (server) and `r`/`h` (client), and BASE_BACKUP's
//! `n`/`d`/`p`/`m` (v15+). All integers are big-endian. Parsers check exact lengths, so a
//! truncated or padded message is an error rather than a silent misread; byte payloads are
//! zero-copy slices of the input.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::lsn::{Lsn, PgTimestamp};

/// WAL bytes from the server (`w`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XLogData {
    /// Where `data` starts in the WAL.
    pub wal_start: Lsn,
    /// The server's current end of WAL (its send-request position).
    pub wal_end: Lsn,
    /// When the server sent this.
    pub send_time: PgTimestamp,
    /// The WAL bytes.
    pub data: Bytes,
}

impl XLogData {
    /// Bytes before the WAL data: type, dataStart, walEnd, sendTime.
    pub const HEADER_LEN: usize = 25;

    /// The location just past `data`, or `None` if it would overflow (a corrupt message).
    pub fn data_end(&self) -> Option<Lsn> {
        self.wal_start.checked_add(self.data.len() as u64)
    }

    /// Appends the `w` payload.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(Self::HEADER_LEN + self.data.len());
        buf.put_u8(b'w');
        buf.put_u64(self.wal_start.0);
        buf.put_u64(self.wal_end.0);
        buf.put_i64(self.send_time.0);
        buf.put_slice(&self.data);
    }
}

/// A keepalive from the server (`k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    /// The server's current end of WAL.
    pub wal_end: Lsn,
    /// When the server sent this.
    pub send_time: PgTimestamp,
    /// The server wants a status update now, or it will disconnect at wal_sender_timeout.
    pub reply_requested: bool,
}

impl PrimaryKeepalive {
    /// Exact payload length.
    pub const LEN: usize = 18;

    /// Appends the `k` payload.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(Self::LEN);
        buf.put_u8(b'k');
        buf.put_u64(self.wal_end.0);
        buf.put_i64(self.send_time.0);
        buf.put_u8(u8::from(self.reply_requested));
    }
}

/// A server message during START_REPLICATION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    XLogData(XLogData),
    PrimaryKeepalive(PrimaryKeepalive),
}

impl ReplicationMessage {
    /// Appends the payload.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            ReplicationMessage::XLogData(m) => m.encode(buf),
            ReplicationMessage::PrimaryKeepalive(m) => m.encode(buf),
        }
    }
}

/// Parses a CopyData payload received during START_REPLICATION.
pub fn parse_replication_message(payload: Bytes) -> Result<ReplicationMessage, ProtocolError> {
    const WHAT: &str = "replication CopyData";
    match payload.first() {
        None => Err(ProtocolError::malformed(WHAT, "empty payload")),
        Some(b'w') => {
            let p = &payload[..];
            if p.len() < XLogData::HEADER_LEN {
                return Err(too_short("XLogData", p.len(), XLogData::HEADER_LEN));
            }
            Ok(ReplicationMessage::XLogData(XLogData {
                wal_start: Lsn(be_u64(p, 1)),
                wal_end: Lsn(be_u64(p, 9)),
                send_time: PgTimestamp(be_i64(p, 17)),
                data: payload.slice(XLogData::HEADER_LEN..),
            }))
        }
        Some(b'k') => {
            let p = exact("primary keepalive", &payload, PrimaryKeepalive::LEN)?;
            Ok(ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                wal_end: Lsn(be_u64(p, 1)),
                send_time: PgTimestamp(be_i64(p, 9)),
                reply_requested: p[17] != 0,
            }))
        }
        Some(&t) => Err(unknown_type(WHAT, t, "'w' (XLogData) or 'k' (keepalive)")),
    }
}

/// The client's position report (`r`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    /// Last byte received + 1.
    pub write: Lsn,
    /// Last byte durably stored + 1; the only field that advances a physical slot. 0 = invalid.
    pub flush: Lsn,
    /// Last byte applied + 1 (0 for an archiver).
    pub apply: Lsn,
    /// When the client sent this.
    pub send_time: PgTimestamp,
    /// Asks the server to answer with a keepalive at once.
    pub reply_requested: bool,
}

impl StandbyStatusUpdate {
    /// Exact payload length.
    pub const LEN: usize = 34;

    /// Appends the 34-byte `r` payload.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(Self::LEN);
        buf.put_u8(b'r');
        buf.put_u64(self.write.0);
        buf.put_u64(self.flush.0);
        buf.put_u64(self.apply.0);
        buf.put_i64(self.send_time.0);
        buf.put_u8(u8::from(self.reply_requested));
    }
}

/// Parses an `r` payload (for the fake walsender and tests).
pub fn parse_standby_status_update(payload: &[u8]) -> Result<StandbyStatusUpdate, ProtocolError> {
    const WHAT: &str = "standby status update";
    match payload.first() {
        Some(b'r') => {}
        Some(&t) => return Err(unknown_type(WHAT, t, "'r'")),
        None => return Err(ProtocolError::malformed(WHAT, "empty payload")),
    }
    let p = exact(WHAT, payload, StandbyStatusUpdate::LEN)?;
    Ok(StandbyStatusUpdate {
        write: Lsn(be_u64(p, 1)),
        flush: Lsn(be_u64(p, 9)),
        apply: Lsn(be_u64(p, 17)),
        send_time: PgTimestamp(be_i64(p, 25)),
        reply_requested: p[33] != 0,
    })
}

/// Hot-standby feedback (`h`). All-zero xmins tell the server to stop holding back cleanup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HotStandbyFeedback {
    /// When the client sent this.
    pub send_time: PgTimestamp,
    /// The standby's oldest xmin (0 = none).
    pub xmin: u32,
    /// Epoch of `xmin`.
    pub xmin_epoch: u32,
    /// The standby's oldest catalog xmin (0 = none).
    pub catalog_xmin: u32,
    /// Epoch of `catalog_xmin`.
    pub catalog_xmin_epoch: u32,
}

impl HotStandbyFeedback {
    /// Exact payload length.
    pub const LEN: usize = 25;

    /// Appends the 25-byte `h` payload.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(Self::LEN);
        buf.put_u8(b'h');
        buf.put_i64(self.send_time.0);
        buf.put_u32(self.xmin);
        buf.put_u32(self.xmin_epoch);
        buf.put_u32(self.catalog_xmin);
        buf.put_u32(self.catalog_xmin_epoch);
    }
}

/// Parses an `h` payload (for the fake walsender and tests).
pub fn parse_hot_standby_feedback(payload: &[u8]) -> Result<HotStandbyFeedback, ProtocolError> {
    const WHAT: &str = "hot standby feedback";
    match payload.first() {
        Some(b'h') => {}
        Some(&t) => return Err(unknown_type(WHAT, t, "'h'")),
        None => return Err(ProtocolError::malformed(WHAT, "empty payload")),
    }
    let p = exact(WHAT, payload, HotStandbyFeedback::LEN)?;
    Ok(HotStandbyFeedback {
        send_time: PgTimestamp(be_i64(p, 1)),
        xmin: be_u32(p, 9),
        xmin_epoch: be_u32(p, 13),
        catalog_xmin: be_u32(p, 17),
        catalog_xmin_epoch: be_u32(p, 21),
    })
}

/// A client message during START_REPLICATION, as the fake walsender sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientReplicationMessage {
    StandbyStatusUpdate(StandbyStatusUpdate),
    HotStandbyFeedback(HotStandbyFeedback),
}

/// Parses a CopyData payload sent by a client during START_REPLICATION (`r` or `h`).
pub fn parse_client_replication_message(
    payload: &[u8],
) -> Result<ClientReplicationMessage, ProtocolError> {
    match payload.first() {
        Some(b'r') => {
            parse_standby_status_update(payload).map(ClientReplicationMessage::StandbyStatusUpdate)
        }
        Some(b'h') => {
            parse_hot_standby_feedback(payload).map(ClientReplicationMessage::HotStandbyFeedback)
        }
        Some(&t) => Err(unknown_type(
            "client replication CopyData",
            t,
            "'r' (standby status update) or 'h' (hot standby feedback)",
        )),
        None => Err(ProtocolError::malformed(
            "client replication CopyData",
            "empty payload",
        )),
    }
}

/// A CopyData payload of BASE_BACKUP on PostgreSQL 15 and later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseBackupCopyMessage {
    /// `n`: a new archive starts. `tablespace_location` is empty for the main data directory.
    NewArchive {
        /// `base.tar` or `<oid>.tar`, plus `.gz`/`.lz4`/`.zst` under server compression.
        name: String,
        tablespace_location: String,
    },
    /// `d`: archive or manifest bytes.
    Data(Bytes),
    /// `p`: cumulative uncompressed bytes of the whole backup sent so far.
    Progress(u64),
    /// `m`: the manifest starts; the following `Data` is the manifest.
    ManifestStart,
}

impl BaseBackupCopyMessage {
    /// Appends the payload. Names must not contain NUL (the parser would stop at it).
    /// A progress value above `i64::MAX` is written as is and will not parse back.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            BaseBackupCopyMessage::NewArchive {
                name,
                tablespace_location,
            } => {
                buf.reserve(3 + name.len() + tablespace_location.len());
                buf.put_u8(b'n');
                buf.put_slice(name.as_bytes());
                buf.put_u8(0);
                buf.put_slice(tablespace_location.as_bytes());
                buf.put_u8(0);
            }
            BaseBackupCopyMessage::Data(d) => {
                buf.reserve(1 + d.len());
                buf.put_u8(b'd');
                buf.put_slice(d);
            }
            BaseBackupCopyMessage::Progress(n) => {
                buf.reserve(9);
                buf.put_u8(b'p');
                buf.put_u64(*n);
            }
            BaseBackupCopyMessage::ManifestStart => buf.put_u8(b'm'),
        }
    }
}

/// Parses a CopyData payload of a v15+ BASE_BACKUP stream. Archive names are checked as
/// pg_basebackup checks them, since they become file names on our side.
pub fn parse_base_backup_message(payload: Bytes) -> Result<BaseBackupCopyMessage, ProtocolError> {
    match payload.first() {
        None => Err(ProtocolError::malformed(
            "BASE_BACKUP CopyData",
            "empty payload",
        )),
        Some(b'n') => {
            const WHAT: &str = "BASE_BACKUP new-archive";
            let (name, rest) = c_string(WHAT, "archive name", &payload[1..])?;
            let (location, rest) = c_string(WHAT, "tablespace location", rest)?;
            if !rest.is_empty() {
                return Err(trailing(WHAT, rest.len()));
            }
            validate_archive_name(&name)?;
            Ok(BaseBackupCopyMessage::NewArchive {
                name,
                tablespace_location: location,
            })
        }
        Some(b'd') => Ok(BaseBackupCopyMessage::Data(payload.slice(1..))),
        Some(b'p') => {
            const WHAT: &str = "BASE_BACKUP progress";
            let p = exact(WHAT, &payload, 9)?;
            let n = be_i64(p, 1);
            u64::try_from(n)
                .map(BaseBackupCopyMessage::Progress)
                .map_err(|_| ProtocolError::malformed(WHAT, format!("negative byte count {n}")))
        }
        Some(b'm') => {
            exact("BASE_BACKUP manifest-start", &payload, 1)?;
            Ok(BaseBackupCopyMessage::ManifestStart)
        }
        Some(&t) => Err(unknown_type(
            "BASE_BACKUP CopyData",
            t,
            "'n' (new archive), 'd' (data), 'p' (progress) or 'm' (manifest)",
        )),
    }
}

/// pg_basebackup's sanity check: the name becomes a file in the backup directory.
fn validate_archive_name(name: &str) -> Result<(), ProtocolError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.starts_with('.') {
        "it starts with '.'"
    } else if name.contains(['/', '\\']) {
        "it contains a path separator"
    } else {
        return Ok(());
    };
    Err(ProtocolError::malformed(
        "BASE_BACKUP new-archive",
        format!("invalid archive name {name:?}: {reason}"),
    ))
}

/// Splits off a NUL-terminated UTF-8 string.
fn c_string<'a>(
    what: &'static str,
    field: &str,
    buf: &'a [u8],
) -> Result<(String, &'a [u8]), ProtocolError> {
    let end = memchr::memchr(0, buf)
        .ok_or_else(|| ProtocolError::malformed(what, format!("{field} is not NUL-terminated")))?;
    let s = std::str::from_utf8(&buf[..end]).map_err(|_| {
        ProtocolError::malformed(
            what,
            format!(
                "{field} is not valid UTF-8: {:?}",
                String::from_utf8_lossy(&buf[..end])
            ),
        )
    })?;
    Ok((s.to_string(), &buf[end + 1..]))
}

/// Checks that a payload has exactly `len` bytes.
fn exact<'a>(what: &'static str, p: &'a [u8], len: usize) -> Result<&'a [u8], ProtocolError> {
    if p.len() < len {
        Err(too_short(what, p.len(), len))
    } else if p.len() > len {
        Err(trailing(what, p.len() - len))
    } else {
        Ok(p)
    }
}

fn too_short(what: &'static str, got: usize, want: usize) -> ProtocolError {
    ProtocolError::malformed(what, format!("{got} bytes, expected at least {want}"))
}

fn trailing(what: &'static str, extra: usize) -> ProtocolError {
    ProtocolError::malformed(what, format!("{extra} unexpected trailing bytes"))
}

fn unknown_type(what: &'static str, t: u8, expected: &str) -> ProtocolError {
    let shown = if t.is_ascii_graphic() {
        format!("{:?} (0x{t:02x})", t as char)
    } else {
        format!("0x{t:02x}")
    };
    ProtocolError::malformed(
        what,
        format!("unknown message type {shown}; expected {expected}"),
    )
}

// Callers check lengths first; these read fixed-size fields at known offsets.
fn be_u64(p: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&p[at..at + 8]);
    u64::from_be_bytes(a)
}

fn be_i64(p: &[u8], at: usize) -> i64 {
    be_u64(p, at) as i64
}

fn be_u32(p: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&p[at..at + 4]);
    u32::from_be_bytes(a)
}

#[cfg(test)]
mod tests;
