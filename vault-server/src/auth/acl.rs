//! Policy evaluation. A token's policies compile into an [`Acl`]; a request
//! is allowed if the ACL grants the operation's capability on the path (and
//! `sudo` on root-protected paths). The `root` policy allows everything.
//!
//! Named HCL policies (path blocks, globs, deny precedence) are compiled by
//! the policy store of the auth issue; this module is the single place where
//! the decision is made, so that store plugs in here.

use std::sync::Arc;

use super::{Authorized, TokenEntry};
use crate::barrier::Unsealed;
use crate::logical::{LogicalError, Operation};

/// A compiled set of policies.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    root: bool,
}

impl Acl {
    /// Compile the policies named on a token.
    pub fn for_policies(policies: &[String]) -> Self {
        Self { root: policies.iter().any(|p| p == "root") }
    }

    /// Does this ACL allow `op` on `path` (full path, no mount stripping),
    /// with `sudo` when `needs_sudo`?
    pub fn allows(&self, _path: &str, _op: Operation, _needs_sudo: bool) -> bool {
        // Non-root policies grant nothing until named policies exist: deny by default.
        self.root
    }
}

/// Check `token` against `path`/`op` and, if allowed, make the capability.
pub fn authorize(
    unsealed: Unsealed,
    token: Arc<TokenEntry>,
    path: &str,
    op: Operation,
    needs_sudo: bool,
) -> Result<Authorized, LogicalError> {
    let acl = Acl::for_policies(&token.policies);
    if !acl.allows(path, op, needs_sudo) {
        return Err(LogicalError::PermissionDenied);
    }
    Ok(Authorized { unsealed, token: Some(token), _private: () })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_allows_everything_others_nothing_yet() {
        let root = Acl::for_policies(&["root".into()]);
        assert!(root.allows("sys/rotate", Operation::Update, true));
        let other = Acl::for_policies(&["default".into()]);
        assert!(!other.allows("secret/x", Operation::Read, false));
    }
}
