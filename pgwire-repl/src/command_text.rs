//! Text of the simple replication commands (slots, TIMELINE_HISTORY, START_REPLICATION, SHOW),
//! rendered for the replication grammar (repl_gram.y). BASE_BACKUP lives in
//! [`crate::basebackup::options`]. Slot names are validated with PostgreSQL's rule and sent
//! as quoted identifiers; keywords are upper case because the replication scanner is
//! case-sensitive about them.

use crate::lsn::{Lsn, TimelineId};
use crate::quote::{quote_ident, validate_slot_name, QuoteError, MAX_NAME_BYTES};

/// A command that cannot be rendered from these arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandTextError {
    #[error(transparent)]
    Quote(#[from] QuoteError),
    #[error("{what} needs PostgreSQL {min_major} or later; the server is {server_major}")]
    Unsupported {
        what: &'static str,
        min_major: u32,
        server_major: u32,
    },
    #[error("timeline 0 is not a valid timeline; timelines start at 1")]
    InvalidTimeline,
    #[error(
        "invalid setting name {name:?}: {reason}; a setting name is made of letters, digits \
         and underscores, not starting with a digit, optionally with '.'-separated parts"
    )]
    InvalidSettingName { name: String, reason: &'static str },
}

/// `CREATE_REPLICATION_SLOT "s" [TEMPORARY] PHYSICAL [RESERVE_WAL]`, with the v15+ option list
/// `(RESERVE_WAL)` on servers that have it.
pub fn create_physical_slot(
    name: &str,
    temporary: bool,
    reserve_wal: bool,
    server_major: u32,
) -> Result<String, CommandTextError> {
    let mut s = format!("CREATE_REPLICATION_SLOT {}", slot_ident(name)?);
    if temporary {
        s.push_str(" TEMPORARY");
    }
    s.push_str(" PHYSICAL");
    if reserve_wal {
        s.push_str(if server_major >= 15 {
            " (RESERVE_WAL)"
        } else {
            " RESERVE_WAL"
        });
    }
    Ok(s)
}

/// `DROP_REPLICATION_SLOT "s" [WAIT]`. WAIT blocks until an active slot is released instead
/// of failing.
pub fn drop_slot(name: &str, wait: bool) -> Result<String, CommandTextError> {
    let mut s = format!("DROP_REPLICATION_SLOT {}", slot_ident(name)?);
    if wait {
        s.push_str(" WAIT");
    }
    Ok(s)
}

/// `READ_REPLICATION_SLOT "s"` (v15+).
pub fn read_slot(name: &str, server_major: u32) -> Result<String, CommandTextError> {
    if server_major < 15 {
        return Err(CommandTextError::Unsupported {
            what: "READ_REPLICATION_SLOT",
            min_major: 15,
            server_major,
        });
    }
    Ok(format!("READ_REPLICATION_SLOT {}", slot_ident(name)?))
}

/// `TIMELINE_HISTORY n`. Infallible: the server itself answers timeline 0 with
/// "invalid timeline 0".
pub fn timeline_history(tli: TimelineId) -> String {
    format!("TIMELINE_HISTORY {tli}")
}

/// `START_REPLICATION [SLOT "s"] PHYSICAL X/X [TIMELINE n]`. Without a timeline the server
/// streams its current one.
pub fn start_replication_physical(
    slot: Option<&str>,
    start: Lsn,
    timeline: Option<TimelineId>,
) -> Result<String, CommandTextError> {
    let mut s = String::from("START_REPLICATION");
    if let Some(name) = slot {
        s.push_str(" SLOT ");
        s.push_str(&slot_ident(name)?);
    }
    s.push_str(&format!(" PHYSICAL {start}"));
    if let Some(tli) = timeline {
        s.push_str(&format!(" TIMELINE {}", valid_timeline(tli)?));
    }
    Ok(s)
}

/// `SHOW name`, for a setting such as `wal_segment_size` or `ext.setting`. The name is sent
/// unquoted in lower case: setting names are case-insensitive, and lower case can never
/// collide with the scanner's upper-case keywords.
pub fn show(name: &str) -> Result<String, CommandTextError> {
    let invalid = |reason| CommandTextError::InvalidSettingName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    for part in name.split('.') {
        let Some(first) = part.bytes().next() else {
            return Err(invalid("it has an empty part"));
        };
        if first.is_ascii_digit() {
            return Err(invalid("a part starts with a digit"));
        }
        if !part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(invalid("it contains a character that is not allowed"));
        }
        if part.len() > MAX_NAME_BYTES {
            return Err(invalid("a part is longer than 63 characters"));
        }
    }
    Ok(format!("SHOW {}", name.to_ascii_lowercase()))
}

fn slot_ident(name: &str) -> Result<String, CommandTextError> {
    validate_slot_name(name)?;
    Ok(quote_ident(name)?)
}

fn valid_timeline(tli: TimelineId) -> Result<u32, CommandTextError> {
    match tli.0 {
        0 => Err(CommandTextError::InvalidTimeline),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_slot_syntax_per_major() {
        for v in [12, 13, 14] {
            assert_eq!(
                create_physical_slot("s", true, true, v).unwrap(),
                "CREATE_REPLICATION_SLOT \"s\" TEMPORARY PHYSICAL RESERVE_WAL"
            );
        }
        for v in [15, 16, 17, 18] {
            assert_eq!(
                create_physical_slot("s", true, true, v).unwrap(),
                "CREATE_REPLICATION_SLOT \"s\" TEMPORARY PHYSICAL (RESERVE_WAL)"
            );
            assert_eq!(
                create_physical_slot("pgstream_1", false, true, v).unwrap(),
                "CREATE_REPLICATION_SLOT \"pgstream_1\" PHYSICAL (RESERVE_WAL)"
            );
        }
        assert_eq!(
            create_physical_slot("s", false, false, 16).unwrap(),
            "CREATE_REPLICATION_SLOT \"s\" PHYSICAL"
        );
        assert_eq!(
            create_physical_slot("s", true, false, 13).unwrap(),
            "CREATE_REPLICATION_SLOT \"s\" TEMPORARY PHYSICAL"
        );
    }

    #[test]
    fn slot_names_are_validated_everywhere() {
        for bad in ["", "Slot", "a\"b", "a-b", &"x".repeat(64)] {
            let is_slot_err = |r: Result<String, CommandTextError>| {
                matches!(
                    r,
                    Err(CommandTextError::Quote(QuoteError::InvalidSlotName { .. }))
                )
            };
            assert!(is_slot_err(create_physical_slot(bad, false, true, 16)));
            assert!(is_slot_err(drop_slot(bad, false)));
            assert!(is_slot_err(read_slot(bad, 15)));
            assert!(is_slot_err(start_replication_physical(
                Some(bad),
                Lsn(0),
                None
            )));
        }
        let e = drop_slot("Bad", false).unwrap_err().to_string();
        assert!(e.contains("1 to 63"), "{e}");
    }

    #[test]
    fn drop_and_read_slot() {
        assert_eq!(
            drop_slot("s", false).unwrap(),
            "DROP_REPLICATION_SLOT \"s\""
        );
        assert_eq!(
            drop_slot("s", true).unwrap(),
            "DROP_REPLICATION_SLOT \"s\" WAIT"
        );
        assert_eq!(read_slot("s", 15).unwrap(), "READ_REPLICATION_SLOT \"s\"");
        assert_eq!(read_slot("s", 18).unwrap(), "READ_REPLICATION_SLOT \"s\"");
        let e = read_slot("s", 14).unwrap_err();
        assert_eq!(
            e,
            CommandTextError::Unsupported {
                what: "READ_REPLICATION_SLOT",
                min_major: 15,
                server_major: 14
            }
        );
        assert_eq!(
            e.to_string(),
            "READ_REPLICATION_SLOT needs PostgreSQL 15 or later; the server is 14"
        );
    }

    #[test]
    fn timeline_history_text() {
        assert_eq!(timeline_history(TimelineId(2)), "TIMELINE_HISTORY 2");
        assert_eq!(
            timeline_history(TimelineId(u32::MAX)),
            "TIMELINE_HISTORY 4294967295"
        );
    }

    #[test]
    fn start_replication_text() {
        let lsn: Lsn = "0/3000000".parse().unwrap();
        assert_eq!(
            start_replication_physical(Some("s"), lsn, Some(TimelineId(2))).unwrap(),
            "START_REPLICATION SLOT \"s\" PHYSICAL 0/3000000 TIMELINE 2"
        );
        assert_eq!(
            start_replication_physical(None, Lsn(0x16_B300_0000), None).unwrap(),
            "START_REPLICATION PHYSICAL 16/B3000000"
        );
        assert_eq!(
            start_replication_physical(None, Lsn(0), Some(TimelineId(1))).unwrap(),
            "START_REPLICATION PHYSICAL 0/0 TIMELINE 1"
        );
        assert_eq!(
            start_replication_physical(None, lsn, Some(TimelineId(0))).unwrap_err(),
            CommandTextError::InvalidTimeline
        );
    }

    #[test]
    fn show_text() {
        assert_eq!(show("wal_segment_size").unwrap(), "SHOW wal_segment_size");
        assert_eq!(show("Server_Version").unwrap(), "SHOW server_version");
        assert_eq!(
            show("pg_stat_statements.max").unwrap(),
            "SHOW pg_stat_statements.max"
        );
        assert_eq!(show("_x1").unwrap(), "SHOW _x1");
    }

    #[test]
    fn show_refusals() {
        let reason = |s: &str| match show(s).unwrap_err() {
            CommandTextError::InvalidSettingName { reason, .. } => reason,
            e => panic!("{e:?}"),
        };
        assert_eq!(reason(""), "it is empty");
        assert_eq!(reason("a..b"), "it has an empty part");
        assert_eq!(reason(".a"), "it has an empty part");
        assert_eq!(reason("a."), "it has an empty part");
        assert_eq!(reason("1a"), "a part starts with a digit");
        assert_eq!(reason("a.2"), "a part starts with a digit");
        for bad in ["a b", "a;DROP", "a'", "a\"", "a\0", "é", "a-b", "a$"] {
            assert_eq!(
                reason(bad),
                "it contains a character that is not allowed",
                "{bad:?}"
            );
        }
        assert_eq!(
            reason(&"a".repeat(64)),
            "a part is longer than 63 characters"
        );
        assert!(show(&"a".repeat(63)).is_ok());
    }
}
