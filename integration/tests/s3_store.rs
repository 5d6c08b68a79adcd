//! The storage contract (docs/format.md §9.1, `backup-core/src/store/contract.rs`) on the S3
//! backend, against a real S3-compatible server (s3s-fs, started by the test).

use std::time::Duration;

use backup_core::store::contract;
use backup_core::store::lease::{lease_object, LeaseHolder};
use backup_core::store::s3::{S3Settings, S3Store};
use backup_core::store::{PutMode, RepoLocation, Store, StoreError};
use integration::{Fault, FaultProxy, S3Server, TEST_BUCKET};

fn store(s3: &S3Server, prefix: &str) -> S3Store {
    store_at(s3, &s3.endpoint(), prefix)
}

fn store_at(s3: &S3Server, endpoint: &str, prefix: &str) -> S3Store {
    let location: RepoLocation = s3.location(prefix).parse().expect("an s3:// location");
    S3Store::new(
        location,
        prefix.to_string(),
        S3Settings {
            bucket: TEST_BUCKET.into(),
            region: "us-east-1".into(),
            endpoint: Some(endpoint.to_string()),
            allow_http: true,
            access_key_id: s3.access_key().into(),
            secret_access_key: s3.secret_key().into(),
            session_token: None,
            credentials_from: "the test".into(),
            credentials_file: None,
            profile: "default".into(),
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

/// A create whose answer was lost is retried by the client, and the retry finds the object the
/// first attempt wrote (412): that is success, for whole puts, streamed objects and leases, and
/// a lease renewal whose answer was lost is still the holder's.
#[test]
fn a_create_whose_answer_was_lost_is_not_refused() {
    let s3 = S3Server::start();
    let proxy = FaultProxy::start(&s3);
    let s = store_at(&s3, &proxy.endpoint(), "lost");
    proxy.inject("PUT", "", Fault::LoseResponse, 1);
    s.put("a", b"first", PutMode::Create).unwrap();
    proxy.inject("PUT", "", Fault::LoseResponse, 1);
    let mut w = s.create("b").unwrap();
    std::io::Write::write_all(&mut w, b"streamed").unwrap();
    w.commit(PutMode::Create).unwrap();
    proxy.inject("PUT", "locks", Fault::LoseResponse, 1);
    let guard = s
        .acquire_lease("l", &LeaseHolder::this_process("after a lost answer"))
        .unwrap();
    assert_eq!(proxy.faults_applied(), 3, "{:#?}", proxy.log());
    assert_eq!(s3.read("lost/a"), b"first");
    assert_eq!(s3.read("lost/b"), b"streamed");
    // A multipart completion whose answer was lost.
    proxy.inject("POST", "uploadId", Fault::LoseResponse, 1);
    let mut w = s.create("big").unwrap();
    std::io::Write::write_all(&mut w, &vec![3u8; 20 << 20]).unwrap();
    w.commit(PutMode::Create).unwrap();
    assert_eq!(s.head("big").unwrap().unwrap().size, 20 << 20);
    assert_eq!(proxy.faults_applied(), 4, "{:#?}", proxy.log());
    // A renewal (every 10 s) whose answer is lost: the lease is still held.
    proxy.inject("PUT", "locks", Fault::LoseResponse, 1);
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(proxy.faults_applied(), 5, "{:#?}", proxy.log());
    guard.check().unwrap();
    // Other bytes under a taken name are still refused.
    let e = s.put("a", b"other", PutMode::Create).unwrap_err();
    assert!(e.is_already_exists(), "{e}");
}

/// Objects are read in 16 MiB ranged requests of one version: a window that fails is retried,
/// and an object replaced in the middle of a read fails the read instead of mixing versions.
#[test]
fn reads_are_windows_of_one_version() {
    let s3 = S3Server::start();
    let proxy = FaultProxy::start(&s3);
    let s = store_at(&s3, &proxy.endpoint(), "windows");
    let len = (40 << 20) + 7;
    let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    s.put("obj", &data, PutMode::Create).unwrap();
    // The second window's first attempt fails.
    let mut r = s.open("obj").unwrap();
    let mut first = vec![0u8; 1 << 20];
    std::io::Read::read_exact(&mut r, &mut first).unwrap();
    proxy.inject("GET", "", Fault::InternalError, 1);
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut r, &mut rest).unwrap();
    first.extend(rest);
    assert!(first == data, "the object read back differs");
    let gets = proxy
        .log()
        .iter()
        .filter(|l| l.starts_with("GET") && l.ends_with("forwarded"))
        .count();
    assert_eq!(gets, 3, "{:#?}", proxy.log());
    assert_eq!(proxy.faults_applied(), 1, "{:#?}", proxy.log());

    // Replaced between two windows: the read fails.
    let mut r = s.open("obj").unwrap();
    let mut head = vec![0u8; 1 << 20];
    std::io::Read::read_exact(&mut r, &mut head).unwrap();
    s.put("obj", &vec![9u8; len], PutMode::Replace).unwrap();
    let mut rest = Vec::new();
    let e = std::io::Read::read_to_end(&mut r, &mut rest).unwrap_err();
    assert!(e.to_string().contains("was replaced"), "{e}");
}
