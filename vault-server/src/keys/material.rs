//! Key material: the secret bytes of one key version, generic over what the
//! key is for. A [`KeyMaterial`] type says how its bytes are checked when
//! read back, and promises to wipe them on drop; [`VersionedKey`] stores any
//! of them.
//!
//! [`VersionedKey`]: super::VersionedKey

use subtle::ConstantTimeEq;
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::crypto::{AeadKey, KEY_LEN, random};

/// Bytes that cannot be key material of this kind (wrong length). Carries no
/// byte of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("key material has the wrong length for its kind")]
pub(crate) struct MaterialError;

/// The secret of one key version, as bytes.
///
/// Implementors wipe their bytes on drop (`ZeroizeOnDrop`), keep them out of
/// `Debug`, and check lengths in [`from_bytes`](Self::from_bytes) (its input
/// comes from storage, which is untrusted).
pub(crate) trait KeyMaterial: ZeroizeOnDrop + Sized {
    /// Stored beside serialized keys, so bytes of one kind are never loaded
    /// as another. Values in use are listed in `docs/formats.md`.
    const KIND: u8;
    /// The largest serialized length accepted; checked before the parser
    /// allocates anything.
    const MAX_LEN: usize;

    /// Take key material from its serialized bytes (copied; the caller keeps
    /// and wipes its buffer).
    fn from_bytes(bytes: &[u8]) -> Result<Self, MaterialError>;

    /// The serialized bytes. Secret: only for serializing and deriving.
    fn as_bytes(&self) -> &[u8];

    /// Constant-time equality of the secret bytes (lengths are not secret).
    fn ct_eq(&self, other: &Self) -> bool {
        self.as_bytes().ct_eq(other.as_bytes()).into()
    }
}

/// A 256-bit AES-GCM key: the raw bytes (to serialize) and the expanded key
/// schedule (to use), both wiped on drop.
pub(crate) struct Aes256GcmKey {
    raw: Zeroizing<[u8; KEY_LEN]>,
    aead: AeadKey,
}

impl Aes256GcmKey {
    /// Take ownership of 32 key bytes.
    pub(crate) fn new(raw: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let aead = AeadKey::new(&raw);
        Self { raw, aead }
    }

    /// A fresh key from the operating system's CSPRNG.
    pub(crate) fn generate() -> Result<Self, random::RandomError> {
        Ok(Self::new(random::key32()?))
    }

    /// The cipher to seal and open with.
    pub(crate) fn aead(&self) -> &AeadKey {
        &self.aead
    }
}

// `raw` is `Zeroizing`; `AeadKey` holds an `Aes256Gcm`, which wipes its key
// schedule on drop (the workspace enables aes-gcm's `zeroize` feature).
impl ZeroizeOnDrop for Aes256GcmKey {}

impl KeyMaterial for Aes256GcmKey {
    const KIND: u8 = 0x01;
    const MAX_LEN: usize = KEY_LEN;

    fn from_bytes(bytes: &[u8]) -> Result<Self, MaterialError> {
        let mut raw = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return Err(MaterialError);
        }
        raw.copy_from_slice(bytes);
        Ok(Self::new(raw))
    }

    fn as_bytes(&self) -> &[u8] {
        &self.raw[..]
    }
}

impl std::fmt::Debug for Aes256GcmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aes256GcmKey(<redacted>)")
    }
}

/// Secret bytes of any length from 1 to [`SecretBytes::MAX_LEN`]: HMAC keys
/// (`key_size`), Ed25519 seeds, ECDSA scalars, keys of other AEADs. The user
/// of the key checks the length its algorithm needs.
pub(crate) struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Take ownership of a zeroizing buffer (refused if empty or too long).
    pub(crate) fn new(bytes: Zeroizing<Vec<u8>>) -> Result<Self, MaterialError> {
        if bytes.is_empty() || bytes.len() > Self::MAX_LEN {
            return Err(MaterialError);
        }
        Ok(Self(bytes))
    }

    /// Length in bytes (not secret).
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

impl ZeroizeOnDrop for SecretBytes {}

impl KeyMaterial for SecretBytes {
    const KIND: u8 = 0x02;
    /// Room for an RSA-4096 private key in DER (about 2.4 KB) and large HMAC
    /// keys, small enough that a forged length cannot make us allocate much.
    const MAX_LEN: usize = 16 * 1024;

    fn from_bytes(bytes: &[u8]) -> Result<Self, MaterialError> {
        if bytes.is_empty() || bytes.len() > Self::MAX_LEN {
            return Err(MaterialError);
        }
        // Exact capacity: the buffer never reallocates, so no unwiped copy
        // of the key is left behind in freed memory.
        let mut v = Zeroizing::new(Vec::with_capacity(bytes.len()));
        v.extend_from_slice(bytes);
        Ok(Self(v))
    }

    fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes({} bytes, <redacted>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked() {
        assert!(Aes256GcmKey::from_bytes(&[7; 31]).is_err());
        assert!(Aes256GcmKey::from_bytes(&[7; 33]).is_err());
        assert_eq!(Aes256GcmKey::from_bytes(&[7; 32]).unwrap().as_bytes(), &[7; 32]);
        assert!(SecretBytes::from_bytes(&[]).is_err());
        assert!(SecretBytes::from_bytes(&vec![1; SecretBytes::MAX_LEN + 1]).is_err());
        assert_eq!(SecretBytes::from_bytes(&[1; 64]).unwrap().len(), 64);
        assert!(SecretBytes::new(Zeroizing::new(Vec::new())).is_err());
    }

    #[test]
    fn constant_time_equality() {
        let a = SecretBytes::from_bytes(&[1, 2, 3]).unwrap();
        assert!(a.ct_eq(&SecretBytes::from_bytes(&[1, 2, 3]).unwrap()));
        assert!(!a.ct_eq(&SecretBytes::from_bytes(&[1, 2, 4]).unwrap()));
        assert!(!a.ct_eq(&SecretBytes::from_bytes(&[1, 2]).unwrap()));
        let k = Aes256GcmKey::generate().unwrap();
        assert!(!k.ct_eq(&Aes256GcmKey::generate().unwrap()));
    }

    #[test]
    fn debug_is_redacted() {
        let s = format!(
            "{:?} {:?}",
            SecretBytes::from_bytes(&[0xAB; 8]).unwrap(),
            Aes256GcmKey::new(Zeroizing::new([0xAB; 32]))
        );
        assert!(!s.contains("171") && !s.to_lowercase().contains("ab"), "{s}");
    }
}
