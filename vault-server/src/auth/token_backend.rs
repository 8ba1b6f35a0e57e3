//! The token auth method, built in at `auth/token/`: create, look up, renew
//! and revoke tokens, with Vault's paths and shapes.

use std::sync::{Arc, Weak};

use serde_json::{Map, Value};

use super::{Authorized, TokenEntry};
use crate::barrier::now_unix;
use crate::core::{Core, request::meta_value};
use crate::logical::fields::rfc3339;
use crate::logical::{
    AuthInfo, Backend, BoxFuture, Field, FieldKind, LogicalError, Login, Operation, PathSpec, Request, Response, fields,
};

/// The `auth/token/` backend.
#[derive(Debug)]
pub struct TokenBackend {
    core: Weak<Core>,
}

impl TokenBackend {
    /// A backend bound to its core.
    pub fn new(core: Weak<Core>) -> Self {
        Self { core }
    }
}

use crate::logical::fields::{policy_list, string_list};

/// Vault's token lookup data.
pub fn lookup_data(e: &TokenEntry, token: Option<&str>, now: i64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("accessor".into(), e.accessor.clone().into());
    m.insert("creation_time".into(), e.creation_time.into());
    m.insert("creation_ttl".into(), e.creation_ttl.into());
    m.insert("display_name".into(), e.display_name.clone().into());
    m.insert("entity_id".into(), "".into());
    m.insert("expire_time".into(), e.expire_time.map_or(Value::Null, |t| rfc3339(t).into()));
    m.insert("explicit_max_ttl".into(), e.explicit_max_ttl.into());
    m.insert("id".into(), token.unwrap_or_default().into());
    m.insert("issue_time".into(), rfc3339(e.creation_time).into());
    m.insert("meta".into(), meta_value(&e.meta));
    m.insert("num_uses".into(), e.num_uses.into());
    m.insert("orphan".into(), e.parent.is_none().into());
    m.insert("path".into(), e.path.clone().into());
    m.insert("policies".into(), e.policies.clone().into());
    m.insert("renewable".into(), e.renewable.into());
    m.insert("ttl".into(), e.ttl_left(now).into());
    m.insert("type".into(), "service".into());
    if e.period > 0 {
        m.insert("period".into(), e.period.into());
    }
    if !e.bound_cidrs.is_empty() {
        m.insert("bound_cidrs".into(), e.bound_cidrs.clone().into());
    }
    m
}

fn required<'a>(d: &'a Map<String, Value>, field: &str) -> Result<&'a str, LogicalError> {
    d.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| LogicalError::InvalidRequest(format!("missing required field '{field}'")))
}

impl Backend for TokenBackend {
    fn handle<'a>(&'a self, auth: &'a Authorized, req: Request) -> BoxFuture<'a, Result<Response, LogicalError>> {
        Box::pin(async move {
            let core = self.core.upgrade().ok_or(LogicalError::Sealed)?;
            route(&core, auth, req).await
        })
    }

    fn paths(&self) -> &'static [PathSpec] {
        PATHS
    }
}

/// The token store's paths. `sudo` as Vault's (create-orphan is governed by
/// its ACL alone).
static PATHS: &[PathSpec] = {
    use Operation::*;
    const TOKEN: &[Field] = &[Field::new("token", FieldKind::String)];
    const ACCESSOR: &[Field] = &[Field::new("accessor", FieldKind::String)];
    const INCREMENT: &[Field] = &[Field::new("increment", FieldKind::Duration)];
    const TOKEN_INCREMENT: &[Field] =
        &[Field::new("token", FieldKind::String), Field::new("increment", FieldKind::Duration)];
    const ACCESSOR_INCREMENT: &[Field] =
        &[Field::new("accessor", FieldKind::String), Field::new("increment", FieldKind::Duration)];
    const CREATE: &[Field] = &[
        Field::new("policies", FieldKind::CommaList),
        Field::new("meta", FieldKind::StringMap),
        Field::new("no_parent", FieldKind::Bool),
        Field::new("no_default_policy", FieldKind::Bool),
        Field::new("renewable", FieldKind::Bool),
        Field::new("ttl", FieldKind::Duration),
        Field::new("explicit_max_ttl", FieldKind::Duration),
        Field::new("period", FieldKind::Duration),
        Field::new("num_uses", FieldKind::Count),
        Field::new("display_name", FieldKind::String),
    ];
    &[
        PathSpec::new("create", &[Update]).fields(CREATE),
        PathSpec::new("create-orphan", &[Update]).fields(CREATE),
        PathSpec::new("lookup-self", &[Read, Update]),
        PathSpec::new("lookup", &[Read, Update]).fields(TOKEN),
        PathSpec::new("lookup-accessor", &[Update]).fields(ACCESSOR),
        PathSpec::new("renew-self", &[Update]).fields(INCREMENT),
        PathSpec::new("renew", &[Update]).fields(TOKEN_INCREMENT),
        PathSpec::new("renew-accessor", &[Update]).fields(ACCESSOR_INCREMENT),
        PathSpec::new("revoke-self", &[Update]),
        PathSpec::new("revoke", &[Update]).fields(TOKEN),
        PathSpec::new("revoke-accessor", &[Update]).fields(ACCESSOR),
        PathSpec::new("revoke-orphan", &[Update]).sudo().fields(TOKEN),
        PathSpec::new("tidy", &[Update]),
        PathSpec::new("accessors", &[List]).sudo(),
    ]
};

async fn route(core: &Arc<Core>, auth: &Authorized, req: Request) -> Result<Response, LogicalError> {
    let req = crate::logical::paths::ensure_routed(PATHS, req)?;
    let caller = auth.token().ok_or(LogicalError::PermissionDenied)?;
    let active = core.active().map_err(LogicalError::from)?;
    let tokens = active.tokens();
    let barrier = core.barrier();
    let u = auth.unsealed();
    let now = now_unix();
    let d = &req.data;
    // The table admitted the operation; each pattern is its literal path.
    let path = req.pattern();
    let write = matches!(req.op, Operation::Update | Operation::Create);
    match (path, req.op) {
        ("create" | "create-orphan", _) if write => create(core, auth, caller, d, path == "create-orphan").await,
        ("lookup-self", Operation::Read) | ("lookup-self", Operation::Update | Operation::Create) => {
            Ok(Response::data(lookup_data(caller, auth.token_value(), now)))
        }
        ("lookup", _) if write || req.op == Operation::Read => {
            let token = required(d, "token")?;
            // An unknown, expired or revoked token is a 403, as in Vault.
            let e = tokens.lookup(barrier, u, token, now).await?.ok_or(LogicalError::PermissionDenied)?;
            Ok(Response::data(lookup_data(&e, Some(token), now)))
        }
        ("lookup-accessor", _) if write => {
            let accessor = required(d, "accessor")?;
            let e = tokens
                .lookup_accessor(barrier, u, accessor, now)
                .await?
                .ok_or_else(|| LogicalError::InvalidRequest("invalid accessor".into()))?;
            Ok(Response::data(lookup_data(&e, None, now)))
        }
        ("renew-self", _) if write => {
            let inc = fields::duration(d, "increment")?.unwrap_or(0);
            renew(core, &caller.id, auth.token_value(), inc).await
        }
        ("renew", _) if write => {
            let token = required(d, "token")?;
            let inc = fields::duration(d, "increment")?.unwrap_or(0);
            renew(core, &tokens.id_of(token), Some(token), inc).await
        }
        ("renew-accessor", _) if write => {
            let accessor = required(d, "accessor")?;
            let e = tokens
                .lookup_accessor(barrier, u, accessor, now)
                .await?
                .ok_or_else(|| LogicalError::InvalidRequest("invalid accessor".into()))?;
            let inc = fields::duration(d, "increment")?.unwrap_or(0);
            renew(core, &e.id, None, inc).await
        }
        ("revoke-self", _) if write => {
            tokens.revoke_tree(barrier, u, &caller.id).await?;
            Ok(Response::NoContent)
        }
        ("revoke", _) if write => {
            let token = required(d, "token")?;
            tokens.revoke_tree(barrier, u, &tokens.id_of(token)).await?;
            Ok(Response::NoContent)
        }
        ("revoke-accessor", _) if write => {
            let accessor = required(d, "accessor")?;
            if let Some(e) = tokens.lookup_accessor(barrier, u, accessor, now).await? {
                tokens.revoke_tree(barrier, u, &e.id).await?;
            }
            Ok(Response::NoContent)
        }
        ("revoke-orphan", _) if write => {
            let token = required(d, "token")?;
            tokens.revoke_orphan(barrier, u, &tokens.id_of(token)).await?;
            Ok(Response::NoContent)
        }
        ("tidy", _) if write => {
            let n = tokens.tidy(barrier, u, now).await?;
            Ok(Response::Data { data: None, auth: None, warnings: vec![format!("tidied {n} expired tokens")] })
        }
        ("accessors", Operation::List) => {
            let mut keys = Vec::new();
            for mac in barrier.list(u, "sys/token/accessor/").await? {
                if let Some(id) = barrier.get(u, &format!("sys/token/accessor/{mac}")).await?
                    && let Ok(id) = std::str::from_utf8(&id)
                    && let Some(e) = tokens.lookup_id(barrier, u, id, now).await?
                {
                    keys.push(Value::String(e.accessor.clone()));
                }
            }
            let mut m = Map::new();
            m.insert("keys".into(), Value::Array(keys));
            Ok(Response::data(m))
        }
        _ => Err(LogicalError::UnsupportedPath(format!("no handler for route \"auth/token/{path}\""))),
    }
}

async fn renew(core: &Arc<Core>, id: &str, token: Option<&str>, increment: u64) -> Result<Response, LogicalError> {
    let active = core.active().map_err(LogicalError::from)?;
    let u = core.unsealed().map_err(LogicalError::from)?;
    // One clock reading for the new expiry and the reported TTL, so the answer is exactly the TTL granted
    // even when the second ticks over between the write and the response.
    let now = now_unix();
    let e = match active.tokens().renew(core.barrier(), &u, id, increment, now).await {
        Ok(Some(e)) => e,
        Ok(None) => return Err(LogicalError::InvalidRequest("invalid token".into())),
        Err(crate::auth::token::RenewError::NotRenewable) => {
            return Err(LogicalError::InvalidRequest("lease is not renewable".into()));
        }
        Err(crate::auth::token::RenewError::Barrier(b)) => return Err(b.into()),
    };
    let auth = AuthInfo {
        client_token: token.unwrap_or_default().to_string(),
        accessor: e.accessor.clone(),
        policies: e.policies.clone(),
        token_policies: e.policies.clone(),
        metadata: (!e.meta.is_empty()).then(|| e.meta.clone()),
        lease_duration: e.ttl_left(now),
        renewable: e.renewable,
        entity_id: String::new(),
        token_type: "service".into(),
        orphan: e.parent.is_none(),
        num_uses: e.num_uses,
    };
    Ok(Response::Data { data: None, auth: Some(Box::new(auth)), warnings: Vec::new() })
}

/// A new token never holds more than its creator: its policies are a subset
/// of the parent's (`root` only from a root parent, `default` only if the
/// parent has it), it has no more uses than the parent has left, and
/// orphans and periodic tokens need `sudo` (as Vault).
async fn create(
    core: &Arc<Core>,
    auth: &Authorized,
    parent: &TokenEntry,
    d: &Map<String, Value>,
    orphan_path: bool,
) -> Result<Response, LogicalError> {
    if d.get("id").is_some_and(|v| !v.is_null()) {
        return Err(LogicalError::InvalidRequest("custom token IDs are not supported".into()));
    }
    if let Some(t) = fields::string(d, "type")?
        && t != "service"
        && t != "default"
    {
        return Err(LogicalError::InvalidRequest(format!("token type \"{t}\" is not supported; use \"service\"")));
    }
    let parent_root = parent.is_root();
    let privileged = parent_root
        || core
            .capabilities(parent, "auth/token/create")
            .await
            .map_err(LogicalError::from)?
            .iter()
            .any(|c| c == "sudo" || c == "root");
    let no_parent = orphan_path || fields::boolean(d, "no_parent")?.unwrap_or(false);
    if no_parent && !orphan_path && !privileged {
        return Err(LogicalError::InvalidRequest("root or sudo privileges required to create orphan token".into()));
    }
    let period = fields::duration(d, "period")?.unwrap_or(0);
    if period > 0 && !privileged {
        return Err(LogicalError::InvalidRequest("root or sudo privileges required to create periodic token".into()));
    }
    // `default` is added to a child unless refused, so a parent without it
    // (created with no_default_policy) must not pass it on.
    let parent_has_default = parent_root || parent.policies.iter().any(|p| p == "default");
    let no_default = fields::boolean(d, "no_default_policy")?.unwrap_or(false) || !parent_has_default;
    let requested = policy_list(d, "policies")?;
    let policies = match requested {
        Some(p) if !p.is_empty() => {
            if !parent_root && p.iter().any(|x| !parent.policies.contains(x)) {
                return Err(LogicalError::InvalidRequest("child policies must be subset of parent".into()));
            }
            p
        }
        _ => parent.policies.iter().filter(|p| parent_root || *p != "root").cloned().collect(),
    };
    let num_uses = fields::count(d, "num_uses")?.unwrap_or(0);
    if let Some(left) = auth.uses_left() {
        // This request already spent one of the parent's uses; what it gives
        // the child comes out of the rest, and it keeps at least one (its
        // exhaustion revokes its children).
        if left <= 1 {
            return Err(LogicalError::InvalidRequest(
                "this token has no uses left to give a child token (num_uses)".into(),
            ));
        }
        if num_uses == 0 || num_uses >= left {
            return Err(LogicalError::InvalidRequest(format!(
                "a use-limited token may only give a child 1 to {} of its remaining uses (num_uses)",
                left - 1
            )));
        }
    }
    let meta = match d.get("meta") {
        None | Some(Value::Null) => Map::new(),
        Some(_) => fields::string_map(d, "meta")?.unwrap_or_default(),
    };
    let name = fields::string(d, "display_name")?.unwrap_or_default();
    let display_name = if name.is_empty() { "token".to_string() } else { format!("token-{}", name.to_lowercase()) };
    let mut login = Login {
        policies,
        no_default_policy: no_default,
        ttl: fields::duration(d, "ttl")?.unwrap_or(0),
        max_ttl: fields::duration(d, "explicit_max_ttl")?.unwrap_or(0),
        period,
        num_uses,
        display_name,
        metadata: meta,
        bound_cidrs: string_list(d, "bound_cidrs")?.unwrap_or_default(),
        renewable: fields::boolean(d, "renewable")?.unwrap_or(true),
        alias: String::new(),
    };
    crate::auth::cidr::validate(&login.bound_cidrs).map_err(LogicalError::InvalidRequest)?;
    // A child of a CIDR-bound token is bound at least as tightly.
    if !parent.bound_cidrs.is_empty() {
        if login.bound_cidrs.is_empty() {
            login.bound_cidrs = parent.bound_cidrs.clone();
        } else if !crate::auth::cidr::within(&login.bound_cidrs, &parent.bound_cidrs) {
            return Err(LogicalError::InvalidRequest(
                "bound_cidrs must lie within the parent token's bound_cidrs".into(),
            ));
        }
    }
    if auth.uses_left().is_some() {
        let active = core.active().map_err(LogicalError::from)?;
        if !active.tokens().spend(core.barrier(), auth.unsealed(), &parent.id, num_uses).await? {
            return Err(LogicalError::InvalidRequest("not enough uses left to give a child token (num_uses)".into()));
        }
    }
    let path = if orphan_path { "auth/token/create-orphan" } else { "auth/token/create" };
    let auth = core.mint(login, path, (!no_parent).then_some(parent), None).await.map_err(LogicalError::from)?;
    Ok(Response::Data { data: None, auth: Some(Box::new(auth)), warnings: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policy_lists() {
        let d = json!({"a": "x, y ,X", "b": ["b", "a"], "c": 5}).as_object().unwrap().clone();
        assert_eq!(policy_list(&d, "a").unwrap().unwrap(), vec!["x", "y"]);
        assert_eq!(policy_list(&d, "b").unwrap().unwrap(), vec!["a", "b"]);
        assert!(policy_list(&d, "c").is_err());
        assert!(policy_list(&d, "zz").unwrap().is_none());
        // Names no policy can have are refused (a token holding one failed
        // every request afterwards).
        for bad in ["p\"", "a\\b", "x\ny", "\u{1}", "a/b", "..", "é"] {
            let d = json!({"p": ["default", bad]}).as_object().unwrap().clone();
            assert!(policy_list(&d, "p").is_err(), "{bad:?}");
        }
        let d = json!({"p": "Root, default"}).as_object().unwrap().clone();
        assert_eq!(policy_list(&d, "p").unwrap().unwrap(), vec!["default", "root"], "root is the caller's to refuse");
    }
}
