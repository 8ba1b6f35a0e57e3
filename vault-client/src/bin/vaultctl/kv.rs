//! `vaultctl kv ...`: KV secrets (version 2, and version 1 where it makes
//! sense), as Vault's `vault kv`, plus this server's rotation policies
//! (`kv rotation`, see docs/kv-rotation.md).
//!
//! The mount is found like Vault's CLI does, with `sys/internal/ui/mounts/
//! {path}` (which also tells the KV version); when the token may not read
//! that, the first path segment is the mount and KV version 2 is assumed.
//! `-mount=M` names the mount explicitly (then PATH is inside it).

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use crate::common::{Env, Format};
use crate::input::{Values, comma_list, json_object, parse_data, parse_pair, read_stdin};
use crate::output::{
    Outcome, Wiped, cell, columns, message, print_field, raw, render, response_table, section, table, warnings,
};
use vault_client::Client;

/// A secret's location: `secret/app`, or `-mount=secret app`.
#[derive(Debug, Args)]
pub(crate) struct Loc {
    /// The mount (then PATH is relative to it).
    #[arg(long)]
    mount: Option<String>,
    /// The secret's path, e.g. secret/app.
    path: String,
}

/// `vaultctl kv SUBCOMMAND`.
#[derive(Debug, Subcommand)]
pub(crate) enum KvCmd {
    /// Read a secret (exit code 2 if there is none).
    Get {
        #[command(flatten)]
        loc: Loc,
        /// Read this version (default: the latest).
        #[arg(long)]
        version: Option<u64>,
        /// Print only this field's value.
        #[arg(long)]
        field: Option<String>,
    },
    /// Write a new version: KEY=VALUE (strings), KEY=@FILE, KEY=-, or `-` alone for a JSON object on stdin.
    Put {
        #[command(flatten)]
        loc: Loc,
        /// Data.
        #[arg(value_name = "KEY=VALUE", required = true)]
        data: Vec<String>,
        /// Parse each VALUE as JSON (numbers, booleans, lists, objects; strings quoted).
        #[arg(long)]
        json: bool,
        /// Check-and-set: write only if the current version is this (0: only if absent).
        #[arg(long)]
        cas: Option<u64>,
        /// Print only this field of the answer (e.g. version).
        #[arg(long)]
        field: Option<String>,
    },
    /// Change some fields of the latest version (a new version; JSON merge-patch: `null` removes a field).
    Patch {
        #[command(flatten)]
        loc: Loc,
        /// Data, as for put.
        #[arg(value_name = "KEY=VALUE", required = true)]
        data: Vec<String>,
        /// Parse each VALUE as JSON.
        #[arg(long)]
        json: bool,
        /// Print only this field of the answer (e.g. version).
        #[arg(long)]
        field: Option<String>,
    },
    /// List the secrets under a path (exit code 2 if there are none).
    List {
        #[command(flatten)]
        loc: Loc,
    },
    /// Delete the latest version (or -versions=1,2): it can be undeleted.
    Delete {
        #[command(flatten)]
        loc: Loc,
        /// Versions to delete, comma-separated.
        #[arg(long)]
        versions: Option<String>,
    },
    /// Undelete versions.
    Undelete {
        #[command(flatten)]
        loc: Loc,
        /// Versions to undelete, comma-separated.
        #[arg(long, required = true)]
        versions: String,
    },
    /// Destroy versions for good.
    Destroy {
        #[command(flatten)]
        loc: Loc,
        /// Versions to destroy, comma-separated.
        #[arg(long, required = true)]
        versions: String,
    },
    /// A secret's metadata (versions, settings).
    Metadata {
        #[command(subcommand)]
        cmd: MetadataCmd,
    },
    /// Write an older version's data as a new version.
    Rollback {
        #[command(flatten)]
        loc: Loc,
        /// The version to restore.
        #[arg(long, required = true)]
        version: u64,
    },
    /// Rotation policies (extension: the vault writes new values on a schedule).
    Rotation {
        #[command(subcommand)]
        cmd: RotationCmd,
    },
}

/// `kv metadata ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum MetadataCmd {
    /// Show the metadata (exit code 2 if there is none).
    Get {
        #[command(flatten)]
        loc: Loc,
    },
    /// Change the settings.
    Put {
        #[command(flatten)]
        loc: Loc,
        /// Versions to keep (0: the mount's setting).
        #[arg(long)]
        max_versions: Option<u64>,
        /// Require check-and-set on writes.
        #[arg(long)]
        cas_required: Option<bool>,
        /// Delete versions this long after they are written (e.g. 720h; 0s: never).
        #[arg(long)]
        delete_version_after: Option<String>,
        /// Custom metadata KEY=VALUE (repeatable; replaces all of it).
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_pair)]
        custom_metadata: Vec<(String, String)>,
    },
    /// Delete the secret: all versions and the metadata.
    Delete {
        #[command(flatten)]
        loc: Loc,
    },
}

/// `kv rotation ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum RotationCmd {
    /// Set or replace a secret's rotation policy (flags, or `-` for the JSON policy on stdin).
    Set(Box<RotationSet>),
    /// Show the policy and its status (exit code 2 if there is none).
    Get {
        #[command(flatten)]
        loc: Loc,
    },
    /// Remove the policy (the secret and its versions stay).
    Delete {
        #[command(flatten)]
        loc: Loc,
    },
    /// Rotate now.
    Rotate {
        #[command(flatten)]
        loc: Loc,
    },
}

/// `kv rotation set`.
#[derive(Debug, Args)]
pub(crate) struct RotationSet {
    #[command(flatten)]
    loc: Loc,
    /// `-` reads the whole policy as a JSON object from stdin (flags then override).
    #[arg(value_name = "-")]
    stdin: Option<String>,
    /// Time between rotations (e.g. 24h, 90s).
    #[arg(long)]
    period: Option<String>,
    /// Generator: password, bytes or postgresql.
    #[arg(long)]
    generator: Option<String>,
    /// Length (password: characters; bytes: bytes).
    #[arg(long)]
    length: Option<u64>,
    /// Password character classes, comma-separated: lower,upper,digit,symbol.
    #[arg(long)]
    classes: Option<String>,
    /// Bytes encoding: base64, base64url or hex.
    #[arg(long)]
    encoding: Option<String>,
    /// Fields that rotate, comma-separated (default: password).
    #[arg(long)]
    fields: Option<String>,
    /// postgresql: path (in this mount) of the admin connection secret.
    #[arg(long)]
    connection: Option<String>,
    /// postgresql: one or two role names, comma-separated.
    #[arg(long)]
    roles: Option<String>,
    /// postgresql with two roles: how long the previous password keeps working.
    #[arg(long)]
    grace_period: Option<String>,
}

/// A resolved location.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    mount: String,
    path: String,
    v2: bool,
}

impl Target {
    fn api(&self, part: &str) -> String {
        if self.path.is_empty() {
            format!("{}/{part}", self.mount)
        } else {
            format!("{}/{part}/{}", self.mount, self.path)
        }
    }

    fn v1(&self) -> String {
        if self.path.is_empty() { self.mount.clone() } else { format!("{}/{}", self.mount, self.path) }
    }

    fn shown(&self) -> String {
        self.v1()
    }

    fn need_v2(&self, what: &str) -> anyhow::Result<()> {
        if self.v2 { Ok(()) } else { anyhow::bail!("{what} needs KV version 2; {}/ is version 1", self.mount) }
    }
}

/// `(mount, path inside it)` from the mount's answer of `sys/internal/ui/mounts`.
fn split_by_mount(full: &str, mount: &str) -> Option<String> {
    let m = mount.trim_matches('/');
    let f = full.trim_matches('/');
    if f == m {
        return Some(String::new());
    }
    f.strip_prefix(m).and_then(|rest| rest.strip_prefix('/')).map(str::to_string)
}

fn is_v2(info: &Value) -> bool {
    info.get("options").and_then(|o| o.get("version")).map(cell).as_deref() == Some("2")
}

async fn resolve(c: &Client, loc: &Loc) -> anyhow::Result<Target> {
    let path = loc.path.trim_matches('/');
    let probe = match &loc.mount {
        Some(m) => m.trim_matches('/').to_string(),
        None => path.to_string(),
    };
    if probe.is_empty() {
        anyhow::bail!("empty path");
    }
    let info = c.logical().read(&format!("sys/internal/ui/mounts/{probe}")).await.ok().flatten();
    let info = info.as_ref().and_then(|v| v.get("data")).filter(|d| d.is_object());
    if let Some(m) = &loc.mount {
        let v2 = info.is_none_or(is_v2);
        return Ok(Target { mount: m.trim_matches('/').to_string(), path: path.to_string(), v2 });
    }
    if let Some(d) = info
        && let Some(mount) = d.get("path").and_then(Value::as_str)
        && let Some(rest) = split_by_mount(path, mount)
    {
        return Ok(Target { mount: mount.trim_matches('/').to_string(), path: rest, v2: is_v2(d) });
    }
    // Not allowed to look (or an older server): the first segment, KV v2.
    let (mount, rest) = path.split_once('/').unwrap_or((path, ""));
    Ok(Target { mount: mount.to_string(), path: rest.to_string(), v2: true })
}

fn versions(list: &str) -> anyhow::Result<Vec<u64>> {
    let v: Vec<u64> = comma_list(list)
        .iter()
        .map(|s| s.parse::<u64>().map_err(|_| anyhow::anyhow!("-versions: {s:?} is not a version number")))
        .collect::<anyhow::Result<_>>()?;
    if v.is_empty() {
        anyhow::bail!("-versions: no version given");
    }
    Ok(v)
}

/// RFC 7386 JSON merge patch of `patch` into `target` (`null` removes).
fn merge_patch(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(&k);
            }
            Value::Object(p) => {
                let entry = target.entry(k).or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(t) = entry {
                    merge_patch(t, p);
                }
            }
            other => {
                target.insert(k, other);
            }
        }
    }
}

/// Read the latest version's envelope; `None` if absent or deleted.
async fn read_latest(c: &Client, t: &Target) -> anyhow::Result<Option<Value>> {
    let v = match c.logical().read(&t.api("data")).await {
        Ok(v) => v,
        // A deleted or destroyed version: a 404 without messages (the body
        // carries the version's metadata). A 404 with a message ("no
        // handler for route": nothing mounted there) is reported as is.
        Err(vault_client::Error::Api { status: 404, errors, .. }) if errors.is_empty() => None,
        Err(e) => return Err(e.into()),
    };
    Ok(v.filter(|v| v.get("data").and_then(|d| d.get("data")).is_some_and(Value::is_object)))
}

/// Write `data` as a new version (optionally check-and-set).
async fn put_v2(c: &Client, t: &Target, data: Map<String, Value>, cas: Option<u64>) -> anyhow::Result<Value> {
    let mut body = json!({ "data": data });
    if let Some(n) = cas {
        body["options"] = json!({ "cas": n });
    }
    Ok(c.logical().write(&t.api("data"), &body).await?.unwrap_or(Value::Null))
}

/// The answer of a write (version metadata) for people.
fn written(o: &mut Outcome, fmt: Format, t: &Target, v: &Value, field: Option<&str>) -> anyhow::Result<()> {
    warnings(o, v);
    if let Some(f) = field {
        return print_field(o, v, f);
    }
    render(o, fmt, v, |out| {
        section(out, "Secret Path")?;
        writeln!(out, "{}\n", t.api("data"))?;
        section(out, "Metadata")?;
        response_table(out, v)
    })
}

pub(crate) async fn run(cmd: KvCmd, env: &Env) -> anyhow::Result<Outcome> {
    let fmt = env.format;
    let c = env.client()?;
    let mut o = Outcome::default();
    match cmd {
        KvCmd::Get { loc, version, field } => {
            let t = resolve(&c, &loc).await?;
            let v = if !t.v2 {
                if version.is_some() {
                    anyhow::bail!("-version needs KV version 2; {}/ is version 1", t.mount);
                }
                c.logical().read(&t.v1()).await?
            } else if let Some(n) = version {
                c.kv2(&t.mount).read_version(&t.path, n).await?.map(|s| {
                    json!({"data": {"data": s.data, "metadata": {"version": s.version, "created_time": s.created_time}}})
                })
            } else {
                read_latest(&c, &t).await?
            };
            let Some(v) = v.map(Wiped) else {
                return Ok(Outcome::no_data(&t.shown()));
            };
            warnings(&mut o, &v);
            let data = if t.v2 { v.get("data").and_then(|d| d.get("data")) } else { v.get("data") };
            if let Some(f) = field {
                let value = data
                    .and_then(|d| d.get(&f))
                    .ok_or_else(|| anyhow::anyhow!("field {f:?} not present in secret {}", t.shown()))?;
                o.line(&zeroize::Zeroizing::new(raw(value)));
                return Ok(o);
            }
            render(&mut o, fmt, &*v, |out| {
                if !t.v2 {
                    return response_table(out, &v);
                }
                section(out, "Secret Path")?;
                writeln!(out, "{}\n", t.api("data"))?;
                section(out, "Metadata")?;
                let meta = v.get("data").and_then(|d| d.get("metadata")).cloned().unwrap_or(Value::Null);
                let rows: Vec<(String, String)> = match &meta {
                    Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), cell(v))).collect(),
                    _ => Vec::new(),
                };
                table(out, &rows)?;
                writeln!(out)?;
                section(out, "Data")?;
                let rows: Vec<(String, String)> = match data {
                    Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), cell(v))).collect(),
                    _ => Vec::new(),
                };
                table(out, &rows)
            })?;
        }
        KvCmd::Put { loc, data, json, cas, field } => {
            let t = resolve(&c, &loc).await?;
            let data = parse_data(&data, if json { Values::Json } else { Values::Strings })?;
            if t.v2 {
                let v = put_v2(&c, &t, data, cas).await?;
                written(&mut o, fmt, &t, &v, field.as_deref())?;
            } else {
                if cas.is_some() {
                    anyhow::bail!("-cas needs KV version 2; {}/ is version 1", t.mount);
                }
                c.logical().write(&t.v1(), &Value::Object(data)).await?;
                message(&mut o, fmt, &format!("Success! Data written to: {}", t.v1()));
            }
        }
        KvCmd::Patch { loc, data, json, field } => {
            let t = resolve(&c, &loc).await?;
            t.need_v2("kv patch")?;
            let patch = parse_data(&data, if json { Values::Json } else { Values::Strings })?;
            // Read, merge, write with check-and-set on the version read: a
            // concurrent write makes this fail rather than be lost.
            let Some(cur) = read_latest(&c, &t).await? else {
                return Ok(Outcome::no_data(&t.shown()));
            };
            let d = cur.get("data").cloned().unwrap_or(Value::Null);
            let version = d.get("metadata").and_then(|m| m.get("version")).and_then(Value::as_u64);
            let mut merged = match d.get("data") {
                Some(Value::Object(m)) => m.clone(),
                _ => Map::new(),
            };
            merge_patch(&mut merged, patch);
            let v = put_v2(&c, &t, merged, version).await?;
            written(&mut o, fmt, &t, &v, field.as_deref())?;
        }
        KvCmd::List { loc } => {
            let t = resolve(&c, &loc).await?;
            let p = if t.v2 { t.api("metadata") } else { t.v1() };
            let ks = c.logical().list(&p).await?;
            if ks.is_empty() {
                return Ok(Outcome::no_data(&format!("{}/", t.shown().trim_end_matches('/'))));
            }
            crate::output::keys(&mut o, fmt, &ks)?;
        }
        KvCmd::Delete { loc, versions: vs } => {
            let t = resolve(&c, &loc).await?;
            match vs {
                None if t.v2 => {
                    c.logical().delete(&t.api("data")).await?;
                }
                None => {
                    c.logical().delete(&t.v1()).await?;
                }
                Some(vs) => {
                    t.need_v2("-versions")?;
                    c.logical().write(&t.api("delete"), &json!({ "versions": versions(&vs)? })).await?;
                }
            }
            message(&mut o, fmt, &format!("Success! Data deleted (if it existed) at: {}", t.shown()));
        }
        KvCmd::Undelete { loc, versions: vs } => {
            let t = resolve(&c, &loc).await?;
            t.need_v2("kv undelete")?;
            c.logical().write(&t.api("undelete"), &json!({ "versions": versions(&vs)? })).await?;
            message(&mut o, fmt, &format!("Success! Data written to: {}", t.api("undelete")));
        }
        KvCmd::Destroy { loc, versions: vs } => {
            let t = resolve(&c, &loc).await?;
            t.need_v2("kv destroy")?;
            c.logical().write(&t.api("destroy"), &json!({ "versions": versions(&vs)? })).await?;
            message(&mut o, fmt, &format!("Success! Data written to: {}", t.api("destroy")));
        }
        KvCmd::Metadata { cmd } => metadata(&mut o, fmt, &c, cmd).await?,
        KvCmd::Rollback { loc, version } => {
            let t = resolve(&c, &loc).await?;
            t.need_v2("kv rollback")?;
            let old = c.kv2(&t.mount).read_version(&t.path, version).await?.ok_or_else(|| {
                anyhow::anyhow!("version {version} of {} does not exist or is deleted or destroyed", t.shown())
            })?;
            let meta = c.logical().read(&t.api("metadata")).await?.unwrap_or(Value::Null);
            let current = meta.get("data").and_then(|d| d.get("current_version")).and_then(Value::as_u64);
            let v = put_v2(&c, &t, old.data.clone(), current).await?;
            written(&mut o, fmt, &t, &v, None)?;
        }
        KvCmd::Rotation { cmd } => rotation(&mut o, fmt, &c, cmd).await?,
    }
    Ok(o)
}

async fn metadata(o: &mut Outcome, fmt: Format, c: &Client, cmd: MetadataCmd) -> anyhow::Result<()> {
    match cmd {
        MetadataCmd::Get { loc } => {
            let t = resolve(c, &loc).await?;
            t.need_v2("kv metadata")?;
            let Some(v) = c.logical().read(&t.api("metadata")).await? else {
                *o = Outcome::no_data(&t.api("metadata"));
                return Ok(());
            };
            warnings(o, &v);
            render(o, fmt, &v, |out| metadata_text(out, &t, &v))
        }
        MetadataCmd::Put { loc, max_versions, cas_required, delete_version_after, custom_metadata } => {
            let t = resolve(c, &loc).await?;
            t.need_v2("kv metadata")?;
            let mut body = Map::new();
            if let Some(n) = max_versions {
                body.insert("max_versions".into(), n.into());
            }
            if let Some(b) = cas_required {
                body.insert("cas_required".into(), b.into());
            }
            if let Some(d) = delete_version_after {
                body.insert("delete_version_after".into(), d.into());
            }
            if !custom_metadata.is_empty() {
                let m: Map<String, Value> = custom_metadata.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
                body.insert("custom_metadata".into(), Value::Object(m));
            }
            c.logical().write(&t.api("metadata"), &Value::Object(body)).await?;
            message(o, fmt, &format!("Success! Data written to: {}", t.api("metadata")));
            Ok(())
        }
        MetadataCmd::Delete { loc } => {
            let t = resolve(c, &loc).await?;
            t.need_v2("kv metadata")?;
            c.logical().delete(&t.api("metadata")).await?;
            message(o, fmt, &format!("Success! Data deleted (if it existed) at: {}", t.api("metadata")));
            Ok(())
        }
    }
}

fn metadata_text(out: &mut String, t: &Target, v: &Value) -> std::fmt::Result {
    let d = v.get("data").and_then(Value::as_object).cloned().unwrap_or_default();
    section(out, "Metadata Path")?;
    writeln!(out, "{}\n", t.api("metadata"))?;
    section(out, "Metadata")?;
    let rows: Vec<(String, String)> =
        d.iter().filter(|(k, _)| k.as_str() != "versions").map(|(k, v)| (k.clone(), cell(v))).collect();
    table(out, &rows)?;
    if let Some(Value::Object(vs)) = d.get("versions") {
        writeln!(out)?;
        section(out, "Versions")?;
        let mut rows: Vec<(u64, Vec<String>)> = vs
            .iter()
            .map(|(n, e)| {
                let f = |k: &str| e.get(k).map(cell).unwrap_or_default();
                (n.parse().unwrap_or(0), vec![n.clone(), f("created_time"), f("deletion_time"), f("destroyed")])
            })
            .collect();
        rows.sort_by_key(|(n, _)| *n);
        let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, r)| r).collect();
        columns(out, &["Version", "Created", "Deleted", "Destroyed"], &rows)?;
    }
    Ok(())
}

/// The body of `POST {mount}/rotation/{path}` from `kv rotation set`'s flags
/// over an optional JSON object (stdin).
fn rotation_body(a: &RotationSet, base: Map<String, Value>) -> anyhow::Result<Map<String, Value>> {
    let mut body = base;
    if let Some(p) = &a.period {
        body.insert("period".into(), p.as_str().into());
    }
    let mut generator = match body.remove("generator") {
        Some(Value::Object(g)) => g,
        Some(_) => anyhow::bail!("generator must be a JSON object"),
        None => Map::new(),
    };
    if let Some(g) = &a.generator {
        generator.insert("type".into(), g.as_str().into());
    }
    if !generator.contains_key("type") {
        generator.insert("type".into(), "password".into());
    }
    if let Some(n) = a.length {
        generator.insert("length".into(), n.into());
    }
    if let Some(c) = &a.classes {
        generator.insert("classes".into(), comma_list(c).into());
    }
    if let Some(e) = &a.encoding {
        generator.insert("encoding".into(), e.as_str().into());
    }
    if let Some(c) = &a.connection {
        generator.insert("connection".into(), c.as_str().into());
    }
    if let Some(r) = &a.roles {
        generator.insert("roles".into(), comma_list(r).into());
    }
    body.insert("generator".into(), Value::Object(generator));
    if let Some(f) = &a.fields {
        body.insert("fields".into(), comma_list(f).into());
    }
    if let Some(g) = &a.grace_period {
        body.insert("grace_period".into(), g.as_str().into());
    }
    if !body.contains_key("period") {
        anyhow::bail!("a rotation policy needs -period (e.g. -period=24h)");
    }
    Ok(body)
}

async fn rotation(o: &mut Outcome, fmt: Format, c: &Client, cmd: RotationCmd) -> anyhow::Result<()> {
    match cmd {
        RotationCmd::Set(a) => {
            let t = resolve(c, &a.loc).await?;
            t.need_v2("kv rotation")?;
            let base = match a.stdin.as_deref() {
                Some("-") => json_object(&read_stdin()?, "stdin")?,
                Some(_) => anyhow::bail!("the only argument after PATH is `-` (the policy as JSON on stdin)"),
                None => Map::new(),
            };
            let body = rotation_body(&a, base)?;
            if let Some(v) = c.logical().write(&t.api("rotation"), &Value::Object(body)).await? {
                warnings(o, &v);
            }
            message(o, fmt, &format!("Success! Rotation policy set for: {}", t.shown()));
            Ok(())
        }
        RotationCmd::Get { loc } => {
            let t = resolve(c, &loc).await?;
            t.need_v2("kv rotation")?;
            let Some(v) = c.logical().read(&t.api("rotation")).await? else {
                *o = Outcome::no_data(&t.api("rotation"));
                return Ok(());
            };
            warnings(o, &v);
            render(o, fmt, &v, |out| response_table(out, &v))
        }
        RotationCmd::Delete { loc } => {
            let t = resolve(c, &loc).await?;
            t.need_v2("kv rotation")?;
            if let Some(v) = c.logical().delete(&t.api("rotation")).await? {
                warnings(o, &v);
            }
            message(o, fmt, &format!("Success! Rotation policy deleted (if it existed) for: {}", t.shown()));
            Ok(())
        }
        RotationCmd::Rotate { loc } => {
            let t = resolve(c, &loc).await?;
            t.need_v2("kv rotation")?;
            let v = c.logical().write(&t.api("rotate"), &json!({})).await?.unwrap_or(Value::Null);
            written(o, fmt, &t, &v, None)
        }
    }
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
    fn targets() {
        let t = Target { mount: "secret".into(), path: "a/b".into(), v2: true };
        assert_eq!(t.api("data"), "secret/data/a/b");
        assert_eq!(t.v1(), "secret/a/b");
        let t = Target { mount: "secret".into(), path: String::new(), v2: true };
        assert_eq!(t.api("metadata"), "secret/metadata");
        assert_eq!(split_by_mount("secret/a/b", "secret/").as_deref(), Some("a/b"));
        assert_eq!(split_by_mount("team/kv/x", "team/kv/").as_deref(), Some("x"));
        assert_eq!(split_by_mount("secret", "secret/").as_deref(), Some(""));
        assert_eq!(split_by_mount("secretx/a", "secret/"), None);
        assert!(is_v2(&json!({"options": {"version": "2"}})));
        assert!(!is_v2(&json!({"options": null})));
    }

    #[test]
    fn merge_patches() {
        let mut t = map(json!({"a": 1, "b": {"c": 2, "d": 3}, "e": "x"}));
        merge_patch(&mut t, map(json!({"a": null, "b": {"c": null, "f": 4}, "g": [1]})));
        assert_eq!(Value::Object(t), json!({"b": {"d": 3, "f": 4}, "e": "x", "g": [1]}));
    }

    #[test]
    fn version_lists() {
        assert_eq!(versions("1,2, 3").unwrap(), vec![1, 2, 3]);
        assert!(versions("1,x").is_err());
        assert!(versions("").is_err());
    }

    #[test]
    fn rotation_bodies() {
        let a = RotationSet {
            loc: Loc { mount: None, path: "secret/db".into() },
            stdin: None,
            period: Some("24h".into()),
            generator: None,
            length: Some(40),
            classes: Some("lower,digit".into()),
            encoding: None,
            fields: Some("password,api_key".into()),
            connection: None,
            roles: None,
            grace_period: None,
        };
        let b = rotation_body(&a, Map::new()).unwrap();
        assert_eq!(
            Value::Object(b),
            json!({"period": "24h", "generator": {"type": "password", "length": 40, "classes": ["lower", "digit"]},
                   "fields": ["password", "api_key"]})
        );
        let a = RotationSet { period: None, length: None, classes: None, fields: None, ..a };
        let b = rotation_body(&a, map(json!({"period": 60, "generator": {"type": "bytes"}}))).unwrap();
        assert_eq!(Value::Object(b), json!({"period": 60, "generator": {"type": "bytes"}}));
        assert!(rotation_body(&a, Map::new()).is_err(), "no period");
    }
}
