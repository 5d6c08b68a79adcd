//! Where a passphrase comes from: `--passphrase-file FILE` or `PGSTREAM_PASSPHRASE`, never argv.

use crate::crypto::Secret;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The environment variable holding the passphrase.
pub const PASSPHRASE_ENV: &str = "PGSTREAM_PASSPHRASE";
/// A passphrase file larger than this is surely the wrong file.
const MAX_PASSPHRASE_FILE: u64 = 64 * 1024;

/// Why no passphrase could be obtained.
#[derive(Debug, thiserror::Error)]
pub enum PassphraseError {
    /// Neither source is set.
    #[error(
        "this repository is encrypted and needs a passphrase: set {PASSPHRASE_ENV} or pass \
         --passphrase-file FILE (a passphrase is never accepted on the command line)"
    )]
    Missing,
    /// The file can be read by other users.
    #[error(
        "passphrase file {} has mode {mode:04o}, readable by group or others; \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    FileTooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file could not be read.
    #[error("reading passphrase file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The passphrase is empty.
    #[error("the passphrase from {from} is empty")]
    Empty {
        /// Which source.
        from: String,
    },
}

/// Reads the passphrase from `file` if given, else from `PGSTREAM_PASSPHRASE`.
pub fn passphrase_from_env_or_file(file: Option<&Path>) -> Result<Secret, PassphraseError> {
    passphrase_from(file, std::env::var_os(PASSPHRASE_ENV))
}

/// [`passphrase_from_env_or_file`] with the environment value passed in (testable without
/// touching the process environment). An explicit file wins over the variable.
pub fn passphrase_from(
    file: Option<&Path>,
    env_value: Option<OsString>,
) -> Result<Secret, PassphraseError> {
    let (bytes, from) = match file {
        Some(path) => (read_file(path)?, path.display().to_string()),
        None => match env_value {
            Some(v) => (v.into_vec(), PASSPHRASE_ENV.to_string()),
            None => return Err(PassphraseError::Missing),
        },
    };
    let secret = Secret::new(bytes);
    if secret.is_empty() {
        return Err(PassphraseError::Empty { from });
    }
    Ok(secret)
}

fn read_file(path: &Path) -> Result<Vec<u8>, PassphraseError> {
    let io = |source| PassphraseError::Io {
        path: path.into(),
        source,
    };
    let f = File::open(path).map_err(io)?;
    // fstat the opened file, so the checked file is the one read.
    let meta = f.metadata().map_err(io)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PassphraseError::FileTooOpen {
            path: path.into(),
            mode,
        });
    }
    let mut buf = Vec::new();
    f.take(MAX_PASSPHRASE_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > MAX_PASSPHRASE_FILE {
        return Err(io(io::Error::new(
            io::ErrorKind::InvalidData,
            "file is larger than 64 KiB; is this the right file?",
        )));
    }
    // Editors and `echo` add one newline; strip exactly one so the rest is taken literally.
    if buf.ends_with(b"\r\n") {
        buf.truncate(buf.len() - 2);
    } else if buf.ends_with(b"\n") {
        buf.truncate(buf.len() - 1);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, content: &[u8], mode: u32) -> PathBuf {
        let p = dir.join("pass");
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn file_strips_one_newline_and_wins_over_env() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), b"s3cret\n\n", 0o600);
        let s = passphrase_from(Some(&p), Some("env".into())).unwrap();
        assert_eq!(s.expose(), b"s3cret\n");
        let p = write(d.path(), b" a b \r\n", 0o400);
        assert_eq!(passphrase_from(Some(&p), None).unwrap().expose(), b" a b ");
    }

    #[test]
    fn group_readable_file_is_refused_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), b"s3cret", 0o640);
        let e = passphrase_from(Some(&p), None).unwrap_err();
        assert!(matches!(
            e,
            PassphraseError::FileTooOpen { mode: 0o640, .. }
        ));
        let msg = e.to_string();
        assert!(msg.contains("chmod 600") && msg.contains("0640"), "{msg}");
    }

    #[test]
    fn env_missing_and_empty() {
        assert_eq!(
            passphrase_from(None, Some("pw".into())).unwrap().expose(),
            b"pw"
        );
        let e = passphrase_from(None, None).unwrap_err().to_string();
        assert!(
            e.contains(PASSPHRASE_ENV) && e.contains("--passphrase-file"),
            "{e}"
        );
        assert!(matches!(
            passphrase_from(None, Some("".into())),
            Err(PassphraseError::Empty { .. })
        ));
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), b"\n", 0o600);
        assert!(matches!(
            passphrase_from(Some(&p), None),
            Err(PassphraseError::Empty { .. })
        ));
        let e = passphrase_from(Some(&d.path().join("nope")), None).unwrap_err();
        assert!(e.to_string().contains("nope"));
    }
}
