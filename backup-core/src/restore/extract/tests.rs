use super::*;

fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append_data(&mut h, path, data).unwrap();
}

fn raw_entry(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, link: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o700);
    h.set_entry_type(kind);
    // Set the name bytes directly so the builder does not normalise '..' or '/' away.
    let name = &mut h.as_old_mut().name;
    name[..path.len()].copy_from_slice(path.as_bytes());
    if !link.is_empty() {
        h.set_link_name(link).unwrap();
    }
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
}

fn no_map() -> Box<dyn Fn(&TablespaceLink) -> PathBuf + Send> {
    Box::new(|l| l.original_target.clone())
}

#[test]
fn unpacks_files_directories_and_modes() {
    let dir = tempfile::tempdir().unwrap();
    let data = tar_with(|b| {
        raw_entry(b, "base/", tar::EntryType::Directory, "");
        file(b, "base/1/1259", &vec![7u8; 100_000]);
        file(b, "PG_VERSION", b"16\n");
        file(b, "global/pg_control", &[1u8; 8192]);
    });
    let mut x = Extractor::new(dir.path(), "base.tar", no_map());
    x.unpack(&data[..]).unwrap();
    let s = x.finish().unwrap();
    assert_eq!(s.files, 3);
    assert_eq!(s.bytes, 100_000 + 3 + 8192);
    assert_eq!(fs::read(dir.path().join("PG_VERSION")).unwrap(), b"16\n");
    let mode = fs::metadata(dir.path().join("base/1/1259"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dmode = fs::metadata(dir.path().join("base/1"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dmode & 0o777, 0o700);
}

#[test]
fn tablespace_links_are_remapped() {
    let dir = tempfile::tempdir().unwrap();
    let new_loc = tempfile::tempdir().unwrap();
    let new_path = new_loc.path().to_path_buf();
    let data = tar_with(|b| {
        raw_entry(b, "pg_tblspc/16385", tar::EntryType::Symlink, "/old/ts1");
    });
    let mut x = Extractor::new(
        dir.path(),
        "base.tar",
        Box::new(move |l| {
            assert_eq!(l.original_target, Path::new("/old/ts1"));
            new_path.clone()
        }),
    );
    x.unpack(&data[..]).unwrap();
    let s = x.finish().unwrap();
    assert_eq!(
        s.tablespace_links,
        vec![TablespaceLink {
            oid: 16385,
            original_target: PathBuf::from("/old/ts1")
        }]
    );
    assert_eq!(
        fs::read_link(dir.path().join("pg_tblspc/16385")).unwrap(),
        new_loc.path()
    );
}

fn refused(data: Vec<u8>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut x = Extractor::new(dir.path(), "base.tar", no_map());
    match x.unpack(&data[..]) {
        Err(e @ ExtractError::Refused { .. }) => e.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn refuses_escapes_links_and_devices() {
    let parent = refused(tar_with(|b| {
        raw_entry(b, "../evil", tar::EntryType::Regular, "")
    }));
    assert!(parent.contains("'..'"), "{parent}");
    let abs = refused(tar_with(|b| {
        raw_entry(b, "/etc/evil", tar::EntryType::Regular, "")
    }));
    assert!(abs.contains("absolute"), "{abs}");
    let link = refused(tar_with(|b| {
        raw_entry(b, "base/x", tar::EntryType::Symlink, "/etc")
    }));
    assert!(link.contains("pg_tblspc"), "{link}");
    let hard = refused(tar_with(|b| {
        raw_entry(b, "base/x", tar::EntryType::Link, "PG_VERSION")
    }));
    assert!(hard.contains("not a regular file"), "{hard}");
    let dev = refused(tar_with(|b| raw_entry(b, "dev", tar::EntryType::Char, "")));
    assert!(dev.contains("not a regular file"), "{dev}");
}

#[test]
fn never_writes_through_a_link_or_over_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    // A tablespace link created by the archive, then a member trying to write through it.
    let outside_path = outside.path().to_path_buf();
    let data = tar_with(|b| {
        raw_entry(b, "pg_tblspc/16385", tar::EntryType::Symlink, "/old");
        file(b, "pg_tblspc/16385/PG_16/x", b"escape");
    });
    let mut x = Extractor::new(
        dir.path(),
        "base.tar",
        Box::new(move |_| outside_path.clone()),
    );
    let err = x.unpack(&data[..]).unwrap_err();
    assert!(matches!(err, ExtractError::Write { .. }), "{err}");
    assert!(fs::read_dir(outside.path()).unwrap().next().is_none());

    // The same file twice: the second is refused, the first kept.
    let dir = tempfile::tempdir().unwrap();
    let data = tar_with(|b| {
        file(b, "PG_VERSION", b"16\n");
        file(b, "PG_VERSION", b"XX\n");
    });
    let mut x = Extractor::new(dir.path(), "base.tar", no_map());
    assert!(x.unpack(&data[..]).is_err());
    assert_eq!(fs::read(dir.path().join("PG_VERSION")).unwrap(), b"16\n");
}

#[test]
fn truncated_archive_is_an_error() {
    let data = tar_with(|b| file(b, "big", &vec![1u8; 10_000]));
    let dir = tempfile::tempdir().unwrap();
    let mut x = Extractor::new(dir.path(), "base.tar", no_map());
    let err = x.unpack(&data[..3000]).unwrap_err();
    assert!(
        matches!(err, ExtractError::Read { .. } | ExtractError::Write { .. }),
        "{err}"
    );
}

/// Regression: a `pg_tblspc/<oid>` link whose oid the record does not know kept the archive's
/// own target, relative or with `..` alike.
#[test]
fn unsafe_tablespace_link_in_the_archive_is_refused() {
    for target in ["../../etc", "/srv/ts/../../etc", "relative"] {
        let dir = tempfile::tempdir().unwrap();
        let data = tar_with(|b| {
            raw_entry(b, "pg_tblspc/16390", tar::EntryType::Symlink, target);
        });
        let mut x = Extractor::new(dir.path(), "base.tar", no_map());
        match x.unpack(&data[..]) {
            Err(e @ ExtractError::UnsafeLink { .. }) => {
                assert!(e.to_string().contains(&format!("{target:?}")), "{e}");
            }
            other => panic!("{target}: expected a refusal, got {other:?}"),
        }
        assert!(
            fs::symlink_metadata(dir.path().join("pg_tblspc/16390")).is_err(),
            "{target}: the link was made"
        );
    }
}
