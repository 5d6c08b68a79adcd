//! Which PostgreSQL server binaries the demo runs: `--pg-bin DIR` (or PGSTREAM_PG_BIN) as given,
//! `--major N` found the usual way, else the newest supported major installed here. pgbench is
//! taken from the same directory when it is there.

use std::path::{Path, PathBuf};

use backup_core::localpg::bin::{pg_root, probe};
use backup_core::localpg::PgBin;

/// The majors pgstream supports, newest first: the demo picks the first one installed.
const SUPPORTED_MAJORS: [u32; 6] = [18, 17, 16, 15, 14, 13];

/// How to get server binaries, appended to every "not found" message.
pub const HOW_TO_INSTALL: &str = "To get them: `apt-get install postgresql` (Debian, Ubuntu; or \
     postgresql-<major> from apt.postgresql.org), `dnf install postgresql-server` (RHEL, Fedora), \
     or in a pgstream checkout `just install-postgres` (scripts/install-postgres.sh, no root \
     packages needed); then run `pgstream demo` again, with --pg-bin DIR if they are not in a \
     standard place";

/// The server binaries to use, or a message saying what was looked for and how to get them.
pub fn find(explicit: Option<&Path>, major: Option<u32>) -> Result<PgBin, String> {
    if let Some(m) = major {
        if m < 13 {
            return Err(format!(
                "--major {m}: pgstream supports PostgreSQL 13 and later"
            ));
        }
    }
    if let Some(dir) = explicit {
        // The directory's own major, unless --major insists on one (then PgBin::find says
        // when they differ).
        let wanted = match major.or_else(|| probe(dir).map(|b| b.major)) {
            Some(m) => m,
            None => {
                return Err(format!(
                    "--pg-bin {}: no runnable postgres there (it must be the bin directory of a \
                     PostgreSQL server, holding postgres, pg_ctl and initdb). {HOW_TO_INSTALL}",
                    dir.display()
                ))
            }
        };
        return PgBin::find(wanted, Some(dir)).map_err(|e| format!("{e}. {HOW_TO_INSTALL}"));
    }
    if let Some(m) = major {
        return PgBin::find(m, None).map_err(|e| e.to_string());
    }
    for m in SUPPORTED_MAJORS {
        if let Ok(bin) = PgBin::find(m, None) {
            return Ok(bin);
        }
    }
    Err(format!(
        "no PostgreSQL server binaries (postgres, pg_ctl, initdb of PostgreSQL 13 to 18) found: \
         looked at `pg_config --bindir`, the postgres on PATH, /usr/lib/postgresql/<major>/bin, \
         /usr/pgsql-<major>/bin and {}/<major>/bin. {HOW_TO_INSTALL}",
        pg_root().display()
    ))
}

/// `pgbench` next to the server binaries, when it is there (some minimal builds lack it).
pub fn pgbench(bin: &PgBin) -> Option<PathBuf> {
    let p = bin.program("pgbench");
    p.is_file().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pg_bin_without_postgres_says_how_to_get_the_binaries() {
        let err = find(Some(Path::new("/nonexistent/pgstream-demo-bin")), None).unwrap_err();
        assert!(
            err.contains("no runnable postgres") && err.contains("apt-get install postgresql"),
            "{err}"
        );
    }

    #[test]
    fn majors_before_13_are_refused() {
        let err = find(None, Some(12)).unwrap_err();
        assert!(err.contains("13 and later"), "{err}");
    }
}
