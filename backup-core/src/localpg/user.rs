//! Who the server programs run as. initdb, pg_ctl and postgres refuse to run as root, so when
//! this process is root they run as an unprivileged OS user: the one named (`--os-user`), else
//! `postgres` when it exists. Files the server uses are chowned to that user; the programs are
//! started with `CommandExt::uid/gid` (no unsafe code, no libc).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::LocalPgError;

/// The user tried when root names none.
pub const DEFAULT_OS_USER: &str = "postgres";

/// Who the server programs run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    /// This process's own user (not root).
    Current,
    /// Root switching to an unprivileged user.
    User { name: String, uid: u32, gid: u32 },
}

impl RunAs {
    /// Resolves `requested` (`--os-user`). As root: that user, else `postgres`, else an error
    /// asking for `--os-user`; the user must exist and not be uid 0. Not root: the current
    /// user; naming another user is an error (only root can switch).
    pub fn resolve(requested: Option<&str>) -> Result<RunAs, LocalPgError> {
        let euid = effective_uid()?;
        Self::resolve_for(euid, requested, &read_passwd())
    }

    fn resolve_for(
        euid: u32,
        requested: Option<&str>,
        passwd: &str,
    ) -> Result<RunAs, LocalPgError> {
        if euid != 0 {
            return match requested {
                None => Ok(RunAs::Current),
                Some(name) if lookup(passwd, name).map(|(uid, _)| uid) == Some(euid) => {
                    Ok(RunAs::Current)
                }
                Some(name) => Err(LocalPgError::User(format!(
                    "--os-user {name}: only root can run the server as another user; run \
                     pgstream as {name}, or leave --os-user out to run the server as yourself"
                ))),
            };
        }
        let name = requested.unwrap_or(DEFAULT_OS_USER);
        let Some((uid, gid)) = lookup(passwd, name) else {
            return Err(LocalPgError::User(match requested {
                Some(_) => format!(
                    "--os-user {name}: no such user in /etc/passwd; name an existing \
                     unprivileged user"
                ),
                None => format!(
                    "PostgreSQL refuses to run as root and there is no {DEFAULT_OS_USER} \
                     user: pass --os-user NAME (an unprivileged user to run the server as), \
                     or run pgstream as a non-root user"
                ),
            }));
        };
        if uid == 0 {
            return Err(LocalPgError::User(format!(
                "--os-user {name} has uid 0, and PostgreSQL refuses to run as root: name an \
                 unprivileged user"
            )));
        }
        Ok(RunAs::User {
            name: name.to_string(),
            uid,
            gid,
        })
    }

    /// Makes `cmd` run as this user. std drops root's supplementary groups when it switches.
    pub fn apply(&self, cmd: &mut Command) {
        if let RunAs::User { uid, gid, .. } = self {
            cmd.uid(*uid).gid(*gid);
        }
    }

    /// Gives `path` itself (not what a symlink points at) to this user; a no-op for
    /// [`RunAs::Current`].
    pub fn chown(&self, path: &Path) -> Result<(), LocalPgError> {
        if let RunAs::User { uid, gid, .. } = self {
            std::os::unix::fs::lchown(path, Some(*uid), Some(*gid))
                .map_err(|e| LocalPgError::io("changing the owner of", path, e))?;
        }
        Ok(())
    }

    /// Gives `root` and everything under it to this user, never following symlinks (a restored
    /// `pg_tblspc/<oid>` link is chowned, the directory it points to is not reached through it).
    pub fn chown_tree(&self, root: &Path) -> Result<(), LocalPgError> {
        if matches!(self, RunAs::Current) {
            return Ok(());
        }
        self.chown(root)?;
        let meta =
            std::fs::symlink_metadata(root).map_err(|e| LocalPgError::io("reading", root, e))?;
        if meta.is_dir() {
            let entries =
                std::fs::read_dir(root).map_err(|e| LocalPgError::io("listing", root, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| LocalPgError::io("listing", root, e))?;
                self.chown_tree(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Creates `dir` if missing (mode 0700, durably) and gives it to this user.
    pub fn prepare_dir(&self, dir: &Path) -> Result<(), LocalPgError> {
        crate::fsutil::create_dir_all_durably(dir)?;
        self.chown(dir)
    }

    /// The user's name, for messages (`the current user` for [`RunAs::Current`]).
    pub fn name(&self) -> String {
        match self {
            RunAs::Current => "the current user".to_string(),
            RunAs::User { name, .. } => name.clone(),
        }
    }
}

/// This process's effective uid, from `/proc/self/status` (unsafe code, hence `geteuid`, is
/// forbidden in the workspace).
pub fn effective_uid() -> Result<u32, LocalPgError> {
    let path = Path::new("/proc/self/status");
    let status = std::fs::read_to_string(path).map_err(|e| LocalPgError::io("reading", path, e))?;
    parse_euid(&status).ok_or_else(|| {
        LocalPgError::io(
            "parsing the Uid line of",
            path,
            std::io::Error::other("no parsable Uid line"),
        )
    })
}

fn parse_euid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
}

fn read_passwd() -> String {
    std::fs::read_to_string("/etc/passwd").unwrap_or_default()
}

/// `(uid, gid)` of `name` in /etc/passwd.
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    lookup(&read_passwd(), name)
}

/// `(uid, gid)` of `name` in passwd-format text.
fn lookup(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == name {
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          postgres:x:101:104::/var/lib/postgresql:/bin/bash\n\
                          alice:x:1000:1000::/home/alice:/bin/sh\n\
                          toor:x:0:0::/root:/bin/sh\n";

    #[test]
    fn euid_is_the_second_uid_field() {
        assert_eq!(parse_euid("Name:\tx\nUid:\t1000\t0\t0\t0\n"), Some(0));
        assert_eq!(parse_euid("Name:\tx\n"), None);
    }

    #[test]
    fn root_defaults_to_postgres_and_takes_a_named_user() {
        assert_eq!(
            RunAs::resolve_for(0, None, PASSWD).unwrap(),
            RunAs::User {
                name: "postgres".into(),
                uid: 101,
                gid: 104
            }
        );
        assert_eq!(
            RunAs::resolve_for(0, Some("alice"), PASSWD).unwrap(),
            RunAs::User {
                name: "alice".into(),
                uid: 1000,
                gid: 1000
            }
        );
    }

    #[test]
    fn root_without_a_postgres_user_is_asked_for_os_user() {
        let err = RunAs::resolve_for(0, None, "root:x:0:0::/root:/bin/sh\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--os-user NAME"), "{err}");
        let err = RunAs::resolve_for(0, Some("nobody-here"), PASSWD)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such user"), "{err}");
        let err = RunAs::resolve_for(0, Some("toor"), PASSWD)
            .unwrap_err()
            .to_string();
        assert!(err.contains("uid 0"), "{err}");
    }

    #[test]
    fn a_non_root_caller_runs_as_itself_and_cannot_switch() {
        assert_eq!(
            RunAs::resolve_for(1000, None, PASSWD).unwrap(),
            RunAs::Current
        );
        assert_eq!(
            RunAs::resolve_for(1000, Some("alice"), PASSWD).unwrap(),
            RunAs::Current
        );
        let err = RunAs::resolve_for(1000, Some("postgres"), PASSWD)
            .unwrap_err()
            .to_string();
        assert!(err.contains("only root"), "{err}");
    }
}
