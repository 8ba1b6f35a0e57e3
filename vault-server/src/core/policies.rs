//! The policy store: named ACL policies kept inside the barrier at
//! `sys/policy/<name>`, parsed once and cached, and the compiled ACL of each
//! distinct policy set cached too, since the check runs on every request.
//! Any change (here, or announced by another server) drops the caches.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::auth::acl::Acl;
use crate::auth::policy::{self, DEFAULT_POLICY, Policy};
use crate::barrier::{Barrier, Unsealed};
use crate::logical::LogicalError;

/// Storage prefix of policies.
pub const POLICY_PREFIX: &str = "sys/policy/";

/// Cached policies and ACLs.
#[derive(Debug, Default)]
pub struct PolicyStore {
    policies: RwLock<HashMap<String, Arc<Policy>>>,
    acls: RwLock<HashMap<Vec<String>, Arc<Acl>>>,
}

fn internal(e: impl std::fmt::Display) -> LogicalError {
    LogicalError::internal(e)
}

impl PolicyStore {
    /// Drop every cached policy and ACL.
    pub fn invalidate(&self) {
        self.policies.write().unwrap_or_else(|p| p.into_inner()).clear();
        self.acls.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// A policy by name (`default` falls back to the built-in text).
    pub async fn get(&self, barrier: &Barrier, u: &Unsealed, name: &str) -> Result<Option<Arc<Policy>>, LogicalError> {
        if let Some(p) = self.policies.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Ok(Some(p.clone()));
        }
        let text = match barrier.get(u, &format!("{POLICY_PREFIX}{name}")).await? {
            Some(raw) => String::from_utf8(raw.to_vec()).map_err(internal)?,
            None if name == "default" => DEFAULT_POLICY.to_string(),
            None => return Ok(None),
        };
        let p = Arc::new(Policy::parse(name, &text).map_err(internal)?);
        self.policies.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), p.clone());
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
        if name == "root" || name == "default" {
            return Err(LogicalError::InvalidRequest(format!("cannot delete \"{name}\" policy")));
        }
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
        if let Some(a) = self.acls.read().unwrap_or_else(|p| p.into_inner()).get(names) {
            return Ok(a.clone());
        }
        let acl = if names.iter().any(|n| n == "root") {
            Arc::new(Acl::root())
        } else {
            let mut policies = Vec::with_capacity(names.len());
            for n in names {
                if let Some(p) = self.get(barrier, u, n).await? {
                    policies.push(p);
                }
            }
            Arc::new(Acl::new(&policies))
        };
        self.acls.write().unwrap_or_else(|p| p.into_inner()).insert(names.to_vec(), acl.clone());
        Ok(acl)
    }
}
