//! Restoring backups: unpacking archives, WAL and recovery settings into a target directory.

pub mod extract;
