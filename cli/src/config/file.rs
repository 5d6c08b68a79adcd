//! Reading the configuration file: TOML, top-level keys for every cluster and `[cluster.NAME]`
//! sections, each value with the line it is on.

use std::path::Path;

use toml_edit::{ImDocument, Item, TableLike, Value};

use super::keys::{self, Kind};
use super::ConfigError;

/// A value as written in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileValue {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<String>),
}

impl FileValue {
    /// The command-line spelling(s) of the value.
    pub fn as_args(&self) -> Vec<String> {
        match self {
            FileValue::Str(s) => vec![s.clone()],
            FileValue::Int(i) => vec![i.to_string()],
            FileValue::Bool(b) => vec![b.to_string()],
            FileValue::List(l) => l.clone(),
        }
    }
}

/// One setting in the file.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: &'static str,
    pub value: FileValue,
    pub line: usize,
    /// `None`: the top level (every cluster); else the cluster's name.
    pub cluster: Option<String>,
}

impl Entry {
    pub fn section(&self) -> String {
        match &self.cluster {
            Some(c) => format!("[cluster.{c}]"),
            None => "the top level".to_string(),
        }
    }
}

/// The parsed file: every entry of every section (all checked), in file order.
#[derive(Clone, Debug, Default)]
pub struct ParsedFile {
    pub entries: Vec<Entry>,
    pub clusters: Vec<String>,
}

pub fn parse(path: &Path, text: &str) -> Result<ParsedFile, ConfigError> {
    let err = |line: Option<usize>, key: Option<String>, message: String| ConfigError {
        path: path.to_path_buf(),
        line,
        key,
        message,
    };
    let doc = ImDocument::parse(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        // The parser's message names the line and column itself; keep its last line (what).
        let what = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
        err(line, None, format!("not valid TOML: {what}"))
    })?;
    let mut out = ParsedFile::default();
    let line_at = |k: &toml_edit::Key, item: &Item| {
        k.span()
            .or_else(|| item.span())
            .map(|s| line_of(text, s.start))
    };
    let root = doc.as_table();
    for (name, _) in root.iter() {
        let (k, item) = root.get_key_value(name).expect("iterated");
        let line = line_at(k, item);
        if name == "cluster" {
            let Some(clusters) = item.as_table_like() else {
                return Err(err(
                    line,
                    Some(name.to_string()),
                    "must be a table of cluster sections: [cluster.NAME]".to_string(),
                ));
            };
            for (cname, _) in clusters.iter() {
                let (ck, citem) = clusters.get_key_value(cname).expect("iterated");
                let Some(section) = citem.as_table_like() else {
                    return Err(err(
                        line_at(ck, citem),
                        Some(format!("cluster.{cname}")),
                        "must be a section of settings: [cluster.NAME]".to_string(),
                    ));
                };
                out.clusters.push(cname.to_string());
                read_section(path, text, section, Some(cname), &mut out.entries)?;
            }
            continue;
        }
        if item.is_table_like() && keys::find(name).is_none() {
            return Err(err(
                line,
                Some(name.to_string()),
                format!(
                    "unknown section [{name}]; settings go at the top level (every cluster) or \
                     in [cluster.NAME]"
                ),
            ));
        }
        read_one(path, text, k, item, None, &mut out.entries)?;
    }
    Ok(out)
}

fn read_section(
    path: &Path,
    text: &str,
    section: &dyn TableLike,
    cluster: Option<&str>,
    entries: &mut Vec<Entry>,
) -> Result<(), ConfigError> {
    for (name, _) in section.iter() {
        let (k, item) = section.get_key_value(name).expect("iterated");
        read_one(path, text, k, item, cluster, entries)?;
    }
    Ok(())
}

fn read_one(
    path: &Path,
    text: &str,
    k: &toml_edit::Key,
    item: &Item,
    cluster: Option<&str>,
    entries: &mut Vec<Entry>,
) -> Result<(), ConfigError> {
    let name = k.get();
    let line = k
        .span()
        .or_else(|| item.span())
        .map(|s| line_of(text, s.start));
    let err = |message: String| ConfigError {
        path: path.to_path_buf(),
        line,
        key: Some(name.to_string()),
        message,
    };
    if let Some(advice) = keys::secret_advice(name) {
        return Err(err(format!(
            "secrets are never written in the configuration file (every command reads it, \
             and it is often readable by others): {advice}"
        )));
    }
    let Some(key) = keys::find(name) else {
        let near = keys::KEYS
            .iter()
            .find(|k| k.name.replace('-', "_") == name || k.name == name.to_ascii_lowercase())
            .map(|k| format!(" (did you mean {}?)", k.name))
            .unwrap_or_default();
        return Err(err(format!(
            "unknown key{near}; keys are named like the long options: {}",
            keys::KEYS
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let wrong = |found: &str| err(format!("must be {}, not {found}", key.kind.describe()));
    let value = match item {
        Item::Value(v) => v,
        Item::Table(_) | Item::ArrayOfTables(_) => return Err(wrong("a table")),
        Item::None => return Ok(()),
    };
    let value = match (key.kind, value) {
        (Kind::Str | Kind::StrOrInt, Value::String(s)) => FileValue::Str(s.value().clone()),
        (Kind::Int | Kind::StrOrInt, Value::Integer(i)) if *i.value() >= 0 => {
            FileValue::Int(*i.value())
        }
        (Kind::Int | Kind::StrOrInt, Value::Integer(_)) => return Err(wrong("a negative number")),
        (Kind::Bool, Value::Boolean(b)) => FileValue::Bool(*b.value()),
        (Kind::StrList, Value::Array(a)) => {
            let mut list = Vec::new();
            for v in a.iter() {
                match v.as_str() {
                    Some(s) => list.push(s.to_string()),
                    None => return Err(wrong(&format!("an array holding {}", type_name(v)))),
                }
            }
            FileValue::List(list)
        }
        (Kind::StrList, Value::String(s)) => FileValue::List(vec![s.value().clone()]),
        (_, other) => return Err(wrong(type_name(other))),
    };
    entries.push(Entry {
        key: key.name,
        value,
        line: line.unwrap_or(0),
        cluster: cluster.map(str::to_string),
    });
    Ok(())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}

/// The 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
