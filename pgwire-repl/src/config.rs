//! Connection settings: libpq conninfo strings, `postgresql://` URIs, PG* environment variables.
//!
//! Parsing follows libpq (`fe-connect.c`) closely so that a DBA's existing connection strings,
//! environment and `.pgpass` work unchanged. Differences, all deliberate:
//! - Options pgstream cannot honour but that only tune transport details are accepted, validated
//!   and ignored (see [`IGNORED_OPTIONS`]); options whose silent omission would weaken security
//!   or change the server we reach (`service`, `sslcrl`, `sslcrldir`, `require_auth`,
//!   `gssencmode=require`, `sslcertmode=require`, `sslnegotiation=direct`) are refused.
//! - `replication=database` (logical replication) is refused: pgstream is physical only.
//! - `dbname` is never expanded as a nested connection string.
//! - In URIs the user-info part ends at the first `/` *or* `?` (libpq only stops at `/`), so an
//!   `@` inside a query parameter is not mistaken for credentials.
//! - Error messages never quote the URI or a password, unlike libpq's.

mod resolve;
mod syntax;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_env;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use resolve::IGNORED_OPTIONS;

/// libpq's default port.
pub const DEFAULT_PORT: u16 = 5432;

/// A bad connection string or setting. Never contains a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid connection string: {0}")]
    Syntax(String),
    #[error("invalid value {value:?} for connection option {key:?}: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("unknown connection option {0:?}")]
    UnknownOption(String),
    #[error("{0}")]
    Other(String),
}

/// Where to connect: a TCP host name or address, or a Unix-socket directory.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Host {
    Tcp(String),
    /// The directory holding `.s.PGSQL.<port>`; a leading `@` means Linux's abstract namespace.
    Unix(PathBuf),
}

/// One host/port pair of a (possibly multi-host) connection string, tried in order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Target {
    /// Always `Tcp` when `hostaddr` is given (libpq then connects over TCP): the `host` text,
    /// or the address itself when only `hostaddr` was given, as libpq matches `.pgpass` on it.
    pub host: Host,
    /// `hostaddr`, when given: the address to connect to, while `host` is still used for
    /// certificate verification and .pgpass.
    pub hostaddr: Option<String>,
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Tcp(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Host::Tcp(h) => write!(f, "{h}:{}", self.port),
            Host::Unix(dir) => write!(f, "{}/.s.PGSQL.{}", dir.display(), self.port),
        }
    }
}

/// libpq's sslmode.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub enum SslMode {
    Disable,
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// libpq's target_session_attrs.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub enum TargetSessionAttrs {
    #[default]
    Any,
    ReadWrite,
    ReadOnly,
    Primary,
    Standby,
    PreferStandby,
}

/// libpq's channel_binding.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub enum ChannelBinding {
    Disable,
    #[default]
    Prefer,
    Require,
}

/// What kind of backend to start.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Default)]
pub enum ReplicationMode {
    /// An ordinary SQL session.
    #[default]
    Off,
    /// A physical walsender (`replication=true`).
    Physical,
}

/// Spells the enum values exactly as libpq's connection options do.
macro_rules! option_names {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every variant with its libpq spelling, in libpq's documentation order.
            pub const ALL: &'static [($ty, &'static str)] = &[$((<$ty>::$variant, $name)),+];

            /// The value as written in a connection string.
            pub fn as_str(self) -> &'static str {
                match self { $(<$ty>::$variant => $name),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

option_names!(SslMode {
    Disable => "disable",
    Allow => "allow",
    Prefer => "prefer",
    Require => "require",
    VerifyCa => "verify-ca",
    VerifyFull => "verify-full",
});
option_names!(TargetSessionAttrs {
    Any => "any",
    ReadWrite => "read-write",
    ReadOnly => "read-only",
    Primary => "primary",
    Standby => "standby",
    PreferStandby => "prefer-standby",
});
option_names!(ChannelBinding {
    Disable => "disable",
    Prefer => "prefer",
    Require => "require",
});
option_names!(ReplicationMode {
    Off => "false",
    Physical => "true",
});

/// Fully parsed connection settings. `Debug` never shows the password.
#[derive(Clone, Default)]
pub struct Config {
    pub targets: Vec<Target>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub dbname: Option<String>,
    /// The password file to consult: `passfile`, else `PGPASSFILE`, else `~/.pgpass` (filled in
    /// by parsing when the home directory is known).
    pub passfile: Option<PathBuf>,
    /// `application_name`, else `PGAPPNAME`, else `fallback_application_name`.
    pub application_name: Option<String>,
    pub options: Option<String>,
    pub sslmode: SslMode,
    /// The CA file, or the literal `system` for the system's trusted roots (see
    /// [`Config::uses_system_roots`]). Defaults to `~/.postgresql/root.crt` when that exists.
    pub sslrootcert: Option<PathBuf>,
    /// Defaults to `~/.postgresql/postgresql.crt` when that exists.
    pub sslcert: Option<PathBuf>,
    /// Defaults to `~/.postgresql/postgresql.key` when that exists.
    pub sslkey: Option<PathBuf>,
    pub channel_binding: ChannelBinding,
    pub connect_timeout: Option<Duration>,
    pub target_session_attrs: TargetSessionAttrs,
    pub replication: ReplicationMode,
    /// Passphrase for an encrypted `sslkey`. A secret, like `password`.
    pub sslpassword: Option<String>,
    /// `TLSv1`, `TLSv1.1`, `TLSv1.2` or `TLSv1.3`; `None` means libpq's default, `TLSv1.2`.
    pub ssl_min_protocol_version: Option<String>,
    /// Same spellings; `None` means no upper bound.
    pub ssl_max_protocol_version: Option<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("targets", &self.targets)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("channel_binding", &self.channel_binding)
            .field("target_session_attrs", &self.target_session_attrs)
            .field("replication", &self.replication)
            .finish_non_exhaustive()
    }
}

/// Shown instead of secrets by [`Config::redacted`].
pub const REDACTED: &str = "********";

impl Config {
    /// Parses a conninfo string or URI with libpq's built-in defaults, ignoring all PG*
    /// environment variables. Home-directory defaults (`~/.pgpass`, `~/.postgresql/*`) still
    /// apply, located through `$HOME`.
    pub fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(s, &|name| match name {
            "HOME" => std::env::var(name).ok(),
            _ => None,
        })
    }

    /// Parses `s`, then fills every option the string left unset from the environment as libpq
    /// does (PGHOST, PGPORT, PGUSER, ...). `env` also supplies `HOME` for file defaults.
    pub fn parse_with_env(
        s: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let pairs = syntax::pairs(s)?;
        resolve::resolve(pairs, env)
    }

    /// [`Config::parse_with_env`] with the process environment: what libpq's `PQconnectdb` does.
    pub fn from_str_with_process_env(s: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(s, &|name| std::env::var(name).ok())
    }

    /// The user name to log in as: the configured one, else the OS user.
    pub fn effective_user(&self) -> String {
        self.user
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "postgres".to_string())
    }

    /// The database name sent in the startup packet: the configured one, else the user name.
    pub fn effective_dbname(&self) -> String {
        self.dbname.clone().unwrap_or_else(|| self.effective_user())
    }

    /// Whether `sslrootcert=system`: verify against the system's trusted roots rather than a file.
    pub fn uses_system_roots(&self) -> bool {
        self.sslrootcert.as_deref() == Some(Path::new("system"))
    }

    /// Sets `application_name` unless the user already chose one, as libpq's
    /// `fallback_application_name` does for programs.
    pub fn with_fallback_application_name(mut self, name: &str) -> Config {
        if self.application_name.is_none() {
            self.application_name = Some(name.to_string());
        }
        self
    }

    /// The password for `target`: the explicit one (`password` or `PGPASSWORD`), else the
    /// matching `.pgpass` entry. Unreadable password files are logged and skipped, like libpq.
    pub fn password_for(&self, target: &Target) -> Option<String> {
        if let Some(p) = self.password.as_ref().filter(|p| !p.is_empty()) {
            return Some(p.clone());
        }
        let path = self
            .passfile
            .clone()
            .or_else(|| home_file(&|k| std::env::var(k).ok(), ".pgpass"))?;
        // libpq matches .pgpass on the host name when given, else on hostaddr.
        let host = match &target.host {
            Host::Tcp(h) => h.clone(),
            Host::Unix(dir) => dir.to_string_lossy().into_owned(),
        };
        let user = self.effective_user();
        // Physical walsenders have no database; .pgpass spells them "replication".
        let dbname = match self.replication {
            ReplicationMode::Physical => "replication".to_string(),
            ReplicationMode::Off => self.effective_dbname(),
        };
        match crate::pgpass::lookup(&path, &host, target.port, &dbname, &user) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("ignoring password file: {e}");
                None
            }
        }
    }

    /// The settings in conninfo form for logs, with secrets shown as `********`. Parsing the
    /// result gives back the same settings (apart from the secrets).
    pub fn redacted(&self) -> String {
        let mut out = Vec::new();
        let mut push = |key: &str, value: &str| out.push(format!("{key}={}", quote(value)));
        let hosts: Vec<String> = self
            .targets
            .iter()
            .map(|t| match &t.host {
                Host::Tcp(h) => h.clone(),
                Host::Unix(dir) => dir.to_string_lossy().into_owned(),
            })
            .collect();
        if !hosts.is_empty() {
            push("host", &hosts.join(","));
        }
        if self.targets.iter().any(|t| t.hostaddr.is_some()) {
            let addrs: Vec<&str> = self
                .targets
                .iter()
                .map(|t| t.hostaddr.as_deref().unwrap_or(""))
                .collect();
            push("hostaddr", &addrs.join(","));
        }
        if !self.targets.is_empty() {
            let ports: Vec<String> = self.targets.iter().map(|t| t.port.to_string()).collect();
            push("port", &ports.join(","));
        }
        let text = [
            ("user", &self.user),
            ("password", &self.password.as_ref().map(|_| REDACTED.into())),
            ("dbname", &self.dbname),
            ("application_name", &self.application_name),
            ("options", &self.options),
        ];
        for (key, value) in text {
            if let Some(v) = value {
                push(key, v);
            }
        }
        push("sslmode", self.sslmode.as_str());
        let paths = [
            ("passfile", &self.passfile),
            ("sslrootcert", &self.sslrootcert),
            ("sslcert", &self.sslcert),
            ("sslkey", &self.sslkey),
        ];
        for (key, value) in paths {
            if let Some(p) = value {
                push(key, &p.to_string_lossy());
            }
        }
        if self.sslpassword.is_some() {
            push("sslpassword", REDACTED);
        }
        for (key, value) in [
            ("ssl_min_protocol_version", &self.ssl_min_protocol_version),
            ("ssl_max_protocol_version", &self.ssl_max_protocol_version),
        ] {
            if let Some(v) = value {
                push(key, v);
            }
        }
        if self.channel_binding != ChannelBinding::default() {
            push("channel_binding", self.channel_binding.as_str());
        }
        if let Some(t) = self.connect_timeout {
            push("connect_timeout", &t.as_secs().to_string());
        }
        if self.target_session_attrs != TargetSessionAttrs::default() {
            push("target_session_attrs", self.target_session_attrs.as_str());
        }
        if self.replication != ReplicationMode::default() {
            push("replication", self.replication.as_str());
        }
        out.join(" ")
    }
}

/// Same as [`Config::redacted`], so that a `Config` can be logged directly.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Quotes a conninfo value when it needs it, with libpq's backslash escapes.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .bytes()
            .any(|b| syntax::is_space(b) || b == b'\'' || b == b'\\');
    if plain {
        return value.to_string();
    }
    let mut q = String::with_capacity(value.len() + 2);
    q.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('\'');
    q
}

/// The default Unix-socket directory: Debian's `/var/run/postgresql` when it exists, else the
/// upstream default `/tmp`. libpq's compiled-in `DEFAULT_PGSOCKET_DIR` is one of these.
pub fn default_socket_dir() -> PathBuf {
    let debian = Path::new("/var/run/postgresql");
    if debian.is_dir() {
        debian.to_path_buf()
    } else {
        PathBuf::from("/tmp")
    }
}

/// `$HOME/<name>`, as libpq locates `~/.pgpass` and `~/.postgresql/*` (HOME, when non-empty).
fn home_file(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<PathBuf> {
    let home = env("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(name))
}
