//! How pgwire-repl finds and picks its server, against real servers: conninfo strings and URIs,
//! PG* environment variables, `.pgpass`, multi-host lists, target_session_attrs against a real
//! primary and standby, connect_timeout, and ordinary (non-replication) SQL sessions.

mod support;

use std::collections::HashMap;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use integration::{cluster, free_port, quote_literal, test_majors, Cluster, TlsOptions};
use pgwire_repl::auth::AuthError;
use pgwire_repl::config::{Config, ReplicationMode};
use pgwire_repl::{Connection, Error};

fn parse(conninfo: &str) -> Config {
    Config::parse(conninfo).unwrap_or_else(|e| panic!("parsing {conninfo:?}: {e}"))
}

async fn connect(ctx: &str, cfg: &Config) -> Connection {
    Connection::connect(cfg)
        .await
        .unwrap_or_else(|e| panic!("{ctx}: connecting with {cfg}: {e}"))
}

async fn connect_err(ctx: &str, cfg: &Config) -> Error {
    match Connection::connect(cfg).await {
        Ok(conn) => panic!(
            "{ctx}: connecting with {cfg} reached {} (pid {}), expected an error",
            conn.target(),
            conn.process_id()
        ),
        Err(e) => e,
    }
}

/// The only value of a one-row, one-column query on an ordinary connection.
async fn query_one(ctx: &str, conn: &mut Connection, sql: &str) -> String {
    let rs = conn
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{ctx}: {sql}: {e}"));
    assert_eq!(rs.len(), 1, "{ctx}: {sql}: result sets {rs:?}");
    let row = rs[0]
        .single_row(sql)
        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
    let value = row[0].as_ref().expect("non-NULL");
    String::from_utf8(value.to_vec()).expect("UTF-8")
}

/// Every byte but ASCII alphanumerics percent-encoded, as a URI component.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A passfile path that does not exist, so the tester's ~/.pgpass stays out of the way.
fn no_passfile(pg: &Cluster) -> String {
    pg.temp_dir().join("no-such-pgpass").display().to_string()
}

fn create_role(pg: &Cluster, name: &str, password: &str) {
    pg.psql(&format!(
        "SET password_encryption = 'scram-sha-256';
         CREATE ROLE {name} WITH REPLICATION LOGIN PASSWORD {}",
        quote_literal(password)
    ));
}

#[tokio::test]
async fn conninfo_strings_and_uris_connect() {
    // Characters that need quoting in a conninfo string and percent-encoding in a URI.
    let password = "s3cr@t:/?%& pw'#";
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major)
            .tls(TlsOptions::default())
            .hba("host all uri_user 127.0.0.1/32 scram-sha-256")
            .hba("host replication uri_user 127.0.0.1/32 scram-sha-256")
            .start();
        create_role(&pg, "uri_user", password);
        let port = pg.port();

        // key=value, with the password quoted and escaped.
        let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
        let cfg = parse(&format!(
            "host=127.0.0.1 port={port} user=uri_user password='{quoted}' replication=true \
             sslmode=disable application_name=conninfo_app"
        ));
        assert_eq!(cfg.password.as_deref(), Some(password), "{ctx}");
        assert!(
            !format!("{cfg:?}").contains(password) && !cfg.to_string().contains(password),
            "{ctx}: the password shows in the logged settings"
        );
        let mut conn = connect(&format!("{ctx}, conninfo"), &cfg).await;
        assert!(conn.is_replication() && !conn.is_tls(), "{ctx}");
        conn.identify_system().await.unwrap();
        let app = pg.psql(&format!(
            "SELECT application_name FROM pg_stat_replication WHERE pid = {}",
            conn.process_id()
        ));
        assert_eq!(app, "conninfo_app", "{ctx}");
        conn.close().await;

        // A URI with the user and password percent-encoded, an ordinary session over TLS.
        let uri = format!(
            "postgresql://uri%5Fuser:{}@127.0.0.1:{port}/postgres?sslmode=require&\
             application_name=uri_app",
            percent_encode(password)
        );
        let cfg = parse(&uri);
        assert_eq!(cfg.user.as_deref(), Some("uri_user"), "{ctx}");
        assert_eq!(cfg.password.as_deref(), Some(password), "{ctx}");
        let mut conn = connect(&format!("{ctx}, URI"), &cfg).await;
        assert!(!conn.is_replication() && conn.is_tls(), "{ctx}");
        assert_eq!(
            query_one(&ctx, &mut conn, "SELECT current_user").await,
            "uri_user"
        );
        assert_eq!(
            query_one(&ctx, &mut conn, "SELECT current_database()").await,
            "postgres"
        );
        let seen = pg.psql(&format!(
            "SELECT a.application_name, s.ssl FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE pid = {}",
            conn.process_id()
        ));
        assert_eq!(seen, "uri_app|t", "{ctx}");
        conn.close().await;

        // postgres:// with replication, verify-full and a root certificate in the query.
        let uri = format!(
            "postgres://uri_user:{}@localhost:{port}?replication=true&sslmode=verify-full&\
             sslrootcert={}",
            percent_encode(password),
            percent_encode(&pg.tls().ca_cert_path.display().to_string())
        );
        let cfg = parse(&uri);
        assert_eq!(cfg.replication, ReplicationMode::Physical, "{ctx}");
        let mut conn = connect(&format!("{ctx}, replication URI"), &cfg).await;
        assert!(conn.is_replication() && conn.is_tls(), "{ctx}");
        conn.identify_system().await.unwrap();
        conn.close().await;
    }
}

#[tokio::test]
async fn environment_variables_supply_the_settings() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major)
            .tls(TlsOptions::default())
            .hba("host all env_user 127.0.0.1/32 scram-sha-256")
            .hba("host replication env_user 127.0.0.1/32 scram-sha-256")
            .start();
        create_role(&pg, "env_user", "env-Secret-6");
        let port = pg.port().to_string();
        let env: HashMap<&str, &str> = [
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", port.as_str()),
            ("PGUSER", "env_user"),
            ("PGPASSWORD", "env-Secret-6"),
            ("PGSSLMODE", "require"),
            ("PGAPPNAME", "env_app"),
            ("PGDATABASE", "postgres"),
        ]
        .into_iter()
        .collect();
        let from_env = |s: &str| {
            Config::parse_with_env(s, &|k| env.get(k).map(|v| v.to_string()))
                .unwrap_or_else(|e| panic!("{ctx}: parsing {s:?} with the fake environment: {e}"))
        };

        let mut conn = connect(&ctx, &from_env("replication=true")).await;
        assert!(conn.is_replication() && conn.is_tls(), "{ctx}: PGSSLMODE");
        conn.identify_system().await.unwrap();
        let row = pg.psql(&format!(
            "SELECT r.application_name, r.usename FROM pg_stat_replication r WHERE pid = {}",
            conn.process_id()
        ));
        assert_eq!(row, "env_app|env_user", "{ctx}: pg_stat_replication");
        conn.close().await;

        let mut conn = connect(&ctx, &from_env("")).await;
        assert!(!conn.is_replication() && conn.is_tls(), "{ctx}");
        let pid = conn.process_id();
        assert_eq!(
            query_one(&ctx, &mut conn, "SELECT current_user").await,
            "env_user"
        );
        let row = pg.psql(&format!(
            "SELECT application_name, datname FROM pg_stat_activity WHERE pid = {pid}"
        ));
        assert_eq!(row, "env_app|postgres", "{ctx}: pg_stat_activity");
        conn.close().await;

        // The connection string wins over the environment.
        let conn = connect(
            &ctx,
            &from_env("application_name=explicit_app sslmode=disable"),
        )
        .await;
        assert!(!conn.is_tls(), "{ctx}: sslmode=disable over PGSSLMODE");
        let app = pg.psql(&format!(
            "SELECT application_name FROM pg_stat_activity WHERE pid = {}",
            conn.process_id()
        ));
        assert_eq!(app, "explicit_app", "{ctx}");
        conn.close().await;
    }
}

fn write_passfile(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn pgpass_supplies_the_replication_password() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major)
            .hba("host all pass_user 127.0.0.1/32 scram-sha-256")
            .hba("host replication pass_user 127.0.0.1/32 scram-sha-256")
            .start();
        create_role(&pg, "pass_user", "pass:Secret\\7");
        let port = pg.port();
        let dir = tempfile::tempdir().unwrap();
        let passfile = dir.path().join("pgpass");
        // A wrong password for database "postgres" first: a physical connection must take
        // the "replication" line, an ordinary one the "postgres" line.
        let text = format!(
            "# comment\n\
             127.0.0.1:{port}:postgres:pass_user:not-this-one\n\
             127.0.0.1:{port}:replication:pass_user:pass\\:Secret\\\\7\n"
        );
        write_passfile(&passfile, &text, 0o600);
        let base = format!(
            "host=127.0.0.1 port={port} user=pass_user sslmode=disable passfile='{}'",
            passfile.display()
        );

        let mut conn = connect(
            &format!("{ctx}, .pgpass replication entry"),
            &parse(&format!("{base} replication=true")),
        )
        .await;
        conn.identify_system().await.unwrap();
        conn.close().await;

        let e = connect_err(&ctx, &parse(&format!("{base} dbname=postgres"))).await;
        assert_eq!(e.code(), Some("28P01"), "{ctx}: postgres entry used: {e}");

        // Group-readable: ignored, as libpq does, so no password at all.
        write_passfile(&passfile, &text, 0o640);
        let e = connect_err(&ctx, &parse(&format!("{base} replication=true"))).await;
        assert!(
            matches!(
                e,
                Error::Auth {
                    source: AuthError::PasswordRequired,
                    ..
                }
            ),
            "{ctx}: group-readable passfile: {e:?}"
        );
        assert!(
            e.to_string()
                .contains("asked for a password but none was given"),
            "{ctx}: {e}"
        );
    }
}

#[tokio::test]
async fn multi_host_lists_fail_over_and_report_every_host() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major).start();
        let live = pg.port();
        let dead = free_port();
        let dead2 = free_port();

        for replication in ["true", "false"] {
            let cfg = parse(&format!(
                "host=127.0.0.1,127.0.0.1 port={dead},{live} user=postgres sslmode=disable \
                 replication={replication}"
            ));
            let conn = connect(&ctx, &cfg).await;
            assert_eq!(conn.target().port, live, "{ctx}: replication={replication}");
            conn.close().await;
        }

        let cfg = parse(&format!(
            "host=127.0.0.1,localhost port={dead},{dead2} user=postgres sslmode=disable \
             replication=true"
        ));
        let e = connect_err(&ctx, &cfg).await;
        let Error::AllHostsFailed(errors) = &e else {
            panic!("{ctx}: expected AllHostsFailed, got {e:?}");
        };
        assert_eq!(errors.len(), 2, "{ctx}: {e}");
        for (err, target) in errors
            .iter()
            .zip([format!("127.0.0.1:{dead}"), format!("localhost:{dead2}")])
        {
            match err {
                Error::Connect { target: t, .. } => assert_eq!(t, &target, "{ctx}"),
                other => panic!("{ctx}: expected Error::Connect, got {other:?}"),
            }
        }
        let text = e.to_string();
        assert!(
            text.starts_with("could not connect to any host")
                && text.contains(&format!("127.0.0.1:{dead}"))
                && text.contains(&format!("localhost:{dead2}")),
            "{ctx}: {text}"
        );
    }
}

#[tokio::test]
async fn target_session_attrs_pick_primary_or_standby() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let primary = cluster(major).start();
        let standby = support::start_standby(&primary);
        let (p, s) = (primary.port(), standby.port());

        for replication in ["true", "false"] {
            let ctx = format!("{ctx}, replication={replication}");
            let cfg = |ports: &str, attrs: &str| {
                parse(&format!(
                    "host=127.0.0.1,127.0.0.1 port={ports} user=postgres sslmode=disable \
                     replication={replication} target_session_attrs={attrs}"
                ))
            };
            for (ports, attrs, want, what) in [
                (format!("{s},{p}"), "primary", p, "primary"),
                (format!("{s},{p}"), "read-write", p, "primary"),
                (format!("{p},{s}"), "standby", s, "standby"),
                (format!("{p},{s}"), "read-only", s, "standby"),
                (format!("{p},{s}"), "prefer-standby", s, "standby"),
                (format!("{s},{p}"), "any", s, "standby"),
            ] {
                let mut conn = connect(&ctx, &cfg(&ports, attrs)).await;
                assert_eq!(
                    conn.target().port,
                    want,
                    "{ctx}: target_session_attrs={attrs} with ports {ports} should pick the {what}"
                );
                // 13 does not report in_hot_standby: the client asks the server instead
                // (SHOW on a walsender, pg_is_in_recovery() on an ordinary session).
                assert_eq!(
                    conn.parameter("in_hot_standby").is_some(),
                    major >= 14,
                    "{ctx}: in_hot_standby reported"
                );
                let in_recovery = conn.is_in_recovery().await.unwrap();
                assert_eq!(
                    in_recovery,
                    want == s,
                    "{ctx}: is_in_recovery on the {what}"
                );
                conn.close().await;
            }

            // Only the standby listed: read-write and primary are refused.
            for (attrs, reason) in [
                (
                    "read-write",
                    "target_session_attrs=read-write but the server is read-only",
                ),
                (
                    "primary",
                    "target_session_attrs=primary but the server is in recovery",
                ),
            ] {
                let single = parse(&format!(
                    "host=127.0.0.1 port={s} user=postgres sslmode=disable \
                     replication={replication} target_session_attrs={attrs}"
                ));
                let e = connect_err(&ctx, &single).await;
                let Error::SessionAttrs { target, .. } = &e else {
                    panic!("{ctx}: {attrs}: expected SessionAttrs, got {e:?}");
                };
                assert_eq!(target, &format!("127.0.0.1:{s}"), "{ctx}");
                assert!(e.to_string().contains(reason), "{ctx}: {e}");

                let e = connect_err(&ctx, &cfg(&format!("{s},{s}"), attrs)).await;
                let Error::AllHostsFailed(errors) = &e else {
                    panic!("{ctx}: {attrs}: expected AllHostsFailed, got {e:?}");
                };
                assert!(
                    errors.len() == 2
                        && errors
                            .iter()
                            .all(|e| matches!(e, Error::SessionAttrs { .. })),
                    "{ctx}: {e}"
                );
            }
        }
    }
}

#[tokio::test]
async fn connect_timeout_gives_up_on_a_silent_server() {
    // Accepts TCP connections (the kernel's backlog does) but never answers.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    for sslmode in ["disable", "prefer"] {
        let cfg = parse(&format!(
            "host=127.0.0.1 port={port} user=postgres sslmode={sslmode} connect_timeout=2 \
             replication=true"
        ));
        let started = Instant::now();
        let e = connect_err(&format!("sslmode={sslmode}"), &cfg).await;
        let took = started.elapsed();
        match &e {
            Error::ConnectTimeout { target, seconds } => {
                assert_eq!(target, &format!("127.0.0.1:{port}"));
                assert_eq!(*seconds, 2);
            }
            other => panic!("sslmode={sslmode}: expected ConnectTimeout, got {other:?}"),
        }
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
            "sslmode={sslmode}: gave up after {took:?}"
        );
        assert!(
            e.to_string()
                .contains("timed out after 2 s connecting to 127.0.0.1:"),
            "{e}"
        );
    }
    drop(listener);
}

#[tokio::test]
async fn ordinary_connection_runs_sql() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major).start();
        let cfg = parse(&format!(
            "{} passfile='{}'",
            pg.conninfo("postgres"),
            no_passfile(&pg)
        ));
        assert_eq!(cfg.replication, ReplicationMode::Off);
        let mut conn = connect(&ctx, &cfg).await;
        assert!(!conn.is_replication(), "{ctx}");
        assert_eq!(query_one(&ctx, &mut conn, "SELECT 1").await, "1");

        pg.psql("CREATE TABLE t AS SELECT 1 AS x");
        let lsn = query_one(&ctx, &mut conn, "SELECT pg_switch_wal()").await;
        assert!(lsn.contains('/'), "{ctx}: pg_switch_wal returned {lsn:?}");

        // Several statements: one result set each.
        let rs = conn.simple_query("SELECT 1; SELECT 2, 3").await.unwrap();
        assert_eq!(rs.len(), 2, "{ctx}");
        assert_eq!(rs[1].rows[0].len(), 2, "{ctx}");

        // An ERROR leaves the session usable.
        let e = conn.simple_query("SELECT 1/0").await.unwrap_err();
        assert_eq!(e.code(), Some("22012"), "{ctx}: {e}");
        assert!(!e.is_connection_lost(), "{ctx}");
        assert_eq!(query_one(&ctx, &mut conn, "SELECT 2").await, "2");

        // Replication commands need a replication connection.
        let e = conn.identify_system().await.unwrap_err();
        assert!(
            e.to_string().contains("IDENTIFY_SYSTEM"),
            "{ctx}: IDENTIFY_SYSTEM on an ordinary connection: {e}"
        );
        conn.close().await;
    }
}
