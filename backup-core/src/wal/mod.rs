//! WAL files: segment and history names, segment sizes, timeline histories and page-header
//! validation. Sans-IO.

pub mod archive;
pub mod commits;
pub mod history;
pub mod page;
pub mod partial;
pub mod segment;

#[cfg(test)]
mod tests;

pub use history::{HistoryEntry, HistoryError, TimelineHistory, TimelineSpan};
pub use page::{
    magic_for_major, major_for_magic, validate_segment, EndOfData, SegmentCheck, SegmentSummary,
    SegmentValidator, WalPageError, XLOG_PAGE_MAGICS,
};
pub use segment::{
    history_file_name, history_file_timeline, is_history_file_name, is_partial_wal_file_name,
    is_wal_file_name, SegmentName, WalFileName, WalNameError, WalSegmentSize,
};
