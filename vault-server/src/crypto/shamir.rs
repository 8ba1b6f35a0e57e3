//! Shamir secret sharing of the 256-bit unseal key over GF(256), byte-wise,
//! as HashiCorp Vault does. Arithmetic comes from `vsss-rs` (>= 6.0.1:
//! branch-free GF(256) multiply without lookup tables, duplicate identifiers
//! rejected); why this crate and not `shamir`/`sharks`/`blahaj`:
//! `docs/decisions.md`.
//!
//! Share format: `[x, y_0 .. y_31]`, 33 bytes, `x` in 1..=255.
//!
//! Shamir itself has no integrity: fewer than T shares, or a corrupted share,
//! recombine "successfully" into a wrong key. Callers must verify the result
//! (the seal does, by opening the wrapped root key with it) and must count
//! distinct shares against the stored threshold before combining.

use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use vsss_rs::Gf256;
use zeroize::Zeroizing;

use super::KEY_LEN;

/// Length of one share in bytes: identifier + one byte per key byte.
pub const SHARE_LEN: usize = KEY_LEN + 1;

/// A share, zeroized on drop and never printed.
#[derive(Clone)]
pub struct Share(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share(x={}, <redacted>)", self.id())
    }
}

/// What can be wrong with shares. Never carries share bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShamirError {
    /// Not 33 bytes.
    #[error("a key share must be {SHARE_LEN} bytes, got {0}")]
    Length(usize),
    /// Identifier 0 would be the secret itself.
    #[error("a key share has the invalid identifier 0")]
    ZeroIdentifier,
    /// Two shares with the same identifier.
    #[error("the same key share was given twice")]
    Duplicate,
    /// Parameters out of range (1 < threshold <= shares <= 255 is required).
    #[error("invalid share parameters: {0}")]
    Parameters(&'static str),
    /// The library refused for another reason.
    #[error("key shares could not be combined")]
    Combine,
}

impl Share {
    /// Parse a share from its bytes, checking length and identifier.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ShamirError> {
        if bytes.len() != SHARE_LEN {
            return Err(ShamirError::Length(bytes.len()));
        }
        if bytes[0] == 0 {
            return Err(ShamirError::ZeroIdentifier);
        }
        Ok(Self(Zeroizing::new(bytes.to_vec())))
    }

    /// The share's identifier (x coordinate), 1..=255. Not secret.
    pub fn id(&self) -> u8 {
        self.0.first().copied().unwrap_or(0)
    }

    /// The share's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Split a key into `shares` shares, any `threshold` of which recover it.
/// Requires 2 <= threshold <= shares <= 255 (a single share is the key itself
/// and is handled by the seal, as Vault does).
pub fn split(key: &[u8; KEY_LEN], threshold: u8, shares: u8) -> Result<Vec<Share>, ShamirError> {
    if threshold < 2 {
        return Err(ShamirError::Parameters("threshold must be at least 2"));
    }
    if threshold > shares {
        return Err(ShamirError::Parameters("threshold exceeds the number of shares"));
    }
    let rng = UnwrapErr(SysRng);
    let raw = Zeroizing::new(
        Gf256::split_bytes(threshold as usize, shares as usize, &key[..], rng).map_err(|_| ShamirError::Combine)?,
    );
    raw.iter().map(|s| Share::from_bytes(s)).collect()
}

/// Recombine shares into a key. The caller must already have checked that
/// at least the threshold of *distinct* shares is present, and must verify
/// the result: a wrong or missing share yields a wrong key, not an error.
pub fn combine(shares: &[Share]) -> Result<Zeroizing<[u8; KEY_LEN]>, ShamirError> {
    for (i, a) in shares.iter().enumerate() {
        if shares[..i].iter().any(|b| b.id() == a.id()) {
            return Err(ShamirError::Duplicate);
        }
    }
    let raw: Zeroizing<Vec<Vec<u8>>> = Zeroizing::new(shares.iter().map(|s| s.0.to_vec()).collect());
    let secret = Zeroizing::new(Gf256::combine_bytes(&*raw).map_err(|_| ShamirError::Combine)?);
    let key: [u8; KEY_LEN] = secret[..].try_into().map_err(|_| ShamirError::Combine)?;
    Ok(Zeroizing::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
        let mut out = Vec::new();
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize == k {
                out.push((0..n).filter(|i| mask & (1 << i) != 0).collect());
            }
        }
        out
    }

    #[test]
    fn every_threshold_subset_recovers_and_fewer_do_not() {
        let key = [0x5au8; 32];
        for (t, n) in [(2u8, 2u8), (2, 3), (3, 5), (4, 6), (5, 5)] {
            let shares = split(&key, t, n).unwrap();
            assert_eq!(shares.len(), n as usize);
            for k in 1..=n as usize {
                for set in subsets(n as usize, k) {
                    // Order must not matter: feed each subset reversed too.
                    for order in [set.clone(), set.iter().rev().copied().collect()] {
                        let chosen: Vec<Share> = order.iter().map(|&i| shares[i].clone()).collect();
                        let got = combine(&chosen);
                        if k >= t as usize {
                            assert_eq!(*got.unwrap(), key, "t={t} n={n} set={order:?}");
                        } else if let Ok(k) = got {
                            assert_ne!(*k, key, "fewer than t shares must not recover the key");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_shares_rejected() {
        assert_eq!(Share::from_bytes(&[1u8; 32]).unwrap_err(), ShamirError::Length(32));
        assert_eq!(Share::from_bytes(&[1u8; 34]).unwrap_err(), ShamirError::Length(34));
        assert_eq!(Share::from_bytes(&[]).unwrap_err(), ShamirError::Length(0));
        let mut zero = [9u8; SHARE_LEN];
        zero[0] = 0;
        assert_eq!(Share::from_bytes(&zero).unwrap_err(), ShamirError::ZeroIdentifier);
        let shares = split(&[1u8; 32], 2, 3).unwrap();
        let dup = vec![shares[0].clone(), shares[0].clone()];
        assert_eq!(combine(&dup).unwrap_err(), ShamirError::Duplicate);
    }

    #[test]
    fn bad_parameters() {
        assert!(split(&[0u8; 32], 1, 3).is_err());
        assert!(split(&[0u8; 32], 4, 3).is_err());
    }

    #[test]
    fn debug_redacts() {
        let s = split(&[3u8; 32], 2, 2).unwrap();
        let d = format!("{:?}", s[0]);
        assert!(d.starts_with("Share(x=1"), "{d}");
        assert!(!d.contains(&hex::encode(&s[0].as_bytes()[1..])));
    }
}
