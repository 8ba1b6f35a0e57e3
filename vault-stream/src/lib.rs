//! Streaming AEAD for files and uploads: the one format that the server's
//! HTTP endpoints and the client library's local encryption both speak.
//!
//! Pure, synchronous and incremental: bytes go in through `push`, whole
//! segments come out, nothing here knows about files, sockets or async
//! runtimes. The byte layout is specified in `docs/formats.md` ("Streaming
//! AEAD"); in short:
//!
//! ```text
//! stream  = header | segment_0 | ... | segment_n          (n < 2^32)
//! header  = "VLTS" | 0x01 | algorithm (u8) | segment_size (u32) | key_version (u32)
//!         | name_len (u8) | key_name | wrapped_len (u16) | wrapped_key
//!         | salt (32) | nonce_prefix (7) | commitment (32)
//! segment = AEAD(stream_key, nonce_i, AD, plaintext_i) = ciphertext_i | tag (16)
//!
//! stream_key = HKDF-SHA256(ikm = data key, salt, "vault-stream v1 key" || algorithm)
//! commitment = HKDF-SHA256(ikm = data key, salt, "vault-stream v1 commitment")
//! nonce_i    = nonce_prefix (7) | i (u32) | last (0x01 on the final segment, else 0x00)
//! AD         = SHA-256(header) || SHA-256(len(ad) as u64 || ad)
//! ```
//!
//! The nonce layout is the STREAM construction of Hoang, Reyhanitabar,
//! Rogaway and Vizár ("Online Authenticated-Encryption and its Nonce-Reuse
//! Misuse-Resistance", CRYPTO 2015): the counter stops reordering, dropping
//! or duplicating segments, the last flag stops truncation and extension.
//! The commitment makes the stream open under one data key only (Albertini
//! et al., "How to Abuse and Fix Authenticated Encryption Without Key
//! Commitment", USENIX Security 2022): AES-GCM and ChaCha20-Poly1305 alone
//! are not committing.
//!
//! The 32-byte data key comes from transit (`datakey/plaintext/{name}`); the
//! header names the transit key and carries the wrapped data key, so a
//! reader knows which key to ask to unwrap it. Everything in the header is
//! authenticated by every segment, and so is the caller's associated data
//! (not stored: it must be given again to decrypt).
//!
//! # Usage
//!
//! ```
//! use vault_stream::{Decryptor, EncryptParams, Encryptor, Header};
//!
//! # fn main() -> Result<(), vault_stream::StreamError> {
//! let data_key = [7u8; 32]; // from transit's datakey endpoint in real use
//! let params = EncryptParams::new("files", 1, b"vault:v1:AAAA").with_associated_data(b"file-42");
//! let (mut enc, mut stream) = Encryptor::new(&data_key, &params)?;
//! enc.push(b"hello, ", &mut stream)?;
//! enc.push(b"world", &mut stream)?;
//! enc.finish(&mut stream)?;
//!
//! // Reading: parse the header from a prefix, unwrap the data key with the
//! // transit key it names, then feed the rest.
//! let (header, used) = Header::parse(&stream)?.ok_or(vault_stream::StreamError::Truncated)?;
//! assert_eq!(header.key_name(), "files");
//! let mut dec = Decryptor::new(&data_key, &header, b"file-42")?;
//! let mut plain = Vec::new();
//! dec.push(&stream[used..], &mut plain)?;
//! dec.finish(&mut plain)?;
//! assert_eq!(plain, b"hello, world");
//! # Ok(())
//! # }
//! ```
//!
//! # What the caller must know
//!
//! - Decryption releases each segment's plaintext as soon as that segment
//!   authenticates, before the end of the stream is seen. Only
//!   [`Decryptor::finish`] returning `Ok` says the stream is complete:
//!   treat earlier output as provisional (write it to a temporary file,
//!   rename on success).
//! - A data key may encrypt many streams: each stream draws a fresh random
//!   256-bit salt, so each gets its own derived key and nonces never repeat.
//! - Errors never carry key material or plaintext. Every cryptographic
//!   failure (tag, commitment) is [`StreamError::Authentication`]; see its
//!   documentation for why a wrong key is not reported apart.

// Tests may unwrap: a failing unwrap is a failing test.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![forbid(unsafe_code)]

mod cipher;
mod decrypt;
mod either;
mod encrypt;
mod error;
mod header;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use decrypt::Decryptor;
pub use either::Cipher;
pub use encrypt::{EncryptParams, Encryptor};
pub use error::StreamError;
pub use header::{Algorithm, Header};

/// Length of a data key in bytes (256 bits).
pub const KEY_LEN: usize = 32;
/// Length of every segment's authentication tag (both algorithms).
pub const TAG_LEN: usize = 16;
/// Default plaintext bytes per segment (64 KiB).
pub const DEFAULT_SEGMENT_SIZE: u32 = 64 * 1024;
/// Smallest segment size accepted (4 KiB): smaller ones spend too much on tags.
pub const MIN_SEGMENT_SIZE: u32 = 4 * 1024;
/// Largest segment size accepted (16 MiB): bounds the memory a reader must
/// hold for one segment of an untrusted stream.
pub const MAX_SEGMENT_SIZE: u32 = 16 * 1024 * 1024;
/// Most segments one stream may have: the segment counter is a `u32`.
pub const MAX_SEGMENTS: u64 = 1 << 32;

/// Length of the segments of a stream (header not included; add
/// [`Header::encoded_len`]) holding `plaintext_len` bytes. `None` if the
/// segment size is out of range or the stream would need more than
/// [`MAX_SEGMENTS`] segments.
pub fn ciphertext_len(plaintext_len: u64, segment_size: u32) -> Option<u64> {
    if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
        return None;
    }
    // An empty stream still has one (empty, final) segment.
    let segments = plaintext_len.div_ceil(u64::from(segment_size)).max(1);
    if segments > MAX_SEGMENTS {
        return None;
    }
    plaintext_len.checked_add(segments.checked_mul(TAG_LEN as u64)?)
}

/// The reverse of [`ciphertext_len`]: plaintext length of segments totalling
/// `ciphertext_len` bytes (header not included). `None` if no stream has
/// segments of that total length (e.g. a dangling partial tag).
pub fn plaintext_len(ciphertext_len: u64, segment_size: u32) -> Option<u64> {
    if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
        return None;
    }
    let full = u64::from(segment_size) + TAG_LEN as u64;
    let segments = ciphertext_len.div_ceil(full);
    if segments == 0 || segments > MAX_SEGMENTS {
        return None;
    }
    let last = ciphertext_len - (segments - 1) * full;
    // The final segment holds a tag, and plaintext too unless it is the only one.
    if last < TAG_LEN as u64 || (segments > 1 && last == TAG_LEN as u64) {
        return None;
    }
    Some(ciphertext_len - segments * TAG_LEN as u64)
}
