//! `pgstream config show`: every key with its resolved value and where the value comes from.

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _};

use super::apply::options_named;
use super::keys::KEYS;
use super::Loaded;

/// Shown for secrets.
const MASK: &str = "********";

/// One resolved setting.
pub struct Resolved {
    pub key: &'static str,
    pub value: Option<String>,
    pub from: String,
}

/// Resolves every key as a command run now would: flags (global ones: those given with
/// `config show`), then environment variables, then the file, then the built-in default.
pub fn resolve(matches: &ArgMatches, loaded: &Loaded) -> Vec<Resolved> {
    let pristine = crate::args::Cli::command();
    let mut out = Vec::new();
    for key in KEYS {
        let mut options = Vec::new();
        options_named(&pristine, key.name, &mut options);
        let Some(&(cmd, arg)) = options.first() else {
            continue;
        };
        let is_global = std::ptr::eq(cmd, &pristine);
        let id = arg.get_id().as_str();
        let mut resolved = Resolved {
            key: key.name,
            value: None,
            from: "not set".to_string(),
        };
        if is_global && matches.value_source(id) == Some(ValueSource::CommandLine) {
            resolved.value = matches
                .get_raw(id)
                .and_then(|mut v| v.next())
                .map(|v| v.to_string_lossy().into_owned());
            resolved.from = format!("flag --{}", key.name);
        } else if let Some((env, v)) = arg
            .get_env()
            .and_then(|e| std::env::var_os(e).map(|v| (e, v)))
            .filter(|(_, v)| !v.is_empty())
        {
            resolved.value = Some(v.to_string_lossy().into_owned());
            resolved.from = format!("environment {}", env.to_string_lossy());
        } else if let Some(e) = loaded.get(key.name) {
            resolved.value = Some(e.value.as_args().join(", "));
            resolved.from = format!(
                "{} line {} ({})",
                loaded.selection.path.display(),
                e.line,
                e.section()
            );
        } else if let Some(d) = arg.get_default_values().first() {
            resolved.value = Some(d.to_string_lossy().into_owned());
            resolved.from = "default".to_string();
        }
        if key.name == "source" {
            resolved.value = resolved.value.map(|v| mask_conninfo(&v));
        }
        out.push(resolved);
    }
    let passphrase_file = out
        .iter()
        .find(|r| r.key == "passphrase-file")
        .and_then(|r| r.value.clone());
    let passphrase = match std::env::var_os("PGSTREAM_PASSPHRASE").filter(|v| !v.is_empty()) {
        _ if passphrase_file.is_some() => Resolved {
            key: "passphrase",
            value: Some(MASK.to_string()),
            from: "read from passphrase-file".to_string(),
        },
        Some(_) => Resolved {
            key: "passphrase",
            value: Some(MASK.to_string()),
            from: "environment PGSTREAM_PASSPHRASE".to_string(),
        },
        None => Resolved {
            key: "passphrase",
            value: None,
            from: "not set (needed for an encrypted repository)".to_string(),
        },
    };
    let at = out
        .iter()
        .position(|r| r.key == "passphrase-file")
        .map_or(out.len(), |i| i + 1);
    out.insert(at, passphrase);
    out
}

/// A conninfo with any password replaced (one may come from PGSTREAM_SOURCE; commands refuse
/// it, but it is never printed).
fn mask_conninfo(v: &str) -> String {
    match pgwire_repl::Config::parse(v) {
        Ok(c) if c.password.is_some() || c.sslpassword.is_some() => c.redacted(),
        Ok(_) => v.to_string(),
        Err(_) => MASK.to_string(),
    }
}

/// The report `config show` prints.
pub fn render(matches: &ArgMatches, loaded: &Loaded) -> String {
    let sel = &loaded.selection;
    let mut text = format!(
        "configuration file: {} ({}{})\n",
        sel.path.display(),
        sel.path_origin,
        if loaded.file_read { "" } else { "; not found" }
    );
    match &sel.cluster {
        Some((name, origin)) => text.push_str(&format!("cluster: {name} ({origin})\n")),
        None => text
            .push_str("cluster: none (top-level settings only; choose one with --cluster NAME)\n"),
    }
    text.push('\n');
    for r in resolve(matches, loaded) {
        let value = r.value.map_or_else(|| "-".to_string(), |v| quote(&v));
        text.push_str(&format!("{:<20} {:<42} {}\n", r.key, value, r.from));
    }
    text
}

fn quote(v: &str) -> String {
    if v == MASK || v.parse::<i64>().is_ok() || v == "true" || v == "false" {
        v.to_string()
    } else {
        format!("{v:?}")
    }
}
