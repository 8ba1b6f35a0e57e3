//! One version of a versioned key: its material, when it was made, and how
//! often it has encrypted.

use super::codec::FormatError;
use super::material::KeyMaterial;
use super::usage::Usage;

/// Latest creation time accepted: 9999-12-31T23:59:59Z, the end of the range
/// RFC 3339 (four-digit years) can render.
pub(crate) const MAX_UNIX: i64 = 253_402_300_799;

/// A key version.
pub(crate) struct KeyVersion<M> {
    material: M,
    created_unix: i64,
    usage: Usage,
}

impl<M> std::fmt::Debug for KeyVersion<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVersion")
            .field("created_unix", &self.created_unix)
            .field("encryptions", &self.usage.total())
            .finish_non_exhaustive()
    }
}

impl<M: KeyMaterial> KeyVersion<M> {
    /// A version made now. A clock outside 1970..=9999 is clamped into it,
    /// so every version has a time RFC 3339 can render.
    pub(crate) fn new(material: M, now_unix: i64) -> Self {
        Self { material, created_unix: now_unix.clamp(0, MAX_UNIX), usage: Usage::new(0) }
    }

    /// A version read back from storage (the time is checked, not clamped:
    /// a stored time out of range means a corrupt record).
    pub(crate) fn stored(material: M, created_unix: i64, encryptions: u64) -> Result<Self, FormatError> {
        if !(0..=MAX_UNIX).contains(&created_unix) {
            return Err(FormatError::Time);
        }
        Ok(Self { material, created_unix, usage: Usage::new(encryptions) })
    }

    /// The key material (secret).
    pub(crate) fn material(&self) -> &M {
        &self.material
    }

    /// When this version was made, in Unix seconds.
    pub(crate) fn created_unix(&self) -> i64 {
        self.created_unix
    }

    /// When this version was made, as RFC 3339 in UTC (what Vault's key
    /// read shows per version).
    pub(crate) fn created_rfc3339(&self) -> String {
        // Cannot fail: `created_unix` is kept within 1970..=9999.
        time::OffsetDateTime::from_unix_timestamp(self.created_unix)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default()
    }

    /// The encryption count (stored at load, plus this process's since).
    pub(crate) fn usage(&self) -> &Usage {
        &self.usage
    }

    pub(super) fn usage_mut(&mut self) -> &mut Usage {
        &mut self.usage
    }

    /// Count `n` encryptions with this version; returns the total known here.
    /// Call once per message sealed with a random nonce.
    pub(crate) fn count_encryptions(&self, n: u64) -> u64 {
        self.usage.record(n)
    }

    /// Total encryptions known here.
    pub(crate) fn encryptions(&self) -> u64 {
        self.usage.total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::material::SecretBytes;

    fn material() -> SecretBytes {
        SecretBytes::from_bytes(&[0x5A; 16]).unwrap()
    }

    #[test]
    fn creation_time_renders_and_is_clamped() {
        let v = KeyVersion::new(material(), 1_700_000_000);
        assert_eq!(v.created_rfc3339(), "2023-11-14T22:13:20Z");
        assert_eq!(KeyVersion::new(material(), -5).created_unix(), 0);
        let far = KeyVersion::new(material(), i64::MAX);
        assert_eq!(far.created_unix(), MAX_UNIX);
        assert_eq!(far.created_rfc3339(), "9999-12-31T23:59:59Z");
        assert!(KeyVersion::stored(material(), -1, 0).is_err());
        assert!(KeyVersion::stored(material(), MAX_UNIX + 1, 0).is_err());
    }

    #[test]
    fn debug_shows_no_material() {
        let v = KeyVersion::new(material(), 1);
        v.count_encryptions(2);
        let d = format!("{v:?}");
        assert!(d.contains("encryptions: 2") && !d.contains("90") && !d.to_lowercase().contains("5a"), "{d}");
    }
}
