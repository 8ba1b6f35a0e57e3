//! The JWT/OIDC auth method (Vault's `jwt`, also mounted as `oidc`) and the
//! Kubernetes auth method (Vault's `kubernetes`): both log a caller in with a
//! signed JSON Web Token, checked against a role's bindings.
//!
//! JWT flavor: signatures are verified with static PEM keys
//! (`jwt_validation_pubkeys`), a JWKS document (`jwks_url`) or the JWKS named
//! by an OIDC discovery document (`oidc_discovery_url`). Remote key sets are
//! cached (an hour), refetched once when a token names an unknown `kid`
//! (at most every [`JWKS_FORCED_REFRESH_INTERVAL`]), fetched with a timeout
//! and a size cap. Only asymmetric algorithms are ever accepted: `none` and
//! the HMAC family are refused whatever the configuration says, and header
//! fields that point at keys (`jku`, `jwk`, `x5u`) are ignored. The
//! interactive OIDC browser flow (`role_type` "oidc") is not served.
//!
//! Kubernetes flavor: service-account tokens are verified locally with the
//! configured `pem_keys`, or else by the cluster's TokenReview API at
//! `kubernetes_host`; the namespace and service-account name (legacy or
//! projected claims) must be bound by the role.
//!
//! There is no per-role lockout: a signature cannot be guessed, and locking a
//! role by name would let anyone lock out every workload of it. Instead each
//! refused token (and each failed call to the issuer or the API server that a
//! login caused) is charged to the client address's budget (see
//! `auth/lockout.rs`), which bounds what bad requests cost without one address
//! affecting another. An unreachable, slow or nonsensical JWKS endpoint or
//! TokenReview API is a 502 with a generic message (the detail is logged).
//! Error messages name the failed check, never a token or claim value. Tokens
//! are never logged.
//!
//! Storage layout within the view:
//!
//! ```text
//! config          JwtConfig or K8sConfig (JSON)
//! role/<name>     JwtRole or K8sRole (JSON)
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use super::{LEGACY_ALL, MethodContext, TokenSettings};
use crate::auth::Authorized;
use crate::auth::cidr;
use crate::auth::token_backend::string_list;
use crate::barrier::view::View;
use crate::barrier::{Unsealed, now_unix};
use crate::logical::{Backend, BoxFuture, LogicalError, Login, Operation, Request, Response, fields};

/// Storage key of the mount's configuration.
const CONFIG_KEY: &str = "config";
/// Storage prefix of roles.
const ROLE_PREFIX: &str = "role/";
/// Longest token accepted (service-account and ID tokens are a few KiB).
const MAX_JWT_LEN: usize = 64 * 1024;
/// Timeout of every outgoing request (JWKS, discovery, TokenReview): a login
/// waits at most this long for a remote before answering 502.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Connecting gets less of it: an address that does not answer is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The one message for a failed TokenReview call (nothing that helps probe
/// the network behind the vault; the detail goes to the log).
const TOKEN_REVIEW_FAILED: &str = "TokenReview request failed";
/// The one message for a failed fetch of the issuer's keys.
const KEY_FETCH_FAILED: &str = "fetching the JWT signing keys failed";
/// Largest response body read from a remote (JWKS, discovery, TokenReview).
const MAX_HTTP_BODY: usize = 1024 * 1024;
/// How long a fetched key set is used before it is fetched again.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Minimum time between refetches caused by unknown key ids, so tokens
/// with random `kid`s cannot turn logins into a flood against the issuer.
const JWKS_FORCED_REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// Vault's defaults for the leeways of JWT roles (seconds; -1 disables).
const DEFAULT_CLOCK_SKEW_LEEWAY: i64 = 60;
const DEFAULT_EXPIRATION_LEEWAY: i64 = 150;
const DEFAULT_NOT_BEFORE_LEEWAY: i64 = 150;
/// Issuer of legacy (secret-based) service-account tokens, and the default.
const K8S_DEFAULT_ISSUER: &str = "kubernetes/serviceaccount";
/// Clock-skew leeway for service-account token times (seconds).
const K8S_LEEWAY: i64 = 60;
/// The only signing algorithms ever accepted.
const ASYMMETRIC_ALGS: &[&str] = &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

/// Which method a mount serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `jwt` / `oidc`: tokens from an identity provider.
    Jwt,
    /// `kubernetes`: service-account tokens.
    Kubernetes,
}

/// The JWT/OIDC or Kubernetes auth method.
#[derive(Debug)]
pub struct Jwt {
    view: View,
    ctx: MethodContext,
    flavor: Flavor,
    /// The remote key set (JWKS), when the configuration names one.
    keys: tokio::sync::Mutex<Option<KeyCache>>,
    /// Total time allowed for one outgoing request.
    http_timeout: Duration,
}

impl Jwt {
    /// The method over its storage view.
    pub fn new(view: View, ctx: MethodContext, flavor: Flavor) -> Self {
        // Pin jsonwebtoken's crypto backend, so that a second backend feature
        // enabled elsewhere in the tree cannot leave it undecided (which
        // would panic on the first verification). Already installed is fine.
        let _ =
            jsonwebtoken::crypto::CryptoProvider::install_default(&jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER);
        Self { view, ctx, flavor, keys: tokio::sync::Mutex::new(None), http_timeout: HTTP_TIMEOUT }
    }
}

// ---------------------------------------------------------------------------
// Stored records
// ---------------------------------------------------------------------------

/// A stored secret string: wiped from memory on drop, never printed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn as_str(&self) -> &str {
        &self.0
    }
}

/// JWT flavor configuration. Secrets are never returned or printed.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct JwtConfig {
    oidc_discovery_url: String,
    oidc_discovery_ca_pem: String,
    oidc_client_id: String,
    oidc_client_secret: Secret,
    jwks_url: String,
    jwks_ca_pem: String,
    jwt_validation_pubkeys: Vec<String>,
    jwt_supported_algs: Vec<String>,
    bound_issuer: String,
    default_role: String,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("oidc_discovery_url", &self.oidc_discovery_url)
            .field("jwks_url", &self.jwks_url)
            .field("jwt_validation_pubkeys", &self.jwt_validation_pubkeys.len())
            .field("bound_issuer", &self.bound_issuer)
            .finish_non_exhaustive()
    }
}

/// Kubernetes flavor configuration. The reviewer token is never returned or
/// printed.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct K8sConfig {
    kubernetes_host: String,
    kubernetes_ca_cert: String,
    token_reviewer_jwt: Secret,
    pem_keys: Vec<String>,
    issuer: String,
    disable_iss_validation: bool,
    disable_local_ca_jwt: bool,
}

impl std::fmt::Debug for K8sConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K8sConfig")
            .field("kubernetes_host", &self.kubernetes_host)
            .field("pem_keys", &self.pem_keys.len())
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// A JWT flavor role.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct JwtRole {
    role_type: String,
    bound_audiences: Vec<String>,
    bound_subject: String,
    /// Claim (name, dotted path or JSON pointer) → a string or list of strings.
    bound_claims: Map<String, Value>,
    bound_claims_type: String,
    claim_mappings: BTreeMap<String, String>,
    user_claim: String,
    user_claim_json_pointer: bool,
    groups_claim: String,
    clock_skew_leeway: i64,
    expiration_leeway: i64,
    not_before_leeway: i64,
    token: TokenSettings,
}

/// A Kubernetes flavor role.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct K8sRole {
    bound_service_account_names: Vec<String>,
    bound_service_account_namespaces: Vec<String>,
    audience: String,
    alias_name_source: String,
    token: TokenSettings,
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn bad(msg: impl Into<String>) -> LogicalError {
    LogicalError::InvalidRequest(msg.into())
}

fn parse_json<T: for<'de> Deserialize<'de>>(raw: &[u8], what: &str) -> Result<T, LogicalError> {
    serde_json::from_slice(raw).map_err(|e| LogicalError::internal(format!("corrupt {what} record: {e}")))
}

fn to_json<T: Serialize>(v: &T) -> Result<Zeroizing<Vec<u8>>, LogicalError> {
    serde_json::to_vec(v).map(Zeroizing::new).map_err(LogicalError::internal)
}

/// Vault's rule for names: letters, digits, `_`, `-`, `.`; first and last
/// character a letter, digit or `_`.
fn valid_name(name: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            bytes.len() <= 256 && word(first) && word(last) && bytes.iter().all(|&b| word(b) || b == b'-' || b == b'.')
        }
        _ => false,
    }
}

fn role_name(raw: &str) -> Result<&str, LogicalError> {
    if valid_name(raw) {
        Ok(raw)
    } else {
        Err(bad(format!(
            "invalid role name \"{raw}\": use letters, digits, '_', '-' and '.', starting and ending with a letter, digit or '_'"
        )))
    }
}

/// A non-empty trimmed string field.
fn nonempty(d: &Map<String, Value>, field: &str) -> Result<Option<String>, LogicalError> {
    Ok(fields::string(d, field)?.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
}

/// A list of strings with empty entries dropped.
fn clean_list(d: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, LogicalError> {
    Ok(string_list(d, field)?.map(|l| l.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()))
}

/// A list of PEM blocks: a JSON list, or one string (no comma splitting, so
/// a bundle is never cut apart).
fn pem_list(d: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, LogicalError> {
    match d.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(if s.trim().is_empty() { Vec::new() } else { vec![s.trim().to_string()] })),
        Some(Value::Array(_)) => clean_list(d, field),
        Some(_) => Err(bad(format!("'{field}' must be a list of PEM strings"))),
    }
}

/// Longest leeway accepted (one day). Vault sets no bound, but a leeway of
/// years silently turns `exp`/`nbf` checks off; -1 or a role without the
/// claim check says that openly.
const MAX_LEEWAY: i64 = 24 * 3600;

/// A leeway in seconds: an integer (-1 disables), or a duration string, at
/// most [`MAX_LEEWAY`].
fn leeway(d: &Map<String, Value>, field: &str) -> Result<Option<i64>, LogicalError> {
    let invalid =
        || bad(format!("invalid value for '{field}': expected seconds or a duration up to 24h, or -1 to disable"));
    let in_range = |v: &i64| (-1..=MAX_LEEWAY).contains(v);
    match d.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().filter(in_range).map(Some).ok_or_else(invalid),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) if s.trim() == "-1" => Ok(Some(-1)),
        Some(Value::String(s)) => {
            fields::parse_duration(s).and_then(|v| i64::try_from(v).ok()).filter(in_range).map(Some).ok_or_else(invalid)
        }
        Some(_) => Err(invalid()),
    }
}

/// The effective value of a leeway setting: 0 means the default, -1 none.
fn effective_leeway(v: i64, default: i64) -> i64 {
    match v {
        0 => default,
        v if v < 0 => 0,
        v => v,
    }
}

/// A claim rendered as a string, for scalars.
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Look a claim up by name: a JSON pointer (`/a/b`), a top-level key, or a
/// dotted path into nested objects (`kubernetes.io.namespace`, where keys
/// may themselves contain dots).
fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if path.starts_with('/') {
        return pointer(claims, path);
    }
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let segments: Vec<&str> = path.split('.').collect();
    if segments.len() > 32 {
        return None;
    }
    dotted(claims, &segments)
}

fn dotted<'a>(obj: &'a Map<String, Value>, segments: &[&str]) -> Option<&'a Value> {
    for i in 1..=segments.len() {
        let key = segments[..i].join(".");
        let Some(v) = obj.get(&key) else { continue };
        if i == segments.len() {
            return Some(v);
        }
        if let Value::Object(inner) = v
            && let Some(found) = dotted(inner, &segments[i..])
        {
            return Some(found);
        }
    }
    None
}

/// RFC 6901 JSON pointer into the claims.
fn pointer<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut tokens = path.split('/').skip(1);
    let first = tokens.next()?.replace("~1", "/").replace("~0", "~");
    let mut cur = claims.get(&first)?;
    for t in tokens {
        let t = t.replace("~1", "/").replace("~0", "~");
        cur = match cur {
            Value::Object(m) => m.get(&t)?,
            Value::Array(a) => a.get(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Simple glob: `*` matches any run of characters.
fn glob_match(pattern: &str, s: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == s;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

// ---------------------------------------------------------------------------
// Keys and signatures
// ---------------------------------------------------------------------------

/// What kind of public key a verification key is (decides the algorithms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::P256, ES256)
                | (KeyKind::P384, ES384)
                | (KeyKind::Ed25519, EdDSA)
        )
    }

    fn probe_alg(self) -> Algorithm {
        match self {
            KeyKind::Rsa => Algorithm::RS256,
            KeyKind::P256 => Algorithm::ES256,
            KeyKind::P384 => Algorithm::ES384,
            KeyKind::Ed25519 => Algorithm::EdDSA,
        }
    }
}

/// A public key able to verify token signatures.
#[derive(Debug, Clone)]
struct VerifyKey {
    kind: KeyKind,
    /// JWKS `kid` (None for PEM keys).
    kid: Option<String>,
    /// JWKS `alg` restriction (None: any algorithm of the key's kind).
    alg: Option<String>,
    key: DecodingKey,
}

/// Whether the crypto backend accepts `key` as a `kind` key: a malformed key
/// fails when its verifier is built, a well-formed one just rejects the
/// dummy signature.
fn usable(key: &DecodingKey, kind: KeyKind) -> bool {
    jsonwebtoken::crypto::verify("AA", b"probe", key, kind.probe_alg()).is_ok()
}

/// Parse one PEM public key or certificate (RSA, EC P-256/P-384, Ed25519).
fn parse_pem_key(pem: &str) -> Result<VerifyKey, String> {
    let tag = pem
        .trim()
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.split_once("-----"))
        .map(|(tag, _)| tag.to_string())
        .ok_or_else(|| "not a PEM block".to_string())?;
    if tag.contains("PRIVATE") {
        return Err("is a private key: give the public key".into());
    }
    if !matches!(tag.as_str(), "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE") {
        return Err(format!("unsupported PEM type \"{tag}\" (expected a public key or a certificate)"));
    }
    let b = pem.trim().as_bytes();
    let mut found = None;
    if let Ok(k) = DecodingKey::from_rsa_pem(b) {
        found = Some((k, KeyKind::Rsa));
    } else if let Ok(k) = DecodingKey::from_ec_pem(b) {
        let kind = match k.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => KeyKind::P256,
            Ok(97) => KeyKind::P384,
            _ => return Err("unsupported elliptic curve (expected P-256 or P-384)".into()),
        };
        found = Some((k, kind));
    } else if let Ok(k) = DecodingKey::from_ed_pem(b) {
        found = Some((k, KeyKind::Ed25519));
    }
    match found {
        Some((key, kind)) if usable(&key, kind) => Ok(VerifyKey { kind, kid: None, alg: None, key }),
        Some(_) => Err("the key is malformed".into()),
        None => Err("unsupported or malformed key (expected RSA, EC P-256/P-384 or Ed25519)".into()),
    }
}

fn parse_pem_keys(pems: &[String]) -> Result<Vec<VerifyKey>, String> {
    pems.iter().enumerate().map(|(i, p)| parse_pem_key(p).map_err(|e| format!("public key #{}: {e}", i + 1))).collect()
}

/// One JWKS entry; keys that are not signature keys, or of unsupported
/// types (including symmetric `oct` keys), are skipped.
fn parse_jwk(v: &Value) -> Option<VerifyKey> {
    let o = v.as_object()?;
    let s = |f: &str| o.get(f).and_then(Value::as_str);
    if s("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let (kind, key) = match s("kty")? {
        "RSA" => (KeyKind::Rsa, DecodingKey::from_rsa_components(s("n")?, s("e")?).ok()?),
        "EC" => {
            let kind = match s("crv")? {
                "P-256" => KeyKind::P256,
                "P-384" => KeyKind::P384,
                _ => return None,
            };
            (kind, DecodingKey::from_ec_components(s("x")?, s("y")?).ok()?)
        }
        "OKP" if s("crv")? == "Ed25519" => (KeyKind::Ed25519, DecodingKey::from_ed_components(s("x")?).ok()?),
        _ => return None,
    };
    usable(&key, kind).then(|| VerifyKey {
        kind,
        kid: s("kid").map(String::from),
        alg: s("alg").map(String::from),
        key,
    })
}

/// A token split and decoded, before any verification.
#[derive(Debug)]
struct ParsedJwt<'a> {
    alg: String,
    kid: Option<String>,
    claims: Map<String, Value>,
    /// `base64url(header).base64url(payload)`: what was signed.
    message: &'a str,
    signature: &'a str,
}

fn decode_part(part: &str, what: &str) -> Result<Map<String, Value>, String> {
    let raw = URL_SAFE_NO_PAD.decode(part).map_err(|_| format!("malformed token: the {what} is not base64url"))?;
    match serde_json::from_slice(&raw) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(format!("malformed token: the {what} is not a JSON object")),
    }
}

fn parse_jwt(token: &str) -> Result<ParsedJwt<'_>, String> {
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("malformed token: expected three dot-separated parts".into());
    };
    if h.is_empty() || p.is_empty() {
        return Err("malformed token".into());
    }
    let header = decode_part(h, "header")?;
    let alg = header.get("alg").and_then(Value::as_str).ok_or("malformed token: the header has no algorithm")?;
    if header.contains_key("crit") {
        return Err("unsupported token: critical header parameters are not supported".into());
    }
    let kid = header.get("kid").and_then(Value::as_str).map(String::from);
    let claims = decode_part(p, "payload")?;
    Ok(ParsedJwt { alg: alg.to_string(), kid, claims, message: &token[..h.len() + 1 + p.len()], signature: sig })
}

/// The token's algorithm if allowed: asymmetric, and in `supported` (all
/// asymmetric algorithms when empty).
fn allowed_alg(alg: &str, supported: &[String]) -> Result<Algorithm, String> {
    if alg.eq_ignore_ascii_case("none") {
        return Err("unsigned tokens (alg \"none\") are not accepted".into());
    }
    if alg.starts_with("HS") {
        return Err(format!("signing algorithm \"{alg}\" is not accepted: only public-key algorithms are supported"));
    }
    if !ASYMMETRIC_ALGS.contains(&alg) || !(supported.is_empty() || supported.iter().any(|s| s == alg)) {
        return Err(format!("signing algorithm \"{alg}\" is not supported by this mount"));
    }
    Algorithm::from_str(alg).map_err(|_| format!("signing algorithm \"{alg}\" is not supported"))
}

/// Outcome of checking a signature against a key set.
#[derive(Debug, PartialEq, Eq)]
enum SigCheck {
    Valid,
    /// No key could even be tried (message says why).
    NoKey(String),
    Invalid,
}

fn check_signature(p: &ParsedJwt<'_>, alg: Algorithm, keys: &[VerifyKey]) -> SigCheck {
    let for_alg: Vec<&VerifyKey> =
        keys.iter().filter(|k| k.kind.fits(alg) && k.alg.as_deref().is_none_or(|a| a == p.alg)).collect();
    let candidates: Vec<&VerifyKey> = for_alg
        .iter()
        .copied()
        .filter(|k| match (&p.kid, &k.kid) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        })
        .collect();
    if candidates.is_empty() {
        return SigCheck::NoKey(if for_alg.is_empty() {
            format!("no configured key can verify {} signatures", p.alg)
        } else {
            "no key in the key set matches the token's key id (kid)".into()
        });
    }
    let ok = candidates
        .iter()
        .any(|k| jsonwebtoken::crypto::verify(p.signature, p.message.as_bytes(), &k.key, alg).unwrap_or(false));
    if ok { SigCheck::Valid } else { SigCheck::Invalid }
}

// ---------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------

fn numeric_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, String> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).map(Some).ok_or_else(|| format!("invalid {name} claim"))
        }
        Some(_) => Err(format!("invalid {name} claim: expected a number")),
    }
}

/// Leeways for time checks, in seconds (already resolved from settings).
#[derive(Debug, Clone, Copy)]
struct Leeways {
    skew: i64,
    exp: i64,
    nbf: i64,
}

/// Check `exp`, `nbf` and `iat`. With `require`, at least one must be
/// present, and a token without `exp` expires `exp` leeway after its
/// `iat`/`nbf` (so no token is valid forever).
fn check_times(claims: &Map<String, Value>, now: i64, lw: Leeways, require: bool) -> Result<(), String> {
    let exp = numeric_claim(claims, "exp")?;
    let nbf = numeric_claim(claims, "nbf")?;
    let iat = numeric_claim(claims, "iat")?;
    if require && exp.is_none() && nbf.is_none() && iat.is_none() {
        return Err("no issued at (iat), not before (nbf), or expiration time (exp) claims in token".into());
    }
    match exp {
        Some(e) if now > e.saturating_add(lw.exp).saturating_add(lw.skew) => return Err("token is expired".into()),
        None if require => {
            let start = iat.max(nbf).unwrap_or(i64::MIN);
            if now > start.saturating_add(lw.exp).saturating_add(lw.skew) {
                return Err("token is expired (it has no exp claim and was issued too long ago)".into());
            }
        }
        _ => {}
    }
    if let Some(n) = nbf
        && now.saturating_add(lw.nbf).saturating_add(lw.skew) < n
    {
        return Err("token is not yet valid (nbf)".into());
    }
    if let Some(i) = iat
        && now.saturating_add(lw.skew) < i
    {
        return Err("token was issued in the future (iat)".into());
    }
    Ok(())
}

/// The token's audiences (`aud` as a string or a list of strings).
fn audiences(claims: &Map<String, Value>) -> Option<Vec<String>> {
    match claims.get("aud")? {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => Some(a.iter().filter_map(Value::as_str).map(String::from).collect()),
        _ => Some(Vec::new()),
    }
}

/// The allowed values of a bound claim (a string or a list).
fn bound_values(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().filter_map(scalar_string).collect(),
        other => scalar_string(other).into_iter().collect(),
    }
}

/// Everything a JWT role checks on verified claims.
fn check_jwt_claims(
    claims: &Map<String, Value>,
    role: &JwtRole,
    bound_issuer: &str,
    discovered_issuer: Option<&str>,
    now: i64,
) -> Result<(), String> {
    let lw = Leeways {
        skew: effective_leeway(role.clock_skew_leeway, DEFAULT_CLOCK_SKEW_LEEWAY),
        exp: effective_leeway(role.expiration_leeway, DEFAULT_EXPIRATION_LEEWAY),
        nbf: effective_leeway(role.not_before_leeway, DEFAULT_NOT_BEFORE_LEEWAY),
    };
    check_times(claims, now, lw, true)?;
    let iss = claims.get("iss").and_then(Value::as_str);
    for expected in [Some(bound_issuer).filter(|s| !s.is_empty()), discovered_issuer].into_iter().flatten() {
        if iss != Some(expected) {
            return Err("invalid issuer (iss) claim".into());
        }
    }
    match (audiences(claims), role.bound_audiences.is_empty()) {
        (Some(_), true) => return Err("audience claim found in JWT but no audiences bound to the role".into()),
        (None, false) => return Err("invalid audience (aud) claim: the token has no audience".into()),
        (Some(aud), false) if !aud.iter().any(|a| role.bound_audiences.contains(a)) => {
            return Err("invalid audience (aud) claim: audience claim does not match any expected audience".into());
        }
        _ => {}
    }
    if !role.bound_subject.is_empty() && claims.get("sub").and_then(Value::as_str) != Some(role.bound_subject.as_str())
    {
        return Err("sub claim does not match bound subject".into());
    }
    for (name, expected) in &role.bound_claims {
        let allowed = bound_values(expected);
        let actual = claim(claims, name).ok_or_else(|| format!("claim \"{name}\" is missing"))?;
        let values: Vec<String> = match actual {
            Value::Array(a) => a.iter().filter_map(scalar_string).collect(),
            v => scalar_string(v).into_iter().collect(),
        };
        if !values.iter().any(|v| allowed.contains(v)) {
            return Err(format!("claim \"{name}\" does not match any associated bound claim values"));
        }
    }
    Ok(())
}

/// The user (alias) name from the role's user claim.
fn user_name(claims: &Map<String, Value>, role: &JwtRole) -> Result<String, String> {
    let v =
        if role.user_claim_json_pointer { pointer(claims, &role.user_claim) } else { claim(claims, &role.user_claim) };
    let v = v.ok_or_else(|| format!("claim \"{}\" not found in token", role.user_claim))?;
    scalar_string(v)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("claim \"{}\" could not be converted to a string", role.user_claim))
}

/// Vault checks the groups claim's shape even though groups grant nothing here.
fn check_groups(claims: &Map<String, Value>, role: &JwtRole) -> Result<(), String> {
    if role.groups_claim.is_empty() {
        return Ok(());
    }
    match claim(claims, &role.groups_claim) {
        None => Err(format!("\"{}\" claim not found in token", role.groups_claim)),
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => Ok(()),
        Some(_) => Err(format!("\"{}\" claim is not a string or a list of strings", role.groups_claim)),
    }
}

/// Metadata: the role name plus the claim mappings.
fn jwt_metadata(claims: &Map<String, Value>, role: &JwtRole, role_name: &str) -> Result<Map<String, Value>, String> {
    let mut m = Map::new();
    m.insert("role".into(), role_name.into());
    for (claim_name, key) in &role.claim_mappings {
        let Some(v) = claim(claims, claim_name) else { continue };
        let s = scalar_string(v).ok_or_else(|| format!("error converting claim \"{claim_name}\" to a string"))?;
        m.insert(key.clone(), s.into());
    }
    Ok(m)
}

/// A Kubernetes service account as named by a token.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceAccount {
    namespace: String,
    name: String,
    uid: String,
    secret_name: String,
}

/// The service account of legacy (`kubernetes.io/serviceaccount/...`) or
/// projected (`kubernetes.io` object) token claims.
fn service_account(claims: &Map<String, Value>) -> Result<ServiceAccount, String> {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let sa = if let Some(Value::Object(k)) = claims.get("kubernetes.io") {
        let acct = k.get("serviceaccount");
        ServiceAccount {
            namespace: s(k.get("namespace")),
            name: s(acct.and_then(|a| a.get("name"))),
            uid: s(acct.and_then(|a| a.get("uid"))),
            secret_name: s(k.get("secret").and_then(|a| a.get("name"))),
        }
    } else {
        ServiceAccount {
            namespace: s(claims.get("kubernetes.io/serviceaccount/namespace")),
            name: s(claims.get("kubernetes.io/serviceaccount/service-account.name")),
            uid: s(claims.get("kubernetes.io/serviceaccount/service-account.uid")),
            secret_name: s(claims.get("kubernetes.io/serviceaccount/secret.name")),
        }
    };
    if sa.namespace.is_empty() {
        return Err("the token has no service account namespace claim".into());
    }
    if sa.name.is_empty() {
        return Err("the token has no service account name claim".into());
    }
    Ok(sa)
}

// ---------------------------------------------------------------------------
// HTTP (JWKS, discovery, TokenReview)
// ---------------------------------------------------------------------------

/// A client with the timeout, trusting only `ca_pem` when given.
fn http_client(ca_pem: &str, timeout: Duration) -> Result<reqwest::Client, String> {
    // reqwest is built without a default rustls provider; install ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No redirects: a configured URL is fetched as written, never bounced to
    // another host (the vault's own listener, an internal service).
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(CONNECT_TIMEOUT))
        .redirect(reqwest::redirect::Policy::none());
    if !ca_pem.trim().is_empty() {
        let certs = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())
            .map_err(|e| format!("invalid CA certificate PEM: {e}"))?;
        b = b.tls_certs_only(certs);
    }
    b.build().map_err(|e| format!("could not build an HTTP client: {e}"))
}

fn check_ca_pem(pem: &str, field: &str) -> Result<(), LogicalError> {
    if pem.trim().is_empty() {
        return Ok(());
    }
    match reqwest::Certificate::from_pem_bundle(pem.as_bytes()) {
        Ok(c) if !c.is_empty() => Ok(()),
        _ => Err(bad(format!("'{field}' is not a valid PEM certificate or bundle"))),
    }
}

fn check_url(url: &str, field: &str) -> Result<(), LogicalError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(bad(format!("'{field}' must be an http or https URL"))),
    }
}

/// Read a response body, refusing more than [`MAX_HTTP_BODY`] bytes.
async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading the response failed: {e}"))? {
        if out.len() + chunk.len() > MAX_HTTP_BODY {
            return Err("the response is too large".into());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let resp = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("request to {url} failed: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("{url} answered HTTP {}", status.as_u16()));
    }
    let body = read_limited(resp).await?;
    serde_json::from_slice(&body).map_err(|_| format!("{url} did not return JSON"))
}

/// Where remote keys come from (the cache is valid only for the same source).
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeySource {
    url: String,
    ca_pem: String,
    discovery: bool,
}

impl KeySource {
    fn of(c: &JwtConfig) -> Option<KeySource> {
        if !c.jwks_url.is_empty() {
            Some(KeySource { url: c.jwks_url.clone(), ca_pem: c.jwks_ca_pem.clone(), discovery: false })
        } else if !c.oidc_discovery_url.is_empty() {
            Some(KeySource {
                url: c.oidc_discovery_url.clone(),
                ca_pem: c.oidc_discovery_ca_pem.clone(),
                discovery: true,
            })
        } else {
            None
        }
    }
}

/// When to fetch a remote key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetch {
    /// Reuse the cached set while it is fresh (every login).
    IfStale,
    /// A token named an unknown key id: refetch, unless one such refetch
    /// happened within [`JWKS_FORCED_REFRESH_INTERVAL`].
    UnknownKid,
    /// Always fetch (config writes check the source works).
    Always,
}

/// A fetched key set.
#[derive(Debug)]
struct KeyCache {
    source: KeySource,
    keys: Arc<Vec<VerifyKey>>,
    /// The issuer named by the discovery document (tokens must match it).
    issuer: Option<String>,
    fetched: Instant,
    /// Last refetch caused by an unknown key id.
    last_forced: Option<Instant>,
}

/// Fetch the key set (through the discovery document when configured).
async fn fetch_key_set(source: &KeySource, timeout: Duration) -> Result<(Vec<VerifyKey>, Option<String>), String> {
    let client = http_client(&source.ca_pem, timeout)?;
    let (jwks_url, issuer) = if source.discovery {
        let base = source.url.trim_end_matches('/');
        let doc = get_json(&client, &format!("{base}/.well-known/openid-configuration")).await?;
        let issuer = doc.get("issuer").and_then(Value::as_str).ok_or("the discovery document has no issuer")?;
        if issuer.trim_end_matches('/') != base {
            return Err(format!("the discovery document's issuer \"{issuer}\" does not match the discovery URL"));
        }
        let jwks = doc.get("jwks_uri").and_then(Value::as_str).ok_or("the discovery document has no jwks_uri")?;
        check_url(jwks, "jwks_uri").map_err(|_| "the discovery document's jwks_uri is not an http(s) URL")?;
        (jwks.to_string(), Some(issuer.to_string()))
    } else {
        (source.url.clone(), None)
    };
    let doc = get_json(&client, &jwks_url).await?;
    let entries = doc.get("keys").and_then(Value::as_array).ok_or("the JWKS document has no \"keys\" list")?;
    let keys: Vec<VerifyKey> = entries.iter().filter_map(parse_jwk).collect();
    if keys.is_empty() {
        return Err("the JWKS document holds no usable signature keys".into());
    }
    Ok((keys, issuer))
}

// ---------------------------------------------------------------------------
// Login failures
// ---------------------------------------------------------------------------

/// Why a login failed.
#[derive(Debug)]
enum Fail {
    /// The token was refused: 400, charged to the client address.
    Denied(String),
    /// A remote the login needed (JWKS, TokenReview) failed: 502 with this
    /// generic message (the detail is logged), charged to the address too,
    /// since a bad token can make us call it.
    Upstream(&'static str),
    /// Anything else (configuration, storage, CIDR binding): passed
    /// through, not charged.
    Error(LogicalError),
}

impl From<LogicalError> for Fail {
    fn from(e: LogicalError) -> Self {
        Fail::Error(e)
    }
}

fn denied(msg: impl Into<String>) -> Fail {
    Fail::Denied(msg.into())
}

/// Remove the token from the request data into a wiping buffer.
fn take_jwt(data: &mut Map<String, Value>) -> Result<Zeroizing<String>, LogicalError> {
    match data.remove("jwt") {
        Some(Value::String(s)) => {
            let s = Zeroizing::new(s);
            if s.trim().is_empty() {
                Err(bad("missing jwt"))
            } else if s.len() > MAX_JWT_LEN {
                Err(bad("jwt is too large"))
            } else {
                Ok(s)
            }
        }
        None | Some(Value::Null) => Err(bad("missing jwt")),
        Some(_) => Err(bad("invalid value for 'jwt': expected a string")),
    }
}

// ---------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------

impl Jwt {
    async fn load<T: for<'de> Deserialize<'de>>(
        &self,
        u: &Unsealed,
        key: &str,
        what: &str,
    ) -> Result<Option<T>, LogicalError> {
        match self.view.get(u, key).await? {
            Some(raw) => Ok(Some(parse_json(&raw, what)?)),
            None => Ok(None),
        }
    }

    async fn store<T: Serialize>(&self, u: &Unsealed, key: &str, v: &T) -> Result<(), LogicalError> {
        self.view.put(u, key, &to_json(v)?).await?;
        Ok(())
    }

    async fn list_roles(&self, u: &Unsealed) -> Result<Response, LogicalError> {
        let keys: Vec<Value> = self
            .view
            .list(u, ROLE_PREFIX)
            .await?
            .into_iter()
            .filter(|k| !k.ends_with('/'))
            .map(Value::String)
            .collect();
        if keys.is_empty() {
            return Err(LogicalError::NotFound);
        }
        let mut m = Map::new();
        m.insert("keys".into(), Value::Array(keys));
        Ok(Response::data(m))
    }

    fn display_prefix(&self) -> String {
        self.ctx.mount_path.trim_end_matches('/').replace('/', "-")
    }
}

// ---------------------------------------------------------------------------
// JWT flavor: config and roles
// ---------------------------------------------------------------------------

impl Jwt {
    async fn read_jwt_config(&self, u: &Unsealed) -> Result<Response, LogicalError> {
        let c: JwtConfig = self.load(u, CONFIG_KEY, "config").await?.ok_or(LogicalError::NotFound)?;
        let mut m = Map::new();
        m.insert("oidc_discovery_url".into(), c.oidc_discovery_url.clone().into());
        m.insert("oidc_discovery_ca_pem".into(), c.oidc_discovery_ca_pem.clone().into());
        m.insert("oidc_client_id".into(), c.oidc_client_id.clone().into());
        m.insert("oidc_response_mode".into(), "".into());
        m.insert("oidc_response_types".into(), Value::Array(Vec::new()));
        m.insert("jwks_url".into(), c.jwks_url.clone().into());
        m.insert("jwks_ca_pem".into(), c.jwks_ca_pem.clone().into());
        m.insert("jwt_validation_pubkeys".into(), c.jwt_validation_pubkeys.clone().into());
        m.insert("jwt_supported_algs".into(), c.jwt_supported_algs.clone().into());
        m.insert("bound_issuer".into(), c.bound_issuer.clone().into());
        m.insert("default_role".into(), c.default_role.clone().into());
        m.insert("namespace_in_state".into(), false.into());
        m.insert("provider_config".into(), Value::Object(Map::new()));
        Ok(Response::data(m))
    }

    /// Replace the configuration (as Vault does: omitted fields are reset).
    async fn write_jwt_config(&self, u: &Unsealed, mut d: Map<String, Value>) -> Result<Response, LogicalError> {
        let secret = match d.remove("oidc_client_secret") {
            Some(Value::String(s)) => Secret(s),
            None | Some(Value::Null) => Secret::default(),
            Some(_) => return Err(bad("invalid value for 'oidc_client_secret': expected a string")),
        };
        let text = |field: &str| nonempty(&d, field).map(Option::unwrap_or_default);
        let c = JwtConfig {
            oidc_discovery_url: text("oidc_discovery_url")?,
            oidc_discovery_ca_pem: text("oidc_discovery_ca_pem")?,
            oidc_client_id: text("oidc_client_id")?,
            oidc_client_secret: secret,
            jwks_url: text("jwks_url")?,
            jwks_ca_pem: text("jwks_ca_pem")?,
            jwt_validation_pubkeys: pem_list(&d, "jwt_validation_pubkeys")?.unwrap_or_default(),
            jwt_supported_algs: clean_list(&d, "jwt_supported_algs")?.unwrap_or_default(),
            bound_issuer: text("bound_issuer")?,
            default_role: text("default_role")?,
        };

        let sources = [!c.oidc_discovery_url.is_empty(), !c.jwks_url.is_empty(), !c.jwt_validation_pubkeys.is_empty()];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(bad("exactly one of 'jwt_validation_pubkeys', 'jwks_url' or 'oidc_discovery_url' must be set"));
        }
        for alg in &c.jwt_supported_algs {
            allowed_alg(alg, &[]).map_err(|e| bad(format!("invalid 'jwt_supported_algs': {e}")))?;
        }
        parse_pem_keys(&c.jwt_validation_pubkeys).map_err(|e| bad(format!("invalid 'jwt_validation_pubkeys': {e}")))?;
        if !c.jwks_url.is_empty() {
            check_url(&c.jwks_url, "jwks_url")?;
        }
        if !c.oidc_discovery_url.is_empty() {
            check_url(&c.oidc_discovery_url, "oidc_discovery_url")?;
        }
        check_ca_pem(&c.jwks_ca_pem, "jwks_ca_pem")?;
        check_ca_pem(&c.oidc_discovery_ca_pem, "oidc_discovery_ca_pem")?;
        if !c.default_role.is_empty() {
            role_name(&c.default_role)?;
        }
        // Like Vault, check a remote key source works before saving it (this
        // also fills the cache).
        if let Some(source) = KeySource::of(&c) {
            let what = if source.discovery { "OIDC discovery URL" } else { "JWKS URL" };
            // One message whatever failed (refused, timed out, HTTP status,
            // not JSON, no keys): the config write must not tell its caller
            // what answers where on the network. The detail goes to the log.
            if let Err(e) = self.remote_keys(&source, Fetch::Always).await {
                tracing::warn!(mount = %self.ctx.mount_path, detail = %e, "checking the {what} failed");
                return Err(bad(format!(
                    "error checking {what}: it could not be fetched or is not a valid key source (see the server log)"
                )));
            }
        } else {
            *self.keys.lock().await = None;
        }
        self.store(u, CONFIG_KEY, &c).await?;
        Ok(Response::NoContent)
    }

    async fn read_jwt_role(&self, u: &Unsealed, name: &str) -> Result<Response, LogicalError> {
        let r: JwtRole = self.load(u, &format!("{ROLE_PREFIX}{name}"), "role").await?.ok_or(LogicalError::NotFound)?;
        let mut m = Map::new();
        m.insert("role_type".into(), r.role_type.clone().into());
        m.insert("bound_audiences".into(), r.bound_audiences.clone().into());
        m.insert("bound_subject".into(), r.bound_subject.clone().into());
        m.insert("bound_claims".into(), Value::Object(r.bound_claims.clone()));
        m.insert("bound_claims_type".into(), r.bound_claims_type.clone().into());
        let mappings: Map<String, Value> =
            r.claim_mappings.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        m.insert("claim_mappings".into(), Value::Object(mappings));
        m.insert("user_claim".into(), r.user_claim.clone().into());
        m.insert("user_claim_json_pointer".into(), r.user_claim_json_pointer.into());
        m.insert("groups_claim".into(), r.groups_claim.clone().into());
        m.insert("clock_skew_leeway".into(), r.clock_skew_leeway.into());
        m.insert("expiration_leeway".into(), r.expiration_leeway.into());
        m.insert("not_before_leeway".into(), r.not_before_leeway.into());
        m.insert("allowed_redirect_uris".into(), Value::Array(Vec::new()));
        m.insert("oidc_scopes".into(), Value::Array(Vec::new()));
        m.insert("verbose_oidc_logging".into(), false.into());
        m.insert("max_age".into(), 0.into());
        r.token.write_to(&mut m, LEGACY_ALL);
        Ok(Response::data(m))
    }

    /// Create or update a role: given fields replace the stored ones.
    async fn write_jwt_role(&self, u: &Unsealed, name: &str, d: &Map<String, Value>) -> Result<Response, LogicalError> {
        let key = format!("{ROLE_PREFIX}{name}");
        let mut r: JwtRole = match self.load(u, &key, "role").await? {
            Some(r) => r,
            None => JwtRole {
                role_type: "jwt".into(),
                user_claim: "sub".into(),
                bound_claims_type: "string".into(),
                ..Default::default()
            },
        };
        if let Some(t) = fields::string(d, "role_type")? {
            match t.as_str() {
                "jwt" | "" => r.role_type = "jwt".into(),
                "oidc" => {
                    return Err(bad(
                        "role_type \"oidc\" (the interactive browser login flow) is not supported by this server; use role_type \"jwt\" and log in with a JWT",
                    ));
                }
                other => return Err(bad(format!("invalid 'role_type' \"{other}\": expected \"jwt\""))),
            }
        }
        if let Some(a) = clean_list(d, "bound_audiences")? {
            r.bound_audiences = a;
        }
        if let Some(s) = fields::string(d, "bound_subject")? {
            r.bound_subject = s;
        }
        match d.get("bound_claims") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let ok = match v {
                        Value::Array(a) => !a.is_empty() && a.iter().all(|x| scalar_string(x).is_some()),
                        other => scalar_string(other).is_some(),
                    };
                    if k.is_empty() || !ok {
                        return Err(bad(format!(
                            "invalid 'bound_claims' entry \"{k}\": expected a string or a list of strings"
                        )));
                    }
                }
                r.bound_claims = m.clone();
            }
            Some(_) => return Err(bad("'bound_claims' must be a map of claim names to values")),
        }
        if let Some(t) = fields::string(d, "bound_claims_type")? {
            match t.as_str() {
                "string" | "" => r.bound_claims_type = "string".into(),
                "glob" => return Err(bad("bound_claims_type \"glob\" is not supported; use \"string\"")),
                other => return Err(bad(format!("invalid 'bound_claims_type' \"{other}\": expected \"string\""))),
            }
        }
        if let Some(m) = fields::string_map(d, "claim_mappings")? {
            let mut mappings = BTreeMap::new();
            let mut targets = std::collections::HashSet::new();
            for (k, v) in m {
                let target = v.as_str().unwrap_or_default().to_string();
                if target.is_empty() {
                    return Err(bad(format!("claim mapping for \"{k}\" has an empty metadata key")));
                }
                if target == "role" {
                    return Err(bad("metadata key \"role\" is reserved and may not be a target of a claim mapping"));
                }
                if !targets.insert(target.clone()) {
                    return Err(bad(format!("multiple claims are mapped to metadata key \"{target}\"")));
                }
                mappings.insert(k, target);
            }
            r.claim_mappings = mappings;
        }
        if let Some(c) = fields::string(d, "user_claim")? {
            r.user_claim = c.trim().to_string();
        }
        if r.user_claim.is_empty() {
            return Err(bad("a user claim must be defined on the role"));
        }
        if let Some(b) = fields::boolean(d, "user_claim_json_pointer")? {
            r.user_claim_json_pointer = b;
        }
        if r.user_claim_json_pointer && !r.user_claim.starts_with('/') {
            return Err(bad(
                "'user_claim' must be a JSON pointer (starting with '/') when 'user_claim_json_pointer' is set",
            ));
        }
        if let Some(g) = fields::string(d, "groups_claim")? {
            r.groups_claim = g.trim().to_string();
        }
        if let Some(v) = leeway(d, "clock_skew_leeway")? {
            r.clock_skew_leeway = v;
        }
        if let Some(v) = leeway(d, "expiration_leeway")? {
            r.expiration_leeway = v;
        }
        if let Some(v) = leeway(d, "not_before_leeway")? {
            r.not_before_leeway = v;
        }
        r.token.update_from(d, LEGACY_ALL)?;
        if r.bound_audiences.is_empty()
            && r.bound_subject.is_empty()
            && r.bound_claims.is_empty()
            && r.token.token_bound_cidrs.is_empty()
        {
            return Err(bad("must have at least one bound constraint when creating/updating a role"));
        }
        self.store(u, &key, &r).await?;
        Ok(Response::NoContent)
    }
}

// ---------------------------------------------------------------------------
// JWT flavor: key sets and login
// ---------------------------------------------------------------------------

impl Jwt {
    /// The remote key set from `source`, fetched or reused as `mode` says.
    /// The cache lock is held across the fetch, so concurrent logins share
    /// one fetch. When a refetch fails but keys from the same source are
    /// cached, those keep working (logged), so an issuer outage does not stop
    /// logins with known keys.
    async fn remote_keys(
        &self,
        source: &KeySource,
        mode: Fetch,
    ) -> Result<(Arc<Vec<VerifyKey>>, Option<String>), String> {
        let mut cache = self.keys.lock().await;
        let current = cache.as_ref().filter(|c| c.source == *source).map(|c| (c.keys.clone(), c.issuer.clone()));
        if let Some(c) = cache.as_ref().filter(|c| c.source == *source) {
            let reuse = match mode {
                Fetch::IfStale => c.fetched.elapsed() < JWKS_MAX_AGE,
                Fetch::UnknownKid => c.last_forced.is_some_and(|t| t.elapsed() < JWKS_FORCED_REFRESH_INTERVAL),
                Fetch::Always => false,
            };
            if reuse {
                return Ok((c.keys.clone(), c.issuer.clone()));
            }
        }
        let now = Instant::now();
        match fetch_key_set(source, self.http_timeout).await {
            Ok((keys, issuer)) => {
                let keys = Arc::new(keys);
                let last_forced = if mode == Fetch::UnknownKid {
                    Some(now)
                } else {
                    cache.as_ref().filter(|c| c.source == *source).and_then(|c| c.last_forced)
                };
                *cache = Some(KeyCache {
                    source: source.clone(),
                    keys: keys.clone(),
                    issuer: issuer.clone(),
                    fetched: now,
                    last_forced,
                });
                Ok((keys, issuer))
            }
            Err(e) => match current {
                Some(kept) if mode != Fetch::Always => {
                    tracing::warn!(mount = %self.ctx.mount_path, url = %source.url, error = %e,
                        "refreshing the JWT signing keys failed; using the cached keys");
                    if let Some(c) = cache.as_mut() {
                        // Failed refetches are rate limited too.
                        if mode == Fetch::UnknownKid {
                            c.last_forced = Some(now);
                        }
                    }
                    Ok(kept)
                }
                _ => Err(e),
            },
        }
    }

    /// Verify the signature with the configured keys; returns the issuer the
    /// discovery document requires, if any.
    async fn verify_jwt_signature(
        &self,
        c: &JwtConfig,
        p: &ParsedJwt<'_>,
        alg: Algorithm,
    ) -> Result<Option<String>, Fail> {
        let Some(source) = KeySource::of(c) else {
            let keys = parse_pem_keys(&c.jwt_validation_pubkeys).map_err(LogicalError::internal)?;
            return match check_signature(p, alg, &keys) {
                SigCheck::Valid => Ok(None),
                SigCheck::NoKey(m) => Err(denied(m)),
                SigCheck::Invalid => Err(denied("signature verification failed")),
            };
        };
        let fetch_failed = |e: String| {
            tracing::warn!(mount = %self.ctx.mount_path, url = %source.url, error = %e, "fetching the JWT signing keys failed");
            Fail::Upstream(KEY_FETCH_FAILED)
        };
        let (keys, issuer) = self.remote_keys(&source, Fetch::IfStale).await.map_err(fetch_failed)?;
        match check_signature(p, alg, &keys) {
            SigCheck::Valid => Ok(issuer),
            SigCheck::Invalid => Err(denied("signature verification failed")),
            SigCheck::NoKey(m) => {
                // The issuer may have rotated its keys: refetch once.
                let (keys, issuer) = self.remote_keys(&source, Fetch::UnknownKid).await.map_err(fetch_failed)?;
                match check_signature(p, alg, &keys) {
                    SigCheck::Valid => Ok(issuer),
                    SigCheck::Invalid => Err(denied("signature verification failed")),
                    SigCheck::NoKey(_) => Err(denied(m)),
                }
            }
        }
    }

    async fn jwt_login(&self, u: &Unsealed, mut req: Request) -> Result<Response, LogicalError> {
        let addr = req.client_addr;
        self.ctx.check_signed(addr)?;
        let token = take_jwt(&mut req.data)?;
        let config: JwtConfig =
            self.load(u, CONFIG_KEY, "config").await?.ok_or_else(|| bad("could not load configuration"))?;
        let role = nonempty(&req.data, "role")?
            .or_else(|| Some(config.default_role.clone()).filter(|r| !r.is_empty()))
            .ok_or_else(|| bad("missing role"))?;
        role_name(&role)?;
        let result = self.jwt_authenticate(u, &config, &role, &token, addr).await;
        self.finish(result, addr)
    }

    async fn jwt_authenticate(
        &self,
        u: &Unsealed,
        config: &JwtConfig,
        role_name: &str,
        token: &str,
        addr: Option<IpAddr>,
    ) -> Result<Login, Fail> {
        let stored = self.load::<JwtRole>(u, &format!("{ROLE_PREFIX}{role_name}"), "role").await?;
        let role = stored.ok_or_else(|| denied(format!("role \"{role_name}\" could not be found")))?;
        if !cidr::allowed(&role.token.token_bound_cidrs, addr) {
            return Err(Fail::Error(LogicalError::PermissionDenied));
        }
        let parsed = parse_jwt(token).map_err(Fail::Denied)?;
        let alg = allowed_alg(&parsed.alg, &config.jwt_supported_algs).map_err(Fail::Denied)?;
        let discovered_issuer = self.verify_jwt_signature(config, &parsed, alg).await?;
        let claims = &parsed.claims;
        check_jwt_claims(claims, &role, &config.bound_issuer, discovered_issuer.as_deref(), now_unix())
            .map_err(Fail::Denied)?;
        let user = user_name(claims, &role).map_err(Fail::Denied)?;
        check_groups(claims, &role).map_err(Fail::Denied)?;
        let metadata = jwt_metadata(claims, &role, role_name).map_err(Fail::Denied)?;
        let display = format!("{}-{user}", self.display_prefix());
        Ok(role.token.login(display, metadata, user)?)
    }

    /// Answer a login; charge a refused token or a failed remote call to
    /// the client address (never to the role: see the module docs).
    fn finish(&self, result: Result<Login, Fail>, addr: Option<IpAddr>) -> Result<Response, LogicalError> {
        match result {
            Ok(login) => Ok(Response::Login(Box::new(login))),
            Err(Fail::Denied(msg)) => {
                self.ctx.signed_failed(addr);
                Err(bad(msg))
            }
            Err(Fail::Upstream(msg)) => {
                self.ctx.signed_failed(addr);
                Err(LogicalError::Upstream(msg.into()))
            }
            Err(Fail::Error(e)) => Err(e),
        }
    }
}

// ---------------------------------------------------------------------------
// Kubernetes flavor
// ---------------------------------------------------------------------------

impl Jwt {
    async fn read_k8s_config(&self, u: &Unsealed) -> Result<Response, LogicalError> {
        let c: K8sConfig = self.load(u, CONFIG_KEY, "config").await?.ok_or(LogicalError::NotFound)?;
        let mut m = Map::new();
        m.insert("kubernetes_host".into(), c.kubernetes_host.clone().into());
        m.insert("kubernetes_ca_cert".into(), c.kubernetes_ca_cert.clone().into());
        m.insert("pem_keys".into(), c.pem_keys.clone().into());
        m.insert("issuer".into(), c.issuer.clone().into());
        m.insert("disable_iss_validation".into(), c.disable_iss_validation.into());
        m.insert("disable_local_ca_jwt".into(), c.disable_local_ca_jwt.into());
        m.insert("token_reviewer_jwt_set".into(), (!c.token_reviewer_jwt.is_empty()).into());
        Ok(Response::data(m))
    }

    /// Replace the configuration (as Vault does: omitted fields are reset).
    async fn write_k8s_config(&self, u: &Unsealed, mut d: Map<String, Value>) -> Result<Response, LogicalError> {
        let reviewer = match d.remove("token_reviewer_jwt") {
            Some(Value::String(s)) => Secret(Zeroizing::new(s).trim().to_string()),
            None | Some(Value::Null) => Secret::default(),
            Some(_) => return Err(bad("invalid value for 'token_reviewer_jwt': expected a string")),
        };
        let mut c = K8sConfig::default();
        if let Some(host) = nonempty(&d, "kubernetes_host")? {
            let url = if host.contains("://") { host } else { format!("https://{host}") };
            check_url(&url, "kubernetes_host")?;
            c.kubernetes_host = url.trim_end_matches('/').to_string();
        }
        c.kubernetes_ca_cert = nonempty(&d, "kubernetes_ca_cert")?.unwrap_or_default();
        check_ca_pem(&c.kubernetes_ca_cert, "kubernetes_ca_cert")?;
        c.token_reviewer_jwt = reviewer;
        c.pem_keys = pem_list(&d, "pem_keys")?.unwrap_or_default();
        parse_pem_keys(&c.pem_keys).map_err(|e| bad(format!("invalid 'pem_keys': {e}")))?;
        c.issuer = nonempty(&d, "issuer")?.unwrap_or_default();
        c.disable_iss_validation = fields::boolean(&d, "disable_iss_validation")?.unwrap_or(false);
        c.disable_local_ca_jwt = fields::boolean(&d, "disable_local_ca_jwt")?.unwrap_or(false);
        if c.kubernetes_host.is_empty() && c.pem_keys.is_empty() {
            return Err(bad("one of 'kubernetes_host' (TokenReview) or 'pem_keys' (local verification) must be set"));
        }
        self.store(u, CONFIG_KEY, &c).await?;
        Ok(Response::NoContent)
    }

    async fn read_k8s_role(&self, u: &Unsealed, name: &str) -> Result<Response, LogicalError> {
        let r: K8sRole = self.load(u, &format!("{ROLE_PREFIX}{name}"), "role").await?.ok_or(LogicalError::NotFound)?;
        let mut m = Map::new();
        m.insert("bound_service_account_names".into(), r.bound_service_account_names.clone().into());
        m.insert("bound_service_account_namespaces".into(), r.bound_service_account_namespaces.clone().into());
        m.insert("audience".into(), r.audience.clone().into());
        m.insert("alias_name_source".into(), r.alias_name_source.clone().into());
        r.token.write_to(&mut m, LEGACY_ALL);
        Ok(Response::data(m))
    }

    async fn write_k8s_role(&self, u: &Unsealed, name: &str, d: &Map<String, Value>) -> Result<Response, LogicalError> {
        let key = format!("{ROLE_PREFIX}{name}");
        let mut r: K8sRole = match self.load(u, &key, "role").await? {
            Some(r) => r,
            None => K8sRole { alias_name_source: "serviceaccount_uid".into(), ..Default::default() },
        };
        if let Some(n) = clean_list(d, "bound_service_account_names")? {
            r.bound_service_account_names = n;
        }
        if let Some(n) = clean_list(d, "bound_service_account_namespaces")? {
            r.bound_service_account_namespaces = n;
        }
        if let Some(a) = fields::string(d, "audience")? {
            r.audience = a.trim().to_string();
        }
        if let Some(s) = fields::string(d, "alias_name_source")? {
            match s.as_str() {
                "serviceaccount_uid" | "" => r.alias_name_source = "serviceaccount_uid".into(),
                "serviceaccount_name" => r.alias_name_source = s,
                other => {
                    return Err(bad(format!(
                        "invalid 'alias_name_source' \"{other}\": expected \"serviceaccount_uid\" or \"serviceaccount_name\""
                    )));
                }
            }
        }
        r.token.update_from(d, LEGACY_ALL)?;
        if r.bound_service_account_names.is_empty() {
            return Err(bad("\"bound_service_account_names\" can not be empty"));
        }
        if r.bound_service_account_namespaces.is_empty() {
            return Err(bad("\"bound_service_account_namespaces\" can not be empty"));
        }
        let star = |l: &[String]| l.len() == 1 && l[0] == "*";
        if star(&r.bound_service_account_names) && star(&r.bound_service_account_namespaces) {
            return Err(bad(
                "\"bound_service_account_names\" and \"bound_service_account_namespaces\" can not both be \"*\"",
            ));
        }
        self.store(u, &key, &r).await?;
        Ok(Response::NoContent)
    }

    async fn k8s_login(&self, u: &Unsealed, mut req: Request) -> Result<Response, LogicalError> {
        let addr = req.client_addr;
        self.ctx.check_signed(addr)?;
        let token = take_jwt(&mut req.data)?;
        let role = nonempty(&req.data, "role")?.ok_or_else(|| bad("missing role"))?;
        role_name(&role)?;
        let config: K8sConfig =
            self.load(u, CONFIG_KEY, "config").await?.ok_or_else(|| bad("could not load backend configuration"))?;
        let result = self.k8s_authenticate(u, &config, &role, &token, addr).await;
        self.finish(result, addr)
    }

    async fn k8s_authenticate(
        &self,
        u: &Unsealed,
        config: &K8sConfig,
        role_name: &str,
        token: &str,
        addr: Option<IpAddr>,
    ) -> Result<Login, Fail> {
        let stored = self.load::<K8sRole>(u, &format!("{ROLE_PREFIX}{role_name}"), "role").await?;
        let role = stored.ok_or_else(|| denied(format!("invalid role name \"{role_name}\"")))?;
        if !cidr::allowed(&role.token.token_bound_cidrs, addr) {
            return Err(Fail::Error(LogicalError::PermissionDenied));
        }
        let parsed = parse_jwt(token).map_err(Fail::Denied)?;
        let local = !config.pem_keys.is_empty();
        if local {
            let alg = allowed_alg(&parsed.alg, &[]).map_err(Fail::Denied)?;
            let keys = parse_pem_keys(&config.pem_keys).map_err(LogicalError::internal)?;
            match check_signature(&parsed, alg, &keys) {
                SigCheck::Valid => {}
                SigCheck::NoKey(m) => return Err(denied(m)),
                SigCheck::Invalid => return Err(denied("signature verification failed")),
            }
            check_k8s_claims(&parsed.claims, config, &role, now_unix()).map_err(Fail::Denied)?;
        } else if config.kubernetes_host.is_empty() {
            return Err(Fail::Error(bad("the mount has neither 'pem_keys' nor 'kubernetes_host' configured")));
        }
        let mut sa = service_account(&parsed.claims).map_err(Fail::Denied)?;
        if !role.bound_service_account_names.iter().any(|p| glob_match(p, &sa.name)) {
            return Err(denied("service account name not authorized"));
        }
        if !role.bound_service_account_namespaces.iter().any(|p| glob_match(p, &sa.namespace)) {
            return Err(denied("namespace not authorized"));
        }
        if !local {
            let reviewed = self.token_review(config, token, &role).await?;
            if reviewed.namespace != sa.namespace || reviewed.name != sa.name {
                return Err(denied("JWT names did not match TokenReview"));
            }
            if !reviewed.uid.is_empty() {
                sa.uid = reviewed.uid;
            }
        }
        let alias = if role.alias_name_source == "serviceaccount_name" {
            format!("{}/{}", sa.namespace, sa.name)
        } else if sa.uid.is_empty() {
            return Err(denied("the token has no service account uid claim"));
        } else {
            sa.uid.clone()
        };
        let mut metadata = Map::new();
        metadata.insert("service_account_name".into(), sa.name.clone().into());
        metadata.insert("service_account_namespace".into(), sa.namespace.clone().into());
        metadata.insert("service_account_uid".into(), sa.uid.clone().into());
        if !sa.secret_name.is_empty() {
            metadata.insert("service_account_secret_name".into(), sa.secret_name.clone().into());
        }
        metadata.insert("role".into(), role_name.into());
        let display = format!("{}-{}-{}", self.display_prefix(), sa.namespace, sa.name);
        Ok(role.token.login(display, metadata, alias)?)
    }

    /// Ask the cluster whether `token` is a live service-account token. An
    /// API server that cannot be reached, does not answer in time, refuses
    /// the reviewer or answers nonsense is a 502 ([`TOKEN_REVIEW_FAILED`]);
    /// a well-formed "not authenticated" answer refuses the token (400).
    async fn token_review(&self, c: &K8sConfig, token: &str, role: &K8sRole) -> Result<ServiceAccount, Fail> {
        let internal = |e: String| Fail::Error(LogicalError::internal(format!("TokenReview: {e}")));
        let upstream = |e: String| {
            // The detail may name hosts and addresses: for the log only.
            tracing::warn!(mount = %self.ctx.mount_path, error = %e, "TokenReview request failed");
            Fail::Upstream(TOKEN_REVIEW_FAILED)
        };
        let client = http_client(&c.kubernetes_ca_cert, self.http_timeout).map_err(internal)?;
        let mut spec = Map::new();
        spec.insert("token".into(), token.into());
        if !role.audience.is_empty() {
            spec.insert("audiences".into(), vec![role.audience.clone()].into());
        }
        let mut body = Map::new();
        body.insert("apiVersion".into(), "authentication.k8s.io/v1".into());
        body.insert("kind".into(), "TokenReview".into());
        body.insert("spec".into(), Value::Object(spec));
        let body = Zeroizing::new(serde_json::to_vec(&Value::Object(body)).map_err(|e| internal(e.to_string()))?);
        // Without a reviewer token, the login token reviews itself (Vault's behavior).
        let bearer = if c.token_reviewer_jwt.is_empty() { token } else { c.token_reviewer_jwt.as_str() };
        let url = format!("{}/apis/authentication.k8s.io/v1/tokenreviews", c.kubernetes_host);
        let resp = client
            .post(&url)
            .bearer_auth(bearer)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| upstream(format!("request failed: {e}")))?;
        let status = resp.status().as_u16();
        let unauthorized = "lookup failed: service account unauthorized; this could mean it has been deleted or recreated with a new token";
        if (status == 401 || status == 403) && c.token_reviewer_jwt.is_empty() {
            return Err(denied(unauthorized));
        }
        if !(200..300).contains(&status) {
            return Err(upstream(format!("the API server answered HTTP {status}")));
        }
        let raw = read_limited(resp).await.map_err(upstream)?;
        let v: Value =
            serde_json::from_slice(&raw).map_err(|_| upstream("the API server did not return JSON".into()))?;
        let Some(st) = v.get("status").filter(|s| s.is_object()).cloned() else {
            return Err(upstream("the API server's answer has no TokenReview status".into()));
        };
        let authenticated = st.get("authenticated").and_then(Value::as_bool).unwrap_or(false);
        let error = st.get("error").and_then(Value::as_str).unwrap_or_default();
        if !authenticated || !error.is_empty() {
            return Err(denied(unauthorized));
        }
        if !role.audience.is_empty() {
            let auds: Vec<&str> = st
                .get("audiences")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !auds.contains(&role.audience.as_str()) {
                return Err(denied(
                    "invalid audience (aud) claim: audience claim does not match any expected audience",
                ));
            }
        }
        let user = st.get("user").cloned().unwrap_or(Value::Null);
        let username = user.get("username").and_then(Value::as_str).unwrap_or_default();
        let mut parts = username.splitn(4, ':');
        let (Some("system"), Some("serviceaccount"), Some(ns), Some(name)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(denied("lookup failed: the token is not a service account token"));
        };
        Ok(ServiceAccount {
            namespace: ns.to_string(),
            name: name.to_string(),
            uid: user.get("uid").and_then(Value::as_str).unwrap_or_default().to_string(),
            secret_name: String::new(),
        })
    }
}

/// Claims checks for locally verified service-account tokens.
fn check_k8s_claims(claims: &Map<String, Value>, c: &K8sConfig, role: &K8sRole, now: i64) -> Result<(), String> {
    let lw = Leeways { skew: K8S_LEEWAY, exp: 0, nbf: 0 };
    check_times(claims, now, lw, false)?;
    if !c.disable_iss_validation {
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or_default();
        let configured = if c.issuer.is_empty() { K8S_DEFAULT_ISSUER } else { c.issuer.as_str() };
        // Legacy secret-based tokens always carry the default issuer.
        if iss != configured && iss != K8S_DEFAULT_ISSUER {
            return Err("invalid issuer (iss) claim".into());
        }
    }
    if !role.audience.is_empty() && !audiences(claims).unwrap_or_default().contains(&role.audience) {
        return Err("invalid audience (aud) claim: audience claim does not match any expected audience".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

enum Route<'a> {
    Config,
    Roles,
    Role(&'a str),
    Login,
}

fn route(path: &str) -> Option<Route<'_>> {
    let path = path.trim_end_matches('/');
    match path {
        "config" => Some(Route::Config),
        "role" => Some(Route::Roles),
        "login" => Some(Route::Login),
        _ => match path.strip_prefix(ROLE_PREFIX) {
            Some(name) if !name.contains('/') => Some(Route::Role(name)),
            _ => None,
        },
    }
}

impl Backend for Jwt {
    fn handle<'a>(&'a self, auth: &'a Authorized, req: Request) -> BoxFuture<'a, Result<Response, LogicalError>> {
        Box::pin(async move {
            let u = auth.unsealed();
            let Some(r) = route(&req.path) else {
                return Err(LogicalError::UnsupportedPath(format!(
                    "no handler for route \"auth/{}{}\"",
                    self.ctx.mount_path, req.path
                )));
            };
            let write = matches!(req.op, Operation::Create | Operation::Update);
            let k8s = self.flavor == Flavor::Kubernetes;
            match r {
                Route::Config => match req.op {
                    Operation::Read if k8s => self.read_k8s_config(u).await,
                    Operation::Read => self.read_jwt_config(u).await,
                    _ if write && k8s => self.write_k8s_config(u, req.data).await,
                    _ if write => self.write_jwt_config(u, req.data).await,
                    _ => Err(LogicalError::UnsupportedOperation),
                },
                Route::Roles if req.op == Operation::List => self.list_roles(u).await,
                Route::Role(n) => {
                    let name = role_name(n)?;
                    match req.op {
                        Operation::Read if k8s => self.read_k8s_role(u, name).await,
                        Operation::Read => self.read_jwt_role(u, name).await,
                        _ if write && k8s => self.write_k8s_role(u, name, &req.data).await,
                        _ if write => self.write_jwt_role(u, name, &req.data).await,
                        Operation::Delete => {
                            self.view.delete(&format!("{ROLE_PREFIX}{name}")).await?;
                            Ok(Response::NoContent)
                        }
                        _ => Err(LogicalError::UnsupportedOperation),
                    }
                }
                Route::Login if write && k8s => self.k8s_login(u, req).await,
                Route::Login if write => self.jwt_login(u, req).await,
                _ => Err(LogicalError::UnsupportedOperation),
            }
        })
    }

    fn exists<'a>(&'a self, u: &'a Unsealed, path: &'a str) -> BoxFuture<'a, Result<Option<bool>, LogicalError>> {
        Box::pin(async move {
            let key = match route(path) {
                Some(Route::Config) => CONFIG_KEY.to_string(),
                Some(Route::Role(n)) if valid_name(n) => format!("{ROLE_PREFIX}{n}"),
                _ => return Ok(None),
            };
            Ok(Some(self.view.get(u, &key).await?.is_some()))
        })
    }

    fn unauthenticated_paths(&self) -> &'static [&'static str] {
        &["login"]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use base64::engine::general_purpose::STANDARD;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::auth::lockout::{Lockout, LockoutConfig};
    use crate::barrier::{Barrier, KEYRING_PATH, Keyring};
    use crate::storage::{Storage, WriteBatch};

    // Test keys (generated with openssl for these tests only).
    const ED_PRIV: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIApn+EFIv0x1R1DgXLozP8qqa3JXwVF2bmvekNziVKwT
-----END PRIVATE KEY-----
";
    const ED_PUB: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAh4hwF3s+jt/mQLyc4KGXuaR8uY/lwq3JyCuEEr4akBU=
-----END PUBLIC KEY-----
";
    const ED2_PRIV: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIIvH8OrUOXGjIL17UavtrvcOB/cJisHdHNyIsR4hjmhK
-----END PRIVATE KEY-----
";
    const EC_PRIV: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg43VaWDBr1HdOtkwH
9kCDlP/vwUbfr2yh2wz1qUPCM3ihRANCAAQyQYj3flp6qvFe3g6yzjE4fKIKXi41
hTpKlHrjczsQlMmqjfzPMMTfVC39P7aE2w0YVkVYn9yCqwhkqMEX2K8u
-----END PRIVATE KEY-----
";
    const EC_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEMkGI935aeqrxXt4Oss4xOHyiCl4u
NYU6SpR643M7EJTJqo38zzDE31Qt/T+2hNsNGFZFWJ/cgqsIZKjBF9ivLg==
-----END PUBLIC KEY-----
";
    const EC384_PRIV: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDDJie4nmFQmLkGtz7Sm
lrleP/cF1XBDpV6te/dLmvk2vIrgR/cC+0IKbGreRJ5KHwGhZANiAASh4If6j5yk
QLvOJyURDSsi0kCvUiPcvV3L+oKxRLKaJmlVkGGYnObIUqOrfIa1Eu4fdmBKohFQ
QG42zvJx8J5WmsJvdNluspmyfaPGJJSBg/94rxsWhP7cdZDOCuXiRhs=
-----END PRIVATE KEY-----
";
    const EC384_PUB: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEoeCH+o+cpEC7ziclEQ0rItJAr1Ij3L1d
y/qCsUSymiZpVZBhmJzmyFKjq3yGtRLuH3ZgSqIRUEBuNs7ycfCeVprCb3TZbrKZ
sn2jxiSUgYP/eK8bFoT+3HWQzgrl4kYb
-----END PUBLIC KEY-----
";
    const RSA_PRIV: &str = "-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDDNCqozpIxBWcF
v07V4vrARAQuwpIsBAqwJriXjSwHz4xMegye8x0FY0rj9X3vMjVWZ/w5/Mb6hvQb
9ZAFZlrWnimmnxuWUNLECFHeQgIbmmVradhSmwqWJfYFpJDAmIOvVnsXnhDYCb/F
+B5JstGM+/mjPh1/1oU/5yFhQD5LdBcR5rbs3PXCvJ/4lLCs0xM9g0VW1h9ZpAC9
1409rLv41ryNIh1aKFAJocQq2Oba1sAzZ4RZGQkgBwY1l8a3pDixPlMQrtGSvdz6
IWTvme0+5OX6GxdUcUO2cc9Lbmf3YKxzhG0653yJxePHfvcFmECAUDzhEAlAfTyc
H6UWtf2vAgMBAAECggEAVh3fDg7n9uFzxFjUXk7fIdA/6iMjmnCECJdki1OYD7AU
LK8Rf1Qwwu49nVjx4INNfZutbiWi4OaFrgoFKiSwQYuQQ3ZhFMz+VsZ2269SP7w7
LwqIiVTl9Dy2D2I9DAKc4c8sycwNkUmnxZ5DOm89vE1zof1mxT2uFnWQx9cwRFej
EVVqufPLk9hmzbCZouVml/7uGrmqw36Ra7Wv0KoYClyGC15SzVx8uv7NPdyserJ0
Fi0gpW+TpUf9EnVVhl/NrOQowxTN6MiMuoCBhmZhThzfhp0Y/VczEEQhodfZNTCu
TBoIrEM5O7sleUo8swkOLTljNLKVn+oThuy04m3ReQKBgQDgk4xN+9L8zcGcSx0q
/TJn+NOtRsfjRk5QJCNTrB0QXCsj519v2fJqI00jsf1hM4W4a6FglGYSCPqSUkRb
ruHkkzadht1W6+WMPWIRdvenSi/g3UsqSMRHPl/q8gizXA2A53oXKn5L0Sytfbwj
u85Fs8bAKmTFf2NYG2LtUWAJaQKBgQDehHneZSCkxyIVKNx9RkUbVWy9G5TdSxCw
Y86SFPpBsn28e1hYTHWBrHH+lUEGV9hn3bjOhMF6B1lJhUfdBu6k2DzPu08OKeOW
OJF6blUudOXqp/BSq+Ed48/N6+aWmEDgkhtoxml4IaWg31JU33pA8LXzHM4jj2DG
tmsyr2ATVwKBgDQQwSSLT50grtRnbbm7veXxAFJZ6Jm+gQV/e1k4u/xBAhdu2ud5
pgQJbybpaw8P/N6GxYE4pnlj74Pg4sxGvURbBPx8efBe/HcI/CWEaWI1hughJf4F
pMvHoEE+H9pFazQJdnrMdT9qnWsTjXzTW705Msj2iypmoEebAdJ3XUaRAoGARREt
mqAdD8hXheXW+nNzQ9ayF8iV3lJMbdOs7J7iRr4WVQicFVw2JPfXskO1mThvDV4+
3KtMOopJZo6eDbb3H+eWiIwFL8pEv/3y+eOBQRg7vSg/agm7qEFr4OjV++xqRspT
A6SCXC1lcZefwIRVOA7/CuTn/xWj3koE4Aibc6UCgYA3EhZ+ddZ2AvllFF3HnjuY
E3QD6/8oW5/zgX8/GpZBMD6xKedda8oyqbm/z4IQTy8BVsIPw1BNTL6QyXIB3biw
LZmwO6buLTH49UYTi3OMs65VAmpW4N9rHNQtVMevrHA3qZ2sVT83CmBbsvhnBXYj
vFhfZ0mg9vEJm9hkIn11Iw==
-----END PRIVATE KEY-----
";
    const RSA_PUB: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwzQqqM6SMQVnBb9O1eL6
wEQELsKSLAQKsCa4l40sB8+MTHoMnvMdBWNK4/V97zI1Vmf8OfzG+ob0G/WQBWZa
1p4ppp8bllDSxAhR3kICG5pla2nYUpsKliX2BaSQwJiDr1Z7F54Q2Am/xfgeSbLR
jPv5oz4df9aFP+chYUA+S3QXEea27Nz1wryf+JSwrNMTPYNFVtYfWaQAvdeNPay7
+Na8jSIdWihQCaHEKtjm2tbAM2eEWRkJIAcGNZfGt6Q4sT5TEK7Rkr3c+iFk75nt
PuTl+hsXVHFDtnHPS25n92Csc4RtOud8icXjx373BZhAgFA84RAJQH08nB+lFrX9
rwIDAQAB
-----END PUBLIC KEY-----
";

    struct Fixture {
        _dir: tempfile::TempDir,
        m: Jwt,
        auth: Authorized,
    }

    async fn fixture(flavor: Flavor, threshold: u32) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&format!("sqlite://{}/v.db", dir.path().display())).await.unwrap();
        let barrier = Barrier::new(storage);
        let keyring = Keyring::generate(now_unix()).unwrap();
        let mut b = WriteBatch::new();
        b.put(KEYRING_PATH, Barrier::wrap_keyring(&keyring));
        barrier.storage().write(b).await.unwrap();
        let u = barrier.install(keyring);
        let barrier = Arc::new(barrier);
        let view = View::new(barrier.clone(), "logical/jwt-test/");
        let mount_path = if flavor == Flavor::Jwt { "jwt/" } else { "kubernetes/" };
        let ctx = MethodContext {
            mount_path: mount_path.into(),
            accessor: format!("auth_{}_test", mount_path.trim_end_matches('/')),
            barrier,
            lockout: Arc::new(Lockout::new(LockoutConfig { threshold, ..Default::default() })),
        };
        Fixture { _dir: dir, m: Jwt::new(view, ctx, flavor), auth: Authorized::unauthenticated(u) }
    }

    impl Fixture {
        async fn call(&self, op: Operation, path: &str, data: Value) -> Result<Response, LogicalError> {
            let mut r = Request::new(op, path);
            r.data = data.as_object().cloned().unwrap_or_default();
            r.client_addr = Some("127.0.0.1".parse().unwrap());
            self.m.handle(&self.auth, r).await
        }
        async fn write(&self, path: &str, data: Value) {
            match self.call(Operation::Update, path, data).await {
                Ok(_) => {}
                Err(e) => panic!("write {path}: {e}"),
            }
        }
        async fn login(&self, role: &str, jwt: &str) -> Result<Login, LogicalError> {
            match self.call(Operation::Update, "login", json!({"role": role, "jwt": jwt})).await? {
                Response::Login(l) => Ok(*l),
                other => panic!("expected a login, got {other:?}"),
            }
        }
        async fn reject(&self, role: &str, jwt: &str) -> String {
            match self.login(role, jwt).await {
                Err(LogicalError::InvalidRequest(m)) => m,
                other => panic!("expected a 400, got {other:?}"),
            }
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

    fn sign(alg: Algorithm, private_pem: &str, kid: Option<&str>, claims: &Value) -> String {
        let pem = private_pem.as_bytes();
        let key = match alg {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
            _ => EncodingKey::from_rsa_pem(pem),
        }
        .unwrap();
        let mut h = Header::new(alg);
        h.kid = kid.map(String::from);
        jsonwebtoken::encode(&h, claims, &key).unwrap()
    }

    fn b64json(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// The raw public key bytes at the end of a PEM SubjectPublicKeyInfo.
    fn spki_tail(pem: &str, n: usize) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(body).unwrap();
        der[der.len() - n..].to_vec()
    }

    fn ed_jwk(pem: &str, kid: &str) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "kid": kid, "x": URL_SAFE_NO_PAD.encode(spki_tail(pem, 32))})
    }

    fn ec_jwk(pem: &str, kid: &str) -> Value {
        let xy = spki_tail(pem, 64);
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
               "x": URL_SAFE_NO_PAD.encode(&xy[..32]), "y": URL_SAFE_NO_PAD.encode(&xy[32..])})
    }

    const ISS: &str = "https://issuer.example";

    fn claims(extra: Value) -> Value {
        let now = now_unix();
        let mut c = json!({"iss": ISS, "aud": "vault", "sub": "user-1", "email": "alice@example.com",
                           "groups": ["admins", "dev"], "org": {"team": "core"}, "iat": now, "exp": now + 300});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    // --- a tiny HTTP server for JWKS, discovery and TokenReview ---------------

    #[derive(Clone, Default)]
    struct Mock {
        routes: Arc<Mutex<HashMap<String, (u16, String)>>>,
        /// (path, authorization header, body) of every request.
        seen: Arc<Mutex<Vec<(String, String, String)>>>,
    }

    impl Mock {
        async fn start() -> (Mock, SocketAddr) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mock = Mock::default();
            let m = mock.clone();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = listener.accept().await {
                    let m = m.clone();
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 4096];
                        let head_end = loop {
                            let n = s.read(&mut chunk).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                        let header = |name: &str| {
                            head.lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                                })
                                .unwrap_or_default()
                        };
                        let len: usize = header("content-length").parse().unwrap_or(0);
                        while buf.len() < head_end + len {
                            let n = s.read(&mut chunk).await.unwrap_or(0);
                            if n == 0 {
                                break;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
                        let path = head.split_whitespace().nth(1).unwrap_or_default().to_string();
                        m.seen.lock().unwrap().push((path.clone(), header("authorization"), body));
                        let (status, text) =
                            m.routes.lock().unwrap().get(&path).cloned().unwrap_or((404, "{}".to_string()));
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                            text.len()
                        );
                        let _ = s.write_all(resp.as_bytes()).await;
                    });
                }
            });
            (mock, addr)
        }

        fn set(&self, path: &str, status: u16, body: Value) {
            self.routes.lock().unwrap().insert(path.to_string(), (status, body.to_string()));
        }

        fn hits(&self, path: &str) -> usize {
            self.seen.lock().unwrap().iter().filter(|(p, _, _)| p == path).count()
        }
    }

    // --- pure helpers ----------------------------------------------------------

    #[test]
    fn pem_keys_of_every_kind() {
        assert_eq!(parse_pem_key(ED_PUB).unwrap().kind, KeyKind::Ed25519);
        assert_eq!(parse_pem_key(EC_PUB).unwrap().kind, KeyKind::P256);
        assert_eq!(parse_pem_key(EC384_PUB).unwrap().kind, KeyKind::P384);
        assert_eq!(parse_pem_key(RSA_PUB).unwrap().kind, KeyKind::Rsa);
        assert!(parse_pem_key(ED_PRIV).unwrap_err().contains("private key"));
        assert!(parse_pem_key("garbage").is_err());
        let broken = ED_PUB.replace("MCow", "MCox");
        assert!(parse_pem_key(&broken).is_err());
        assert!(parse_pem_keys(&[ED_PUB.into(), "x".into()]).unwrap_err().starts_with("public key #2"));
    }

    #[test]
    fn claim_paths_and_globs() {
        let c = json!({"a": {"b": {"c": "deep"}}, "kubernetes.io": {"namespace": "apps"}, "x.y": "lit",
                       "groups": ["g1", "g2"], "s/l": {"~t": 1}})
        .as_object()
        .cloned()
        .unwrap();
        assert_eq!(claim(&c, "a.b.c"), Some(&json!("deep")));
        assert_eq!(claim(&c, "/a/b/c"), Some(&json!("deep")));
        assert_eq!(claim(&c, "kubernetes.io.namespace"), Some(&json!("apps")));
        assert_eq!(claim(&c, "x.y"), Some(&json!("lit")));
        assert_eq!(claim(&c, "/groups/1"), Some(&json!("g2")));
        assert_eq!(claim(&c, "/s~1l/~0t"), Some(&json!(1)));
        assert_eq!(claim(&c, "a.b.missing"), None);
        assert_eq!(claim(&c, "/nope"), None);
        assert!(glob_match("*", "anything"));
        assert!(glob_match("web-*", "web-1"));
        assert!(glob_match("*-prod", "api-prod"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("web-*", "api"));
        assert!(!glob_match("a*a", "a"));
        assert!(glob_match("web", "web") && !glob_match("web", "web2"));
    }

    #[test]
    fn time_checks_with_leeway() {
        let lw = Leeways { skew: 60, exp: 150, nbf: 150 };
        let c = |v: Value| v.as_object().cloned().unwrap();
        let now = 1_000_000;
        assert!(check_times(&c(json!({"exp": now + 10})), now, lw, true).is_ok());
        assert!(check_times(&c(json!({"exp": now - 200})), now, lw, true).is_ok(), "within leeway");
        assert_eq!(check_times(&c(json!({"exp": now - 211})), now, lw, true).unwrap_err(), "token is expired");
        let none = Leeways { skew: 0, exp: 0, nbf: 0 };
        assert!(check_times(&c(json!({"exp": now - 1})), now, none, true).is_err());
        assert!(
            check_times(&c(json!({"exp": now + 10, "nbf": now + 5000})), now, lw, true)
                .unwrap_err()
                .contains("not yet valid")
        );
        assert!(
            check_times(&c(json!({"exp": now + 10, "iat": now + 5000})), now, lw, true).unwrap_err().contains("future")
        );
        assert!(check_times(&c(json!({})), now, lw, true).unwrap_err().contains("no issued at"));
        assert!(check_times(&c(json!({})), now, lw, false).is_ok(), "legacy k8s tokens have no times");
        assert!(check_times(&c(json!({"iat": now - 100})), now, lw, true).is_ok());
        assert!(check_times(&c(json!({"iat": now - 1000})), now, lw, true).unwrap_err().contains("expired"));
        assert!(check_times(&c(json!({"exp": "soon"})), now, lw, true).is_err());
        assert!(check_times(&c(json!({"exp": (now + 10) as f64 + 0.5})), now, lw, true).is_ok());
    }

    #[test]
    fn token_parsing_and_algorithms() {
        assert!(parse_jwt("a.b").is_err());
        assert!(parse_jwt("a.b.c.d").is_err());
        assert!(parse_jwt("!!.e30.x").unwrap_err().contains("base64url"));
        let h = b64json(&json!({"alg": "EdDSA", "crit": ["exp"]}));
        assert!(parse_jwt(&format!("{h}.e30.x")).unwrap_err().contains("critical"));
        let h = b64json(&json!({"alg": "EdDSA", "kid": "k"}));
        let raw = format!("{h}.e30.sig");
        let p = parse_jwt(&raw).unwrap();
        assert_eq!((p.alg.as_str(), p.kid.as_deref(), p.signature), ("EdDSA", Some("k"), "sig"));
        assert_eq!(p.message, format!("{h}.e30"));
        assert!(allowed_alg("none", &[]).unwrap_err().contains("unsigned"));
        assert!(allowed_alg("NONE", &[]).is_err());
        assert!(allowed_alg("HS256", &[]).unwrap_err().contains("public-key"));
        assert!(allowed_alg("HS256", &["HS256".into()]).is_err(), "never HMAC, whatever the config");
        assert!(allowed_alg("ES512", &[]).is_err());
        assert_eq!(allowed_alg("ES256", &[]).unwrap(), Algorithm::ES256);
        assert!(allowed_alg("EdDSA", &["ES256".into()]).is_err());
    }

    #[test]
    fn jwks_entries() {
        assert_eq!(parse_jwk(&ed_jwk(ED_PUB, "a")).unwrap().kind, KeyKind::Ed25519);
        let ec = parse_jwk(&ec_jwk(EC_PUB, "b")).unwrap();
        assert_eq!((ec.kind, ec.kid.as_deref(), ec.alg.as_deref()), (KeyKind::P256, Some("b"), Some("ES256")));
        assert!(parse_jwk(&json!({"kty": "oct", "k": "c2VjcmV0"})).is_none(), "symmetric keys are never used");
        assert!(parse_jwk(&json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"})).is_none());
        let mut bad = ec_jwk(EC_PUB, "c");
        bad["x"] = json!(URL_SAFE_NO_PAD.encode([1u8; 32]));
        assert!(parse_jwk(&bad).is_none(), "a point off the curve is refused");
    }

    // --- JWT flavor ------------------------------------------------------------

    async fn jwt_fixture(threshold: u32) -> Fixture {
        let f = fixture(Flavor::Jwt, threshold).await;
        f.write("config", json!({"jwt_validation_pubkeys": [ED_PUB, EC_PUB, RSA_PUB, EC384_PUB], "bound_issuer": ISS}))
            .await;
        f.write(
            "role/app",
            json!({"role_type": "jwt", "bound_audiences": ["vault", "other"], "user_claim": "email",
                   "bound_claims": {"/groups": "admins", "org.team": ["core", "platform"]},
                   "claim_mappings": {"sub": "subject", "/org/team": "team"}, "groups_claim": "groups",
                   "token_policies": "p1,P2", "token_ttl": "1h", "token_max_ttl": 7200, "token_num_uses": 4}),
        )
        .await;
        f
    }

    #[tokio::test]
    async fn jwt_config_validation() {
        let f = fixture(Flavor::Jwt, 5).await;
        use Operation::*;
        assert!(matches!(f.call(Read, "config", json!({})).await, Err(LogicalError::NotFound)));
        let one = "exactly one of 'jwt_validation_pubkeys', 'jwks_url' or 'oidc_discovery_url' must be set";
        assert_eq!(err_msg(f.call(Update, "config", json!({})).await), one);
        assert_eq!(
            err_msg(
                f.call(Update, "config", json!({"jwt_validation_pubkeys": [ED_PUB], "jwks_url": "https://x"})).await
            ),
            one
        );
        let e = err_msg(
            f.call(Update, "config", json!({"jwt_validation_pubkeys": [ED_PUB], "jwt_supported_algs": ["HS256"]}))
                .await,
        );
        assert!(e.contains("jwt_supported_algs"), "{e}");
        assert!(
            f.call(Update, "config", json!({"jwt_validation_pubkeys": [ED_PUB], "jwt_supported_algs": "none"}))
                .await
                .is_err()
        );
        let e = err_msg(f.call(Update, "config", json!({"jwt_validation_pubkeys": [ED_PRIV]})).await);
        assert!(e.contains("private key"), "{e}");
        assert!(f.call(Update, "config", json!({"jwks_url": "ftp://x"})).await.is_err());
        assert!(
            f.call(Update, "config", json!({"jwt_validation_pubkeys": ED_PUB, "default_role": "a/b"})).await.is_err()
        );
        f.write(
            "config",
            json!({"jwt_validation_pubkeys": ED_PUB, "bound_issuer": ISS, "default_role": "app",
                   "jwt_supported_algs": ["EdDSA", "ES256"], "oidc_client_secret": "s3cret"}),
        )
        .await;
        let d = data(f.call(Read, "config", json!({})).await.unwrap());
        assert_eq!(d["jwt_validation_pubkeys"], json!([ED_PUB.trim()]));
        assert_eq!(d["bound_issuer"], ISS);
        assert_eq!(d["default_role"], "app");
        assert_eq!(d["jwt_supported_algs"], json!(["EdDSA", "ES256"]));
        assert!(!Value::Object(d).to_string().contains("s3cret"), "secrets are never returned");
        assert_eq!(f.m.exists(f.auth.unsealed(), "config").await.unwrap(), Some(true));
    }

    #[tokio::test]
    async fn jwt_role_crud_and_validation() {
        let f = fixture(Flavor::Jwt, 5).await;
        use Operation::*;
        assert!(matches!(f.call(List, "role/", json!({})).await, Err(LogicalError::NotFound)));
        let e = err_msg(f.call(Update, "role/r", json!({"role_type": "oidc", "bound_audiences": "x"})).await);
        assert!(e.contains("\"oidc\"") && e.contains("not supported"), "{e}");
        assert!(f.call(Update, "role/r", json!({"role_type": "saml", "bound_audiences": "x"})).await.is_err());
        let e = err_msg(f.call(Update, "role/r", json!({"token_policies": "a"})).await);
        assert!(e.contains("at least one bound constraint"), "{e}");
        let e = err_msg(f.call(Update, "role/r", json!({"bound_audiences": "x", "bound_claims_type": "glob"})).await);
        assert!(e.contains("glob"), "{e}");
        let e =
            err_msg(f.call(Update, "role/r", json!({"bound_audiences": "x", "claim_mappings": {"sub": "role"}})).await);
        assert!(e.contains("reserved"), "{e}");
        assert!(
            f.call(Update, "role/r", json!({"bound_audiences": "x", "claim_mappings": {"a": "m", "b": "m"}}))
                .await
                .is_err()
        );
        assert!(
            f.call(Update, "role/r", json!({"bound_audiences": "x", "bound_claims": {"g": {"nested": 1}}}))
                .await
                .is_err()
        );
        assert!(f.call(Update, "role/r", json!({"bound_audiences": "x", "user_claim": ""})).await.is_err());
        assert!(f.call(Update, "role/r", json!({"bound_audiences": "x", "clock_skew_leeway": -5})).await.is_err());
        assert!(
            f.call(Update, "role/r", json!({"bound_audiences": "x", "token_bound_cidrs": ["10.0.0.0/99"]}))
                .await
                .is_err()
        );
        assert!(f.call(Update, "role/a%b", json!({"bound_audiences": "x"})).await.is_err());
        assert_eq!(f.m.exists(f.auth.unsealed(), "role/r").await.unwrap(), Some(false));

        f.write(
            "role/r",
            json!({"bound_audiences": "x,y", "policies": ["A"], "clock_skew_leeway": "2m",
                                 "expiration_leeway": -1, "bound_claims": {"groups": ["a", "b"]}}),
        )
        .await;
        assert_eq!(f.m.exists(f.auth.unsealed(), "role/r").await.unwrap(), Some(true));
        let d = data(f.call(Read, "role/r", json!({})).await.unwrap());
        assert_eq!(d["role_type"], "jwt");
        assert_eq!(d["user_claim"], "sub", "default user claim");
        assert_eq!(d["bound_audiences"], json!(["x", "y"]));
        assert_eq!(d["bound_claims"], json!({"groups": ["a", "b"]}));
        assert_eq!(d["bound_claims_type"], "string");
        assert_eq!(d["token_policies"], json!(["a"]));
        assert_eq!((d["clock_skew_leeway"].as_i64(), d["expiration_leeway"].as_i64()), (Some(120), Some(-1)));
        // An update keeps what it does not mention.
        f.write("role/r", json!({"bound_subject": "s"})).await;
        let d = data(f.call(Read, "role/r", json!({})).await.unwrap());
        assert_eq!((d["bound_subject"].as_str(), d["bound_audiences"].clone()), (Some("s"), json!(["x", "y"])));
        assert_eq!(data(f.call(List, "role/", json!({})).await.unwrap())["keys"], json!(["r"]));
        f.call(Delete, "role/r", json!({})).await.unwrap();
        assert!(matches!(f.call(Read, "role/r", json!({})).await, Err(LogicalError::NotFound)));
        assert!(matches!(f.call(Read, "nope", json!({})).await, Err(LogicalError::UnsupportedPath(_))));
        assert!(matches!(f.call(Read, "login", json!({})).await, Err(LogicalError::UnsupportedOperation)));
        assert_eq!(f.m.unauthenticated_paths(), &["login"]);
    }

    #[tokio::test]
    async fn roles_cannot_grant_root_and_leeways_are_bounded() {
        let f = fixture(Flavor::Jwt, 5).await;
        use Operation::*;
        for body in [
            json!({"bound_audiences": "x", "token_policies": ["root"]}),
            json!({"bound_audiences": "x", "policies": "a,ROOT"}),
        ] {
            let e = err_msg(f.call(Update, "role/r", body.clone()).await);
            assert!(e.contains("cannot create root tokens"), "{body}: {e}");
        }
        assert!(matches!(f.call(Read, "role/r", json!({})).await, Err(LogicalError::NotFound)));
        for (field, v) in [
            ("clock_skew_leeway", json!(9_223_372_036_854_775_807i64)),
            ("expiration_leeway", json!("100000h")),
            ("not_before_leeway", json!(86_401)),
            ("expiration_leeway", json!(-2)),
        ] {
            let e = err_msg(f.call(Update, "role/r", json!({"bound_audiences": "x", field: v})).await);
            assert!(e.contains(field), "{field}={v}: {e}");
        }
        f.write("role/r", json!({"bound_audiences": "x", "expiration_leeway": "24h", "not_before_leeway": -1})).await;

        let k = fixture(Flavor::Kubernetes, 5).await;
        let e = err_msg(
            k.call(
                Update,
                "role/web",
                json!({"bound_service_account_names": "web", "bound_service_account_namespaces": "apps",
                       "token_policies": "root"}),
            )
            .await,
        );
        assert!(e.contains("cannot create root tokens"), "{e}");
        assert!(matches!(k.call(Read, "role/web", json!({})).await, Err(LogicalError::NotFound)));
    }

    #[tokio::test]
    async fn jwt_login_with_every_key_type() {
        let f = jwt_fixture(100).await;
        for (alg, key) in [
            (Algorithm::EdDSA, ED_PRIV),
            (Algorithm::ES256, EC_PRIV),
            (Algorithm::ES384, EC384_PRIV),
            (Algorithm::RS256, RSA_PRIV),
            (Algorithm::PS256, RSA_PRIV),
        ] {
            let l = f.login("app", &sign(alg, key, None, &claims(json!({})))).await.unwrap();
            assert_eq!(l.policies, vec!["p1", "p2"], "{alg:?}");
            assert_eq!((l.ttl, l.max_ttl, l.num_uses), (3600, 7200, 4));
            assert_eq!(l.display_name, "jwt-alice@example.com");
            assert_eq!(l.alias, "alice@example.com");
            assert_eq!(Value::Object(l.metadata.clone()), json!({"role": "app", "subject": "user-1", "team": "core"}));
            assert!(l.renewable && !l.no_default_policy);
        }
        // An audience list, a bound claim given as a single string, a second allowed value.
        let c = claims(json!({"aud": ["x", "other"], "groups": "admins", "org": {"team": "platform"}}));
        assert!(f.login("app", &sign(Algorithm::EdDSA, ED_PRIV, None, &c)).await.is_ok());
        // Expired a little, within the default leeways (60 s skew + 150 s).
        let c = claims(json!({"exp": now_unix() - 100, "iat": now_unix() - 400}));
        assert!(f.login("app", &sign(Algorithm::EdDSA, ED_PRIV, None, &c)).await.is_ok());
        // The default role is used when none is given.
        f.write("config", json!({"jwt_validation_pubkeys": [ED_PUB], "bound_issuer": ISS, "default_role": "app"}))
            .await;
        let jwt = sign(Algorithm::EdDSA, ED_PRIV, None, &claims(json!({})));
        let r = f.call(Operation::Update, "login", json!({"jwt": jwt})).await.unwrap();
        assert!(matches!(r, Response::Login(_)));
        // The key set no longer has the EC key.
        let e = f.reject("app", &sign(Algorithm::ES256, EC_PRIV, None, &claims(json!({})))).await;
        assert_eq!(e, "no configured key can verify ES256 signatures");
    }

    #[tokio::test]
    async fn jwt_login_rejections() {
        let f = jwt_fixture(100).await;
        let ed = |c: Value| sign(Algorithm::EdDSA, ED_PRIV, None, &c);
        let now = now_unix();
        let cases: Vec<(String, &str)> = vec![
            (ed(claims(json!({"aud": "elsewhere"}))), "invalid audience"),
            (ed(claims(json!({"aud": null}))), "invalid audience"),
            (ed(claims(json!({"iss": "https://evil.example"}))), "invalid issuer"),
            (ed(claims(json!({"iss": null}))), "invalid issuer"),
            (ed(claims(json!({"exp": now - 3600}))), "token is expired"),
            (ed(claims(json!({"nbf": now + 3600}))), "not yet valid"),
            (ed(claims(json!({"iat": now + 3600}))), "issued in the future"),
            (ed(claims(json!({"exp": null, "iat": null}))), "no issued at"),
            (ed(claims(json!({"groups": ["dev"]}))), "claim \"/groups\" does not match"),
            (ed(claims(json!({"org": null}))), "claim \"org.team\" is missing"),
            (ed(claims(json!({"email": null}))), "claim \"email\" not found"),
            (sign(Algorithm::EdDSA, ED2_PRIV, None, &claims(json!({}))), "signature verification failed"),
            ("not-a-jwt".into(), "malformed token"),
        ];
        for (jwt, want) in cases {
            let e = f.reject("app", &jwt).await;
            assert!(e.contains(want), "want {want:?}, got {e:?}");
        }
        // alg none, with or without a signature.
        let unsigned = format!("{}.{}.", b64json(&json!({"alg": "none"})), b64json(&claims(json!({}))));
        assert!(f.reject("app", &unsigned).await.contains("unsigned"));
        // HMAC "signed" with the public key as the secret (key confusion).
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(json!({})),
            &EncodingKey::from_secret(ED_PUB.as_bytes()),
        )
        .unwrap();
        assert!(f.reject("app", &hs).await.contains("HS256"));
        // A valid signature over a header that was swapped afterwards.
        let good = ed(claims(json!({})));
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged_payload = b64json(&claims(json!({"email": "mallory@example.com"})));
        parts[1] = &forged_payload;
        assert!(f.reject("app", &parts.join(".")).await.contains("signature verification failed"));
        // Unknown role; missing inputs.
        assert!(f.reject("ghost", &good).await.contains("role \"ghost\" could not be found"));
        assert_eq!(err_msg(f.call(Operation::Update, "login", json!({"role": "app"})).await), "missing jwt");
        let long = "r".repeat(300);
        assert!(
            err_msg(f.call(Operation::Update, "login", json!({"role": long, "jwt": good})).await)
                .contains("invalid role name")
        );
        assert_eq!(err_msg(f.call(Operation::Update, "login", json!({"jwt": good})).await), "missing role");
        // An audience in the token but none bound on the role.
        f.write("role/subj", json!({"bound_subject": "user-1"})).await;
        assert!(f.reject("subj", &good).await.contains("no audiences bound"));
        let no_aud = ed(claims(json!({"aud": null})));
        assert!(f.login("subj", &no_aud).await.is_ok());
        assert!(f.reject("subj", &ed(claims(json!({"aud": null, "sub": "user-2"})))).await.contains("bound subject"));
        // Zero leeway: a token one second past exp is refused.
        f.write("role/strict", json!({"bound_subject": "user-1", "clock_skew_leeway": -1, "expiration_leeway": -1}))
            .await;
        assert!(f.reject("strict", &ed(claims(json!({"aud": null, "exp": now - 2})))).await.contains("expired"));
        // Restricted algorithms.
        f.write("config", json!({"jwt_validation_pubkeys": [ED_PUB, EC_PUB], "jwt_supported_algs": ["ES256"]})).await;
        assert!(f.reject("subj", &no_aud).await.contains("not supported"));
        // CIDR-bound role from another address: 403, not counted.
        f.write("role/net", json!({"bound_subject": "user-1", "token_bound_cidrs": ["10.0.0.0/8"]})).await;
        let es = sign(Algorithm::ES256, EC_PRIV, None, &claims(json!({"aud": null})));
        assert!(matches!(f.login("net", &es).await, Err(LogicalError::PermissionDenied)));
    }

    /// Log in as `role` from `addr`.
    async fn login_from(f: &Fixture, role: &str, jwt: &str, addr: &str) -> Result<Response, LogicalError> {
        let mut r = Request::new(Operation::Update, "login");
        r.data = json!({"role": role, "jwt": jwt}).as_object().cloned().unwrap();
        r.client_addr = Some(addr.parse().unwrap());
        f.m.handle(&f.auth, r).await
    }

    /// Garbage tokens never lock a role: five addresses sending forged
    /// tokens (far past the user-lockout threshold of 3) leave the role
    /// working for everyone. Bad requests drain only their own address's
    /// budget: past it that address gets a 429, and no other address does.
    #[tokio::test]
    async fn forged_tokens_lock_no_role_and_only_their_own_address() {
        let f = jwt_fixture(3).await;
        let good = sign(Algorithm::EdDSA, ED_PRIV, None, &claims(json!({})));
        let forged = sign(Algorithm::EdDSA, ED2_PRIV, None, &claims(json!({})));
        for i in 1..=5 {
            for _ in 0..5 {
                let r = login_from(&f, "app", &forged, &format!("192.0.2.{i}")).await;
                assert!(matches!(r, Err(LogicalError::InvalidRequest(_))), "{r:?}");
            }
        }
        assert!(matches!(login_from(&f, "app", &good, "198.51.100.1").await, Ok(Response::Login(_))));
        assert!(matches!(login_from(&f, "app", &good, "192.0.2.1").await, Ok(Response::Login(_))));

        // The budget refills one per second while the loop runs: count the
        // attempts the address gets before its first 429.
        let attacker = "203.0.113.66";
        let burst = crate::auth::lockout::SIGNED_BURST as usize;
        let mut refused_after = None;
        for i in 0..3 * burst {
            match login_from(&f, "app", &forged, attacker).await {
                Err(LogicalError::InvalidRequest(_)) => {}
                Err(LogicalError::RateLimited(_)) => {
                    refused_after = Some(i);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        let n = refused_after.expect("the address was never limited");
        assert!(n >= burst, "limited after {n} bad requests");
        for jwt in [&forged, &good] {
            match login_from(&f, "app", jwt, attacker).await {
                Err(LogicalError::RateLimited(m)) => assert!(m.contains("from this address"), "{m}"),
                other => panic!("expected a 429, got {other:?}"),
            }
        }
        assert!(matches!(login_from(&f, "app", &good, "192.0.2.2").await, Ok(Response::Login(_))));
        assert!(matches!(login_from(&f, "app", &good, "2001:db8::1").await, Ok(Response::Login(_))));
    }

    /// A TokenReview API that cannot be reached, does not answer in time or
    /// answers nonsense is a 502 with a generic message, and each such
    /// failure is charged to the caller's address.
    #[tokio::test]
    async fn kubernetes_token_review_failures_are_502() {
        let review = "/apis/authentication.k8s.io/v1/tokenreviews";
        let mut f = fixture(Flavor::Kubernetes, 100).await;
        f.m.http_timeout = Duration::from_millis(500);
        f.write("role/web", json!({"bound_service_account_names": "web", "bound_service_account_namespaces": "apps"}))
            .await;
        let jwt = sign(Algorithm::EdDSA, ED2_PRIV, None, &projected("apps", "web", json!({})));
        let expect_502 = |r: Result<Response, LogicalError>, what: &str| match r {
            Err(LogicalError::Upstream(m)) => assert_eq!(m, TOKEN_REVIEW_FAILED, "{what}"),
            other => panic!("{what}: expected a 502, got {other:?}"),
        };

        // Nothing listens on the port.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        f.write("config", json!({"kubernetes_host": format!("http://{closed}"), "token_reviewer_jwt": "rv"})).await;
        let started = Instant::now();
        expect_502(login_from(&f, "web", &jwt, "192.0.2.10").await, "closed port");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

        // Something accepts the connection and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = silent.accept().await {
                held.push(sock);
            }
        });
        f.write("config", json!({"kubernetes_host": format!("http://{silent_addr}")})).await;
        let started = Instant::now();
        expect_502(login_from(&f, "web", &jwt, "192.0.2.10").await, "silent server");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        holder.abort();

        // Answers that are not a TokenReview.
        let (mock, addr) = Mock::start().await;
        f.write("config", json!({"kubernetes_host": format!("http://{addr}"), "token_reviewer_jwt": "rv"})).await;
        for (status, body) in [(200, json!({})), (201, json!({"status": "yes"})), (500, json!({})), (401, json!({}))] {
            mock.set(review, status, body.clone());
            expect_502(login_from(&f, "web", &jwt, "192.0.2.10").await, &format!("{status} {body}"));
        }
        mock.routes.lock().unwrap().insert(review.into(), (200, "not json".into()));
        expect_502(login_from(&f, "web", &jwt, "192.0.2.10").await, "not JSON");

        // Each failure was charged to 192.0.2.10 (7 so far; the budget
        // refills one per second meanwhile), none elsewhere.
        let burst = crate::auth::lockout::SIGNED_BURST as usize;
        let mut limited = false;
        for _ in 7..3 * burst {
            match login_from(&f, "web", &jwt, "192.0.2.10").await {
                Err(LogicalError::Upstream(_)) => {}
                Err(LogicalError::RateLimited(_)) => {
                    limited = true;
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(limited, "TokenReview failures were not charged to the address");
        expect_502(login_from(&f, "web", &jwt, "192.0.2.11").await, "another address");
    }

    #[tokio::test]
    async fn jwks_selection_rotation_and_discovery() {
        let (mock, addr) = Mock::start().await;
        mock.set("/jwks", 200, json!({"keys": [ed_jwk(ED_PUB, "k1"), {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]}));
        let f = fixture(Flavor::Jwt, 100).await;
        let e =
            err_msg(f.call(Operation::Update, "config", json!({"jwks_url": format!("http://{addr}/missing")})).await);
        assert!(e.contains("error checking JWKS URL") && !e.contains("404"), "one message, no detail: {e}");
        f.write("config", json!({"jwks_url": format!("http://{addr}/jwks"), "bound_issuer": ISS})).await;
        assert_eq!(mock.hits("/jwks"), 1, "the config write checks the URL");
        f.write("role/app", json!({"bound_audiences": "vault"})).await;
        let ed1 = sign(Algorithm::EdDSA, ED_PRIV, Some("k1"), &claims(json!({})));
        assert_eq!(f.login("app", &ed1).await.unwrap().alias, "user-1");
        assert_eq!(f.login("app", &ed1).await.unwrap().display_name, "jwt-user-1");
        assert_eq!(mock.hits("/jwks"), 1, "the key set is cached");

        // Rotation: a token with a new kid makes one refetch.
        mock.set("/jwks", 200, json!({"keys": [ed_jwk(ED_PUB, "k1"), ec_jwk(EC_PUB, "k2")]}));
        let ec2 = sign(Algorithm::ES256, EC_PRIV, Some("k2"), &claims(json!({})));
        assert!(f.login("app", &ec2).await.is_ok());
        assert_eq!(mock.hits("/jwks"), 2);
        // Unknown kids right after: no new fetch (rate limited), a clear refusal.
        let unknown = sign(Algorithm::EdDSA, ED_PRIV, Some("k9"), &claims(json!({})));
        assert!(f.reject("app", &unknown).await.contains("key id"));
        assert_eq!(mock.hits("/jwks"), 2);
        // A kid that names another key than the one that signed.
        let wrong = sign(Algorithm::EdDSA, ED2_PRIV, Some("k1"), &claims(json!({})));
        assert_eq!(f.reject("app", &wrong).await, "signature verification failed");
        // The JWK's alg restricts it: an EC key marked ES256 never verifies ES384.
        let es384 = sign(Algorithm::ES384, EC384_PRIV, Some("k2"), &claims(json!({})));
        assert!(f.reject("app", &es384).await.contains("key"));

        // The issuer is down: a refetch for an unknown kid falls back to the
        // cached keys (a clear 400, not a 500), and known keys keep working.
        mock.set("/jwks", 500, json!({}));
        tokio::time::sleep(JWKS_FORCED_REFRESH_INTERVAL + Duration::from_millis(100)).await;
        assert!(f.reject("app", &unknown).await.contains("key id"));
        assert_eq!(mock.hits("/jwks"), 3);
        assert!(f.login("app", &ed1).await.is_ok());
        // With nothing cached (a restarted server), the outage is a 502 with
        // a generic message (no URL, no status).
        let fresh = Jwt::new(f.m.view.clone(), f.m.ctx.clone(), Flavor::Jwt);
        let mut r = Request::new(Operation::Update, "login");
        r.data = json!({"role": "app", "jwt": ed1}).as_object().cloned().unwrap();
        match fresh.handle(&f.auth, r).await {
            Err(LogicalError::Upstream(m)) => assert_eq!(m, KEY_FETCH_FAILED),
            other => panic!("expected a 502, got {other:?}"),
        }
        mock.set("/jwks", 200, json!({"keys": [ed_jwk(ED_PUB, "k1")]}));

        // OIDC discovery: keys from jwks_uri, and tokens must carry the discovered issuer.
        let issuer = format!("http://{addr}/idp");
        mock.set(
            "/idp/.well-known/openid-configuration",
            200,
            json!({"issuer": issuer, "jwks_uri": format!("http://{addr}/idp/keys")}),
        );
        mock.set("/idp/keys", 200, json!({"keys": [ed_jwk(ED_PUB, "d1")]}));
        f.write("config", json!({"oidc_discovery_url": format!("{issuer}/")})).await;
        let tok = sign(Algorithm::EdDSA, ED_PRIV, Some("d1"), &claims(json!({"iss": issuer})));
        assert!(f.login("app", &tok).await.is_ok());
        let other_iss = sign(Algorithm::EdDSA, ED_PRIV, Some("d1"), &claims(json!({})));
        assert!(f.reject("app", &other_iss).await.contains("invalid issuer"));
        mock.set(
            "/idp/.well-known/openid-configuration",
            200,
            json!({"issuer": "https://elsewhere", "jwks_uri": format!("http://{addr}/idp/keys")}),
        );
        let e = err_msg(f.call(Operation::Update, "config", json!({"oidc_discovery_url": issuer})).await);
        assert!(e.contains("error checking OIDC discovery URL") && !e.contains("elsewhere"), "{e}");
    }

    // --- Kubernetes flavor -------------------------------------------------------

    const K8S_ISS: &str = "https://kubernetes.default.svc.cluster.local";

    fn projected(ns: &str, sa: &str, extra: Value) -> Value {
        let now = now_unix();
        let mut c = json!({"iss": K8S_ISS, "aud": ["https://kubernetes.default.svc"], "sub": format!("system:serviceaccount:{ns}:{sa}"),
                           "iat": now, "nbf": now, "exp": now + 600,
                           "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": "uid-123"},
                                             "pod": {"name": "web-0", "uid": "pod-uid"}}});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn legacy(ns: &str, sa: &str) -> Value {
        json!({"iss": "kubernetes/serviceaccount", "sub": format!("system:serviceaccount:{ns}:{sa}"),
               "kubernetes.io/serviceaccount/namespace": ns,
               "kubernetes.io/serviceaccount/secret.name": format!("{sa}-token-abcde"),
               "kubernetes.io/serviceaccount/service-account.name": sa,
               "kubernetes.io/serviceaccount/service-account.uid": "uid-legacy"})
    }

    #[tokio::test]
    async fn kubernetes_local_verification() {
        let f = fixture(Flavor::Kubernetes, 100).await;
        use Operation::*;
        assert!(err_msg(f.call(Update, "config", json!({})).await).contains("'kubernetes_host'"));
        assert!(f.call(Update, "config", json!({"pem_keys": ["nope"]})).await.is_err());
        assert!(f.call(Update, "config", json!({"kubernetes_host": "h", "kubernetes_ca_cert": "junk"})).await.is_err());
        f.write(
            "config",
            json!({"pem_keys": [EC_PUB, RSA_PUB], "issuer": K8S_ISS, "token_reviewer_jwt": "reviewer-secret",
                                 "kubernetes_host": "10.0.0.1:6443"}),
        )
        .await;
        let d = data(f.call(Read, "config", json!({})).await.unwrap());
        assert_eq!(d["kubernetes_host"], "https://10.0.0.1:6443");
        assert_eq!(d["token_reviewer_jwt_set"], true);
        assert_eq!(d["issuer"], K8S_ISS);
        assert!(!Value::Object(d).to_string().contains("reviewer-secret"));

        let e = err_msg(
            f.call(
                Update,
                "role/web",
                json!({"bound_service_account_names": "*", "bound_service_account_namespaces": "*"}),
            )
            .await,
        );
        assert!(e.contains("can not both be"), "{e}");
        assert!(f.call(Update, "role/web", json!({"bound_service_account_names": "web"})).await.is_err());
        assert!(f.call(Update, "role/web", json!({"bound_service_account_names": "web", "bound_service_account_namespaces": "apps", "alias_name_source": "x"})).await.is_err());
        f.write(
            "role/web",
            json!({"bound_service_account_names": ["web", "batch-*"], "bound_service_account_namespaces": "apps",
                                   "token_policies": ["app"], "token_ttl": 600}),
        )
        .await;
        let d = data(f.call(Read, "role/web", json!({})).await.unwrap());
        assert_eq!(d["bound_service_account_names"], json!(["web", "batch-*"]));
        assert_eq!(d["alias_name_source"], "serviceaccount_uid");

        let l =
            f.login("web", &sign(Algorithm::ES256, EC_PRIV, None, &projected("apps", "web", json!({})))).await.unwrap();
        assert_eq!(l.policies, vec!["app"]);
        assert_eq!(l.ttl, 600);
        assert_eq!(l.display_name, "kubernetes-apps-web");
        assert_eq!(l.alias, "uid-123");
        assert_eq!(
            Value::Object(l.metadata),
            json!({"service_account_name": "web", "service_account_namespace": "apps", "service_account_uid": "uid-123", "role": "web"})
        );
        let l = f.login("web", &sign(Algorithm::RS256, RSA_PRIV, None, &legacy("apps", "batch-7"))).await.unwrap();
        assert_eq!(l.metadata["service_account_secret_name"], "batch-7-token-abcde");
        assert_eq!(l.alias, "uid-legacy");

        let es = |c: Value| sign(Algorithm::ES256, EC_PRIV, None, &c);
        assert_eq!(f.reject("web", &es(projected("default", "web", json!({})))).await, "namespace not authorized");
        assert_eq!(
            f.reject("web", &es(projected("apps", "api", json!({})))).await,
            "service account name not authorized"
        );
        assert!(
            f.reject("web", &es(projected("apps", "web", json!({"iss": "https://evil"})))).await.contains("issuer")
        );
        assert!(
            f.reject("web", &es(projected("apps", "web", json!({"exp": now_unix() - 3600})))).await.contains("expired")
        );
        assert!(
            f.reject("web", &sign(Algorithm::EdDSA, ED_PRIV, None, &projected("apps", "web", json!({}))))
                .await
                .contains("EdDSA")
        );
        assert!(f.reject("ghost", &es(projected("apps", "web", json!({})))).await.contains("invalid role name"));
        assert!(f.reject("web", &es(json!({"iss": K8S_ISS}))).await.contains("namespace claim"));

        // Audience-bound role; name-based aliases.
        f.write(
            "role/aud",
            json!({"bound_service_account_names": "web", "bound_service_account_namespaces": "*",
                                   "audience": "vault", "alias_name_source": "serviceaccount_name"}),
        )
        .await;
        assert!(f.reject("aud", &es(projected("apps", "web", json!({})))).await.contains("audience"));
        let l = f.login("aud", &es(projected("apps", "web", json!({"aud": ["vault"]})))).await.unwrap();
        assert_eq!(l.alias, "apps/web");
        // Issuer validation can be disabled.
        f.write("config", json!({"pem_keys": EC_PUB, "disable_iss_validation": true})).await;
        assert!(f.login("web", &es(projected("apps", "web", json!({"iss": "https://any"})))).await.is_ok());
    }

    #[tokio::test]
    async fn kubernetes_token_review() {
        let (mock, addr) = Mock::start().await;
        let review = "/apis/authentication.k8s.io/v1/tokenreviews";
        let f = fixture(Flavor::Kubernetes, 100).await;
        f.write("config", json!({"kubernetes_host": format!("http://{addr}"), "token_reviewer_jwt": "reviewer-token"}))
            .await;
        f.write("role/web", json!({"bound_service_account_names": "web", "bound_service_account_namespaces": "apps"}))
            .await;
        // Signed by a key Vault does not know: only the API server can vouch for it.
        let jwt = sign(Algorithm::EdDSA, ED2_PRIV, None, &projected("apps", "web", json!({})));
        mock.set(
            review,
            201,
            json!({"status": {"authenticated": true, "user": {"username": "system:serviceaccount:apps:web", "uid": "uid-live"}}}),
        );
        let l = f.login("web", &jwt).await.unwrap();
        assert_eq!(l.alias, "uid-live");
        let seen = mock.seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(seen.0, review);
        assert_eq!(seen.1, "Bearer reviewer-token");
        let body: Value = serde_json::from_str(&seen.2).unwrap();
        assert_eq!(body["kind"], "TokenReview");
        assert_eq!(body["spec"]["token"], jwt.as_str());

        // Names are checked before asking the API server.
        let other = sign(Algorithm::EdDSA, ED2_PRIV, None, &projected("kube-system", "web", json!({})));
        assert_eq!(f.reject("web", &other).await, "namespace not authorized");
        assert_eq!(mock.hits(review), 1);
        // The API server says the token belongs to someone else.
        mock.set(
            review,
            201,
            json!({"status": {"authenticated": true, "user": {"username": "system:serviceaccount:apps:admin"}}}),
        );
        assert!(f.reject("web", &jwt).await.contains("did not match"));
        // A revoked token.
        mock.set(review, 201, json!({"status": {"authenticated": false, "error": "token has been invalidated"}}));
        assert!(f.reject("web", &jwt).await.contains("service account unauthorized"));
        // The API server refuses the reviewer: the vault's side failed (502), not the caller's token.
        mock.set(review, 403, json!({"kind": "Status"}));
        assert!(matches!(f.login("web", &jwt).await, Err(LogicalError::Upstream(_))));
        // Without a reviewer token, the login token reviews itself.
        f.write("config", json!({"kubernetes_host": format!("http://{addr}")})).await;
        mock.set(review, 201, json!({"status": {"authenticated": true, "user": {"username": "system:serviceaccount:apps:web", "uid": "u"}}}));
        assert!(f.login("web", &jwt).await.is_ok());
        let seen = mock.seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(seen.1, format!("Bearer {jwt}"));
        mock.set(review, 401, json!({"kind": "Status"}));
        assert!(f.reject("web", &jwt).await.contains("unauthorized"));
    }
}
