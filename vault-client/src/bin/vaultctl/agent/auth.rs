//! Auto-auth for `exec` and `agent`: how to get a token (the one in the
//! environment, AppRole credentials from files, a Kubernetes
//! service-account token), a [`Session`] sharing the current client with
//! the tasks that follow secrets, and keeping the token alive (renewal at
//! two thirds of its TTL, a new login when renewal is impossible).
//!
//! The login and renewal calls stand in for the library's login helpers
//! (`client.auth()`, `Login`, `client.keep_alive`), being written in
//! parallel; each is one function marked `INTEGRATION`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vault_client::Client;
use zeroize::Zeroizing;

use super::secrets::flat;

/// Default path of a pod's service-account token.
pub(crate) const K8S_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Auth method names, as in Vault's agent configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Method {
    /// The token from VAULT_TOKEN (or the token helper file), or from a file.
    #[default]
    Token,
    /// AppRole: role ID and secret ID read from files.
    #[value(name = "approle")]
    Approle,
    /// Kubernetes: the pod's service-account token.
    Kubernetes,
}

/// Authentication flags shared by `exec` (and usable by other commands).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct AuthFlags {
    /// How to get a token: the environment's (VAULT_TOKEN), AppRole, or Kubernetes.
    #[arg(long, value_enum, default_value_t = Method::Token, value_name = "METHOD")]
    pub(crate) auth_method: Method,
    /// AppRole: file holding the role ID.
    #[arg(long, value_name = "FILE")]
    pub(crate) role_id_file: Option<PathBuf>,
    /// AppRole: file holding the secret ID (read again at each login).
    #[arg(long, value_name = "FILE")]
    pub(crate) secret_id_file: Option<PathBuf>,
    /// Kubernetes: the Vault role to log in as.
    #[arg(long, value_name = "ROLE")]
    pub(crate) role: Option<String>,
    /// Kubernetes: the service-account token file [default: /var/run/secrets/kubernetes.io/serviceaccount/token].
    #[arg(long, value_name = "FILE")]
    pub(crate) jwt_file: Option<PathBuf>,
    /// Where the auth method is mounted [default: approle, kubernetes].
    #[arg(long, value_name = "PATH")]
    pub(crate) auth_mount: Option<String>,
}

/// How to get a token. Holds file paths only: credentials are read at each
/// login (so a rotated secret ID or a refreshed projected token is used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AutoAuth {
    /// The client's token (VAULT_TOKEN, ...), or the one in `file`.
    Token { file: Option<PathBuf> },
    /// AppRole login with the role ID and secret ID in these files.
    AppRole { mount: String, role_id_file: PathBuf, secret_id_file: PathBuf },
    /// Kubernetes login with the service-account token in `jwt_file`.
    Kubernetes { mount: String, role: String, jwt_file: PathBuf },
}

impl AutoAuth {
    /// From the parts of `--auth-*` flags or an agent's `[auto_auth]`.
    pub(crate) fn new(
        method: Method,
        mount: Option<String>,
        role_id_file: Option<PathBuf>,
        secret_id_file: Option<PathBuf>,
        role: Option<String>,
        token_file: Option<PathBuf>,
    ) -> anyhow::Result<AutoAuth> {
        let mount = |default: &str| {
            mount.clone().map(|m| m.trim_matches('/').to_string()).filter(|m| !m.is_empty()).unwrap_or(default.into())
        };
        Ok(match method {
            Method::Token => {
                if role_id_file.is_some() || secret_id_file.is_some() || role.is_some() {
                    bail!("role ID / secret ID files and a role need the approle or kubernetes auth method");
                }
                AutoAuth::Token { file: token_file }
            }
            Method::Approle => AutoAuth::AppRole {
                mount: mount("approle"),
                role_id_file: role_id_file.context("the approle auth method needs a role ID file")?,
                secret_id_file: secret_id_file.context("the approle auth method needs a secret ID file")?,
            },
            Method::Kubernetes => AutoAuth::Kubernetes {
                mount: mount("kubernetes"),
                role: role.context("the kubernetes auth method needs a role")?,
                jwt_file: token_file.unwrap_or_else(|| PathBuf::from(K8S_TOKEN_FILE)),
            },
        })
    }

    /// From `exec`'s flags.
    pub(crate) fn from_flags(f: &AuthFlags) -> anyhow::Result<AutoAuth> {
        if f.auth_method != Method::Kubernetes && f.jwt_file.is_some() {
            bail!("--jwt-file needs --auth-method kubernetes");
        }
        Self::new(
            f.auth_method,
            f.auth_mount.clone(),
            f.role_id_file.clone(),
            f.secret_id_file.clone(),
            f.role.clone(),
            f.jwt_file.clone(),
        )
    }

    /// Whether logging in again can bring a new token.
    fn can_relogin(&self) -> bool {
        !matches!(self, AutoAuth::Token { file: None })
    }
}

/// What a login or renewal says about the token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lease {
    /// Time to live; zero for a token that never expires.
    pub(crate) ttl: Duration,
    /// Whether renew-self may extend it.
    pub(crate) renewable: bool,
}

/// Read a credential file: its contents without surrounding whitespace;
/// errors name the file, never the contents.
fn read_credential(path: &Path, what: &str) -> anyhow::Result<Zeroizing<String>> {
    let raw = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} file {}", path.display()))?,
    );
    let value = Zeroizing::new(raw.trim().to_string());
    if value.is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    Ok(value)
}

#[derive(Serialize)]
struct AppRoleBody<'a> {
    role_id: &'a str,
    secret_id: &'a str,
}

#[derive(Serialize)]
struct KubernetesBody<'a> {
    role: &'a str,
    jwt: &'a str,
}

/// The `auth` block of a login or renewal answer: (token, lease).
fn auth_block(v: Option<Value>, what: &str) -> anyhow::Result<(Zeroizing<String>, Lease)> {
    let v = v.with_context(|| format!("{what}: the server sent no answer"))?;
    let auth = v.get("auth").with_context(|| format!("{what}: the answer has no auth block"))?;
    let token = auth
        .get("client_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .with_context(|| format!("{what}: the answer has no client token"))?;
    let lease = Lease {
        ttl: Duration::from_secs(auth.get("lease_duration").and_then(Value::as_u64).unwrap_or(0)),
        renewable: auth.get("renewable").and_then(Value::as_bool).unwrap_or(false),
    };
    Ok((Zeroizing::new(token.to_string()), lease))
}

/// Log in with `auth`, setting `client`'s token; the token's lease.
/// For the token method, checks the token (lookup-self) and learns its TTL.
// INTEGRATION: replace with vault_client's `client.auth().approle_from_files(...)`,
// `kubernetes_from_file(...)`, `token(...)` / `client.login(&Login)`.
pub(crate) async fn login(client: &mut Client, auth: &AutoAuth) -> anyhow::Result<Lease> {
    match auth {
        AutoAuth::Token { file } => {
            if let Some(path) = file {
                let token = read_credential(path, "token")?;
                client.set_token(token.as_str());
            } else if !client.has_token() {
                bail!(
                    "no Vault token: set VAULT_TOKEN (or log in with `vaultctl login`), \
                     or use --auth-method approle|kubernetes"
                );
            }
            let v = client.logical().read("auth/token/lookup-self").await.map_err(|e| {
                if matches!(e.status(), Some(401 | 403)) {
                    flat(&e).context("the Vault token was refused (invalid or expired?)")
                } else {
                    flat(&e).context("cannot check the Vault token (auth/token/lookup-self)")
                }
            })?;
            let data = v.as_ref().and_then(|v| v.get("data"));
            Ok(Lease {
                ttl: Duration::from_secs(data.and_then(|d| d.get("ttl")).and_then(Value::as_u64).unwrap_or(0)),
                renewable: data.and_then(|d| d.get("renewable")).and_then(Value::as_bool).unwrap_or(false),
            })
        }
        AutoAuth::AppRole { mount, role_id_file, secret_id_file } => {
            let role_id = read_credential(role_id_file, "role ID")?;
            let secret_id = read_credential(secret_id_file, "secret ID")?;
            let body = AppRoleBody { role_id: &role_id, secret_id: &secret_id };
            client.clear_token();
            let answer = client
                .logical()
                .write(&format!("auth/{mount}/login"), &body)
                .await
                .map_err(|e| flat(&e).context(format!("AppRole login at auth/{mount} failed")))?;
            let (token, lease) = auth_block(answer, "AppRole login")?;
            client.set_token(token.as_str());
            Ok(lease)
        }
        AutoAuth::Kubernetes { mount, role, jwt_file } => {
            let jwt = read_credential(jwt_file, "service-account token")?;
            let body = KubernetesBody { role, jwt: &jwt };
            client.clear_token();
            let answer = client
                .logical()
                .write(&format!("auth/{mount}/login"), &body)
                .await
                .map_err(|e| flat(&e).context(format!("Kubernetes login at auth/{mount} as role {role} failed")))?;
            let (token, lease) = auth_block(answer, "Kubernetes login")?;
            client.set_token(token.as_str());
            Ok(lease)
        }
    }
}

/// Renew the client's token (`auth/token/renew-self`); its new lease.
// INTEGRATION: replace with vault_client's `client.keep_alive(Some(login))`.
async fn renew(client: &Client) -> anyhow::Result<Lease> {
    let answer = client.logical().write("auth/token/renew-self", &serde_json::json!({})).await.map_err(|e| flat(&e))?;
    Ok(auth_block(answer, "token renewal")?.1)
}

/// The current client, shared by everything that talks to the vault, and
/// the way to log in again. Cheap to clone.
// INTEGRATION: once `Client` clones share one token cell (vault_client's
// login helpers), this can hold a single `Client` and `keep_alive` becomes
// `client.keep_alive(Some(login))`.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: RwLock<Client>,
    auth: AutoAuth,
    /// Serializes logins; holds when the last one happened and its lease.
    state: tokio::sync::Mutex<(Instant, Lease)>,
}

/// A new login is not attempted again within this time of the last one
/// (several watchers seeing the same expired token log in once).
const RELOGIN_QUIET: Duration = Duration::from_secs(5);

impl Session {
    /// Log in with `auth` using `client` (address, TLS; its token for the
    /// token method).
    pub(crate) async fn start(mut client: Client, auth: AutoAuth) -> anyhow::Result<Session> {
        let lease = login(&mut client, &auth).await?;
        Ok(Session {
            inner: Arc::new(Inner {
                client: RwLock::new(client),
                auth,
                state: tokio::sync::Mutex::new((Instant::now(), lease)),
            }),
        })
    }

    /// The current client (with the latest token).
    pub(crate) fn client(&self) -> Client {
        match self.inner.client.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, client: Client) {
        match self.inner.client.write() {
            Ok(mut c) => *c = client,
            Err(poisoned) => *poisoned.into_inner() = client,
        }
    }

    /// Log in again (unless that just happened); errors go to stderr.
    pub(crate) async fn relogin_after_denial(&self) {
        if !self.inner.auth.can_relogin() {
            return;
        }
        let mut state = self.inner.state.lock().await;
        if state.0.elapsed() < RELOGIN_QUIET {
            return;
        }
        let mut c = self.client();
        match login(&mut c, &self.inner.auth).await {
            Ok(lease) => {
                self.replace(c);
                *state = (Instant::now(), lease);
                eprintln!("vaultctl: logged in again");
            }
            Err(e) => eprintln!("vaultctl: login failed: {e:#}"),
        }
    }

    /// Keep the token alive in the background: renew it at two thirds of
    /// its TTL, log in again when it cannot be renewed (not renewable,
    /// refused, or capped by its max TTL). Abort the handle to stop.
    pub(crate) fn keep_alive(&self) -> tokio::task::JoinHandle<()> {
        let s = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let (at, lease) = *s.inner.state.lock().await;
                if lease.ttl.is_zero() {
                    return; // never expires
                }
                let due = at + lease.ttl * 2 / 3;
                tokio::time::sleep_until(due.into()).await;
                let mut state = s.inner.state.lock().await;
                if state.0 != at {
                    continue; // someone logged in meanwhile
                }
                if lease.renewable {
                    match renew(&s.client()).await {
                        // Renewed for a useful time: keep the token.
                        Ok(new) if new.ttl * 3 >= lease.ttl && !new.ttl.is_zero() => {
                            *state = (Instant::now(), new);
                            continue;
                        }
                        Ok(_) => {}
                        Err(e) => eprintln!("vaultctl: token renewal failed: {e:#}"),
                    }
                }
                if !s.inner.auth.can_relogin() {
                    eprintln!("vaultctl: the token will expire and cannot be renewed; no login method to get another");
                    return;
                }
                let mut c = s.client();
                match login(&mut c, &s.inner.auth).await {
                    Ok(new) => {
                        s.replace(c);
                        *state = (Instant::now(), new);
                        backoff = Duration::from_secs(1);
                        eprintln!("vaultctl: logged in again (the token could not be renewed further)");
                    }
                    Err(e) => {
                        eprintln!("vaultctl: login failed (retrying in {}s): {e:#}", backoff.as_secs());
                        drop(state);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                        // Retry at once next round: pretend the lease is due now.
                        let mut st = s.inner.state.lock().await;
                        st.1.ttl = Duration::from_millis(1);
                        st.1.renewable = false;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn auto_auth_from_parts() {
        let a = AutoAuth::new(Method::Approle, None, Some("r".into()), Some("s".into()), None, None).unwrap();
        assert_eq!(
            a,
            AutoAuth::AppRole { mount: "approle".into(), role_id_file: "r".into(), secret_id_file: "s".into() }
        );
        let a = AutoAuth::new(Method::Kubernetes, Some("/k8s/".into()), None, None, Some("app".into()), None).unwrap();
        assert_eq!(
            a,
            AutoAuth::Kubernetes { mount: "k8s".into(), role: "app".into(), jwt_file: K8S_TOKEN_FILE.into() }
        );
        let e = AutoAuth::new(Method::Approle, None, Some("r".into()), None, None, None).unwrap_err();
        assert!(e.to_string().contains("secret ID file"), "{e}");
        assert!(AutoAuth::new(Method::Kubernetes, None, None, None, None, None).is_err());
        assert!(AutoAuth::new(Method::Token, None, Some("r".into()), None, None, None).is_err());
        assert!(!AutoAuth::new(Method::Token, None, None, None, None, None).unwrap().can_relogin());
    }

    #[test]
    fn credential_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sid");
        std::fs::write(&p, "  SECRET-VALUE\n").unwrap();
        assert_eq!(read_credential(&p, "secret ID").unwrap().as_str(), "SECRET-VALUE");
        std::fs::write(&p, "\n").unwrap();
        let e = read_credential(&p, "secret ID").unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        let e = format!("{:#}", read_credential(&dir.path().join("none"), "role ID").unwrap_err());
        assert!(e.contains("cannot read the role ID file"), "{e}");
    }
}
