//! Versioned keys: numbered versions of one key, each with its creation time,
//! its material (zeroized on drop) and a count of the encryptions it has done.
//! The barrier keyring is one (its versions are the terms); transit keys are
//! others.
//!
//! - [`VersionedKey`] (`ring.rs`): the versions and Vault transit's rules:
//!   `latest_version`, `min_decryption_version`, `min_encryption_version`,
//!   rotate, trim (`min_available_version`).
//! - [`KeyVersion`] (`version.rs`): one version.
//! - [`KeyMaterial`] (`material.rs`): what a version holds, as bytes that are
//!   checked on load and wiped on drop ([`Aes256GcmKey`], [`SecretBytes`]).
//! - [`Usage`] (`usage.rs`): per-version encryption counts, summed across
//!   servers without a storage write per encryption, and the rotation point
//!   for random 96-bit nonces (NIST SP 800-38D).
//! - `codec.rs`: the binary form, stored through the barrier
//!   (`docs/formats.md`).
//!
//! This is key management only: no cryptography is implemented here.

mod codec;
mod material;
#[cfg(test)]
mod proptests;
mod ring;
mod usage;
mod version;

pub(crate) use codec::{FormatError, Reader};
pub(crate) use material::{Aes256GcmKey, KeyMaterial};
pub(crate) use ring::{Bounds, VersionedKey};
pub(crate) use usage::{ROTATE_AT, UsageDelta};
pub(crate) use version::{KeyVersion, MAX_UNIX};
// The rest of the API for engines; nothing outside this module uses it yet.
#[allow(unused_imports, reason = "used by engines still to come (transit, issue 15)")]
pub(crate) use {
    material::{MaterialError, SecretBytes},
    ring::KeyError,
    usage::{RANDOM_NONCE_LIMIT, Usage},
};
