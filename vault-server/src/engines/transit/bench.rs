//! For benchmarks only (`vault-server/benches/transit.rs`): not an API, no
//! stability promise, hidden from the documentation.
//!
//! A small surface over the engine's per-item operations, taking and
//! returning plain types, so the criterion bench can time them while the
//! engine's internals stay private. Keys are generated here from the OS
//! random generator and never leave this module; nothing here reads or
//! writes storage.

#![doc(hidden)]

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::crypto::{self, KeyType};
use super::index::{self, Params};
use super::key::{INDEX_KEY_LEN, Settings, TransitKey};
use super::ops;
use super::subjects::Resolved;
use crate::keys::{KeyMaterial, VersionedKey};

/// A named key of one AEAD type with one fresh random version, as the
/// engine holds it in memory (not derived, not convergent).
pub struct Aead {
    key: TransitKey,
    /// What a request without subjects resolves to (made once, as a
    /// request makes it once for all its items).
    none: Resolved,
}

impl std::fmt::Debug for Aead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bench::Aead({})", self.key.kind.name())
    }
}

impl Aead {
    /// A fresh key of the type named as Vault names it (`"aes256-gcm96"`);
    /// `None` for an unknown name or a type that does not encrypt.
    pub fn new(type_name: &str) -> Option<Self> {
        let kind = KeyType::parse(type_name).filter(|k| k.is_aead())?;
        let material = crypto::generate(kind, None).ok()?;
        let settings = Settings {
            name: "bench".into(),
            kind: kind.name().into(),
            derived: false,
            convergent_encryption: false,
            convergent_version: 0,
            exportable: false,
            allow_plaintext_backup: false,
            deletion_allowed: false,
            auto_rotate_period: 0,
            key_size: 0,
        };
        let key = TransitKey {
            settings,
            kind,
            ring: VersionedKey::new(material, 0),
            index_key: None,
            ciphers: Default::default(),
            subject_ids: Default::default(),
        };
        Some(Self { key, none: Resolved::default() })
    }

    /// The engine's encrypt of one item (`ops::seal_one`: version lookup,
    /// random nonce, seal, usage count, `vault:v1:<base64>`).
    pub fn encrypt(&self, plaintext: &[u8]) -> Option<String> {
        ops::seal_one(&self.key, 0, plaintext, None, None, &[], None).ok().map(|(_, ct)| ct)
    }

    /// The engine's decrypt of one item (`ops::open_one`: parse, base64
    /// decode, version lookup, open); the plaintext is wiped on drop.
    pub fn decrypt(&self, ciphertext: &str) -> Option<Zeroizing<Vec<u8>>> {
        ops::open_one(&self.key, ciphertext, None, &[], &self.none, None).ok().map(|(pt, _)| pt)
    }

    /// The primitive under [`encrypt`](Self::encrypt) (`crypto::seal`: the
    /// cipher keyed per call, random nonce): `nonce || ciphertext || tag`.
    pub fn seal(&self, plaintext: &[u8]) -> Option<Vec<u8>> {
        let (key, _) = crypto::split(self.key.kind, self.material()?).ok()?;
        crypto::seal(self.key.kind, key, None, plaintext, &[]).ok()
    }

    /// The primitive under [`decrypt`](Self::decrypt) (`crypto::open`).
    pub fn open(&self, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (key, _) = crypto::split(self.key.kind, self.material()?).ok()?;
        crypto::open(self.key.kind, key, sealed, &[]).ok()
    }

    fn material(&self) -> Option<&[u8]> {
        self.key.ring.encryption_version(0).ok().map(|(_, kv)| kv.material().as_bytes())
    }
}

/// Blind indexes of one field under a fresh random index key, with the
/// default parameters (no normalization, 256 bits).
pub struct BlindIndex {
    index_key: Zeroizing<[u8; INDEX_KEY_LEN]>,
    field: String,
    field_key: Zeroizing<Vec<u8>>,
    params: Params,
}

impl std::fmt::Debug for BlindIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bench::BlindIndex({})", self.field)
    }
}

impl BlindIndex {
    /// `None` only if the OS random generator fails.
    pub fn new(field: &str) -> Option<Self> {
        let index_key = crate::crypto::random::key32().ok()?;
        let field_key = index::field_key(&index_key, field).ok()?;
        let params = index::params(&Map::<String, Value>::new(), &Map::new()).ok()?;
        Some(Self { index_key, field: field.to_string(), field_key, params })
    }

    /// One item whose field key is derived for it (`index::index`: HKDF of
    /// the field key, then the HMAC): an item naming its own `field`.
    pub fn index(&self, input: &[u8]) -> Option<String> {
        index::index(&self.index_key, &self.field, input, self.params).ok()
    }

    /// One item under the field key derived once per request
    /// (`index::index_with`): a batch whose items share the top-level `field`.
    pub fn index_shared(&self, input: &[u8]) -> Option<String> {
        index::index_with(&self.field_key, input, self.params).ok()
    }
}
