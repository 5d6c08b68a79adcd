//! `pgstream expire` (being written: wiring only).

use clap::Args;

use crate::args::RepoArgs;

#[derive(Args, Debug)]
pub struct ExpireArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
}

pub async fn run(args: ExpireArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "`pgstream expire` is not available yet (repository {})",
        args.repo.repo.display()
    )
}
