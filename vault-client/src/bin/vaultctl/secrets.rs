//! `vaultctl secrets enable|disable|list|tune` (and the older `mounts`):
//! the secrets engine mount table (`sys/mounts`).

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use crate::common::Env;
use crate::input::parse_pair;
use crate::output::{Outcome, cell, columns, message, render, warnings};

/// `vaultctl secrets SUBCOMMAND`.
#[derive(Debug, Subcommand)]
pub(crate) enum SecretsCmd {
    /// Mount a secrets engine: `secrets enable -path=secret kv-v2`.
    Enable(EnableArgs),
    /// Unmount PATH, deleting all its data.
    Disable {
        /// Mount path.
        path: String,
    },
    /// List the mounted secrets engines.
    List {
        /// Also show options and TTLs.
        #[arg(long)]
        detailed: bool,
    },
    /// Change a mount's settings.
    Tune(TuneArgs),
}

/// `secrets enable`.
#[derive(Debug, Args)]
pub(crate) struct EnableArgs {
    /// Engine type: kv, kv-v2 (KV version 2), transit, ...
    #[arg(value_name = "TYPE")]
    kind: String,
    /// Mount path (default: the type).
    #[arg(long)]
    path: Option<String>,
    /// Human-friendly description.
    #[arg(long)]
    description: Option<String>,
    /// KV version (1 or 2); `kv-v2` is `kv` with version 2.
    #[arg(long)]
    version: Option<u8>,
    /// Engine option as KEY=VALUE (repeatable).
    #[arg(long = "options", alias = "option", value_name = "KEY=VALUE", value_parser = parse_pair)]
    options: Vec<(String, String)>,
    /// Default lease TTL (e.g. 1h).
    #[arg(long)]
    default_lease_ttl: Option<String>,
    /// Maximum lease TTL (e.g. 24h).
    #[arg(long)]
    max_lease_ttl: Option<String>,
}

/// `secrets tune`.
#[derive(Debug, Args)]
pub(crate) struct TuneArgs {
    /// Mount path.
    path: String,
    /// New description.
    #[arg(long)]
    description: Option<String>,
    /// Default lease TTL (e.g. 1h).
    #[arg(long)]
    default_lease_ttl: Option<String>,
    /// Maximum lease TTL (e.g. 24h).
    #[arg(long)]
    max_lease_ttl: Option<String>,
    /// Engine option as KEY=VALUE (repeatable).
    #[arg(long = "options", alias = "option", value_name = "KEY=VALUE", value_parser = parse_pair)]
    options: Vec<(String, String)>,
}

/// The older `vaultctl mounts ...` syntax, kept as an alias.
#[derive(Debug, Subcommand)]
pub(crate) enum MountsCmd {
    /// List the mounted secrets engines.
    List,
    /// Mount a secrets engine at PATH.
    Enable {
        /// Mount path, e.g. secret.
        path: String,
        /// Engine type, e.g. kv.
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
        /// Human-friendly description.
        #[arg(long)]
        description: Option<String>,
        /// Engine option as key=value (repeatable), e.g. version=2.
        #[arg(long = "option", value_name = "KEY=VALUE", value_parser = parse_pair)]
        options: Vec<(String, String)>,
    },
    /// Unmount PATH, deleting all its data.
    Disable {
        /// Mount path.
        path: String,
    },
}

impl From<MountsCmd> for SecretsCmd {
    fn from(m: MountsCmd) -> SecretsCmd {
        match m {
            MountsCmd::List => SecretsCmd::List { detailed: false },
            MountsCmd::Enable { path, kind, description, options } => SecretsCmd::Enable(EnableArgs {
                kind,
                path: Some(path),
                description,
                version: None,
                options,
                default_lease_ttl: None,
                max_lease_ttl: None,
            }),
            MountsCmd::Disable { path } => SecretsCmd::Disable { path },
        }
    }
}

/// The body of `POST sys/mounts/{path}` for `secrets enable`: `kv-v2` is
/// `kv` with `options.version = "2"` (Vault's CLI does the same).
fn enable_body(a: &EnableArgs) -> anyhow::Result<(String, Value)> {
    let mut options: Map<String, Value> =
        a.options.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let kind = match a.kind.as_str() {
        "kv-v2" => {
            options.insert("version".into(), "2".into());
            "kv"
        }
        "kv-v1" => {
            options.insert("version".into(), "1".into());
            "kv"
        }
        other => other,
    };
    if let Some(v) = a.version {
        if !matches!(v, 1 | 2) {
            anyhow::bail!("-version must be 1 or 2");
        }
        options.insert("version".into(), v.to_string().into());
    }
    let path = a.path.clone().unwrap_or_else(|| a.kind.clone());
    let path = path.trim_matches('/').to_string();
    if path.is_empty() {
        anyhow::bail!("empty mount path");
    }
    let mut body = json!({ "type": kind });
    if let Some(d) = &a.description {
        body["description"] = d.as_str().into();
    }
    if !options.is_empty() {
        body["options"] = Value::Object(options);
    }
    let mut config = Map::new();
    if let Some(t) = &a.default_lease_ttl {
        config.insert("default_lease_ttl".into(), t.as_str().into());
    }
    if let Some(t) = &a.max_lease_ttl {
        config.insert("max_lease_ttl".into(), t.as_str().into());
    }
    if !config.is_empty() {
        body["config"] = Value::Object(config);
    }
    Ok((path, body))
}

pub(crate) async fn run(cmd: SecretsCmd, env: &Env) -> anyhow::Result<Outcome> {
    let fmt = env.format;
    let c = env.client()?;
    let mut o = Outcome::default();
    match cmd {
        SecretsCmd::Enable(a) => {
            let (path, body) = enable_body(&a)?;
            if let Some(v) = c.logical().write(&format!("sys/mounts/{path}"), &body).await? {
                warnings(&mut o, &v);
            }
            message(&mut o, fmt, &format!("Success! Enabled the {} secrets engine at: {path}/", a.kind));
        }
        SecretsCmd::Disable { path } => {
            c.sys().unmount(&path).await?;
            let p = path.trim_matches('/');
            message(&mut o, fmt, &format!("Success! Disabled the secrets engine (if it existed) at: {p}/"));
        }
        SecretsCmd::List { detailed } => {
            let m = c.sys().mounts().await?;
            render(&mut o, fmt, &m, |out| mount_table(out, &m, detailed))?;
        }
        SecretsCmd::Tune(a) => {
            let path = a.path.trim_matches('/');
            let mut body = Map::new();
            if let Some(d) = a.description {
                body.insert("description".into(), d.into());
            }
            if let Some(t) = a.default_lease_ttl {
                body.insert("default_lease_ttl".into(), t.into());
            }
            if let Some(t) = a.max_lease_ttl {
                body.insert("max_lease_ttl".into(), t.into());
            }
            if !a.options.is_empty() {
                let opts: Map<String, Value> = a.options.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
                body.insert("options".into(), Value::Object(opts));
            }
            if body.is_empty() {
                anyhow::bail!("nothing to tune: give -description, -default-lease-ttl, -max-lease-ttl or -options");
            }
            if let Some(v) = c.logical().write(&format!("sys/mounts/{path}/tune"), &body).await? {
                warnings(&mut o, &v);
            }
            message(&mut o, fmt, &format!("Success! Tuned the secrets engine at: {path}/"));
        }
    }
    Ok(o)
}

/// A mount table (secrets engines or auth methods) for people.
pub(crate) fn mount_table(out: &mut String, m: &Map<String, Value>, detailed: bool) -> std::fmt::Result {
    let rows: Vec<Vec<String>> = m
        .iter()
        .filter(|(_, e)| e.is_object())
        .map(|(path, e)| {
            let f = |k: &str| e.get(k).map(cell).unwrap_or_default();
            let mut row = vec![path.clone(), f("type"), f("accessor")];
            if detailed {
                let opts = e.get("options").filter(|o| !o.is_null()).map(cell).unwrap_or_default();
                let cfg = |k: &str| e.get("config").and_then(|c| c.get(k)).map(cell).unwrap_or_default();
                row.extend([opts, cfg("default_lease_ttl"), cfg("max_lease_ttl")]);
            }
            row.push(f("description"));
            row
        })
        .collect();
    if detailed {
        columns(out, &["Path", "Type", "Accessor", "Options", "Default TTL", "Max TTL", "Description"], &rows)
    } else {
        columns(out, &["Path", "Type", "Accessor", "Description"], &rows)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn args(kind: &str, path: Option<&str>) -> EnableArgs {
        EnableArgs {
            kind: kind.into(),
            path: path.map(str::to_string),
            description: None,
            version: None,
            options: vec![],
            default_lease_ttl: None,
            max_lease_ttl: None,
        }
    }

    #[test]
    fn kv_v2_is_kv_version_2() {
        let (path, body) = enable_body(&args("kv-v2", Some("secret"))).unwrap();
        assert_eq!(path, "secret");
        assert_eq!(body, json!({"type": "kv", "options": {"version": "2"}}));
        let mut a = args("kv", None);
        a.version = Some(2);
        a.default_lease_ttl = Some("1h".into());
        let (path, body) = enable_body(&a).unwrap();
        assert_eq!(path, "kv");
        assert_eq!(body, json!({"type": "kv", "options": {"version": "2"}, "config": {"default_lease_ttl": "1h"}}));
        let (path, body) = enable_body(&args("transit", None)).unwrap();
        assert_eq!((path.as_str(), body), ("transit", json!({"type": "transit"})));
        let mut a = args("kv", None);
        a.version = Some(3);
        assert!(enable_body(&a).is_err());
    }
}
