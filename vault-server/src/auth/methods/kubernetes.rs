//! The Kubernetes auth method (Vault's `kubernetes`): a workload logs in with
//! its service-account token; the role binds service-account names and
//! namespaces.
//!
//! Tokens are verified locally with the configured `pem_keys`, or else by
//! the cluster's TokenReview API at `kubernetes_host`; the namespace and
//! service-account name (legacy or projected claims) must be bound by the
//! role, and are checked before the API server is asked. Token parsing,
//! keys, claim checks, outgoing HTTP and the storage layout are shared with
//! the JWT/OIDC method (`methods/jwt/`).
//!
//! As there, each refused token and each failed TokenReview call a login
//! caused is charged to the client address, never to the role; an API
//! server that cannot be reached, does not answer in time, refuses the
//! reviewer or answers nonsense is a 502 with one generic message (the
//! detail is logged).

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::jwt::claims::{Leeways, audiences, check_times};
use super::jwt::common::{
    CONFIG_KEY, Fail, PATHS, RoleMethod, Secret, Store, bad, clean_list, denied, nonempty, pem_list, role_name, serve,
    take_secret,
};
use super::jwt::keys::parse_pem_keys;
use super::jwt::remote::{HTTP_TIMEOUT, check_ca_pem, check_url, http_client, read_limited};
use super::jwt::token::{self, allowed_alg, take_jwt};
use super::{LEGACY_ALL, MethodContext, TokenSettings};
use crate::auth::Authorized;
use crate::auth::cidr;
use crate::barrier::view::View;
use crate::barrier::{Unsealed, now_unix};
use crate::logical::{Backend, BoxFuture, LogicalError, Login, PathSpec, Request, Response, fields};

/// The one message for a failed TokenReview call (nothing that helps probe
/// the network behind the vault; the detail goes to the log).
pub(crate) const TOKEN_REVIEW_FAILED: &str = "TokenReview request failed";
/// Issuer of legacy (secret-based) service-account tokens, and the default.
const K8S_DEFAULT_ISSUER: &str = "kubernetes/serviceaccount";
/// Clock-skew leeway for service-account token times (seconds).
const K8S_LEEWAY: i64 = 60;
/// The TokenReview API path under `kubernetes_host`.
const TOKEN_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// The Kubernetes auth method.
#[derive(Debug)]
pub(crate) struct Kubernetes {
    store: Store,
    /// Total time allowed for one TokenReview request.
    http_timeout: Duration,
}

impl Kubernetes {
    /// The method over its storage view.
    pub(crate) fn new(view: View, ctx: MethodContext) -> Self {
        super::jwt::install_crypto_provider();
        Self { store: Store { view, ctx }, http_timeout: HTTP_TIMEOUT }
    }
}

// ---------------------------------------------------------------------------
// Stored records
// ---------------------------------------------------------------------------

/// The configuration. The reviewer token is never returned or printed.
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

/// A role.
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
// Service accounts and claims
// ---------------------------------------------------------------------------

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
// Config and roles
// ---------------------------------------------------------------------------

impl Kubernetes {}

// ---------------------------------------------------------------------------
// Login
// ---------------------------------------------------------------------------

impl Kubernetes {
    async fn authenticate(
        &self,
        u: &Unsealed,
        config: &K8sConfig,
        role_name: &str,
        jwt: &str,
        addr: Option<IpAddr>,
    ) -> Result<Login, Fail> {
        let stored = self.store.load_role::<K8sRole>(u, role_name).await?;
        let role = stored.ok_or_else(|| denied(format!("invalid role name \"{role_name}\"")))?;
        if !cidr::allowed(&role.token.token_bound_cidrs, addr) {
            return Err(Fail::Error(LogicalError::PermissionDenied));
        }
        // Unverified until the local check or TokenReview (after the names
        // it claims passed the role's bindings) vouches for it.
        let parsed = token::parse_jwt(jwt).map_err(Fail::Denied)?;
        let local = !config.pem_keys.is_empty();
        if local {
            let alg = allowed_alg(&parsed.alg, &[]).map_err(Fail::Denied)?;
            let keys = parse_pem_keys(&config.pem_keys).map_err(LogicalError::internal)?;
            token::check_signature(&parsed, alg, &keys).map_err(|e| denied(e.message()))?;
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
            let reviewed = self.token_review(config, jwt, &role).await?;
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
        let display = format!("{}-{}-{}", self.store.display_prefix(), sa.namespace, sa.name);
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
            tracing::warn!(mount = %self.store.ctx.mount_path, error = %e, "TokenReview request failed");
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
        let url = format!("{}{TOKEN_REVIEW_PATH}", c.kubernetes_host);
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

impl RoleMethod for Kubernetes {
    fn store(&self) -> &Store {
        &self.store
    }

    async fn read_config(&self, u: &Unsealed) -> Result<Response, LogicalError> {
        let c: K8sConfig = self.store.load(u, CONFIG_KEY, "config").await?.ok_or(LogicalError::NotFound)?;
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
    async fn write_config(&self, u: &Unsealed, mut d: Map<String, Value>) -> Result<Response, LogicalError> {
        let reviewer = take_secret(&mut d, "token_reviewer_jwt")?.trimmed();
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
        self.store.store(u, CONFIG_KEY, &c).await?;
        Ok(Response::NoContent)
    }

    async fn read_role(&self, u: &Unsealed, name: &str) -> Result<Response, LogicalError> {
        let r: K8sRole = self.store.load_role(u, name).await?.ok_or(LogicalError::NotFound)?;
        let mut m = Map::new();
        m.insert("bound_service_account_names".into(), r.bound_service_account_names.clone().into());
        m.insert("bound_service_account_namespaces".into(), r.bound_service_account_namespaces.clone().into());
        m.insert("audience".into(), r.audience.clone().into());
        m.insert("alias_name_source".into(), r.alias_name_source.clone().into());
        r.token.write_to(&mut m, LEGACY_ALL);
        Ok(Response::data(m))
    }

    async fn write_role(&self, u: &Unsealed, name: &str, d: &Map<String, Value>) -> Result<Response, LogicalError> {
        let mut r: K8sRole = match self.store.load_role(u, name).await? {
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
        self.store.store_role(u, name, &r).await?;
        Ok(Response::NoContent)
    }

    async fn login(&self, u: &Unsealed, mut req: Request) -> Result<Response, LogicalError> {
        let addr = req.client_addr;
        self.store.ctx.check_signed(addr)?;
        let token = take_jwt(&mut req.data)?;
        let role = nonempty(&req.data, "role")?.ok_or_else(|| bad("missing role"))?;
        role_name(&role)?;
        let config: K8sConfig = self
            .store
            .load(u, CONFIG_KEY, "config")
            .await?
            .ok_or_else(|| bad("could not load backend configuration"))?;
        let result = self.authenticate(u, &config, &role, &token, addr).await;
        self.store.finish(result, addr)
    }
}

impl Backend for Kubernetes {
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
    use std::time::Instant;

    use jsonwebtoken::Algorithm;
    use serde_json::json;

    use super::*;
    use crate::auth::methods::jwt::testing::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("*", ""));
        assert!(glob_match("web-*", "web-1"));
        assert!(glob_match("*-prod", "api-prod"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("web-*", "api"));
        assert!(!glob_match("a*a", "a"));
        assert!(glob_match("web", "web") && !glob_match("web", "web2"));
        assert!(glob_match("é*é", "ééé") && !glob_match("é*é", "é"), "multi-byte characters");
    }

    #[tokio::test]
    async fn kubernetes_token_review_failures_are_502() {
        let review = "/apis/authentication.k8s.io/v1/tokenreviews";
        let mut f = fixture("kubernetes/", 100, Kubernetes::new).await;
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
        expect_502(f.login_from("web", &jwt, "192.0.2.10").await, "closed port");
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
        expect_502(f.login_from("web", &jwt, "192.0.2.10").await, "silent server");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        holder.abort();

        // Answers that are not a TokenReview.
        let (mock, addr) = Mock::start().await;
        f.write("config", json!({"kubernetes_host": format!("http://{addr}"), "token_reviewer_jwt": "rv"})).await;
        for (status, body) in [(200, json!({})), (201, json!({"status": "yes"})), (500, json!({})), (401, json!({}))] {
            mock.set(review, status, body.clone());
            expect_502(f.login_from("web", &jwt, "192.0.2.10").await, &format!("{status} {body}"));
        }
        mock.routes.lock().unwrap().insert(review.into(), (200, "not json".into()));
        expect_502(f.login_from("web", &jwt, "192.0.2.10").await, "not JSON");

        // Each failure was charged to 192.0.2.10 (7 so far; the budget
        // refills one per second meanwhile), none elsewhere.
        let burst = crate::auth::lockout::SIGNED_BURST as usize;
        let mut limited = false;
        for _ in 7..3 * burst {
            match f.login_from("web", &jwt, "192.0.2.10").await {
                Err(LogicalError::Upstream(_)) => {}
                Err(LogicalError::RateLimited(_)) => {
                    limited = true;
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(limited, "TokenReview failures were not charged to the address");
        expect_502(f.login_from("web", &jwt, "192.0.2.11").await, "another address");
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
        let f = fixture("kubernetes/", 100, Kubernetes::new).await;
        use crate::logical::Operation::*;
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
        let f = fixture("kubernetes/", 100, Kubernetes::new).await;
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
    #[tokio::test]
    async fn roles_cannot_grant_root() {
        use crate::logical::Operation::*;
        let k = fixture("kubernetes/", 5, Kubernetes::new).await;
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
}
