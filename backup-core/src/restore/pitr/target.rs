//! Recovery targets as the user states them and as the server reads them: where recovery
//! stops, target times with an explicit offset, `recovery_target_timeline` and
//! `recovery_target_action`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use pgwire_repl::{Lsn, TimelineId};

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// The end of the archived WAL (no recovery_target_* setting).
    Latest,
    /// The backup's end (`recovery_target = 'immediate'`).
    Immediate,
    Time(TargetTime),
    Lsn(Lsn),
    Xid(u64),
    Name(String),
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryTarget::Latest => f.write_str("the end of the archived WAL"),
            RecoveryTarget::Immediate => f.write_str("the end of the backup (immediate)"),
            RecoveryTarget::Time(t) => write!(f, "time {}", t.postgres()),
            RecoveryTarget::Lsn(l) => write!(f, "LSN {l}"),
            RecoveryTarget::Xid(x) => write!(f, "transaction {x}"),
            RecoveryTarget::Name(n) => write!(f, "restore point {n:?}"),
        }
    }
}

/// A target time with an explicit UTC offset, to the microsecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TargetTime {
    /// Microseconds since 1970-01-01 00:00:00 UTC.
    pub unix_micros: i64,
}

impl TargetTime {
    /// Parses RFC 3339 or PostgreSQL's timestamptz output: `YYYY-MM-DD[T ]HH:MM[:SS[.ffffff]]`
    /// followed by `Z` or `±HH[[:]MM]`. A time without an offset is refused: the server would
    /// read it in its own TimeZone, which may not be the one meant.
    pub fn parse(text: &str) -> Result<TargetTime, String> {
        let t = text.trim();
        let bad = |why: &str| {
            format!(
                "{text:?} is not a time with an offset ({why}); write e.g. \
                 2024-05-01T12:34:56.5+02:00 or 2024-05-01 10:34:56Z"
            )
        };
        let num = |s: &str| -> Result<i64, String> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("digits expected"));
            }
            s.parse::<i64>().map_err(|_| bad("number out of range"))
        };
        if t.len() < 16 {
            return Err(bad("too short"));
        }
        let (date, rest) = t.split_at(10);
        let d: Vec<&str> = date.split('-').collect();
        if d.len() != 3 || d[0].len() != 4 || d[1].len() != 2 || d[2].len() != 2 {
            return Err(bad("the date must be YYYY-MM-DD"));
        }
        let (year, month, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
        let rest = rest
            .strip_prefix('T')
            .or_else(|| rest.strip_prefix('t'))
            .or_else(|| rest.strip_prefix(' '))
            .ok_or_else(|| bad("expected T or a space after the date"))?;
        // The offset starts at the first Z, + or - after the clock time.
        let split = rest
            .find(['Z', 'z', '+', '-'])
            .ok_or_else(|| bad("no offset: add Z or +HH:MM"))?;
        let (clock, offset) = rest.split_at(split);
        let clock = clock.trim_end();
        let (hms, frac) = match clock.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (clock, None),
        };
        let c: Vec<&str> = hms.split(':').collect();
        if !(2..=3).contains(&c.len()) || c.iter().any(|p| p.len() != 2) {
            return Err(bad("the time must be HH:MM[:SS[.ffffff]]"));
        }
        let (hour, minute) = (num(c[0])?, num(c[1])?);
        let second = if c.len() == 3 { num(c[2])? } else { 0 };
        let micros = match frac {
            None => 0,
            Some(f) if f.is_empty() || f.len() > 6 => {
                return Err(bad("1 to 6 digits of fractional seconds"))
            }
            Some(f) => num(f)? * 10i64.pow(6 - f.len() as u32),
        };
        let offset_secs = if offset.eq_ignore_ascii_case("z") {
            0
        } else {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let o = offset[1..].replace(':', "");
            let (h, m) = match o.len() {
                2 => (num(&o)?, 0),
                4 => (num(&o[..2])?, num(&o[2..])?),
                _ => return Err(bad("the offset must be Z, ±HH, ±HHMM or ±HH:MM")),
            };
            if h > 15 || m > 59 {
                return Err(bad("offset out of range"));
            }
            sign * (h * 3600 + m * 60)
        };
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(bad("a field is out of range"));
        }
        let days = days_from_civil(year, month, day);
        let secs = days * 86400 + hour * 3600 + minute * 60 + second - offset_secs;
        Ok(TargetTime {
            unix_micros: secs * 1_000_000 + micros,
        })
    }

    pub fn from_system_time(t: SystemTime) -> TargetTime {
        let micros = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_micros() as i64,
            Err(e) => -(e.duration().as_micros() as i64),
        };
        TargetTime {
            unix_micros: micros,
        }
    }

    /// The time as the server will read it: ISO 8601 in UTC, unambiguous under any DateStyle
    /// and TimeZone.
    pub fn postgres(&self) -> String {
        let secs = self.unix_micros.div_euclid(1_000_000);
        let micros = self.unix_micros.rem_euclid(1_000_000);
        let (days, sod) = (secs.div_euclid(86400), secs.rem_euclid(86400));
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{micros:06}+00",
            sod / 3600,
            sod % 3600 / 60,
            sod % 60
        )
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `recovery_target_timeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetTimeline {
    Latest,
    Current,
    Number(TimelineId),
}

impl TargetTimeline {
    pub fn parse(s: &str) -> Result<TargetTimeline, String> {
        match s {
            "latest" => Ok(TargetTimeline::Latest),
            "current" => Ok(TargetTimeline::Current),
            n => {
                let v = match n.strip_prefix("0x").or_else(|| n.strip_prefix("0X")) {
                    Some(h) => u32::from_str_radix(h, 16),
                    None => n.parse::<u32>(),
                };
                match v {
                    Ok(v) if v >= 1 => Ok(TargetTimeline::Number(TimelineId(v))),
                    _ => Err(format!(
                        "{s:?}: expected latest, current or a timeline number (1 or more)"
                    )),
                }
            }
        }
    }
}

/// `recovery_target_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetAction {
    Pause,
    Promote,
    Shutdown,
}

impl TargetAction {
    pub(super) fn setting(self) -> &'static str {
        match self {
            TargetAction::Pause => "pause",
            TargetAction::Promote => "promote",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_need_an_offset_and_normalise_to_utc() {
        let t = TargetTime::parse("2024-05-01 12:34:56.123456+02").unwrap();
        assert_eq!(t.postgres(), "2024-05-01 10:34:56.123456+00");
        let u = TargetTime::parse("2024-05-01T10:34:56.123456Z").unwrap();
        assert_eq!(t, u);
        assert_eq!(
            TargetTime::parse("2024-02-29T23:59:59-05:30")
                .unwrap()
                .postgres(),
            "2024-03-01 05:29:59.000000+00"
        );
        assert_eq!(
            TargetTime::parse("1999-12-31 23:00+0100")
                .unwrap()
                .postgres(),
            "1999-12-31 22:00:00.000000+00"
        );
        for bad in [
            "2024-05-01 12:34:56",
            "2024-05-01T12:34:56.5",
            "2024-13-01 00:00:00Z",
            "2023-02-29 00:00:00Z",
            "yesterday",
            "2024-05-01 12:34:56+2",
        ] {
            let e = TargetTime::parse(bad).unwrap_err();
            assert!(e.contains("offset"), "{bad}: {e}");
        }
        let epoch = TargetTime::from_system_time(UNIX_EPOCH + Duration::from_secs(86400 * 365));
        assert_eq!(epoch.postgres(), "1971-01-01 00:00:00.000000+00");
    }

    #[test]
    fn timelines_parse() {
        assert_eq!(TargetTimeline::parse("latest"), Ok(TargetTimeline::Latest));
        assert_eq!(
            TargetTimeline::parse("0x1A"),
            Ok(TargetTimeline::Number(TimelineId(26)))
        );
        assert!(TargetTimeline::parse("0").is_err());
    }
}
