//! The logical request path: seal check, routing, token, policy, backend,
//! and minting the token of a successful login.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;

use crate::auth::token::TokenParams;
use crate::auth::{Authorized, Grant, Recheck, TokenEntry, acl, cidr};
use crate::barrier::{Batch, now_unix};
use crate::logical::{AuthInfo, BoxFuture, LogicalError, Login, Operation, Request, Response, path_matches};

use super::{Core, CoreError};

/// A backend's answer plus the type of the mount that gave it (Vault's `mount_type`).
#[derive(Debug)]
pub struct Handled {
    /// The response.
    pub response: Response,
    /// e.g. "kv", "system".
    pub mount_type: String,
}

impl Core {
    /// Resolve a token to its entry: present, unexpired, used from an allowed address.
    pub async fn authenticate(&self, token: Option<&str>, addr: Option<IpAddr>) -> Result<Arc<TokenEntry>, CoreError> {
        let active = self.active()?;
        let u = self.unsealed()?;
        let token = token.filter(|t| !t.is_empty()).ok_or(LogicalError::PermissionDenied)?;
        let now = now_unix();
        let entry = active.tokens.lookup(&self.barrier, &u, token, now).await?.ok_or(LogicalError::PermissionDenied)?;
        if !cidr::allowed(&entry.bound_cidrs, addr)
            || !active.tokens.ancestry_alive(&self.barrier, &u, &entry, now).await?
        {
            return Err(LogicalError::PermissionDenied.into());
        }
        Ok(entry)
    }

    /// Handle a logical request on behalf of the holder of `token`.
    pub async fn handle(&self, token: Option<&str>, mut req: Request) -> Result<Handled, CoreError> {
        let active = self.active()?;
        let u = self.unsealed()?;
        let router = active.router();
        canonicalize(&mut req)?;
        // The policy is checked on exactly the path the backend will serve.
        let folded = router
            .route(&req.path)
            .and_then(|(m, rel)| m.backend.canonical_path(rel).map(|c| format!("{}{c}", m.route_path)));
        if let Some(p) = folded {
            req.path = p;
        }
        let full_path = req.path.clone();
        let routed = router.route(&full_path);

        // Unauthenticated paths (logins) are declared by the backend that serves them.
        if let Some((m, rel)) = routed
            && path_matches(m.backend.unauthenticated_paths(), rel)
        {
            req.path = rel.to_string();
            let auth = Authorized::unauthenticated(u);
            let response = m.backend.handle(&auth, req).await?;
            let response = self.finish_login(response, &full_path, m).await?;
            return Ok(Handled { response, mount_type: m.entry.kind.clone() });
        }

        // Everything else needs a valid token, checked before revealing
        // whether the path is routable.
        let entry = self.authenticate(token, req.client_addr).await?;
        let (m, rel) = routed.ok_or_else(|| {
            LogicalError::UnsupportedPath(format!("no handler for route \"{full_path}\". route entry not found."))
        })?;
        let sudo = path_matches(m.backend.root_paths(), rel);
        let acl = active.policies.acl(&self.barrier, &u, &entry.policies).await?;
        // Create or update? Only the policy check can tell them apart for a
        // backend that handles both alike; when the policy grants both, the
        // existence read (a storage round trip on a write's hot path) is moot.
        let moot = m.backend.create_is_update()
            && acl.allows(&full_path, Operation::Create, sudo)
            && acl.allows(&full_path, Operation::Update, sudo);
        if req.op == Operation::Update
            && !moot
            && let Some(false) = m.backend.exists(&u, rel).await?
        {
            req.op = Operation::Create;
        }
        let mut auth = acl::authorize(u.clone(), entry.clone(), &acl, &full_path, req.op, sudo)?
            .with_acl(acl.clone(), &m.route_path);
        acl::check_parameters(&acl, &full_path, req.op, &req.data)?;
        if m.entry.kind == "token"
            && let Some(t) = token
        {
            auth = auth.with_token_value(t);
        }
        let mut spent = false;
        if entry.num_uses > 0 {
            let used =
                active.tokens.use_once(&self.barrier, &u, &entry).await?.ok_or(LogicalError::PermissionDenied)?;
            // `used` reads 0 uses both when unlimited and when this was the
            // last one; the entry before the use tells them apart.
            let left = entry.num_uses.saturating_sub(1).min(used.num_uses);
            spent = left == 0;
            auth = auth.with_uses_left(left).with_token_entry(Arc::new(used));
        }
        let grant = Grant { path: full_path.clone(), op: req.op, sudo, addr: req.client_addr, spent };
        auth = auth.with_grant(grant, self.reauth.clone());
        req.path = rel.to_string();
        let response = m.backend.handle(&auth, req).await?;
        let response = self.finish_login(response, &full_path, m).await?;
        Ok(Handled { response, mount_type: m.entry.kind.clone() })
    }

    /// Turn a backend's `Login` into a real token and Vault's `auth` block.
    pub(super) async fn finish_login(
        &self,
        response: Response,
        path: &str,
        m: &super::mounts::Mounted,
    ) -> Result<Response, CoreError> {
        let Response::Login(login) = response else { return Ok(response) };
        let mut login = *login;
        // Whatever a method's roles, users or claims say: a login never
        // yields a root token (as Vault: "auth methods cannot create root
        // tokens"). Root comes only from init and generate-root.
        if login.policies.iter().any(|p| p.trim().eq_ignore_ascii_case("root")) {
            return Err(LogicalError::InvalidRequest("auth methods cannot create root tokens".into()).into());
        }
        let mount = &m.entry.config;
        // Mount-level lease settings bound what the method asked for.
        if login.ttl == 0 && mount.default_lease_ttl > 0 {
            login.ttl = mount.default_lease_ttl;
        }
        if mount.max_lease_ttl > 0 && (login.max_ttl == 0 || login.max_ttl > mount.max_lease_ttl) {
            login.max_ttl = mount.max_lease_ttl;
        }
        let auth = self.mint(login, path, None, Some(m.entry.uuid.clone())).await?;
        Ok(Response::Data { data: None, auth: Some(Box::new(auth)), warnings: Vec::new() })
    }

    /// Create a token for `login` (child of `parent`, or an orphan).
    /// `mount` is the UUID of the issuing auth mount (its tokens are revoked
    /// when it is disabled); None for tokens made by the token store.
    pub async fn mint(
        &self,
        login: Login,
        path: &str,
        parent: Option<&TokenEntry>,
        mount: Option<String>,
    ) -> Result<AuthInfo, CoreError> {
        let active = self.active()?;
        let u = self.unsealed()?;
        let mut policies = login.policies.clone();
        if !login.no_default_policy && !policies.iter().any(|p| p == "root") {
            policies.push("default".into());
        }
        policies.sort();
        policies.dedup();
        let params = TokenParams {
            policies: policies.clone(),
            display_name: login.display_name.clone(),
            path: path.to_string(),
            ttl: login.ttl,
            explicit_max_ttl: login.max_ttl,
            period: login.period,
            num_uses: login.num_uses,
            meta: login.metadata.clone(),
            parent: parent.map(|p| p.id.clone()),
            renewable: login.renewable,
            bound_cidrs: login.bound_cidrs.clone(),
            mount: mount.clone(),
        };
        let mut batch = Batch::new();
        let (token, entry) = active.tokens.create(&u, &mut batch, params, now_unix());
        #[cfg(test)]
        self.pauses.at("mint:before-write").await;
        self.barrier.write(batch).await?;
        // Checked after the commit, against the database itself: a parent
        // revoked or an auth method disabled while this token was written
        // has already listed what to revoke, and might have missed it.
        let parent_gone = match parent {
            Some(p) => !active.tokens.alive(&self.barrier, &p.id).await?,
            None => false,
        };
        let mount_gone = match &mount {
            Some(uuid) => !self.auth_mount_exists(&u, uuid).await?,
            None => false,
        };
        if parent_gone || mount_gone {
            active.tokens.revoke_tree(&self.barrier, &u, &entry.id).await?;
            return Err(LogicalError::PermissionDenied.into());
        }
        Ok(AuthInfo {
            client_token: token.to_string(),
            accessor: entry.accessor.clone(),
            policies: policies.clone(),
            token_policies: policies,
            metadata: (!login.metadata.is_empty()).then(|| login.metadata.clone()),
            lease_duration: entry.creation_ttl,
            renewable: entry.renewable,
            entity_id: String::new(),
            token_type: "service".into(),
            orphan: entry.parent.is_none(),
            num_uses: entry.num_uses,
        })
    }

    /// Capabilities of `entry` on `path` (for `sys/capabilities-self`).
    pub async fn capabilities(&self, entry: &TokenEntry, path: &str) -> Result<Vec<String>, CoreError> {
        let active = self.active()?;
        let u = self.unsealed()?;
        let acl = active.policies.acl(&self.barrier, &u, &entry.policies).await?;
        Ok(acl.capabilities(path).into_iter().map(String::from).collect())
    }
}

/// Vault paths have no empty segments, and only LIST gives a trailing `/`
/// a meaning. Backends are lenient (they trim slashes), so a path they would
/// serve the same way must be checked by the policy the same way: `a//b` is
/// refused, and a trailing `/` is dropped except for LIST, *before* routing
/// and the policy check (an exact `deny` on `x` must not be bypassed by `x/`).
fn canonicalize(req: &mut Request) -> Result<(), LogicalError> {
    let trimmed = req.path.trim_end_matches('/');
    if trimmed.starts_with('/') || trimmed.contains("//") {
        return Err(LogicalError::InvalidRequest("path must not contain empty segments ('//')".into()));
    }
    if req.op == Operation::List {
        if !req.path.ends_with('/') || req.path.ends_with("//") {
            req.path = format!("{trimmed}/");
        }
    } else if trimmed.len() != req.path.len() {
        req.path.truncate(trimmed.len());
    }
    Ok(())
}

/// The core's re-check of a held authorization (see [`Authorized::still_authorized`]).
pub(super) struct Reauthorizer {
    pub(super) core: std::sync::Weak<Core>,
}

impl Recheck for Reauthorizer {
    fn recheck<'a>(
        &'a self,
        token_id: &'a str,
        grant: &'a Grant,
        data: &'a serde_json::Map<String, Value>,
    ) -> BoxFuture<'a, Result<(), LogicalError>> {
        Box::pin(async move {
            let core = self.core.upgrade().ok_or(LogicalError::Sealed)?;
            let active = core.active().map_err(LogicalError::from)?;
            let u = core.unsealed().map_err(LogicalError::from)?;
            if grant.spent {
                return Err(LogicalError::PermissionDenied);
            }
            let now = now_unix();
            let entry = active
                .tokens
                .lookup_id(&core.barrier, &u, token_id, now)
                .await?
                .ok_or(LogicalError::PermissionDenied)?;
            if !cidr::allowed(&entry.bound_cidrs, grant.addr)
                || !active.tokens.ancestry_alive(&core.barrier, &u, &entry, now).await?
            {
                return Err(LogicalError::PermissionDenied);
            }
            let acl = active.policies.acl(&core.barrier, &u, &entry.policies).await?;
            acl::authorize(u, entry, &acl, &grant.path, grant.op, grant.sudo)?;
            acl::check_parameters(&acl, &grant.path, grant.op, data)
        })
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        let core = self.core.upgrade()?;
        core.active().ok().map(|a| a.security_signal())
    }
}

/// `metadata` as a JSON value for lookups (null when empty).
pub fn meta_value(m: &serde_json::Map<String, Value>) -> Value {
    if m.is_empty() { Value::Null } else { Value::Object(m.clone()) }
}
