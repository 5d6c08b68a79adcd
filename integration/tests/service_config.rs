//! The configuration file drives the main commands against a real server: `init`, `base`,
//! `receive-wal`, `restore` and `expire` with nothing but `--config FILE --cluster main`;
//! flags and environment variables override the file; `config show` says where each value
//! comes from and masks the passphrase; a bad file stops every command naming file, line and
//! key. The subject does not depend on the version: newest major only.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;

use support::receiver::wait_for;
use support::{newest_cluster_and_repo_path, ok, pgstream, pgstream_command, s, Run};

const PASSPHRASE: &str = "configuration file passphrase 5c1e";
const SLOT: &str = "pgstream_config";

/// `pgstream --config FILE ARGS...` with no passphrase in the environment (the file names a
/// passphrase file) and `env` set.
fn with_file(file: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut all = vec!["--config", s(file)];
    all.extend_from_slice(args);
    let mut cmd = pgstream_command(&all, None);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running pgstream");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"))
}

#[test]
fn config_file_drives_init_base_receive_wal_restore_and_expire() {
    let (pg, scratch, repo) = newest_cluster_and_repo_path();
    let pass = scratch.path().join("passphrase");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file = scratch.path().join("pgstream.toml");
    std::fs::write(
        &file,
        format!(
            r#"# every cluster
keep-last = 1
repo = "/nonexistent/overridden-by-the-cluster"

[cluster.main]
source = "{source}"
repo = "{repo}"
passphrase-file = "{pass}"
slot = "{SLOT}"
create-slot = true
status-interval = 1
no-progress = true

[cluster.unused]
repo = "/nonexistent/other"
"#,
            source = pg.conninfo("postgres"),
            repo = s(&repo),
            pass = s(&pass),
        ),
    )
    .unwrap();
    let main = |args: &[&str]| {
        let mut all = vec!["--cluster", "main"];
        all.extend_from_slice(args);
        with_file(&file, &all, &[])
    };

    ok(main(&["init"]), "init from the file");
    let log = scratch.path().join("receive-wal.log");
    let mut receiver = pgstream_command(
        &["--config", s(&file), "--cluster", "main", "receive-wal"],
        None,
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .expect("spawning receive-wal");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(
        "receive-wal streams",
        30,
        || read_log().contains("streaming from"),
        read_log,
    );

    ok(main(&["base"]), "first base from the file");
    let second = ok(main(&["base", "--json"]), "second base from the file");
    let newest = json(&second)["id"].as_str().unwrap().to_string();

    // receive-wal, configured only by the file, archives through the file's slot.
    let switched = pg.psql("SELECT pg_switch_wal()");
    wait_for(
        &format!("the slot {SLOT} reaches {switched}"),
        30,
        || {
            pg.psql(&format!(
                "SELECT restart_lsn >= '{switched}' FROM pg_replication_slots \
                 WHERE slot_name = '{SLOT}'"
            )) == "t"
        },
        read_log,
    );

    let restored = scratch.path().join("restored");
    ok(
        main(&["restore", "--to", s(&restored), "--backup", &newest]),
        "restore from the file",
    );
    assert!(restored.join("PG_VERSION").exists());

    // keep-last = 1 from the top level: the older backup goes.
    let expired = json(&ok(main(&["expire", "--json"]), "expire from the file"));
    assert_eq!(
        expired["expired"].as_array().unwrap().len(),
        1,
        "{expired:#}"
    );
    assert_eq!(expired["kept"][0]["id"], newest.as_str(), "{expired:#}");

    // Flags, then the environment, then the file.
    let other = scratch.path().join("other-repo");
    ok(
        pgstream(&["init", "--repo", s(&other)], Some(PASSPHRASE)),
        "init other",
    );
    let listed = |run: Run| json(&ok(run, "list"))["repository"].clone();
    assert_eq!(listed(main(&["list", "--json"])), s(&repo));
    assert_eq!(
        listed(main(&["list", "--json", "--repo", s(&other)])),
        s(&other)
    );
    assert_eq!(
        listed(with_file(
            &file,
            &["--cluster", "main", "list", "--json"],
            &[("PGSTREAM_REPO", s(&other))]
        )),
        s(&other)
    );
    assert_eq!(
        listed(with_file(
            &file,
            &["--cluster", "main", "list", "--json", "--repo", s(&repo)],
            &[("PGSTREAM_REPO", s(&other))]
        )),
        s(&repo)
    );
    // PGSTREAM_CLUSTER chooses the section as --cluster does.
    assert_eq!(
        listed(with_file(
            &file,
            &["list", "--json"],
            &[("PGSTREAM_CLUSTER", "main")]
        )),
        s(&repo)
    );

    // config show: where each value comes from, the passphrase masked.
    let shown = ok(
        with_file(
            &file,
            &["--cluster", "main", "config", "show"],
            &[
                ("PGSTREAM_PASSPHRASE", PASSPHRASE),
                ("PGSTREAM_SOURCE", "host=elsewhere"),
            ],
        ),
        "config show",
    );
    let line = |key: &str| {
        shown
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} in {shown:?}"))
            .to_string()
    };
    assert!(
        line("repo").contains(&format!("{} line 7 ([cluster.main])", s(&file))),
        "{shown:?}"
    );
    assert!(
        line("keep-last").contains("line 2 (the top level)"),
        "{shown:?}"
    );
    assert!(
        line("source").contains("environment PGSTREAM_SOURCE"),
        "{shown:?}"
    );
    assert!(line("passphrase").contains("********"), "{shown:?}");
    assert!(line("checkpoint").ends_with("default"), "{shown:?}");
    assert!(!shown.stdout.contains(PASSPHRASE), "{shown:?}");

    let stopped = {
        let pid = receiver.id().to_string();
        std::process::Command::new("kill")
            .args(["-s", "TERM", &pid])
            .status()
            .unwrap();
        receiver.wait().unwrap()
    };
    assert_eq!(stopped.code(), Some(0), "{}", read_log());
}

#[test]
fn bad_configuration_file_stops_every_command_naming_file_line_and_key() {
    let scratch = integration::scratch_dir();
    let file = scratch.path().join("pgstream.toml");
    std::fs::write(
        &file,
        "[cluster.main]\nrepo = \"/backups/main\"\n\n# retention\nkeep-last = \"three\"\n",
    )
    .unwrap();
    let expected = format!(
        "pgstream: error: configuration file {}, line 5, key keep-last: must be an integer, \
         not a string\n",
        s(&file)
    );
    for args in [
        &["list"][..],
        &["--cluster", "main", "base"],
        &["receive-wal", "--repo", "/r", "--source", "host=x"],
        &["status", "--repo", "/r"],
        &["config", "show"],
    ] {
        let run = with_file(&file, args, &[]);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert_eq!(run.stderr, expected, "{args:?}");
        assert_eq!(run.stdout, "", "{args:?}");
    }

    std::fs::write(&file, "[cluster.main]\npassphrase = \"hunter2\"\n").unwrap();
    let run = with_file(&file, &["list"], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("line 2, key passphrase: secrets are never written"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("hunter2"), "{run:?}");

    std::fs::write(&file, "[cluster.main]\nrepo = \"/r\"\n").unwrap();
    let run = with_file(&file, &["--cluster", "mian", "list"], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("has no [cluster.mian] section") && run.stderr.contains("main"),
        "{run:?}"
    );
    // A file named by PGSTREAM_CONFIG must exist.
    let run = pgstream_command(&["list", "--repo", "/r"], None)
        .env("PGSTREAM_CONFIG", scratch.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr)
        .contains("does not exist (named by environment PGSTREAM_CONFIG)"));
}
