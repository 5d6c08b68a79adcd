//! Opening a connection: host list and target_session_attrs, sslmode and the SSLRequest,
//! the StartupMessage and the authentication exchange.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::{Connection, ServerVersion, Transport};
use crate::auth::md5::md5_password_message;
use crate::auth::scram::ScramClient;
use crate::auth::{
    check_authentication_ok, check_method_allowed, select_sasl_mechanism, AuthError, AuthMethod,
};
use crate::codec::{self, AuthRequest, BackendMessage};
use crate::config::{Config, Host, ReplicationMode, SslMode, Target, TargetSessionAttrs};
use crate::error::{Error, ProtocolError};
use crate::tls::{self, TlsError};

/// Whether to ask for TLS on one connection attempt.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum TlsAttempt {
    No,
    /// Ask; go on in plaintext if the server says no.
    Try,
    /// Ask; fail if the server says no.
    Require,
}

impl Connection {
    /// Connects as `config` says: each host in turn until one is reachable, accepts us, and
    /// matches target_session_attrs. With several hosts, every host's failure is reported.
    pub async fn connect(config: &Config) -> Result<Connection, Error> {
        if config.targets.is_empty() {
            return Err(Error::Config(crate::config::ConfigError::Other(
                "no host to connect to".into(),
            )));
        }
        let mut errors = Vec::new();
        // prefer-standby: a first pass that wants a standby, then any server.
        let passes: &[TargetSessionAttrs] = match config.target_session_attrs {
            TargetSessionAttrs::PreferStandby => {
                &[TargetSessionAttrs::Standby, TargetSessionAttrs::Any]
            }
            ref one => std::slice::from_ref(one),
        };
        for &attrs in passes {
            for target in &config.targets {
                match connect_target(config, target).await {
                    Ok(mut conn) => match conn.session_attrs_mismatch(attrs).await {
                        Ok(None) => return Ok(conn),
                        Ok(Some(reason)) => {
                            tracing::info!(%target, reason, "skipping server");
                            conn.close().await;
                            errors.push(Error::SessionAttrs {
                                target: target.to_string(),
                                reason,
                            });
                        }
                        Err(e) => errors.push(e),
                    },
                    Err(e) => {
                        tracing::info!(%target, error = %e, "connection attempt failed");
                        errors.push(e);
                    }
                }
            }
        }
        if errors.len() == 1 {
            Err(errors.remove(0))
        } else {
            Err(Error::AllHostsFailed(errors))
        }
    }

    /// `None` when the server matches `attrs`, else why not.
    async fn session_attrs_mismatch(
        &mut self,
        attrs: TargetSessionAttrs,
    ) -> Result<Option<String>, Error> {
        let want = match attrs {
            TargetSessionAttrs::Any | TargetSessionAttrs::PreferStandby => return Ok(None),
            TargetSessionAttrs::ReadWrite => (false, "read-write", "read-only"),
            TargetSessionAttrs::ReadOnly => (true, "read-only", "read-write"),
            TargetSessionAttrs::Primary => (false, "primary", "in recovery (a standby)"),
            TargetSessionAttrs::Standby => (true, "standby", "not in recovery (a primary)"),
        };
        let actual = match attrs {
            TargetSessionAttrs::ReadWrite | TargetSessionAttrs::ReadOnly => {
                self.is_read_only().await?
            }
            _ => self.is_in_recovery().await?,
        };
        Ok((actual != want.0).then(|| {
            format!(
                "target_session_attrs={} but the server is {}",
                want.1, want.2
            )
        }))
    }

    /// Whether the server is in recovery. 14+ report `in_hot_standby`; before that, a
    /// walsender accepts no SQL, so we infer it from SHOW as libpq does for read-only checks.
    pub async fn is_in_recovery(&mut self) -> Result<bool, Error> {
        if let Some(v) = self.parameter("in_hot_standby") {
            return Ok(v == "on");
        }
        if !self.replication {
            let rs = self
                .simple_query("SELECT pg_catalog.pg_is_in_recovery()")
                .await?;
            let v = rs
                .first()
                .and_then(|r| r.rows.first())
                .and_then(|row| row.first().cloned().flatten());
            return Ok(v.as_deref() == Some(b"t"));
        }
        // In recovery every transaction is read-only whatever default_transaction_read_only says.
        let tro = self.show("transaction_read_only").await?;
        let dtro = self.show("default_transaction_read_only").await?;
        Ok(tro == "on" && dtro == "off")
    }

    /// Whether new transactions are read-only (a standby, or default_transaction_read_only).
    pub async fn is_read_only(&mut self) -> Result<bool, Error> {
        if let (Some(hs), Some(dtro)) = (
            self.parameter("in_hot_standby"),
            self.parameter("default_transaction_read_only"),
        ) {
            return Ok(hs == "on" || dtro == "on");
        }
        Ok(self.show("transaction_read_only").await? == "on")
    }

    /// `SHOW name`, which both ordinary and replication connections accept.
    pub async fn show(&mut self, name: &str) -> Result<String, Error> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(Error::InvalidArgument(format!(
                "{name:?} is not a configuration parameter name"
            )));
        }
        let sql = format!("SHOW {name}");
        let rs = self.simple_query(&sql).await?;
        let first = rs
            .first()
            .ok_or_else(|| Error::unexpected_result(&sql, "no result set"))?;
        let row = first.single_row(&sql)?;
        let v = row
            .first()
            .cloned()
            .flatten()
            .ok_or_else(|| Error::unexpected_result(&sql, "NULL value"))?;
        String::from_utf8(v.to_vec()).map_err(|_| Error::unexpected_result(&sql, "not UTF-8"))
    }
}

async fn connect_target(config: &Config, target: &Target) -> Result<Connection, Error> {
    let attempt = async {
        let is_unix = matches!(target.host, Host::Unix(_));
        if is_unix {
            // libpq never uses TLS on Unix-domain sockets, whatever sslmode says.
            return connect_once(config, target, TlsAttempt::No).await;
        }
        match config.sslmode {
            SslMode::Disable => connect_once(config, target, TlsAttempt::No).await,
            SslMode::Allow => match connect_once(config, target, TlsAttempt::No).await {
                // The server may insist on TLS (hostssl lines): try again with it.
                Err(Error::Server(e)) if e.code == "28000" => {
                    connect_once(config, target, TlsAttempt::Require).await
                }
                r => r,
            },
            SslMode::Prefer => match connect_once(config, target, TlsAttempt::Try).await {
                // A failed handshake (not a refusal, which Try already handles): plaintext.
                Err(Error::Tls { source, .. }) if !is_config_problem(&source) => {
                    tracing::info!(%target, error = %source, "TLS failed, retrying without (sslmode=prefer)");
                    connect_once(config, target, TlsAttempt::No).await
                }
                r => r,
            },
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                connect_once(config, target, TlsAttempt::Require).await
            }
        }
    };
    match config.connect_timeout {
        Some(limit) => {
            tokio::time::timeout(limit, attempt)
                .await
                .map_err(|_| Error::ConnectTimeout {
                    target: target.to_string(),
                    seconds: limit.as_secs(),
                })?
        }
        None => attempt.await,
    }
}

/// Problems in our own TLS settings are reported, never papered over by falling back.
fn is_config_problem(e: &TlsError) -> bool {
    matches!(
        e,
        TlsError::RootCertMissing { .. } | TlsError::ClientKeyPermissions { .. }
    )
}

async fn open_socket(target: &Target) -> Result<Transport, Error> {
    let connect_err = |source: io::Error| Error::Connect {
        target: target.to_string(),
        source,
    };
    match &target.host {
        Host::Unix(dir) => {
            let path: PathBuf = dir.join(format!(".s.PGSQL.{}", target.port));
            let s = UnixStream::connect(&path).await.map_err(connect_err)?;
            Ok(Transport::Unix(s))
        }
        Host::Tcp(name) => {
            let addr = target.hostaddr.as_deref().unwrap_or(name);
            let s = TcpStream::connect((addr, target.port))
                .await
                .map_err(connect_err)?;
            s.set_nodelay(true).map_err(connect_err)?;
            Ok(Transport::Tcp(s))
        }
    }
}

async fn negotiate_tls(
    config: &Config,
    target: &Target,
    transport: Transport,
    mode: TlsAttempt,
) -> Result<Transport, Error> {
    let tls_err = |source: TlsError| Error::Tls {
        target: target.to_string(),
        source,
    };
    let Transport::Tcp(mut tcp) = transport else {
        return Ok(transport);
    };
    // Check our own settings before talking to the server.
    let connector = tls::build_connector(config).map_err(tls_err)?;
    tcp.write_all(&codec::write::SSL_REQUEST)
        .await
        .map_err(Error::lost)?;
    // Exactly one byte: anything the server sends after 'S' belongs to the TLS handshake, and
    // bytes buffered in plaintext before it would be an injection (CVE-2021-23222).
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(Error::lost)?;
    match answer[0] {
        b'S' => {
            let host_name = match &target.host {
                Host::Tcp(h) => h.clone(),
                Host::Unix(_) => String::new(),
            };
            let ssl = tls::handshake(&connector, tcp, config, &host_name)
                .await
                .map_err(tls_err)?;
            Ok(Transport::Tls(Box::new(ssl)))
        }
        b'N' if mode == TlsAttempt::Try => Ok(Transport::Tcp(tcp)),
        b'N' => Err(tls_err(TlsError::ServerRefused {
            sslmode: config.sslmode.as_str().to_string(),
        })),
        // An ErrorResponse: a pre-7.0 server or a hostile one. Its text is not shown (CVE-2024-10977).
        b'E' => Err(tls_err(TlsError::ServerRefused {
            sslmode: config.sslmode.as_str().to_string(),
        })),
        other => Err(Error::Protocol(ProtocolError::Unexpected {
            tag: char::from(other),
            context: "in answer to SSLRequest",
        })),
    }
}

async fn connect_once(
    config: &Config,
    target: &Target,
    tls_mode: TlsAttempt,
) -> Result<Connection, Error> {
    let mut transport = open_socket(target).await?;
    if tls_mode != TlsAttempt::No {
        transport = negotiate_tls(config, target, transport, tls_mode).await?;
    }
    let replication = config.replication == ReplicationMode::Physical;
    let mut conn = Connection {
        transport,
        rbuf: BytesMut::with_capacity(8192),
        spare_reads: Default::default(),
        rbuf_is_standard: false,
        wbuf: BytesMut::with_capacity(8192),
        max_message_size: codec::DEFAULT_MAX_MESSAGE_SIZE,
        parameters: HashMap::new(),
        server_version: ServerVersion { major: 0, minor: 0 },
        process_id: 0,
        target: target.clone(),
        replication,
        notices: Vec::new(),
        bulk_reads: false,
        last_read_waited: false,
        broken: None,
    };
    let user = config.effective_user();
    let dbname = config.dbname.clone().unwrap_or_else(|| user.clone());
    let app = config.application_name.as_deref().unwrap_or("pgstream");
    let mut params: Vec<(&str, &str)> = vec![("user", &user), ("client_encoding", "UTF8")];
    if replication {
        params.push(("replication", "true"));
    } else {
        params.push(("database", &dbname));
    }
    params.push(("application_name", app));
    if let Some(options) = config.options.as_deref() {
        params.push(("options", options));
    }
    codec::write::startup(&params, &mut conn.wbuf)?;
    conn.flush().await?;
    authenticate(&mut conn, config, target).await?;
    // ParameterStatus, BackendKeyData, up to ReadyForQuery.
    loop {
        match conn.read_message().await? {
            BackendMessage::BackendKeyData { process_id, .. } => conn.process_id = process_id,
            BackendMessage::ReadyForQuery(_) => break,
            BackendMessage::ErrorResponse(e) => return Err(Error::Server(Box::new(e))),
            BackendMessage::NegotiateProtocolVersion { .. } => {}
            other => return Err(conn.protocol_violation(other.tag(), "during startup")),
        }
    }
    conn.server_version = conn
        .parameter("server_version")
        .and_then(ServerVersion::parse)
        .ok_or_else(|| {
            Error::Protocol(ProtocolError::malformed(
                "ParameterStatus",
                "the server did not report a parsable server_version",
            ))
        })?;
    tracing::debug!(%target, version = %conn.server_version, tls = conn.is_tls(), replication, "connected");
    Ok(conn)
}

async fn authenticate(
    conn: &mut Connection,
    config: &Config,
    target: &Target,
) -> Result<(), Error> {
    let auth_err = |source: AuthError| Error::Auth {
        target: target.to_string(),
        source,
    };
    let password = || {
        config
            .password_for(target)
            .ok_or(AuthError::PasswordRequired)
    };
    let mut scram: Option<ScramClient> = None;
    let mut method = AuthMethod::Trust;
    loop {
        let request = match conn.read_message().await? {
            BackendMessage::Authentication(r) => r,
            BackendMessage::ErrorResponse(e) => return Err(Error::Server(Box::new(e))),
            BackendMessage::NegotiateProtocolVersion { .. } => continue,
            other => return Err(conn.protocol_violation(other.tag(), "during authentication")),
        };
        match request {
            AuthRequest::Ok => {
                if method != AuthMethod::Sasl {
                    check_method_allowed(method, config.channel_binding).map_err(auth_err)?;
                }
                // Also refuses an AuthenticationOk before the server proved it knows the
                // password (a SCRAM exchange cut short), and missing binding under require.
                check_authentication_ok(scram.as_ref(), config.channel_binding)
                    .map_err(auth_err)?;
                return Ok(());
            }
            AuthRequest::CleartextPassword => {
                method = AuthMethod::Cleartext;
                check_method_allowed(method, config.channel_binding).map_err(auth_err)?;
                let pw = password().map_err(auth_err)?;
                codec::write::password(pw.as_bytes(), &mut conn.wbuf)?;
                conn.flush().await?;
            }
            AuthRequest::Md5Password { salt } => {
                method = AuthMethod::Md5;
                check_method_allowed(method, config.channel_binding).map_err(auth_err)?;
                let pw = password().map_err(auth_err)?;
                let hashed = md5_password_message(&config.effective_user(), &pw, salt);
                codec::write::password(hashed.as_bytes(), &mut conn.wbuf)?;
                conn.flush().await?;
            }
            AuthRequest::Sasl(mechanisms) => {
                method = AuthMethod::Sasl;
                let pw = password().map_err(auth_err)?;
                let cbind = match conn.transport.ssl() {
                    Some(ssl) => tls::tls_server_end_point(ssl).map_err(|source| Error::Tls {
                        target: target.to_string(),
                        source,
                    })?,
                    None => None,
                };
                let choice = select_sasl_mechanism(&mechanisms, cbind, config.channel_binding)
                    .map_err(auth_err)?;
                let client = ScramClient::new(&pw, choice);
                codec::write::sasl_initial_response(
                    client.mechanism(),
                    &client.client_first_message(),
                    &mut conn.wbuf,
                )?;
                conn.flush().await?;
                scram = Some(client);
            }
            AuthRequest::SaslContinue(data) => {
                let Some(mut client) = scram.take() else {
                    return Err(conn.protocol_violation('R', "(SASLContinue without SASL)"));
                };
                // PBKDF2 with a high iteration count takes a while: keep it off the reactor.
                let (client, reply) = tokio::task::spawn_blocking(move || {
                    let reply = client.handle_server_first(&data);
                    (client, reply)
                })
                .await
                .map_err(|e| auth_err(AuthError::Other(format!("SCRAM worker failed: {e}"))))?;
                let reply = reply.map_err(auth_err)?;
                codec::write::sasl_response(&reply, &mut conn.wbuf)?;
                conn.flush().await?;
                scram = Some(client);
            }
            AuthRequest::SaslFinal(data) => {
                let Some(client) = scram.as_ref() else {
                    return Err(conn.protocol_violation('R', "(SASLFinal without SASL)"));
                };
                client.verify_server_final(&data).map_err(auth_err)?;
            }
            AuthRequest::Unsupported(code) => {
                return Err(auth_err(AuthError::UnsupportedAuthMethod { code }));
            }
        }
    }
}
