//! `vaultctl auth enable|disable|list`: the auth method table (`sys/auth`).

use clap::Subcommand;
use serde_json::{Map, Value, json};

use crate::common::Env;
use crate::output::{Outcome, message, render, warnings};
use crate::secrets::mount_table;

/// `vaultctl auth SUBCOMMAND`.
#[derive(Debug, Subcommand)]
pub(crate) enum AuthCmd {
    /// Enable an auth method: `auth enable approle`, `auth enable -path=people userpass`.
    Enable {
        /// Method type: approle, userpass, jwt, kubernetes, ...
        #[arg(value_name = "TYPE")]
        kind: String,
        /// Mount path under auth/ (default: the type).
        #[arg(long)]
        path: Option<String>,
        /// Human-friendly description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Disable the auth method at PATH (revoking its tokens).
    Disable {
        /// Mount path under auth/.
        path: String,
    },
    /// List the enabled auth methods.
    List {
        /// Also show options and TTLs.
        #[arg(long)]
        detailed: bool,
    },
}

/// The mount path under `auth/`: `auth/approle/` and `approle` are the same.
fn auth_path(p: &str) -> anyhow::Result<String> {
    let p = p.trim_start_matches('/');
    let p = p.strip_prefix("auth/").unwrap_or(p).trim_matches('/');
    if p.is_empty() {
        anyhow::bail!("empty auth method path");
    }
    Ok(p.to_string())
}

pub(crate) async fn run(cmd: AuthCmd, env: &Env) -> anyhow::Result<Outcome> {
    let fmt = env.format;
    let c = env.client()?;
    let mut o = Outcome::default();
    match cmd {
        AuthCmd::Enable { kind, path, description } => {
            let path = auth_path(path.as_deref().unwrap_or(&kind))?;
            let mut body = json!({ "type": kind });
            if let Some(d) = description {
                body["description"] = d.into();
            }
            if let Some(v) = c.logical().write(&format!("sys/auth/{path}"), &body).await? {
                warnings(&mut o, &v);
            }
            message(&mut o, fmt, &format!("Success! Enabled {kind} auth method at: {path}/"));
        }
        AuthCmd::Disable { path } => {
            let path = auth_path(&path)?;
            c.logical().delete(&format!("sys/auth/{path}")).await?;
            message(&mut o, fmt, &format!("Success! Disabled the auth method (if it existed) at: {path}/"));
        }
        AuthCmd::List { detailed } => {
            let v = c.logical().read("sys/auth").await?.unwrap_or(Value::Null);
            let table = auth_table(v);
            render(&mut o, fmt, &table, |out| mount_table(out, &table, detailed))?;
        }
    }
    Ok(o)
}

/// The method table of a `sys/auth` answer: its `data`, or (older shape)
/// the top-level entries that look like mounts.
fn auth_table(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(mut m) => match m.remove("data") {
            Some(Value::Object(d)) => d,
            _ => m.into_iter().filter(|(k, e)| k.ends_with('/') && e.is_object()).collect(),
        },
        _ => Map::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_tables() {
        assert_eq!(auth_path("auth/approle/").unwrap(), "approle");
        assert_eq!(auth_path("people").unwrap(), "people");
        assert!(auth_path("auth/").is_err());
        let t = auth_table(json!({"data": {"token/": {"type": "token"}}, "request_id": "x"}));
        assert_eq!(t.keys().collect::<Vec<_>>(), vec!["token/"]);
        let t = auth_table(json!({"token/": {"type": "token"}, "request_id": "x"}));
        assert_eq!(t.keys().collect::<Vec<_>>(), vec!["token/"]);
    }
}
