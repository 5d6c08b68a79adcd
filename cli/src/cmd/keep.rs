//! `pgstream keep`: pin a backup so that `expire` never deletes it, or unpin it.

use std::time::SystemTime;

use anyhow::Context as _;
use backup_core::expire::{self, PinOutcome};
use clap::Args;

use crate::args::RepoArgs;
use crate::exit::classified;

#[derive(Args, Debug)]
pub struct KeepArgs {
    #[command(flatten)]
    pub repo: RepoArgs,

    /// The backup: its id (see `pgstream list`) or `latest`.
    #[arg(value_name = "ID")]
    pub id: String,

    /// Remove the pin instead: expire may then delete the backup by its rules.
    #[arg(long)]
    pub unpin: bool,

    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: KeepArgs) -> anyhow::Result<()> {
    let repo = super::open_repo(&args.repo)?;
    let (id, unpin) = (args.id.clone(), args.unpin);
    let (id, outcome) =
        tokio::task::spawn_blocking(move || expire::keep(&repo, &id, unpin, SystemTime::now()))
            .await
            .context("the keep task failed")?
            .map_err(|e| {
                classified(
                    super::expire::failure(&e),
                    anyhow::Error::new(e).context(format!("keep in {}", args.repo.repo)),
                )
            })?;
    let (pinned, changed, pinned_time) = match &outcome {
        PinOutcome::Pinned(p) => (true, true, Some(p.pinned_time.clone())),
        PinOutcome::AlreadyPinned(p) => (true, false, Some(p.pinned_time.clone())),
        PinOutcome::Unpinned => (false, true, None),
        PinOutcome::NotPinned => (false, false, None),
    };
    if args.json {
        let json = serde_json::json!({
            "id": id,
            "pinned": pinned,
            "changed": changed,
            "pinned_time": pinned_time,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    match outcome {
        PinOutcome::Pinned(_) => println!(
            "pinned backup {id}: expire never deletes it, nor the WAL it needs (unpin with \
             `pgstream keep --unpin {id}`)"
        ),
        PinOutcome::AlreadyPinned(p) => {
            println!("backup {id} is already pinned (since {})", p.pinned_time)
        }
        PinOutcome::Unpinned => {
            println!("unpinned backup {id}: expire may delete it by its rules again")
        }
        PinOutcome::NotPinned => println!("backup {id} was not pinned; nothing changed"),
    }
    Ok(())
}
