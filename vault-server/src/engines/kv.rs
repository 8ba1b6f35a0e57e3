//! KV version 1: unversioned key/value secrets (Vault's `kv` with
//! `version=1`). Each secret is one JSON object stored through the barrier.

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::auth::Authorized;
use crate::barrier::Unsealed;
use crate::barrier::view::View;
use crate::logical::{Backend, BoxFuture, LogicalError, Operation, PathSpec, Request, Response};

/// The KV v1 engine.
#[derive(Debug)]
pub struct KvV1 {
    view: View,
}

impl KvV1 {
    /// An engine over `view`.
    pub fn new(view: View) -> Self {
        Self { view }
    }
}

/// Reject paths that would escape or be ambiguous.
fn check_key(path: &str) -> Result<(), LogicalError> {
    if path.is_empty() || path.ends_with('/') {
        return Err(LogicalError::InvalidRequest("a secret path must be given and must not end in '/'".into()));
    }
    if path.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(LogicalError::InvalidRequest(format!("invalid secret path \"{path}\"")));
    }
    Ok(())
}

/// KV v1 has one path: the secret itself (a LIST takes a prefix).
static PATHS: &[PathSpec] = {
    use Operation::*;
    &[PathSpec::new("{path*}", &[Read, Update, Delete, List]).existence_check()]
};

impl Backend for KvV1 {
    fn paths(&self) -> &'static [PathSpec] {
        PATHS
    }

    fn handle<'a>(&'a self, auth: &'a Authorized, req: Request) -> BoxFuture<'a, Result<Response, LogicalError>> {
        Box::pin(async move {
            let u = auth.unsealed();
            match req.op {
                Operation::List => {
                    let prefix = if req.path.is_empty() || req.path.ends_with('/') {
                        req.path.clone()
                    } else {
                        format!("{}/", req.path)
                    };
                    let keys = self.view.list(u, &prefix).await?;
                    if keys.is_empty() {
                        return Err(LogicalError::NotFound);
                    }
                    let mut data = Map::new();
                    data.insert("keys".into(), keys.into());
                    Ok(Response::data(data))
                }
                Operation::Read => {
                    check_key(&req.path)?;
                    let raw = self.view.get(u, &req.path).await?.ok_or(LogicalError::NotFound)?;
                    let data: Map<String, Value> = serde_json::from_slice(&raw).map_err(LogicalError::internal)?;
                    Ok(Response::data(data))
                }
                Operation::Create | Operation::Update => {
                    check_key(&req.path)?;
                    if req.data.is_empty() {
                        return Err(LogicalError::InvalidRequest("missing data fields".into()));
                    }
                    let json = Zeroizing::new(serde_json::to_vec(&req.data).map_err(LogicalError::internal)?);
                    self.view.put(u, &req.path, &json).await?;
                    Ok(Response::NoContent)
                }
                Operation::Delete => {
                    check_key(&req.path)?;
                    self.view.delete(&req.path).await?;
                    Ok(Response::NoContent)
                }
                Operation::Patch => Err(LogicalError::UnsupportedOperation),
            }
        })
    }

    fn create_is_update(&self) -> bool {
        true
    }

    fn exists<'a>(&'a self, u: &'a Unsealed, path: &'a str) -> BoxFuture<'a, Result<Option<bool>, LogicalError>> {
        Box::pin(async move {
            if check_key(path).is_err() {
                return Ok(None);
            }
            Ok(Some(self.view.get(u, path).await?.is_some()))
        })
    }
}
