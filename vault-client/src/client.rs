//! The [`Client`]: address, token, TLS settings, retries and the request
//! plumbing the API modules ([`crate::sys`], [`crate::logical`], ...) share.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Once, PoisonError, RwLock};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::retry::{self, RetryPolicy};
use crate::tls::{self, ClientIdentity};

/// Address used when `VAULT_ADDR` is not set.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8200";

/// Default per-request timeout (Vault's CLI default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A timeout that is never reached (tokio clamps a far deadline).
const NO_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Default cap on a response body (see [`ClientBuilder::max_response_bytes`]).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 32 * 1024 * 1024;

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
    identity: Option<ClientIdentity>,
    timeout: Duration,
    retry: RetryPolicy,
    max_response_bytes: u64,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert_pem", &self.ca_cert_pem.as_ref().map(|p| format!("<{} bytes>", p.len())))
            .field("identity", &self.identity)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

impl ClientBuilder {
    /// A builder for the server at `address` (e.g. `https://vault.example:8200`),
    /// without a token, trusting the platform's root certificates, with
    /// [`DEFAULT_TIMEOUT`] and Vault's retry defaults (see
    /// [`ClientBuilder::max_retries`]).
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            token: None,
            ca_cert_pem: None,
            identity: None,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// A builder configured from the process environment, like Vault's CLI:
    ///
    /// * `VAULT_ADDR`: server address (default [`DEFAULT_ADDRESS`]);
    /// * `VAULT_TOKEN`: client token (unset or empty: none);
    /// * `VAULT_CACERT`: path of a PEM file with the CA certificate(s) to
    ///   trust *instead of* the platform roots (a self-signed server
    ///   certificate given here is accepted too, see [`ClientBuilder::ca_cert_pem`]);
    /// * `VAULT_CLIENT_CERT` + `VAULT_CLIENT_KEY`: PEM files of a client
    ///   certificate (chain) and its private key, for mutual TLS (both or
    ///   neither);
    /// * `VAULT_CLIENT_TIMEOUT`: request timeout, seconds (`30`) or with a
    ///   unit (`500ms`, `30s`, `2m`, `1h`);
    /// * `VAULT_MAX_RETRIES`: retries after a retryable failure (0: none);
    /// * `VAULT_CLIENT_MAX_RESPONSE_BYTES`: the largest response body
    ///   accepted, bytes (default [`DEFAULT_MAX_RESPONSE_BYTES`]; not a
    ///   Vault variable);
    /// * `VAULT_NAMESPACE`: this server has no namespaces; a non-empty value
    ///   is ignored with a warning (`tracing`);
    /// * `VAULT_SKIP_VERIFY`: not supported (certificates are always
    ///   verified); a true value is ignored with a warning.
    ///
    /// Empty values count as unset.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`ClientBuilder::from_env`], reading the variables through
    /// `lookup` (for tests, or configuration from another source).
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let address = get("VAULT_ADDR").unwrap_or_else(|| DEFAULT_ADDRESS.into());
        let mut b = Self::new(address.trim());
        if let Some(t) = lookup("VAULT_TOKEN").map(Zeroizing::new)
            && !t.trim().is_empty()
        {
            b = b.token(t.trim());
        }
        if let Some(path) = get("VAULT_CACERT") {
            b = b.ca_cert_file(Path::new(&path))?;
        }
        match (get("VAULT_CLIENT_CERT"), get("VAULT_CLIENT_KEY")) {
            (Some(cert), Some(key)) => b = b.client_identity_files(Path::new(&cert), Path::new(&key))?,
            (None, None) => {}
            _ => {
                return Err(Error::Config(
                    "VAULT_CLIENT_CERT and VAULT_CLIENT_KEY must be given together (mutual TLS)".into(),
                ));
            }
        }
        if let Some(t) = get("VAULT_CLIENT_TIMEOUT") {
            let timeout = parse_duration(t.trim()).filter(|d| !d.is_zero()).ok_or_else(|| {
                Error::Config(format!("VAULT_CLIENT_TIMEOUT {t:?}: expected a positive number of seconds, or e.g. 30s"))
            })?;
            b = b.timeout(timeout);
        }
        if let Some(n) = get("VAULT_MAX_RETRIES") {
            let n: u32 = n
                .trim()
                .parse()
                .map_err(|_| Error::Config(format!("VAULT_MAX_RETRIES {n:?}: expected a number >= 0")))?;
            b = b.max_retries(n);
        }
        if let Some(n) = get("VAULT_CLIENT_MAX_RESPONSE_BYTES") {
            let n: u64 = n.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                Error::Config(format!("VAULT_CLIENT_MAX_RESPONSE_BYTES {n:?}: expected a positive number of bytes"))
            })?;
            b = b.max_response_bytes(n);
        }
        if get("VAULT_NAMESPACE").is_some() {
            tracing::warn!("VAULT_NAMESPACE is set, but this server has no namespaces: ignored");
        }
        if get("VAULT_SKIP_VERIFY").is_some_and(|v| !matches!(v.trim(), "0" | "false" | "False" | "FALSE")) {
            tracing::warn!(
                "VAULT_SKIP_VERIFY is not supported: certificates are always verified \
                 (give the server's certificate or its CA as VAULT_CACERT)"
            );
        }
        Ok(b)
    }

    /// Talk to the server at `address` instead.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = address.into();
        self
    }

    /// Whether a token is set (e.g. to fall back to a token helper file
    /// when `VAULT_TOKEN` is not).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Use `token` for every request.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Zeroizing::new(token.into()));
        self
    }

    /// Trust only the CA certificate(s) in this PEM bundle.
    ///
    /// A server certificate that is itself a CA certificate (what
    /// `openssl req -x509` makes by default) is accepted when it is one of
    /// the bundle's certificates, byte for byte, valid for the server's
    /// name, and made for a server (no extendedKeyUsage, or one listing
    /// serverAuth); WebPKI alone would refuse it.
    ///
    /// The name is checked against the certificate's subjectAltName only,
    /// never its Common Name (as Vault's own CLI, Go's TLS stack and
    /// browsers do), so make the certificate with the names and addresses
    /// clients use, e.g.
    /// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes
    /// -days 365 -subj /CN=vault -addext "subjectAltName=DNS:vault.example,IP:127.0.0.1"
    /// -keyout key.pem -out cert.pem`.
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

    /// Present this client certificate (PEM, leaf first) and private key
    /// (PEM: PKCS#8, PKCS#1 or SEC1) to the server (mutual TLS).
    pub fn client_identity_pem(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.identity = Some(ClientIdentity { cert_pem: cert_pem.into(), key_pem: Zeroizing::new(key_pem.into()) });
        self
    }

    /// Like [`ClientBuilder::client_identity_pem`], reading both PEM files.
    pub fn client_identity_files(self, cert_path: &Path, key_path: &Path) -> Result<Self> {
        let cert = std::fs::read(cert_path)
            .map_err(|e| Error::Config(format!("cannot read client certificate file {}: {e}", cert_path.display())))?;
        let key = Zeroizing::new(
            std::fs::read(key_path)
                .map_err(|e| Error::Config(format!("cannot read client key file {}: {e}", key_path.display())))?,
        );
        Ok(self.client_identity_pem(cert, key.to_vec()))
    }

    /// Per-request timeout (default [`DEFAULT_TIMEOUT`]). Each retry gets
    /// the whole timeout again.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times a failed request is sent again (default 2, as
    /// Vault's `VAULT_MAX_RETRIES`; 0 disables retries). Only failures
    /// that are safe to retry are: connection errors, 503 (sealed, standby)
    /// for any method, other 5xx and timeouts for reads only, never a 4xx
    /// (the crate's `retry` rules are documented on [`ClientBuilder::retry_backoff`]).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.retry.max_retries = retries;
        self
    }

    /// The largest response body accepted (default
    /// [`DEFAULT_MAX_RESPONSE_BYTES`]); a longer one fails with
    /// [`Error::ResponseTooLarge`] as soon as its `Content-Length` or the
    /// bytes received so far exceed it, so a hostile server or proxy cannot
    /// make the client buffer without bound.
    pub fn max_response_bytes(mut self, max: u64) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// Backoff between retries: exponential with full jitter. Before retry
    /// `n` (0 for the first) the client waits a uniformly random time in
    /// `[0, min(max, min * 2^n)]`. Defaults: 1 s and 1.5 s (Vault's).
    ///
    /// What is retried: a request that never reached the server (connection
    /// refused, DNS, connect timeout) and a 503 answer (sealed, standby: the
    /// server did nothing) for every method; another 5xx, a timeout or a
    /// connection lost mid-request only for reads (`GET`, `LIST`, `HEAD`),
    /// because a `PUT`/`POST` may have taken effect (a new KV version, a
    /// spent secret ID use); never a 4xx, never a TLS failure, never
    /// `sys/health` (its status codes are its answer), never a KV v2
    /// blocking read (its callers, such as [`crate::Follow`], loop anyway).
    pub fn retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.retry.min = min;
        self.retry.max = max.max(min);
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
        match (&self.ca_cert_pem, &self.identity) {
            (Some(pem), identity) => {
                http = http.tls_backend_preconfigured(tls::client_config(pem, identity.as_ref())?);
            }
            (None, Some(identity)) => http = http.identity(identity.to_reqwest()?),
            (None, None) => {}
        }
        let http = http.build().map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            token: Arc::new(RwLock::new(self.token)),
            retry: self.retry,
            max_response_bytes: self.max_response_bytes,
            timeout: self.timeout,
        })
    }
}

/// `30` (seconds), `500ms`, `30s`, `2m`, `1h`.
fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit.trim() {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
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

/// The token, shared by a client and its clones.
type TokenCell = Arc<RwLock<Option<Zeroizing<String>>>>;

/// An async client of the vault's HTTP API.
///
/// Cheap to clone: clones share the connection pool **and the token**, so a
/// login ([`Client::auth`]), a [`Client::set_token`] or a background
/// re-login ([`Client::keep_alive`]) is seen by every clone (watchers,
/// config loaders, ...). [`Client::with_token`] makes a client with a token
/// of its own instead. The API is grouped by area: [`Client::sys`] for the
/// system backend, [`Client::logical`] for generic reads and writes of any
/// path, [`Client::auth`] for logins.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: TokenCell,
    retry: RetryPolicy,
    max_response_bytes: u64,
    /// The per-request timeout; streamed requests use it as a stall
    /// timeout instead ([`Client::stream_request`]).
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.base.as_str())
            .field("token", &self.has_token().then_some("<redacted>"))
            .finish_non_exhaustive()
    }
}

/// A response as received: status and body bytes (wiped when dropped: it
/// may hold a secret or a token). `Debug` shows the body's length only.
pub(crate) struct RawResponse {
    pub(crate) path: String,
    pub(crate) status: StatusCode,
    pub(crate) body: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for RawResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawResponse")
            .field("path", &self.path)
            .field("status", &self.status)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
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

    /// A client configured from the environment (`VAULT_ADDR`,
    /// `VAULT_TOKEN`, `VAULT_CACERT`, ...: see [`ClientBuilder::from_env`]).
    pub fn from_env() -> Result<Client> {
        ClientBuilder::from_env()?.build()
    }

    /// A builder, for settings beyond the address.
    pub fn builder(address: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(address)
    }

    /// A client sharing this one's connections and settings but holding
    /// `token` in a token cell of its own: later token changes of either
    /// client (logins, renewals) do not reach the other.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Arc::new(RwLock::new(Some(Zeroizing::new(token.into()))));
        self
    }

    /// A client sharing this one's connections and settings, without a
    /// token (for logins).
    pub(crate) fn without_token(mut self) -> Client {
        self.token = Arc::new(RwLock::new(None));
        self
    }

    /// Replace the token, for this client and all its clones (a login does
    /// this).
    pub fn set_token(&self, token: impl Into<String>) {
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = Some(Zeroizing::new(token.into()));
    }

    /// Forget the token (this client and its clones).
    pub fn clear_token(&self) {
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Whether a token is set.
    pub fn has_token(&self) -> bool {
        self.token.read().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// A copy of the current token (wiped when dropped), e.g. to store it
    /// in a token helper file. Handle it as the secret it is.
    pub fn token_secret(&self) -> Option<Zeroizing<String>> {
        self.token.read().unwrap_or_else(PoisonError::into_inner).clone()
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
    /// client's (for long waits). Retries as documented on
    /// [`ClientBuilder::retry_backoff`].
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
        // Encoded once, so a retry sends the same bytes; it may hold
        // credentials (a login), hence wiped.
        let body = match body {
            Some(b) => Some(Zeroizing::new(serde_json::to_vec(b).map_err(|e| {
                Error::InvalidArgument(format!("cannot encode the request body as JSON ({:?})", e.classify()))
            })?)),
            None => None,
        };
        let api_path = path.trim_start_matches('/');
        // A request with its own timeout is a long poll (a KV v2 blocking
        // read) whose caller loops with its own backoff: not retried here.
        let max_retries = if timeout.is_some() { 0 } else { self.retry.max_retries };
        let mut attempt = 0;
        loop {
            let result =
                self.send_once(&method, url.clone(), api_path, body.as_ref().map(|b| b.as_slice()), timeout).await;
            let retryable = match &result {
                Ok(r) => retry::retry_status(&method, api_path, r.status),
                Err(Error::Http(e)) => retry::retry_error(&method, e),
                Err(_) => false,
            };
            if !retryable || attempt >= max_retries {
                return result;
            }
            let wait = self.retry.delay(attempt);
            attempt += 1;
            match &result {
                Ok(r) => tracing::debug!(path = api_path, status = r.status.as_u16(), attempt, ?wait, "retrying"),
                Err(e) => tracing::debug!(path = api_path, error = %e, attempt, ?wait, "retrying"),
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt: the token is read now, so a retry after a re-login
    /// sends the new one.
    async fn send_once(
        &self,
        method: &Method,
        url: Url,
        api_path: &str,
        body: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<RawResponse> {
        let mut req = self.http.request(method.clone(), url);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(v) = self.token_header()? {
            req = req.header(TOKEN_HEADER, v);
        }
        if let Some(b) = body {
            req = req.header(CONTENT_TYPE, "application/json").body(b.to_vec());
        }
        let resp = req.send().await?;
        let status = resp.status();
        let body = read_capped(resp, api_path, self.max_response_bytes).await?;
        Ok(RawResponse { path: api_path.to_string(), status, body })
    }

    /// A request for a streamed body (`crate::stream`): URL with `query`,
    /// token header, and no retry (a streamed body cannot be sent twice).
    ///
    /// The client's timeout would cut a long upload at a fixed time, so the
    /// request gets a timeout it never reaches and the caller bounds each
    /// wait for progress by [`Client::stall_timeout`] instead.
    pub(crate) fn stream_request(&self, path: &str, query: &[(&str, &str)]) -> Result<reqwest::RequestBuilder> {
        let mut url = self.url(path)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut req = self.http.request(Method::POST, url).timeout(NO_TIMEOUT);
        if let Some(v) = self.token_header()? {
            req = req.header(TOKEN_HEADER, v);
        }
        Ok(req)
    }

    /// A request whose body or answer is a file (storage snapshots,
    /// `crate::sys`): token header, no retry, no overall timeout (the caller
    /// bounds each wait by [`Client::stall_timeout`]).
    pub(crate) fn file_request(&self, method: Method, path: &str) -> Result<reqwest::RequestBuilder> {
        let mut req = self.http.request(method, self.url(path)?).timeout(NO_TIMEOUT);
        if let Some(v) = self.token_header()? {
            req = req.header(TOKEN_HEADER, v);
        }
        Ok(req)
    }

    /// How long a streamed request may go without progress either way.
    pub(crate) fn stall_timeout(&self) -> Duration {
        self.timeout
    }

    /// The token as a header value marked sensitive.
    fn token_header(&self) -> Result<Option<HeaderValue>> {
        let guard = self.token.read().unwrap_or_else(PoisonError::into_inner);
        let Some(token) = guard.as_ref() else { return Ok(None) };
        let mut v = HeaderValue::from_str(token.as_str())
            .map_err(|_| Error::Config("the token contains characters not allowed in an HTTP header".into()))?;
        v.set_sensitive(true);
        Ok(Some(v))
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

/// Read a response body of at most `max` bytes: the announced length is
/// checked first, then the bytes as they arrive (a chunked body has no
/// length), so memory stays bounded whatever the server sends.
async fn read_capped(mut resp: reqwest::Response, api_path: &str, max: u64) -> Result<Zeroizing<Vec<u8>>> {
    let too_large = || Error::ResponseTooLarge { path: api_path.to_string(), limit: max };
    let announced = resp.content_length();
    if announced.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let cap = usize::try_from(announced.unwrap_or(0).min(max)).unwrap_or(0);
    let mut body = Zeroizing::new(Vec::with_capacity(cap));
    while let Some(chunk) = resp.chunk().await? {
        let len = body.len().saturating_add(chunk.len());
        if u64::try_from(len).map_or(true, |n| n > max) {
            return Err(too_large());
        }
        if body.capacity() < len {
            // Grow by hand: a plain `extend` would leave the old buffer,
            // which may hold part of a secret, freed without being wiped.
            let mut bigger = Zeroizing::new(Vec::with_capacity(len.max(body.capacity().saturating_mul(2))));
            bigger.extend_from_slice(&body);
            body = bigger;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
        assert_eq!(c.token_secret().as_deref().map(String::as_str), Some("hvs.abc"));
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
    fn env_timeout_retries_identity_and_namespace() {
        let b = ClientBuilder::from_vars(vars(&[
            ("VAULT_CLIENT_TIMEOUT", "90s"),
            ("VAULT_MAX_RETRIES", "0"),
            ("VAULT_NAMESPACE", "team-a"),
        ]))
        .unwrap();
        assert_eq!(b.timeout, Duration::from_secs(90));
        assert_eq!(b.retry.max_retries, 0);
        b.build().unwrap();
        for (name, value) in
            [("VAULT_CLIENT_TIMEOUT", "soon"), ("VAULT_CLIENT_TIMEOUT", "0"), ("VAULT_MAX_RETRIES", "-1")]
        {
            let e = ClientBuilder::from_vars(vars(&[(name, value)])).unwrap_err();
            assert!(matches!(&e, Error::Config(m) if m.contains(name)), "{e:?}");
        }
        let b = ClientBuilder::from_vars(vars(&[("VAULT_CLIENT_MAX_RESPONSE_BYTES", "1048576")])).unwrap();
        assert_eq!(b.max_response_bytes, 1024 * 1024);
        assert_eq!(ClientBuilder::from_vars(vars(&[])).unwrap().max_response_bytes, DEFAULT_MAX_RESPONSE_BYTES);
        for bad in ["0", "-1", "1M", "lots"] {
            let e = ClientBuilder::from_vars(vars(&[("VAULT_CLIENT_MAX_RESPONSE_BYTES", bad)])).unwrap_err();
            assert!(matches!(&e, Error::Config(m) if m.contains("VAULT_CLIENT_MAX_RESPONSE_BYTES")), "{e:?}");
        }
        // Half an identity is an error, not a silent no-mTLS.
        let e = ClientBuilder::from_vars(vars(&[("VAULT_CLIENT_CERT", "/x/cert.pem")])).unwrap_err();
        assert!(matches!(&e, Error::Config(m) if m.contains("VAULT_CLIENT_KEY")), "{e:?}");
        let e = ClientBuilder::from_vars(vars(&[("VAULT_CLIENT_CERT", "/x/c.pem"), ("VAULT_CLIENT_KEY", "/x/k.pem")]))
            .unwrap_err();
        assert!(matches!(&e, Error::Config(m) if m.contains("/x/c.pem")), "{e:?}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "s", "1.5s", "-1", "10d", "ten"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn clones_share_the_token_but_with_token_detaches() {
        let a = Client::new("http://127.0.0.1:1").unwrap();
        let b = a.clone();
        a.set_token("hvs.one");
        assert_eq!(b.token_secret().as_deref().map(String::as_str), Some("hvs.one"));
        let c = b.clone().with_token("hvs.other");
        b.set_token("hvs.two");
        assert_eq!(a.token_secret().as_deref().map(String::as_str), Some("hvs.two"));
        assert_eq!(c.token_secret().as_deref().map(String::as_str), Some("hvs.other"));
        a.clear_token();
        assert!(!b.has_token() && c.has_token());
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
