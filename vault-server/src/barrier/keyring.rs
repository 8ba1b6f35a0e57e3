//! The keyring: barrier keys by term, plus the root key that encrypts the
//! keyring itself. Serialized in a small binary format (no key ever passes
//! through a JSON string) and stored AEAD-sealed under the root key.
//!
//! ```text
//! keyring  = version(1) | active_term(u32 BE) | count(u32 BE) | term*
//! term     = term(u32 BE) | install_unix(i64 BE) | encryptions(u64 BE) | key(32)
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use zeroize::Zeroizing;

use crate::crypto::{AeadKey, KEY_LEN, random};

const FORMAT_VERSION: u8 = 1;
const TERM_LEN: usize = 4 + 8 + 8 + KEY_LEN;

/// One barrier key.
pub struct TermKey {
    /// The AEAD key (key schedule wiped on drop).
    pub(crate) aead: AeadKey,
    raw: Zeroizing<[u8; KEY_LEN]>,
    /// When this term was installed (Unix seconds).
    pub install_unix: i64,
    /// Encryptions recorded in storage at load time.
    pub stored_encryptions: u64,
    /// Encryptions done by this process since load.
    pub new_encryptions: AtomicU64,
    /// How many of `new_encryptions` were already added to the stored count.
    pub flushed: AtomicU64,
}

impl std::fmt::Debug for TermKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TermKey").field("install_unix", &self.install_unix).finish_non_exhaustive()
    }
}

impl TermKey {
    fn new(raw: Zeroizing<[u8; KEY_LEN]>, install_unix: i64, stored_encryptions: u64) -> Self {
        Self {
            aead: AeadKey::new(&raw),
            raw,
            install_unix,
            stored_encryptions,
            new_encryptions: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
        }
    }

    /// Total encryptions known for this term.
    pub fn encryptions(&self) -> u64 {
        self.stored_encryptions + self.new_encryptions.load(Ordering::Relaxed)
    }
}

/// Barrier keys by term, with the active (newest) term used for writes.
pub struct Keyring {
    terms: BTreeMap<u32, TermKey>,
    active: u32,
    root: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active_term", &self.active)
            .field("terms", &self.terms.len())
            .finish_non_exhaustive()
    }
}

/// The stored keyring could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("the stored keyring is malformed")]
pub struct KeyringFormatError;

impl Keyring {
    /// A new keyring with term 1 and the given root key.
    pub fn new(root: Zeroizing<[u8; KEY_LEN]>, first: Zeroizing<[u8; KEY_LEN]>, now: i64) -> Self {
        let mut terms = BTreeMap::new();
        terms.insert(1, TermKey::new(first, now, 0));
        Self { terms, active: 1, root }
    }

    /// The root key (wraps the keyring; itself wrapped by the unseal key).
    pub fn root_key(&self) -> &Zeroizing<[u8; KEY_LEN]> {
        &self.root
    }

    /// The active term number.
    pub fn active_term(&self) -> u32 {
        self.active
    }

    /// The active term's key.
    pub fn active(&self) -> &TermKey {
        // Invariant: `active` is always a key of `terms` (constructors ensure it).
        &self.terms[&self.active]
    }

    /// The key of `term`, if this keyring has it.
    pub fn term(&self, term: u32) -> Option<&TermKey> {
        self.terms.get(&term)
    }

    /// A copy of this keyring with a new active term (for rotation).
    pub fn rotated(&self, new_key: Zeroizing<[u8; KEY_LEN]>, now: i64) -> Result<Self, KeyringFormatError> {
        let mut next = Self::decode(self.root.clone(), &self.encode())?;
        let term = self.active.checked_add(1).ok_or(KeyringFormatError)?;
        next.terms.insert(term, TermKey::new(new_key, now, 0));
        next.active = term;
        Ok(next)
    }

    /// Add `other`'s unflushed encryptions (this process's, counted since
    /// load) to this keyring's stored counts. Returns what was added per term,
    /// to be marked flushed in `other` once the write succeeded.
    pub fn absorb_usage(&mut self, other: &Keyring) -> Vec<(u32, u64)> {
        let mut added = Vec::new();
        for (term, ours) in &other.terms {
            let delta = ours.new_encryptions.load(Ordering::Relaxed) - ours.flushed.load(Ordering::Relaxed);
            if let Some(k) = self.terms.get_mut(term)
                && delta > 0
            {
                k.stored_encryptions = k.stored_encryptions.saturating_add(delta);
                added.push((*term, delta));
            }
        }
        added
    }

    /// Record that `added` (from [`absorb_usage`](Self::absorb_usage)) is now stored.
    pub fn mark_flushed(&self, added: &[(u32, u64)]) {
        for (term, delta) in added {
            if let Some(k) = self.terms.get(term) {
                k.flushed.fetch_add(*delta, Ordering::Relaxed);
            }
        }
    }

    /// Serialize (counts include this process's new encryptions).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(9 + self.terms.len() * TERM_LEN));
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.active.to_be_bytes());
        out.extend_from_slice(&(self.terms.len() as u32).to_be_bytes());
        for (term, k) in &self.terms {
            out.extend_from_slice(&term.to_be_bytes());
            out.extend_from_slice(&k.install_unix.to_be_bytes());
            out.extend_from_slice(&k.encryptions().to_be_bytes());
            out.extend_from_slice(&k.raw[..]);
        }
        out
    }

    /// Parse what [`encode`](Self::encode) produced. Every length is checked first.
    pub fn decode(root: Zeroizing<[u8; KEY_LEN]>, bytes: &[u8]) -> Result<Self, KeyringFormatError> {
        let (&version, rest) = bytes.split_first().ok_or(KeyringFormatError)?;
        if version != FORMAT_VERSION || rest.len() < 8 {
            return Err(KeyringFormatError);
        }
        let active = u32::from_be_bytes(rest[0..4].try_into().map_err(|_| KeyringFormatError)?);
        let count = u32::from_be_bytes(rest[4..8].try_into().map_err(|_| KeyringFormatError)?) as usize;
        let body = &rest[8..];
        if count == 0 || body.len() != count.checked_mul(TERM_LEN).ok_or(KeyringFormatError)? {
            return Err(KeyringFormatError);
        }
        let mut terms = BTreeMap::new();
        for chunk in body.chunks_exact(TERM_LEN) {
            let term = u32::from_be_bytes(chunk[0..4].try_into().map_err(|_| KeyringFormatError)?);
            let install = i64::from_be_bytes(chunk[4..12].try_into().map_err(|_| KeyringFormatError)?);
            let enc = u64::from_be_bytes(chunk[12..20].try_into().map_err(|_| KeyringFormatError)?);
            let mut raw = Zeroizing::new([0u8; KEY_LEN]);
            raw.copy_from_slice(&chunk[20..]);
            if terms.insert(term, TermKey::new(raw, install, enc)).is_some() {
                return Err(KeyringFormatError);
            }
        }
        if !terms.contains_key(&active) {
            return Err(KeyringFormatError);
        }
        Ok(Self { terms, active, root })
    }

    /// Fresh keys for a brand-new vault: (root key, first barrier key).
    pub fn generate(now: i64) -> Result<Self, random::RandomError> {
        Ok(Self::new(random::key32()?, random::key32()?, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_and_rotation() {
        let k = Keyring::new(Zeroizing::new([1; 32]), Zeroizing::new([2; 32]), 100);
        k.active().new_encryptions.fetch_add(5, Ordering::Relaxed);
        let r = k.rotated(Zeroizing::new([3; 32]), 200).unwrap();
        assert_eq!(r.active_term(), 2);
        assert_eq!(r.term(1).unwrap().encryptions(), 5);
        let back = Keyring::decode(Zeroizing::new([1; 32]), &r.encode()).unwrap();
        assert_eq!(back.active_term(), 2);
        assert_eq!(back.term(2).unwrap().install_unix, 200);
        assert_eq!(*back.term(1).unwrap().raw, [2; 32]);
    }

    #[test]
    fn malformed_keyrings_rejected_without_panic() {
        let k = Keyring::new(Zeroizing::new([1; 32]), Zeroizing::new([2; 32]), 1);
        let good = k.encode();
        for n in 0..good.len() {
            assert!(Keyring::decode(Zeroizing::new([1; 32]), &good[..n]).is_err());
        }
        let mut bad_active = good.to_vec();
        bad_active[4] = 9;
        assert!(Keyring::decode(Zeroizing::new([1; 32]), &bad_active).is_err());
    }

    /// A keyring of three terms as encoded by the keyring code of commit
    /// 82e0821 (before it moved onto `keys::VersionedKey`): root 0x11..,
    /// terms 1..=3 with keys 0x22.., 0x33.., 0x44.., 5 and 3_000_000_123
    /// encryptions on terms 1 and 2. Stored keyrings must keep loading.
    const LEGACY_FIXTURE: &str = "01000000030000000300000001000000006553f1000000000000000005\
        2222222222222222222222222222222222222222222222222222222222222222\
        00000002000000006553f16400000000b2d05e7b\
        3333333333333333333333333333333333333333333333333333333333333333\
        00000003000000006553f1c80000000000000000\
        4444444444444444444444444444444444444444444444444444444444444444";

    fn legacy_keyring() -> Keyring {
        let k = Keyring::new(Zeroizing::new([0x11; 32]), Zeroizing::new([0x22; 32]), 1_700_000_000);
        k.active().new_encryptions.fetch_add(5, Ordering::Relaxed);
        let k = k.rotated(Zeroizing::new([0x33; 32]), 1_700_000_100).unwrap();
        k.active().new_encryptions.fetch_add(3_000_000_123, Ordering::Relaxed);
        k.rotated(Zeroizing::new([0x44; 32]), 1_700_000_200).unwrap()
    }

    #[test]
    fn legacy_fixture_encodes_and_decodes() {
        assert_eq!(hex::encode(&legacy_keyring().encode()[..]), LEGACY_FIXTURE);
        let k = Keyring::decode(Zeroizing::new([0x11; 32]), &hex::decode(LEGACY_FIXTURE).unwrap()).unwrap();
        assert_eq!(k.active_term(), 3);
        assert_eq!(k.term(2).unwrap().encryptions(), 3_000_000_123);
        assert_eq!(k.term(1).unwrap().install_unix, 1_700_000_000);
        assert_eq!(hex::encode(&k.encode()[..]), LEGACY_FIXTURE);
    }

    #[test]
    fn debug_shows_no_keys() {
        let k = Keyring::new(Zeroizing::new([0xAB; 32]), Zeroizing::new([0xCD; 32]), 1);
        let d = format!("{k:?}");
        assert!(!d.contains("171") && !d.to_lowercase().contains("abab"), "{d}");
    }
}
