//! Parsing tests: conninfo syntax, URIs, multi-host rules, values and redaction.

use super::*;

/// Parses with no environment at all, so results do not depend on the machine.
fn p(s: &str) -> Config {
    Config::parse_with_env(s, &|_| None).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn err(s: &str) -> ConfigError {
    match Config::parse_with_env(s, &|_| None) {
        Ok(c) => panic!("{s:?} parsed: {c:?}"),
        Err(e) => e,
    }
}

fn tcp(host: &str, port: u16) -> Target {
    Target {
        host: Host::Tcp(host.into()),
        hostaddr: None,
        port,
    }
}

fn unix(dir: &str, port: u16) -> Target {
    Target {
        host: Host::Unix(dir.into()),
        hostaddr: None,
        port,
    }
}

fn default_target() -> Target {
    Target {
        host: Host::Unix(default_socket_dir()),
        hostaddr: None,
        port: 5432,
    }
}

/// Asserts an InvalidValue for `key` whose reason mentions every one of `words`.
fn assert_invalid(s: &str, key: &str, words: &[&str]) {
    match err(s) {
        ConfigError::InvalidValue { key: k, reason, .. } => {
            assert_eq!(k, key, "{s:?}");
            for w in words {
                assert!(reason.contains(w), "{s:?}: {reason:?} lacks {w:?}");
            }
        }
        other => panic!("{s:?}: expected InvalidValue for {key}, got {other:?}"),
    }
}

#[test]
fn empty_string_is_all_defaults() {
    for s in ["", "   ", "\t\n"] {
        let c = p(s);
        assert_eq!(c.targets, vec![default_target()]);
        assert_eq!(c.user, None);
        assert_eq!(c.password, None);
        assert_eq!(c.dbname, None);
        assert_eq!(c.sslmode, SslMode::Prefer);
        assert_eq!(c.channel_binding, ChannelBinding::Prefer);
        assert_eq!(c.target_session_attrs, TargetSessionAttrs::Any);
        assert_eq!(c.replication, ReplicationMode::Off);
        assert_eq!(c.connect_timeout, None);
        assert_eq!(
            (&c.sslrootcert, &c.sslcert, &c.sslkey),
            (&None, &None, &None)
        );
    }
    let dir = default_socket_dir();
    assert!(dir == Path::new("/tmp") || dir == Path::new("/var/run/postgresql"));
}

#[test]
fn keyword_value_whitespace_and_duplicates() {
    let c = p("  host = db1\tport=  6000 user =bob dbname=x dbname=y ");
    assert_eq!(c.targets, vec![tcp("db1", 6000)]);
    assert_eq!(c.user.as_deref(), Some("bob"));
    assert_eq!(c.dbname.as_deref(), Some("y"), "the last setting wins");
}

#[test]
fn quoting_and_escapes() {
    let c =
        p(r"password='it\'s a \\ secret' dbname='my db' application_name=a\ b\\c options='-c x=1'");
    assert_eq!(c.password.as_deref(), Some(r"it's a \ secret"));
    assert_eq!(c.dbname.as_deref(), Some("my db"));
    assert_eq!(c.application_name.as_deref(), Some(r"a b\c"));
    assert_eq!(c.options.as_deref(), Some("-c x=1"));
    // A closing quote ends the value even without whitespace after it.
    assert_eq!(p("host='a'port=5").targets, vec![tcp("a", 5)]);
    // Empty values mean the default.
    let c = p("user='' dbname='' host=''");
    assert_eq!((c.user, c.dbname), (None, None));
    assert_eq!(c.targets, vec![default_target()]);
    // Non-ASCII survives.
    assert_eq!(p("dbname='bäse ü'").dbname.as_deref(), Some("bäse ü"));
}

#[test]
fn keyword_syntax_errors() {
    assert!(matches!(err("host"), ConfigError::Syntax(m) if m.contains("\"host\"")));
    assert!(matches!(err("host db"), ConfigError::Syntax(_)));
    assert!(matches!(err("dbname='x"), ConfigError::Syntax(m) if m.contains("unterminated")));
    assert_eq!(err("foo=bar"), ConfigError::UnknownOption("foo".into()));
    assert_eq!(err("=bar"), ConfigError::UnknownOption("".into()));
}

#[test]
fn errors_never_show_a_password() {
    let bad = [
        "password='hunter2",
        "password=hunter2 extra",
        "password=hunter2 more=x",
        "sslpassword=hunter2 more",
        "postgresql://u:hunter2@[::1",
        "postgresql://u:hunter2@[::1]x/db",
        "postgresql://u:hunter2@[]/db",
        "postgresql://u:hunt@er2@h/db",
        "postgresql://u:hunter2%zz@h/db",
        "postgresql://u:hunter2%00@h/db",
        "postgresql://u:hunter2%ff@h/db",
        "postgresql://u:hunter2@h/db?bogus=1",
        "postgresql://u:hunter2@h/db?sslmode=bogus",
        "postgresql://u:hunter2@h:99999/db",
        "postgresql://h/db?password=hunter2%zz",
        "postgresql://h/db?password=hunter2=x",
        "postgresql://h/db?passwordhunter2",
        "password=hunter2 port=0",
        "password=hunter2 host=a,b port=1,2,3",
    ];
    for s in bad {
        let e = err(s);
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("hunter2"), "{s:?} leaked: {shown}");
    }
}

#[test]
fn legacy_requiressl() {
    assert_eq!(p("requiressl=1").sslmode, SslMode::Require);
    assert_eq!(p("requiressl=0").sslmode, SslMode::Prefer);
}

#[test]
fn uri_with_every_part() {
    let c = p(
        "postgresql://al%40ice:p%40ss%3Aw%2F@db1.example:6432,[2001:db8::1]:6433,db3/my%20db\
               ?application_name=pg%20stream&sslmode=verify-full&connect_timeout=10",
    );
    assert_eq!(c.user.as_deref(), Some("al@ice"));
    assert_eq!(c.password.as_deref(), Some("p@ss:w/"));
    assert_eq!(
        c.targets,
        vec![
            tcp("db1.example", 6432),
            tcp("2001:db8::1", 6433),
            tcp("db3", 5432)
        ]
    );
    assert_eq!(c.dbname.as_deref(), Some("my db"));
    assert_eq!(c.application_name.as_deref(), Some("pg stream"));
    assert_eq!(c.sslmode, SslMode::VerifyFull);
    assert_eq!(c.connect_timeout, Some(Duration::from_secs(10)));
}

#[test]
fn uri_short_forms() {
    assert_eq!(p("postgresql://").targets, vec![default_target()]);
    assert_eq!(p("postgres://").targets, vec![default_target()]);
    let c = p("postgresql:///mydb");
    assert_eq!(
        (c.targets, c.dbname.as_deref()),
        (vec![default_target()], Some("mydb"))
    );
    assert_eq!(p("postgresql://h").targets, vec![tcp("h", 5432)]);
    assert_eq!(p("postgresql://h:7000").targets, vec![tcp("h", 7000)]);
    assert_eq!(p("postgresql://h/").dbname, None);
    assert_eq!(p("postgresql://h?").targets, vec![tcp("h", 5432)]);
    assert_eq!(
        p("postgresql://h/d?sslmode=require&").sslmode,
        SslMode::Require
    );
    let c = p("postgresql://bob@h");
    assert_eq!((c.user.as_deref(), c.password), (Some("bob"), None));
    let c = p("postgresql://:pw@h");
    assert_eq!((c.user, c.password.as_deref()), (None, Some("pw")));
    // '+' is not a space in libpq's percent-decoding.
    assert_eq!(p("postgresql:///a+b").dbname.as_deref(), Some("a+b"));
    // JDBC's ssl=true.
    assert_eq!(p("postgresql://h?ssl=true").sslmode, SslMode::Require);
    // Query parameters override the earlier parts.
    let c = p("postgresql://u@h:1/d?user=v&port=2&dbname=e");
    assert_eq!(
        (c.user.as_deref(), c.dbname.as_deref()),
        (Some("v"), Some("e"))
    );
    assert_eq!(c.targets, vec![tcp("h", 2)]);
    // An '@' in a query value is not user info.
    let c = p("postgresql://h/d?application_name=a@b");
    assert_eq!(c.application_name.as_deref(), Some("a@b"));
    assert_eq!(c.user, None);
}

#[test]
fn uri_ipv6() {
    assert_eq!(
        p("postgresql://[::1]:5433/db").targets,
        vec![tcp("::1", 5433)]
    );
    assert_eq!(p("postgresql://[::1]").targets, vec![tcp("::1", 5432)]);
    assert_eq!(
        p("postgresql://[::1]?sslmode=disable").targets,
        vec![tcp("::1", 5432)]
    );
    assert_eq!(
        p("postgresql://[fe80::1%25eth0]:1,[::2]").targets,
        vec![tcp("fe80::1%eth0", 1), tcp("::2", 5432)]
    );
    assert!(matches!(err("postgresql://[::1"), ConfigError::Syntax(_)));
    assert!(matches!(
        err("postgresql://[]:5432"),
        ConfigError::Syntax(_)
    ));
    let e = err("postgresql://[::1]x");
    assert!(matches!(&e, ConfigError::Syntax(m) if m.contains("'x'") && m.contains("position 19")));
}

#[test]
fn uri_unix_sockets() {
    let c = p("postgresql://%2Fvar%2Frun%2Fpostgresql/db");
    assert_eq!(c.targets, vec![unix("/var/run/postgresql", 5432)]);
    let c = p("postgresql:///db?host=/tmp&port=6000");
    assert_eq!(c.targets, vec![unix("/tmp", 6000)]);
    let c = p("postgresql://%2Ftmp:6001,%40abstract/db");
    assert_eq!(c.targets, vec![unix("/tmp", 6001), unix("@abstract", 5432)]);
    let c = p("postgresql://user@/db?host=%2Fsock%20dir");
    assert_eq!(c.targets, vec![unix("/sock dir", 5432)]);
}

#[test]
fn uri_errors() {
    assert_eq!(
        err("postgresql://h?foo=1"),
        ConfigError::UnknownOption("foo".into())
    );
    for s in [
        "postgresql://h?sslmode",
        "postgresql://h?a=b=c",
        "postgresql://h?sslmode=require&&port=1",
        "postgresql://h/d%zz",
        "postgresql://h/d%0",
        "postgresql://h/d%00",
        "postgresql://h/d%ff",
    ] {
        assert!(matches!(err(s), ConfigError::Syntax(_)), "{s}");
    }
    // Only the lower-case designators, at the very start, make a URI.
    assert!(matches!(err("POSTGRESQL://h"), ConfigError::Syntax(_)));
}

#[test]
fn multi_host_and_ports() {
    let c = p("host=a,b,c port=6000");
    assert_eq!(
        c.targets,
        vec![tcp("a", 6000), tcp("b", 6000), tcp("c", 6000)]
    );
    let c = p("host=a,b port=1,2");
    assert_eq!(c.targets, vec![tcp("a", 1), tcp("b", 2)]);
    let c = p("host=a,,/tmp port=,6000,");
    assert_eq!(
        c.targets,
        vec![
            tcp("a", 5432),
            Target {
                port: 6000,
                ..default_target()
            },
            unix("/tmp", 5432)
        ]
    );
    let c = p("host=@abstract");
    assert_eq!(c.targets, vec![unix("@abstract", 5432)]);
    let c = p("port=7000");
    assert_eq!(
        c.targets,
        vec![Target {
            port: 7000,
            ..default_target()
        }]
    );
    let e = err("host=a,b port=1,2,3");
    assert!(
        matches!(&e, ConfigError::Other(m) if m.contains("3 port numbers to 2 hosts")),
        "{e}"
    );
    let e = err("port=1,2");
    assert!(
        matches!(&e, ConfigError::Other(m) if m.contains("2 port numbers to 1 hosts")),
        "{e}"
    );
}

#[test]
fn hostaddr_rules() {
    let c = p("hostaddr=10.0.0.1,::1 port=1,2");
    let expect = vec![
        Target {
            host: Host::Tcp("10.0.0.1".into()),
            hostaddr: Some("10.0.0.1".into()),
            port: 1,
        },
        Target {
            host: Host::Tcp("::1".into()),
            hostaddr: Some("::1".into()),
            port: 2,
        },
    ];
    assert_eq!(c.targets, expect);
    let c = p("host=db.example,other hostaddr=192.0.2.1,");
    assert_eq!(
        c.targets,
        vec![
            Target {
                host: Host::Tcp("db.example".into()),
                hostaddr: Some("192.0.2.1".into()),
                port: 5432
            },
            tcp("other", 5432),
        ]
    );
    let c = p("host=/tmp hostaddr=127.0.0.1");
    assert_eq!(
        c.targets[0].host,
        Host::Tcp("/tmp".into()),
        "hostaddr means TCP"
    );
    assert_eq!(
        p("hostaddr=fe80::1%eth0").targets[0].hostaddr.as_deref(),
        Some("fe80::1%eth0")
    );
    let e = err("host=a hostaddr=10.0.0.1,10.0.0.2");
    assert!(
        matches!(&e, ConfigError::Other(m) if m.contains("1 host names to 2 hostaddr")),
        "{e}"
    );
    assert_invalid("hostaddr=db.example", "hostaddr", &["numeric"]);
    assert_invalid("hostaddr=10.0.0.1%eth0", "hostaddr", &["numeric"]);
}

#[test]
fn bad_ports_and_socket_paths() {
    for s in [
        "port=0",
        "port=65536",
        "port=abc",
        "port=-1",
        "host=a,b port=1,x",
    ] {
        assert_invalid(s, "port", &["1 to 65535"]);
    }
    assert_eq!(p("port=' 6000 '").targets[0].port, 6000);
    let long = format!("host=/{}", "d".repeat(100));
    assert_invalid(&long, "host", &["Unix-socket path", "107"]);
}

#[test]
fn enums_accept_every_libpq_spelling() {
    for (mode, name) in SslMode::ALL {
        assert_eq!(p(&format!("sslmode={name}")).sslmode, *mode);
    }
    for (attrs, name) in TargetSessionAttrs::ALL {
        assert_eq!(
            p(&format!("target_session_attrs={name}")).target_session_attrs,
            *attrs
        );
    }
    for (cb, name) in ChannelBinding::ALL {
        assert_eq!(p(&format!("channel_binding={name}")).channel_binding, *cb);
    }
}

#[test]
fn bad_enum_values_name_key_and_valid_values() {
    assert_invalid(
        "sslmode=bogus",
        "sslmode",
        &["\"disable\"", "\"verify-ca\"", "\"verify-full\""],
    );
    assert_invalid("sslmode=Require", "sslmode", &["\"require\""]);
    assert_invalid(
        "target_session_attrs=primary-only",
        "target_session_attrs",
        &["\"prefer-standby\"", "\"read-write\""],
    );
    assert_invalid(
        "channel_binding=maybe",
        "channel_binding",
        &["\"disable\"", "\"require\""],
    );
    assert_invalid("gssencmode=sometimes", "gssencmode", &["\"prefer\""]);
    assert_invalid(
        "load_balance_hosts=yes",
        "load_balance_hosts",
        &["\"random\""],
    );
    assert_invalid(
        "ssl_min_protocol_version=SSLv3",
        "ssl_min_protocol_version",
        &["\"TLSv1.3\""],
    );
}

#[test]
fn connect_timeout_like_libpq() {
    let t = |s: &str| p(&format!("connect_timeout={s}")).connect_timeout;
    assert_eq!(t("10"), Some(Duration::from_secs(10)));
    assert_eq!(t("2"), Some(Duration::from_secs(2)));
    assert_eq!(t("1"), Some(Duration::from_secs(2)), "libpq raises 1 to 2");
    assert_eq!(t("0"), None);
    assert_eq!(t("-5"), None);
    assert_eq!(t("' 7 '"), Some(Duration::from_secs(7)));
    assert_eq!(p("connect_timeout=''").connect_timeout, None);
    assert_invalid("connect_timeout=10s", "connect_timeout", &["integer"]);
}

#[test]
fn replication_values() {
    for v in ["true", "on", "yes", "1", "TRUE", "t", "y", "On"] {
        assert_eq!(
            p(&format!("replication={v}")).replication,
            ReplicationMode::Physical,
            "{v}"
        );
    }
    for v in ["false", "off", "no", "0", "f", "n", "OFF"] {
        assert_eq!(
            p(&format!("replication={v}")).replication,
            ReplicationMode::Off,
            "{v}"
        );
    }
    assert_invalid(
        "replication=database",
        "replication",
        &["logical replication", "not supported"],
    );
    assert_invalid("replication=o", "replication", &["\"true\"", "\"false\""]);
    assert_invalid("replication=2", "replication", &["\"on\""]);
}

#[test]
fn ignored_options_are_accepted() {
    let c = p(
        "keepalives=1 keepalives_idle=30 keepalives_interval=10 keepalives_count=3 \
               tcp_user_timeout=1000 gssencmode=disable sslcompression=0 sslsni=1 \
               client_encoding=UTF8 krbsrvname=postgres gsslib=gssapi gssdelegation=0 \
               requirepeer=postgres load_balance_hosts=disable sslnegotiation=postgres \
               ssl_min_protocol_version=tlsv1.2 ssl_max_protocol_version=TLSv1.3 \
               sslcertmode=allow host=a",
    );
    assert_eq!(c.targets, vec![tcp("a", 5432)]);
    assert_eq!(c.ssl_min_protocol_version.as_deref(), Some("TLSv1.2"));
    assert_eq!(c.ssl_max_protocol_version.as_deref(), Some("TLSv1.3"));
    assert_eq!(p("gssencmode=prefer").targets, vec![default_target()]);
    for key in IGNORED_OPTIONS {
        assert!(resolve::is_known_option(key), "{key}");
    }
}

#[test]
fn options_that_would_weaken_security_are_refused() {
    assert_invalid(
        "gssencmode=require",
        "gssencmode",
        &["not supported", "\"prefer\""],
    );
    assert_invalid(
        "sslnegotiation=direct",
        "sslnegotiation",
        &["not supported"],
    );
    assert_invalid("sslcertmode=require", "sslcertmode", &["not supported"]);
    assert_invalid("service=prod", "service", &["service files"]);
    assert_invalid("sslcrl=/etc/crl.pem", "sslcrl", &["revocation"]);
    assert_invalid("sslcrldir=/etc/crls", "sslcrldir", &["revocation"]);
    assert_invalid(
        "require_auth=scram-sha-256",
        "require_auth",
        &["not supported"],
    );
    assert_invalid("keepalives=yes", "keepalives", &["integer"]);
    assert_invalid(
        "ssl_min_protocol_version=TLSv1.3 ssl_max_protocol_version=TLSv1.2",
        "ssl_max_protocol_version",
        &["lower"],
    );
    // Empty values of refused options are simply unset.
    assert_eq!(p("service='' sslcrl=''").targets, vec![default_target()]);
}

#[test]
fn sslcertmode_disable_drops_client_certificate() {
    let c = p("sslcert=/c.crt sslkey=/c.key sslcertmode=disable");
    assert_eq!((c.sslcert, c.sslkey), (None, None));
}

#[test]
fn load_balance_random_keeps_every_target() {
    let c = p("host=a,b,c,d port=1,2,3,4 load_balance_hosts=random");
    let mut hosts: Vec<String> = c.targets.iter().map(|t| t.to_string()).collect();
    hosts.sort();
    assert_eq!(hosts, ["a:1", "b:2", "c:3", "d:4"]);
}

#[test]
fn sslrootcert_system() {
    let c = p("sslrootcert=system host=h");
    assert!(c.uses_system_roots());
    assert_eq!(c.sslmode, SslMode::VerifyFull, "system implies verify-full");
    assert_eq!(
        p("sslrootcert=system sslmode=verify-full").sslmode,
        SslMode::VerifyFull
    );
    for weak in ["disable", "allow", "prefer", "require", "verify-ca"] {
        assert_invalid(
            &format!("sslrootcert=system sslmode={weak}"),
            "sslmode",
            &["verify-full", "system"],
        );
    }
    assert!(!p("sslrootcert=./system").uses_system_roots());
    assert!(!p("").uses_system_roots());
}

#[test]
fn application_name_and_fallback() {
    assert_eq!(
        p("fallback_application_name=f").application_name.as_deref(),
        Some("f")
    );
    let c = p("fallback_application_name=f application_name=a");
    assert_eq!(c.application_name.as_deref(), Some("a"));
    let c = p("").with_fallback_application_name("pgstream");
    assert_eq!(c.application_name.as_deref(), Some("pgstream"));
    let c = p("application_name=mine").with_fallback_application_name("pgstream");
    assert_eq!(c.application_name.as_deref(), Some("mine"));
}

#[test]
fn redacted_hides_secrets_and_round_trips() {
    let s = "host=a,/tmp,b hostaddr=10.0.0.1,, port=1,2,3 user=bob password='hunter2 x' \
             dbname='my db' application_name='it\\'s' options='-c a=b' sslmode=verify-ca \
             sslrootcert=/ca.pem sslcert=/c.crt sslkey=/c.key sslpassword=keysecret \
             channel_binding=require connect_timeout=5 target_session_attrs=standby \
             replication=true passfile=/pw ssl_min_protocol_version=TLSv1.3";
    let c = p(s);
    let r = c.redacted();
    assert!(!r.contains("hunter2") && !r.contains("keysecret"), "{r}");
    assert!(
        r.contains("password=******** ") && r.contains("sslpassword=********"),
        "{r}"
    );
    assert_eq!(c.to_string(), r);
    let back = p(&r);
    assert_eq!(back.targets, c.targets);
    assert_eq!(back.password.as_deref(), Some(REDACTED));
    assert_eq!(back.redacted(), r);
    for (a, b) in [
        (&back.user, &c.user),
        (&back.dbname, &c.dbname),
        (&back.application_name, &c.application_name),
        (&back.options, &c.options),
    ] {
        assert_eq!(a, b);
    }
    assert_eq!(
        (
            back.sslmode,
            back.channel_binding,
            back.target_session_attrs,
            back.replication
        ),
        (
            c.sslmode,
            c.channel_binding,
            c.target_session_attrs,
            c.replication
        )
    );
    assert_eq!(
        (back.connect_timeout, &back.passfile),
        (c.connect_timeout, &c.passfile)
    );
    assert_eq!(
        (&back.sslrootcert, &back.sslcert, &back.sslkey),
        (&c.sslrootcert, &c.sslcert, &c.sslkey)
    );
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("keysecret"),
        "{debug}"
    );
}

#[test]
fn redacted_of_defaults() {
    let r = p("").redacted();
    let dir = default_socket_dir();
    assert_eq!(
        r,
        format!("host={} port=5432 sslmode=prefer", dir.display())
    );
    assert_eq!(Config::default().redacted(), "sslmode=prefer");
}
