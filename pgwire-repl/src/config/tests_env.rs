//! Environment fallbacks, home-directory file defaults and password lookup.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use super::*;

fn with_env(s: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::parse_with_env(s, &|name| map.get(name).cloned())
}

fn env_ok(s: &str, vars: &[(&str, &str)]) -> Config {
    with_env(s, vars).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn tcp(host: &str, port: u16) -> Target {
    Target {
        host: Host::Tcp(host.into()),
        hostaddr: None,
        port,
    }
}

const ALL_VARS: &[(&str, &str)] = &[
    ("PGHOST", "envhost"),
    ("PGPORT", "6001"),
    ("PGUSER", "envuser"),
    ("PGPASSWORD", "envpw"),
    ("PGPASSFILE", "/env/pgpass"),
    ("PGDATABASE", "envdb"),
    ("PGSSLMODE", "require"),
    ("PGSSLROOTCERT", "/env/root.crt"),
    ("PGSSLCERT", "/env/c.crt"),
    ("PGSSLKEY", "/env/c.key"),
    ("PGAPPNAME", "envapp"),
    ("PGCONNECT_TIMEOUT", "9"),
    ("PGTARGETSESSIONATTRS", "read-write"),
    ("PGCHANNELBINDING", "require"),
    ("PGOPTIONS", "-c envopt=1"),
];

#[test]
fn environment_fills_what_the_string_left_unset() {
    let c = env_ok("", ALL_VARS);
    assert_eq!(c.targets, vec![tcp("envhost", 6001)]);
    assert_eq!(c.user.as_deref(), Some("envuser"));
    assert_eq!(c.password.as_deref(), Some("envpw"));
    assert_eq!(c.passfile.as_deref(), Some(Path::new("/env/pgpass")));
    assert_eq!(c.dbname.as_deref(), Some("envdb"));
    assert_eq!(c.sslmode, SslMode::Require);
    assert_eq!(c.sslrootcert.as_deref(), Some(Path::new("/env/root.crt")));
    assert_eq!(c.sslcert.as_deref(), Some(Path::new("/env/c.crt")));
    assert_eq!(c.sslkey.as_deref(), Some(Path::new("/env/c.key")));
    assert_eq!(c.application_name.as_deref(), Some("envapp"));
    assert_eq!(c.connect_timeout, Some(std::time::Duration::from_secs(9)));
    assert_eq!(c.target_session_attrs, TargetSessionAttrs::ReadWrite);
    assert_eq!(c.channel_binding, ChannelBinding::Require);
    assert_eq!(c.options.as_deref(), Some("-c envopt=1"));
    assert_eq!(
        env_ok("", &[("PGHOSTADDR", "10.1.1.1")]).targets[0]
            .hostaddr
            .as_deref(),
        Some("10.1.1.1")
    );
}

#[test]
fn explicit_settings_win_over_environment() {
    let s = "host=h port=1 user=u password=p passfile=/pf dbname=d sslmode=disable \
             sslrootcert=/r sslcert=/c sslkey=/k application_name=a connect_timeout=3 \
             target_session_attrs=any channel_binding=disable options=-cx=1";
    let c = env_ok(s, ALL_VARS);
    assert_eq!(c.targets, vec![tcp("h", 1)]);
    assert_eq!(c.user.as_deref(), Some("u"));
    assert_eq!(c.password.as_deref(), Some("p"));
    assert_eq!(c.passfile.as_deref(), Some(Path::new("/pf")));
    assert_eq!(c.dbname.as_deref(), Some("d"));
    assert_eq!(c.sslmode, SslMode::Disable);
    assert_eq!(c.sslrootcert.as_deref(), Some(Path::new("/r")));
    assert_eq!(c.application_name.as_deref(), Some("a"));
    assert_eq!(c.connect_timeout, Some(std::time::Duration::from_secs(3)));
    assert_eq!(c.target_session_attrs, TargetSessionAttrs::Any);
    assert_eq!(c.channel_binding, ChannelBinding::Disable);
    assert_eq!(c.options.as_deref(), Some("-cx=1"));
}

#[test]
fn explicit_empty_value_keeps_environment_out() {
    let c = env_ok(
        "host='' user=''",
        &[("PGHOST", "envhost"), ("PGUSER", "envuser")],
    );
    assert_eq!(c.targets[0].host, Host::Unix(default_socket_dir()));
    assert_eq!(c.user, None);
}

#[test]
fn uri_parts_left_out_come_from_environment() {
    let vars = [
        ("PGHOST", "envhost"),
        ("PGPORT", "6001"),
        ("PGDATABASE", "envdb"),
    ];
    let c = env_ok("postgresql:///", &vars);
    assert_eq!(c.targets, vec![tcp("envhost", 6001)]);
    assert_eq!(c.dbname.as_deref(), Some("envdb"));
    let c = env_ok("postgresql://h/d", &vars);
    assert_eq!(c.targets, vec![tcp("h", 6001)]);
    assert_eq!(c.dbname.as_deref(), Some("d"));
}

#[test]
fn environment_multi_host() {
    let c = env_ok("", &[("PGHOST", "a,b"), ("PGPORT", "1,2")]);
    assert_eq!(c.targets, vec![tcp("a", 1), tcp("b", 2)]);
    let e = with_env("host=a,b,c", &[("PGPORT", "1,2")]).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Other(m) if m.contains("2 port numbers to 3 hosts") && m.contains("PGPORT")),
        "{e}"
    );
}

#[test]
fn bad_environment_values_name_the_variable() {
    let e = with_env("", &[("PGSSLMODE", "strict")]).unwrap_err();
    match e {
        ConfigError::InvalidValue { key, reason, .. } => {
            assert_eq!(key, "sslmode");
            assert!(
                reason.contains("PGSSLMODE") && reason.contains("\"verify-full\""),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        with_env("", &[("PGSERVICE", "prod")]).is_err(),
        "a service would pick another server"
    );
    assert!(with_env("", &[("PGGSSENCMODE", "require")]).is_err());
    assert!(with_env("", &[("PGSSLCRL", "/crl")]).is_err());
    assert!(with_env("", &[("PGCONNECT_TIMEOUT", "soon")]).is_err());
}

#[test]
fn legacy_pgrequiressl() {
    assert_eq!(
        env_ok("", &[("PGREQUIRESSL", "1")]).sslmode,
        SslMode::Require
    );
    assert_eq!(
        env_ok("", &[("PGREQUIRESSL", "0")]).sslmode,
        SslMode::Prefer
    );
    let both = [("PGREQUIRESSL", "1"), ("PGSSLMODE", "disable")];
    assert_eq!(
        env_ok("", &both).sslmode,
        SslMode::Disable,
        "PGSSLMODE wins"
    );
    assert_eq!(env_ok("sslmode=allow", &both).sslmode, SslMode::Allow);
}

#[test]
fn app_name_precedence() {
    let vars = [("PGAPPNAME", "envapp")];
    assert_eq!(
        env_ok("fallback_application_name=f", &vars)
            .application_name
            .as_deref(),
        Some("envapp")
    );
    assert_eq!(
        env_ok("application_name=a", &vars)
            .application_name
            .as_deref(),
        Some("a")
    );
}

#[test]
fn system_roots_from_environment() {
    let c = env_ok("", &[("PGSSLROOTCERT", "system")]);
    assert!(c.uses_system_roots());
    assert_eq!(c.sslmode, SslMode::VerifyFull);
    // An sslmode from PGSSLMODE counts as chosen, as in libpq.
    assert!(with_env("", &[("PGSSLROOTCERT", "system"), ("PGSSLMODE", "prefer")]).is_err());
    assert!(with_env("sslrootcert=system", &[("PGSSLMODE", "require")]).is_err());
}

/// A fake home directory, optionally with the client files libpq looks for.
fn home(with_files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join(".postgresql")).unwrap();
    for f in with_files {
        fs::write(dir.path().join(f), "x").unwrap();
    }
    dir
}

#[test]
fn tls_file_defaults_only_when_present() {
    let h = home(&[]);
    let vars = [("HOME", h.path().to_str().unwrap())];
    let c = env_ok("", &vars);
    assert_eq!((c.sslrootcert, c.sslcert, c.sslkey), (None, None, None));
    assert_eq!(c.passfile, Some(h.path().join(".pgpass")));

    let h = home(&[
        ".postgresql/root.crt",
        ".postgresql/postgresql.crt",
        ".postgresql/postgresql.key",
    ]);
    let vars = [("HOME", h.path().to_str().unwrap())];
    let c = env_ok("", &vars);
    assert_eq!(c.sslrootcert, Some(h.path().join(".postgresql/root.crt")));
    assert_eq!(c.sslcert, Some(h.path().join(".postgresql/postgresql.crt")));
    assert_eq!(c.sslkey, Some(h.path().join(".postgresql/postgresql.key")));
    // Explicit files, and sslrootcert=system, replace the defaults.
    let c = env_ok("sslrootcert=/ca sslcert=/c sslkey=/k", &vars);
    assert_eq!(c.sslrootcert.as_deref(), Some(Path::new("/ca")));
    assert_eq!(c.sslkey.as_deref(), Some(Path::new("/k")));
    assert!(env_ok("sslrootcert=system", &vars).uses_system_roots());

    let h = home(&[".postgresql/root.crt"]);
    let c = env_ok("", &[("HOME", h.path().to_str().unwrap())]);
    assert!(c.sslrootcert.is_some() && c.sslcert.is_none() && c.sslkey.is_none());
    // No HOME, no defaults.
    assert_eq!(env_ok("", &[("HOME", "")]).passfile, None);
}

fn pgpass(contents: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgpass");
    fs::write(&path, contents).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

#[test]
fn password_for_uses_pgpass() {
    let (_d, path) = pgpass(
        "db1:5432:app:alice:db1pw\n\
         db2:6000:*:alice:db2pw\n\
         10.0.0.9:5432:*:alice:addrpw\n\
         localhost:5432:alice:alice:localpw\n\
         *:*:replication:rep:replpw\n\
         *:*:postgres:rep:sqlpw\n",
    );
    let c = env_ok(
        &format!("host=db1,db2 port=5432,6000 user=alice dbname=app passfile='{path}'"),
        &[],
    );
    assert_eq!(c.password_for(&c.targets[0]).as_deref(), Some("db1pw"));
    assert_eq!(c.password_for(&c.targets[1]).as_deref(), Some("db2pw"));

    // hostaddr alone is matched on the address; with a host name, on the name.
    let c = env_ok(
        &format!("hostaddr=10.0.0.9 user=alice passfile='{path}'"),
        &[],
    );
    assert_eq!(c.password_for(&c.targets[0]).as_deref(), Some("addrpw"));
    let c = env_ok(
        &format!("host=db1 hostaddr=10.0.0.9 user=alice dbname=app passfile='{path}'"),
        &[],
    );
    assert_eq!(c.password_for(&c.targets[0]).as_deref(), Some("db1pw"));

    // The default socket directory is "localhost"; dbname defaults to the user name.
    let c = env_ok(&format!("user=alice passfile='{path}'"), &[]);
    assert_eq!(c.password_for(&c.targets[0]).as_deref(), Some("localpw"));

    // Physical replication looks up the database "replication".
    let c = env_ok(
        &format!("host=any user=rep dbname=postgres replication=true passfile='{path}'"),
        &[],
    );
    assert_eq!(c.password_for(&c.targets[0]).as_deref(), Some("replpw"));
    let c = env_ok(
        &format!("host=any user=rep dbname=postgres passfile='{path}'"),
        &[],
    );
    assert_eq!(c.password_for(&c.targets[0]).as_deref(), Some("sqlpw"));

    // No match, no password.
    let c = env_ok(
        &format!("host=db3 user=alice dbname=app passfile='{path}'"),
        &[],
    );
    assert_eq!(c.password_for(&c.targets[0]), None);
}

#[test]
fn password_for_precedence() {
    let (_d, path) = pgpass("*:*:*:*:filepw\n");
    let explicit = env_ok(
        &format!("host=h user=u password=given passfile='{path}'"),
        &[("PGPASSWORD", "envpw")],
    );
    assert_eq!(
        explicit.password_for(&explicit.targets[0]).as_deref(),
        Some("given")
    );
    let from_env = env_ok(
        &format!("host=h user=u passfile='{path}'"),
        &[("PGPASSWORD", "envpw")],
    );
    assert_eq!(
        from_env.password_for(&from_env.targets[0]).as_deref(),
        Some("envpw")
    );
    // An empty password is no password: the file is consulted.
    let empty = env_ok(
        &format!("host=h user=u password='' passfile='{path}'"),
        &[("PGPASSWORD", "envpw")],
    );
    assert_eq!(
        empty.password_for(&empty.targets[0]).as_deref(),
        Some("filepw")
    );
    // PGPASSFILE, then ~/.pgpass.
    let via_env = env_ok("host=h user=u", &[("PGPASSFILE", &path)]);
    assert_eq!(
        via_env.password_for(&via_env.targets[0]).as_deref(),
        Some("filepw")
    );
    let h = tempfile::tempdir().unwrap();
    fs::copy(&path, h.path().join(".pgpass")).unwrap();
    let via_home = env_ok("host=h user=u", &[("HOME", h.path().to_str().unwrap())]);
    assert_eq!(
        via_home.password_for(&via_home.targets[0]).as_deref(),
        Some("filepw")
    );
}

#[cfg(unix)]
#[test]
fn password_for_skips_an_insecure_file() {
    use std::os::unix::fs::PermissionsExt;
    let (_d, path) = pgpass("*:*:*:*:filepw\n");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let c = env_ok(&format!("host=h user=u passfile='{path}'"), &[]);
    assert_eq!(c.password_for(&c.targets[0]), None);
}
