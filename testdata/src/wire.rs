//! PostgreSQL protocol 3.0 messages as raw bytes, written independently of `pgwire-repl` so
//! that tests can use them as an oracle.
//!
//! - Backend builders ([`auth_ok`], [`row_description`], [`xlog_data_payload`], ...) produce the
//!   exact bytes a server sends; use them as fixtures for codec tests.
//! - Frontend parsers ([`decode_startup_packet`], [`decode_frontend_message`],
//!   [`parse_replication_feedback`]) check what a client sent; matching frontend builders
//!   ([`startup_message`], [`query`], [`standby_status_update_payload`], ...) let a test play
//!   the client.
//!
//! Framing: tag byte, Int32 big-endian length counting itself but not the tag, body.
//! Replication messages (`w`, `k`, `r`, `h`, BASE_BACKUP `n`/`d`/`p`/`m`) are CopyData
//! payloads; functions that build them end in `_payload` and must be wrapped in [`copy_data`].

mod backend;
mod frontend;

pub use backend::*;
pub use frontend::*;
