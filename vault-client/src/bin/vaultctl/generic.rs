//! `vaultctl read|write|list|delete PATH`: any API path, like Vault's
//! generic commands. Answers show their `auth` block (a login or a token
//! creation prints the token) as well as their `data`.

use clap::Args;
use serde_json::Value;

use crate::common::Env;
use crate::input::{Values, parse_data};
use crate::output::{Outcome, Wiped, has_content, keys, message, print_field, render, response_table, warnings};

/// `vaultctl read`.
#[derive(Debug, Args)]
pub(crate) struct ReadArgs {
    /// API path, e.g. secret/app or auth/token/lookup-self.
    path: String,
    /// Print only this field (from data, or token/token_accessor/... from auth).
    #[arg(long)]
    field: Option<String>,
}

/// `vaultctl write`.
#[derive(Debug, Args)]
pub(crate) struct WriteArgs {
    /// API path, e.g. auth/approle/login.
    path: String,
    /// Data: KEY=VALUE, KEY=@FILE, KEY=- (stdin), or `-` alone for a JSON object on stdin.
    #[arg(value_name = "KEY=VALUE")]
    data: Vec<String>,
    /// Write even without data (an empty request body).
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// Print only this field of the answer (e.g. token for a login).
    #[arg(long)]
    field: Option<String>,
}

/// `vaultctl list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// API path, e.g. secret/ or auth/approle/role.
    path: String,
}

/// `vaultctl delete`.
#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// API path.
    path: String,
}

pub(crate) async fn read(a: ReadArgs, env: &Env) -> anyhow::Result<Outcome> {
    let c = env.client()?;
    let Some(v) = c.logical().read(&a.path).await?.map(Wiped) else {
        return Ok(Outcome::no_data(&a.path));
    };
    let mut o = Outcome::default();
    warnings(&mut o, &v);
    match &a.field {
        Some(f) => print_field(&mut o, &v, f)?,
        None => render(&mut o, env.format, &*v, |out| response_table(out, &v))?,
    }
    Ok(o)
}

pub(crate) async fn write(a: WriteArgs, env: &Env) -> anyhow::Result<Outcome> {
    if a.data.is_empty() && !a.force {
        anyhow::bail!(
            "no data to write: give KEY=VALUE arguments, `-` for a JSON object on stdin, or -f to write none"
        );
    }
    let body = parse_data(&a.data, Values::Strings)?;
    let c = env.client()?;
    let resp = c.logical().write(&a.path, &Value::Object(body)).await?.map(Wiped);
    let mut o = Outcome::default();
    if let Some(v) = &resp {
        warnings(&mut o, v);
    }
    match (&a.field, resp) {
        (Some(f), Some(v)) => print_field(&mut o, &v, f)?,
        (Some(f), None) => anyhow::bail!("field {f:?} not present: the server answered without a body"),
        (None, Some(v)) if has_content(&v) => render(&mut o, env.format, &*v, |out| response_table(out, &v))?,
        (None, Some(v)) if env.format != crate::common::Format::Human => {
            render(&mut o, env.format, &*v, |_| Ok(()))?;
        }
        (None, _) => message(&mut o, env.format, &format!("Success! Data written to: {}", a.path)),
    }
    Ok(o)
}

pub(crate) async fn list(a: ListArgs, env: &Env) -> anyhow::Result<Outcome> {
    let c = env.client()?;
    let ks = c.logical().list(&a.path).await?;
    if ks.is_empty() {
        return Ok(Outcome::no_data(&format!("{}/", a.path.trim_end_matches('/'))));
    }
    let mut o = Outcome::default();
    keys(&mut o, env.format, &ks)?;
    Ok(o)
}

pub(crate) async fn delete(a: DeleteArgs, env: &Env) -> anyhow::Result<Outcome> {
    let c = env.client()?;
    let mut o = Outcome::default();
    if let Some(v) = c.logical().delete(&a.path).await? {
        warnings(&mut o, &v);
    }
    message(&mut o, env.format, &format!("Success! Data deleted (if it existed) at: {}", a.path));
    Ok(o)
}
