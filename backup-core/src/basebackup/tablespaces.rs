//! The tablespace locations a server reports during a base backup: a restore writes each
//! tablespace back to its recorded location, so one that is relative, climbs out with `..` or
//! carries NUL or a line break is refused before it is recorded (see [`crate::tablespace`]).

use pgwire_repl::basebackup::TablespaceInfo;

use super::BaseBackupError;
use crate::tarwalk::{EntryKind, SeenFile};

/// BASE_BACKUP's tablespace list.
pub(super) fn check_server_list(list: &[TablespaceInfo]) -> Result<(), BaseBackupError> {
    for t in list {
        if let Some(location) = &t.location {
            let oid = t
                .oid
                .map_or_else(|| "without an oid".into(), |o| o.to_string());
            check(oid, location.as_bytes())?;
        }
    }
    Ok(())
}

/// The main archive's `pg_tblspc/<oid>` links, which a restore recreates.
pub(super) fn check_links(seen: &[SeenFile]) -> Result<(), BaseBackupError> {
    for f in seen {
        let oid = f.path.as_bytes().strip_prefix(b"pg_tblspc/");
        if let (EntryKind::Symlink { target }, Some(oid)) = (&f.kind, oid) {
            if !oid.contains(&b'/') {
                let what = format!("link {}", String::from_utf8_lossy(f.path.as_bytes()));
                check(what, target.as_bytes())?;
            }
        }
    }
    Ok(())
}

/// Refuses `location` of the tablespace `what` names.
pub(super) fn check(what: String, location: impl AsRef<[u8]>) -> Result<(), BaseBackupError> {
    crate::tablespace::check_bytes(location.as_ref())
        .map_err(|source| BaseBackupError::UnsafeTablespace { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::BackupPath;

    fn listed(location: &str) -> Vec<TablespaceInfo> {
        vec![
            TablespaceInfo {
                oid: Some(16385),
                location: Some("/srv/ts1".into()),
                size_kb: None,
            },
            TablespaceInfo {
                oid: Some(16386),
                location: Some(location.into()),
                size_kb: None,
            },
            TablespaceInfo {
                oid: None,
                location: None,
                size_kb: None,
            },
        ]
    }

    fn link(path: &str, target: &str) -> SeenFile {
        SeenFile {
            path: BackupPath::from(path),
            kind: EntryKind::Symlink {
                target: BackupPath::from(target),
            },
            size: 0,
            checksum: None,
            mode: 0o777,
            mtime: 0,
        }
    }

    /// Regression: the server's tablespace locations were recorded without a check, and a
    /// restore then wrote wherever they pointed.
    #[test]
    fn unsafe_tablespace_location_from_the_server_is_refused() {
        assert!(check_server_list(&listed("/srv/ts2")).is_ok());
        for bad in ["relative/ts", "/srv/../etc", "/srv/ts\n2", "/srv/ts\u{0}2"] {
            let e = check_server_list(&listed(bad)).unwrap_err();
            assert!(
                matches!(&e, BaseBackupError::UnsafeTablespace { what, .. } if what == "16386"),
                "{bad:?}: {e:?}"
            );
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("{bad:?}")) && msg.contains("pg_tablespace"),
                "{msg}"
            );
        }

        let good = [
            link("pg_tblspc/16385", "/srv/ts1"),
            link("base/1/x", "../y"),
        ];
        assert!(
            check_links(&good).is_ok(),
            "only pg_tblspc/<oid> links are locations"
        );
        for bad in ["../../etc", "/srv/ts/../../etc", "srv"] {
            let e = check_links(&[link("pg_tblspc/16386", bad)]).unwrap_err();
            assert!(e.to_string().contains("link pg_tblspc/16386"), "{e}");
        }
        assert!(check("of archive 16386.tar".into(), "/a/../b").is_err());
    }
}
