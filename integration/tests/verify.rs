//! `pgstream verify` end to end, through the binary, against a real server (the newest major
//! only: verify reads the repository, not the server, so other majors add nothing but time). A
//! repository fed by `receive-wal` with two backups verifies clean; a flipped byte in a base
//! archive, a flipped byte in an archived WAL segment and a WAL segment missing from the middle of
//! the chain each exit 6 naming the file (and the gap), in text and in `--json`; `--backup ID`
//! limits the backup checks.

mod support;

use std::path::{Path, PathBuf};

use integration::{cluster, scratch_dir, test_majors, Cluster};
use support::receiver::Receiver;
use support::{files_under, Run};

const PASSPHRASE: &str = "verify test passphrase";

fn pgstream(args: &[&str]) -> Run {
    support::pgstream(args, Some(PASSPHRASE))
}

fn verify(repo: &Path, extra: &[&str]) -> (Run, serde_json::Value) {
    let r = repo.to_str().unwrap();
    let mut args = vec!["verify", "--repo", r];
    args.extend_from_slice(extra);
    let text = pgstream(&args);
    args.push("--json");
    let json = pgstream(&args);
    assert_eq!(
        text.code, json.code,
        "text and JSON disagree: {text:?}\n{json:?}"
    );
    let value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|e| panic!("verify --json is not JSON: {e}: {json:?}"));
    (text, value)
}

fn base(repo: &Path, pg: &Cluster) -> String {
    let run = pgstream(&[
        "base",
        "--repo",
        repo.to_str().unwrap(),
        "--source",
        &pg.conninfo("postgres"),
        "--json",
    ]);
    assert_eq!(run.code, 0, "base: {run:?}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// The stored complete segment `name` (any suffix, not a partial copy).
fn stored_segment(repo: &Path, name: &str) -> Option<PathBuf> {
    files_under(&repo.join("wal")).into_iter().find(|p| {
        let f = p.file_name().unwrap().to_str().unwrap();
        f.starts_with(name) && !f.contains("partial") && !f.contains(".tmp.")
    })
}

fn flip_byte(path: &Path) -> Vec<u8> {
    let original = std::fs::read(path).unwrap();
    let mut bytes = original.clone();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(path, &bytes).unwrap();
    original
}

fn rel(repo: &Path, path: &Path) -> String {
    path.strip_prefix(repo)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

fn problems(report: &serde_json::Value) -> String {
    report.to_string()
}

#[test]
fn verify_names_damaged_archives_wal_and_gaps() {
    let major = *test_majors().last().expect("a PostgreSQL major to test");
    let ctx = format!("PostgreSQL {major}");
    let pg = cluster(major).start();
    let scratch = scratch_dir();
    let repo = scratch.path().join("repo");
    let r = repo.to_str().unwrap();
    assert_eq!(pgstream(&["init", "--repo", r]).code, 0, "{ctx}: init");
    let log = scratch.path().join("receive-wal.log");
    let receiver = Receiver::start(
        &repo,
        &pg.conninfo("postgres"),
        PASSPHRASE,
        &["--slot", "verify_test", "--create-slot"],
        log,
    );
    support::wait_until("receive-wal has created its slot", || {
        pg.psql("SELECT count(*) FROM pg_replication_slots WHERE active")
            .trim()
            == "1"
    });

    let first = base(&repo, &pg);
    // Several complete segments after the first backup, so one can go missing in the middle.
    let mut switched = Vec::new();
    for i in 0..3 {
        pg.psql(&format!(
            "CREATE TABLE t{i} AS SELECT g FROM generate_series(1, 1000) g"
        ));
        switched.push(
            pg.psql("SELECT pg_walfile_name(pg_switch_wal())")
                .trim()
                .to_string(),
        );
    }
    let second = base(&repo, &pg);
    pg.psql("CREATE TABLE after_second AS SELECT 1");
    let last = pg
        .psql("SELECT pg_walfile_name(pg_switch_wal())")
        .trim()
        .to_string();
    support::wait_until("receive-wal has archived the last switched segment", || {
        stored_segment(&repo, &last).is_some()
    });
    // SIGTERM and wait for the exit; its code is not what this test checks.
    let _ = receiver.terminate();

    // Clean.
    let (run, report) = verify(&repo, &[]);
    assert_eq!(run.code, 0, "{ctx}: a clean repository: {run:?}");
    assert_eq!(report["wal"]["ok"], true, "{ctx}: {report}");
    let ids: Vec<&str> = report["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()], "{ctx}");
    assert!(
        run.stdout.contains(&format!("backup {first}: OK")),
        "{ctx}: {run:?}"
    );

    // A flipped byte in the first backup's base archive.
    let archive = files_under(&repo.join("backups").join(&first))
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("base.tar")
        })
        .expect("the base archive");
    let original = flip_byte(&archive);
    let name = rel(&repo, &archive);
    let (run, report) = verify(&repo, &[]);
    assert_eq!(run.code, 6, "{ctx}: damaged archive: {run:?}");
    assert!(
        run.stdout.contains(&name),
        "{ctx}: {name} not named: {run:?}"
    );
    let b = &report["backups"];
    assert_eq!(b[0]["ok"], false, "{ctx}: {report}");
    assert!(
        b[0]["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["file"] == name.as_str()),
        "{ctx}: {}",
        problems(&report)
    );
    assert_eq!(
        b[1]["ok"], true,
        "{ctx}: the second backup is fine: {report}"
    );
    assert_eq!(report["wal"]["ok"], true, "{ctx}: {report}");
    // --backup limits the backup checks to the one named.
    let (run, report) = verify(&repo, &["--backup", &second]);
    assert_eq!(run.code, 0, "{ctx}: --backup {second}: {run:?}");
    assert_eq!(report["backups"].as_array().unwrap().len(), 1, "{ctx}");
    assert_eq!(report["backups"][0]["id"], second.as_str(), "{ctx}");
    let (run, _) = verify(&repo, &["--backup", &first]);
    assert_eq!(run.code, 6, "{ctx}: --backup {first}: {run:?}");
    std::fs::write(&archive, original).unwrap();

    // A flipped byte in an archived WAL segment in the middle of the chain.
    let middle = stored_segment(&repo, &switched[1]).expect("the middle segment is archived");
    let name = rel(&repo, &middle);
    let original = flip_byte(&middle);
    let (run, report) = verify(&repo, &[]);
    assert_eq!(run.code, 6, "{ctx}: damaged WAL: {run:?}");
    assert!(
        run.stdout.contains(&name),
        "{ctx}: {name} not named: {run:?}"
    );
    assert_eq!(report["wal"]["ok"], false, "{ctx}: {report}");
    let bad = report["wal"]["bad_files"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{ctx}: {report}");
    assert_eq!(bad[0]["file"], name.as_str(), "{ctx}: {report}");
    std::fs::write(&middle, original).unwrap();
    assert_eq!(verify(&repo, &[]).0.code, 0, "{ctx}: restored");

    // The same segment missing: a gap between the backups, costing the first its PITR coverage.
    let moved = scratch.path().join("moved-segment");
    std::fs::rename(&middle, &moved).unwrap();
    let (run, report) = verify(&repo, &[]);
    assert_eq!(run.code, 6, "{ctx}: missing WAL: {run:?}");
    assert!(
        run.stdout
            .contains(&format!("segment {} is missing", switched[1])),
        "{ctx}: gap not named: {run:?}"
    );
    let gaps = report["wal"]["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{ctx}: {report}");
    assert_eq!(gaps[0]["first"], switched[1].as_str(), "{ctx}: {report}");
    assert_eq!(gaps[0]["last"], switched[1].as_str(), "{ctx}: {report}");
    assert_eq!(
        gaps[0]["backups"],
        serde_json::json!([first]),
        "{ctx}: {report}"
    );
    assert_eq!(report["wal"]["ok"], false, "{ctx}: {report}");
    std::fs::rename(&moved, &middle).unwrap();
    assert_eq!(verify(&repo, &[]).0.code, 0, "{ctx}: restored");
}
