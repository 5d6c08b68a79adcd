//! Self-test of the harness: real clusters of every major in `PGSTREAM_TEST_MAJORS`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use integration::{
    client_tool, cluster, scratch_dir, server_user, test_majors, Cluster, ServerUser, TlsOptions,
};

fn newest_test_major() -> u32 {
    *test_majors().last().expect("PGSTREAM_TEST_MAJORS is empty")
}

fn tls_conninfo(pg: &Cluster, user: &str, root_cert: &std::path::Path) -> String {
    // host= is what verify-full checks against the SANs; hostaddr= is where to connect.
    format!(
        "host=localhost hostaddr=127.0.0.1 port={} user={user} dbname=postgres \
         sslmode=verify-full sslrootcert={}",
        pg.port(),
        root_cert.display()
    )
}

const MY_SSL: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

#[test]
fn every_major_starts_with_tls_and_reports_its_version() {
    for major in test_majors() {
        let pg = cluster(major)
            .tls(TlsOptions {
                client_ca: true,
                ..TlsOptions::default()
            })
            .hba("hostssl all certuser 127.0.0.1/32 cert")
            .start();
        assert_eq!(pg.major(), major);

        let version = pg.psql("SELECT version()");
        assert!(
            version.starts_with(&format!("PostgreSQL {major}.")),
            "cluster of major {major} reports {version:?}"
        );
        let num: u32 = pg.psql("SHOW server_version_num").parse().unwrap();
        assert_eq!(num / 10000, major);
        assert_eq!(pg.psql("SHOW ssl"), "on");
        assert_eq!(pg.psql("SHOW wal_level"), "replica");
        assert_eq!(pg.psql("SHOW fsync"), "on");
        assert_eq!(pg.psql("SHOW max_wal_senders"), "10");
        assert_eq!(pg.psql("SELECT current_user"), "postgres");
        // Several statements, the last one's rows come back.
        assert_eq!(
            pg.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2); SELECT sum(x) FROM t"),
            "3"
        );

        let plain = pg.try_psql_conninfo(&pg.conninfo("postgres"), MY_SSL);
        assert_eq!(plain.as_deref(), Ok("f"), "major {major}: plain TCP");

        let tls = pg.tls();
        let verified =
            pg.try_psql_conninfo(&tls_conninfo(&pg, "postgres", &tls.ca_cert_path), MY_SSL);
        assert_eq!(verified.as_deref(), Ok("t"), "major {major}: verify-full");

        let wrong =
            pg.try_psql_conninfo(&tls_conninfo(&pg, "postgres", &tls.wrong_ca_path), MY_SSL);
        let err = wrong.expect_err("a server certificate verified against an unrelated CA");
        assert!(
            err.contains("certificate verify failed"),
            "major {major}: {err}"
        );

        pg.psql("CREATE ROLE certuser LOGIN");
        let (cert, key) = pg.client_cert("certuser");
        let with_cert = format!(
            "{} sslcert={} sslkey={}",
            tls_conninfo(&pg, "certuser", &tls.ca_cert_path),
            cert.display(),
            key.display()
        );
        assert_eq!(
            pg.try_psql_conninfo(&with_cert, "SELECT current_user")
                .as_deref(),
            Ok("certuser"),
            "major {major}: client certificate authentication"
        );
        let without_cert = tls_conninfo(&pg, "certuser", &tls.ca_cert_path);
        assert!(
            pg.try_psql_conninfo(&without_cert, "SELECT 1").is_err(),
            "major {major}: the cert hba line let a client without certificate in"
        );
    }
}

fn process_gone(pid: u32) -> bool {
    // An orphaned postmaster may linger as a zombie where nobody reaps: that counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

#[test]
fn a_panicking_test_still_stops_its_cluster() {
    let major = test_majors()[0];
    let mut seen: Option<(u32, PathBuf)> = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let pg = cluster(major).start();
        seen = Some((
            pg.postmaster_pid().expect("postmaster.pid"),
            pg.temp_dir().to_path_buf(),
        ));
        panic!("deliberate panic while owning a cluster");
    }));
    assert!(result.is_err());
    let (pid, temp_dir) = seen.expect("cluster started before the panic");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !process_gone(pid) {
        assert!(
            Instant::now() < deadline,
            "postmaster {pid} still runs after the panic"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if std::env::var("PGSTREAM_KEEP_CLUSTERS").as_deref() != Ok("1") {
        assert!(!temp_dir.exists(), "{} not removed", temp_dir.display());
    }
}

#[test]
fn lifecycle_settings_hba_and_tablespaces() {
    let major = newest_test_major();
    let pg = cluster(major)
        .setting("wal_keep_size", "16MB")
        .setting("cluster_name", "it's quoted")
        .initdb_arg("--data-checksums")
        .tablespace("ts_one")
        .hba("local all alice reject")
        .start();
    assert_eq!(pg.psql("SHOW wal_keep_size"), "16MB");
    assert_eq!(pg.psql("SHOW cluster_name"), "it's quoted");
    assert_eq!(pg.psql("SHOW data_checksums"), "on");
    let location =
        pg.psql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts_one'");
    assert_eq!(PathBuf::from(location), pg.tablespace_dir("ts_one"));
    pg.psql("CREATE TABLE in_ts (x int) TABLESPACE ts_one; INSERT INTO in_ts VALUES (7)");

    if let ServerUser::Switch { uid, .. } = server_user() {
        use std::os::unix::fs::MetadataExt;
        for path in [pg.data_dir(), pg.temp_dir(), &pg.tablespace_dir("ts_one")] {
            assert_eq!(
                std::fs::metadata(path).unwrap().uid(),
                *uid,
                "{}",
                path.display()
            );
        }
    }

    pg.psql("CREATE ROLE alice LOGIN");
    let alice = format!(
        "host={} port={} user=alice dbname=postgres",
        pg.socket_dir().display(),
        pg.port()
    );
    let err = pg
        .try_psql_conninfo(&alice, "SELECT 1")
        .expect_err("hba reject line");
    assert!(err.contains("alice"), "{err}");

    pg.stop();
    assert!(!pg.is_running());
    assert!(pg.try_psql("SELECT 1").is_err());
    pg.start();
    assert_eq!(pg.psql("SELECT x FROM in_ts"), "7");
    pg.stop_immediate();
    pg.start(); // crash recovery
    assert_eq!(pg.psql("SELECT x FROM in_ts"), "7");
    pg.restart();
    pg.psql("ALTER SYSTEM SET log_min_messages = 'debug1'");
    pg.reload();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg.psql("SHOW log_min_messages") != "debug1" {
        assert!(Instant::now() < deadline, "reload did not apply");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pg
        .server_log()
        .contains("database system is ready to accept connections"));
}

#[test]
fn replace_hba_removes_the_defaults() {
    let major = newest_test_major();
    let pg = cluster(major)
        .replace_hba(["local all postgres trust"])
        .start();
    assert_eq!(pg.psql("SELECT 1"), "1");
    let err = pg
        .try_psql_conninfo(&pg.conninfo("postgres"), "SELECT 1")
        .expect_err("TCP has no hba line");
    assert!(err.contains("pg_hba.conf"), "{err}");
}

#[test]
fn standby_from_pg_basebackup_promotes() {
    let major = newest_test_major();
    let primary = cluster(major).start();
    primary.psql("CREATE TABLE before_backup AS SELECT 42 AS answer");
    let scratch = scratch_dir();
    let standby_dir = scratch.path().join("standby");
    let out = Command::new(client_tool(major, "pg_basebackup"))
        .arg("-D")
        .arg(&standby_dir)
        .args([
            "-d",
            &primary.conninfo("postgres"),
            "-X",
            "stream",
            "-R",
            "-c",
            "fast",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_basebackup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let standby = cluster(major).restored_data_dir(&standby_dir).start();
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()"), "t");
    assert_eq!(standby.psql("SELECT answer FROM before_backup"), "42");
    standby.promote();
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()"), "f");
    standby.psql("CREATE TABLE after_promote (x int)");
    drop(standby);
    assert!(
        standby_dir.join("PG_VERSION").exists(),
        "restored dir belongs to the test"
    );
}

#[test]
fn missing_major_panics_with_install_hint() {
    let err = catch_unwind(|| integration::pg_bin_dir(12)).expect_err("no PostgreSQL 12 here");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("scripts/install-postgres.sh 12"), "{msg}");
    assert!(msg.contains("PGSTREAM_PG12_BIN"), "{msg}");
}

#[test]
fn client_tools_fall_back_to_the_newest_major() {
    for major in test_majors() {
        let psql = client_tool(major, "psql");
        let out = Command::new(&psql).arg("--version").output().unwrap();
        assert!(out.status.success(), "{} --version", psql.display());
        let (_, used) = integration::client_tool_major(major, "pg_waldump");
        assert!(used >= major, "major {major} got pg_waldump {used}");
    }
}
