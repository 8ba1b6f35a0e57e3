//! The transit engine: encryption as a service
//! (<https://developer.hashicorp.com/vault/api-docs/secret/transit>), and
//! this server's extensions (docs/transit-extensions.md): document fields,
//! blind indexes and subject keys for crypto-shredding.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vault_client::Error> {
//! use vault_client::transit::{Encrypted, Params};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct User {
//!     id: u64,
//!     email: Encrypted<String>, // stored as "vault:v1:..."
//! }
//!
//! let client = vault_client::Client::from_env()?;
//! let transit = client.transit("transit");
//! let ct = transit.encrypt("orders", b"card 4111", &Params::new()).await?;
//! let pt = transit.decrypt("orders", &ct, &Params::new()).await?;
//! assert_eq!(&pt[..], b"card 4111");
//!
//! let user = User { id: 7, email: transit.seal("users", &"ada@example.com".to_string()).await? };
//! let email: String = transit.open("users", &user.email).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Secrets
//!
//! Decrypted data comes back as [`Plaintext`] (zeroized on drop, `Debug`
//! shows its length only); data keys likewise. Request bodies holding a
//! plaintext and response bodies holding one are wiped after use (best
//! effort: the HTTP stack's own buffers are not reachable). [`Params`]'s
//! `Debug` does not show the subject (a person's identifier) or the context.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::ops::Deref;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};
use zeroize::{Zeroize, Zeroizing};

use crate::client::{Client, RawResponse};
use crate::config::wipe;
use crate::error::{Error, Result};

/// Handle on one transit mount; get one with [`Client::transit`].
#[derive(Debug, Clone)]
pub struct Transit<'a> {
    pub(crate) client: &'a Client,
    mount: String,
}

impl Client {
    /// The transit engine mounted at `mount` (e.g. `"transit"`).
    pub fn transit(&self, mount: &str) -> Transit<'_> {
        Transit { client: self, mount: mount.trim_matches('/').to_string() }
    }
}

/// Decrypted bytes: zeroized on drop; `Debug` shows the length only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Plaintext(Zeroizing<Vec<u8>>);

impl Plaintext {
    /// The bytes as UTF-8 text.
    pub fn as_str(&self) -> Result<&str> {
        std::str::from_utf8(&self.0).map_err(|_| Error::InvalidArgument("the plaintext is not UTF-8 text".into()))
    }

    /// The bytes, still zeroized on drop.
    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl Deref for Plaintext {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Plaintext {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Plaintext {
    fn from(v: Vec<u8>) -> Self {
        Plaintext(Zeroizing::new(v))
    }
}

impl From<&[u8]> for Plaintext {
    fn from(v: &[u8]) -> Self {
        Plaintext(Zeroizing::new(v.to_vec()))
    }
}

impl From<&str> for Plaintext {
    fn from(v: &str) -> Self {
        v.as_bytes().into()
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plaintext(<{} bytes>)", self.0.len())
    }
}

/// Optional inputs of an operation, Vault's names: `context` (derived
/// keys), `associated_data` (AEAD associated data, bound to the
/// ciphertext), `subject` (this server's subject keys: crypto-shredding),
/// `key_version` (encrypt with an older allowed version).
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Params {
    /// Key derivation context (derived keys).
    pub context: Option<Vec<u8>>,
    /// Associated data bound to the ciphertext.
    pub associated_data: Option<Vec<u8>>,
    /// The data subject (see docs/transit-extensions.md).
    pub subject: Option<String>,
    /// The key version to encrypt with (0 or `None`: the latest).
    pub key_version: Option<u64>,
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |v: bool| if v { "<set>" } else { "<none>" };
        f.debug_struct("Params")
            .field("context", &shown(self.context.is_some()))
            .field("associated_data", &shown(self.associated_data.is_some()))
            .field("subject", &shown(self.subject.is_some()))
            .field("key_version", &self.key_version)
            .finish()
    }
}

impl Params {
    /// No parameters.
    pub fn new() -> Params {
        Params::default()
    }

    /// With a key derivation context.
    #[must_use]
    pub fn context(mut self, context: impl Into<Vec<u8>>) -> Params {
        self.context = Some(context.into());
        self
    }

    /// With associated data.
    #[must_use]
    pub fn associated_data(mut self, ad: impl Into<Vec<u8>>) -> Params {
        self.associated_data = Some(ad.into());
        self
    }

    /// For a data subject.
    #[must_use]
    pub fn subject(mut self, subject: impl Into<String>) -> Params {
        self.subject = Some(subject.into());
        self
    }

    /// With a key version.
    #[must_use]
    pub fn key_version(mut self, version: u64) -> Params {
        self.key_version = Some(version);
        self
    }

    /// Add these parameters to a request body.
    fn apply(&self, m: &mut Map<String, Value>, with_version: bool) {
        if let Some(c) = &self.context {
            m.insert("context".into(), B64.encode(c).into());
        }
        if let Some(a) = &self.associated_data {
            m.insert("associated_data".into(), B64.encode(a).into());
        }
        if let Some(s) = &self.subject {
            m.insert("subject".into(), s.clone().into());
        }
        if with_version && let Some(v) = self.key_version {
            m.insert("key_version".into(), v.into());
        }
    }
}

/// A normalization applied before computing a blind index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Normalize {
    /// Lower-case the text.
    Lowercase,
    /// Remove leading and trailing white space.
    Trim,
}

impl Normalize {
    fn name(self) -> &'static str {
        match self {
            Normalize::Lowercase => "lowercase",
            Normalize::Trim => "trim",
        }
    }
}

/// Blind index options: normalizations and truncation (`bits`, 1 to 256).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexOptions {
    /// Applied to the text before hashing.
    pub normalize: Vec<Normalize>,
    /// Keep only the first `bits` bits (`None`: 256).
    pub bits: Option<u16>,
}

impl IndexOptions {
    /// No normalization, full length.
    pub fn new() -> IndexOptions {
        IndexOptions::default()
    }

    /// Add a normalization.
    #[must_use]
    pub fn normalize(mut self, n: Normalize) -> IndexOptions {
        self.normalize.push(n);
        self
    }

    /// Truncate to `bits`.
    #[must_use]
    pub fn bits(mut self, bits: u16) -> IndexOptions {
        self.bits = Some(bits);
        self
    }

    fn apply(&self, m: &mut Map<String, Value>) {
        if !self.normalize.is_empty() {
            m.insert("normalize".into(), self.normalize.iter().map(|n| n.name()).collect::<Vec<_>>().into());
        }
        if let Some(b) = self.bits {
            m.insert("bits".into(), b.into());
        }
    }
}

/// What [`Transit::encrypt_fields`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct EncryptedDocument {
    /// The document, the named fields replaced by ciphertexts.
    pub document: Value,
    /// The key version used.
    pub key_version: u64,
    /// Blind indexes of the `index_fields`, by JSON pointer.
    pub indexes: BTreeMap<String, String>,
}

/// A data key from [`Transit::data_key`].
#[derive(Debug, Clone)]
pub struct DataKey {
    /// The key itself (only when asked for); zeroized on drop.
    pub plaintext: Option<Plaintext>,
    /// The key encrypted under the named key: store this one.
    pub ciphertext: String,
    /// The named key's version.
    pub key_version: u64,
}

/// Whether `text` looks like a transit ciphertext (`vault:v{N}:...`).
fn is_ciphertext(text: &str) -> bool {
    text.strip_prefix("vault:v")
        .and_then(|r| r.split_once(':'))
        .is_some_and(|(v, rest)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty())
}

/// A value of type `T` encrypted with transit: serializes as its ciphertext
/// string (`vault:v1:...`), so a struct can hold encrypted fields and be
/// stored as is. Make one with [`Transit::seal`], read it with
/// [`Transit::open`]. The value is encrypted as its JSON text.
pub struct Encrypted<T> {
    ciphertext: String,
    _type: PhantomData<fn() -> T>,
}

impl<T> Encrypted<T> {
    /// Wrap a ciphertext (must look like `vault:v{N}:...`).
    pub fn from_ciphertext(ciphertext: impl Into<String>) -> Result<Encrypted<T>> {
        let ciphertext = ciphertext.into();
        if !is_ciphertext(&ciphertext) {
            return Err(Error::InvalidArgument("not a transit ciphertext (vault:vN:...)".into()));
        }
        Ok(Encrypted { ciphertext, _type: PhantomData })
    }

    /// The ciphertext.
    pub fn ciphertext(&self) -> &str {
        &self.ciphertext
    }

    /// The ciphertext, owned.
    pub fn into_ciphertext(self) -> String {
        self.ciphertext
    }
}

impl<T> Clone for Encrypted<T> {
    fn clone(&self) -> Self {
        Encrypted { ciphertext: self.ciphertext.clone(), _type: PhantomData }
    }
}

impl<T> PartialEq for Encrypted<T> {
    fn eq(&self, other: &Self) -> bool {
        self.ciphertext == other.ciphertext
    }
}

impl<T> Eq for Encrypted<T> {}

impl<T> Hash for Encrypted<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.ciphertext.hash(state);
    }
}

impl<T> fmt::Debug for Encrypted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Encrypted").field(&self.ciphertext).finish()
    }
}

impl<T> Serialize for Encrypted<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.ciphertext)
    }
}

impl<'de, T> Deserialize<'de> for Encrypted<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Encrypted::from_ciphertext(text)
            .map_err(|_| serde::de::Error::custom("expected a transit ciphertext (vault:vN:...)"))
    }
}

/// A bad answer from `path`.
fn decode_err(path: &str, detail: &str) -> Error {
    Error::Decode { path: path.to_string(), detail: detail.into() }
}

/// One batch item's error, as the client's error type.
fn item_error(item: &Map<String, Value>) -> Option<Error> {
    item.get("error")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
        .map(|e| Error::Api { status: 400, errors: vec![e.to_string()] })
}

fn string_field(path: &str, m: &Map<String, Value>, name: &str) -> Result<String> {
    m.get(name).and_then(Value::as_str).map(str::to_string).ok_or_else(|| decode_err(path, &format!("no {name}")))
}

fn plaintext_field(path: &str, m: &Map<String, Value>) -> Result<Plaintext> {
    let b64 = m.get("plaintext").and_then(Value::as_str).ok_or_else(|| decode_err(path, "no plaintext"))?;
    B64.decode(b64).map(Plaintext::from).map_err(|_| decode_err(path, "the plaintext is not base64"))
}

impl Transit<'_> {
    /// The mount this handle works on.
    pub fn mount(&self) -> &str {
        &self.mount
    }

    /// `{mount}/{op}/{key}`, with the key name and mount checked.
    pub(crate) fn path(&self, op: &str, key: &str) -> Result<String> {
        if key.is_empty() || key.contains('/') {
            return Err(Error::InvalidArgument("a transit key name is one non-empty path segment".into()));
        }
        if self.mount.is_empty() {
            return Err(Error::InvalidArgument("empty transit mount".into()));
        }
        Ok(format!("{}/{op}/{key}", self.mount))
    }

    /// POST `body` (wiped afterwards) and return the response, whatever its status.
    async fn post_raw(&self, path: &str, body: Map<String, Value>) -> Result<RawResponse> {
        let body = Value::Object(body);
        let r = self.client.send(Method::POST, path, Some(&body)).await;
        wipe(body);
        r
    }

    /// POST and return the answer's `data` object (the response body is wiped).
    async fn post(&self, path: &str, body: Map<String, Value>) -> Result<Map<String, Value>> {
        let r = self.post_raw(path, body).await?;
        let mut r = r.success()?;
        let parsed = r.parse::<Value>();
        r.body.zeroize();
        match parsed? {
            Value::Object(mut m) => match m.remove("data") {
                Some(Value::Object(d)) => Ok(d),
                _ => Err(decode_err(path, "the response has no data object")),
            },
            _ => Err(decode_err(path, "the response is not an object")),
        }
    }

    /// POST a `batch_input` and return each item's result object. Vault
    /// answers 400 when any item failed, with every result: those are
    /// returned too.
    async fn post_batch(&self, path: &str, items: Vec<Value>) -> Result<Vec<Result<Map<String, Value>>>> {
        let n = items.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut body = Map::new();
        body.insert("batch_input".into(), Value::Array(items));
        let mut r = self.post_raw(path, body).await?;
        let parsed =
            if r.status.is_success() || r.status == StatusCode::BAD_REQUEST { r.parse::<Value>().ok() } else { None };
        let results = parsed.as_ref().and_then(|v| {
            v.get("data")
                .and_then(|d| d.get("batch_results"))
                .or_else(|| v.get("batch_results"))
                .and_then(Value::as_array)
        });
        let out = match results {
            Some(list) if list.len() == n => Ok(list
                .iter()
                .map(|item| match item {
                    Value::Object(m) => item_error(m).map_or_else(|| Ok(m.clone()), Err),
                    _ => Err(decode_err(path, "a batch result is not an object")),
                })
                .collect()),
            Some(_) => Err(decode_err(path, "batch_results does not match the batch_input")),
            None if r.status.is_success() => Err(decode_err(path, "the response has no batch_results")),
            None => Err(Error::from_response(r.status.as_u16(), &r.body)),
        };
        if let Some(v) = parsed {
            wipe(v);
        }
        r.body.zeroize();
        out
    }

    /// `POST keys/{name}`: create a key (`key_type` e.g. `"aes256-gcm96"`,
    /// `None`: the default). Creating an existing key changes nothing.
    pub async fn create_key(&self, name: &str, key_type: Option<&str>) -> Result<()> {
        let path = self.path("keys", name)?;
        let body = key_type.map(|t| json!({ "type": t })).unwrap_or_else(|| json!({}));
        self.client.send_ok(Method::POST, &path, Some(&body)).await
    }

    /// `POST keys/{name}/rotate`: a new key version.
    pub async fn rotate_key(&self, name: &str) -> Result<()> {
        let path = format!("{}/rotate", self.path("keys", name)?);
        self.client.send_ok::<()>(Method::POST, &path, None).await
    }

    /// `POST encrypt/{key}`: the ciphertext of `plaintext`.
    pub async fn encrypt(&self, key: &str, plaintext: &[u8], params: &Params) -> Result<String> {
        let path = self.path("encrypt", key)?;
        let mut body = Map::new();
        body.insert("plaintext".into(), B64.encode(plaintext).into());
        params.apply(&mut body, true);
        let data = self.post(&path, body).await?;
        string_field(&path, &data, "ciphertext")
    }

    /// `POST decrypt/{key}`: the plaintext of `ciphertext`.
    pub async fn decrypt(&self, key: &str, ciphertext: &str, params: &Params) -> Result<Plaintext> {
        let path = self.path("decrypt", key)?;
        let mut body = Map::new();
        body.insert("ciphertext".into(), ciphertext.into());
        params.apply(&mut body, false);
        let data = self.post(&path, body).await?;
        let pt = plaintext_field(&path, &data);
        wipe(Value::Object(data));
        pt
    }

    /// `POST rewrap/{key}`: `ciphertext` re-encrypted under the latest key
    /// version (or `params.key_version`), without the plaintext leaving the
    /// server.
    pub async fn rewrap(&self, key: &str, ciphertext: &str, params: &Params) -> Result<String> {
        let path = self.path("rewrap", key)?;
        let mut body = Map::new();
        body.insert("ciphertext".into(), ciphertext.into());
        params.apply(&mut body, true);
        let data = self.post(&path, body).await?;
        string_field(&path, &data, "ciphertext")
    }

    /// Encrypt many plaintexts with the same parameters in one request; one
    /// result per item, in order (a bad item does not fail the others).
    pub async fn encrypt_batch<P: AsRef<[u8]>>(
        &self,
        key: &str,
        plaintexts: &[P],
        params: &Params,
    ) -> Result<Vec<Result<String>>> {
        let items: Vec<(&[u8], &Params)> = plaintexts.iter().map(|p| (p.as_ref(), params)).collect();
        self.encrypt_batch_with(key, &items).await
    }

    /// Encrypt many plaintexts, each with its own parameters.
    pub async fn encrypt_batch_with(&self, key: &str, items: &[(&[u8], &Params)]) -> Result<Vec<Result<String>>> {
        let path = self.path("encrypt", key)?;
        let input = items
            .iter()
            .map(|(p, params)| {
                let mut m = Map::new();
                m.insert("plaintext".into(), B64.encode(p).into());
                params.apply(&mut m, true);
                Value::Object(m)
            })
            .collect();
        let results = self.post_batch(&path, input).await?;
        Ok(results.into_iter().map(|r| r.and_then(|m| string_field(&path, &m, "ciphertext"))).collect())
    }

    /// Decrypt many ciphertexts with the same parameters in one request.
    pub async fn decrypt_batch<S: AsRef<str>>(
        &self,
        key: &str,
        ciphertexts: &[S],
        params: &Params,
    ) -> Result<Vec<Result<Plaintext>>> {
        let items: Vec<(&str, &Params)> = ciphertexts.iter().map(|c| (c.as_ref(), params)).collect();
        self.decrypt_batch_with(key, &items).await
    }

    /// Decrypt many ciphertexts, each with its own parameters.
    pub async fn decrypt_batch_with(&self, key: &str, items: &[(&str, &Params)]) -> Result<Vec<Result<Plaintext>>> {
        let path = self.path("decrypt", key)?;
        let input = items
            .iter()
            .map(|(c, params)| {
                let mut m = Map::new();
                m.insert("ciphertext".into(), (*c).into());
                params.apply(&mut m, false);
                Value::Object(m)
            })
            .collect();
        let results = self.post_batch(&path, input).await?;
        Ok(results
            .into_iter()
            .map(|r| {
                r.and_then(|m| {
                    let pt = plaintext_field(&path, &m);
                    wipe(Value::Object(m));
                    pt
                })
            })
            .collect())
    }

    /// Rewrap many ciphertexts with the same parameters in one request.
    pub async fn rewrap_batch<S: AsRef<str>>(
        &self,
        key: &str,
        ciphertexts: &[S],
        params: &Params,
    ) -> Result<Vec<Result<String>>> {
        let path = self.path("rewrap", key)?;
        let input = ciphertexts
            .iter()
            .map(|c| {
                let mut m = Map::new();
                m.insert("ciphertext".into(), c.as_ref().into());
                params.apply(&mut m, true);
                Value::Object(m)
            })
            .collect();
        let results = self.post_batch(&path, input).await?;
        Ok(results.into_iter().map(|r| r.and_then(|m| string_field(&path, &m, "ciphertext"))).collect())
    }

    /// `POST encrypt-fields/{key}`: encrypt the fields of `document` named by
    /// JSON pointers (`"/email"`, `"/card/number"`); any JSON type
    /// round-trips. `index_fields` (pointers, may be empty) get blind indexes
    /// computed before encryption, with `index`'s options.
    pub async fn encrypt_fields(
        &self,
        key: &str,
        document: &Value,
        fields: &[&str],
        params: &Params,
        index_fields: &[&str],
        index: &IndexOptions,
    ) -> Result<EncryptedDocument> {
        let path = self.path("encrypt-fields", key)?;
        let mut body = Map::new();
        body.insert("document".into(), document.clone());
        body.insert("fields".into(), fields.into());
        params.apply(&mut body, true);
        if !index_fields.is_empty() {
            body.insert("index_fields".into(), index_fields.into());
            index.apply(&mut body);
        }
        let mut data = self.post(&path, body).await?;
        let document = data.remove("document").ok_or_else(|| decode_err(&path, "no document"))?;
        let key_version = data.get("key_version").and_then(Value::as_u64).unwrap_or(0);
        let indexes = match data.remove("indexes") {
            Some(Value::Object(m)) => {
                m.into_iter().filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string()))).collect()
            }
            _ => BTreeMap::new(),
        };
        Ok(EncryptedDocument { document, key_version, indexes })
    }

    /// `POST decrypt-fields/{key}`: `document` with the named fields
    /// decrypted. The result holds plaintexts: it is the caller's to keep
    /// out of logs.
    pub async fn decrypt_fields(&self, key: &str, document: &Value, fields: &[&str], params: &Params) -> Result<Value> {
        let path = self.path("decrypt-fields", key)?;
        let mut body = Map::new();
        body.insert("document".into(), document.clone());
        body.insert("fields".into(), fields.into());
        params.apply(&mut body, false);
        let mut data = self.post(&path, body).await?;
        data.remove("document").ok_or_else(|| decode_err(&path, "no document"))
    }

    /// `POST blind-index/{key}`: the blind index (lowercase hex) of `input`
    /// for `field` (use the JSON pointer when pairing with
    /// [`Transit::encrypt_fields`]'s `index_fields`).
    pub async fn blind_index(&self, key: &str, input: &[u8], field: &str, options: &IndexOptions) -> Result<String> {
        let path = self.path("blind-index", key)?;
        let mut body = Map::new();
        body.insert("input".into(), B64.encode(input).into());
        body.insert("field".into(), field.into());
        options.apply(&mut body);
        let data = self.post(&path, body).await?;
        string_field(&path, &data, "index")
    }

    /// `POST datakey/{plaintext|wrapped}/{key}`: a new data key, encrypted
    /// under `key`; with its plaintext when `with_plaintext`. `bits`: 128,
    /// 256 (default) or 512.
    pub async fn data_key(
        &self,
        key: &str,
        with_plaintext: bool,
        bits: Option<u32>,
        params: &Params,
    ) -> Result<DataKey> {
        let kind = if with_plaintext { "plaintext" } else { "wrapped" };
        let path = self.path(&format!("datakey/{kind}"), key)?;
        let mut body = Map::new();
        if let Some(b) = bits {
            body.insert("bits".into(), b.into());
        }
        params.apply(&mut body, true);
        let data = self.post(&path, body).await?;
        let out = (|| {
            Ok(DataKey {
                plaintext: if with_plaintext { Some(plaintext_field(&path, &data)?) } else { None },
                ciphertext: string_field(&path, &data, "ciphertext")?,
                key_version: data.get("key_version").and_then(Value::as_u64).unwrap_or(0),
            })
        })();
        wipe(Value::Object(data));
        out
    }

    /// `DELETE subjects/{key}/{subject}`: destroy the subject's key
    /// (crypto-shredding): every ciphertext made for `subject` under `key`
    /// becomes undecryptable, for good. Idempotent.
    pub async fn delete_subject(&self, key: &str, subject: &str) -> Result<()> {
        let path = self.subject_path(key, subject)?;
        self.client.send_ok::<()>(Method::DELETE, &path, None).await
    }

    /// `GET subjects/{key}/{subject}`: the subject key's record (`id`,
    /// `generation`, `created_time`, `destroyed`), `None` if there is none.
    pub async fn subject(&self, key: &str, subject: &str) -> Result<Option<Map<String, Value>>> {
        let path = self.subject_path(key, subject)?;
        match self.client.logical().read(&path).await? {
            None => Ok(None),
            Some(mut v) => match v.get_mut("data").map(Value::take) {
                Some(Value::Object(m)) => Ok(Some(m)),
                _ => Err(decode_err(&path, "the response has no data object")),
            },
        }
    }

    /// `LIST subjects/{key}`: the key's live subjects (their ids).
    pub async fn list_subjects(&self, key: &str) -> Result<Vec<String>> {
        let path = self.path("subjects", key)?;
        self.client.logical().list(&path).await
    }

    fn subject_path(&self, key: &str, subject: &str) -> Result<String> {
        if subject.is_empty() || subject.contains('/') {
            return Err(Error::InvalidArgument("a subject is non-empty text without '/'".into()));
        }
        Ok(format!("{}/{subject}", self.path("subjects", key)?))
    }

    /// Encrypt `value` (as its JSON text) into an [`Encrypted<T>`].
    pub async fn seal<T: Serialize>(&self, key: &str, value: &T) -> Result<Encrypted<T>> {
        self.seal_with(key, value, &Params::new()).await
    }

    /// [`Transit::seal`] with parameters (context, associated data, subject).
    pub async fn seal_with<T: Serialize>(&self, key: &str, value: &T, params: &Params) -> Result<Encrypted<T>> {
        let json = Zeroizing::new(
            serde_json::to_vec(value)
                .map_err(|_| Error::InvalidArgument("the value cannot be serialized as JSON".into()))?,
        );
        let ciphertext = self.encrypt(key, &json, params).await?;
        Encrypted::from_ciphertext(ciphertext)
    }

    /// Decrypt an [`Encrypted<T>`] back into a `T`.
    pub async fn open<T: DeserializeOwned>(&self, key: &str, value: &Encrypted<T>) -> Result<T> {
        self.open_with(key, value, &Params::new()).await
    }

    /// [`Transit::open`] with parameters (the ones given to `seal_with`).
    pub async fn open_with<T: DeserializeOwned>(&self, key: &str, value: &Encrypted<T>, params: &Params) -> Result<T> {
        let pt = self.decrypt(key, value.ciphertext(), params).await?;
        serde_json::from_slice(&pt).map_err(|e| Error::decode(&format!("{}/decrypt/{key}", self.mount), &e))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn ciphertext_shape() {
        assert!(is_ciphertext("vault:v1:abc"));
        assert!(is_ciphertext("vault:v12:s1.xyz:abc"));
        for bad in ["vault:v:abc", "vault:vx:abc", "vault:v1:", "v1:abc", "hunter2", "vault:secret/a#b"] {
            assert!(!is_ciphertext(bad), "{bad}");
        }
    }

    #[test]
    fn encrypted_serializes_as_its_ciphertext() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Row {
            id: u32,
            email: Encrypted<String>,
        }
        let row = Row { id: 1, email: Encrypted::from_ciphertext("vault:v1:QUJD").unwrap() };
        let text = serde_json::to_string(&row).unwrap();
        assert_eq!(text, r#"{"id":1,"email":"vault:v1:QUJD"}"#);
        assert_eq!(serde_json::from_str::<Row>(&text).unwrap(), row);
        let e = serde_json::from_str::<Row>(r#"{"id":1,"email":"plain-SECRET"}"#).unwrap_err();
        assert!(!e.to_string().contains("SECRET"), "{e}");
    }

    #[test]
    fn debug_hides_plaintexts_and_subjects() {
        let p = Plaintext::from("hunter2-SECRET");
        assert_eq!(format!("{p:?}"), "Plaintext(<14 bytes>)");
        let k = DataKey { plaintext: Some(p), ciphertext: "vault:v1:x".into(), key_version: 1 };
        assert!(!format!("{k:?}").contains("SECRET"));
        let params = Params::new().subject("ada@SECRET").context("ctx-SECRET").key_version(2);
        let shown = format!("{params:?}");
        assert!(!shown.contains("SECRET") && shown.contains("key_version: Some(2)"), "{shown}");
    }

    #[test]
    fn params_on_the_wire() {
        let mut m = Map::new();
        Params::new().context("c").associated_data("a").subject("s").key_version(3).apply(&mut m, true);
        assert_eq!(
            Value::Object(m),
            json!({"context": "Yw==", "associated_data": "YQ==", "subject": "s", "key_version": 3})
        );
        let mut m = Map::new();
        Params::new().key_version(3).apply(&mut m, false);
        assert!(m.is_empty());
        let mut m = Map::new();
        IndexOptions::new().normalize(Normalize::Lowercase).normalize(Normalize::Trim).bits(16).apply(&mut m);
        assert_eq!(Value::Object(m), json!({"normalize": ["lowercase", "trim"], "bits": 16}));
    }
}
