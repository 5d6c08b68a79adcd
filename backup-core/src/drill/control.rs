//! The settings hot standby needs at least as high as the source had them, read from the
//! restored `pg_control` with `pg_controldata`. Recovery refuses to start (FATAL "insufficient
//! parameter settings") when the copy's are lower, which is what a copy without the source's
//! postgresql.conf gets from the server's defaults: a cluster configured outside its data
//! directory, or started with `-c max_connections=...`.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::localpg::{PgBin, RunAs};

/// `pg_controldata` labels and the settings they record.
const REQUIRED: [(&str, &str); 5] = [
    ("max_connections setting", "max_connections"),
    ("max_worker_processes setting", "max_worker_processes"),
    ("max_wal_senders setting", "max_wal_senders"),
    ("max_prepared_xacts setting", "max_prepared_transactions"),
    ("max_locks_per_xact setting", "max_locks_per_transaction"),
];

/// The required settings in `pg_controldata`'s output (C locale), as `-c` pairs.
pub fn required_settings(controldata: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in controldata.lines() {
        let Some((label, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if let Some((_, setting)) = REQUIRED.iter().find(|(l, _)| *l == label.trim()) {
            if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                out.push((setting.to_string(), value.to_string()));
            }
        }
    }
    out
}

/// The required settings of the restored `data` directory, or why they could not be read (the
/// drill then goes on with the copy's configuration).
pub fn read(bin: &PgBin, run_as: &RunAs, data: &Path) -> Result<Vec<(String, String)>, String> {
    let program = bin.program("pg_controldata");
    if !program.is_file() {
        return Err(format!("{} is not installed", program.display()));
    }
    let mut cmd = Command::new(&program);
    cmd.arg(data)
        .env("LC_ALL", "C")
        .env_remove("PGDATA")
        .stdin(Stdio::null());
    run_as.apply(&mut cmd);
    let out = cmd
        .output()
        .map_err(|e| format!("running {}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(required_settings(&String::from_utf8_lossy(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_without_the_sources_configuration_gets_the_settings_recovery_requires() {
        let text = "pg_control version number:            1300\n\
                    wal_level setting:                    replica\n\
                    max_connections setting:              250\n\
                    max_worker_processes setting:         16\n\
                    max_wal_senders setting:              10\n\
                    max_prepared_xacts setting:           5\n\
                    max_locks_per_xact setting:           128\n\
                    track_commit_timestamp setting:       off\n";
        let pairs: Vec<(&str, &str)> = vec![
            ("max_connections", "250"),
            ("max_worker_processes", "16"),
            ("max_wal_senders", "10"),
            ("max_prepared_transactions", "5"),
            ("max_locks_per_transaction", "128"),
        ];
        let got = required_settings(text);
        let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, pairs);
        assert!(required_settings("max_connections setting: lots\n").is_empty());
        assert!(required_settings("").is_empty());
    }
}
