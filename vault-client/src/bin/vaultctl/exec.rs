//! `vaultctl exec`: start a command with secrets in its environment.

/// Arguments of `vaultctl exec`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) async fn run(_args: Args, _env: &crate::common::Env) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not implemented yet")
}
