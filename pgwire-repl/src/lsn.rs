//! PostgreSQL positions: WAL locations (`Lsn`), timeline ids and timestamps.

use std::fmt;
use std::str::FromStr;

/// A WAL location (XLogRecPtr). Displays as PostgreSQL does: `%X/%X`, upper-case, unpadded.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The invalid location, `0/0`.
    pub const INVALID: Lsn = Lsn(0);

    /// Whether this is a valid (non-zero) location.
    pub fn is_valid(self) -> bool {
        self.0 != 0
    }

    /// Rounds down to the start of the segment that holds this location.
    pub fn segment_start(self, segment_size: u64) -> Lsn {
        Lsn(self.0 - self.0 % segment_size)
    }

    /// Offset of this location inside its segment.
    pub fn segment_offset(self, segment_size: u64) -> u64 {
        self.0 % segment_size
    }

    /// The location `bytes` further on, or `None` on overflow.
    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

/// A string that is not a `%X/%X` WAL location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid WAL location {0:?}: expected two hexadecimal numbers separated by '/', such as 0/3000028")]
pub struct ParseLsnError(pub String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    /// Accepts PostgreSQL's unpadded form and zero-padded forms (`00000000/03000028`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_string());
        let (hi, lo) = s.trim().split_once('/').ok_or_else(err)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(err());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// A timeline id (TimeLineID). Timeline 1 is the one initdb starts.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TimelineId(pub u32);

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Microseconds since 2000-01-01 00:00:00 UTC, PostgreSQL's timestamp epoch.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct PgTimestamp(pub i64);

/// Seconds from the Unix epoch to the PostgreSQL epoch.
const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;

impl PgTimestamp {
    /// The current time.
    pub fn now() -> PgTimestamp {
        Self::from_system_time(std::time::SystemTime::now())
    }

    /// Converts from a system time (saturating at the representable range).
    pub fn from_system_time(t: std::time::SystemTime) -> PgTimestamp {
        let unix_us = match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
        };
        PgTimestamp(unix_us.saturating_sub(PG_EPOCH_UNIX_SECS * 1_000_000))
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> i64 {
        self.0.saturating_add(PG_EPOCH_UNIX_SECS * 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_postgres_format() {
        for s in ["0/0", "0/3000028", "16/B374D848", "FFFFFFFF/FFFFFFFF"] {
            assert_eq!(s.parse::<Lsn>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn lsn_accepts_padded_and_lowercase() {
        assert_eq!("00000000/03000028".parse::<Lsn>().unwrap(), Lsn(0x300_0028));
        assert_eq!("16/b374d848".parse::<Lsn>().unwrap(), Lsn(0x16_B374_D848));
    }

    #[test]
    fn lsn_rejects_garbage() {
        for s in [
            "",
            "/",
            "0/",
            "/1",
            "1",
            "0/123456789",
            "x/1",
            "0/1/2",
            "-1/0",
        ] {
            assert!(s.parse::<Lsn>().is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn lsn_segment_arithmetic() {
        let seg = 16 * 1024 * 1024;
        let l: Lsn = "0/3000028".parse().unwrap();
        assert_eq!(l.segment_start(seg), Lsn(0x300_0000));
        assert_eq!(l.segment_offset(seg), 0x28);
    }

    #[test]
    fn timestamp_epoch() {
        let t = PgTimestamp::from_system_time(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(946_684_800),
        );
        assert_eq!(t, PgTimestamp(0));
        assert_eq!(t.unix_micros(), 946_684_800_000_000);
    }
}
