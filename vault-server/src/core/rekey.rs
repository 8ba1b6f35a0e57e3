//! Rekey (`sys/rekey/*`): replace the unseal key and its shares, given a
//! threshold of the current shares. Only the root-key wrapping changes; no
//! data is re-encrypted and the keyring term stays the same.

use vault_api::{KeyNonceRequest, RekeyComplete, RekeyInitRequest, RekeyStatus};

use super::{Core, CoreError, b64, lock};
use crate::seal::{self, Added, KeyPart, ShareCollector};
use crate::storage::{Expect, SealConfig, WriteBatch};

/// A rekey in progress.
#[derive(Debug)]
pub struct Rekey {
    new_config: SealConfig,
    collector: ShareCollector,
}

impl Core {
    fn rekey_preconditions(&self) -> Result<SealConfig, CoreError> {
        let config = self.config().ok_or(CoreError::NotInitialized)?;
        self.active()?;
        Ok(config)
    }

    /// `GET sys/rekey/init`.
    pub async fn rekey_status(&self) -> Result<RekeyStatus, CoreError> {
        self.config_or_refresh().await?;
        let config = self.rekey_preconditions()?;
        let g = lock(&self.rekey);
        Ok(match &*g {
            None => RekeyStatus { required: config.secret_threshold.into(), ..Default::default() },
            Some(r) => RekeyStatus {
                nonce: r.collector.nonce().into(),
                started: true,
                t: r.new_config.secret_threshold.into(),
                n: r.new_config.secret_shares.into(),
                progress: r.collector.progress() as u32,
                required: config.secret_threshold.into(),
                pgp_fingerprints: None,
                backup: false,
                verification_required: false,
            },
        })
    }

    /// `PUT sys/rekey/init`.
    pub async fn rekey_init(&self, req: RekeyInitRequest) -> Result<RekeyStatus, CoreError> {
        self.config_or_refresh().await?;
        self.rekey_preconditions()?;
        if req.pgp_keys.as_ref().is_some_and(|k| !k.is_empty()) || req.backup == Some(true) {
            return Err(CoreError::InvalidRequest(
                "PGP-encrypted key shares and backups are not supported by this server".into(),
            ));
        }
        if req.require_verification == Some(true) {
            return Err(CoreError::InvalidRequest("require_verification is not supported by this server".into()));
        }
        let new_config = seal::validate_config(req.secret_shares.unwrap_or(5), req.secret_threshold.unwrap_or(3))
            .map_err(|e| CoreError::InvalidRequest(format!("invalid rekey seal configuration: {e}")))?;
        {
            let mut g = lock(&self.rekey);
            if g.is_some() {
                return Err(CoreError::InvalidRequest("rekey already in progress".into()));
            }
            *g = Some(Rekey { new_config, collector: ShareCollector::new() });
        }
        self.rekey_status().await
    }

    /// `DELETE sys/rekey/init`.
    pub async fn rekey_cancel(&self) -> Result<(), CoreError> {
        self.config_or_refresh().await?;
        self.rekey_preconditions()?;
        *lock(&self.rekey) = None;
        Ok(())
    }

    /// `PUT sys/rekey/update`: one current share. Returns the status while
    /// incomplete, or the new shares once the threshold is met.
    pub async fn rekey_update(&self, req: KeyNonceRequest) -> Result<Result<RekeyStatus, RekeyComplete>, CoreError> {
        let key = req
            .key
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| CoreError::InvalidRequest("'key' must be specified in request body as JSON".into()))?;
        self.active()?;
        let part = KeyPart::decode(key)?;
        let config = self.rekey_preconditions()?;
        let reached = {
            let mut g = lock(&self.rekey);
            let r = g.as_mut().ok_or_else(|| CoreError::InvalidRequest("no barrier rekey in progress".into()))?;
            if req.nonce.as_deref() != Some(r.collector.nonce()) {
                return Err(CoreError::InvalidRequest(format!(
                    "incorrect nonce supplied; nonce for this rekey operation is \"{}\"",
                    r.collector.nonce()
                )));
            }
            match r.collector.add(part) {
                Added::Duplicate => {
                    return Err(CoreError::InvalidRequest(
                        "given key has already been provided during this generation operation".into(),
                    ));
                }
                Added::Progress(n) if n < usize::from(config.secret_threshold) => None,
                Added::Progress(_) => Some((r.collector.take(), r.collector.nonce().to_string(), r.new_config)),
            }
        };
        let Some((parts, nonce, new_config)) = reached else {
            return Ok(Ok(self.rekey_status().await?));
        };
        // Progress resets whatever happens next; the rekey itself stays
        // configured so the caller can retry with the right shares.
        let _t = self.transition.lock().await;
        let unseal_key = seal::combine(config, &parts)?;
        drop(parts);
        let entry = self.storage().get(seal::ROOT_KEY_PATH).await?.ok_or(CoreError::NotInitialized)?;
        let root = seal::unwrap_root(&unseal_key, &entry.value)?;
        let new_unseal = seal::new_unseal_key()?;
        let new_parts = seal::split(new_config, &new_unseal)?;
        let mut batch = WriteBatch::new();
        batch.set_seal_config(new_config);
        batch.put_expect(seal::ROOT_KEY_PATH, seal::wrap_root(&new_unseal, &root), Expect::Rev(entry.rev));
        self.storage().write(batch).await.map_err(|e| match e {
            crate::storage::StorageError::Conflict(_) => {
                CoreError::InvalidRequest("the seal was changed concurrently; start the rekey again".into())
            }
            other => other.into(),
        })?;
        self.set_seal_config(Some(new_config));
        *lock(&self.rekey) = None;
        tracing::info!(shares = new_config.secret_shares, threshold = new_config.secret_threshold, "rekey complete");
        Ok(Err(RekeyComplete {
            nonce,
            complete: true,
            keys: new_parts.iter().map(|p| hex::encode(p.as_bytes())).collect(),
            keys_base64: new_parts.iter().map(|p| b64(p.as_bytes())).collect(),
            pgp_fingerprints: None,
            backup: false,
            verification_required: false,
        }))
    }
}
