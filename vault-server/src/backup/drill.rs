//! The restore drill: what `vaultctl operator backup verify` runs. A
//! snapshot (already checked against its manifest) is restored into a
//! throwaway SQLite store, its keyring is opened (with the unseal key shares
//! given, or with the running server's root key when the snapshot is of
//! this vault), and every entry read back from that store is opened with the
//! barrier's own code. The report counts entries per mount; any entry that
//! does not open fails the drill.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{BackupError, Parsed, format};
use crate::barrier::{Barrier, KEYRING_PATH};
use crate::core::mounts::{AUTH_PATH, MOUNTS_PATH, MountEntry};
use crate::core::{Core, CoreError};
use crate::seal::{self, SealError};
use crate::storage::{Ciphertext, Storage};

/// At most this many failing paths are named in a report.
const NAMED_FAILURES: usize = 20;

/// Entries of one mount (or storage area outside any mount).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MountCount {
    /// Mount type (`kv`, `transit`, `approle`...), or `storage` for areas of the core.
    #[serde(rename = "type")]
    pub kind: String,
    /// Entries that opened.
    pub entries: u64,
    /// Entries that did not.
    pub failed: u64,
}

/// What the drill found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every entry opened and the counts match the manifest.
    pub verified: bool,
    /// SHA-256 of the snapshot file (what `sha256sum` prints), when the
    /// caller had the file; else the manifest's digest of the rows.
    pub sha256: String,
    /// The manifest's SHA-256 of the rows (checked).
    pub rows_sha256: String,
    /// When the snapshot was taken.
    pub created_time: String,
    /// The storage it was taken from.
    pub storage_type: String,
    /// Whose keys opened it: `shares` or `server`.
    pub keys: &'static str,
    /// Rows in the snapshot.
    pub entries: u64,
    /// Rows opened (the root key and keyring rows count as opened when they open).
    pub opened: u64,
    /// Rows that did not open.
    pub failed: u64,
    /// Whether the root key row was opened (with the shares). With the
    /// server's keys it cannot be: it is wrapped by the unseal key, which a
    /// running server does not hold; the keyring it protects is still opened.
    pub root_key_checked: bool,
    /// Counts per mount path (`secret/`, `auth/approle/`) or storage area (`core/`, `sys/`).
    pub mounts: BTreeMap<String, MountCount>,
    /// The first failing paths.
    pub failures: Vec<String>,
}

/// Where the drill gets its keys.
#[derive(Clone, Copy)]
pub enum Keys<'a> {
    /// Unseal key shares of the snapshot's vault.
    Shares(&'a [String]),
    /// The running server's root key (the snapshot must be of this vault).
    Server(&'a Core),
}

impl std::fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Keys::Shares(_) => "Keys::Shares(<redacted>)",
            Keys::Server(_) => "Keys::Server",
        })
    }
}

/// Run the drill in a fresh directory under `parent` (the OS temporary
/// directory if `None`); the directory is removed afterwards.
pub async fn run(parsed: &Parsed, keys: Keys<'_>, parent: Option<&std::path::Path>) -> Result<Report, BackupError> {
    // What a restore would refuse fails the drill too, whatever the keys.
    let config = super::restorable(parsed)?;
    let root = root_key(parsed, config, keys)?;
    let by_shares = matches!(keys, Keys::Shares(_));
    let dir = match parent {
        Some(p) => tempfile::Builder::new().prefix("vault-drill-").tempdir_in(p),
        None => tempfile::Builder::new().prefix("vault-drill-").tempdir(),
    }
    .map_err(|e| BackupError::Io(format!("cannot create the drill directory: {e}")))?;
    let url = format!("sqlite://{}/drill.db", dir.path().display());
    let storage = Storage::open_with(&url, 0).await?;
    let r = open_all(parsed, storage.clone(), root, by_shares).await;
    storage.close().await;
    drop(dir);
    r
}

/// The root key that opens the snapshot's keyring: unwrapped with the
/// shares, or the running server's.
fn root_key(
    parsed: &Parsed,
    config: crate::storage::SealConfig,
    keys: Keys<'_>,
) -> Result<zeroize::Zeroizing<[u8; 32]>, BackupError> {
    match keys {
        Keys::Server(core) => Ok(core.unsealed()?.root_key().clone()),
        Keys::Shares(shares) => {
            let key = crate::core::restore::unseal_key(config, shares).map_err(CoreError::from)?;
            let wrapped = parsed
                .rows
                .iter()
                .find(|r| r.path == seal::ROOT_KEY_PATH)
                .ok_or_else(|| BackupError::Invalid("the snapshot has no root key".into()))?;
            seal::unwrap_root(&key, &Ciphertext::from_storage(wrapped.value.clone())).map_err(|e| match e {
                SealError::WrongKey => BackupError::Invalid(
                    "the unseal key shares do not open this snapshot's root key (shares of another vault, or of \
                     before a rekey)"
                        .into(),
                ),
                other => CoreError::from(other).into(),
            })
        }
    }
}

/// Mount data prefixes (`logical/<uuid>/`) to mount paths and types, from
/// the mount table at `table`.
async fn mount_names(
    barrier: &Barrier,
    u: &crate::barrier::Unsealed,
    table: &'static str,
    data: &'static str,
    route: &'static str,
    names: &mut BTreeMap<String, (String, String)>,
) {
    let Ok(Some(raw)) = barrier.get(u, table).await else { return };
    let Ok(entries) = serde_json::from_slice::<Vec<MountEntry>>(&raw) else { return };
    for e in entries {
        names.insert(format!("{data}{}/", e.uuid), (format!("{route}{}", e.path), e.kind));
    }
}

/// Restore into `storage`, open the keyring with `root`, then open every row read back.
async fn open_all(
    parsed: &Parsed,
    storage: Storage,
    root: zeroize::Zeroizing<[u8; 32]>,
    by_shares: bool,
) -> Result<Report, BackupError> {
    storage.replace_all(parsed.header.seal_config, &parsed.rows).await?;
    let barrier = Barrier::new(storage.clone());
    let (keyring, _) = barrier.load_keyring(root).await.map_err(|_| {
        BackupError::Invalid(if by_shares {
            "the snapshot's keyring does not open with its root key: the snapshot is damaged".into()
        } else {
            "the snapshot's keyring does not open with this server's root key: it is of another vault; give its \
             unseal key shares"
                .into()
        })
    })?;
    let u = barrier.install(keyring);
    // Mount data prefixes to mount paths, from the restored mount tables.
    let mut names: BTreeMap<String, (String, String)> = BTreeMap::new();
    mount_names(&barrier, &u, MOUNTS_PATH, "logical/", "", &mut names).await;
    mount_names(&barrier, &u, AUTH_PATH, "auth/", "auth/", &mut names).await;
    let mut report = Report {
        verified: false,
        sha256: parsed.manifest.sha256.clone(),
        rows_sha256: parsed.manifest.sha256.clone(),
        created_time: parsed.header.created_time.clone(),
        storage_type: parsed.header.storage_type.clone(),
        keys: if by_shares { "shares" } else { "server" },
        entries: 0,
        opened: 0,
        failed: 0,
        root_key_checked: by_shares,
        // Every mount is listed, those without any entry too.
        mounts: names
            .values()
            .map(|(name, kind)| (name.clone(), MountCount { kind: kind.clone(), entries: 0, failed: 0 }))
            .collect(),
        failures: Vec::new(),
    };
    // Read back from the drill store: the restore itself is what is proven.
    let mut snap = storage.snapshot().await?;
    while let Some(row) = snap.rows.recv().await {
        let row = row?;
        report.entries += 1;
        // The root key row was opened by the shares (or is this server's),
        // the keyring row by the root key: both proven above.
        let ok = row.path == seal::ROOT_KEY_PATH
            || row.path == KEYRING_PATH
            || barrier.decrypt(&u, &row.path, &row.value).await.is_ok();
        let area = format::area(&row.path);
        let (name, kind) = match names.get(&area) {
            Some(n) => n.clone(),
            None => (area, "storage".to_string()),
        };
        let slot = report.mounts.entry(name).or_insert(MountCount { kind, entries: 0, failed: 0 });
        if ok {
            report.opened += 1;
            slot.entries += 1;
        } else {
            report.failed += 1;
            slot.failed += 1;
            if report.failures.len() < NAMED_FAILURES {
                report.failures.push(row.path.clone());
            }
        }
    }
    barrier.seal();
    report.verified = report.failed == 0 && report.entries == parsed.manifest.entries;
    Ok(report)
}
