//! Authentication and authorization: who is calling, and may they do this.
//!
//! [`Authorized`] is the capability every backend call requires. Only
//! [`acl::authorize`] (after a policy check) and [`Authorized::unauthenticated`]
//! (for paths a backend declares public, such as login) construct it.

pub mod acl;
pub mod cidr;
pub mod lockout;
pub mod methods;
pub mod policy;
pub mod token;
pub mod token_backend;

use std::sync::Arc;

use crate::barrier::Unsealed;
pub use token::{TokenEntry, TokenStore};

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
    _private: (),
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
        Self { unsealed, token: None, token_value: None, acl: None, _private: () }
    }
}
