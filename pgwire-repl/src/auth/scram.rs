//! SCRAM-SHA-256 and SCRAM-SHA-256-PLUS client (RFC 5802, RFC 7677), as PostgreSQL speaks it.
//!
//! Written here rather than taken from postgres-protocol because that one refuses iteration
//! counts above 100 000, while PostgreSQL 16+ lets `scram_iterations` go up to INT_MAX. It
//! does bound them, at [`MAX_ITERATIONS`]: the server picks the count before it has proved
//! anything, so a hostile one could otherwise make us spin for minutes per connection.
//! The user name is sent in the startup packet, so `n=` stays empty (auth-scram.c).

use std::cell::Cell;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

use super::{AuthError, SCRAM_SHA_256, SCRAM_SHA_256_PLUS};

/// Bytes of client nonce entropy (libpq's SCRAM_RAW_NONCE_LEN).
const RAW_NONCE_LEN: usize = 18;
/// The most PBKDF2 iterations computed for a server (about a few seconds of CPU); PostgreSQL's
/// default `scram_iterations` is 4096. A server asking for more is refused before computing.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Length of a SHA-256 output: SaltedPassword, keys, proofs and signatures.
const KEY_LEN: usize = 32;

/// The gs2 channel-binding flag, and the binding data when binding is used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelBindingChoice {
    /// gs2 `n,,`: the client does not support binding (no TLS, or disabled).
    Unsupported,
    /// gs2 `y,,`: the client supports binding but the server did not offer PLUS.
    SupportedNotUsed,
    /// gs2 `p=tls-server-end-point,,` with the certificate hash (RFC 5929).
    TlsServerEndPoint(Vec<u8>),
}

impl ChannelBindingChoice {
    fn gs2_header(&self) -> &'static str {
        match self {
            ChannelBindingChoice::Unsupported => "n,,",
            ChannelBindingChoice::SupportedNotUsed => "y,,",
            ChannelBindingChoice::TlsServerEndPoint(_) => "p=tls-server-end-point,,",
        }
    }

    /// The `c=` attribute value: base64 of the gs2 header followed by the binding data.
    fn channel_binding_attr(&self) -> String {
        let mut input = self.gs2_header().as_bytes().to_vec();
        if let ChannelBindingChoice::TlsServerEndPoint(data) = self {
            input.extend_from_slice(data);
        }
        B64.encode(input)
    }
}

enum State {
    /// client-first computed; waiting for server-first.
    Initial,
    /// client-final sent; waiting for server-final.
    ServerFirstHandled { server_signature: [u8; KEY_LEN] },
    /// `handle_server_first` failed or was called twice; nothing more can happen.
    Failed,
}

/// One SCRAM exchange. `Debug` is deliberately not implemented: it holds the password.
pub struct ScramClient {
    /// SASLprep'd password (raw when SASLprep fails, as libpq); wiped after use and on drop.
    password: Vec<u8>,
    cb: ChannelBindingChoice,
    nonce: String,
    client_first_bare: String,
    state: State,
    verified: Cell<bool>,
}

impl ScramClient {
    /// Starts an exchange with a fresh random nonce.
    pub fn new(password: &str, cb: ChannelBindingChoice) -> Self {
        let mut raw = [0u8; RAW_NONCE_LEN];
        // rand_bytes only fails when OpenSSL's CSPRNG cannot be seeded; nothing can be done then.
        openssl::rand::rand_bytes(&mut raw).expect("OpenSSL random generator failed");
        Self::with_nonce("", password, B64.encode(raw), cb)
    }

    /// Test hook: fixed user (for RFC 7677's vector, which sends `n=user`) and nonce.
    #[cfg(test)]
    pub(crate) fn new_for_test(
        user: &str,
        password: &str,
        nonce: &str,
        cb: ChannelBindingChoice,
    ) -> Self {
        Self::with_nonce(user, password, nonce.to_string(), cb)
    }

    fn with_nonce(user: &str, password: &str, nonce: String, cb: ChannelBindingChoice) -> Self {
        let password = match stringprep::saslprep(password) {
            Ok(p) => p.as_bytes().to_vec(),
            // libpq: a password SASLprep refuses is used as is.
            Err(_) => password.as_bytes().to_vec(),
        };
        ScramClient {
            password,
            cb,
            client_first_bare: format!("n={user},r={nonce}"),
            nonce,
            state: State::Initial,
            verified: Cell::new(false),
        }
    }

    /// The SASL mechanism name to put in SASLInitialResponse.
    pub fn mechanism(&self) -> &'static str {
        match self.cb {
            ChannelBindingChoice::TlsServerEndPoint(_) => SCRAM_SHA_256_PLUS,
            _ => SCRAM_SHA_256,
        }
    }

    /// The client-first-message (gs2 header + `n=,r=<nonce>`), the SASLInitialResponse data.
    pub fn client_first_message(&self) -> Vec<u8> {
        format!("{}{}", self.cb.gs2_header(), self.client_first_bare).into_bytes()
    }

    /// Parses server-first (`r=…,s=…,i=…`) and returns client-final (`c=…,r=…,p=…`).
    ///
    /// CPU-heavy: PBKDF2 runs `i` HMAC iterations (up to [`MAX_ITERATIONS`], seconds of CPU), so
    /// call this on a blocking thread (`tokio::task::spawn_blocking`), never on the reactor.
    pub fn handle_server_first(&mut self, server_first: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, State::Initial) {
            return Err(AuthError::invalid(
                "unexpected second SCRAM server-first-message",
            ));
        }
        self.state = State::Failed;
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| AuthError::invalid("SCRAM server-first-message is not valid UTF-8"))?;
        let (nonce, salt, iterations) = parse_server_first(server_first)?;
        if !nonce.starts_with(&self.nonce) {
            return Err(AuthError::invalid(
                "SCRAM nonce mismatch: the server's nonce does not start with ours",
            ));
        }

        let mut salted = [0u8; KEY_LEN];
        let derived = openssl::pkcs5::pbkdf2_hmac(
            &self.password,
            &salt,
            iterations as usize,
            MessageDigest::sha256(),
            &mut salted,
        );
        wipe(&mut self.password);
        derived.map_err(AuthError::crypto)?;

        let client_final_without_proof = format!("c={},r={nonce}", self.cb.channel_binding_attr());
        let auth_message = format!(
            "{},{server_first},{client_final_without_proof}",
            self.client_first_bare
        );

        let keys = (|| {
            let client_key = hmac(&salted, b"Client Key")?;
            let stored_key = openssl::sha::sha256(&client_key);
            let client_signature = hmac(&stored_key, auth_message.as_bytes())?;
            let server_key = hmac(&salted, b"Server Key")?;
            let server_signature = hmac(&server_key, auth_message.as_bytes())?;
            let mut proof = client_key;
            proof
                .iter_mut()
                .zip(client_signature)
                .for_each(|(p, s)| *p ^= s);
            Ok((proof, server_signature))
        })();
        wipe(&mut salted);
        let (proof, server_signature) = keys.map_err(AuthError::crypto)?;

        self.state = State::ServerFirstHandled { server_signature };
        Ok(format!("{client_final_without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks server-final (`v=<ServerSignature>`, compared in constant time) or reports the
    /// server's `e=<reason>`.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), AuthError> {
        let State::ServerFirstHandled { server_signature } = &self.state else {
            return Err(AuthError::invalid(
                "SCRAM server-final-message before server-first-message",
            ));
        };
        let text = std::str::from_utf8(server_final)
            .map_err(|_| AuthError::invalid("SCRAM server-final-message is not valid UTF-8"))?;
        if let Some(reason) = text.strip_prefix("e=") {
            return Err(AuthError::ServerError {
                reason: reason.to_string(),
            });
        }
        let Some(value) = text.strip_prefix("v=") else {
            return Err(AuthError::invalid(
                "malformed SCRAM server-final-message (expected v= or e=)",
            ));
        };
        if value.contains(',') {
            return Err(AuthError::invalid(
                "garbage at end of SCRAM server-final-message",
            ));
        }
        let got = B64
            .decode(value)
            .map_err(|_| AuthError::invalid("SCRAM server signature is not valid base64"))?;
        if got.len() != KEY_LEN || !openssl::memcmp::eq(&got, server_signature) {
            return Err(AuthError::ServerSignatureMismatch);
        }
        self.verified.set(true);
        Ok(())
    }

    /// True once [`Self::verify_server_final`] has accepted the server's signature.
    pub fn is_complete(&self) -> bool {
        self.verified.get()
    }

    /// True when the exchange completed with `tls-server-end-point` binding (libpq's
    /// `channel_bound`).
    pub fn channel_bound(&self) -> bool {
        self.is_complete() && matches!(self.cb, ChannelBindingChoice::TlsServerEndPoint(_))
    }
}

impl Drop for ScramClient {
    fn drop(&mut self) {
        wipe(&mut self.password);
    }
}

/// Overwrites secret bytes; `black_box` keeps the stores from being optimised away.
fn wipe(buf: &mut [u8]) {
    buf.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(buf);
}

pub(crate) fn hmac(key: &[u8], data: &[u8]) -> Result<[u8; KEY_LEN], openssl::error::ErrorStack> {
    let pkey = PKey::hmac(key)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &pkey)?;
    signer.update(data)?;
    let mut out = [0u8; KEY_LEN];
    signer.sign(&mut out)?;
    Ok(out)
}

/// `r=<nonce>,s=<base64 salt>,i=<iterations>`, in that order and nothing else (as libpq).
fn parse_server_first(msg: &str) -> Result<(&str, Vec<u8>, u32), AuthError> {
    if msg.starts_with("m=") {
        return Err(AuthError::invalid(
            "SCRAM server-first-message has an unsupported mandatory extension (m=)",
        ));
    }
    let mut parts = msg.split(',');
    let mut attr = |name: &str| {
        parts
            .next()
            .and_then(|p| p.strip_prefix(name))
            .ok_or_else(|| {
                AuthError::invalid(format!(
                    "malformed SCRAM server-first-message (expected attribute {name:?})"
                ))
            })
    };
    let nonce = attr("r=")?;
    let salt = attr("s=")?;
    let iterations = attr("i=")?;
    if parts.next().is_some() {
        return Err(AuthError::invalid(
            "garbage at end of SCRAM server-first-message",
        ));
    }
    if nonce.is_empty() || !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(AuthError::invalid(
            "SCRAM server nonce is empty or not printable",
        ));
    }
    let salt = B64
        .decode(salt)
        .map_err(|_| AuthError::invalid("SCRAM salt is not valid base64"))?;
    if salt.is_empty() {
        return Err(AuthError::invalid("SCRAM salt is empty"));
    }
    let iterations: u32 = match iterations.parse::<u64>() {
        Ok(n) if (1..=i32::MAX as u64).contains(&n) => n as u32,
        Ok(n) => {
            return Err(AuthError::invalid(format!(
                "SCRAM iteration count {n} out of range (1 to {})",
                i32::MAX
            )))
        }
        Err(_) => {
            return Err(AuthError::invalid(format!(
                "SCRAM iteration count {iterations:?} is not a positive integer"
            )))
        }
    };
    if iterations > MAX_ITERATIONS {
        return Err(AuthError::ScramIterationsTooHigh { iterations });
    }
    Ok((nonce, salt, iterations))
}

#[cfg(test)]
mod tests;
