//! `pgstream expire`: delete old backups, and only the WAL no kept backup needs.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use backup_core::expire::{self, ExpireError, ExpireOptions, ExpireReport, PinError, Policy};
use clap::{ArgGroup, Args};

use crate::args::RepoArgs;
use crate::exit::{classified, Failure};

#[derive(Args, Debug)]
#[command(
    after_help = "Pinned backups (pgstream keep) and the newest backup are always kept. \
WAL is deleted only when no kept backup needs it, for its consistency or for point-in-time \
recovery from it to now along any timeline that descends from it (timeline history files are \
followed, and never deleted). While a base backup is running no WAL is deleted. \
Exit codes: 0 done, 2 usage, 5 not a repository / no backup, 6 a damaged record, pin or \
history file (nothing deleted), 7 I/O."
)]
#[command(group(
    ArgGroup::new("policy")
        .required(true)
        .multiple(true)
        .args(["keep_last", "keep_within"])
))]
pub struct ExpireArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// Keep the newest N complete backups (N >= 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_last: Option<u32>,

    /// Keep every backup that ended within DURATION (7d, 36h, 1h 30m) and the newest one that
    /// ended before it, so that every moment of the duration stays recoverable. With
    /// --keep-last too, a backup either rule keeps is kept.
    #[arg(long, value_name = "DURATION", value_parser = parse_within)]
    pub keep_within: Option<Duration>,

    /// Print exactly what a real run would delete (backups, WAL ranges per timeline, bytes),
    /// and delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_within(s: &str) -> Result<Duration, String> {
    let d = super::parse_duration(s)?;
    if d.is_zero() {
        return Err("must be longer than 0 (for example 7d or 36h)".into());
    }
    Ok(d)
}

pub async fn run(args: ExpireArgs) -> anyhow::Result<()> {
    let repo = super::open_repo(&args.repo)?;
    let options = ExpireOptions {
        policy: Policy {
            keep_last: args.keep_last,
            keep_within: args.keep_within,
        },
        dry_run: args.dry_run,
        now: SystemTime::now(),
    };
    let report = tokio::task::spawn_blocking(move || expire::expire(&repo, &options))
        .await
        .context("the expire task failed")?
        .map_err(|e| {
            let failure = failure(&e);
            classified(
                failure,
                anyhow::Error::new(e).context(format!("expire in {}", args.repo.repo)),
            )
        })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(())
}

/// The exit code of each refusal (docs/cli.md, `pgstream expire`).
pub(super) fn failure(e: &ExpireError) -> Failure {
    match e {
        ExpireError::Repo(r) => crate::exit::classify_repo(r),
        ExpireError::NoBackups => Failure::Repository,
        ExpireError::Catalog(c) | ExpireError::Record { source: c, .. } => {
            crate::exit::classify_catalog(c)
        }
        ExpireError::History { .. } => Failure::Verification,
        ExpireError::Pin(PinError::Damaged { .. })
        | ExpireError::UnreadablePin(PinError::Damaged { .. }) => Failure::Verification,
        ExpireError::Pin(PinError::Store(s)) | ExpireError::UnreadablePin(PinError::Store(s)) => {
            crate::exit::classify_store(s)
        }
        ExpireError::Store(s) => crate::exit::classify_store(s),
        ExpireError::Policy(_) => Failure::Usage,
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn print_human(r: &ExpireReport) {
    let human = super::human_bytes;
    let (verb, would) = if r.dry_run {
        ("would delete", "would finish deleting")
    } else {
        ("deleted", "finished deleting")
    };
    if r.dry_run {
        println!("dry run: nothing is deleted");
    }
    for l in &r.leftovers {
        println!("{would} backups/{l} (left unfinished by a run that died)");
    }
    for k in &r.kept {
        let needed = format!("needed by incremental {}", k.needed_by.join(", "));
        let reasons: Vec<&str> = k
            .reasons
            .iter()
            .map(|r| match r {
                backup_core::expire::KeepReason::Chain => needed.as_str(),
                other => other.as_str(),
            })
            .collect();
        println!(
            "keep    backup {}  ended {}  ({})",
            k.id,
            k.end_time,
            reasons.join(", ")
        );
    }
    for b in &r.expired {
        println!(
            "delete  backup {}  ended {}  {}",
            b.id,
            b.end_time,
            human(b.bytes)
        );
    }
    for w in &r.wal {
        let span = if w.first == w.last {
            w.first.clone()
        } else {
            format!("{} to {}", w.first, w.last)
        };
        println!(
            "delete  WAL timeline {}: {span} ({}, {})",
            w.timeline,
            plural(w.files as usize, "file", "files"),
            human(w.bytes)
        );
    }
    if let Some(note) = &r.wal_note {
        println!("note: {note}");
    }
    if !r.unknown_timelines.is_empty() {
        let list: Vec<String> = r.unknown_timelines.iter().map(u32::to_string).collect();
        println!(
            "note: timeline(s) {} have WAL but no history file in the archive; all their WAL is kept",
            list.join(", ")
        );
    }
    if let Some(tli) = r.newest_timeline_kept {
        println!(
            "note: timeline {tli} is the newest and no kept backup reaches it; all its WAL is \
             kept (a server may be writing it: take a backup of it)"
        );
    }
    if r.is_empty() {
        println!(
            "nothing to expire: {} kept",
            plural(r.kept.len(), "backup", "backups")
        );
        return;
    }
    println!(
        "{verb} {} and {}, {}",
        plural(r.expired.len(), "backup", "backups"),
        plural(r.wal_files as usize, "WAL file", "WAL files"),
        human(r.total_bytes)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_durations_are_refused() {
        assert!(parse_within("0s").is_err());
        assert_eq!(parse_within("36h").unwrap(), Duration::from_secs(36 * 3600));
        assert!(parse_within("soon").is_err());
    }

    #[test]
    fn refusals_have_their_documented_exit_codes() {
        assert_eq!(failure(&ExpireError::NoBackups), Failure::Repository);
        assert_eq!(failure(&ExpireError::Policy("x".into())), Failure::Usage);
        assert_eq!(
            failure(&ExpireError::History {
                timeline: pgwire_repl::TimelineId(2),
                reason: "x".into()
            }),
            Failure::Verification
        );
    }
}
