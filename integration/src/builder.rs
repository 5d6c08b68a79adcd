//! `ClusterBuilder`: initdb (or adopt a restored data directory), configure, start.

use std::fs;
use std::path::{Path, PathBuf};

use crate::bins::pg_bin_dir;
use crate::cluster::{Cluster, SUPERUSER};
use crate::conf;
use crate::ports::free_port;
use crate::server_user::server_user;
use crate::tls::{ClusterTls, TlsOptions};

/// How many times start is retried on a new port when the picked one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// Describes a throwaway cluster; [`ClusterBuilder::start`] makes and starts it.
#[derive(Clone, Debug)]
#[must_use = "a ClusterBuilder does nothing until .start()"]
pub struct ClusterBuilder {
    major: u32,
    settings: Vec<(String, String)>,
    hba: Vec<String>,
    replace_hba: Option<Vec<String>>,
    tls: Option<TlsOptions>,
    initdb_args: Vec<String>,
    tablespaces: Vec<String>,
    restored: Option<PathBuf>,
}

/// A cluster of `major` with the harness defaults (see [`ClusterBuilder`]'s methods).
pub fn cluster(major: u32) -> ClusterBuilder {
    ClusterBuilder {
        major,
        settings: Vec::new(),
        hba: Vec::new(),
        replace_hba: None,
        tls: None,
        initdb_args: Vec::new(),
        tablespaces: Vec::new(),
        restored: None,
    }
}

impl ClusterBuilder {
    /// A postgresql.conf setting; the value is quoted for you (`.setting("wal_keep_size",
    /// "64MB")`). Overrides the defaults: wal_level=replica, max_wal_senders=10,
    /// max_replication_slots=10, fsync=on, listen_addresses=127.0.0.1, a free port, ...
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        conf::set(&mut self.settings, key, value);
        self
    }

    /// A pg_hba.conf line placed before the defaults (so it wins).
    pub fn hba(mut self, line: &str) -> Self {
        self.hba.push(line.to_string());
        self
    }

    /// Exactly these pg_hba.conf lines: no defaults, nothing from `.hba()`.
    pub fn replace_hba<I, S>(mut self, lines: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.replace_hba = Some(lines.into_iter().map(Into::into).collect());
        self
    }

    /// Serve TLS with certificates made now (see [`TlsOptions`]).
    pub fn tls(mut self, options: TlsOptions) -> Self {
        self.tls = Some(options);
        self
    }

    /// An extra initdb argument, e.g. `--data-checksums`.
    pub fn initdb_arg(mut self, arg: &str) -> Self {
        self.initdb_args.push(arg.to_string());
        self
    }

    /// A tablespace `name`, created after start in a directory the server user owns
    /// ([`Cluster::tablespace_dir`]).
    pub fn tablespace(mut self, name: &str) -> Self {
        self.tablespaces.push(name.to_string());
        self
    }

    /// Start on an existing data directory (e.g. one a restore test wrote) instead of running
    /// initdb. The harness gives it to the server user, sets its mode to 0700 and rewrites
    /// pg_hba.conf and its settings file; recovery files (recovery.signal, restore_command)
    /// are the test's business. The directory is not deleted on drop.
    pub fn restored_data_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.restored = Some(path.into());
        self
    }

    /// initdb (unless restored), configure and start. Blocks until the server accepts
    /// connections; panics with the server log's tail when it does not.
    pub fn start(self) -> Cluster {
        let bin_dir = pg_bin_dir(self.major);
        let user = server_user().clone();
        let temp_dir = tempfile::Builder::new()
            .prefix(&format!("pgstream-pg{}-", self.major))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for a test cluster: {e}"))
            .keep();
        user.chown(&temp_dir);
        let socket_dir = temp_dir.join("sock");
        make_dir_for(&socket_dir, &user);

        let owns_data_dir = self.restored.is_none();
        let data_dir = match &self.restored {
            Some(path) => {
                adopt_data_dir(path, &user);
                path.clone()
            }
            None => temp_dir.join("data"),
        };

        let mut settings = conf::default_settings();
        conf::set(
            &mut settings,
            "unix_socket_directories",
            &socket_dir.display().to_string(),
        );
        let tls = self.tls.as_ref().map(|options| {
            let tls = ClusterTls::create(&temp_dir.join("tls"), options, &user);
            conf::set(&mut settings, "ssl", "on");
            let paths = &tls.paths;
            conf::set(
                &mut settings,
                "ssl_cert_file",
                &path_str(&paths.server_cert_path),
            );
            conf::set(
                &mut settings,
                "ssl_key_file",
                &path_str(&paths.server_key_path),
            );
            if options.client_ca {
                conf::set(&mut settings, "ssl_ca_file", &path_str(&paths.ca_cert_path));
            }
            tls
        });
        for (key, value) in &self.settings {
            conf::set(&mut settings, key, value);
        }
        // A port the test chose is kept; one the harness picked may be re-picked on a clash.
        let fixed_port = self.settings.iter().any(|(k, _)| k == "port");
        if !fixed_port {
            conf::set(&mut settings, "port", &free_port().to_string());
        }

        let mut cluster = Cluster::new(
            self.major, bin_dir, temp_dir, data_dir, socket_dir, settings, tls, user,
        );
        if owns_data_dir {
            cluster.initdb(&self.initdb_args);
        }
        conf::write_hba(
            cluster.data_dir(),
            &conf::hba_lines(&self.hba, self.replace_hba.as_deref()),
        );
        cluster.chown_config_files();

        let mut attempt = 1;
        loop {
            cluster.write_settings();
            match cluster.try_start() {
                Ok(()) => break,
                Err(failure) if failure.port_in_use && !fixed_port && attempt < PORT_ATTEMPTS => {
                    attempt += 1;
                    cluster.set_setting("port", &free_port().to_string());
                }
                Err(failure) => panic!("{}", failure.message),
            }
        }

        for name in &self.tablespaces {
            let dir = cluster.tablespace_dir(name);
            make_dir_for(
                dir.parent().expect("tablespace dir has a parent"),
                cluster.user(),
            );
            make_dir_for(&dir, cluster.user());
            cluster.psql(&format!(
                "CREATE TABLESPACE {} OWNER {SUPERUSER} LOCATION {}",
                quote_ident(name),
                quote_literal(&path_str(&dir))
            ));
        }
        cluster
    }
}

fn path_str(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()))
        .to_string()
}

fn make_dir_for(dir: &Path, user: &crate::server_user::ServerUser) {
    if !dir.exists() {
        fs::create_dir(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    }
    user.chown(dir);
}

/// Gives a restored data directory to the server user with the mode PostgreSQL demands.
fn adopt_data_dir(path: &Path, user: &crate::server_user::ServerUser) {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        path.join("PG_VERSION").is_file(),
        "restored_data_dir {} has no PG_VERSION: not a data directory",
        path.display()
    );
    fn walk(dir: &Path, user: &crate::server_user::ServerUser) {
        user.chown(dir);
        let entries =
            fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                walk(&entry.path(), user);
            } else if !kind.is_symlink() {
                user.chown(&entry.path());
            }
        }
    }
    check_reachable(path, user);
    walk(path, user);
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// Panics unless the server user can traverse every ancestor of `path`.
fn check_reachable(path: &Path, user: &crate::server_user::ServerUser) {
    use std::os::unix::fs::MetadataExt;
    let crate::server_user::ServerUser::Switch { uid, gid, name } = user else {
        return;
    };
    for dir in path.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(dir) else {
            continue;
        };
        let mode = meta.mode();
        let ok = mode & 0o001 != 0
            || (meta.uid() == *uid && mode & 0o100 != 0)
            || (meta.gid() == *gid && mode & 0o010 != 0);
        assert!(
            ok,
            "the server user {name} cannot reach {} ({} has mode {:o}); put restored data \
             directories under integration::scratch_dir()",
            path.display(),
            dir.display(),
            mode & 0o7777
        );
    }
}

/// A temp dir owned by the server user, for data directories a test makes (restores,
/// pg_basebackup) and then starts with `.restored_data_dir(..)`. Removed on drop.
pub fn scratch_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pgstream-scratch-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a scratch temp dir: {e}"));
    server_user().chown(dir.path());
    dir
}

// SQL quoting is pgstream's own (localpg), the same for the tests as for `pgstream drill`.
pub use backup_core::localpg::sql::{quote_ident, quote_literal};
