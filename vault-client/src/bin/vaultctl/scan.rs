//! `vaultctl scan`: find hard-coded secrets in files (names and places, never values).

/// Arguments of `vaultctl scan`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) async fn run(_args: Args, _env: &crate::common::Env) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not implemented yet")
}
