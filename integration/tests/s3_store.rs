//! The storage contract (docs/format.md §9.1, `backup-core/src/store/contract.rs`) on the S3
//! backend, against a real S3-compatible server (s3s-fs, started by the test).

use std::time::Duration;

use backup_core::store::contract;
use backup_core::store::lease::{lease_object, LeaseHolder};
use backup_core::store::s3::{S3Settings, S3Store};
use backup_core::store::{PutMode, RepoLocation, Store, StoreError};
use integration::{S3Server, TEST_BUCKET};

fn store(s3: &S3Server, prefix: &str) -> S3Store {
    let location: RepoLocation = s3.location(prefix).parse().expect("an s3:// location");
    S3Store::new(
        location,
        prefix.to_string(),
        S3Settings {
            bucket: TEST_BUCKET.into(),
            region: "us-east-1".into(),
            endpoint: Some(s3.endpoint()),
            allow_http: true,
            access_key_id: s3.access_key().into(),
            secret_access_key: s3.secret_key().into(),
            session_token: None,
            credentials_from: "the test".into(),
        },
    )
    .expect("an S3 store")
}

#[test]
fn the_store_contract_holds_on_s3() {
    let s3 = S3Server::start();
    for (i, (name, check)) in contract::ALL.iter().enumerate() {
        eprintln!("contract on S3: {name}");
        check(&store(&s3, &format!("c{i}/repo")));
    }
    // Nothing of the dropped uploads (their parts) is left behind.
    let root = s3.root();
    let leftovers: Vec<_> = s3
        .all_files()
        .into_iter()
        .filter(|p| {
            let p = p.strip_prefix(&root).unwrap().to_string_lossy();
            p.contains("upload") || p.contains("tmp")
        })
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn a_store_at_the_bucket_root_lists_only_its_names() {
    let s3 = S3Server::start();
    let root = store(&s3, "");
    let other = store(&s3, "other");
    other.put("x", b"1", PutMode::Create).unwrap();
    root.put("y", b"2", PutMode::Create).unwrap();
    let names: Vec<_> = root.list("").unwrap().into_iter().map(|o| o.name).collect();
    assert_eq!(names, vec!["other/x", "y"]);
    let names: Vec<_> = other
        .list("")
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, vec!["x"]);
    assert_eq!(s3.keys(""), vec!["other/x", "y"]);
}

fn holder_bytes(purpose: &str, expires_unix: u64) -> Vec<u8> {
    let mut h = LeaseHolder::this_process(purpose);
    h.pid = 1;
    h.expires_unix = Some(expires_unix);
    h.encode()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn an_expired_lease_is_taken_over_and_a_live_one_is_not() {
    let s3 = S3Server::start();
    let s = store(&s3, "leases");
    // A live lease of another process: refused, naming it.
    s.put(
        &lease_object("live"),
        &holder_bytes("someone else", now() + 600),
        PutMode::Create,
    )
    .unwrap();
    let err = s
        .acquire_lease("live", &LeaseHolder::this_process("me"))
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseHeld { .. }), "{err}");
    assert!(err.to_string().contains("someone else"), "{err}");

    // An expired one (its holder died): taken over.
    s.put(
        &lease_object("dead"),
        &holder_bytes("crashed", now() - 5),
        PutMode::Create,
    )
    .unwrap();
    assert!(!s.read_lease("dead").unwrap().unwrap().live);
    let guard = s
        .acquire_lease("dead", &LeaseHolder::this_process("taker"))
        .unwrap();
    let info = s.read_lease("dead").unwrap().unwrap();
    assert!(info.live);
    assert_eq!(info.holder.unwrap().purpose, "taker");
    guard.check().unwrap();
    drop(guard);
    assert!(s.read_lease("dead").unwrap().is_none(), "released");
}

#[test]
fn a_holder_whose_lease_was_taken_over_knows_it_lost_it() {
    let s3 = S3Server::start();
    let s = store(&s3, "leases");
    let guard = s
        .acquire_lease("l", &LeaseHolder::this_process("first"))
        .unwrap();
    // Another taker replaced it (as if it had expired): the next renewal (within a third of
    // the lifetime) fails its If-Match, and the holder knows before its next irreversible step.
    s.put(
        &lease_object("l"),
        &holder_bytes("second", now() + 600),
        PutMode::Replace,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while guard.check().is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the renewal never noticed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let e = guard.check().unwrap_err();
    assert!(e.to_string().contains("lost"), "{e}");
    drop(guard);
    // Dropping the loser does not delete the winner's lease.
    let info = s.read_lease("l").unwrap().unwrap();
    assert_eq!(info.holder.unwrap().purpose, "second");
}
