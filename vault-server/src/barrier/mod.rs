//! The barrier: the single place where stored values are encrypted and
//! decrypted. Everything behind it (storage) sees ciphertext only.
//!
//! Value format (cf. OpenBao's AESGCMBarrier, with the header authenticated):
//!
//! ```text
//! term (u32 BE) | version (0x01) | nonce (12) | AES-256-GCM ciphertext | tag (16)
//! associated data = term | version | storage path
//! ```
//!
//! Binding the path into the associated data means a value copied or moved
//! to another row fails to decrypt. The term selects the keyring key, so old
//! terms keep decrypting after a rotation while new writes use the newest.
//!
//! [`Unsealed`] is the capability that proves the barrier is open: only
//! [`Barrier::unsealed`] makes one, and it carries the keys every operation
//! here needs, so "touch data while sealed" cannot be written.

pub(crate) mod keyring;
pub(crate) mod view;

use std::sync::{Arc, RwLock};

use zeroize::Zeroizing;

pub use keyring::Keyring;

use crate::crypto::aead::AeadError;
use crate::crypto::{AeadKey, Ciphertext, random};
use crate::storage::{Expect, Storage, StorageError, WriteBatch};

/// Storage path of the keyring (sealed under the root key, not a term key).
pub const KEYRING_PATH: &str = "core/keyring";
const VALUE_VERSION: u8 = 1;
const HEADER_LEN: usize = 5;
const KEYRING_HEADER: &[u8] = &[1];

/// Rotate the active term automatically past this many encryptions: random
/// 96-bit nonces are safe for 2^32 messages under one key (NIST SP 800-38D
/// §8.3); we stop well short of that.
pub const AUTO_ROTATE_ENCRYPTIONS: u64 = crate::keys::ROTATE_AT;

/// Errors of the barrier layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BarrierError {
    /// The vault is sealed: no keys in memory.
    #[error("Vault is sealed")]
    Sealed,
    /// A stored value failed authentication (tampered, moved, or wrong key).
    #[error("stored value at {0} failed authentication")]
    Tampered(String),
    /// A stored value names a term no keyring has.
    #[error("stored value at {path} uses unknown key term {term}")]
    UnknownTerm {
        /// Where.
        path: String,
        /// Which term.
        term: u32,
    },
    /// The stored keyring could not be read.
    #[error("the stored keyring is missing or malformed")]
    Keyring,
    /// The OS random generator failed.
    #[error(transparent)]
    Random(#[from] random::RandomError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Proof that the barrier was unsealed when this value was made, and the keys
/// to use. Cheap to clone. Dropping the last copy after a seal wipes the keys.
#[derive(Clone)]
pub struct Unsealed {
    keys: Arc<Keyring>,
}

impl std::fmt::Debug for Unsealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unsealed")
    }
}

impl Unsealed {
    /// The root key: the backup drill opens a snapshot's keyring with it
    /// (`crate::backup::drill`), never stored or sent anywhere.
    pub(crate) fn root_key(&self) -> &zeroize::Zeroizing<[u8; 32]> {
        self.keys.root_key()
    }
}

/// A batch of writes to apply atomically through the barrier.
#[derive(Debug, Default)]
pub struct Batch {
    inner: WriteBatch,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Encrypt and put.
    pub fn put(&mut self, u: &Unsealed, path: &str, value: &[u8]) -> &mut Self {
        self.inner.put(path, encrypt(u, path, value));
        self
    }
    /// Encrypt and put with a precondition.
    pub fn put_expect(&mut self, u: &Unsealed, path: &str, value: &[u8], e: Expect) -> &mut Self {
        self.inner.put_expect(path, encrypt(u, path, value), e);
        self
    }
    /// Delete.
    pub fn delete(&mut self, path: &str) -> &mut Self {
        self.inner.delete(path);
        self
    }
    /// Delete with a precondition.
    pub fn delete_expect(&mut self, path: &str, e: Expect) -> &mut Self {
        self.inner.delete_expect(path, e);
        self
    }
    /// The underlying storage batch, for adding non-barrier records (the seal).
    pub(crate) fn raw(&mut self) -> &mut WriteBatch {
        &mut self.inner
    }
}

/// Seal `plaintext` for `path` under the active term.
fn encrypt(u: &Unsealed, path: &str, plaintext: &[u8]) -> Ciphertext {
    let term = u.keys.active_term();
    let key = u.keys.active();
    key.count_encryptions(1);
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&term.to_be_bytes());
    header[4] = VALUE_VERSION;
    key.material().aead().seal(&header, path.as_bytes(), plaintext)
}

/// The term a stored value claims, after checking the header's shape.
fn header_term(path: &str, bytes: &[u8]) -> Result<u32, BarrierError> {
    if bytes.len() < HEADER_LEN || bytes[4] != VALUE_VERSION {
        return Err(BarrierError::Tampered(path.to_string()));
    }
    let mut t = [0u8; 4];
    t.copy_from_slice(&bytes[..4]);
    Ok(u32::from_be_bytes(t))
}

/// The barrier over a storage.
pub struct Barrier {
    storage: Storage,
    slot: RwLock<Option<Arc<Keyring>>>,
    /// How many times the barrier was sealed: long waits (KV watch) and
    /// background jobs end when it moves (a counter, so that a seal quickly
    /// followed by an unseal is still seen).
    seals: tokio::sync::watch::Sender<u64>,
    #[cfg(test)]
    pub(crate) pauses: crate::testing::Pauses,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Barrier(sealed={})", self.is_sealed())
    }
}

impl Barrier {
    /// A sealed barrier over `storage`.
    pub fn new(storage: Storage) -> Self {
        Self {
            storage,
            slot: RwLock::new(None),
            seals: tokio::sync::watch::Sender::new(0),
            #[cfg(test)]
            pauses: Default::default(),
        }
    }

    /// The storage underneath (for records outside the barrier: the seal's).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The capability to use the keys, or `Sealed`.
    pub fn unsealed(&self) -> Result<Unsealed, BarrierError> {
        let slot = self.slot.read().map_err(|_| BarrierError::Sealed)?;
        slot.as_ref().map(|k| Unsealed { keys: k.clone() }).ok_or(BarrierError::Sealed)
    }

    /// Follows seals: the value changes every time the barrier is sealed.
    /// Take it while unsealed; any change afterwards means "your keys are stale".
    pub fn seal_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.seals.subscribe()
    }

    /// True when no keyring is loaded.
    pub fn is_sealed(&self) -> bool {
        self.slot.read().map(|s| s.is_none()).unwrap_or(true)
    }

    /// Open the barrier with a keyring recovered by the seal.
    pub(crate) fn install(&self, keyring: Keyring) -> Unsealed {
        let keys = Arc::new(keyring);
        if let Ok(mut slot) = self.slot.write() {
            *slot = Some(keys.clone());
        }
        Unsealed { keys }
    }

    /// Replace the keyring after a rotation or reload, which read storage
    /// across `await`s: refused if the barrier was sealed since `seals_seen`
    /// was taken (keys must never come back after a seal), and a keyring
    /// older than the installed one (a lower active term) is not installed.
    fn install_newer(&self, seals_seen: u64, keyring: Keyring) -> Result<Unsealed, BarrierError> {
        let mut slot = self.slot.write().map_err(|_| BarrierError::Sealed)?;
        // The seal counter moves under this same lock (see `seal`).
        if slot.is_none() || *self.seals.borrow() != seals_seen {
            return Err(BarrierError::Sealed);
        }
        if let Some(current) = slot.as_ref() {
            if current.active_term() > keyring.active_term() {
                return Ok(Unsealed { keys: current.clone() });
            }
            // Encryptions counted on the copy being replaced and not yet
            // flushed move to the new one, so the usage bound never undercounts.
            keyring.take_unflushed_from(current);
        }
        let keys = Arc::new(keyring);
        *slot = Some(keys.clone());
        Ok(Unsealed { keys })
    }

    /// Close the barrier: drop our reference to the keys. Requests in flight
    /// hold theirs until they finish; the keys are wiped when the last drops.
    pub(crate) fn seal(&self) {
        let old = {
            let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
            // Moved under the slot lock, so `install_newer` sees both or neither.
            self.seals.send_modify(|n| *n = n.wrapping_add(1));
            slot.take()
        };
        drop(old);
    }

    /// Read and decrypt `path`.
    pub async fn get(&self, u: &Unsealed, path: &str) -> Result<Option<Zeroizing<Vec<u8>>>, BarrierError> {
        Ok(self.get_with_rev(u, path).await?.map(|(v, _)| v))
    }

    /// Read and decrypt `path`, with its storage revision (for `Expect::Rev`).
    pub async fn get_with_rev(
        &self,
        u: &Unsealed,
        path: &str,
    ) -> Result<Option<(Zeroizing<Vec<u8>>, i64)>, BarrierError> {
        let Some(entry) = self.storage.get(path).await? else { return Ok(None) };
        let plain = self.decrypt(u, path, entry.value.as_bytes()).await?;
        Ok(Some((plain, entry.rev)))
    }

    /// Whether the storage read cache knows `path` (see [`Storage::is_cached`]).
    pub(crate) fn is_cached(&self, path: &str) -> bool {
        self.storage.is_cached(path)
    }

    /// Whether the storage read cache is in use (see [`Storage::is_caching`]).
    pub(crate) fn is_caching(&self) -> bool {
        self.storage.is_caching()
    }

    /// Read and decrypt `path` from the database itself (not the read
    /// cache): see [`Storage::get_fresh`].
    pub async fn get_fresh(&self, u: &Unsealed, path: &str) -> Result<Option<Zeroizing<Vec<u8>>>, BarrierError> {
        let Some(entry) = self.storage.get_fresh(path).await? else { return Ok(None) };
        Ok(Some(self.decrypt(u, path, entry.value.as_bytes()).await?))
    }

    /// Decrypt a value read from `path`.
    pub async fn decrypt(&self, u: &Unsealed, path: &str, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, BarrierError> {
        let term = header_term(path, bytes)?;
        let opened = match u.keys.term(term) {
            Some(k) => k.material().aead().open(HEADER_LEN, path.as_bytes(), bytes),
            None => {
                // Another server may have rotated: reload the keyring once.
                let fresh = self.reload(u).await?;
                let k =
                    fresh.keys.term(term).ok_or_else(|| BarrierError::UnknownTerm { path: path.to_string(), term })?;
                k.material().aead().open(HEADER_LEN, path.as_bytes(), bytes)
            }
        };
        opened.map_err(|_: AeadError| BarrierError::Tampered(path.to_string()))
    }

    /// Encrypt and write one value.
    pub async fn put(&self, u: &Unsealed, path: &str, value: &[u8]) -> Result<(), BarrierError> {
        let mut b = Batch::new();
        b.put(u, path, value);
        self.write(b).await
    }

    /// Delete one value.
    pub async fn delete(&self, path: &str) -> Result<(), BarrierError> {
        let mut b = Batch::new();
        b.delete(path);
        self.write(b).await
    }

    /// LIST the immediate children of `prefix` (paths are not secret).
    pub async fn list(&self, _u: &Unsealed, prefix: &str) -> Result<Vec<String>, BarrierError> {
        Ok(self.storage.list(prefix).await?)
    }

    /// Apply a batch atomically.
    pub async fn write(&self, batch: Batch) -> Result<(), BarrierError> {
        Ok(self.storage.write(batch.inner).await?)
    }

    /// Seal a keyring under its root key, for storage at [`KEYRING_PATH`].
    pub(crate) fn wrap_keyring(keyring: &Keyring) -> Ciphertext {
        let root = AeadKey::new(keyring.root_key());
        root.seal(KEYRING_HEADER, KEYRING_PATH.as_bytes(), &keyring.encode())
    }

    /// Read the stored keyring and open it with `root`.
    pub(crate) async fn load_keyring(&self, root: Zeroizing<[u8; 32]>) -> Result<(Keyring, i64), BarrierError> {
        let entry = self.storage.get(KEYRING_PATH).await?.ok_or(BarrierError::Keyring)?;
        let plain = AeadKey::new(&root)
            .open(KEYRING_HEADER.len(), KEYRING_PATH.as_bytes(), entry.value.as_bytes())
            .map_err(|_| BarrierError::Keyring)?;
        if entry.value.as_bytes().first() != KEYRING_HEADER.first() {
            return Err(BarrierError::Keyring);
        }
        let keyring = Keyring::decode(root, &plain).map_err(|_| BarrierError::Keyring)?;
        Ok((keyring, entry.rev))
    }

    /// Re-read the keyring (another server rotated) and install it.
    pub(crate) async fn reload(&self, u: &Unsealed) -> Result<Unsealed, BarrierError> {
        let seals_seen = *self.seals.borrow();
        let (keyring, _) = self.load_keyring(u.keys.root_key().clone()).await?;
        self.install_newer(seals_seen, keyring)
    }

    /// Add a new term and make it active; old terms keep decrypting.
    /// Safe against a concurrent rotation on another server (optimistic write).
    pub async fn rotate(&self, u: &Unsealed) -> Result<u32, BarrierError> {
        loop {
            let seals_seen = *self.seals.borrow();
            let (mut current, rev) = self.load_keyring(u.keys.root_key().clone()).await?;
            let added = current.absorb_usage(&u.keys);
            let next = current.rotated(random::key32()?, now_unix()).map_err(|_| BarrierError::Keyring)?;
            let mut batch = WriteBatch::new();
            batch.put_expect(KEYRING_PATH, Self::wrap_keyring(&next), Expect::Rev(rev));
            match self.storage.write(batch).await {
                Ok(()) => {
                    u.keys.mark_flushed(&added);
                    let term = next.active_term();
                    #[cfg(test)]
                    self.pauses.at("rotate:before-install").await;
                    // Sealed meanwhile: the rotation is stored and the next
                    // unseal loads it; the keys stay out of memory.
                    self.install_newer(seals_seen, next)?;
                    return Ok(term);
                }
                Err(StorageError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Add this process's encryption counts to the stored keyring, so the
    /// usage bound holds across restarts and servers.
    pub async fn flush_usage(&self, u: &Unsealed) -> Result<(), BarrierError> {
        for _ in 0..8 {
            let (mut current, rev) = self.load_keyring(u.keys.root_key().clone()).await?;
            let added = current.absorb_usage(&u.keys);
            if added.is_empty() {
                return Ok(());
            }
            let mut batch = WriteBatch::new();
            batch.put_expect(KEYRING_PATH, Self::wrap_keyring(&current), Expect::Rev(rev));
            match self.storage.write(batch).await {
                Ok(()) => {
                    u.keys.mark_flushed(&added);
                    return Ok(());
                }
                Err(StorageError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Status of the active term: (term, install time, encryptions).
    pub fn key_status(&self, u: &Unsealed) -> (u32, i64, u64) {
        let k = u.keys.active();
        (u.keys.active_term(), k.created_unix(), k.encryptions())
    }

    /// Auto-rotation check, run periodically: rotate once the active term
    /// nears the nonce-safety bound. Asked of the stored keyring, which holds
    /// every server's flushed counts (and a rotation another server made).
    pub async fn maintain(&self, u: &Unsealed) -> Result<Option<u32>, BarrierError> {
        self.flush_usage(u).await?;
        let (stored, _) = self.load_keyring(u.keys.root_key().clone()).await?;
        if stored.needs_rotation(AUTO_ROTATE_ENCRYPTIONS) {
            return self.rotate(u).await.map(Some);
        }
        Ok(None)
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open_barrier() -> (tempfile::TempDir, Barrier, Unsealed) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/v.db", dir.path().display());
        let storage = Storage::open(&url).await.unwrap();
        let barrier = Barrier::new(storage);
        let keyring = Keyring::generate(now_unix()).unwrap();
        let mut b = WriteBatch::new();
        b.put(KEYRING_PATH, Barrier::wrap_keyring(&keyring));
        barrier.storage().write(b).await.unwrap();
        let u = barrier.install(keyring);
        (dir, barrier, u)
    }

    #[tokio::test]
    async fn round_trip_and_storage_holds_no_plaintext() {
        let (_d, b, u) = open_barrier().await;
        b.put(&u, "logical/x/secret", b"PLAINTEXT-MARKER").await.unwrap();
        assert_eq!(&**b.get(&u, "logical/x/secret").await.unwrap().unwrap(), b"PLAINTEXT-MARKER");
        let raw = b.storage().get("logical/x/secret").await.unwrap().unwrap();
        assert!(!raw.value.as_bytes().windows(16).any(|w| w == b"PLAINTEXT-MARKER"));
    }

    #[tokio::test]
    async fn any_flipped_bit_is_detected() {
        let (_d, b, u) = open_barrier().await;
        b.put(&u, "p", b"value").await.unwrap();
        let raw = b.storage().get("p").await.unwrap().unwrap().value.into_bytes();
        for i in 0..raw.len() * 8 {
            let mut bad = raw.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(b.decrypt(&u, "p", &bad).await.is_err(), "bit {i} not detected");
        }
    }

    #[tokio::test]
    async fn moved_value_is_detected() {
        let (_d, b, u) = open_barrier().await;
        b.put(&u, "a", b"value").await.unwrap();
        let raw = b.storage().get("a").await.unwrap().unwrap().value;
        let mut batch = WriteBatch::new();
        batch.put("b", raw);
        b.storage().write(batch).await.unwrap();
        assert!(matches!(b.get(&u, "b").await, Err(BarrierError::Tampered(_))));
    }

    #[tokio::test]
    async fn rotation_keeps_old_terms_readable() {
        let (_d, b, u) = open_barrier().await;
        b.put(&u, "old", b"1").await.unwrap();
        assert_eq!(b.rotate(&u).await.unwrap(), 2);
        let u2 = b.unsealed().unwrap();
        assert_eq!(b.key_status(&u2).0, 2);
        b.put(&u2, "new", b"2").await.unwrap();
        let raw = b.storage().get("new").await.unwrap().unwrap().value.into_bytes();
        assert_eq!(&raw[..4], &2u32.to_be_bytes());
        assert_eq!(&**b.get(&u2, "old").await.unwrap().unwrap(), b"1");
        // A stale capability (pre-rotation keyring) reloads to read term 2.
        assert_eq!(&**b.get(&u, "new").await.unwrap().unwrap(), b"2");
    }

    #[tokio::test]
    async fn usage_counts_are_persisted() {
        let (_d, b, u) = open_barrier().await;
        for i in 0..5 {
            b.put(&u, &format!("k{i}"), b"v").await.unwrap();
        }
        b.flush_usage(&u).await.unwrap();
        b.flush_usage(&u).await.unwrap(); // idempotent: nothing new to add
        let root = u.keys.root_key().clone();
        let (stored, _) = b.load_keyring(root).await.unwrap();
        assert_eq!(stored.term(1).unwrap().encryptions(), 5);
        // Rotation carries the counts of the old term along.
        b.put(&u, "k5", b"v").await.unwrap();
        b.rotate(&u).await.unwrap();
        let (stored, _) = b.load_keyring(u.keys.root_key().clone()).await.unwrap();
        assert_eq!(stored.term(1).unwrap().encryptions(), 6);
        assert_eq!(stored.active_term(), 2);
    }

    #[tokio::test]
    async fn encryptions_racing_a_rotation_are_still_counted() {
        let (_d, b, u) = open_barrier().await;
        let b = Arc::new(b);
        b.put(&u, "a", b"v").await.unwrap();
        let pause = b.pauses.arm("rotate:before-install");
        let rotating = tokio::spawn({
            let (b, u) = (b.clone(), u.clone());
            async move { b.rotate(&u).await }
        });
        pause.reached().await; // term 2 is stored with term 1's count so far
        for i in 0..3 {
            b.put(&u, &format!("k{i}"), b"v").await.unwrap(); // still term 1
        }
        pause.release();
        assert_eq!(rotating.await.unwrap().unwrap(), 2);
        let u2 = b.unsealed().unwrap();
        b.flush_usage(&u2).await.unwrap();
        let (stored, _) = b.load_keyring(u2.keys.root_key().clone()).await.unwrap();
        assert_eq!(stored.term(1).unwrap().encryptions(), 4);
        // The replaced copy handed its counts over: flushing it adds nothing.
        b.flush_usage(&u).await.unwrap();
        let (stored, _) = b.load_keyring(u2.keys.root_key().clone()).await.unwrap();
        assert_eq!(stored.term(1).unwrap().encryptions(), 4);
    }

    #[tokio::test]
    async fn a_keyring_stored_by_the_first_release_loads() {
        // The fixture's plaintext (see keyring.rs), sealed as `wrap_keyring` does.
        let plain = hex::decode(concat!(
            "01000000030000000300000001000000006553f1000000000000000005",
            "2222222222222222222222222222222222222222222222222222222222222222",
            "00000002000000006553f16400000000b2d05e7b",
            "3333333333333333333333333333333333333333333333333333333333333333",
            "00000003000000006553f1c80000000000000000",
            "4444444444444444444444444444444444444444444444444444444444444444",
        ))
        .unwrap();
        let root = Zeroizing::new([0x11; 32]);
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&format!("sqlite://{}/v.db", dir.path().display())).await.unwrap();
        let b = Barrier::new(storage);
        let mut batch = WriteBatch::new();
        batch.put(KEYRING_PATH, AeadKey::new(&root).seal(KEYRING_HEADER, KEYRING_PATH.as_bytes(), &plain));
        b.storage().write(batch).await.unwrap();
        let (keyring, _) = b.load_keyring(root).await.unwrap();
        assert_eq!(keyring.active_term(), 3);
        assert_eq!(keyring.term(2).unwrap().encryptions(), 3_000_000_123);
        assert_eq!(&keyring.encode()[..], &plain[..]);
        // It works as a barrier keyring: writes use term 3, rotation makes term 4.
        let u = b.install(keyring);
        b.put(&u, "x", b"value").await.unwrap();
        assert_eq!(&b.storage().get("x").await.unwrap().unwrap().value.as_bytes()[..4], &3u32.to_be_bytes());
        assert_eq!(b.rotate(&u).await.unwrap(), 4);
        assert_eq!(&**b.get(&b.unsealed().unwrap(), "x").await.unwrap().unwrap(), b"value");
    }

    #[tokio::test]
    async fn a_rotation_finishing_after_a_seal_leaves_the_barrier_sealed() {
        let (_d, b, u) = open_barrier().await;
        let b = Arc::new(b);
        let pause = b.pauses.arm("rotate:before-install");
        let rotating = tokio::spawn({
            let (b, u) = (b.clone(), u.clone());
            async move { b.rotate(&u).await }
        });
        pause.reached().await; // the new keyring is written, not yet installed
        b.seal();
        pause.release();
        assert!(matches!(rotating.await.unwrap(), Err(BarrierError::Sealed)));
        assert!(b.is_sealed(), "a rotation must not put keys back after a seal");
        // A reload racing a seal likewise.
        let (_d2, b2, u2) = open_barrier().await;
        b2.seal();
        assert!(matches!(b2.reload(&u2).await, Err(BarrierError::Sealed)));
        assert!(b2.is_sealed());
    }

    #[tokio::test]
    async fn an_older_keyring_never_replaces_a_newer_one() {
        let (_d, b, u) = open_barrier().await;
        let old = Keyring::decode(u.keys.root_key().clone(), &u.keys.encode()).unwrap();
        b.rotate(&u).await.unwrap();
        let seen = *b.seals.borrow();
        let kept = b.install_newer(seen, old).unwrap();
        assert_eq!(kept.keys.active_term(), 2);
        assert_eq!(b.key_status(&b.unsealed().unwrap()).0, 2);
    }

    #[tokio::test]
    async fn sealed_has_no_capability() {
        let (_d, b, _u) = open_barrier().await;
        b.seal();
        assert!(matches!(b.unsealed(), Err(BarrierError::Sealed)));
    }
}
