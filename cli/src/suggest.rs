//! Commands of other backup tools typed at pgstream: name the pgstream command that does that
//! job instead of a bare "unrecognized subcommand" (or clap's guess by spelling, which for
//! `info` is `init`).

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// Other tools' command names, and what to run here.
const OTHER_TOOLS: &[(&str, &str)] = &[
    (
        "info",
        "pgBackRest's `info` is `pgstream list` here (backups, WAL, recoverable windows), or \
         `pgstream status` for health checks",
    ),
    (
        "backup",
        "pgBackRest's and Barman's `backup` is `pgstream base` here",
    ),
    (
        "backup-push",
        "WAL-G's `backup-push` is `pgstream base` here",
    ),
    (
        "backup-list",
        "WAL-G's `backup-list` is `pgstream list` here",
    ),
    (
        "backup-fetch",
        "WAL-G's `backup-fetch` is `pgstream restore` here",
    ),
    (
        "list-backups",
        "Barman's `list-backups` is `pgstream list` here",
    ),
    (
        "list-backup",
        "Barman's `list-backup` is `pgstream list` here",
    ),
    (
        "show-backup",
        "Barman's `show-backup` is `pgstream list` here",
    ),
    ("recover", "Barman's `recover` is `pgstream restore` here"),
    (
        "stanza-create",
        "a repository is created with `pgstream init`",
    ),
    (
        "archive-get",
        "pgBackRest's `archive-get` is `pgstream wal-fetch` here",
    ),
    ("get-wal", "Barman's `get-wal` is `pgstream wal-fetch` here"),
    (
        "wal-push",
        "WAL-G's `wal-push` is `pgstream archive-push` here",
    ),
    ("delete", "old backups are deleted with `pgstream expire`"),
];

/// What to run instead of `name`, when another tool has a command of that name.
pub fn instead_of(name: &str) -> Option<&'static str> {
    OTHER_TOOLS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, tip)| *tip)
}

/// Adds the pgstream command to an "unrecognized subcommand" error for another tool's command.
pub fn other_tools(mut e: clap::Error) -> clap::Error {
    if e.kind() != ErrorKind::InvalidSubcommand {
        return e;
    }
    let Some(ContextValue::String(name)) = e.get(ContextKind::InvalidSubcommand) else {
        return e;
    };
    let Some(tip) = instead_of(name) else {
        return e;
    };
    let command = tip
        .split('`')
        .filter(|part| part.starts_with("pgstream "))
        .map(|part| part.trim_start_matches("pgstream ").to_string())
        .next();
    // Replace clap's guess by spelling with the command that does the job.
    if let Some(c) = command {
        e.insert(
            ContextKind::SuggestedSubcommand,
            ContextValue::Strings(vec![c]),
        );
    }
    e.insert(
        ContextKind::Suggested,
        ContextValue::StyledStrs(vec![tip.into()]),
    );
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn error_for(word: &str) -> String {
        let e = crate::args::Cli::command()
            .try_get_matches_from(["pgstream", word])
            .unwrap_err();
        other_tools(e).render().to_string()
    }

    #[test]
    fn pgbackrest_info_and_backup_suggest_the_pgstream_commands() {
        let info = error_for("info");
        assert!(info.contains("unrecognized subcommand 'info'"), "{info}");
        assert!(info.contains("pgstream list"), "{info}");
        assert!(!info.contains("'init'"), "{info}");
        let backup = error_for("backup");
        assert!(backup.contains("pgstream base"), "{backup}");
        // A typo of a pgstream command keeps clap's suggestion.
        let typo = error_for("lsit");
        assert!(typo.contains("'list'"), "{typo}");
    }

    #[test]
    fn every_suggested_command_exists() {
        let cli = crate::args::Cli::command();
        for (_, tip) in OTHER_TOOLS {
            for part in tip.split('`').filter(|p| p.starts_with("pgstream ")) {
                let name = part.trim_start_matches("pgstream ");
                assert!(
                    cli.find_subcommand(name).is_some(),
                    "{name} is not a command"
                );
            }
        }
    }
}
