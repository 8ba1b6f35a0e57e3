//! What every command shares: the global options, turned into a client.
//! (Owned by the CLI structure; other command modules only use it.)

use clap::ValueEnum;
use vault_client::{Client, ClientBuilder};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Tables and messages for people.
    #[value(alias = "table")]
    Human,
    /// JSON for programs.
    Json,
}

/// The global options every command gets.
#[derive(Debug)]
#[allow(dead_code)] // until every command module uses it
pub(crate) struct Env {
    /// `--address`, overriding `VAULT_ADDR`.
    pub(crate) address: Option<String>,
    /// `--format`.
    pub(crate) format: Format,
}

#[allow(dead_code)]
impl Env {
    /// A client builder from the environment (`VAULT_ADDR`, `VAULT_TOKEN`,
    /// `VAULT_CACERT`, ...) and the global options.
    pub(crate) fn builder(&self) -> anyhow::Result<ClientBuilder> {
        let mut b = ClientBuilder::from_env()?;
        if let Some(addr) = &self.address {
            b = b.address(addr.as_str());
        }
        Ok(b)
    }

    /// [`Env::builder`], built.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        Ok(self.builder()?.build()?)
    }
}
