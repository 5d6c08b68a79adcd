//! What ships for running pgstream as a service, checked without a server:
//! - the systemd units, installed by `scripts/install-service.sh` into a scratch root, pass
//!   `systemd-analyze verify` (and a broken unit does not, so the check checks);
//! - the cron example reproduces the runbook's schedule, and each of its command lines, with the
//!   example configuration file, is one pgstream accepts;
//! - the README says how to get the binary, and separates running pgstream from testing it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{ok, pgstream, pgstream_bin, s};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `systemd-analyze`, or a panic saying what to install (never a silent skip).
fn systemd_analyze() -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join("systemd-analyze");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "systemd-analyze is missing: install Debian's systemd package (apt-get install systemd; \
         `just test-deps` does it)"
    );
}

const INSTANCES: &[&str] = &[
    "pgstream-receive-wal@main.service",
    "pgstream-base@main.service",
    "pgstream-base@main.timer",
    "pgstream-expire@main.service",
    "pgstream-expire@main.timer",
    "pgstream-drill@main.service",
    "pgstream-drill@main.timer",
    "pgstream-verify@main.service",
    "pgstream-verify@main.timer",
    "pgstream-switch-wal@main.service",
    "pgstream-switch-wal@main.timer",
    "pgstream-status@main.service",
    "pgstream-status@main.timer",
    "pgstream-copy@main.service",
    "pgstream-copy@main.timer",
];

fn verify(units: &Path, names: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(systemd_analyze());
    cmd.arg("verify");
    for n in names {
        cmd.arg(units.join(n));
    }
    cmd.output().expect("running systemd-analyze verify")
}

#[test]
fn unit_files_installed_by_the_install_script_pass_systemd_analyze_verify() {
    let scratch = integration::scratch_dir();
    let root = scratch.path();
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/install-service.sh"))
        .env("PGSTREAM_BIN", pgstream_bin())
        .env("PREFIX", root.join("usr"))
        .env("SYSCONFDIR", root.join("etc"))
        .env("UNITDIR", root.join("units"))
        .env("PGSTREAM_NO_SYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install-service.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let units = root.join("units");
    let installed: Vec<String> = std::fs::read_dir(&units)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for n in INSTANCES {
        let template = n.replace("@main", "@");
        assert!(installed.contains(&template), "{template} not installed");
    }
    // The units run the installed binary (systemd-analyze checks that it is executable).
    let service = std::fs::read_to_string(units.join("pgstream-receive-wal@.service")).unwrap();
    let exe = root.join("usr/bin/pgstream");
    assert!(
        service.contains(&format!("ExecStart={} --cluster %i receive-wal", s(&exe))),
        "{service}"
    );
    for needed in [
        "Restart=on-failure",
        "RestartPreventExitStatus=2 4 5",
        "NoNewPrivileges=yes",
        "ProtectSystem=",
        "User=pgstream",
    ] {
        assert!(service.contains(needed), "receive-wal@ lacks {needed}");
    }
    let out = verify(&units, INSTANCES);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The example configuration is installed, valid, and kept on a second run.
    let config = root.join("etc/pgstream/pgstream.toml");
    ok(
        pgstream(
            &[
                "--config",
                s(&config),
                "--cluster",
                "main",
                "config",
                "show",
            ],
            None,
        ),
        "config show of the installed example",
    );
    std::fs::write(&config, "# mine\n").unwrap();
    let again = Command::new("bash")
        .arg(repo_root().join("scripts/install-service.sh"))
        .env("PGSTREAM_BIN", pgstream_bin())
        .env("PREFIX", root.join("usr"))
        .env("SYSCONFDIR", root.join("etc"))
        .env("UNITDIR", root.join("units"))
        .env("PGSTREAM_NO_SYSTEM", "1")
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");

    // The check checks: a unit with an unknown restart policy fails.
    let broken = units.join("pgstream-broken@.service");
    std::fs::write(
        &broken,
        service.replace("Restart=on-failure", "Restart=sometimes"),
    )
    .unwrap();
    let out = verify(&units, &["pgstream-broken@main.service"]);
    assert!(
        !out.status.success() || !out.stderr.is_empty(),
        "systemd-analyze verify accepted Restart=sometimes"
    );
}

#[test]
fn cron_example_reproduces_the_runbook_schedule_and_its_commands_parse() {
    let root = repo_root();
    let cron = std::fs::read_to_string(root.join("packaging/cron/pgstream.cron")).unwrap();
    let config = root.join("packaging/pgstream.toml");
    let jobs: Vec<(String, Vec<String>)> = cron
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.contains('='))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let (schedule, rest) = if fields[0].starts_with('@') {
                (fields[0].to_string(), &fields[1..])
            } else {
                (fields[..5].join(" "), &fields[5..])
            };
            assert_eq!(
                rest[0], "pgstream",
                "cron jobs run as the pgstream user: {l}"
            );
            // The pgstream command line: after the last `pgstream` word, up to a redirection.
            let at = rest.iter().rposition(|w| *w == "pgstream").unwrap();
            let args: Vec<String> = rest[at + 1..]
                .iter()
                .take_while(|w| !w.starts_with(">>") && !w.starts_with("2>"))
                .map(|w| w.to_string())
                .collect();
            (schedule, args)
        })
        .collect();
    let job = |sub: &str| {
        jobs.iter()
            .filter(|(_, a)| a.get(2).map(String::as_str) == Some(sub))
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>()
    };
    // The runbook: base Sundays 02:00, WAL switch hourly, retention daily.
    assert_eq!(job("base"), ["0 2 * * 0"]);
    assert_eq!(job("switch-wal"), ["0 * * * *"]);
    assert_eq!(job("expire").len(), 1);
    assert!(job("receive-wal").contains(&"@reboot"));
    assert_eq!(job("drill").len(), 1);
    assert_eq!(job("verify").len(), 1);
    // The runbook's monthly offsite copy, the 1st at 04:00.
    assert_eq!(job("copy"), ["0 4 1 * *"]);
    for (schedule, args) in &jobs {
        let mut argv = vec!["--config".to_string(), s(&config).to_string()];
        argv.extend(args.iter().cloned());
        argv.push("--help".to_string());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let run = pgstream(&argv, None);
        assert_eq!(
            run.code, 0,
            "{schedule} {args:?} is not a command pgstream accepts: {run:?}"
        );
    }
}

#[test]
fn readme_says_how_to_get_the_binary_and_separates_runtime_from_test_needs() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for needed in [
        "## Installing",
        "cargo install --locked --path cli",
        "target/release/pgstream",
        "scripts/install-service.sh",
        "### What running pgstream needs",
        "### What the tests need",
        "docs/operations.md",
    ] {
        assert!(readme.contains(needed), "README.md lacks {needed:?}");
    }
    let cli = std::fs::read_to_string(repo_root().join("cli/Cargo.toml")).unwrap();
    assert!(
        cli.contains("name = \"pgstream\""),
        "the binary is called pgstream"
    );
}
