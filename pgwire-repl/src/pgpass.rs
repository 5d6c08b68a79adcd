//! `.pgpass` password files, matched exactly as libpq's `passwordFromFile` does.
//!
//! Each line is `hostname:port:database:username:password`; `\:` and `\\` escape; a field that
//! is exactly `*` matches anything; lines starting with `#` are comments; the first matching
//! line wins. A file that is not a regular file, or that the group or others may access, is
//! ignored with a warning.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::config::default_socket_dir;

/// A password file that exists but could not be read. Never contains a password.
#[derive(Debug, thiserror::Error)]
pub enum PgpassError {
    #[error("could not read password file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("password file {}, line {line}: the matching password is not valid UTF-8", path.display())]
    NotUtf8 { path: PathBuf, line: usize },
}

/// The password for `user` on `dbname` at `host:port`, if `path` holds a matching line.
///
/// `host` is a host name, an address, or a Unix-socket directory; an empty host and the default
/// socket directory both match `localhost`, as in libpq. A missing file gives `Ok(None)`.
pub fn lookup(
    path: &Path,
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
) -> Result<Option<String>, PgpassError> {
    if dbname.is_empty() || user.is_empty() {
        return Ok(None);
    }
    let io_err = |source| PgpassError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    if !meta.is_file() {
        tracing::warn!(
            "password file \"{}\" is not a plain file; ignoring it",
            path.display()
        );
        return Ok(None);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file \"{}\" has group or world access; permissions should be u=rw \
                 (0600) or less; ignoring it",
                path.display()
            );
            return Ok(None);
        }
    }

    let socket_default = default_socket_dir();
    let host = if host.is_empty() || Path::new(host) == socket_default {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    let wanted = [host, port.as_str(), dbname, user];

    let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
    let mut line = Vec::new();
    let mut number = 0;
    let result = loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break Ok(None),
            Ok(_) => {}
            Err(e) => break Err(io_err(e)),
        }
        number += 1;
        if let Some(password) = match_line(&line, &wanted) {
            break String::from_utf8(password).map(Some).map_err(|e| {
                let mut bytes = e.into_bytes();
                bytes.fill(0);
                PgpassError::NotUtf8 {
                    path: path.to_path_buf(),
                    line: number,
                }
            });
        }
    };
    // Passwords should not linger in freed memory longer than needed.
    line.fill(0);
    result
}

/// The de-escaped password of `line` if its four leading fields match `wanted`.
fn match_line(line: &[u8], wanted: &[&str; 4]) -> Option<Vec<u8>> {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    let line = &line[..end];
    if line.is_empty() || line[0] == b'#' {
        return None;
    }
    let mut rest = line;
    for token in wanted {
        rest = match_field(rest, token.as_bytes())?;
    }
    // The password runs to the first unescaped ':' (extra fields are ignored, as in libpq).
    let mut password = Vec::with_capacity(rest.len());
    let mut i = 0;
    while i < rest.len() && rest[i] != b':' {
        if rest[i] == b'\\' && i + 1 < rest.len() {
            i += 1;
        }
        password.push(rest[i]);
        i += 1;
    }
    Some(password)
}

/// libpq's `pwdfMatchesString`: the text after this field and its ':' if the field is `*` or
/// equals `token` once de-escaped.
fn match_field<'a>(field: &'a [u8], token: &[u8]) -> Option<&'a [u8]> {
    if field.starts_with(b"*:") {
        return Some(&field[2..]);
    }
    let mut i = 0;
    let mut t = 0;
    while i < field.len() {
        let mut escaped = false;
        if field[i] == b'\\' {
            i += 1;
            escaped = true;
            if i == field.len() {
                return None;
            }
        }
        if field[i] == b':' && !escaped && t == token.len() {
            return Some(&field[i + 1..]);
        }
        if t == token.len() || field[i] != token[t] {
            return None;
        }
        i += 1;
        t += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(contents: &str, mode: u32) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(contents.as_bytes()).unwrap();
        f.flush().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        f
    }

    fn find(contents: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
        let f = file_with(contents, 0o600);
        lookup(f.path(), host, port, db, user).unwrap()
    }

    #[test]
    fn exact_match() {
        let pw = find(
            "db.example:5432:app:alice:s3cret\n",
            "db.example",
            5432,
            "app",
            "alice",
        );
        assert_eq!(pw.as_deref(), Some("s3cret"));
    }

    #[test]
    fn each_field_must_match() {
        let line = "h:5432:d:u:pw\n";
        assert_eq!(find(line, "x", 5432, "d", "u"), None);
        assert_eq!(find(line, "h", 5433, "d", "u"), None);
        assert_eq!(find(line, "h", 5432, "x", "u"), None);
        assert_eq!(find(line, "h", 5432, "d", "x"), None);
        // No prefix matches: "h" must not match host "hh", nor "hh" match "h".
        assert_eq!(find("hh:5432:d:u:pw\n", "h", 5432, "d", "u"), None);
        assert_eq!(find(line, "hh", 5432, "d", "u"), None);
    }

    #[test]
    fn wildcards() {
        let f = "*:*:*:*:any\n";
        assert_eq!(find(f, "h", 1, "d", "u").as_deref(), Some("any"));
        let f = "h:*:d:*:some\n";
        assert_eq!(find(f, "h", 6000, "d", "bob").as_deref(), Some("some"));
        assert_eq!(find(f, "other", 6000, "d", "bob"), None);
        // "*" is a wildcard only as a whole field; an escaped one is literal.
        assert_eq!(find("h*:*:*:*:pw\n", "hx", 1, "d", "u"), None);
        assert_eq!(
            find("\\*:*:*:*:pw\n", "*", 1, "d", "u").as_deref(),
            Some("pw")
        );
        assert_eq!(find("\\*:*:*:*:pw\n", "h", 1, "d", "u"), None);
    }

    #[test]
    fn first_match_wins_and_comments_are_skipped() {
        let f = "# h:5432:d:u:commented\n\nh:5432:d:u:first\n*:*:*:*:second\n";
        assert_eq!(find(f, "h", 5432, "d", "u").as_deref(), Some("first"));
        assert_eq!(find(f, "other", 5432, "d", "u").as_deref(), Some("second"));
        // Only a '#' in the first column starts a comment.
        let f = " #h:5432:d:u:x\n";
        assert_eq!(find(f, " #h", 5432, "d", "u").as_deref(), Some("x"));
    }

    #[test]
    fn escapes_in_fields_and_password() {
        let f = "fe80\\:\\:1:5432:my\\\\db:u:pa\\:ss\\\\word\n";
        assert_eq!(
            find(f, "fe80::1", 5432, "my\\db", "u").as_deref(),
            Some("pa:ss\\word")
        );
        // The password ends at an unescaped ':'; extra fields are ignored.
        assert_eq!(
            find("h:1:d:u:pw:extra\n", "h", 1, "d", "u").as_deref(),
            Some("pw")
        );
        // A trailing lone backslash is kept.
        assert_eq!(
            find("h:1:d:u:pw\\\n", "h", 1, "d", "u").as_deref(),
            Some("pw\\")
        );
    }

    #[test]
    fn crlf_and_missing_final_newline() {
        assert_eq!(
            find("h:1:d:u:pw\r\n", "h", 1, "d", "u").as_deref(),
            Some("pw")
        );
        assert_eq!(
            find("x:1:d:u:a\nh:1:d:u:pw", "h", 1, "d", "u").as_deref(),
            Some("pw")
        );
        assert_eq!(find("h:1:d:u:\n", "h", 1, "d", "u").as_deref(), Some(""));
    }

    #[test]
    fn short_lines_do_not_match() {
        assert_eq!(find("h:1:d:u\n", "h", 1, "d", "u"), None);
        assert_eq!(find("h:1:d\n", "h", 1, "d", "u"), None);
    }

    #[test]
    fn localhost_matches_empty_host_and_default_socket_dir() {
        let f = "localhost:5432:d:u:local\n";
        assert_eq!(find(f, "", 5432, "d", "u").as_deref(), Some("local"));
        let dir = default_socket_dir();
        let dir = dir.to_str().unwrap();
        assert_eq!(find(f, dir, 5432, "d", "u").as_deref(), Some("local"));
        assert_eq!(
            find(f, "localhost", 5432, "d", "u").as_deref(),
            Some("local")
        );
        // Other socket directories match literally, as in libpq.
        assert_eq!(find(f, "/some/other/dir", 5432, "d", "u"), None);
        let f = "/some/other/dir:5432:d:u:sock\n";
        assert_eq!(
            find(f, "/some/other/dir", 5432, "d", "u").as_deref(),
            Some("sock")
        );
    }

    #[test]
    fn replication_database_field() {
        let f = "h:5432:replication:rep:physical\nh:5432:*:rep:other\n";
        assert_eq!(
            find(f, "h", 5432, "replication", "rep").as_deref(),
            Some("physical")
        );
        assert_eq!(
            find(f, "h", 5432, "postgres", "rep").as_deref(),
            Some("other")
        );
    }

    #[test]
    fn empty_dbname_or_user_never_match() {
        assert_eq!(find("*:*:*:*:pw\n", "h", 1, "", "u"), None);
        assert_eq!(find("*:*:*:*:pw\n", "h", 1, "d", ""), None);
    }

    #[test]
    fn missing_file_is_no_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent");
        assert!(lookup(&path, "h", 1, "d", "u").unwrap().is_none());
    }

    #[cfg(unix)]
    #[test]
    fn group_or_world_access_is_ignored() {
        for mode in [0o640, 0o604, 0o660, 0o644, 0o610] {
            let f = file_with("*:*:*:*:pw\n", mode);
            assert_eq!(
                lookup(f.path(), "h", 1, "d", "u").unwrap(),
                None,
                "{mode:o}"
            );
        }
        for mode in [0o600, 0o400] {
            let f = file_with("*:*:*:*:pw\n", mode);
            let pw = lookup(f.path(), "h", 1, "d", "u").unwrap();
            assert_eq!(pw.as_deref(), Some("pw"), "{mode:o}");
        }
    }

    #[test]
    fn a_directory_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        assert_eq!(lookup(dir.path(), "h", 1, "d", "u").unwrap(), None);
    }

    #[test]
    fn invalid_utf8_password_is_an_error_without_the_bytes() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"h:1:d:u:\xff\xfesecret\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let err = lookup(f.path(), "h", 1, "d", "u").unwrap_err();
        assert!(matches!(err, PgpassError::NotUtf8 { line: 1, .. }));
        assert!(!err.to_string().contains("secret"));
    }
}
