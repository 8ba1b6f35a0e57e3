//! Writing a stream.

use rand::TryRng;
use zeroize::Zeroizing;

use crate::cipher::{self, Segments};
use crate::header::{Header, MAX_NAME_LEN, MAX_WRAPPED_LEN, NONCE_PREFIX_LEN, SALT_LEN};
use crate::{Algorithm, DEFAULT_SEGMENT_SIZE, KEY_LEN, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, StreamError};

/// What a new stream is made of, besides the data key.
#[derive(Clone, Copy)]
pub struct EncryptParams<'a> {
    /// The transit key that wrapped the data key (1..=255 bytes).
    pub key_name: &'a str,
    /// Its version (>= 1).
    pub key_version: u32,
    /// The data key wrapped by that key (1..=65535 bytes, opaque).
    pub wrapped_key: &'a [u8],
    /// The segment AEAD.
    pub algorithm: Algorithm,
    /// Plaintext bytes per segment, `MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE`.
    pub segment_size: u32,
    /// Authenticated, not stored: the reader must supply the same bytes.
    pub associated_data: &'a [u8],
}

impl std::fmt::Debug for EncryptParams<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptParams")
            .field("key_name", &self.key_name)
            .field("key_version", &self.key_version)
            .field("wrapped_key_len", &self.wrapped_key.len())
            .field("algorithm", &self.algorithm)
            .field("segment_size", &self.segment_size)
            .field("associated_data_len", &self.associated_data.len())
            .finish()
    }
}

impl<'a> EncryptParams<'a> {
    /// AES-256-GCM, 64 KiB segments, no associated data.
    pub fn new(key_name: &'a str, key_version: u32, wrapped_key: &'a [u8]) -> Self {
        EncryptParams {
            key_name,
            key_version,
            wrapped_key,
            algorithm: Algorithm::default(),
            segment_size: DEFAULT_SEGMENT_SIZE,
            associated_data: &[],
        }
    }

    /// With another segment AEAD.
    #[must_use]
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// With another segment size.
    #[must_use]
    pub fn with_segment_size(mut self, segment_size: u32) -> Self {
        self.segment_size = segment_size;
        self
    }

    /// With associated data (e.g. a file id) that decryption must repeat.
    #[must_use]
    pub fn with_associated_data(mut self, associated_data: &'a [u8]) -> Self {
        self.associated_data = associated_data;
        self
    }

    fn check(&self) -> Result<(), StreamError> {
        if self.key_name.is_empty() || self.key_name.len() > MAX_NAME_LEN {
            return Err(StreamError::InvalidParameter("key name must be 1 to 255 bytes"));
        }
        if self.key_version == 0 {
            return Err(StreamError::InvalidParameter("key version must be at least 1"));
        }
        if self.wrapped_key.is_empty() || self.wrapped_key.len() > MAX_WRAPPED_LEN {
            return Err(StreamError::InvalidParameter("wrapped key must be 1 to 65535 bytes"));
        }
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return Err(StreamError::InvalidParameter("segment size must be 4 KiB to 16 MiB"));
        }
        Ok(())
    }
}

/// Encrypts one stream incrementally.
///
/// Holds back up to one segment of plaintext (zeroized on drop): a full
/// segment cannot be sealed until more input shows it is not the last.
pub struct Encryptor {
    header: Header,
    pub(crate) segments: Segments,
    segment_size: usize,
    pending: Zeroizing<Vec<u8>>,
    failed: bool,
}

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor")
            .field("header", &self.header)
            .field("segments", &self.segments.count())
            .field("pending", &self.pending.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Encryptor {
    /// Start a stream under `data_key` with a fresh random salt and nonce
    /// prefix. Returns the encryptor and the header bytes, which come first
    /// in the stream.
    pub fn new(data_key: &[u8; KEY_LEN], params: &EncryptParams<'_>) -> Result<(Encryptor, Vec<u8>), StreamError> {
        params.check()?;
        // From the OS CSPRNG, as vault-server draws keys: the salt makes the
        // stream key, so it must not repeat across streams of one data key.
        let mut salt = [0u8; SALT_LEN];
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        rand::rngs::SysRng.try_fill_bytes(&mut salt).map_err(|_| StreamError::Random)?;
        rand::rngs::SysRng.try_fill_bytes(&mut nonce_prefix).map_err(|_| StreamError::Random)?;
        Self::with_randomness(data_key, params, salt, nonce_prefix)
    }

    /// [`new`](Self::new) with given salt and nonce prefix: for test vectors only.
    pub(crate) fn with_randomness(
        data_key: &[u8; KEY_LEN],
        params: &EncryptParams<'_>,
        salt: [u8; SALT_LEN],
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
    ) -> Result<(Encryptor, Vec<u8>), StreamError> {
        params.check()?;
        let derived = cipher::derive(data_key, &salt, params.algorithm);
        let header = Header {
            algorithm: params.algorithm,
            segment_size: params.segment_size,
            key_name: params.key_name.to_owned(),
            key_version: params.key_version,
            wrapped_key: params.wrapped_key.to_vec(),
            salt,
            nonce_prefix,
            commitment: derived.commitment,
        };
        let header_bytes = header.encode();
        let segments = Segments::new(&header, &header_bytes, &derived.stream_key, params.associated_data);
        let encryptor = Encryptor {
            header,
            segments,
            segment_size: params.segment_size as usize,
            pending: Zeroizing::new(Vec::new()),
            failed: false,
        };
        Ok((encryptor, header_bytes))
    }

    /// The stream's header (its bytes were returned by [`new`](Self::new)).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Encrypt `input`, appending every segment that can be sealed to `out`.
    /// Errors only past 2^32 segments; afterwards every call fails.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        if self.failed {
            return Err(StreamError::Poisoned);
        }
        let result = self.push_inner(input, out);
        self.failed = result.is_err();
        result
    }

    fn push_inner(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        let seg = self.segment_size;
        if !self.pending.is_empty() {
            let take = (seg - self.pending.len()).min(input.len());
            self.buffer(&input[..take]);
            input = &input[take..];
            if input.is_empty() {
                return Ok(());
            }
            // Full, and more follows: not the last segment.
            self.segments.seal(&self.pending, false, out)?;
            self.pending.clear();
        }
        // Straight from the caller's buffer, keeping back at least one byte
        // (so the final segment is never an empty one after a full one).
        while input.len() > seg {
            let (segment, rest) = input.split_at(seg);
            self.segments.seal(segment, false, out)?;
            input = rest;
        }
        self.buffer(input);
        Ok(())
    }

    /// Append to the pending plaintext without leaving copies in freed
    /// memory: on growth the old buffer is wiped (`Zeroizing` drop), and the
    /// capacity never exceeds one segment.
    fn buffer(&mut self, bytes: &[u8]) {
        let needed = self.pending.len() + bytes.len();
        if needed > self.pending.capacity() {
            let capacity = needed.max(self.pending.capacity() * 2).min(self.segment_size);
            let mut grown = Zeroizing::new(Vec::with_capacity(capacity));
            grown.extend_from_slice(&self.pending);
            self.pending = grown;
        }
        self.pending.extend_from_slice(bytes);
    }

    /// Seal the final segment (possibly empty, if nothing was pushed).
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        if self.failed {
            return Err(StreamError::Poisoned);
        }
        self.segments.seal(&self.pending, true, out)
    }
}
