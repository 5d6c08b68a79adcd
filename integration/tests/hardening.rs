//! Regression tests for the defects of issue 11 that only show end to end, each named after its
//! defect. They do not depend on the server version, so they run on the newest major only.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use integration::{cluster, server_user};
use support::archiving::switch_and_archive;
use support::restored::start_promoted;
use support::setup::Setup;
use support::{
    init_repo, newest_cluster_and_repo_path, newest_major, ok, pgstream, pgstream_command, s,
};

const PASSPHRASE: &str = "hardening test passphrase";

/// Regression: `pgstream list | head` panicked ("failed printing to stdout: Broken pipe") when
/// the reader went away. Now any command whose stdout is closed stops quietly with exit 141.
#[test]
fn closed_stdout_exits_141_without_a_panic() {
    let (pg, _scratch, repo) = newest_cluster_and_repo_path();
    init_repo(&repo, PASSPHRASE);
    for _ in 0..3 {
        ok(
            pgstream(
                &[
                    "base",
                    "--repo",
                    s(&repo),
                    "--source",
                    &pg.conninfo("postgres"),
                    "--no-progress",
                ],
                Some(PASSPHRASE),
            ),
            "base",
        );
    }
    let listed = ok(
        pgstream(&["list", "--repo", s(&repo)], Some(PASSPHRASE)),
        "list",
    );
    assert!(listed.stdout.lines().count() > 3, "{listed:?}");

    for args in [
        &["list", "--repo", s(&repo)][..],
        &["list", "--json", "--repo", s(&repo)],
        &["verify", "--repo", s(&repo)],
        &["--help"],
    ] {
        // A pipe whose reader has already gone: the first write fails with EPIPE, every time
        // (a reader such as `head -n 1` closes only after the output fits its pipe).
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = pgstream_command(args, Some(PASSPHRASE))
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr, "", "{args:?}: quietly");
    }
}

/// Regression: processes holding the data key could dump core (and be read through /proc by
/// other processes of their user). Every command now sets RLIMIT_CORE to 0 and clears the
/// dumpable flag at startup: checked on a `receive-wal` of an encrypted repository that holds
/// its key while it waits for a server that is not there.
#[test]
fn core_dumps_are_disabled_while_the_data_key_is_held() {
    let setup = Setup::new(PASSPHRASE);
    let mut cmd = Command::new(&setup.bin);
    cmd.args([
        "receive-wal",
        "--repo",
        s(&setup.repo),
        "--passphrase-file",
        s(&setup.pass),
        // Nothing listens on port 1: it keeps reconnecting, key in hand.
        "--source",
        "host=127.0.0.1 port=1 user=nobody dbname=postgres",
        "--log-level",
        "info",
    ])
    .current_dir(setup.scratch.path())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    // Not root (as root, as the server user): a non-dumpable process's /proc files then
    // belong to root instead of to its own user, which is how the flag shows from outside.
    server_user().apply(&mut cmd);
    let mut child = cmd.spawn().expect("starting pgstream receive-wal");
    let pid = child.id();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("reconnecting") {
        let before = log.len();
        stderr.read_line(&mut log).unwrap();
        assert!(log.len() > before, "receive-wal ended: {log}");
    }

    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    let limits = std::fs::read_to_string(proc_dir.join("limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_else(|| panic!("no core limit in /proc/{pid}/limits:\n{limits}"));
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(
        &fields[4..6],
        ["0", "0"],
        "soft and hard core limits: {core}"
    );
    let status = std::fs::read_to_string(proc_dir.join("status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert_ne!(
        uid, "0",
        "the check needs pgstream to run as another user than root"
    );
    let owner = std::fs::metadata(proc_dir.join("status")).unwrap().uid();
    assert_eq!(
        owner, 0,
        "/proc/{pid} belongs to uid {owner}: the process (uid {uid}) is dumpable"
    );

    child.kill().unwrap();
    child.wait().unwrap();
}

/// Regression: a `%` in the repository or passphrase-file path went into restore_command as is,
/// and the server replaced it (`repo%f` became `repo000000010000000000000001`), so recovery
/// found no WAL. Now doubled: a restore from `repo%f` with a passphrase file `pass%p` recovers,
/// the server really running the command. A path with a newline, which postgresql.auto.conf
/// cannot carry, is refused with exit 2 before anything is written.
#[test]
fn percent_in_repository_and_passphrase_paths_is_escaped_in_restore_command() {
    let started = std::time::Instant::now();
    let major = newest_major();
    let setup = Setup::new(PASSPHRASE);
    let repo = setup.path("repo%f");
    setup.init(&repo);
    let pass = setup.path("pass%p");
    std::fs::copy(&setup.pass, &pass).unwrap();
    server_user().chown(&pass);
    // archive_command is the user's to write: `%` doubled there too.
    let archive_command = format!(
        "'{}' archive-push --repo '{}' --passphrase-file '{}' %p",
        s(&setup.bin),
        s(&repo).replace('%', "%%"),
        s(&pass).replace('%', "%%")
    );
    let pg = cluster(major)
        .setting("archive_mode", "on")
        .setting("archive_command", &archive_command)
        .start();
    pg.psql("CREATE TABLE t (note text)");
    ok(
        setup.run(
            &[
                "base",
                "--repo",
                s(&repo),
                "--source",
                &pg.conninfo("postgres"),
                "--no-progress",
                "--passphrase-file",
                s(&pass),
            ],
            false,
        ),
        "base",
    );
    pg.psql("INSERT INTO t VALUES ('after the backup')");
    switch_and_archive(&pg);

    let restore = |dir: &std::path::Path, pass: &std::path::Path| {
        setup.run(
            &[
                "restore",
                "--repo",
                s(&repo),
                "--to",
                s(dir),
                "--target-latest",
                "--passphrase-file",
                s(pass),
            ],
            false,
        )
    };
    // A passphrase file whose path has a newline: refused, nothing written.
    let newline_pass = setup.path("pass\nword");
    std::fs::copy(&setup.pass, &newline_pass).unwrap();
    server_user().chown(&newline_pass);
    let refused_dir = setup.path("refused");
    let refused = restore(&refused_dir, &newline_pass);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("--passphrase-file") && refused.stderr.contains("line break"),
        "{refused:?}"
    );
    assert!(
        !refused_dir.exists() || std::fs::read_dir(&refused_dir).unwrap().next().is_none(),
        "the refused restore wrote into {}",
        refused_dir.display()
    );

    let dir = setup.path("restored");
    let run = ok(restore(&dir, &pass), "restore --target-latest");
    let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains("repo%%f") && auto.contains("pass%%p"),
        "{auto}\n{run:?}"
    );
    drop(pg);
    // WAL after the backup comes only through restore_command: the row proves it ran.
    let restored = start_promoted(major, &dir);
    assert_eq!(restored.psql("SELECT note FROM t"), "after the backup");
    eprintln!(
        "PostgreSQL {major}: restore_command with % took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Regression: a tablespace location in a backup record was where restore (and drill) wrote,
/// unchecked, so someone with write access to the repository could make a restore write
/// anywhere (`/srv/ts1/../../etc`). Now such a record is refused, naming the location, before
/// anything is written; `--tablespace-map` with such a NEW is refused too. An unencrypted
/// repository: its record carries only a checksum, which the attacker recomputes (in an
/// encrypted one the record's MAC needs the key).
#[test]
fn unsafe_tablespace_location_in_the_record_is_refused_by_restore_and_drill() {
    let started = std::time::Instant::now();
    let major = newest_major();
    let setup = Setup::new(PASSPHRASE);
    let repo = setup.path("plain");
    ok(
        setup.run(&["init", "--repo", s(&repo), "--encryption", "none"], false),
        "init",
    );
    let ts = setup.dir("ts1");
    let pg = cluster(major).start();
    pg.psql(&format!(
        "CREATE TABLESPACE ts1 LOCATION {}",
        integration::quote_literal(s(&ts))
    ));
    pg.psql("CREATE TABLE t (note text) TABLESPACE ts1");
    let base = ok(
        setup.run(
            &[
                "base",
                "--repo",
                s(&repo),
                "--source",
                &pg.conninfo("postgres"),
                "--no-progress",
                "--json",
            ],
            false,
        ),
        "base",
    );
    drop(pg);
    let id = serde_json::from_str::<serde_json::Value>(&base.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let nothing_written = |dir: &std::path::Path, what: &str| {
        assert!(
            !dir.exists() || std::fs::read_dir(dir).unwrap().next().is_none(),
            "{what}: {} was written",
            dir.display()
        );
    };

    // --tablespace-map OLD=NEW with '..' in NEW.
    let to = setup.path("restored");
    let escape = format!("{}/../../mapped-out", s(&setup.path("x")));
    let map = format!("{}={escape}", s(&ts));
    let run = setup.run(
        &[
            "restore",
            "--repo",
            s(&repo),
            "--to",
            s(&to),
            "--tablespace-map",
            &map,
        ],
        false,
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("--tablespace-map") && run.stderr.contains(&escape),
        "{run:?}"
    );
    nothing_written(&to, "a refused --tablespace-map");

    // The record altered to send the tablespace elsewhere, its checksum recomputed.
    let record_file = repo.join("backups").join(&id).join("backup.json");
    let mut record: backup_core::catalog::BackupRecord =
        serde_json::from_slice(&std::fs::read(&record_file).unwrap()).unwrap();
    let planted = format!("{}/../../planted", s(&ts));
    let archive = record
        .archives
        .iter_mut()
        .find(|a| a.tablespace_oid.is_some())
        .expect("the tablespace's archive");
    archive.tablespace_location = Some(planted.clone());
    record.seal(None).unwrap();
    std::fs::write(&record_file, serde_json::to_vec_pretty(&record).unwrap()).unwrap();
    let planted_dir = setup.scratch.path().parent().unwrap().join("planted");
    assert!(!planted_dir.exists());

    let run = setup.run(&["restore", "--repo", s(&repo), "--to", s(&to)], false);
    assert_eq!(run.code, 6, "{run:?}");
    assert!(
        run.stderr.contains(&planted) && run.stderr.contains("damaged or altered"),
        "{run:?}"
    );
    nothing_written(&to, "restore");
    assert!(
        !planted_dir.exists(),
        "restore wrote {}",
        planted_dir.display()
    );

    // drill: refused the same way, before it sets anything up.
    let scratch = setup.dir("drill-scratch");
    let mut drill = Command::new(&setup.bin);
    drill.args(["drill", "--repo", s(&repo), "--scratch", s(&scratch)]);
    if let Some(user) = support::os_user() {
        drill.args(["--os-user", &user]);
    }
    let out = drill.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains(&planted), "{stderr}");
    nothing_written(&scratch, "drill");
    assert!(
        !planted_dir.exists(),
        "drill wrote {}",
        planted_dir.display()
    );
    eprintln!(
        "PostgreSQL {major}: altered tablespace location took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
