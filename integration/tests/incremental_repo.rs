//! Incremental chains in the repository (PostgreSQL 17+): `list` and `--json` show each chain
//! and what restoring it reads; `expire` keeps every backup a kept incremental needs and says
//! so in `--dry-run`; `verify` finds a damaged parent and a link to the wrong parent, which a
//! restore refuses too; `kill -9` during an incremental backup leaves nothing visible (no
//! record), and the next run removes what it left.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use backup_core::catalog::{BackupRecord, RECORD_FILE};
use backup_core::{Repository, Secret};
use support::incremental::*;
use support::{init_repo, ok, pgstream, pgstream_command, s};

fn json(run: &support::Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

fn ids(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| {
            x.as_str()
                .map_or_else(|| x["id"].as_str().unwrap().to_string(), str::to_string)
        })
        .collect()
}

/// `verify --json`: whether every backup verifies (this repository archives no WAL, so the
/// archive's gaps are expected and not looked at).
fn backups_verify(repo: &Path, ctx: &str) {
    let run = pgstream(&["verify", "--repo", s(repo), "--json"], Some(PASSPHRASE));
    let report = json(&run);
    for b in report["backups"].as_array().unwrap() {
        assert_eq!(b["ok"], true, "{ctx}: {b}");
    }
}

/// Backups with a record (committed).
fn complete_backups(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo.join("backups"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join(RECORD_FILE).exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Rewrites backup `id`'s record with `change` applied, sealed again with the repository's
/// key (as only someone with the passphrase could); returns the original bytes.
fn reseal(repo: &Path, id: &str, change: impl FnOnce(&mut BackupRecord)) -> Vec<u8> {
    let path = repo.join("backups").join(id).join(RECORD_FILE);
    let original = std::fs::read(&path).unwrap();
    let mut record: BackupRecord = serde_json::from_slice(&original).unwrap();
    change(&mut record);
    let opened = Repository::open(
        &backup_core::store::RepoLocation::local(repo),
        Some(&Secret::new(PASSPHRASE.as_bytes().to_vec())),
    )
    .unwrap();
    record.seal(opened.sealing_key()).unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(&record).unwrap()).unwrap();
    original
}

#[test]
fn chains_in_list_expire_verify_and_a_killed_incremental() {
    for major in incremental_majors() {
        let ctx = format!("PostgreSQL {major}");
        let pg = summarizing(major).start();
        let scratch = integration::scratch_dir();
        let repo = scratch.path().join("repo");
        init_repo(&repo, PASSPHRASE);
        pg.psql(
            "CREATE TABLE t AS SELECT g, repeat('t', 100) AS pad FROM generate_series(1, 50000) g",
        );
        let full = base(&repo, &pg, &[]);
        pg.psql("UPDATE t SET pad = 'one' WHERE g % 100 = 0");
        settle(&pg);
        let first = base(&repo, &pg, &["--incremental"]);
        pg.psql("UPDATE t SET pad = 'two' WHERE g % 100 = 1");
        settle(&pg);
        let second = base(&repo, &pg, &["--incremental"]);
        let [f, i1, i2] = [&full, &first, &second].map(|r| r["id"].as_str().unwrap().to_string());

        // list --json: the chain, and what a restore of it reads.
        let listed = json(&ok(
            pgstream(&["list", "--repo", s(&repo), "--json"], Some(PASSPHRASE)),
            "list",
        ));
        let b = &listed["backups"];
        assert!(b[0]["incremental"].is_null(), "{ctx}: {listed}");
        assert_eq!(
            ids(&b[2]["incremental"]["chain"]),
            [f.clone(), i1.clone(), i2.clone()],
            "{ctx}"
        );
        assert_eq!(b[2]["incremental"]["depth"], 3, "{ctx}");
        let stored: u64 = (0..3).map(|i| b[i]["stored_bytes"].as_u64().unwrap()).sum();
        assert_eq!(b[2]["incremental"]["chain_stored_bytes"], stored, "{ctx}");
        let text = ok(
            pgstream(&["list", "--repo", s(&repo)], Some(PASSPHRASE)),
            "list",
        )
        .stdout;
        assert!(
            text.contains(&format!("chain     incremental of {i1}, backup 3")),
            "{ctx}: {text}"
        );

        // expire keeps the chain of the one backup it must keep, and says why.
        let dry = json(&ok(
            pgstream(
                &[
                    "expire",
                    "--repo",
                    s(&repo),
                    "--keep-last",
                    "1",
                    "--dry-run",
                    "--json",
                ],
                Some(PASSPHRASE),
            ),
            "expire --dry-run",
        ));
        assert_eq!(
            ids(&dry["kept"]),
            [f.clone(), i1.clone(), i2.clone()],
            "{ctx}: {dry}"
        );
        assert!(
            dry["expired"].as_array().unwrap().is_empty(),
            "{ctx}: {dry}"
        );
        for k in &dry["kept"].as_array().unwrap()[..2] {
            assert_eq!(k["reasons"], serde_json::json!(["chain"]), "{ctx}: {dry}");
            assert_eq!(
                ids(&k["needed_by"]),
                std::slice::from_ref(&i2),
                "{ctx}: {dry}"
            );
        }
        let text = ok(
            pgstream(
                &[
                    "expire",
                    "--repo",
                    s(&repo),
                    "--keep-last",
                    "1",
                    "--dry-run",
                ],
                Some(PASSPHRASE),
            ),
            "expire --dry-run",
        )
        .stdout;
        assert!(
            text.contains(&format!("keep    backup {f}"))
                && text.contains(&format!("needed by incremental {i2}")),
            "{ctx}: {text}"
        );
        ok(
            pgstream(
                &["expire", "--repo", s(&repo), "--keep-last", "1"],
                Some(PASSPHRASE),
            ),
            "expire",
        );
        assert_eq!(
            complete_backups(&repo),
            [f.clone(), i1.clone(), i2.clone()],
            "{ctx}"
        );
        backups_verify(&repo, &ctx);

        // kill -9 in the middle of an incremental backup: nothing visible; the next run
        // removes what it left.
        let conninfo = pg.conninfo("postgres");
        let mut child = pgstream_command(
            &[
                "base",
                "--repo",
                s(&repo),
                "--source",
                &conninfo,
                "--no-progress",
                "--incremental",
                "--max-rate",
                "32",
            ],
            Some(PASSPHRASE),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        // Being written: a backup directory with an archive but no record (section 8.1 of
        // format.md: the record, written last, is the commit).
        let deadline = Instant::now() + Duration::from_secs(60);
        let in_progress = loop {
            let found = std::fs::read_dir(repo.join("backups"))
                .unwrap()
                .flatten()
                .find(|e| {
                    !e.path().join(RECORD_FILE).exists()
                        && std::fs::read_dir(e.path()).is_ok_and(|d| {
                            d.flatten()
                                .any(|x| x.file_name().to_string_lossy().starts_with("base.tar"))
                        })
                });
            if let Some(e) = found {
                break e.path();
            }
            assert!(
                Instant::now() < deadline,
                "{ctx}: the incremental never started streaming"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        std::thread::sleep(Duration::from_millis(300));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(in_progress.exists(), "{ctx}");
        assert_eq!(
            complete_backups(&repo),
            [f.clone(), i1.clone(), i2.clone()],
            "{ctx}"
        );
        let listed = json(&ok(
            pgstream(&["list", "--repo", s(&repo), "--json"], Some(PASSPHRASE)),
            "list",
        ));
        assert_eq!(
            listed["backups"].as_array().unwrap().len(),
            3,
            "{ctx}: {listed}"
        );
        backups_verify(&repo, &ctx);
        settle(&pg);
        let next = base(&repo, &pg, &["--incremental"]);
        assert_eq!(next["incremental"]["parent"], i2.as_str(), "{ctx}");
        assert!(
            !in_progress.exists(),
            "{ctx}: the killed run's directory is still there"
        );

        // A damaged parent: verify names it for the incremental; a restore refuses.
        let archive = repo
            .join("backups")
            .join(&f)
            .join(full["archives"][0]["file"].as_str().unwrap());
        let original = std::fs::read(&archive).unwrap();
        let mut damaged = original.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0x40;
        std::fs::write(&archive, &damaged).unwrap();
        let verify = pgstream(
            &["verify", "--repo", s(&repo), "--backup", &i2, "--json"],
            Some(PASSPHRASE),
        );
        assert_eq!(verify.code, 6, "{ctx}: {verify:?}");
        let report = json(&verify);
        let of = |id: &str| {
            report["backups"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["id"] == id)
                .cloned()
                .unwrap()
        };
        assert_eq!(of(&f)["ok"], false, "{ctx}: {report}");
        assert!(
            of(&i2)["problems"]
                .to_string()
                .contains(&format!("backup {f} of its chain has problems")),
            "{ctx}: {report}"
        );
        let target = scratch.path().join("restore-damaged");
        let restore = pgstream(
            &[
                "restore",
                "--repo",
                s(&repo),
                "--to",
                s(&target),
                "--backup",
                &i2,
            ],
            Some(PASSPHRASE),
        );
        assert_eq!(restore.code, 6, "{ctx}: {restore:?}");
        std::fs::write(&archive, &original).unwrap();

        // A link to the wrong parent (the record says it was taken relative to another
        // manifest): verify says so, and a restore refuses before writing anything.
        let record = reseal(&repo, &i1, |r| {
            r.incremental.as_mut().unwrap().parent_manifest_sha256 = "ab".repeat(32);
        });
        let verify = pgstream(
            &["verify", "--repo", s(&repo), "--backup", &i1],
            Some(PASSPHRASE),
        );
        assert_eq!(verify.code, 6, "{ctx}: {verify:?}");
        assert!(
            verify.stdout.contains("a link to the wrong parent"),
            "{ctx}: {verify:?}"
        );
        let target = scratch.path().join("restore-wrong-parent");
        let restore = pgstream(
            &[
                "restore",
                "--repo",
                s(&repo),
                "--to",
                s(&target),
                "--backup",
                &i2,
            ],
            Some(PASSPHRASE),
        );
        assert_eq!(restore.code, 6, "{ctx}: {restore:?}");
        assert!(
            restore.stderr.contains("relative to another manifest"),
            "{ctx}: {restore:?}"
        );
        assert!(
            std::fs::read_dir(&target).map_or(true, |mut d| d.next().is_none()),
            "{ctx}: the refused restore wrote files"
        );
        std::fs::write(repo.join("backups").join(&i1).join(RECORD_FILE), record).unwrap();
        backups_verify(&repo, &ctx);
    }
}
