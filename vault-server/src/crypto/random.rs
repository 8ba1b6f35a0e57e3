//! Randomness. Keys come straight from the operating system's CSPRNG; nonces
//! and tokens from `rand`'s thread-local CSPRNG (ChaCha12, seeded and
//! periodically reseeded from the OS), which avoids a syscall per message.

use rand::TryRng;
use zeroize::Zeroizing;

/// The OS random source failed. On Linux `getrandom(2)` does not fail once
/// the pool is initialised, so this is effectively unreachable; it is still
/// reported rather than papered over.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomError;

/// A fresh 256-bit key from the OS CSPRNG, in a zeroizing box.
pub fn key32() -> Result<Zeroizing<[u8; 32]>, RandomError> {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rngs::SysRng.try_fill_bytes(key.as_mut()).map_err(|_| RandomError)?;
    Ok(key)
}

/// Fill `buf` from the thread-local CSPRNG (nonces, identifiers, tokens).
pub fn fill(buf: &mut [u8]) {
    rand::fill(buf);
}

/// `n` random bytes rendered as lowercase hex (identifiers such as accessors).
pub fn hex_id(n: usize) -> String {
    let mut b = vec![0u8; n];
    fill(&mut b);
    hex::encode(b)
}

/// A random RFC 4122 version-4 UUID string.
pub fn uuid() -> String {
    let mut b = [0u8; 16];
    fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    // 8-4-4-4-12 hex digits; written into a fixed buffer (one per request:
    // formatting machinery would cost more than the rest of `sys/health`).
    let mut out = [b'-'; 36];
    for (bytes, at) in [(0..4, 0), (4..6, 9), (6..8, 14), (8..10, 19), (10..16, 24)] {
        let len = 2 * bytes.len();
        // Cannot fail: the slice is exactly twice the bytes' length.
        let _ = hex::encode_to_slice(&b[bytes], &mut out[at..at + len]);
    }
    // ASCII by construction: the conversion cannot fail.
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// `len` characters drawn uniformly from `[0-9A-Za-z]` (rejection sampling,
/// so no modulo bias). Used for token identifiers, as Vault's tokens are base62.
pub fn base62(len: usize) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        fill(&mut buf);
        for &b in &buf {
            // 248 = 4 * 62: values at or above it would bias the draw.
            if b < 248 && out.len() < len {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    buf.iter_mut().for_each(|b| *b = 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape() {
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(uuid(), u);
    }

    #[test]
    fn base62_alphabet_and_length() {
        let s = base62(100);
        assert_eq!(s.len(), 100);
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn keys_differ() {
        assert_ne!(*key32().unwrap(), *key32().unwrap());
    }
}
