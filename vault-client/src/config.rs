//! Typed configuration at boot, and references to secrets.
//!
//! # `load`
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! #[derive(serde::Deserialize)]
//! struct AppConfig {
//!     database_url: String,
//!     port: u16,
//!     #[serde(default)]
//!     debug: bool,
//! }
//!
//! let client = vault_client::Client::from_env()?;
//! let config: AppConfig = client.load(&["secret/myapp", "secret/shared"]).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Each field is looked for, in order:
//!
//! 1. in the KV secrets at the given paths, the **first path listed winning**
//!    when several hold the field (so an app's own secret overrides a shared
//!    one). A path is a full path, mount included: the mount and its KV
//!    version come from `sys/internal/ui/mounts/{path}` (what `vault kv`
//!    asks), or, when the token may not read that, the first segment is the
//!    mount and KV v2 is assumed. A path with no secret is skipped (the
//!    environment may supply everything);
//! 2. in the environment variable named after the field in upper case, any
//!    character other than a letter or digit becoming `_` (`database_url`:
//!    `DATABASE_URL`; a field renamed `api-key`: `API_KEY`);
//! 3. in the file named by `FIELD_FILE` (Docker secrets' convention, e.g.
//!    `DATABASE_URL_FILE=/run/secrets/db_url`), trailing line breaks removed.
//!
//! The environment is a fallback: a field present in a KV secret ignores its
//! variable. Mind fields named like variables every shell sets (`user`,
//! `home`, `path`): `USER` would fill `user` when no secret has it. To read
//! prefixed variables instead (`APP_USER`), pass a lookup to
//! [`Client::load_with_vars`]:
//! `client.load_with_vars(&paths, |name| std::env::var(format!("APP_{name}")).ok())`.
//! Aliases (`#[serde(alias = "pw")]`) are field names too.
//!
//! Fields absent everywhere are left to serde: `Option` fields become `None`,
//! `#[serde(default)]` fields their default, others are a
//! [`ConfigError::Missing`] naming the field and every place looked at.
//!
//! Strings fit the field's type where that is sensible: `"5432"` for a
//! number, `true/false/1/0/yes/no/on/off` for a `bool`, JSON text for a list,
//! map or struct (environment variables and `vault kv put k=v` only hold
//! strings).
//!
//! **References.** A top-level string value of the form
//! `vault:MOUNT/PATH#KEY` (see [`Reference`]), from a KV secret, an
//! environment variable or a `_FILE`, is replaced by field `KEY` of the
//! secret at `MOUNT/PATH` (one level: a resolved value is not resolved
//! again). `vaultctl import` writes such references into `.env` files. Transit
//! ciphertexts (`vault:v1:...`) have no `#` and are left alone.
//!
//! A struct with `#[serde(flatten)]` fields, or a map type, is deserialized
//! from the merged secrets only: its field names are not known in advance, so
//! there is no per-field fallback.
//!
//! # Errors
//!
//! [`ConfigError`] names fields, paths, environment variable names and file
//! paths, never a value: a value that does not fit its field is reported by
//! the type expected and the kind of value found ("expected u16, found a
//! string").
//!
//! Values read are wiped from memory (best effort: the merged JSON strings
//! are zeroized) once the target is built.

mod de;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::client::Client;
use crate::error::Error;
use crate::kv2::Secret;

pub(crate) use de::{DeError, from_map};

/// Why [`Client::load`] or [`Client::resolve`] failed. Never holds a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required field was found nowhere.
    #[error("missing configuration field `{field}`: looked in {}", looked.join(", "))]
    Missing {
        /// The field (dotted path for a nested field).
        field: String,
        /// Where it was looked for (paths, `env NAME`, `NAME_FILE`).
        looked: Vec<String>,
    },
    /// A value was found but does not fit its field.
    #[error("configuration field `{field}` (from {from}): {detail}")]
    Invalid {
        /// The field (dotted path for a nested field).
        field: String,
        /// Where the value came from.
        from: String,
        /// What is wrong (expected type, kind of value found).
        detail: String,
    },
    /// The merged values do not fit the target type as a whole.
    #[error("configuration: {0}")]
    Shape(String),
    /// Text that should be a reference is not one.
    #[error("invalid secret reference: {0}")]
    BadReference(String),
    /// A reference names a secret or key that does not exist.
    #[error("{reference}: {detail}")]
    Unresolved {
        /// The reference (`vault:MOUNT/PATH#KEY`).
        reference: String,
        /// What is missing.
        detail: String,
    },
    /// No secret at this path (a watched path must exist).
    #[error("no secret at {0}")]
    NotFound(String),
    /// A `_FILE` could not be read.
    #[error("cannot read {file} (named by {var}): {error}")]
    File {
        /// The environment variable naming the file.
        var: String,
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// The vault could not be asked.
    #[error("{place}: {error}")]
    Vault {
        /// What was being read.
        place: String,
        /// The client's error.
        #[source]
        error: Error,
    },
}

/// For callers working with the crate's [`Error`]: a vault error as it is,
/// anything else as [`Error::Config`] with this error's message (which holds
/// no value).
impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        match e {
            ConfigError::Vault { error, .. } => error,
            other => Error::Config(other.to_string()),
        }
    }
}

/// A reference to one field of a KV secret: `vault:MOUNT/PATH#KEY`.
///
/// The path is a full path, mount included (`vault:secret/myapp#db_password`);
/// the mount is found as for [`Client::load`]. The key is everything after
/// the first `#`.
///
/// [`Reference::parse`] (and `FromStr`) also accept the form without the
/// `vault:` prefix (`secret/myapp#KEY`), as given on command lines;
/// [`Reference::from_value`] only recognizes prefixed ones, for values that
/// may or may not be references.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    path: String,
    key: String,
}

/// The prefix marking a value as a reference.
pub const REFERENCE_PREFIX: &str = "vault:";

impl Reference {
    /// A reference to field `key` of the secret at `path` (mount included).
    pub fn new(path: &str, key: &str) -> Result<Reference, ConfigError> {
        let path = path.trim_matches('/');
        let segments: Vec<&str> = path.split('/').collect();
        if segments.len() < 2 || segments.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
            return Err(ConfigError::BadReference(
                "expected MOUNT/PATH#KEY: a mount and a secret path of non-empty segments".into(),
            ));
        }
        if key.is_empty() {
            return Err(ConfigError::BadReference("expected MOUNT/PATH#KEY: the key after '#' is empty".into()));
        }
        Ok(Reference { path: path.to_string(), key: key.to_string() })
    }

    /// Parse `vault:MOUNT/PATH#KEY` or `MOUNT/PATH#KEY`. The error never
    /// quotes the text (it might be a secret given by mistake).
    pub fn parse(text: &str) -> Result<Reference, ConfigError> {
        let body = text.strip_prefix(REFERENCE_PREFIX).unwrap_or(text);
        let Some((path, key)) = body.split_once('#') else {
            return Err(ConfigError::BadReference("expected [vault:]MOUNT/PATH#KEY: no '#KEY'".into()));
        };
        Reference::new(path, key)
    }

    /// `Some` if `value` is a reference (`vault:` prefix, a path and a
    /// `#KEY`), `None` for anything else (including transit ciphertexts,
    /// `vault:v1:...`).
    pub fn from_value(value: &str) -> Option<Reference> {
        if !value.starts_with(REFERENCE_PREFIX) {
            return None;
        }
        Reference::parse(value).ok()
    }

    /// The secret's full path (mount included).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The field of the secret.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{REFERENCE_PREFIX}{}#{}", self.path, self.key)
    }
}

impl FromStr for Reference {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Where a secret's path lives: its mount and KV version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    /// The mount, without slashes (`secret`).
    pub(crate) mount: String,
    /// The path within the mount.
    pub(crate) rest: String,
    /// KV version 2 (else version 1).
    pub(crate) v2: bool,
}

/// `data` of `sys/internal/ui/mounts/{path}` (the parts needed here).
#[derive(serde::Deserialize)]
struct UiMount {
    path: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    options: Option<Map<String, Value>>,
}

#[derive(serde::Deserialize)]
struct UiEnvelope {
    data: Option<UiMount>,
}

impl Client {
    /// Find the mount serving `path` and its KV version (see the module
    /// docs). Only a transport failure is an error: an answer the token may
    /// not have falls back to "first segment, KV v2".
    pub(crate) async fn locate(&self, path: &str) -> Result<Located, Error> {
        let path = path.trim_matches('/');
        let fallback = || -> Result<Located, Error> {
            match path.split_once('/') {
                Some((mount, rest)) if !mount.is_empty() && !rest.is_empty() => {
                    Ok(Located { mount: mount.into(), rest: rest.into(), v2: true })
                }
                _ => Err(Error::InvalidArgument("a secret path needs a mount and a path: MOUNT/PATH".into())),
            }
        };
        if path.is_empty() {
            return fallback();
        }
        let r = self.send::<()>(reqwest::Method::GET, &format!("sys/internal/ui/mounts/{path}"), None).await?;
        if !r.status.is_success() {
            return fallback();
        }
        let Ok(UiEnvelope { data: Some(m) }) = r.parse::<UiEnvelope>() else {
            return fallback();
        };
        let mount = m.path.trim_matches('/');
        let Some(rest) = path.strip_prefix(mount).and_then(|r| r.strip_prefix('/')).filter(|r| !r.is_empty()) else {
            return fallback();
        };
        if !matches!(m.kind.as_str(), "kv" | "generic") {
            return Err(Error::InvalidArgument(format!(
                "{path} is served by a {} mount ({mount}/), not a KV one",
                if m.kind.is_empty() { "non-KV" } else { m.kind.as_str() }
            )));
        }
        let version = m.options.as_ref().and_then(|o| o.get("version")).and_then(Value::as_str).unwrap_or("1");
        Ok(Located { mount: mount.into(), rest: rest.into(), v2: version == "2" })
    }

    /// The latest version of the KV secret at `path` (a full path, mount
    /// included; KV v1 or v2, found as for [`Client::load`]); `None` if there
    /// is none. A KV v1 secret has version 0 and no creation time.
    pub async fn read_secret(&self, path: &str) -> Result<Option<Secret>, Error> {
        let at = self.locate(path).await?;
        self.read_located(&at).await
    }

    async fn read_located(&self, at: &Located) -> Result<Option<Secret>, Error> {
        if at.v2 {
            return self.kv2(&at.mount).read(&at.rest).await;
        }
        let api_path = format!("{}/{}", at.mount, at.rest);
        match self.logical().read(&api_path).await? {
            None => Ok(None),
            Some(mut body) => match body.get_mut("data").map(Value::take) {
                Some(Value::Object(data)) => Ok(Some(Secret { data, version: 0, created_time: String::new() })),
                _ => Err(Error::Decode { path: api_path, detail: "the response has no data object".into() }),
            },
        }
    }

    /// The value `reference` points at: a string as it is, any other JSON
    /// value as its JSON text.
    pub async fn resolve(&self, reference: &Reference) -> Result<Zeroizing<String>, ConfigError> {
        let v = self.resolve_value(reference, &mut Cache::default()).await?;
        Ok(Zeroizing::new(match v {
            Value::String(s) => s,
            other => {
                let text = other.to_string();
                wipe(other);
                text
            }
        }))
    }

    /// The JSON value `reference` points at; `cache` holds secrets already
    /// read in this operation (by path).
    async fn resolve_value(&self, reference: &Reference, cache: &mut Cache) -> Result<Value, ConfigError> {
        if !cache.0.contains_key(&reference.path) {
            let s = self
                .read_secret(&reference.path)
                .await
                .map_err(|error| ConfigError::Vault { place: format!("resolving {reference}"), error })?;
            cache.0.insert(reference.path.clone(), s);
        }
        let unresolved =
            |detail: &str| ConfigError::Unresolved { reference: reference.to_string(), detail: detail.into() };
        match cache.0.get(&reference.path) {
            Some(Some(secret)) => secret
                .data
                .get(&reference.key)
                .cloned()
                .ok_or_else(|| unresolved(&format!("the secret has no field `{}`", reference.key))),
            _ => Err(unresolved("no secret at this path")),
        }
    }

    /// Load `T` from the KV secrets at `paths` (first listed wins), falling
    /// back per field to environment variables and `_FILE` files; see the
    /// [module docs](crate::config).
    pub async fn load<T: DeserializeOwned>(&self, paths: &[&str]) -> Result<T, ConfigError> {
        self.load_with_vars(paths, |name| std::env::var(name).ok()).await
    }

    /// Like [`Client::load`], reading environment variables through `lookup`
    /// (for tests, or another source of settings).
    pub async fn load_with_vars<T: DeserializeOwned>(
        &self,
        paths: &[&str],
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<T, ConfigError> {
        let fields = de::field_names::<T>();
        // Both wiped when dropped, whichever way this function ends.
        let mut merged = Merged::default();
        let mut from: HashMap<String, String> = HashMap::new();
        let mut cache = Cache::default();
        for path in paths {
            let path = path.trim_matches('/');
            let secret = self
                .read_secret(path)
                .await
                .map_err(|error| ConfigError::Vault { place: format!("reading {path}"), error })?;
            match &secret {
                Some(s) => {
                    for (k, v) in &s.data {
                        if fields.is_some_and(|f| !f.contains(&k.as_str())) || merged.0.contains_key(k) {
                            continue;
                        }
                        merged.0.insert(k.clone(), v.clone());
                        from.insert(k.clone(), path.to_string());
                    }
                }
                None => tracing::debug!(path, "no secret at this path; skipped"),
            }
            cache.0.insert(path.to_string(), secret);
        }

        // Per-field fallbacks: FIELD, then FIELD_FILE.
        for field in fields.unwrap_or_default() {
            if merged.0.contains_key(*field) {
                continue;
            }
            let var = env_name(field);
            if let Some(v) = lookup(&var) {
                merged.0.insert(field.to_string(), Value::String(v));
                from.insert(field.to_string(), format!("env {var}"));
                continue;
            }
            let file_var = format!("{var}_FILE");
            if let Some(file) = lookup(&file_var).filter(|f| !f.is_empty()) {
                let file = PathBuf::from(file);
                let mut text = std::fs::read_to_string(&file).map_err(|error| ConfigError::File {
                    var: file_var.clone(),
                    file: file.clone(),
                    error,
                })?;
                let kept = text.trim_end_matches(['\n', '\r']).len();
                text.truncate(kept);
                merged.0.insert(field.to_string(), Value::String(text));
                from.insert(field.to_string(), format!("{} (named by {file_var})", file.display()));
            }
        }

        // References, one level.
        let refs: Vec<(String, Reference)> = merged
            .0
            .iter()
            .filter_map(|(k, v)| v.as_str().and_then(Reference::from_value).map(|r| (k.clone(), r)))
            .collect();
        for (field, reference) in refs {
            let value = self.resolve_value(&reference, &mut cache).await?;
            if let Some(slot) = merged.0.get_mut(&field) {
                wipe(std::mem::replace(slot, value));
            }
            if let Some(f) = from.get_mut(&field) {
                *f = format!("{reference} via {f}");
            }
        }
        drop(cache);

        de::from_map::<T>(&merged.0).map_err(|e| match e {
            DeError::Missing(field) => {
                let top = field.split('.').next().unwrap_or(&field);
                let looked = match from.get(top) {
                    Some(place) => vec![place.clone()],
                    None => {
                        let var = env_name(top);
                        let mut looked: Vec<String> = paths.iter().map(|p| p.trim_matches('/').to_string()).collect();
                        if fields.is_some() {
                            looked.push(format!("env {var}"));
                            looked.push(format!("env {var}_FILE"));
                        }
                        looked
                    }
                };
                ConfigError::Missing { field, looked }
            }
            DeError::Field { field, detail } => {
                let top = field.split('.').next().unwrap_or(&field);
                let from = from.get(top).cloned().unwrap_or_else(|| "the merged secrets".into());
                ConfigError::Invalid { field, from, detail }
            }
            DeError::Other(detail) => ConfigError::Shape(detail),
        })
    }
}

/// The environment variable for `field`: upper case, anything but ASCII
/// letters and digits as `_`.
pub fn env_name(field: &str) -> String {
    field.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// Zeroize every string in `v` (best effort: numbers and the map's
/// allocations are not wiped).
pub(crate) fn wipe(mut v: Value) {
    fn walk(v: &mut Value) {
        match v {
            Value::String(s) => s.zeroize(),
            Value::Array(a) => a.iter_mut().for_each(walk),
            Value::Object(m) => m.values_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
}

pub(crate) fn wipe_map(m: Map<String, Value>) {
    wipe(Value::Object(m));
}

/// Values merged by `load`, wiped on drop.
#[derive(Default)]
struct Merged(Map<String, Value>);

impl Drop for Merged {
    fn drop(&mut self) {
        wipe_map(std::mem::take(&mut self.0));
    }
}

/// Secrets read by one `load` or `resolve` (by path), wiped on drop.
#[derive(Default)]
struct Cache(HashMap<String, Option<Secret>>);

impl Drop for Cache {
    fn drop(&mut self) {
        for s in self.0.drain().filter_map(|(_, s)| s) {
            wipe_map(s.data);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("vault:secret/myapp#db_password").unwrap();
        assert_eq!((r.path(), r.key()), ("secret/myapp", "db_password"));
        assert_eq!(r.to_string(), "vault:secret/myapp#db_password");
        assert_eq!("secret/a/b#k#x".parse::<Reference>().unwrap().key(), "k#x");
        assert_eq!(Reference::from_value("vault:/secret/myapp/#K").unwrap().path(), "secret/myapp");
        assert!(Reference::from_value("secret/myapp#K").is_none(), "no prefix: a plain value");
        assert!(Reference::from_value("vault:v1:AAAAbase64==").is_none(), "a transit ciphertext");
        for bad in ["vault:secret#K", "vault:secret/app#", "secret/app", "vault:secret//app#K", "vault:secret/../x#K"] {
            let e = Reference::parse(bad).unwrap_err();
            assert!(matches!(e, ConfigError::BadReference(_)), "{bad}: {e:?}");
        }
        let e = Reference::parse("hunter2-SECRET").unwrap_err();
        assert!(!e.to_string().contains("SECRET"), "{e}");
    }

    #[test]
    fn into_the_crate_error() {
        let e: Error = ConfigError::Missing { field: "db_password".into(), looked: vec!["secret/app".into()] }.into();
        assert!(matches!(&e, Error::Config(m) if m.contains("db_password") && m.contains("secret/app")), "{e:?}");
        let api = Error::Api { status: 403, errors: vec!["permission denied".into()] };
        let e: Error = ConfigError::Vault { place: "reading secret/app".into(), error: api }.into();
        assert_eq!(e.status(), Some(403));
    }

    #[test]
    fn env_names() {
        assert_eq!(env_name("database_url"), "DATABASE_URL");
        assert_eq!(env_name("api-key"), "API_KEY");
        assert_eq!(env_name("dbPass2"), "DBPASS2");
    }
}
