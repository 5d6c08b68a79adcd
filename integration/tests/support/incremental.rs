//! Incremental backups (PostgreSQL 17+): clusters that summarize WAL, backups taken through
//! the binary, and the independent oracles: each backup of a chain unpacked as it is stored
//! (INCREMENTAL.* files untouched) and combined by pg_combinebackup, trees compared byte for
//! byte, pg_verifybackup, pg_dumpall.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use backup_core::{Repository, Secret};
use integration::{client_tool, client_tool_major, server_user, Cluster};

use super::{ok, pgstream, s};

pub const PASSPHRASE: &str = "incremental chains are chains";

/// The majors under test that have incremental backups (17+). When none are, the caller
/// says so: the subject does not exist there.
pub fn incremental_majors() -> Vec<u32> {
    let majors: Vec<u32> = integration::test_majors()
        .into_iter()
        .filter(|&m| m >= 17)
        .collect();
    if majors.is_empty() {
        eprintln!(
            "note: PGSTREAM_TEST_MAJORS has no major of 17 or later; incremental backups exist \
             only there, so this test checks nothing"
        );
    }
    majors
}

/// A cluster that summarizes its WAL.
pub fn summarizing(major: u32) -> integration::ClusterBuilder {
    integration::cluster(major).setting("summarize_wal", "on")
}

/// `pgstream base --json ARGS` into `repo`, checked to succeed; its record.
pub fn base(repo: &Path, pg: &Cluster, args: &[&str]) -> serde_json::Value {
    let conninfo = pg.conninfo("postgres");
    let mut all = vec![
        "base",
        "--repo",
        s(repo),
        "--source",
        &conninfo,
        "--no-progress",
        "--json",
    ];
    all.extend_from_slice(args);
    let run = ok(pgstream(&all, Some(PASSPHRASE)), "base");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("base --json: {e}: {run:?}"))
}

/// Makes the server write a little WAL and summarize it, so that a backup taken right after
/// another has summaries covering both (the summarizer works a segment behind).
pub fn settle(pg: &Cluster) {
    pg.psql("SELECT pg_switch_wal()");
    pg.psql("CHECKPOINT");
}

pub fn run_tool(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// pg_dumpall of `pg`, without the random `\restrict` fences of recent versions.
pub fn dumpall(pg: &Cluster) -> String {
    let mut cmd = Command::new(client_tool(pg.major(), "pg_dumpall"));
    cmd.arg("-d").arg(pg.conninfo("postgres"));
    run_tool(cmd, "pg_dumpall")
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts two dumps are equal, showing the first differing lines.
pub fn assert_same_dump(ctx: &str, want: &str, got: &str) {
    if want != got {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .filter(|(a, b)| a != b)
            .take(10)
            .map(|(a, b)| format!("source:   {a}\nrestored: {b}"))
            .collect();
        panic!(
            "{ctx}: pg_dumpall of the restored cluster differs from the source ({} vs {} lines):\n{}",
            want.lines().count(),
            got.lines().count(),
            diff.join("\n")
        );
    }
}

/// `pg_verifybackup DIR` (with `-n` when only another major's pg_waldump is installed).
pub fn verifybackup(major: u32, dir: &Path) {
    let (tool, tool_major) = client_tool_major(major, "pg_verifybackup");
    let mut cmd = Command::new(tool);
    if tool_major != major {
        cmd.arg("-n");
    }
    cmd.arg(dir);
    run_tool(cmd, "pg_verifybackup");
}

/// Backup `record` unpacked exactly as stored (INCREMENTAL.* files as they are) into
/// `dest/data`, each tablespace into `dest/ts-<oid>` with `pg_tblspc/<oid>` pointing there:
/// the directory layout pg_combinebackup reads. Returns the tablespace directories.
pub fn unpack_as_stored(
    repo: &Path,
    record: &serde_json::Value,
    dest: &Path,
) -> BTreeMap<u32, PathBuf> {
    let repo = Repository::open(
        &backup_core::store::RepoLocation::local(repo),
        Some(&Secret::new(PASSPHRASE.as_bytes().to_vec())),
    )
    .expect("opening the repository");
    let id = record["id"].as_str().unwrap();
    let data = dest.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut tablespaces = BTreeMap::new();
    for a in record["archives"].as_array().unwrap() {
        assert!(
            a["server_compression"].is_null(),
            "not for server-compressed archives"
        );
        let name = format!("backups/{id}/{}", a["file"].as_str().unwrap());
        let mut bytes = Vec::new();
        repo.open_file(&name)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        let root = match a["tablespace_oid"].as_u64() {
            Some(oid) => {
                let d = dest.join(format!("ts-{oid}"));
                tablespaces.insert(oid as u32, d.clone());
                d
            }
            None => data.clone(),
        };
        std::fs::create_dir_all(&root).unwrap();
        tar::Archive::new(bytes.as_slice()).unpack(&root).unwrap();
    }
    let manifest = format!("backups/{id}/{}", record["manifest_file"].as_str().unwrap());
    let mut bytes = Vec::new();
    repo.open_file(&manifest)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    std::fs::write(data.join("backup_manifest"), bytes).unwrap();
    for (oid, dir) in &tablespaces {
        let link = data.join("pg_tblspc").join(oid.to_string());
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dir, &link).unwrap();
    }
    tablespaces
}

/// pg_combinebackup of the chain `records` (full first) into `out/data`, tablespaces into
/// `out/ts-<oid>`: the oracle a restore of the last backup must equal.
pub fn combine(
    major: u32,
    repo: &Path,
    records: &[serde_json::Value],
    out: &Path,
) -> BTreeMap<u32, PathBuf> {
    let scratch = out.join("inputs");
    let mut dirs = Vec::new();
    let mut last_ts = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let d = scratch.join(i.to_string());
        last_ts = unpack_as_stored(repo, r, &d);
        dirs.push(d.join("data"));
    }
    let mut cmd = Command::new(client_tool(major, "pg_combinebackup"));
    cmd.args(&dirs).arg("-o").arg(out.join("data"));
    let mut out_ts = BTreeMap::new();
    for (oid, input) in &last_ts {
        let o = out.join(format!("ts-{oid}"));
        cmd.arg("-T")
            .arg(format!("{}={}", input.display(), o.display()));
        out_ts.insert(*oid, o);
    }
    run_tool(cmd, "pg_combinebackup");
    out_ts
}

/// Every regular file and symbolic link below `dir`, relative, sorted; `pg_wal/` and
/// `backup_manifest` left out (the restore puts WAL there and writes its own manifest).
fn tree(dir: &Path) -> Vec<(PathBuf, Option<PathBuf>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Option<PathBuf>)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if rel == Path::new("pg_wal") || rel == Path::new("backup_manifest") {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.push((rel, Some(std::fs::read_link(&p).unwrap())));
            } else if m.is_dir() {
                out.push((rel.join(""), None));
                walk(root, &p, out);
            } else {
                out.push((rel, None));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Asserts `got` holds exactly the files of `want`, byte for byte (and the same directories);
/// symbolic links are compared by existence only (they point at different places).
pub fn assert_same_tree(ctx: &str, want: &Path, got: &Path) {
    let (w, g) = (tree(want), tree(got));
    let names =
        |t: &[(PathBuf, Option<PathBuf>)]| t.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    let (wn, gn) = (names(&w), names(&g));
    if wn != gn {
        let missing: Vec<_> = wn.iter().filter(|p| !gn.contains(p)).take(10).collect();
        let extra: Vec<_> = gn.iter().filter(|p| !wn.contains(p)).take(10).collect();
        panic!(
            "{ctx}: {} differs from {}: missing {missing:?}, extra {extra:?}",
            got.display(),
            want.display()
        );
    }
    for (rel, link) in &w {
        if link.is_some() || rel.as_os_str().to_string_lossy().ends_with('/') {
            continue;
        }
        let (a, b) = (
            std::fs::read(want.join(rel)).unwrap(),
            std::fs::read(got.join(rel)).unwrap(),
        );
        if a != b {
            let first = a.iter().zip(&b).position(|(x, y)| x != y);
            panic!(
                "{ctx}: {} differs from pg_combinebackup's ({} vs {} bytes, first difference at {first:?})",
                rel.display(),
                b.len(),
                a.len()
            );
        }
    }
}

/// `pgstream restore --repo REPO --to DIR [--backup ID] [--tablespace-map ...] ARGS`,
/// checked to succeed.
pub fn restore(repo: &Path, to: &Path, id: &str, maps: &[String], args: &[&str]) -> super::Run {
    let mut all = vec!["restore", "--repo", s(repo), "--to", s(to), "--backup", id];
    for m in maps {
        all.push("--tablespace-map");
        all.push(m);
    }
    all.extend_from_slice(args);
    ok(pgstream(&all, Some(PASSPHRASE)), "restore")
}

/// Gives `dir` (a restored tablespace) to the server user.
pub fn chown_to_server_user(dir: &Path) {
    if let integration::ServerUser::Switch { name, .. } = server_user() {
        let mut cmd = Command::new("chown");
        cmd.arg("-R").arg(format!("{name}:")).arg(dir);
        run_tool(cmd, "chown");
    }
}

/// Creates tablespace `name` in a new directory the server user owns, after start.
pub fn create_tablespace(pg: &Cluster, name: &str) -> PathBuf {
    let dir = pg.temp_dir().join("late-tablespaces").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    server_user().chown(dir.parent().unwrap());
    server_user().chown(&dir);
    pg.psql(&format!(
        "CREATE TABLESPACE {name} LOCATION '{}'",
        dir.display()
    ));
    dir
}
