//! Secret references (`vault:MOUNT/PATH#KEY`), KV v2 reads by full path,
//! and following secrets for changes, for `exec` and `agent`.
//!
//! Each piece here stands in for a library function being written in
//! parallel (`vault_client::config::Reference`, `Client::resolve`,
//! `Client::watch`); each is isolated in one function so that it can be
//! swapped for the library's version.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use vault_client::Client;
use zeroize::Zeroizing;

use super::auth::Session;

/// The prefix marking a value as a reference to a secret.
pub(crate) const PREFIX: &str = "vault:";

/// A reference to one field of a KV v2 secret: `secret/myapp#password`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Reference {
    /// Mount and path, e.g. `secret/myapp`.
    pub(crate) path: String,
    /// The field.
    pub(crate) key: String,
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.path, self.key)
    }
}

/// Whether `value` is a reference (`vault:...`), as found in an
/// environment or a `.env` file.
pub(crate) fn is_reference(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// Parse `vault:MOUNT/PATH#KEY` or `MOUNT/PATH#KEY` (the `vault:` prefix is
/// optional: CLI flags omit it). The error quotes the reference, which
/// names a secret but holds no value.
// INTEGRATION: replace with vault_client::config::Reference's parser.
pub(crate) fn parse_reference(s: &str) -> anyhow::Result<Reference> {
    let body = s.strip_prefix(PREFIX).unwrap_or(s);
    let usage = || format!("invalid secret reference {s:?}: expected MOUNT/PATH#KEY, e.g. secret/myapp#password");
    let Some((path, key)) = body.split_once('#') else { bail!(usage()) };
    let path = path.trim_matches('/');
    if path.is_empty() || key.is_empty() || !path.contains('/') || body.chars().any(char::is_whitespace) {
        bail!(usage());
    }
    if path.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
        bail!(usage());
    }
    Ok(Reference { path: path.to_string(), key: key.to_string() })
}

/// A client error as one line with its causes, each said once (reqwest's
/// own message omits the useful part, "connection refused", and the
/// client's message already quotes reqwest's). Client errors hold no
/// secrets.
pub(crate) fn flat(e: &vault_client::Error) -> anyhow::Error {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    anyhow::Error::msg(msg)
}

/// A secret's fields and version.
#[derive(Clone)]
pub(crate) struct Data {
    pub(crate) fields: Map<String, Value>,
    pub(crate) version: u64,
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Data").field("keys", &self.fields.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

/// Splits full secret paths (`team/kv/app`) into mount and path, asking
/// the server once per path (`sys/internal/ui/mounts/{path}`, what Vault's
/// `vault kv` does) and falling back to the first segment when the token
/// may not read that endpoint.
#[derive(Debug, Default, Clone)]
pub(crate) struct Mounts {
    known: HashMap<String, (String, String)>,
}

impl Mounts {
    /// `(mount, path within the mount)` of `full`.
    pub(crate) async fn split(&mut self, client: &Client, full: &str) -> anyhow::Result<(String, String)> {
        if let Some(hit) = self.known.get(full) {
            return Ok(hit.clone());
        }
        let found = match client.logical().read(&format!("sys/internal/ui/mounts/{full}")).await {
            Ok(Some(v)) => v.pointer("/data/path").and_then(Value::as_str).map(|m| m.trim_matches('/').to_string()),
            _ => None,
        };
        let split = found
            .and_then(|m| {
                let rest = full.strip_prefix(m.as_str())?.trim_start_matches('/');
                (!m.is_empty() && !rest.is_empty()).then(|| (m.clone(), rest.to_string()))
            })
            .or_else(|| full.split_once('/').map(|(m, p)| (m.to_string(), p.to_string())))
            .with_context(|| format!("secret path {full:?} has no mount: expected MOUNT/PATH"))?;
        self.known.insert(full.to_string(), split.clone());
        Ok(split)
    }
}

/// The latest version of the KV v2 secret at `full` (mount + path);
/// an error naming the path when there is none.
pub(crate) async fn read_secret(client: &Client, mounts: &mut Mounts, full: &str) -> anyhow::Result<Data> {
    let (mount, path) = mounts.split(client, full).await?;
    let s = client
        .kv2(&mount)
        .read(&path)
        .await
        .map_err(|e| flat(&e).context(format!("cannot read secret {full}")))?
        .with_context(|| format!("secret {full} not found (no live version at {mount}/data/{path})"))?;
    Ok(Data { fields: s.data, version: s.version })
}

/// A field's value as text: strings as they are, other JSON values as JSON.
pub(crate) fn field_text(data: &Data, r: &Reference) -> anyhow::Result<Zeroizing<String>> {
    match data.fields.get(&r.key) {
        Some(Value::String(s)) => Ok(Zeroizing::new(s.clone())),
        Some(other) => Ok(Zeroizing::new(other.to_string())),
        None => bail!("secret {} has no field {:?}", r.path, r.key),
    }
}

/// Resolve references, reading each secret once; also the version read of
/// each secret (to follow them from there).
// INTEGRATION: replace with vault_client's `client.resolve(&Reference)`.
pub(crate) async fn resolve_all(
    client: &Client,
    mounts: &mut Mounts,
    refs: &[Reference],
) -> anyhow::Result<(Vec<Zeroizing<String>>, HashMap<String, u64>)> {
    let mut read: HashMap<String, Data> = HashMap::new();
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        if !read.contains_key(&r.path) {
            let d = read_secret(client, mounts, &r.path).await?;
            read.insert(r.path.clone(), d);
        }
        let d = read.get(&r.path).with_context(|| format!("secret {} was not read", r.path))?;
        out.push(field_text(d, r)?);
    }
    let versions = read.into_iter().map(|(p, d)| (p, d.version)).collect();
    Ok((out, versions))
}

/// How long each blocking read waits.
const WAIT: Duration = Duration::from_secs(30);
/// A round that brought nothing is never shorter (no busy loop against a
/// server that answers at once).
const MIN_ROUND: Duration = Duration::from_secs(1);
/// Backoff after errors: from this...
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// ...doubling up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A change seen by [`watch`]: the secret's full path and new version.
#[derive(Debug, Clone)]
pub(crate) struct Changed {
    pub(crate) path: String,
    pub(crate) version: u64,
}

/// Follow the KV v2 secret at `full` from version `after` with blocking
/// reads, sending each newer version's number on `tx`. Errors are reported
/// on stderr (they hold no values) and retried with backoff; a 403 asks the
/// session for a new login first (an expired token). Ends when `tx` closes.
// INTEGRATION: replace with vault_client's `client.watch(path)` (untyped variant).
pub(crate) fn watch(
    session: Session,
    full: String,
    after: u64,
    tx: mpsc::Sender<Changed>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = after;
        let mut mounts = Mounts::default();
        let mut backoff = BACKOFF_MIN;
        loop {
            let started = Instant::now();
            let client = session.client();
            // Err: (the error, whether it was a 403)
            let round = async {
                let (mount, path) = mounts.split(&client, &full).await.map_err(|e| (e, false))?;
                client
                    .kv2(&mount)
                    .wait_for_newer(&path, last, WAIT)
                    .await
                    .map_err(|e| (flat(&e), e.status() == Some(403)))
            };
            let outcome = tokio::select! {
                r = round => r,
                () = tx.closed() => return,
            };
            match outcome {
                Ok(Some(s)) if s.version > last => {
                    backoff = BACKOFF_MIN;
                    last = s.version;
                    if tx.send(Changed { path: full.clone(), version: last }).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(_) => backoff = BACKOFF_MIN,
                Err((e, denied)) => {
                    eprintln!("vaultctl: following {full}: {e:#}");
                    if denied {
                        session.relogin_after_denial().await;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = tx.closed() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
            if let Some(rest) = MIN_ROUND.checked_sub(started.elapsed()) {
                tokio::time::sleep(rest).await;
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = parse_reference("vault:secret/myapp#password").unwrap();
        assert_eq!((r.path.as_str(), r.key.as_str()), ("secret/myapp", "password"));
        let r = parse_reference("team/kv/app/db#user").unwrap();
        assert_eq!((r.path.as_str(), r.key.as_str()), ("team/kv/app/db", "user"));
        assert_eq!(parse_reference("/secret/app/#k").unwrap().path, "secret/app");
        for bad in ["secret/app", "secret#k", "vault:#k", "secret/app#", "secret/a b#k", "secret/../x#k", "secret//x#k"]
        {
            let e = parse_reference(bad).unwrap_err().to_string();
            assert!(e.contains("MOUNT/PATH#KEY"), "{bad}: {e}");
        }
        assert!(is_reference("vault:secret/a#b") && !is_reference("secret/a#b"));
    }

    #[test]
    fn field_values() {
        let d = Data { fields: serde_json::from_str(r#"{"s":"x","n":3,"o":{"a":true}}"#).unwrap(), version: 1 };
        let get = |k: &str| field_text(&d, &Reference { path: "secret/a".into(), key: k.into() });
        assert_eq!(get("s").unwrap().as_str(), "x");
        assert_eq!(get("n").unwrap().as_str(), "3");
        assert_eq!(get("o").unwrap().as_str(), r#"{"a":true}"#);
        assert!(get("missing").unwrap_err().to_string().contains("no field \"missing\""));
        assert!(!format!("{d:?}").contains("\"x\""), "Debug shows keys only");
    }
}
