//! The tamper-evident audit log format (docs/audit.md), shared by the server
//! that writes it and `vaultctl audit verify` that checks it, so the two can
//! never drift. Pure: no I/O, no clock; the caller hands in lines.
//!
//! A log is JSON lines. Every line carries a `chain` object
//! `{"node": N, "seq": S, "prev": H}`: the writer's chain id, a counter from
//! 0, and the SHA-256 (hex) of the exact bytes of the chain's previous line
//! (64 zeros for seq 0). The hash of a line is SHA-256 over its bytes without
//! the newline, so no canonical JSON is needed: a verifier hashes what it
//! reads. Every few entries (and when a writer starts a chain, closes or
//! rotates its file, or continues the chain in a new file) a `checkpoint` line signs, with the device's Ed25519 key, the text
//! [`checkpoint_message`] naming the chain, its seq, `prev` and time: it
//! vouches for everything before it, as `prev` commits to the whole chain.
//! Lines after a chain's last checkpoint are chained but not yet signed.

#![forbid(unsafe_code)]
// Tests may unwrap: a failing unwrap is a failing test.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod verify;

pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use verify::{Finding, Severity, Verifier};

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, Verifier as _};
use sha2::{Digest, Sha256};

/// The `prev` of a chain's first line.
pub const GENESIS: [u8; 32] = [0; 32];

/// The first bytes of every signed checkpoint message (domain separation:
/// a device key signs nothing else, but the label says what it signed).
pub const CHECKPOINT_DOMAIN: &str = "vault-audit checkpoint v1";

/// Why a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// A new chain starts (its first line).
    Open,
    /// N entries since the previous checkpoint.
    Count,
    /// T seconds since the previous checkpoint.
    Interval,
    /// The writer closes the file to reopen it (SIGHUP, log rotation); the
    /// chain continues in the reopened file.
    Rotate,
    /// The writer stops (seal, shutdown, device disabled): nothing follows
    /// on this chain unless a restarted server resumes it.
    Close,
    /// The chain goes on in a file where it does not begin: the first line
    /// of the chain in a file reopened after a rotation (SIGHUP) or after a
    /// write failure. A verifier accepts a chain that starts in the files it
    /// is given only at an `open` (seq 0) or a `continue` checkpoint.
    Continue,
}

impl Reason {
    /// The name written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Open => "open",
            Reason::Count => "count",
            Reason::Interval => "interval",
            Reason::Rotate => "rotate",
            Reason::Close => "close",
            Reason::Continue => "continue",
        }
    }

    /// Parse a name written by [`Reason::as_str`].
    pub fn parse(s: &str) -> Option<Reason> {
        Some(match s {
            "open" => Reason::Open,
            "count" => Reason::Count,
            "interval" => Reason::Interval,
            "rotate" => Reason::Rotate,
            "close" => Reason::Close,
            "continue" => Reason::Continue,
            _ => return None,
        })
    }
}

/// Where a line sits in its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The chain's id (one per writing server: several servers sharing a
    /// device each keep their own chain).
    pub node: String,
    /// Position in the chain, from 0.
    pub seq: u64,
    /// Hash of the chain's previous line ([`GENESIS`] for seq 0).
    pub prev: [u8; 32],
}

/// Errors of this crate's parsers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// A key that is not a base64 Ed25519 public key.
    #[error("not an Ed25519 public key (expected 32 bytes in base64)")]
    PublicKey,
    /// A line that is not an entry of this format.
    #[error("{0}")]
    Entry(&'static str),
}

/// SHA-256 of a line's bytes (without its newline).
pub fn line_hash(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

/// Append the chain link to an entry's JSON object (`body` is a serialized
/// JSON object, `{...}`), giving the line to write (without newline).
pub fn chain_line(body: &[u8], link: &Link) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 128);
    push_chain_line(&mut out, body, link);
    out
}

/// [`chain_line`] appended to `out` (a writer's batch buffer: no copy of
/// its own per line); returns the line's hash ([`line_hash`]).
pub fn push_chain_line(out: &mut Vec<u8>, body: &[u8], link: &Link) -> [u8; 32] {
    let start = out.len();
    let inner = body.strip_suffix(b"}").unwrap_or(body);
    out.extend_from_slice(inner);
    if inner.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(b"\"chain\":{\"node\":");
    if link.node.bytes().all(|b| b.is_ascii_hexdigit()) {
        // What a server names itself: [0-9a-f].
        out.push(b'"');
        out.extend_from_slice(link.node.as_bytes());
        out.push(b'"');
    } else {
        // Serialized, so any string stays valid JSON (writing a string to a
        // Vec cannot fail).
        let _ = serde_json::to_writer(&mut *out, link.node.as_str());
    }
    out.extend_from_slice(b",\"seq\":");
    push_decimal(out, link.seq);
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(&hex32(&link.prev));
    out.extend_from_slice(b"\"}}");
    line_hash(&out[start..])
}

/// 32 bytes in lowercase hex, a table lookup per byte (the `hex` crate's
/// per-nibble loop showed in the profile: several per audited request).
pub fn hex32(bytes: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
    out
}

/// `n` in decimal appended to `out` (without `core::fmt`: once per line
/// written; the server's entries use it too).
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The exact bytes a checkpoint's signature covers:
/// `"vault-audit checkpoint v1\n" node "\n" seq "\n" prev-hex "\n" time "\n" reason`
/// (seq in decimal, prev in lowercase hex).
pub fn checkpoint_message(link: &Link, time: &str, reason: Reason) -> Vec<u8> {
    format!("{CHECKPOINT_DOMAIN}\n{}\n{}\n{}\n{time}\n{}", link.node, link.seq, hex::encode(link.prev), reason.as_str())
        .into_bytes()
}

/// A signed checkpoint line for `link` (the line to write, without newline).
pub fn checkpoint_line(key: &SigningKey, link: &Link, time: &str, reason: Reason) -> Vec<u8> {
    let sig = key.sign(&checkpoint_message(link, time, reason));
    let body = serde_json::json!({
        "type": "checkpoint",
        "time": time,
        "checkpoint": {
            "reason": reason.as_str(),
            "signature": base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
        },
    });
    chain_line(body.to_string().as_bytes(), link)
}

/// A device's public key as shown by the API: base64 of the 32 key bytes.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
}

/// Parse a key written by [`encode_public_key`].
pub fn decode_public_key(s: &str) -> Result<VerifyingKey, FormatError> {
    let raw = base64::engine::general_purpose::STANDARD.decode(s.trim()).map_err(|_| FormatError::PublicKey)?;
    let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| FormatError::PublicKey)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| FormatError::PublicKey)
}

/// A line of the log, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Its link.
    pub link: Link,
    /// Its hash ([`line_hash`]).
    pub hash: [u8; 32],
    /// `type` (`request`, `response`, `checkpoint`).
    pub kind: String,
    /// For a checkpoint: its time, reason and signature.
    pub checkpoint: Option<(String, Reason, [u8; 64])>,
}

/// Parse one line (without its newline).
pub fn parse_line(line: &[u8]) -> Result<Parsed, FormatError> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|_| FormatError::Entry("not a JSON audit entry"))?;
    let chain = v.get("chain").ok_or(FormatError::Entry("entry without a chain link"))?;
    let node = chain.get("node").and_then(|n| n.as_str()).ok_or(FormatError::Entry("chain link without a node"))?;
    let seq = chain.get("seq").and_then(|n| n.as_u64()).ok_or(FormatError::Entry("chain link without a seq"))?;
    let prev = chain
        .get("prev")
        .and_then(|p| p.as_str())
        .and_then(|p| hex::decode(p).ok())
        .and_then(|p| <[u8; 32]>::try_from(p.as_slice()).ok())
        .ok_or(FormatError::Entry("chain link without a valid prev hash"))?;
    let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or_default().to_string();
    let checkpoint = if kind == "checkpoint" {
        let time = v.get("time").and_then(|t| t.as_str()).ok_or(FormatError::Entry("checkpoint without a time"))?;
        let c = v.get("checkpoint").ok_or(FormatError::Entry("checkpoint without its signature"))?;
        let reason = c
            .get("reason")
            .and_then(|r| r.as_str())
            .and_then(Reason::parse)
            .ok_or(FormatError::Entry("checkpoint with an unknown reason"))?;
        let sig = c
            .get("signature")
            .and_then(|s| s.as_str())
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .and_then(|s| <[u8; 64]>::try_from(s.as_slice()).ok())
            .ok_or(FormatError::Entry("checkpoint without a valid signature"))?;
        Some((time.to_string(), reason, sig))
    } else {
        None
    };
    Ok(Parsed { link: Link { node: node.to_string(), seq, prev }, hash: line_hash(line), kind, checkpoint })
}

/// Whether a parsed checkpoint's signature is valid under `key`.
pub fn checkpoint_valid(key: &VerifyingKey, p: &Parsed) -> bool {
    let Some((time, reason, sig)) = &p.checkpoint else { return false };
    key.verify(&checkpoint_message(&p.link, time, *reason), &Signature::from_bytes(sig)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_in_decimal() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::from(u32::MAX) + 1, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
            let link = Link { node: "ab".into(), seq: n, prev: [2; 32] };
            assert_eq!(parse_line(&chain_line(b"{}", &link)).unwrap().link.seq, n);
        }
    }

    #[test]
    fn a_chain_line_is_the_body_plus_its_link() {
        let link = Link { node: "ab".into(), seq: 3, prev: [1; 32] };
        let line = chain_line(br#"{"type":"request"}"#, &link);
        let p = parse_line(&line).unwrap();
        assert_eq!(p.link, link);
        assert_eq!(p.kind, "request");
        assert_eq!(p.hash, line_hash(&line));
        // An empty object still gives valid JSON.
        assert!(parse_line(&chain_line(b"{}", &link)).is_ok());
        // Appended to a buffer: the same bytes, and their hash.
        let mut buf = b"earlier line\n".to_vec();
        let hash = push_chain_line(&mut buf, br#"{"type":"request"}"#, &link);
        assert_eq!(&buf[13..], &line[..]);
        assert_eq!(hash, line_hash(&line));
        // The previous line's hash in lowercase hex, as the `hex` crate writes it.
        let prev: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        assert_eq!(hex32(&prev).to_vec(), hex::encode(prev).into_bytes());
        // A node name that is not hex is escaped, and the line still parses.
        let odd = Link { node: "a\"b\\c\n".into(), seq: 1, prev };
        assert_eq!(parse_line(&chain_line(b"{}", &odd)).unwrap().link, odd);
    }

    #[test]
    fn checkpoints_verify_only_under_their_key_and_fields() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let link = Link { node: "n".into(), seq: 0, prev: GENESIS };
        let line = checkpoint_line(&key, &link, "2026-01-01T00:00:00Z", Reason::Open);
        let p = parse_line(&line).unwrap();
        assert!(checkpoint_valid(&key.verifying_key(), &p));
        assert!(!checkpoint_valid(&other.verifying_key(), &p));
        let mut moved = p.clone();
        moved.link.seq = 1;
        assert!(!checkpoint_valid(&key.verifying_key(), &moved));
        let text = String::from_utf8(line).unwrap().replace("\"open\"", "\"close\"");
        assert!(!checkpoint_valid(&key.verifying_key(), &parse_line(text.as_bytes()).unwrap()));
    }

    #[test]
    fn public_keys_round_trip_and_junk_is_refused() {
        let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
        assert_eq!(decode_public_key(&encode_public_key(&key)), Ok(key));
        assert_eq!(decode_public_key("AAAA"), Err(FormatError::PublicKey));
        assert_eq!(decode_public_key("not base64!"), Err(FormatError::PublicKey));
    }

    #[test]
    fn junk_lines_are_errors_not_panics() {
        for junk in
            [&b""[..], b"{", b"[]", b"{\"chain\":1}", b"{\"chain\":{\"node\":\"a\",\"seq\":-1,\"prev\":\"00\"}}"]
        {
            assert!(parse_line(junk).is_err());
        }
    }
}
