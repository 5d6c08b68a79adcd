//! Tablespace locations: where a tablespace's directory is on the server, which a backup
//! records and a restore recreates (a directory written there, and a `pg_tblspc/<oid>` link to
//! it). Every location comes from outside pgstream: the server (BASE_BACKUP's tablespace list,
//! the links in its tar stream), a backup record (which someone with write access to the
//! repository can alter) or `--tablespace-map`. So each is checked before it is used: an
//! absolute path, no `..` component (a restore must write where the location says and nowhere
//! else), and no NUL or line break (no server creates one; they would only smuggle).

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// A tablespace location refused by [`check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "tablespace location {location:?} {why}; a tablespace location must be an absolute path \
     without '..' components, NUL bytes or line breaks"
)]
pub struct UnsafeLocation {
    /// The location as given (lossy where it is not UTF-8).
    pub location: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Checks a tablespace location; see the module documentation.
pub fn check(location: &Path) -> Result<(), UnsafeLocation> {
    let bytes = location.as_os_str().as_bytes();
    let refuse = |why| {
        Err(UnsafeLocation {
            location: location.to_string_lossy().into_owned(),
            why,
        })
    };
    if bytes.contains(&0) {
        return refuse("contains a NUL byte");
    }
    if bytes.contains(&b'\n') || bytes.contains(&b'\r') {
        return refuse("contains a line break");
    }
    if !location.is_absolute() {
        return refuse("is not an absolute path");
    }
    if location.components().any(|c| c == Component::ParentDir) {
        return refuse("has a '..' component");
    }
    Ok(())
}

/// [`check`] for a location given as bytes (a tar link target, a server's text).
pub fn check_bytes(location: &[u8]) -> Result<(), UnsafeLocation> {
    check(Path::new(std::ffi::OsStr::from_bytes(location)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: tablespace locations were used without checking them.
    #[test]
    fn tablespace_locations_must_be_absolute_without_dotdot_nul_or_newline() {
        for ok in [
            "/srv/ts1",
            "/",
            "/a/./b",
            "/a/b..c/..d",
            "/with space/ünïcode",
        ] {
            assert_eq!(check(Path::new(ok)), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "not an absolute path"),
            ("srv/ts1", "not an absolute path"),
            ("pg_tblspc/16385", "not an absolute path"),
            ("../etc", "not an absolute path"),
            ("/srv/../etc", "'..'"),
            ("/srv/ts/..", "'..'"),
            ("/..", "'..'"),
            ("/srv/ts\n1", "line break"),
            ("/srv/ts\r", "line break"),
        ] {
            let e = check(Path::new(bad)).unwrap_err();
            assert!(e.why.contains(why), "{bad:?}: {e}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        let e = check_bytes(b"/srv/ts\0/x").unwrap_err();
        assert!(e.why.contains("NUL"), "{e}");
        assert_eq!(check_bytes(b"/srv/\xff"), Ok(()));
    }
}
