//! pgstream's backup engine: repository format, sinks (compress, encrypt, durable file),
//! manifests, WAL segments and timelines. It knows nothing of the command line.
pub mod catalog;
pub mod manifest;
pub mod restore;
pub mod tarwalk;
pub mod wal;
