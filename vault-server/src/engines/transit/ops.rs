//! The operations: encrypt, decrypt, rewrap, datakey, hmac, sign, verify
//! (single or `batch_input`), and the keyless random and hash.
//!
//! Batches follow Vault: every item gets a result, an item that fails gets
//! an `error` and never fails the others. For encrypt, decrypt and rewrap a
//! batch with a failed item answers 400 (with every result), unless
//! `partial_failure_response_code` names another status and at least one
//! item succeeded; hmac, sign and verify batches answer 200.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::Transit;
use super::crypto::{self, HashAlg, KeyType, Marshaling};
use super::key::TransitKey;
use super::subjects::{self, Resolved, SubjectId, SubjectKey, item_subject};
use crate::barrier::Unsealed;
use crate::keys::{KeyMaterial, KeyVersion, SecretBytes};
use crate::logical::fields;
use crate::logical::{LogicalError, Response};

/// Why one item failed: shown to the caller (never holds secret bytes).
#[derive(Debug)]
pub(super) struct ItemError(String);

impl ItemError {
    pub(super) fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

impl std::fmt::Display for ItemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<crypto::CryptoError> for ItemError {
    fn from(e: crypto::CryptoError) -> Self {
        Self(e.to_string())
    }
}

impl From<crate::keys::KeyError> for ItemError {
    fn from(e: crate::keys::KeyError) -> Self {
        Self(e.to_string())
    }
}

pub(super) type ItemResult = Result<Map<String, Value>, ItemError>;

/// What one item answers: a map, or one of the shapes the hot operations
/// write straight into the batch's JSON (no per-item tree).
pub(super) trait ItemOut {
    /// As a map (a single item's answer).
    fn into_map(self) -> Map<String, Value>;
    /// The fields as JSON object members, each followed by a comma.
    fn write_fields(&self, out: &mut Vec<u8>);
}

impl ItemOut for Map<String, Value> {
    fn into_map(self) -> Map<String, Value> {
        self
    }
    fn write_fields(&self, out: &mut Vec<u8>) {
        for (k, v) in self {
            write_json(out, k);
            out.push(b':');
            write_json(out, v);
            out.push(b',');
        }
    }
}

/// An encryption's answer: `ciphertext` and `key_version`.
pub(super) struct Sealed {
    ciphertext: String,
    version: u32,
}

impl ItemOut for Sealed {
    fn into_map(self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("ciphertext".into(), self.ciphertext.into());
        m.insert("key_version".into(), self.version.into());
        m
    }
    fn write_fields(&self, out: &mut Vec<u8>) {
        // `vault:v`, digits, ':', the subject tag's and base64's alphabets:
        // nothing JSON escapes.
        debug_assert!(!self.ciphertext.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20));
        out.extend_from_slice(b"\"ciphertext\":\"");
        out.extend_from_slice(self.ciphertext.as_bytes());
        out.extend_from_slice(b"\",\"key_version\":");
        out.extend_from_slice(self.version.to_string().as_bytes());
        out.push(b',');
    }
}

/// A decryption's answer: `plaintext`, base64 (no JSON escapes).
pub(super) struct Opened(String);

impl ItemOut for Opened {
    fn into_map(self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("plaintext".into(), self.0.into());
        m
    }
    fn write_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\"plaintext\":\"");
        out.extend_from_slice(self.0.as_bytes());
        out.extend_from_slice(b"\",");
    }
}

/// `v` as JSON into `out` (strings and maps of the answer cannot fail).
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.extend_from_slice(b"null");
    }
}

fn bad(msg: impl Into<String>) -> LogicalError {
    LogicalError::InvalidRequest(msg.into())
}

/// Largest `batch_input` accepted (the body limit bounds it too).
const MAX_BATCH: usize = 100_000;

type Items<'a> = Vec<&'a Map<String, Value>>;

/// The items of a request: the `batch_input` objects, or the request's own
/// fields as one item (borrowed: a large batch is not copied).
pub(super) fn work(data: &Map<String, Value>) -> Result<(bool, Items<'_>), LogicalError> {
    match data.get("batch_input") {
        None | Some(Value::Null) => Ok((false, vec![data])),
        Some(Value::Array(a)) => {
            if a.is_empty() {
                return Err(bad("missing batch input to process"));
            }
            if a.len() > MAX_BATCH {
                return Err(bad(format!("batch_input holds more than {MAX_BATCH} items")));
            }
            let list = a
                .iter()
                .map(|v| match v {
                    Value::Object(m) => Ok(m),
                    _ => Err(bad("every batch_input item must be a JSON object")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((true, list))
        }
        Some(_) => Err(bad("batch_input must be a list of objects")),
    }
}

fn text<'a>(item: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, ItemError> {
    match item.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ItemError::new(format!("'{field}' must be a string"))),
    }
}

pub(super) fn b64_field(item: &Map<String, Value>, field: &str) -> Result<Option<Zeroizing<Vec<u8>>>, ItemError> {
    match text(item, field)? {
        None => Ok(None),
        Some(s) => B64
            .decode(s.as_bytes())
            .map(|b| Some(Zeroizing::new(b)))
            .map_err(|_| ItemError::new(format!("failed to base64-decode {field}"))),
    }
}

pub(super) fn item_version(item: &Map<String, Value>) -> Result<u32, ItemError> {
    match item.get("key_version") {
        None | Some(Value::Null) => Ok(0),
        Some(v) => {
            let n = match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse::<u64>().ok(),
                _ => None,
            };
            n.and_then(|n| u32::try_from(n).ok()).ok_or_else(|| ItemError::new("invalid key_version"))
        }
    }
}

/// The optional byte inputs of an AEAD item, base64 on the wire:
/// `context` (derived keys) and `associated_data`.
pub(super) struct Bound {
    context: Option<Zeroizing<Vec<u8>>>,
    aad: Option<Zeroizing<Vec<u8>>>,
}

impl Bound {
    pub(super) fn of(item: &Map<String, Value>) -> Result<Self, ItemError> {
        Ok(Self { context: b64_field(item, "context")?, aad: b64_field(item, "associated_data")? })
    }

    pub(super) fn context(&self) -> Option<&[u8]> {
        self.context.as_deref().map(|c| &c[..])
    }

    /// The associated data (empty when none was given).
    pub(super) fn aad(&self) -> &[u8] {
        self.aad.as_deref().map_or(&[][..], |a| &a[..])
    }
}

/// The key version an item asks for: its own `key_version`, or in a batch
/// the request's (0: the default).
pub(super) fn requested_version(
    item: &Map<String, Value>,
    data: &Map<String, Value>,
    batch: bool,
) -> Result<u32, ItemError> {
    if batch && item.get("key_version").is_none() { item_version(data) } else { item_version(item) }
}

/// A ciphertext taken apart: `vault:v{N}:{base64}`, or for a subject
/// (`subjects.rs`) `vault:v{N}:s{G}.{id}:{base64}`.
pub(super) struct Parsed {
    pub(super) version: u32,
    pub(super) subject: Option<(u32, SubjectId)>,
    pub(super) raw: Vec<u8>,
}

/// `vault:v{N}:{rest}` → (N, rest).
fn parse_versioned<'s>(s: &'s str, what: &str) -> Result<(u32, &'s str), ItemError> {
    let invalid = || ItemError::new(format!("invalid {what}: expected vault:v<version>:<base64>"));
    let rest = s.strip_prefix("vault:v").ok_or_else(invalid)?;
    let (v, body) = rest.split_once(':').ok_or_else(invalid)?;
    // One spelling per version: digits only, no sign, no leading zero.
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.starts_with('0') {
        return Err(invalid());
    }
    let v: u32 = v.parse().ok().filter(|v| *v > 0).ok_or_else(invalid)?;
    Ok((v, body))
}

/// The version of a well-formed `vault:v<N>:` ciphertext.
pub(super) fn version_of(ciphertext: &str) -> Option<u32> {
    parse_versioned(ciphertext, "ciphertext").ok().map(|(v, _)| v)
}

/// The subject tag of a ciphertext, if it has a well-formed one (for
/// resolving subjects before the items run; the items parse fully).
pub(super) fn subject_of(ciphertext: &str) -> Option<SubjectId> {
    let (_, body) = parse_versioned(ciphertext, "ciphertext").ok()?;
    let (tag, _) = body.split_once(':')?;
    subjects::parse_tag(tag).map(|(_, id)| id)
}

pub(super) fn decode_ciphertext(s: &str) -> Result<Parsed, ItemError> {
    let (version, body) = parse_versioned(s, "ciphertext")?;
    // Base64 has no ':', so a second one can only end a subject tag.
    let (subject, body) = match body.split_once(':') {
        None => (None, body),
        Some((tag, rest)) => {
            let t = subjects::parse_tag(tag).ok_or_else(|| ItemError::new("invalid ciphertext: bad subject tag"))?;
            (Some(t), rest)
        }
    };
    let raw = B64.decode(body).map_err(|_| ItemError::new("invalid ciphertext: could not decode base64"))?;
    Ok(Parsed { version, subject, raw })
}

fn versioned(v: u32, subject: Option<&SubjectKey>, bytes: &[u8]) -> String {
    // One allocation, sized once (this runs per batch item).
    let tag = subject.map(SubjectKey::tag);
    let tag_len = tag.as_ref().map_or(0, |t| t.len() + 1);
    let b64_len = bytes.len().div_ceil(3) * 4;
    let mut out = Vec::with_capacity(18 + tag_len + b64_len);
    out.extend_from_slice(b"vault:v");
    out.extend_from_slice(v.to_string().as_bytes());
    out.push(b':');
    if let Some(t) = tag {
        out.extend_from_slice(t.as_bytes());
        out.push(b':');
    }
    // Into the sized buffer in one call (`encode_string` goes through a
    // chunked writer: measured at a tenth of an encryption's cost).
    let start = out.len();
    out.resize(start + b64_len, 0);
    let written = B64.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
    // ASCII by construction.
    String::from_utf8(out).unwrap_or_default()
}

/// The keys of one version for one request: the AEAD key (derived for
/// `context` on derived keys) and, for convergent keys, the nonce key.
struct UseKeys<'a> {
    key: KeyBytes<'a>,
    nonce_key: Option<Zeroizing<Vec<u8>>>,
}

/// The version's own key (borrowed: no copy per item) or one derived for a
/// context (owned, wiped on drop).
enum KeyBytes<'a> {
    Version(&'a [u8]),
    Derived(Zeroizing<Vec<u8>>),
}

impl std::ops::Deref for KeyBytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            KeyBytes::Version(k) => k,
            KeyBytes::Derived(k) => k,
        }
    }
}

/// The keys of version `kv` for `context`, then for `subject` (whose key
/// is mixed into both: `subjects.rs`).
fn use_keys<'a>(
    k: &TransitKey,
    kv: &'a KeyVersion<SecretBytes>,
    context: Option<&[u8]>,
    subject: Option<&SubjectKey>,
) -> Result<UseKeys<'a>, ItemError> {
    let keys = version_keys(k, kv, context)?;
    let Some(s) = subject else { return Ok(keys) };
    Ok(UseKeys {
        key: KeyBytes::Derived(s.data_key(&keys.key)?),
        nonce_key: keys.nonce_key.map(|nk| s.nonce_key(&nk)).transpose()?,
    })
}

fn version_keys<'a>(
    k: &TransitKey,
    kv: &'a KeyVersion<SecretBytes>,
    context: Option<&[u8]>,
) -> Result<UseKeys<'a>, ItemError> {
    let (secret, _) = crypto::split(k.kind, kv.material().as_bytes())?;
    if !k.settings.derived {
        // Vault ignores a context on a key that is not derived.
        return Ok(UseKeys { key: KeyBytes::Version(secret), nonce_key: None });
    }
    let context = context.filter(|c| !c.is_empty()).ok_or_else(|| {
        ItemError::new("missing 'context' for key derivation; the key was created using a derived key, which means additional, per-request information must be included in order to perform operations with the key")
    })?;
    let len = secret.len();
    if k.settings.convergent_encryption {
        let both = crypto::derive(secret, context, len + 32)?;
        let (a, b) = both.split_at(len);
        return Ok(UseKeys {
            key: KeyBytes::Derived(Zeroizing::new(a.to_vec())),
            nonce_key: Some(Zeroizing::new(b.to_vec())),
        });
    }
    Ok(UseKeys { key: KeyBytes::Derived(crypto::derive(secret, context, len)?), nonce_key: None })
}

/// Encrypt one plaintext with version `requested` (0: the default), for
/// `subject` if given.
pub(super) fn seal_one(
    k: &TransitKey,
    requested: u32,
    plaintext: &[u8],
    context: Option<&[u8]>,
    nonce: Option<&[u8]>,
    aad: &[u8],
    subject: Option<&SubjectKey>,
) -> Result<(u32, String), ItemError> {
    if !k.kind.is_aead() {
        return Err(ItemError::new(format!("key type {} does not support encryption", k.kind.name())));
    }
    if nonce.is_some_and(|n| !n.is_empty()) {
        return Err(ItemError::new("nonce provided when not allowed"));
    }
    let (v, kv) = k.ring.encryption_version(requested)?;
    let keys = use_keys(k, kv, context, subject)?;
    let nonce = match &keys.nonce_key {
        Some(nk) => Some(crypto::convergent_nonce(k.kind, nk, plaintext)?),
        None => None,
    };
    // A version's own key has its cipher kept with the key (no key
    // schedule per message); derived keys are expanded per use.
    let sealed = match &keys.key {
        KeyBytes::Version(secret) if let Some(c) = k.cipher(v, secret) => c.seal(nonce.as_deref(), plaintext, aad)?,
        _ => crypto::seal(k.kind, &keys.key, nonce.as_deref(), plaintext, aad)?,
    };
    // Counted per message, for the random-nonce bound (NIST SP 800-38D).
    kv.count_encryptions(1);
    Ok((v, versioned(v, subject, &sealed)))
}

/// Decrypt one ciphertext. `subjects` holds the subject keys the request's
/// ciphertexts are tagged with; `subject` is the one the item names (a
/// ciphertext of another subject, or of none, is refused). Returns the
/// plaintext and the subject key used.
pub(super) fn open_one<'s>(
    k: &TransitKey,
    ciphertext: &str,
    context: Option<&[u8]>,
    aad: &[u8],
    subjects: &'s Resolved,
    subject: Option<&str>,
) -> Result<(Zeroizing<Vec<u8>>, Option<&'s SubjectKey>), ItemError> {
    if !k.kind.is_aead() {
        return Err(ItemError::new(format!("key type {} does not support decryption", k.kind.name())));
    }
    let parsed = decode_ciphertext(ciphertext)?;
    let sk = subjects.for_decrypt(parsed.subject, subject)?;
    let kv = k.ring.decryption_version(parsed.version)?;
    let keys = use_keys(k, kv, context, sk)?;
    let plain = match &keys.key {
        KeyBytes::Version(secret) if let Some(c) = k.cipher(parsed.version, secret) => c.open(&parsed.raw, aad)?,
        _ => crypto::open(k.kind, &keys.key, &parsed.raw, aad)?,
    };
    Ok((plain, sk))
}

/// Answer a batch or a single item. A batch's JSON is written directly
/// (results of thousands of items: no tree to build, serialize and free).
pub(super) fn answer<T: ItemOut>(
    data: &Map<String, Value>,
    batch: bool,
    results: Vec<Result<T, ItemError>>,
    references: Vec<Value>,
    strict: bool,
) -> Result<Response, LogicalError> {
    if !batch {
        return match results.into_iter().next() {
            Some(Ok(m)) => Ok(Response::data(m.into_map())),
            Some(Err(e)) => Err(LogicalError::InvalidRequest(e.0)),
            None => Err(bad("nothing to process")),
        };
    }
    let total = results.len();
    let mut failed = 0;
    let mut out = Vec::with_capacity(32 + total * 112);
    out.extend_from_slice(b"{\"batch_results\":[");
    for (i, (r, reference)) in results.into_iter().zip(references).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        match r {
            Ok(t) => t.write_fields(&mut out),
            Err(e) => {
                failed += 1;
                out.extend_from_slice(b"\"error\":");
                write_json(&mut out, &e.0);
                out.push(b',');
            }
        }
        out.extend_from_slice(b"\"reference\":");
        write_json(&mut out, &reference);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    // Built from JSON text only (serde_json for anything not plain ASCII).
    let json = String::from_utf8(out).map_err(LogicalError::internal)?;
    let status = if !strict || failed == 0 {
        200
    } else {
        match fields::count(data, "partial_failure_response_code")? {
            // A success or client-error status that may carry a body (RFC
            // 9110: 204 and 205 carry none, and a batch answer is its body).
            Some(code)
                if failed < total
                    && ((200..=299).contains(&code) || (400..=499).contains(&code))
                    && !matches!(code, 204 | 205) =>
            {
                code as u16
            }
            _ => 400,
        }
    };
    Ok(Response::Encoded(status, json))
}

pub(super) fn references(list: &[&Map<String, Value>]) -> Vec<Value> {
    list.iter().map(|i| i.get("reference").cloned().unwrap_or_else(|| Value::String(String::new()))).collect()
}

/// Whether an item would pass everything an encryption with `k` checks
/// (type, version, context): asked before a subject's key is made for it,
/// so that a refused item never makes one.
pub(super) fn can_seal(k: &TransitKey, item: &Map<String, Value>, data: &Map<String, Value>, batch: bool) -> bool {
    let Ok(bound) = Bound::of(item) else { return false };
    let Ok(requested) = requested_version(item, data, batch) else { return false };
    let Ok((_, kv)) = k.ring.encryption_version(requested) else { return false };
    k.kind.is_aead() && version_keys(k, kv, bound.context()).is_ok()
}

/// The subject ids the `field` ciphertexts of the items are tagged with.
pub(super) fn tagged_subjects(list: &[&Map<String, Value>], field: &str) -> Vec<SubjectId> {
    let mut ids: Vec<SubjectId> =
        list.iter().filter_map(|i| i.get(field).and_then(Value::as_str).and_then(subject_of)).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Batches at least this long are split across two threads.
const PARALLEL_BATCH: usize = 256;

/// `f` applied to every item, in order. A long batch is split in two halves
/// run on two threads (the worker's own and a scoped one), so one large
/// request can use both cores; only on a multi-threaded runtime, where the
/// worker may block.
pub(super) fn each_item<T, F>(list: &[&Map<String, Value>], f: F) -> Vec<Result<T, ItemError>>
where
    T: Send,
    F: Fn(&Map<String, Value>) -> Result<T, ItemError> + Sync,
{
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if list.len() < 2 || !multi {
        return list.iter().map(|i| f(i)).collect();
    }
    if list.len() < PARALLEL_BATCH {
        // A batch can take long (hundreds of ECDSA signatures): the worker
        // hands its other tasks on first, so it never stalls the server.
        return tokio::task::block_in_place(|| list.iter().map(|i| f(i)).collect());
    }
    let (first, second) = list.split_at(list.len() / 2);
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let other = scope.spawn(|| second.iter().map(|i| f(i)).collect::<Vec<_>>());
            let mut out: Vec<Result<T, ItemError>> = first.iter().map(|i| f(i)).collect();
            match other.join() {
                Ok(rest) => out.extend(rest),
                // A panic in the other half is re-raised here, as if it had
                // happened on this thread.
                Err(p) => std::panic::resume_unwind(p),
            }
            out
        })
    })
}

impl Transit {
    /// The key `name`, or a 400 as Vault answers for a missing key.
    pub(super) async fn key(&self, u: &Unsealed, name: &str) -> Result<Arc<TransitKey>, LogicalError> {
        self.keys.get(&self.view, u, name).await?.ok_or_else(|| bad("encryption key not found"))
    }

    pub(super) async fn encrypt(
        &self,
        u: &Unsealed,
        name: &str,
        may_create: bool,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let (batch, list) = work(data)?;
        let key = match self.keys.get(&self.view, u, name).await? {
            Some(k) => k,
            // Only a request the policy check admitted as `create` (the key
            // was absent then) may make the key; one admitted as `update`
            // whose key vanished since is answered as Vault does.
            None if may_create => Box::pin(self.upsert(u, name, data, &list)).await?,
            None => return Err(bad("encryption key not found")),
        };
        // A subject is made only for an item that will use it: a refused
        // item must not bring an erased subject back.
        let k = key.clone();
        let will_encrypt = move |item: &Map<String, Value>| {
            matches!(b64_field(item, "plaintext"), Ok(Some(_)))
                && matches!(b64_field(item, "nonce"), Ok(None))
                && can_seal(&k, item, data, batch)
        };
        let (key, subjects) =
            Box::pin(self.request_subjects(u, key, name, data, &list, batch, &[], will_encrypt)).await?;
        let results = each_item(&list, |item| {
            let plaintext =
                b64_field(item, "plaintext")?.ok_or_else(|| ItemError::new("missing plaintext to encrypt"))?;
            let bound = Bound::of(item)?;
            let nonce = b64_field(item, "nonce")?;
            let requested = requested_version(item, data, batch)?;
            let subject = item_subject(item, data, batch)?.map(|s| subjects.for_encrypt(s)).transpose()?;
            let nonce = nonce.as_deref().map(|n| &n[..]);
            let (version, ciphertext) =
                seal_one(&key, requested, &plaintext, bound.context(), nonce, bound.aad(), subject)?;
            Ok(Sealed { ciphertext, version })
        });
        answer(data, batch, results, references(&list), true)
    }

    /// The subject keys a request needs: those its items name (made when
    /// missing for the items `creates` admits, with the key's index key made
    /// first if it has none) and those `tagged` ciphertexts belong to.
    /// Requests without subjects pay one scan of their items.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn request_subjects(
        &self,
        u: &Unsealed,
        key: Arc<TransitKey>,
        name: &str,
        data: &Map<String, Value>,
        list: &[&Map<String, Value>],
        batch: bool,
        tagged: &[SubjectId],
        creates: impl Fn(&Map<String, Value>) -> bool,
    ) -> Result<(Arc<TransitKey>, Resolved), LogicalError> {
        let named = subjects::any_subject(data, list);
        if !named && tagged.is_empty() {
            return Ok((key, Resolved::default()));
        }
        // Names that fail their check are left out here and fail their item.
        let mut names: Vec<&str> = Vec::new();
        let mut create: Vec<&str> = Vec::new();
        for item in list {
            if let Ok(Some(s)) = item_subject(item, data, batch) {
                names.push(s);
                // Only an item that will go on to use it makes a subject's
                // key: a refused item must not bring back an erased subject.
                if creates(item) {
                    create.push(s);
                }
            }
        }
        for v in [&mut names, &mut create] {
            v.sort_unstable();
            v.dedup();
        }
        if names.len() > subjects::MAX_PER_REQUEST {
            return Err(bad(format!("a request may name at most {} distinct subjects", subjects::MAX_PER_REQUEST)));
        }
        let key = if !create.is_empty() && key.index_key.is_none() { self.key_with_index(u, name).await? } else { key };
        let resolved = self.resolve_subjects(u, &key, name, &names, &create, tagged).await?;
        Ok((key, resolved))
    }

    /// Vault creates the key on first encrypt (the policy check asked for
    /// `create`): derived when a context is given.
    async fn upsert(
        &self,
        u: &Unsealed,
        name: &str,
        data: &Map<String, Value>,
        list: &[&Map<String, Value>],
    ) -> Result<Arc<TransitKey>, LogicalError> {
        // The key is made to encrypt: a type that cannot is refused before
        // anything is stored.
        if let Some(t) = fields::string(data, "type")?
            && super::crypto::KeyType::parse(&t).is_some_and(|k| !k.is_aead())
        {
            return Err(bad(format!("key type {t} does not support encryption")));
        }
        let mut params = Map::new();
        for f in ["type", "convergent_encryption"] {
            if let Some(v) = data.get(f) {
                params.insert(f.into(), v.clone());
            }
        }
        let derived = list.iter().any(|i| matches!(i.get("context"), Some(Value::String(s)) if !s.is_empty()));
        if derived {
            params.insert("derived".into(), true.into());
        }
        self.create(u, name, &params).await?;
        self.key(u, name).await
    }

    pub(super) async fn decrypt(
        &self,
        u: &Unsealed,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let (batch, list) = work(data)?;
        let key = self.key(u, name).await?;
        let tagged = tagged_subjects(&list, "ciphertext");
        let (key, subjects) =
            Box::pin(self.request_subjects(u, key, name, data, &list, batch, &tagged, |_| false)).await?;
        let results = each_item(&list, |item| {
            let ct = text(item, "ciphertext")?.ok_or_else(|| ItemError::new("missing ciphertext to decrypt"))?;
            let bound = Bound::of(item)?;
            let subject = item_subject(item, data, batch)?;
            let (plain, _) = open_one(&key, ct, bound.context(), bound.aad(), &subjects, subject)?;
            Ok(Opened(B64.encode(&plain[..])))
        });
        answer(data, batch, results, references(&list), true)
    }

    /// Rewrap: decrypt, then encrypt with the latest (or requested) version.
    /// A subject's ciphertext stays that subject's; naming a subject for a
    /// ciphertext that has none moves it under that subject.
    pub(super) async fn rewrap(
        &self,
        u: &Unsealed,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let (batch, list) = work(data)?;
        let key = self.key(u, name).await?;
        let tagged = tagged_subjects(&list, "ciphertext");
        // Named subjects are made when missing (a ciphertext moving under a
        // new subject); tagged ones only looked up.
        // A subject is made only for an item that will use it: a plain
        // ciphertext that opens (checked here once more: moving ciphertexts
        // under subjects is a migration, not the hot path).
        let k = key.clone();
        let adopts = move |item: &Map<String, Value>| {
            let Ok(Some(ct)) = text(item, "ciphertext") else { return false };
            let Ok(bound) = Bound::of(item) else { return false };
            subject_of(ct).is_none()
                && can_seal(&k, item, data, batch)
                && open_one(&k, ct, bound.context(), bound.aad(), &Resolved::default(), None).is_ok()
        };
        let (key, subjects) =
            Box::pin(self.request_subjects(u, key, name, data, &list, batch, &tagged, adopts)).await?;
        let results = each_item(&list, |item| {
            let ct = text(item, "ciphertext")?.ok_or_else(|| ItemError::new("missing ciphertext to decrypt"))?;
            let bound = Bound::of(item)?;
            let (context, aad) = (bound.context(), bound.aad());
            let subject = item_subject(item, data, batch)?;
            let (plain, target) = if subject_of(ct).is_some() {
                // Checked against the subject named, if any.
                open_one(&key, ct, context, aad, &subjects, subject)?
            } else {
                let (plain, _) = open_one(&key, ct, context, aad, &subjects, None)?;
                (plain, subject.map(|s| subjects.for_encrypt(s)).transpose()?)
            };
            let requested = requested_version(item, data, batch)?;
            let (version, ciphertext) = seal_one(&key, requested, &plain, context, None, aad, target)?;
            Ok(Sealed { ciphertext, version })
        });
        answer(data, batch, results, references(&list), true)
    }

    pub(super) async fn datakey(
        &self,
        u: &Unsealed,
        name: &str,
        kind: &str,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let with_plaintext = match kind {
            "plaintext" => true,
            "wrapped" => false,
            _ => return Err(bad("invalid type: must be \"plaintext\" or \"wrapped\"")),
        };
        let bits = fields::count(data, "bits")?.unwrap_or(256);
        if !matches!(bits, 128 | 256 | 512) {
            return Err(bad("invalid bit size: must be 128, 256 or 512"));
        }
        let key = self.key(u, name).await?;
        // Beyond Vault: a data key for a subject is wrapped under the
        // subject's key (crypto-shredding reaches what it encrypts, e.g. a
        // stream encrypted locally).
        let one = [data];
        let (key, subjects) = Box::pin(self.request_subjects(u, key, name, data, &one, false, &[], |_| true)).await?;
        let mut dk = Zeroizing::new(vec![0u8; (bits / 8) as usize]);
        crate::crypto::random::fill(&mut dk);
        let item = |e: ItemError| LogicalError::InvalidRequest(e.0);
        let bound = Bound::of(data).map_err(item)?;
        let requested = item_version(data).map_err(item)?;
        let subject = item_subject(data, data, false).map_err(item)?;
        let subject = subject.map(|s| subjects.for_encrypt(s)).transpose().map_err(item)?;
        let (v, ct) = seal_one(&key, requested, &dk, bound.context(), None, bound.aad(), subject).map_err(item)?;
        let mut m = Map::new();
        m.insert("ciphertext".into(), ct.into());
        m.insert("key_version".into(), v.into());
        if with_plaintext {
            m.insert("plaintext".into(), B64.encode(&dk[..]).into());
        }
        Ok(Response::data(m))
    }

    pub(super) async fn hmac(
        &self,
        u: &Unsealed,
        name: &str,
        path_alg: Option<&str>,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let alg = hash_alg(path_alg, data, "algorithm")?;
        let (batch, list) = work(data)?;
        let key = self.key(u, name).await?;
        let results = each_item(&list, |item| {
            let input = b64_field(item, "input")?.ok_or_else(|| ItemError::new("missing input for HMAC"))?;
            let requested = requested_version(item, data, batch)?;
            let (v, kv) = key.ring.encryption_version(requested)?;
            let (_, hk) = crypto::split(key.kind, kv.material().as_bytes())?;
            let mac = crypto::hmac(alg, hk, &input)?;
            let mut m = Map::new();
            m.insert("hmac".into(), versioned(v, None, &mac).into());
            Ok(m)
        });
        answer(data, batch, results, references(&list), false)
    }

    pub(super) async fn sign(
        &self,
        u: &Unsealed,
        name: &str,
        path_alg: Option<&str>,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let alg = hash_alg(path_alg, data, "hash_algorithm")?;
        let marshaling = marshaling(data)?;
        let prehashed = fields::boolean(data, "prehashed")?.unwrap_or(false);
        let (batch, list) = work(data)?;
        let key = self.key(u, name).await?;
        if !key.kind.is_signing() {
            return Err(bad(format!("key type {} does not support signing", key.kind.name())));
        }
        // Ed25519 signs the message itself; Vault ignores `prehashed` for it.
        let prehashed = prehashed && key.kind != KeyType::Ed25519;
        let results = each_item(&list, |item| {
            let input = b64_field(item, "input")?.ok_or_else(|| ItemError::new("missing input to sign"))?;
            let context = b64_field(item, "context")?;
            let requested = requested_version(item, data, batch)?;
            let (v, kv) = key.ring.encryption_version(requested)?;
            let secret = signing_key(&key, kv, context.as_deref().map(|c| &c[..]))?;
            let sig = crypto::sign(key.kind, &secret, &input, alg, prehashed, marshaling)?;
            let encoded = match marshaling {
                Marshaling::Jws => format!("vault:v{v}:{}", B64URL.encode(&sig)),
                Marshaling::Asn1 => versioned(v, None, &sig),
            };
            let mut m = Map::new();
            m.insert("signature".into(), encoded.into());
            m.insert("key_version".into(), v.into());
            Ok(m)
        });
        answer(data, batch, results, references(&list), false)
    }

    pub(super) async fn verify(
        &self,
        u: &Unsealed,
        name: &str,
        path_alg: Option<&str>,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let (batch, list) = work(data)?;
        let key = self.key(u, name).await?;
        let results = each_item(&list, |item| {
            let input = b64_field(item, "input")?.ok_or_else(|| ItemError::new("missing input to verify"))?;
            let valid = match (text(item, "signature")?, text(item, "hmac")?) {
                (Some(_), Some(_)) => return Err(ItemError::new("provide one of 'signature' or 'hmac', not both")),
                (None, None) => return Err(ItemError::new("missing signature or hmac to verify")),
                (None, Some(h)) => {
                    // Vault reads `hash_algorithm` first here (hvac and vaultrs send it).
                    let alg = hash_alg(path_alg, data, "hash_algorithm").map_err(|e| ItemError::new(e.to_string()))?;
                    let (v, body) = parse_versioned(h, "hmac")?;
                    let mac = B64.decode(body).map_err(|_| ItemError::new("invalid hmac: could not decode base64"))?;
                    let kv = key.ring.decryption_version(v)?;
                    let (_, hk) = crypto::split(key.kind, kv.material().as_bytes())?;
                    crypto::hmac_verify(alg, hk, &input, &mac)?
                }
                (Some(s), None) => {
                    if !key.kind.is_signing() {
                        return Err(ItemError::new(format!(
                            "key type {} does not support verification",
                            key.kind.name()
                        )));
                    }
                    let alg = hash_alg(path_alg, data, "hash_algorithm").map_err(|e| ItemError::new(e.to_string()))?;
                    let m = marshaling(data).map_err(|e| ItemError::new(e.to_string()))?;
                    let prehashed = key.kind != KeyType::Ed25519
                        && fields::boolean(data, "prehashed")
                            .map_err(|e| ItemError::new(e.to_string()))?
                            .unwrap_or(false);
                    let (v, body) = parse_versioned(s, "signature")?;
                    let sig = match m {
                        Marshaling::Jws => B64URL.decode(body),
                        Marshaling::Asn1 => B64.decode(body),
                    }
                    .map_err(|_| ItemError::new("invalid signature: could not decode base64"))?;
                    let kv = key.ring.decryption_version(v)?;
                    let context = b64_field(item, "context")?;
                    let secret = signing_key(&key, kv, context.as_deref().map(|c| &c[..]))?;
                    crypto::verify(key.kind, &secret, &input, &sig, alg, prehashed, m)?
                }
            };
            let mut m = Map::new();
            m.insert("valid".into(), valid.into());
            Ok(m)
        });
        answer(data, batch, results, references(&list), false)
    }
}

/// The signing key of a version: derived per context for derived ed25519.
fn signing_key(
    k: &TransitKey,
    kv: &KeyVersion<SecretBytes>,
    context: Option<&[u8]>,
) -> Result<Zeroizing<Vec<u8>>, ItemError> {
    let (secret, _) = crypto::split(k.kind, kv.material().as_bytes())?;
    if !k.settings.derived {
        return Ok(Zeroizing::new(secret.to_vec()));
    }
    let context =
        context.filter(|c| !c.is_empty()).ok_or_else(|| ItemError::new("missing 'context' for key derivation"))?;
    Ok(crypto::derive_ed25519_seed(secret, context)?)
}

fn hash_alg(path: Option<&str>, data: &Map<String, Value>, field: &str) -> Result<HashAlg, LogicalError> {
    let name = match path {
        Some(p) => p.to_string(),
        None => match fields::string(data, field)? {
            Some(s) if !s.is_empty() => s,
            // `algorithm` is the older name of `hash_algorithm` on sign/verify.
            _ => fields::string(data, "algorithm")?.filter(|s| !s.is_empty()).unwrap_or_else(|| "sha2-256".into()),
        },
    };
    HashAlg::parse(&name).ok_or_else(|| bad(format!("unsupported algorithm {name}")))
}

fn marshaling(data: &Map<String, Value>) -> Result<Marshaling, LogicalError> {
    match fields::string(data, "marshaling_algorithm")?.as_deref() {
        None | Some("") | Some("asn1") => Ok(Marshaling::Asn1),
        Some("jws") => Ok(Marshaling::Jws),
        Some(other) => Err(bad(format!("unsupported marshaling algorithm {other}"))),
    }
}

/// Largest `random` request, as Vault (128 KiB).
const MAX_RANDOM: u64 = 128 * 1024;

/// `random[/{source}][/{bytes}]`: bytes from the CSPRNG. Every source
/// (`platform`, `seal`, `all`) is the operating system's generator here.
pub(super) fn random(
    source: Option<&str>,
    bytes: Option<&str>,
    data: &Map<String, Value>,
) -> Result<Response, LogicalError> {
    let source = match source {
        Some(s) => Some(s.to_string()),
        None => fields::string(data, "source")?,
    };
    if let Some(s) = source.as_deref()
        && !matches!(s, "" | "platform" | "seal" | "all")
    {
        return Err(bad(format!("unsupported entropy source {s}")));
    }
    let n = match bytes {
        Some(b) => b.parse::<u64>().map_err(|_| bad(format!("error parsing byte count as integer: {b}")))?,
        None => fields::count(data, "bytes")?.unwrap_or(32),
    };
    if n == 0 || n > MAX_RANDOM {
        return Err(bad(format!("the number of bytes must be between 1 and {MAX_RANDOM}")));
    }
    let mut buf = Zeroizing::new(vec![0u8; n as usize]);
    crate::crypto::random::fill(&mut buf);
    let out = match fields::string(data, "format")?.as_deref() {
        None | Some("") | Some("base64") => B64.encode(&buf[..]),
        Some("hex") => hex::encode(&buf[..]),
        Some(other) => return Err(bad(format!("unsupported encoding format {other}; must be \"hex\" or \"base64\""))),
    };
    let mut m = Map::new();
    m.insert("random_bytes".into(), out.into());
    Ok(Response::data(m))
}

/// `hash[/{algorithm}]`.
pub(super) fn hash(path_alg: Option<&str>, data: &Map<String, Value>) -> Result<Response, LogicalError> {
    let input =
        b64_field(data, "input").map_err(|e| LogicalError::InvalidRequest(e.0))?.ok_or_else(|| bad("missing input"))?;
    let alg = hash_alg(path_alg, data, "algorithm")?;
    let sum = crypto::hash(alg, &input);
    let out = match fields::string(data, "format")?.as_deref() {
        None | Some("") | Some("hex") => hex::encode(&sum),
        Some("base64") => B64.encode(&sum),
        Some(other) => return Err(bad(format!("unsupported encoding format {other}; must be \"hex\" or \"base64\""))),
    };
    let mut m = Map::new();
    m.insert("sum".into(), out.into());
    Ok(Response::data(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_strings_parse_strictly() {
        assert_eq!(parse_versioned("vault:v3:QUJD", "x").unwrap().0, 3);
        for bad in [
            "vault:v0:QUJD",
            "vault:3:QUJD",
            "vault:v:QUJD",
            "vault:v-1:QUJD",
            "vaul:v1:QUJD",
            "vault:v1",
            "vault:v99999999999:QUJD",
        ] {
            assert!(parse_versioned(bad, "x").is_err(), "{bad}");
        }
        assert!(decode_ciphertext("vault:v1:not base64!").is_err());
    }

    #[test]
    fn key_type_list_is_complete() {
        for t in [
            "aes128-gcm96",
            "aes256-gcm96",
            "chacha20-poly1305",
            "xchacha20-poly1305",
            "ed25519",
            "ecdsa-p256",
            "ecdsa-p384",
            "hmac",
        ] {
            assert_eq!(KeyType::parse(t).map(KeyType::name), Some(t));
        }
    }
}
