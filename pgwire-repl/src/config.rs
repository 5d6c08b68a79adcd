//! Connection settings: libpq conninfo strings, `postgresql://` URIs, PG* environment variables.
//!
//! SKELETON: the types are final; parsing is being completed (see the helper task).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

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
    /// The directory holding `.s.PGSQL.<port>`.
    Unix(PathBuf),
}

/// One host/port pair of a (possibly multi-host) connection string, tried in order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Target {
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

/// Fully parsed connection settings. `Debug` never shows the password.
#[derive(Clone, Default)]
pub struct Config {
    pub targets: Vec<Target>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub dbname: Option<String>,
    pub passfile: Option<PathBuf>,
    pub application_name: Option<String>,
    pub options: Option<String>,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub channel_binding: ChannelBinding,
    pub connect_timeout: Option<Duration>,
    pub target_session_attrs: TargetSessionAttrs,
    pub replication: ReplicationMode,
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

impl Config {
    /// The user name to log in as: the configured one, else the OS user.
    pub fn effective_user(&self) -> String {
        self.user
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "postgres".to_string())
    }
}
