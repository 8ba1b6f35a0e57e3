//! Authentication and authorization: who is calling, and may they do this.
//!
//! [`Authorized`] is the capability every backend call requires. Only
//! [`acl::authorize`] (after a policy check) and [`Authorized::unauthenticated`]
//! (for paths a backend declares public, such as login) construct it.

pub(crate) mod acl;
pub(crate) mod cidr;
pub(crate) mod lockout;
pub(crate) mod methods;
pub(crate) mod policy;
pub mod token;
pub(crate) mod token_backend;

use std::net::IpAddr;
use std::sync::Arc;

use crate::barrier::Unsealed;
use crate::logical::{BoxFuture, LogicalError, Operation};
pub use token::{TokenEntry, TokenStore};

/// What a request was authorized for, kept so that a long request can ask
/// again later ("is this still allowed?") when tokens or policies change.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// Full request path (mount included).
    pub(crate) path: String,
    /// The operation the policy check allowed.
    pub(crate) op: Operation,
    /// Whether the path needed `sudo`.
    pub(crate) sudo: bool,
    /// Caller's address (CIDR-bound tokens).
    pub(crate) addr: Option<IpAddr>,
    /// This request spent the token's last use: the token no longer exists,
    /// so nothing can revoke it; a re-check refuses rather than assume.
    pub(crate) spent: bool,
}

/// The core's side of a re-check: look the token up again and run the
/// policy check again, against the current (invalidated) state.
pub(crate) trait Recheck: Send + Sync {
    /// Ok if `token_id` still exists and its policies still grant `grant`.
    fn recheck<'a>(
        &'a self,
        token_id: &'a str,
        grant: &'a Grant,
        data: &'a serde_json::Map<String, serde_json::Value>,
    ) -> BoxFuture<'a, Result<(), LogicalError>>;
    /// Moves whenever a token or a policy is invalidated.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>>;
}

/// Proof that the request passed the seal check and the policy check.
#[derive(Debug, Clone)]
pub struct Authorized {
    unsealed: Unsealed,
    token: Option<Arc<TokenEntry>>,
    token_value: Option<zeroize::Zeroizing<String>>,
    /// The caller's compiled policies and the mount's route path, so a
    /// backend can check the caller's rights on a *second* path it is asked
    /// to use (e.g. a rotation naming an admin connection secret).
    acl: Option<(Arc<acl::Acl>, String)>,
    /// Set by the core for token-authenticated requests.
    grant: Option<(Grant, Arc<dyn Recheck>)>,
    /// Uses the token has left after this request (None: unlimited).
    uses_left: Option<u64>,
    _private: (),
}

impl std::fmt::Debug for dyn Recheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recheck")
    }
}

impl Authorized {
    /// The unsealed barrier capability, for storage access.
    pub fn unsealed(&self) -> &Unsealed {
        &self.unsealed
    }

    /// Whether the caller's policies grant `op` on `mount_relative` in the
    /// same mount (false for unauthenticated requests).
    pub fn may(&self, mount_relative: &str, op: crate::logical::Operation) -> bool {
        self.acl.as_ref().is_some_and(|(acl, mount)| acl.allows(&format!("{mount}{mount_relative}"), op, false))
    }

    /// Whether the caller's policies grant `op` *and* `sudo` on
    /// `mount_relative` in the same mount, for an act a backend treats as
    /// privileged depending on the request (e.g. a postgresql rotation
    /// policy). Reads the ACL only the core attaches; false when none is.
    pub fn may_sudo(&self, mount_relative: &str, op: crate::logical::Operation) -> bool {
        self.acl.as_ref().is_some_and(|(acl, mount)| acl.allows(&format!("{mount}{mount_relative}"), op, true))
    }

    /// Attach the caller's policies (only the core does this, after authorization).
    pub(crate) fn with_acl(mut self, acl: Arc<acl::Acl>, mount: &str) -> Self {
        self.acl = Some((acl, mount.to_string()));
        self
    }

    /// The caller's token (None on unauthenticated paths such as login).
    pub fn token(&self) -> Option<&TokenEntry> {
        self.token.as_deref()
    }

    /// The caller's token value, for the token backend's `*-self` endpoints
    /// (lookup-self returns it as `id`, renew-self as `client_token`).
    pub(crate) fn token_value(&self) -> Option<&str> {
        self.token_value.as_deref().map(String::as_str)
    }

    /// Replace the token entry with its state after use accounting (the core
    /// counts a use of a use-limited token after the policy check).
    pub(crate) fn with_token_entry(mut self, entry: Arc<TokenEntry>) -> Self {
        self.token = Some(entry);
        self
    }

    /// Attach the raw token (only the core does this, after authorization).
    pub(crate) fn with_token_value(mut self, v: &str) -> Self {
        self.token_value = Some(zeroize::Zeroizing::new(v.to_string()));
        self
    }

    /// For paths the backend itself declares unauthenticated (login).
    pub(crate) fn unauthenticated(unsealed: Unsealed) -> Self {
        Self::new(unsealed, None)
    }

    pub(crate) fn new(unsealed: Unsealed, token: Option<Arc<TokenEntry>>) -> Self {
        Self { unsealed, token, token_value: None, acl: None, grant: None, uses_left: None, _private: () }
    }

    /// Remember what was granted and how to check it again (only the core).
    pub(crate) fn with_grant(mut self, grant: Grant, checker: Arc<dyn Recheck>) -> Self {
        self.grant = Some((grant, checker));
        self
    }

    /// Record the uses the token has left after this request (only the core).
    pub(crate) fn with_uses_left(mut self, left: u64) -> Self {
        self.uses_left = Some(left);
        self
    }

    /// Uses the caller's token has left after this request (None: unlimited).
    pub fn uses_left(&self) -> Option<u64> {
        self.uses_left
    }

    /// Follows invalidations of tokens and policies: a request that waits
    /// (a blocking read) wakes on it and calls [`Self::still_authorized`].
    /// None for unauthenticated requests.
    pub fn security_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.grant.as_ref().and_then(|(_, c)| c.changes())
    }

    /// Ask again: is the token still valid and does the current policy still
    /// grant this request? (Unauthenticated requests have nothing to re-check.)
    /// `data` is the request's data, for the policy's parameter constraints.
    pub async fn still_authorized(
        &self,
        data: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), LogicalError> {
        match (&self.grant, &self.token) {
            (Some((grant, checker)), Some(token)) => checker.recheck(&token.id, grant, data).await,
            (None, None) => Ok(()),
            // A token without a recorded grant cannot be re-checked: refuse.
            _ => Err(LogicalError::PermissionDenied),
        }
    }
}
