//! Client side of PostgreSQL authentication: cleartext, MD5 and SCRAM-SHA-256(-PLUS).
//!
//! SKELETON: being completed (see the helper task).

/// Authentication failed on the client side (the server's refusals are server errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the server asked for a password but none was given (set PGPASSWORD, a .pgpass entry or password=)")]
    PasswordRequired,
    #[error("{0}")]
    Other(String),
}
