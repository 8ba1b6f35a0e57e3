//! `vaultctl import`: move hard-coded secrets into KV v2 and leave references.

/// Arguments of `vaultctl import`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) async fn run(_args: Args, _env: &crate::common::Env) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not implemented yet")
}
