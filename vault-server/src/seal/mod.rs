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
    /// Decode a key part as Vault does: hex if it decodes to a plausible
    /// length, otherwise standard base64.
    pub fn decode(s: &str) -> Result<Self, SealError> {
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
    /// Add a part; identical parts are recognised in constant time.
    pub fn add(&mut self, part: KeyPart) -> Added {
        if self.parts.iter().any(|p| ct_eq(p.as_bytes(), part.as_bytes())) {
            return Added::Duplicate;
        }
        self.parts.push(part);
        Added::Progress(self.parts.len())
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

    #[test]
    fn key_decoding_hex_then_base64() {
        let raw = [7u8; 33];
        assert_eq!(KeyPart::decode(&hex::encode(raw)).unwrap().as_bytes(), &raw);
        assert_eq!(KeyPart::decode(&STANDARD.encode(raw)).unwrap().as_bytes(), &raw);
        assert_eq!(KeyPart::decode("zz not a key").unwrap_err(), SealError::KeyEncoding);
        assert!(matches!(KeyPart::decode(&hex::encode([1u8; 8])), Err(SealError::KeyLength(_))));
        assert!(matches!(KeyPart::decode(&STANDARD.encode([1u8; 40])), Err(SealError::KeyLength(_))));
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
        let p = KeyPart::decode(&hex::encode([3u8; 33])).unwrap();
        assert_eq!(c.add(p.clone()), Added::Progress(1));
        assert_eq!(c.add(p), Added::Duplicate);
        assert_eq!(c.progress(), 1);
    }
}
