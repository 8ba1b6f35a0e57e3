//! Subject keys: crypto-shredding for GDPR art. 17, beyond Vault
//! (docs/transit-extensions.md has the API and the guarantees).
//!
//! Each (named key, subject) pair gets a random 256-bit subject key, made on
//! first use. A message for a subject is sealed with the named key's type
//! under
//!
//! ```text
//! K = HKDF-SHA-256(salt = subject key, ikm = the version's key (derived for
//!     `context` on derived keys), info = DATA_INFO | id | generation (u32 BE))
//! ```
//!
//! so opening it needs both the named key's version and the subject key:
//! destroying the subject key leaves every ciphertext of that subject
//! undecryptable, while rotation, `min_decryption_version` and trim keep
//! applying as to any ciphertext of the named key.
//!
//! The subject's name stays inside the barrier. Ciphertexts and storage paths
//! carry its id, the first 16 bytes of HMAC-SHA-256(K_id, subject) with
//! K_id = HKDF-SHA-256(index key, info = ID_INFO): the same subject always has
//! the same id under one named key, and nobody without the key can tell whose
//! id it is. A subject ciphertext reads `vault:v{N}:s{G}.{base64url(id)}:{base64}`.
//!
//! Stored at `subject/{key name}/{hex id}` (JSON through the barrier). The
//! subject key is wrapped with AES-256-GCM (AAD = id | generation) under
//! K_wrap = HKDF-SHA-256(index key, info = WRAP_INFO); the index key belongs to
//! the named key (not to a version), so a wrapped key survives rotations and
//! trims and travels with the named key's backups. Destroying overwrites the
//! row with a tombstone (generation and times only: no key, no name); the next
//! use of the same subject makes a new key of the next generation, which
//! opens none of the old ciphertexts.
//!
//! The decrypted keys are cached (bounded, wiped on eviction, on seal and when
//! destroyed) with the generation rule of `store.rs`: a load that raced a
//! change is used once and not kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::Transit;
use super::crypto::{self, HashAlg, KeyType};
use super::key::TransitKey;
use super::ops::ItemError;
use crate::barrier::Unsealed;
use crate::logical::{LogicalError, Response};
use crate::storage::{Expect, StorageError};

/// Storage prefix of subject records.
pub(super) const SUBJECT_PREFIX: &str = "subject/";

/// Bytes of a subject id.
pub(super) const ID_LEN: usize = 16;

pub(super) type SubjectId = [u8; ID_LEN];

const ID_INFO: &[u8] = b"vault-transit-subject-id-v1";
const WRAP_INFO: &[u8] = b"vault-transit-subject-wrap-v1";
const WRAP_AAD: &[u8] = b"vault-transit-subject-key-v1\0";
const DATA_INFO: &[u8] = b"vault-transit-subject-data-v1\0";
const NONCE_INFO: &[u8] = b"vault-transit-subject-nonce-v1\0";

/// Decrypted subject keys kept in memory per mount (about 100 bytes each).
const CACHE_MAX: usize = 65_536;
/// Distinct subjects one request may name.
pub(super) const MAX_PER_REQUEST: usize = 10_000;
/// Longest subject name (bytes).
const MAX_NAME: usize = 512;
const RETRIES: usize = 8;

fn bad(msg: impl Into<String>) -> LogicalError {
    LogicalError::InvalidRequest(msg.into())
}

/// A subject name: any text without `/` (it is a path segment of the
/// management API) or control characters, 1 to 512 bytes.
pub(super) fn check_subject(s: &str) -> Result<(), ItemError> {
    if s.is_empty() || s.len() > MAX_NAME || s.contains('/') || s.chars().any(char::is_control) {
        return Err(ItemError::new("invalid subject: use 1 to 512 bytes of text without '/' or control characters"));
    }
    Ok(())
}

fn path(name: &str, id: &SubjectId) -> String {
    format!("{SUBJECT_PREFIX}{name}/{}", hex::encode(id))
}

/// Mount-wide erasure markers (a tombstone record per erased id).
const ERASED_PREFIX: &str = "subject-erased/";

fn erased_path(id: &SubjectId) -> String {
    format!("{ERASED_PREFIX}{}", hex::encode(id))
}

/// `subject/{name}/{hex id}` → (name, id).
pub(super) fn parse_path(p: &str) -> Option<(&str, SubjectId)> {
    let (name, id) = p.strip_prefix(SUBJECT_PREFIX)?.rsplit_once('/')?;
    let mut out = [0u8; ID_LEN];
    hex::decode_to_slice(id, &mut out).ok()?;
    Some((name, out))
}

/// `subject-erased/{hex id}` → id.
pub(super) fn parse_erased_path(p: &str) -> Option<SubjectId> {
    let mut out = [0u8; ID_LEN];
    hex::decode_to_slice(p.strip_prefix(ERASED_PREFIX)?, &mut out).ok()?;
    Some(out)
}

/// A subject's key, decrypted. Never printed.
pub(super) struct SubjectKey {
    pub(super) id: SubjectId,
    pub(super) generation: u32,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectKey").field("id", &hex::encode(self.id)).field("generation", &self.generation).finish()
    }
}

impl SubjectKey {
    fn derive(&self, info: &[u8], ikm: &[u8]) -> Result<Zeroizing<Vec<u8>>, ItemError> {
        let generation = self.generation.to_be_bytes();
        Ok(crypto::derive_salted(&self.key[..], ikm, &[info, &self.id, &generation], ikm.len())?)
    }

    /// The message key from the version's (or context's) key.
    pub(super) fn data_key(&self, base: &[u8]) -> Result<Zeroizing<Vec<u8>>, ItemError> {
        self.derive(DATA_INFO, base)
    }

    /// The convergent nonce key from the version's one.
    pub(super) fn nonce_key(&self, base: &[u8]) -> Result<Zeroizing<Vec<u8>>, ItemError> {
        self.derive(NONCE_INFO, base)
    }

    /// The ciphertext tag, `s{generation}.{base64url(id)}`.
    pub(super) fn tag(&self) -> String {
        format!("s{}.{}", self.generation, B64URL.encode(self.id))
    }
}

/// The (generation, id) a ciphertext's tag names.
pub(super) fn parse_tag(tag: &str) -> Option<(u32, SubjectId)> {
    let (g, id) = tag.strip_prefix('s')?.split_once('.')?;
    if g.is_empty() || !g.bytes().all(|b| b.is_ascii_digit()) || g.starts_with('0') {
        return None;
    }
    let g: u32 = g.parse().ok()?;
    let raw = B64URL.decode(id).ok()?;
    Some((g, raw.try_into().ok()?))
}

/// The keys a named key gives its subjects: ids and wrapping.
pub(super) struct Ids {
    id_key: Zeroizing<Vec<u8>>,
    wrap_key: Zeroizing<Vec<u8>>,
}

impl Ids {
    /// `None` for a key without an index key (stored before they existed).
    /// Derived once per loaded key and kept with it.
    pub(super) fn of(k: &TransitKey) -> Result<Option<&Self>, LogicalError> {
        if let Some(ids) = k.subject_ids.get() {
            return Ok(ids.as_ref());
        }
        let ids = match k.index_key.as_deref() {
            None => None,
            Some(ik) => {
                let d = |info: &[u8]| crypto::derive(&ik[..], info, 32).map_err(LogicalError::internal);
                Some(Self { id_key: d(ID_INFO)?, wrap_key: d(WRAP_INFO)? })
            }
        };
        Ok(k.subject_ids.get_or_init(|| ids).as_ref())
    }

    pub(super) fn id(&self, subject: &str) -> SubjectId {
        // HMAC accepts any key length; the error cannot happen.
        let mac = crypto::hmac(HashAlg::Sha2_256, &self.id_key, subject.as_bytes()).unwrap_or_default();
        let mut id = [0u8; ID_LEN];
        if mac.len() >= ID_LEN {
            id.copy_from_slice(&mac[..ID_LEN]);
        }
        id
    }

    fn aad(id: &SubjectId, generation: u32) -> Vec<u8> {
        [WRAP_AAD, &id[..], &generation.to_be_bytes()].concat()
    }

    fn wrap(&self, id: &SubjectId, generation: u32, key: &[u8; 32]) -> Result<Vec<u8>, LogicalError> {
        crypto::seal(KeyType::Aes256Gcm96, &self.wrap_key, None, key, &Self::aad(id, generation))
            .map_err(LogicalError::internal)
    }

    fn unwrap(&self, id: &SubjectId, generation: u32, wrapped: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
        let plain = crypto::open(KeyType::Aes256Gcm96, &self.wrap_key, wrapped, &Self::aad(id, generation)).ok()?;
        let mut key = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return None;
        }
        key.copy_from_slice(&plain);
        Some(key)
    }
}

/// A subject's stored record. A tombstone has neither `subject` nor
/// `wrapped`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    id: String,
    generation: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    /// base64 of the wrapped key (nonce | ciphertext | tag): no secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped: Option<String>,
    created_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    destroyed_time: Option<i64>,
}

impl Record {
    fn decode(raw: &[u8]) -> Result<Self, LogicalError> {
        serde_json::from_slice(raw).map_err(|_| LogicalError::internal("stored subject record is malformed"))
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn is_live(&self) -> bool {
        self.wrapped.is_some() && self.destroyed_time.is_none()
    }

    /// This record's tombstone: generation and times, no key, no name.
    fn tombstone(&self, now: i64) -> Record {
        Record {
            id: self.id.clone(),
            generation: self.generation,
            subject: None,
            wrapped: None,
            created_time: self.created_time,
            destroyed_time: Some(self.destroyed_time.unwrap_or(now)),
        }
    }

    fn id(&self) -> Option<SubjectId> {
        let mut out = [0u8; ID_LEN];
        hex::decode_to_slice(&self.id, &mut out).ok().map(|()| out)
    }

    /// The decrypted key of a live record.
    fn open(&self, ids: &Ids) -> Option<SubjectKey> {
        let id = self.id()?;
        let wrapped = B64.decode(self.wrapped.as_deref()?).ok()?;
        let key = ids.unwrap(&id, self.generation, &wrapped)?;
        Some(SubjectKey { id, generation: self.generation, key })
    }

    fn describe(&self) -> Value {
        let time = |t: i64| crate::logical::fields::rfc3339(t);
        let mut m = json!({
            "id": self.id,
            "generation": self.generation,
            "created_time": time(self.created_time),
            "destroyed": !self.is_live(),
        });
        if let Some(s) = &self.subject {
            m["subject"] = s.clone().into();
        }
        if let Some(t) = self.destroyed_time {
            m["destroyed_time"] = time(t).into();
        }
        m
    }
}

/// What storage says of a subject id.
#[derive(Debug, Clone)]
pub(super) enum Lookup {
    Live(Arc<SubjectKey>),
    /// Destroyed up to this generation.
    Destroyed(u32),
    Missing,
}

// ---------------------------------------------------------------------------
// The cache
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Inner {
    map: HashMap<(String, SubjectId), Arc<SubjectKey>>,
    generation: u64,
}

/// The decrypted subject keys of one mount.
#[derive(Default)]
pub(super) struct Cache {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("subjects::Cache(..)")
    }
}

impl Cache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, name: &str, id: &SubjectId) -> Result<Arc<SubjectKey>, u64> {
        let inner = self.lock();
        // A borrowed key for the lookup would need a custom trait; the
        // allocation is one short string.
        inner.map.get(&(name.to_string(), *id)).cloned().ok_or(inner.generation)
    }

    /// Keep `key` unless anything changed since `generation` was read.
    fn keep(&self, generation: u64, name: &str, key: Arc<SubjectKey>) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.map.len() >= CACHE_MAX {
            // Drop an eighth, whichever the table yields first: a bound, not
            // a recency policy (a miss costs one storage read).
            let drop: Vec<_> = inner.map.keys().take(CACHE_MAX / 8).cloned().collect();
            for k in drop {
                inner.map.remove(&k);
            }
        }
        inner.map.insert((name.to_string(), key.id), key);
    }

    /// The subject changed in storage (here or on another server).
    pub(super) fn invalidate(&self, name: &str, id: &SubjectId) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.map.remove(&(name.to_string(), *id));
    }

    /// `id` under every key name (an erasure is mount-wide).
    pub(super) fn invalidate_id(&self, id: &SubjectId) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.map.retain(|(_, i), _| i != id);
    }

    /// Every subject of `name` (the key was deleted or restored).
    pub(super) fn invalidate_key(&self, name: &str) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.map.retain(|(n, _), _| n != name);
    }

    /// Everything (seal, lost change feed): the keys are wiped as they drop.
    pub(super) fn clear(&self) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.map.clear();
    }
}

// ---------------------------------------------------------------------------
// What a request needs
// ---------------------------------------------------------------------------

/// The subjects of one request, resolved before its items run.
#[derive(Default)]
pub(super) struct Resolved {
    names: HashMap<String, SubjectId>,
    keys: HashMap<SubjectId, Lookup>,
}

impl Resolved {
    /// The id of `subject` (named by an item).
    fn id_of(&self, subject: &str) -> Result<SubjectId, ItemError> {
        self.names.get(subject).copied().ok_or_else(|| ItemError::new("subject key not found"))
    }

    /// The key to encrypt for `subject`.
    pub(super) fn for_encrypt(&self, subject: &str) -> Result<&SubjectKey, ItemError> {
        match self.keys.get(&self.id_of(subject)?) {
            Some(Lookup::Live(k)) => Ok(k),
            _ => Err(ItemError::new("subject key not found")),
        }
    }

    /// The key that opens a ciphertext tagged (`generation`, `id`), checked
    /// against the `subject` the item names (if any).
    pub(super) fn for_decrypt(
        &self,
        tag: Option<(u32, SubjectId)>,
        subject: Option<&str>,
    ) -> Result<Option<&SubjectKey>, ItemError> {
        let Some((generation, id)) = tag else {
            return match subject {
                Some(_) => Err(ItemError::new("the ciphertext was not encrypted for a subject")),
                None => Ok(None),
            };
        };
        if let Some(s) = subject {
            // Ids are not secret; equal-length byte comparison is fine.
            if self.names.get(s) != Some(&id) {
                return Err(ItemError::new("the ciphertext belongs to a different subject"));
            }
        }
        let destroyed =
            || ItemError::new("the subject's key was destroyed: this ciphertext can no longer be decrypted");
        match self.keys.get(&id) {
            Some(Lookup::Live(k)) if k.generation == generation => Ok(Some(k)),
            Some(Lookup::Live(k)) if k.generation > generation => Err(destroyed()),
            Some(Lookup::Destroyed(g)) if *g >= generation => Err(destroyed()),
            _ => Err(ItemError::new("subject key not found: destroyed, or never made under this key")),
        }
    }
}

/// The `subject` an item names (in a batch, the request's when the item
/// names none).
pub(super) fn item_subject<'a>(
    item: &'a Map<String, Value>,
    data: &'a Map<String, Value>,
    batch: bool,
) -> Result<Option<&'a str>, ItemError> {
    let v = match item.get("subject") {
        None if batch => data.get("subject"),
        v => v,
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            check_subject(s)?;
            Ok(Some(s))
        }
        Some(_) => Err(ItemError::new("'subject' must be a string")),
    }
}

/// Whether any item of the request names a subject.
pub(super) fn any_subject(data: &Map<String, Value>, list: &[&Map<String, Value>]) -> bool {
    data.get("subject").is_some_and(|v| !v.is_null())
        || list.iter().any(|i| i.get("subject").is_some_and(|v| !v.is_null()))
}

fn is_conflict(e: &crate::barrier::BarrierError) -> bool {
    matches!(e, crate::barrier::BarrierError::Storage(StorageError::Conflict(_)))
}

async fn backoff(attempt: usize) {
    let mut r = [0u8; 1];
    crate::crypto::random::fill(&mut r);
    let ms = (1u64 << attempt.min(5)) + u64::from(r[0] % 8);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

impl Transit {
    /// The stored record of `id`, and its revision.
    async fn subject_record(
        &self,
        u: &Unsealed,
        name: &str,
        id: &SubjectId,
    ) -> Result<Option<(Record, i64)>, LogicalError> {
        match Box::pin(self.view.get_with_rev(u, &path(name, id))).await? {
            None => Ok(None),
            Some((raw, rev)) => Ok(Some((Record::decode(&raw)?, rev))),
        }
    }

    /// What storage (or the cache) says of `id`.
    async fn lookup(&self, u: &Unsealed, ids: &Ids, name: &str, id: &SubjectId) -> Result<Lookup, LogicalError> {
        let generation = match self.subjects.get(name, id) {
            Ok(k) => return Ok(Lookup::Live(k)),
            Err(g) => g,
        };
        let Some((rec, _)) = self.subject_record(u, name, id).await? else {
            return Ok(match self.erased(u, id).await? {
                Some(g) => Lookup::Destroyed(g),
                None => Lookup::Missing,
            });
        };
        if !rec.is_live() {
            return Ok(Lookup::Destroyed(rec.generation));
        }
        // The mount-wide marker wins over a live row: a copy of the key
        // restored under another name, or by a restore that raced the
        // erasure, is as destroyed as the original.
        if let Some(g) = self.erased(u, id).await?
            && g >= rec.generation
        {
            self.retire_copy(u, name, id).await;
            return Ok(Lookup::Destroyed(g));
        }
        let key = Arc::new(rec.open(ids).ok_or_else(|| LogicalError::internal("stored subject key does not open"))?);
        self.subjects.keep(generation, name, key.clone());
        Ok(Lookup::Live(key))
    }

    /// Overwrite a live row of an erased subject with its tombstone (best
    /// effort: the row is unusable anyway, this removes the copy).
    async fn retire_copy(&self, u: &Unsealed, name: &str, id: &SubjectId) {
        let Ok(Some((rec, rev))) = self.subject_record(u, name, id).await else { return };
        if !rec.is_live() {
            return;
        }
        let tomb = rec.tombstone(self.clock.now_unix());
        let mut batch = self.view.batch();
        batch.put_expect(u, &path(name, id), &tomb.encode(), Expect::Rev(rev));
        if Box::pin(batch.commit()).await.is_ok() {
            self.subjects.invalidate(name, id);
            tracing::info!(mount = self.view.prefix(), key = name, subject_id = %hex::encode(id), "copy of an erased subject key retired");
        }
    }

    /// Resolve a request's subjects: `named` ones get their ids (to check
    /// ciphertexts against), those in `create` are also looked up and made
    /// when missing, and those its ciphertexts are tagged with (`tagged`)
    /// are looked up, never made.
    pub(super) async fn resolve_subjects(
        &self,
        u: &Unsealed,
        key: &TransitKey,
        name: &str,
        named: &[&str],
        create: &[&str],
        tagged: &[SubjectId],
    ) -> Result<Resolved, LogicalError> {
        let mut out = Resolved::default();
        if named.is_empty() && create.is_empty() && tagged.is_empty() {
            return Ok(out);
        }
        let Some(ids) = Ids::of(key)? else {
            // A key from before index keys has no subject yet.
            if !create.is_empty() {
                return Err(LogicalError::internal("the key has no index key"));
            }
            return Ok(out);
        };
        for s in named.iter().chain(create) {
            out.names.insert((*s).to_string(), ids.id(s));
        }
        let to_create: Vec<(&str, SubjectId)> = create.iter().map(|s| (*s, ids.id(s))).collect();
        let mut wanted: Vec<SubjectId> = tagged.to_vec();
        wanted.extend(to_create.iter().map(|(_, id)| *id));
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.len() > MAX_PER_REQUEST || out.names.len() > MAX_PER_REQUEST {
            return Err(bad(format!("a request may name at most {MAX_PER_REQUEST} distinct subjects")));
        }
        for id in &wanted {
            let found = self.lookup(u, ids, name, id).await?;
            out.keys.insert(*id, found);
        }
        let missing: Vec<(&str, SubjectId)> =
            to_create.into_iter().filter(|(_, id)| !matches!(out.keys.get(id), Some(Lookup::Live(_)))).collect();
        if !missing.is_empty() {
            let made = self.make_subjects(u, ids, name, &missing).await?;
            out.keys.extend(made.into_iter().map(|(id, k)| (id, Lookup::Live(k))));
        }
        Ok(out)
    }

    /// The erasure marker of `id` (mount-wide: it outlives the key's name,
    /// so no restore under any name brings the subject back).
    async fn erased(&self, u: &Unsealed, id: &SubjectId) -> Result<Option<u32>, LogicalError> {
        match Box::pin(self.view.get(u, &erased_path(id))).await? {
            None => Ok(None),
            Some(raw) => Ok(Some(Record::decode(&raw)?.generation)),
        }
    }

    /// Make keys for subjects that have none (absent, or destroyed: the next
    /// generation), in one atomic write; retried when another writer made or
    /// destroyed one of them meanwhile.
    async fn make_subjects(
        &self,
        u: &Unsealed,
        ids: &Ids,
        name: &str,
        missing: &[(&str, SubjectId)],
    ) -> Result<Vec<(SubjectId, Arc<SubjectKey>)>, LogicalError> {
        'attempt: for attempt in 0..RETRIES {
            let mut batch = self.view.batch();
            let mut made = Vec::with_capacity(missing.len());
            let now = self.clock.now_unix();
            for (subject, id) in missing {
                let current = self.subject_record(u, name, id).await?;
                // After an erasure (under this name or another copy of the
                // key) the next key has the next generation, so the old
                // ciphertexts say "destroyed" rather than fail to open.
                let erased = self.erased(u, id).await?.unwrap_or(0);
                let (generation, expect) = match &current {
                    None => (erased.checked_add(1).ok_or_else(|| bad("subject out of generations"))?, Expect::Absent),
                    Some((rec, _)) if rec.is_live() && erased < rec.generation => {
                        // Made by another request meanwhile: use it.
                        let key =
                            rec.open(ids).ok_or_else(|| LogicalError::internal("stored subject key does not open"))?;
                        made.push((*id, Arc::new(key)));
                        continue;
                    }
                    Some((rec, rev)) => {
                        let g = rec
                            .generation
                            .max(erased)
                            .checked_add(1)
                            .ok_or_else(|| bad("subject out of generations"))?;
                        (g, Expect::Rev(*rev))
                    }
                };
                let key = crate::crypto::random::key32().map_err(LogicalError::internal)?;
                let wrapped = ids.wrap(id, generation, &key)?;
                let rec = Record {
                    id: hex::encode(id),
                    generation,
                    subject: Some((*subject).to_string()),
                    wrapped: Some(B64.encode(wrapped)),
                    created_time: now,
                    destroyed_time: None,
                };
                batch.put_expect(u, &path(name, id), &rec.encode(), expect);
                made.push((*id, Arc::new(SubjectKey { id: *id, generation, key })));
            }
            match Box::pin(batch.commit()).await {
                Ok(()) => {
                    for (_, id) in missing {
                        self.subjects.invalidate(name, id);
                    }
                    return Ok(made);
                }
                Err(e) if is_conflict(&e) => {
                    backoff(attempt).await;
                    continue 'attempt;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogicalError::Conflict("too many concurrent changes of these subjects; try again".into()))
    }

    /// `DELETE subjects/{name}/{subject}`: destroy the subject's key.
    pub(super) async fn destroy_subject(
        &self,
        u: &Unsealed,
        name: &str,
        subject: &str,
    ) -> Result<Response, LogicalError> {
        check_subject(subject).map_err(|e| bad(e.to_string()))?;
        let key = self.key_with_index(u, name).await?;
        let ids = Ids::of(&key)?.ok_or_else(|| LogicalError::internal("the key has no index key"))?;
        let id = ids.id(subject);
        let p = path(name, &id);
        for attempt in 0..RETRIES {
            let current = self.subject_record(u, name, &id).await?;
            let erased = self.erased(u, &id).await?;
            let now = self.clock.now_unix();
            let tombstone = |generation: u32, created_time: i64| Record {
                id: hex::encode(id),
                generation,
                subject: None,
                wrapped: None,
                created_time,
                destroyed_time: Some(now),
            };
            let mut batch = self.view.batch();
            let tomb = match current {
                // Already destroyed here: only the mount-wide marker may be
                // missing (a tombstone restored from a backup).
                Some((rec, _)) if !rec.is_live() => rec,
                Some((rec, rev)) => {
                    let tomb = tombstone(rec.generation, rec.created_time);
                    batch.put_expect(u, &p, &tomb.encode(), Expect::Rev(rev));
                    tomb
                }
                // Never used under this name: record the erasure anyway, so
                // no restore can bring a key for this subject back.
                None => {
                    let tomb = tombstone(erased.unwrap_or(0), now);
                    batch.put_expect(u, &p, &tomb.encode(), Expect::Absent);
                    tomb
                }
            };
            if erased.is_none_or(|g| g < tomb.generation) {
                batch.put(u, &erased_path(&id), &tomb.encode());
            }
            // Copies of the same key restored under other names hold the
            // same subject key: they are retired in the same commit.
            let copies = self.copies_elsewhere(u, name, &id).await?;
            for (other, rec, rev) in &copies {
                batch.put_expect(u, &path(other, &id), &rec.tombstone(now).encode(), Expect::Rev(*rev));
            }
            match Box::pin(batch.commit()).await {
                Ok(()) => {}
                Err(e) if is_conflict(&e) => {
                    backoff(attempt).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            self.subjects.invalidate_id(&id);
            if let Err(e) = Box::pin(self.view.scrub()).await {
                tracing::warn!(error = %e, "could not checkpoint storage after destroying a subject key");
            }
            // The id, not the subject: its name must not outlive the erasure
            // in the server's logs either.
            tracing::info!(mount = self.view.prefix(), key = name, subject_id = %hex::encode(id), "subject key destroyed");
            return Ok(Response::NoContent);
        }
        Err(LogicalError::Conflict("too many concurrent changes of this subject; try again".into()))
    }

    /// Live rows of `id` under key names other than `name`.
    async fn copies_elsewhere(
        &self,
        u: &Unsealed,
        name: &str,
        id: &SubjectId,
    ) -> Result<Vec<(String, Record, i64)>, LogicalError> {
        let mut out = Vec::new();
        for dir in Box::pin(self.view.list(u, SUBJECT_PREFIX)).await? {
            let Some(other) = dir.strip_suffix('/') else { continue };
            if other == name {
                continue;
            }
            if let Some((rec, rev)) = self.subject_record(u, other, id).await?
                && rec.is_live()
            {
                out.push((other.to_string(), rec, rev));
            }
        }
        Ok(out)
    }

    /// `GET subjects/{name}/{subject}`.
    pub(super) async fn read_subject(&self, u: &Unsealed, name: &str, subject: &str) -> Result<Response, LogicalError> {
        check_subject(subject).map_err(|e| bad(e.to_string()))?;
        let key = self.key(u, name).await?;
        let Some(ids) = Ids::of(&key)? else { return Err(LogicalError::NotFound) };
        let id = ids.id(subject);
        let (rec, _) = self.subject_record(u, name, &id).await?.ok_or(LogicalError::NotFound)?;
        Ok(Response::json(rec.describe()))
    }

    /// `LIST subjects/{name}`: the subjects with a live key.
    pub(super) async fn list_subjects(&self, u: &Unsealed, name: &str) -> Result<Response, LogicalError> {
        // The key must exist (a 400 as for any operation on a missing key).
        self.key(u, name).await?;
        let mut names = Vec::new();
        let mut info = Map::new();
        for (rec, _) in self.subject_records(u, name).await? {
            let erased = match rec.id() {
                Some(id) if rec.is_live() => self.erased(u, &id).await?.is_some_and(|g| g >= rec.generation),
                _ => false,
            };
            if let (true, false, Some(s)) = (rec.is_live(), erased, rec.subject.clone()) {
                info.insert(s.clone(), rec.describe());
                names.push(s);
            }
        }
        if names.is_empty() {
            return Err(LogicalError::NotFound);
        }
        names.sort();
        Ok(Response::json(json!({"keys": names, "key_info": info})))
    }

    /// Every subject record of `name` (live and destroyed) with its path.
    pub(super) async fn subject_records(
        &self,
        u: &Unsealed,
        name: &str,
    ) -> Result<Vec<(Record, String)>, LogicalError> {
        let dir = format!("{SUBJECT_PREFIX}{name}/");
        let mut out = Vec::new();
        for child in Box::pin(self.view.list(u, &dir)).await? {
            if child.ends_with('/') {
                continue;
            }
            let p = format!("{dir}{child}");
            if let Some(raw) = Box::pin(self.view.get(u, &p)).await? {
                out.push((Record::decode(&raw)?, p));
            }
        }
        Ok(out)
    }
}

/// Subject records in a backup: checked to open under the restored key.
pub(super) fn check_records(k: &TransitKey, records: &[Record]) -> Result<(), LogicalError> {
    let ids = Ids::of(k)?;
    for r in records {
        let id = r.id().ok_or_else(|| bad("invalid backup"))?;
        if r.is_live() {
            let ok = ids.and_then(|ids| r.open(ids)).is_some_and(|key| key.id == id);
            let named = r.subject.as_deref().is_some_and(|s| ids.is_some_and(|ids| ids.id(s) == id));
            if !ok || !named {
                return Err(bad("invalid backup: a subject key does not belong to this key"));
            }
        }
    }
    Ok(())
}

impl Transit {
    /// Of a backup's subject records, the ones this mount may take: a live
    /// key only if its subject was not erased here at or after its
    /// generation (under any key name).
    /// After a restore under `name`: retire restored rows whose subject was
    /// erased meanwhile.
    pub(super) async fn retire_erased(&self, u: &Unsealed, name: &str, records: &[Record]) -> Result<(), LogicalError> {
        for r in records.iter().filter(|r| r.is_live()) {
            if let Some(id) = r.id()
                && self.erased(u, &id).await?.is_some_and(|g| g >= r.generation)
            {
                self.retire_copy(u, name, &id).await;
            }
        }
        Ok(())
    }

    /// Tombstones in a backup stay tombstones of the key they are restored
    /// under: nothing in a backup can erase a subject mount-wide (it is
    /// caller input, and a tombstone names no key it could be checked
    /// against).
    pub(super) async fn restorable(&self, u: &Unsealed, records: Vec<Record>) -> Result<Vec<Record>, LogicalError> {
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let id = r.id().ok_or_else(|| bad("invalid backup"))?;
            if r.is_live() && self.erased(u, &id).await?.is_some_and(|g| g >= r.generation) {
                continue;
            }
            out.push(r);
        }
        Ok(out)
    }
}

/// Whether a stored record can stay beside `k` restored over its name: a
/// tombstone always, a live key if it opens under `k`.
pub(super) fn opens_under(k: &TransitKey, rec: &Record) -> bool {
    !rec.is_live() || Ids::of(k).ok().flatten().is_some_and(|ids| rec.open(ids).is_some())
}

impl Record {
    pub(super) fn to_bytes(&self) -> Vec<u8> {
        self.encode()
    }

    pub(super) fn from_bytes(raw: &[u8]) -> Result<Self, LogicalError> {
        serde_json::from_slice(raw).map_err(|_| bad("invalid backup"))
    }

    /// Its storage path under the key `name`.
    pub(super) fn path_under(&self, name: &str) -> Option<String> {
        self.id().map(|id| path(name, &id))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_reject_other_spellings() {
        let k = SubjectKey { id: [7; ID_LEN], generation: 12, key: Zeroizing::new([1; 32]) };
        assert_eq!(parse_tag(&k.tag()), Some((12, [7; ID_LEN])));
        for bad in [
            "",
            "s",
            "s1",
            "s1.",
            "s0.BwcHBwcHBwcHBwcHBwcHBw",
            "s01.BwcHBwcHBwcHBwcHBwcHBw",
            "x1.BwcHBwcHBwcHBwcHBwcHBw",
            "s1.BwcH",
        ] {
            assert!(parse_tag(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn debug_shows_no_key_byte() {
        let k = SubjectKey { id: [7; ID_LEN], generation: 1, key: Zeroizing::new([0xAB; 32]) };
        let s = format!("{k:?}");
        assert!(!s.to_lowercase().contains("abab"), "{s}");
        assert!(!s.contains("171"), "{s}");
    }

    #[test]
    fn subject_names_are_checked() {
        for ok in ["a", "alice@example.com", "Zoë 42", &"x".repeat(512)] {
            assert!(check_subject(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "a\nb", "\u{0}", &"x".repeat(513)] {
            assert!(check_subject(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_load_that_raced_a_destroy_is_not_kept() {
        let cache = Cache::default();
        let key = || Arc::new(SubjectKey { id: [1; ID_LEN], generation: 1, key: Zeroizing::new([9; 32]) });
        // A loader notes the generation, a destroy lands, the loader's copy
        // must not be kept.
        let seen = cache.get("k", &[1; ID_LEN]).unwrap_err();
        cache.invalidate("k", &[1; ID_LEN]);
        cache.keep(seen, "k", key());
        assert!(cache.get("k", &[1; ID_LEN]).is_err());
        // The same for a deleted or restored key, and for a seal.
        for change in [|c: &Cache| c.invalidate_key("k"), |c: &Cache| c.clear()] {
            let seen = cache.get("k", &[1; ID_LEN]).unwrap_err();
            change(&cache);
            cache.keep(seen, "k", key());
            assert!(cache.get("k", &[1; ID_LEN]).is_err());
        }
        // Without a change it is kept, and a destroy drops it.
        let seen = cache.get("k", &[1; ID_LEN]).unwrap_err();
        cache.keep(seen, "k", key());
        assert!(cache.get("k", &[1; ID_LEN]).is_ok());
        cache.invalidate("k", &[1; ID_LEN]);
        assert!(cache.get("k", &[1; ID_LEN]).is_err());
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = Cache::default();
        for i in 0..(CACHE_MAX + 10) as u32 {
            let mut id = [0u8; ID_LEN];
            id[..4].copy_from_slice(&i.to_be_bytes());
            let seen = cache.get("k", &id).unwrap_err();
            cache.keep(seen, "k", Arc::new(SubjectKey { id, generation: 1, key: Zeroizing::new([0; 32]) }));
        }
        assert!(cache.lock().map.len() <= CACHE_MAX);
    }

    #[test]
    fn paths_parse_back() {
        let id = [0x5a; ID_LEN];
        assert_eq!(parse_path(&path("k.1", &id)), Some(("k.1", id)));
        assert!(parse_path("subject/k/zz").is_none());
        assert!(parse_path("policy/k").is_none());
    }
}
