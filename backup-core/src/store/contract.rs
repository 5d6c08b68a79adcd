//! The storage contract (docs/format.md §9.1), checked on every backend: each `pub fn` takes a
//! fresh, empty store. The unit tests below run it on the memory and local backends; the
//! integration tests (`integration/tests/s3_store.rs`) on S3 against a real server. Not part of
//! the API.

use std::io::{Read, Write};

use super::lease::LeaseHolder;
use super::{delete_prefix, get, PutMode, Store, StoreError};

fn names(store: &dyn Store, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect()
}

/// One check of the contract, run on a fresh, empty store.
pub type Check = fn(&dyn Store);

/// Every check of the contract that every backend keeps, by name.
pub const ALL: &[(&str, Check)] = &[
    (
        "create_only_puts_never_replace_and_replace_does",
        create_only_puts_never_replace_and_replace_does,
    ),
    (
        "a_streamed_object_is_visible_only_once_committed",
        a_streamed_object_is_visible_only_once_committed,
    ),
    (
        "missing_objects_are_not_found",
        missing_objects_are_not_found,
    ),
    (
        "listing_is_by_prefix_sorted_and_recursive",
        listing_is_by_prefix_sorted_and_recursive,
    ),
    ("bad_names_are_refused", bad_names_are_refused),
    (
        "a_lease_has_one_holder_until_released",
        a_lease_has_one_holder_until_released,
    ),
    (
        "a_large_streamed_object_is_whole",
        a_large_streamed_object_is_whole,
    ),
];

/// Contract: an object larger than one S3 PUT (multipart there) streams in and out whole.
pub fn a_large_streamed_object_is_whole(s: &dyn Store) {
    let len: usize = (20 << 20) + 12345;
    let byte = |i: usize| (i % 251) as u8;
    let mut w = s.create("big/obj").unwrap();
    let chunk: Vec<u8> = (0..65536).map(byte).collect();
    let mut written = 0;
    while written < len {
        let n = chunk.len().min(len - written);
        // 65536 is not a multiple of 251: shift the pattern so it runs on across chunks.
        let piece: Vec<u8> = (written..written + n).map(byte).collect();
        w.write_all(&piece).unwrap();
        written += n;
    }
    assert!(
        s.head("big/obj").unwrap().is_none(),
        "visible before commit"
    );
    assert!(names(s, "big/").is_empty(), "listed before commit");
    w.commit(PutMode::Create).unwrap();
    assert_eq!(s.head("big/obj").unwrap().unwrap().size, len as u64);
    let mut r = s.open("big/obj").unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        for (i, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, byte(pos + i), "byte {}", pos + i);
        }
        pos += n;
    }
    assert_eq!(pos, len);
    let mid = (9 << 20) - 3;
    let got = s.read_range("big/obj", mid as u64, 6).unwrap();
    assert_eq!(got, (mid..mid + 6).map(byte).collect::<Vec<_>>());

    // A second large create-only commit of the taken name fails and leaves the first.
    let mut w = s.create("big/obj").unwrap();
    w.write_all(&vec![1u8; 18 << 20]).unwrap();
    assert!(w.commit(PutMode::Create).unwrap_err().is_already_exists());
    assert_eq!(s.head("big/obj").unwrap().unwrap().size, len as u64);

    // Dropped uncommitted after parts were sent: nothing is listed.
    let mut w = s.create("big/dropped").unwrap();
    w.write_all(&vec![2u8; 18 << 20]).unwrap();
    drop(w);
    assert_eq!(names(s, "big/"), vec!["big/obj"]);
}

/// Contract: see the module docs.
pub fn create_only_puts_never_replace_and_replace_does(s: &dyn Store) {
    s.put("a/b/c", b"one", PutMode::Create).unwrap();
    let e = s.put("a/b/c", b"two", PutMode::Create).unwrap_err();
    assert!(e.is_already_exists(), "{e}");
    assert!(e.to_string().contains("a/b/c"), "{e}");
    assert_eq!(get(s, "a/b/c", 100).unwrap(), b"one");
    s.put("a/b/c", b"three", PutMode::Replace).unwrap();
    assert_eq!(get(s, "a/b/c", 100).unwrap(), b"three");
    assert!(matches!(
        get(s, "a/b/c", 2),
        Err(StoreError::TooLarge { .. })
    ));
}

/// Contract: see the module docs.
pub fn a_streamed_object_is_visible_only_once_committed(s: &dyn Store) {
    let mut w = s.create("x/obj").unwrap();
    w.write_all(&vec![7u8; 3 << 20]).unwrap();
    assert!(s.head("x/obj").unwrap().is_none());
    assert!(names(s, "").is_empty());
    w.commit(PutMode::Create).unwrap();
    let meta = s.head("x/obj").unwrap().unwrap();
    assert_eq!(meta.size, 3 << 20);
    let mut back = Vec::new();
    s.open("x/obj").unwrap().read_to_end(&mut back).unwrap();
    assert_eq!(back.len(), 3 << 20);
    assert_eq!(
        s.read_range("x/obj", (3 << 20) - 2, 10).unwrap(),
        vec![7, 7]
    );

    // Dropped uncommitted: nothing, not even a temporary, is listed.
    let mut w = s.create("x/other").unwrap();
    w.write_all(b"abc").unwrap();
    drop(w);
    assert_eq!(names(s, ""), vec!["x/obj"]);

    // A second create-only commit of a taken name fails and leaves the first.
    let mut w = s.create("x/obj").unwrap();
    w.write_all(b"new").unwrap();
    assert!(w.commit(PutMode::Create).unwrap_err().is_already_exists());
    assert_eq!(s.head("x/obj").unwrap().unwrap().size, 3 << 20);
}

/// Contract: see the module docs.
pub fn missing_objects_are_not_found(s: &dyn Store) {
    assert!(s.open("nope").err().unwrap().is_not_found());
    assert!(s.head("nope").unwrap().is_none());
    assert!(s.head("nope/deeper").unwrap().is_none());
    assert!(s.list("nope/").unwrap().is_empty());
    s.delete(&["nope".into()]).unwrap();
}

/// Contract: see the module docs.
pub fn listing_is_by_prefix_sorted_and_recursive(s: &dyn Store) {
    for n in ["w/02/b", "w/01/a", "w/01/c", "wx", "b/1"] {
        s.put(n, n.as_bytes(), PutMode::Create).unwrap();
    }
    assert_eq!(names(s, "w/"), vec!["w/01/a", "w/01/c", "w/02/b"]);
    assert_eq!(names(s, "w"), vec!["w/01/a", "w/01/c", "w/02/b", "wx"]);
    assert_eq!(names(s, "w/01/"), vec!["w/01/a", "w/01/c"]);
    assert_eq!(names(s, "w/01/c"), vec!["w/01/c"]);
    assert_eq!(names(s, "").len(), 5);
    assert_eq!(delete_prefix(s, "w/01/").unwrap(), 2);
    assert_eq!(names(s, "w"), vec!["w/02/b", "wx"]);
    s.put("w/01/again", b"1", PutMode::Create).unwrap();
    assert_eq!(names(s, "w/01/"), vec!["w/01/again"]);
}

/// Contract: see the module docs.
pub fn bad_names_are_refused(s: &dyn Store) {
    for bad in ["", "/abs", "a//b", "a/../b", "a/./b", "x.tmp.1", "a\\b"] {
        assert!(
            matches!(
                s.put(bad, b"", PutMode::Create),
                Err(StoreError::BadName { .. })
            ),
            "{bad:?}"
        );
    }
}

/// Contract: see the module docs.
pub fn a_lease_has_one_holder_until_released(s: &dyn Store) {
    let me = LeaseHolder::this_process("test one");
    assert!(s.read_lease("thing").unwrap().is_none());
    let guard = s.acquire_lease("thing", &me).unwrap();
    let info = s.read_lease("thing").unwrap().unwrap();
    assert!(info.live);
    assert_eq!(info.holder.as_ref().unwrap().purpose, "test one");
    let err = s
        .acquire_lease("thing", &LeaseHolder::this_process("test two"))
        .unwrap_err();
    let StoreError::LeaseHeld { holder, .. } = &err else {
        panic!("{err}")
    };
    assert!(err.to_string().contains("test one"), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert_eq!(holder.holder.as_ref().unwrap().pid, std::process::id());
    drop(guard);
    assert!(s
        .read_lease("thing")
        .map(|l| l.is_none_or(|l| !l.live))
        .unwrap());
    let _again = s
        .acquire_lease("thing", &LeaseHolder::this_process("test three"))
        .unwrap();
    // Leases are not repository content.
    assert!(names(s, "backups/").is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;
    use crate::store::mem::MemStore;

    fn with_each(test: impl Fn(&dyn Store)) {
        test(&MemStore::default());
        let dir = tempfile::tempdir().unwrap();
        test(&LocalStore::new(dir.path().join("repo")));
    }

    #[test]
    fn the_contract_holds_on_memory_and_local_stores() {
        for (name, check) in ALL {
            eprintln!("contract: {name}");
            with_each(check);
        }
    }

    #[test]
    fn an_appendable_file_is_written_in_place_and_published() {
        with_each(|s| {
            s.put("p/seg", b"old", PutMode::Replace).unwrap();
            let mut f = s.create_appendable("p/seg", 10).unwrap();
            f.write_at(b"abc", 0).unwrap();
            assert_eq!(get(s, "p/seg", 100).unwrap(), b"old");
            f.publish().unwrap();
            f.write_at(b"de", 3).unwrap();
            f.sync_data().unwrap();
            assert_eq!(&get(s, "p/seg", 100).unwrap()[..6], b"abcde\0");
            f.set_len(20).unwrap();
            f.sync_all().unwrap();
            assert_eq!(s.head("p/seg").unwrap().unwrap().size, 20);
            assert_eq!(names(s, "p/"), vec!["p/seg"]);
        });
    }

    #[test]
    fn a_dead_holders_lease_is_taken_over() {
        let mem = MemStore::default();
        let guard = mem
            .acquire_lease("l", &LeaseHolder::this_process("crashed"))
            .unwrap();
        mem.kill_lease_holders();
        assert!(!mem.read_lease("l").unwrap().unwrap().live);
        let _new = mem
            .acquire_lease("l", &LeaseHolder::this_process("next"))
            .unwrap();
        // The dead holder's guard going away does not release the new holder's lease.
        drop(guard);
        assert!(mem.read_lease("l").unwrap().unwrap().live);
    }
}
