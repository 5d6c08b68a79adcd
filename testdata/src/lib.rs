//! Fixtures and builders shared by pgstream's tests.
//!
//! - [`wire`]: protocol messages as raw bytes (backend builders, frontend parsers), written
//!   without `pgwire-repl` so they can serve as an independent oracle.
//! - [`replies`]: whole walsender replies (IDENTIFY_SYSTEM, end of timeline, BASE_BACKUP v14 and
//!   v15+ transports, ...).
//! - [`FakeWalsender`] and [`Script`]: a scripted fake server for what a real one will not do on
//!   demand (truncated frames, oversized headers, errors inside COPY, shutdown mid-stream).
//! - [`sample_wal`]: synthetic WAL segments with valid page headers.

pub mod fake_walsender;
pub mod replies;
pub mod sample_wal;
pub mod script;
pub mod transcript;
pub mod wire;

pub use fake_walsender::FakeWalsender;
pub use replies::BaseBackupSpec;
pub use script::Script;
pub use transcript::{ScriptError, Transcript};
