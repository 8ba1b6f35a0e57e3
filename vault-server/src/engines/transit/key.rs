//! A named transit key: its settings and its versions, and the stored form.
//!
//! Stored at `policy/{name}` through the barrier as one record (so a
//! rotation, a config change and a usage flush each commit atomically):
//!
//! ```text
//! record = magic "TK1" | settings_len (u32, big-endian) | settings (JSON) | versions
//! versions = keys::VersionedKey<SecretBytes> in its binary form (docs/formats.md)
//! ```
//!
//! Key bytes never pass through JSON: the settings hold no secret.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::crypto::{self, KeyType};
use crate::keys::KeyMaterial;
use crate::keys::{Reader, SecretBytes, VersionedKey};

const MAGIC: &[u8; 3] = b"TK1";

/// Vault's convergent encryption version used for new keys (the nonce is an
/// HMAC of the plaintext under a key derived with the encryption key).
pub(super) const CONVERGENT_VERSION: u8 = 3;

/// A key's settings (everything but the key material).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Settings {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub derived: bool,
    pub convergent_encryption: bool,
    #[serde(default)]
    pub convergent_version: u8,
    pub exportable: bool,
    pub allow_plaintext_backup: bool,
    pub deletion_allowed: bool,
    /// Seconds; 0 = never.
    pub auto_rotate_period: u64,
    /// HMAC keys: bytes of key material.
    #[serde(default)]
    pub key_size: usize,
}

/// A named key as held in memory while unsealed.
pub(super) struct TransitKey {
    pub settings: Settings,
    pub kind: KeyType,
    pub ring: VersionedKey<SecretBytes>,
}

impl std::fmt::Debug for TransitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransitKey").field("settings", &self.settings).field("ring", &self.ring).finish()
    }
}

/// A stored record that cannot be read (corrupt or from a newer build).
/// Carries no stored byte.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("stored transit key is malformed")]
pub(super) struct Malformed;

impl TransitKey {
    /// The stored form.
    pub(super) fn encode(&self) -> Zeroizing<Vec<u8>> {
        // Settings hold no secret; serializing them cannot fail (plain data).
        let settings = serde_json::to_vec(&self.settings).unwrap_or_default();
        let ring = self.ring.encode();
        let mut out = Zeroizing::new(Vec::with_capacity(3 + 4 + settings.len() + ring.len()));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(settings.len() as u32).to_be_bytes());
        out.extend_from_slice(&settings);
        out.extend_from_slice(&ring);
        out
    }

    /// Parse a stored record.
    pub(super) fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(bytes);
        if r.take(3).map_err(|_| Malformed)? != MAGIC {
            return Err(Malformed);
        }
        let len = r.u32().map_err(|_| Malformed)? as usize;
        let settings: Settings = serde_json::from_slice(r.take(len).map_err(|_| Malformed)?).map_err(|_| Malformed)?;
        let kind = KeyType::parse(&settings.kind).ok_or(Malformed)?;
        let rest = r.take(r.remaining()).map_err(|_| Malformed)?;
        let ring = VersionedKey::decode(rest).map_err(|_| Malformed)?;
        let key = Self { settings, kind, ring };
        key.check()?;
        Ok(key)
    }

    /// What every operation relies on, checked once on load (backups are
    /// caller input, storage is not trusted either): settings the create
    /// rules allow, and material of every version usable by the key type.
    fn check(&self) -> Result<(), Malformed> {
        let s = &self.settings;
        let consistent = (!s.derived || self.kind.supports_derivation())
            && (!s.convergent_encryption || (s.derived && self.kind.is_aead()))
            && (s.convergent_encryption == (s.convergent_version == CONVERGENT_VERSION))
            && ((self.kind == KeyType::Hmac) == (s.key_size > 0));
        if !consistent {
            return Err(Malformed);
        }
        for (_, v) in self.ring.versions() {
            let (secret, _) = crypto::split(self.kind, v.material().as_bytes()).map_err(|_| Malformed)?;
            if self.kind == KeyType::Hmac && secret.len() != s.key_size {
                return Err(Malformed);
            }
            if self.kind.is_signing() {
                // An invalid scalar or seed fails here, not on first use.
                crypto::public_key(self.kind, secret).map_err(|_| Malformed)?;
            }
        }
        Ok(())
    }
}
