//! Logging in (token, AppRole, Kubernetes, JWT, userpass + TOTP) and keeping
//! the token alive (background renewal, re-login when renewal is impossible).
//!
//! A login sets the client's token, which every clone of the client shares
//! (see [`Client`]), so one login serves all the tasks that hold a clone.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vault_client::Error> {
//! use vault_client::{Client, Login};
//!
//! let client = Client::from_env()?;
//! // Role and secret ID delivered as files (orchestrator, init container).
//! let login = Login::approle_files("/run/secrets/role-id", "/run/secrets/secret-id");
//! let info = client.login(&login).await?;
//! println!("logged in, token TTL {:?}", info.lease_duration);
//! // Renew at ~2/3 of the TTL, log in again when renewal is impossible.
//! let _keep_alive = client.keep_alive(Some(login));
//! # Ok(())
//! # }
//! ```
//!
//! API paths and bodies are Vault's: `POST auth/{mount}/login` with
//! `role_id`/`secret_id` (AppRole), `role`/`jwt` (Kubernetes, JWT),
//! `POST auth/{mount}/login/{username}` with `password` and this server's
//! `totp` extension (userpass), `auth/token/lookup-self`, `renew-self`,
//! `revoke-self`. Default mounts are Vault's: `approle`, `kubernetes`,
//! `jwt`, `userpass`.
//!
//! Credentials are held in [`Zeroizing`] buffers, sent in a request body that
//! is wiped after use, and never shown by `Debug` or in errors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::client::Client;
use crate::error::{Error, Result};

/// Where Kubernetes mounts a pod's service-account token.
pub const DEFAULT_KUBERNETES_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The method's name, which is also Vault's default mount path.
const APPROLE: &str = "approle";
const KUBERNETES: &str = "kubernetes";
const JWT: &str = "jwt";
const USERPASS: &str = "userpass";
const TOKEN: &str = "token";

// ---------------------------------------------------------------------------
// Login: a replayable description of how to log in
// ---------------------------------------------------------------------------

/// How to log in: the method, its mount and its credentials (or the files
/// holding them). Replay it with [`Client::login`]; give it to
/// [`Client::keep_alive`] to log in again when the token can no longer be
/// renewed.
///
/// Credentials are wiped from memory when the value is dropped, and `Debug`
/// shows the method, mount, role, user name and file paths, never a
/// credential. File-based logins read their files at each login, so a
/// rotated secret ID or a refreshed (projected) service-account token is
/// picked up.
#[derive(Clone)]
pub struct Login {
    mount: Option<String>,
    method: Method_,
}

/// Name clash with `reqwest::Method` avoided with a trailing underscore.
#[derive(Clone)]
enum Method_ {
    Token(Zeroizing<String>),
    AppRole { role_id: Zeroizing<String>, secret_id: Zeroizing<String> },
    AppRoleFiles { role_id: PathBuf, secret_id: PathBuf },
    Kubernetes { role: String, jwt: Zeroizing<String> },
    KubernetesFile { role: String, path: PathBuf },
    Jwt { role: String, jwt: Zeroizing<String> },
    JwtFile { role: String, path: PathBuf },
    Userpass { username: String, password: Zeroizing<String>, totp: Option<Zeroizing<String>> },
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const R: &str = "<redacted>";
        let mut d = f.debug_struct("Login");
        d.field("method", &self.method_name()).field("mount", &self.mount());
        match &self.method {
            Method_::Token(_) => d.field("token", &R),
            Method_::AppRole { .. } => d.field("role_id", &R).field("secret_id", &R),
            Method_::AppRoleFiles { role_id, secret_id } => {
                d.field("role_id_file", role_id).field("secret_id_file", secret_id)
            }
            Method_::Kubernetes { role, .. } | Method_::Jwt { role, .. } => d.field("role", role).field("jwt", &R),
            Method_::KubernetesFile { role, path } | Method_::JwtFile { role, path } => {
                d.field("role", role).field("jwt_file", path)
            }
            Method_::Userpass { username, totp, .. } => {
                d.field("username", username).field("password", &R).field("totp", &totp.as_ref().map(|_| R))
            }
        };
        d.finish()
    }
}

impl Login {
    fn of(method: Method_) -> Login {
        Login { mount: None, method }
    }

    /// Use an existing token (checked with `auth/token/lookup-self`).
    pub fn token(token: impl Into<String>) -> Login {
        Login::of(Method_::Token(Zeroizing::new(token.into())))
    }

    /// AppRole with a role ID and a secret ID.
    pub fn approle(role_id: impl Into<String>, secret_id: impl Into<String>) -> Login {
        Login::of(Method_::AppRole {
            role_id: Zeroizing::new(role_id.into()),
            secret_id: Zeroizing::new(secret_id.into()),
        })
    }

    /// AppRole with the role ID and the secret ID read from files (trailing
    /// whitespace trimmed) at each login.
    pub fn approle_files(role_id_path: impl Into<PathBuf>, secret_id_path: impl Into<PathBuf>) -> Login {
        Login::of(Method_::AppRoleFiles { role_id: role_id_path.into(), secret_id: secret_id_path.into() })
    }

    /// Kubernetes auth with a service-account token.
    pub fn kubernetes(role: impl Into<String>, jwt: impl Into<String>) -> Login {
        Login::of(Method_::Kubernetes { role: role.into(), jwt: Zeroizing::new(jwt.into()) })
    }

    /// Kubernetes auth with the service-account token read from `path` at
    /// each login (projected tokens are refreshed by the kubelet);
    /// `None`: [`DEFAULT_KUBERNETES_TOKEN_PATH`].
    pub fn kubernetes_file(role: impl Into<String>, path: Option<&Path>) -> Login {
        let path = path.map_or_else(|| PathBuf::from(DEFAULT_KUBERNETES_TOKEN_PATH), Path::to_path_buf);
        Login::of(Method_::KubernetesFile { role: role.into(), path })
    }

    /// JWT/OIDC auth (`jwt` method) with a signed token.
    pub fn jwt(role: impl Into<String>, jwt: impl Into<String>) -> Login {
        Login::of(Method_::Jwt { role: role.into(), jwt: Zeroizing::new(jwt.into()) })
    }

    /// JWT auth with the token read from `path` at each login.
    pub fn jwt_file(role: impl Into<String>, path: impl Into<PathBuf>) -> Login {
        Login::of(Method_::JwtFile { role: role.into(), path: path.into() })
    }

    /// Userpass with an optional TOTP code (this server's second factor).
    /// A TOTP code works once: a `Login` holding one cannot be replayed
    /// for a re-login.
    pub fn userpass(username: impl Into<String>, password: impl Into<String>, totp: Option<&str>) -> Login {
        Login::of(Method_::Userpass {
            username: username.into(),
            password: Zeroizing::new(password.into()),
            totp: totp.map(|t| Zeroizing::new(t.to_string())),
        })
    }

    /// Log in through the method mounted at `mount` (e.g. `"approle-ci"`,
    /// or `"auth/approle-ci"`) instead of its default mount.
    #[must_use]
    pub fn with_mount(mut self, mount: impl Into<String>) -> Login {
        self.mount = Some(mount.into());
        self
    }

    /// The method: `token`, `approle`, `kubernetes`, `jwt` or `userpass`.
    pub fn method_name(&self) -> &'static str {
        match &self.method {
            Method_::Token(_) => TOKEN,
            Method_::AppRole { .. } | Method_::AppRoleFiles { .. } => APPROLE,
            Method_::Kubernetes { .. } | Method_::KubernetesFile { .. } => KUBERNETES,
            Method_::Jwt { .. } | Method_::JwtFile { .. } => JWT,
            Method_::Userpass { .. } => USERPASS,
        }
    }

    /// The mount used: the override, else the method's default (without
    /// the `auth/` prefix).
    pub fn mount(&self) -> &str {
        match &self.mount {
            Some(m) => {
                let m = m.trim_matches('/');
                m.strip_prefix("auth/").unwrap_or(m)
            }
            None => self.method_name(),
        }
    }
}

/// Read a credential file: its contents with trailing whitespace trimmed,
/// refusing an empty file. Errors name the file, never the contents.
fn read_credential(what: &'static str, path: &Path) -> Result<Zeroizing<String>> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| Error::CredentialFile {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?);
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::CredentialFile {
        what,
        path: path.to_path_buf(),
        reason: "not UTF-8 text".into(),
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::CredentialFile { what, path: path.to_path_buf(), reason: "the file is empty".into() });
    }
    Ok(Zeroizing::new(text.to_string()))
}

// ---------------------------------------------------------------------------
// AuthInfo: what a login answered
// ---------------------------------------------------------------------------

/// The result of a login (Vault's `auth` block): the new token and what it
/// may do. `Debug` never shows the token.
#[derive(Clone)]
#[non_exhaustive]
pub struct AuthInfo {
    /// The token's accessor (safe to log; lets an operator revoke it).
    pub accessor: String,
    /// All the token's policies.
    pub policies: Vec<String>,
    /// The token's own policies (same as `policies` on this server).
    pub token_policies: Vec<String>,
    /// Metadata set by the method (role name, user name, service account...).
    pub metadata: BTreeMap<String, String>,
    /// Time left before the token expires (zero: it never expires), at
    /// most 10 years (longer answers are clamped).
    pub lease_duration: Duration,
    /// Whether the token can be renewed.
    pub renewable: bool,
    /// Whether the token has no parent.
    pub orphan: bool,
    /// Uses left (0: unlimited).
    pub num_uses: u64,
    token: Zeroizing<String>,
}

impl fmt::Debug for AuthInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthInfo")
            .field("token", &"<redacted>")
            .field("accessor", &self.accessor)
            .field("policies", &self.policies)
            .field("token_policies", &self.token_policies)
            .field("metadata", &self.metadata)
            .field("lease_duration", &self.lease_duration)
            .field("renewable", &self.renewable)
            .field("orphan", &self.orphan)
            .field("num_uses", &self.num_uses)
            .finish()
    }
}

impl AuthInfo {
    /// The token. Handle it as the secret it is.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The token, moved out (wiped when dropped).
    pub fn into_token(self) -> Zeroizing<String> {
        self.token
    }
}

/// `auth` of a login or renew-self answer. No `Debug`: it holds the token.
#[derive(Deserialize)]
struct WireAuth {
    client_token: String,
    #[serde(default)]
    accessor: String,
    #[serde(default)]
    policies: Option<Vec<String>>,
    #[serde(default)]
    token_policies: Option<Vec<String>>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
    #[serde(default)]
    orphan: bool,
    #[serde(default)]
    num_uses: i64,
}

#[derive(Deserialize)]
struct WireAuthEnvelope {
    auth: Option<WireAuth>,
}

impl WireAuth {
    fn into_info(self) -> AuthInfo {
        let policies = self.policies.unwrap_or_default();
        AuthInfo {
            accessor: self.accessor,
            token_policies: self.token_policies.unwrap_or_else(|| policies.clone()),
            policies,
            metadata: self.metadata.unwrap_or_default(),
            lease_duration: ttl_from_secs(self.lease_duration),
            renewable: self.renewable,
            orphan: self.orphan,
            num_uses: u64::try_from(self.num_uses).unwrap_or(0),
            token: Zeroizing::new(self.client_token),
        }
    }
}

/// The longest TTL the client believes (10 years). TTLs come from the
/// server: clamping them here keeps every later computation (2/3 of it,
/// `Instant + ttl`) far from overflow, whatever the server sends.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A TTL in seconds as received, clamped to [`MAX_TTL`].
fn ttl_from_secs(secs: u64) -> Duration {
    Duration::from_secs(secs).min(MAX_TTL)
}

/// `data` of `auth/token/lookup-self` (its `id`, the token, is not read).
#[derive(Deserialize)]
struct WireLookup {
    #[serde(default)]
    accessor: String,
    #[serde(default)]
    policies: Option<Vec<String>>,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    ttl: i64,
    #[serde(default)]
    renewable: bool,
    #[serde(default)]
    orphan: bool,
    #[serde(default)]
    num_uses: i64,
}

#[derive(Deserialize)]
struct WireLookupEnvelope {
    data: Option<WireLookup>,
}

/// The state of a token as `lookup-self` reports it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TokenInfo {
    /// The token's accessor.
    pub accessor: String,
    /// Its policies.
    pub policies: Vec<String>,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
    /// Time left (zero: never expires), at most 10 years (longer answers
    /// are clamped).
    pub ttl: Duration,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// Whether it has no parent.
    pub orphan: bool,
    /// Uses left (0: unlimited).
    pub num_uses: u64,
}

// ---------------------------------------------------------------------------
// The auth handle
// ---------------------------------------------------------------------------

/// Handle on the auth methods; get one with [`Client::auth`]. Each login
/// sets the client's token (for all its clones) and returns the
/// [`AuthInfo`]; a failed login leaves the token as it was.
#[derive(Debug, Clone)]
pub struct Auth<'a> {
    client: &'a Client,
    mount: Option<String>,
}

impl Client {
    /// Logins and the token's own endpoints.
    pub fn auth(&self) -> Auth<'_> {
        Auth { client: self, mount: None }
    }

    /// Log in as `login` describes; on success the token is set for this
    /// client and its clones.
    pub async fn login(&self, login: &Login) -> Result<AuthInfo> {
        let mount = login.mount();
        if mount.is_empty() {
            return Err(Error::InvalidArgument("empty auth mount".into()));
        }
        let info = match &login.method {
            Method_::Token(token) => {
                let probe = self.clone().with_token(token.as_str());
                let t = probe.auth().lookup_self().await?;
                AuthInfo {
                    accessor: t.accessor,
                    token_policies: t.policies.clone(),
                    policies: t.policies,
                    metadata: t.metadata,
                    lease_duration: t.ttl,
                    renewable: t.renewable,
                    orphan: t.orphan,
                    num_uses: t.num_uses,
                    token: token.clone(),
                }
            }
            Method_::AppRole { role_id, secret_id } => approle_login(self, mount, role_id, secret_id).await?,
            Method_::AppRoleFiles { role_id, secret_id } => {
                let role_id = read_credential("AppRole role ID", role_id)?;
                let secret_id = read_credential("AppRole secret ID", secret_id)?;
                approle_login(self, mount, &role_id, &secret_id).await?
            }
            Method_::Kubernetes { role, jwt } | Method_::Jwt { role, jwt } => {
                role_jwt_login(self, mount, role, jwt).await?
            }
            Method_::KubernetesFile { role, path } => {
                let jwt = read_credential("Kubernetes service-account token", path)?;
                role_jwt_login(self, mount, role, &jwt).await?
            }
            Method_::JwtFile { role, path } => {
                let jwt = read_credential("JWT", path)?;
                role_jwt_login(self, mount, role, &jwt).await?
            }
            Method_::Userpass { username, password, totp } => {
                userpass_login(self, mount, username, password, totp.as_ref().map(|t| t.as_str())).await?
            }
        };
        self.set_token(info.token.as_str());
        Ok(info)
    }
}

#[derive(Serialize)]
struct AppRoleBody<'a> {
    role_id: &'a str,
    secret_id: &'a str,
}

#[derive(Serialize)]
struct RoleJwtBody<'a> {
    role: &'a str,
    jwt: &'a str,
}

#[derive(Serialize)]
struct UserpassBody<'a> {
    password: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    totp: Option<&'a str>,
}

#[derive(Serialize)]
struct Increment {
    #[serde(skip_serializing_if = "Option::is_none")]
    increment: Option<u64>,
}

async fn approle_login(client: &Client, mount: &str, role_id: &str, secret_id: &str) -> Result<AuthInfo> {
    post_login(client, &format!("auth/{mount}/login"), &AppRoleBody { role_id, secret_id }).await
}

async fn role_jwt_login(client: &Client, mount: &str, role: &str, jwt: &str) -> Result<AuthInfo> {
    post_login(client, &format!("auth/{mount}/login"), &RoleJwtBody { role, jwt }).await
}

async fn userpass_login(
    client: &Client,
    mount: &str,
    username: &str,
    password: &str,
    totp: Option<&str>,
) -> Result<AuthInfo> {
    // The name goes into the URL: one segment, and never echoed in an error
    // (a "user name" may be a password typed into the wrong field).
    if username.is_empty() || username.contains('/') || username == "." || username == ".." {
        return Err(Error::InvalidArgument("the user name must be one non-empty path segment".into()));
    }
    post_login(client, &format!("auth/{mount}/login/{username}"), &UserpassBody { password, totp }).await
}

/// POST a login body; the answer's `auth` block. Sent without the client's
/// current token (a login needs none, and an expired one must not get in
/// the way).
async fn post_login<B: Serialize>(client: &Client, path: &str, body: &B) -> Result<AuthInfo> {
    let anonymous = client.clone().without_token();
    // A transport error would name the URL, which for userpass holds the
    // user name: dropped.
    let r = anonymous.send(Method::POST, path, Some(body)).await.map_err(|e| match e {
        Error::Http(e) => Error::Http(e.without_url()),
        other => other,
    })?;
    let api_path = r.path.clone();
    let env: WireAuthEnvelope = r.json()?;
    env.auth
        .map(WireAuth::into_info)
        .ok_or_else(|| Error::Decode { path: api_path, detail: "the login response has no auth block".into() })
}

impl Auth<'_> {
    /// Use the method mounted at `mount` (e.g. `"approle-ci"`) instead of
    /// its default mount for the next login.
    #[must_use]
    pub fn mount(mut self, mount: impl Into<String>) -> Self {
        self.mount = Some(mount.into());
        self
    }

    async fn run(&self, login: Login) -> Result<AuthInfo> {
        let login = match &self.mount {
            Some(m) => login.with_mount(m.clone()),
            None => login,
        };
        self.client.login(&login).await
    }

    /// AppRole login (`auth/approle/login`).
    pub async fn approle(&self, role_id: &str, secret_id: &str) -> Result<AuthInfo> {
        self.run(Login::approle(role_id, secret_id)).await
    }

    /// AppRole login with the role ID and secret ID read from files.
    pub async fn approle_from_files(
        &self,
        role_id_path: impl AsRef<Path>,
        secret_id_path: impl AsRef<Path>,
    ) -> Result<AuthInfo> {
        self.run(Login::approle_files(role_id_path.as_ref(), secret_id_path.as_ref())).await
    }

    /// Kubernetes login with a service-account token (`auth/kubernetes/login`).
    pub async fn kubernetes(&self, role: &str, jwt: &str) -> Result<AuthInfo> {
        self.run(Login::kubernetes(role, jwt)).await
    }

    /// Kubernetes login with the service-account token file (`None`:
    /// [`DEFAULT_KUBERNETES_TOKEN_PATH`]).
    pub async fn kubernetes_from_file(&self, role: &str, path: Option<&Path>) -> Result<AuthInfo> {
        self.run(Login::kubernetes_file(role, path)).await
    }

    /// JWT login (`auth/jwt/login`).
    pub async fn jwt(&self, role: &str, jwt: &str) -> Result<AuthInfo> {
        self.run(Login::jwt(role, jwt)).await
    }

    /// Userpass login (`auth/userpass/login/{username}`), with the TOTP
    /// code when the user is enrolled.
    pub async fn userpass(&self, username: &str, password: &str, totp: Option<&str>) -> Result<AuthInfo> {
        self.run(Login::userpass(username, password, totp)).await
    }

    /// Use `token`, after checking it with `lookup-self` (a refused token
    /// is an error and is not set).
    pub async fn token(&self, token: &str) -> Result<AuthInfo> {
        self.run(Login::token(token)).await
    }

    /// `auth/token/lookup-self`: the current token's state.
    pub async fn lookup_self(&self) -> Result<TokenInfo> {
        if !self.client.has_token() {
            return Err(Error::Auth("no token set".into()));
        }
        let r = self.client.send::<()>(Method::GET, "auth/token/lookup-self", None).await?;
        let path = r.path.clone();
        let env: WireLookupEnvelope = r.json()?;
        let d = env.data.ok_or(Error::Decode { path, detail: "the response has no data".into() })?;
        Ok(TokenInfo {
            accessor: d.accessor,
            policies: d.policies.unwrap_or_default(),
            metadata: d.meta.unwrap_or_default(),
            ttl: ttl_from_secs(u64::try_from(d.ttl).unwrap_or(0)),
            renewable: d.renewable,
            orphan: d.orphan,
            num_uses: u64::try_from(d.num_uses).unwrap_or(0),
        })
    }

    /// `auth/token/renew-self`: extend the current token by `increment`
    /// (`None`: its original TTL), never beyond its maximum lifetime. The
    /// answer's `lease_duration` is the TTL granted.
    pub async fn renew_self(&self, increment: Option<Duration>) -> Result<AuthInfo> {
        if !self.client.has_token() {
            return Err(Error::Auth("no token set".into()));
        }
        // The renewed token is the one sent: keep ours (the answer repeats it).
        let body = Increment { increment: increment.map(|d| d.as_secs().max(1)) };
        let r = self.client.send(Method::POST, "auth/token/renew-self", Some(&body)).await?;
        let path = r.path.clone();
        let env: WireAuthEnvelope = r.json()?;
        env.auth
            .map(WireAuth::into_info)
            .ok_or(Error::Decode { path, detail: "the renew response has no auth block".into() })
    }

    /// `auth/token/revoke-self`: revoke the current token (and its
    /// children), then forget it.
    pub async fn revoke_self(&self) -> Result<()> {
        self.client.send_ok::<()>(Method::POST, "auth/token/revoke-self", None).await?;
        self.client.clear_token();
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Keep-alive: renew in the background, log in again when renewal is over
// ---------------------------------------------------------------------------

/// What a [`KeepAlive`] has done so far; watch it with [`KeepAlive::status`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct KeepAliveStatus {
    /// Successful renewals that extended the token.
    pub renewals: u64,
    /// Successful (re-)logins.
    pub logins: u64,
    /// The token's TTL as last learned (zero: never expires; `None`: not
    /// known yet).
    pub ttl: Option<Duration>,
    /// The last failure, cleared by the next success. Never holds a secret.
    pub last_error: Option<Arc<Error>>,
}

/// A background task keeping the client's token valid; get one with
/// [`Client::keep_alive`]. Dropping it (or [`KeepAlive::stop`]) stops the
/// task; the token stays as it is.
#[derive(Debug)]
pub struct KeepAlive {
    task: JoinHandle<()>,
    status: watch::Receiver<KeepAliveStatus>,
}

impl KeepAlive {
    /// The task's progress (renewals, logins, last error).
    pub fn status(&self) -> watch::Receiver<KeepAliveStatus> {
        self.status.clone()
    }

    /// Stop the task.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The shortest sleep between keep-alive rounds.
const MIN_SLEEP: Duration = Duration::from_millis(200);
/// How often a token that never expires is looked at again (it may have
/// been replaced by one that does).
const IDLE_CHECK: Duration = Duration::from_secs(300);
/// Backoff after a failure: from 1 s, doubling, at most 30 s (full jitter).
const FAIL_MIN: Duration = Duration::from_secs(1);
const FAIL_MAX: Duration = Duration::from_secs(30);

impl Client {
    /// Keep this client's token (shared with its clones) alive in the
    /// background, until the returned handle is dropped.
    ///
    /// Each round looks the token up, sleeps until about 2/3 of its TTL and
    /// renews it (`auth/token/renew-self`). When renewal is impossible (the
    /// token is not renewable, has reached its maximum TTL, or is refused),
    /// it logs in again with `login`, if given; with no token at the start,
    /// it logs in at once. Failures (server down, sealed, login refused) are
    /// reported in [`KeepAlive::status`] and retried with backoff.
    ///
    /// Must be called from within a Tokio runtime.
    pub fn keep_alive(&self, login: Option<Login>) -> KeepAlive {
        let (tx, rx) = watch::channel(KeepAliveStatus::default());
        let task = tokio::spawn(keep_alive_loop(self.clone(), login, tx));
        KeepAlive { task, status: rx }
    }
}

/// What a round knows about the token.
#[derive(Debug, Clone, Copy)]
struct Known {
    ttl: Duration,
    renewable: bool,
}

async fn keep_alive_loop(client: Client, login: Option<Login>, tx: watch::Sender<KeepAliveStatus>) {
    let mut failures: u32 = 0;
    let mut known: Option<Known> = None;
    loop {
        // 1. Where does the token stand? (Known after a renewal or a login.)
        let state = match known.take() {
            Some(k) => k,
            None => match client.auth().lookup_self().await {
                Ok(t) => Known { ttl: t.ttl, renewable: t.renewable },
                Err(e) if token_unusable(&e) && login.is_some() => match relogin(&client, login.as_ref(), &tx).await {
                    Ok(k) => k,
                    Err(()) => {
                        pause_after_failure(&mut failures).await;
                        continue;
                    }
                },
                Err(e) => {
                    let e = if token_unusable(&e) {
                        Error::Auth(format!("the token is unusable and there is no login to replay ({e})"))
                    } else {
                        e
                    };
                    report(&tx, e);
                    pause_after_failure(&mut failures).await;
                    continue;
                }
            },
        };
        failures = 0;
        tx.send_modify(|s| {
            s.ttl = Some(state.ttl);
            s.last_error = None;
        });
        // The token this round is about: if someone else replaces it (a
        // login elsewhere), the round starts over with the new one.
        let token = client.token_secret();
        if state.ttl.is_zero() {
            sleep_unless_replaced(&client, &token, IDLE_CHECK).await;
            continue;
        }
        // 2. Sleep until ~2/3 of the TTL. TTLs come in whole seconds,
        // rounded down from an expiry that may be up to 1 s closer: count
        // from the lower bound.
        let ttl = state.ttl.min(MAX_TTL).saturating_sub(Duration::from_secs(1));
        let nap = (ttl / 3).saturating_mul(2).max(MIN_SLEEP);
        let remaining_after = ttl.saturating_sub(nap);
        if !sleep_unless_replaced(&client, &token, nap).await {
            continue;
        }

        // 3. Renew if that extends the token.
        if state.renewable {
            match client.auth().renew_self(None).await {
                // Extended: beyond what was left (else the maximum TTL capped it).
                Ok(a) if a.lease_duration > remaining_after.saturating_add(Duration::from_secs(1)) => {
                    tx.send_modify(|s| s.renewals += 1);
                    known = Some(Known { ttl: a.lease_duration, renewable: a.renewable });
                    continue;
                }
                Ok(a) => {
                    tracing::debug!(ttl = ?a.lease_duration, "token renewal capped by its maximum TTL");
                }
                Err(e) if is_client_error(&e) => {
                    tracing::debug!(error = %e, "token renewal refused");
                }
                Err(e) => {
                    // Transient (server down, sealed): try again soon.
                    report(&tx, e);
                    pause_after_failure(&mut failures).await;
                    continue;
                }
            }
        }
        // 4. Renewal impossible: log in again, or let the token run out.
        if login.is_some() {
            match relogin(&client, login.as_ref(), &tx).await {
                Ok(k) => known = Some(k),
                Err(()) => pause_after_failure(&mut failures).await,
            }
        } else {
            report(&tx, Error::Auth("the token cannot be renewed and there is no login to replay".into()));
            tokio::time::sleep(remaining_after.max(MIN_SLEEP)).await;
        }
    }
}

/// Log in again; the failure is reported.
async fn relogin(
    client: &Client,
    login: Option<&Login>,
    tx: &watch::Sender<KeepAliveStatus>,
) -> std::result::Result<Known, ()> {
    let Some(login) = login else { return Err(()) };
    match client.login(login).await {
        Ok(a) => {
            tracing::debug!(method = login.method_name(), mount = login.mount(), "logged in again");
            tx.send_modify(|s| s.logins += 1);
            Ok(Known { ttl: a.lease_duration, renewable: a.renewable })
        }
        Err(e) => {
            tracing::warn!(method = login.method_name(), mount = login.mount(), error = %e, "re-login failed");
            report(tx, e);
            Err(())
        }
    }
}

fn report(tx: &watch::Sender<KeepAliveStatus>, e: Error) {
    tx.send_modify(|s| s.last_error = Some(Arc::new(e)));
}

/// A 4xx: the server refused (the same request will not do better).
fn is_client_error(e: &Error) -> bool {
    e.status().is_some_and(|s| (400..500).contains(&s))
}

/// The token is missing, unknown, expired or revoked.
fn token_unusable(e: &Error) -> bool {
    matches!(e, Error::Auth(_)) || e.is_permission_denied() || e.status() == Some(401)
}

/// How often a sleeping keep-alive checks whether the token was replaced.
const REPLACED_CHECK: Duration = Duration::from_secs(1);

/// Sleep for `duration`; return early (false) if the client's token is no
/// longer `token`. (An in-memory comparison each second: no request.)
async fn sleep_unless_replaced(client: &Client, token: &Option<Zeroizing<String>>, duration: Duration) -> bool {
    let start = tokio::time::Instant::now();
    loop {
        // Elapsed time, not `start + duration`: no Instant overflow.
        let Some(left) = duration.checked_sub(start.elapsed()).filter(|d| !d.is_zero()) else {
            return true;
        };
        tokio::time::sleep(left.min(REPLACED_CHECK)).await;
        if client.token_secret() != *token {
            return false;
        }
    }
}

async fn pause_after_failure(failures: &mut u32) {
    let policy = crate::retry::RetryPolicy { max_retries: 0, min: FAIL_MIN, max: FAIL_MAX };
    // Never spin: at least MIN_SLEEP even when the jitter draws zero.
    tokio::time::sleep(policy.delay(*failures).max(MIN_SLEEP)).await;
    *failures = failures.saturating_add(1);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const SECRETS: [&str; 5] = ["ROLEIDSECRET", "SECRETIDSECRET", "JWTSECRET", "PASSWORDSECRET", "TOTPSECRET"];

    fn assert_no_secret(shown: &str) {
        for s in SECRETS {
            assert!(!shown.contains(s), "{s} in {shown}");
        }
    }

    #[test]
    fn login_debug_is_redacted_and_mounts_default_to_the_method() {
        let logins = [
            Login::token("JWTSECRET"),
            Login::approle("ROLEIDSECRET", "SECRETIDSECRET"),
            Login::approle_files("/run/role-id", "/run/secret-id"),
            Login::kubernetes("web", "JWTSECRET"),
            Login::kubernetes_file("web", None),
            Login::jwt("ci", "JWTSECRET"),
            Login::jwt_file("ci", "/run/jwt"),
            Login::userpass("alice", "PASSWORDSECRET", Some("TOTPSECRET")),
        ];
        let mounts: Vec<&str> = logins.iter().map(Login::mount).collect();
        assert_eq!(mounts, ["token", "approle", "approle", "kubernetes", "kubernetes", "jwt", "jwt", "userpass"]);
        for l in &logins {
            let shown = format!("{l:?} {l:#?}");
            assert_no_secret(&shown);
            assert!(shown.contains(l.method_name()), "{shown}");
        }
        let shown = format!("{:?}", logins[4]);
        assert!(shown.contains(DEFAULT_KUBERNETES_TOKEN_PATH), "{shown}");
        assert_eq!(Login::approle("a", "b").with_mount("/auth/approle-ci/").mount(), "approle-ci");
        assert_eq!(Login::approle("a", "b").with_mount("ci").mount(), "ci");
    }

    #[test]
    fn auth_info_debug_is_redacted() {
        let wire: WireAuth = serde_json::from_str(
            r#"{"client_token":"hvs.JWTSECRET","accessor":"acc","policies":["default","app"],
                "metadata":{"role_name":"app"},"lease_duration":60,"renewable":true,"num_uses":0}"#,
        )
        .unwrap();
        let info = wire.into_info();
        assert_eq!(info.token(), "hvs.JWTSECRET");
        assert_eq!(info.token_policies, vec!["default", "app"]);
        assert_eq!(info.lease_duration, Duration::from_secs(60));
        assert_no_secret(&format!("{info:?} {info:#?}"));
        assert!(format!("{info:?}").contains("acc"));
    }

    #[test]
    fn huge_server_ttls_are_clamped() {
        let wire: WireAuth =
            serde_json::from_str(r#"{"client_token":"t","lease_duration":18446744073709551615,"renewable":true}"#)
                .unwrap();
        assert_eq!(wire.into_info().lease_duration, MAX_TTL);
        // What the keep-alive computes from it must not overflow.
        let ttl = MAX_TTL.saturating_sub(Duration::from_secs(1));
        assert!((ttl / 3).saturating_mul(2) < MAX_TTL);
    }

    #[test]
    fn bad_mounts_and_user_names_are_refused_before_sending() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // Nothing listens there: an InvalidArgument proves nothing was sent.
        let c = Client::new("http://127.0.0.1:1").unwrap();
        let e = rt.block_on(c.login(&Login::approle("ROLEIDSECRET", "SECRETIDSECRET").with_mount("/"))).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        for name in ["", "a/b", ".."] {
            let e = rt.block_on(c.auth().userpass(name, "PASSWORDSECRET", None)).unwrap_err();
            assert!(matches!(&e, Error::InvalidArgument(m) if !m.contains("PASSWORDSECRET")), "{e:?}");
        }
        assert!(!c.has_token());
    }

    #[test]
    fn credential_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("secret-id");
        std::fs::write(&good, "SECRETIDSECRET\n").unwrap();
        assert_eq!(read_credential("AppRole secret ID", &good).unwrap().as_str(), "SECRETIDSECRET");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let e = read_credential("AppRole secret ID", &empty).unwrap_err();
        assert!(matches!(&e, Error::CredentialFile { reason, .. } if reason.contains("empty")), "{e:?}");
        let missing = dir.path().join("missing");
        let e = read_credential("AppRole role ID", &missing).unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains("AppRole role ID") && shown.contains("missing"), "{shown}");
        let binary = dir.path().join("binary");
        std::fs::write(&binary, [0xff, 0xfe, b'S']).unwrap();
        assert!(matches!(read_credential("JWT", &binary), Err(Error::CredentialFile { .. })));
    }
}
