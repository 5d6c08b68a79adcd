//! `pgstream drill` (being written: wiring only).

use clap::Args;

use crate::args::RepoArgs;

#[derive(Args, Debug)]
pub struct DrillArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
}

pub async fn run(args: DrillArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "`pgstream drill` is not available yet (repository {})",
        args.repo.repo.display()
    )
}
