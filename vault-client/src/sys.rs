//! The system backend: initialization, seal/unseal, health, barrier key
//! rotation, rekey, root-token generation and the mount table.
//!
//! Most of these endpoints answer raw JSON (Vault's shapes, typed in
//! [`vault_api`]); `sys/mounts` and `sys/key-status` answer Vault's standard
//! [`Envelope`] and are unwrapped here.
//!
//! The rekey and root-generation calls send the client's token like every
//! other call: unless the server was configured to allow these ceremonies
//! without one (`disable_unauthed_*_endpoints = false`), it must be a token
//! with `sudo` and the method's capability on the endpoint (403 otherwise).

use std::collections::BTreeMap;

use reqwest::Method;
use serde::Serialize;
use serde_json::{Map, Value};
use vault_api::{
    Envelope, GenerateRootRequest, GenerateRootStatus, Health, InitRequest, InitResponse, InitStatus, KeyNonceRequest,
    KeyStatus, RekeyComplete, RekeyInitRequest, RekeyStatus, SealStatus, UnsealRequest,
};

use crate::client::Client;
use crate::error::{Error, Result};

/// Handle on the system backend; get one with [`Client::sys`].
#[derive(Debug, Clone, Copy)]
pub struct Sys<'a> {
    client: &'a Client,
}

/// `sys/health`: the body and the status code, which encodes the state
/// (200 active, 429 standby, 501 not initialized, 503 sealed, ...).
#[derive(Debug, Clone)]
pub struct HealthResponse {
    /// HTTP status code of the answer.
    pub status: u16,
    /// The body.
    pub health: Health,
}

/// What one `sys/rekey/update` call achieved.
#[derive(Debug, Clone)]
pub enum RekeyUpdate {
    /// More shares are needed.
    Progress(RekeyStatus),
    /// The rekey finished: the new shares (shown only this once).
    Complete(RekeyComplete),
}

/// Status codes with which `sys/health` reports a state rather than a failure.
const HEALTH_STATE_CODES: &[u16] = &[200, 429, 472, 473, 501, 503];

/// Whether `status` is one `sys/health` uses to report a state.
fn is_health_state(status: u16) -> bool {
    HEALTH_STATE_CODES.contains(&status)
}

/// Body of `POST sys/mounts/<path>`.
#[derive(Serialize)]
struct MountRequest<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<&'a BTreeMap<String, String>>,
}

impl Client {
    /// The system backend (`sys/`).
    pub fn sys(&self) -> Sys<'_> {
        Sys { client: self }
    }
}

/// Unwrap Vault's envelope: its `data` object (empty if null).
fn envelope_data(path: &str, envelope: Envelope) -> Result<Map<String, Value>> {
    envelope.data.ok_or_else(|| Error::Decode { path: path.into(), detail: "the response has no data".into() })
}

impl Sys<'_> {
    /// `PUT sys/init`: initialize with `shares` key shares of which
    /// `threshold` unseal. The answer holds the shares and the initial root
    /// token, shown only this once.
    pub async fn init(&self, shares: u32, threshold: u32) -> Result<InitResponse> {
        let req = InitRequest {
            secret_shares: Some(shares.into()),
            secret_threshold: Some(threshold.into()),
            ..InitRequest::default()
        };
        self.client.put_json("sys/init", &req).await
    }

    /// `GET sys/init`: whether the vault is initialized.
    pub async fn init_status(&self) -> Result<InitStatus> {
        self.client.get_json("sys/init").await
    }

    /// `PUT sys/unseal`: submit one key share (hex or base64).
    pub async fn unseal(&self, key: &str) -> Result<SealStatus> {
        let req = UnsealRequest { key: Some(key.to_string()), ..UnsealRequest::default() };
        let r = self.client.put_json("sys/unseal", &req).await;
        zeroize_unseal(req);
        r
    }

    /// `PUT sys/unseal` with `reset`: discard the shares submitted so far.
    pub async fn unseal_reset(&self) -> Result<SealStatus> {
        let req = UnsealRequest { reset: Some(true), ..UnsealRequest::default() };
        self.client.put_json("sys/unseal", &req).await
    }

    /// `GET sys/seal-status`.
    pub async fn seal_status(&self) -> Result<SealStatus> {
        self.client.get_json("sys/seal-status").await
    }

    /// `PUT sys/seal` (needs a token allowed to seal).
    pub async fn seal(&self) -> Result<()> {
        self.client.send_ok::<()>(Method::PUT, "sys/seal", None).await
    }

    /// `GET sys/health`. The state codes (429, 472, 473, 501, 503) are not
    /// errors: they come back in [`HealthResponse::status`].
    pub async fn health(&self) -> Result<HealthResponse> {
        let r = self.client.send::<()>(Method::GET, "sys/health", None).await?;
        let status = r.status.as_u16();
        if !is_health_state(status) {
            return Err(Error::from_response(status, &r.body));
        }
        Ok(HealthResponse { status, health: r.parse()? })
    }

    /// `PUT sys/rotate`: install a new barrier key term (needs sudo).
    pub async fn rotate(&self) -> Result<()> {
        self.client.send_ok::<()>(Method::PUT, "sys/rotate", None).await
    }

    /// `GET sys/key-status`: the active barrier key term.
    pub async fn key_status(&self) -> Result<KeyStatus> {
        const PATH: &str = "sys/key-status";
        let env: Envelope = self.client.get_json(PATH).await?;
        let data = envelope_data(PATH, env)?;
        serde_json::from_value(Value::Object(data)).map_err(|e| Error::decode(PATH, &e))
    }

    /// `PUT sys/rekey/init`: start a rekey to `shares` shares with
    /// threshold `threshold`.
    pub async fn rekey_init(&self, shares: u32, threshold: u32) -> Result<RekeyStatus> {
        let req = RekeyInitRequest {
            secret_shares: Some(shares.into()),
            secret_threshold: Some(threshold.into()),
            ..RekeyInitRequest::default()
        };
        self.client.put_json("sys/rekey/init", &req).await
    }

    /// `GET sys/rekey/init`: progress of the current rekey.
    pub async fn rekey_status(&self) -> Result<RekeyStatus> {
        self.client.get_json("sys/rekey/init").await
    }

    /// `PUT sys/rekey/update`: submit one *current* key share for the rekey
    /// attempt `nonce`.
    pub async fn rekey_update(&self, key: &str, nonce: &str) -> Result<RekeyUpdate> {
        const PATH: &str = "sys/rekey/update";
        let req = KeyNonceRequest { key: Some(key.to_string()), nonce: Some(nonce.to_string()) };
        let r = self.client.put_json::<_, Value>(PATH, &req).await;
        zeroize_key_nonce(req);
        let v = r?;
        let decoded = if v.get("complete").and_then(Value::as_bool) == Some(true) {
            serde_json::from_value(v).map(RekeyUpdate::Complete)
        } else {
            serde_json::from_value(v).map(RekeyUpdate::Progress)
        };
        decoded.map_err(|e| Error::decode(PATH, &e))
    }

    /// `DELETE sys/rekey/init`: abandon the current rekey.
    pub async fn rekey_cancel(&self) -> Result<()> {
        self.client.send_ok::<()>(Method::DELETE, "sys/rekey/init", None).await
    }

    /// `PUT sys/generate-root/attempt`: start generating a root token.
    /// With `otp` `None` the server generates the one-time password and
    /// returns it (in [`GenerateRootStatus::otp`]) only in this answer.
    pub async fn generate_root_start(&self, otp: Option<&str>) -> Result<GenerateRootStatus> {
        let req = GenerateRootRequest { otp: otp.map(str::to_string), pgp_key: None };
        let r = self.client.put_json("sys/generate-root/attempt", &req).await;
        if let Some(mut o) = req.otp {
            zeroize::Zeroize::zeroize(&mut o);
        }
        r
    }

    /// `PUT sys/generate-root/update`: submit one key share for attempt
    /// `nonce`. When complete, [`GenerateRootStatus::encoded_token`] holds
    /// the token XOR the OTP; decode it with [`vault_api::decode_root_token`].
    pub async fn generate_root_update(&self, key: &str, nonce: &str) -> Result<GenerateRootStatus> {
        let req = KeyNonceRequest { key: Some(key.to_string()), nonce: Some(nonce.to_string()) };
        let r = self.client.put_json("sys/generate-root/update", &req).await;
        zeroize_key_nonce(req);
        r
    }

    /// `DELETE sys/generate-root/attempt`: abandon the attempt.
    pub async fn generate_root_cancel(&self) -> Result<()> {
        self.client.send_ok::<()>(Method::DELETE, "sys/generate-root/attempt", None).await
    }

    /// `GET sys/generate-root/attempt`: progress of the current attempt.
    pub async fn generate_root_status(&self) -> Result<GenerateRootStatus> {
        self.client.get_json("sys/generate-root/attempt").await
    }

    /// `GET sys/mounts`: the mount table, keyed by mount path (with its
    /// trailing `/`); each value is the mount's description object
    /// (`type`, `description`, `accessor`, `config`, `options`, ...).
    pub async fn mounts(&self) -> Result<Map<String, Value>> {
        const PATH: &str = "sys/mounts";
        let env: Envelope = self.client.get_json(PATH).await?;
        envelope_data(PATH, env)
    }

    /// `POST sys/mounts/<path>`: mount a secrets engine of type `kind`
    /// (e.g. `"kv"`) at `path`. Empty `options` are not sent.
    pub async fn mount(
        &self,
        path: &str,
        kind: &str,
        description: Option<&str>,
        options: &BTreeMap<String, String>,
    ) -> Result<()> {
        let body = MountRequest { kind, description, options: (!options.is_empty()).then_some(options) };
        let path = mount_path(path)?;
        self.client.send_ok(Method::POST, &format!("sys/mounts/{path}"), Some(&body)).await
    }

    /// `DELETE sys/mounts/<path>`: unmount, deleting all the engine's data.
    pub async fn unmount(&self, path: &str) -> Result<()> {
        let path = mount_path(path)?;
        self.client.send_ok::<()>(Method::DELETE, &format!("sys/mounts/{path}"), None).await
    }
}

/// A mount path without surrounding slashes; empty is refused.
fn mount_path(path: &str) -> Result<&str> {
    let p = path.trim_matches('/');
    if p.is_empty() { Err(Error::InvalidArgument("empty mount path".into())) } else { Ok(p) }
}

fn zeroize_unseal(mut req: UnsealRequest) {
    if let Some(k) = req.key.as_mut() {
        zeroize::Zeroize::zeroize(k);
    }
}

fn zeroize_key_nonce(mut req: KeyNonceRequest) {
    if let Some(k) = req.key.as_mut() {
        zeroize::Zeroize::zeroize(k);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn health_state_codes_are_not_errors() {
        for s in [200, 429, 472, 473, 501, 503] {
            assert!(is_health_state(s), "{s}");
        }
        for s in [400, 403, 404, 500, 502] {
            assert!(!is_health_state(s), "{s}");
        }
    }

    #[test]
    fn mount_body_shape() {
        let b = MountRequest { kind: "kv", description: None, options: None };
        assert_eq!(serde_json::to_value(&b).unwrap(), serde_json::json!({"type": "kv"}));
        let mut opts = BTreeMap::new();
        opts.insert("version".to_string(), "1".to_string());
        let b = MountRequest { kind: "kv", description: Some("d"), options: (!opts.is_empty()).then_some(&opts) };
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            serde_json::json!({"type": "kv", "description": "d", "options": {"version": "1"}})
        );
        assert_eq!(mount_path("/kv/").unwrap(), "kv");
        assert!(mount_path("//").is_err());
    }
}

/// A snapshot written by [`Sys::snapshot_to_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Bytes written.
    pub bytes: u64,
    /// SHA-256 of the file (hex), as `sha256sum` prints it.
    pub sha256: String,
}

/// The header carrying unseal key shares to the snapshot endpoints (the
/// body is the file); marked sensitive.
const UNSEAL_KEY_HEADER: &str = "X-Vault-Unseal-Key";

impl Sys<'_> {
    /// `GET sys/storage/snapshot` into `dest`, atomically (a temporary file
    /// in the same directory, mode 0600, fsynced, renamed: `dest` appears
    /// whole or not at all). Needs a token with `sudo` on the path.
    pub async fn snapshot_to_file(&self, dest: &std::path::Path) -> Result<SnapshotFile> {
        use sha2::Digest as _;
        use tokio::io::AsyncWriteExt as _;
        const PATH: &str = "sys/storage/snapshot";
        let stall = self.client.stall_timeout();
        let send = self.client.file_request(Method::GET, PATH)?.send();
        let mut resp = tokio::time::timeout(stall, send).await.map_err(|_| Error::StreamStalled(stall))??;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(Error::from_response(status, &body));
        }
        let mut out = crate::stream::AtomicFile::create(dest).await?;
        let mut hash = sha2::Sha256::new();
        let mut bytes = 0u64;
        let io_err = |e| Error::Io { what: format!("cannot write {}", dest.display()), source: e };
        loop {
            let chunk = tokio::time::timeout(stall, resp.chunk()).await.map_err(|_| Error::StreamStalled(stall))?;
            // An answer cut short is the server's abort: never a complete file.
            let Some(chunk) = chunk.map_err(|_| Error::StreamAborted)? else { break };
            hash.update(&chunk);
            bytes += chunk.len() as u64;
            out.write_all(&chunk).await.map_err(io_err)?;
        }
        out.commit().await?;
        let sha256 = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(SnapshotFile { bytes, sha256 })
    }

    /// `POST sys/storage/snapshot-restore` with the file's bytes. `keys`:
    /// a threshold of the CURRENT unseal key shares when the server is
    /// sealed (none when it is uninitialized, or unsealed with a `sudo`
    /// token). The server is sealed afterwards: unseal it with the shares of
    /// the restored vault.
    pub async fn snapshot_restore(&self, snapshot: Vec<u8>, keys: &[String]) -> Result<Value> {
        self.snapshot_post("sys/storage/snapshot-restore", snapshot, keys).await
    }

    /// `POST sys/storage/snapshot-verify`: the restore drill. With `keys`
    /// (the snapshot's unseal key shares) the snapshot is opened with its own
    /// keys; without, with the running server's (a `sudo` token; the
    /// snapshot must be of this vault). A sealed server also takes them as
    /// the proof of the caller, so they must then be a threshold of its
    /// CURRENT shares. The answer counts entries per mount and says `verified`.
    pub async fn snapshot_verify(&self, snapshot: Vec<u8>, keys: &[String]) -> Result<Value> {
        self.snapshot_post("sys/storage/snapshot-verify", snapshot, keys).await
    }

    async fn snapshot_post(&self, path: &str, snapshot: Vec<u8>, keys: &[String]) -> Result<Value> {
        let mut req = self.client.file_request(Method::POST, path)?.body(snapshot);
        for k in keys {
            let mut v = reqwest::header::HeaderValue::from_str(k.trim())
                .map_err(|_| Error::Config("an unseal key share is not valid in an HTTP header".into()))?;
            v.set_sensitive(true);
            req = req.header(UNSEAL_KEY_HEADER, v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?;
        if !(200..300).contains(&status) {
            return Err(Error::from_response(status, &body));
        }
        serde_json::from_slice(&body).map_err(|_| Error::Decode { path: path.into(), detail: "not JSON".into() })
    }
}
