//! BASE_BACKUP as a stream of typed events, over both transports:
//! - 13–14: one CopyOut per tablespace (main last), each a tar stream without its terminator,
//!   then a CopyOut with the manifest;
//! - 15+: one CopyOut whose CopyData start with a type byte: `n` new archive, `d` data,
//!   `p` progress, `m` manifest.
//!
//! Both are presented the same way: [`BaseBackupEvent::ArchiveStart`], data, `ArchiveEnd`
//! (with the tar terminator added for 13–14, so every archive is a complete tar), then the
//! manifest. The consumer pulls events; nothing is read from the socket until it asks, so the
//! server is slowed down by a slow consumer rather than buffered without bound.

pub mod options;
mod stream;

pub use options::BaseBackupOptions;
pub use stream::{BaseBackupEvent, BaseBackupStream, TablespaceInfo};
