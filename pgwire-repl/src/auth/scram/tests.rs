//! SCRAM client tests: RFC 7677's vector and full exchanges against a server computed here.

use super::*;

/// What a PostgreSQL server does with a client-final (auth-scram.c), from the salted password.
fn server_final_for(
    password: &[u8],
    salt: &[u8],
    iterations: usize,
    client_first: &[u8],
    server_first: &str,
    client_final: &[u8],
) -> Result<Vec<u8>, String> {
    let mut salted = [0u8; KEY_LEN];
    openssl::pkcs5::pbkdf2_hmac(
        password,
        salt,
        iterations,
        MessageDigest::sha256(),
        &mut salted,
    )
    .unwrap();
    let stored_key = openssl::sha::sha256(&hmac(&salted, b"Client Key").unwrap());
    let server_key = hmac(&salted, b"Server Key").unwrap();

    let client_first = std::str::from_utf8(client_first).unwrap();
    let bare = &client_first[client_first.find("n=").unwrap()..];
    let client_final = std::str::from_utf8(client_final).unwrap();
    let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let client_signature = hmac(&stored_key, auth_message.as_bytes()).unwrap();
    let mut client_key = B64.decode(proof).unwrap();
    client_key
        .iter_mut()
        .zip(client_signature)
        .for_each(|(k, s)| *k ^= s);
    if openssl::sha::sha256(&client_key) != stored_key {
        return Err("password authentication failed".into());
    }
    let server_signature = hmac(&server_key, auth_message.as_bytes()).unwrap();
    Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
}

/// Runs a whole exchange; `server_password` is what the server's verifier was built from.
fn exchange(
    client_password: &str,
    server_password: &[u8],
    iterations: usize,
    cb: ChannelBindingChoice,
) -> Result<ScramClient, AuthError> {
    let mut client = ScramClient::new(client_password, cb);
    let first = client.client_first_message();
    let nonce = std::str::from_utf8(&first)
        .unwrap()
        .rsplit_once("r=")
        .unwrap()
        .1
        .to_string();
    let salt = b"0123456789abcdef";
    let server_first = format!("r={nonce}srvNONCE+/=,s={},i={iterations}", B64.encode(salt));
    let client_final = client.handle_server_first(server_first.as_bytes())?;
    let server_final = server_final_for(
        server_password,
        salt,
        iterations,
        &first,
        &server_first,
        &client_final,
    )
    .map_err(|reason| AuthError::ServerError { reason })?;
    client.verify_server_final(&server_final)?;
    Ok(client)
}

#[test]
fn rfc7677_test_vector() {
    let mut client = ScramClient::new_for_test(
        "user",
        "pencil",
        "rOprNGfwEbeRWgbNEkqO",
        ChannelBindingChoice::Unsupported,
    );
    assert_eq!(client.mechanism(), "SCRAM-SHA-256");
    assert_eq!(
        client.client_first_message(),
        b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    );
    let client_final = client
        .handle_server_first(
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        )
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&client_final).unwrap(),
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
         p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    );
    assert!(!client.is_complete());
    client
        .verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        .unwrap();
    assert!(client.is_complete());
    assert!(!client.channel_bound());
}

#[test]
fn full_exchange_at_high_iteration_counts() {
    // postgres-protocol refuses > 100 000; PostgreSQL 16+ allows up to INT_MAX.
    for iterations in [4096, 200_000, 1_000_000] {
        let client = exchange(
            "s3cret",
            b"s3cret",
            iterations,
            ChannelBindingChoice::Unsupported,
        )
        .unwrap_or_else(|e| panic!("i={iterations}: {e}"));
        assert!(client.is_complete());
    }
}

#[test]
fn wrong_password_is_refused_by_server_and_forged_signature_by_client() {
    let err = exchange("wrong", b"right", 4096, ChannelBindingChoice::Unsupported)
        .err()
        .unwrap();
    assert!(matches!(err, AuthError::ServerError { .. }));

    let mut client = ScramClient::new("pw", ChannelBindingChoice::Unsupported);
    let first = String::from_utf8(client.client_first_message()).unwrap();
    let nonce = first.rsplit_once("r=").unwrap().1;
    client
        .handle_server_first(format!("r={nonce}x,s=c2FsdA==,i=4096").as_bytes())
        .unwrap();
    let forged = format!("v={}", B64.encode([0u8; 32]));
    assert_eq!(
        client.verify_server_final(forged.as_bytes()),
        Err(AuthError::ServerSignatureMismatch)
    );
    let short = format!("v={}", B64.encode([0u8; 8]));
    assert_eq!(
        client.verify_server_final(short.as_bytes()),
        Err(AuthError::ServerSignatureMismatch)
    );
    assert!(!client.is_complete());
}

#[test]
fn channel_binding_encoding() {
    let data = vec![0xAB; 32];
    for (cb, header, mechanism) in [
        (ChannelBindingChoice::Unsupported, "n,,", "SCRAM-SHA-256"),
        (
            ChannelBindingChoice::SupportedNotUsed,
            "y,,",
            "SCRAM-SHA-256",
        ),
        (
            ChannelBindingChoice::TlsServerEndPoint(data.clone()),
            "p=tls-server-end-point,,",
            "SCRAM-SHA-256-PLUS",
        ),
    ] {
        let mut client = ScramClient::new_for_test("", "pw", "abc", cb.clone());
        assert_eq!(client.mechanism(), mechanism);
        assert_eq!(
            client.client_first_message(),
            format!("{header}n=,r=abc").into_bytes()
        );
        let client_final = client
            .handle_server_first(b"r=abcdef,s=c2FsdA==,i=1")
            .unwrap();
        let client_final = String::from_utf8(client_final).unwrap();
        let c = client_final
            .strip_prefix("c=")
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        let mut want = header.as_bytes().to_vec();
        if let ChannelBindingChoice::TlsServerEndPoint(d) = &cb {
            want.extend_from_slice(d);
        }
        assert_eq!(B64.decode(c).unwrap(), want);
    }
    assert_eq!(
        ChannelBindingChoice::Unsupported.channel_binding_attr(),
        "biws"
    );
    assert_eq!(
        ChannelBindingChoice::SupportedNotUsed.channel_binding_attr(),
        "eSws"
    );

    let bound = exchange(
        "pw",
        b"pw",
        4096,
        ChannelBindingChoice::TlsServerEndPoint(data),
    )
    .unwrap();
    assert!(bound.channel_bound());
}

#[test]
fn saslprep_applied_and_raw_fallback() {
    // U+00AD (soft hyphen) is mapped to nothing: the verifier is built from "IX".
    assert!(exchange("I\u{00AD}X", b"IX", 4096, ChannelBindingChoice::Unsupported).is_ok());
    // U+2168 (ROMAN NUMERAL NINE) normalizes (NFKC) to "IX".
    assert!(exchange("\u{2168}", b"IX", 4096, ChannelBindingChoice::Unsupported).is_ok());
    // A control character is prohibited: libpq then uses the raw bytes, so do we.
    assert!(exchange(
        "a\u{0007}b",
        b"a\x07b",
        4096,
        ChannelBindingChoice::Unsupported
    )
    .is_ok());
}

fn first_reply(server_first: &str) -> Result<Vec<u8>, AuthError> {
    ScramClient::new_for_test("", "pw", "abc", ChannelBindingChoice::Unsupported)
        .handle_server_first(server_first.as_bytes())
}

fn invalid_reason(r: Result<Vec<u8>, AuthError>) -> String {
    match r {
        Err(AuthError::InvalidServerMessage { reason }) => reason,
        other => panic!("expected InvalidServerMessage, got {other:?}"),
    }
}

#[test]
fn server_first_validation() {
    assert!(invalid_reason(first_reply("r=xyz123,s=c2FsdA==,i=4096")).contains("nonce mismatch"));
    assert!(invalid_reason(first_reply("r=abcd,s=!!!,i=4096")).contains("base64"));
    assert!(invalid_reason(first_reply("r=abcd,s=,i=4096")).contains("empty"));
    assert!(invalid_reason(first_reply("r=abcd,s=c2FsdA==,i=0")).contains("out of range"));
    assert!(invalid_reason(first_reply("r=abcd,s=c2FsdA==,i=2147483648")).contains("out of range"));
    assert!(
        invalid_reason(first_reply("r=abcd,s=c2FsdA==,i=-1")).contains("not a positive integer")
    );
    assert!(
        invalid_reason(first_reply("r=abcd,s=c2FsdA==,i=99999999999999999999999"))
            .contains("not a positive integer")
    );
    assert!(invalid_reason(first_reply("r=abcd,s=c2FsdA==,i=4096,x=1")).contains("garbage"));
    assert!(invalid_reason(first_reply("r=abcd,i=4096,s=c2FsdA==")).contains("\"s=\""));
    assert!(invalid_reason(first_reply("m=ext,r=abcd,s=c2FsdA==,i=1")).contains("mandatory"));
    assert!(invalid_reason(first_reply("r=abcd,s=c2FsdA==")).contains("\"i=\""));
    assert!(parse_server_first(&format!("r=abcd,s=c2FsdA==,i={MAX_ITERATIONS}")).is_ok());

    let mut client = ScramClient::new_for_test("", "pw", "abc", ChannelBindingChoice::Unsupported);
    assert!(client.handle_server_first(b"r=abcd,s=c2FsdA==,i=1").is_ok());
    assert!(client
        .handle_server_first(b"r=abcd,s=c2FsdA==,i=1")
        .is_err());
}

#[test]
fn server_final_errors() {
    let fresh = ScramClient::new_for_test("", "pw", "abc", ChannelBindingChoice::Unsupported);
    assert!(matches!(
        fresh.verify_server_final(b"v=AAAA"),
        Err(AuthError::InvalidServerMessage { .. })
    ));

    let mut client = ScramClient::new_for_test("", "pw", "abc", ChannelBindingChoice::Unsupported);
    client
        .handle_server_first(b"r=abcd,s=c2FsdA==,i=1")
        .unwrap();
    let e = client.verify_server_final(b"e=invalid-proof").unwrap_err();
    assert_eq!(
        e,
        AuthError::ServerError {
            reason: "invalid-proof".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "error received from server in SCRAM exchange: invalid-proof"
    );
    assert!(matches!(
        client.verify_server_final(b"x=1"),
        Err(AuthError::InvalidServerMessage { .. })
    ));
    assert!(matches!(
        client.verify_server_final(b"v=AAAA,x=1"),
        Err(AuthError::InvalidServerMessage { .. })
    ));
    assert!(matches!(
        client.verify_server_final(b"v=***"),
        Err(AuthError::InvalidServerMessage { .. })
    ));
}

#[test]
fn errors_never_contain_the_password() {
    let secret = "hunter2-very-secret";
    let mut client =
        ScramClient::new_for_test("", secret, "abc", ChannelBindingChoice::Unsupported);
    for msg in ["r=zzz,s=c2FsdA==,i=1", "r=abcd,s=c2FsdA==,i=0"] {
        let e = client.handle_server_first(msg.as_bytes()).unwrap_err();
        assert!(!format!("{e} {e:?}").contains(secret));
    }
}

#[test]
fn authentication_ok_after_exchange() {
    use crate::auth::check_authentication_ok;
    use crate::config::ChannelBinding;

    let bound = exchange(
        "pw",
        b"pw",
        4096,
        ChannelBindingChoice::TlsServerEndPoint(vec![1; 32]),
    )
    .unwrap();
    assert!(bound.channel_bound());
    assert!(check_authentication_ok(Some(&bound), ChannelBinding::Require).is_ok());

    for cb in [
        ChannelBindingChoice::Unsupported,
        ChannelBindingChoice::SupportedNotUsed,
    ] {
        let unbound = exchange("pw", b"pw", 4096, cb).unwrap();
        assert!(!unbound.channel_bound());
        assert!(check_authentication_ok(Some(&unbound), ChannelBinding::Prefer).is_ok());
        let e = check_authentication_ok(Some(&unbound), ChannelBinding::Require).unwrap_err();
        assert!(
            matches!(e, AuthError::ChannelBindingRequired { .. }),
            "{e:?}"
        );
    }
}

/// Regression: a hostile server could ask for up to INT_MAX PBKDF2 iterations (minutes of CPU
/// per connection attempt); above MAX_ITERATIONS it is refused before anything is computed.
#[test]
fn scram_iteration_count_above_the_bound_is_refused_before_computing() {
    for i in [MAX_ITERATIONS + 1, 2_000_000_000, i32::MAX as u32] {
        let started = std::time::Instant::now();
        let err = first_reply(&format!("r=abcd,s=c2FsdA==,i={i}")).unwrap_err();
        assert_eq!(err, AuthError::ScramIterationsTooHigh { iterations: i });
        let msg = err.to_string();
        assert!(
            msg.contains(&i.to_string()) && msg.contains("scram_iterations"),
            "{msg}"
        );
        // Refused, not computed: 10 million iterations alone take seconds.
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
