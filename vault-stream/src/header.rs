//! The stream header: what a reader needs before the first segment (which
//! transit key unwraps the data key, how segments are cut, the salt and
//! nonce prefix, the key commitment).

use crate::{MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, StreamError};

/// First bytes of every stream.
pub(crate) const MAGIC: [u8; 4] = *b"VLTS";
/// The only format version written and read.
pub(crate) const VERSION: u8 = 0x01;
/// Random salt for the key derivations (HKDF, RFC 5869 §3.1).
pub(crate) const SALT_LEN: usize = 32;
/// Random part of every segment nonce; the rest is counter and last flag.
pub(crate) const NONCE_PREFIX_LEN: usize = 7;
/// Length of the key commitment.
pub(crate) const COMMITMENT_LEN: usize = 32;
/// Longest transit key name (its length is one byte).
pub(crate) const MAX_NAME_LEN: usize = u8::MAX as usize;
/// Longest wrapped key (its length is a `u16`).
pub(crate) const MAX_WRAPPED_LEN: usize = u16::MAX as usize;

/// The AEAD sealing every segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// AES-256-GCM (NIST SP 800-38D): the default, fastest with AES-NI.
    #[default]
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 8439): for machines without AES instructions.
    ChaCha20Poly1305,
}

impl Algorithm {
    /// The byte that names the algorithm in the header.
    pub fn to_byte(self) -> u8 {
        match self {
            Algorithm::Aes256Gcm => 1,
            Algorithm::ChaCha20Poly1305 => 2,
        }
    }

    /// The algorithm a header byte names, if any.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Algorithm::Aes256Gcm),
            2 => Some(Algorithm::ChaCha20Poly1305),
            _ => None,
        }
    }
}

/// A parsed (or freshly made) stream header. Nothing in it is secret; the
/// wrapped key is only usable by whoever may use the named transit key.
///
/// Made only by [`Header::parse`] or by [`Encryptor::new`](crate::Encryptor::new):
/// every value satisfies the format's bounds, and `encode` gives back the
/// exact bytes it was parsed from (the format has one encoding per header),
/// which is what the segments authenticate.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    pub(crate) algorithm: Algorithm,
    pub(crate) segment_size: u32,
    pub(crate) key_name: String,
    pub(crate) key_version: u32,
    pub(crate) wrapped_key: Vec<u8>,
    pub(crate) salt: [u8; SALT_LEN],
    pub(crate) nonce_prefix: [u8; NONCE_PREFIX_LEN],
    pub(crate) commitment: [u8; COMMITMENT_LEN],
}

impl std::fmt::Debug for Header {
    // Short on purpose: the wrapped key can be 64 KiB, and salt and
    // commitment say nothing useful to a reader of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Header")
            .field("algorithm", &self.algorithm)
            .field("segment_size", &self.segment_size)
            .field("key_name", &self.key_name)
            .field("key_version", &self.key_version)
            .field("wrapped_key_len", &self.wrapped_key.len())
            .finish_non_exhaustive()
    }
}

impl Header {
    /// The AEAD of the segments.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Plaintext bytes in every segment but the last.
    pub fn segment_size(&self) -> u32 {
        self.segment_size
    }

    /// The transit key that wrapped the data key.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The version of that transit key.
    pub fn key_version(&self) -> u32 {
        self.key_version
    }

    /// The data key wrapped by the transit key (opaque to this crate; in
    /// practice transit's `vault:vN:...` ciphertext string).
    pub fn wrapped_key(&self) -> &[u8] {
        &self.wrapped_key
    }

    /// Length of [`encode`](Self::encode)'s output.
    pub fn encoded_len(&self) -> usize {
        MAGIC.len()
            + 1
            + 1
            + 4
            + 4
            + 1
            + self.key_name.len()
            + 2
            + self.wrapped_key.len()
            + SALT_LEN
            + NONCE_PREFIX_LEN
            + COMMITMENT_LEN
    }

    /// The header's bytes (`docs/formats.md`, "Streaming AEAD").
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.algorithm.to_byte());
        out.extend_from_slice(&self.segment_size.to_be_bytes());
        out.extend_from_slice(&self.key_version.to_be_bytes());
        // Lengths fit: both constructors enforce MAX_NAME_LEN / MAX_WRAPPED_LEN.
        out.push(u8::try_from(self.key_name.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.key_name.as_bytes());
        out.extend_from_slice(&u16::try_from(self.wrapped_key.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&self.wrapped_key);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.nonce_prefix);
        out.extend_from_slice(&self.commitment);
        out
    }

    /// Parse a header from the start of `input`, which may be only a prefix
    /// of the stream.
    ///
    /// `Ok(None)`: the header is not complete yet, call again with more
    /// bytes. `Ok(Some((header, n)))`: the header is `input[..n]` and the
    /// segments start at `n`. Errors are reported as soon as the bytes that
    /// show them are present (a wrong magic after one byte). No allocation
    /// exceeds the format's own bounds (255-byte name, 64 KiB wrapped key).
    pub fn parse(input: &[u8]) -> Result<Option<(Header, usize)>, StreamError> {
        let mut r = Reader { input, pos: 0 };

        let seen = input.len().min(MAGIC.len());
        if input[..seen] != MAGIC[..seen] {
            return Err(StreamError::BadMagic);
        }
        let Some(_) = r.take(MAGIC.len()) else { return Ok(None) };
        let Some(version) = r.byte() else { return Ok(None) };
        if version != VERSION {
            return Err(StreamError::UnsupportedVersion(version));
        }
        let Some(alg) = r.byte() else { return Ok(None) };
        let algorithm = Algorithm::from_byte(alg).ok_or(StreamError::UnsupportedAlgorithm(alg))?;
        let Some(segment_size) = r.u32() else { return Ok(None) };
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
            return Err(StreamError::BadSegmentSize(segment_size));
        }
        let Some(key_version) = r.u32() else { return Ok(None) };
        if key_version == 0 {
            return Err(StreamError::InvalidHeader("key version 0"));
        }
        let Some(name_len) = r.byte() else { return Ok(None) };
        if name_len == 0 {
            return Err(StreamError::InvalidHeader("empty key name"));
        }
        let Some(name) = r.take(usize::from(name_len)) else { return Ok(None) };
        let key_name = std::str::from_utf8(name).map_err(|_| StreamError::InvalidHeader("key name is not UTF-8"))?;
        let Some(wrapped_len) = r.u16() else { return Ok(None) };
        if wrapped_len == 0 {
            return Err(StreamError::InvalidHeader("empty wrapped key"));
        }
        let Some(wrapped) = r.take(usize::from(wrapped_len)) else { return Ok(None) };
        let Some(salt) = r.array::<SALT_LEN>() else { return Ok(None) };
        let Some(nonce_prefix) = r.array::<NONCE_PREFIX_LEN>() else { return Ok(None) };
        let Some(commitment) = r.array::<COMMITMENT_LEN>() else { return Ok(None) };

        let header = Header {
            algorithm,
            segment_size,
            key_name: key_name.to_owned(),
            key_version,
            wrapped_key: wrapped.to_vec(),
            salt,
            nonce_prefix,
            commitment,
        };
        Ok(Some((header, r.pos)))
    }
}

/// A cursor over a possibly incomplete header: every read is `None` when the
/// bytes are not there yet, never a panic.
struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.input.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }
}
