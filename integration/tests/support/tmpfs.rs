//! A small tmpfs for disk-full tests: mounting needs root (CAP_SYS_ADMIN), which CI has.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a directory, unmounted on drop (even when the test panics).
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`8M`) on `dir` (created); `None` when this environment does
    /// not allow mounting (not root, no CAP_SYS_ADMIN).
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "cannot mount a tmpfs ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    /// [`Tmpfs::mount`], or a failure saying what the test needs.
    pub fn require(dir: &Path, size: &str) -> Tmpfs {
        Tmpfs::mount(dir, size).unwrap_or_else(|| {
            panic!(
                "this test fills a small tmpfs: run it as root (or with CAP_SYS_ADMIN) so it \
                 can mount one"
            )
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Changes its size (a full disk freed, or shrunk to fill sooner).
    pub fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "remounting the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}
