//! The keys a configuration file may hold: each is named like the long option it sets, and
//! applies to every command that has that option.

/// The TOML type a key takes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A string (paths, conninfo, durations such as "7d").
    Str,
    /// A non-negative integer.
    Int,
    /// `true` or `false`: `true` turns the flag on (a flag on in the file cannot be turned off
    /// on the command line; use another cluster section).
    Bool,
    /// An array of strings, for a repeatable option.
    StrList,
    /// A string or an integer (`max-rate = 500` or `max-rate = "20M"`).
    StrOrInt,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Int => "an integer",
            Kind::Bool => "true or false",
            Kind::StrList => "an array of strings",
            Kind::StrOrInt => "a string or an integer",
        }
    }
}

/// One key of the file.
#[derive(Copy, Clone, Debug)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
}

const fn key(name: &'static str, kind: Kind) -> Key {
    Key { name, kind }
}

/// Every key, in the order `config show` prints them.
pub const KEYS: &[Key] = &[
    // Every command.
    key("log-level", Kind::Str),
    key("log-format", Kind::Str),
    // The server and the repository.
    key("source", Kind::Str),
    key("repo", Kind::Str),
    key("passphrase-file", Kind::Str),
    key("s3-credentials-file", Kind::Str),
    // init.
    key("compression", Kind::Str),
    key("encryption", Kind::Str),
    // base.
    key("checkpoint", Kind::Str),
    key("max-rate", Kind::StrOrInt),
    key("server-compression", Kind::Str),
    key("no-verify-checksums", Kind::Bool),
    key("no-progress", Kind::Bool),
    // receive-wal (slot also for status and check).
    key("slot", Kind::Str),
    key("create-slot", Kind::Bool),
    key("synchronous", Kind::Bool),
    key("application-name", Kind::Str),
    key("status-interval", Kind::Int),
    key("no-reconnect", Kind::Bool),
    key("metrics-listen", Kind::Str),
    // expire: retention.
    key("keep-last", Kind::Int),
    key("keep-within", Kind::Str),
    // copy: the offsite repository (copy's --from is the cluster's repo).
    key("to", Kind::Str),
    key("to-passphrase-file", Kind::Str),
    // wal-fetch: the prefetch spool.
    key("spool-dir", Kind::Str),
    key("prefetch", Kind::Int),
    // status: thresholds.
    key("warn-backup-age", Kind::Str),
    key("crit-backup-age", Kind::Str),
    key("warn-wal-age", Kind::Str),
    key("crit-wal-age", Kind::Str),
    key("verify-report", Kind::Str),
    key("drill-report", Kind::Str),
    // drill.
    key("pg-bin", Kind::Str),
    key("os-user", Kind::Str),
    key("scratch", Kind::Str),
    key("check-sql", Kind::Str),
    key("check-db", Kind::Str),
    key("db-user", Kind::Str),
    key("server-setting", Kind::StrList),
    key("timeout", Kind::Str),
];

/// Names that would put a secret in the file. The file is read by every command and often
/// readable by others: secrets belong in a 0600 file or the environment.
pub const SECRET_KEYS: &[(&str, &str)] = &[
    (
        "passphrase",
        "name a 0600 file holding it with passphrase-file, or set PGSTREAM_PASSPHRASE",
    ),
    (
        "new-passphrase",
        "use rekey --new-passphrase-file or PGSTREAM_NEW_PASSPHRASE",
    ),
    (
        "password",
        "put the server password in PGPASSWORD or a .pgpass file (or passfile= in source)",
    ),
    (
        "sslpassword",
        "leave the client key unencrypted with mode 0600, or enter its passphrase by hand",
    ),
];

pub fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

pub fn secret_advice(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase().replace('_', "-");
    SECRET_KEYS
        .iter()
        .find(|(k, _)| *k == lower)
        .map(|(_, advice)| *advice)
}
