//! Root token generation (`sys/generate-root/*`): a quorum of share holders
//! mints a new root token, so the initial one can be revoked after set-up.
//! The token is returned XOR-encoded with a one-time pad the requester holds
//! (Vault >= 1.10 scheme: unpadded base64 of `token XOR otp`, both ASCII).

use vault_api::{GenerateRootRequest, GenerateRootStatus, KeyNonceRequest, encode_root_token};
use zeroize::Zeroizing;

use super::rekey::CeremonyGrant;
use super::{Core, CoreError, lock};
use crate::auth::token::TOKEN_LEN;
use crate::barrier::{Batch, now_unix};
use crate::crypto::random;
use crate::logical::Operation;
use crate::seal::{self, Added, KeyPart, ShareCollector};

/// A root generation in progress.
#[derive(Debug)]
pub struct GenerateRoot {
    otp: Zeroizing<String>,
    collector: ShareCollector,
}

impl Core {
    fn generate_root_preconditions(&self) -> Result<u32, CoreError> {
        let config = self.config().ok_or_else(|| CoreError::InvalidRequest("server is not yet initialized".into()))?;
        self.active()?;
        Ok(config.secret_threshold.into())
    }

    /// `GET sys/generate-root/attempt`.
    pub async fn generate_root_status(&self, grant: &CeremonyGrant) -> Result<GenerateRootStatus, CoreError> {
        grant.expect("sys/generate-root/attempt", Operation::Read)?;
        self.current_generate_root_status().await
    }

    async fn current_generate_root_status(&self) -> Result<GenerateRootStatus, CoreError> {
        self.config_or_refresh().await?;
        let required = self.generate_root_preconditions()?;
        let g = lock(&self.generate_root);
        Ok(match &*g {
            None => GenerateRootStatus { required, otp_length: TOKEN_LEN as u32, ..Default::default() },
            Some(a) => GenerateRootStatus {
                nonce: a.collector.nonce().into(),
                started: true,
                progress: a.collector.progress() as u32,
                required,
                otp_length: TOKEN_LEN as u32,
                ..Default::default()
            },
        })
    }

    /// `PUT sys/generate-root/attempt`.
    pub async fn generate_root_start(
        &self,
        grant: &CeremonyGrant,
        req: GenerateRootRequest,
    ) -> Result<GenerateRootStatus, CoreError> {
        grant.expect("sys/generate-root/attempt", Operation::Update)?;
        self.config_or_refresh().await?;
        self.generate_root_preconditions()?;
        if req.pgp_key.as_ref().is_some_and(|k| !k.is_empty()) {
            return Err(CoreError::InvalidRequest(
                "PGP-encrypted root tokens are not supported by this server; use an OTP".into(),
            ));
        }
        let (otp, generated) = match req.otp.filter(|o| !o.is_empty()) {
            Some(o) if o.len() == TOKEN_LEN && o.chars().all(|c| c.is_ascii_alphanumeric()) => {
                (Zeroizing::new(o), false)
            }
            Some(_) => return Err(CoreError::InvalidRequest("OTP string is wrong length".into())),
            None => (Zeroizing::new(random::base62(TOKEN_LEN)), true),
        };
        {
            let mut g = lock(&self.generate_root);
            if g.is_some() {
                return Err(CoreError::InvalidRequest("root generation already in progress".into()));
            }
            *g = Some(GenerateRoot { otp: otp.clone(), collector: ShareCollector::new() });
        }
        tracing::info!(by = grant.how(), "root token generation started");
        let mut status = self.current_generate_root_status().await?;
        if generated {
            status.otp = otp.to_string();
        }
        Ok(status)
    }

    /// `DELETE sys/generate-root/attempt`.
    pub async fn generate_root_cancel(&self, grant: &CeremonyGrant) -> Result<(), CoreError> {
        grant.expect("sys/generate-root/attempt", Operation::Delete)?;
        self.config_or_refresh().await?;
        self.generate_root_preconditions()?;
        if lock(&self.generate_root).take().is_some() {
            tracing::info!(by = grant.how(), "root token generation canceled");
        }
        Ok(())
    }

    /// `PUT sys/generate-root/update`: one share; mints the token at the threshold.
    pub async fn generate_root_update(
        &self,
        grant: &CeremonyGrant,
        req: KeyNonceRequest,
    ) -> Result<GenerateRootStatus, CoreError> {
        grant.expect("sys/generate-root/update", Operation::Update)?;
        let key = req
            .key
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| CoreError::InvalidRequest("'key' must be specified in request body as JSON".into()))?;
        self.config_or_refresh().await?;
        let required = self.generate_root_preconditions()?;
        let config = self.config().ok_or(CoreError::NotInitialized)?;
        // Checked against the current seal before it joins the attempt.
        let part = KeyPart::decode(config, key)?;
        let (parts, nonce, otp) = {
            let mut g = lock(&self.generate_root);
            let a = g.as_mut().ok_or_else(|| CoreError::InvalidRequest("no root generation in progress".into()))?;
            if req.nonce.as_deref() != Some(a.collector.nonce()) {
                return Err(CoreError::InvalidRequest(format!(
                    "incorrect nonce supplied; nonce for this root generation operation is \"{}\"",
                    a.collector.nonce()
                )));
            }
            match a.collector.add(part)? {
                Added::Duplicate => {
                    return Err(CoreError::InvalidRequest(
                        "given key has already been provided during this generation operation".into(),
                    ));
                }
                Added::Progress(n) if n < required as usize => {
                    return Ok(GenerateRootStatus {
                        nonce: a.collector.nonce().into(),
                        started: true,
                        progress: n as u32,
                        required,
                        ..Default::default()
                    });
                }
                Added::Progress(_) => (a.collector.take(), a.collector.nonce().to_string(), a.otp.clone()),
            }
        };
        let unseal_key = seal::combine(config, &parts)?;
        drop(parts);
        self.unwrap_root_key(&unseal_key).await.map_err(|e| match e {
            CoreError::Seal(_) => CoreError::InvalidRequest(
                "root generation aborted: the key shares do not reconstruct the unseal key".into(),
            ),
            other => other,
        })?;
        let active = self.active()?;
        let mut batch = Batch::new();
        let token = active.tokens.create_root(&self.unsealed()?, &mut batch, now_unix());
        self.barrier.write(batch).await?;
        *lock(&self.generate_root) = None;
        let encoded =
            encode_root_token(&token, &otp).ok_or_else(|| CoreError::Internal("OTP length mismatch".into()))?;
        tracing::info!(by = grant.how(), "new root token generated by share quorum");
        Ok(GenerateRootStatus {
            nonce,
            started: true,
            progress: required,
            required,
            complete: true,
            encoded_token: encoded.clone(),
            encoded_root_token: encoded,
            ..Default::default()
        })
    }
}
