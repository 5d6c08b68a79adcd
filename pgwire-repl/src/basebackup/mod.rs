//! BASE_BACKUP: options, command text for each server version, and the event stream.
pub mod options;
