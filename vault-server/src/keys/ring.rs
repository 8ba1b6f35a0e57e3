//! [`VersionedKey`]: numbered versions of one key, with Vault transit's
//! rules for which versions may encrypt, decrypt, and be trimmed.

use super::codec::FormatError;
use super::material::KeyMaterial;
use super::usage::UsageDelta;
use super::version::KeyVersion;

/// Why a version cannot be used or a setting cannot be changed. Caller
/// input, not corrupt storage (that is [`FormatError`]). Messages are
/// Vault's where Vault has one, so engines can pass them through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum KeyError {
    /// Encryption asked for a version newer than the latest.
    #[error("requested version for encryption is higher than the latest key version")]
    EncryptionVersionTooNew,
    /// Encryption asked for a version below `min_encryption_version`.
    #[error("requested version for encryption is less than the minimum encryption key version")]
    EncryptionVersionTooOld,
    /// Encryption asked for a version that can no longer decrypt (below
    /// `min_decryption_version`, or trimmed).
    #[error("requested version for encryption is less than the minimum decryption key version")]
    EncryptionVersionUnavailable,
    /// A ciphertext names a version newer than the latest.
    #[error("invalid ciphertext: version is too new")]
    DecryptionVersionTooNew,
    /// A ciphertext names a version below `min_decryption_version` (or trimmed).
    #[error("ciphertext or signature version is disallowed by policy (too old)")]
    DecryptionVersionTooOld,
    /// `min_decryption_version` above the latest version.
    #[error("cannot set min decryption version of {requested}, latest key version is {latest}")]
    MinDecryptionTooNew {
        /// Asked for.
        requested: u32,
        /// Latest version.
        latest: u32,
    },
    /// `min_encryption_version` above the latest version.
    #[error("cannot set min encryption version of {requested}, latest key version is {latest}")]
    MinEncryptionTooNew {
        /// Asked for.
        requested: u32,
        /// Latest version.
        latest: u32,
    },
    /// A non-zero `min_encryption_version` below `min_decryption_version`.
    #[error(
        "cannot set min encryption/decryption values; min encryption version of {min_encryption} must be greater than or equal to min decryption version of {min_decryption}"
    )]
    MinEncryptionBelowMinDecryption {
        /// Resulting min encryption version.
        min_encryption: u32,
        /// Resulting min decryption version.
        min_decryption: u32,
    },
    /// `min_encryption_version` below the trimmed bound (0, "latest", counts as below).
    #[error("min encryption version should not be less than min available version")]
    MinEncryptionBelowMinAvailable,
    /// `min_decryption_version` below the trimmed bound.
    #[error("min decryption version should not be less than min available version")]
    MinDecryptionBelowMinAvailable,
    /// Trim to a lower bound than an earlier trim.
    #[error("minimum available version cannot be decremented")]
    TrimDecrement,
    /// Trim while `min_encryption_version` is 0 (latest).
    #[error("minimum available version cannot be set when minimum encryption version is not set")]
    TrimWithoutMinEncryption,
    /// Trim above `min_encryption_version`.
    #[error("minimum available version cannot be greater than minimum encryption version")]
    TrimAboveMinEncryption,
    /// Trim above `min_decryption_version`.
    #[error("minimum available version cannot be greater than minimum decryption version")]
    TrimAboveMinDecryption,
    /// Trim to 0.
    #[error("minimum available version should be positive")]
    TrimNotPositive,
    /// Rotation past the last representable version number.
    #[error("the key has no version number left to rotate to")]
    VersionsExhausted,
}

/// The version numbers of a [`VersionedKey`], as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// The newest version (>= 1).
    pub latest: u32,
    /// Versions below this do not decrypt (>= 1, Vault's default 1).
    pub min_decryption: u32,
    /// Versions below this do not encrypt; 0 means "any decryptable version,
    /// latest by default" (Vault's default 0).
    pub min_encryption: u32,
    /// Versions below this were trimmed (deleted); 0 when never trimmed.
    pub min_available: u32,
}

impl Bounds {
    /// The oldest version still held.
    fn first(&self) -> u32 {
        self.min_available.max(1)
    }

    /// The invariants every state reachable through the methods keeps.
    fn valid(&self) -> bool {
        let b = self;
        b.latest >= 1
            && (b.first()..=b.latest).contains(&b.min_decryption)
            && (b.min_encryption == 0 || (b.min_decryption..=b.latest).contains(&b.min_encryption))
            && (b.min_available == 0 || b.min_encryption >= b.min_available)
    }
}

/// Numbered versions 1..=n of one key, oldest first, all held in memory
/// (zeroized on drop). Versions `first..=latest` are present with no gap;
/// trimming raises `first`, rotation adds `latest + 1`.
///
/// Semantics follow Vault's transit keys: encryption uses the latest version
/// unless an allowed older one is asked for; decryption refuses versions below
/// `min_decryption_version`; trimming deletes versions below a bound that may
/// not exceed either minimum, so the latest version is never deleted.
pub(crate) struct VersionedKey<M> {
    /// `versions[i]` is version `bounds.first() + i`.
    versions: Vec<KeyVersion<M>>,
    bounds: Bounds,
}

impl<M> std::fmt::Debug for VersionedKey<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionedKey").field("bounds", &self.bounds).field("versions", &self.versions).finish()
    }
}

impl<M: KeyMaterial> VersionedKey<M> {
    /// A key whose only version, 1, holds `material`.
    pub(crate) fn new(material: M, now_unix: i64) -> Self {
        Self {
            versions: vec![KeyVersion::new(material, now_unix)],
            bounds: Bounds { latest: 1, min_decryption: 1, min_encryption: 0, min_available: 0 },
        }
    }

    /// Rebuild from stored parts: `versions` must be exactly versions
    /// `max(min_available, 1)..=latest`, oldest first, and `bounds` must be a
    /// state the methods can reach.
    pub(crate) fn from_parts(bounds: Bounds, versions: Vec<KeyVersion<M>>) -> Result<Self, FormatError> {
        if !bounds.valid() {
            return Err(FormatError::Bounds);
        }
        if versions.len() as u64 != u64::from(bounds.latest - bounds.first()) + 1 {
            return Err(FormatError::VersionNumbers);
        }
        Ok(Self { versions, bounds })
    }

    /// The version numbers.
    pub(crate) fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// The newest version number.
    pub(crate) fn latest_version(&self) -> u32 {
        self.bounds.latest
    }

    /// Versions below this do not decrypt (at least 1).
    pub(crate) fn min_decryption_version(&self) -> u32 {
        self.bounds.min_decryption
    }

    /// Versions below this do not encrypt; 0 means latest by default.
    pub(crate) fn min_encryption_version(&self) -> u32 {
        self.bounds.min_encryption
    }

    /// Versions below this were deleted by a trim; 0 if never trimmed.
    pub(crate) fn min_available_version(&self) -> u32 {
        self.bounds.min_available
    }

    /// The latest version.
    pub(crate) fn latest(&self) -> &KeyVersion<M> {
        // Invariant: `versions` is never empty (it always holds `latest`).
        &self.versions[self.versions.len() - 1]
    }

    /// Version `v` if still held (whatever the minimums say).
    pub(crate) fn version(&self, v: u32) -> Option<&KeyVersion<M>> {
        let i = v.checked_sub(self.bounds.first())?;
        self.versions.get(usize::try_from(i).ok()?)
    }

    fn version_mut(&mut self, v: u32) -> Option<&mut KeyVersion<M>> {
        let i = v.checked_sub(self.bounds.first())?;
        self.versions.get_mut(usize::try_from(i).ok()?)
    }

    /// Every held version with its number, oldest first.
    pub(crate) fn versions(&self) -> impl Iterator<Item = (u32, &KeyVersion<M>)> + '_ {
        (self.bounds.first()..=self.bounds.latest).zip(self.versions.iter())
    }

    /// The version to encrypt with: the latest for `requested == 0`, else
    /// `requested` if it is at least `min_encryption_version` and can still
    /// decrypt. Does not count the use: call
    /// [`KeyVersion::count_encryptions`] for random-nonce encryptions.
    pub(crate) fn encryption_version(&self, requested: u32) -> Result<(u32, &KeyVersion<M>), KeyError> {
        let b = &self.bounds;
        let v = if requested == 0 { b.latest } else { requested };
        if v > b.latest {
            return Err(KeyError::EncryptionVersionTooNew);
        }
        if v < b.min_encryption {
            return Err(KeyError::EncryptionVersionTooOld);
        }
        // Vault has no such check, but cannot encrypt with such a version
        // either (it is archived or trimmed): a ciphertext nobody may decrypt.
        if v < b.min_decryption {
            return Err(KeyError::EncryptionVersionUnavailable);
        }
        self.version(v).map(|k| (v, k)).ok_or(KeyError::EncryptionVersionUnavailable)
    }

    /// The version a ciphertext (or signature) names, if it may be used.
    pub(crate) fn decryption_version(&self, v: u32) -> Result<&KeyVersion<M>, KeyError> {
        if v > self.bounds.latest {
            return Err(KeyError::DecryptionVersionTooNew);
        }
        if v < self.bounds.min_decryption {
            return Err(KeyError::DecryptionVersionTooOld);
        }
        self.version(v).ok_or(KeyError::DecryptionVersionTooOld)
    }

    /// Add a version holding `material` and make it the latest. The
    /// minimums are unchanged. Returns the new version number.
    pub(crate) fn rotate(&mut self, material: M, now_unix: i64) -> Result<u32, KeyError> {
        let next = self.bounds.latest.checked_add(1).ok_or(KeyError::VersionsExhausted)?;
        self.versions.push(KeyVersion::new(material, now_unix));
        self.bounds.latest = next;
        Ok(next)
    }

    /// Vault's `keys/{name}/config` for the two minimums: `None` leaves one
    /// as is; a `min_decryption` of 0 means 1 (Vault answers that with a
    /// warning). Either both change or neither does.
    pub(crate) fn set_min_versions(
        &mut self,
        min_decryption: Option<u32>,
        min_encryption: Option<u32>,
    ) -> Result<(), KeyError> {
        let mut next = self.bounds;
        if let Some(d) = min_decryption {
            let d = d.max(1);
            if d > next.latest {
                return Err(KeyError::MinDecryptionTooNew { requested: d, latest: next.latest });
            }
            next.min_decryption = d;
        }
        if let Some(e) = min_encryption {
            if e > next.latest {
                return Err(KeyError::MinEncryptionTooNew { requested: e, latest: next.latest });
            }
            next.min_encryption = e;
        }
        if next.min_encryption > 0 && next.min_encryption < next.min_decryption {
            return Err(KeyError::MinEncryptionBelowMinDecryption {
                min_encryption: next.min_encryption,
                min_decryption: next.min_decryption,
            });
        }
        if next.min_available > next.min_encryption {
            return Err(KeyError::MinEncryptionBelowMinAvailable);
        }
        if next.min_available > next.min_decryption {
            return Err(KeyError::MinDecryptionBelowMinAvailable);
        }
        debug_assert!(next.valid());
        self.bounds = next;
        Ok(())
    }

    /// Vault's `keys/{name}/trim`: delete (and wipe) every version below
    /// `min_available`. Allowed only once both minimums are set and at least
    /// `min_available`, so the latest version always survives and no version
    /// that may still encrypt or decrypt is deleted. Returns how many versions
    /// were deleted.
    pub(crate) fn trim(&mut self, min_available: u32) -> Result<usize, KeyError> {
        let b = self.bounds;
        if min_available < b.min_available {
            return Err(KeyError::TrimDecrement);
        }
        if b.min_encryption == 0 {
            return Err(KeyError::TrimWithoutMinEncryption);
        }
        if min_available > b.min_encryption {
            return Err(KeyError::TrimAboveMinEncryption);
        }
        if min_available > b.min_decryption {
            return Err(KeyError::TrimAboveMinDecryption);
        }
        if min_available == 0 {
            return Err(KeyError::TrimNotPositive);
        }
        // first <= min_available <= min_decryption <= latest.
        let drop = usize::try_from(min_available - b.first()).map_err(|_| KeyError::TrimAboveMinDecryption)?;
        self.versions.drain(..drop);
        self.bounds.min_available = min_available;
        debug_assert!(self.bounds.valid());
        Ok(drop)
    }

    /// True once the latest version's count reached `limit` (e.g.
    /// [`ROTATE_AT`](super::ROTATE_AT)). Ask it of a freshly loaded record,
    /// which holds every server's flushed counts.
    pub(crate) fn needs_rotation(&self, limit: u64) -> bool {
        self.latest().usage().needs_rotation(limit)
    }

    /// Add `live`'s unflushed counts to this record (loaded from storage, to
    /// be written back). Counts follow the key material: a version whose
    /// material differs here (the key was deleted and made again) or that
    /// was trimmed takes nothing. After the write succeeds, pass the result
    /// to `live.mark_flushed`.
    pub(crate) fn absorb_usage(&mut self, live: &Self) -> UsageDelta {
        let mut added = Vec::new();
        for (v, ours) in live.versions() {
            let delta = ours.usage().unflushed();
            if delta == 0 {
                continue;
            }
            if let Some(k) = self.version_mut(v)
                && k.material().ct_eq(ours.material())
            {
                k.usage_mut().add_persisted(delta);
                added.push((v, delta));
            }
        }
        UsageDelta(added)
    }

    /// Record that `added` (from [`absorb_usage`](Self::absorb_usage) with
    /// `self` as `live`) is now stored.
    pub(crate) fn mark_flushed(&self, added: &UsageDelta) {
        for (v, n) in added.iter() {
            if let Some(k) = self.version(v) {
                k.usage().mark_flushed(n);
            }
        }
    }

    /// Move `old`'s unflushed counts into this copy, which replaces it in
    /// memory (after a reload or a rotation), so encryptions counted on the
    /// old copy are not lost. Races with encryptions still running on `old`
    /// only ever count a use twice, never drop one.
    pub(crate) fn take_unflushed_from(&self, old: &Self) {
        for (v, theirs) in old.versions() {
            let n = theirs.usage().unflushed();
            if n == 0 {
                continue;
            }
            if let Some(k) = self.version(v)
                && k.material().ct_eq(theirs.material())
            {
                theirs.usage().mark_flushed(n);
                k.usage().add_local(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::material::SecretBytes;

    fn m(b: u8) -> SecretBytes {
        SecretBytes::from_bytes(&[b; 32]).unwrap()
    }

    /// A key with versions 1..=n (material byte = version).
    fn key(n: u32) -> VersionedKey<SecretBytes> {
        let mut k = VersionedKey::new(m(1), 100);
        for v in 2..=n {
            assert_eq!(k.rotate(m(v as u8), 100 + i64::from(v)).unwrap(), v);
        }
        k
    }

    fn held(k: &VersionedKey<SecretBytes>) -> Vec<u32> {
        k.versions()
            .map(|(v, kv)| {
                assert_eq!(kv.material().as_bytes()[0], v as u8);
                v
            })
            .collect()
    }

    #[test]
    fn new_key_defaults_match_vault() {
        let k = key(1);
        assert_eq!(k.bounds(), Bounds { latest: 1, min_decryption: 1, min_encryption: 0, min_available: 0 });
        assert_eq!(k.latest().created_unix(), 100);
    }

    #[test]
    fn encryption_uses_latest_unless_an_allowed_version_is_asked() {
        let mut k = key(4);
        assert_eq!(k.encryption_version(0).unwrap().0, 4);
        assert_eq!(k.encryption_version(2).unwrap().0, 2);
        assert_eq!(k.encryption_version(5).unwrap_err(), KeyError::EncryptionVersionTooNew);
        k.set_min_versions(None, Some(3)).unwrap();
        assert_eq!(k.encryption_version(2).unwrap_err(), KeyError::EncryptionVersionTooOld);
        assert_eq!(k.encryption_version(3).unwrap().0, 3);
        assert_eq!(k.encryption_version(0).unwrap().0, 4);
        // min_encryption 0 but min_decryption 3: version 2 cannot decrypt, so it may not encrypt.
        k.set_min_versions(Some(3), Some(0)).unwrap();
        assert_eq!(k.encryption_version(2).unwrap_err(), KeyError::EncryptionVersionUnavailable);
    }

    #[test]
    fn decryption_refuses_versions_below_the_minimum_and_above_latest() {
        let mut k = key(3);
        for v in 1..=3 {
            assert!(k.decryption_version(v).is_ok());
        }
        assert_eq!(k.decryption_version(0).unwrap_err(), KeyError::DecryptionVersionTooOld);
        assert_eq!(k.decryption_version(4).unwrap_err(), KeyError::DecryptionVersionTooNew);
        k.set_min_versions(Some(2), None).unwrap();
        assert_eq!(k.decryption_version(1).unwrap_err(), KeyError::DecryptionVersionTooOld);
        assert_eq!(k.decryption_version(2).unwrap().material().as_bytes()[0], 2);
        // Lowering it again brings version 1 back (it was never deleted).
        k.set_min_versions(Some(1), None).unwrap();
        assert!(k.decryption_version(1).is_ok());
    }

    #[test]
    fn min_version_settings_follow_vault() {
        let mut k = key(3);
        assert_eq!(
            k.set_min_versions(Some(4), None).unwrap_err(),
            KeyError::MinDecryptionTooNew { requested: 4, latest: 3 }
        );
        assert_eq!(
            k.set_min_versions(None, Some(4)).unwrap_err(),
            KeyError::MinEncryptionTooNew { requested: 4, latest: 3 }
        );
        // 0 for min_decryption means 1.
        k.set_min_versions(Some(0), None).unwrap();
        assert_eq!(k.min_decryption_version(), 1);
        // A non-zero min_encryption below min_decryption is refused, and nothing changes.
        assert_eq!(
            k.set_min_versions(Some(3), Some(2)).unwrap_err(),
            KeyError::MinEncryptionBelowMinDecryption { min_encryption: 2, min_decryption: 3 }
        );
        assert_eq!((k.min_decryption_version(), k.min_encryption_version()), (1, 0));
        k.set_min_versions(Some(3), Some(3)).unwrap();
        assert_eq!((k.min_decryption_version(), k.min_encryption_version()), (3, 3));
        // Rotation leaves the minimums alone.
        k.rotate(m(4), 1).unwrap();
        assert_eq!(k.bounds(), Bounds { latest: 4, min_decryption: 3, min_encryption: 3, min_available: 0 });
    }

    #[test]
    fn trim_follows_vault_and_never_removes_the_latest() {
        let mut k = key(5);
        assert_eq!(k.trim(2).unwrap_err(), KeyError::TrimWithoutMinEncryption);
        k.set_min_versions(Some(3), Some(4)).unwrap();
        assert_eq!(k.trim(0).unwrap_err(), KeyError::TrimNotPositive);
        assert_eq!(k.trim(5).unwrap_err(), KeyError::TrimAboveMinEncryption);
        assert_eq!(k.trim(4).unwrap_err(), KeyError::TrimAboveMinDecryption);
        assert_eq!(held(&k), [1, 2, 3, 4, 5]);
        assert_eq!(k.trim(2).unwrap(), 1);
        assert_eq!(held(&k), [2, 3, 4, 5]);
        assert_eq!(k.trim(1).unwrap_err(), KeyError::TrimDecrement);
        assert_eq!(k.trim(2).unwrap(), 0); // the same bound again is a no-op
        assert_eq!(k.trim(3).unwrap(), 1);
        assert_eq!(held(&k), [3, 4, 5]);
        assert!(k.version(2).is_none());
        assert_eq!(k.decryption_version(2).unwrap_err(), KeyError::DecryptionVersionTooOld);
        // Minimums may not go below what was trimmed; min_encryption may no longer be 0.
        assert_eq!(k.set_min_versions(Some(2), None).unwrap_err(), KeyError::MinDecryptionBelowMinAvailable);
        assert_eq!(k.set_min_versions(None, Some(0)).unwrap_err(), KeyError::MinEncryptionBelowMinAvailable);
        // Trim up to the latest: only the latest is left, and it still works.
        k.set_min_versions(Some(5), Some(5)).unwrap();
        assert_eq!(k.trim(5).unwrap(), 2);
        assert_eq!(held(&k), [5]);
        assert_eq!(k.encryption_version(0).unwrap().0, 5);
        assert_eq!(k.rotate(m(6), 1).unwrap(), 6);
        assert_eq!(held(&k), [5, 6]);
    }

    #[test]
    fn rotation_stops_at_the_last_version_number() {
        let versions = vec![KeyVersion::new(m(1), 0)];
        let b =
            Bounds { latest: u32::MAX, min_decryption: u32::MAX, min_encryption: u32::MAX, min_available: u32::MAX };
        let mut k = VersionedKey::from_parts(b, versions).unwrap();
        assert_eq!(k.rotate(m(2), 0).unwrap_err(), KeyError::VersionsExhausted);
        assert_eq!(held_count(&k), 1);
    }

    fn held_count(k: &VersionedKey<SecretBytes>) -> usize {
        k.versions().count()
    }

    #[test]
    fn from_parts_refuses_unreachable_states() {
        let parts = |n: u8| (1..=n).map(|b| KeyVersion::new(m(b), 0)).collect::<Vec<_>>();
        let ok = Bounds { latest: 3, min_decryption: 1, min_encryption: 0, min_available: 0 };
        assert!(VersionedKey::from_parts(ok, parts(3)).is_ok());
        assert!(VersionedKey::from_parts(ok, parts(2)).is_err());
        assert!(VersionedKey::from_parts(ok, parts(4)).is_err());
        for bad in [
            Bounds { latest: 0, ..ok },
            Bounds { min_decryption: 0, ..ok },
            Bounds { min_decryption: 4, ..ok },
            Bounds { min_decryption: 2, min_encryption: 1, ..ok },
            Bounds { min_encryption: 4, ..ok },
            Bounds { min_available: 2, ..ok }, // min_encryption 0 after a trim
            Bounds { min_available: 2, min_encryption: 3, ..ok }, // min_decryption below the trim
        ] {
            assert!(VersionedKey::from_parts(bad, parts(3)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usage_merges_across_servers_without_losing_or_repeating_counts() {
        // One stored record, two servers that loaded it.
        let stored = key(2);
        stored.latest().count_encryptions(10);
        let stored_bytes = stored.encode();
        let a = VersionedKey::<SecretBytes>::decode(&stored_bytes).unwrap();
        let b = VersionedKey::<SecretBytes>::decode(&stored_bytes).unwrap();
        a.latest().count_encryptions(100);
        a.version(1).unwrap().count_encryptions(7);
        b.latest().count_encryptions(1000);

        // Server A flushes: load, absorb, write, mark.
        let mut rec = VersionedKey::<SecretBytes>::decode(&stored_bytes).unwrap();
        let added = rec.absorb_usage(&a);
        assert_eq!(added.iter().collect::<Vec<_>>(), [(1, 7), (2, 100)]);
        let after_a = rec.encode();
        a.mark_flushed(&added);
        // Nothing new: absorbing again adds nothing.
        let mut again = VersionedKey::<SecretBytes>::decode(&after_a).unwrap();
        assert!(again.absorb_usage(&a).is_empty());

        // Server B flushes onto what A wrote.
        let mut rec = VersionedKey::<SecretBytes>::decode(&after_a).unwrap();
        let added = rec.absorb_usage(&b);
        let after_b = rec.encode();
        b.mark_flushed(&added);

        // A counts more and flushes again: only the new ones are added.
        a.latest().count_encryptions(5);
        let mut rec = VersionedKey::<SecretBytes>::decode(&after_b).unwrap();
        let added = rec.absorb_usage(&a);
        assert_eq!(added.iter().collect::<Vec<_>>(), [(2, 5)]);
        a.mark_flushed(&added);

        assert_eq!(rec.latest().encryptions(), 10 + 100 + 1000 + 5);
        assert_eq!(rec.version(1).unwrap().encryptions(), 7);
        assert!(rec.needs_rotation(1115) && !rec.needs_rotation(1116));
        // Each server's own view: stored-at-load plus its own.
        assert_eq!(a.latest().encryptions(), 10 + 105);
    }

    #[test]
    fn a_failed_write_flushes_nothing() {
        let live = key(1);
        live.latest().count_encryptions(3);
        let mut rec = key(1);
        let _lost = rec.absorb_usage(&live); // write failed: not marked
        let mut rec = key(1);
        let added = rec.absorb_usage(&live);
        assert_eq!(added.iter().collect::<Vec<_>>(), [(1, 3)]);
    }

    #[test]
    fn counts_follow_material_not_version_numbers() {
        let live = key(2);
        live.latest().count_encryptions(9);
        // The key was deleted and made again: same numbers, other material.
        let mut other = VersionedKey::new(m(0xEE), 0);
        other.rotate(m(0xEF), 0).unwrap();
        assert!(other.absorb_usage(&live).is_empty());
        assert_eq!(other.latest().encryptions(), 0);
        // A trimmed version takes nothing either.
        let mut trimmed = key(2);
        trimmed.set_min_versions(Some(2), Some(2)).unwrap();
        trimmed.trim(2).unwrap();
        live.version(1).unwrap().count_encryptions(4);
        assert_eq!(trimmed.absorb_usage(&live).iter().collect::<Vec<_>>(), [(2, 9)]);
    }

    #[test]
    fn replacing_a_live_copy_keeps_its_unflushed_counts_once() {
        let old = key(1);
        old.latest().count_encryptions(6);
        let mut newer = VersionedKey::<SecretBytes>::decode(&key(1).encode()).unwrap();
        newer.rotate(m(2), 0).unwrap();
        newer.take_unflushed_from(&old);
        assert_eq!(old.latest().usage().unflushed(), 0);
        assert_eq!(newer.version(1).unwrap().usage().unflushed(), 6);
        let mut rec = key(1);
        assert!(rec.absorb_usage(&old).is_empty()); // not counted twice
        assert_eq!(rec.absorb_usage(&newer).iter().collect::<Vec<_>>(), [(1, 6)]);
    }

    #[test]
    fn debug_shows_no_material() {
        let k = key(2);
        let d = format!("{k:?}");
        assert!(d.contains("latest: 2") && !d.contains("SecretBytes"), "{d}");
    }
}
