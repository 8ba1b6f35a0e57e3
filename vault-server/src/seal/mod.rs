//! The Shamir seal: how the unseal key is split, collected and checked, and
//! how it wraps the root key. Stateless functions plus [`ShareCollector`];
//! the core decides when to call them.
//!
//! ```text
//! shares --combine--> unseal key --AES-256-GCM, AAD "core/root-key"--> root key
//! ```
//!
//! The wrapped root key doubles as the check value: a wrong or forged share
//! combines into a key that fails GCM authentication, which is reported as an
//! error, never accepted as a silently wrong key.
//!
//! Every submitted part is checked against the seal configuration *when it is
//! submitted* ([`KeyPart::decode`], [`ShareCollector::add`]): right length,
//! identifier in 1..=255, no identifier twice. A malformed part is refused on
//! its own and never enters an attempt, so it can neither count towards the
//! threshold nor make the holders' good shares fail with it. (What cannot be
//! checked alone is whether a well-formed share is *genuine*: only the
//! combination at the threshold tells, through the wrapped root key.)

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::crypto::hmac::ct_eq;
use crate::crypto::shamir::{self, ShamirError, Share};
use crate::crypto::{AeadKey, Ciphertext, KEY_LEN, random};
use crate::storage::SealConfig;

/// Storage path of the root key, wrapped by the unseal key.
pub const ROOT_KEY_PATH: &str = "core/root-key";
const ROOT_KEY_HEADER: &[u8] = &[1];
/// Shortest key part accepted (Vault's bound).
const MIN_KEY_LEN: usize = 16;
/// Longest key part accepted: a 33-byte share.
const MAX_KEY_LEN: usize = shamir::SHARE_LEN;

/// Errors of the seal. Never contain key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// `secret_shares`/`secret_threshold` out of range.
    #[error("invalid seal configuration: {0}")]
    InvalidConfig(&'static str),
    /// A submitted key part is not hex or base64.
    #[error("'key' must be a valid hex or base64 string")]
    KeyEncoding,
    /// A submitted key part has the wrong length.
    #[error("invalid key: {0}")]
    KeyLength(String),
    /// A submitted share is malformed for this seal (length, identifier 0).
    #[error("invalid key: {0}")]
    InvalidShare(ShamirError),
    /// A share with this identifier, but other bytes, is already held in
    /// this attempt: two holders cannot both hold share `x`, so one is wrong.
    #[error(
        "invalid key: a different key share with the same identifier was already provided in this attempt; \
         it was not counted"
    )]
    DuplicateIdentifier,
    /// Shares did not combine into the unseal key.
    #[error("invalid key: the key shares do not reconstruct the unseal key")]
    WrongKey,
    /// The shares themselves are inconsistent (e.g. same identifier twice).
    #[error("invalid key: failed to compute combined key: {0}")]
    Combine(ShamirError),
    /// The random generator failed.
    #[error("random number generator failed")]
    Random,
}

/// Validate init/rekey parameters as Vault does.
pub fn validate_config(shares: i64, threshold: i64) -> Result<SealConfig, SealError> {
    if shares < 1 {
        return Err(SealError::InvalidConfig("shares must be at least one"));
    }
    if threshold < 1 {
        return Err(SealError::InvalidConfig("threshold must be at least one"));
    }
    if shares > 255 {
        return Err(SealError::InvalidConfig("shares must be less than 256"));
    }
    if threshold > shares {
        return Err(SealError::InvalidConfig("threshold cannot be larger than shares"));
    }
    if shares > 1 && threshold == 1 {
        return Err(SealError::InvalidConfig("threshold must be greater than one for multiple shares"));
    }
    Ok(SealConfig { secret_shares: shares as u8, secret_threshold: threshold as u8 })
}

/// One submitted piece: a share, or the whole unseal key when `n == 1`.
#[derive(Clone)]
pub struct KeyPart(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for KeyPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPart(<redacted>)")
    }
}

impl KeyPart {
    /// Decode a key part as Vault does (hex if it decodes to a plausible
    /// length, otherwise standard base64), then check it fits `config`: with
    /// one share it is the whole [`KEY_LEN`]-byte unseal key, otherwise a
    /// [`shamir::SHARE_LEN`]-byte share with a non-zero identifier.
    pub fn decode(config: SealConfig, s: &str) -> Result<Self, SealError> {
        let part = Self::decode_any(s)?;
        part.check(config)?;
        Ok(part)
    }

    /// Decode without knowing the seal: only the bounds any part must meet.
    fn decode_any(s: &str) -> Result<Self, SealError> {
        let s = s.trim();
        // Decoded bytes go straight into a zeroizing buffer, even when unused.
        let bytes = match hex::decode(s).map(Zeroizing::new) {
            Ok(b) if (MIN_KEY_LEN..=MAX_KEY_LEN).contains(&b.len()) => b,
            _ => Zeroizing::new(STANDARD.decode(s).map_err(|_| SealError::KeyEncoding)?),
        };
        if bytes.len() < MIN_KEY_LEN {
            return Err(SealError::KeyLength(format!("key is shorter than minimum {MIN_KEY_LEN} bytes")));
        }
        if bytes.len() > MAX_KEY_LEN {
            return Err(SealError::KeyLength(format!("key is longer than maximum {MAX_KEY_LEN} bytes")));
        }
        Ok(Self(bytes))
    }

    /// Whether this part can belong to a seal split as `config`.
    fn check(&self, config: SealConfig) -> Result<(), SealError> {
        if config.secret_shares == 1 {
            if self.0.len() != KEY_LEN {
                return Err(SealError::KeyLength(format!(
                    "this vault has a single unseal key: it must be {KEY_LEN} bytes, got {}",
                    self.0.len()
                )));
            }
            return Ok(());
        }
        Share::from_bytes(&self.0).map(drop).map_err(SealError::InvalidShare)
    }

    /// The share identifier (x coordinate) of a share-sized part. Not secret.
    fn share_id(&self) -> Option<u8> {
        (self.0.len() == shamir::SHARE_LEN).then(|| self.0[0])
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// What adding a part did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The same part was already submitted in this attempt.
    Duplicate,
    /// Accepted; this many parts are now held.
    Progress(usize),
}

/// Parts collected towards a threshold, with the attempt's nonce.
#[derive(Debug)]
pub struct ShareCollector {
    nonce: String,
    parts: Vec<KeyPart>,
}

impl Default for ShareCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl ShareCollector {
    /// A new attempt with a fresh nonce.
    pub fn new() -> Self {
        Self { nonce: random::uuid(), parts: Vec::new() }
    }
    /// The attempt's nonce (not secret: it only names the attempt).
    pub fn nonce(&self) -> &str {
        &self.nonce
    }
    /// Parts held.
    pub fn progress(&self) -> usize {
        self.parts.len()
    }
    /// Add a part (already checked against the seal by [`KeyPart::decode`]).
    /// The same part again is [`Added::Duplicate`] (recognised in constant
    /// time); another part with an identifier already held is refused with
    /// [`SealError::DuplicateIdentifier`]. Neither changes what is held.
    pub fn add(&mut self, part: KeyPart) -> Result<Added, SealError> {
        if self.parts.iter().any(|p| ct_eq(p.as_bytes(), part.as_bytes())) {
            return Ok(Added::Duplicate);
        }
        if let Some(id) = part.share_id()
            && self.parts.iter().any(|p| p.share_id() == Some(id))
        {
            return Err(SealError::DuplicateIdentifier);
        }
        self.parts.push(part);
        Ok(Added::Progress(self.parts.len()))
    }
    /// Take the parts out (they are wiped when dropped).
    pub fn take(&mut self) -> Vec<KeyPart> {
        std::mem::take(&mut self.parts)
    }
}

/// Turn the collected parts into the unseal key (not yet verified).
pub fn combine(config: SealConfig, parts: &[KeyPart]) -> Result<Zeroizing<[u8; KEY_LEN]>, SealError> {
    if config.secret_shares == 1 {
        let part = parts.first().ok_or(SealError::WrongKey)?;
        let key: [u8; KEY_LEN] = part
            .as_bytes()
            .try_into()
            .map_err(|_| SealError::KeyLength(format!("the unseal key must be {KEY_LEN} bytes")))?;
        return Ok(Zeroizing::new(key));
    }
    let shares = parts
        .iter()
        .map(|p| Share::from_bytes(p.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(SealError::Combine)?;
    shamir::combine(&shares).map_err(SealError::Combine)
}

/// Split an unseal key into the configured parts.
pub fn split(config: SealConfig, key: &Zeroizing<[u8; KEY_LEN]>) -> Result<Vec<KeyPart>, SealError> {
    if config.secret_shares == 1 {
        return Ok(vec![KeyPart(Zeroizing::new(key.to_vec()))]);
    }
    let shares = shamir::split(key, config.secret_threshold, config.secret_shares).map_err(SealError::Combine)?;
    Ok(shares.iter().map(|s| KeyPart(Zeroizing::new(s.as_bytes().to_vec()))).collect())
}

/// Wrap the root key under the unseal key for storage at [`ROOT_KEY_PATH`].
pub fn wrap_root(unseal: &Zeroizing<[u8; KEY_LEN]>, root: &Zeroizing<[u8; KEY_LEN]>) -> Ciphertext {
    AeadKey::new(unseal).seal(ROOT_KEY_HEADER, ROOT_KEY_PATH.as_bytes(), &root[..])
}

/// Unwrap the root key; a wrong unseal key fails authentication.
pub fn unwrap_root(
    unseal: &Zeroizing<[u8; KEY_LEN]>,
    wrapped: &Ciphertext,
) -> Result<Zeroizing<[u8; KEY_LEN]>, SealError> {
    if wrapped.as_bytes().first() != ROOT_KEY_HEADER.first() {
        return Err(SealError::WrongKey);
    }
    let plain = AeadKey::new(unseal)
        .open(ROOT_KEY_HEADER.len(), ROOT_KEY_PATH.as_bytes(), wrapped.as_bytes())
        .map_err(|_| SealError::WrongKey)?;
    let key: [u8; KEY_LEN] = plain[..].try_into().map_err(|_| SealError::WrongKey)?;
    Ok(Zeroizing::new(key))
}

/// A fresh unseal key.
pub fn new_unseal_key() -> Result<Zeroizing<[u8; KEY_LEN]>, SealError> {
    random::key32().map_err(|_| SealError::Random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rules() {
        assert!(validate_config(1, 1).is_ok());
        assert!(validate_config(5, 3).is_ok());
        assert!(validate_config(0, 1).is_err());
        assert!(validate_config(3, 1).is_err());
        assert!(validate_config(3, 4).is_err());
        assert!(validate_config(256, 3).is_err());
    }

    const SHARED: SealConfig = SealConfig { secret_shares: 5, secret_threshold: 3 };
    const SINGLE: SealConfig = SealConfig { secret_shares: 1, secret_threshold: 1 };

    #[test]
    fn key_decoding_hex_then_base64() {
        let raw = [7u8; 33];
        assert_eq!(KeyPart::decode(SHARED, &hex::encode(raw)).unwrap().as_bytes(), &raw);
        assert_eq!(KeyPart::decode(SHARED, &STANDARD.encode(raw)).unwrap().as_bytes(), &raw);
        assert_eq!(KeyPart::decode(SHARED, "zz not a key").unwrap_err(), SealError::KeyEncoding);
        assert!(matches!(KeyPart::decode(SHARED, &hex::encode([1u8; 8])), Err(SealError::KeyLength(_))));
        assert!(matches!(KeyPart::decode(SHARED, &STANDARD.encode([1u8; 40])), Err(SealError::KeyLength(_))));
    }

    /// Each part is checked against the seal when submitted, not at the threshold.
    #[test]
    fn parts_are_checked_against_the_seal_on_submission() {
        // Shares: exactly 33 bytes, identifier 1..=255.
        let mut zero = [9u8; 33];
        zero[0] = 0;
        assert_eq!(
            KeyPart::decode(SHARED, &hex::encode(zero)).unwrap_err(),
            SealError::InvalidShare(ShamirError::ZeroIdentifier)
        );
        for len in [16usize, 31, 32] {
            assert_eq!(
                KeyPart::decode(SHARED, &hex::encode(vec![1u8; len])).unwrap_err(),
                SealError::InvalidShare(ShamirError::Length(len)),
                "{len}-byte part for a shared seal"
            );
        }
        let mut top = [9u8; 33];
        top[0] = 255;
        assert!(KeyPart::decode(SHARED, &hex::encode(top)).is_ok());
        // A single-share seal takes the 32-byte unseal key itself, nothing else.
        assert!(KeyPart::decode(SINGLE, &hex::encode([4u8; 32])).is_ok());
        for len in [16usize, 33] {
            assert!(
                matches!(KeyPart::decode(SINGLE, &hex::encode(vec![1u8; len])), Err(SealError::KeyLength(_))),
                "{len}-byte part for a single-key seal"
            );
        }
        // Messages name lengths, never bytes.
        let e = KeyPart::decode(SHARED, &hex::encode([0xabu8; 32])).unwrap_err().to_string();
        assert!(!e.contains("abab") && e.contains("33") && e.contains("32"), "{e}");
    }

    /// A part whose identifier is already held is refused on its own: the
    /// held parts stay, and the genuine shares still unseal.
    #[test]
    fn conflicting_identifier_is_refused_without_losing_progress() {
        let config = validate_config(3, 2).unwrap();
        let unseal = new_unseal_key().unwrap();
        let parts = split(config, &unseal).unwrap();
        let mut forged = parts[0].as_bytes().to_vec();
        forged[5] ^= 1;
        let forged = KeyPart::decode(config, &hex::encode(&forged)).unwrap();

        let mut c = ShareCollector::new();
        assert_eq!(c.add(parts[0].clone()).unwrap(), Added::Progress(1));
        assert_eq!(c.add(forged).unwrap_err(), SealError::DuplicateIdentifier);
        assert_eq!(c.progress(), 1, "the refused part is not counted");
        assert_eq!(c.add(parts[0].clone()).unwrap(), Added::Duplicate);
        assert_eq!(c.add(parts[2].clone()).unwrap(), Added::Progress(2));
        assert_eq!(*combine(config, &c.take()).unwrap(), *unseal);
    }

    #[test]
    fn split_combine_wrap_unwrap() {
        let config = validate_config(3, 2).unwrap();
        let unseal = new_unseal_key().unwrap();
        let root = new_unseal_key().unwrap();
        let wrapped = wrap_root(&unseal, &root);
        let parts = split(config, &unseal).unwrap();
        let got = combine(config, &parts[1..]).unwrap();
        assert_eq!(*unwrap_root(&got, &wrapped).unwrap(), *root);
        // One share short: combines to a wrong key, which the wrap rejects.
        let one = combine(config, &parts[..1]);
        if let Ok(k) = one {
            assert_eq!(unwrap_root(&k, &wrapped).unwrap_err(), SealError::WrongKey);
        }
    }

    #[test]
    fn single_share_is_the_key() {
        let config = validate_config(1, 1).unwrap();
        let unseal = new_unseal_key().unwrap();
        let parts = split(config, &unseal).unwrap();
        assert_eq!(parts[0].as_bytes(), &unseal[..]);
        assert_eq!(*combine(config, &parts).unwrap(), *unseal);
    }

    #[test]
    fn collector_ignores_duplicates() {
        let mut c = ShareCollector::new();
        let p = KeyPart::decode(SHARED, &hex::encode([3u8; 33])).unwrap();
        assert_eq!(c.add(p.clone()).unwrap(), Added::Progress(1));
        assert_eq!(c.add(p).unwrap(), Added::Duplicate);
        assert_eq!(c.progress(), 1);
    }
}
