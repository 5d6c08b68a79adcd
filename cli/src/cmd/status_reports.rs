//! `status --verify-report FILE` and `--drill-report FILE`: the last verify and restore drill,
//! read from the JSON reports those commands wrote (`verify --report`, `drill --json --report`)
//! and dated by the file's modification time. Nothing in the repository is read for them.

use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;

/// What a report says.
pub struct LastRun {
    pub passed: bool,
    /// When the report was written.
    pub at: SystemTime,
    /// One line for people.
    pub summary: String,
    /// verify: how many problems it found.
    pub problems: Option<u64>,
    /// drill: from the start of the drill until the copy was promoted and connected to.
    pub recovery_seconds: Option<f64>,
}

/// Why there is no result: the file does not exist yet (WARNING), or cannot be read (UNKNOWN).
pub enum Missing {
    NotYet(String),
    Unreadable(String),
}

fn read(path: &Path, written_by: &str) -> Result<(Value, SystemTime), Missing> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Missing::NotYet(format!(
                "no report at {} yet ({written_by} writes it)",
                path.display()
            )))
        }
        Err(e) => return Err(Missing::Unreadable(format!("{}: {e}", path.display()))),
    };
    let at = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| Missing::Unreadable(format!("{}: {e}", path.display())))?;
    let json = serde_json::from_str(&text).map_err(|e| {
        Missing::Unreadable(format!(
            "{} is not a JSON report of {written_by}: {e}",
            path.display()
        ))
    })?;
    Ok((json, at))
}

pub fn verify(path: &Path) -> Result<LastRun, Missing> {
    let (json, at) = read(path, "pgstream verify --report")?;
    let bad = |v: &Value| v.as_array().map_or(0, |a| a.len() as u64);
    let (Some(backups), Some(wal)) = (json["backups"].as_array(), json.get("wal")) else {
        return Err(Missing::Unreadable(format!(
            "{} is not a report of pgstream verify",
            path.display()
        )));
    };
    let problems = backups.iter().map(|b| bad(&b["problems"])).sum::<u64>()
        + bad(&wal["gaps"])
        + bad(&wal["bad_files"]);
    Ok(LastRun {
        passed: problems == 0,
        at,
        summary: format!(
            "{} backup(s) and {} WAL file(s) checked, {problems} problem(s)",
            backups.len(),
            wal["files_checked"].as_u64().unwrap_or(0)
        ),
        problems: Some(problems),
        recovery_seconds: None,
    })
}

pub fn drill(path: &Path) -> Result<LastRun, Missing> {
    let (json, at) = read(path, "pgstream drill --json --report")?;
    let Some(passed) = json["passed"].as_bool() else {
        return Err(Missing::Unreadable(format!(
            "{} is not a JSON report of pgstream drill",
            path.display()
        )));
    };
    let recovery_seconds = json["timings"]["total_recovery_seconds"].as_f64();
    let summary = match (passed, json["failure"].as_str()) {
        (true, _) => format!(
            "backup {} restored and checked{}",
            json["backup"]["id"].as_str().unwrap_or("?"),
            recovery_seconds
                .map(|s| format!(", recovered in {s:.1} s"))
                .unwrap_or_default()
        ),
        (false, Some(why)) => format!("FAILED: {why}"),
        (false, None) => "FAILED (see the report)".to_string(),
    };
    Ok(LastRun {
        passed,
        at,
        summary,
        problems: None,
        recovery_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drill_reports_in_the_shape_docs_cli_md_gives() {
        let dir =
            std::env::temp_dir().join(format!("pgstream-drill-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("drill.json");
        std::fs::write(
            &path,
            r#"{"result": "FAIL", "passed": false, "backup": {"id": "20261121T020000Z"},
                "timings": {"total_recovery_seconds": 12.5}, "failure": "the server exited"}"#,
        )
        .unwrap();
        let r = drill(&path).ok().unwrap();
        assert!(!r.passed);
        assert_eq!(r.recovery_seconds, Some(12.5));
        assert_eq!(r.summary, "FAILED: the server exited");
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(drill(&path), Err(Missing::Unreadable(_))));
        assert!(matches!(
            drill(&dir.join("none.json")),
            Err(Missing::NotYet(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
