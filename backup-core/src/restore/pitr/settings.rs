//! The recovery settings a point-in-time restore writes into the restored
//! `postgresql.auto.conf`: `restore_command` (running `pgstream wal-fetch`) and the
//! `recovery_target*` settings, with any stale ones from the source disabled or overridden.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{PitrError, Recovery, RecoveryTarget, TargetAction, TargetTimeline, DEFAULT_SPOOL_DIR};
use crate::catalog::BackupRecord;
use crate::fsutil::{self, FsError};
use crate::repo::Repository;

/// Quotes `s` for /bin/sh (restore_command runs through the shell).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Quotes `s` as a postgresql.conf string literal.
pub fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

pub(super) fn restore_command(repo: &Repository, r: &Recovery) -> String {
    if r.copy_wal {
        // Every segment is in pg_wal/; a failing command makes the server read it from there.
        return "false".into();
    }
    // The server runs the command in its data directory: a relative path would not reach us.
    let location = repo.location().absolute().to_string();
    let mut cmd = format!(
        "{} wal-fetch --repo {}",
        shell_quote(&r.program.to_string_lossy()),
        shell_quote(&location)
    );
    if let Some(p) = &r.passphrase_file {
        cmd.push_str(&format!(
            " --passphrase-file {}",
            shell_quote(&p.to_string_lossy())
        ));
    }
    let spool = r
        .spool_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL_DIR));
    cmd.push_str(&format!(
        " --spool-dir {}",
        shell_quote(&spool.to_string_lossy())
    ));
    cmd.push_str(" %f %p");
    cmd
}

/// Settings that would conflict with ours: commented out in the restored postgresql.auto.conf
/// (a backup of a restored server carries its recovery settings).
fn is_recovery_setting(line: &str) -> bool {
    let key = line
        .trim_start()
        .split(|c: char| c == '=' || c.is_whitespace())
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    key == "restore_command" || key.starts_with("recovery_target")
}

/// The settings that name a recovery target; at most one may be set.
const TARGET_SETTINGS: [&str; 5] = [
    "recovery_target",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
];

pub(super) fn write_settings(
    target: &Path,
    record: &BackupRecord,
    r: &Recovery,
    restore_command: &str,
) -> Result<(), PitrError> {
    let path = target.join("postgresql.auto.conf");
    let existing = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(FsError::new("reading", &path, e).into()),
    };
    let mut out = String::new();
    for line in existing.lines() {
        if is_recovery_setting(line) {
            out.push_str("# disabled by pgstream restore: ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!(
        "# Recovery settings written by pgstream restore (backup {}, {}).\n",
        record.id,
        crate::catalog::rfc3339(SystemTime::now())
    ));
    let mut set = |k: &str, v: String| out.push_str(&format!("{k} = {v}\n"));
    set("restore_command", conf_quote(restore_command));
    let inclusive = Some(if r.inclusive { "on" } else { "off" }.to_string());
    let (key, value, with_inclusive) = match &r.target {
        RecoveryTarget::Latest => (None, String::new(), None),
        RecoveryTarget::Immediate => (Some("recovery_target"), conf_quote("immediate"), None),
        RecoveryTarget::Time(t) => (
            Some("recovery_target_time"),
            conf_quote(&t.postgres()),
            inclusive,
        ),
        RecoveryTarget::Lsn(l) => (
            Some("recovery_target_lsn"),
            conf_quote(&l.to_string()),
            inclusive,
        ),
        RecoveryTarget::Xid(x) => (
            Some("recovery_target_xid"),
            conf_quote(&x.to_string()),
            inclusive,
        ),
        RecoveryTarget::Name(n) => (Some("recovery_target_name"), conf_quote(n), None),
    };
    // A target left in the restored postgresql.conf (a server once recovered with its settings
    // there, which PostgreSQL ignores outside recovery) would otherwise count: with ours, FATAL
    // "multiple recovery targets specified"; without one, a silent stop at it. Empty values
    // here outrank it. They come before our target: PostgreSQL refuses any of them, even an
    // empty one, once another target is set.
    for other in TARGET_SETTINGS.iter().filter(|&&k| Some(k) != key) {
        set(other, "''".into());
    }
    if let Some(key) = key {
        set(key, value);
        // Explicit, for the same reason: the server's default unless asked otherwise.
        let action = r.action.unwrap_or(TargetAction::Pause);
        set("recovery_target_action", conf_quote(action.setting()));
    }
    if let Some(v) = with_inclusive {
        set("recovery_target_inclusive", v);
    }
    let timeline = match r.timeline {
        TargetTimeline::Latest => "latest".to_string(),
        TargetTimeline::Current => "current".to_string(),
        TargetTimeline::Number(n) => n.0.to_string(),
    };
    set("recovery_target_timeline", conf_quote(&timeline));
    fsutil::write_file_durably(&path, out.as_bytes(), 0o600)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgwire_repl::Lsn;

    #[test]
    fn quoting_survives_quotes_and_backslashes() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(conf_quote(r"a'b\c"), r"'a''b\\c'");
        assert!(is_recovery_setting("  Recovery_Target_Name = 'x'"));
        assert!(is_recovery_setting("restore_command='x'"));
        assert!(!is_recovery_setting("# restore_command = 'x'"));
        assert!(!is_recovery_setting("shared_buffers = 1MB"));
    }

    /// The restored postgresql.auto.conf for `target` and `action`, the source's being `existing`.
    fn settings_written(
        target: RecoveryTarget,
        action: Option<TargetAction>,
        existing: &str,
    ) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("postgresql.auto.conf"), existing).unwrap();
        let record: crate::catalog::BackupRecord = serde_json::from_str(
            r#"{"format":1,"id":"B","label":"","status":"complete","start_lsn":"0/2000028",
            "start_timeline":1,"end_lsn":"0/2000100","end_timeline":1,"start_time":"",
            "end_time":"","duration_seconds":0,"server_version":"16","server_major":16,
            "system_identifier":"1","wal_segment_size":16777216,"raw_bytes":0,
            "stored_bytes":0,"compression":"lz4","encryption":"none","archives":[],
            "manifest_file":"","files_verified":0,"wal_segments":[],"partial_wal_file":null,
            "history_files":[]}"#,
        )
        .unwrap();
        let r = Recovery {
            target,
            action,
            timeline: TargetTimeline::Latest,
            inclusive: true,
            copy_wal: true,
            passphrase_file: None,
            program: PathBuf::from("/bin/pgstream"),
            spool_dir: None,
        };
        write_settings(dir.path(), &record, &r, "false").unwrap();
        std::fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap()
    }

    /// The settings lines (not comments), in order.
    fn setting_lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn a_stale_recovery_target_in_postgresql_conf_is_overridden_not_combined() {
        // Empty values for the other targets, before ours (PostgreSQL refuses even an empty
        // one once a target is set: checked with postgres -C on 18), and an explicit action.
        let text = settings_written(
            RecoveryTarget::Lsn(Lsn(0x3000000)),
            None,
            "recovery_target_lsn = '0/1'\nwork_mem = 4MB\n",
        );
        assert_eq!(
            setting_lines(&text),
            vec![
                "work_mem = 4MB",
                "restore_command = 'false'",
                "recovery_target = ''",
                "recovery_target_name = ''",
                "recovery_target_time = ''",
                "recovery_target_xid = ''",
                "recovery_target_lsn = '0/3000000'",
                "recovery_target_action = 'pause'",
                "recovery_target_inclusive = on",
                "recovery_target_timeline = 'latest'",
            ]
        );
        assert!(text.contains("# disabled by pgstream restore: recovery_target_lsn = '0/1'"));
        // The latest point: no target may count at all.
        let text = settings_written(RecoveryTarget::Latest, Some(TargetAction::Promote), "");
        let lines = setting_lines(&text);
        for key in TARGET_SETTINGS {
            assert!(
                lines.contains(&format!("{key} = ''").as_str()),
                "{key}: {text}"
            );
        }
        assert!(!text.contains("recovery_target_action"), "{text}");
    }
}
