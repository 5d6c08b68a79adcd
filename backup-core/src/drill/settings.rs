//! The server settings a drill overrides on the command line (`-c`, which outranks
//! postgresql.conf and postgresql.auto.conf), so that the restored copy cannot reach outside its
//! scratch directory or act on the production system: no archiving into the real repository,
//! no commands from the source's configuration, no replication connection to the primary, no
//! files at absolute paths of the source host, and no waiting for synchronous standbys that
//! will never connect.

use std::path::Path;

/// The `-c` settings for a drill server of `major` whose data directory is `data_dir`, with
/// `hba_file` the drill's own pg_hba.conf. `extra` (the user's `--server-setting`) come last
/// and win.
pub fn overrides(
    major: u32,
    data_dir: &Path,
    hba_file: &Path,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut s: Vec<(String, String)> = vec![
        // A data_directory in the restored postgresql.conf would point at the original one.
        ("data_directory", data_dir.display().to_string()),
        ("hba_file", hba_file.display().to_string()),
        // The identity map of the source may name files or users of another host.
        (
            "ident_file",
            hba_file
                .with_file_name("pg_ident.drill.conf")
                .display()
                .to_string(),
        ),
        // Inside the scratch directory: an empty value makes 13 complain that it cannot write "".
        (
            "external_pid_file",
            hba_file
                .with_file_name("postmaster.external.pid")
                .display()
                .to_string(),
        ),
        // Never archive the drill's new timeline into the production repository.
        ("archive_mode", "off".into()),
        ("archive_cleanup_command", String::new()),
        ("recovery_end_command", String::new()),
        ("primary_conninfo", String::new()),
        ("primary_slot_name", String::new()),
        ("synchronous_standby_names", String::new()),
        // The copy's subscriptions would start apply workers on promotion and connect to the
        // production publisher with their stored conninfo, consuming (and confirming) changes
        // from the real subscriber's slot. 0 keeps the launcher from starting at all, and is
        // not one of the settings hot standby requires to be at least the primary's.
        ("max_logical_replication_workers", "0".into()),
        // pg_cron 1.6+ (a placeholder otherwise): the source's scheduled jobs would run on the
        // promoted copy, and a job with another host as its node connects there.
        ("cron.launch_active_jobs", "off".into()),
        ("hot_standby", "on".into()),
        ("ssl", "off".into()),
        // The source's socket group may not exist here; the socket stays the server user's.
        ("unix_socket_group", String::new()),
        ("unix_socket_permissions", "0700".into()),
        ("logging_collector", "off".into()),
        ("log_destination", "stderr".into()),
        ("cluster_name", "pgstream-drill".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if major <= 14 {
        // Removed in 15; an absolute path of the source host otherwise.
        s.push(("stats_temp_directory".into(), "pg_stat_tmp".into()));
    }
    if major <= 15 {
        // Removed in 16.
        s.push(("promote_trigger_file".into(), String::new()));
    }
    s.extend(extra.iter().cloned());
    s
}

/// The drill's pg_hba.conf: Unix-socket connections only (the socket directory is private to
/// the server's user), trusted; every TCP connection is refused.
pub const DRILL_HBA: &str =
    "# pgstream drill: only local connections through the private socket directory.\n\
local all all trust\n";

/// Parses a `--server-setting NAME=VALUE`.
pub fn parse_setting(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("--server-setting {text:?}: expected NAME=VALUE"))?;
    let name = name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(format!(
            "--server-setting {text:?}: {name:?} is not a setting name"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(s: &'a [(String, String)], k: &str) -> Option<&'a str> {
        s.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_drill_never_archives_or_runs_the_sources_commands() {
        let s = overrides(16, Path::new("/s/data"), Path::new("/s/hba.conf"), &[]);
        assert_eq!(get(&s, "archive_mode"), Some("off"));
        assert_eq!(get(&s, "archive_cleanup_command"), Some(""));
        assert_eq!(get(&s, "recovery_end_command"), Some(""));
        assert_eq!(get(&s, "primary_conninfo"), Some(""));
        assert_eq!(get(&s, "synchronous_standby_names"), Some(""));
        assert_eq!(get(&s, "data_directory"), Some("/s/data"));
        assert_eq!(get(&s, "hba_file"), Some("/s/hba.conf"));
        assert_eq!(get(&s, "ident_file"), Some("/s/pg_ident.drill.conf"));
        assert_eq!(
            get(&s, "external_pid_file"),
            Some("/s/postmaster.external.pid")
        );
        assert_eq!(get(&s, "stats_temp_directory"), None);
        assert_eq!(get(&s, "promote_trigger_file"), None);
    }

    #[test]
    fn a_drill_never_starts_subscription_workers_or_cron_jobs_that_would_reach_production() {
        for major in 13..=18 {
            let s = overrides(major, Path::new("/d"), Path::new("/h"), &[]);
            assert_eq!(get(&s, "max_logical_replication_workers"), Some("0"));
            assert_eq!(get(&s, "cron.launch_active_jobs"), Some("off"));
        }
    }

    #[test]
    fn settings_removed_in_later_majors_are_only_set_where_they_exist() {
        let s13 = overrides(13, Path::new("/d"), Path::new("/h"), &[]);
        assert_eq!(get(&s13, "stats_temp_directory"), Some("pg_stat_tmp"));
        assert_eq!(get(&s13, "promote_trigger_file"), Some(""));
        let s15 = overrides(15, Path::new("/d"), Path::new("/h"), &[]);
        assert_eq!(get(&s15, "stats_temp_directory"), None);
        assert_eq!(get(&s15, "promote_trigger_file"), Some(""));
    }

    #[test]
    fn user_settings_come_last_and_win() {
        let extra = vec![parse_setting("shared_buffers=64MB").unwrap()];
        let s = overrides(16, Path::new("/d"), Path::new("/h"), &extra);
        assert_eq!(s.last().unwrap(), &("shared_buffers".into(), "64MB".into()));
        assert!(parse_setting("nonsense").is_err());
        assert!(parse_setting("bad name=1").is_err());
        assert_eq!(
            parse_setting("shared_preload_libraries=").unwrap(),
            ("shared_preload_libraries".into(), String::new())
        );
    }
}
