//! Authentication of pgwire-repl against real servers, over physical replication connections:
//! every pg_hba.conf method pgstream supports (trust on TCP and Unix sockets, password, md5,
//! scram-sha-256 with PostgreSQL's and with a high iteration count, SCRAM-SHA-256-PLUS over
//! verify-full TLS, client certificates), and the refusals a DBA will meet, each checked for
//! its error variant and for a message that names the cause.

mod support;

use std::path::Path;

use integration::{cluster, quote_literal, test_majors, Cluster, TlsOptions};
use pgwire_repl::auth::AuthError;
use pgwire_repl::config::{Config, Host};
use pgwire_repl::tls::TlsError;
use pgwire_repl::{Connection, Error};

/// Parses `conninfo` (no PG* environment) and connects.
async fn try_connect(conninfo: &str) -> Result<Connection, Error> {
    let cfg = Config::parse(conninfo).unwrap_or_else(|e| panic!("parsing {conninfo:?}: {e}"));
    Connection::connect(&cfg).await
}

/// Connects, checks that the connection is a physical walsender and runs IDENTIFY_SYSTEM.
async fn physical(ctx: &str, conninfo: &str) -> Connection {
    let mut conn = try_connect(conninfo)
        .await
        .unwrap_or_else(|e| panic!("{ctx}: connecting with {conninfo:?}: {e}"));
    assert!(conn.is_replication(), "{ctx}: not a replication connection");
    let id = conn
        .identify_system()
        .await
        .unwrap_or_else(|e| panic!("{ctx}: IDENTIFY_SYSTEM: {e}"));
    assert!(id.system_id != 0, "{ctx}: system identifier 0");
    assert_eq!(id.timeline.0, 1, "{ctx}: timeline");
    conn
}

/// The error of a connection attempt that must fail.
async fn refused(ctx: &str, conninfo: &str) -> Error {
    match try_connect(conninfo).await {
        Ok(conn) => panic!(
            "{ctx}: connecting with {conninfo:?} succeeded (pid {}), expected an error",
            conn.process_id()
        ),
        Err(e) => e,
    }
}

/// TCP conninfo for a physical replication connection without TLS.
fn tcp(pg: &Cluster, user: &str, extra: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={user} replication=true sslmode=disable {extra}",
        pg.port()
    )
}

/// TLS conninfo for a physical replication connection.
fn tls(pg: &Cluster, host: &str, user: &str, sslmode: &str, root: &Path, extra: &str) -> String {
    format!(
        "host={host} port={} user={user} replication=true sslmode={sslmode} sslrootcert='{}' \
         {extra}",
        pg.port(),
        root.display()
    )
}

/// A password-less conninfo must not pick one up from the tester's ~/.pgpass.
fn no_passfile(pg: &Cluster) -> String {
    format!(
        "passfile='{}'",
        pg.temp_dir().join("no-such-pgpass").display()
    )
}

/// Asserts the server's pg_stat_ssl shows the backend `pid` using TLS; returns client_dn.
fn assert_server_sees_tls(ctx: &str, pg: &Cluster, pid: i32) -> String {
    let row = pg.psql(&format!(
        "SELECT ssl, coalesce(client_dn, '') FROM pg_stat_ssl WHERE pid = {pid}"
    ));
    let (ssl, dn) = row.split_once('|').unwrap_or((&row, ""));
    assert_eq!(ssl, "t", "{ctx}: pg_stat_ssl for walsender {pid}: {row:?}");
    dn.to_string()
}

fn auth_source(e: &Error) -> Option<&AuthError> {
    match e {
        Error::Auth { source, .. } => Some(source),
        _ => None,
    }
}

fn tls_source(e: &Error) -> Option<&TlsError> {
    match e {
        Error::Tls { source, .. } => Some(source),
        _ => None,
    }
}

#[tokio::test]
async fn trust_over_tcp_and_unix_socket() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major).start();

        let conn = physical(&ctx, &tcp(&pg, "postgres", "")).await;
        assert!(!conn.is_tls(), "{ctx}: sslmode=disable gave TLS");
        assert!(
            matches!(conn.target().host, Host::Tcp(ref h) if h == "127.0.0.1"),
            "{ctx}: target {}",
            conn.target()
        );
        assert_eq!(conn.server_version().major, major, "{ctx}");
        conn.close().await;

        // sslmode=require is ignored on a Unix socket, as libpq does.
        let unix = format!(
            "host='{}' port={} user=postgres replication=true sslmode=require",
            pg.socket_dir().display(),
            pg.port()
        );
        let conn = physical(&ctx, &unix).await;
        assert!(
            matches!(conn.target().host, Host::Unix(ref d) if d == pg.socket_dir()),
            "{ctx}: target {}",
            conn.target()
        );
        assert!(!conn.is_tls(), "{ctx}: TLS on a Unix socket");
        let backend = pg.psql(&format!(
            "SELECT backend_type, coalesce(client_port, -1) FROM pg_stat_activity \
             WHERE pid = {}",
            conn.process_id()
        ));
        assert_eq!(backend, "walsender|-1", "{ctx}: Unix-socket walsender");
        conn.close().await;
    }
}

#[tokio::test]
async fn password_md5_and_scram_methods() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major)
            .hba("host replication pw_user 127.0.0.1/32 password")
            .hba("host replication md5_user 127.0.0.1/32 md5")
            .hba("host replication scram_user 127.0.0.1/32 scram-sha-256")
            .hba("host replication scram_slow 127.0.0.1/32 scram-sha-256")
            .start();
        pg.psql(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE pw_user WITH REPLICATION LOGIN PASSWORD 'clear-Secret-1';
             CREATE ROLE scram_user WITH REPLICATION LOGIN PASSWORD 'scram-Secret-3';
             SET password_encryption = 'md5';
             CREATE ROLE md5_user WITH REPLICATION LOGIN PASSWORD 'md5-Secret-2';",
        );
        let stored = |role: &str| {
            pg.psql(&format!(
                "SELECT rolpassword FROM pg_authid WHERE rolname = {}",
                quote_literal(role)
            ))
        };
        assert!(stored("md5_user").starts_with("md5"), "{ctx}: md5 verifier");
        assert!(
            stored("scram_user").starts_with("SCRAM-SHA-256$4096:"),
            "{ctx}: SCRAM verifier"
        );

        for (user, password) in [
            ("pw_user", "clear-Secret-1"),
            ("md5_user", "md5-Secret-2"),
            ("scram_user", "scram-Secret-3"),
        ] {
            let ctx = format!("{ctx}, {user}");
            let conn = physical(&ctx, &tcp(&pg, user, &format!("password={password}"))).await;
            assert!(!conn.is_tls(), "{ctx}");
            conn.close().await;
        }

        // The iteration count is the server's to choose (16+); postgres-protocol's SCRAM
        // client stops at 100 000, ours does not.
        if major >= 16 {
            pg.psql(
                "SET password_encryption = 'scram-sha-256';
                 SET scram_iterations = 200000;
                 CREATE ROLE scram_slow WITH REPLICATION LOGIN PASSWORD 'slow-Secret-4';",
            );
            let verifier = stored("scram_slow");
            assert!(
                verifier.starts_with("SCRAM-SHA-256$200000:"),
                "{ctx}: verifier {verifier:?}"
            );
            let conn = physical(
                &format!("{ctx}, 200000 SCRAM iterations"),
                &tcp(&pg, "scram_slow", "password=slow-Secret-4"),
            )
            .await;
            conn.close().await;
        }
    }
}

#[tokio::test]
async fn password_refusals_name_their_cause() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major)
            .hba("host replication pw_user 127.0.0.1/32 password")
            .hba("host replication md5_user 127.0.0.1/32 md5")
            .hba("host replication scram_user 127.0.0.1/32 scram-sha-256")
            .start();
        pg.psql(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE pw_user WITH REPLICATION LOGIN PASSWORD 'clear-Secret-1';
             CREATE ROLE scram_user WITH REPLICATION LOGIN PASSWORD 'scram-Secret-3';
             CREATE ROLE login_only WITH LOGIN;
             SET password_encryption = 'md5';
             CREATE ROLE md5_user WITH REPLICATION LOGIN PASSWORD 'md5-Secret-2';",
        );

        // A wrong password: the server's 28P01, without the password in the text.
        let wrong = "Wr0ng-Guess-xyzzy";
        for user in ["pw_user", "md5_user", "scram_user"] {
            let ctx = format!("{ctx}, {user} with a wrong password");
            let e = refused(&ctx, &tcp(&pg, user, &format!("password={wrong}"))).await;
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("{ctx}: expected a server error, got {e:?}"));
            assert_eq!(db.code, "28P01", "{ctx}: {e}");
            assert_eq!(db.severity, "FATAL", "{ctx}: {e}");
            let text = e.to_string();
            assert!(
                text.contains(&format!(
                    "password authentication failed for user \"{user}\""
                )),
                "{ctx}: {text}"
            );
            assert!(
                !text.contains(wrong) && !format!("{e:?}").contains(wrong),
                "{ctx}: the password leaked into the error: {text}"
            );
        }

        // No password at all: refused on our side, before anything is sent.
        for user in ["pw_user", "md5_user", "scram_user"] {
            let ctx = format!("{ctx}, {user} without a password");
            let e = refused(&ctx, &tcp(&pg, user, &no_passfile(&pg))).await;
            assert_eq!(
                auth_source(&e),
                Some(&AuthError::PasswordRequired),
                "{ctx}: {e:?}"
            );
            let text = e.to_string();
            assert!(
                text.contains("asked for a password but none was given")
                    && text.contains(&pg.port().to_string()),
                "{ctx}: {text}"
            );
        }

        // A role without REPLICATION may log in, but not start a walsender.
        let e = refused(&ctx, &tcp(&pg, "login_only", "")).await;
        let db = e
            .as_db_error()
            .unwrap_or_else(|| panic!("{ctx}: expected a server error, got {e:?}"));
        assert_eq!(db.code, "42501", "{ctx}: {e}");
        let want = if major >= 16 {
            "permission denied to start WAL sender"
        } else {
            "must be superuser or replication role to start walsender"
        };
        assert!(e.to_string().contains(want), "{ctx}: {e}");

        // channel_binding=require cannot be met without TLS: refused, whatever the method,
        // and before a password is sent.
        for (user, password, cause) in [
            ("postgres", "", "without channel binding"),
            ("pw_user", "clear-Secret-1", "cleartext password"),
            ("md5_user", "md5-Secret-2", "MD5"),
            ("scram_user", "scram-Secret-3", "SSL is not in use"),
        ] {
            let ctx = format!("{ctx}, {user} with channel_binding=require in plaintext");
            let extra = format!("channel_binding=require password='{password}'");
            let e = refused(&ctx, &tcp(&pg, user, &extra)).await;
            assert!(
                matches!(
                    auth_source(&e),
                    Some(AuthError::ChannelBindingRequired { .. })
                ),
                "{ctx}: {e:?}"
            );
            let text = e.to_string();
            assert!(
                text.contains("channel binding required") && text.contains(cause),
                "{ctx}: {text}"
            );
            if !password.is_empty() {
                assert!(!text.contains(password), "{ctx}: password leaked: {text}");
            }
        }

        // sslmode=require against a server without TLS.
        let e = refused(
            &ctx,
            &format!(
                "host=127.0.0.1 port={} user=postgres replication=true sslmode=require",
                pg.port()
            ),
        )
        .await;
        assert!(
            matches!(tls_source(&e), Some(TlsError::ServerRefused { .. })),
            "{ctx}: {e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("server does not support SSL") && text.contains("sslmode=require"),
            "{ctx}: {text}"
        );

        // A host name that does not resolve.
        let e = refused(
            &ctx,
            &format!(
                "host=no-such-host.invalid port={} user=postgres replication=true \
                 sslmode=disable connect_timeout=20",
                pg.port()
            ),
        )
        .await;
        match &e {
            Error::Connect { target, .. } => {
                assert!(target.contains("no-such-host.invalid"), "{ctx}: {e}")
            }
            other => panic!("{ctx}: expected Error::Connect, got {other:?}"),
        }
        assert!(
            e.to_string()
                .starts_with("could not connect to no-such-host.invalid:"),
            "{ctx}: {e}"
        );
    }
}

#[tokio::test]
async fn scram_plus_and_client_certificates_over_tls() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major)
            .tls(TlsOptions {
                client_ca: true,
                ..TlsOptions::default()
            })
            .hba("hostssl replication scram_tls 127.0.0.1/32 scram-sha-256")
            .hba("hostssl replication all 127.0.0.1/32 cert")
            .start();
        pg.psql(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE scram_tls WITH REPLICATION LOGIN PASSWORD 'tls-Secret-5';
             CREATE ROLE certuser WITH REPLICATION LOGIN;",
        );
        let paths = pg.tls().clone();

        // SCRAM-SHA-256-PLUS: channel_binding=require only succeeds when the binding to the
        // server certificate was made and verified by the server.
        let plus = tls(
            &pg,
            "localhost",
            "scram_tls",
            "verify-full",
            &paths.ca_cert_path,
            "password=tls-Secret-5 channel_binding=require",
        );
        let conn = physical(&format!("{ctx}, SCRAM-SHA-256-PLUS"), &plus).await;
        assert!(conn.is_tls(), "{ctx}: PLUS connection is not TLS");
        assert_server_sees_tls(&ctx, &pg, conn.process_id());
        conn.close().await;

        // Plain SCRAM-SHA-256 inside TLS when binding is disabled.
        let conn = physical(
            &format!("{ctx}, channel_binding=disable"),
            &tls(
                &pg,
                "localhost",
                "scram_tls",
                "verify-full",
                &paths.ca_cert_path,
                "password=tls-Secret-5 channel_binding=disable",
            ),
        )
        .await;
        assert!(conn.is_tls(), "{ctx}");
        conn.close().await;

        // Client certificate authentication ("cert"): no password at all.
        let (cert, key) = pg.client_cert("certuser");
        let with_cert = tls(
            &pg,
            "localhost",
            "certuser",
            "verify-full",
            &paths.ca_cert_path,
            &format!(
                "sslcert='{}' sslkey='{}' {}",
                cert.display(),
                key.display(),
                no_passfile(&pg)
            ),
        );
        let conn = physical(&format!("{ctx}, client certificate"), &with_cert).await;
        assert!(conn.is_tls(), "{ctx}");
        let dn = assert_server_sees_tls(&ctx, &pg, conn.process_id());
        assert!(dn.contains("CN=certuser"), "{ctx}: client_dn {dn:?}");
        conn.close().await;

        // The same without a certificate: the server refuses.
        let without = tls(
            &pg,
            "localhost",
            "certuser",
            "verify-full",
            &paths.ca_cert_path,
            &no_passfile(&pg),
        );
        let e = refused(&ctx, &without).await;
        assert_eq!(e.code(), Some("28000"), "{ctx}: {e:?}");
        assert!(
            e.to_string()
                .contains("connection requires a valid client certificate"),
            "{ctx}: {e}"
        );

        // A server certificate checked against an unrelated CA.
        let e = refused(
            &ctx,
            &tls(
                &pg,
                "localhost",
                "postgres",
                "verify-ca",
                &paths.wrong_ca_path,
                "",
            ),
        )
        .await;
        assert!(
            matches!(tls_source(&e), Some(TlsError::CertificateVerify { .. })),
            "{ctx}: {e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("server certificate verification failed")
                && text.contains("not signed by a CA in sslrootcert")
                && text.contains("wrong-ca.crt"),
            "{ctx}: {text}"
        );
    }
}

#[tokio::test]
async fn verify_full_checks_the_host_name() {
    for major in test_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = cluster(major)
            .tls(TlsOptions {
                server_names: vec!["db.example.test".into()],
                client_ca: false,
            })
            .start();
        let ca = pg.tls().ca_cert_path.clone();

        // Connecting to 127.0.0.1 under the name in the certificate passes verify-full.
        let conn = physical(
            &format!("{ctx}, host=db.example.test"),
            &tls(
                &pg,
                "db.example.test",
                "postgres",
                "verify-full",
                &ca,
                "hostaddr=127.0.0.1",
            ),
        )
        .await;
        assert!(conn.is_tls(), "{ctx}");
        conn.close().await;

        // Another name does not, though the chain is fine (verify-ca accepts it).
        let localhost = |mode| {
            tls(
                &pg,
                "localhost",
                "postgres",
                mode,
                &ca,
                "hostaddr=127.0.0.1",
            )
        };
        let e = refused(&ctx, &localhost("verify-full")).await;
        match tls_source(&e) {
            Some(TlsError::HostnameMismatch {
                first_name, host, ..
            }) => {
                assert_eq!(first_name, "db.example.test", "{ctx}");
                assert_eq!(host, "localhost", "{ctx}");
            }
            _ => panic!("{ctx}: expected a host name mismatch, got {e:?}"),
        }
        let text = e.to_string();
        assert!(
            text.contains("\"db.example.test\"")
                && text.contains("does not match host name \"localhost\""),
            "{ctx}: {text}"
        );
        let conn = physical(&format!("{ctx}, verify-ca"), &localhost("verify-ca")).await;
        assert!(conn.is_tls(), "{ctx}");
        conn.close().await;

        // Once the server stops serving TLS, verify-full refuses plaintext.
        pg.psql("ALTER SYSTEM SET ssl = off");
        pg.reload();
        support::wait_until(&format!("{ctx}: ssl is off"), || {
            pg.psql("SHOW ssl") == "off"
        });
        let e = refused(&ctx, &localhost("verify-full")).await;
        assert!(
            matches!(tls_source(&e), Some(TlsError::ServerRefused { .. })),
            "{ctx}: {e:?}"
        );
        assert!(
            e.to_string()
                .contains("server does not support SSL, but sslmode=verify-full requires it"),
            "{ctx}: {e}"
        );
    }
}
