//! The simple replication commands: IDENTIFY_SYSTEM, TIMELINE_HISTORY, slot management, and
//! wal_segment_size. Each checks the shape of its answer and names the command in errors.
//! UPLOAD_MANIFEST, a copy-in, is in [`upload_manifest`].

pub mod upload_manifest;

pub use upload_manifest::{ManifestUpload, UploadExchange};

use bytes::Bytes;

use crate::command_text;
use crate::connection::{Connection, ResultSet};
use crate::error::Error;
use crate::lsn::{Lsn, TimelineId};

/// The answer to IDENTIFY_SYSTEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemIdentity {
    /// The cluster's system identifier (from pg_control), which every WAL segment carries.
    pub system_id: u64,
    /// The server's current timeline.
    pub timeline: TimelineId,
    /// The current WAL flush location.
    pub xlogpos: Lsn,
    /// The database, for logical connections; `None` on physical ones.
    pub dbname: Option<String>,
}

/// A timeline history file, as TIMELINE_HISTORY returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistoryFile {
    /// `0000000N.history`.
    pub filename: String,
    /// The raw file contents (lines of `parentTLI<TAB>switchLSN<TAB>reason`).
    pub content: Bytes,
}

/// A slot just created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    pub name: String,
    /// The consistent point the server reports. Physical slots report none (NULL or `0/0`,
    /// depending on the version): use READ_REPLICATION_SLOT or pg_replication_slots for the
    /// restart_lsn that RESERVE_WAL set.
    pub consistent_point: Option<Lsn>,
}

/// What READ_REPLICATION_SLOT reports of an existing physical slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    pub restart_lsn: Option<Lsn>,
    pub restart_timeline: Option<TimelineId>,
}

/// SQLSTATE duplicate_object, what CREATE_REPLICATION_SLOT says of an existing slot.
pub const SQLSTATE_DUPLICATE_OBJECT: &str = "42710";
/// SQLSTATE undefined_object, what DROP_REPLICATION_SLOT says of a missing slot.
pub const SQLSTATE_UNDEFINED_OBJECT: &str = "42704";

fn parse_lsn(command: &str, s: &str) -> Result<Lsn, Error> {
    s.parse()
        .map_err(|e| Error::unexpected_result(command, format!("{e}")))
}

fn parse_timeline(command: &str, s: &str) -> Result<TimelineId, Error> {
    s.parse::<u32>()
        .ok()
        .filter(|&t| t > 0)
        .map(TimelineId)
        .ok_or_else(|| Error::unexpected_result(command, format!("invalid timeline {s:?}")))
}

fn first_result(command: &str, results: Vec<ResultSet>) -> Result<ResultSet, Error> {
    results
        .into_iter()
        .find(|r| !r.columns.is_empty())
        .ok_or_else(|| Error::unexpected_result(command, "no result set"))
}

impl Connection {
    fn require_replication(&self, command: &'static str) -> Result<(), Error> {
        if self.is_replication() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "{command} needs a replication connection (replication=true)"
            )))
        }
    }

    fn require_major(&self, what: &'static str, min_major: u32) -> Result<(), Error> {
        let server_major = self.server_version().major;
        if server_major < min_major {
            Err(Error::Unsupported {
                what,
                min_major,
                server_major,
            })
        } else {
            Ok(())
        }
    }

    /// IDENTIFY_SYSTEM: system identifier, timeline and flush position.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, Error> {
        const CMD: &str = "IDENTIFY_SYSTEM";
        self.require_replication(CMD)?;
        let rs = first_result(CMD, self.simple_query(CMD).await?)?;
        let sysid = rs.required_text(CMD, "systemid")?;
        Ok(SystemIdentity {
            system_id: sysid.parse().map_err(|_| {
                Error::unexpected_result(CMD, format!("invalid systemid {sysid:?}"))
            })?,
            // int4 before 16, int8 from 16: text either way.
            timeline: parse_timeline(CMD, &rs.required_text(CMD, "timeline")?)?,
            xlogpos: parse_lsn(CMD, &rs.required_text(CMD, "xlogpos")?)?,
            dbname: rs.single_text(CMD, "dbname")?,
        })
    }

    /// TIMELINE_HISTORY: the history file of timeline `tli` (which must be above 1).
    pub async fn timeline_history(
        &mut self,
        tli: TimelineId,
    ) -> Result<TimelineHistoryFile, Error> {
        self.require_replication("TIMELINE_HISTORY")?;
        let cmd = command_text::timeline_history(tli);
        let rs = first_result(&cmd, self.simple_query(&cmd).await?)?;
        let content_idx = rs.column(&cmd, "content")?;
        let row = rs.single_row(&cmd)?;
        // bytea in 12-13 and text from 14, but the bytes are the raw file either way.
        let content = row
            .get(content_idx)
            .cloned()
            .flatten()
            .ok_or_else(|| Error::unexpected_result(&cmd, "content is NULL"))?;
        Ok(TimelineHistoryFile {
            filename: rs.required_text(&cmd, "filename")?,
            content,
        })
    }

    /// The server's WAL segment size in bytes (`SHOW wal_segment_size`: `16MB`, `1GB`).
    pub async fn wal_segment_size(&mut self) -> Result<u64, Error> {
        let v = self.show("wal_segment_size").await?;
        parse_segment_size(&v).ok_or_else(|| {
            Error::unexpected_result(
                "SHOW wal_segment_size",
                format!("{v:?} is not a power of two between 1MB and 1GB"),
            )
        })
    }

    /// CREATE_REPLICATION_SLOT for a physical slot. An existing slot fails with SQLSTATE
    /// 42710 ([`SQLSTATE_DUPLICATE_OBJECT`]).
    pub async fn create_physical_slot(
        &mut self,
        name: &str,
        temporary: bool,
        reserve_wal: bool,
    ) -> Result<CreatedSlot, Error> {
        self.require_replication("CREATE_REPLICATION_SLOT")?;
        let cmd = command_text::create_physical_slot(
            name,
            temporary,
            reserve_wal,
            self.server_version().major,
        )
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let rs = first_result(&cmd, self.simple_query(&cmd).await?)?;
        let point = rs.single_text(&cmd, "consistent_point")?;
        Ok(CreatedSlot {
            name: rs.required_text(&cmd, "slot_name")?,
            consistent_point: point
                .map(|p| parse_lsn(&cmd, &p))
                .transpose()?
                .filter(|l| l.is_valid()),
        })
    }

    /// DROP_REPLICATION_SLOT. A missing slot fails with SQLSTATE 42704.
    pub async fn drop_slot(&mut self, name: &str, wait: bool) -> Result<(), Error> {
        self.require_replication("DROP_REPLICATION_SLOT")?;
        let cmd = command_text::drop_slot(name, wait)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        // v12 sends two CommandCompletes; read_results copes with any number.
        self.simple_query(&cmd).await.map(|_| ())
    }

    /// READ_REPLICATION_SLOT (15+): `None` when no such slot exists.
    pub async fn read_replication_slot(&mut self, name: &str) -> Result<Option<SlotState>, Error> {
        self.require_replication("READ_REPLICATION_SLOT")?;
        self.require_major("READ_REPLICATION_SLOT", 15)?;
        let cmd = command_text::read_slot(name, self.server_version().major)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let rs = first_result(&cmd, self.simple_query(&cmd).await?)?;
        if rs.single_text(&cmd, "slot_type")?.is_none() {
            return Ok(None);
        }
        Ok(Some(SlotState {
            restart_lsn: rs
                .single_text(&cmd, "restart_lsn")?
                .map(|s| parse_lsn(&cmd, &s))
                .transpose()?,
            restart_timeline: rs
                .single_text(&cmd, "restart_tli")?
                .map(|s| parse_timeline(&cmd, &s))
                .transpose()?,
        }))
    }
}

/// Parses `16MB` / `1GB` into bytes, accepting only PostgreSQL's valid segment sizes.
pub fn parse_segment_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = if let Some(n) = v.strip_suffix("GB") {
        (n, 1024 * 1024 * 1024)
    } else if let Some(n) = v.strip_suffix("MB") {
        (n, 1024 * 1024)
    } else if let Some(n) = v.strip_suffix("kB") {
        (n, 1024)
    } else {
        (v, 1)
    };
    let bytes = num.trim().parse::<u64>().ok()?.checked_mul(mult)?;
    let valid = bytes.is_power_of_two() && (1 << 20..=1 << 30).contains(&bytes);
    valid.then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::parse_segment_size;

    #[test]
    fn segment_sizes() {
        assert_eq!(parse_segment_size("16MB"), Some(16 << 20));
        assert_eq!(parse_segment_size("1GB"), Some(1 << 30));
        assert_eq!(parse_segment_size("1MB"), Some(1 << 20));
        assert_eq!(parse_segment_size("3MB"), None);
        assert_eq!(parse_segment_size("2GB"), None);
        assert_eq!(parse_segment_size("512kB"), None);
        assert_eq!(parse_segment_size("x"), None);
    }
}
