//! Auto-auth for `exec` and `agent`: how to get a token (the one in the
//! environment or a file, AppRole credentials from files, a Kubernetes
//! service-account token), as flags or configuration, turned into the
//! library's [`Login`]; and keeping the token alive with the library's
//! [`Client::keep_alive`]. `Client` clones share one token, so a re-login
//! is seen by every task holding a clone (the secret watchers included).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use vault_client::auth::DEFAULT_KUBERNETES_TOKEN_PATH;
use vault_client::{Client, KeepAlive, Login};
use zeroize::Zeroizing;

use super::AbortOnDrop;

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
                jwt_file: token_file.unwrap_or_else(|| PathBuf::from(DEFAULT_KUBERNETES_TOKEN_PATH)),
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
}

/// Read a Vault token from `path` (the token method's `token_file`): its
/// contents without surrounding whitespace; errors name the file, never the
/// contents. (The library's [`Login`] has no "token from a file" variant.)
fn read_token_file(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let raw = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read the token file {}", path.display()))?,
    );
    let token = Zeroizing::new(raw.trim().to_string());
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token)
}

impl AutoAuth {
    /// The library login to replay for re-logins (`None`: the token method,
    /// where logging in again cannot bring a new token).
    fn replayable(&self) -> Option<Login> {
        match self {
            AutoAuth::Token { .. } => None,
            AutoAuth::AppRole { mount, role_id_file, secret_id_file } => {
                Some(Login::approle_files(role_id_file, secret_id_file).with_mount(mount))
            }
            AutoAuth::Kubernetes { mount, role, jwt_file } => {
                Some(Login::kubernetes_file(role, Some(jwt_file.as_path())).with_mount(mount))
            }
        }
    }

    /// What a failed login is reported as.
    fn login_failed(&self) -> String {
        match self {
            AutoAuth::Token { .. } => "the Vault token was refused (invalid or expired?)".into(),
            AutoAuth::AppRole { mount, .. } => format!("AppRole login at auth/{mount} failed"),
            AutoAuth::Kubernetes { mount, role, .. } => {
                format!("Kubernetes login at auth/{mount} as role {role} failed")
            }
        }
    }
}

/// Log in with `auth`, setting the token of `client` (and of its clones);
/// the login to give [`keep_alive`]. For the token method the token is
/// checked (`auth/token/lookup-self`).
pub(crate) async fn login(client: &Client, auth: &AutoAuth) -> anyhow::Result<Option<Login>> {
    let checked = match auth {
        AutoAuth::Token { file: Some(path) } => {
            let token = read_token_file(path)?;
            client.login(&Login::token(token.as_str())).await.map(drop)
        }
        AutoAuth::Token { file: None } => {
            if !client.has_token() {
                bail!(
                    "no Vault token: set VAULT_TOKEN (or log in with `vaultctl login`), \
                     or use --auth-method approle|kubernetes"
                );
            }
            client.auth().lookup_self().await.map(drop)
        }
        AutoAuth::AppRole { .. } | AutoAuth::Kubernetes { .. } => {
            let login = auth.replayable().context("no login for this method")?;
            client.login(&login).await.map(drop)
        }
    };
    match checked {
        Ok(()) => Ok(auth.replayable()),
        Err(e) if matches!(auth, AutoAuth::Token { .. }) && !matches!(e.status(), Some(401 | 403)) => {
            Err(anyhow::Error::new(e).context("cannot check the Vault token (auth/token/lookup-self)"))
        }
        Err(e) => Err(anyhow::Error::new(e).context(auth.login_failed())),
    }
}

/// The library's [`KeepAlive`] (renewal at ~2/3 of the TTL, re-login when
/// renewal is impossible), plus a task reporting on stderr what it does.
/// Dropping it stops both.
#[derive(Debug)]
pub(crate) struct KeepAliveTask {
    _keep_alive: KeepAlive,
    _report: AbortOnDrop,
}

/// Keep `client`'s token (shared with every clone, the watchers' included)
/// alive. With the token method and a `token_file`, a token the keep-alive
/// cannot keep (not renewable, expired) is replaced by the one in the file,
/// if it changed (the library cannot replay a token file).
pub(crate) fn keep_alive(client: &Client, auth: &AutoAuth, login: Option<Login>) -> KeepAliveTask {
    let keep_alive = client.keep_alive(login);
    let mut status = keep_alive.status();
    let client = client.clone();
    let token_file = match auth {
        AutoAuth::Token { file } => file.clone(),
        _ => None,
    };
    let report = tokio::spawn(async move {
        let (mut logins, mut last_error) = (0, String::new());
        while status.changed().await.is_ok() {
            let s = status.borrow_and_update().clone();
            if s.logins > logins {
                logins = s.logins;
                eprintln!("vaultctl: logged in again (the token could not be renewed further)");
            }
            let Some(e) = s.last_error else {
                last_error.clear();
                continue;
            };
            let msg = e.to_string();
            if msg != last_error {
                eprintln!("vaultctl: keeping the token alive: {msg}");
                last_error = msg;
            }
            if let Some(path) = &token_file
                && let Ok(token) = read_token_file(path)
                && client.token_secret().as_deref() != Some(&token)
            {
                client.set_token(token.as_str());
                eprintln!("vaultctl: using the new token in {}", path.display());
            }
        }
    });
    KeepAliveTask { _keep_alive: keep_alive, _report: AbortOnDrop(report) }
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
            AutoAuth::Kubernetes {
                mount: "k8s".into(),
                role: "app".into(),
                jwt_file: DEFAULT_KUBERNETES_TOKEN_PATH.into()
            }
        );
        let e = AutoAuth::new(Method::Approle, None, Some("r".into()), None, None, None).unwrap_err();
        assert!(e.to_string().contains("secret ID file"), "{e}");
        assert!(AutoAuth::new(Method::Kubernetes, None, None, None, None, None).is_err());
        assert!(AutoAuth::new(Method::Token, None, Some("r".into()), None, None, None).is_err());
        assert!(AutoAuth::new(Method::Token, None, None, None, None, None).unwrap().replayable().is_none());
        let k = AutoAuth::new(Method::Kubernetes, Some("k8s".into()), None, None, Some("app".into()), None).unwrap();
        let login = k.replayable().unwrap();
        assert_eq!((login.method_name(), login.mount()), ("kubernetes", "k8s"));
    }

    #[test]
    fn token_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "  SECRET-VALUE\n").unwrap();
        assert_eq!(read_token_file(&p).unwrap().as_str(), "SECRET-VALUE");
        std::fs::write(&p, "\n").unwrap();
        let e = read_token_file(&p).unwrap_err().to_string();
        assert!(e.contains("is empty") && !e.contains("SECRET"), "{e}");
        let e = format!("{:#}", read_token_file(&dir.path().join("none")).unwrap_err());
        assert!(e.contains("cannot read the token file"), "{e}");
    }
}
