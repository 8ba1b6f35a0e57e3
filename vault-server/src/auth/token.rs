//! The token store. Tokens are `hvs.` + 24 base62 characters (Vault's root
//! token shape, 143 bits of entropy). A token is stored only under its keyed
//! hash (HMAC-SHA-256 with a key kept inside the barrier), so neither the
//! database nor a backup of it yields a usable token.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::barrier::{Barrier, BarrierError, Batch, Unsealed};
use crate::crypto::hmac::HmacKey;
use crate::crypto::random;

/// Barrier path of the HMAC key for token lookups.
pub const HMAC_KEY_PATH: &str = "core/token-hmac-key";
const ID_PREFIX: &str = "sys/token/id/";
const ACCESSOR_PREFIX: &str = "sys/token/accessor/";
const LABEL_ID: &[u8] = b"token-id";
const LABEL_ACCESSOR: &[u8] = b"token-accessor";
/// Characters after the `hvs.` prefix.
pub const TOKEN_RANDOM_LEN: usize = 24;
/// Total token length (also the generate-root OTP length).
pub const TOKEN_LEN: usize = 4 + TOKEN_RANDOM_LEN;

/// What is stored about a token (never the token itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Public handle for the token (lookup/revoke without knowing it).
    pub accessor: String,
    /// Attached policies.
    pub policies: Vec<String>,
    /// Human-readable name.
    pub display_name: String,
    /// Creation path, e.g. "auth/token/root".
    pub path: String,
    /// Creation time, Unix seconds.
    pub creation_time: i64,
    /// Expiry, Unix seconds (None: never).
    pub expire_time: Option<i64>,
    /// TTL at creation, seconds (0: none).
    pub creation_ttl: u64,
    /// Metadata.
    #[serde(default)]
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// Keyed hash of the parent token (None: orphan).
    #[serde(default)]
    pub parent: Option<String>,
}

impl TokenEntry {
    /// Has the token expired at `now`?
    pub fn expired(&self, now: i64) -> bool {
        self.expire_time.is_some_and(|t| now >= t)
    }
}

/// A token value as handed to a client: wiped from memory on drop.
pub type TokenSecret = Zeroizing<String>;

/// Token lookups and creation, keyed by the barrier-held HMAC key.
pub struct TokenStore {
    hmac: HmacKey,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenStore")
    }
}

impl TokenStore {
    /// A store with a fresh HMAC key, plus the batch entry that persists it (init).
    pub fn generate(u: &Unsealed, batch: &mut Batch) -> Result<Self, BarrierError> {
        let key = random::key32()?;
        batch.put(u, HMAC_KEY_PATH, &key[..]);
        Ok(Self { hmac: HmacKey::new(key) })
    }

    /// Load the HMAC key after unseal.
    pub async fn load(barrier: &Barrier, u: &Unsealed) -> Result<Self, BarrierError> {
        let raw = barrier.get(u, HMAC_KEY_PATH).await?.ok_or(BarrierError::Keyring)?;
        let mut key = Zeroizing::new([0u8; 32]);
        if raw.len() != 32 {
            return Err(BarrierError::Keyring);
        }
        key.copy_from_slice(&raw);
        Ok(Self { hmac: HmacKey::new(key) })
    }

    fn id_path(&self, token: &str) -> String {
        format!("{ID_PREFIX}{}", self.hmac.mac_hex(LABEL_ID, token.as_bytes()))
    }

    fn accessor_path(&self, accessor: &str) -> String {
        format!("{ACCESSOR_PREFIX}{}", self.hmac.mac_hex(LABEL_ACCESSOR, accessor.as_bytes()))
    }

    /// A new random token value.
    pub fn new_token_value() -> TokenSecret {
        Zeroizing::new(format!("hvs.{}", random::base62(TOKEN_RANDOM_LEN)))
    }

    /// Add a new root token to `batch`; returns the token value.
    pub fn create_root(&self, u: &Unsealed, batch: &mut Batch, now: i64) -> TokenSecret {
        let token = Self::new_token_value();
        let entry = TokenEntry {
            accessor: random::base62(24),
            policies: vec!["root".into()],
            display_name: "root".into(),
            path: "auth/token/root".into(),
            creation_time: now,
            expire_time: None,
            creation_ttl: 0,
            meta: Default::default(),
            parent: None,
        };
        self.add(u, batch, &token, &entry);
        token
    }

    /// Add `entry` for `token` (and its accessor index) to `batch`.
    pub fn add(&self, u: &Unsealed, batch: &mut Batch, token: &str, entry: &TokenEntry) {
        let id_path = self.id_path(token);
        let json = Zeroizing::new(serde_json::to_vec(entry).unwrap_or_default());
        batch.put(u, &id_path, &json);
        batch.put(u, &self.accessor_path(&entry.accessor), id_path.as_bytes());
    }

    /// Look a token up; expired tokens are treated as absent.
    pub async fn lookup(
        &self,
        barrier: &Barrier,
        u: &Unsealed,
        token: &str,
        now: i64,
    ) -> Result<Option<Arc<TokenEntry>>, BarrierError> {
        let Some(raw) = barrier.get(u, &self.id_path(token)).await? else { return Ok(None) };
        let entry: TokenEntry =
            serde_json::from_slice(&raw).map_err(|_| BarrierError::Tampered("token entry".into()))?;
        if entry.expired(now) {
            return Ok(None);
        }
        Ok(Some(Arc::new(entry)))
    }

    /// Revoke a token: remove its entry and accessor index in one batch.
    pub fn revoke(&self, batch: &mut Batch, token: &str, entry: &TokenEntry) {
        batch.delete(&self.id_path(token));
        batch.delete(&self.accessor_path(&entry.accessor));
    }
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
}
