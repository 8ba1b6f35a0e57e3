//! The logical request path: seal check, routing, token, policy, backend,
//! and minting the token of a successful login.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;

use serde_json::Map;
use zeroize::Zeroizing;

use super::hooks::Caller;
use super::mounts::Mounted;
use crate::auth::token::TokenParams;
use crate::auth::{Authorized, Grant, Recheck, TokenEntry, acl, cidr};
use crate::barrier::{Batch, now_unix};
use crate::logical::{
    AuthInfo, BodyKind, BoxFuture, ByteStream, LogicalError, Login, Operation, Request, Response, Route, paths,
};

use super::{Core, CoreError};

/// A request that passed routing, authentication and the capability check,
/// whose body has not been read yet.
pub struct Prepared {
    mounted: Arc<Mounted>,
    rel: String,
    full_path: String,
    op: Operation,
    client_addr: Option<IpAddr>,
    access: Access,
    caller: Option<Caller>,
    route: Option<Route>,
}

/// How a prepared request was let in.
enum Access {
    /// A path the backend declares unauthenticated (logins).
    Login,
    /// A token whose policies grant the capability.
    Token {
        entry: Arc<TokenEntry>,
        acl: Arc<crate::auth::acl::Acl>,
        sudo: bool,
        token_value: Option<Zeroizing<String>>,
    },
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("path", &self.full_path).field("op", &self.op).finish_non_exhaustive()
    }
}

impl Prepared {
    /// The operation (create or update decided).
    pub fn op(&self) -> Operation {
        self.op
    }
    /// The full canonical path.
    pub fn path(&self) -> &str {
        &self.full_path
    }
    /// The full path as hooks and logs may show it: personal captures of
    /// the route (a data subject) replaced by their `{name}`.
    pub fn logged_path(&self) -> std::borrow::Cow<'_, str> {
        match self.route.as_ref().and_then(Route::redacted) {
            Some(rel) => format!("{}{rel}", self.mounted.route_path).into(),
            None => self.full_path.as_str().into(),
        }
    }
    /// The mount's route path, e.g. `secret/`.
    pub fn mount(&self) -> &str {
        &self.mounted.route_path
    }
    /// The mount's type, e.g. `kv`.
    pub fn mount_type(&self) -> &str {
        &self.mounted.entry.kind
    }
    /// The caller (None on unauthenticated paths).
    pub fn caller(&self) -> Option<&Caller> {
        self.caller.as_ref()
    }
    /// The route template: the matched pattern of the backend's path
    /// table, or "" for backends without one.
    pub fn template(&self) -> &'static str {
        self.route.as_ref().map_or("", Route::pattern)
    }
    /// What body the path takes.
    pub fn body_kind(&self) -> BodyKind {
        self.route.as_ref().map_or(BodyKind::Json, |r| r.spec.body)
    }
    /// The largest streamed body the mount accepts.
    pub fn stream_limit(&self) -> u64 {
        self.mounted.backend.stream_limit()
    }
}

/// A path no backend serves, said in the caller's terms.
fn unsupported(full_path: &str, m: &Mounted) -> LogicalError {
    LogicalError::UnsupportedPath(format!(
        "no handler for route \"{full_path}\": the {} mount at \"{}\" has no such path",
        m.entry.kind, m.route_path
    ))
}

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
        if !self.token_usable(&active, &u, &entry, addr, now).await? {
            return Err(LogicalError::PermissionDenied.into());
        }
        Ok(entry)
    }

    /// A looked-up token may be used from `addr`: its CIDR binding allows
    /// it, every ancestor exists and is unexpired, and every auth method
    /// that issued one of them is still enabled (a disable whose revocation
    /// did not finish, e.g. the server stopped, leaves nothing usable).
    pub(super) async fn token_usable(
        &self,
        active: &super::Active,
        u: &crate::barrier::Unsealed,
        entry: &Arc<TokenEntry>,
        addr: Option<IpAddr>,
        now: i64,
    ) -> Result<bool, CoreError> {
        if !cidr::allowed(&entry.bound_cidrs, addr) {
            return Ok(false);
        }
        let router = active.router();
        let known = |uuid: &str| router.table(super::Table::Auth).any(|m| m.entry.uuid == uuid);
        let mut unknown = Vec::new();
        if !active.tokens.ancestry_alive(&self.barrier, u, entry, now, &known, &mut unknown).await? {
            return Ok(false);
        }
        // Not in this server's table: maybe enabled on another server a
        // moment ago; the stored table decides.
        for uuid in unknown {
            if !self.auth_mount_exists(u, &uuid).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Handle a logical request on behalf of the holder of `token` (the
    /// whole request at once; the HTTP pipeline calls [`Self::prepare`] and
    /// [`Self::execute`] itself, to read the body only once authorized).
    pub async fn handle(&self, token: Option<&str>, req: Request) -> Result<Handled, CoreError> {
        let prepared = self.prepare(token, req.op, req.path, req.client_addr).await?;
        self.execute(prepared, req.data, req.stream).await
    }

    /// Route, authenticate and authorize a request before its body is read:
    /// a request the policy denies costs no body read.
    pub async fn prepare(
        &self,
        token: Option<&str>,
        op: Operation,
        path: String,
        client_addr: Option<IpAddr>,
    ) -> Result<Prepared, CoreError> {
        let active = self.active()?;
        let u = self.unsealed()?;
        let router = active.router();
        let mut head = Request::new(op, path);
        canonicalize(&mut head)?;
        // The policy is checked on exactly the path the backend will serve.
        let folded = router
            .route(&head.path)
            .and_then(|(m, rel)| m.backend.canonical_path(rel).map(|c| format!("{}{c}", m.route_path)));
        if let Some(p) = folded {
            head.path = p;
        }
        let full_path = head.path;
        let mut op = head.op;
        let routed = router.route(&full_path);
        // The backend's table entry: None for a backend without a table,
        // Some(None) for a path its table does not have.
        let table_entry = routed.and_then(|(m, rel)| {
            let table = m.backend.paths();
            (!table.is_empty()).then(|| paths::find(table, rel))
        });

        // Unauthenticated paths (logins) are declared by the backend that serves them.
        let unauthenticated = matches!(&table_entry, Some(Some(r)) if r.spec.unauthenticated);
        if let Some((m, rel)) = routed
            && unauthenticated
        {
            let route = table_entry.flatten();
            if route.as_ref().is_some_and(|r| !r.spec.serves(op)) {
                return Err(LogicalError::UnsupportedOperation.into());
            }
            let (mounted, rel) = (m.clone(), rel.to_string());
            let access = Access::Login;
            return Ok(Prepared { mounted, rel, full_path, op, client_addr, access, caller: None, route });
        }

        // Everything else needs a valid token, checked before revealing
        // whether the path is routable.
        let entry = self.authenticate(token, client_addr).await?;
        let (m, rel) = routed.ok_or_else(|| {
            LogicalError::UnsupportedPath(format!("no handler for route \"{full_path}\". route entry not found."))
        })?;
        let route = match table_entry {
            Some(None) => return Err(unsupported(&full_path, m).into()),
            Some(Some(r)) if !r.spec.serves(op) => return Err(LogicalError::UnsupportedOperation.into()),
            Some(r) => r,
            None => None,
        };
        let sudo = route.as_ref().is_some_and(|r| r.spec.sudo);
        let existence_check = route.as_ref().is_none_or(|r| r.spec.existence_check);
        let acl = active.policies.acl(&self.barrier, &u, &entry.policies).await?;
        // Create or update? Only the policy check can tell them apart for a
        // backend that handles both alike; when the policy grants both, the
        // existence read (a storage round trip on a write's hot path) is moot.
        let moot = || {
            m.backend.create_is_update()
                && acl.allows(&full_path, Operation::Create, sudo)
                && acl.allows(&full_path, Operation::Update, sudo)
        };
        if op == Operation::Update
            && existence_check
            && !moot()
            && let Some(false) = m.backend.exists_routed(&u, rel, route.as_ref()).await?
        {
            op = Operation::Create;
        }
        if !acl.allows(&full_path, op, sudo) {
            return Err(LogicalError::PermissionDenied.into());
        }
        let token_value = (m.entry.kind == "token").then(|| token.map(|t| Zeroizing::new(t.to_string()))).flatten();
        let caller = Caller::new(entry.clone());
        let (mounted, rel) = (m.clone(), rel.to_string());
        let access = Access::Token { entry, acl, sudo, token_value };
        Ok(Prepared { mounted, rel, full_path, op, client_addr, access, caller: Some(caller), route })
    }

    /// Run an authorized request with its body's data: parameter
    /// constraints, the token's use count, the backend, and a login's token.
    /// `stream` is the unread body of a path declared [`BodyKind::Stream`].
    pub async fn execute(
        &self,
        p: Prepared,
        data: Map<String, Value>,
        stream: Option<ByteStream>,
    ) -> Result<Handled, CoreError> {
        let active = self.active()?;
        let u = self.unsealed()?;
        let Prepared { mounted: m, rel, full_path, op, client_addr, access, caller: _, route } = p;
        let req = Request { op, path: rel, data, client_addr, route, stream };
        let auth = match access {
            Access::Login => Authorized::unauthenticated(u),
            Access::Token { entry, acl, sudo, token_value } => {
                acl::check_parameters(&acl, &full_path, op, &req.data)?;
                let mut auth = acl::authorize(u.clone(), entry.clone(), &acl, &full_path, op, sudo)?
                    .with_acl(acl.clone(), &m.route_path);
                if let Some(t) = token_value {
                    auth = auth.with_token_value(&t);
                }
                let mut spent = false;
                if entry.num_uses > 0 {
                    // Boxed, as the login below: rare paths must not size
                    // (and be copied with) every request's future.
                    let used = Box::pin(active.tokens.use_once(&self.barrier, &u, &entry))
                        .await?
                        .ok_or(LogicalError::PermissionDenied)?;
                    // `used` reads 0 uses both when unlimited and when this was the
                    // last one; the entry before the use tells them apart.
                    let left = entry.num_uses.saturating_sub(1).min(used.num_uses);
                    spent = left == 0;
                    auth = auth.with_uses_left(left).with_token_entry(Arc::new(used));
                }
                let grant = Grant { path: full_path.clone(), op, sudo, addr: client_addr, spent };
                auth.with_grant(grant, self.reauth.clone())
            }
        };
        if let Some(r) = &req.route {
            r.spec.validate(&req.data)?;
        }
        let response = match m.backend.handle(&auth, req).await {
            // Say what was not found, in the caller's terms (a backend's own
            // message names only its relative path, or nothing).
            Err(LogicalError::UnsupportedPath(_)) => return Err(unsupported(&full_path, &m).into()),
            other => other?,
        };
        let response = match response {
            login @ Response::Login(_) => Box::pin(self.finish_login(login, &full_path, &m)).await?,
            other => other,
        };
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
            if !core.token_usable(&active, &u, &entry, grant.addr, now).await? {
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
