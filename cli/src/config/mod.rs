//! The configuration file (`/etc/pgstream/pgstream.toml`, `--config FILE`, `PGSTREAM_CONFIG`).
//!
//! Keys are named like the long options. Top-level keys apply to every cluster; a
//! `[cluster.NAME]` section, chosen with `--cluster NAME` (or `PGSTREAM_CLUSTER`), adds to and
//! overrides them. Each value becomes the default of every option of that name before the
//! command line is parsed, so clap itself gives the precedence: flags, then environment
//! variables, then the file, then built-in defaults; and the value goes through the option's
//! own parser, so a bad value is reported with the file, line and key before any command runs.

mod apply;
mod file;
mod keys;
pub mod show;

use std::ffi::OsString;
use std::path::PathBuf;

pub use apply::apply;
pub use file::{Entry, FileValue};

/// Where the file is looked for when neither --config nor PGSTREAM_CONFIG names one.
pub const DEFAULT_PATH: &str = "/etc/pgstream/pgstream.toml";

/// A problem with the configuration file: exit code 2, naming the file, line and key.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "configuration file {}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ", key {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Where a choice (file or cluster) came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Flag(&'static str),
    Environment(&'static str),
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag(name) => f.write_str(name),
            Origin::Environment(v) => write!(f, "environment {v}"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// The file and cluster asked for, read from argv before clap parses it (the file decides
/// what the parser's defaults are).
#[derive(Clone, Debug)]
pub struct Selection {
    pub path: PathBuf,
    pub path_origin: Origin,
    pub cluster: Option<(String, Origin)>,
}

impl Selection {
    pub fn from_args(argv: &[OsString]) -> Selection {
        let flag = |name: &str| flag_value(argv, name);
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let (path, path_origin) = match (flag("--config"), env("PGSTREAM_CONFIG")) {
            (Some(p), _) => (PathBuf::from(p), Origin::Flag("--config")),
            (None, Some(p)) => (PathBuf::from(p), Origin::Environment("PGSTREAM_CONFIG")),
            (None, None) => (PathBuf::from(DEFAULT_PATH), Origin::Default),
        };
        let cluster = match (flag("--cluster"), env("PGSTREAM_CLUSTER")) {
            (Some(c), _) => Some((c.to_string_lossy().into_owned(), Origin::Flag("--cluster"))),
            (None, Some(c)) => Some((
                c.to_string_lossy().into_owned(),
                Origin::Environment("PGSTREAM_CLUSTER"),
            )),
            (None, None) => None,
        };
        Selection {
            path,
            path_origin,
            cluster,
        }
    }
}

/// The value of `--name VALUE` or `--name=VALUE` (the last one given), before `--`.
fn flag_value(argv: &[OsString], name: &str) -> Option<OsString> {
    let mut found = None;
    let mut args = argv.iter().skip(1);
    let prefix = format!("{name}=");
    while let Some(arg) = args.next() {
        let Some(a) = arg.to_str() else { continue };
        if a == "--" {
            break;
        }
        if a == name {
            found = args.next().cloned();
        } else if let Some(v) = a.strip_prefix(&prefix) {
            found = Some(OsString::from(v));
        }
    }
    found
}

/// The settings that apply to this run: the top level, overridden by the chosen cluster.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub selection: Selection,
    /// Whether a file was read (the default path may not exist).
    pub file_read: bool,
    pub entries: Vec<Entry>,
    /// Every entry of the file, all sections (checked against the options' parsers).
    pub all_entries: Vec<Entry>,
}

impl Loaded {
    /// The entry that applies for `key`, if the file sets it.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// Reads and checks the file `selection` names. A missing default file is no file; a missing
/// file named by --config or PGSTREAM_CONFIG, or an unknown cluster, is an error.
pub fn load(selection: Selection) -> Result<Loaded, ConfigError> {
    let path = selection.path.clone();
    let err = |message: String| ConfigError {
        path: path.clone(),
        line: None,
        key: None,
        message,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if selection.path_origin != Origin::Default {
                return Err(err(format!(
                    "does not exist (named by {}); create it, or name another",
                    selection.path_origin
                )));
            }
            None
        }
        Err(e) => return Err(err(format!("cannot be read: {e}"))),
    };
    let parsed = match &text {
        Some(t) => file::parse(&path, t)?,
        None => file::ParsedFile::default(),
    };
    let mut entries: Vec<Entry> = parsed
        .entries
        .iter()
        .filter(|e| e.cluster.is_none())
        .cloned()
        .collect();
    if let Some((name, origin)) = &selection.cluster {
        if !parsed.clusters.contains(name) {
            let known = if parsed.clusters.is_empty() {
                "it has no [cluster.NAME] section".to_string()
            } else {
                format!("its clusters are {}", parsed.clusters.join(", "))
            };
            let what = if text.is_some() {
                format!("has no [cluster.{name}] section ({origin} asked for it); {known}")
            } else {
                format!(
                    "does not exist, so it has no [cluster.{name}] ({origin} asked for it); \
                     create it or name one with --config"
                )
            };
            return Err(err(what));
        }
        for e in parsed
            .entries
            .iter()
            .filter(|e| e.cluster.as_deref() == Some(name.as_str()))
        {
            entries.retain(|t| t.key != e.key);
            entries.push(e.clone());
        }
    }
    Ok(Loaded {
        selection,
        file_read: text.is_some(),
        entries,
        all_entries: parsed.entries,
    })
}

#[cfg(test)]
mod tests;
