//! Auth methods (mounted under `auth/`), built from auth mount-table rows.
//!
//! Every method validates credentials and answers a successful login with
//! [`Login`](crate::logical::Login); the core mints the token. Methods count
//! failures in the shared [`Lockout`] so brute force is throttled everywhere.

pub mod approle;
pub mod jwt;
pub mod userpass;

use std::sync::Arc;

use crate::auth::lockout::Lockout;
use crate::barrier::view::View;
use crate::core::{Core, MountEntry};
use crate::logical::{Backend, LogicalError};

/// What every auth method gets besides its storage view.
#[derive(Debug, Clone)]
pub struct MethodContext {
    /// The mount path, e.g. `approle/` (lockout key and display names).
    pub mount_path: String,
    /// Shared failure counters.
    pub lockout: Arc<Lockout>,
}

/// Build the auth method for a mount row.
pub fn build(core: &Core, entry: &MountEntry, view: View) -> Result<Arc<dyn Backend>, LogicalError> {
    let ctx = MethodContext { mount_path: entry.path.clone(), lockout: core.lockout().clone() };
    match entry.kind.as_str() {
        "approle" => Ok(Arc::new(approle::AppRole::new(view, ctx))),
        "userpass" => Ok(Arc::new(userpass::Userpass::new(view, ctx))),
        "jwt" | "oidc" => Ok(Arc::new(jwt::Jwt::new(view, ctx, jwt::Flavor::Jwt))),
        "kubernetes" => Ok(Arc::new(jwt::Jwt::new(view, ctx, jwt::Flavor::Kubernetes))),
        other => Err(LogicalError::InvalidRequest(format!("auth method not found in the catalog: {other}"))),
    }
}
