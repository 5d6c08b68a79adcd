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

/// One path in restore_command, `what` naming where it comes from: `%` doubled (the server
/// replaces `%f`, `%p`, `%r` and `%%` in the whole command, quotes or not), then quoted for the
/// shell. Refused when the command could not carry it intact: a newline (a postgresql.conf string
/// cannot hold one) or bytes that are not UTF-8.
fn command_arg(what: &str, path: &Path) -> Result<String, PitrError> {
    let refuse = |why: &str| {
        PitrError::Invalid(format!(
            "{what} {path:?} {why}: restore_command in postgresql.auto.conf cannot carry it; \
             use a path without it, or --copy-wal (then no restore_command runs); nothing was \
             written"
        ))
    };
    let text = path.to_str().ok_or_else(|| refuse("is not valid UTF-8"))?;
    if text.contains(['\n', '\r']) {
        return Err(refuse("contains a line break"));
    }
    Ok(shell_quote(&text.replace('%', "%%")))
}

/// For an S3 repository, the `NAME='value' ` assignments that put the command in the same
/// place as this process: endpoint, region, profile and the shared credentials file (the server
/// runs restore_command without our environment). Never a secret: refused when the
/// credentials came from environment variables only.
fn s3_env(location: &crate::store::RepoLocation) -> Result<String, PitrError> {
    let env = crate::store::s3::settings::command_env_for(location)
        .map_err(|e| PitrError::Invalid(format!("restore_command for {location}: {e}")))?;
    let mut out = String::new();
    for (k, v) in env {
        out.push_str(&format!("{k}={} ", command_arg(k, Path::new(&v))?));
    }
    Ok(out)
}

/// The restore_command for `r`; refused (before anything is written) when a path in it cannot
/// be carried (see [`command_arg`]).
pub(super) fn restore_command(repo: &Repository, r: &Recovery) -> Result<String, PitrError> {
    if r.copy_wal {
        // Every segment is in pg_wal/; a failing command makes the server read it from there.
        return Ok("false".into());
    }
    // The server runs the command in its data directory: a relative path would not reach us.
    let location = repo.location().absolute();
    let location = match location.local_path() {
        Some(dir) => command_arg("the repository", dir)?,
        None => command_arg("the repository", Path::new(&location.to_string()))?,
    };
    let mut cmd = format!(
        "{}{} wal-fetch --repo {location}",
        s3_env(&repo.location().absolute())?,
        command_arg("the pgstream executable", &r.program)?,
    );
    if let Some(p) = &r.passphrase_file {
        cmd.push_str(&format!(
            " --passphrase-file {}",
            command_arg("--passphrase-file", p)?
        ));
    }
    let spool = r
        .spool_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL_DIR));
    cmd.push_str(&format!(
        " --spool-dir {}",
        command_arg("--spool-dir", &spool)?
    ));
    cmd.push_str(" %f %p");
    Ok(cmd)
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
    use crate::crypto::Encryption;
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

    fn recovery_with(passphrase_file: &str, spool_dir: Option<&str>) -> Recovery {
        Recovery {
            target: RecoveryTarget::Latest,
            action: None,
            timeline: TargetTimeline::Latest,
            inclusive: true,
            copy_wal: false,
            passphrase_file: Some(PathBuf::from(passphrase_file)),
            program: PathBuf::from("/opt/pg%stream/bin/pgstream"),
            spool_dir: spool_dir.map(PathBuf::from),
        }
    }

    /// What PostgreSQL does to restore_command before running it (percentrepl.c): `%%` → `%`,
    /// `%f`, `%p`, `%r` → their values; then what /bin/sh makes of the quoted words.
    fn as_the_server_runs_it(cmd: &str) -> Vec<String> {
        let mut expanded = String::new();
        let mut chars = cmd.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                expanded.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => expanded.push('%'),
                Some('f') => expanded.push_str("000000010000000000000001"),
                Some('p') => expanded.push_str("pg_wal/RECOVERYXLOG"),
                Some('r') => expanded.push_str("000000010000000000000000"),
                other => panic!("{cmd}: unexpected placeholder %{other:?}"),
            }
        }
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "for a in {expanded}; do printf '%s\\0' \"$a\"; done"
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{expanded}");
        String::from_utf8(out.stdout)
            .unwrap()
            .split_terminator('\0')
            .map(str::to_string)
            .collect()
    }

    /// Regression: a `%` in the repository location, the passphrase file or any other path of
    /// restore_command was written as is, and the server replaced it (`repo%f` became
    /// `repo000000010000000000000001`).
    #[test]
    fn percent_in_restore_command_paths_is_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let repo_dir = dir.path().join("repo%f 100%");
        let repo = crate::test_support::test_repo(&repo_dir, Encryption::None, None);
        let r = recovery_with("/etc/pg%p/pass%%phrase", Some("/spool/%r"));
        let cmd = restore_command(&repo, &r).unwrap();
        let repo_text = repo_dir
            .canonicalize()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(
            as_the_server_runs_it(&cmd),
            vec![
                "/opt/pg%stream/bin/pgstream",
                "wal-fetch",
                "--repo",
                &repo_text,
                "--passphrase-file",
                "/etc/pg%p/pass%%phrase",
                "--spool-dir",
                "/spool/%r",
                "000000010000000000000001",
                "pg_wal/RECOVERYXLOG",
            ]
        );
    }

    /// Regression: a newline in a path of restore_command was written into postgresql.auto.conf,
    /// which cannot carry one in a string; now refused, naming the path and what to do.
    #[test]
    fn newline_in_restore_command_paths_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::test_support::test_repo(&dir.path().join("repo"), Encryption::None, None);
        let bad_repo =
            crate::test_support::test_repo(&dir.path().join("re\npo"), Encryption::None, None);
        for (repo, r, what) in [
            (&bad_repo, recovery_with("/pass", None), "the repository"),
            (
                &repo,
                recovery_with("/pass\nphrase", None),
                "--passphrase-file",
            ),
            (
                &repo,
                recovery_with("/pass", Some("/spool\r")),
                "--spool-dir",
            ),
        ] {
            match restore_command(repo, &r) {
                Err(PitrError::Invalid(msg)) => {
                    assert!(msg.starts_with(what), "{msg}");
                    assert!(
                        msg.contains("line break") && msg.contains("--copy-wal"),
                        "{msg}"
                    );
                }
                other => panic!("{what}: expected a refusal, got {other:?}"),
            }
        }
        // With --copy-wal no command runs, and no path has to be carried.
        let mut r = recovery_with("/pass\nphrase", None);
        r.copy_wal = true;
        assert_eq!(restore_command(&repo, &r).unwrap(), "false");
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
