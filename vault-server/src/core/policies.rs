//! The policy store: named ACL policies kept inside the barrier at
//! `sys/policy/<name>`, parsed once and cached, and the compiled ACL of each
//! distinct policy set cached too, since the check runs on every request.
//! Any change (here, or announced by another server) drops the caches, and
//! an ACL compiled from policies read before that change is never cached
//! after it ([`Guarded`]: the ticket is taken before the first policy read).

use std::sync::Arc;

use crate::auth::acl::Acl;
use crate::auth::policy::{self, DEFAULT_POLICY, Policy};
use crate::barrier::{Barrier, Unsealed};
use crate::cache::{Guarded, Signal};
use crate::logical::LogicalError;

/// Storage prefix of policies.
pub const POLICY_PREFIX: &str = "sys/policy/";
/// Bounds on what is cached (policy sets are chosen by admins, not callers,
/// but a bound keeps memory predictable).
const POLICY_LIMIT: usize = 10_000;
const ACL_LIMIT: usize = 10_000;
/// Bytes of policy text (parsed policies, and the compiled ACLs built from
/// them) each cache may hold.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Cached policies and ACLs.
#[derive(Debug)]
pub struct PolicyStore {
    policies: Guarded<String, Arc<Policy>>,
    acls: Guarded<Vec<String>, Arc<Acl>>,
    #[cfg(test)]
    pub(crate) pauses: crate::testing::Pauses,
}

impl Default for PolicyStore {
    fn default() -> Self {
        Self::new(None)
    }
}

fn internal(e: impl std::fmt::Display) -> LogicalError {
    LogicalError::internal(e)
}

impl PolicyStore {
    /// An empty store; every invalidation moves `signal`.
    pub fn new(signal: Option<Signal>) -> Self {
        Self {
            policies: Guarded::new(POLICY_LIMIT, CACHE_BYTES, signal.clone()),
            acls: Guarded::new(ACL_LIMIT, CACHE_BYTES, signal),
            #[cfg(test)]
            pauses: Default::default(),
        }
    }

    /// Drop every cached policy and ACL (after a change has committed).
    /// (hits, misses) of the parsed-policy and compiled-ACL caches, for metrics.
    pub fn cache_hits_misses(&self) -> [(u64, u64); 2] {
        [self.policies.hits_misses(), self.acls.hits_misses()]
    }

    pub fn invalidate(&self) {
        self.policies.clear();
        self.acls.clear();
    }

    /// A policy by name (`default` falls back to the built-in text).
    pub async fn get(&self, barrier: &Barrier, u: &Unsealed, name: &str) -> Result<Option<Arc<Policy>>, LogicalError> {
        if let Some(p) = self.policies.get(name) {
            return Ok(Some(p));
        }
        let ticket = self.policies.ticket(name);
        let text = match barrier.get(u, &format!("{POLICY_PREFIX}{name}")).await? {
            Some(raw) => String::from_utf8(raw.to_vec()).map_err(internal)?,
            None if name == "default" => DEFAULT_POLICY.to_string(),
            None => return Ok(None),
        };
        let p = Arc::new(Policy::parse(name, &text).map_err(internal)?);
        self.policies.fill(ticket, name.to_string(), p.clone(), text.len());
        Ok(Some(p))
    }

    /// Create or replace a policy after parsing it (a parse error is a 400 naming the line).
    pub async fn put(&self, barrier: &Barrier, u: &Unsealed, name: &str, text: &str) -> Result<(), LogicalError> {
        policy::validate_name(name).map_err(|e| LogicalError::InvalidRequest(e.to_string()))?;
        if name == "root" {
            return Err(LogicalError::InvalidRequest("cannot update the \"root\" policy".into()));
        }
        Policy::parse(name, text).map_err(|e| LogicalError::InvalidRequest(e.to_string()))?;
        barrier.put(u, &format!("{POLICY_PREFIX}{name}"), text.as_bytes()).await?;
        self.invalidate();
        Ok(())
    }

    /// Delete a policy (`root` and `default` cannot be deleted).
    pub async fn delete(&self, barrier: &Barrier, name: &str) -> Result<(), LogicalError> {
        policy::validate_delete(name).map_err(|e| LogicalError::InvalidRequest(e.to_string()))?;
        barrier.delete(&format!("{POLICY_PREFIX}{name}")).await?;
        self.invalidate();
        Ok(())
    }

    /// Names of all policies, with the built-in `default` and `root`.
    pub async fn list(&self, barrier: &Barrier, u: &Unsealed) -> Result<Vec<String>, LogicalError> {
        let mut names = barrier.list(u, POLICY_PREFIX).await?;
        names.retain(|n| !n.ends_with('/'));
        for builtin in ["default", "root"] {
            if !names.iter().any(|n| n == builtin) {
                names.push(builtin.into());
            }
        }
        names.sort();
        Ok(names)
    }

    /// The compiled ACL for a token's policies (cached per policy set).
    /// Unknown policy names grant nothing, as in Vault.
    pub async fn acl(&self, barrier: &Barrier, u: &Unsealed, names: &[String]) -> Result<Arc<Acl>, LogicalError> {
        if let Some(a) = self.acls.get(names) {
            return Ok(a);
        }
        // Before the first policy read: a change committing while the
        // policies are fetched voids this ticket.
        let ticket = self.acls.ticket(names);
        let mut weight = 0;
        let acl = if names.iter().any(|n| n == "root") {
            Arc::new(Acl::root())
        } else {
            let mut policies = Vec::with_capacity(names.len());
            for n in names {
                if let Some(p) = self.get(barrier, u, n).await? {
                    weight += p.text().len();
                    policies.push(p);
                }
            }
            #[cfg(test)]
            self.pauses.at("acl:before-fill").await;
            Arc::new(Acl::new(&policies))
        };
        self.acls.fill(ticket, names.to_vec(), acl.clone(), weight);
        Ok(acl)
    }
}
