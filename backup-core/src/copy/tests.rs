use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use pgwire_repl::TimelineId;

use super::*;
use crate::catalog::{ArchiveRecord, BackupRecord, PartialWal};
use crate::crypto::{Aead, Encryption, Secret};
use crate::layout;
use crate::repo::InitOptions;
use crate::store::lease::{LeaseGuard, LeaseHolder, LeaseInfo};
use crate::store::mem::MemStore;
use crate::store::{ObjectMeta, ObjectWriter, PutMode, RepoLocation, SharedStore, Store};
use crate::test_support::{backup_record, cluster, fast_init_options, wal_segment, SYSID};
use crate::wal::{SegmentName, WalSegmentSize};

const MIB: u32 = 1 << 20;

/// A store that logs every commit and can be made to fail creating names containing a pattern.
#[derive(Debug, Clone)]
struct Spy {
    inner: MemStore,
    commits: Arc<Mutex<Vec<String>>>,
    fail_on: Arc<Mutex<Option<String>>>,
}

impl Spy {
    fn new(name: &str) -> Spy {
        Spy {
            inner: MemStore::new(name),
            commits: Arc::default(),
            fail_on: Arc::default(),
        }
    }
    fn fail_on(&self, pattern: Option<&str>) {
        *self.fail_on.lock().unwrap() = pattern.map(str::to_string);
    }
    fn commits(&self) -> Vec<String> {
        self.commits.lock().unwrap().clone()
    }
    fn check(&self, name: &str) -> Result<(), StoreError> {
        match &*self.fail_on.lock().unwrap() {
            Some(p) if name.contains(p.as_str()) => Err(StoreError::Remote {
                op: "writing",
                location: name.to_string(),
                detail: "injected failure".into(),
            }),
            _ => Ok(()),
        }
    }
}

struct SpyWriter {
    inner: Box<dyn ObjectWriter>,
    name: String,
    commits: Arc<Mutex<Vec<String>>>,
}

impl Write for SpyWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl ObjectWriter for SpyWriter {
    fn commit(self: Box<Self>, mode: PutMode) -> Result<(), StoreError> {
        self.inner.commit(mode)?;
        self.commits.lock().unwrap().push(self.name);
        Ok(())
    }
}

impl Store for Spy {
    fn location(&self) -> &RepoLocation {
        self.inner.location()
    }
    fn describe(&self, name: &str) -> String {
        self.inner.describe(name)
    }
    fn put(&self, name: &str, bytes: &[u8], mode: PutMode) -> Result<(), StoreError> {
        self.check(name)?;
        self.inner.put(name, bytes, mode)?;
        self.commits.lock().unwrap().push(name.to_string());
        Ok(())
    }
    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        self.check(name)?;
        Ok(Box::new(SpyWriter {
            inner: self.inner.create(name)?,
            name: name.to_string(),
            commits: Arc::clone(&self.commits),
        }))
    }
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        self.inner.open(name)
    }
    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        self.inner.read_range(name, offset, len)
    }
    fn head(&self, name: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix)
    }
    fn delete(&self, names: &[String]) -> Result<(), StoreError> {
        self.inner.delete(names)
    }
    fn prepare_root(&self) -> Result<Option<String>, StoreError> {
        self.inner.prepare_root()
    }
    fn acquire_lease(
        &self,
        name: &str,
        holder: &LeaseHolder,
    ) -> Result<Box<dyn LeaseGuard>, StoreError> {
        self.inner.acquire_lease(name, holder)
    }
    fn read_lease(&self, name: &str) -> Result<Option<LeaseInfo>, StoreError> {
        self.inner.read_lease(name)
    }
}

fn init(store: SharedStore, encryption: Encryption, pass: &str) -> Repository {
    let options = InitOptions {
        ..fast_init_options(encryption)
    };
    let encrypted = encryption != Encryption::None;
    let pass = Secret::from(pass);
    Repository::init_in(store, options, encrypted.then_some(&pass)).unwrap()
}

fn seg_size() -> WalSegmentSize {
    WalSegmentSize::new(u64::from(MIB)).unwrap()
}

fn segment(segno: u64) -> SegmentName {
    SegmentName::new(TimelineId(1), segno, seg_size())
}

fn put_file(repo: &Repository, name: &str, content: &[u8]) -> u64 {
    let mut s = repo.create_file(name).unwrap();
    s.write_all(content).unwrap();
    s.finish().unwrap().stored_bytes
}

fn read_file(repo: &Repository, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    repo.open_file(name).unwrap().read_to_end(&mut out).unwrap();
    out
}

/// A backup `id` in `src`: an archive, a manifest, complete segments `segno` and `segno + 1`
/// in `wal/` and an unfinished `segno + 2` in the backup's directory.
fn make_backup(src: &Repository, id: &str, segno: u64) -> BackupRecord {
    let mut r = backup_record(id, segno);
    r.wal_segment_size = u64::from(MIB);
    let sfx = layout::suffix(src.codec());
    let tar: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = format!("base.tar{sfx}");
    let stored = put_file(src, &layout::backup_file(id, &file), &tar);
    r.archives = vec![ArchiveRecord {
        name: "base.tar".into(),
        file,
        tablespace_oid: None,
        tablespace_location: None,
        raw_bytes: tar.len() as u64,
        stored_bytes: stored,
        server_compression: None,
    }];
    r.manifest_file = format!("backup_manifest{sfx}");
    put_file(
        src,
        &layout::backup_file(id, &r.manifest_file),
        b"{\"PostgreSQL-Backup-Manifest-Version\": 1}",
    );
    r.wal_segments = (segno..segno + 3).map(|n| segment(n).to_string()).collect();
    for n in segno..segno + 2 {
        put_wal(src, n);
    }
    let last = segment(segno + 2);
    let partial = format!("{last}.partial{sfx}");
    let bytes = &wal_segment(SYSID, 1, segno + 2, 3)[..3 * 8192];
    put_file(src, &layout::backup_file(id, &partial), bytes);
    r.partial_wal_file = Some(PartialWal {
        segment: last.to_string(),
        file: partial,
        valid_bytes: bytes.len() as u64,
    });
    r.encryption = src.aead().map_or("none".into(), |a| a.name().into());
    r.seal(src.sealing_key()).unwrap();
    src.catalog().write(&r).unwrap();
    r
}

fn put_wal(repo: &Repository, segno: u64) -> String {
    let name = layout::wal_segment_file(&segment(segno), repo.codec());
    if repo.store().head(&name).unwrap().is_none() {
        put_file(repo, &name, &wal_segment(SYSID, 1, segno, 4));
    }
    name
}

struct Pair {
    src: Repository,
    src_store: MemStore,
    dst: Repository,
    dst_spy: Spy,
}

fn pair(src_enc: Encryption, dst_enc: Encryption) -> Pair {
    let src_store = MemStore::new("src");
    let mut src = init(Arc::new(src_store.clone()), src_enc, "source pass");
    src.bind_cluster(cluster(MIB)).unwrap();
    let dst_spy = Spy::new("dst");
    let dst = init(Arc::new(dst_spy.clone()), dst_enc, "offsite pass");
    Pair {
        src,
        src_store,
        dst,
        dst_spy,
    }
}

fn latest() -> CopyOptions {
    CopyOptions {
        backups: Selection::Latest,
        wal: false,
    }
}

fn assert_same_backup(p: &Pair, r: &BackupRecord) {
    let got = p.dst.catalog().read(&r.id).unwrap();
    assert_eq!(got.wal_segments, r.wal_segments);
    for a in &r.archives {
        let name = layout::backup_file(&r.id, &a.file);
        assert_eq!(read_file(&p.src, &name), read_file(&p.dst, &name));
    }
    for seg in &r.wal_segments[..2] {
        let name =
            layout::wal_segment_file(&SegmentName::parse(seg, seg_size()).unwrap(), p.src.codec());
        assert_eq!(read_file(&p.src, &name), read_file(&p.dst, &name));
    }
}

#[test]
fn copies_a_backup_under_the_destinations_keys_and_again_is_a_no_op() {
    let p = pair(
        Encryption::Aead(Aead::Aes256Gcm),
        Encryption::Aead(Aead::ChaCha20Poly1305),
    );
    let r = make_backup(&p.src, "20260101T000000Z", 3);
    let mut dst = p.dst;
    let s = copy(&p.src, &mut dst, &latest()).unwrap();
    assert_eq!(s.backups_copied, vec![r.id.clone()]);
    assert!(s.bound);
    assert_eq!(s.wal_copied, 2);
    assert_eq!(s.files_copied, 3);
    assert_eq!(dst.cluster(), Some(cluster(MIB)));
    let p = Pair { dst, ..p };
    assert_same_backup(&p, &r);
    let got = p.dst.catalog().read(&r.id).unwrap();
    assert_eq!(got.encryption, "chacha20-poly1305");
    // Sealed again: other salt, key and cipher, the same content.
    let name = layout::backup_file(&r.id, &r.archives[0].file);
    assert_ne!(
        p.src_store.bytes(&name).unwrap(),
        p.dst_spy.inner.bytes(&name).unwrap()
    );
    let mut dst = p.dst;
    let commits_before = p.dst_spy.commits().len();
    let s = copy(&p.src, &mut dst, &latest()).unwrap();
    assert_eq!(s.backups_present, vec![r.id.clone()]);
    assert!(s.backups_copied.is_empty());
    assert_eq!(
        p.dst_spy.commits().len(),
        commits_before,
        "nothing written the second time"
    );
}

#[test]
fn the_record_is_committed_last_after_the_wal_it_needs() {
    let p = pair(Encryption::default(), Encryption::default());
    let r = make_backup(&p.src, "20260101T000000Z", 3);
    let mut dst = p.dst;
    copy(&p.src, &mut dst, &latest()).unwrap();
    let commits: Vec<String> = p
        .dst_spy
        .commits()
        .into_iter()
        .filter(|c| c.starts_with("backups/") || c.starts_with("wal/"))
        .collect();
    assert_eq!(
        commits.last().unwrap(),
        &format!("backups/{}/backup.json", r.id)
    );
    assert_eq!(commits.len(), 6, "{commits:?}");
    assert!(
        commits[..2].iter().all(|c| c.starts_with("wal/")),
        "{commits:?}"
    );
}

#[test]
fn resumes_after_a_failure_mid_copy() {
    let p = pair(Encryption::default(), Encryption::default());
    let r = make_backup(&p.src, "20260101T000000Z", 3);
    let mut dst = p.dst;
    p.dst_spy.fail_on(Some("backup_manifest"));
    let e = copy(&p.src, &mut dst, &latest()).unwrap_err();
    assert!(e.to_string().contains("injected failure"), "{e}");
    // No backup is visible, though its WAL and archive were stored.
    assert!(dst.catalog().ids().unwrap().is_empty());
    assert!(dst
        .store()
        .head(&layout::backup_file(&r.id, &r.archives[0].file))
        .unwrap()
        .is_some());
    p.dst_spy.fail_on(None);
    let s = copy(&p.src, &mut dst, &latest()).unwrap();
    assert_eq!(s.backups_copied, vec![r.id.clone()]);
    assert_eq!((s.wal_copied, s.wal_present), (0, 2));
    let p = Pair { dst, ..p };
    assert_same_backup(&p, &r);
}

#[test]
fn different_bytes_under_an_existing_wal_name_are_refused() {
    let p = pair(Encryption::default(), Encryption::default());
    let name = put_wal(&p.src, 3);
    let mut dst = p.dst;
    dst.bind_cluster(cluster(MIB)).unwrap();
    put_file(&dst, &name, &wal_segment(SYSID, 1, 9, 4));
    let before = p.dst_spy.inner.bytes(&name).unwrap();
    let options = CopyOptions {
        backups: Selection::None,
        wal: true,
    };
    let e = copy(&p.src, &mut dst, &options).unwrap_err();
    assert!(matches!(e, CopyError::Conflict { .. }), "{e}");
    assert!(e.to_string().contains(&name), "{e}");
    assert_eq!(p.dst_spy.inner.bytes(&name).unwrap(), before);
}

#[test]
fn wal_with_the_same_content_is_skipped() {
    let p = pair(Encryption::default(), Encryption::default());
    let a = put_wal(&p.src, 3);
    put_wal(&p.src, 4);
    let mut dst = p.dst;
    dst.bind_cluster(cluster(MIB)).unwrap();
    put_file(&dst, &a, &wal_segment(SYSID, 1, 3, 4));
    let options = CopyOptions {
        backups: Selection::None,
        wal: true,
    };
    let s = copy(&p.src, &mut dst, &options).unwrap();
    assert_eq!((s.wal_copied, s.wal_present), (1, 1));
}

#[test]
fn a_damaged_source_file_fails_naming_it_and_commits_no_backup() {
    let p = pair(Encryption::default(), Encryption::default());
    let r = make_backup(&p.src, "20260101T000000Z", 3);
    let name = layout::backup_file(&r.id, &r.archives[0].file);
    let mut bytes = p.src_store.bytes(&name).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    p.src_store.overwrite(&name, bytes);
    let mut dst = p.dst;
    let e = copy(&p.src, &mut dst, &latest()).unwrap_err();
    assert!(matches!(e, CopyError::Source { io: false, .. }), "{e}");
    assert!(e.to_string().contains(&name), "{e}");
    assert!(dst.catalog().ids().unwrap().is_empty());
    assert!(dst.store().head(&name).unwrap().is_none());
}

#[test]
fn unencrypted_repositories_are_checked_against_the_record() {
    let p = pair(Encryption::None, Encryption::None);
    let r = make_backup(&p.src, "20260101T000000Z", 3);
    let mut dst = p.dst;
    copy(&p.src, &mut dst, &latest()).unwrap();
    let p2 = Pair { dst, ..p };
    assert_same_backup(&p2, &r);
    // Truncated in the source: its size no longer matches the record.
    let p = pair(Encryption::None, Encryption::None);
    let r = make_backup(&p.src, "20260101T000000Z", 3);
    let name = layout::backup_file(&r.id, &r.archives[0].file);
    let mut bytes = p.src_store.bytes(&name).unwrap();
    bytes.truncate(bytes.len() - 10);
    p.src_store.overwrite(&name, bytes);
    let mut dst = p.dst;
    let e = copy(&p.src, &mut dst, &latest()).unwrap_err();
    assert!(matches!(e, CopyError::SourceMismatch { .. }), "{e}");
}

#[test]
fn incompatible_destinations_are_refused() {
    let p = pair(Encryption::default(), Encryption::None);
    let mut dst = p.dst;
    let e = copy(&p.src, &mut dst, &latest()).unwrap_err();
    assert!(matches!(e, CopyError::Incompatible { .. }), "{e}");
    let p = pair(Encryption::default(), Encryption::default());
    let mut dst = p.dst;
    let mut other = cluster(MIB);
    other.system_identifier += 1;
    dst.bind_cluster(other).unwrap();
    let e = copy(&p.src, &mut dst, &latest()).unwrap_err();
    assert!(
        matches!(e, CopyError::Repo(RepoError::ClusterMismatch { .. })),
        "{e}"
    );
}

#[test]
fn a_dead_runs_leftovers_under_the_id_are_removed_first() {
    let p = pair(Encryption::default(), Encryption::default());
    let r = make_backup(&p.src, "20260101T000000Z", 3);
    let mut dst = p.dst;
    dst.bind_cluster(cluster(MIB)).unwrap();
    let stray = layout::backup_file(&r.id, "stray.lz4.enc");
    put_file(&dst, &stray, b"left by a run that died");
    copy(&p.src, &mut dst, &latest()).unwrap();
    assert!(dst.store().head(&stray).unwrap().is_none());
    assert!(dst.catalog().exists(&r.id).unwrap());
}
