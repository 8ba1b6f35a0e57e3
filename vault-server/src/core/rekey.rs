//! Rekey (`sys/rekey/*`): replace the unseal key and its shares, given a
//! threshold of the current shares. Only the root-key wrapping changes; no
//! data is re-encrypted and the keyring term stays the same.
//!
//! Also who may drive a key ceremony (rekey and root generation): see
//! [`CeremonyGrant`]. By default every step needs a token allowed `sudo` on
//! the endpoint, so nobody who merely reaches the listener can start, cancel
//! or watch a ceremony (OpenBao's `disable_unauthed_*_endpoints`).

use std::net::IpAddr;

use vault_api::{KeyNonceRequest, RekeyComplete, RekeyInitRequest, RekeyStatus};

use super::{Core, CoreError, b64, lock};
use crate::config::UnauthedCeremonies;
use crate::logical::{LogicalError, Operation};
use crate::seal::{self, Added, KeyPart, ShareCollector};
use crate::storage::{Expect, SealConfig, WriteBatch};

/// A rekey in progress.
#[derive(Debug)]
pub struct Rekey {
    new_config: SealConfig,
    collector: ShareCollector,
}

/// The two ceremonies, each with its own switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ceremony {
    Rekey,
    GenerateRoot,
}

/// Every ceremony endpoint. Whatever the method, a token needs `sudo` plus
/// the method's capability (GET read, PUT/POST update, DELETE delete).
const CEREMONY_PATHS: &[(&str, Ceremony)] = &[
    ("sys/rekey/init", Ceremony::Rekey),
    ("sys/rekey/update", Ceremony::Rekey),
    ("sys/generate-root/attempt", Ceremony::GenerateRoot),
    ("sys/generate-root/update", Ceremony::GenerateRoot),
];

/// Proof that the caller may perform one step of a key ceremony: made only
/// by [`Core::authorize_ceremony`], after the policy check (or because the
/// operator opened that ceremony to callers without a token). Each ceremony
/// method takes one and checks it was made for its own endpoint and method.
#[derive(Debug)]
pub struct CeremonyGrant {
    path: &'static str,
    op: Operation,
    by_token: bool,
}

impl CeremonyGrant {
    pub(super) fn expect(&self, path: &str, op: Operation) -> Result<(), CoreError> {
        if self.path == path && self.op == op {
            return Ok(());
        }
        // A programming error (a grant passed to the wrong step), never the caller's.
        Err(CoreError::Internal(format!("ceremony grant for {:?} {} used for {op:?} {path}", self.op, self.path)))
    }

    /// How the caller was let in, for the log.
    pub(super) fn how(&self) -> &'static str {
        if self.by_token { "token with sudo" } else { "unauthenticated (allowed by configuration)" }
    }
}

impl Core {
    /// Open (or close) ceremonies to callers without a token (in OpenBao a
    /// property of the listener; this server has one). Set at start-up,
    /// before serving; unset, nothing is open.
    pub fn configure_unauthed_ceremonies(&self, settings: UnauthedCeremonies) {
        *self.unauthed_ceremonies.write().unwrap_or_else(|p| p.into_inner()) = settings;
        if settings.rekey {
            tracing::warn!(
                "disable_unauthed_rekey_endpoints = false: anyone who reaches the listener can start, cancel or \
                 follow a rekey without a token; turn it back on once the rekey is done"
            );
        }
        if settings.generate_root {
            tracing::warn!(
                "disable_unauthed_generate_root_endpoints = false: anyone who reaches the listener can start, \
                 cancel or follow a root token generation without a token; turn it back on once it is done"
            );
        }
    }

    /// Check that the caller may perform `op` on the ceremony endpoint
    /// `path`: without a token if the configuration opened that ceremony,
    /// else with a token whose policies grant `sudo` and `op`'s capability
    /// on `path` (the root token does).
    pub async fn authorize_ceremony(
        &self,
        path: &str,
        op: Operation,
        token: Option<&str>,
        addr: Option<IpAddr>,
    ) -> Result<CeremonyGrant, CoreError> {
        let &(path, ceremony) = CEREMONY_PATHS
            .iter()
            .find(|(p, _)| *p == path)
            .ok_or_else(|| CoreError::Internal(format!("{path} is not a key ceremony endpoint")))?;
        let open = *self.unauthed_ceremonies.read().unwrap_or_else(|p| p.into_inner());
        let unauthed = match ceremony {
            Ceremony::Rekey => open.rekey,
            Ceremony::GenerateRoot => open.generate_root,
        };
        if unauthed {
            return Ok(CeremonyGrant { path, op, by_token: false });
        }
        // Same answers as the ceremony itself gives before any token matters:
        // not initialized (400), sealed (503: no token can be checked).
        if self.config_or_refresh().await?.is_none() {
            return Err(CoreError::NotInitialized);
        }
        let active = self.active()?;
        let entry = self.authenticate(token, addr).await?;
        let u = self.unsealed()?;
        let acl = active.policies().acl(&self.barrier, &u, &entry.policies).await?;
        crate::auth::acl::authorize(u.clone(), entry.clone(), &acl, path, op, true)?;
        if entry.num_uses > 0 {
            active.tokens().use_once(&self.barrier, &u, &entry).await?.ok_or(LogicalError::PermissionDenied)?;
        }
        Ok(CeremonyGrant { path, op, by_token: true })
    }

    fn rekey_preconditions(&self) -> Result<SealConfig, CoreError> {
        let config = self.config().ok_or(CoreError::NotInitialized)?;
        self.active()?;
        Ok(config)
    }

    /// `GET sys/rekey/init`.
    pub async fn rekey_status(&self, grant: &CeremonyGrant) -> Result<RekeyStatus, CoreError> {
        grant.expect("sys/rekey/init", Operation::Read)?;
        self.current_rekey_status().await
    }

    async fn current_rekey_status(&self) -> Result<RekeyStatus, CoreError> {
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
    pub async fn rekey_init(&self, grant: &CeremonyGrant, req: RekeyInitRequest) -> Result<RekeyStatus, CoreError> {
        grant.expect("sys/rekey/init", Operation::Update)?;
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
        tracing::info!(
            shares = new_config.secret_shares,
            threshold = new_config.secret_threshold,
            by = grant.how(),
            "rekey started"
        );
        self.current_rekey_status().await
    }

    /// `DELETE sys/rekey/init`.
    pub async fn rekey_cancel(&self, grant: &CeremonyGrant) -> Result<(), CoreError> {
        grant.expect("sys/rekey/init", Operation::Delete)?;
        self.config_or_refresh().await?;
        self.rekey_preconditions()?;
        if lock(&self.rekey).take().is_some() {
            tracing::info!(by = grant.how(), "rekey canceled");
        }
        Ok(())
    }

    /// `PUT sys/rekey/update`: one current share. Returns the status while
    /// incomplete, or the new shares once the threshold is met.
    pub async fn rekey_update(
        &self,
        grant: &CeremonyGrant,
        req: KeyNonceRequest,
    ) -> Result<Result<RekeyStatus, RekeyComplete>, CoreError> {
        grant.expect("sys/rekey/update", Operation::Update)?;
        let key = req
            .key
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| CoreError::InvalidRequest("'key' must be specified in request body as JSON".into()))?;
        self.active()?;
        let config = self.rekey_preconditions()?;
        // Checked against the current seal before it joins the attempt.
        let part = KeyPart::decode(config, key)?;
        let reached = {
            let mut g = lock(&self.rekey);
            let r = g.as_mut().ok_or_else(|| CoreError::InvalidRequest("no barrier rekey in progress".into()))?;
            if req.nonce.as_deref() != Some(r.collector.nonce()) {
                return Err(CoreError::InvalidRequest(format!(
                    "incorrect nonce supplied; nonce for this rekey operation is \"{}\"",
                    r.collector.nonce()
                )));
            }
            match r.collector.add(part)? {
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
            return Ok(Ok(self.current_rekey_status().await?));
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
        tracing::info!(
            shares = new_config.secret_shares,
            threshold = new_config.secret_threshold,
            by = grant.how(),
            "rekey complete"
        );
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
