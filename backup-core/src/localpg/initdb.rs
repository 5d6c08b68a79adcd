//! `initdb`: a new cluster for a local server (what `pgstream demo` starts from).

use std::path::{Path, PathBuf};

use super::server::{conf_quote, parent_or_root, run_checked, server_command};
use super::{LocalPgError, PgBin, RunAs};

/// How `initdb` makes a new cluster.
#[derive(Debug, Clone)]
pub struct InitdbOptions {
    /// The bootstrap superuser's name (`-U`).
    pub superuser: String,
    /// Authentication for Unix-socket connections (`--auth-local`): `trust`, `peer`,
    /// `scram-sha-256`, ...
    pub auth_local: String,
    /// Authentication for TCP connections (`--auth-host`).
    pub auth_host: String,
    /// A file holding the superuser's password (`--pwfile`); the server's user must be able to
    /// read it. Needed when either method asks for a password.
    pub password_file: Option<PathBuf>,
    /// Page checksums (`--data-checksums`).
    pub data_checksums: bool,
    /// `--encoding`.
    pub encoding: String,
    /// `--locale` (C by default: always available, independent of the host's locales).
    pub locale: Option<String>,
    /// Settings appended to postgresql.conf after initdb (`wal_level = replica`, ...).
    pub settings: Vec<(String, String)>,
}

impl Default for InitdbOptions {
    fn default() -> Self {
        InitdbOptions {
            superuser: "postgres".into(),
            auth_local: "trust".into(),
            auth_host: "scram-sha-256".into(),
            password_file: None,
            data_checksums: true,
            encoding: "UTF8".into(),
            locale: Some("C".into()),
            settings: Vec::new(),
        }
    }
}

/// Creates a cluster in `data_dir` (which must not exist, or be empty) with `initdb` run as
/// `run_as`. The directory is created 0700 and owned by `run_as`.
pub fn initdb(
    bin: &PgBin,
    run_as: &RunAs,
    data_dir: &Path,
    opts: &InitdbOptions,
) -> Result<(), LocalPgError> {
    bin.require(&["initdb"])?;
    if let Ok(mut entries) = std::fs::read_dir(data_dir) {
        if entries.next().is_some() {
            return Err(LocalPgError::User(format!(
                "{} is not empty: initdb needs an empty or missing directory",
                data_dir.display()
            )));
        }
    }
    run_as.prepare_dir(data_dir)?;
    let mut cmd = server_command(bin, run_as, "initdb", parent_or_root(data_dir));
    cmd.arg("-D")
        .arg(data_dir)
        .arg("-U")
        .arg(&opts.superuser)
        .arg(format!("--auth-local={}", opts.auth_local))
        .arg(format!("--auth-host={}", opts.auth_host))
        .arg(format!("--encoding={}", opts.encoding));
    if let Some(locale) = &opts.locale {
        cmd.arg(format!("--locale={locale}"));
    }
    if opts.data_checksums {
        cmd.arg("--data-checksums");
    }
    if let Some(pw) = &opts.password_file {
        cmd.arg(format!("--pwfile={}", pw.display()));
    }
    run_checked(cmd, "initdb")?;
    if !opts.settings.is_empty() {
        let conf = data_dir.join("postgresql.conf");
        let mut text =
            std::fs::read_to_string(&conf).map_err(|e| LocalPgError::io("reading", &conf, e))?;
        text.push_str("\n# Added by pgstream.\n");
        for (k, v) in &opts.settings {
            text.push_str(&format!("{k} = {}\n", conf_quote(v)));
        }
        crate::fsutil::write_file_durably(&conf, text.as_bytes(), 0o600)?;
        run_as.chown(&conf)?;
    }
    Ok(())
}
