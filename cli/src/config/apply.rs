//! Turning the file's settings into the defaults of the parser's options.

use clap::{Arg, ArgAction, Command};

use super::{ConfigError, Entry, FileValue, Loaded};

/// Checks every entry of the file (all sections) with the parser of each option it sets, then
/// makes the entries that apply the defaults of those options.
pub fn apply(root: Command, loaded: &Loaded) -> Result<Command, ConfigError> {
    for entry in &loaded.all_entries {
        check(&root, entry, &loaded.selection.path)?;
    }
    Ok(set_defaults(root, &loaded.entries))
}

/// Every (command, option) the key names, at any depth.
pub fn options_named<'a>(cmd: &'a Command, long: &str, out: &mut Vec<(&'a Command, &'a Arg)>) {
    for arg in cmd.get_arguments() {
        if answers_to(arg, long) {
            out.push((cmd, arg));
        }
    }
    for sub in cmd.get_subcommands() {
        options_named(sub, long, out);
    }
}

fn check(root: &Command, entry: &Entry, path: &std::path::Path) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError {
        path: path.to_path_buf(),
        line: Some(entry.line),
        key: Some(entry.key.to_string()),
        message,
    };
    let values = entry.value.as_args();
    extra_check(entry.key, &values).map_err(err)?;
    if matches!(entry.value, FileValue::Bool(_)) {
        return Ok(()); // the TOML type was the check
    }
    let mut options = Vec::new();
    options_named(root, entry.key, &mut options);
    for (_, arg) in options {
        parse_with(arg, &values).map_err(|e| err(clap_message(&e)))?;
    }
    Ok(())
}

/// Parses `values` with a copy of `arg` alone in a command: its own value parser and possible
/// values, without the relations to other options of its command.
fn parse_with(arg: &Arg, values: &[String]) -> Result<(), clap::Error> {
    let Some(long) = arg.get_long() else {
        return Ok(());
    };
    let probe = arg
        .clone()
        .required(false)
        .global(false)
        .requires(clap::builder::Resettable::Reset)
        .conflicts_with(clap::builder::Resettable::Reset)
        .group(clap::builder::Resettable::Reset)
        .env(None)
        .default_value(None);
    let mut argv = vec!["pgstream".to_string()];
    for v in values {
        argv.push(format!("--{long}={v}"));
    }
    Command::new("pgstream")
        .no_binary_name(false)
        .arg(probe)
        .try_get_matches_from(argv)
        .map(|_| ())
}

/// Checks for options whose value the command itself parses later (plain strings to clap).
fn extra_check(key: &str, values: &[String]) -> Result<(), String> {
    let Some(v) = values.first() else {
        return Ok(());
    };
    match key {
        "source" => {
            let c = pgwire_repl::Config::parse(v).map_err(|e| e.to_string())?;
            if c.password.is_some() || c.sslpassword.is_some() {
                return Err(format!(
                    "secrets are never written in the configuration file: {}",
                    super::keys::secret_advice("password").expect("listed")
                ));
            }
            Ok(())
        }
        "compression" => v.parse::<backup_core::Compression>().map(|_| ()),
        "max-rate" => crate::cmd::parse_rate(v).map(|_| ()),
        "server-compression" => crate::cmd::parse_server_compression(v).map(|_| ()),
        _ => Ok(()),
    }
}

/// clap's error on one line (with its possible values or tip), without the usage lines.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    text.lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `arg` is the option `--long`, by its name or an alias (copy's `--from` is also
/// `--repo`, so that a cluster's `repo` is what it copies from).
fn answers_to(arg: &Arg, long: &str) -> bool {
    arg.get_long() == Some(long)
        || arg
            .get_all_aliases()
            .is_some_and(|aliases| aliases.contains(&long))
}

fn set_defaults(mut cmd: Command, entries: &[Entry]) -> Command {
    let ids: Vec<(clap::Id, &Entry)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let e = entries.iter().find(|e| answers_to(a, e.key))?;
            Some((a.get_id().clone(), e))
        })
        .collect();
    // A required group (expire's --keep-last/--keep-within) is satisfied by the file too.
    let groups: Vec<clap::Id> = cmd
        .get_groups()
        .filter(|g| g.is_required_set() && g.get_args().any(|a| ids.iter().any(|(i, _)| i == a)))
        .map(|g| g.get_id().clone())
        .collect();
    for g in groups {
        cmd = cmd.mut_group(g, |g| g.required(false));
    }
    for (id, entry) in ids {
        cmd = cmd.mut_arg(id, |a| with_default(a, &entry.value));
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |sub| set_defaults(sub, entries));
    }
    cmd
}

fn with_default(arg: Arg, value: &FileValue) -> Arg {
    match value {
        // A flag the file leaves off is the flag's own default.
        FileValue::Bool(false) if matches!(arg.get_action(), ArgAction::SetTrue) => arg,
        FileValue::List(list) => arg.default_values(list.clone()).required(false),
        other => {
            let v = other.as_args().pop().unwrap_or_default();
            arg.default_value(v).required(false)
        }
    }
}
