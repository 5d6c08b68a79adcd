//! UPLOAD_MANIFEST and `BASE_BACKUP (INCREMENTAL)` against the scripted fake walsender: the
//! manifest arrives whole in pieces, the backup follows on the same connection, and each way
//! the server refuses leaves the connection usable and the refusal intact.

use std::future::Future;
use std::time::Duration;

use pgwire_repl::basebackup::options::MIN_INCREMENTAL_MAJOR;
use pgwire_repl::basebackup::{BaseBackupEvent, BaseBackupOptions};
use pgwire_repl::commands::upload_manifest::UPLOAD_CHUNK;
use pgwire_repl::{Config, Connection, Error};
use testdata::replies::BaseBackupSpec;
use testdata::wire::FrontendMessage;
use testdata::{FakeWalsender, Script};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(CLIENT_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {CLIENT_TIMEOUT:?}"))
}

async fn connect(fake: &FakeWalsender) -> Connection {
    let config = Config::parse(&format!(
        "host=127.0.0.1 port={} user=u sslmode=disable replication=true",
        fake.port()
    ))
    .unwrap();
    within("connect", Connection::connect(&config))
        .await
        .expect("connecting to the fake walsender")
}

/// A manifest bigger than three upload chunks, so it goes out in several CopyData.
fn big_manifest() -> Vec<u8> {
    let mut m = b"{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"Files\": [\n".to_vec();
    let mut i = 0;
    while m.len() < 3 * UPLOAD_CHUNK + 100 {
        m.extend(format!("{{ \"Path\": \"base/5/{i}\", \"Size\": 8192 }},\n").as_bytes());
        i += 1;
    }
    m.extend(b"]}\n");
    m
}

fn incremental_options() -> BaseBackupOptions {
    BaseBackupOptions {
        incremental: true,
        ..BaseBackupOptions::default()
    }
}

#[tokio::test]
async fn upload_then_incremental_base_backup_on_the_same_connection() {
    let manifest = big_manifest();
    // One INCREMENTAL member's worth of bytes in the archive: the client passes data through.
    let archive = vec![7u8; 3000];
    let spec = BaseBackupSpec::new(0x300_0028, 1, 0x300_0100)
        .with_archive("base.tar", "", archive.clone())
        .with_manifest(b"{}\n".to_vec());
    let script = Script::for_major(MIN_INCREMENTAL_MAJOR)
        .expect_startup()
        .authenticate_ok("17.4")
        .expect_query("UPLOAD_MANIFEST")
        .start_copy_in()
        .expect_copy_in(Some(&manifest))
        .reply_command("UPLOAD_MANIFEST")
        .expect_query("INCREMENTAL")
        .reply_base_backup_v15(&spec)
        .expect_terminate();
    let fake = FakeWalsender::start(script);
    let mut conn = connect(&fake).await;
    within("upload", conn.upload_manifest(&manifest))
        .await
        .expect("upload accepted");
    let mut bb = conn.base_backup(&incremental_options()).await.unwrap();
    let mut data = Vec::new();
    let mut finished = false;
    while let Some(ev) = within("next", bb.next()).await.unwrap() {
        match ev {
            BaseBackupEvent::ArchiveData(d) => data.extend_from_slice(&d),
            BaseBackupEvent::Finished { .. } => finished = true,
            _ => {}
        }
    }
    drop(bb);
    assert!(finished);
    assert_eq!(data, archive);
    conn.close().await;
    let t = within("fake", fake.finish()).await.unwrap();
    let queries = t.queries();
    assert_eq!(queries[0], "UPLOAD_MANIFEST");
    assert!(
        queries[1].starts_with("BASE_BACKUP (") && queries[1].contains(", INCREMENTAL)"),
        "{queries:?}"
    );
    let pieces: Vec<usize> = t
        .messages
        .iter()
        .filter_map(|m| match m {
            FrontendMessage::CopyData(p) => Some(p.len()),
            _ => None,
        })
        .collect();
    assert_eq!(
        pieces.len(),
        manifest.len().div_ceil(UPLOAD_CHUNK),
        "{pieces:?}"
    );
    assert!(pieces.iter().all(|&n| n <= UPLOAD_CHUNK));
}

#[tokio::test]
async fn refused_manifest_is_the_servers_error_and_the_connection_stays_usable() {
    // The server parses while it receives and refuses a manifest of another cluster; then the
    // client can still run a full backup on the same connection.
    let refusal = "system identifier in backup manifest is 1, but database system identifier is 2";
    let spec = BaseBackupSpec::new(0x300_0028, 1, 0x300_0100)
        .with_archive("base.tar", "", vec![1u8; 1024])
        .with_manifest(b"{}\n".to_vec());
    let script = Script::for_major(18)
        .expect_startup()
        .authenticate_ok("18.1")
        .expect_query("UPLOAD_MANIFEST")
        .start_copy_in()
        .expect_copy_in(None)
        .reply_error("XX000", refusal, None, None)
        .expect_query("BASE_BACKUP")
        .reply_base_backup_v15(&spec)
        .expect_terminate();
    let fake = FakeWalsender::start(script);
    let mut conn = connect(&fake).await;
    let err = within("upload", conn.upload_manifest(b"{}\n"))
        .await
        .unwrap_err();
    match &err {
        Error::Server(db) => assert_eq!(db.message, refusal),
        other => panic!("expected the server's refusal, got {other:?}"),
    }
    let mut bb = conn
        .base_backup(&BaseBackupOptions::default())
        .await
        .unwrap();
    while within("next", bb.next()).await.unwrap().is_some() {}
    drop(bb);
    conn.close().await;
    within("fake", fake.finish()).await.unwrap();
}

#[tokio::test]
async fn incremental_without_summaries_is_refused_with_sqlstate_and_message() {
    let message = "incremental backups cannot be taken unless WAL summarization is enabled";
    let script = Script::for_major(17)
        .expect_startup()
        .authenticate_ok("17.4")
        .expect_query("UPLOAD_MANIFEST")
        .start_copy_in()
        .expect_copy_in(Some(b"m\n"))
        .reply_command("UPLOAD_MANIFEST")
        .expect_query("INCREMENTAL")
        .reply_error("55000", message, None, None)
        .expect_terminate();
    let fake = FakeWalsender::start(script);
    let mut conn = connect(&fake).await;
    within("upload", conn.upload_manifest(b"m\n"))
        .await
        .unwrap();
    let mut bb = conn.base_backup(&incremental_options()).await.unwrap();
    let err = within("next", bb.next()).await.unwrap_err();
    match &err {
        Error::Server(db) => {
            assert_eq!((db.code.as_str(), db.message.as_str()), ("55000", message))
        }
        other => panic!("expected the server's refusal, got {other:?}"),
    }
    drop(bb);
    conn.close().await;
    within("fake", fake.finish()).await.unwrap();
}

#[tokio::test]
async fn upload_to_a_server_before_17_is_refused_without_sending_anything() {
    let script = Script::for_major(16)
        .expect_startup()
        .authenticate_ok("16.4")
        .expect_terminate();
    let fake = FakeWalsender::start(script);
    let mut conn = connect(&fake).await;
    let err = conn.upload_manifest(b"m\n").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                min_major: 17,
                server_major: 16,
                ..
            }
        ),
        "{err:?}"
    );
    let err = match conn.base_backup(&incremental_options()).await {
        Ok(_) => panic!("BASE_BACKUP (INCREMENTAL) was sent to PostgreSQL 16"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("PostgreSQL 17"), "{err}");
    conn.close().await;
    let t = within("fake", fake.finish()).await.unwrap();
    assert!(t.queries().is_empty(), "{:?}", t.queries());
}
