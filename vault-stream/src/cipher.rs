//! Key derivation, segment nonces and the per-stream AEAD state shared by
//! the encryptor and the decryptor.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{self, AeadInOut, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::header::{COMMITMENT_LEN, Header, NONCE_PREFIX_LEN, SALT_LEN};
use crate::{Algorithm, KEY_LEN, StreamError, TAG_LEN};

/// HKDF info of the stream key; the algorithm byte is appended so one data
/// key and salt never give the same key to two different AEADs.
const KEY_INFO: &[u8] = b"vault-stream v1 key";
/// HKDF info of the key commitment.
const COMMITMENT_INFO: &[u8] = b"vault-stream v1 commitment";
/// Segment nonce: prefix (7) | counter (u32) | last flag (1) = 96 bits, the
/// nonce size both AEADs are specified for (SP 800-38D §8.2, RFC 8439 §2.8).
const NONCE_LEN: usize = 12;
/// Per-segment associated data: SHA-256(header) || SHA-256(len || ad).
const AD_LEN: usize = 64;

/// What one data key and salt yield (RFC 5869 extract once, expand twice).
pub(crate) struct Derived {
    pub(crate) stream_key: Zeroizing<[u8; KEY_LEN]>,
    pub(crate) commitment: [u8; COMMITMENT_LEN],
}

pub(crate) fn derive(data_key: &[u8; KEY_LEN], salt: &[u8; SALT_LEN], algorithm: Algorithm) -> Derived {
    let hk = Hkdf::<Sha256>::new(Some(salt), data_key);
    let mut stream_key = Zeroizing::new([0u8; KEY_LEN]);
    let mut commitment = [0u8; COMMITMENT_LEN];
    // 32 bytes is far below HKDF-SHA256's 255 * 32 output limit: these cannot fail.
    let _ = hk.expand_multi_info(&[KEY_INFO, &[algorithm.to_byte()]], stream_key.as_mut());
    let _ = hk.expand(COMMITMENT_INFO, &mut commitment);
    Derived { stream_key, commitment }
}

/// The associated data of every segment: the header's digest binds the key
/// name, version, wrapped key, segment size, salt and prefix; the length
/// prefix keeps the caller's data unambiguous.
pub(crate) fn segment_ad(header_bytes: &[u8], associated_data: &[u8]) -> [u8; AD_LEN] {
    let mut ad = [0u8; AD_LEN];
    ad[..32].copy_from_slice(&Sha256::digest(header_bytes));
    let mut h = Sha256::new();
    h.update((associated_data.len() as u64).to_be_bytes());
    h.update(associated_data);
    ad[32..].copy_from_slice(&h.finalize());
    ad
}

/// The AEAD, keyed once per stream. Both types wipe their key schedule on
/// drop (the crates' `zeroize` feature).
enum Cipher {
    // Boxed: the expanded AES key schedule makes this variant much larger.
    Aes(Box<Aes256Gcm>),
    ChaCha(ChaCha20Poly1305),
}

impl Cipher {
    fn new(algorithm: Algorithm, key: &[u8; KEY_LEN]) -> Self {
        match algorithm {
            Algorithm::Aes256Gcm => Cipher::Aes(Box::new(Aes256Gcm::new(key.into()))),
            Algorithm::ChaCha20Poly1305 => Cipher::ChaCha(ChaCha20Poly1305::new(key.into())),
        }
    }

    fn seal(&self, nonce: [u8; NONCE_LEN], ad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], aead::Error> {
        let buf = InOutBuf::from(buf);
        Ok(match self {
            Cipher::Aes(c) => c.encrypt_inout_detached(&nonce.into(), ad, buf)?.into(),
            Cipher::ChaCha(c) => c.encrypt_inout_detached(&nonce.into(), ad, buf)?.into(),
        })
    }

    fn open(&self, nonce: [u8; NONCE_LEN], ad: &[u8], buf: &mut [u8], tag: [u8; TAG_LEN]) -> Result<(), aead::Error> {
        let buf = InOutBuf::from(buf);
        match self {
            Cipher::Aes(c) => c.decrypt_inout_detached(&nonce.into(), ad, buf, &tag.into()),
            Cipher::ChaCha(c) => c.decrypt_inout_detached(&nonce.into(), ad, buf, &tag.into()),
        }
    }
}

/// One stream's segment sealer/opener: cipher, nonce prefix, associated
/// data (computed once) and the index of the next segment.
pub(crate) struct Segments {
    cipher: Cipher,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    ad: [u8; AD_LEN],
    next: u64,
}

impl std::fmt::Debug for Segments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segments").field("next", &self.next).finish_non_exhaustive()
    }
}

impl Segments {
    pub(crate) fn new(
        header: &Header,
        header_bytes: &[u8],
        stream_key: &[u8; KEY_LEN],
        associated_data: &[u8],
    ) -> Self {
        Segments {
            cipher: Cipher::new(header.algorithm, stream_key),
            nonce_prefix: header.nonce_prefix,
            ad: segment_ad(header_bytes, associated_data),
            next: 0,
        }
    }

    /// Pretend `next` segments were already sealed or opened (tests of the
    /// counter limit, which would otherwise need 2^32 segments).
    #[cfg(test)]
    pub(crate) fn skip_to(&mut self, next: u64) {
        self.next = next;
    }

    /// Segments sealed or opened so far.
    pub(crate) fn count(&self) -> u64 {
        self.next
    }

    fn nonce(&self, last: bool) -> Result<[u8; NONCE_LEN], StreamError> {
        // An error, never a wrap: a repeated counter would repeat a nonce.
        let index = u32::try_from(self.next).map_err(|_| StreamError::TooManySegments)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..NONCE_PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        nonce[NONCE_PREFIX_LEN..NONCE_LEN - 1].copy_from_slice(&index.to_be_bytes());
        nonce[NONCE_LEN - 1] = u8::from(last);
        Ok(nonce)
    }

    /// Append the next segment, sealing `plain`, to `out`. The plaintext is
    /// copied into `out` and encrypted there in place.
    pub(crate) fn seal(&mut self, plain: &[u8], last: bool, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let nonce = self.nonce(last)?;
        // Reserve first: growing `out` after the plaintext went in would
        // leave a copy of it in freed memory.
        out.reserve(plain.len() + TAG_LEN);
        let start = out.len();
        out.extend_from_slice(plain);
        match self.cipher.seal(nonce, &self.ad, &mut out[start..]) {
            Ok(tag) => out.extend_from_slice(&tag),
            Err(_) => {
                // Only over the AEADs' length limits (64 GiB and up), far above
                // MAX_SEGMENT_SIZE; reported rather than left as plaintext.
                zeroize::Zeroize::zeroize(&mut out[start..]);
                out.truncate(start);
                return Err(StreamError::InvalidParameter("segment exceeds the AEAD's length limit"));
            }
        }
        self.next += 1;
        Ok(())
    }

    /// Open the next segment (`ciphertext || tag`) and append its plaintext
    /// to `out`, only if it authenticates. On failure `out` is as it was.
    pub(crate) fn open(&mut self, segment: &[u8], last: bool, out: &mut Vec<u8>) -> Result<(), StreamError> {
        let nonce = self.nonce(last)?;
        let Some(body_len) = segment.len().checked_sub(TAG_LEN) else {
            return Err(StreamError::Truncated);
        };
        let (body, tag) = segment.split_at(body_len);
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| StreamError::Truncated)?;
        out.reserve(body_len);
        let start = out.len();
        out.extend_from_slice(body);
        if self.cipher.open(nonce, &self.ad, &mut out[start..], tag).is_err() {
            // Both crates verify before decrypting, so this is still
            // ciphertext; wiped anyway rather than relying on that.
            zeroize::Zeroize::zeroize(&mut out[start..]);
            out.truncate(start);
            return Err(StreamError::Authentication);
        }
        self.next += 1;
        Ok(())
    }

    /// Whether `segment` authenticates as the next segment with the given
    /// flag, without releasing anything (used to tell truncation apart).
    pub(crate) fn verifies(&self, segment: &[u8], last: bool) -> bool {
        let Ok(nonce) = self.nonce(last) else { return false };
        let Some(body_len) = segment.len().checked_sub(TAG_LEN) else { return false };
        let (body, tag) = segment.split_at(body_len);
        let Ok(tag) = <[u8; TAG_LEN]>::try_from(tag) else { return false };
        let mut scratch = Zeroizing::new(body.to_vec());
        self.cipher.open(nonce, &self.ad, &mut scratch, tag).is_ok()
    }
}
