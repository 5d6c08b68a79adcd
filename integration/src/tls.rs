//! Certificates made at test time: a CA, a server certificate it signs, client certificates on
//! demand, and an unrelated CA for negative tests. RSA 2048, SHA-256.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509NameBuilder, X509};

use crate::server_user::ServerUser;

/// What TLS the cluster serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    /// Subject alternative names of the server certificate: DNS names, or IP addresses when they
    /// parse as one. The first one is also the subject CN.
    pub server_names: Vec<String>,
    /// Also set `ssl_ca_file` so the server asks for (and can verify) client certificates.
    pub client_ca: bool,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            server_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            client_ca: false,
        }
    }
}

/// Where a cluster's TLS files are (all PEM).
#[derive(Clone, Debug)]
pub struct TlsPaths {
    /// The directory holding them.
    pub dir: PathBuf,
    /// CA certificate that signed the server and client certificates (`sslrootcert=`).
    pub ca_cert_path: PathBuf,
    /// Server certificate (`ssl_cert_file`).
    pub server_cert_path: PathBuf,
    /// Server key (`ssl_key_file`), mode 0600, owned by the server user.
    pub server_key_path: PathBuf,
    /// An unrelated CA that signed nothing here: verification against it must fail.
    pub wrong_ca_path: PathBuf,
}

/// A CA able to sign more certificates later (client certificates are made on demand).
pub(crate) struct CertAuthority {
    cert: X509,
    key: PKey<Private>,
}

fn new_key() -> Result<PKey<Private>, ErrorStack> {
    PKey::from_rsa(Rsa::generate(2048)?)
}

fn random_serial() -> Result<Asn1Integer, ErrorStack> {
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    serial.to_asn1_integer()
}

fn builder_subject(cn: &str) -> Result<X509Name, ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("O", "pgstream tests")?;
    name.append_entry_by_text("CN", cn)?;
    Ok(name.build())
}

fn builder_for(cn: &str, key: &PKey<Private>) -> Result<X509Builder, ErrorStack> {
    let name = builder_subject(cn)?;
    let mut builder = X509Builder::new()?;
    builder.set_version(2)?;
    let serial = random_serial()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_pubkey(key)?;
    // A day of slack for clock differences; a month outlives any test run.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let not_before = Asn1Time::from_unix(now - 86_400)?;
    let not_after = Asn1Time::days_from_now(30)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    Ok(builder)
}

impl CertAuthority {
    pub(crate) fn new(cn: &str) -> Result<Self, ErrorStack> {
        let key = new_key()?;
        let mut builder = builder_for(cn, &key)?;
        // Self-signed: the issuer is the subject.
        let subject = builder_subject(cn)?;
        builder.set_issuer_name(&subject)?;
        builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        builder.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
        builder.append_extension(ski)?;
        builder.sign(&key, MessageDigest::sha256())?;
        Ok(CertAuthority {
            cert: builder.build(),
            key,
        })
    }

    /// Signs a leaf certificate for `cn` with `sans` (server) or for client authentication.
    fn sign_leaf(
        &self,
        cn: &str,
        sans: &[String],
        server: bool,
    ) -> Result<(X509, PKey<Private>), ErrorStack> {
        let key = new_key()?;
        let mut builder = builder_for(cn, &key)?;
        builder.set_issuer_name(self.cert.subject_name())?;
        builder.append_extension(BasicConstraints::new().critical().build()?)?;
        builder.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()?,
        )?;
        let mut eku = ExtendedKeyUsage::new();
        if server {
            eku.server_auth();
        } else {
            eku.client_auth();
        }
        builder.append_extension(eku.build()?)?;
        if !sans.is_empty() {
            let mut san = SubjectAlternativeName::new();
            for name in sans {
                if name.parse::<IpAddr>().is_ok() {
                    san.ip(name);
                } else {
                    san.dns(name);
                }
            }
            let ext = san.build(&builder.x509v3_context(Some(&self.cert), None))?;
            builder.append_extension(ext)?;
        }
        let ski =
            SubjectKeyIdentifier::new().build(&builder.x509v3_context(Some(&self.cert), None))?;
        builder.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&builder.x509v3_context(Some(&self.cert), None))?;
        builder.append_extension(aki)?;
        builder.sign(&self.key, MessageDigest::sha256())?;
        Ok((builder.build(), key))
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    file.write_all(bytes)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn pem(cert: &X509) -> Vec<u8> {
    cert.to_pem().expect("encode certificate as PEM")
}

fn key_pem(key: &PKey<Private>) -> Vec<u8> {
    key.private_key_to_pem_pkcs8()
        .expect("encode private key as PEM")
}

/// A cluster's certificates: the paths plus the CA that signs client certificates on demand.
pub(crate) struct ClusterTls {
    pub(crate) options: TlsOptions,
    pub(crate) paths: TlsPaths,
    ca: CertAuthority,
}

impl ClusterTls {
    /// Makes the CA, server certificate and wrong CA in `dir` (created), giving the server key
    /// to `user`.
    pub(crate) fn create(dir: &Path, options: &TlsOptions, user: &ServerUser) -> ClusterTls {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        user.chown(dir);
        let ca = CertAuthority::new("pgstream test CA").expect("create test CA");
        let wrong = CertAuthority::new("pgstream unrelated CA").expect("create unrelated CA");
        let cn = options
            .server_names
            .first()
            .map_or("localhost", String::as_str);
        let (server_cert, server_key) = ca
            .sign_leaf(cn, &options.server_names, true)
            .expect("sign server certificate");
        let paths = TlsPaths {
            dir: dir.to_path_buf(),
            ca_cert_path: dir.join("ca.crt"),
            server_cert_path: dir.join("server.crt"),
            server_key_path: dir.join("server.key"),
            wrong_ca_path: dir.join("wrong-ca.crt"),
        };
        write_file(&paths.ca_cert_path, &pem(&ca.cert), 0o644);
        write_file(&paths.wrong_ca_path, &pem(&wrong.cert), 0o644);
        write_file(&paths.server_cert_path, &pem(&server_cert), 0o644);
        // PostgreSQL insists: key owned by the server user, no group/other access.
        write_file(&paths.server_key_path, &key_pem(&server_key), 0o600);
        for path in [
            &paths.ca_cert_path,
            &paths.wrong_ca_path,
            &paths.server_cert_path,
            &paths.server_key_path,
        ] {
            user.chown(path);
        }
        ClusterTls {
            options: options.clone(),
            paths,
            ca,
        }
    }

    /// Writes a certificate for `user` (CN) signed by the cluster CA, returning
    /// `(cert_path, key_path)`, both mode 0600 and owned by the test process (the client).
    pub(crate) fn client_cert(&self, user: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self
            .ca
            .sign_leaf(user, &[], false)
            .expect("sign client certificate");
        let safe: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let cert_path = self.paths.dir.join(format!("client-{safe}.crt"));
        let key_path = self.paths.dir.join(format!("client-{safe}.key"));
        write_file(&cert_path, &pem(&cert), 0o600);
        write_file(&key_path, &key_pem(&key), 0o600);
        (cert_path, key_path)
    }
}
