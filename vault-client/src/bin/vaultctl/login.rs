//! `vaultctl login [-method=M] [-path=P] [K=V...]`: authenticate and store
//! the token in the token helper file (`~/.vault-token`, mode 0600), as
//! Vault's CLI does. Later commands use it when `VAULT_TOKEN` is unset.

use clap::Args;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::common::{Env, store_token};
use crate::input::{Values, parse_data, secret_arg};
use crate::output::{Outcome, Wiped, auth_rows, print_field, render, table, warnings};

/// `vaultctl login`.
#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// Auth method: token (default), approle, userpass, jwt, kubernetes, or
    /// any other method whose login takes KEY=VALUE data.
    #[arg(long, default_value = "token")]
    method: String,
    /// Mount path of the method under auth/ (default: the method's name).
    #[arg(long)]
    path: Option<String>,
    /// Do not store the token in ~/.vault-token.
    #[arg(long)]
    no_store: bool,
    /// Print only the token (not stored).
    #[arg(long)]
    token_only: bool,
    /// Print only this field of the answer (e.g. token; not stored).
    #[arg(long)]
    field: Option<String>,
    /// Login data: approle `role_id=... secret_id=...`; userpass
    /// `username=... [password=...] [totp=...]`; jwt/kubernetes `role=... jwt=...`;
    /// token: the token itself (or `token=...`; typed hidden when omitted).
    /// Values: `K=V`, `K=@FILE`, `K=-` (stdin).
    #[arg(value_name = "TOKEN | KEY=VALUE")]
    data: Vec<String>,
}

/// The login request: (API path, body).
fn login_request(method: &str, mount: &str, mut data: Map<String, Value>) -> anyhow::Result<(String, Value)> {
    match method {
        // The user name goes in the path (Vault's userpass and ldap).
        "userpass" | "ldap" => {
            let user = match data.remove("username") {
                Some(Value::String(u)) if !u.is_empty() => u,
                _ => anyhow::bail!("{method} login needs username=NAME"),
            };
            if !data.contains_key("password") {
                let pw = secret_arg(None, "Password")?;
                data.insert("password".into(), pw.as_str().into());
            }
            Ok((format!("auth/{mount}/login/{user}"), Value::Object(data)))
        }
        "kubernetes" if !data.contains_key("jwt") => {
            let path = "/var/run/secrets/kubernetes.io/serviceaccount/token";
            let jwt = Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("no jwt=... given and cannot read {path}: {e}"))?,
            );
            data.insert("jwt".into(), jwt.trim().into());
            Ok((format!("auth/{mount}/login"), Value::Object(data)))
        }
        _ => Ok((format!("auth/{mount}/login"), Value::Object(data))),
    }
}

pub(crate) async fn run(a: LoginArgs, env: &Env) -> anyhow::Result<Outcome> {
    let fmt = env.format;
    let method = a.method.to_ascii_lowercase();
    let mount = a.path.as_deref().unwrap_or(&method).trim_matches('/');
    let mount = mount.strip_prefix("auth/").unwrap_or(mount).trim_matches('/').to_string();
    let mut o = Outcome::default();
    let resp = Wiped(if method == "token" {
        let given = match a.data.as_slice() {
            [] => None,
            [t] => Some(t.strip_prefix("token=").unwrap_or(t).to_string()),
            _ => anyhow::bail!("token login takes one argument: the token"),
        };
        let token = secret_arg(given.as_deref(), "Token")?;
        let c = env.builder_without_token()?.token(token.as_str()).build()?;
        let v = c.logical().read("auth/token/lookup-self").await.map_err(|e| refused(e, None))?.unwrap_or(Value::Null);
        token_auth(&token, &v)
    } else {
        let data = parse_data(&a.data, Values::Strings)?;
        let (path, body) = login_request(&method, &mount, data)?;
        let c = env.builder_without_token()?.build()?;
        c.logical().write(&path, &body).await.map_err(|e| refused(e, Some(&mount)))?.unwrap_or(Value::Null)
    });
    warnings(&mut o, &resp);
    let token = resp
        .get("auth")
        .and_then(|a| a.get("client_token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| Zeroizing::new(t.to_string()))
        .ok_or_else(|| anyhow::anyhow!("the server's answer holds no token"))?;
    if a.token_only {
        o.line(&token);
        return Ok(o);
    }
    if let Some(f) = &a.field {
        print_field(&mut o, &resp, f)?;
        return Ok(o);
    }
    let stored = if a.no_store { None } else { Some(store_token(&token)?) };
    if stored.is_some() && std::env::var("VAULT_TOKEN").is_ok_and(|t| !t.trim().is_empty()) {
        o.stderr.push_str(
            "WARNING! VAULT_TOKEN is set: it takes precedence over the token stored by this login; unset it to use the new token.\n",
        );
    }
    render(&mut o, fmt, &*resp, |out| {
        use std::fmt::Write as _;
        match &stored {
            Some(p) => writeln!(
                out,
                "Success! You are now authenticated. The token is stored in {} and\n\
                 future vaultctl commands use it (unless VAULT_TOKEN is set).\n",
                p.display()
            )?,
            None => writeln!(out, "Success! You are now authenticated. The token was not stored.\n")?,
        }
        let rows = match resp.get("auth") {
            Some(Value::Object(auth)) => auth_rows(auth),
            _ => Vec::new(),
        };
        table(out, &rows)
    })?;
    Ok(o)
}

/// A failed login. A 403 here is not "no token" (a login sends none): it
/// is a bad token, or no auth method at that path.
fn refused(e: vault_client::Error, mount: Option<&str>) -> anyhow::Error {
    match (e.status(), mount) {
        (Some(403), None) => anyhow::anyhow!("login refused: {e} (the token is not valid)"),
        (Some(403), Some(m)) => anyhow::anyhow!("login refused: {e} (is an auth method enabled at auth/{m}/?)"),
        _ => e.into(),
    }
}

/// A token login's answer in the shape of a login (`auth` block) from the
/// token's `lookup-self` data.
fn token_auth(token: &str, lookup: &Value) -> Value {
    let d = lookup.get("data").cloned().unwrap_or(Value::Null);
    let policies = d.get("policies").cloned().unwrap_or(Value::Null);
    json!({
        "auth": {
            "client_token": token,
            "accessor": d.get("accessor").cloned().unwrap_or(Value::Null),
            "lease_duration": d.get("ttl").cloned().unwrap_or(Value::Null),
            "renewable": d.get("renewable").cloned().unwrap_or(Value::Null),
            "policies": policies.clone(),
            "token_policies": policies,
            "identity_policies": d.get("identity_policies").cloned().unwrap_or(Value::Null),
            "metadata": d.get("meta").cloned().unwrap_or(Value::Null),
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!(),
        }
    }

    #[test]
    fn login_paths() {
        let (p, b) = login_request("approle", "approle", map(json!({"role_id": "r", "secret_id": "s"}))).unwrap();
        assert_eq!((p.as_str(), b), ("auth/approle/login", json!({"role_id": "r", "secret_id": "s"})));
        let (p, b) =
            login_request("userpass", "people", map(json!({"username": "ann", "password": "pw", "totp": "123456"})))
                .unwrap();
        assert_eq!((p.as_str(), b), ("auth/people/login/ann", json!({"password": "pw", "totp": "123456"})));
        assert!(login_request("userpass", "userpass", map(json!({"password": "pw"}))).is_err());
        let (p, _) = login_request("jwt", "jwt", map(json!({"role": "r", "jwt": "x"}))).unwrap();
        assert_eq!(p, "auth/jwt/login");
    }

    #[test]
    fn token_login_shape() {
        let v = token_auth("hvs.x", &json!({"data": {"accessor": "a", "ttl": 0, "policies": ["root"]}}));
        assert_eq!(v["auth"]["client_token"], "hvs.x");
        assert_eq!(v["auth"]["token_policies"], json!(["root"]));
    }
}
