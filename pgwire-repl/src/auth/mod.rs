//! Client side of PostgreSQL authentication: cleartext, MD5 and SCRAM-SHA-256(-PLUS).
//!
//! Sans-IO: this module computes messages and enforces libpq's `channel_binding` rules; the
//! connection sends and receives the bytes. Typical flow for an `R` message with code `c`:
//!
//! 1. [`AuthMethod::from_request_code`] then [`check_method_allowed`] (refuses methods that
//!    `channel_binding=require` forbids before any password leaves the client);
//! 2. cleartext: send the password; MD5: [`md5::md5_password_message`]; SASL:
//!    [`select_sasl_mechanism`] → [`scram::ScramClient`] (run `handle_server_first` on a
//!    blocking thread: PBKDF2 is CPU-heavy);
//! 3. on AuthenticationOk: [`check_authentication_ok`].

pub mod md5;
pub mod scram;

use crate::config::ChannelBinding;

pub use scram::{ChannelBindingChoice, ScramClient};

/// SASL mechanism name without channel binding.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// SASL mechanism name with `tls-server-end-point` channel binding.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// Authentication failed on the client side (the server's refusals are server errors).
/// Never carries a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the server asked for a password but none was given (set PGPASSWORD, a .pgpass entry or password=)")]
    PasswordRequired,
    /// The server wants SASL but offers no mechanism we implement.
    #[error("the server offered SASL mechanisms {}, none of which is supported (pgstream supports SCRAM-SHA-256 and SCRAM-SHA-256-PLUS)", list(.offered))]
    UnsupportedMechanism { offered: Vec<String> },
    /// `channel_binding=require` cannot be honoured.
    #[error("channel binding required, but {reason}")]
    ChannelBindingRequired { reason: String },
    /// The server's SCRAM proof is wrong: it does not know the password (or a man in the middle).
    #[error("the server's SCRAM signature is invalid: the server could not prove it knows the password (possible man-in-the-middle)")]
    ServerSignatureMismatch,
    /// A malformed or inconsistent authentication message from the server.
    #[error("invalid authentication message from the server: {reason}")]
    InvalidServerMessage { reason: String },
    /// The server asked for more PBKDF2 iterations than [`scram::MAX_ITERATIONS`].
    #[error("the server asked for {iterations} SCRAM iterations, more than pgstream computes (at most {max}; PostgreSQL's default is 4096): on the server, lower scram_iterations and set the role's password again", max = scram::MAX_ITERATIONS)]
    ScramIterationsTooHigh { iterations: u32 },
    /// The server ended the SCRAM exchange with `e=<reason>`.
    #[error("error received from server in SCRAM exchange: {reason}")]
    ServerError { reason: String },
    /// An authentication request code we do not implement (Kerberos, GSSAPI, SSPI, ...).
    #[error("the server requested {} authentication (request code {code}), which pgstream does not support; use scram-sha-256, md5, password or trust in pg_hba.conf", auth_code_name(*.code))]
    UnsupportedAuthMethod { code: i32 },
    /// Local cryptographic failure (OpenSSL).
    #[error("cryptographic operation failed: {reason}")]
    Crypto { reason: String },
    /// Anything else on our side, such as the blocking SCRAM worker failing to run.
    #[error("{0}")]
    Other(String),
}

impl AuthError {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        AuthError::InvalidServerMessage {
            reason: reason.into(),
        }
    }

    pub(crate) fn crypto(e: openssl::error::ErrorStack) -> Self {
        AuthError::Crypto {
            reason: e.to_string(),
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    }
}

fn auth_code_name(code: i32) -> &'static str {
    match code {
        2 => "Kerberos V5",
        4 => "crypt",
        6 => "SCM credential",
        7 | 8 => "GSSAPI",
        9 => "SSPI",
        _ => "an unknown method of",
    }
}

/// How the server asks us to authenticate (the `R` message request code).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// AuthenticationOk without any exchange (trust, peer, cert ...).
    Trust,
    /// Code 3: cleartext password.
    Cleartext,
    /// Code 5: MD5 with a 4-byte salt.
    Md5,
    /// Code 10: SASL (SCRAM).
    Sasl,
}

impl AuthMethod {
    /// Maps the first authentication request code of the startup phase. Codes 11/12
    /// (SASLContinue/Final) are steps of SASL, not methods, and are refused here.
    pub fn from_request_code(code: i32) -> Result<Self, AuthError> {
        match code {
            0 => Ok(AuthMethod::Trust),
            3 => Ok(AuthMethod::Cleartext),
            5 => Ok(AuthMethod::Md5),
            10 => Ok(AuthMethod::Sasl),
            11 | 12 => Err(AuthError::invalid(format!(
                "SASL continuation (request code {code}) without a SASL exchange"
            ))),
            _ => Err(AuthError::UnsupportedAuthMethod { code }),
        }
    }
}

/// Refuses, before anything is sent, a method that `channel_binding=require` forbids
/// (libpq's `check_expected_areq`). SASL passes here; whether binding is possible is
/// decided by [`select_sasl_mechanism`], and that it happened by [`check_authentication_ok`].
pub fn check_method_allowed(method: AuthMethod, setting: ChannelBinding) -> Result<(), AuthError> {
    if setting != ChannelBinding::Require {
        return Ok(());
    }
    match method {
        AuthMethod::Sasl => Ok(()),
        AuthMethod::Trust => Err(AuthError::ChannelBindingRequired {
            reason: "server authenticated client without channel binding".to_string(),
        }),
        AuthMethod::Cleartext | AuthMethod::Md5 => {
            Err(AuthError::ChannelBindingRequired {
                reason: format!(
                "the server requested {} authentication, which does not support channel binding",
                if method == AuthMethod::Md5 { "MD5" } else { "cleartext password" }
            ),
            })
        }
    }
}

/// Picks the SASL mechanism and gs2 channel-binding flag as libpq does.
///
/// `cbind_data` is the `tls-server-end-point` hash ([`crate::tls::tls_server_end_point`]):
/// `Some` only on TLS with a certificate whose signature algorithm has a digest.
/// - PLUS when offered, we have the hash and `channel_binding != disable`;
/// - `y` when we could bind (TLS, hash) but the server did not offer PLUS;
/// - `n` without TLS, without a usable hash, or with `channel_binding=disable`;
/// - `channel_binding=require` without PLUS is an error saying why.
pub fn select_sasl_mechanism(
    offered: &[String],
    cbind_data: Option<Vec<u8>>,
    setting: ChannelBinding,
) -> Result<ChannelBindingChoice, AuthError> {
    let has_plain = offered.iter().any(|m| m == SCRAM_SHA_256);
    let has_plus = offered.iter().any(|m| m == SCRAM_SHA_256_PLUS);
    let unsupported = || AuthError::UnsupportedMechanism {
        offered: offered.to_vec(),
    };
    if setting == ChannelBinding::Disable {
        return if has_plain {
            Ok(ChannelBindingChoice::Unsupported)
        } else {
            Err(unsupported())
        };
    }
    match (cbind_data, has_plus) {
        (Some(data), true) => Ok(ChannelBindingChoice::TlsServerEndPoint(data)),
        (cbind, _) if setting == ChannelBinding::Require => {
            let reason = match (cbind.is_some(), has_plus) {
                (_, false) if !has_plain => return Err(unsupported()),
                (true, false) => {
                    "the server did not offer SCRAM-SHA-256-PLUS (is the server older than \
                     PostgreSQL 11, or built without channel-binding support?)"
                }
                (false, false) => {
                    "SSL is not in use (channel binding needs sslmode=require or stronger) \
                     or the server did not offer SCRAM-SHA-256-PLUS"
                }
                (false, true) => {
                    "the server certificate's signature algorithm has no hash usable for \
                     tls-server-end-point (for example Ed25519); use an RSA or ECDSA certificate"
                }
                (true, true) => unreachable!("handled by the PLUS arm"),
            };
            Err(AuthError::ChannelBindingRequired {
                reason: reason.to_string(),
            })
        }
        _ if !has_plain => Err(unsupported()),
        // We support binding but the server did not offer it: tell it so ("y"), which
        // lets a server that does support it detect a downgrade.
        (Some(_), false) => Ok(ChannelBindingChoice::SupportedNotUsed),
        (None, _) => Ok(ChannelBindingChoice::Unsupported),
    }
}

/// Called when AuthenticationOk arrives. `scram` is the client of the SASL exchange, if one
/// took place. Refuses an Ok that skips the server's SCRAM proof (a server that does not know
/// the password), and, under `channel_binding=require`, an Ok without completed binding.
pub fn check_authentication_ok(
    scram: Option<&ScramClient>,
    setting: ChannelBinding,
) -> Result<(), AuthError> {
    if let Some(client) = scram {
        if !client.is_complete() {
            return Err(AuthError::invalid(
                "AuthenticationOk before the SCRAM exchange completed (the server did not prove it knows the password)",
            ));
        }
    }
    if setting == ChannelBinding::Require && !scram.is_some_and(ScramClient::channel_bound) {
        return Err(AuthError::ChannelBindingRequired {
            reason: "server authenticated client without channel binding".to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChannelBinding::{Disable, Prefer, Require};
    use ChannelBindingChoice::{SupportedNotUsed, TlsServerEndPoint, Unsupported};

    fn offers(plus: bool) -> Vec<String> {
        let mut v = Vec::new();
        if plus {
            v.push(SCRAM_SHA_256_PLUS.to_string());
        }
        v.push(SCRAM_SHA_256.to_string());
        v
    }

    fn cb() -> Option<Vec<u8>> {
        Some(vec![7; 32])
    }

    #[test]
    fn selection_every_combination() {
        // (offered PLUS, have cbind data, setting) -> expected
        let plus = || Ok(TlsServerEndPoint(vec![7; 32]));
        let cases: Vec<(
            bool,
            bool,
            ChannelBinding,
            Result<ChannelBindingChoice, &str>,
        )> = vec![
            (true, true, Prefer, plus()),
            (true, true, Require, plus()),
            (true, true, Disable, Ok(Unsupported)),
            (false, true, Prefer, Ok(SupportedNotUsed)),
            (
                false,
                true,
                Require,
                Err("did not offer SCRAM-SHA-256-PLUS"),
            ),
            (false, true, Disable, Ok(Unsupported)),
            (true, false, Prefer, Ok(Unsupported)),
            (true, false, Require, Err("no hash usable")),
            (true, false, Disable, Ok(Unsupported)),
            (false, false, Prefer, Ok(Unsupported)),
            (false, false, Require, Err("SSL is not in use")),
            (false, false, Disable, Ok(Unsupported)),
        ];
        for (has_plus, has_cb, setting, want) in cases {
            let data = if has_cb { cb() } else { None };
            let got = select_sasl_mechanism(&offers(has_plus), data, setting);
            let ctx = format!("plus={has_plus} cb={has_cb} {setting:?}");
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{ctx}"),
                (Err(AuthError::ChannelBindingRequired { reason }), Err(w)) => {
                    assert!(reason.contains(w), "{ctx}: {reason}")
                }
                (g, w) => panic!("{ctx}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn missing_scram_lists_offered_mechanisms() {
        let offered = vec!["SCRAM-SHA-512".to_string(), "OAUTHBEARER".to_string()];
        for setting in [Disable, Prefer, Require] {
            for data in [None, cb()] {
                let err = select_sasl_mechanism(&offered, data, setting).unwrap_err();
                assert!(
                    matches!(err, AuthError::UnsupportedMechanism { .. }),
                    "{err:?}"
                );
                assert!(err.to_string().contains("SCRAM-SHA-512, OAUTHBEARER"));
            }
        }
        // Only PLUS offered (not something PostgreSQL does) is still usable with a hash.
        let only_plus = vec![SCRAM_SHA_256_PLUS.to_string()];
        assert!(select_sasl_mechanism(&only_plus, cb(), Prefer).is_ok());
        assert!(select_sasl_mechanism(&only_plus, None, Prefer).is_err());
        assert!(select_sasl_mechanism(&only_plus, cb(), Disable).is_err());
    }

    #[test]
    fn require_refuses_non_sasl_methods() {
        for m in [AuthMethod::Trust, AuthMethod::Cleartext, AuthMethod::Md5] {
            assert!(check_method_allowed(m, Prefer).is_ok());
            assert!(check_method_allowed(m, Disable).is_ok());
            let e = check_method_allowed(m, Require).unwrap_err();
            assert!(e.to_string().starts_with("channel binding required"), "{e}");
        }
        assert!(check_method_allowed(AuthMethod::Sasl, Require).is_ok());
        let trust = check_method_allowed(AuthMethod::Trust, Require).unwrap_err();
        assert_eq!(
            trust.to_string(),
            "channel binding required, but server authenticated client without channel binding"
        );
    }

    #[test]
    fn request_codes() {
        assert_eq!(AuthMethod::from_request_code(0), Ok(AuthMethod::Trust));
        assert_eq!(AuthMethod::from_request_code(3), Ok(AuthMethod::Cleartext));
        assert_eq!(AuthMethod::from_request_code(5), Ok(AuthMethod::Md5));
        assert_eq!(AuthMethod::from_request_code(10), Ok(AuthMethod::Sasl));
        let e = AuthMethod::from_request_code(7).unwrap_err();
        assert_eq!(e, AuthError::UnsupportedAuthMethod { code: 7 });
        assert!(e.to_string().contains("GSSAPI"));
        assert!(AuthMethod::from_request_code(11).is_err());
    }

    #[test]
    fn authentication_ok_checks() {
        assert!(check_authentication_ok(None, Prefer).is_ok());
        assert!(check_authentication_ok(None, Require).is_err());
        // An Ok before the server proved itself is refused whatever the setting.
        let client = ScramClient::new("pw", Unsupported);
        let e = check_authentication_ok(Some(&client), Disable).unwrap_err();
        assert!(matches!(e, AuthError::InvalidServerMessage { .. }));
    }
}
