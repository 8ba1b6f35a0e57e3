//! The crate's one error type.

/// Why a stream could not be written or read.
///
/// Caller misuse ([`InvalidParameter`](Self::InvalidParameter)) is kept
/// apart from untrusted input (the header variants, `Truncated`,
/// `Authentication`). No message carries key material or plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The caller asked for a stream this format cannot describe (empty or
    /// over-long key name, key version 0, wrapped key empty or over 65535
    /// bytes, segment size out of range).
    #[error("invalid stream parameter: {0}")]
    InvalidParameter(&'static str),
    /// The input does not start with `VLTS`: not a stream of this format.
    #[error("not a vault stream (bad magic)")]
    BadMagic,
    /// The header's format version is not one this build reads.
    #[error("unsupported stream format version {0}")]
    UnsupportedVersion(u8),
    /// The header names an AEAD algorithm this build does not know.
    #[error("unsupported stream algorithm {0}")]
    UnsupportedAlgorithm(u8),
    /// The header's segment size is outside `MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE`.
    #[error("stream segment size {0} is out of range")]
    BadSegmentSize(u32),
    /// A header field the encoder never writes (empty key name, name not
    /// UTF-8, key version 0, empty wrapped key).
    #[error("invalid stream header: {0}")]
    InvalidHeader(&'static str),
    /// The stream ended without a final segment: cut at a segment boundary,
    /// or before the first segment.
    #[error("stream is truncated")]
    Truncated,
    /// A segment did not authenticate, or the header's key commitment does
    /// not match the data key: wrong key, wrong associated data, a header
    /// that is not this stream's, tampering, segments reordered, or data
    /// after the final segment. One variant on purpose: which check failed
    /// tells an attacker nothing they need, and a caller can do nothing
    /// different with it (a wrong data key and a forged header look alike
    /// from here). A stream cut inside a segment also lands here.
    #[error("stream authentication failed")]
    Authentication,
    /// The stream would need more than 2^32 segments (the counter in the
    /// nonce would wrap): use a larger segment size.
    #[error("stream exceeds 2^32 segments")]
    TooManySegments,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Random,
    /// An earlier call on this encryptor or decryptor failed; it stays failed.
    #[error("stream already failed")]
    Poisoned,
}
