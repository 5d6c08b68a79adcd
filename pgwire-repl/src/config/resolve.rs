//! From settings as written to a [`Config`]: environment fallbacks, validation, defaults and
//! multi-host expansion, following libpq's `conninfo_add_defaults` and `pqConnectOptions2`.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::syntax::{is_space, Pair};
use super::{
    default_socket_dir, home_file, ChannelBinding, Config, ConfigError, Host, ReplicationMode,
    SslMode, Target, TargetSessionAttrs, DEFAULT_PORT,
};

/// Options pgstream acts on.
const USED_OPTIONS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "passfile",
    "dbname",
    "application_name",
    "fallback_application_name",
    "options",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "channel_binding",
    "connect_timeout",
    "target_session_attrs",
    "load_balance_hosts",
    "replication",
];

/// libpq options that are accepted (and checked where libpq checks them) but have no effect:
/// they tune TCP keepalives, GSSAPI/Kerberos, SNI, compression or the client encoding, none of
/// which matter to a replication client that speaks TLS itself. `gssencmode=require` and
/// `sslnegotiation=direct` are refused rather than ignored; `requirepeer` is logged as not
/// enforced.
pub const IGNORED_OPTIONS: &[&str] = &[
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "sslcompression",
    "sslsni",
    "client_encoding",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "gssencmode",
    "sslnegotiation",
    "requirepeer",
];

/// libpq options refused whenever non-empty, each with the reason: ignoring them would connect
/// to another server than meant or skip a security check.
const REFUSED_OPTIONS: &[(&str, &str)] = &[
    (
        "service",
        "connection service files are not supported by pgstream; give host, port, user and \
         dbname directly",
    ),
    (
        "sslcrl",
        "certificate revocation lists are not supported by pgstream",
    ),
    (
        "sslcrldir",
        "certificate revocation lists are not supported by pgstream",
    ),
    ("require_auth", "require_auth is not supported by pgstream"),
];

/// Environment fallbacks, exactly libpq's (options missing here have none).
const ENV_VARS: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("port", "PGPORT"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("passfile", "PGPASSFILE"),
    ("dbname", "PGDATABASE"),
    ("application_name", "PGAPPNAME"),
    ("options", "PGOPTIONS"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("sslcertmode", "PGSSLCERTMODE"),
    ("ssl_min_protocol_version", "PGSSLMINPROTOCOLVERSION"),
    ("ssl_max_protocol_version", "PGSSLMAXPROTOCOLVERSION"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("load_balance_hosts", "PGLOADBALANCEHOSTS"),
    ("sslcompression", "PGSSLCOMPRESSION"),
    ("sslsni", "PGSSLSNI"),
    ("client_encoding", "PGCLIENTENCODING"),
    ("krbsrvname", "PGKRBSRVNAME"),
    ("gsslib", "PGGSSLIB"),
    ("gssdelegation", "PGGSSDELEGATION"),
    ("gssencmode", "PGGSSENCMODE"),
    ("sslnegotiation", "PGSSLNEGOTIATION"),
    ("requirepeer", "PGREQUIREPEER"),
    ("service", "PGSERVICE"),
    ("sslcrl", "PGSSLCRL"),
    ("sslcrldir", "PGSSLCRLDIR"),
    ("require_auth", "PGREQUIREAUTH"),
];

const TLS_VERSIONS: &[&str] = &["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];

/// The longest Unix-socket path the kernel takes (`sizeof(sun_path) - 1`).
const MAX_SOCKET_PATH: usize = 107;

/// The option's canonical name, if libpq has such an option.
fn canonical(key: &str) -> Option<&'static str> {
    USED_OPTIONS
        .iter()
        .chain(IGNORED_OPTIONS)
        .chain(REFUSED_OPTIONS.iter().map(|(k, _)| k))
        .find(|k| **k == key)
        .copied()
}

/// Whether `key` may appear in a connection string (`requiressl` is libpq's legacy alias).
pub(super) fn is_known_option(key: &str) -> bool {
    key == "requiressl" || canonical(key).is_some()
}

/// Where a setting came from, so errors can point at an environment variable.
#[derive(Clone, Copy)]
enum Source {
    Conninfo,
    Env(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Conninfo => Ok(()),
            Source::Env(var) => write!(f, " (set by environment variable {var})"),
        }
    }
}

fn invalid(key: &str, value: &str, src: Source, reason: impl fmt::Display) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: format!("{reason}{src}"),
    }
}

struct Settings(HashMap<&'static str, (String, Source)>);

impl Settings {
    /// A setting with a non-empty value: libpq treats an empty value as the default, though an
    /// explicit empty value still keeps the environment variable out.
    fn get(&self, key: &str) -> Option<(&str, Source)> {
        self.0
            .get(key)
            .filter(|(v, _)| !v.is_empty())
            .map(|(v, src)| (v.as_str(), *src))
    }

    fn string(&self, key: &str) -> Option<String> {
        self.get(key).map(|(v, _)| v.to_string())
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        self.get(key).map(|(v, _)| PathBuf::from(v))
    }

    /// The value if it is one of `names` (case-sensitive, as libpq's `strcmp`).
    fn one_of<'n>(&self, key: &str, names: &[&'n str]) -> Result<Option<&'n str>, ConfigError> {
        let Some((v, src)) = self.get(key) else {
            return Ok(None);
        };
        match names.iter().find(|n| **n == v) {
            Some(n) => Ok(Some(n)),
            None => Err(invalid(key, v, src, valid_values(names))),
        }
    }

    fn parse_enum<T: Copy>(&self, key: &str, all: &[(T, &str)]) -> Result<Option<T>, ConfigError> {
        let names: Vec<&str> = all.iter().map(|(_, n)| *n).collect();
        let found = self.one_of(key, &names)?;
        Ok(found.and_then(|n| all.iter().find(|(_, m)| *m == n).map(|(t, _)| *t)))
    }

    /// libpq's `parse_int_param`: an `int`, surrounding whitespace allowed.
    fn int(&self, key: &str) -> Result<Option<i32>, ConfigError> {
        let Some((v, src)) = self.get(key) else {
            return Ok(None);
        };
        let trimmed = v.trim_matches(|c: char| c.is_ascii() && is_space(c as u8));
        trimmed
            .parse::<i32>()
            .map(Some)
            .map_err(|_| invalid(key, v, src, "expected an integer"))
    }
}

fn valid_values(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!("valid values are {}", quoted.join(", "))
}

pub(super) fn resolve(
    pairs: Vec<Pair>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut map = HashMap::new();
    for (key, value) in pairs {
        let (key, value) = if key == "requiressl" {
            let mode = if value.starts_with('1') {
                "require"
            } else {
                "prefer"
            };
            ("sslmode", mode.to_string())
        } else {
            let key = canonical(&key).ok_or(ConfigError::UnknownOption(key))?;
            (key, value)
        };
        map.insert(key, (value, Source::Conninfo));
    }
    for (key, var) in ENV_VARS {
        if map.contains_key(key) {
            continue;
        }
        if let Some(value) = env(var) {
            map.insert(key, (value, Source::Env(var)));
        } else if *key == "sslmode" && env("PGREQUIRESSL").is_some_and(|v| v.starts_with('1')) {
            // The deprecated PGREQUIRESSL, below PGSSLMODE as in libpq since 9.3.
            map.insert(key, ("require".into(), Source::Env("PGREQUIRESSL")));
        }
    }
    let s = Settings(map);

    for (key, reason) in REFUSED_OPTIONS {
        if let Some((v, src)) = s.get(key) {
            return Err(invalid(key, v, src, reason));
        }
    }
    check_ignored(&s)?;

    let mut config = Config {
        targets: targets(&s)?,
        user: s.string("user"),
        password: s.string("password"),
        dbname: s.string("dbname"),
        passfile: s.path("passfile").or_else(|| home_file(env, ".pgpass")),
        application_name: s
            .string("application_name")
            .or_else(|| s.string("fallback_application_name")),
        options: s.string("options"),
        sslmode: SslMode::default(),
        sslrootcert: s.path("sslrootcert"),
        sslcert: s.path("sslcert"),
        sslkey: s.path("sslkey"),
        channel_binding: s
            .parse_enum("channel_binding", ChannelBinding::ALL)?
            .unwrap_or_default(),
        connect_timeout: connect_timeout(&s)?,
        target_session_attrs: s
            .parse_enum("target_session_attrs", TargetSessionAttrs::ALL)?
            .unwrap_or_default(),
        replication: replication(&s)?,
        sslpassword: s.string("sslpassword"),
        ssl_min_protocol_version: tls_version(&s, "ssl_min_protocol_version")?,
        ssl_max_protocol_version: tls_version(&s, "ssl_max_protocol_version")?,
    };
    config.sslmode = sslmode(&s, config.uses_system_roots())?;
    check_tls_range(&s, &config)?;

    // Client files are only defaults when present; verify-* without a CA is the TLS layer's to
    // report, with the path it looked for.
    let existing = |name: &str| home_file(env, name).filter(|p| p.exists());
    if config.sslrootcert.is_none() {
        config.sslrootcert = existing(".postgresql/root.crt");
    }
    if config.sslcert.is_none() {
        config.sslcert = existing(".postgresql/postgresql.crt");
    }
    if config.sslkey.is_none() {
        config.sslkey = existing(".postgresql/postgresql.key");
    }
    match s.one_of("sslcertmode", &["allow", "disable", "require"])? {
        Some("disable") => {
            config.sslcert = None;
            config.sslkey = None;
        }
        Some("require") => {
            let (v, src) = s
                .get("sslcertmode")
                .unwrap_or(("require", Source::Conninfo));
            return Err(invalid(
                "sslcertmode",
                v,
                src,
                "sslcertmode=require is not supported by pgstream; use \"allow\" or \"disable\"",
            ));
        }
        _ => {}
    }
    if s.one_of("load_balance_hosts", &["disable", "random"])? == Some("random") {
        shuffle(&mut config.targets);
    }
    Ok(config)
}

fn check_ignored(s: &Settings) -> Result<(), ConfigError> {
    for key in [
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
    ] {
        s.int(key)?;
    }
    if let Some("require") = s.one_of("gssencmode", &["disable", "prefer", "require"])? {
        let src = s.get("gssencmode").map_or(Source::Conninfo, |(_, src)| src);
        return Err(invalid(
            "gssencmode",
            "require",
            src,
            "GSSAPI encryption is not supported by pgstream; use \"disable\" or \"prefer\" (and \
             sslmode for encryption)",
        ));
    }
    if let Some("direct") = s.one_of("sslnegotiation", &["postgres", "direct"])? {
        let src = s
            .get("sslnegotiation")
            .map_or(Source::Conninfo, |(_, src)| src);
        return Err(invalid(
            "sslnegotiation",
            "direct",
            src,
            "direct TLS negotiation is not supported by pgstream; use \"postgres\"",
        ));
    }
    if let Some((user, _)) = s.get("requirepeer") {
        tracing::warn!(
            requirepeer = user,
            "requirepeer is not enforced by pgstream: the server process's OS user is not checked"
        );
    }
    Ok(())
}

fn sslmode(s: &Settings, system_roots: bool) -> Result<SslMode, ConfigError> {
    let mode = s.parse_enum("sslmode", SslMode::ALL)?;
    match (mode, system_roots) {
        (None, true) => Ok(SslMode::VerifyFull),
        (Some(m), true) if m != SslMode::VerifyFull => {
            let (v, src) = s.get("sslmode").unwrap_or((m.as_str(), Source::Conninfo));
            Err(invalid(
                "sslmode",
                v,
                src,
                "weak sslmode may not be used with sslrootcert=system (use \"verify-full\")",
            ))
        }
        (m, _) => Ok(m.unwrap_or_default()),
    }
}

fn tls_version(s: &Settings, key: &str) -> Result<Option<String>, ConfigError> {
    let Some((v, src)) = s.get(key) else {
        return Ok(None);
    };
    // libpq compares these case-insensitively.
    TLS_VERSIONS
        .iter()
        .find(|n| n.eq_ignore_ascii_case(v))
        .map(|n| Some(n.to_string()))
        .ok_or_else(|| invalid(key, v, src, valid_values(TLS_VERSIONS)))
}

fn check_tls_range(s: &Settings, config: &Config) -> Result<(), ConfigError> {
    let rank = |v: &Option<String>| {
        v.as_ref()
            .and_then(|v| TLS_VERSIONS.iter().position(|n| n == v))
    };
    if let (Some(min), Some(max)) = (
        rank(&config.ssl_min_protocol_version),
        rank(&config.ssl_max_protocol_version),
    ) {
        if min > max {
            let (v, src) = s
                .get("ssl_max_protocol_version")
                .unwrap_or(("", Source::Conninfo));
            return Err(invalid(
                "ssl_max_protocol_version",
                v,
                src,
                "lower than ssl_min_protocol_version",
            ));
        }
    }
    Ok(())
}

/// libpq: values <= 0 mean no timeout, and 1 is raised to 2 seconds.
fn connect_timeout(s: &Settings) -> Result<Option<Duration>, ConfigError> {
    Ok(match s.int("connect_timeout")? {
        Some(t) if t > 0 => Some(Duration::from_secs(t.max(2) as u64)),
        _ => None,
    })
}

/// The server's hybrid setting: a boolean (PostgreSQL's `parse_bool`) or `database`.
fn replication(s: &Settings) -> Result<ReplicationMode, ConfigError> {
    let Some((v, src)) = s.get("replication") else {
        return Ok(ReplicationMode::Off);
    };
    if v == "database" {
        return Err(invalid(
            "replication",
            v,
            src,
            "logical replication (replication=database) is not supported by pgstream, which \
             takes physical backups; use replication=true or leave it unset",
        ));
    }
    match parse_bool(v) {
        Some(true) => Ok(ReplicationMode::Physical),
        Some(false) => Ok(ReplicationMode::Off),
        None => Err(invalid(
            "replication",
            v,
            src,
            "valid values are \"true\", \"on\", \"yes\", \"1\", \"false\", \"off\", \"no\", \"0\"",
        )),
    }
}

/// PostgreSQL's `parse_bool`: case-insensitive unique prefixes of true/false/yes/no, on/off
/// (at least two letters), or exactly 1/0.
fn parse_bool(v: &str) -> Option<bool> {
    let lower = v.to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| lower.len() >= min && word.starts_with(&lower);
    if prefix_of("true", 1) || prefix_of("yes", 1) || prefix_of("on", 2) || v == "1" {
        Some(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || v == "0" {
        Some(false)
    } else {
        None
    }
}

/// libpq's multi-host rules: `hostaddr`, else `host`, sets the number of targets; the other
/// list must match it; one port serves all hosts, otherwise one per host; empty entries take
/// the defaults.
fn targets(s: &Settings) -> Result<Vec<Target>, ConfigError> {
    let hosts: Option<Vec<&str>> = s.get("host").map(|(v, _)| v.split(',').collect());
    let addrs: Option<Vec<&str>> = s.get("hostaddr").map(|(v, _)| v.split(',').collect());
    let count = match (&hosts, &addrs) {
        (Some(h), Some(a)) if h.len() != a.len() => {
            return Err(ConfigError::Other(format!(
                "could not match {} host names to {} hostaddr values{}{}",
                h.len(),
                a.len(),
                s.get("host").map_or(Source::Conninfo, |(_, src)| src),
                s.get("hostaddr").map_or(Source::Conninfo, |(_, src)| src),
            )))
        }
        (_, Some(a)) => a.len(),
        (Some(h), None) => h.len(),
        (None, None) => 1,
    };
    let ports: Vec<&str> = match s.get("port") {
        None => vec![""; count],
        Some((v, _)) if !v.contains(',') => vec![v; count],
        Some((v, src)) => {
            let ports: Vec<&str> = v.split(',').collect();
            if ports.len() != count {
                return Err(ConfigError::Other(format!(
                    "could not match {} port numbers to {count} hosts{src}: give one port for \
                     all hosts or one per host",
                    ports.len()
                )));
            }
            ports
        }
    };
    let port_src = s.get("port").map_or(Source::Conninfo, |(_, src)| src);
    let addr_src = s.get("hostaddr").map_or(Source::Conninfo, |(_, src)| src);
    let entry = |list: &Option<Vec<&'_ str>>, i: usize| -> Option<String> {
        list.as_ref()
            .and_then(|l| l.get(i))
            .filter(|e| !e.is_empty())
            .map(|e| e.to_string())
    };
    let mut out = Vec::with_capacity(count);
    for (i, port_text) in ports.iter().enumerate() {
        let port = parse_port(port_text, port_src)?;
        let hostaddr = entry(&addrs, i);
        if let Some(addr) = &hostaddr {
            check_hostaddr(addr, addr_src)?;
        }
        // With a hostaddr libpq connects over TCP even if host names a socket directory.
        let host = match (entry(&hosts, i), &hostaddr) {
            (Some(h), None) if h.starts_with('/') || h.starts_with('@') => Host::Unix(h.into()),
            (Some(h), _) => Host::Tcp(h),
            (None, Some(addr)) => Host::Tcp(addr.clone()),
            (None, None) => Host::Unix(default_socket_dir()),
        };
        if let Host::Unix(dir) = &host {
            let len = dir.as_os_str().len() + format!("/.s.PGSQL.{port}").len();
            if len > MAX_SOCKET_PATH {
                return Err(invalid(
                    "host",
                    &dir.to_string_lossy(),
                    s.get("host").map_or(Source::Conninfo, |(_, src)| src),
                    format!(
                        "the Unix-socket path would be {len} bytes long, over the limit of \
                         {MAX_SOCKET_PATH}"
                    ),
                ));
            }
        }
        out.push(Target {
            host,
            hostaddr,
            port,
        });
    }
    Ok(out)
}

fn parse_port(text: &str, src: Source) -> Result<u16, ConfigError> {
    if text.is_empty() {
        return Ok(DEFAULT_PORT);
    }
    let trimmed = text.trim_matches(|c: char| c.is_ascii() && is_space(c as u8));
    match trimmed.parse::<i64>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(invalid(
            "port",
            text,
            src,
            "a port must be an integer from 1 to 65535",
        )),
    }
}

/// libpq resolves hostaddr numerically only (`AI_NUMERICHOST`), IPv6 zone suffix allowed.
fn check_hostaddr(addr: &str, src: Source) -> Result<(), ConfigError> {
    let ip = addr.split('%').next().unwrap_or(addr);
    let ok = match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => true,
        Ok(IpAddr::V4(_)) => !addr.contains('%'),
        Err(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "hostaddr",
            addr,
            src,
            "hostaddr must be a numeric IPv4 or IPv6 address; put host names in \"host\"",
        ))
    }
}

/// `load_balance_hosts=random`: a Fisher-Yates shuffle seeded by std's per-process random keys.
fn shuffle(targets: &mut [Target]) {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    for i in (1..targets.len()).rev() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        let j = (h.finish() % (i as u64 + 1)) as usize;
        targets.swap(i, j);
    }
}
