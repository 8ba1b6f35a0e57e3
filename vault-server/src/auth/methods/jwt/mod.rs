//! The JWT/OIDC auth method (Vault's `jwt`, also mounted as `oidc`): a
//! caller logs in with a JSON Web Token signed by its identity provider,
//! checked against a role's bindings.
//!
//! Signatures are verified with static PEM keys (`jwt_validation_pubkeys`),
//! a JWKS document (`jwks_url`) or the JWKS named by an OIDC discovery
//! document (`oidc_discovery_url`). The interactive OIDC browser flow
//! (`role_type` "oidc") is not served.
//!
//! The pieces, each in its own file, are shared with the Kubernetes method
//! (`methods/kubernetes.rs`), which verifies service-account tokens:
//!
//! - `token.rs`: token parsing and signature checks (`none`/HS* refused);
//! - `keys.rs`: PEM keys, JWKS entries, discovery, the remote key cache;
//! - `claims.rs`: times and leeways, issuer, audiences, bound claims,
//!   claim mappings;
//! - `remote.rs`: outgoing HTTP (timeouts, no redirects, size cap);
//! - `common.rs`: storage layout, routes, field helpers, login answers.
//!
//! There is no per-role lockout: a signature cannot be guessed, and locking a
//! role by name would let anyone lock out every workload of it. Instead each
//! refused token (and each failed call to the issuer that a login caused) is
//! charged to the client address's budget (see `auth/lockout.rs`), which
//! bounds what bad requests cost without one address affecting another. An
//! unreachable, slow or nonsensical JWKS endpoint is a 502 with a generic
//! message (the detail is logged); a configuration write that names one
//! fails with one fixed message whatever went wrong. Error messages name the
//! failed check, never a token or claim value. Tokens are never logged.

pub(crate) mod claims;
pub(crate) mod common;
pub(crate) mod keys;
pub(crate) mod remote;
pub(crate) mod token;

#[cfg(test)]
pub(crate) mod testing;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use self::common::{
    CONFIG_KEY, Fail, PATHS, RoleMethod, Secret, Store, bad, clean_list, denied, nonempty, pem_list, role_name, serve,
    take_secret,
};
use self::keys::{Fetch, KeyCache, KeySource, parse_pem_keys};
use self::remote::{HTTP_TIMEOUT, check_ca_pem, check_url};
use self::token::{VerifyError, allowed_alg, take_jwt};
use super::{LEGACY_ALL, MethodContext, TokenSettings};
use crate::auth::Authorized;
use crate::auth::cidr;
use crate::barrier::view::View;
use crate::barrier::{Unsealed, now_unix};
use crate::logical::{Backend, BoxFuture, LogicalError, Login, PathSpec, Request, Response, fields};

/// The one message for a failed fetch of the issuer's keys.
pub(crate) const KEY_FETCH_FAILED: &str = "fetching the JWT signing keys failed";

/// The JWT/OIDC auth method.
#[derive(Debug)]
pub(crate) struct Jwt {
    store: Store,
    /// The remote key set (JWKS), when the configuration names one.
    keys: KeyCache,
    /// Total time allowed for one outgoing request.
    http_timeout: Duration,
}

/// Pin jsonwebtoken's crypto backend, so that a second backend feature
/// enabled elsewhere in the tree cannot leave it undecided (which would
/// panic on the first verification). Already installed is fine.
pub(crate) fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(&jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER);
}

impl Jwt {
    /// The method over its storage view.
    pub(crate) fn new(view: View, ctx: MethodContext) -> Self {
        install_crypto_provider();
        Self { store: Store { view, ctx }, keys: KeyCache::default(), http_timeout: HTTP_TIMEOUT }
    }
}

// ---------------------------------------------------------------------------
// Stored records
// ---------------------------------------------------------------------------

/// The configuration. Secrets are never returned or printed.
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

impl JwtConfig {
    /// Where remote keys come from, if the configuration names a source.
    fn key_source(&self) -> Option<KeySource> {
        if !self.jwks_url.is_empty() {
            Some(KeySource { url: self.jwks_url.clone(), ca_pem: self.jwks_ca_pem.clone(), discovery: false })
        } else if !self.oidc_discovery_url.is_empty() {
            Some(KeySource {
                url: self.oidc_discovery_url.clone(),
                ca_pem: self.oidc_discovery_ca_pem.clone(),
                discovery: true,
            })
        } else {
            None
        }
    }
}

/// A role.
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

// ---------------------------------------------------------------------------
// Config and roles
// ---------------------------------------------------------------------------

impl Jwt {}

// ---------------------------------------------------------------------------
// Login
// ---------------------------------------------------------------------------

impl Jwt {
    /// The remote key set from `source`, fetched or reused as `mode` says.
    async fn remote_keys(&self, source: &KeySource, mode: Fetch) -> Result<keys::KeySet, String> {
        self.keys.get(source, mode, self.http_timeout, &self.store.ctx.mount_path).await
    }

    /// Verify the token with the configured keys: its claims, and the
    /// issuer the discovery document requires, if any.
    async fn verify<'t>(&self, c: &JwtConfig, jwt: &'t str) -> Result<(token::ParsedJwt<'t>, Option<String>), Fail> {
        let Some(source) = c.key_source() else {
            let keys = parse_pem_keys(&c.jwt_validation_pubkeys).map_err(LogicalError::internal)?;
            let parsed = token::verify(jwt, &c.jwt_supported_algs, &keys).map_err(|e| denied(e.message()))?;
            return Ok((parsed, None));
        };
        let fetch_failed = |e: String| {
            tracing::warn!(mount = %self.store.ctx.mount_path, url = %source.url, error = %e, "fetching the JWT signing keys failed");
            Fail::Upstream(KEY_FETCH_FAILED)
        };
        // Refuse what no key set can make valid before touching the issuer.
        let parsed = token::parse_jwt(jwt).map_err(Fail::Denied)?;
        let alg = allowed_alg(&parsed.alg, &c.jwt_supported_algs).map_err(Fail::Denied)?;
        let (keys, issuer) = self.remote_keys(&source, Fetch::IfStale).await.map_err(fetch_failed)?;
        match token::check_signature(&parsed, alg, &keys) {
            Ok(()) => Ok((parsed, issuer)),
            Err(VerifyError::NoKey(m)) => {
                // The issuer may have rotated its keys: refetch once.
                let (keys, issuer) = self.remote_keys(&source, Fetch::UnknownKid).await.map_err(fetch_failed)?;
                match token::check_signature(&parsed, alg, &keys) {
                    Ok(()) => Ok((parsed, issuer)),
                    Err(VerifyError::NoKey(_)) => Err(denied(m)),
                    Err(e) => Err(denied(e.message())),
                }
            }
            Err(e) => Err(denied(e.message())),
        }
    }

    async fn authenticate(
        &self,
        u: &Unsealed,
        config: &JwtConfig,
        role_name: &str,
        token: &str,
        addr: Option<IpAddr>,
    ) -> Result<Login, Fail> {
        let stored = self.store.load_role::<JwtRole>(u, role_name).await?;
        let role = stored.ok_or_else(|| denied(format!("role \"{role_name}\" could not be found")))?;
        if !cidr::allowed(&role.token.token_bound_cidrs, addr) {
            return Err(Fail::Error(LogicalError::PermissionDenied));
        }
        let (parsed, discovered_issuer) = self.verify(config, token).await?;
        let claims = &parsed.claims;
        claims::check_jwt_claims(claims, &role, &config.bound_issuer, discovered_issuer.as_deref(), now_unix())
            .map_err(Fail::Denied)?;
        let user = claims::user_name(claims, &role).map_err(Fail::Denied)?;
        claims::check_groups(claims, &role).map_err(Fail::Denied)?;
        let metadata = claims::jwt_metadata(claims, &role, role_name).map_err(Fail::Denied)?;
        let display = format!("{}-{user}", self.store.display_prefix());
        Ok(role.token.login(display, metadata, user)?)
    }
}

impl RoleMethod for Jwt {
    fn store(&self) -> &Store {
        &self.store
    }

    async fn read_config(&self, u: &Unsealed) -> Result<Response, LogicalError> {
        let c: JwtConfig = self.store.load(u, CONFIG_KEY, "config").await?.ok_or(LogicalError::NotFound)?;
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
    async fn write_config(&self, u: &Unsealed, mut d: Map<String, Value>) -> Result<Response, LogicalError> {
        let secret = take_secret(&mut d, "oidc_client_secret")?;
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
        if let Some(source) = c.key_source() {
            let what = if source.discovery { "OIDC discovery URL" } else { "JWKS URL" };
            // One message whatever failed (refused, timed out, HTTP status,
            // not JSON, no keys): the config write must not tell its caller
            // what answers where on the network. The detail goes to the log.
            if let Err(e) = self.remote_keys(&source, Fetch::Always).await {
                tracing::warn!(mount = %self.store.ctx.mount_path, detail = %e, "checking the {what} failed");
                return Err(bad(format!(
                    "error checking {what}: it could not be fetched or is not a valid key source (see the server log)"
                )));
            }
        } else {
            self.keys.clear().await;
        }
        self.store.store(u, CONFIG_KEY, &c).await?;
        Ok(Response::NoContent)
    }

    async fn read_role(&self, u: &Unsealed, name: &str) -> Result<Response, LogicalError> {
        let r: JwtRole = self.store.load_role(u, name).await?.ok_or(LogicalError::NotFound)?;
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
    async fn write_role(&self, u: &Unsealed, name: &str, d: &Map<String, Value>) -> Result<Response, LogicalError> {
        let mut r: JwtRole = match self.store.load_role(u, name).await? {
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
        if let Some(b) = claims::bound_claims(d)? {
            r.bound_claims = b;
        }
        if let Some(t) = fields::string(d, "bound_claims_type")? {
            match t.as_str() {
                "string" | "" => r.bound_claims_type = "string".into(),
                "glob" => return Err(bad("bound_claims_type \"glob\" is not supported; use \"string\"")),
                other => return Err(bad(format!("invalid 'bound_claims_type' \"{other}\": expected \"string\""))),
            }
        }
        if let Some(m) = claims::claim_mappings(d)? {
            r.claim_mappings = m;
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
        if let Some(v) = claims::leeway(d, "clock_skew_leeway")? {
            r.clock_skew_leeway = v;
        }
        if let Some(v) = claims::leeway(d, "expiration_leeway")? {
            r.expiration_leeway = v;
        }
        if let Some(v) = claims::leeway(d, "not_before_leeway")? {
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
        self.store.store_role(u, name, &r).await?;
        Ok(Response::NoContent)
    }

    async fn login(&self, u: &Unsealed, mut req: Request) -> Result<Response, LogicalError> {
        let addr = req.client_addr;
        self.store.ctx.check_signed(addr)?;
        let token = take_jwt(&mut req.data)?;
        let config: JwtConfig =
            self.store.load(u, CONFIG_KEY, "config").await?.ok_or_else(|| bad("could not load configuration"))?;
        let role = nonempty(&req.data, "role")?
            .or_else(|| Some(config.default_role.clone()).filter(|r| !r.is_empty()))
            .ok_or_else(|| bad("missing role"))?;
        role_name(&role)?;
        let result = self.authenticate(u, &config, &role, &token, addr).await;
        self.store.finish(result, addr)
    }
}

impl Backend for Jwt {
    fn handle<'a>(&'a self, auth: &'a Authorized, req: Request) -> BoxFuture<'a, Result<Response, LogicalError>> {
        Box::pin(async move { serve(self, auth.unsealed(), req).await })
    }

    fn exists<'a>(&'a self, u: &'a Unsealed, path: &'a str) -> BoxFuture<'a, Result<Option<bool>, LogicalError>> {
        Box::pin(self.store.exists(u, path))
    }

    fn paths(&self) -> &'static [PathSpec] {
        PATHS
    }
}

#[cfg(test)]
mod tests {
    use crate::logical::Operation;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::keys::JWKS_FORCED_REFRESH_INTERVAL;
    use super::testing::*;
    use super::*;

    // --- JWT flavor ------------------------------------------------------------

    async fn jwt_fixture(threshold: u32) -> Fixture<Jwt> {
        let f = fixture("jwt/", threshold, Jwt::new).await;
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
        let f = fixture("jwt/", 5, Jwt::new).await;
        use crate::logical::Operation::*;
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
        let f = fixture("jwt/", 5, Jwt::new).await;
        use crate::logical::Operation::*;
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
        let unauthenticated: Vec<&str> = f.m.paths().iter().filter(|p| p.unauthenticated).map(|p| p.pattern).collect();
        assert_eq!(unauthenticated, ["login"]);
    }

    #[tokio::test]
    async fn roles_cannot_grant_root_and_leeways_are_bounded() {
        let f = fixture("jwt/", 5, Jwt::new).await;
        use crate::logical::Operation::*;
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
                let r = f.login_from("app", &forged, &format!("192.0.2.{i}")).await;
                assert!(matches!(r, Err(LogicalError::InvalidRequest(_))), "{r:?}");
            }
        }
        assert!(matches!(f.login_from("app", &good, "198.51.100.1").await, Ok(Response::Login(_))));
        assert!(matches!(f.login_from("app", &good, "192.0.2.1").await, Ok(Response::Login(_))));

        // The budget refills one per second while the loop runs: count the
        // attempts the address gets before its first 429.
        let attacker = "203.0.113.66";
        let burst = crate::auth::lockout::SIGNED_BURST as usize;
        let mut refused_after = None;
        for i in 0..3 * burst {
            match f.login_from("app", &forged, attacker).await {
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
            match f.login_from("app", jwt, attacker).await {
                Err(LogicalError::RateLimited(m)) => assert!(m.contains("from this address"), "{m}"),
                other => panic!("expected a 429, got {other:?}"),
            }
        }
        assert!(matches!(f.login_from("app", &good, "192.0.2.2").await, Ok(Response::Login(_))));
        assert!(matches!(f.login_from("app", &good, "2001:db8::1").await, Ok(Response::Login(_))));
    }

    /// A TokenReview API that cannot be reached, does not answer in time or
    /// answers nonsense is a 502 with a generic message, and each such
    /// failure is charged to the caller's address.
    #[tokio::test]
    async fn jwks_selection_rotation_and_discovery() {
        let (mock, addr) = Mock::start().await;
        mock.set("/jwks", 200, json!({"keys": [ed_jwk(ED_PUB, "k1"), {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]}));
        let f = fixture("jwt/", 100, Jwt::new).await;
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
        let fresh = Jwt::new(f.view.clone(), f.ctx.clone());
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

    /// Regression (found by the JWKS property tests): an issuer's key set
    /// holding an Ed25519 entry with a short `x` panicked while it was read,
    /// so no login of the mount could finish; now the entry is skipped and
    /// the good key works.
    #[tokio::test]
    async fn a_malformed_ed25519_entry_in_the_key_set_does_not_stop_logins() {
        let (mock, addr) = Mock::start().await;
        let mut short = ed_jwk(ED_PUB, "short");
        short["x"] = json!("AAAA");
        mock.set("/jwks", 200, json!({"keys": [short, ed_jwk(ED_PUB, "k1")]}));
        let f = fixture("jwt/", 100, Jwt::new).await;
        f.write("config", json!({"jwks_url": format!("http://{addr}/jwks"), "bound_issuer": ISS})).await;
        f.write("role/app", json!({"bound_audiences": "vault"})).await;
        let tok = sign(Algorithm::EdDSA, ED_PRIV, Some("k1"), &claims(json!({})));
        assert_eq!(f.login("app", &tok).await.unwrap().alias, "user-1");
        let to_short = sign(Algorithm::EdDSA, ED_PRIV, Some("short"), &claims(json!({})));
        assert!(f.reject("app", &to_short).await.contains("key id"));
    }

    /// Property: whatever garbled token reaches the login endpoint, the
    /// answer is a 400 (a refusal charged to the client address), never a
    /// panic, a 5xx or a login. Each case comes from a fresh address, so the
    /// per-address budget (a 429) does not hide the parser's answer.
    #[test]
    fn garbled_tokens_at_login_are_400s() {
        use proptest::test_runner::{Config, TestCaseError, TestRunner};

        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let f = rt.block_on(jwt_fixture(3));
        let mut runner = TestRunner::new(Config { cases: 128, failure_persistence: None, ..Config::default() });
        let n = std::cell::Cell::new(0u32);
        runner
            .run(&token::proptests::garbled_token(), |jwt| {
                n.set(n.get() + 1);
                let addr = format!("10.{}.{}.1", n.get() / 256 % 256, n.get() % 256);
                match rt.block_on(f.login_from("app", &jwt, &addr)) {
                    Err(e) => {
                        let status = crate::http::ApiError::from(e).status.as_u16();
                        if status == 400 { Ok(()) } else { Err(TestCaseError::fail(format!("status {status}"))) }
                    }
                    Ok(r) => Err(TestCaseError::fail(format!("garbled token logged in: {r:?}"))),
                }
            })
            .unwrap();
    }
}
