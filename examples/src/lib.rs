//! What the examples share: logging in the way a deployed service does.
//!
//! A service gets an AppRole role ID and secret ID as two files (Docker
//! secrets, a Kubernetes Secret volume), named by `VAULT_ROLE_ID_FILE` and
//! `VAULT_SECRET_ID_FILE`; without them it uses `VAULT_TOKEN` (development).

use vault_client::{Client, KeepAlive, Login};

/// A client from the environment (`VAULT_ADDR`, `VAULT_CACERT`, ...), logged
/// in, with its token kept renewed (and re-obtained with the same login when
/// it can no longer be renewed) for as long as the returned handle lives.
pub async fn connect() -> anyhow::Result<(Client, Option<KeepAlive>)> {
    let client = Client::from_env()?;
    match (std::env::var_os("VAULT_ROLE_ID_FILE"), std::env::var_os("VAULT_SECRET_ID_FILE")) {
        (Some(role_id), Some(secret_id)) => {
            let login = Login::approle_files(role_id, secret_id);
            client.login(&login).await?;
            let renewal = client.keep_alive(Some(login));
            Ok((client, Some(renewal)))
        }
        _ if client.has_token() => Ok((client, None)),
        _ => anyhow::bail!("set VAULT_ROLE_ID_FILE and VAULT_SECRET_ID_FILE (AppRole), or VAULT_TOKEN"),
    }
}
