//! Quoting for the replication command grammar (repl_scanner.l).
//!
//! The replication scanner is not the SQL scanner: it has no `E'…'` strings, a backslash inside
//! `'…'` is an ordinary character, and a `"…"` identifier cannot contain `"` at all. So
//! `postgres_protocol::escape::escape_literal` must not be used here (it emits `E'…'` for input
//! containing a backslash). Nothing can carry a NUL byte: the query string is NUL-terminated.

/// A value that cannot be written into a replication command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// A string literal with a NUL byte, which would cut the query short.
    #[error("string {0:?} contains a NUL byte, which cannot be sent in a replication command")]
    LiteralContainsNul(String),
    /// An empty identifier: `""` is a syntax error.
    #[error("an identifier cannot be empty")]
    EmptyIdentifier,
    /// An identifier with a `"` or a NUL byte, neither of which the replication grammar can express.
    #[error(
        "identifier {0:?} contains a double quote or a NUL byte, which the replication command \
         grammar cannot express; choose a name without them"
    )]
    UnquotableIdentifier(String),
    /// A replication slot name that PostgreSQL would refuse.
    #[error(
        "invalid replication slot name {name:?}: {reason}; a slot name must be 1 to 63 \
         characters, each a lower-case letter (a-z), a digit or an underscore"
    )]
    InvalidSlotName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// PostgreSQL's NAMEDATALEN - 1: the longest name the server keeps.
pub const MAX_NAME_BYTES: usize = 63;

/// Quotes `s` as a replication-grammar string literal: `'…'` with `'` doubled. Backslashes are
/// kept as they are, because the replication scanner treats them literally.
pub fn quote_literal(s: &str) -> Result<String, QuoteError> {
    if s.contains('\0') {
        return Err(QuoteError::LiteralContainsNul(s.to_string()));
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
    Ok(out)
}

/// Quotes `s` as a replication-grammar identifier: `"…"`. Quoted identifiers keep their case.
/// Refuses the empty string and any `"` or NUL, which cannot be escaped in this grammar.
pub fn quote_ident(s: &str) -> Result<String, QuoteError> {
    if s.is_empty() {
        return Err(QuoteError::EmptyIdentifier);
    }
    if s.contains(['"', '\0']) {
        return Err(QuoteError::UnquotableIdentifier(s.to_string()));
    }
    Ok(format!("\"{s}\""))
}

/// Checks a replication slot name against PostgreSQL's rule (ReplicationSlotValidateName):
/// 1 to 63 bytes, each a lower-case ASCII letter, a digit or an underscore.
pub fn validate_slot_name(s: &str) -> Result<(), QuoteError> {
    let invalid = |reason| QuoteError::InvalidSlotName {
        name: s.to_string(),
        reason,
    };
    if s.is_empty() {
        return Err(invalid("it is empty"));
    }
    if s.len() > MAX_NAME_BYTES {
        return Err(invalid("it is longer than 63 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(invalid("it contains a character that is not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_plain() {
        assert_eq!(quote_literal("base backup").unwrap(), "'base backup'");
        assert_eq!(quote_literal("").unwrap(), "''");
    }

    #[test]
    fn literal_doubles_single_quotes() {
        assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
        assert_eq!(quote_literal("''").unwrap(), "''''''");
        assert_eq!(quote_literal("'").unwrap(), "''''");
    }

    #[test]
    fn literal_keeps_backslashes_and_never_uses_e_strings() {
        assert_eq!(quote_literal(r"C:\dir\x").unwrap(), r"'C:\dir\x'");
        assert_eq!(quote_literal(r"a\'b").unwrap(), r"'a\''b'");
        assert_eq!(quote_literal("\\").unwrap(), "'\\'");
        assert!(!quote_literal(r"\\").unwrap().starts_with('E'));
    }

    #[test]
    fn literal_keeps_other_characters() {
        assert_eq!(quote_literal("\"x\" é\t;").unwrap(), "'\"x\" é\t;'");
    }

    #[test]
    fn literal_refuses_nul() {
        let e = quote_literal("a\0b").unwrap_err();
        assert_eq!(e, QuoteError::LiteralContainsNul("a\0b".into()));
        assert!(e.to_string().contains("NUL"));
    }

    #[test]
    fn ident_quotes_and_keeps_case() {
        assert_eq!(quote_ident("slot_1").unwrap(), "\"slot_1\"");
        assert_eq!(quote_ident("My Slot").unwrap(), "\"My Slot\"");
        assert_eq!(quote_ident("it's").unwrap(), "\"it's\"");
        assert_eq!(quote_ident(r"a\b").unwrap(), r#""a\b""#);
    }

    #[test]
    fn ident_refuses_empty_double_quote_and_nul() {
        assert_eq!(quote_ident("").unwrap_err(), QuoteError::EmptyIdentifier);
        assert_eq!(
            quote_ident("a\"b").unwrap_err(),
            QuoteError::UnquotableIdentifier("a\"b".into())
        );
        assert_eq!(
            quote_ident("a\0").unwrap_err(),
            QuoteError::UnquotableIdentifier("a\0".into())
        );
    }

    #[test]
    fn slot_names_accepted() {
        for s in [
            "a",
            "pgstream",
            "pg_basebackup_1234",
            "_",
            "0",
            &"x".repeat(63),
        ] {
            validate_slot_name(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        }
    }

    #[test]
    fn slot_names_refused_with_the_rule_in_the_message() {
        for s in [
            "",
            "Upper",
            "with-dash",
            "with space",
            "dot.ted",
            "quote\"",
            "nul\0",
            "é",
            &"x".repeat(64),
        ] {
            let e = validate_slot_name(s).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("1 to 63"), "{msg}");
            assert!(msg.contains("lower-case"), "{msg}");
        }
    }

    #[test]
    fn slot_name_reasons() {
        let reason = |s: &str| match validate_slot_name(s).unwrap_err() {
            QuoteError::InvalidSlotName { reason, .. } => reason,
            e => panic!("unexpected {e:?}"),
        };
        assert_eq!(reason(""), "it is empty");
        assert_eq!(reason(&"a".repeat(64)), "it is longer than 63 characters");
        assert_eq!(reason("A"), "it contains a character that is not allowed");
    }
}
