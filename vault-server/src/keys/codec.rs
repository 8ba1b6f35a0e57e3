//! The binary form of a [`VersionedKey`] (integers big-endian; see
//! `docs/formats.md`). Key material only ever passes through zeroizing
//! buffers, never through JSON or a string.
//!
//! ```text
//! key     = format (0x01) | kind (u8) | latest (u32) | min_decryption (u32)
//!         | min_encryption (u32) | min_available (u32) | count (u32) | version{count}
//! version = number (u32) | created_unix (i64) | encryptions (u64) | len (u32) | material (len)
//! ```
//!
//! A later field means a new format byte; the decoder keeps reading the old
//! ones. Decoding checks every length before it slices or allocates and
//! accepts exactly what [`VersionedKey::encode`] can produce: a truncated or
//! extended record, an unknown format or kind, version numbers other than
//! `max(min_available, 1)..=latest` in order, or minimums no sequence of
//! operations reaches are all errors.

use zeroize::Zeroizing;

use super::material::KeyMaterial;
use super::ring::{Bounds, VersionedKey};
use super::version::KeyVersion;

const FORMAT_V1: u8 = 0x01;
const HEADER_LEN: usize = 1 + 1 + 5 * 4;
const VERSION_FIXED_LEN: usize = 4 + 8 + 8 + 4;

/// A stored key could not be decoded. Untrusted input, as opposed to
/// [`KeyError`](super::KeyError) (caller input). Carries no stored byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FormatError {
    /// The record ends early.
    #[error("stored key is truncated")]
    Truncated,
    /// Bytes follow the last version.
    #[error("stored key has trailing bytes")]
    TrailingBytes,
    /// The format byte is not one this build reads.
    #[error("stored key has an unknown format")]
    UnknownFormat,
    /// The record holds another kind of key material.
    #[error("stored key holds another kind of key material")]
    WrongKind,
    /// Minimum/latest versions no sequence of operations reaches.
    #[error("stored key has inconsistent version bounds")]
    Bounds,
    /// Versions missing, repeated, out of order or miscounted.
    #[error("stored key has wrong version numbers")]
    VersionNumbers,
    /// A creation time outside 1970..=9999.
    #[error("stored key has a creation time out of range")]
    Time,
    /// Key material of the wrong length for its kind.
    #[error("stored key material is malformed")]
    Material,
}

/// A bounds-checked cursor over untrusted bytes: every read returns `Err`
/// past the end, never panics.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Bytes left.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let (head, tail) = self.rest.split_at_checked(n).ok_or(FormatError::Truncated)?;
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FormatError> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, FormatError> {
        self.array().map(u64::from_be_bytes)
    }

    pub(crate) fn i64(&mut self) -> Result<i64, FormatError> {
        self.array().map(i64::from_be_bytes)
    }

    /// The end: anything left is an error.
    pub(crate) fn finish(self) -> Result<(), FormatError> {
        if self.rest.is_empty() { Ok(()) } else { Err(FormatError::TrailingBytes) }
    }
}

impl<M: KeyMaterial> VersionedKey<M> {
    /// Serialize. Counts include this process's unflushed encryptions (to
    /// persist counts safely across servers, encode a freshly loaded record
    /// after [`absorb_usage`](Self::absorb_usage)).
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let len =
            HEADER_LEN + self.versions().map(|(_, k)| VERSION_FIXED_LEN + k.material().as_bytes().len()).sum::<usize>();
        // Exact capacity: the buffer never reallocates, so no unwiped copy
        // of key material is left in freed memory.
        let mut out = Zeroizing::new(Vec::with_capacity(len));
        let b = self.bounds();
        out.push(FORMAT_V1);
        out.push(M::KIND);
        for n in [b.latest, b.min_decryption, b.min_encryption, b.min_available] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        // At most u32::MAX versions: their numbers are distinct u32s.
        out.extend_from_slice(&(self.versions().count() as u32).to_be_bytes());
        for (v, k) in self.versions() {
            let material = k.material().as_bytes();
            out.extend_from_slice(&v.to_be_bytes());
            out.extend_from_slice(&k.created_unix().to_be_bytes());
            out.extend_from_slice(&k.encryptions().to_be_bytes());
            // Material is at most M::MAX_LEN bytes, far below u32::MAX.
            out.extend_from_slice(&(material.len() as u32).to_be_bytes());
            out.extend_from_slice(material);
        }
        debug_assert_eq!(out.len(), len);
        out
    }

    /// Parse what [`encode`](Self::encode) produced; anything else is an error.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != FORMAT_V1 {
            return Err(FormatError::UnknownFormat);
        }
        if r.u8()? != M::KIND {
            return Err(FormatError::WrongKind);
        }
        let bounds =
            Bounds { latest: r.u32()?, min_decryption: r.u32()?, min_encryption: r.u32()?, min_available: r.u32()? };
        let count = r.u32()?;
        let first = bounds.min_available.max(1);
        if bounds.latest < first || u64::from(count) != u64::from(bounds.latest - first) + 1 {
            return Err(FormatError::VersionNumbers);
        }
        // Every version takes at least VERSION_FIXED_LEN bytes: a forged
        // count is caught here, before anything is allocated for it.
        let count = usize::try_from(count).map_err(|_| FormatError::Truncated)?;
        if count.checked_mul(VERSION_FIXED_LEN).is_none_or(|n| n > r.remaining()) {
            return Err(FormatError::Truncated);
        }
        let mut versions = Vec::with_capacity(count);
        for expected in first..=bounds.latest {
            if r.u32()? != expected {
                return Err(FormatError::VersionNumbers);
            }
            let created = r.i64()?;
            let encryptions = r.u64()?;
            let len = usize::try_from(r.u32()?).map_err(|_| FormatError::Material)?;
            if len > M::MAX_LEN {
                return Err(FormatError::Material);
            }
            let material = M::from_bytes(r.take(len)?).map_err(|_| FormatError::Material)?;
            versions.push(KeyVersion::stored(material, created, encryptions)?);
        }
        r.finish()?;
        Self::from_parts(bounds, versions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::material::{Aes256GcmKey, SecretBytes};

    fn sample() -> VersionedKey<SecretBytes> {
        let mut k = VersionedKey::new(SecretBytes::from_bytes(&[1; 32]).unwrap(), 1_700_000_000);
        k.rotate(SecretBytes::from_bytes(&[2; 64]).unwrap(), 1_700_000_100).unwrap();
        k.rotate(SecretBytes::from_bytes(&[3; 16]).unwrap(), 1_700_000_200).unwrap();
        k.version(1).unwrap().count_encryptions(5);
        k.latest().count_encryptions(u64::MAX);
        k.set_min_versions(Some(2), Some(2)).unwrap();
        k.trim(2).unwrap();
        k
    }

    #[test]
    fn round_trip() {
        let k = sample();
        let bytes = k.encode();
        let back = VersionedKey::<SecretBytes>::decode(&bytes).unwrap();
        assert_eq!(back.bounds(), k.bounds());
        assert_eq!(back.versions().count(), 2);
        for ((v1, a), (v2, b)) in k.versions().zip(back.versions()) {
            assert_eq!(v1, v2);
            assert!(a.material().ct_eq(b.material()));
            assert_eq!(a.created_unix(), b.created_unix());
            assert_eq!(a.encryptions(), b.encryptions());
        }
        assert_eq!(back.latest().encryptions(), u64::MAX);
        assert_eq!(&back.encode()[..], &bytes[..]);
    }

    #[test]
    fn exact_bytes_of_a_small_key() {
        let k = VersionedKey::new(Aes256GcmKey::from_bytes(&[0xAA; 32]).unwrap(), 0x0102);
        k.latest().count_encryptions(3);
        let expected = [
            "01",       // format
            "01",       // kind: AES-256-GCM
            "00000001", // latest
            "00000001", // min_decryption
            "00000000", // min_encryption
            "00000000", // min_available
            "00000001", // count
            "00000001", // version 1
            "0000000000000102",
            "0000000000000003",
            "00000020",
            &"aa".repeat(32),
        ]
        .concat();
        assert_eq!(hex::encode(&k.encode()[..]), expected);
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let good = sample().encode();
        for n in 0..good.len() {
            assert!(VersionedKey::<SecretBytes>::decode(&good[..n]).is_err(), "length {n} accepted");
        }
        let mut longer = good.to_vec();
        longer.push(0);
        assert_eq!(VersionedKey::<SecretBytes>::decode(&longer).unwrap_err(), FormatError::TrailingBytes);
    }

    #[test]
    fn header_corruptions_are_refused() {
        let good = sample().encode().to_vec();
        let with = |i: usize, b: u8| {
            let mut x = good.clone();
            x[i] = b;
            VersionedKey::<SecretBytes>::decode(&x).map(|_| ()).unwrap_err()
        };
        assert_eq!(with(0, 0x02), FormatError::UnknownFormat);
        assert_eq!(with(0, 0x00), FormatError::UnknownFormat);
        assert_eq!(with(1, Aes256GcmKey::KIND), FormatError::WrongKind);
        // latest 4 but only 2 versions stored.
        assert_eq!(with(5, 4), FormatError::VersionNumbers);
        // min_decryption 1, below the trim at 2.
        assert_eq!(with(9, 1), FormatError::Bounds);
        // count 3.
        assert_eq!(with(21, 3), FormatError::VersionNumbers);
        // The first version claims to be 3.
        assert_eq!(with(25, 3), FormatError::VersionNumbers);
        // Material of the wrong kind cannot be read as AES keys.
        assert_eq!(VersionedKey::<Aes256GcmKey>::decode(&good).unwrap_err(), FormatError::WrongKind);
    }

    #[test]
    fn huge_counts_and_lengths_are_refused_without_allocating() {
        let good = sample().encode().to_vec();
        // count = u32::MAX with a matching latest: caught by the length check.
        let mut x = good.clone();
        x[2..6].copy_from_slice(&u32::MAX.to_be_bytes()); // latest
        x[6..10].copy_from_slice(&u32::MAX.to_be_bytes()); // min_decryption
        x[10..14].copy_from_slice(&u32::MAX.to_be_bytes()); // min_encryption
        x[14..18].copy_from_slice(&1u32.to_be_bytes()); // min_available
        x[18..22].copy_from_slice(&u32::MAX.to_be_bytes()); // count
        assert_eq!(VersionedKey::<SecretBytes>::decode(&x).unwrap_err(), FormatError::Truncated);
        // A material length of u32::MAX.
        let mut x = good.clone();
        x[42..46].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(VersionedKey::<SecretBytes>::decode(&x).unwrap_err(), FormatError::Material);
        // A material length one past the end.
        let mut x = good.clone();
        x[42..46].copy_from_slice(&65u32.to_be_bytes());
        assert!(VersionedKey::<SecretBytes>::decode(&x).is_err());
        // Creation time out of range.
        let mut x = good;
        x[26..34].copy_from_slice(&i64::MIN.to_be_bytes());
        assert_eq!(VersionedKey::<SecretBytes>::decode(&x).unwrap_err(), FormatError::Time);
    }

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32().unwrap_err(), FormatError::Truncated);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.take(3).unwrap_err(), FormatError::Truncated);
        assert_eq!(r.take(2).unwrap(), &[2, 3]);
        assert!(r.finish().is_ok());
    }
}
