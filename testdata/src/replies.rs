//! Whole walsender replies (several messages concatenated), as real servers send them. The
//! fake walsender's script steps send these; codec tests can feed them to a decoder directly.
//!
//! `major` is the server's major version (12–18); it selects the command tag (`SELECT` in
//! v12, the command name in v13+) and column types that changed between versions.

use crate::wire::{self, oid, ErrorFields, TX_IDLE};

/// The CommandComplete tag a walsender sends for a replication command: `SELECT` in v12, the
/// command name from v13 on (`ws` exec_replication_command).
pub fn command_tag(major: u32, command: &str) -> &str {
    if major <= 12 {
        "SELECT"
    } else {
        command
    }
}

/// A result set: RowDescription, DataRows (text values), CommandComplete `tag`. No
/// ReadyForQuery.
pub fn result_set(columns: &[(&str, u32)], rows: &[Vec<Option<&str>>], tag: &str) -> Vec<u8> {
    let mut out = wire::row_description(columns);
    for row in rows {
        assert_eq!(
            row.len(),
            columns.len(),
            "row {row:?} does not match the columns"
        );
        out.extend(wire::data_row_text(row));
    }
    out.extend(wire::command_complete(tag));
    out
}

/// The answer to a successful login: AuthenticationOk, the ParameterStatus messages a v12–18
/// walsender reports (server_version, server_encoding UTF8, client_encoding UTF8, DateStyle
/// "ISO, MDY", integer_datetimes on, IntervalStyle postgres, standard_conforming_strings on,
/// TimeZone UTC), BackendKeyData, ReadyForQuery idle.
pub fn login_ok(server_version: &str, pid: i32, secret: i32) -> Vec<u8> {
    let mut out = wire::auth_ok();
    for (name, value) in [
        ("server_version", server_version),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("IntervalStyle", "postgres"),
        ("standard_conforming_strings", "on"),
        ("TimeZone", "UTC"),
    ] {
        out.extend(wire::parameter_status(name, value));
    }
    out.extend(wire::backend_key_data(pid, secret));
    out.extend(wire::ready_for_query(TX_IDLE));
    out
}

/// IDENTIFY_SYSTEM reply: columns `systemid` text, `timeline` (int4 in v≤15, int8 in v16+),
/// `xlogpos` text, `dbname` text (NULL, physical), one row, tag, ReadyForQuery.
pub fn identify_system(sysid: u64, tli: u32, xlogpos: u64, major: u32) -> Vec<u8> {
    let tli_type = if major >= 16 { oid::INT8 } else { oid::INT4 };
    let sysid = sysid.to_string();
    let tli = tli.to_string();
    let pos = wire::format_lsn(xlogpos);
    let mut out = result_set(
        &[
            ("systemid", oid::TEXT),
            ("timeline", tli_type),
            ("xlogpos", oid::TEXT),
            ("dbname", oid::TEXT),
        ],
        &[vec![Some(&sysid), Some(&tli), Some(&pos), None]],
        command_tag(major, "IDENTIFY_SYSTEM"),
    );
    out.extend(wire::ready_for_query(TX_IDLE));
    out
}

/// `SHOW name` reply: one text column named `name`, one row, tag `SHOW` (v12: `SELECT`), Z.
pub fn show(name: &str, value: &str, major: u32) -> Vec<u8> {
    let mut out = result_set(
        &[(name, oid::TEXT)],
        &[vec![Some(value)]],
        command_tag(major, "SHOW"),
    );
    out.extend(wire::ready_for_query(TX_IDLE));
    out
}

/// TIMELINE_HISTORY reply: `filename` text (`%08X.history`), `content` (bytea in v12–13, text
/// in v14+, raw bytes either way), tag, Z.
pub fn timeline_history(tli: u32, content: &[u8], major: u32) -> Vec<u8> {
    let content_type = if major <= 13 { oid::BYTEA } else { oid::TEXT };
    let filename = format!("{tli:08X}.history");
    let mut out = wire::row_description(&[("filename", oid::TEXT), ("content", content_type)]);
    out.extend(wire::data_row(&[Some(filename.as_bytes()), Some(content)]));
    out.extend(wire::command_complete(command_tag(
        major,
        "TIMELINE_HISTORY",
    )));
    out.extend(wire::ready_for_query(TX_IDLE));
    out
}

/// An ErrorResponse with severity ERROR followed by ReadyForQuery idle: how a walsender fails a
/// command and stays usable.
pub fn error_then_ready(
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) -> Vec<u8> {
    let mut fields = ErrorFields::new("ERROR", code, message);
    fields.detail = detail.map(str::to_owned);
    fields.hint = hint.map(str::to_owned);
    let mut out = wire::error_response(&fields);
    out.extend(wire::ready_for_query(TX_IDLE));
    out
}

/// The server's side of a stream the client ended with CopyDone: CopyDone, C
/// `START_STREAMING`, C `START_REPLICATION` (`SELECT` in v12), Z.
pub fn stream_end(major: u32) -> Vec<u8> {
    let mut out = wire::copy_done();
    out.extend(wire::command_complete("START_STREAMING"));
    out.extend(wire::command_complete(command_tag(
        major,
        "START_REPLICATION",
    )));
    out.extend(wire::ready_for_query(TX_IDLE));
    out
}

/// End of a historic timeline, after both CopyDones were exchanged (or instead of COPY when the
/// start point is exactly the timeline's end): T (`next_tli` int8, `next_tli_startpos` text),
/// D, C `START_STREAMING`, C `START_REPLICATION` (`SELECT` in v12), Z.
pub fn end_of_timeline(next_tli: u32, next_start_lsn: u64, major: u32) -> Vec<u8> {
    let tli = next_tli.to_string();
    let pos = wire::format_lsn(next_start_lsn);
    let mut out =
        wire::row_description(&[("next_tli", oid::INT8), ("next_tli_startpos", oid::TEXT)]);
    out.extend(wire::data_row_text(&[Some(&tli), Some(&pos)]));
    out.extend(wire::command_complete("START_STREAMING"));
    out.extend(wire::command_complete(command_tag(
        major,
        "START_REPLICATION",
    )));
    out.extend(wire::ready_for_query(TX_IDLE));
    out
}

/// What a walsender sends when the server shuts down (smart/fast) and the client has caught up:
/// CommandComplete `COPY 0` while still in CopyBoth, with no CopyDone (`ws` WalSndDone). The
/// server then closes the connection.
pub fn shutdown_done() -> Vec<u8> {
    wire::command_complete("COPY 0")
}

/// One row of the BASE_BACKUP tablespace result set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablespaceRow {
    /// `spcoid`; NULL for the main data directory.
    pub oid: Option<u32>,
    /// `spclocation`; NULL for the main data directory.
    pub location: Option<String>,
    /// `size` in kB; NULL without PROGRESS.
    pub size_kb: Option<i64>,
}

/// One archive of a base backup: a name such as `base.tar` or `16385.tar`, the tablespace
/// location (`""` for the main directory) and the archive bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// `base.tar`, `<oid>.tar`, possibly with a compression suffix.
    pub name: String,
    /// Tablespace location; empty for the main data directory.
    pub location: String,
    /// The archive bytes (a terminated tar for uncompressed archives).
    pub data: Vec<u8>,
}

/// What a BASE_BACKUP reply contains. Build with [`BaseBackupSpec::new`] and the `with_*`
/// methods, then send with [`base_backup_v15`] or [`base_backup_v14`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackupSpec {
    /// Start LSN (`recptr` of the first result set).
    pub start_lsn: u64,
    /// Start timeline.
    pub tli: u32,
    /// End LSN (`recptr` of the end result set).
    pub end_lsn: u64,
    /// End timeline; defaults to `tli`.
    pub end_tli: u32,
    /// Tablespace result rows, main directory last. When empty, derived from `archives`:
    /// `<oid>.tar` with its location for each tablespace, then NULL/NULL/NULL for the main one.
    pub tablespaces: Vec<TablespaceRow>,
    /// Archives in the order the server sends them (tablespaces first, `base.tar` last).
    pub archives: Vec<Archive>,
    /// The backup manifest, if requested.
    pub manifest: Option<Vec<u8>>,
    /// Size of the CopyData chunks archives and manifest are split into (default 32 KiB).
    pub chunk_size: usize,
    /// NOTICE messages sent after the last archive's data (where do_pg_backup_stop emits them).
    pub notices: Vec<String>,
    /// Replace the final CommandComplete with ErrorResponse XX001, as after page checksum
    /// failures.
    pub checksum_failure: bool,
}

impl BaseBackupSpec {
    /// A backup from `start_lsn` to `end_lsn` on timeline `tli`, no archives yet.
    pub fn new(start_lsn: u64, tli: u32, end_lsn: u64) -> Self {
        BaseBackupSpec {
            start_lsn,
            tli,
            end_lsn,
            end_tli: tli,
            tablespaces: Vec::new(),
            archives: Vec::new(),
            manifest: None,
            chunk_size: 32 * 1024,
            notices: Vec::new(),
            checksum_failure: false,
        }
    }

    /// Adds an archive (call in server order: tablespaces, then `base.tar` with location `""`).
    pub fn with_archive(mut self, name: &str, location: &str, data: Vec<u8>) -> Self {
        self.archives.push(Archive {
            name: name.to_owned(),
            location: location.to_owned(),
            data,
        });
        self
    }

    /// Adds an explicit tablespace row (otherwise rows are derived from the archives).
    pub fn with_tablespace(
        mut self,
        oid: Option<u32>,
        location: Option<&str>,
        size_kb: Option<i64>,
    ) -> Self {
        self.tablespaces.push(TablespaceRow {
            oid,
            location: location.map(str::to_owned),
            size_kb,
        });
        self
    }

    /// Sets the manifest bytes.
    pub fn with_manifest(mut self, manifest: Vec<u8>) -> Self {
        self.manifest = Some(manifest);
        self
    }

    /// Sets the CopyData chunk size (at least 1).
    pub fn with_chunk_size(mut self, chunk_size: usize) -> Self {
        assert!(chunk_size > 0, "chunk size must be positive");
        self.chunk_size = chunk_size;
        self
    }

    /// Sets the end timeline.
    pub fn with_end_tli(mut self, end_tli: u32) -> Self {
        self.end_tli = end_tli;
        self
    }

    /// Adds a NOTICE (e.g. "all required WAL segments have been archived").
    pub fn with_notice(mut self, message: &str) -> Self {
        self.notices.push(message.to_owned());
        self
    }

    /// Ends the reply with ErrorResponse XX001 instead of the final CommandComplete.
    pub fn with_checksum_failure(mut self) -> Self {
        self.checksum_failure = true;
        self
    }

    fn tablespace_rows(&self) -> Vec<TablespaceRow> {
        if !self.tablespaces.is_empty() {
            return self.tablespaces.clone();
        }
        let mut rows: Vec<TablespaceRow> = self
            .archives
            .iter()
            .filter(|a| !a.location.is_empty())
            .map(|a| TablespaceRow {
                oid: a.name.split('.').next().and_then(|s| s.parse().ok()),
                location: Some(a.location.clone()),
                size_kb: None,
            })
            .collect();
        rows.push(TablespaceRow {
            oid: None,
            location: None,
            size_kb: None,
        });
        rows
    }

    fn notices_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for n in &self.notices {
            out.extend(wire::notice_response(&ErrorFields::new(
                "NOTICE", "00000", n,
            )));
        }
        out
    }
}

/// Start (or end) result set: `recptr` text, `tli` int8, one row, C `SELECT`.
fn lsn_result(lsn: u64, tli: u32) -> Vec<u8> {
    let pos = wire::format_lsn(lsn);
    let tli = tli.to_string();
    result_set(
        &[("recptr", oid::TEXT), ("tli", oid::INT8)],
        &[vec![Some(&pos), Some(&tli)]],
        "SELECT",
    )
}

/// The BASE_BACKUP start result set followed by the tablespace result set.
fn header(spec: &BaseBackupSpec) -> Vec<u8> {
    let mut out = lsn_result(spec.start_lsn, spec.tli);
    let rows = spec.tablespace_rows();
    let texts: Vec<[Option<String>; 3]> = rows
        .iter()
        .map(|r| {
            [
                r.oid.map(|o| o.to_string()),
                r.location.clone(),
                r.size_kb.map(|s| s.to_string()),
            ]
        })
        .collect();
    let rows: Vec<Vec<Option<&str>>> = texts
        .iter()
        .map(|r| r.iter().map(|v| v.as_deref()).collect())
        .collect();
    out.extend(result_set(
        &[
            ("spcoid", oid::OID),
            ("spclocation", oid::TEXT),
            ("size", oid::INT8),
        ],
        &rows,
        "SELECT",
    ));
    out
}

/// The end result set, C `BASE_BACKUP` (v12: `SELECT`) or ErrorResponse XX001, then Z.
fn trailer(spec: &BaseBackupSpec, major: u32) -> Vec<u8> {
    let mut out = lsn_result(spec.end_lsn, spec.end_tli);
    if spec.checksum_failure {
        out.extend(wire::error_response(&ErrorFields::new(
            "ERROR",
            "XX001",
            "checksum verification failure during base backup",
        )));
    } else {
        out.extend(wire::command_complete(command_tag(major, "BASE_BACKUP")));
    }
    out.extend(wire::ready_for_query(TX_IDLE));
    out
}

/// The v15+ BASE_BACKUP reply: start and tablespace result sets, ONE CopyOutResponse carrying
/// for each archive `n`(name, location), `d` chunks and a `p` with the cumulative byte count,
/// then `m` and the manifest as `d` chunks, CopyDone, end result set, C `BASE_BACKUP`, Z.
/// Archives are sent as given (v15+ servers terminate their tars).
pub fn base_backup_v15(spec: &BaseBackupSpec) -> Vec<u8> {
    let mut out = header(spec);
    out.extend(wire::copy_out_response());
    let mut done: i64 = 0;
    for (i, a) in spec.archives.iter().enumerate() {
        out.extend(wire::copy_data(&wire::bb_new_archive_payload(
            &a.name,
            &a.location,
        )));
        for chunk in a.data.chunks(spec.chunk_size) {
            out.extend(wire::copy_data(&wire::bb_data_payload(chunk)));
        }
        if i + 1 == spec.archives.len() {
            out.extend(spec.notices_bytes());
        }
        done += a.data.len() as i64;
        out.extend(wire::copy_data(&wire::bb_progress_payload(done)));
    }
    if let Some(m) = &spec.manifest {
        out.extend(wire::copy_data(&wire::bb_manifest_payload()));
        for chunk in m.chunks(spec.chunk_size) {
            out.extend(wire::copy_data(&wire::bb_data_payload(chunk)));
        }
    }
    out.extend(wire::copy_done());
    out.extend(trailer(spec, 15));
    out
}

/// The two 512-byte zero blocks that end a tar stream.
const TAR_TERMINATOR: usize = 1024;

/// The v12–14 BASE_BACKUP reply: start and tablespace result sets, then one CopyOutResponse per
/// archive (raw tar bytes as CopyData chunks, then CopyDone), then, with a manifest, another
/// CopyOutResponse carrying it, then the end result set, C `BASE_BACKUP` (`SELECT` in v12), Z.
///
/// Like real v12–14 servers, each tar is sent WITHOUT its terminator: if an archive ends with
/// 1024 zero bytes they are stripped, so pass terminated tars (e.g. from `tar::Builder`).
pub fn base_backup_v14(spec: &BaseBackupSpec, major: u32) -> Vec<u8> {
    let mut out = header(spec);
    for (i, a) in spec.archives.iter().enumerate() {
        let mut data: &[u8] = &a.data;
        if data.len() >= TAR_TERMINATOR
            && data[data.len() - TAR_TERMINATOR..].iter().all(|&b| b == 0)
        {
            data = &data[..data.len() - TAR_TERMINATOR];
        }
        out.extend(wire::copy_out_response());
        for chunk in data.chunks(spec.chunk_size) {
            out.extend(wire::copy_data(chunk));
        }
        if i + 1 == spec.archives.len() {
            out.extend(spec.notices_bytes());
        }
        out.extend(wire::copy_done());
    }
    if let Some(m) = &spec.manifest {
        out.extend(wire::copy_out_response());
        for chunk in m.chunks(spec.chunk_size) {
            out.extend(wire::copy_data(chunk));
        }
        out.extend(wire::copy_done());
    }
    out.extend(trailer(spec, major));
    out
}
