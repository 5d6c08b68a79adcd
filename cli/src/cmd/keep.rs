//! `pgstream keep` (being written: wiring only).

use clap::Args;

use crate::args::RepoArgs;

#[derive(Args, Debug)]
pub struct KeepArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
}

pub async fn run(args: KeepArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "`pgstream keep` is not available yet (repository {})",
        args.repo.repo.display()
    )
}
