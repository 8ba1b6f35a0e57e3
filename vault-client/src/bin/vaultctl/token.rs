//! `vaultctl token create|lookup|renew|revoke|capabilities`: the token
//! store (`auth/token/*`) and `sys/capabilities*`.
//!
//! A token given as an argument may be `-` (read from stdin) to keep it out
//! of shell history and process listings.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use crate::common::Env;
use crate::input::{comma_list, parse_pair, secret_arg};
use crate::output::{Outcome, Wiped, message, print_field, render, response_table, warnings};

/// `vaultctl token SUBCOMMAND`.
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCmd {
    /// Create a token (child of the current one, or -orphan); prints it.
    Create(CreateArgs),
    /// Show a token's properties (default: the current token).
    Lookup {
        /// The token (`-`: stdin), or with -accessor its accessor.
        token: Option<String>,
        /// TOKEN is an accessor.
        #[arg(long)]
        accessor: bool,
    },
    /// Renew a token (default: the current token).
    Renew {
        /// The token (`-`: stdin), or with -accessor its accessor.
        token: Option<String>,
        /// TOKEN is an accessor.
        #[arg(long)]
        accessor: bool,
        /// Requested extension (e.g. 1h).
        #[arg(long)]
        increment: Option<String>,
    },
    /// Revoke a token and its children.
    Revoke {
        /// The token (`-`: stdin), or with -accessor its accessor.
        #[arg(required_unless_present = "self_")]
        token: Option<String>,
        /// TOKEN is an accessor.
        #[arg(long)]
        accessor: bool,
        /// Revoke the current token.
        #[arg(long = "self", id = "self_", conflicts_with_all = ["token", "accessor"])]
        self_: bool,
        /// `orphan`: revoke the token only, its children become orphans.
        #[arg(long)]
        mode: Option<String>,
    },
    /// A token's capabilities on PATH (default: the current token's).
    Capabilities {
        /// `[TOKEN] PATH`.
        #[arg(num_args = 1..=2, value_name = "TOKEN] [PATH")]
        args: Vec<String>,
    },
}

/// `token create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Policy to attach (repeatable, or comma-separated).
    #[arg(long = "policy")]
    policies: Vec<String>,
    /// Time to live (e.g. 1h).
    #[arg(long)]
    ttl: Option<String>,
    /// Hard limit past which the token cannot be renewed.
    #[arg(long)]
    explicit_max_ttl: Option<String>,
    /// Periodic token: renewable forever, by this period.
    #[arg(long)]
    period: Option<String>,
    /// Whether the token may be renewed (default true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    renewable: Option<bool>,
    /// Display name.
    #[arg(long)]
    display_name: Option<String>,
    /// Create a token without a parent.
    #[arg(long)]
    orphan: bool,
    /// Do not attach the default policy.
    #[arg(long)]
    no_default_policy: bool,
    /// Number of uses (0: unlimited).
    #[arg(long)]
    use_limit: Option<u64>,
    /// Metadata KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_pair)]
    metadata: Vec<(String, String)>,
    /// Print only this field (e.g. token).
    #[arg(long)]
    field: Option<String>,
}

fn create_body(a: &CreateArgs) -> Map<String, Value> {
    let mut b = Map::new();
    let policies: Vec<String> = a.policies.iter().flat_map(|p| comma_list(p)).collect();
    if !policies.is_empty() {
        b.insert("policies".into(), policies.into());
    }
    let mut opt = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            b.insert(k.into(), v.as_str().into());
        }
    };
    opt("ttl", &a.ttl);
    opt("explicit_max_ttl", &a.explicit_max_ttl);
    opt("period", &a.period);
    opt("display_name", &a.display_name);
    if let Some(r) = a.renewable {
        b.insert("renewable".into(), r.into());
    }
    if a.no_default_policy {
        b.insert("no_default_policy".into(), true.into());
    }
    if let Some(n) = a.use_limit {
        b.insert("num_uses".into(), n.into());
    }
    if !a.metadata.is_empty() {
        let m: Map<String, Value> = a.metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        b.insert("meta".into(), Value::Object(m));
    }
    b
}

/// The path and body for an operation on the current token (`*-self`), a
/// token, or an accessor.
fn target(op: &str, token: Option<&str>, accessor: bool) -> anyhow::Result<(String, Option<Map<String, Value>>)> {
    match token {
        None if accessor => anyhow::bail!("-accessor needs the accessor as an argument"),
        None => Ok((format!("auth/token/{op}-self"), None)),
        Some(t) => {
            let (path, key) = if accessor {
                (format!("auth/token/{op}-accessor"), "accessor")
            } else {
                (format!("auth/token/{op}"), "token")
            };
            let value = if accessor { zeroize::Zeroizing::new(t.to_string()) } else { secret_arg(Some(t), "Token")? };
            let mut m = Map::new();
            m.insert(key.into(), value.as_str().into());
            Ok((path, Some(m)))
        }
    }
}

pub(crate) async fn run(cmd: TokenCmd, env: &Env) -> anyhow::Result<Outcome> {
    let fmt = env.format;
    let c = env.client()?;
    let mut o = Outcome::default();
    match cmd {
        TokenCmd::Create(a) => {
            let path = if a.orphan { "auth/token/create-orphan" } else { "auth/token/create" };
            let v = Wiped(c.logical().write(path, &Value::Object(create_body(&a))).await?.unwrap_or(Value::Null));
            warnings(&mut o, &v);
            match &a.field {
                Some(f) => print_field(&mut o, &v, f)?,
                None => render(&mut o, fmt, &*v, |out| response_table(out, &v))?,
            }
        }
        TokenCmd::Lookup { token, accessor } => {
            let v = match target("lookup", token.as_deref(), accessor)? {
                (path, None) => c.logical().read(&path).await?,
                (path, Some(body)) => c.logical().write(&path, &Value::Object(body)).await?,
            }
            .unwrap_or(Value::Null);
            warnings(&mut o, &v);
            render(&mut o, fmt, &v, |out| response_table(out, &v))?;
        }
        TokenCmd::Renew { token, accessor, increment } => {
            let (path, body) = target("renew", token.as_deref(), accessor)?;
            let mut body = body.unwrap_or_default();
            if let Some(i) = increment {
                body.insert("increment".into(), i.into());
            }
            let v = c.logical().write(&path, &Value::Object(body)).await?.unwrap_or(Value::Null);
            warnings(&mut o, &v);
            render(&mut o, fmt, &v, |out| response_table(out, &v))?;
        }
        TokenCmd::Revoke { token, accessor, self_, mode } => {
            let (path, body) = match mode.as_deref() {
                _ if self_ => ("auth/token/revoke-self".to_string(), Map::new()),
                Some("orphan") => {
                    if accessor {
                        anyhow::bail!("-mode=orphan takes a token, not an accessor");
                    }
                    let (_, body) = target("revoke", token.as_deref(), false)?;
                    ("auth/token/revoke-orphan".to_string(), body.unwrap_or_default())
                }
                None | Some("") => {
                    let (p, b) = target("revoke", token.as_deref(), accessor)?;
                    (p, b.unwrap_or_default())
                }
                Some(m) => anyhow::bail!("unknown -mode {m:?} (use orphan)"),
            };
            c.logical().write(&path, &Value::Object(body)).await?;
            message(&mut o, fmt, "Success! Revoked token (if it existed)");
        }
        TokenCmd::Capabilities { args } => {
            let (path, body, p) = match args.as_slice() {
                [p] => ("sys/capabilities-self", json!({ "paths": [p] }), p.clone()),
                [t, p] => {
                    let t = secret_arg(Some(t), "Token")?;
                    ("sys/capabilities", json!({ "token": t.as_str(), "paths": [p] }), p.clone())
                }
                _ => anyhow::bail!("expected [TOKEN] PATH"),
            };
            let v = c.logical().write(path, &body).await?.unwrap_or(Value::Null);
            let data = v.get("data").unwrap_or(&v);
            let caps: Vec<String> = data
                .get(&p)
                .or_else(|| data.get("capabilities"))
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default();
            render(&mut o, fmt, &caps, |out| {
                out.push_str(&caps.join(", "));
                out.push('\n');
                Ok(())
            })?;
        }
    }
    Ok(o)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn create_bodies() {
        let a = CreateArgs {
            policies: vec!["a,b".into(), "c".into()],
            ttl: Some("1h".into()),
            explicit_max_ttl: None,
            period: None,
            renewable: Some(false),
            display_name: None,
            orphan: false,
            no_default_policy: true,
            use_limit: Some(3),
            metadata: vec![("k".into(), "v".into())],
            field: None,
        };
        assert_eq!(
            Value::Object(create_body(&a)),
            json!({"policies": ["a", "b", "c"], "ttl": "1h", "renewable": false, "no_default_policy": true,
                   "num_uses": 3, "meta": {"k": "v"}})
        );
    }

    #[test]
    fn targets() {
        assert_eq!(target("lookup", None, false).unwrap(), ("auth/token/lookup-self".to_string(), None));
        let (p, b) = target("lookup", Some("acc"), true).unwrap();
        assert_eq!((p.as_str(), Value::Object(b.unwrap())), ("auth/token/lookup-accessor", json!({"accessor": "acc"})));
        let (p, b) = target("renew", Some("hvs.x"), false).unwrap();
        assert_eq!((p.as_str(), Value::Object(b.unwrap())), ("auth/token/renew", json!({"token": "hvs.x"})));
        assert!(target("lookup", None, true).is_err());
    }
}
