//! The userpass auth method (Vault's `userpass`): users with a password and
//! token settings, plus an optional TOTP second factor (an extension, see
//! `docs/auth-userpass-totp.md`).
//!
//! Passwords are hashed with Argon2id at OWASP's parameters (19 MiB, t=2,
//! p=1) with a random salt; the PHC string lives in the mount's encrypted
//! view. Hashing runs on the blocking pool (bounded by a semaphore, so a
//! login flood cannot allocate unbounded memory), and an unknown user still
//! costs one verification against a dummy hash, so timing does not reveal
//! which users exist.
//!
//! Storage layout within the view:
//!
//! ```text
//! user/<username>      UserEntry (JSON): PHC hash and token settings
//! totp/<username>      TotpEntry (JSON): TOTP secret, last used step, backup-code MACs
//! config/backup_key    32-byte HMAC key for backup codes (per mount)
//! ```

use std::net::IpAddr;
use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use zeroize::{Zeroize, Zeroizing};

use super::{MethodContext, TokenSettings, upgrade};
use crate::auth::Authorized;
use crate::auth::cidr;
use crate::barrier::view::View;
use crate::barrier::{BarrierError, Unsealed, now_unix};
use crate::crypto::hmac::{HmacKey, ct_eq};
use crate::crypto::random;
use crate::logical::fields::policy_list;
use crate::logical::{Backend, BoxFuture, Field, FieldKind, LogicalError, Operation, PathSpec, Request, Response};
use crate::storage::{Expect, StorageError};

/// Argon2id memory cost in KiB (OWASP: 19 MiB).
const ARGON2_M_COST: u32 = 19 * 1024;
/// Argon2id iterations (OWASP: 2).
const ARGON2_T_COST: u32 = 2;
/// Argon2id parallelism (OWASP: 1).
const ARGON2_P_COST: u32 = 1;
/// Salt length in bytes.
const SALT_LEN: usize = 16;

/// A PHC string at the production parameters whose password was random and
/// discarded: verifying anything against it fails, at the cost of a real
/// verification (used for unknown users).
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$G064NdiCwLfc8yBWJtvfuA$c8Z2TpcdZ9DIDof/US+O6cuqOdjqugnS8CMi5kltYXc";

/// The one message for a wrong password and an unknown user.
const INVALID_CREDENTIALS: &str = "invalid username or password";

/// TOTP parameters: what authenticator apps expect (RFC 6238 defaults).
const TOTP_DIGITS: u8 = 6;
const TOTP_STEP: u64 = 30;
/// Steps of clock skew accepted either side of the current one.
const TOTP_SKEW: u64 = 1;
/// TOTP secret length (RFC 4226 recommends 160 bits).
const TOTP_SECRET_LEN: usize = 20;
/// The `issuer` shown by authenticator apps.
const TOTP_ISSUER: &str = "vault";

/// Number of backup codes handed out at enrollment.
const BACKUP_CODES: usize = 10;
/// Characters per backup code (5 bits each: 50 bits of entropy).
const BACKUP_CODE_LEN: usize = 10;
/// Backup-code alphabet (RFC 4648 base32, lowercase: no 0/1/8/9 to confuse).
const BACKUP_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// HMAC domain label for backup codes.
const BACKUP_LABEL: &[u8] = b"userpass-backup-code";
/// Storage key of the per-mount backup-code HMAC key.
const BACKUP_KEY_PATH: &str = "config/backup_key";

/// The legacy names of token settings a user write accepts (and a read returns).
const LEGACY: &[&str] = &["policies", "ttl", "max_ttl", "period", "bound_cidrs"];

/// A stored user. The hash is wiped from memory on drop and never printed.
#[derive(Clone, Default, Serialize, Deserialize)]
struct UserEntry {
    #[serde(default)]
    password_hash: String,
    /// Token settings (stored inline, under their `token_*` names).
    #[serde(flatten)]
    token: TokenSettings,
}

impl Drop for UserEntry {
    fn drop(&mut self) {
        self.password_hash.zeroize();
    }
}

impl std::fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserEntry")
            .field("password_hash", &"<redacted>")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// A user's TOTP enrollment. The secret is wiped from memory on drop.
#[derive(Clone, Default, Serialize, Deserialize)]
struct TotpEntry {
    /// The shared secret, base32 (RFC 4648, no padding).
    #[serde(default)]
    secret: String,
    /// The last time step a code was accepted for (0: none yet): codes for
    /// this step or earlier are refused, so a code works once.
    #[serde(default)]
    last_step: u64,
    /// Hex HMAC-SHA-256 of each unused backup code (bound to the user name).
    #[serde(default)]
    backup_codes: Vec<String>,
    /// Enrollment time (Unix seconds).
    #[serde(default)]
    created: i64,
}

impl Drop for TotpEntry {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl std::fmt::Debug for TotpEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpEntry")
            .field("secret", &"<redacted>")
            .field("last_step", &self.last_step)
            .field("backup_codes", &self.backup_codes.len())
            .finish()
    }
}

/// The userpass auth method.
#[derive(Debug)]
pub struct Userpass {
    view: View,
    ctx: MethodContext,
    /// Argon2 parameters for new hashes (verification uses the hash's own).
    params: Params,
    /// Bounds concurrent Argon2 computations (each holds 19 MiB).
    hash_slots: Arc<Semaphore>,
}

impl Userpass {
    /// The method over its storage view.
    pub fn new(view: View, ctx: MethodContext) -> Self {
        // The constants are valid Argon2 parameters; fall back to the crate's
        // defaults (the same OWASP values) rather than panic.
        let params = Params::new(ARGON2_M_COST, ARGON2_T_COST, ARGON2_P_COST, None).unwrap_or_default();
        Self::with_params(view, ctx, params)
    }

    fn with_params(view: View, ctx: MethodContext, params: Params) -> Self {
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 16);
        Self { view, ctx, params, hash_slots: Arc::new(Semaphore::new(slots)) }
    }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn bad(msg: impl Into<String>) -> LogicalError {
    LogicalError::InvalidRequest(msg.into())
}

fn user_key(name: &str) -> String {
    format!("user/{name}")
}

fn totp_key(name: &str) -> String {
    format!("totp/{name}")
}

/// Vault's rule (`\w(([\w-.]+)?\w)?`): letters, digits, `_`, `-`, `.`;
/// first and last character a letter, digit or `_`.
fn valid_username(name: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            bytes.len() <= 256 && word(first) && word(last) && bytes.iter().all(|&b| word(b) || b == b'-' || b == b'.')
        }
        _ => false,
    }
}

/// The lowercased user name from a path segment, or a 400.
fn username(raw: &str) -> Result<String, LogicalError> {
    let name = raw.to_lowercase();
    if valid_username(&name) {
        Ok(name)
    } else {
        Err(bad(format!(
            "invalid username \"{raw}\": use letters, digits, '_', '-' and '.', starting and ending with a letter, digit or '_'"
        )))
    }
}

/// Remove a secret field from the request data into a wiping buffer. A JSON
/// number is accepted (clients send TOTP codes as numbers): with `pad`, it is
/// zero-padded to the TOTP length. An empty string counts as absent.
fn take_secret(
    data: &mut Map<String, Value>,
    field: &str,
    pad: bool,
) -> Result<Option<Zeroizing<String>>, LogicalError> {
    match data.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = Zeroizing::new(s);
            Ok((!s.is_empty()).then_some(s))
        }
        Some(Value::Number(n)) => {
            let s = n.to_string();
            let width = usize::from(TOTP_DIGITS);
            Ok(Some(Zeroizing::new(if pad && s.len() < width { format!("{s:0>width$}") } else { s })))
        }
        Some(_) => Err(bad(format!("invalid value for '{field}': expected a string"))),
    }
}

/// A storage write conflict (an `Expect` that did not hold).
fn is_conflict(e: &BarrierError) -> bool {
    matches!(e, BarrierError::Storage(StorageError::Conflict(_)))
}

fn parse_json<T: for<'de> Deserialize<'de>>(raw: &[u8], what: &str) -> Result<T, LogicalError> {
    serde_json::from_slice(raw).map_err(|e| LogicalError::internal(format!("corrupt {what} record: {e}")))
}

fn to_json<T: Serialize>(v: &T) -> Result<Zeroizing<Vec<u8>>, LogicalError> {
    serde_json::to_vec(v).map(Zeroizing::new).map_err(LogicalError::internal)
}

fn now_secs() -> u64 {
    u64::try_from(now_unix()).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Password hashing (blocking pool)
// ---------------------------------------------------------------------------

impl Userpass {
    /// Hash `password` with Argon2id and a fresh random salt.
    async fn hash(&self, password: Zeroizing<String>) -> Result<Zeroizing<String>, LogicalError> {
        let params = self.params.clone();
        let permit = self.hash_slots.clone().acquire_owned().await.map_err(LogicalError::internal)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut salt = Zeroizing::new([0u8; SALT_LEN]);
            random::fill(salt.as_mut());
            let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
            argon
                .hash_password_with_salt(password.as_bytes(), salt.as_ref())
                .map(|h| Zeroizing::new(h.to_string()))
                .map_err(|e| LogicalError::internal(format!("argon2 hashing failed: {e}")))
        })
        .await
        .map_err(LogicalError::internal)?
    }

    /// Verify `password` against `phc`, or against the dummy hash when there
    /// is no user (same cost; always false).
    async fn verify(&self, password: Zeroizing<String>, phc: Option<Zeroizing<String>>) -> Result<bool, LogicalError> {
        let permit = self.hash_slots.clone().acquire_owned().await.map_err(LogicalError::internal)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let known = phc.is_some();
            let stored: &str = phc.as_ref().map_or(DUMMY_HASH, |s| s.as_str());
            let parsed = match PasswordHash::new(stored) {
                Ok(p) => p,
                Err(e) => return Err(LogicalError::internal(format!("stored password hash is malformed: {e}"))),
            };
            let ok = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
            Ok(ok && known)
        })
        .await
        .map_err(LogicalError::internal)?
    }
}

// ---------------------------------------------------------------------------
// TOTP and backup codes
// ---------------------------------------------------------------------------

fn build_totp(secret: Vec<u8>, account: &str) -> Result<totp_rs::Totp, LogicalError> {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(TOTP_DIGITS)
        .with_step_duration(TOTP_STEP)
        .with_skew(TOTP_SKEW as u16)
        .with_secret(secret)
        .with_account_name(account)
        .with_issuer(Some(TOTP_ISSUER))
        .build()
        .map_err(|e| LogicalError::internal(format!("TOTP setup failed: {e}")))
}

/// The step `code` is valid for at `now` (±[`TOTP_SKEW`] steps), if it is
/// later than `last_step`. Every candidate is compared in constant time.
fn totp_match(totp: &totp_rs::Totp, code: &str, now: u64, last_step: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let code = Zeroizing::new(code);
    let current = now / TOTP_STEP;
    let mut matched = None;
    for step in current.saturating_sub(TOTP_SKEW)..=current.saturating_add(TOTP_SKEW) {
        let expected = Zeroizing::new(totp.generate(step.saturating_mul(TOTP_STEP)).to_string());
        if ct_eq(expected.as_bytes(), code.as_bytes()) && step > last_step {
            matched = Some(step);
        }
    }
    matched
}

/// A fresh backup code, e.g. `k3vq7-ma2xp`.
fn new_backup_code() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; BACKUP_CODE_LEN]);
    random::fill(bytes.as_mut());
    let mut out = Zeroizing::new(String::with_capacity(BACKUP_CODE_LEN + 1));
    for (i, b) in bytes.iter().enumerate() {
        if i == BACKUP_CODE_LEN / 2 {
            out.push('-');
        }
        // 256 is a multiple of 32: masking is unbiased.
        out.push(char::from(BACKUP_ALPHABET[usize::from(b & 31)]));
    }
    out
}

/// Backup code as compared: lowercase, without separators or spaces.
fn normalize_backup_code(code: &str) -> Zeroizing<String> {
    Zeroizing::new(code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect())
}

/// The keyed hash of a backup code, bound to the user it was issued to.
fn backup_mac(key: &HmacKey, username: &str, code: &str) -> [u8; 32] {
    let normalized = normalize_backup_code(code);
    let mut input = Zeroizing::new(Vec::with_capacity(username.len() + 1 + normalized.len()));
    input.extend_from_slice(username.as_bytes());
    input.push(0);
    input.extend_from_slice(normalized.as_bytes());
    key.mac(BACKUP_LABEL, &input)
}

impl Userpass {
    /// The per-mount backup-code key, created on first use.
    async fn backup_key(&self, u: &Unsealed) -> Result<HmacKey, LogicalError> {
        for _ in 0..3 {
            if let Some(raw) = self.view.get(u, BACKUP_KEY_PATH).await? {
                let mut key = Zeroizing::new([0u8; 32]);
                if raw.len() != key.len() {
                    return Err(LogicalError::internal("stored backup-code key has the wrong length"));
                }
                key.copy_from_slice(&raw);
                return Ok(HmacKey::new(key));
            }
            let key = random::key32().map_err(LogicalError::internal)?;
            let mut b = self.view.batch();
            b.put_expect(u, BACKUP_KEY_PATH, key.as_ref(), Expect::Absent);
            match b.commit().await {
                Ok(()) => return Ok(HmacKey::new(key)),
                // Another request created it first: read theirs.
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LogicalError::internal("could not create the backup-code key"))
    }
}

// ---------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------

impl Userpass {
    async fn load_user(&self, u: &Unsealed, name: &str) -> Result<Option<(UserEntry, i64)>, LogicalError> {
        match self.view.get_with_rev(u, &user_key(name)).await? {
            Some((raw, rev)) => Ok(Some((parse_json(&raw, "user")?, rev))),
            None => Ok(None),
        }
    }

    /// Write `entry`: `rev` None means "must not exist yet", Some(r) "must be
    /// unchanged since read at r" (a concurrent writer gets a clear 400).
    async fn store_user(
        &self,
        u: &Unsealed,
        name: &str,
        entry: &UserEntry,
        rev: Option<i64>,
    ) -> Result<(), LogicalError> {
        let json = to_json(entry)?;
        let mut b = self.view.batch();
        b.put_expect(u, &user_key(name), &json, rev.map_or(Expect::Absent, Expect::Rev));
        match b.commit().await {
            Ok(()) => Ok(()),
            Err(e) if is_conflict(&e) => {
                Err(LogicalError::Conflict(format!("user \"{name}\" was modified concurrently; retry the request")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn list_users(&self, u: &Unsealed) -> Result<Response, LogicalError> {
        let keys: Vec<Value> =
            self.view.list(u, "user/").await?.into_iter().filter(|k| !k.ends_with('/')).map(Value::String).collect();
        if keys.is_empty() {
            return Err(LogicalError::NotFound);
        }
        let mut m = Map::new();
        m.insert("keys".into(), Value::Array(keys));
        Ok(Response::data(m))
    }

    async fn read_user(&self, u: &Unsealed, name: &str) -> Result<Response, LogicalError> {
        let (e, _) = self.load_user(u, name).await?.ok_or(LogicalError::NotFound)?;
        let totp = self.view.get(u, &totp_key(name)).await?.is_some();
        let mut m = Map::new();
        e.token.write_to(&mut m, LEGACY);
        m.insert("totp_enabled".into(), totp.into());
        Ok(Response::data(m))
    }

    async fn write_user(
        &self,
        u: &Unsealed,
        name: &str,
        mut data: Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        if data.get("password_hash").is_some_and(|v| !v.is_null()) {
            return Err(bad("'password_hash' is not supported: give 'password'"));
        }
        let password = take_secret(&mut data, "password", false)?;
        let existing = self.load_user(u, name).await?;
        let (mut entry, rev) = match existing {
            Some((e, rev)) => (e, Some(rev)),
            None => (UserEntry::default(), None),
        };
        if rev.is_none() && password.is_none() {
            return Err(bad("missing password"));
        }
        entry.token.update_from(&data, LEGACY)?;
        if let Some(p) = password {
            entry.password_hash = self.hash(p).await?.to_string();
        }
        self.store_user(u, name, &entry, rev).await?;
        Ok(Response::NoContent)
    }

    async fn update_password(
        &self,
        u: &Unsealed,
        name: &str,
        mut data: Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let password = take_secret(&mut data, "password", false)?.ok_or_else(|| bad("missing password"))?;
        if self.load_user(u, name).await?.is_none() {
            return Err(bad("username does not exist"));
        }
        // Hash first (slow), then read-modify-write with a revision check.
        let hash = self.hash(password).await?;
        let (mut entry, rev) = self.load_user(u, name).await?.ok_or_else(|| bad("username does not exist"))?;
        entry.password_hash = hash.to_string();
        self.store_user(u, name, &entry, Some(rev)).await?;
        Ok(Response::NoContent)
    }

    async fn update_policies(
        &self,
        u: &Unsealed,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let policies = upgrade(
            policy_list(data, "token_policies")?,
            policy_list(data, "policies")?,
            "token_policies",
            "policies",
        )?
        .unwrap_or_default();
        super::refuse_root(&policies, "token_policies")?;
        let (mut entry, rev) = self.load_user(u, name).await?.ok_or_else(|| bad("username does not exist"))?;
        entry.token.token_policies = policies;
        self.store_user(u, name, &entry, Some(rev)).await?;
        Ok(Response::NoContent)
    }

    async fn delete_user(&self, name: &str) -> Result<Response, LogicalError> {
        let mut b = self.view.batch();
        b.delete(&user_key(name)).delete(&totp_key(name));
        b.commit().await?;
        Ok(Response::NoContent)
    }
}

// ---------------------------------------------------------------------------
// TOTP enrollment
// ---------------------------------------------------------------------------

impl Userpass {
    async fn enroll_totp(&self, u: &Unsealed, name: &str) -> Result<Response, LogicalError> {
        if self.load_user(u, name).await?.is_none() {
            return Err(bad("username does not exist"));
        }
        let secret = random::key32().map_err(LogicalError::internal)?;
        let totp = build_totp(secret[..TOTP_SECRET_LEN].to_vec(), name)?;
        let url = Zeroizing::new(totp.to_url().map_err(|e| LogicalError::internal(format!("TOTP URL failed: {e}")))?);
        let secret_b32 = Zeroizing::new(totp.secret().to_base32());
        let key = self.backup_key(u).await?;
        let codes: Vec<Zeroizing<String>> = (0..BACKUP_CODES).map(|_| new_backup_code()).collect();
        let entry = TotpEntry {
            secret: secret_b32.to_string(),
            last_step: 0,
            backup_codes: codes.iter().map(|c| hex::encode(backup_mac(&key, name, c))).collect(),
            created: now_unix(),
        };
        self.view.put(u, &totp_key(name), &to_json(&entry)?).await?;
        let mut m = Map::new();
        m.insert("otpauth_url".into(), url.as_str().into());
        m.insert("secret".into(), secret_b32.as_str().into());
        m.insert("backup_codes".into(), codes.iter().map(|c| Value::String(c.to_string())).collect());
        m.insert("issuer".into(), TOTP_ISSUER.into());
        m.insert("account_name".into(), name.into());
        m.insert("algorithm".into(), "SHA1".into());
        m.insert("digits".into(), TOTP_DIGITS.into());
        m.insert("period".into(), TOTP_STEP.into());
        Ok(Response::data(m))
    }

    async fn read_totp(&self, u: &Unsealed, name: &str) -> Result<Response, LogicalError> {
        let raw = self.view.get(u, &totp_key(name)).await?.ok_or(LogicalError::NotFound)?;
        let entry: TotpEntry = parse_json(&raw, "TOTP")?;
        let mut m = Map::new();
        m.insert("enabled".into(), true.into());
        m.insert("backup_codes_remaining".into(), entry.backup_codes.len().into());
        m.insert("created".into(), entry.created.into());
        Ok(Response::data(m))
    }

    async fn delete_totp(&self, name: &str) -> Result<Response, LogicalError> {
        self.view.delete(&totp_key(name)).await?;
        Ok(Response::NoContent)
    }
}

// ---------------------------------------------------------------------------
// Login
// ---------------------------------------------------------------------------

impl Userpass {
    async fn failed(&self, u: &Unsealed, name: &str, addr: Option<IpAddr>, msg: &str) -> LogicalError {
        // A name that cannot exist is not worth a storage record (anyone can
        // tell it is invalid from the rules); its address still pays.
        if valid_username(name) {
            self.ctx.guess_failed(u, name, addr).await;
        } else {
            self.ctx.lockout.address_failure(crate::auth::lockout::Credential::Guessable, addr);
        }
        bad(msg)
    }

    async fn login(&self, u: &Unsealed, raw_name: &str, mut req: Request) -> Result<Response, LogicalError> {
        let name = raw_name.to_lowercase();
        let addr = req.client_addr;
        let password = take_secret(&mut req.data, "password", false)?.ok_or_else(|| bad("missing password"))?;
        let totp_code = take_secret(&mut req.data, "totp", true)?;
        let backup_code = take_secret(&mut req.data, "backup_code", false)?;

        self.ctx.check_guess(u, &name, addr).await?;
        let user = if valid_username(&name) { self.load_user(u, &name).await? } else { None };
        let phc = user.as_ref().map(|(e, _)| Zeroizing::new(e.password_hash.clone()));
        let ok = self.verify(password, phc).await?;
        let user = match user {
            Some((e, _)) if ok => e,
            _ => return Err(self.failed(u, &name, addr, INVALID_CREDENTIALS).await),
        };
        if !cidr::allowed(&user.token.token_bound_cidrs, addr) {
            return Err(LogicalError::PermissionDenied);
        }
        self.second_factor(u, &name, addr, totp_code, backup_code).await?;
        self.ctx.guess_succeeded(u, &name).await;

        let mut metadata = Map::new();
        metadata.insert("username".into(), name.clone().into());
        Ok(Response::Login(Box::new(user.token.login(format!("userpass-{name}"), metadata, name)?)))
    }

    /// When the user is enrolled in TOTP, require and consume a current TOTP
    /// code or a backup code. The enrollment record is rewritten with an
    /// `Expect::Rev` precondition, so of two logins racing with the same code
    /// only one succeeds.
    async fn second_factor(
        &self,
        u: &Unsealed,
        name: &str,
        addr: Option<IpAddr>,
        totp_code: Option<Zeroizing<String>>,
        backup_code: Option<Zeroizing<String>>,
    ) -> Result<(), LogicalError> {
        let key = totp_key(name);
        let Some((raw, rev)) = self.view.get_with_rev(u, &key).await? else { return Ok(()) };
        let mut entry: TotpEntry = parse_json(&raw, "TOTP")?;
        let invalid = match (totp_code, backup_code) {
            (None, None) => return Err(bad("TOTP code required")),
            (Some(_), Some(_)) => return Err(bad("give either 'totp' or 'backup_code', not both")),
            (Some(code), None) => {
                let secret = totp_rs::Secret::try_from_base32(&entry.secret)
                    .map_err(|_| LogicalError::internal("stored TOTP secret is malformed"))?;
                let totp = build_totp(secret.as_bytes().to_vec(), name)?;
                match totp_match(&totp, &code, now_secs(), entry.last_step) {
                    Some(step) => {
                        entry.last_step = step;
                        None
                    }
                    None => Some("invalid TOTP code"),
                }
            }
            (None, Some(code)) => {
                let mac = backup_mac(&self.backup_key(u).await?, name, &code);
                let mut found = None;
                for (i, stored) in entry.backup_codes.iter().enumerate() {
                    let stored = hex::decode(stored).unwrap_or_default();
                    if ct_eq(&stored, &mac) {
                        found = Some(i);
                    }
                }
                match found {
                    Some(i) => {
                        entry.backup_codes.remove(i);
                        None
                    }
                    None => Some("invalid backup code"),
                }
            }
        };
        if let Some(msg) = invalid {
            return Err(self.failed(u, name, addr, msg).await);
        }
        let mut b = self.view.batch();
        b.put_expect(u, &key, &to_json(&entry)?, Expect::Rev(rev));
        match b.commit().await {
            Ok(()) => Ok(()),
            // Someone consumed this enrollment record concurrently (the same
            // code replayed, or the enrollment changed): refuse.
            Err(e) if is_conflict(&e) => Err(self.failed(u, name, addr, "invalid TOTP code").await),
            Err(e) => Err(e.into()),
        }
    }
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

const USERS: &str = "users";
const USER: &str = "users/{name}";
const PASSWORD: &str = "users/{name}/password";
const POLICIES: &str = "users/{name}/policies";
const TOTP: &str = "users/{name}/totp";
const LOGIN: &str = "login/{name}";

/// Userpass paths (Vault's API, plus `users/{name}/totp`).
static PATHS: &[PathSpec] = {
    use Operation::*;
    &[
        PathSpec::new(USERS, &[List]),
        PathSpec::new(USER, &[Read, Update, Delete]).existence_check(),
        PathSpec::new(PASSWORD, &[Update]).fields(&[Field::new("password", FieldKind::String)]),
        PathSpec::new(POLICIES, &[Update]),
        PathSpec::new(TOTP, &[Read, Update, Delete]),
        PathSpec::new(LOGIN, &[Update])
            .unauthenticated()
            .fields(&[Field::new("password", FieldKind::String), Field::new("totp", FieldKind::String)]),
    ]
};

impl Backend for Userpass {
    fn canonical_path(&self, path: &str) -> Option<String> {
        // User names are case-insensitive (lowercased, as Vault).
        crate::logical::fold_segment(path, "users/", 1).or_else(|| crate::logical::fold_segment(path, "login/", 1))
    }

    fn handle<'a>(&'a self, auth: &'a Authorized, req: Request) -> BoxFuture<'a, Result<Response, LogicalError>> {
        Box::pin(async move {
            let u = auth.unsealed();
            let req = crate::logical::paths::ensure_routed(PATHS, req)?;
            let pattern = req.pattern();
            if pattern == USERS {
                return self.list_users(u).await;
            }
            if pattern == LOGIN {
                let n = req.param("name").to_string();
                return self.login(u, &n, req).await;
            }
            let name = username(req.param("name"))?;
            match (pattern, req.op) {
                (USER, Operation::Read) => self.read_user(u, &name).await,
                (USER, Operation::Delete) => self.delete_user(&name).await,
                (USER, _) => self.write_user(u, &name, req.data).await,
                (PASSWORD, _) => self.update_password(u, &name, req.data).await,
                (POLICIES, _) => self.update_policies(u, &name, &req.data).await,
                (TOTP, Operation::Read) => self.read_totp(u, &name).await,
                (TOTP, Operation::Delete) => self.delete_totp(&name).await,
                (TOTP, _) => self.enroll_totp(u, &name).await,
                _ => Err(LogicalError::UnsupportedOperation),
            }
        })
    }

    fn exists<'a>(&'a self, u: &'a Unsealed, path: &'a str) -> BoxFuture<'a, Result<Option<bool>, LogicalError>> {
        Box::pin(async move {
            match crate::logical::paths::find(PATHS, path) {
                Some(r) if r.pattern() == USER => match username(r.get("name")) {
                    Ok(name) => Ok(Some(self.view.get(u, &user_key(&name)).await?.is_some())),
                    Err(_) => Ok(None),
                },
                _ => Ok(None),
            }
        })
    }

    fn paths(&self) -> &'static [PathSpec] {
        PATHS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::lockout::{Lockout, LockoutConfig};
    use crate::barrier::{Barrier, KEYRING_PATH, Keyring};
    use crate::storage::{Storage, WriteBatch};
    use serde_json::json;

    struct Fixture {
        _dir: tempfile::TempDir,
        barrier: Arc<Barrier>,
        up: Userpass,
        auth: Authorized,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&format!("sqlite://{}/v.db", dir.path().display())).await.unwrap();
        let barrier = Barrier::new(storage);
        let keyring = Keyring::generate(now_unix()).unwrap();
        let mut b = WriteBatch::new();
        b.put(KEYRING_PATH, Barrier::wrap_keyring(&keyring));
        barrier.storage().write(b).await.unwrap();
        let u = barrier.install(keyring);
        let barrier = Arc::new(barrier);
        let view = View::new(barrier.clone(), "logical/userpass-test/");
        let ctx = MethodContext {
            mount_path: "userpass/".into(),
            accessor: "auth_userpass_test".into(),
            barrier: barrier.clone(),
            lockout: Arc::new(Lockout::new(LockoutConfig { threshold: 3, ..Default::default() })),
        };
        // Cheap parameters keep the unit tests fast; production uses OWASP's.
        let up = Userpass::with_params(view, ctx, Params::new(64, 1, 1, None).unwrap());
        Fixture { _dir: dir, barrier, up, auth: Authorized::unauthenticated(u) }
    }

    fn req(op: Operation, path: &str, data: Value) -> Request {
        let mut r = Request::new(op, path);
        r.data = data.as_object().cloned().unwrap_or_default();
        r.client_addr = Some("127.0.0.1".parse().unwrap());
        r
    }

    impl Fixture {
        async fn call(&self, op: Operation, path: &str, data: Value) -> Result<Response, LogicalError> {
            self.up.handle(&self.auth, req(op, path, data)).await
        }
        async fn login(&self, user: &str, data: Value) -> Result<Response, LogicalError> {
            self.call(Operation::Update, &format!("login/{user}"), data).await
        }
    }

    fn data(r: Response) -> Map<String, Value> {
        match r {
            Response::Data { data: Some(d), .. } => d,
            other => panic!("expected data, got {other:?}"),
        }
    }

    fn err_msg(r: Result<Response, LogicalError>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(r) => panic!("expected an error, got {r:?}"),
        }
    }

    #[test]
    fn usernames() {
        for ok in ["alice", "a", "bob.smith", "x_1-2", "_svc"] {
            assert!(valid_username(ok), "{ok}");
        }
        for bad in ["", "-a", ".a", "a.", "a-", "a b", "a/b", "a@b", "é"] {
            assert!(!valid_username(bad), "{bad}");
        }
        assert_eq!(username("Alice").unwrap(), "alice");
    }

    #[test]
    fn routes() {
        let route = |p: &str| crate::logical::paths::find(PATHS, p).map(|r| (r.pattern(), r.get("name").to_string()));
        assert_eq!(route("users/"), Some((USERS, String::new())));
        assert_eq!(route("users/a"), Some((USER, "a".into())));
        assert_eq!(route("users/a/totp"), Some((TOTP, "a".into())));
        assert_eq!(route("login/a"), Some((LOGIN, "a".into())));
        assert!(route("users/a/b/c").is_none());
        assert!(route("login/a/b").is_none());
        assert!(route("other").is_none());
        assert!(PATHS.iter().filter(|p| p.unauthenticated).all(|p| p.pattern == LOGIN));
    }

    #[test]
    fn rfc6238_vectors_skew_and_replay() {
        // RFC 6238 appendix B, SHA-1 secret; 6-digit codes are the low digits.
        let totp = build_totp(b"12345678901234567890".to_vec(), "t").unwrap();
        assert_eq!(totp.generate(59).to_string(), "287082");
        assert_eq!(totp.generate(1111111109).to_string(), "081804");
        assert_eq!(totp_match(&totp, "287082", 59, 0), Some(1));
        assert_eq!(totp_match(&totp, "287 082", 59, 0), Some(1), "spaces are ignored");
        assert_eq!(totp_match(&totp, "287082", 59, 1), None, "a used step is refused");
        assert_eq!(totp_match(&totp, "287082", 89, 0), Some(1), "one step of skew behind");
        assert_eq!(totp_match(&totp, "287082", 29, 0), Some(1), "one step of skew ahead");
        assert_eq!(totp_match(&totp, "287082", 119, 0), None, "two steps behind is too old");
        assert_eq!(totp_match(&totp, "287083", 59, 0), None);
        assert_eq!(totp_match(&totp, "", 59, 0), None);
    }

    #[test]
    fn backup_codes_shape_and_binding() {
        let c = new_backup_code();
        assert_eq!(c.len(), BACKUP_CODE_LEN + 1);
        assert_eq!(c.as_bytes()[BACKUP_CODE_LEN / 2], b'-');
        assert_ne!(*c, *new_backup_code());
        let key = HmacKey::new(Zeroizing::new([7u8; 32]));
        assert_eq!(backup_mac(&key, "a", "ABCDE-fghij"), backup_mac(&key, "a", "abcdefghij"));
        assert_ne!(backup_mac(&key, "a", "abcdefghij"), backup_mac(&key, "b", "abcdefghij"));
    }

    #[test]
    fn secrets_accept_numbers_and_pad_totp() {
        let mut d = json!({"totp": 12345, "password": "", "x": [1]}).as_object().cloned().unwrap();
        assert_eq!(take_secret(&mut d, "totp", true).unwrap().unwrap().as_str(), "012345");
        assert!(take_secret(&mut d, "password", false).unwrap().is_none());
        assert!(take_secret(&mut d, "x", false).is_err());
        assert!(d.is_empty(), "secrets are removed from the request data");
    }

    #[tokio::test]
    async fn production_hash_format_and_dummy() {
        let f = fixture().await;
        let up = Userpass::new(f.up.view.clone(), f.up.ctx.clone());
        let h = up.hash(Zeroizing::new("pw".into())).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", h.as_str());
        assert!(up.verify(Zeroizing::new("pw".into()), Some(h.clone())).await.unwrap());
        assert!(!up.verify(Zeroizing::new("px".into()), Some(h)).await.unwrap());
        assert!(!up.verify(Zeroizing::new("pw".into()), None).await.unwrap());
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[tokio::test]
    async fn users_crud_and_login() {
        let f = fixture().await;
        use Operation::*;
        assert!(matches!(f.call(List, "users/", json!({})).await, Err(LogicalError::NotFound)));
        assert_eq!(err_msg(f.call(Update, "users/alice", json!({"token_policies": "a"})).await), "missing password");
        assert_eq!(f.up.exists(f.auth.unsealed(), "users/alice").await.unwrap(), Some(false));
        f.call(
            Create,
            "users/Alice",
            json!({"password": "s3cret", "policies": "p1,P2", "token_ttl": "1h", "token_max_ttl": 7200,
                   "token_bound_cidrs": ["127.0.0.0/8"], "token_num_uses": 3}),
        )
        .await
        .unwrap();
        assert_eq!(f.up.exists(f.auth.unsealed(), "users/alice").await.unwrap(), Some(true));
        let d = data(f.call(Read, "users/ALICE", json!({})).await.unwrap());
        assert_eq!(d["token_policies"], json!(["p1", "p2"]));
        assert_eq!(d["token_ttl"], 3600);
        assert_eq!(d["token_max_ttl"], 7200);
        assert_eq!(d["totp_enabled"], false);
        assert!(!d.contains_key("password_hash") && !d.contains_key("password"));
        let d = data(f.call(List, "users/", json!({})).await.unwrap());
        assert_eq!(d["keys"], json!(["alice"]));

        let Response::Login(l) = f.login("ALICE", json!({"password": "s3cret"})).await.unwrap() else {
            panic!("expected a login")
        };
        assert_eq!(l.policies, vec!["p1", "p2"]);
        assert_eq!((l.ttl, l.max_ttl, l.num_uses), (3600, 7200, 3));
        assert_eq!(l.display_name, "userpass-alice");
        assert_eq!(l.metadata["username"], "alice");
        assert_eq!(l.alias, "alice");
        assert!(l.renewable);
        assert_eq!(l.bound_cidrs, vec!["127.0.0.0/8"]);

        let wrong = err_msg(f.login("alice", json!({"password": "nope"})).await);
        let unknown = err_msg(f.login("nobody", json!({"password": "nope"})).await);
        assert_eq!(wrong, INVALID_CREDENTIALS);
        assert_eq!(unknown, INVALID_CREDENTIALS);
        assert_eq!(err_msg(f.login("alice", json!({})).await), "missing password");

        // Conflicting legacy and new fields; bad values.
        assert!(f.call(Update, "users/alice", json!({"policies": "a", "token_policies": "b"})).await.is_err());
        assert!(f.call(Update, "users/alice", json!({"token_bound_cidrs": "10.0.0.0/99"})).await.is_err());
        assert!(f.call(Update, "users/alice", json!({"token_ttl": "3h"})).await.is_err(), "ttl > max_ttl");
        assert!(f.call(Update, "users/alice", json!({"token_num_uses": -1})).await.is_err());
        assert!(f.call(Update, "users/a@b", json!({"password": "x"})).await.is_err());

        // Password and policy updates.
        f.call(Update, "users/alice/password", json!({"password": "new"})).await.unwrap();
        assert!(f.login("alice", json!({"password": "s3cret"})).await.is_err());
        f.call(Update, "users/alice/policies", json!({"token_policies": ["x"]})).await.unwrap();
        let Response::Login(l) = f.login("alice", json!({"password": "new"})).await.unwrap() else { panic!() };
        assert_eq!(l.policies, vec!["x"]);
        assert_eq!(
            err_msg(f.call(Update, "users/ghost/password", json!({"password": "x"})).await),
            "username does not exist"
        );

        // CIDR binding is checked at login.
        f.call(Update, "users/alice", json!({"token_bound_cidrs": ["10.0.0.0/8"]})).await.unwrap();
        assert!(matches!(f.login("alice", json!({"password": "new"})).await, Err(LogicalError::PermissionDenied)));

        // Delete.
        f.call(Delete, "users/alice", json!({})).await.unwrap();
        assert!(matches!(f.call(Read, "users/alice", json!({})).await, Err(LogicalError::NotFound)));
        assert!(matches!(f.call(Patch, "users/alice", json!({})).await, Err(LogicalError::UnsupportedOperation)));
        assert!(matches!(f.call(Read, "nope", json!({})).await, Err(LogicalError::UnsupportedPath(_))));
    }

    #[tokio::test]
    async fn root_policy_is_refused() {
        let f = fixture().await;
        use Operation::*;
        for body in
            [json!({"password": "pw", "token_policies": ["root"]}), json!({"password": "pw", "policies": "a,Root"})]
        {
            let m = err_msg(f.call(Update, "users/dave", body.clone()).await);
            assert!(m.contains("cannot create root tokens"), "{body}: {m}");
        }
        assert!(matches!(f.call(Read, "users/dave", json!({})).await, Err(LogicalError::NotFound)));
        f.call(Update, "users/dave", json!({"password": "pw", "policies": "a"})).await.unwrap();
        for body in [json!({"token_policies": "root"}), json!({"policies": ["b", "ROOT"]})] {
            let m = err_msg(f.call(Update, "users/dave/policies", body.clone()).await);
            assert!(m.contains("cannot create root tokens"), "{body}: {m}");
        }
        assert_eq!(data(f.call(Read, "users/dave", json!({})).await.unwrap())["token_policies"], json!(["a"]));
        let Response::Login(l) = f.login("dave", json!({"password": "pw"})).await.unwrap() else { panic!() };
        assert_eq!(l.policies, vec!["a"]);
    }

    #[tokio::test]
    async fn lockout_refuses_even_the_right_password() {
        let f = fixture().await;
        f.call(Operation::Update, "users/bob", json!({"password": "right"})).await.unwrap();
        for _ in 0..3 {
            assert!(matches!(f.login("bob", json!({"password": "wrong"})).await, Err(LogicalError::InvalidRequest(_))));
        }
        assert!(matches!(f.login("bob", json!({"password": "right"})).await, Err(LogicalError::RateLimited(_))));
    }

    #[tokio::test]
    async fn totp_and_backup_codes() {
        let f = fixture().await;
        use Operation::*;
        f.call(Update, "users/carol", json!({"password": "pw"})).await.unwrap();
        assert_eq!(err_msg(f.call(Update, "users/ghost/totp", json!({})).await), "username does not exist");
        let d = data(f.call(Update, "users/carol/totp", json!({})).await.unwrap());
        let secret = d["secret"].as_str().unwrap().to_string();
        let url = d["otpauth_url"].as_str().unwrap();
        assert!(url.starts_with("otpauth://totp/vault:carol?"), "{url}");
        assert!(url.contains(&format!("secret={secret}")) && url.contains("issuer=vault"), "{url}");
        let codes: Vec<String> =
            d["backup_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().into()).collect();
        assert_eq!(codes.len(), BACKUP_CODES);
        assert_eq!(data(f.call(Read, "users/carol", json!({})).await.unwrap())["totp_enabled"], true);
        assert_eq!(data(f.call(Read, "users/carol/totp", json!({})).await.unwrap())["backup_codes_remaining"], 10);

        assert_eq!(err_msg(f.login("carol", json!({"password": "pw"})).await), "TOTP code required");
        // A wrong password is reported as such before the second factor.
        assert_eq!(err_msg(f.login("carol", json!({"password": "x", "totp": "000000"})).await), INVALID_CREDENTIALS);
        f.up.ctx.guess_succeeded(f.auth.unsealed(), "carol").await;

        let bytes = totp_rs::Secret::try_from_base32(&secret).unwrap();
        let totp = build_totp(bytes.as_bytes().to_vec(), "carol").unwrap();
        let code = totp.generate(now_secs()).to_string();
        assert!(matches!(f.login("carol", json!({"password": "pw", "totp": code})).await, Ok(Response::Login(_))));
        assert_eq!(err_msg(f.login("carol", json!({"password": "pw", "totp": code})).await), "invalid TOTP code");
        f.up.ctx.guess_succeeded(f.auth.unsealed(), "carol").await;

        // Backup codes: each works once, case and dashes do not matter.
        let upper = codes[0].to_uppercase().replace('-', "");
        assert!(matches!(
            f.login("carol", json!({"password": "pw", "backup_code": upper})).await,
            Ok(Response::Login(_))
        ));
        assert_eq!(
            err_msg(f.login("carol", json!({"password": "pw", "backup_code": codes[0]})).await),
            "invalid backup code"
        );
        assert_eq!(data(f.call(Read, "users/carol/totp", json!({})).await.unwrap())["backup_codes_remaining"], 9);
        assert!(f.login("carol", json!({"password": "pw", "totp": "1", "backup_code": codes[1]})).await.is_err());

        // Nothing secret in storage in the clear.
        let mut raw = Vec::new();
        for key in ["user/carol", "totp/carol", BACKUP_KEY_PATH] {
            let entry = f.barrier.storage().get(&format!("logical/userpass-test/{key}")).await.unwrap().unwrap();
            raw.extend_from_slice(entry.value.as_bytes());
        }
        let has = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
        assert!(!has(secret.as_bytes()) && !has(bytes.as_bytes()) && !has(b"pw\""));
        for c in &codes {
            assert!(!has(c.as_bytes()) && !has(normalize_backup_code(c).as_bytes()));
        }

        // Unenroll: the password alone works again.
        f.call(Delete, "users/carol/totp", json!({})).await.unwrap();
        assert!(matches!(f.login("carol", json!({"password": "pw"})).await, Ok(Response::Login(_))));
    }
}
