//! The logical request path: seal check, routing, token, policy, backend.

use crate::auth::{Authorized, acl};
use crate::barrier::now_unix;
use crate::logical::{LogicalError, Operation, Request, Response, path_matches};

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
    /// Handle a logical request on behalf of the holder of `token`.
    pub async fn handle(&self, token: Option<&str>, mut req: Request) -> Result<Handled, CoreError> {
        let active = self.active()?;
        let u = self.unsealed()?;
        let router = active.router();
        let full_path = req.path.clone();
        let routed = router.route(&full_path);

        // Unauthenticated paths are declared by the backend that serves them.
        if let Some((m, rel)) = routed
            && path_matches(m.backend.unauthenticated_paths(), rel)
        {
            req.path = rel.to_string();
            let auth = Authorized::unauthenticated(u);
            let response = m.backend.handle(&auth, req).await?;
            return Ok(Handled { response, mount_type: m.entry.kind.clone() });
        }

        // Everything else needs a valid token, checked before revealing
        // whether the path is routable.
        let token = token.filter(|t| !t.is_empty()).ok_or(LogicalError::PermissionDenied)?;
        let entry = active
            .tokens
            .lookup(&self.barrier, &u, token, now_unix())
            .await?
            .ok_or(LogicalError::PermissionDenied)?;
        let (m, rel) = routed.ok_or_else(|| {
            LogicalError::UnsupportedPath(format!(
                "no handler for route \"{full_path}\". route entry not found."
            ))
        })?;
        if req.op == Operation::Update
            && let Some(false) = m.backend.exists(&u, rel).await?
        {
            req.op = Operation::Create;
        }
        let sudo = path_matches(m.backend.root_paths(), rel);
        let auth = acl::authorize(u, entry, &full_path, req.op, sudo)?;
        req.path = rel.to_string();
        let response = m.backend.handle(&auth, req).await?;
        Ok(Handled { response, mount_type: m.entry.kind.clone() })
    }
}
