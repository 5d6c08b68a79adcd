//! `pgstream demo` (being written: wiring only).

use clap::Args;

use crate::args::RepoArgs;

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "`pgstream demo` is not available yet (repository {})",
        args.repo.repo.display()
    )
}
