//! Outgoing HTTP for the signed-token methods (JWKS, OIDC discovery,
//! Kubernetes TokenReview): a timeout on every request, no redirects, a
//! size cap on every answer, and an optional CA bundle that replaces the
//! system roots.

use std::time::Duration;

use serde_json::Value;

use super::common::bad;
use crate::logical::LogicalError;

/// Timeout of every outgoing request (JWKS, discovery, TokenReview): a login
/// waits at most this long for a remote before answering 502.
pub(crate) const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Connecting gets less of it: an address that does not answer is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response body read from a remote (JWKS, discovery, TokenReview).
pub(crate) const MAX_HTTP_BODY: usize = 1024 * 1024;

/// A client with the timeout, trusting only `ca_pem` when given.
pub(crate) fn http_client(ca_pem: &str, timeout: Duration) -> Result<reqwest::Client, String> {
    // reqwest is built without a default rustls provider; install ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No redirects: a configured URL is fetched as written, never bounced to
    // another host (the vault's own listener, an internal service).
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(CONNECT_TIMEOUT))
        .redirect(reqwest::redirect::Policy::none());
    if !ca_pem.trim().is_empty() {
        let certs = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())
            .map_err(|e| format!("invalid CA certificate PEM: {e}"))?;
        b = b.tls_certs_only(certs);
    }
    b.build().map_err(|e| format!("could not build an HTTP client: {e}"))
}

/// A configured CA bundle must hold at least one certificate.
pub(crate) fn check_ca_pem(pem: &str, field: &str) -> Result<(), LogicalError> {
    if pem.trim().is_empty() {
        return Ok(());
    }
    match reqwest::Certificate::from_pem_bundle(pem.as_bytes()) {
        Ok(c) if !c.is_empty() => Ok(()),
        _ => Err(bad(format!("'{field}' is not a valid PEM certificate or bundle"))),
    }
}

/// A configured URL must be http(s) with a host.
pub(crate) fn check_url(url: &str, field: &str) -> Result<(), LogicalError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(bad(format!("'{field}' must be an http or https URL"))),
    }
}

/// Read a response body, refusing more than [`MAX_HTTP_BODY`] bytes.
pub(crate) async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading the response failed: {e}"))? {
        if out.len() + chunk.len() > MAX_HTTP_BODY {
            return Err("the response is too large".into());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// GET `url` and return its body (2xx only, at most [`MAX_HTTP_BODY`]).
pub(crate) async fn get_bytes(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let resp = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("request to {url} failed: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("{url} answered HTTP {}", status.as_u16()));
    }
    read_limited(resp).await
}

/// GET `url` as JSON.
pub(crate) async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let body = get_bytes(client, url).await?;
    serde_json::from_slice(&body).map_err(|_| format!("{url} did not return JSON"))
}
