//! `pgstream base` over TLS. The client reads BASE_BACKUP's CopyOut in bulk, pausing to let
//! data pile up after a read that had to wait; over TLS every read returns a single record
//! (at most 16 KiB). Pausing after short reads once made a TLS backup 14 times slower; this
//! pins that a backup over TLS streams every file, each checked against the server's manifest.
//! Newest major only: the TLS transport does not depend on the server version.

mod support;

use integration::{cluster, TlsOptions};
use support::{init_repo, newest_major, ok, pgstream, s};

const PASSPHRASE: &str = "tls bulk-read passphrase";

#[test]
fn base_backup_over_tls_stores_every_file_verified_against_the_manifest() {
    let major = newest_major();
    let pg = cluster(major).tls(TlsOptions::default()).start();
    // ~25 MiB: well over a thousand 16 KiB TLS records, and many 32 KiB CopyData messages.
    pg.psql(
        "CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 300000) g;
         CHECKPOINT;",
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    init_repo(&repo, PASSPHRASE);
    // verify-full: TLS or nothing, never a silent fallback to plain TCP.
    let source = format!(
        "host=localhost port={} user=postgres sslmode=verify-full sslrootcert='{}'",
        pg.port(),
        pg.tls().ca_cert_path.display()
    );
    let run = ok(
        pgstream(
            &[
                "base",
                "--json",
                "--no-progress",
                "--checkpoint",
                "fast",
                "--repo",
                s(&repo),
                "--source",
                &source,
            ],
            Some(PASSPHRASE),
        ),
        &format!("PostgreSQL {major}: base over TLS"),
    );
    let record: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("base --json does not parse: {e}: {run:?}"));
    assert!(
        record["raw_bytes"].as_u64().unwrap() > 20 << 20,
        "PostgreSQL {major}: {record}"
    );
    assert!(
        record["files_verified"].as_u64().unwrap() > 500,
        "PostgreSQL {major}: {record}"
    );
}
