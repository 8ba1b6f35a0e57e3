//! AES-256-GCM with a random 96-bit nonce per message.
//!
//! Byte format of everything this module produces:
//!
//! ```text
//! header (caller-defined, fixed length per format) | nonce (12) | ciphertext | tag (16)
//! ```
//!
//! The header is authenticated: the associated data is `header || aad`, and
//! because each format's header has a fixed length the concatenation is
//! unambiguous. Random nonces are safe for at most 2^32 messages per key
//! (NIST SP 800-38D §8.3); callers that can reach that count (the barrier)
//! track usage and rotate well before it.

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::Zeroizing;

/// Length of an AES-256 key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a GCM nonce in bytes (96 bits, the size GCM is specified for).
pub const NONCE_LEN: usize = 12;
/// Length of a GCM authentication tag in bytes.
pub const TAG_LEN: usize = 16;

/// Why a ciphertext could not be opened. Deliberately carries no detail: a
/// decryption oracle should learn nothing about *why* it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AeadError {
    /// Too short to hold a header, nonce and tag.
    #[error("ciphertext is truncated")]
    Truncated,
    /// The tag did not verify: wrong key, wrong associated data or tampering.
    #[error("message authentication failed")]
    Authentication,
}

/// Bytes produced by [`AeadKey::seal`]: the only kind of value that storage
/// accepts. Holding one says "this is ciphertext"; the constructor that takes
/// raw bytes is reserved to storage backends reading what they stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Ciphertext(Vec<u8>);

impl Ciphertext {
    /// Wrap bytes read back from storage. Only storage backends call this:
    /// the bytes were a `Ciphertext` when they were written.
    pub(crate) fn from_storage(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The raw bytes, for writing to storage or to the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Consume into raw bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl std::fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ciphertext({} bytes)", self.0.len())
    }
}

/// An AES-256-GCM key. The expanded key schedule is wiped on drop
/// (`aes-gcm`'s `zeroize` feature makes `Aes256Gcm: ZeroizeOnDrop`).
pub struct AeadKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(<redacted>)")
    }
}

impl AeadKey {
    /// A key from 32 bytes of key material (the caller keeps them zeroizing).
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        let cipher = Aes256Gcm::new(key.into());
        Self { cipher }
    }

    /// A key from a slice; `None` unless it is exactly 32 bytes.
    pub fn from_slice(key: &[u8]) -> Option<Self> {
        let arr: &[u8; KEY_LEN] = key.try_into().ok()?;
        Some(Self::new(arr))
    }

    /// Encrypt `plaintext` under a fresh random nonce.
    /// Output: `header | nonce | ciphertext | tag`, with `header || aad` authenticated.
    pub fn seal(&self, header: &[u8], aad: &[u8], plaintext: &[u8]) -> Ciphertext {
        let mut out = Vec::with_capacity(header.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(header);
        let mut nonce = [0u8; NONCE_LEN];
        super::random::fill(&mut nonce);
        out.extend_from_slice(&nonce);
        let body_start = out.len();
        out.extend_from_slice(plaintext);
        let ad = associated_data(header, aad);
        // Only fails for inputs over GCM's limits (2^36 bytes): a caller bug.
        let tag = match self.cipher.encrypt_inout_detached(
            &Nonce::from(nonce),
            &ad,
            InOutBuf::from(&mut out[body_start..]),
        ) {
            Ok(tag) => tag,
            Err(_) => panic_too_long(),
        };
        out.extend_from_slice(&tag);
        Ciphertext(out)
    }

    /// Decrypt what [`seal`](Self::seal) produced with the same header length and aad.
    /// The header is taken from the ciphertext itself; the caller checks it.
    pub fn open(&self, header_len: usize, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, AeadError> {
        if sealed.len() < header_len + NONCE_LEN + TAG_LEN {
            return Err(AeadError::Truncated);
        }
        let (header, rest) = sealed.split_at(header_len);
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| AeadError::Truncated)?;
        let tag = Tag::try_from(tag).map_err(|_| AeadError::Truncated)?;
        let mut plain = Zeroizing::new(body.to_vec());
        let ad = associated_data(header, aad);
        self.cipher
            .decrypt_inout_detached(&Nonce::from(nonce), &ad, InOutBuf::from(&mut plain[..]), &tag)
            .map_err(|_| AeadError::Authentication)?;
        Ok(plain)
    }
}

fn associated_data(header: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(header.len() + aad.len());
    ad.extend_from_slice(header);
    ad.extend_from_slice(aad);
    ad
}

#[cold]
fn panic_too_long() -> ! {
    // Unreachable through the API: request bodies are capped far below 64 GiB.
    panic!("AES-GCM input exceeds the algorithm's length limit")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AeadKey {
        AeadKey::new(&[7u8; 32])
    }

    #[test]
    fn round_trip_with_header_and_aad() {
        let k = key();
        let ct = k.seal(b"HD", b"path/a", b"hello");
        assert_eq!(&ct.as_bytes()[..2], b"HD");
        assert_eq!(ct.as_bytes().len(), 2 + NONCE_LEN + 5 + TAG_LEN);
        assert_eq!(&**k.open(2, b"path/a", ct.as_bytes()).unwrap(), b"hello");
    }

    #[test]
    fn nonces_are_fresh() {
        let k = key();
        assert_ne!(k.seal(b"", b"", b"x"), k.seal(b"", b"", b"x"));
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let k = key();
        let ct = k.seal(b"H", b"aad", b"some secret value");
        for i in 0..ct.as_bytes().len() * 8 {
            let mut bad = ct.as_bytes().to_vec();
            bad[i / 8] ^= 1 << (i % 8);
            assert_eq!(k.open(1, b"aad", &bad), Err(AeadError::Authentication), "bit {i}");
        }
    }

    #[test]
    fn wrong_aad_wrong_key_truncation() {
        let k = key();
        let ct = k.seal(b"", b"a", b"v");
        assert_eq!(k.open(0, b"b", ct.as_bytes()), Err(AeadError::Authentication));
        let other = AeadKey::new(&[8u8; 32]);
        assert_eq!(other.open(0, b"a", ct.as_bytes()), Err(AeadError::Authentication));
        for n in 0..NONCE_LEN + TAG_LEN {
            assert_eq!(k.open(0, b"a", &ct.as_bytes()[..n]), Err(AeadError::Truncated));
        }
    }

    #[test]
    fn known_answer_nist_gcm_vector() {
        // NIST GCM test vector (gcmEncryptExtIV256.rsp, Count 0 with 128-bit PT):
        // checks that the wrapper feeds nonce, aad and tag to AES-GCM correctly.
        let key = hex::decode("31bdadd96698c204aa9ce1448ea94ae1fb4a9a0b3c9d773b51bb1822666b8f22").unwrap();
        let iv = hex::decode("0d18e06c7c725ac9e362e1ce").unwrap();
        let pt = hex::decode("2db5168e932556f8089a0622981d017d").unwrap();
        let ct = hex::decode("fa4362189661d163fcd6a56d8bf0405a").unwrap();
        let tag = hex::decode("d636ac1bbedd5cc3ee727dc2ab4a9489").unwrap();
        let k = AeadKey::from_slice(&key).unwrap();
        let mut sealed = iv.clone();
        sealed.extend_from_slice(&ct);
        sealed.extend_from_slice(&tag);
        assert_eq!(&**k.open(0, b"", &sealed).unwrap(), &pt[..]);
    }

    #[test]
    fn debug_redacts() {
        assert_eq!(format!("{:?}", key()), "AeadKey(<redacted>)");
        assert_eq!(format!("{:?}", key().seal(b"", b"", b"secret")), "Ciphertext(34 bytes)");
    }
}
