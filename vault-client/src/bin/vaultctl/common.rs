//! What every command shares: the global options, turned into a client,
//! and the token helper file (`~/.vault-token`, as Vault's CLI).
//! (Owned by the CLI structure; other command modules only use it.)

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::ValueEnum;
use vault_client::{Client, ClientBuilder};
use zeroize::Zeroizing;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Tables and messages for people.
    #[value(name = "table", alias = "human")]
    Human,
    /// JSON for programs.
    Json,
    /// YAML for programs.
    Yaml,
}

/// The global options every command gets.
#[derive(Debug)]
pub(crate) struct Env {
    /// `--address`, overriding `VAULT_ADDR`.
    pub(crate) address: Option<String>,
    /// `--format`.
    pub(crate) format: Format,
}

/// Where the token the client sends came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenSource {
    /// `VAULT_TOKEN`.
    EnvVar,
    /// The token helper file.
    File(PathBuf),
    /// No token at all.
    None,
}

impl Env {
    /// A client builder from the environment (`VAULT_ADDR`, `VAULT_TOKEN`,
    /// `VAULT_CACERT`, ...) and the global options. Without `VAULT_TOKEN`,
    /// the token stored by `vaultctl login` in `~/.vault-token` is used, as
    /// Vault's CLI does.
    pub(crate) fn builder(&self) -> anyhow::Result<ClientBuilder> {
        let mut b = ClientBuilder::from_env()?;
        if let Some(addr) = &self.address {
            b = b.address(addr.as_str());
        }
        if !env_token_set()
            && let Some(path) = token_file_path()
            && let Some(token) = read_token_file(&path)?
        {
            b = b.token(token.as_str());
        }
        Ok(b)
    }

    /// A client builder like [`Env::builder`] but without any token (for
    /// logins: a stale stored token must not get in the way).
    pub(crate) fn builder_without_token(&self) -> anyhow::Result<ClientBuilder> {
        let mut b = ClientBuilder::from_vars(|name| match name {
            "VAULT_TOKEN" => None,
            other => std::env::var(other).ok(),
        })?;
        if let Some(addr) = &self.address {
            b = b.address(addr.as_str());
        }
        Ok(b)
    }

    /// [`Env::builder`], built.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        Ok(self.builder()?.build()?)
    }

    /// Where [`Env::builder`] takes the token from.
    pub(crate) fn token_source(&self) -> TokenSource {
        if env_token_set() {
            return TokenSource::EnvVar;
        }
        match token_file_path() {
            Some(p) if read_token_file(&p).ok().flatten().is_some() => TokenSource::File(p),
            _ => TokenSource::None,
        }
    }
}

/// Whether `VAULT_TOKEN` holds a token (empty counts as unset, as in the library).
fn env_token_set() -> bool {
    std::env::var("VAULT_TOKEN").is_ok_and(|t| !t.trim().is_empty())
}

/// `$HOME/.vault-token`, Vault's token helper file.
pub(crate) fn token_file_path() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".vault-token"))
}

/// The token in the helper file; `None` if there is no file or it is empty.
pub(crate) fn read_token_file(path: &Path) -> anyhow::Result<Option<Zeroizing<String>>> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let s = Zeroizing::new(s);
            let t = s.trim();
            Ok((!t.is_empty()).then(|| Zeroizing::new(t.to_string())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read the token file {}: {e}", path.display())),
    }
}

/// Store `token` in the helper file: mode 0600 from the start (a temporary
/// file in the same directory, renamed over the old one, so a reader never
/// sees a partial token and the file is never world-readable).
pub(crate) fn store_token(token: &str) -> anyhow::Result<PathBuf> {
    let path = token_file_path().context("cannot store the token: HOME is not set (use -no-store)")?;
    store_token_at(&path, token)?;
    Ok(path)
}

fn store_token_at(path: &Path, token: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("cannot store the token: HOME has no parent")?;
    // tempfile creates the file with mode 0600.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(token.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write the token file in {}", dir.display()))?;
    tmp.persist(path).map_err(|e| anyhow::anyhow!("cannot write the token file {}: {}", path.display(), e.error))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn token_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".vault-token");
        assert!(read_token_file(&p).unwrap().is_none());
        std::fs::write(&p, "  hvs.abc\n").unwrap();
        assert_eq!(read_token_file(&p).unwrap().unwrap().as_str(), "hvs.abc");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_token_file(&p).unwrap().is_none());
    }

    #[test]
    fn stored_token_is_private_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".vault-token");
        std::fs::write(&p, "old-token-that-is-longer").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        store_token_at(&p, "hvs.new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "hvs.new");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
