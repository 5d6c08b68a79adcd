//! Finding the server binaries (`postgres`, `pg_ctl`, `initdb`) of one PostgreSQL major.
//!
//! Order: the explicit directory (`--pg-bin DIR`, or `PGSTREAM_PG_BIN` as the CLI reads it),
//! which is never second-guessed; else, the first of these whose `postgres --version` is the
//! wanted major: `pg_config --bindir` of the `pg_config` on PATH, the directory of the
//! `postgres` on PATH (symlinks resolved), `/usr/lib/postgresql/<major>/bin` (Debian, Ubuntu),
//! `/usr/pgsql-<major>/bin` (RHEL and the PGDG rpms), and
//! `${PGSTREAM_PG_ROOT:-/var/cache/pgstream/postgresql}/<major>/bin` (scripts/install-postgres.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::LocalPgError;

/// Where `scripts/install-postgres.sh` installs, unless `PGSTREAM_PG_ROOT` says otherwise.
pub const DEFAULT_PG_ROOT: &str = "/var/cache/pgstream/postgresql";

/// A directory holding the server binaries of one major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBin {
    /// The directory (absolute).
    pub dir: PathBuf,
    /// The major of its `postgres` (13, 14, ...).
    pub major: u32,
    /// `postgres --version`'s output, trimmed (`postgres (PostgreSQL) 16.4`).
    pub version: String,
}

impl PgBin {
    /// Finds the binaries of `major`: `explicit` when given (an error if its `postgres` is
    /// another major or missing), else the first suitable directory in the order above. The
    /// error lists the places looked at and says what to install or pass.
    pub fn find(major: u32, explicit: Option<&Path>) -> Result<PgBin, LocalPgError> {
        if let Some(dir) = explicit {
            return match probe(dir) {
                Some(bin) if bin.major == major => Ok(bin),
                Some(bin) => Err(LocalPgError::NoBinaries(format!(
                    "{}/postgres is PostgreSQL {} ({}), but PostgreSQL {major} is needed: pass \
                     --pg-bin (or set PGSTREAM_PG_BIN to) the bin directory of PostgreSQL {major}",
                    dir.display(),
                    bin.major,
                    bin.version
                ))),
                None => Err(LocalPgError::NoBinaries(format!(
                    "{} has no runnable postgres: pass --pg-bin (or set PGSTREAM_PG_BIN to) the \
                     directory holding postgres and pg_ctl of PostgreSQL {major}",
                    dir.display()
                ))),
            };
        }
        let mut looked = Vec::new();
        for (source, dir) in candidates(major) {
            let Some(dir) = dir else {
                looked.push(format!("{source} (none)"));
                continue;
            };
            match probe(&dir) {
                Some(bin) if bin.major == major => return Ok(bin),
                Some(bin) => looked.push(format!(
                    "{source} = {} (PostgreSQL {})",
                    dir.display(),
                    bin.major
                )),
                None => looked.push(format!("{} (no postgres)", dir.display())),
            }
        }
        Err(LocalPgError::NoBinaries(missing_message(major, &looked)))
    }

    /// The path of `program` in this directory.
    pub fn program(&self, program: &str) -> PathBuf {
        self.dir.join(program)
    }

    /// Fails, naming what to install, unless every one of `programs` is in the directory (the
    /// Debian server package has initdb, some minimal builds do not).
    pub fn require(&self, programs: &[&str]) -> Result<(), LocalPgError> {
        let missing: Vec<&str> = programs
            .iter()
            .copied()
            .filter(|p| !self.program(p).is_file())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(LocalPgError::NoBinaries(format!(
            "{} has no {}: install the full PostgreSQL {} server package, or pass --pg-bin \
             (or set PGSTREAM_PG_BIN to) a directory that has them",
            self.dir.display(),
            missing.join(", "),
            self.major
        )))
    }
}

fn missing_message(major: u32, looked: &[String]) -> String {
    format!(
        "PostgreSQL {major} server binaries (postgres, pg_ctl) not found (looked at: {}). \
         Install the PostgreSQL {major} server (Debian/Ubuntu: apt-get install \
         postgresql-{major}; RHEL: dnf install postgresql{major}-server; or \
         scripts/install-postgres.sh {major}), or pass --pg-bin DIR (or set PGSTREAM_PG_BIN) \
         to the directory holding them",
        looked.join("; ")
    )
}

/// The places to look, in order, each with a description for the error message.
fn candidates(major: u32) -> Vec<(String, Option<PathBuf>)> {
    let root = pg_root();
    vec![
        ("`pg_config --bindir`".to_string(), pg_config_bindir()),
        ("postgres on PATH".to_string(), postgres_on_path()),
        (
            "Debian layout".to_string(),
            Some(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"))),
        ),
        (
            "RHEL layout".to_string(),
            Some(PathBuf::from(format!("/usr/pgsql-{major}/bin"))),
        ),
        (
            "scripts/install-postgres.sh".to_string(),
            Some(root.join(major.to_string()).join("bin")),
        ),
    ]
}

/// Where scripts/install-postgres.sh installs: `PGSTREAM_PG_ROOT`, else [`DEFAULT_PG_ROOT`].
pub fn pg_root() -> PathBuf {
    match std::env::var_os("PGSTREAM_PG_ROOT") {
        Some(r) if !r.is_empty() => PathBuf::from(r),
        _ => PathBuf::from(DEFAULT_PG_ROOT),
    }
}

/// The `--bindir` of the `pg_config` on PATH, when it runs.
pub fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The real directory of the `postgres` on PATH (a symlink in /usr/local/bin points at the
/// directory that also holds pg_ctl and initdb).
fn postgres_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("postgres"))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

/// The binaries in `dir`, when its `postgres --version` runs and parses.
pub fn probe(dir: &Path) -> Option<PgBin> {
    let postgres = dir.join("postgres");
    if !postgres.is_file() {
        return None;
    }
    let out = Command::new(&postgres).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major = parse_major(&version)?;
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    Some(PgBin {
        dir,
        major,
        version,
    })
}

/// The major in `postgres --version` output: `postgres (PostgreSQL) 16.4` → 16,
/// `postgres (PostgreSQL) 18beta1` → 18, `postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)`
/// → 15.
pub fn parse_major(version_output: &str) -> Option<u32> {
    const MARK: &str = "(PostgreSQL) ";
    let rest = &version_output[version_output.find(MARK)? + MARK.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors_parse_from_version_output() {
        assert_eq!(parse_major("postgres (PostgreSQL) 16.4"), Some(16));
        assert_eq!(parse_major("postgres (PostgreSQL) 18beta1"), Some(18));
        assert_eq!(parse_major("postgres (PostgreSQL) 19devel"), Some(19));
        // The harness reads client tools' versions too.
        assert_eq!(
            parse_major("psql (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(
            parse_major("postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major("something else"), None);
    }

    #[test]
    fn an_explicit_directory_without_postgres_is_refused_with_what_to_pass() {
        let dir = tempfile::tempdir().unwrap();
        let err = PgBin::find(16, Some(dir.path())).unwrap_err().to_string();
        assert!(
            err.contains("no runnable postgres") && err.contains("--pg-bin"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_major_names_what_to_install() {
        let err = PgBin::find(99, None).unwrap_err().to_string();
        assert!(
            err.contains("PostgreSQL 99 server binaries")
                && err.contains("apt-get install postgresql-99")
                && err.contains("--pg-bin"),
            "{err}"
        );
    }
}
