//! A named transit key: its settings and its versions, and the stored form.
//!
//! Stored at `policy/{name}` through the barrier as one record (so a
//! rotation, a config change and a usage flush each commit atomically):
//!
//! ```text
//! record   = "TK2" | settings_len (u32, big-endian) | settings (JSON)
//!          | versions_len (u32) | versions | index_key (32 bytes)
//! versions = keys::VersionedKey<SecretBytes> in its binary form (docs/formats.md)
//! ```
//!
//! The index key (blind indexes) belongs to the named key, not to a version,
//! so indexes stay stable across rotations and trims. Records of the first
//! layout ("TK1": settings then versions, no index key) are still read; they
//! get an index key on first use.
//!
//! Key bytes never pass through JSON: the settings hold no secret.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::crypto::{self, KeyType};
use crate::keys::KeyMaterial;
use crate::keys::{Reader, SecretBytes, VersionedKey};

const MAGIC_V1: &[u8; 3] = b"TK1";
const MAGIC: &[u8; 3] = b"TK2";

/// Length of the blind-index key.
pub(super) const INDEX_KEY_LEN: usize = 32;

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
    /// The root of this key's blind indexes (wiped on drop); `None` only
    /// for records stored before blind indexes existed.
    pub index_key: Option<Zeroizing<[u8; INDEX_KEY_LEN]>>,
    /// Each version's AEAD cipher, its key schedule done on first use
    /// (versions' own keys only: derived keys differ per context).
    pub ciphers: Ciphers,
    /// The subject id and wrapping keys derived from the index key, made
    /// on first use (`subjects.rs`), so a request does not derive them again.
    pub subject_ids: OnceLock<Option<super::subjects::Ids>>,
}

/// Per-version ciphers of a loaded key (a record changes by being loaded
/// again, so these never outlive the versions they were made from).
#[derive(Default)]
pub(super) struct Ciphers(OnceLock<Box<[Slot]>>);

/// A version number and its cipher once made.
type Slot = (u32, OnceLock<crypto::Cipher>);

impl TransitKey {
    /// The cipher of version `v` whose key is `secret`, made once; `None`
    /// for a version this copy does not hold or a type without one.
    pub(super) fn cipher(&self, v: u32, secret: &[u8]) -> Option<&crypto::Cipher> {
        if !self.kind.is_aead() {
            return None;
        }
        let slots = self.ciphers.0.get_or_init(|| {
            let mut s: Vec<Slot> = self.ring.versions().map(|(n, _)| (n, OnceLock::new())).collect();
            s.sort_by_key(|(n, _)| *n);
            s.into_boxed_slice()
        });
        let i = slots.binary_search_by_key(&v, |(n, _)| *n).ok()?;
        let cell = &slots[i].1;
        if let Some(c) = cell.get() {
            return Some(c);
        }
        let c = crypto::Cipher::new(self.kind, secret).ok()?;
        Some(cell.get_or_init(|| c))
    }
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
        let index = self.index_key.as_deref().map_or(&[][..], |k| &k[..]);
        let mut out = Zeroizing::new(Vec::with_capacity(3 + 4 + settings.len() + 4 + ring.len() + index.len()));
        out.extend_from_slice(if index.is_empty() { MAGIC_V1 } else { MAGIC });
        out.extend_from_slice(&(settings.len() as u32).to_be_bytes());
        out.extend_from_slice(&settings);
        if index.is_empty() {
            out.extend_from_slice(&ring);
            return out;
        }
        out.extend_from_slice(&(ring.len() as u32).to_be_bytes());
        out.extend_from_slice(&ring);
        out.extend_from_slice(index);
        out
    }

    /// Parse a stored record.
    pub(super) fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(bytes);
        let magic = r.take(3).map_err(|_| Malformed)?;
        let v2 = match magic {
            m if m == MAGIC => true,
            m if m == MAGIC_V1 => false,
            _ => return Err(Malformed),
        };
        let len = r.u32().map_err(|_| Malformed)? as usize;
        let settings: Settings = serde_json::from_slice(r.take(len).map_err(|_| Malformed)?).map_err(|_| Malformed)?;
        let kind = KeyType::parse(&settings.kind).ok_or(Malformed)?;
        let (ring_bytes, index_key) = if v2 {
            let ring_len = r.u32().map_err(|_| Malformed)? as usize;
            let ring_bytes = r.take(ring_len).map_err(|_| Malformed)?;
            let mut k = Zeroizing::new([0u8; INDEX_KEY_LEN]);
            k.copy_from_slice(r.take(INDEX_KEY_LEN).map_err(|_| Malformed)?);
            r.finish().map_err(|_| Malformed)?;
            (ring_bytes, Some(k))
        } else {
            (r.take(r.remaining()).map_err(|_| Malformed)?, None)
        };
        let ring = VersionedKey::decode(ring_bytes).map_err(|_| Malformed)?;
        let key = Self { settings, kind, ring, index_key, ciphers: Ciphers::default(), subject_ids: OnceLock::new() };
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
            && ((self.kind == KeyType::Hmac) == (s.key_size > 0))
            // The bounds a create or config enforces (0, or an hour to 100 years).
            && (s.auto_rotate_period == 0
                || (3600..=crate::logical::fields::MAX_DURATION_SECS).contains(&s.auto_rotate_period));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TransitKey {
        let material = SecretBytes::from_bytes(&[0xAB; 64]).unwrap();
        let settings = Settings {
            name: "k".into(),
            kind: "aes256-gcm96".into(),
            derived: false,
            convergent_encryption: false,
            convergent_version: 0,
            exportable: false,
            allow_plaintext_backup: false,
            deletion_allowed: false,
            auto_rotate_period: 0,
            key_size: 0,
        };
        TransitKey {
            settings,
            kind: KeyType::Aes256Gcm96,
            ring: VersionedKey::new(material, 1_700_000_000),
            index_key: Some(Zeroizing::new([0xCD; INDEX_KEY_LEN])),
            ciphers: Ciphers::default(),
            subject_ids: OnceLock::new(),
        }
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let d = format!("{:?}", key()).to_lowercase();
        for secret in ["171", "ab, ab", "abab", "205", "cdcd", "cd, cd"] {
            assert!(!d.contains(secret), "{secret} in {d}");
        }
    }

    #[test]
    fn records_round_trip_and_refuse_inconsistent_settings() {
        let k = key();
        let back = TransitKey::decode(&k.encode()).unwrap();
        assert_eq!(back.settings, k.settings);
        assert_eq!(back.index_key.as_deref(), k.index_key.as_deref());
        let mut bad = key();
        bad.settings.auto_rotate_period = 5;
        assert!(TransitKey::decode(&bad.encode()).is_err());
        let mut bad = key();
        bad.settings.convergent_encryption = true;
        assert!(TransitKey::decode(&bad.encode()).is_err(), "convergent needs derived");
        let raw = k.encode();
        assert!(TransitKey::decode(&raw[..raw.len() - 1]).is_err(), "truncated");
    }
}
