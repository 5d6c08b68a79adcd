//! The OS user that owns and runs the test clusters.
//!
//! initdb and postgres refuse to run as root. When the tests run as root (CI, containers), the
//! server programs run as an unprivileged user (`PGSTREAM_TEST_USER`, default `pgstream-test`,
//! created with useradd when missing) and the cluster's files are owned by it; the test process
//! itself stays root and can still read everything.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The user created when the tests run as root and `PGSTREAM_TEST_USER` is unset.
pub const DEFAULT_TEST_USER: &str = "pgstream-test";

/// Who the server programs run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerUser {
    /// Not root: everything runs as the current user.
    Current,
    /// Root: server programs switch to this unprivileged user.
    Switch { name: String, uid: u32, gid: u32 },
}

/// The effective uid of this process (localpg reads it from `/proc/self/status`: unsafe code,
/// hence `libc::geteuid`, is forbidden in the workspace).
pub fn effective_uid() -> u32 {
    backup_core::localpg::user::effective_uid()
        .unwrap_or_else(|e| panic!("cannot learn the effective uid: {e}"))
}

fn lookup_passwd(name: &str) -> Option<(u32, u32)> {
    backup_core::localpg::user::lookup_user(name)
}

fn create_user(name: &str) {
    let out = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "pgstream test clusters",
            name,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run useradd to create the test user {name}: {e}"));
    // Another test process may have created it meanwhile; only the end state matters.
    if !out.status.success() && lookup_passwd(name).is_none() {
        panic!(
            "useradd {name} failed ({}): {}. Create an unprivileged user yourself and set \
             PGSTREAM_TEST_USER, or run the tests as a non-root user",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

/// The user the clusters run as; resolved (and created) once per process.
pub fn server_user() -> &'static ServerUser {
    static USER: OnceLock<ServerUser> = OnceLock::new();
    USER.get_or_init(|| {
        if effective_uid() != 0 {
            return ServerUser::Current;
        }
        let name = std::env::var("PGSTREAM_TEST_USER")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_TEST_USER.to_string());
        if lookup_passwd(&name).is_none() {
            create_user(&name);
        }
        let (uid, gid) = lookup_passwd(&name)
            .unwrap_or_else(|| panic!("test user {name} is not in /etc/passwd after useradd"));
        assert!(
            uid != 0,
            "PGSTREAM_TEST_USER={name} has uid 0; PostgreSQL refuses to run as root"
        );
        ServerUser::Switch { name, uid, gid }
    })
}

impl ServerUser {
    /// Makes `cmd` run as this user.
    pub fn apply(&self, cmd: &mut Command) {
        if let ServerUser::Switch { uid, gid, .. } = self {
            // std drops root's supplementary groups when it switches uid.
            cmd.uid(*uid).gid(*gid);
        }
    }

    /// Gives `path` to this user (no-op when not switching).
    pub fn chown(&self, path: &Path) {
        if let ServerUser::Switch { uid, gid, name } = self {
            std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                .unwrap_or_else(|e| panic!("cannot chown {} to {name}: {e}", path.display()));
        }
    }

    /// The user's name, for messages.
    pub fn name(&self) -> String {
        match self {
            ServerUser::Current => "the current user".to_string(),
            ServerUser::Switch { name, .. } => name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_euid_and_passwd() {
        let euid = effective_uid();
        let id = Command::new("id").arg("-u").output().unwrap();
        assert_eq!(
            euid.to_string(),
            String::from_utf8_lossy(&id.stdout).trim(),
            "euid from /proc/self/status differs from `id -u`"
        );
        assert_eq!(lookup_passwd("root"), Some((0, 0)));
        assert_eq!(lookup_passwd("no-such-user-pgstream"), None);
    }
}
