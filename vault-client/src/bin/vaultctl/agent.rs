//! `vaultctl agent`: auto-auth and render secret templates into files.

/// Arguments of `vaultctl agent`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) async fn run(_args: Args, _env: &crate::common::Env) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not implemented yet")
}
