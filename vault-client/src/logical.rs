//! Generic operations on any API path, like Vault's `vault read/write/
//! delete/list`. Engine-specific modules (KV v2, transit, ...) build typed
//! calls on top of the same plumbing.
//!
//! Not-found handling follows Vault: a *bare* 404 (`{"errors": []}`) means
//! "nothing at this path" and is not an error for [`Logical::read`] and
//! [`Logical::list`]. A 404 *with* messages (e.g. "no handler for route",
//! when nothing is mounted there) is still reported as [`Error::Api`].

use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use crate::client::Client;
use crate::error::{Error, Result};

/// Handle on generic path operations; get one with [`Client::logical`].
#[derive(Debug, Clone, Copy)]
pub struct Logical<'a> {
    client: &'a Client,
}

impl Client {
    /// Generic operations on any API path.
    pub fn logical(&self) -> Logical<'_> {
        Logical { client: self }
    }
}

impl Logical<'_> {
    /// `GET <path>`: the whole response body (for most paths Vault's
    /// envelope, whose `data` holds the secret). `None` when nothing is
    /// stored there (bare 404). `Some(Value::Null)` if the server answered
    /// success without a body.
    pub async fn read(&self, path: &str) -> Result<Option<Value>> {
        let r = self.client.send::<()>(Method::GET, path, None).await?;
        if r.is_bare_not_found() {
            return Ok(None);
        }
        let r = r.success()?;
        Ok(Some(r.optional_json()?.unwrap_or(Value::Null)))
    }

    /// `PUT <path>` with `data` as the JSON body. Returns the response body
    /// if there is one (`None` for 204 No Content).
    pub async fn write<B: Serialize + ?Sized>(&self, path: &str, data: &B) -> Result<Option<Value>> {
        let r = self.client.send(Method::PUT, path, Some(data)).await?.success()?;
        r.optional_json()
    }

    /// `DELETE <path>`. Returns the response body if there is one.
    pub async fn delete(&self, path: &str) -> Result<Option<Value>> {
        let r = self.client.send::<()>(Method::DELETE, path, None).await?.success()?;
        r.optional_json()
    }

    /// `LIST <path>/`: the keys under `path` (sub-folders end with `/`).
    /// Empty when there is nothing (bare 404).
    pub async fn list(&self, path: &str) -> Result<Vec<String>> {
        let dir = if path.ends_with('/') { path.to_string() } else { format!("{path}/") };
        let method = Method::from_bytes(b"LIST").map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let r = self.client.send::<()>(method, &dir, None).await?;
        if r.is_bare_not_found() {
            return Ok(Vec::new());
        }
        let body: Value = r.json()?;
        keys_of(&dir, &body)
    }
}

/// `data.keys` of a LIST answer.
fn keys_of(path: &str, body: &Value) -> Result<Vec<String>> {
    let bad = || Error::Decode { path: path.to_string(), detail: "expected data.keys to be a list of strings".into() };
    match body.get("data").and_then(|d| d.get("keys")) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|k| k.as_str().map(str::to_string).ok_or_else(bad)).collect(),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_keys() {
        assert_eq!(keys_of("kv/", &json!({"data": {"keys": ["a", "b/"]}})).unwrap(), vec!["a", "b/"]);
        assert!(keys_of("kv/", &json!({"data": null})).unwrap().is_empty());
        assert!(matches!(keys_of("kv/", &json!({"data": {"keys": [1]}})), Err(Error::Decode { .. })));
        assert!(matches!(keys_of("kv/", &json!({"data": {"keys": "a"}})), Err(Error::Decode { .. })));
    }
}
