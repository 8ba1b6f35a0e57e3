//! Cryptographic primitives, each a thin wrapper over a vetted crate.
//!
//! Nothing here implements a primitive: AES-256-GCM comes from RustCrypto's
//! `aes-gcm`, Shamir sharing from `vsss-rs`, HMAC-SHA-256 from `hmac`/`sha2`,
//! randomness from the OS through `rand`. The wrappers exist to give key
//! material zeroizing types and to keep byte formats in one place. Why these
//! crates: `docs/decisions.md`.

pub mod aead;
pub(crate) mod hmac;
pub(crate) mod random;
pub mod shamir;

pub use aead::{AeadKey, Ciphertext, KEY_LEN};
