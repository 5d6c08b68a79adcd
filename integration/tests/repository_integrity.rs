//! A repository that cannot be turned against its owner (issue 11), end to end: what someone
//! with write access to the repository but without the passphrase can try (a configuration
//! altered to say "unencrypted", or altered otherwise; a planted "newer" backup) is refused
//! with the documented exit codes; a data-key rotation shuts an old passphrase and an old copy
//! of the configuration out of everything written afterwards, and an old key is retired once
//! nothing needs it. pgstream's own checks, not the server's: the newest major only.

mod support;

use std::path::Path;

use backup_core::repo::config::{decode, encode, CONFIG_FILE};
use integration::cluster;
use serde_json::Value;
use support::wal::Keyed;
use support::{newest_major, ok, s};

const KEY: Keyed = Keyed("integrity test passphrase");

fn base(repo: &Path, conninfo: &str) -> Value {
    let run = ok(
        KEY.pgstream(&[
            "base",
            "--repo",
            s(repo),
            "--source",
            conninfo,
            "--no-progress",
            "--json",
        ]),
        "base",
    );
    serde_json::from_str(&run.stdout).unwrap()
}

/// What someone without the passphrase can do to the configuration: edit it, fix its CRC.
fn tamper(repo: &Path, edit: impl FnOnce(&mut backup_core::repo::config::RepoConfig)) -> Vec<u8> {
    let path = repo.join(CONFIG_FILE);
    let original = std::fs::read(&path).unwrap();
    let mut c = decode(&original).unwrap();
    edit(&mut c);
    std::fs::write(&path, encode(&c)).unwrap();
    original
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    support::files_under(dir)
}

#[test]
fn an_altered_configuration_or_a_planted_backup_is_refused() {
    let major = newest_major();
    let ctx = format!("PostgreSQL {major}");
    let pg = cluster(major).start();
    let scratch = integration::scratch_dir();
    let repo = scratch.path().join("repo");
    KEY.init_repo(&repo);
    let conninfo = pg.conninfo("postgres");
    let record = base(&repo, &conninfo);
    let id = record["id"].as_str().unwrap().to_string();

    // "encryption": null, so that the next backup would be plaintext: refused, nothing written.
    let before = files(&repo);
    let original = tamper(&repo, |c| {
        c.encryption = None;
        c.mac = None;
    });
    let run = KEY.pgstream(&["base", "--repo", s(&repo), "--source", &conninfo]);
    assert_eq!(run.code, 5, "{ctx}: {run:?}");
    assert!(
        run.stderr.contains("says it is not encrypted"),
        "{ctx}: {run:?}"
    );
    assert_eq!(
        files(&repo),
        before,
        "{ctx}: a refused base wrote something"
    );

    // Any other change (here the compression) fails the configuration's MAC.
    std::fs::write(repo.join(CONFIG_FILE), &original).unwrap();
    tamper(&repo, |c| c.compression = backup_core::Compression::None);
    let run = KEY.pgstream(&["list", "--repo", s(&repo)]);
    assert_eq!(run.code, 5, "{ctx}: {run:?}");
    assert!(run.stderr.contains("altered"), "{ctx}: {run:?}");
    std::fs::write(repo.join(CONFIG_FILE), &original).unwrap();

    // A planted "newer" backup: a copy of the real one under a later id, its record resealed
    // without the key (a valid checksum, no MAC). restore latest, list and verify refuse it.
    let planted_id = "20991231T235959Z";
    let planted = repo.join("backups").join(planted_id);
    std::fs::create_dir_all(&planted).unwrap();
    let real = repo.join("backups").join(&id).join("backup.json");
    let mut rec: backup_core::catalog::BackupRecord =
        serde_json::from_slice(&std::fs::read(real).unwrap()).unwrap();
    rec.id = planted_id.into();
    rec.label = "planted".into();
    rec.seal(None).unwrap();
    let json = serde_json::to_vec_pretty(&rec).unwrap();
    std::fs::write(planted.join("backup.json"), json).unwrap();
    let target = scratch.path().join("restored");
    let run = KEY.pgstream(&["restore", "--repo", s(&repo), "--to", s(&target)]);
    assert_eq!(run.code, 6, "{ctx}: restore latest: {run:?}");
    assert!(
        run.stderr.contains(planted_id) && run.stderr.contains("MAC"),
        "{ctx}: {run:?}"
    );
    assert!(
        !target.join("PG_VERSION").exists(),
        "{ctx}: restored something"
    );
    let run = KEY.pgstream(&["list", "--repo", s(&repo)]);
    assert_eq!(run.code, 6, "{ctx}: list: {run:?}");
    let run = KEY.pgstream(&["verify", "--repo", s(&repo)]);
    assert_eq!(run.code, 6, "{ctx}: verify: {run:?}");
    assert!(run.stdout.contains(planted_id), "{ctx}: {run:?}");
    // Without the passphrase, list checks checksums only, and says it could not check more.
    let run = support::pgstream(&["list", "--repo", s(&repo)], None);
    assert_eq!(run.code, 0, "{ctx}: {run:?}");
    assert!(run.stdout.contains(planted_id), "{ctx}: {run:?}");
}

#[test]
fn a_rotated_key_shuts_out_an_old_passphrase_and_is_retired_when_nothing_needs_it() {
    let major = newest_major();
    let ctx = format!("PostgreSQL {major}");
    let pg = cluster(major).start();
    let scratch = integration::scratch_dir();
    let repo = scratch.path().join("repo");
    KEY.init_repo(&repo);
    let conninfo = pg.conninfo("postgres");
    let first = base(&repo, &conninfo);
    let old_config = std::fs::read(repo.join(CONFIG_FILE)).unwrap();

    // Rotate, and change the passphrase in the same step.
    let new = "the passphrase after the rotation";
    let mut cmd = support::pgstream_command(
        &["rekey", "--repo", s(&repo), "--rotate-data-key"],
        Some(KEY.0),
    );
    let out = cmd.env("PGSTREAM_NEW_PASSPHRASE", new).output().unwrap();
    assert!(
        out.status.success(),
        "{ctx}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = Keyed(Box::leak(new.to_string().into_boxed_str()));
    pg.psql("SELECT pg_switch_wal()");
    let run = ok(
        rotated.pgstream(&[
            "base",
            "--repo",
            s(&repo),
            "--source",
            &conninfo,
            "--no-progress",
            "--json",
        ]),
        "base after the rotation",
    );
    let second: Value = serde_json::from_str(&run.stdout).unwrap();
    ok(
        rotated.pgstream(&["verify", "--repo", s(&repo)]),
        "verify after the rotation",
    );

    // Someone who kept the old passphrase and the old configuration: the first backup only.
    let thief = scratch.path().join("stolen");
    std::fs::create_dir_all(&thief).unwrap();
    for f in support::files_under(&repo) {
        let rel = f.strip_prefix(&repo).unwrap();
        if rel.starts_with("locks") {
            continue;
        }
        std::fs::create_dir_all(thief.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&f, thief.join(rel)).unwrap();
    }
    std::fs::write(thief.join(CONFIG_FILE), &old_config).unwrap();
    let run = KEY.pgstream(&[
        "verify",
        "--repo",
        s(&thief),
        "--backup",
        second["id"].as_str().unwrap(),
    ]);
    assert_eq!(
        run.code, 6,
        "{ctx}: the old key read the new backup: {run:?}"
    );
    assert!(
        run.stdout.contains("data key 1") || run.stderr.contains("data key 1"),
        "{ctx}: {run:?}"
    );

    // Key 0 is still needed by the first backup and its WAL: not retired.
    let run = rotated.pgstream(&["rekey", "--repo", s(&repo), "--retire-key", "0"]);
    assert_eq!(run.code, 5, "{ctx}: {run:?}");
    assert!(run.stderr.contains("expire"), "{ctx}: {run:?}");
    // The first backup expired (and the WAL only it needed), key 0 goes.
    ok(
        rotated.pgstream(&["expire", "--repo", s(&repo), "--keep-last", "1"]),
        "expire",
    );
    let run = rotated.pgstream(&["rekey", "--repo", s(&repo), "--retire-key", "0"]);
    assert_eq!(run.code, 0, "{ctx}: {run:?}");
    let config = decode(&std::fs::read(repo.join(CONFIG_FILE)).unwrap()).unwrap();
    let ids: Vec<u32> = config
        .encryption
        .unwrap()
        .keys
        .iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, vec![1], "{ctx}");
    ok(
        rotated.pgstream(&["verify", "--repo", s(&repo)]),
        "verify after the retirement",
    );
    assert_ne!(first["id"], second["id"]);
    // Upgrading a current repository does nothing.
    let run = ok(
        rotated.pgstream(&["upgrade", "--repo", s(&repo)]),
        "upgrade",
    );
    assert!(run.stdout.contains("already"), "{ctx}: {run:?}");
}
