//! Wire types of the vault's HTTP API, shared by `vault-server` and
//! `vault-client` so the two never drift. The shapes are HashiCorp Vault's
//! (see `docs/api.md` for where this project goes beyond Vault).
//!
//! Types that carry secrets (`InitResponse`, rekey results, login replies)
//! implement `Debug` by hand and redact them.

// Tests may unwrap: a failing unwrap is a failing test.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The error body: `{"errors": ["..."]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorResponse {
    /// Human-readable messages (never containing secrets).
    pub errors: Vec<String>,
}

/// `PUT sys/init` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InitRequest {
    /// Number of key shares (`n`).
    #[serde(default)]
    pub secret_shares: Option<i64>,
    /// Shares needed to unseal (`t`).
    #[serde(default)]
    pub secret_threshold: Option<i64>,
    /// PGP keys to encrypt shares with (not supported: must be empty).
    #[serde(default)]
    pub pgp_keys: Option<Vec<String>>,
    /// PGP key for the root token (not supported: must be empty).
    #[serde(default)]
    pub root_token_pgp_key: Option<String>,
    /// Auto-unseal only; must equal `secret_shares` if given.
    #[serde(default)]
    pub stored_shares: Option<i64>,
    /// Auto-unseal only; rejected.
    #[serde(default)]
    pub recovery_shares: Option<i64>,
    /// Auto-unseal only; rejected.
    #[serde(default)]
    pub recovery_threshold: Option<i64>,
}

/// `PUT sys/init` response: the only time the shares and root token are shown.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct InitResponse {
    /// Shares, hex.
    pub keys: Vec<String>,
    /// Shares, standard base64.
    pub keys_base64: Vec<String>,
    /// The initial root token.
    pub root_token: String,
}

impl std::fmt::Debug for InitResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitResponse").field("keys", &self.keys.len()).finish_non_exhaustive()
    }
}

/// `GET sys/init` response.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct InitStatus {
    /// Whether `sys/init` has run.
    pub initialized: bool,
}

/// `PUT sys/unseal` request.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct UnsealRequest {
    /// One key share, hex or base64.
    #[serde(default)]
    pub key: Option<String>,
    /// Discard the shares submitted so far.
    #[serde(default)]
    pub reset: Option<bool>,
    /// Seal migration (not supported).
    #[serde(default)]
    pub migrate: Option<bool>,
}

impl std::fmt::Debug for UnsealRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsealRequest").field("reset", &self.reset).finish_non_exhaustive()
    }
}

/// `GET sys/seal-status` (and every `sys/unseal` reply).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SealStatus {
    /// Seal type, always "shamir".
    #[serde(rename = "type")]
    pub seal_type: String,
    /// Whether the vault was initialized.
    pub initialized: bool,
    /// Whether the vault is sealed.
    pub sealed: bool,
    /// Threshold.
    pub t: u32,
    /// Number of shares.
    pub n: u32,
    /// Shares submitted in the current unseal attempt.
    pub progress: u32,
    /// Current unseal attempt's nonce ("" if none).
    pub nonce: String,
    /// Server version.
    pub version: String,
    /// Build date (RFC 3339).
    pub build_date: String,
    /// Seal migration in progress (always false).
    pub migration: bool,
    /// Recovery seal (always false for Shamir).
    pub recovery_seal: bool,
    /// "sqlite" or "postgresql".
    pub storage_type: String,
    /// Present when unsealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// Present when unsealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
}

/// `GET sys/health` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Initialized?
    pub initialized: bool,
    /// Sealed?
    pub sealed: bool,
    /// Standby (true while sealed, as Vault reports).
    pub standby: bool,
    /// Performance standby (always false).
    pub performance_standby: bool,
    /// "disabled".
    pub replication_performance_mode: String,
    /// "disabled".
    pub replication_dr_mode: String,
    /// Server time, Unix seconds.
    pub server_time_utc: i64,
    /// Version.
    pub version: String,
    /// Always false.
    pub enterprise: bool,
    /// Present when unsealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// Present when unsealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Always 0.
    pub echo_duration_ms: u64,
    /// Always 0.
    pub clock_skew_ms: u64,
    /// Always 0.
    pub replication_primary_canary_age_ms: u64,
}

/// `PUT sys/rekey/init` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RekeyInitRequest {
    /// New share count.
    #[serde(default)]
    pub secret_shares: Option<i64>,
    /// New threshold.
    #[serde(default)]
    pub secret_threshold: Option<i64>,
    /// PGP keys (not supported).
    #[serde(default)]
    pub pgp_keys: Option<Vec<String>>,
    /// Backup (needs PGP; not supported).
    #[serde(default)]
    pub backup: Option<bool>,
    /// Verification of the new shares before switching (not supported).
    #[serde(default)]
    pub require_verification: Option<bool>,
}

/// Status of a rekey (`GET sys/rekey/init`, and incomplete updates).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RekeyStatus {
    /// Attempt nonce ("" if none).
    pub nonce: String,
    /// Whether a rekey is in progress.
    pub started: bool,
    /// New threshold.
    pub t: u32,
    /// New share count.
    pub n: u32,
    /// Current shares submitted.
    pub progress: u32,
    /// Current threshold.
    pub required: u32,
    /// Always null (PGP not supported).
    pub pgp_fingerprints: Option<Vec<String>>,
    /// Always false.
    pub backup: bool,
    /// Always false.
    pub verification_required: bool,
}

/// `PUT sys/rekey/update` or `sys/generate-root/update` request.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct KeyNonceRequest {
    /// One current key share.
    #[serde(default)]
    pub key: Option<String>,
    /// The attempt's nonce.
    #[serde(default)]
    pub nonce: Option<String>,
}

impl std::fmt::Debug for KeyNonceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyNonceRequest").field("nonce", &self.nonce).finish_non_exhaustive()
    }
}

/// A completed rekey: the new shares (shown once).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct RekeyComplete {
    /// The rekey nonce.
    pub nonce: String,
    /// Always true.
    pub complete: bool,
    /// New shares, hex.
    pub keys: Vec<String>,
    /// New shares, base64.
    pub keys_base64: Vec<String>,
    /// Always null.
    pub pgp_fingerprints: Option<Vec<String>>,
    /// Always false.
    pub backup: bool,
    /// Always false.
    pub verification_required: bool,
}

impl std::fmt::Debug for RekeyComplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RekeyComplete").field("keys", &self.keys.len()).finish_non_exhaustive()
    }
}

/// `sys/generate-root/attempt` request.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct GenerateRootRequest {
    /// Client-chosen OTP (base62, `otp_length` characters). Omitted: the server generates one.
    #[serde(default)]
    pub otp: Option<String>,
    /// PGP key (not supported).
    #[serde(default)]
    pub pgp_key: Option<String>,
}

impl std::fmt::Debug for GenerateRootRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GenerateRootRequest(<redacted>)")
    }
}

/// Status of a root-token generation.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GenerateRootStatus {
    /// Attempt nonce.
    pub nonce: String,
    /// Whether an attempt is in progress.
    pub started: bool,
    /// Shares submitted.
    pub progress: u32,
    /// Shares required.
    pub required: u32,
    /// Whether the token was generated.
    pub complete: bool,
    /// base64(token XOR otp), unpadded.
    pub encoded_token: String,
    /// Same as `encoded_token`.
    pub encoded_root_token: String,
    /// Always "".
    pub pgp_fingerprint: String,
    /// The generated OTP, only in the reply that started the attempt.
    pub otp: String,
    /// Length of OTP the server expects.
    pub otp_length: u32,
}

impl std::fmt::Debug for GenerateRootStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateRootStatus")
            .field("started", &self.started)
            .field("progress", &self.progress)
            .field("complete", &self.complete)
            .finish_non_exhaustive()
    }
}

/// `sys/key-status` data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyStatus {
    /// Active keyring term.
    pub term: u32,
    /// When it was installed (RFC 3339).
    pub install_time: String,
    /// Encryptions under it so far (approximate).
    pub encryptions: u64,
}

/// Vault's standard response envelope.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Envelope {
    /// Request identifier.
    pub request_id: String,
    /// Lease ("" if none).
    pub lease_id: String,
    /// Whether the lease is renewable.
    pub renewable: bool,
    /// Lease duration in seconds.
    pub lease_duration: u64,
    /// The data.
    pub data: Option<Map<String, Value>>,
    /// Response wrapping (unused).
    pub wrap_info: Option<Value>,
    /// Warnings.
    pub warnings: Option<Vec<String>>,
    /// Login result.
    pub auth: Option<Value>,
    /// Type of the mount that answered.
    #[serde(default)]
    pub mount_type: String,
}

/// Encode a generated root token for transport: unpadded standard base64 of
/// `token XOR otp` (both ASCII, same length), as Vault >= 1.10 does.
pub fn encode_root_token(token: &str, otp: &str) -> Option<String> {
    use base64_lite::encode_raw_std;
    if token.len() != otp.len() {
        return None;
    }
    let x: Vec<u8> = token.bytes().zip(otp.bytes()).map(|(a, b)| a ^ b).collect();
    Some(encode_raw_std(&x))
}

/// Decode what [`encode_root_token`] produced.
pub fn decode_root_token(encoded: &str, otp: &str) -> Option<String> {
    let x = base64_lite::decode_std_any_padding(encoded)?;
    if x.len() != otp.len() {
        return None;
    }
    String::from_utf8(x.iter().zip(otp.bytes()).map(|(a, b)| a ^ b).collect()).ok()
}

mod base64_lite {
    //! Thin shims over the `base64` crate so callers need not pick engines.
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

    pub(crate) fn encode_raw_std(b: &[u8]) -> String {
        STANDARD_NO_PAD.encode(b)
    }

    pub(crate) fn decode_std_any_padding(s: &str) -> Option<Vec<u8>> {
        STANDARD_NO_PAD.decode(s.trim_end_matches('=')).ok().or_else(|| STANDARD.decode(s).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_token_encoding_round_trips() {
        let token = "hvs.ABCDEFGHIJKLMNOPQRSTUVWX";
        let otp = "0123456789abcdefghijABCDEFGH";
        let enc = encode_root_token(token, otp).unwrap();
        assert!(!enc.ends_with('='));
        assert_eq!(decode_root_token(&enc, otp).unwrap(), token);
        assert!(encode_root_token(token, "short").is_none());
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let r = InitResponse { keys: vec!["aa".into()], keys_base64: vec![], root_token: "hvs.SECRET".into() };
        assert!(!format!("{r:?}").contains("SECRET"));
        let u = UnsealRequest { key: Some("SHARE".into()), reset: None, migrate: None };
        assert!(!format!("{u:?}").contains("SHARE"));
    }
}
