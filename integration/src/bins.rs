//! Finding the PostgreSQL binaries of a given major.
//!
//! Server directory order for major N: `PGSTREAM_PG<N>_BIN`, then `PGSTREAM_PG_BIN` when its
//! `postgres` is major N, then `${PGSTREAM_PG_ROOT:-/var/cache/pgstream/postgresql}/N/bin`
//! (what `scripts/install-postgres.sh` fills), then Debian's `/usr/lib/postgresql/N/bin`, then
//! `pg_config --bindir` of the `pg_config` on PATH when it is major N.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The majors the harness knows how to find and start.
pub const SUPPORTED_MAJORS: std::ops::RangeInclusive<u32> = 13..=18;

// The install root and `postgres --version` parsing are pgstream's own (localpg), so the tests
// and `pgstream drill`/`demo` agree on them.
pub use backup_core::localpg::bin::{parse_major, pg_root, DEFAULT_PG_ROOT};

/// The major reported by `<program> --version`, or `None` when it does not run. Cached per path:
/// resolution runs for every cluster and every client call.
pub fn binary_major(program: &Path) -> Option<u32> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Option<u32>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(known) = cache.lock().expect("version cache poisoned").get(program) {
        return *known;
    }
    let major = if program.is_file() {
        Command::new(program)
            .arg("--version")
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| parse_major(&String::from_utf8_lossy(&out.stdout)))
    } else {
        None
    };
    cache
        .lock()
        .expect("version cache poisoned")
        .insert(program.to_path_buf(), major);
    major
}

/// One place looked at for a major's binaries, and what was found there (for error messages).
struct Candidate {
    source: String,
    dir: Option<PathBuf>,
}

/// The server directories to try for `major`, in resolution order (without the
/// `PGSTREAM_PG<N>_BIN` override, which is handled apart because it is never second-guessed).
fn candidates(major: u32) -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Some(dir) = std::env::var_os("PGSTREAM_PG_BIN").filter(|d| !d.is_empty()) {
        out.push(Candidate {
            source: format!("PGSTREAM_PG_BIN={}", PathBuf::from(&dir).display()),
            dir: Some(PathBuf::from(dir)),
        });
    }
    let root = pg_root().join(major.to_string()).join("bin");
    out.push(Candidate {
        source: root.display().to_string(),
        dir: Some(root),
    });
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    out.push(Candidate {
        source: debian.display().to_string(),
        dir: Some(debian),
    });
    out.push(Candidate {
        source: "`pg_config --bindir` on PATH".to_string(),
        dir: backup_core::localpg::bin::pg_config_bindir(),
    });
    out
}

/// Resolves the server binaries directory of `major` without panicking: `Err` lists the places
/// looked at.
pub fn find_pg_bin_dir(major: u32) -> Result<PathBuf, Vec<String>> {
    let var = format!("PGSTREAM_PG{major}_BIN");
    if let Some(dir) = std::env::var_os(&var).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return match binary_major(&dir.join("postgres")) {
            Some(found) if found == major => Ok(dir),
            found => Err(vec![format!(
                "{var}={} (its postgres {})",
                dir.display(),
                found.map_or("does not run".to_string(), |m| format!("is major {m}"))
            )]),
        };
    }
    let mut looked = vec![format!("{var} (unset)")];
    for candidate in candidates(major) {
        match &candidate.dir {
            Some(dir) if binary_major(&dir.join("postgres")) == Some(major) => {
                return Ok(dir.clone())
            }
            _ => looked.push(candidate.source),
        }
    }
    Err(looked)
}

fn missing_message(major: u32, what: &str, looked: &[String]) -> String {
    format!(
        "PostgreSQL {major} {what} not found (looked in: {}). Install them with \
         `scripts/install-postgres.sh {major}` (or `just install-postgres`), or set \
         PGSTREAM_PG{major}_BIN to a directory holding them",
        looked.join("; ")
    )
}

/// The directory holding `postgres`, `initdb` and `pg_ctl` of `major`. Panics with what to
/// install when there is none: a test never skips silently for want of binaries.
pub fn pg_bin_dir(major: u32) -> PathBuf {
    find_pg_bin_dir(major)
        .unwrap_or_else(|looked| panic!("{}", missing_message(major, "server binaries", &looked)))
}

/// `tool` (psql, pg_basebackup, pg_waldump, ...) of exactly `major`, if installed.
pub fn client_tool_exact(major: u32, tool: &str) -> Option<PathBuf> {
    let dir = find_pg_bin_dir(major).ok()?;
    let path = dir.join(tool);
    (binary_major(&path) == Some(major)).then_some(path)
}

/// `tool` of `major`, or else the same tool of the newest installed major (PostgreSQL 13 is
/// installed server-only). Newer client tools talk to older servers; note that `pg_waldump`
/// (and `pg_verifybackup`'s WAL check) only read WAL of their own major, so tests that need an
/// exact match use [`client_tool_exact`] or [`client_tool_major`].
pub fn client_tool(major: u32, tool: &str) -> PathBuf {
    client_tool_major(major, tool).0
}

/// Like [`client_tool`], also telling which major's tool was picked.
pub fn client_tool_major(major: u32, tool: &str) -> (PathBuf, u32) {
    if let Some(path) = client_tool_exact(major, tool) {
        return (path, major);
    }
    for other in SUPPORTED_MAJORS.rev() {
        if let Some(path) = client_tool_exact(other, tool) {
            return (path, other);
        }
    }
    let looked: Vec<String> = SUPPORTED_MAJORS
        .rev()
        .map(|m| match find_pg_bin_dir(m) {
            Ok(dir) => format!("{}", dir.join(tool).display()),
            Err(_) => format!("no PostgreSQL {m} install"),
        })
        .collect();
    panic!(
        "PostgreSQL client tool `{tool}` not found for major {major} nor any other major \
         (looked at: {}). Install them with `scripts/install-postgres.sh` (or `just \
         install-postgres`), or set PGSTREAM_PG{major}_BIN",
        looked.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_message_says_what_to_install() {
        let msg = missing_message(16, "server binaries", &["/x".to_string()]);
        assert!(msg.contains("scripts/install-postgres.sh 16"), "{msg}");
        assert!(msg.contains("PGSTREAM_PG16_BIN"), "{msg}");
        assert!(msg.contains("/x"), "{msg}");
    }
}
