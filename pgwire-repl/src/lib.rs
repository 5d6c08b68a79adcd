//! `pgwire-repl`: a native client for PostgreSQL's streaming-replication protocol.
//!
//! No libpq: this crate frames messages itself, negotiates TLS through OpenSSL, authenticates
//! (trust, cleartext, MD5, SCRAM-SHA-256 and SCRAM-SHA-256-PLUS), and runs the replication
//! commands pgstream needs: `IDENTIFY_SYSTEM`, `SHOW`, `TIMELINE_HISTORY`, slot management,
//! `BASE_BACKUP` (as a stream of typed events) and `START_REPLICATION` (as a CopyBoth stream).
//!
//! Layers, bottom up:
//! - [`codec`] and [`message`]: sans-IO framing and message bodies over `bytes`.
//! - [`config`]: conninfo strings, URIs, PG* environment variables and `.pgpass`.
//! - [`auth`], [`tls`]: authentication exchanges and TLS setup.
//! - [`connection`]: the tokio connection (TCP or Unix socket, optionally TLS).
//! - [`commands`], [`basebackup`], [`replication`]: the replication commands.
//!
//! It knows nothing of backups.

pub mod auth;
pub mod basebackup;
pub mod codec;
pub mod command_text;
pub mod commands;
pub mod config;
pub mod connection;
pub mod error;
pub mod lsn;
pub mod message;
pub mod pgpass;
pub mod quote;
pub mod replication;
pub mod tls;

pub use config::{Config, SslMode, TargetSessionAttrs};
pub use connection::Connection;

pub use error::{DbError, Error, ProtocolError};
pub use lsn::{Lsn, PgTimestamp, TimelineId};
