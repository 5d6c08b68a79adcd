//! TLS through OpenSSL: sslmode semantics, certificate checks and channel-binding data.
//!
//! Follows libpq (fe-secure-openssl.c, fe-secure-common.c):
//! - the root certificates are `sslrootcert`, else `~/.postgresql/root.crt`; when that file
//!   exists the chain is verified whatever the sslmode (so `require` acts as `verify-ca`);
//!   `verify-ca`/`verify-full` without it fail before connecting; `~/.postgresql/root.crl` is
//!   applied when present; `sslrootcert=system` uses OpenSSL's default trust store and demands
//!   `verify-full`;
//! - `verify-full` also matches the host name against the certificate (our own check, for
//!   libpq's error messages);
//! - the client certificate is `sslcert`, else `~/.postgresql/postgresql.crt`, used only if the
//!   file exists; its key (`sslkey`, else `~/.postgresql/postgresql.key`) must not be group or
//!   world accessible.
//!
//! The SSLRequest exchange itself belongs to the connection; this module provides the bytes.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslOptions, SslRef, SslVerifyMode,
    SslVersion,
};
use openssl::x509::store::{X509Lookup, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509Ref, X509VerifyResult};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::config::{Config, SslMode};

/// SSLRequest: length 8, code 80877103. The server answers one byte, `S` or `N`.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F];

const ROOT_CERT_FILE: &str = ".postgresql/root.crt";
const ROOT_CRL_FILE: &str = ".postgresql/root.crl";
const USER_CERT_FILE: &str = ".postgresql/postgresql.crt";
const USER_KEY_FILE: &str = ".postgresql/postgresql.key";

/// A TLS failure: refused by the server, a handshake error or a certificate problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server does not support SSL, but sslmode={sslmode} requires it")]
    ServerRefused { sslmode: String },
    #[error("root certificate file \"{}\" does not exist; {hint}", .path.display())]
    RootCertMissing { path: PathBuf, hint: String },
    #[error("could not read root certificate file \"{}\": {reason}", .path.display())]
    RootCertLoad { path: PathBuf, reason: String },
    #[error(
        "weak sslmode \"{sslmode}\" may not be used with sslrootcert=system (use \"verify-full\")"
    )]
    WeakSslModeWithSystemRoots { sslmode: String },
    #[error("could not read client certificate file \"{}\": {reason}", .path.display())]
    ClientCertLoad { path: PathBuf, reason: String },
    #[error("client certificate present, but not private key file \"{}\" (set sslkey)", .path.display())]
    ClientKeyMissing { path: PathBuf },
    #[error("private key file \"{}\" is not a regular file", .path.display())]
    ClientKeyNotRegular { path: PathBuf },
    #[error("private key file \"{}\" has group or world access (mode {mode:04o}); it must have permissions u=rw (0600) or less if owned by the current user, or u=rw,g=r (0640) or less if owned by root: run chmod 0600 \"{}\"", .path.display(), .path.display())]
    ClientKeyPermissions { path: PathBuf, mode: u32 },
    #[error("could not load private key file \"{}\": {reason}", .path.display())]
    ClientKeyLoad { path: PathBuf, reason: String },
    #[error("client certificate \"{}\" does not match private key file \"{}\": {reason}", .cert.display(), .key.display())]
    ClientKeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    /// The certificate chain did not verify; `reason` is OpenSSL's verify result string.
    #[error("server certificate verification failed: {reason}{}", hint_suffix(.hint))]
    CertificateVerify {
        reason: String,
        hint: Option<String>,
    },
    #[error("server certificate for \"{first_name}\"{} does not match host name \"{host}\"", others(*.other_names))]
    HostnameMismatch {
        first_name: String,
        other_names: usize,
        host: String,
    },
    #[error("could not get server's host name from server certificate")]
    NoCertificateNames,
    #[error("SSL certificate's name contains embedded null")]
    EmbeddedNul,
    #[error("host name must be specified for a verified SSL connection (sslmode=verify-full)")]
    NoHostName,
    #[error("the server did not present a certificate")]
    NoPeerCertificate,
    #[error("could not compute the tls-server-end-point hash of the server certificate: {reason}")]
    CertificateHash { reason: String },
    #[error("invalid value \"{value}\" for {key} (expected TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3)")]
    InvalidProtocolVersion { key: &'static str, value: String },
    #[error("invalid SSL protocol version range: ssl_min_protocol_version is above ssl_max_protocol_version")]
    InvalidProtocolRange,
    #[error("could not set up TLS: {reason}")]
    Setup { reason: String },
    #[error("TLS handshake failed: {reason}")]
    Handshake { reason: String },
    #[error("I/O error during the TLS handshake: {0}")]
    Io(#[source] io::Error),
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
}

fn others(n: usize) -> String {
    match n {
        0 => String::new(),
        1 => " (and 1 other name)".to_string(),
        n => format!(" (and {n} other names)"),
    }
}

fn setup(e: openssl::error::ErrorStack) -> TlsError {
    TlsError::Setup {
        reason: e.to_string(),
    }
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Builds the client context for one connection attempt (call it before sending SSLRequest,
/// so that a bad local setup is reported without talking to the server).
pub fn build_connector(config: &Config) -> Result<SslContext, TlsError> {
    build_connector_in(config, home_dir().as_deref())
}

/// [`build_connector`] with the home directory used for the `~/.postgresql` defaults.
pub(crate) fn build_connector_in(
    config: &Config,
    home: Option<&Path>,
) -> Result<SslContext, TlsError> {
    // Not `SslConnector::builder`: it parses the system's whole CA bundle (15-20 ms, on every
    // connection, before each backup) into a store that is replaced below anyway. These are
    // the options and ciphers it would set.
    let mut builder = SslContextBuilder::new(SslMethod::tls_client()).map_err(setup)?;
    builder.set_options(
        (SslOptions::ALL
            | SslOptions::NO_COMPRESSION
            | SslOptions::NO_SSLV2
            | SslOptions::NO_SSLV3)
            & !SslOptions::DONT_INSERT_EMPTY_FRAGMENTS,
    );
    builder.set_mode(
        openssl::ssl::SslMode::AUTO_RETRY
            | openssl::ssl::SslMode::ACCEPT_MOVING_WRITE_BUFFER
            | openssl::ssl::SslMode::ENABLE_PARTIAL_WRITE
            | openssl::ssl::SslMode::RELEASE_BUFFERS,
    );
    builder
        .set_cipher_list("DEFAULT:!aNULL:!eNULL:!MD5:!3DES:!DES:!RC4:!IDEA:!SEED:!aDSS:!SRP:!PSK")
        .map_err(setup)?;
    let min = protocol_version(
        "ssl_min_protocol_version",
        config.ssl_min_protocol_version.as_deref(),
    )?
    // libpq's default ssl_min_protocol_version.
    .or(Some(SslVersion::TLS1_2));
    let max = protocol_version(
        "ssl_max_protocol_version",
        config.ssl_max_protocol_version.as_deref(),
    )?;
    if let (Some(lo), Some(hi)) = (min, max) {
        if version_rank(lo) > version_rank(hi) {
            return Err(TlsError::InvalidProtocolRange);
        }
    }
    builder.set_min_proto_version(min).map_err(setup)?;
    builder.set_max_proto_version(max).map_err(setup)?;
    // ALPN as libpq 17 sends it; servers before 17 ignore it.
    builder.set_alpn_protos(b"\x0apostgresql").map_err(setup)?;

    // An empty trust store: libpq uses the system roots only with sslrootcert=system.
    let mut store = X509StoreBuilder::new().map_err(setup)?;
    let verify = match config.sslrootcert.as_deref() {
        _ if config.uses_system_roots() => {
            if config.sslmode != SslMode::VerifyFull {
                return Err(TlsError::WeakSslModeWithSystemRoots {
                    sslmode: config.sslmode.as_str().to_string(),
                });
            }
            store.set_default_paths().map_err(setup)?;
            true
        }
        configured => {
            let path = match configured {
                Some(p) if !p.as_os_str().is_empty() => Some(p.to_path_buf()),
                _ => home.map(|h| h.join(ROOT_CERT_FILE)),
            };
            match path {
                Some(path) if path.exists() => {
                    load_root_certs(&mut store, &path)?;
                    if let Some(crl) = home.map(|h| h.join(ROOT_CRL_FILE)) {
                        load_default_crl(&mut store, &crl);
                    }
                    true
                }
                path if matches!(config.sslmode, SslMode::VerifyCa | SslMode::VerifyFull) => {
                    return Err(root_cert_missing(path));
                }
                _ => false,
            }
        }
    };
    builder.set_cert_store(store.build());
    builder.set_verify(if verify {
        SslVerifyMode::PEER
    } else {
        SslVerifyMode::NONE
    });

    load_client_certificate(&mut builder, config, home)?;
    Ok(builder.build())
}

/// libpq's spellings (case-insensitive); `None` for an unset or empty setting.
fn protocol_version(
    key: &'static str,
    value: Option<&str>,
) -> Result<Option<SslVersion>, TlsError> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let version = match value.to_ascii_lowercase().as_str() {
        "tlsv1" => SslVersion::TLS1,
        "tlsv1.1" => SslVersion::TLS1_1,
        "tlsv1.2" => SslVersion::TLS1_2,
        "tlsv1.3" => SslVersion::TLS1_3,
        _ => {
            return Err(TlsError::InvalidProtocolVersion {
                key,
                value: value.to_string(),
            })
        }
    };
    Ok(Some(version))
}

fn version_rank(v: SslVersion) -> u8 {
    [
        SslVersion::TLS1,
        SslVersion::TLS1_1,
        SslVersion::TLS1_2,
        SslVersion::TLS1_3,
    ]
    .iter()
    .position(|x| *x == v)
    .unwrap_or(0) as u8
}

fn root_cert_missing(path: Option<PathBuf>) -> TlsError {
    let hint = "either provide the file, use the system's trusted roots with sslrootcert=system, \
                or change sslmode to disable server certificate verification";
    match path {
        Some(path) => TlsError::RootCertMissing {
            path,
            hint: hint.to_string(),
        },
        None => TlsError::RootCertMissing {
            path: PathBuf::from("~").join(ROOT_CERT_FILE),
            hint: format!("the home directory could not be determined (HOME is unset); {hint}"),
        },
    }
}

/// libpq applies `~/.postgresql/root.crl` when it exists (pgstream refuses `sslcrl`), checking
/// revocation for the whole chain; a file that does not load is skipped, as libpq does.
fn load_default_crl(store: &mut X509StoreBuilder, crl: &Path) {
    // load_crl_file panics on a non-UTF-8 path.
    if !crl.exists() || crl.to_str().is_none() {
        return;
    }
    let loaded = store
        .add_lookup(X509Lookup::file())
        .and_then(|lookup| lookup.load_crl_file(crl, SslFiletype::PEM))
        .and_then(|_| store.set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL));
    if let Err(e) = loaded {
        tracing::warn!(path = %crl.display(), "ignoring certificate revocation list: {e}");
    }
}

fn load_root_certs(store: &mut X509StoreBuilder, path: &Path) -> Result<(), TlsError> {
    let load_err = |reason: String| TlsError::RootCertLoad {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| load_err(e.to_string()))?;
    let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| load_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(load_err("no PEM certificate found".to_string()));
    }
    for cert in certs {
        store.add_cert(cert).map_err(|e| load_err(e.to_string()))?;
    }
    Ok(())
}

fn load_client_certificate(
    builder: &mut SslContextBuilder,
    config: &Config,
    home: Option<&Path>,
) -> Result<(), TlsError> {
    let explicit = config
        .sslcert
        .as_deref()
        .filter(|p| !p.as_os_str().is_empty());
    let Some(cert) = explicit
        .map(Path::to_path_buf)
        .or_else(|| home.map(|h| h.join(USER_CERT_FILE)))
    else {
        return Ok(());
    };
    match std::fs::metadata(&cert) {
        Ok(_) => {}
        // As libpq: no certificate file means no client certificate.
        // 20 is ENOTDIR (Linux, macOS, BSDs); ErrorKind::NotADirectory needs Rust 1.83.
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => {
            if explicit.is_some() {
                tracing::warn!(path = %cert.display(), "sslcert file does not exist; connecting without a client certificate");
            }
            return Ok(());
        }
        Err(e) => {
            return Err(TlsError::ClientCertLoad {
                path: cert,
                reason: e.to_string(),
            })
        }
    }
    builder
        .set_certificate_chain_file(&cert)
        .map_err(|e| TlsError::ClientCertLoad {
            path: cert.clone(),
            reason: e.to_string(),
        })?;

    let configured_key = config
        .sslkey
        .as_deref()
        .filter(|p| !p.as_os_str().is_empty());
    let key = match (configured_key, home) {
        (Some(k), _) => k.to_path_buf(),
        (None, Some(h)) => h.join(USER_KEY_FILE),
        (None, None) => {
            return Err(TlsError::ClientKeyMissing {
                path: PathBuf::from("~").join(USER_KEY_FILE),
            })
        }
    };
    let pkey = load_private_key(&key, config.sslpassword.as_deref())?;
    builder
        .set_private_key(&pkey)
        // The key parsed, so the failure is OpenSSL's check against the certificate.
        .and_then(|()| builder.check_private_key())
        .map_err(|e| TlsError::ClientKeyMismatch {
            cert,
            key,
            reason: e.to_string(),
        })
}

/// Reads a PEM private key (decrypted with `sslpassword` if encrypted), refusing one that
/// others can read (libpq's rule).
fn load_private_key(
    path: &Path,
    passphrase: Option<&str>,
) -> Result<PKey<openssl::pkey::Private>, TlsError> {
    let meta = std::fs::metadata(path).map_err(|_| TlsError::ClientKeyMissing {
        path: path.to_path_buf(),
    })?;
    if !meta.is_file() {
        return Err(TlsError::ClientKeyNotRegular {
            path: path.to_path_buf(),
        });
    }
    check_key_permissions(path, &meta)?;
    let load_err = |reason: String| TlsError::ClientKeyLoad {
        path: path.to_path_buf(),
        reason,
    };
    let mut pem = std::fs::read(path).map_err(|e| load_err(e.to_string()))?;
    // Always pass a passphrase (empty without sslpassword): OpenSSL's default callback would
    // prompt on the terminal.
    let parsed = PKey::private_key_from_pem_passphrase(&pem, passphrase.unwrap_or("").as_bytes());
    let encrypted = memchr::memmem::find(&pem, b"ENCRYPTED").is_some();
    pem.iter_mut().for_each(|b| *b = 0);
    parsed.map_err(|e| {
        load_err(match (encrypted, passphrase) {
            (true, None) => {
                "the key is encrypted; give its passphrase with sslpassword".to_string()
            }
            (true, Some(_)) => "could not decrypt the key: is sslpassword correct?".to_string(),
            (false, _) => e.to_string(),
        })
    })
}

#[cfg(unix)]
fn check_key_permissions(path: &Path, meta: &std::fs::Metadata) -> Result<(), TlsError> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o7777;
    // Owned by root: group read is allowed (0640), as libpq allows for system-managed keys.
    let forbidden = if meta.uid() == 0 { 0o037 } else { 0o077 };
    if mode & forbidden != 0 {
        return Err(TlsError::ClientKeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_permissions(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), TlsError> {
    Ok(())
}

/// Runs the TLS handshake on a socket whose server answered `S` to SSLRequest, then (for
/// `verify-full`) checks the certificate against `host_name` (the `host` setting, not
/// `hostaddr`). SNI is sent for host names, not for IP addresses.
pub async fn handshake(
    context: &SslContext,
    stream: TcpStream,
    config: &Config,
    host_name: &str,
) -> Result<SslStream<TcpStream>, TlsError> {
    let host = host_name.trim_start_matches('[').trim_end_matches(']');
    let mut ssl = Ssl::new(context).map_err(setup)?;
    if !host.is_empty() && host.parse::<IpAddr>().is_err() {
        ssl.set_hostname(host).map_err(setup)?;
    }
    let mut tls = SslStream::new(ssl, stream).map_err(setup)?;
    if let Err(e) = Pin::new(&mut tls).connect().await {
        let verify = tls.ssl().verify_result();
        if verify != X509VerifyResult::OK {
            return Err(certificate_verify_error(verify, config));
        }
        return Err(match e.into_io_error() {
            Ok(io) => TlsError::Io(io),
            Err(e) => TlsError::Handshake {
                reason: e.to_string(),
            },
        });
    }
    if config.sslmode == SslMode::VerifyFull {
        if host.is_empty() {
            return Err(TlsError::NoHostName);
        }
        let cert = tls
            .ssl()
            .peer_certificate()
            .ok_or(TlsError::NoPeerCertificate)?;
        verify_peer_name(&cert, host)?;
    }
    Ok(tls)
}

fn certificate_verify_error(verify: X509VerifyResult, config: &Config) -> TlsError {
    let roots = match config.sslrootcert.as_deref() {
        _ if config.uses_system_roots() => "the system's trusted roots".to_string(),
        Some(p) if !p.as_os_str().is_empty() => format!("sslrootcert \"{}\"", p.display()),
        _ => format!("~/{ROOT_CERT_FILE}"),
    };
    // X509_V_ERR_* codes from x509_vfy.h; 7 (signature failure) is typically a different CA
    // with the same name, such as a regenerated one.
    let hint = match verify.as_raw() {
        2 | 7 | 18 | 19 | 20 | 21 => Some(format!(
            "the server certificate is not signed by a CA in {roots}; check that it holds the CA that issued the server's certificate"
        )),
        9 | 10 => Some("check the certificate's validity dates and this machine's clock".to_string()),
        _ => None,
    };
    TlsError::CertificateVerify {
        reason: verify.error_string().to_string(),
        hint,
    }
}

/// libpq's host name check (`pgtls_verify_peer_name_matches_certificate_guts`): SAN dNSName
/// entries (with a `*.` wildcard in the leftmost label) and iPAddress entries; the first
/// Common Name only when the certificate has no SAN of the host's kind (DNS or IP).
pub fn verify_peer_name(cert: &X509Ref, host: &str) -> Result<(), TlsError> {
    let host_ip: Option<IpAddr> = host.parse().ok();
    let mut examined = 0usize;
    let mut first_name: Option<String> = None;
    let mut check_cn = true;
    for name in cert.subject_alt_names().into_iter().flatten() {
        let candidate = if let Some(dns) = name.dnsname() {
            if host_ip.is_none() {
                check_cn = false;
            }
            if dns.contains('\0') {
                return Err(TlsError::EmbeddedNul);
            }
            (dns.to_string(), dns_name_matches(dns, host))
        } else if let Some(ip) = name.ipaddress() {
            if host_ip.is_some() {
                check_cn = false;
            }
            (format_ip(ip), host_ip.is_some_and(|h| ip_matches(h, ip)))
        } else {
            continue;
        };
        examined += 1;
        if candidate.1 {
            return Ok(());
        }
        first_name.get_or_insert(candidate.0);
    }
    if check_cn {
        if let Some(cn) = cert.subject_name().entries_by_nid(Nid::COMMONNAME).next() {
            examined += 1;
            let cn = cn.data().as_slice();
            if cn.contains(&0) {
                return Err(TlsError::EmbeddedNul);
            }
            let cn = String::from_utf8_lossy(cn).into_owned();
            if dns_name_matches(&cn, host) {
                return Ok(());
            }
            first_name.get_or_insert(cn);
        }
    }
    match first_name {
        Some(first_name) if examined > 0 => Err(TlsError::HostnameMismatch {
            first_name,
            other_names: examined - 1,
            host: host.to_string(),
        }),
        _ => Err(TlsError::NoCertificateNames),
    }
}

/// Case-insensitive equality, or libpq's wildcard rule: `*.rest` matches `label.rest` where
/// `label` is one non-empty label (no dot).
fn dns_name_matches(pattern: &str, host: &str) -> bool {
    if pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    if !suffix.starts_with('.') || suffix.len() < 2 || host.len() <= suffix.len() {
        return false;
    }
    // Bytes, not str: the split point may fall inside a multi-byte character.
    let (label, host_suffix) = host.as_bytes().split_at(host.len() - suffix.len());
    host_suffix.eq_ignore_ascii_case(suffix.as_bytes()) && !label.contains(&b'.')
}

fn ip_matches(host: IpAddr, san: &[u8]) -> bool {
    match host {
        IpAddr::V4(v4) => san == v4.octets(),
        IpAddr::V6(v6) => san == v6.octets(),
    }
}

fn format_ip(bytes: &[u8]) -> String {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        IpAddr::from(v4).to_string()
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        IpAddr::from(v6).to_string()
    } else {
        format!("(invalid IP address of {} bytes)", bytes.len())
    }
}

/// The `tls-server-end-point` channel-binding data (RFC 5929): the server leaf certificate's
/// DER hashed with its signature algorithm's digest, MD5 and SHA-1 upgraded to SHA-256 (as
/// `be_tls_get_certificate_hash`). `None` when the algorithm has no digest (Ed25519, Ed448,
/// RSA-PSS): the server cannot bind to such a certificate, so PLUS must not be chosen.
pub fn tls_server_end_point(ssl: &SslRef) -> Result<Option<Vec<u8>>, TlsError> {
    let Some(cert) = ssl.peer_certificate() else {
        return Ok(None);
    };
    certificate_hash(&cert)
}

pub(crate) fn certificate_hash(cert: &X509Ref) -> Result<Option<Vec<u8>>, TlsError> {
    let sig = cert.signature_algorithm().object().nid();
    let Some(algs) = sig.signature_algorithms() else {
        return Ok(None);
    };
    let md = match algs.digest {
        Nid::UNDEF => return Ok(None),
        Nid::MD5 | Nid::SHA1 => MessageDigest::sha256(),
        nid => match MessageDigest::from_nid(nid) {
            Some(md) => md,
            None => return Ok(None),
        },
    };
    let digest = cert.digest(md).map_err(|e| TlsError::CertificateHash {
        reason: e.to_string(),
    })?;
    Ok(Some(digest.to_vec()))
}

#[cfg(test)]
mod tests;
