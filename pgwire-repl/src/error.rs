//! Error types, layered: wire-level [`ProtocolError`], server-reported [`DbError`], and the
//! connection-level [`Error`] that every public operation returns.

use std::fmt;
use std::io;

use crate::auth::AuthError;
use crate::config::ConfigError;
use crate::tls::TlsError;

/// The peer sent bytes that do not follow the protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A length field below the minimum.
    #[error("invalid message length {len} for message type {tag:?}")]
    InvalidLength { tag: char, len: i64 },
    /// A message larger than the configured limit; refusing it bounds memory.
    #[error("message type {tag:?} of {len} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { tag: char, len: u64, limit: u64 },
    /// A message body that cannot be decoded.
    #[error("malformed {what} message: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// A message that is not allowed at this point of the conversation.
    #[error("unexpected message type {tag:?} {context}")]
    Unexpected { tag: char, context: &'static str },
}

impl ProtocolError {
    /// Shorthand for a [`ProtocolError::Malformed`].
    pub fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        ProtocolError::Malformed {
            what,
            reason: reason.into(),
        }
    }
}

/// An ErrorResponse (or NoticeResponse) from the server, with every field it carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbError {
    /// Localized severity, such as `ERROR` or `FATAL` (`S`).
    pub severity: String,
    /// Non-localized severity (`V`), when the server sends it (9.6+).
    pub severity_nonlocalized: Option<String>,
    /// The SQLSTATE code (`C`), such as `28P01`.
    pub code: String,
    /// The primary message (`M`).
    pub message: String,
    /// Optional detail (`D`).
    pub detail: Option<String>,
    /// Optional hint (`H`).
    pub hint: Option<String>,
    /// Optional context (`W`).
    pub context: Option<String>,
    /// Source file, line and routine (`F`, `L`, `R`), useful when reporting bugs.
    pub file: Option<String>,
    pub line: Option<String>,
    pub routine: Option<String>,
}

impl DbError {
    /// The SQLSTATE code.
    pub fn code(&self) -> &str {
        &self.code
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(d) = &self.detail {
            write!(f, "\nDETAIL: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\nHINT: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DbError {}

/// Everything a connection or command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection settings are invalid or incomplete.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No TCP or Unix-socket connection could be made to this address.
    #[error("could not connect to {target}: {source}")]
    Connect {
        /// `host:port` or the socket path.
        target: String,
        #[source]
        source: io::Error,
    },
    /// Connecting took longer than connect_timeout.
    #[error("timed out after {seconds} s connecting to {target} (connect_timeout)")]
    ConnectTimeout { target: String, seconds: u64 },
    /// The TLS negotiation or handshake failed.
    #[error("TLS with {target}: {source}")]
    Tls {
        target: String,
        #[source]
        source: TlsError,
    },
    /// Authentication failed on our side (the server's own refusals arrive as [`Error::Server`]).
    #[error("authentication with {target}: {source}")]
    Auth {
        target: String,
        #[source]
        source: AuthError,
    },
    /// The server reported an error. The connection may still be usable unless it was FATAL.
    #[error("server error: {0}")]
    Server(Box<DbError>),
    /// The connection was lost (EOF or an I/O error) while we expected more.
    #[error("connection to the server was lost: {0}")]
    ConnectionLost(#[source] io::Error),
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// A server was reached but is not what target_session_attrs asked for.
    #[error("server at {target} is not suitable: {reason}")]
    SessionAttrs { target: String, reason: String },
    /// Every host of a multi-host connection string failed; each one's error is kept.
    #[error("could not connect to any host: {}", join_errors(.0))]
    AllHostsFailed(Vec<Error>),
    /// An operation that the server's major version does not support.
    #[error("{what} needs PostgreSQL {min_major} or later; the server is {server_major}")]
    Unsupported {
        what: &'static str,
        min_major: u32,
        server_major: u32,
    },
    /// A command result that does not have the expected shape.
    #[error("unexpected result from {command}: {reason}")]
    UnexpectedResult { command: String, reason: String },
    /// A caller-supplied argument that cannot be sent (for example a quote in a slot name).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

fn join_errors(errors: &[Error]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// The server error, if this is one.
    pub fn as_db_error(&self) -> Option<&DbError> {
        match self {
            Error::Server(e) => Some(e),
            _ => None,
        }
    }

    /// The SQLSTATE, if the server reported this error.
    pub fn code(&self) -> Option<&str> {
        self.as_db_error().map(|e| e.code.as_str())
    }

    /// True when the connection is gone (lost, or closed by a FATAL error); a caller that
    /// wants to go on must reconnect.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Error::ConnectionLost(_) => true,
            Error::Server(e) => e.severity == "FATAL" || e.severity == "PANIC",
            _ => false,
        }
    }

    pub(crate) fn lost(e: io::Error) -> Self {
        Error::ConnectionLost(e)
    }

    pub(crate) fn unexpected_result(command: &str, reason: impl Into<String>) -> Self {
        Error::UnexpectedResult {
            command: command.to_string(),
            reason: reason.into(),
        }
    }
}
