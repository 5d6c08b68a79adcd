//! The script a [`FakeWalsender`](crate::FakeWalsender) plays on one connection.
//!
//! Each builder call adds ONE step; failures name the step by its 1-based position, so
//! "step 4" is the fourth call. Steps run strictly in order: `send_*`/`reply_*` steps write
//! bytes, `expect_*` steps read the next client message and fail the script if it does not
//! match (each read has the script's timeout, 10 s by default).
//!
//! While a CopyBoth stream is open (from [`Script::start_copy_both`] until the client's
//! CopyDone or a step that ends the stream), StandbyStatusUpdate and HotStandbyFeedback
//! messages that arrive while another message is expected are recorded and skipped, as a real
//! walsender absorbs them; [`Script::strict`] turns that off.

use std::time::Duration;

use crate::replies::{self, BaseBackupSpec};
use crate::wire::{self, ErrorFields, StandbyStatusUpdate};

/// A check on a StandbyStatusUpdate, with the description used in failure messages.
pub(crate) struct StatusCheck {
    pub(crate) description: String,
    pub(crate) check: Box<dyn Fn(&StandbyStatusUpdate) -> bool + Send + Sync>,
}

/// How a sending step changes the copy state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyEffect {
    Unchanged,
    OpensCopyBoth,
    EndsCopy,
}

pub(crate) enum Step {
    ExpectStartup,
    Send {
        what: String,
        bytes: Vec<u8>,
        effect: CopyEffect,
    },
    SendThenClose {
        what: String,
        bytes: Vec<u8>,
    },
    SendXLogData {
        start: u64,
        data: Vec<u8>,
    },
    SendKeepalive {
        wal_end: u64,
        reply_requested: bool,
    },
    ExpectQuery(String),
    ExpectPassword(Option<String>),
    ExpectStandbyStatus(Option<StatusCheck>),
    ExpectHotStandbyFeedback,
    ExpectCopyDone,
    /// CopyData messages up to CopyDone (a copy-in such as UPLOAD_MANIFEST's); the payloads,
    /// concatenated, must equal the bytes given when there are some.
    ExpectCopyIn(Option<Vec<u8>>),
    ExpectCopyFail,
    ExpectTerminate,
    ShutdownWhenCaughtUp {
        sent_ptr: u64,
    },
    Sleep(Duration),
    Close,
    WaitForClientClose,
}

impl Step {
    /// What an expecting step waits for, for timeout messages.
    pub(crate) fn waiting_for(&self) -> String {
        match self {
            Step::ExpectStartup => "the startup packet".to_owned(),
            Step::ExpectQuery(n) => format!("Query matching {n:?}"),
            Step::ExpectPassword(_) => "PasswordMessage".to_owned(),
            Step::ExpectStandbyStatus(None) => "StandbyStatusUpdate".to_owned(),
            Step::ExpectStandbyStatus(Some(c)) => {
                format!("StandbyStatusUpdate with {}", c.description)
            }
            Step::ExpectHotStandbyFeedback => "HotStandbyFeedback".to_owned(),
            Step::ExpectCopyDone => "CopyDone".to_owned(),
            Step::ExpectCopyIn(_) => "CopyData up to CopyDone".to_owned(),
            Step::ExpectCopyFail => "CopyFail".to_owned(),
            Step::ExpectTerminate => "Terminate".to_owned(),
            Step::ShutdownWhenCaughtUp { sent_ptr } => {
                format!(
                    "a StandbyStatusUpdate reaching {} before shutdown",
                    wire::format_lsn(*sent_ptr)
                )
            }
            Step::WaitForClientClose => "the client to close the connection".to_owned(),
            _ => "the step".to_owned(),
        }
    }

    fn closes(&self) -> bool {
        matches!(
            self,
            Step::SendThenClose { .. }
                | Step::ShutdownWhenCaughtUp { .. }
                | Step::Close
                | Step::WaitForClientClose
        )
    }
}

/// A fluent list of steps for one connection. See the module documentation.
pub struct Script {
    pub(crate) steps: Vec<Step>,
    pub(crate) major: u32,
    pub(crate) timeout: Duration,
    pub(crate) strict: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script::new()
    }
}

impl Script {
    /// An empty script for a PostgreSQL 17 server.
    pub fn new() -> Self {
        Script::for_major(17)
    }

    /// An empty script for server major version `major` (12–18). The major version selects
    /// command tags (`SELECT` in v12) and column types in the replies the steps build.
    pub fn for_major(major: u32) -> Self {
        Script {
            steps: Vec::new(),
            major,
            timeout: Duration::from_secs(10),
            strict: false,
        }
    }

    /// Sets how long each `expect_*` step (and the wait for the connection) may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Fails on feedback messages that arrive while something else is expected, even inside
    /// CopyBoth.
    pub fn strict(mut self) -> Self {
        self.strict = true;
        self
    }

    /// The number of steps so far.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the script has no steps.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    fn push(mut self, step: Step) -> Self {
        if let Some(last) = self.steps.last() {
            assert!(
                !last.closes(),
                "step {} closes the connection; nothing can follow it",
                self.steps.len()
            );
        }
        self.steps.push(step);
        self
    }

    fn send(self, what: &str, bytes: Vec<u8>, effect: CopyEffect) -> Self {
        self.push(Step::Send {
            what: what.to_owned(),
            bytes,
            effect,
        })
    }

    /// Reads the startup packet. An SSLRequest or GSSENCRequest first is answered `N`; the
    /// StartupMessage must ask for protocol 3.0. Its parameters go into the transcript.
    pub fn expect_startup(self) -> Self {
        self.push(Step::ExpectStartup)
    }

    /// AuthenticationOk, ParameterStatus (server_version = `server_version`, server_encoding,
    /// client_encoding, DateStyle, integer_datetimes, IntervalStyle,
    /// standard_conforming_strings, TimeZone), BackendKeyData, ReadyForQuery `I`.
    pub fn authenticate_ok(self, server_version: &str) -> Self {
        self.send(
            "the login sequence",
            replies::login_ok(server_version, 4242, 0x5EC2E7),
            CopyEffect::Unchanged,
        )
    }

    /// Sends AuthenticationCleartextPassword; follow with [`Script::expect_password`].
    pub fn request_cleartext_password(self) -> Self {
        self.send(
            "AuthenticationCleartextPassword",
            wire::auth_cleartext_password(),
            CopyEffect::Unchanged,
        )
    }

    /// Sends AuthenticationMD5Password with `salt`; follow with [`Script::expect_password`].
    pub fn request_md5_password(self, salt: [u8; 4]) -> Self {
        self.send(
            "AuthenticationMD5Password",
            wire::auth_md5_password(salt),
            CopyEffect::Unchanged,
        )
    }

    /// Expects a PasswordMessage; with `Some(p)` its text must be exactly `p` (for MD5, the
    /// `md5…` hash). SASL messages arrive as PasswordMessage too; use `None` for those.
    pub fn expect_password(self, expected: Option<&str>) -> Self {
        self.push(Step::ExpectPassword(expected.map(str::to_owned)))
    }

    /// Expects a Query whose text starts with or contains `needle` (plain substring, no regex).
    pub fn expect_query(self, needle: &str) -> Self {
        self.push(Step::ExpectQuery(needle.to_owned()))
    }

    /// IDENTIFY_SYSTEM result (timeline int4 before v16, int8 from v16), tag, ReadyForQuery.
    /// `major` overrides the script's major version for this reply.
    pub fn reply_identify_system(self, sysid: u64, tli: u32, xlogpos: u64, major: u32) -> Self {
        let bytes = replies::identify_system(sysid, tli, xlogpos, major);
        self.send("the IDENTIFY_SYSTEM reply", bytes, CopyEffect::Unchanged)
    }

    /// A result set with text values: `columns` are (name, type oid, see [`wire::oid`]), then
    /// CommandComplete `tag`, then ReadyForQuery.
    pub fn reply_rows(
        self,
        columns: &[(&str, u32)],
        rows: Vec<Vec<Option<&str>>>,
        tag: &str,
    ) -> Self {
        let mut bytes = replies::result_set(columns, &rows, tag);
        bytes.extend(wire::ready_for_query(wire::TX_IDLE));
        self.send("a result set", bytes, CopyEffect::Unchanged)
    }

    /// `SHOW name` reply with `value` (e.g. `("wal_segment_size", "16MB")`).
    pub fn reply_show(self, name: &str, value: &str) -> Self {
        let bytes = replies::show(name, value, self.major);
        self.send("the SHOW reply", bytes, CopyEffect::Unchanged)
    }

    /// TIMELINE_HISTORY reply for `tli` with `content` (bytea column before v14).
    pub fn reply_timeline_history(self, tli: u32, content: &[u8]) -> Self {
        let bytes = replies::timeline_history(tli, content, self.major);
        self.send("the TIMELINE_HISTORY reply", bytes, CopyEffect::Unchanged)
    }

    /// CommandComplete `tag` then ReadyForQuery (e.g. DROP_REPLICATION_SLOT).
    pub fn reply_command(self, tag: &str) -> Self {
        let mut bytes = wire::command_complete(tag);
        bytes.extend(wire::ready_for_query(wire::TX_IDLE));
        self.send("CommandComplete", bytes, CopyEffect::Unchanged)
    }

    /// ErrorResponse (severity ERROR) then ReadyForQuery: a failed command.
    pub fn reply_error(
        self,
        code: &str,
        message: &str,
        detail: Option<&str>,
        hint: Option<&str>,
    ) -> Self {
        let bytes = replies::error_then_ready(code, message, detail, hint);
        self.send("ErrorResponse", bytes, CopyEffect::EndsCopy)
    }

    /// NoticeResponse with severity NOTICE; valid anywhere, including inside COPY.
    pub fn send_notice(self, message: &str) -> Self {
        let bytes = wire::notice_response(&ErrorFields::new("NOTICE", "00000", message));
        self.send("NoticeResponse", bytes, CopyEffect::Unchanged)
    }

    /// ParameterStatus; valid anywhere, including inside COPY.
    pub fn send_parameter_status(self, name: &str, value: &str) -> Self {
        self.send(
            "ParameterStatus",
            wire::parameter_status(name, value),
            CopyEffect::Unchanged,
        )
    }

    /// ErrorResponse with severity FATAL, then close (e.g. 28P01 bad password, 57P01 admin
    /// shutdown, 53300 too many connections).
    pub fn send_fatal(self, code: &str, message: &str) -> Self {
        let bytes = wire::error_response(&ErrorFields::new("FATAL", code, message));
        self.push(Step::SendThenClose {
            what: "FATAL ErrorResponse".to_owned(),
            bytes,
        })
    }

    /// CopyBothResponse `W`: the stream starts.
    pub fn start_copy_both(self) -> Self {
        self.send(
            "CopyBothResponse",
            wire::copy_both_response(),
            CopyEffect::OpensCopyBoth,
        )
    }

    /// XLogData with dataStart `start_lsn`, walEnd `start_lsn + data.len()`, sendTime now.
    pub fn send_xlogdata(self, start_lsn: u64, data: &[u8]) -> Self {
        self.push(Step::SendXLogData {
            start: start_lsn,
            data: data.to_vec(),
        })
    }

    /// Primary keepalive with walEnd `wal_end`, sendTime now.
    pub fn send_keepalive(self, wal_end: u64, reply_requested: bool) -> Self {
        self.push(Step::SendKeepalive {
            wal_end,
            reply_requested,
        })
    }

    /// Expects a StandbyStatusUpdate (34 bytes, checked exactly).
    pub fn expect_standby_status(self) -> Self {
        self.push(Step::ExpectStandbyStatus(None))
    }

    /// Expects a StandbyStatusUpdate satisfying `check`; `description` (e.g. "flush >=
    /// 0/3000000") appears in the failure message.
    pub fn expect_standby_status_where(
        self,
        description: &str,
        check: impl Fn(&StandbyStatusUpdate) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.push(Step::ExpectStandbyStatus(Some(StatusCheck {
            description: description.to_owned(),
            check: Box::new(check),
        })))
    }

    /// Expects a HotStandbyFeedback message.
    pub fn expect_hot_standby_feedback(self) -> Self {
        self.push(Step::ExpectHotStandbyFeedback)
    }

    /// Expects CopyDone from the client; this ends the client's half of the copy.
    pub fn expect_copy_done(self) -> Self {
        self.push(Step::ExpectCopyDone)
    }

    /// CopyInResponse `G`: the client sends a copy-in next (UPLOAD_MANIFEST).
    pub fn start_copy_in(self) -> Self {
        self.send(
            "CopyInResponse",
            wire::copy_in_response(),
            CopyEffect::Unchanged,
        )
    }

    /// Expects CopyData messages up to the client's CopyDone; with `Some(bytes)`, their
    /// payloads concatenated must be exactly `bytes` (the transcript keeps each message).
    pub fn expect_copy_in(self, expected: Option<&[u8]>) -> Self {
        self.push(Step::ExpectCopyIn(expected.map(<[u8]>::to_vec)))
    }

    /// Expects CopyFail from the client.
    pub fn expect_copy_fail(self) -> Self {
        self.push(Step::ExpectCopyFail)
    }

    /// Expects Terminate.
    pub fn expect_terminate(self) -> Self {
        self.push(Step::ExpectTerminate)
    }

    /// Sends CopyDone (the server's half; for an end of timeline, before the client's).
    pub fn send_copy_done(self) -> Self {
        self.send("CopyDone", wire::copy_done(), CopyEffect::Unchanged)
    }

    /// After the client's CopyDone: CopyDone, C `START_STREAMING`, C `START_REPLICATION`, Z.
    pub fn send_stream_end(self) -> Self {
        let bytes = replies::stream_end(self.major);
        self.send("the end of the stream", bytes, CopyEffect::EndsCopy)
    }

    /// End of a historic timeline, after both CopyDones were exchanged (use
    /// `send_copy_done().expect_copy_done()` first), or directly after START_REPLICATION when
    /// it asked for exactly a timeline's end: T(`next_tli` int8, `next_tli_startpos` text), D,
    /// C `START_STREAMING`, C `START_REPLICATION`, Z.
    pub fn send_end_of_timeline(self, next_tli: u32, next_start_lsn: u64) -> Self {
        let bytes = replies::end_of_timeline(next_tli, next_start_lsn, self.major);
        self.send("the end-of-timeline result", bytes, CopyEffect::EndsCopy)
    }

    /// What a walsender does on smart/fast shutdown once the client has caught up: C `COPY 0`
    /// inside CopyBoth, NO CopyDone, then close.
    pub fn send_shutdown_done(self) -> Self {
        self.push(Step::SendThenClose {
            what: "CommandComplete \"COPY 0\"".to_owned(),
            bytes: replies::shutdown_done(),
        })
    }

    /// The whole shutdown handshake (`ws` WalSndDone): keepalive with reply requested, then wait
    /// until a StandbyStatusUpdate reports flush (or write, if flush is 0) >= `sent_ptr`, then
    /// C `COPY 0` without CopyDone, then close. Status updates short of `sent_ptr` are recorded
    /// and waited past, as the server does.
    pub fn shutdown_when_caught_up(self, sent_ptr: u64) -> Self {
        self.push(Step::ShutdownWhenCaughtUp { sent_ptr })
    }

    /// ErrorResponse (ERROR) inside COPY, then ReadyForQuery, as the walsender's error recovery
    /// does (e.g. 58P01 "requested WAL segment … has already been removed").
    pub fn send_error_in_copy(self, code: &str, message: &str) -> Self {
        let bytes = replies::error_then_ready(code, message, None, None);
        self.send("ErrorResponse inside COPY", bytes, CopyEffect::EndsCopy)
    }

    /// The v15+ BASE_BACKUP reply for `spec` (see [`replies::base_backup_v15`]).
    pub fn reply_base_backup_v15(self, spec: &BaseBackupSpec) -> Self {
        self.send(
            "the BASE_BACKUP reply",
            replies::base_backup_v15(spec),
            CopyEffect::Unchanged,
        )
    }

    /// The v12–14 BASE_BACKUP reply for `spec` (see [`replies::base_backup_v14`]), with command
    /// tags for the script's major version.
    pub fn reply_base_backup_v14(self, spec: &BaseBackupSpec) -> Self {
        let bytes = replies::base_backup_v14(spec, self.major);
        self.send("the BASE_BACKUP reply", bytes, CopyEffect::Unchanged)
    }

    /// Sends `bytes` as they are.
    pub fn send_raw(self, bytes: &[u8]) -> Self {
        self.send("raw bytes", bytes.to_vec(), CopyEffect::Unchanged)
    }

    /// Sends the first `keep` bytes of `bytes` (a frame cut in the middle), then closes.
    pub fn send_truncated(self, bytes: &[u8], keep: usize) -> Self {
        assert!(
            keep < bytes.len(),
            "send_truncated: keep ({keep}) must be less than the {} bytes given",
            bytes.len()
        );
        self.push(Step::SendThenClose {
            what: "a truncated frame".to_owned(),
            bytes: bytes[..keep].to_vec(),
        })
    }

    /// Sends a header with `tag` announcing `len` (the length word, e.g. 1 GiB), then 16 bytes of
    /// zeros, and keeps the connection open: the client must refuse rather than allocate or
    /// wait. Usually followed by [`Script::wait_for_client_close`].
    pub fn send_oversized_header(self, tag: u8, len: u32) -> Self {
        let mut bytes = vec![tag];
        bytes.extend(len.to_be_bytes());
        bytes.extend([0u8; 16]);
        self.send("an oversized header", bytes, CopyEffect::Unchanged)
    }

    /// Pauses without reading.
    pub fn sleep(self, duration: Duration) -> Self {
        self.push(Step::Sleep(duration))
    }

    /// Closes the connection (FIN; pending client data is drained, not reset).
    pub fn close(self) -> Self {
        self.push(Step::Close)
    }

    /// Waits for the client to close the connection. Terminate (and, in CopyBoth, feedback) may
    /// come first; any other message fails the step.
    pub fn wait_for_client_close(self) -> Self {
        self.push(Step::WaitForClientClose)
    }
}
