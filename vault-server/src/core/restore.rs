//! Restoring a storage snapshot (`crate::backup`): who may, and the switch
//! itself, under the transition lock so that nothing unseals, initializes
//! or rekeys between the check and the replacement.
//!
//! Who may replace the whole vault depends on its state:
//! - uninitialized: anyone who could call `sys/init` (there is nothing to lose);
//! - sealed: only a threshold of the CURRENT unseal key shares (else anyone
//!   who reaches the listener could overwrite a sealed vault);
//! - unsealed: a token allowed `sudo` (and `update`) on the endpoint.
//!
//! Afterwards the server is sealed, holding no key of either vault: it is
//! unsealed with the restored vault's shares.

use std::net::IpAddr;

use zeroize::Zeroizing;

use super::{Core, CoreError};
use crate::logical::{LogicalError, Operation};
use crate::seal::{self, Added, KeyPart, SealError, ShareCollector};
use crate::storage::{OTHER_SERVERS, Row, SealConfig, StorageError};

/// What the caller offers as the right to restore (or to read a snapshot).
#[derive(Clone, Copy)]
pub struct Proof<'a> {
    /// `X-Vault-Token`, if sent.
    pub token: Option<&'a str>,
    /// Unseal key shares (of the vault the proof is for), if sent.
    pub keys: &'a [String],
    /// The caller's address (token CIDR bindings).
    pub addr: Option<IpAddr>,
}

impl std::fmt::Debug for Proof<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proof(token: {}, keys: {})", self.token.is_some(), self.keys.len())
    }
}

/// Combine `keys` into the unseal key of a vault sealed as `config`: at
/// least its threshold of distinct parts (not yet verified against a root key).
pub fn unseal_key(config: SealConfig, keys: &[String]) -> Result<Zeroizing<[u8; 32]>, SealError> {
    let mut collector = ShareCollector::new();
    let mut have = 0;
    for k in keys {
        if let Added::Progress(n) = collector.add(KeyPart::decode(config, k)?)? {
            have = n;
        }
    }
    if have < usize::from(config.secret_threshold) {
        return Err(SealError::KeyLength(format!(
            "{have} distinct unseal key shares given, {} needed",
            config.secret_threshold
        )));
    }
    seal::combine(config, &collector.take())
}

impl Core {
    /// The caller holds a token allowed `sudo` plus `op` on `path` (the
    /// snapshot endpoints are raw, so they check as `sys/seal` does).
    pub async fn authorize_sudo(&self, path: &str, op: Operation, proof: Proof<'_>) -> Result<(), CoreError> {
        let active = self.active()?;
        let entry = self.authenticate(proof.token, proof.addr).await?;
        let u = self.unsealed()?;
        let acl = active.policies.acl(&self.barrier, &u, &entry.policies).await?;
        crate::auth::acl::authorize(u, entry, &acl, path, op, true)?;
        Ok(())
    }

    /// Refuse a caller who cannot restore in the current state before
    /// anything is spent on the request (no gate taken, no body byte read):
    /// while sealed the shares are combined and must open the current root
    /// key, exactly as an unseal checks them.
    /// [`restore_storage`](Self::restore_storage) checks again under the lock.
    pub async fn precheck_restore(&self, path: &str, proof: Proof<'_>) -> Result<(), CoreError> {
        let Some(config) = self.config_or_refresh().await? else { return Ok(()) };
        if self.active().is_ok() {
            return self.authorize_sudo(path, Operation::Update, proof).await;
        }
        self.check_current_shares(config, proof.keys, sealed_refusal).await
    }

    /// Who may run the restore drill on this server, checked before the
    /// body is read:
    /// - unsealed: a token allowed `sudo` (and `update`) on the endpoint,
    ///   with or without shares (the server does the work);
    /// - sealed: a threshold of the CURRENT unseal key shares, proven as for
    ///   a restore (the drill then opens the snapshot with them); a snapshot
    ///   whose shares are not the current ones is verified offline
    ///   (`vault-server backup-verify`) or on an unsealed server;
    /// - uninitialized: anyone (as a restore), with the snapshot's shares.
    pub async fn precheck_verify(&self, path: &str, proof: Proof<'_>) -> Result<(), CoreError> {
        if self.active().is_ok() {
            return self.authorize_sudo(path, Operation::Update, proof).await;
        }
        let Some(config) = self.config_or_refresh().await? else {
            if proof.keys.is_empty() {
                return Err(CoreError::InvalidRequest(
                    "the vault is not initialized: verifying a snapshot on it needs the snapshot's unseal key \
                     shares (X-Vault-Unseal-Key)"
                        .into(),
                ));
            }
            return Ok(());
        };
        self.check_current_shares(config, proof.keys, sealed_verify_refusal).await
    }

    /// `keys` hold a threshold of the current unseal key shares: they
    /// combine into the unseal key that opens the stored root key (the
    /// unseal's own code paths; the key is dropped at once). Wrong shares
    /// are the unseal's 400, which never quotes a share.
    async fn check_current_shares(
        &self,
        config: SealConfig,
        keys: &[String],
        refusal: fn(SealConfig) -> CoreError,
    ) -> Result<(), CoreError> {
        if keys.is_empty() {
            return Err(refusal(config));
        }
        let key = unseal_key(config, keys)?;
        self.unwrap_root_key(&key).await?;
        Ok(())
    }

    /// Replace the whole storage by a snapshot's rows (already checked
    /// against its manifest) and leave the server sealed.
    pub async fn restore_storage(
        &self,
        path: &str,
        seal_config: SealConfig,
        rows: &[Row],
        proof: Proof<'_>,
    ) -> Result<(), CoreError> {
        let _t = self.transition.lock().await;
        match self.refresh_config().await? {
            None => {}
            Some(_) if self.active().is_ok() => self.authorize_sudo(path, Operation::Update, proof).await?,
            Some(config) => {
                if proof.keys.is_empty() {
                    return Err(sealed_refusal(config));
                }
                // Proven by opening the current root key, as an unseal would.
                let key = unseal_key(config, proof.keys)?;
                self.unwrap_root_key(&key).await?;
            }
        }
        // No key of the vault being replaced stays in memory, and no
        // request in flight keeps using the router of the old one.
        if self.active().is_ok() {
            tracing::info!("sealing for a restore");
            // As a seal: the audit devices wait for the requests in flight
            // and sign their chains off while the keys are here.
            let u = self.unsealed().ok();
            self.audit.close(&self.barrier, u.as_ref()).await;
        }
        self.seal_now();
        match self.storage().replace_all(Some(seal_config), rows).await {
            Ok(()) => {}
            Err(StorageError::Conflict(what)) if what == OTHER_SERVERS => {
                return Err(CoreError::InvalidRequest(
                    "other servers are connected to this PostgreSQL database: stop them before restoring (they \
                     hold the keys of the vault being replaced); nothing was changed, this server is sealed"
                        .into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.set_seal_config(Some(seal_config));
        tracing::info!(entries = rows.len(), "storage restored from a snapshot; the vault is sealed");
        Ok(())
    }
}

fn sealed_verify_refusal(config: SealConfig) -> CoreError {
    CoreError::Logical(LogicalError::InvalidRequest(format!(
        "the vault is sealed: verifying a snapshot on it needs {} of its current unseal key shares \
         (X-Vault-Unseal-Key); verify other snapshots offline (vault-server backup-verify) or with a sudo token \
         once unsealed",
        config.secret_threshold
    )))
}

fn sealed_refusal(config: SealConfig) -> CoreError {
    CoreError::Logical(LogicalError::InvalidRequest(format!(
        "the vault is sealed: restoring over it needs {} of its current unseal key shares (X-Vault-Unseal-Key)",
        config.secret_threshold
    )))
}
