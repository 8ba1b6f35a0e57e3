//! The [`Client`]: address, token, TLS settings and the request plumbing the
//! API modules ([`crate::sys`], [`crate::logical`], ...) share.

use std::fmt;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Address used when `VAULT_ADDR` is not set.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8200";

/// Default per-request timeout (Vault's CLI default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Header carrying the client token.
const TOKEN_HEADER: &str = "X-Vault-Token";

/// Redirects followed at most (same origin only, see [`redirect_policy`]).
const MAX_REDIRECTS: usize = 10;

/// Install rustls' `ring` crypto provider as the process default, once.
///
/// reqwest is built with `rustls-no-provider`, so it needs a process-wide
/// provider before the first client is built. If the application already
/// installed one, that one is kept.
fn ensure_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Builds a [`Client`]. Obtain one with [`ClientBuilder::new`] or
/// [`ClientBuilder::from_env`].
#[derive(Clone)]
pub struct ClientBuilder {
    address: String,
    token: Option<Zeroizing<String>>,
    ca_cert_pem: Option<Vec<u8>>,
    timeout: Duration,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert_pem", &self.ca_cert_pem.as_ref().map(|p| format!("<{} bytes>", p.len())))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ClientBuilder {
    /// A builder for the server at `address` (e.g. `https://vault.example:8200`),
    /// without a token, trusting the platform's root certificates.
    pub fn new(address: impl Into<String>) -> Self {
        Self { address: address.into(), token: None, ca_cert_pem: None, timeout: DEFAULT_TIMEOUT }
    }

    /// A builder configured from the process environment, like Vault's CLI:
    ///
    /// * `VAULT_ADDR`: server address (default [`DEFAULT_ADDRESS`]);
    /// * `VAULT_TOKEN`: client token (unset or empty: none);
    /// * `VAULT_CACERT`: path of a PEM file with the CA certificate(s) to
    ///   trust *instead of* the platform roots.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`ClientBuilder::from_env`], reading the variables through
    /// `lookup` (for tests, or configuration from another source).
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let address = lookup("VAULT_ADDR").filter(|a| !a.trim().is_empty()).unwrap_or_else(|| DEFAULT_ADDRESS.into());
        let mut b = Self::new(address.trim());
        if let Some(t) = lookup("VAULT_TOKEN").map(Zeroizing::new)
            && !t.trim().is_empty()
        {
            b = b.token(t.trim());
        }
        if let Some(path) = lookup("VAULT_CACERT").filter(|p| !p.is_empty()) {
            b = b.ca_cert_file(Path::new(&path))?;
        }
        Ok(b)
    }

    /// Talk to the server at `address` instead.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = address.into();
        self
    }

    /// Use `token` for every request.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Zeroizing::new(token.into()));
        self
    }

    /// Trust only the CA certificate(s) in this PEM bundle.
    pub fn ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_cert_pem = Some(pem.into());
        self
    }

    /// Trust only the CA certificate(s) in the PEM file at `path`.
    pub fn ca_cert_file(self, path: &Path) -> Result<Self> {
        let pem = std::fs::read(path)
            .map_err(|e| Error::Config(format!("cannot read CA certificate file {}: {e}", path.display())))?;
        Ok(self.ca_cert_pem(pem))
    }

    /// Per-request timeout (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Validate the settings and build the client.
    pub fn build(self) -> Result<Client> {
        let base = parse_address(&self.address)?;
        ensure_crypto_provider();
        let mut http = reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(redirect_policy())
            .user_agent(concat!("vault-client/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &self.ca_cert_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Config(format!("invalid CA certificate PEM: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Config("the CA certificate PEM holds no certificate".into()));
            }
            http = http.tls_certs_only(certs);
        }
        let http = http.build().map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client { http, base, token: self.token })
    }
}

/// Parse and check a server address: an absolute `http` or `https` URL.
fn parse_address(address: &str) -> Result<Url> {
    let url =
        Url::parse(address.trim()).map_err(|e| Error::Config(format!("invalid server address {address:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() || url.host().is_none() {
        return Err(Error::Config(format!("invalid server address {address:?}: expected http(s)://host[:port]")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::Config(format!("invalid server address {address:?}: no query or fragment allowed")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::Config("invalid server address: credentials in the URL are not supported".into()));
    }
    Ok(url)
}

/// Follow redirects (Vault standbys answer 307) only within the same
/// origin: the token travels in a custom header that reqwest would forward
/// to any host.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt.previous().first().is_some_and(|first| first.origin() == attempt.url().origin());
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if same_origin {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// An async client of the vault's HTTP API.
///
/// Cheap to clone (the connection pool is shared). The API is grouped by
/// area: [`Client::sys`] for the system backend, [`Client::logical`] for
/// generic reads and writes of any path.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<Zeroizing<String>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// A response as received: status and body bytes.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) path: String,
    pub(crate) status: StatusCode,
    pub(crate) body: Vec<u8>,
}

impl RawResponse {
    /// Success with a body parsed as `T`; any other status is an [`Error::Api`].
    pub(crate) fn json<T: DeserializeOwned>(self) -> Result<T> {
        let r = self.success()?;
        r.parse()
    }

    /// Parse the body as `T`, whatever the status.
    pub(crate) fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::decode(&self.path, &e))
    }

    /// Success, or the server's error. The body may still be read.
    pub(crate) fn success(self) -> Result<Self> {
        if self.status.is_success() { Ok(self) } else { Err(Error::from_response(self.status.as_u16(), &self.body)) }
    }

    /// The body as JSON, `None` when empty (204 No Content).
    pub(crate) fn optional_json(&self) -> Result<Option<serde_json::Value>> {
        if self.body.iter().all(u8::is_ascii_whitespace) { Ok(None) } else { self.parse().map(Some) }
    }

    /// Whether this is a bare 404 (`{"errors": []}` or no body): Vault's
    /// "nothing at this path", as opposed to a 404 with a message such as
    /// "no handler for route".
    pub(crate) fn is_bare_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
            && matches!(Error::from_response(404, &self.body), Error::Api { errors, .. } if errors.is_empty())
    }
}

impl Client {
    /// A client for the server at `address`, without a token.
    /// See [`ClientBuilder`] for more settings.
    pub fn new(address: impl Into<String>) -> Result<Client> {
        ClientBuilder::new(address).build()
    }

    /// A client configured from `VAULT_ADDR`, `VAULT_TOKEN` and
    /// `VAULT_CACERT` (see [`ClientBuilder::from_env`]).
    pub fn from_env() -> Result<Client> {
        ClientBuilder::from_env()?.build()
    }

    /// A builder, for settings beyond the address.
    pub fn builder(address: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(address)
    }

    /// This client with `token` as its token.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.set_token(token);
        self
    }

    /// Replace the token (for example after a login).
    pub fn set_token(&mut self, token: impl Into<String>) {
        self.token = Some(Zeroizing::new(token.into()));
    }

    /// Forget the token.
    pub fn clear_token(&mut self) {
        self.token = None;
    }

    /// Whether a token is set.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The server address.
    pub fn address(&self) -> &str {
        self.base.as_str()
    }

    /// The URL of API path `path` (relative to `/v1/`). Each segment is
    /// percent-encoded; a trailing `/` is kept; `.`/`..` segments are refused.
    pub(crate) fn url(&self, path: &str) -> Result<Url> {
        let path = path.trim_start_matches('/');
        if path.is_empty() {
            return Err(Error::InvalidArgument("empty API path".into()));
        }
        if path.split('/').any(|s| s == "." || s == "..") {
            return Err(Error::InvalidArgument(format!("path {path:?} must not contain '.' or '..' segments")));
        }
        let mut url = self.base.clone();
        {
            let mut segs =
                url.path_segments_mut().map_err(|()| Error::Config("the server address cannot take a path".into()))?;
            segs.pop_if_empty().push("v1").extend(path.split('/'));
        }
        Ok(url)
    }

    /// Send a request to API path `path` with an optional JSON body and
    /// return the response, whatever its status.
    pub(crate) async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<RawResponse> {
        self.send_with(method, path, &[], body, None).await
    }

    /// Like [`Client::send`], with query parameters `query` (encoded) and,
    /// when `timeout` is given, that request timeout instead of the
    /// client's (for long waits).
    pub(crate) async fn send_with<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<RawResponse> {
        let mut url = self.url(path)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut req = self.http.request(method, url);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(token) = &self.token {
            let mut v = HeaderValue::from_str(token.as_str())
                .map_err(|_| Error::Config("the token contains characters not allowed in an HTTP header".into()))?;
            v.set_sensitive(true);
            req = req.header(TOKEN_HEADER, v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let body = resp.bytes().await?.to_vec();
        Ok(RawResponse { path: path.trim_start_matches('/').to_string(), status, body })
    }

    /// GET `path` and decode a successful JSON answer.
    pub(crate) async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send::<()>(Method::GET, path, None).await?.json()
    }

    /// PUT `body` to `path` and decode a successful JSON answer.
    pub(crate) async fn put_json<B: Serialize + ?Sized, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(Method::PUT, path, Some(body)).await?.json()
    }

    /// Send and require success, ignoring any body.
    pub(crate) async fn send_ok<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<()> {
        self.send(method, path, body).await?.success().map(drop)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBljCCATugAwIBAgIUDJQMnlSaqNLAHnje/9mNG6Os5M8wCgYIKoZIzj0EAwIw
HzEdMBsGA1UEAwwUdmF1bHQtY2xpZW50IHRlc3QgQ0EwIBcNMjYxMTIzMTE0MDQy
WhgPMjEyNjEwMzAxMTQwNDJaMB8xHTAbBgNVBAMMFHZhdWx0LWNsaWVudCB0ZXN0
IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE6DUDC3e7HmUXjQsjmcOKqZOx
p6wbROvcJkWFCPCg2xlnl4xL9kFDFYlWX0XZOtEwTTCfYCTyeq7vCl6xxI72S6NT
MFEwHQYDVR0OBBYEFPhYTnpHOmOfEriB0TE1JwHtGalUMB8GA1UdIwQYMBaAFPhY
TnpHOmOfEriB0TE1JwHtGalUMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwID
SQAwRgIhAKpfuOU8g8Hloex75k3jyrUkEr+ird97/TeY50tSYBsbAiEAp8uk/wbT
VpkkyKB/Cd+jeMskyuTw2p53pVeD9N0hnPk=
-----END CERTIFICATE-----
";

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| owned.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn env_defaults() {
        let c = ClientBuilder::from_vars(vars(&[])).unwrap().build().unwrap();
        assert_eq!(c.address(), "http://127.0.0.1:8200/");
        assert!(!c.has_token());
        // Empty values count as unset.
        let c = ClientBuilder::from_vars(vars(&[("VAULT_ADDR", ""), ("VAULT_TOKEN", "  "), ("VAULT_CACERT", "")]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.address(), "http://127.0.0.1:8200/");
        assert!(!c.has_token());
    }

    #[test]
    fn env_address_and_token() {
        let c = ClientBuilder::from_vars(vars(&[
            ("VAULT_ADDR", " https://vault.example:8443 "),
            ("VAULT_TOKEN", "hvs.abc\n"),
        ]))
        .unwrap()
        .build()
        .unwrap();
        assert_eq!(c.address(), "https://vault.example:8443/");
        assert!(c.has_token());
        assert_eq!(c.token.as_ref().map(|t| t.as_str()), Some("hvs.abc"));
    }

    #[test]
    fn env_cacert() {
        let dir = std::env::temp_dir().join(format!("vault-client-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(&good, TEST_CA).unwrap();
        let c = ClientBuilder::from_vars(vars(&[("VAULT_CACERT", good.to_str().unwrap())])).unwrap().build();
        assert!(c.is_ok(), "{c:?}");

        let bad = dir.join("empty.pem");
        std::fs::write(&bad, "not a certificate\n").unwrap();
        let e =
            ClientBuilder::from_vars(vars(&[("VAULT_CACERT", bad.to_str().unwrap())])).unwrap().build().unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e:?}");

        let missing = dir.join("missing.pem");
        let e = ClientBuilder::from_vars(vars(&[("VAULT_CACERT", missing.to_str().unwrap())])).unwrap_err();
        assert!(matches!(&e, Error::Config(m) if m.contains("missing.pem")), "{e:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_addresses_are_config_errors() {
        for a in ["", "127.0.0.1:8200", "ftp://host", "http://", "unix:/tmp/sock", "http://u:p@host", "http://h/?x=1"] {
            let e = Client::new(a).unwrap_err();
            assert!(matches!(e, Error::Config(_)), "{a}: {e:?}");
        }
    }

    #[test]
    fn debug_redacts_the_token() {
        let b = ClientBuilder::new("http://127.0.0.1:1").token("hvs.TOPSECRET");
        let shown = format!("{b:?}");
        assert!(!shown.contains("TOPSECRET") && shown.contains("<redacted>"), "{shown}");
        let c = b.build().unwrap();
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("TOPSECRET") && shown.contains("<redacted>"), "{shown}");
        let c = Client::new("http://127.0.0.1:1").unwrap().with_token("s.OTHERSECRET");
        assert!(!format!("{c:?}").contains("OTHERSECRET"));
    }

    #[test]
    fn urls() {
        let c = Client::new("http://h:1").unwrap();
        assert_eq!(c.url("sys/seal-status").unwrap().as_str(), "http://h:1/v1/sys/seal-status");
        assert_eq!(c.url("/kv/a b/c?d#e").unwrap().as_str(), "http://h:1/v1/kv/a%20b/c%3Fd%23e");
        assert_eq!(c.url("kv/dir/").unwrap().as_str(), "http://h:1/v1/kv/dir/");
        assert!(matches!(c.url("kv/../sys/mounts"), Err(Error::InvalidArgument(_))));
        assert!(matches!(c.url("/"), Err(Error::InvalidArgument(_))));
        let c = Client::new("https://h/prefix/").unwrap();
        assert_eq!(c.url("sys/health").unwrap().as_str(), "https://h/prefix/v1/sys/health");
    }

    #[test]
    fn bad_token_characters_are_a_config_error_without_the_token() {
        let c = Client::new("http://127.0.0.1:1").unwrap().with_token("bad\ntoken-SECRET");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let e = rt.block_on(c.send::<()>(Method::GET, "sys/health", None)).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(!e.to_string().contains("SECRET") && !format!("{e:?}").contains("SECRET"));
    }
}
