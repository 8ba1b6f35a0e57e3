//! The token store. Tokens are `hvs.` + 24 base62 characters (Vault's root
//! token shape, ~143 bits of entropy). A token is stored only under its keyed
//! hash (HMAC-SHA-256 with a key kept inside the barrier), so neither the
//! database nor a backup of it yields a usable token; accessors likewise.
//!
//! ```text
//! sys/token/id/<mac(token)>                 -> TokenEntry (JSON, barrier-encrypted)
//! sys/token/accessor/<mac(accessor)>        -> <mac(token)>
//! sys/token/parent/<mac(parent)>/<mac(child)> -> (marker; children are revoked with their parent)
//! ```
//!
//! Lookups are cached in memory by keyed hash ([`Guarded`]: a lookup that
//! raced a revocation never caches the revoked entry); revocation drops the
//! entry once its delete has committed, and other servers drop theirs when
//! PostgreSQL announces the change. Tokens with a use limit are never cached
//! (each use is a write).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::barrier::{Barrier, BarrierError, Batch, Unsealed};
use crate::cache::{Guarded, Signal};
use crate::crypto::hmac::HmacKey;
use crate::crypto::random;
use crate::storage::{Expect, StorageError};

/// Barrier path of the HMAC key for token lookups.
pub const HMAC_KEY_PATH: &str = "core/token-hmac-key";
/// Storage prefix of token entries.
pub const ID_PREFIX: &str = "sys/token/id/";
const ACCESSOR_PREFIX: &str = "sys/token/accessor/";
const PARENT_PREFIX: &str = "sys/token/parent/";
/// Tokens by the auth mount that issued them, so disabling the mount revokes them.
const MOUNT_PREFIX: &str = "sys/token/mount/";
const LABEL_ID: &[u8] = b"token-id";
const LABEL_ACCESSOR: &[u8] = b"token-accessor";
/// Characters after the `hvs.` prefix.
pub const TOKEN_RANDOM_LEN: usize = 24;
/// Deepest token tree a token may be used in (a token and its ancestors).
pub const MAX_DEPTH: usize = 32;
/// Total token length (also the generate-root OTP length).
pub const TOKEN_LEN: usize = 4 + TOKEN_RANDOM_LEN;
/// Vault's system default and maximum TTL: 768 hours.
pub const SYSTEM_MAX_TTL: u64 = 768 * 3600;
const CACHE_LIMIT: usize = 100_000;
/// Bytes of token entries cached (their stored JSON): callers choose `meta`,
/// so entries are weighed, and one over 4 MiB is never cached.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// What is stored about a token (never the token itself).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TokenEntry {
    /// Keyed hash of the token: its storage key and identity for parent links.
    pub id: String,
    /// Public handle for the token (lookup/revoke without knowing it).
    pub accessor: String,
    /// Attached policies.
    pub policies: Vec<String>,
    /// Human-readable name.
    pub display_name: String,
    /// Creation path, e.g. "auth/token/create", "auth/approle/login".
    pub path: String,
    /// Creation time, Unix seconds.
    pub creation_time: i64,
    /// Expiry, Unix seconds (None: never).
    pub expire_time: Option<i64>,
    /// TTL at creation (or last renewal), seconds (0: none).
    pub creation_ttl: u64,
    /// Hard limit on the lifetime, seconds from creation (0: system maximum, or none for root/periodic).
    #[serde(default)]
    pub explicit_max_ttl: u64,
    /// Periodic token: each renewal resets the TTL to this (0: not periodic).
    #[serde(default)]
    pub period: u64,
    /// Remaining uses (0: unlimited).
    #[serde(default)]
    pub num_uses: u64,
    /// Metadata.
    #[serde(default)]
    pub meta: Map<String, Value>,
    /// Keyed hash of the parent token (None: orphan).
    #[serde(default)]
    pub parent: Option<String>,
    /// Whether it may be renewed.
    #[serde(default)]
    pub renewable: bool,
    /// CIDRs the token may be used from.
    #[serde(default)]
    pub bound_cidrs: Vec<String>,
    /// UUID of the auth mount that issued it (None: the token store).
    #[serde(default)]
    pub mount: Option<String>,
}

impl TokenEntry {
    /// Has the token expired at `now`?
    pub fn expired(&self, now: i64) -> bool {
        self.expire_time.is_some_and(|t| now >= t)
    }

    /// Seconds left (0 if none or expired).
    pub fn ttl_left(&self, now: i64) -> u64 {
        self.expire_time.map_or(0, |t| u64::try_from(t.saturating_sub(now)).unwrap_or(0))
    }

    /// Does the token carry the root policy?
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }

    /// Latest allowed expiry, Unix seconds (None: unbounded).
    fn max_expire(&self) -> Option<i64> {
        if self.explicit_max_ttl > 0 {
            Some(after(self.creation_time, self.explicit_max_ttl))
        } else if self.period > 0 || self.is_root() {
            None
        } else {
            Some(after(self.creation_time, SYSTEM_MAX_TTL))
        }
    }
}

/// `secs` seconds after `t`, saturating (durations are bounded where they
/// enter, `logical::fields::duration`; stored entries may predate that).
pub fn after(t: i64, secs: u64) -> i64 {
    t.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct TokenParams {
    /// Policies (already validated and normalized by the caller).
    pub policies: Vec<String>,
    /// Display name.
    pub display_name: String,
    /// Creation path.
    pub path: String,
    /// Requested TTL (0: default).
    pub ttl: u64,
    /// Hard cap (0: none beyond the system maximum).
    pub explicit_max_ttl: u64,
    /// Periodic.
    pub period: u64,
    /// Use limit.
    pub num_uses: u64,
    /// Metadata.
    pub meta: Map<String, Value>,
    /// Parent's keyed hash (None: orphan).
    pub parent: Option<String>,
    /// Renewable.
    pub renewable: bool,
    /// CIDR bindings.
    pub bound_cidrs: Vec<String>,
    /// UUID of the issuing auth mount.
    pub mount: Option<String>,
}

/// A token value as handed to a client: wiped from memory on drop.
pub type TokenSecret = Zeroizing<String>;

/// Token lookups and creation, keyed by the barrier-held HMAC key.
pub struct TokenStore {
    hmac: HmacKey,
    cache: Guarded<String, Arc<TokenEntry>>,
    #[cfg(test)]
    pub(crate) pauses: crate::testing::Pauses,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenStore")
    }
}

fn corrupt(_: serde_json::Error) -> BarrierError {
    BarrierError::Tampered("token entry".into())
}

impl TokenStore {
    fn with_key(key: Zeroizing<[u8; 32]>, signal: Option<Signal>) -> Self {
        Self {
            hmac: HmacKey::new(key),
            cache: Guarded::new(CACHE_LIMIT, CACHE_BYTES, signal),
            #[cfg(test)]
            pauses: Default::default(),
        }
    }

    /// A store with a fresh HMAC key, plus the batch entry that persists it (init).
    pub fn generate(u: &Unsealed, batch: &mut Batch) -> Result<Self, BarrierError> {
        let key = random::key32()?;
        batch.put(u, HMAC_KEY_PATH, &key[..]);
        Ok(Self::with_key(key, None))
    }

    /// Load the HMAC key after unseal. Every invalidation (revocation,
    /// renewal, a change announced by another server) moves `signal`.
    pub async fn load(barrier: &Barrier, u: &Unsealed, signal: Signal) -> Result<Self, BarrierError> {
        let raw = barrier.get(u, HMAC_KEY_PATH).await?.ok_or(BarrierError::Keyring)?;
        let mut key = Zeroizing::new([0u8; 32]);
        if raw.len() != 32 {
            return Err(BarrierError::Keyring);
        }
        key.copy_from_slice(&raw);
        Ok(Self::with_key(key, Some(signal)))
    }

    /// The keyed hash identifying `token`.
    pub fn id_of(&self, token: &str) -> String {
        self.hmac.mac_hex(LABEL_ID, token.as_bytes())
    }

    fn accessor_path(&self, accessor: &str) -> String {
        format!("{ACCESSOR_PREFIX}{}", self.hmac.mac_hex(LABEL_ACCESSOR, accessor.as_bytes()))
    }

    /// A new random token value.
    pub fn new_token_value() -> TokenSecret {
        Zeroizing::new(format!("hvs.{}", random::base62(TOKEN_RANDOM_LEN)))
    }

    /// Add a new token to `batch`; returns the token value and its entry.
    pub fn create(&self, u: &Unsealed, batch: &mut Batch, p: TokenParams, now: i64) -> (TokenSecret, TokenEntry) {
        let token = Self::new_token_value();
        let root = p.policies.iter().any(|x| x == "root");
        let ttl = if p.period > 0 {
            p.period.min(SYSTEM_MAX_TTL)
        } else if p.ttl == 0 && root {
            0
        } else {
            let t = if p.ttl == 0 { SYSTEM_MAX_TTL } else { p.ttl };
            t.min(SYSTEM_MAX_TTL)
        };
        let ttl =
            if p.explicit_max_ttl > 0 && (ttl == 0 || ttl > p.explicit_max_ttl) { p.explicit_max_ttl } else { ttl };
        let entry = TokenEntry {
            id: self.id_of(&token),
            accessor: random::base62(24),
            policies: p.policies,
            display_name: p.display_name,
            path: p.path,
            creation_time: now,
            expire_time: (ttl > 0).then(|| after(now, ttl)),
            creation_ttl: ttl,
            explicit_max_ttl: p.explicit_max_ttl,
            period: p.period,
            num_uses: p.num_uses,
            meta: p.meta,
            parent: p.parent,
            renewable: p.renewable && ttl > 0,
            bound_cidrs: p.bound_cidrs,
            mount: p.mount,
        };
        self.add(u, batch, &entry);
        (token, entry)
    }

    /// A root token (init, generate-root).
    pub fn create_root(&self, u: &Unsealed, batch: &mut Batch, now: i64) -> TokenSecret {
        let params = TokenParams {
            policies: vec!["root".into()],
            display_name: "root".into(),
            path: "auth/token/root".into(),
            ..Default::default()
        };
        self.create(u, batch, params, now).0
    }

    /// Write `entry` (with its accessor and parent index) into `batch`.
    pub fn add(&self, u: &Unsealed, batch: &mut Batch, entry: &TokenEntry) {
        let json = Zeroizing::new(serde_json::to_vec(entry).unwrap_or_default());
        batch.put(u, &format!("{ID_PREFIX}{}", entry.id), &json);
        batch.put(u, &self.accessor_path(&entry.accessor), entry.id.as_bytes());
        if let Some(parent) = &entry.parent {
            batch.put(u, &format!("{PARENT_PREFIX}{parent}/{}", entry.id), b"1");
        }
        if let Some(mount) = &entry.mount {
            batch.put(u, &format!("{MOUNT_PREFIX}{mount}/{}", entry.id), b"1");
        }
    }

    /// Revoke every token issued by the auth mount `mount` (it is being disabled).
    pub async fn revoke_mount(&self, barrier: &Barrier, u: &Unsealed, mount: &str) -> Result<usize, BarrierError> {
        let mut n = 0;
        for id in barrier.list(u, &format!("{MOUNT_PREFIX}{mount}/")).await? {
            n += self.revoke_tree(barrier, u, id.trim_end_matches('/')).await?;
            barrier.delete(&format!("{MOUNT_PREFIX}{mount}/{id}")).await?;
        }
        Ok(n)
    }

    /// The auth mounts (uuids) that have issued live tokens.
    pub async fn mounts_with_tokens(&self, barrier: &Barrier, u: &Unsealed) -> Result<Vec<String>, BarrierError> {
        let listed = barrier.list(u, MOUNT_PREFIX).await?;
        Ok(listed.into_iter().filter_map(|k| k.strip_suffix('/').map(String::from)).collect())
    }

    /// Replace a token value's entry (dev mode chooses the root token value).
    pub fn rebind(&self, u: &Unsealed, batch: &mut Batch, token: &str, old: &TokenEntry) -> TokenEntry {
        let mut entry = old.clone();
        entry.id = self.id_of(token);
        batch.delete(&format!("{ID_PREFIX}{}", old.id));
        self.add(u, batch, &entry);
        self.invalidate(&old.id);
        entry
    }

    /// Forget a cached entry (revoked here or by another server). Call it
    /// after the change has committed.
    pub fn invalidate(&self, id: &str) {
        self.cache.invalidate(id);
    }

    /// Forget every cached entry (change notifications may have been lost).
    /// (hits, misses) of the token cache, for metrics.
    pub fn cache_hits_misses(&self) -> (u64, u64) {
        self.cache.hits_misses()
    }

    pub fn invalidate_all(&self) {
        self.cache.clear();
    }

    /// Look up by keyed hash, without expiry filtering or caching.
    async fn load_entry(
        &self,
        barrier: &Barrier,
        u: &Unsealed,
        id: &str,
    ) -> Result<Option<(TokenEntry, i64)>, BarrierError> {
        let Some((raw, rev)) = barrier.get_with_rev(u, &format!("{ID_PREFIX}{id}")).await? else {
            return Ok(None);
        };
        Ok(Some((serde_json::from_slice(&raw).map_err(corrupt)?, rev)))
    }

    /// Look a token up by its value; expired tokens are absent.
    pub async fn lookup(
        &self,
        barrier: &Barrier,
        u: &Unsealed,
        token: &str,
        now: i64,
    ) -> Result<Option<Arc<TokenEntry>>, BarrierError> {
        self.lookup_id(barrier, u, &self.id_of(token), now).await
    }

    /// Look a token up by its keyed hash; expired tokens are absent.
    pub async fn lookup_id(
        &self,
        barrier: &Barrier,
        u: &Unsealed,
        id: &str,
        now: i64,
    ) -> Result<Option<Arc<TokenEntry>>, BarrierError> {
        if let Some(e) = self.cache.get(id) {
            return Ok((!e.expired(now)).then_some(e));
        }
        // The ticket before the read: a revocation committing meanwhile
        // withdraws the fill below (the entry read here is stale by then).
        let ticket = self.cache.ticket(id);
        let Some((raw, _)) = barrier.get_with_rev(u, &format!("{ID_PREFIX}{id}")).await? else { return Ok(None) };
        let entry: TokenEntry = serde_json::from_slice(&raw).map_err(corrupt)?;
        #[cfg(test)]
        self.pauses.at("lookup:before-fill").await;
        let entry = Arc::new(entry);
        if entry.num_uses == 0 {
            self.cache.fill(ticket, id.to_string(), entry.clone(), raw.len());
        }
        Ok((!entry.expired(now)).then_some(entry))
    }

    /// Whether every ancestor of `entry` still exists and has not expired:
    /// a token is valid only while the tree it hangs from is, whether its
    /// parent was revoked (whose children go too) or simply expired (whose
    /// children tidy revokes only at its next run). Lookups are cached, so
    /// this costs one cache hit per level. A tree deeper than
    /// [`MAX_DEPTH`] is refused rather than walked.
    ///
    /// Each token of the chain (this one included) that an auth method
    /// issued must still have that method: `mount_known` says whether a
    /// mount uuid is in the (cached) auth table; the uuids it does not know
    /// are pushed to `unknown` for the caller to check against storage.
    pub async fn ancestry_alive(
        &self,
        barrier: &Barrier,
        u: &Unsealed,
        entry: &Arc<TokenEntry>,
        now: i64,
        mount_known: &(dyn Fn(&str) -> bool + Sync),
        unknown: &mut Vec<String>,
    ) -> Result<bool, BarrierError> {
        let mut cur = entry.clone();
        for _ in 0..MAX_DEPTH {
            if let Some(m) = &cur.mount
                && !mount_known(m)
            {
                unknown.push(m.clone());
            }
            let Some(parent) = &cur.parent else { return Ok(true) };
            match self.lookup_id(barrier, u, parent, now).await? {
                Some(p) => cur = p,
                None => return Ok(false),
            }
        }
        Ok(false)
    }

    /// Look a token up by accessor.
    pub async fn lookup_accessor(
        &self,
        barrier: &Barrier,
        u: &Unsealed,
        accessor: &str,
        now: i64,
    ) -> Result<Option<Arc<TokenEntry>>, BarrierError> {
        let Some(id) = barrier.get(u, &self.accessor_path(accessor)).await? else { return Ok(None) };
        let id = String::from_utf8(id.to_vec()).map_err(|_| BarrierError::Tampered("accessor".into()))?;
        self.lookup_id(barrier, u, &id, now).await
    }

    /// Count one use of a use-limited token before the request runs (as
    /// Vault does); the last use revokes it. Returns the entry as it is after
    /// this use, or None if the token was exhausted concurrently.
    pub async fn use_once(
        &self,
        barrier: &Barrier,
        u: &Unsealed,
        entry: &TokenEntry,
    ) -> Result<Option<TokenEntry>, BarrierError> {
        if entry.num_uses == 0 {
            return Ok(Some(entry.clone()));
        }
        for _ in 0..16 {
            let Some((mut current, rev)) = self.load_entry(barrier, u, &entry.id).await? else { return Ok(None) };
            if current.num_uses == 0 {
                return Ok(None);
            }
            let mut batch = Batch::new();
            let path = format!("{ID_PREFIX}{}", current.id);
            let last = current.num_uses == 1;
            if last {
                batch.delete_expect(&path, Expect::Rev(rev));
                batch.delete(&self.accessor_path(&current.accessor));
                if let Some(p) = &current.parent {
                    batch.delete(&format!("{PARENT_PREFIX}{p}/{}", current.id));
                }
                if let Some(m) = &current.mount {
                    batch.delete(&format!("{MOUNT_PREFIX}{m}/{}", current.id));
                }
            } else {
                current.num_uses -= 1;
                let json = Zeroizing::new(serde_json::to_vec(&current).map_err(corrupt)?);
                batch.put_expect(u, &path, &json, Expect::Rev(rev));
            }
            match barrier.write(batch).await {
                Ok(()) => {
                    if last {
                        current.num_uses = 0;
                        self.invalidate(&current.id);
                        // An exhausted token is revoked, and so is everything
                        // it created (as Vault): children never outlive it.
                        for child in barrier.list(u, &format!("{PARENT_PREFIX}{}/", current.id)).await? {
                            self.revoke_tree(barrier, u, child.trim_end_matches('/')).await?;
                        }
                    }
                    return Ok(Some(current));
                }
                Err(BarrierError::Storage(StorageError::Conflict(_))) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Revoke a token and, recursively, every token created from it.
    ///
    /// Top-down: each token is deleted *before* its children are listed, so
    /// a child minted concurrently either committed first (and is listed
    /// here) or finds its parent gone when [`Self::parent_alive`] re-checks
    /// it after its own commit (and revokes itself). A crash midway leaves
    /// children whose parent is gone: [`Self::tidy`] revokes those.
    pub async fn revoke_tree(&self, barrier: &Barrier, u: &Unsealed, id: &str) -> Result<usize, BarrierError> {
        let mut revoked = 0;
        // Iterative (no recursion limit); (token, the parent it was listed under).
        let mut stack = vec![(id.to_string(), None::<String>)];
        while let Some((cur, listed_under)) = stack.pop() {
            if self.revoke_one(barrier, u, &cur, listed_under.as_deref()).await? {
                revoked += 1;
            }
            for child in barrier.list(u, &format!("{PARENT_PREFIX}{cur}/")).await? {
                stack.push((child.trim_end_matches('/').to_string(), Some(cur.clone())));
            }
        }
        Ok(revoked)
    }

    /// Whether the token `id` still exists, read from the database itself
    /// (not a cache): a token minted under a parent checks this *after* its
    /// own commit; see [`Self::revoke_tree`].
    pub async fn alive(&self, barrier: &Barrier, id: &str) -> Result<bool, BarrierError> {
        Ok(barrier.storage().get_fresh(&format!("{ID_PREFIX}{id}")).await?.is_some())
    }

    /// Take `uses` from a use-limited token's remaining uses (it keeps at
    /// least one): what a parent gives a child comes out of its own budget,
    /// so a chain of children never adds up to more uses than the first had.
    /// False if it has no more than `uses` left (or is gone).
    pub async fn spend(&self, barrier: &Barrier, u: &Unsealed, id: &str, uses: u64) -> Result<bool, BarrierError> {
        for _ in 0..16 {
            let Some((mut e, rev)) = self.load_entry(barrier, u, id).await? else { return Ok(false) };
            if e.num_uses <= uses {
                return Ok(false);
            }
            e.num_uses -= uses;
            let json = Zeroizing::new(serde_json::to_vec(&e).map_err(corrupt)?);
            let mut batch = Batch::new();
            batch.put_expect(u, &format!("{ID_PREFIX}{id}"), &json, Expect::Rev(rev));
            match barrier.write(batch).await {
                Ok(()) => {
                    self.invalidate(id);
                    return Ok(true);
                }
                Err(BarrierError::Storage(StorageError::Conflict(_))) => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(false)
    }

    /// Revoke only this token; its children become orphans.
    /// The token goes first (as in [`Self::revoke_tree`]): a child minted
    /// meanwhile is either listed and kept as an orphan, or revokes itself.
    pub async fn revoke_orphan(&self, barrier: &Barrier, u: &Unsealed, id: &str) -> Result<(), BarrierError> {
        self.revoke_one(barrier, u, id, None).await?;
        for child in barrier.list(u, &format!("{PARENT_PREFIX}{id}/")).await? {
            let child = child.trim_end_matches('/');
            if let Some((mut e, rev)) = self.load_entry(barrier, u, child).await? {
                e.parent = None;
                let json = Zeroizing::new(serde_json::to_vec(&e).map_err(corrupt)?);
                let mut batch = Batch::new();
                batch.put_expect(u, &format!("{ID_PREFIX}{child}"), &json, Expect::Rev(rev));
                batch.delete(&format!("{PARENT_PREFIX}{id}/{child}"));
                barrier.write(batch).await?;
                self.invalidate(child);
            } else {
                barrier.delete(&format!("{PARENT_PREFIX}{id}/{child}")).await?;
            }
        }
        Ok(())
    }

    /// Delete one token and its index rows (`listed_under`: the parent whose
    /// child list named it, whose link goes too even if the entry is gone).
    async fn revoke_one(
        &self,
        barrier: &Barrier,
        u: &Unsealed,
        id: &str,
        listed_under: Option<&str>,
    ) -> Result<bool, BarrierError> {
        let entry = self.load_entry(barrier, u, id).await?;
        let mut batch = Batch::new();
        batch.delete(&format!("{ID_PREFIX}{id}"));
        if let Some(p) = listed_under {
            batch.delete(&format!("{PARENT_PREFIX}{p}/{id}"));
        }
        if let Some((e, _)) = &entry {
            batch.delete(&self.accessor_path(&e.accessor));
            if let Some(p) = &e.parent {
                batch.delete(&format!("{PARENT_PREFIX}{p}/{id}"));
            }
            if let Some(m) = &e.mount {
                batch.delete(&format!("{MOUNT_PREFIX}{m}/{id}"));
            }
        }
        barrier.write(batch).await?;
        // After the commit: from here on no lookup can read the row, and any
        // lookup that read it before holds a ticket this invalidation voids.
        self.invalidate(id);
        Ok(entry.is_some())
    }

    /// Renew: extend the TTL (by `increment`, or the original TTL, or the
    /// period), never beyond the token's maximum lifetime.
    pub async fn renew(
        &self,
        barrier: &Barrier,
        u: &Unsealed,
        id: &str,
        increment: u64,
        now: i64,
    ) -> Result<Option<TokenEntry>, RenewError> {
        for _ in 0..8 {
            let Some((mut e, rev)) = self.load_entry(barrier, u, id).await? else { return Ok(None) };
            if e.expired(now) {
                return Ok(None);
            }
            if !e.renewable {
                return Err(RenewError::NotRenewable);
            }
            // One lease never exceeds the system maximum, whatever was asked.
            let want = if e.period > 0 {
                e.period
            } else if increment > 0 {
                increment
            } else {
                e.creation_ttl
            }
            .min(SYSTEM_MAX_TTL);
            let mut expire = after(now, want);
            if let Some(max) = e.max_expire() {
                expire = expire.min(max);
            }
            e.expire_time = Some(expire);
            let json = Zeroizing::new(serde_json::to_vec(&e).map_err(corrupt)?);
            let mut batch = Batch::new();
            batch.put_expect(u, &format!("{ID_PREFIX}{id}"), &json, Expect::Rev(rev));
            match barrier.write(batch).await {
                Ok(()) => {
                    self.invalidate(id);
                    return Ok(Some(e));
                }
                Err(BarrierError::Storage(StorageError::Conflict(_))) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(RenewError::Barrier(BarrierError::Storage(StorageError::Conflict(id.into()))))
    }

    /// Revoke every expired token (with its children). Returns how many.
    /// Also revokes tokens whose parent is gone (a revocation interrupted by
    /// a crash, or a child that raced it), confirmed by a fresh read so a
    /// parent created after the listing is not mistaken for a missing one.
    pub async fn tidy(&self, barrier: &Barrier, u: &Unsealed, now: i64) -> Result<usize, BarrierError> {
        let mut n = 0;
        let ids = barrier.list(u, ID_PREFIX).await?;
        let known: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        for id in &ids {
            let Some((e, _)) = self.load_entry(barrier, u, id).await? else { continue };
            let orphaned = match &e.parent {
                Some(p) if !known.contains(p.as_str()) => !self.alive(barrier, p).await?,
                _ => false,
            };
            if e.expired(now) || orphaned {
                n += self.revoke_tree(barrier, u, id).await?;
            }
        }
        Ok(n)
    }
}

/// Why a renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// The token is not renewable.
    #[error("lease is not renewable")]
    NotRenewable,
    /// Storage/barrier failure.
    #[error(transparent)]
    Barrier(#[from] BarrierError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        let t = TokenStore::new_token_value();
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(t.starts_with("hvs."));
    }

    #[test]
    fn max_expiry_rules() {
        let mut e = TokenEntry { creation_time: 1000, policies: vec!["default".into()], ..Default::default() };
        assert_eq!(e.max_expire(), Some(1000 + SYSTEM_MAX_TTL as i64));
        e.explicit_max_ttl = 60;
        assert_eq!(e.max_expire(), Some(1060));
        e.explicit_max_ttl = 0;
        e.period = 30;
        assert_eq!(e.max_expire(), None);
    }
}
