//! TLS through OpenSSL: sslmode semantics, certificate checks and channel-binding data.
//!
//! SKELETON: being completed (see the helper task).

/// A TLS failure: refused by the server, a handshake error or a certificate problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Other(String),
}
