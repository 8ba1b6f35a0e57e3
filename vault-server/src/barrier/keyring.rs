//! The keyring: barrier keys by term, plus the root key that encrypts the
//! keyring itself. The terms are the versions of a
//! [`VersionedKey`](crate::keys::VersionedKey) (the active term is its latest
//! version), so term bookkeeping and usage counting are the code transit keys
//! use too. Stored AEAD-sealed under the root key, in the barrier's own
//! binary format (no key ever passes through a JSON string):
//!
//! ```text
//! keyring  = version(1) | active_term(u32 BE) | count(u32 BE) | term*
//! term     = term(u32 BE) | install_unix(i64 BE) | encryptions(u64 BE) | key(32)
//! ```
//!
//! That format is the first release's, unchanged, so every stored keyring
//! loads and servers of either release can share a database. The decoder
//! accepts exactly what the encoder writes: terms 1..=active, in order.

use zeroize::Zeroizing;

use crate::crypto::{KEY_LEN, random};
use crate::keys::{Aes256GcmKey, Bounds, FormatError, KeyMaterial, KeyVersion, Reader, UsageDelta, VersionedKey};

const FORMAT_VERSION: u8 = 1;
const TERM_LEN: usize = 4 + 8 + 8 + KEY_LEN;

/// One barrier key: a version of the keyring's versioned key.
pub(crate) type TermKey = KeyVersion<Aes256GcmKey>;

/// Barrier keys by term, with the active (newest) term used for writes.
pub struct Keyring {
    terms: VersionedKey<Aes256GcmKey>,
    root: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active_term", &self.active_term())
            .field("terms", &self.terms.versions().count())
            .finish_non_exhaustive()
    }
}

/// The stored keyring could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("the stored keyring is malformed")]
pub struct KeyringFormatError;

impl From<FormatError> for KeyringFormatError {
    fn from(_: FormatError) -> Self {
        KeyringFormatError
    }
}

impl Keyring {
    /// A new keyring with term 1 and the given root key.
    pub fn new(root: Zeroizing<[u8; KEY_LEN]>, first: Zeroizing<[u8; KEY_LEN]>, now: i64) -> Self {
        Self { terms: VersionedKey::new(Aes256GcmKey::new(first), now), root }
    }

    /// The root key (wraps the keyring; itself wrapped by the unseal key).
    pub fn root_key(&self) -> &Zeroizing<[u8; KEY_LEN]> {
        &self.root
    }

    /// The active term number.
    pub fn active_term(&self) -> u32 {
        self.terms.latest_version()
    }

    /// The active term's key.
    pub(crate) fn active(&self) -> &TermKey {
        self.terms.latest()
    }

    /// The key of `term`, if this keyring has it.
    pub(crate) fn term(&self, term: u32) -> Option<&TermKey> {
        self.terms.version(term)
    }

    /// This keyring with a new active term (for rotation).
    pub fn rotated(mut self, new_key: Zeroizing<[u8; KEY_LEN]>, now: i64) -> Result<Self, KeyringFormatError> {
        self.terms.rotate(Aes256GcmKey::new(new_key), now).map_err(|_| KeyringFormatError)?;
        Ok(self)
    }

    /// True once the active term's count reached `limit`.
    pub(crate) fn needs_rotation(&self, limit: u64) -> bool {
        self.terms.needs_rotation(limit)
    }

    /// Add `other`'s unflushed encryptions (this process's, counted since
    /// load) to this keyring's stored counts. Returns what was added, to be
    /// marked flushed in `other` once the write succeeded.
    pub(crate) fn absorb_usage(&mut self, other: &Keyring) -> UsageDelta {
        self.terms.absorb_usage(&other.terms)
    }

    /// Record that `added` (from [`absorb_usage`](Self::absorb_usage)) is now stored.
    pub(crate) fn mark_flushed(&self, added: &UsageDelta) {
        self.terms.mark_flushed(added);
    }

    /// Take over the unflushed counts of the keyring this one replaces.
    pub(crate) fn take_unflushed_from(&self, old: &Keyring) {
        self.terms.take_unflushed_from(&old.terms);
    }

    /// Serialize (counts include this process's new encryptions).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let count = self.terms.versions().count();
        // Exact capacity: no reallocation leaves a copy of a key behind.
        let mut out = Zeroizing::new(Vec::with_capacity(9 + count * TERM_LEN));
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.active_term().to_be_bytes());
        // Terms are 1..=active, so the count is the active term.
        out.extend_from_slice(&(count as u32).to_be_bytes());
        for (term, k) in self.terms.versions() {
            out.extend_from_slice(&term.to_be_bytes());
            out.extend_from_slice(&k.created_unix().to_be_bytes());
            out.extend_from_slice(&k.encryptions().to_be_bytes());
            out.extend_from_slice(k.material().as_bytes());
        }
        out
    }

    /// Parse what [`encode`](Self::encode) produced. Every length is checked first.
    pub fn decode(root: Zeroizing<[u8; KEY_LEN]>, bytes: &[u8]) -> Result<Self, KeyringFormatError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != FORMAT_VERSION {
            return Err(KeyringFormatError);
        }
        let active = r.u32()?;
        let count = r.u32()?;
        // Checked before allocating: a forged count cannot make us reserve memory.
        let body = usize::try_from(count).ok().and_then(|c| c.checked_mul(TERM_LEN));
        if count == 0 || count != active || body != Some(r.remaining()) {
            return Err(KeyringFormatError);
        }
        let mut versions = Vec::with_capacity(r.remaining() / TERM_LEN);
        for expected in 1..=active {
            if r.u32()? != expected {
                return Err(KeyringFormatError);
            }
            // Clamped rather than refused: this record is authenticated, so the
            // time is what a server's clock said, and a clock before 1970 must
            // not keep the vault sealed.
            let install = r.i64()?.clamp(0, crate::keys::MAX_UNIX);
            let encryptions = r.u64()?;
            let key = Aes256GcmKey::from_bytes(r.take(KEY_LEN)?).map_err(|_| KeyringFormatError)?;
            versions.push(KeyVersion::stored(key, install, encryptions)?);
        }
        r.finish()?;
        let bounds = Bounds { latest: active, min_decryption: 1, min_encryption: 0, min_available: 0 };
        Ok(Self { terms: VersionedKey::from_parts(bounds, versions)?, root })
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
        k.active().count_encryptions(5);
        let r = k.rotated(Zeroizing::new([3; 32]), 200).unwrap();
        assert_eq!(r.active_term(), 2);
        assert_eq!(r.term(1).unwrap().encryptions(), 5);
        let back = Keyring::decode(Zeroizing::new([1; 32]), &r.encode()).unwrap();
        assert_eq!(back.active_term(), 2);
        assert_eq!(back.term(2).unwrap().created_unix(), 200);
        assert_eq!(back.term(1).unwrap().material().as_bytes(), &[2; 32]);
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
        let mut longer = good.to_vec();
        longer.push(0);
        assert!(Keyring::decode(Zeroizing::new([1; 32]), &longer).is_err());
        let mut bad_version = good.to_vec();
        bad_version[0] = 2;
        assert!(Keyring::decode(Zeroizing::new([1; 32]), &bad_version).is_err());
    }

    #[test]
    fn legacy_decoding_is_exact() {
        let root = || Zeroizing::new([0x11; 32]);
        let good = hex::decode(LEGACY_FIXTURE).unwrap();
        for n in 0..good.len() {
            assert!(Keyring::decode(root(), &good[..n]).is_err(), "length {n}");
        }
        let with = |i: usize, b: u8| {
            let mut x = good.clone();
            x[i] = b;
            Keyring::decode(root(), &x)
        };
        assert!(with(4, 2).is_err()); // active 2 of 3 terms
        assert!(with(8, 4).is_err()); // count 4
        assert!(with(12, 2).is_err()); // the first term claims to be 2
        assert!(with(9 + 52 + 3, 3).is_err()); // terms 1, 3, 3
        // A huge count is refused by the length check, before any allocation.
        let mut huge = good.clone();
        huge[1..9].copy_from_slice(&[0xFF; 8]);
        assert!(Keyring::decode(root(), &huge).is_err());
        // An install time before 1970 (a wrong clock, not tampering: the
        // record is authenticated) still loads.
        let mut early = good;
        early[13..21].copy_from_slice(&(-5i64).to_be_bytes());
        assert_eq!(Keyring::decode(root(), &early).unwrap().term(1).unwrap().created_unix(), 0);
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
        k.active().count_encryptions(5);
        let k = k.rotated(Zeroizing::new([0x33; 32]), 1_700_000_100).unwrap();
        k.active().count_encryptions(3_000_000_123);
        k.rotated(Zeroizing::new([0x44; 32]), 1_700_000_200).unwrap()
    }

    #[test]
    fn legacy_fixture_encodes_and_decodes() {
        assert_eq!(hex::encode(&legacy_keyring().encode()[..]), LEGACY_FIXTURE);
        let k = Keyring::decode(Zeroizing::new([0x11; 32]), &hex::decode(LEGACY_FIXTURE).unwrap()).unwrap();
        assert_eq!(k.active_term(), 3);
        assert_eq!(k.term(2).unwrap().encryptions(), 3_000_000_123);
        assert_eq!(k.term(1).unwrap().created_unix(), 1_700_000_000);
        assert_eq!(k.term(3).unwrap().material().as_bytes(), &[0x44; 32]);
        assert_eq!(hex::encode(&k.encode()[..]), LEGACY_FIXTURE);
    }

    mod proptests {
        use proptest::prelude::*;

        use super::*;

        fn root() -> Zeroizing<[u8; KEY_LEN]> {
            Zeroizing::new([0x11; KEY_LEN])
        }

        /// A keyring with one term per (key byte, install time, encryptions).
        fn keyring(terms: &[(u8, i64, u64)]) -> Keyring {
            let (b, t, n) = terms[0];
            let mut k = Keyring::new(root(), Zeroizing::new([b; KEY_LEN]), t);
            k.active().count_encryptions(n);
            for &(b, t, n) in &terms[1..] {
                k = k.rotated(Zeroizing::new([b; KEY_LEN]), t).unwrap();
                k.active().count_encryptions(n);
            }
            k
        }

        fn terms() -> impl Strategy<Value = Vec<(u8, i64, u64)>> {
            proptest::collection::vec((any::<u8>(), any::<i64>(), any::<u64>()), 1..8)
        }

        proptest! {
            /// Any keyring survives the stored format: same terms, keys,
            /// counts and (clamped) install times, the same bytes again, and
            /// the fixed length the first release's layout has.
            #[test]
            fn keyrings_round_trip(terms in terms()) {
                let k = keyring(&terms);
                let bytes = k.encode();
                prop_assert_eq!(bytes.len(), 9 + terms.len() * TERM_LEN);
                let back = Keyring::decode(root(), &bytes).unwrap();
                prop_assert_eq!(back.active_term(), terms.len() as u32);
                prop_assert!(back.term(0).is_none() && back.term(terms.len() as u32 + 1).is_none());
                for (i, &(b, t, n)) in terms.iter().enumerate() {
                    let term = back.term(i as u32 + 1).unwrap();
                    prop_assert_eq!(term.material().as_bytes(), &[b; KEY_LEN]);
                    prop_assert_eq!(term.created_unix(), t.clamp(0, crate::keys::MAX_UNIX));
                    prop_assert_eq!(term.encryptions(), n);
                }
                prop_assert_eq!(&back.encode()[..], &bytes[..]);
                prop_assert_eq!(back.needs_rotation(AUTO_ROTATE), terms.last().unwrap().2 >= AUTO_ROTATE);
            }

            /// Flipped, cut or extended records never panic the decoder;
            /// whatever still decodes has terms 1..=active and is stable
            /// under another round trip.
            #[test]
            fn damaged_keyrings_never_panic(
                terms in terms(),
                at in any::<prop::sample::Index>(),
                xor in 1u8..=255,
                cut in any::<prop::sample::Index>(),
                extra in proptest::collection::vec(any::<u8>(), 1..64),
            ) {
                let good = keyring(&terms).encode();
                let mut flipped = good.to_vec();
                flipped[at.index(good.len())] ^= xor;
                if let Ok(k) = Keyring::decode(root(), &flipped) {
                    let active = k.active_term();
                    prop_assert!((1..=active).all(|t| k.term(t).is_some()));
                    let again = Keyring::decode(root(), &k.encode()).unwrap();
                    prop_assert_eq!(&again.encode()[..], &k.encode()[..]);
                }
                prop_assert!(Keyring::decode(root(), &good[..cut.index(good.len())]).is_err());
                let mut longer = good.to_vec();
                longer.extend_from_slice(&extra);
                prop_assert!(Keyring::decode(root(), &longer).is_err());
            }

            #[test]
            fn arbitrary_bytes_never_panic(
                head in (0u8..3, 0u32..4, 0u32..4),
                tail in proptest::collection::vec(any::<u8>(), 0..256),
            ) {
                let mut bytes = vec![head.0];
                bytes.extend_from_slice(&head.1.to_be_bytes());
                bytes.extend_from_slice(&head.2.to_be_bytes());
                bytes.extend_from_slice(&tail);
                let _ = Keyring::decode(root(), &bytes);
                let _ = Keyring::decode(root(), &tail);
            }
        }

        const AUTO_ROTATE: u64 = crate::barrier::AUTO_ROTATE_ENCRYPTIONS;
    }

    #[test]
    fn debug_shows_no_keys() {
        let k = Keyring::new(Zeroizing::new([0xAB; 32]), Zeroizing::new([0xCD; 32]), 1);
        let d = format!("{k:?}");
        assert!(!d.contains("171") && !d.to_lowercase().contains("abab"), "{d}");
    }
}
