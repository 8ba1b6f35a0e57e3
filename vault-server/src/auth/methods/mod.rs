//! Auth methods (mounted under `auth/`), built from auth mount-table rows.
//!
//! Every method validates credentials and answers a successful login with
//! [`Login`](crate::logical::Login); the core mints the token. Methods report
//! failures to the shared [`Lockout`]: userpass and AppRole per alias (in
//! storage) and per address, JWT/OIDC and Kubernetes per address only.

pub(crate) mod approle;
pub(crate) mod jwt;
pub(crate) mod kubernetes;
pub(crate) mod userpass;

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::cidr;
use crate::auth::lockout::{Credential, Lockout};
use crate::barrier::{Barrier, Unsealed};
use crate::logical::fields::{policy_list, string_list};
use crate::logical::kit::EngineContext;
use crate::logical::{Backend, LogicalError, Login, fields};

/// What every auth method gets besides its storage view.
#[derive(Debug, Clone)]
pub struct MethodContext {
    /// The mount path, e.g. `approle/` (display names, log fields).
    pub mount_path: String,
    /// The mount's accessor, e.g. `auth_userpass_1a2b3c4d` (Vault's key of
    /// locked users, `sys/locked-users/{accessor}/unlock/{alias}`).
    pub accessor: String,
    /// The barrier, for the lockout records under `sys/lockout/`.
    pub barrier: Arc<Barrier>,
    /// Shared failure counters.
    pub lockout: Arc<Lockout>,
}

impl MethodContext {
    /// Before checking a guessable credential (password, secret ID) of
    /// `alias`: the address budget (memory, no storage read for a flood),
    /// then the alias's lockout (storage).
    pub async fn check_guess(&self, u: &Unsealed, alias: &str, addr: Option<IpAddr>) -> Result<(), LogicalError> {
        self.lockout.check_address(Credential::Guessable, addr)?;
        self.lockout.check_user(&self.barrier, u, &self.accessor, alias).await
    }

    /// A guessable credential of `alias` was wrong.
    pub async fn guess_failed(&self, u: &Unsealed, alias: &str, addr: Option<IpAddr>) {
        self.lockout.address_failure(Credential::Guessable, addr);
        self.lockout.user_failure(&self.barrier, u, &self.accessor, alias).await;
    }

    /// A guessable credential of `alias` was right: its failures are forgotten.
    pub async fn guess_succeeded(&self, u: &Unsealed, alias: &str) {
        self.lockout.user_success(&self.barrier, u, &self.accessor, alias).await;
    }

    /// Before checking a signed token: the address budget only.
    pub fn check_signed(&self, addr: Option<IpAddr>) -> Result<(), LogicalError> {
        self.lockout.check_address(Credential::Signed, addr)
    }

    /// A signed token was refused (or made us call a remote that failed).
    pub fn signed_failed(&self, addr: Option<IpAddr>) {
        self.lockout.address_failure(Credential::Signed, addr);
    }
}

impl MethodContext {
    /// What a method needs of its engine context.
    pub fn from_engine(ctx: &EngineContext) -> Self {
        Self {
            mount_path: ctx.mount.path.clone(),
            accessor: ctx.mount.accessor.clone(),
            barrier: ctx.barrier.clone(),
            lockout: ctx.lockout.clone(),
        }
    }
}

/// The AppRole method.
pub fn approle_factory(ctx: EngineContext) -> Result<Arc<dyn Backend>, LogicalError> {
    Ok(Arc::new(approle::AppRole::new(ctx.view.clone(), MethodContext::from_engine(&ctx))))
}

/// The userpass method.
pub fn userpass_factory(ctx: EngineContext) -> Result<Arc<dyn Backend>, LogicalError> {
    Ok(Arc::new(userpass::Userpass::new(ctx.view.clone(), MethodContext::from_engine(&ctx))))
}

/// The JWT/OIDC method (`jwt` and `oidc` mount types).
pub fn jwt_factory(ctx: EngineContext) -> Result<Arc<dyn Backend>, LogicalError> {
    Ok(Arc::new(jwt::Jwt::new(ctx.view.clone(), MethodContext::from_engine(&ctx))))
}

/// The Kubernetes method.
pub fn kubernetes_factory(ctx: EngineContext) -> Result<Arc<dyn Backend>, LogicalError> {
    Ok(Arc::new(kubernetes::Kubernetes::new(ctx.view.clone(), MethodContext::from_engine(&ctx))))
}

// ---------------------------------------------------------------------------
// Token settings (Vault's tokenutil)
// ---------------------------------------------------------------------------

/// The policy that allows everything. No auth method may grant it: root
/// tokens come only from `sys/init`, `sys/generate-root` or another root
/// token (Vault: "auth methods cannot create root tokens").
pub const ROOT_POLICY: &str = "root";

/// Refuse a policy list that names `root` (the policy names are already
/// normalised to lowercase by `policy_list`).
pub fn refuse_root(policies: &[String], field: &str) -> Result<(), LogicalError> {
    if policies.iter().any(|p| p == ROOT_POLICY) {
        return Err(LogicalError::InvalidRequest(format!(
            "'{field}' cannot contain \"root\": auth methods cannot create root tokens"
        )));
    }
    Ok(())
}

/// Every legacy (pre-`token_*`) field name a method may accept.
pub const LEGACY_ALL: &[&str] = &["policies", "ttl", "max_ttl", "period", "num_uses", "bound_cidrs"];

/// The token settings a role or user carries (Vault's `token_*` fields), as
/// stored (the field names are the stored ones) and turned into a [`Login`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenSettings {
    pub token_policies: Vec<String>,
    pub token_ttl: u64,
    pub token_max_ttl: u64,
    pub token_explicit_max_ttl: u64,
    pub token_period: u64,
    pub token_num_uses: u64,
    pub token_no_default_policy: bool,
    pub token_bound_cidrs: Vec<String>,
    /// `default` or `service` (only service tokens are issued).
    pub token_type: String,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            token_policies: Vec::new(),
            token_ttl: 0,
            token_max_ttl: 0,
            token_explicit_max_ttl: 0,
            token_period: 0,
            token_num_uses: 0,
            token_no_default_policy: false,
            token_bound_cidrs: Vec::new(),
            token_type: "default".into(),
        }
    }
}

/// Of a new-style and a legacy field, the one given; both given must agree.
pub fn upgrade<T: PartialEq>(
    new: Option<T>,
    old: Option<T>,
    new_name: &str,
    old_name: &str,
) -> Result<Option<T>, LogicalError> {
    match (new, old) {
        (Some(a), Some(b)) if a != b => Err(LogicalError::InvalidRequest(format!(
            "cannot set both '{new_name}' and '{old_name}' (deprecated) to different values"
        ))),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b),
    }
}

type Parse<T> = fn(&Map<String, Value>, &str) -> Result<Option<T>, LogicalError>;

/// The value of `new`, or of its legacy name `old` when `legacy` accepts it.
fn field<T: PartialEq>(
    d: &Map<String, Value>,
    legacy: &[&str],
    new: &str,
    old: &str,
    parse: Parse<T>,
) -> Result<Option<T>, LogicalError> {
    let given_old = if legacy.contains(&old) { parse(d, old)? } else { None };
    upgrade(parse(d, new)?, given_old, new, old)
}

/// A list of CIDR blocks with blank entries dropped (validated later).
fn cidrs(d: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, LogicalError> {
    Ok(string_list(d, field)?.map(|l| l.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()))
}

impl TokenSettings {
    /// Apply the settings given in `d` (absent fields keep their value).
    /// `legacy` lists the pre-`token_*` names this method accepts (and
    /// returns), e.g. `policies`; given with its new name, both must agree.
    pub fn update_from(&mut self, d: &Map<String, Value>, legacy: &[&str]) -> Result<(), LogicalError> {
        if let Some(p) = field(d, legacy, "token_policies", "policies", policy_list)? {
            refuse_root(&p, "token_policies")?;
            self.token_policies = p;
        }
        if let Some(t) = field(d, legacy, "token_ttl", "ttl", fields::duration)? {
            self.token_ttl = t;
        }
        if let Some(t) = field(d, legacy, "token_max_ttl", "max_ttl", fields::duration)? {
            self.token_max_ttl = t;
        }
        if let Some(t) = fields::duration(d, "token_explicit_max_ttl")? {
            self.token_explicit_max_ttl = t;
        }
        if let Some(t) = field(d, legacy, "token_period", "period", fields::duration)? {
            self.token_period = t;
        }
        if let Some(n) = field(d, legacy, "token_num_uses", "num_uses", fields::int)? {
            self.token_num_uses = u64::try_from(n)
                .map_err(|_| LogicalError::InvalidRequest("'token_num_uses' cannot be negative".into()))?;
        }
        if let Some(b) = fields::boolean(d, "token_no_default_policy")? {
            self.token_no_default_policy = b;
        }
        if let Some(c) = field(d, legacy, "token_bound_cidrs", "bound_cidrs", cidrs)? {
            cidr::validate(&c).map_err(LogicalError::InvalidRequest)?;
            self.token_bound_cidrs = c;
        }
        if let Some(t) = fields::string(d, "token_type")? {
            self.token_type = match t.trim() {
                "" | "default" => "default".into(),
                "service" => "service".into(),
                "batch" | "default-batch" | "default-service" => {
                    return Err(LogicalError::InvalidRequest(format!(
                        "token_type \"{t}\" is not supported: only service tokens can be issued"
                    )));
                }
                other => {
                    return Err(LogicalError::InvalidRequest(format!(
                        "invalid token_type \"{other}\": expected \"service\" or \"default\""
                    )));
                }
            };
        }
        if self.token_max_ttl > 0 && self.token_ttl > self.token_max_ttl {
            return Err(LogicalError::InvalidRequest("'token_ttl' cannot be greater than 'token_max_ttl'".into()));
        }
        Ok(())
    }

    /// Add the settings to a read response: the `token_*` fields, and the
    /// legacy names in `legacy` (Vault still returns those).
    pub fn write_to(&self, m: &mut Map<String, Value>, legacy: &[&str]) {
        let fields: [(&str, &str, Value); 9] = [
            ("token_policies", "policies", self.token_policies.clone().into()),
            ("token_ttl", "ttl", self.token_ttl.into()),
            ("token_max_ttl", "max_ttl", self.token_max_ttl.into()),
            ("token_explicit_max_ttl", "", self.token_explicit_max_ttl.into()),
            ("token_period", "period", self.token_period.into()),
            ("token_num_uses", "num_uses", self.token_num_uses.into()),
            ("token_no_default_policy", "", self.token_no_default_policy.into()),
            ("token_bound_cidrs", "bound_cidrs", self.token_bound_cidrs.clone().into()),
            ("token_type", "", self.token_type.clone().into()),
        ];
        for (new, old, v) in fields {
            if legacy.contains(&old) {
                m.insert(old.into(), v.clone());
            }
            m.insert(new.into(), v);
        }
    }

    /// The token's hard cap: the smaller of the non-zero max TTLs.
    pub fn max_ttl(&self) -> u64 {
        match (self.token_max_ttl, self.token_explicit_max_ttl) {
            (0, e) => e,
            (m, 0) => m,
            (m, e) => m.min(e),
        }
    }

    /// The login these settings give (renewable, bound to the token CIDRs).
    /// Refused when the policies name `root`: writes refuse it, but a record
    /// stored before that check (or restored from a backup) must not mint a
    /// root token either. The only source of a login's policies is this
    /// record: no claim, metadata or request field ever adds one.
    pub fn login(
        &self,
        display_name: String,
        metadata: Map<String, Value>,
        alias: String,
    ) -> Result<Login, LogicalError> {
        if refuse_root(&self.token_policies, "token_policies").is_err() {
            tracing::warn!(display_name = %display_name, "a stored role or user grants the root policy; login refused");
            return Err(LogicalError::InvalidRequest("auth methods cannot create root tokens".into()));
        }
        Ok(Login {
            policies: self.token_policies.clone(),
            no_default_policy: self.token_no_default_policy,
            ttl: self.token_ttl,
            max_ttl: self.max_ttl(),
            period: self.token_period,
            num_uses: self.token_num_uses,
            display_name,
            metadata,
            bound_cidrs: self.token_bound_cidrs.clone(),
            renewable: true,
            alias,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn stored_records_still_deserialize() {
        #[derive(Serialize, Deserialize)]
        struct Flat {
            other: u64,
            #[serde(flatten)]
            token: TokenSettings,
        }
        // A record written before token_type was stored.
        let old = json!({"other": 1, "token_policies": ["a"], "token_ttl": 60, "token_bound_cidrs": ["10.0.0.0/8"]});
        let f: Flat = serde_json::from_value(old).unwrap();
        assert_eq!((f.other, f.token.token_ttl, f.token.token_type.as_str()), (1, 60, "default"));
        assert_eq!(f.token.token_policies, vec!["a"]);
        let again = serde_json::to_value(&f).unwrap();
        assert_eq!(again["token_ttl"], 60);
        assert_eq!(again["token_type"], "default");
        let t: TokenSettings = serde_json::from_value(json!({})).unwrap();
        assert_eq!(t, TokenSettings::default());
    }

    #[test]
    fn legacy_names_conflicts_and_checks() {
        let mut t = TokenSettings::default();
        t.update_from(&obj(json!({"policies": "B,a", "ttl": "1m", "num_uses": 2})), &["policies"]).unwrap();
        assert_eq!(t.token_policies, vec!["a", "b"]);
        assert_eq!((t.token_ttl, t.token_num_uses), (0, 0), "legacy names not accepted by the method are ignored");
        t.update_from(&obj(json!({"ttl": "1m", "num_uses": 2, "token_max_ttl": 120})), LEGACY_ALL).unwrap();
        assert_eq!((t.token_ttl, t.token_num_uses, t.max_ttl()), (60, 2, 120));
        let err = |v: Value| t.clone().update_from(&obj(v), LEGACY_ALL).unwrap_err().to_string();
        assert!(err(json!({"policies": "a", "token_policies": "b"})).contains("(deprecated)"));
        assert!(err(json!({"token_ttl": 600})).contains("'token_ttl' cannot be greater than 'token_max_ttl'"));
        assert!(err(json!({"token_num_uses": -1})).contains("cannot be negative"));
        assert!(err(json!({"token_type": "batch"})).contains("not supported"));
        assert!(err(json!({"bound_cidrs": "10.0.0.0/99"})).contains("CIDR"));
        t.update_from(&obj(json!({"token_explicit_max_ttl": 90, "token_type": "service"})), &[]).unwrap();

        let mut m = Map::new();
        t.write_to(&mut m, &["period"]);
        assert_eq!((m["token_type"].as_str(), m["period"].as_u64()), (Some("service"), Some(0)));
        assert!(!m.contains_key("policies"));
        let login = t.login("d".into(), Map::new(), "a".into()).unwrap();
        assert_eq!((login.max_ttl, login.num_uses, login.renewable), (90, 2, true));
    }

    #[test]
    fn root_policy_is_never_granted() {
        for body in [
            json!({"token_policies": ["a", "root"]}),
            json!({"token_policies": "a, ROOT"}),
            json!({"policies": [" Root "]}),
        ] {
            let mut t = TokenSettings::default();
            let e = t.update_from(&obj(body.clone()), LEGACY_ALL).unwrap_err();
            assert!(
                matches!(&e, LogicalError::InvalidRequest(m) if m.contains("cannot create root tokens")),
                "{body}: {e:?}"
            );
            assert!(t.token_policies.is_empty(), "{body}: nothing applied");
        }
        // A record stored before the check (or restored) still cannot log in.
        let stored = TokenSettings { token_policies: vec!["a".into(), "root".into()], ..Default::default() };
        let e = stored.login("d".into(), Map::new(), "a".into()).unwrap_err();
        assert_eq!(e.to_string(), "auth methods cannot create root tokens");
        // A policy merely containing the word is fine.
        let mut t = TokenSettings::default();
        t.update_from(&obj(json!({"token_policies": ["root-ca-reader", "uproot"]})), &[]).unwrap();
        assert_eq!(t.login("d".into(), Map::new(), "a".into()).unwrap().policies, vec!["root-ca-reader", "uproot"]);
    }
}
