//! The two textual forms of a connection string, reduced to ordered key/value pairs (later pairs
//! override earlier ones), following libpq's `conninfo_parse` and `conninfo_uri_parse_options`.
//!
//! Errors never quote a password, nor a whole URI (which may carry one).

use super::resolve::is_known_option;
use super::ConfigError;

/// The URI designators libpq recognises (case-sensitive, at the very start).
const URI_PREFIXES: [&str; 2] = ["postgresql://", "postgres://"];

/// One `key=value` setting as written.
pub(super) type Pair = (String, String);

/// C's `isspace` in the "C" locale, which libpq uses to split keyword/value strings.
pub(super) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Splits a conninfo string or URI into its settings, rejecting unknown options.
pub(super) fn pairs(s: &str) -> Result<Vec<Pair>, ConfigError> {
    match URI_PREFIXES.iter().find(|p| s.starts_with(*p)) {
        Some(prefix) => uri_pairs(&s[prefix.len()..], prefix.len()),
        None => keyword_pairs(s),
    }
}

fn syntax(msg: impl Into<String>) -> ConfigError {
    ConfigError::Syntax(msg.into())
}

/// A word after an unquoted password is most likely the rest of a password containing a space:
/// say so without echoing it.
fn after_password_error() -> ConfigError {
    syntax(
        "unexpected text after the password value; a password containing spaces must be \
         quoted: password='...'",
    )
}

fn keyword_pairs(s: &str) -> Result<Vec<Pair>, ConfigError> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut after_bare_secret = false;
    while i < b.len() {
        if is_space(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !is_space(b[i]) {
            i += 1;
        }
        let key = &s[start..i];
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if i == b.len() || b[i] != b'=' {
            return Err(if after_bare_secret {
                after_password_error()
            } else {
                syntax(format!(
                    "missing \"=\" after \"{key}\" in connection info string"
                ))
            });
        }
        i += 1;
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        let mut value = Vec::new();
        let quoted = i < b.len() && b[i] == b'\'';
        if quoted {
            i += 1;
            loop {
                match b.get(i) {
                    None => {
                        return Err(syntax(format!(
                            "unterminated quoted string for \"{key}\" in connection info string"
                        )))
                    }
                    Some(b'\\') => {
                        if let Some(&c) = b.get(i + 1) {
                            value.push(c);
                        }
                        i += 2;
                    }
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < b.len() && !is_space(b[i]) {
                if b[i] == b'\\' {
                    if let Some(&c) = b.get(i + 1) {
                        value.push(c);
                    }
                    i += 2;
                } else {
                    value.push(b[i]);
                    i += 1;
                }
            }
        }
        if !is_known_option(key) {
            return Err(if after_bare_secret {
                after_password_error()
            } else {
                ConfigError::UnknownOption(key.to_string())
            });
        }
        after_bare_secret = !quoted && (key == "password" || key == "sslpassword");
        // Only ASCII bytes were removed (quotes and backslashes), so this cannot fail; the
        // error keeps a malformed value out of the message all the same.
        let value = String::from_utf8(value)
            .map_err(|_| syntax(format!("value of \"{key}\" is not valid UTF-8")))?;
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// `rest` is the URI after its `postgresql://` designator, which was `offset` bytes long.
fn uri_pairs(rest: &str, offset: usize) -> Result<Vec<Pair>, ConfigError> {
    let b = rest.as_bytes();
    let mut out: Vec<Pair> = Vec::new();
    let mut p = 0;

    // user[:password]@
    let end = b.iter().position(|&c| c == b'@' || c == b'/' || c == b'?');
    if let Some(at) = end.filter(|&k| b[k] == b'@') {
        let info = &rest[..at];
        let (user, password) = match info.find(':') {
            Some(c) => (&info[..c], Some(&info[c + 1..])),
            None => (info, None),
        };
        if !user.is_empty() {
            out.push(("user".into(), decode(user, Some("the user name"))?));
        }
        if let Some(pw) = password.filter(|pw| !pw.is_empty()) {
            out.push(("password".into(), decode(pw, None)?));
        }
        p = at + 1;
    }

    // host[:port][,host[:port]...], with IPv6 addresses in brackets.
    let mut hosts = String::new();
    let mut ports = String::new();
    let terminator = loop {
        let host;
        if b.get(p) == Some(&b'[') {
            let start = p + 1;
            let close = b[start..]
                .iter()
                .position(|&c| c == b']')
                .map(|k| start + k)
                .ok_or_else(|| syntax("missing \"]\" after an IPv6 host address in the URI"))?;
            if close == start {
                return Err(syntax("empty IPv6 host address \"[]\" in the URI"));
            }
            host = &rest[start..close];
            p = close + 1;
            if let Some(&c) = b.get(p).filter(|c| !b":/?,".contains(c)) {
                return Err(syntax(format!(
                    "unexpected character {:?} at position {} of the URI, after an IPv6 host \
                     address (expected \":\", \"/\", \"?\" or \",\")",
                    c as char,
                    offset + p + 1
                )));
            }
        } else {
            let start = p;
            while p < b.len() && !b":/?,".contains(&b[p]) {
                p += 1;
            }
            host = &rest[start..p];
            // Most likely an unencoded '@' in the password: do not let the rest of it pose as a
            // host name (which later errors would print).
            if host.contains('@') {
                return Err(syntax(
                    "unexpected \"@\" in the host part of the URI; percent-encode \"@\" in a \
                     user name or password as %40",
                ));
            }
        }
        hosts.push_str(host);
        let mut term = b.get(p).copied();
        if term == Some(b':') {
            p += 1;
            let start = p;
            while p < b.len() && !b"/?,".contains(&b[p]) {
                p += 1;
            }
            ports.push_str(&rest[start..p]);
            term = b.get(p).copied();
        }
        if term != Some(b',') {
            break term;
        }
        p += 1;
        hosts.push(',');
        ports.push(',');
    };
    // Empty lists are left unset, so that PGHOST and PGPORT still apply.
    if !hosts.is_empty() {
        out.push(("host".into(), decode(&hosts, Some("the host"))?));
    }
    if !ports.is_empty() {
        out.push(("port".into(), decode(&ports, Some("the port"))?));
    }

    // /dbname
    let mut term = terminator;
    if term == Some(b'/') {
        let start = p + 1;
        p = start;
        while p < b.len() && b[p] != b'?' {
            p += 1;
        }
        // An empty dbname is left unset, so that PGDATABASE still applies.
        if p > start {
            out.push((
                "dbname".into(),
                decode(&rest[start..p], Some("the database name"))?,
            ));
        }
        term = b.get(p).copied();
    }

    // ?key=value&...
    if term == Some(b'?') {
        let params: Vec<&str> = rest[p + 1..].split('&').collect();
        for (n, param) in params.iter().enumerate() {
            if param.is_empty() && n + 1 == params.len() {
                break; // nothing after a trailing "?" or "&", as libpq allows
            }
            let (key, value) = param.split_once('=').ok_or_else(|| {
                syntax(format!(
                    "missing key/value separator \"=\" in URI query parameter{}",
                    quote_unless_secret(param)
                ))
            })?;
            if value.contains('=') {
                return Err(syntax(format!(
                    "extra key/value separator \"=\" in URI query parameter{}",
                    quote_unless_secret(key)
                )));
            }
            let key = decode(key, Some("a URI query parameter name"))?;
            let secret = key == "password" || key == "sslpassword";
            let what = format!("URI query parameter \"{key}\"");
            let value = decode(value, (!secret).then_some(what.as_str()))?;
            // JDBC compatibility, as in libpq.
            if key == "ssl" && value == "true" {
                out.push(("sslmode".into(), "require".into()));
                continue;
            }
            if !is_known_option(&key) {
                return Err(ConfigError::UnknownOption(key));
            }
            out.push((key, value));
        }
    }
    Ok(out)
}

/// ` "text"`, unless the text might hold a password.
fn quote_unless_secret(text: &str) -> String {
    if text.to_ascii_lowercase().contains("password") {
        String::new()
    } else {
        format!(" \"{text}\"")
    }
}

/// Percent-decodes a URI component as libpq does: only `%XX` (no `+`), `%00` forbidden.
/// `what` names the component for errors; `None` marks a secret, which is never quoted.
fn decode(s: &str, what: Option<&str>) -> Result<String, ConfigError> {
    let describe = || match what {
        Some(w) => format!("{w} \"{s}\""),
        None => "the password".to_string(),
    };
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let hex = b.get(i + 1..i + 3).and_then(|h| {
            let h = std::str::from_utf8(h).ok()?;
            u8::from_str_radix(h, 16)
                .ok()
                .filter(|_| !h.starts_with('+'))
        });
        match hex {
            Some(0) => {
                return Err(syntax(format!(
                    "forbidden value %00 in percent-encoded {}",
                    describe()
                )))
            }
            Some(c) => out.push(c),
            None => {
                return Err(syntax(format!(
                    "invalid percent-encoded token in {}",
                    describe()
                )))
            }
        }
        i += 3;
    }
    String::from_utf8(out)
        .map_err(|_| syntax(format!("{} is not valid UTF-8 once decoded", describe())))
}
