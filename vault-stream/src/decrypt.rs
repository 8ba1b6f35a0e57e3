//! Reading a stream.

use subtle::ConstantTimeEq;

use crate::cipher::{self, Segments};
use crate::{Header, KEY_LEN, StreamError, TAG_LEN};

/// Decrypts one stream incrementally, releasing only authenticated plaintext.
///
/// Holds back the last full ciphertext segment received until more bytes
/// show it was not the final one (or [`finish`](Self::finish) opens it as
/// the final one). It never holds plaintext: segments are opened straight
/// into the caller's `out`.
pub struct Decryptor {
    pub(crate) segments: Segments,
    /// Ciphertext plus tag of a full segment.
    full_len: usize,
    pending: Vec<u8>,
    failed: bool,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor")
            .field("segment_size", &(self.full_len - TAG_LEN))
            .field("segments", &self.segments.count())
            .field("pending", &self.pending.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Decryptor {
    /// Prepare to decrypt the segments following `header` under `data_key`
    /// (unwrapped from `header.wrapped_key()` by the transit key it names),
    /// with the associated data given when encrypting.
    ///
    /// Checks the key commitment first, in constant time: a data key other
    /// than the stream's fails here ([`StreamError::Authentication`]) before
    /// any segment is opened.
    pub fn new(data_key: &[u8; KEY_LEN], header: &Header, associated_data: &[u8]) -> Result<Decryptor, StreamError> {
        let derived = cipher::derive(data_key, &header.salt, header.algorithm);
        if !bool::from(derived.commitment.ct_eq(&header.commitment)) {
            return Err(StreamError::Authentication);
        }
        // `Header` has one encoding, so this is the bytes it was parsed from.
        let header_bytes = header.encode();
        Ok(Decryptor {
            segments: Segments::new(header, &header_bytes, &derived.stream_key, associated_data),
            full_len: header.segment_size as usize + TAG_LEN,
            pending: Vec::new(),
            failed: false,
        })
    }

    /// Feed stream bytes (after the header) and append the plaintext of
    /// every segment that authenticates to `out`. On error, `out` keeps the
    /// plaintext of segments that authenticated before the failing one, and
    /// the decryptor fails every later call.
    ///
    /// Output is provisional until [`finish`](Self::finish) succeeds. To keep
    /// plaintext out of freed memory, give `out` enough capacity up front
    /// (`Vec::with_capacity`) so it never reallocates.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        if self.failed {
            return Err(StreamError::Poisoned);
        }
        let result = self.push_inner(input, out);
        self.failed = result.is_err();
        result
    }

    fn push_inner(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), StreamError> {
        let full = self.full_len;
        if !self.pending.is_empty() {
            let take = (full - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if input.is_empty() {
                return Ok(());
            }
            // A full segment with bytes after it: it must not be the final one
            // (if it was, the bytes after it are an extension and this fails).
            self.segments.open(&self.pending, false, out)?;
            self.pending.clear();
        }
        while input.len() > full {
            let (segment, rest) = input.split_at(full);
            self.segments.open(segment, false, out)?;
            input = rest;
        }
        // At most one segment (MAX_SEGMENT_SIZE bounds what an untrusted
        // header can make this hold).
        self.pending.extend_from_slice(input);
        Ok(())
    }

    /// Authenticate the final segment and append its plaintext. Only `Ok`
    /// here says the stream was complete and untouched.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), StreamError> {
        if self.failed {
            return Err(StreamError::Poisoned);
        }
        let pending = std::mem::take(&mut self.pending);
        if pending.len() < TAG_LEN {
            // Nothing after the last non-final segment (or no segment at
            // all), or a fragment too short to be one.
            return Err(StreamError::Truncated);
        }
        if pending.len() == TAG_LEN && self.segments.count() > 0 {
            // The encoder writes an empty final segment only for empty input.
            return Err(StreamError::Authentication);
        }
        match self.segments.open(&pending, true, out) {
            Ok(()) => Ok(()),
            // A full segment that is authentic as a *non-final* one: the
            // stream was cut at a segment boundary.
            Err(StreamError::Authentication)
                if pending.len() == self.full_len && self.segments.verifies(&pending, false) =>
            {
                Err(StreamError::Truncated)
            }
            Err(e) => Err(e),
        }
    }
}
