//! The BASE_BACKUP event stream.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::codec::BackendMessage;
use crate::connection::{is_fatal, Connection, ResultSet};
use crate::error::{DbError, Error};
use crate::lsn::{Lsn, TimelineId};
use crate::message::{parse_base_backup_message, BaseBackupCopyMessage};

use super::options::{self, BaseBackupOptions};

/// The two 512-byte zero blocks that end a tar archive; servers before 15 leave them out.
const TAR_TERMINATOR: [u8; 1024] = [0; 1024];

/// One row of BASE_BACKUP's tablespace result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablespaceInfo {
    /// The tablespace OID; `None` for the main data directory.
    pub oid: Option<u32>,
    /// The tablespace's directory on the server; `None` for the main data directory.
    pub location: Option<String>,
    /// The server's size estimate in kB (only with PROGRESS).
    pub size_kb: Option<u64>,
}

/// What a BASE_BACKUP stream delivers, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseBackupEvent {
    /// The backup's checkpoint is done: WAL from `start_lsn` on is needed to restore it.
    Started {
        start_lsn: Lsn,
        timeline: TimelineId,
    },
    /// The tablespaces, main data directory last.
    Tablespaces(Vec<TablespaceInfo>),
    /// A new tar archive begins (`base.tar`, `<oid>.tar`, with a compression suffix under
    /// server-side compression).
    ArchiveStart {
        name: String,
        /// `None` for the main data directory.
        tablespace_location: Option<String>,
    },
    /// Bytes of the current archive.
    ArchiveData(Bytes),
    /// The current archive is complete.
    ArchiveEnd,
    /// Cumulative uncompressed bytes sent so far (15+; the server sends it about once a second).
    Progress(u64),
    /// The backup manifest begins.
    ManifestStart,
    /// Bytes of the manifest.
    ManifestData(Bytes),
    /// The backup ended successfully: WAL up to `end_lsn` makes it consistent. Always last.
    Finished { end_lsn: Lsn, timeline: TimelineId },
}

/// Where the stream is. Result sets are counted: start, tablespaces, end.
#[derive(Debug, Default)]
struct State {
    result_sets: usize,
    current: Option<ResultSet>,
    tablespaces: Vec<TablespaceInfo>,
    copy_responses: usize,
    archive_open: bool,
    in_manifest: bool,
    end: Option<(Lsn, TimelineId)>,
    error: Option<DbError>,
    done: bool,
}

/// A running BASE_BACKUP. Dropping it before the end leaves the connection unusable.
pub struct BaseBackupStream<'a> {
    conn: &'a mut Connection,
    legacy: bool,
    pending: VecDeque<BaseBackupEvent>,
    state: State,
}

impl Connection {
    /// Starts BASE_BACKUP with `options`, rendered in the syntax of the server's major version.
    pub async fn base_backup(
        &mut self,
        options: &BaseBackupOptions,
    ) -> Result<BaseBackupStream<'_>, Error> {
        if !self.is_replication() {
            return Err(Error::InvalidArgument(
                "BASE_BACKUP needs a replication connection (replication=true)".into(),
            ));
        }
        let major = self.server_version().major;
        if major < 13 {
            return Err(Error::Unsupported {
                what: "BASE_BACKUP with a backup manifest",
                min_major: 13,
                server_major: major,
            });
        }
        let command = options
            .command(major)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        self.send_query(&command).await?;
        self.set_bulk_reads(true);
        Ok(BaseBackupStream {
            conn: self,
            legacy: !options::uses_new_protocol(major),
            pending: VecDeque::new(),
            state: State::default(),
        })
    }
}

impl BaseBackupStream<'_> {
    /// The next event, or `None` after [`BaseBackupEvent::Finished`]. A server error (for
    /// example SQLSTATE XX001 for page checksum failures) is returned once the server is ready
    /// again, so the connection stays usable.
    pub async fn next(&mut self) -> Result<Option<BaseBackupEvent>, Error> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(Some(ev));
            }
            if self.state.done {
                return Ok(None);
            }
            let msg = match self.conn.read_message().await {
                Ok(m) => m,
                Err(e) => {
                    self.state.done = true;
                    return Err(e);
                }
            };
            self.handle(msg)?;
        }
    }

    /// Notices the server sent so far (such as "WAL archiving is not enabled").
    pub fn take_notices(&mut self) -> Vec<DbError> {
        self.conn.take_notices()
    }

    fn handle(&mut self, msg: BackendMessage) -> Result<(), Error> {
        let st = &mut self.state;
        match msg {
            BackendMessage::RowDescription(columns) => {
                st.current = Some(ResultSet {
                    columns,
                    ..ResultSet::default()
                });
            }
            BackendMessage::DataRow(values) => match st.current.as_mut() {
                Some(rs) => rs.rows.push(values),
                None => return Err(self.fail('D', "before RowDescription in BASE_BACKUP")),
            },
            BackendMessage::CommandComplete(tag) => {
                // The final CommandComplete (BASE_BACKUP, or SELECT on 12) has no result set.
                if let Some(mut rs) = st.current.take() {
                    rs.tag = tag;
                    self.result_set(rs)?;
                }
            }
            BackendMessage::CopyOutResponse => {
                if st.result_sets != 2 || st.archive_open || st.in_manifest {
                    return Err(self.fail('H', "at this point of BASE_BACKUP"));
                }
                st.copy_responses += 1;
                if self.legacy {
                    if st.copy_responses <= st.tablespaces.len() {
                        let ts = &st.tablespaces[st.copy_responses - 1];
                        let name = match ts.oid {
                            Some(oid) => format!("{oid}.tar"),
                            None => "base.tar".to_string(),
                        };
                        st.archive_open = true;
                        self.pending.push_back(BaseBackupEvent::ArchiveStart {
                            name,
                            tablespace_location: ts.location.clone(),
                        });
                    } else {
                        st.in_manifest = true;
                        self.pending.push_back(BaseBackupEvent::ManifestStart);
                    }
                } else if st.copy_responses > 1 {
                    return Err(self.fail('H', "(a second CopyOut from a 15+ server)"));
                }
            }
            BackendMessage::CopyData(payload) => {
                if self.legacy {
                    if st.in_manifest {
                        self.pending
                            .push_back(BaseBackupEvent::ManifestData(payload));
                    } else if st.archive_open {
                        self.pending
                            .push_back(BaseBackupEvent::ArchiveData(payload));
                    } else {
                        return Err(self.fail('d', "outside COPY in BASE_BACKUP"));
                    }
                } else {
                    self.copy_message(payload)?;
                }
            }
            BackendMessage::CopyDone => {
                if self.legacy && st.archive_open {
                    self.pending
                        .push_back(BaseBackupEvent::ArchiveData(Bytes::from_static(
                            &TAR_TERMINATOR,
                        )));
                }
                if st.archive_open {
                    self.pending.push_back(BaseBackupEvent::ArchiveEnd);
                }
                st.archive_open = false;
                st.in_manifest = false;
            }
            BackendMessage::ErrorResponse(e) => {
                if is_fatal(&e) {
                    st.done = true;
                    // The server closes the session: later calls must fail, not write to it.
                    self.conn
                        .mark_broken(format!("the server ended the session: {}", e.message));
                    return Err(Error::Server(Box::new(e)));
                }
                // Keep reading up to ReadyForQuery so the connection stays in sync.
                st.error.get_or_insert(e);
                st.current = None;
            }
            BackendMessage::ReadyForQuery(_) => {
                st.done = true;
                if let Some(e) = st.error.take() {
                    self.pending.clear();
                    return Err(Error::Server(Box::new(e)));
                }
                match st.end {
                    Some((end_lsn, timeline)) => self
                        .pending
                        .push_back(BaseBackupEvent::Finished { end_lsn, timeline }),
                    None => {
                        return Err(Error::unexpected_result(
                            "BASE_BACKUP",
                            "the server ended the command without an end position",
                        ))
                    }
                }
            }
            BackendMessage::EmptyQueryResponse => {}
            other => return Err(self.fail(other.tag(), "in BASE_BACKUP")),
        }
        Ok(())
    }

    fn copy_message(&mut self, payload: Bytes) -> Result<(), Error> {
        let msg = parse_base_backup_message(payload).map_err(|e| {
            self.state.done = true;
            self.conn.mark_broken("malformed BASE_BACKUP message");
            Error::Protocol(e)
        })?;
        let st = &mut self.state;
        match msg {
            BaseBackupCopyMessage::NewArchive {
                name,
                tablespace_location,
            } => {
                if st.in_manifest {
                    return Err(self.fail('n', "(a new archive after the manifest)"));
                }
                if st.archive_open {
                    self.pending.push_back(BaseBackupEvent::ArchiveEnd);
                }
                st.archive_open = true;
                self.pending.push_back(BaseBackupEvent::ArchiveStart {
                    name,
                    tablespace_location: (!tablespace_location.is_empty())
                        .then_some(tablespace_location),
                });
            }
            BaseBackupCopyMessage::Data(data) => {
                if st.in_manifest {
                    self.pending.push_back(BaseBackupEvent::ManifestData(data));
                } else if st.archive_open {
                    self.pending.push_back(BaseBackupEvent::ArchiveData(data));
                } else {
                    return Err(self.fail('d', "(data before any archive)"));
                }
            }
            BaseBackupCopyMessage::Progress(done) => {
                self.pending.push_back(BaseBackupEvent::Progress(done));
            }
            BaseBackupCopyMessage::ManifestStart => {
                if st.archive_open {
                    self.pending.push_back(BaseBackupEvent::ArchiveEnd);
                    st.archive_open = false;
                }
                st.in_manifest = true;
                self.pending.push_back(BaseBackupEvent::ManifestStart);
            }
        }
        Ok(())
    }

    fn result_set(&mut self, rs: ResultSet) -> Result<(), Error> {
        const CMD: &str = "BASE_BACKUP";
        self.state.result_sets += 1;
        match self.state.result_sets {
            1 => {
                let (lsn, tli) = position(&rs)?;
                self.pending.push_back(BaseBackupEvent::Started {
                    start_lsn: lsn,
                    timeline: tli,
                });
            }
            2 => {
                let oid_i = rs.column(CMD, "spcoid")?;
                let loc_i = rs.column(CMD, "spclocation")?;
                let size_i = rs.column(CMD, "size")?;
                let mut list = Vec::with_capacity(rs.rows.len());
                for row in &rs.rows {
                    let text = |i: usize| -> Result<Option<String>, Error> {
                        row.get(i)
                            .cloned()
                            .flatten()
                            .map(|b| {
                                String::from_utf8(b.to_vec()).map_err(|_| {
                                    Error::unexpected_result(CMD, "tablespace row is not UTF-8")
                                })
                            })
                            .transpose()
                    };
                    let num = |i: usize| -> Result<Option<u64>, Error> {
                        text(i)?
                            .map(|s| {
                                s.parse::<u64>().map_err(|_| {
                                    Error::unexpected_result(CMD, format!("invalid number {s:?}"))
                                })
                            })
                            .transpose()
                    };
                    list.push(TablespaceInfo {
                        oid: num(oid_i)?.map(|o| o as u32),
                        location: text(loc_i)?,
                        size_kb: num(size_i)?,
                    });
                }
                self.state.tablespaces = list.clone();
                self.pending.push_back(BaseBackupEvent::Tablespaces(list));
            }
            3 => self.state.end = Some(position(&rs)?),
            n => {
                return Err(Error::unexpected_result(
                    CMD,
                    format!("unexpected result set number {n}"),
                ))
            }
        }
        Ok(())
    }

    fn fail(&mut self, tag: char, context: &'static str) -> Error {
        self.state.done = true;
        self.conn.protocol_violation(tag, context)
    }
}

fn position(rs: &ResultSet) -> Result<(Lsn, TimelineId), Error> {
    const CMD: &str = "BASE_BACKUP";
    let lsn = rs.required_text(CMD, "recptr")?;
    let tli = rs.required_text(CMD, "tli")?;
    Ok((
        lsn.parse()
            .map_err(|e| Error::unexpected_result(CMD, format!("{e}")))?,
        TimelineId(
            tli.parse()
                .map_err(|_| Error::unexpected_result(CMD, format!("invalid timeline {tli:?}")))?,
        ),
    ))
}

impl Drop for BaseBackupStream<'_> {
    fn drop(&mut self) {
        self.conn.set_bulk_reads(false);
        if !self.state.done {
            self.conn
                .mark_broken("a BASE_BACKUP stream was abandoned before its end");
        }
    }
}
