use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory as _, FromArgMatches as _};

use super::*;
use crate::args::{Cli, Command};

fn selection(cluster: Option<&str>) -> Selection {
    Selection {
        path: PathBuf::from("/etc/pgstream/test.toml"),
        path_origin: Origin::Flag("--config"),
        cluster: cluster.map(|c| (c.to_string(), Origin::Flag("--cluster"))),
    }
}

/// Loads `text` as the file, for `cluster`.
fn loaded(text: &str, cluster: Option<&str>) -> Result<Loaded, ConfigError> {
    let sel = selection(cluster);
    let parsed = file::parse(&sel.path, text)?;
    let mut entries: Vec<Entry> = parsed
        .entries
        .iter()
        .filter(|e| e.cluster.is_none())
        .cloned()
        .collect();
    if let Some((name, _)) = &sel.cluster {
        for e in parsed
            .entries
            .iter()
            .filter(|e| e.cluster.as_deref() == Some(name))
        {
            entries.retain(|t| t.key != e.key);
            entries.push(e.clone());
        }
    }
    let l = Loaded {
        selection: sel,
        file_read: true,
        entries,
        all_entries: parsed.entries,
    };
    apply(Cli::command(), &l)?;
    Ok(l)
}

fn parse(text: &str, cluster: Option<&str>, argv: &[&str]) -> Cli {
    let l = loaded(text, cluster).unwrap();
    let cmd = apply(Cli::command(), &l).unwrap();
    let mut full = vec!["pgstream"];
    full.extend_from_slice(argv);
    let m = cmd.try_get_matches_from(full).unwrap();
    Cli::from_arg_matches(&m).unwrap()
}

fn error(text: &str) -> String {
    loaded(text, None).unwrap_err().to_string()
}

const FILE: &str = r#"
log-level = "warn"
keep-last = 3

[cluster.main]
source = "host=db1 user=backup"
repo = "/backups/main"
passphrase-file = "/etc/pgstream/main.pass"
slot = "pgstream"
synchronous = true
keep-within = "7d"

[cluster.other]
repo = "/backups/other"
"#;

#[test]
fn cluster_section_supplies_the_options_of_every_command() {
    let cli = parse(FILE, Some("main"), &["base"]);
    let Command::Base(b) = cli.command else {
        panic!()
    };
    assert_eq!(b.source, "host=db1 user=backup");
    assert_eq!(b.repo.repo.to_string(), "/backups/main");
    assert_eq!(
        b.repo.passphrase_file,
        Some(PathBuf::from("/etc/pgstream/main.pass"))
    );
    assert_eq!(cli.log_level, "warn");
    let cli = parse(FILE, Some("main"), &["receive-wal"]);
    let Command::ReceiveWal(r) = cli.command else {
        panic!()
    };
    assert_eq!(r.slot.as_deref(), Some("pgstream"));
    assert!(r.synchronous);
    // Retention: the top level's keep-last and the cluster's keep-within.
    let cli = parse(FILE, Some("main"), &["expire"]);
    let Command::Expire(e) = cli.command else {
        panic!()
    };
    assert_eq!(e.keep_last, Some(3));
    assert_eq!(
        e.keep_within,
        Some(std::time::Duration::from_secs(7 * 86400))
    );
}

#[test]
fn flags_override_the_file() {
    let cli = parse(
        FILE,
        Some("main"),
        &["base", "--repo", "/elsewhere", "--source", "host=db2"],
    );
    let Command::Base(b) = cli.command else {
        panic!()
    };
    assert_eq!(b.repo.repo.to_string(), "/elsewhere");
    assert_eq!(b.source, "host=db2");
}

#[test]
fn another_cluster_gets_only_its_own_section_and_the_top_level() {
    let cli = parse(FILE, Some("other"), &["list"]);
    let Command::List(l) = cli.command else {
        panic!()
    };
    assert_eq!(l.repo.repo.to_string(), "/backups/other");
    assert_eq!(l.repo.passphrase_file, None);
}

#[test]
fn bad_files_name_file_line_and_key() {
    let e = error("[cluster.main]\nrepo = \"/x\"\nkeep-last = \"three\"\n");
    assert_eq!(
        e,
        "configuration file /etc/pgstream/test.toml, line 3, key keep-last: must be an \
         integer, not a string"
    );
    let e = error("\n\nrepo = 5\n");
    assert!(
        e.contains("line 3, key repo: must be a string, not an integer"),
        "{e}"
    );
    let e = error("kep-last = 3\n");
    assert!(e.contains("line 1, key kep-last: unknown key"), "{e}");
    let e = error("keep_last = 3\n");
    assert!(e.contains("(did you mean keep-last?)"), "{e}");
    let e = error("[cluster.main]\ncheckpoint = \"slow\"\n");
    assert!(
        e.contains("line 2, key checkpoint:") && e.contains("possible values: fast, spread"),
        "{e}"
    );
    let e = error("compression = \"zstd:19\"\n");
    assert!(
        e.contains("line 1, key compression:") && e.contains("1..=11"),
        "{e}"
    );
    let e = error("[backups]\nrepo = \"/x\"\n");
    assert!(e.contains("line 1, key backups: unknown section"), "{e}");
    let e = error("repo = \n");
    assert!(e.contains("line 1: not valid TOML"), "{e}");
}

#[test]
fn secrets_written_inline_are_refused() {
    for (text, key) in [
        ("[cluster.main]\npassphrase = \"hunter2\"\n", "passphrase"),
        ("password = \"hunter2\"\n", "password"),
        ("source = \"host=db1 password=hunter2\"\n", "source"),
    ] {
        let e = error(text);
        assert!(
            e.contains(&format!("key {key}: secrets are never written")),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }
}

#[test]
fn an_unknown_cluster_lists_the_known_ones() {
    let dir = tempfile_dir();
    let path = dir.join("pgstream.toml");
    std::fs::write(&path, FILE).unwrap();
    let mut sel = selection(Some("nope"));
    sel.path = path;
    let e = load(sel).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(e.contains("no [cluster.nope] section"), "{e}");
    assert!(e.contains("its clusters are main, other"), "{e}");
}

#[test]
fn a_missing_default_file_is_no_file_but_a_named_one_is_an_error() {
    let mut sel = selection(None);
    sel.path = PathBuf::from("/nonexistent/pgstream.toml");
    sel.path_origin = Origin::Default;
    assert!(load(sel.clone()).unwrap().entries.is_empty());
    sel.path_origin = Origin::Environment("PGSTREAM_CONFIG");
    let e = load(sel).unwrap_err().to_string();
    assert!(
        e.contains("does not exist (named by environment PGSTREAM_CONFIG)"),
        "{e}"
    );
}

#[test]
fn config_and_cluster_are_read_from_argv_before_parsing() {
    let argv: Vec<OsString> = ["pgstream", "--config=/a.toml", "base", "--cluster", "main"]
        .iter()
        .map(OsString::from)
        .collect();
    let sel = Selection::from_args(&argv);
    assert_eq!(sel.path, PathBuf::from("/a.toml"));
    assert_eq!(sel.cluster.map(|c| c.0).as_deref(), Some("main"));
}

#[test]
fn every_key_is_a_long_option() {
    let cli = Cli::command();
    for key in keys::KEYS {
        let mut found = Vec::new();
        apply::options_named(&cli, key.name, &mut found);
        assert!(!found.is_empty(), "{} is no option", key.name);
    }
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgstream-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// copy: the cluster's `repo` is what it copies from (`--from` answers to `repo`), its `to` and
/// `to-passphrase-file` where to.
#[test]
fn a_cluster_section_supplies_copy_from_repo_and_to() {
    let file = r#"
[cluster.main]
repo = "/backups/main"
passphrase-file = "/etc/pgstream/main.pass"
to = "s3://offsite/main"
to-passphrase-file = "/etc/pgstream/offsite.pass"
"#;
    let cli = parse(file, Some("main"), &["copy", "--wal"]);
    let Command::Copy(c) = cli.command else {
        panic!()
    };
    assert_eq!(c.from.to_string(), "/backups/main");
    assert_eq!(c.to.to_string(), "s3://offsite/main");
    assert_eq!(
        c.to_passphrase_file,
        Some(PathBuf::from("/etc/pgstream/offsite.pass"))
    );
    assert!(c.wal);
    let cli = parse(file, Some("main"), &["copy", "--to", "/elsewhere"]);
    let Command::Copy(c) = cli.command else {
        panic!()
    };
    assert_eq!(c.to.to_string(), "/elsewhere");
}
