//! Writing a test cluster's configuration: the harness's own settings file (included from
//! postgresql.conf, so it wins over what initdb wrote) and pg_hba.conf.

use std::fs;
use std::path::Path;

/// pg_hba.conf lines written after the test's own `.hba()` lines, unless `.replace_hba()`.
pub const DEFAULT_HBA: [&str; 5] = [
    "local all all trust",
    "host all all 127.0.0.1/32 trust",
    "host all all ::1/128 trust",
    "host replication all 127.0.0.1/32 trust",
    "local replication all trust",
];

/// The file, inside the data directory, holding the harness's settings.
pub const HARNESS_CONF: &str = "pgstream_harness.conf";

/// Settings every test cluster starts with (before TLS and the test's own settings).
pub fn default_settings() -> Vec<(String, String)> {
    [
        ("listen_addresses", "127.0.0.1"),
        ("wal_level", "replica"),
        ("max_wal_senders", "10"),
        ("max_replication_slots", "10"),
        // Durability stays on: backup tests check what survives a crash.
        ("fsync", "on"),
        ("logging_collector", "off"),
        ("log_destination", "stderr"),
        ("log_line_prefix", "%m [%p] %q%u@%d "),
        ("log_replication_commands", "on"),
        ("ssl", "off"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Sets `key` to `value`, replacing an earlier value so the list stays one entry per key.
pub fn set(settings: &mut Vec<(String, String)>, key: &str, value: &str) {
    match settings.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => settings.push((key.to_string(), value.to_string())),
    }
}

/// `value` as a postgresql.conf literal: quoted unless the caller already quoted it.
pub fn quote(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// Writes the harness settings file and makes postgresql.conf include it (once).
pub fn write_settings(data_dir: &Path, settings: &[(String, String)]) {
    let mut text = String::from("# Written by pgstream's test harness; rewritten on each start.\n");
    for (key, value) in settings {
        text.push_str(&format!("{key} = {}\n", quote(value)));
    }
    let path = data_dir.join(HARNESS_CONF);
    fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));

    let main = data_dir.join("postgresql.conf");
    let current =
        fs::read_to_string(&main).unwrap_or_else(|e| panic!("cannot read {}: {e}", main.display()));
    let include = format!("include = '{HARNESS_CONF}'");
    if !current.lines().any(|line| line.trim() == include) {
        fs::write(&main, format!("{current}\n{include}\n"))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", main.display()));
    }
}

/// The pg_hba.conf lines: the test's, then the defaults, or only `replace` when given.
pub fn hba_lines(prepend: &[String], replace: Option<&[String]>) -> Vec<String> {
    match replace {
        Some(lines) => lines.to_vec(),
        None => prepend
            .iter()
            .cloned()
            .chain(DEFAULT_HBA.iter().map(|l| l.to_string()))
            .collect(),
    }
}

/// Overwrites pg_hba.conf.
pub fn write_hba(data_dir: &Path, lines: &[String]) {
    let path = data_dir.join("pg_hba.conf");
    let mut text = String::from("# Written by pgstream's test harness.\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_values_once() {
        assert_eq!(quote("replica"), "'replica'");
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(quote("'already'"), "'already'");
    }

    #[test]
    fn later_settings_replace_earlier() {
        let mut s = default_settings();
        set(&mut s, "fsync", "off");
        set(&mut s, "wal_keep_size", "64MB");
        assert_eq!(s.iter().filter(|(k, _)| k == "fsync").count(), 1);
        assert!(s.contains(&("fsync".into(), "off".into())));
        assert_eq!(s.last().unwrap().0, "wal_keep_size");
    }

    #[test]
    fn hba_prepends_or_replaces() {
        let lines = hba_lines(&["hostssl all all 127.0.0.1/32 cert".into()], None);
        assert_eq!(lines[0], "hostssl all all 127.0.0.1/32 cert");
        assert_eq!(lines.len(), 1 + DEFAULT_HBA.len());
        let only = vec!["local all all trust".to_string()];
        assert_eq!(hba_lines(&lines, Some(&only)), only);
    }
}
