//! TLS tests with certificates generated here: hashing, host names, local files, and
//! handshakes against an in-process OpenSSL server.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{NameType, Ssl, SslAcceptor};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Name, X509};
use tokio::net::TcpListener;

use super::*;

fn rsa_key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

fn ec_p384_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// A certificate for `key` with subject CN `cn` and SANs like `DNS:x` / `IP:1.2.3.4`, signed by
/// `issuer` (or self-signed) with `md`.
fn cert(
    key: &PKey<Private>,
    cn: Option<&str>,
    sans: &[&str],
    issuer: Option<(&X509, &PKey<Private>)>,
    md: MessageDigest,
    ca: bool,
) -> X509 {
    let mut name = X509Name::builder().unwrap();
    if let Some(cn) = cn {
        name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    }
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&*name, |(c, _)| c.subject_name()))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
    }
    if !sans.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for s in sans {
            match s.split_once(':').unwrap() {
                ("DNS", v) => san.dns(v),
                ("IP", v) => san.ip(v),
                _ => panic!("bad SAN spec {s}"),
            };
        }
        let ext = san
            .build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None))
            .unwrap();
        b.append_extension(ext).unwrap();
    }
    b.sign(issuer.map_or(key, |(_, k)| k), md).unwrap();
    b.build()
}

fn leaf(cn: Option<&str>, sans: &[&str]) -> X509 {
    cert(&rsa_key(), cn, sans, None, MessageDigest::sha256(), false)
}

#[test]
fn end_point_hash_follows_signature_digest() {
    let rsa = cert(
        &rsa_key(),
        Some("a"),
        &[],
        None,
        MessageDigest::sha256(),
        false,
    );
    let der = rsa.to_der().unwrap();
    assert_eq!(
        certificate_hash(&rsa).unwrap().unwrap(),
        openssl::sha::sha256(&der).to_vec()
    );

    let ec = cert(
        &ec_p384_key(),
        Some("a"),
        &[],
        None,
        MessageDigest::sha384(),
        false,
    );
    let der = ec.to_der().unwrap();
    assert_eq!(
        certificate_hash(&ec).unwrap().unwrap(),
        openssl::sha::sha384(&der).to_vec()
    );

    let sha512 = cert(
        &rsa_key(),
        Some("a"),
        &[],
        None,
        MessageDigest::sha512(),
        false,
    );
    let der = sha512.to_der().unwrap();
    assert_eq!(
        certificate_hash(&sha512).unwrap().unwrap(),
        openssl::sha::sha512(&der).to_vec()
    );

    // SHA-1 is upgraded to SHA-256 (RFC 5929 section 4.1).
    let sha1 = cert(
        &rsa_key(),
        Some("a"),
        &[],
        None,
        MessageDigest::sha1(),
        false,
    );
    let der = sha1.to_der().unwrap();
    assert_eq!(
        certificate_hash(&sha1).unwrap().unwrap(),
        openssl::sha::sha256(&der).to_vec()
    );

    // Ed25519 signatures have no separate digest: no binding possible.
    let ed = PKey::generate_ed25519().unwrap();
    let ed = cert(&ed, Some("a"), &[], None, MessageDigest::null(), false);
    assert_eq!(certificate_hash(&ed).unwrap(), None);
}

fn mismatch(cert: &X509, host: &str) -> String {
    verify_peer_name(cert, host).unwrap_err().to_string()
}

#[test]
fn host_name_matching() {
    let c = leaf(
        Some("ignored.example"),
        &[
            "DNS:db.example.com",
            "DNS:*.pg.example.com",
            "IP:10.0.0.5",
            "IP:::1",
        ],
    );
    assert!(verify_peer_name(&c, "db.example.com").is_ok());
    assert!(verify_peer_name(&c, "DB.Example.COM").is_ok());
    assert!(verify_peer_name(&c, "node1.pg.example.com").is_ok());
    assert!(verify_peer_name(&c, "10.0.0.5").is_ok());
    assert!(verify_peer_name(&c, "::1").is_ok());
    // The wildcard covers exactly one non-empty leftmost label.
    assert!(verify_peer_name(&c, "a.b.pg.example.com").is_err());
    assert!(verify_peer_name(&c, "pg.example.com").is_err());
    assert!(verify_peer_name(&c, ".pg.example.com").is_err());
    assert!(verify_peer_name(&c, "é.pg.example.co").is_err());
    // The CN is ignored when dNSName SANs exist.
    assert!(verify_peer_name(&c, "ignored.example").is_err());
    assert_eq!(
        mismatch(&c, "other.example.com"),
        "server certificate for \"db.example.com\" (and 3 other names) does not match host name \"other.example.com\""
    );
    assert!(verify_peer_name(&c, "10.0.0.6").is_err());

    let one = leaf(None, &["DNS:only.example"]);
    assert_eq!(
        mismatch(&one, "x.example"),
        "server certificate for \"only.example\" does not match host name \"x.example\""
    );
    let two = leaf(None, &["IP:192.168.1.1", "DNS:b.example"]);
    assert!(mismatch(&two, "c.example").contains("\"192.168.1.1\" (and 1 other name) does not"));
}

#[test]
fn common_name_fallback() {
    let cn_only = leaf(Some("db.example.com"), &[]);
    assert!(verify_peer_name(&cn_only, "db.example.com").is_ok());
    assert!(verify_peer_name(&leaf(Some("*.example.com"), &[]), "db.example.com").is_ok());
    assert_eq!(
        mismatch(&cn_only, "x.example.com"),
        "server certificate for \"db.example.com\" does not match host name \"x.example.com\""
    );
    // Only IP SANs and a DNS host: the CN still counts (no SAN of the host's kind).
    let ip_sans = leaf(Some("db.example.com"), &["IP:10.0.0.5"]);
    assert!(verify_peer_name(&ip_sans, "db.example.com").is_ok());
    // An IP host with only DNS SANs: libpq also falls back to the CN.
    let cn_ip = leaf(Some("10.1.1.1"), &["DNS:db.example.com"]);
    assert!(verify_peer_name(&cn_ip, "10.1.1.1").is_ok());
    // An IP host with IP SANs: the CN is ignored.
    let cn_ignored = leaf(Some("10.1.1.1"), &["IP:10.0.0.5"]);
    assert!(verify_peer_name(&cn_ignored, "10.1.1.1").is_err());
    assert!(matches!(
        verify_peer_name(&leaf(None, &[]), "h"),
        Err(TlsError::NoCertificateNames)
    ));
}

fn config(mode: SslMode, rootcert: Option<&Path>) -> Config {
    Config {
        sslmode: mode,
        sslrootcert: rootcert.map(Path::to_path_buf),
        ..Config::default()
    }
}

fn write_pem(path: &Path, pem: &[u8], mode: u32) {
    std::fs::write(path, pem).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn root_certificate_rules() {
    let home = tempfile::tempdir().unwrap();
    // verify-ca / verify-full without a root file fail before connecting, naming the file.
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
        let e = build_connector_in(&config(mode, None), Some(home.path())).unwrap_err();
        let TlsError::RootCertMissing { path, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(path, &home.path().join(".postgresql/root.crt"));
        let msg = e.to_string();
        assert!(msg.contains("does not exist; either provide the file, use the system's trusted roots with sslrootcert=system, or change sslmode"), "{msg}");
    }
    let missing = home.path().join("nope.crt");
    let e = build_connector_in(&config(SslMode::VerifyFull, Some(&missing)), None).unwrap_err();
    assert!(e.to_string().contains("nope.crt"));
    let e = build_connector_in(&config(SslMode::VerifyCa, None), None).unwrap_err();
    assert!(e.to_string().contains("HOME"), "{e}");

    // require without a root file verifies nothing...
    let c = build_connector_in(&config(SslMode::Require, None), Some(home.path())).unwrap();
    assert_eq!(c.verify_mode(), SslVerifyMode::NONE);
    // ...but with ~/.postgresql/root.crt present it verifies the chain (verify-ca).
    std::fs::create_dir(home.path().join(".postgresql")).unwrap();
    let ca = cert(
        &rsa_key(),
        Some("CA"),
        &[],
        None,
        MessageDigest::sha256(),
        true,
    );
    write_pem(
        &home.path().join(".postgresql/root.crt"),
        &ca.to_pem().unwrap(),
        0o644,
    );
    let c = build_connector_in(&config(SslMode::Require, None), Some(home.path())).unwrap();
    assert_eq!(c.verify_mode(), SslVerifyMode::PEER);
    // An unreadable ~/.postgresql/root.crl is skipped (with a warning), as libpq does.
    write_pem(&home.path().join(".postgresql/root.crl"), b"junk", 0o644);
    build_connector_in(&config(SslMode::VerifyCa, None), Some(home.path())).unwrap();

    let garbage = home.path().join("garbage.crt");
    write_pem(&garbage, b"not a certificate", 0o644);
    let e = build_connector_in(&config(SslMode::VerifyCa, Some(&garbage)), None).unwrap_err();
    assert!(matches!(e, TlsError::RootCertLoad { .. }), "{e:?}");

    // sslrootcert=system demands verify-full.
    let system = Path::new("system");
    let e = build_connector_in(&config(SslMode::Require, Some(system)), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "weak sslmode \"require\" may not be used with sslrootcert=system (use \"verify-full\")"
    );
    let c = build_connector_in(&config(SslMode::VerifyFull, Some(system)), None).unwrap();
    assert_eq!(c.verify_mode(), SslVerifyMode::PEER);
}

#[test]
fn client_key_rules() {
    let dir = tempfile::tempdir().unwrap();
    let key = rsa_key();
    let crt = cert(
        &key,
        Some("replicator"),
        &[],
        None,
        MessageDigest::sha256(),
        false,
    );
    let (crt_path, key_path) = (dir.path().join("client.crt"), dir.path().join("client.key"));
    write_pem(&crt_path, &crt.to_pem().unwrap(), 0o644);
    let with_client = |key: &Path| Config {
        sslcert: Some(crt_path.clone()),
        sslkey: Some(key.to_path_buf()),
        ..config(SslMode::Require, None)
    };

    write_pem(&key_path, &key.private_key_to_pem_pkcs8().unwrap(), 0o644);
    let e = build_connector_in(&with_client(&key_path), None).unwrap_err();
    assert!(
        matches!(e, TlsError::ClientKeyPermissions { mode: 0o644, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("client.key") && msg.contains("chmod 0600"),
        "{msg}"
    );
    // Group read is tolerated only for root-owned keys (libpq's rule for system-managed keys).
    let root_owned = std::fs::metadata(&key_path).unwrap().uid() == 0;
    for (mode, allowed) in [
        (0o640, root_owned),
        (0o604, false),
        (0o660, false),
        (0o400, true),
    ] {
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(mode)).unwrap();
        let got = build_connector_in(&with_client(&key_path), None);
        assert_eq!(got.is_ok(), allowed, "mode {mode:o}: {got:?}");
    }
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    build_connector_in(&with_client(&key_path), None).unwrap();

    let e = build_connector_in(&with_client(&dir.path().join("absent.key")), None).unwrap_err();
    assert!(matches!(e, TlsError::ClientKeyMissing { .. }), "{e:?}");
    let e = build_connector_in(&with_client(dir.path()), None).unwrap_err();
    assert!(matches!(e, TlsError::ClientKeyNotRegular { .. }), "{e:?}");

    let other = dir.path().join("other.key");
    write_pem(
        &other,
        &rsa_key().private_key_to_pem_pkcs8().unwrap(),
        0o600,
    );
    let e = build_connector_in(&with_client(&other), None).unwrap_err();
    assert!(matches!(e, TlsError::ClientKeyMismatch { .. }), "{e:?}");

    // An encrypted key needs sslpassword; without it, a clear error, never a terminal prompt.
    let enc = dir.path().join("enc.key");
    let pem = key
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_128_cbc(), b"k3y-pass")
        .unwrap();
    write_pem(&enc, &pem, 0o600);
    let e = build_connector_in(&with_client(&enc), None).unwrap_err();
    assert!(
        e.to_string()
            .contains("give its passphrase with sslpassword"),
        "{e}"
    );
    let wrong = Config {
        sslpassword: Some("nope-secret".into()),
        ..with_client(&enc)
    };
    let e = build_connector_in(&wrong, None).unwrap_err().to_string();
    assert!(
        e.contains("is sslpassword correct") && !e.contains("nope-secret"),
        "{e}"
    );
    let right = Config {
        sslpassword: Some("k3y-pass".into()),
        ..with_client(&enc)
    };
    build_connector_in(&right, None).unwrap();

    // No certificate file: no client certificate, as libpq.
    let absent = Config {
        sslcert: Some(dir.path().join("absent.crt")),
        ..config(SslMode::Require, None)
    };
    build_connector_in(&absent, Some(dir.path())).unwrap();
}

/// A one-connection TLS server; returns its port and the SNI it saw (if the handshake ended).
async fn serve_once(
    chain: (X509, PKey<Private>),
) -> (u16, tokio::task::JoinHandle<Option<String>>) {
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    acceptor.set_certificate(&chain.0).unwrap();
    acceptor.set_private_key(&chain.1).unwrap();
    let acceptor = acceptor.build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut s = SslStream::new(Ssl::new(acceptor.context()).unwrap(), tcp).unwrap();
        let accepted = Pin::new(&mut s).accept().await;
        let sni = s.ssl().servername(NameType::HOST_NAME).map(str::to_string);
        accepted.ok().map(|_| sni.unwrap_or_default())
    });
    (port, task)
}

struct Pki {
    ca_file: tempfile::NamedTempFile,
    server: (X509, PKey<Private>),
}

fn pki(ca_name: &str, sans: &[&str]) -> Pki {
    let ca_key = rsa_key();
    let ca = cert(
        &ca_key,
        Some(ca_name),
        &[],
        None,
        MessageDigest::sha256(),
        true,
    );
    let key = ec_p384_key();
    let server = cert(
        &key,
        Some("server"),
        sans,
        Some((&ca, &ca_key)),
        MessageDigest::sha384(),
        false,
    );
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), ca.to_pem().unwrap()).unwrap();
    Pki {
        ca_file,
        server: (server, key),
    }
}

async fn connect(
    pki: &Pki,
    mode: SslMode,
    rootcert: Option<&Path>,
    host: &str,
) -> (Result<SslStream<TcpStream>, TlsError>, Option<String>) {
    let cfg = config(mode, rootcert);
    let connector = build_connector_in(&cfg, None).unwrap();
    let (port, server) = serve_once(pki.server.clone()).await;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let result = handshake(&connector, tcp, &cfg, host).await;
    let sni = if result.is_ok() {
        server.await.unwrap()
    } else {
        None
    };
    (result, sni)
}

#[tokio::test]
async fn handshake_verify_full_and_channel_binding() {
    let pki = pki("Test CA", &["DNS:localhost", "IP:127.0.0.1"]);
    let (tls, sni) = connect(
        &pki,
        SslMode::VerifyFull,
        Some(pki.ca_file.path()),
        "localhost",
    )
    .await;
    let tls = tls.unwrap();
    assert_eq!(sni.as_deref(), Some("localhost"));
    let expected = openssl::sha::sha384(&pki.server.0.to_der().unwrap()).to_vec();
    assert_eq!(tls_server_end_point(tls.ssl()).unwrap(), Some(expected));

    // No SNI for an IP address.
    let (tls, sni) = connect(
        &pki,
        SslMode::VerifyFull,
        Some(pki.ca_file.path()),
        "127.0.0.1",
    )
    .await;
    tls.unwrap();
    assert_eq!(sni.as_deref(), Some(""));
}

#[tokio::test]
async fn handshake_failures_are_explained() {
    let pki = pki("Test CA", &["DNS:db.example.com"]);
    let ca = Some(pki.ca_file.path());
    let e = connect(&pki, SslMode::VerifyFull, ca, "localhost")
        .await
        .0
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "server certificate for \"db.example.com\" does not match host name \"localhost\""
    );
    // verify-ca does not look at the name.
    connect(&pki, SslMode::VerifyCa, ca, "localhost")
        .await
        .0
        .unwrap();

    // A CA that did not issue the server certificate.
    let other = self::pki("Other CA", &[]);
    let e = connect(
        &pki,
        SslMode::VerifyCa,
        Some(other.ca_file.path()),
        "localhost",
    )
    .await
    .0
    .unwrap_err();
    let TlsError::CertificateVerify { reason, hint } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(reason, "unable to get local issuer certificate");
    // A different CA under the same name (a regenerated CA) gets the same hint.
    let same_name = self::pki("Test CA", &[]);
    let e = connect(
        &pki,
        SslMode::VerifyCa,
        Some(same_name.ca_file.path()),
        "localhost",
    )
    .await
    .0
    .unwrap_err();
    assert!(
        e.to_string().contains("not signed by a CA in sslrootcert"),
        "{e}"
    );
    assert!(
        hint.as_deref()
            .unwrap()
            .contains("not signed by a CA in sslrootcert"),
        "{e}"
    );

    // require with no root file accepts any certificate.
    connect(&pki, SslMode::Require, None, "localhost")
        .await
        .0
        .unwrap();
}

#[test]
fn protocol_version_settings() {
    let with = |min: Option<&str>, max: Option<&str>| Config {
        ssl_min_protocol_version: min.map(str::to_string),
        ssl_max_protocol_version: max.map(str::to_string),
        ..config(SslMode::Require, None)
    };
    build_connector_in(&with(Some("TLSv1.3"), None), None).unwrap();
    build_connector_in(&with(Some("tlsv1.2"), Some("TLSv1.3")), None).unwrap();
    let e = build_connector_in(&with(Some("TLSv1.4"), None), None).unwrap_err();
    assert!(
        e.to_string()
            .contains("\"TLSv1.4\" for ssl_min_protocol_version"),
        "{e}"
    );
    let e = build_connector_in(&with(Some("TLSv1.3"), Some("TLSv1.2")), None).unwrap_err();
    assert!(matches!(e, TlsError::InvalidProtocolRange), "{e:?}");
    // The default minimum (TLSv1.2) is above an explicit TLSv1.1 maximum, as in libpq.
    assert!(build_connector_in(&with(None, Some("TLSv1.1")), None).is_err());
}
