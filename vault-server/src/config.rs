//! Server configuration: a TOML file, overridden by command-line flags.
//!
//! ```toml
//! listen_addr  = "127.0.0.1:8200"
//! storage_url  = "sqlite://./vault-data/vault.db"   # or postgres://user@host/db
//! # storage_url_file = "/run/secrets/vault_storage_url"     # the URL read from a file instead
//! # storage_password_file = "/run/secrets/pg_password"      # PostgreSQL password kept out of the URL
//! log_level    = "info"                              # trace|debug|info|warn|error
//! log_format   = "text"                              # text|json
//! disable_mlock = false
//! access_log = false   # one line per request: id, operation, path, status, duration, accessor
//! max_request_bytes = 33554432
//! # Key ceremonies without a token (OpenBao's listener settings): both `true`
//! # by default, so `sys/rekey/*` and `sys/generate-root/*` need a token with
//! # `sudo` on the path. Set one to `false` only for the time a ceremony needs
//! # it (docs/operations.md: "Root token lost").
//! disable_unauthed_rekey_endpoints = true
//! disable_unauthed_generate_root_endpoints = true
//!
//! [tls]                # reloaded on SIGHUP (docs/hardening.md)
//! cert_file = "/etc/vault/tls/cert.pem"
//! key_file  = "/etc/vault/tls/key.pem"
//! hsts_max_age = 31536000                      # Strict-Transport-Security max-age (s); 0: no header
//! tls_client_ca_file = "/etc/vault/tls/clients-ca.pem"   # CAs of client certificates
//! tls_require_and_verify_client_cert = false   # true: a handshake without a valid client certificate fails
//! tls_disable_client_certs = false             # true: never ask for a client certificate
//!
//! [quotas]               # built-in per-client-address limits (0 turns one off)
//! login_rate = 10        # auth/*/login* requests per second
//! login_burst = 50       # ... at once
//! unseal_rate = 2        # sys/unseal requests per second
//! unseal_burst = 30      # ... at once
//!
//! cache_max_bytes = 67108864   # read cache of stored (encrypted) records; 0 disables
//!
//! [rotation]             # KV v2 secret rotation (docs/kv-rotation.md)
//! interval = "5s"        # how often due rotations are looked for
//! lease = "60s"          # how long a server's claim on a rotation lasts
//! max_failures = 10      # consecutive failures before a rotation is suspended
//! postgres_allowed_hosts = ["db.internal:5432", "10.0.0.0/8"]  # default: none
//!
//! [transit]              # streamed encryption (docs/transit.md)
//! stream_max_bytes = 17179869184   # largest stream body (default 16 GiB); more is a 413
//! stream_max_concurrent = 64       # streams in progress at once, all mounts; more is a 503
//!
//! [lockout]              # userpass/AppRole user lockout (shared through storage)
//! threshold = 5          # failures per user or role ID before a lockout
//! duration = "15m"       # how long a lockout lasts
//! counter_reset = "15m"  # failures older than this are forgotten
//!
//! [listener]                        # connection limits (Vault's listener "tcp" keys)
//! http_read_header_timeout = "10s"  # time to send a request's head
//! http_read_timeout = "30s"         # a request body (JSON) must be complete within this (408); streamed bodies: per chunk
//! http_idle_timeout = "5m"          # a connection without a request is closed after this
//! max_connections = 4096            # more connections wait to be accepted
//! tls_handshake_timeout = "10s"     # time to complete a TLS handshake
//!
//! [telemetry]                            # Prometheus metrics (docs/metrics.md)
//! unauthenticated_metrics_access = false # true: GET /v1/sys/metrics needs no token (Vault's key)
//!
//! [audit]                        # docs/audit.md
//! file_dirs = ["/var/log/vault"] # file audit devices write only below these (default: none)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8200";
/// Default storage.
pub const DEFAULT_STORAGE: &str = "sqlite://./vault-data/vault.db";
/// Default request body limit: 32 MiB (Vault's default).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// Which file.
        path: PathBuf,
        /// Parser message (line and column included).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A `*_file` setting names a file that cannot be read (the message
    /// names the setting and the file, never its contents).
    #[error("cannot read {setting} {path}: {source}")]
    SecretFile {
        /// Which setting (`storage_url_file`, `VAULT_STORAGE_URL_FILE`, ...).
        setting: &'static str,
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// `Strict-Transport-Security` max-age in seconds (default one year; 0: no header).
    #[serde(default = "default_hsts")]
    pub hsts_max_age: u64,
    /// PEM CA certificates that client certificates must chain to (Vault's name).
    #[serde(default)]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Refuse handshakes without a valid client certificate (Vault's name).
    #[serde(default)]
    pub tls_require_and_verify_client_cert: bool,
    /// Never ask for a client certificate (Vault's name).
    #[serde(default)]
    pub tls_disable_client_certs: bool,
}

/// One year, what HSTS preload lists ask for.
pub const DEFAULT_HSTS_MAX_AGE: u64 = 31_536_000;

fn default_hsts() -> u64 {
    DEFAULT_HSTS_MAX_AGE
}

/// `[quotas]` as written in the file.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct QuotasFile {
    login_rate: Option<f64>,
    login_burst: Option<u32>,
    unseal_rate: Option<f64>,
    unseal_burst: Option<u32>,
}

/// Login lockout settings, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LockoutFile {
    threshold: Option<u32>,
    duration: Option<String>,
    counter_reset: Option<String>,
}

/// The file format (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen_addr: Option<String>,
    storage_url: Option<String>,
    storage_url_file: Option<PathBuf>,
    storage_password_file: Option<PathBuf>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    disable_mlock: Option<bool>,
    access_log: Option<bool>,
    max_request_bytes: Option<usize>,
    tls: Option<TlsConfig>,
    lockout: Option<LockoutFile>,
    cache_max_bytes: Option<u64>,
    rotation: Option<RotationFile>,
    transit: Option<TransitFile>,
    disable_unauthed_rekey_endpoints: Option<bool>,
    disable_unauthed_generate_root_endpoints: Option<bool>,
    listener: Option<ListenerFile>,
    telemetry: Option<TelemetryFile>,
    quotas: Option<QuotasFile>,
    backup: Option<BackupFile>,
    audit: Option<AuditFile>,
}

/// `[audit]` as written in the file (docs/audit.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AuditFile {
    file_dirs: Option<Vec<PathBuf>>,
}

/// `[telemetry]` as written in the file (Vault's `telemetry` stanza keys).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TelemetryFile {
    unauthenticated_metrics_access: Option<bool>,
}

/// Metrics settings (`[telemetry]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Telemetry {
    /// `GET /v1/sys/metrics` without a token (and while sealed), as Vault's
    /// `unauthenticated_metrics_access`. Off by default: the metrics name
    /// mounts and show traffic.
    pub unauthenticated_metrics_access: bool,
}

/// `[backup]` as written in the file (docs/backup.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BackupFile {
    dir: Option<PathBuf>,
    interval: Option<String>,
    keep_daily: Option<u32>,
    keep_monthly: Option<u32>,
    max_snapshot_bytes: Option<u64>,
}

/// `[listener]` as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListenerFile {
    http_read_header_timeout: Option<String>,
    http_read_timeout: Option<String>,
    http_idle_timeout: Option<String>,
    max_connections: Option<usize>,
    max_request_bytes_in_flight: Option<usize>,
    tls_handshake_timeout: Option<String>,
}

/// `[transit]` as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TransitFile {
    stream_max_bytes: Option<u64>,
    stream_max_concurrent: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotationFile {
    interval: Option<String>,
    lease: Option<String>,
    max_failures: Option<u32>,
    postgres_allowed_hosts: Option<Vec<String>>,
}

/// Which key ceremonies may be driven without a token. The file spells
/// these the OpenBao way, as `disable_unauthed_rekey_endpoints` and
/// `disable_unauthed_generate_root_endpoints` (both `true` by default); the
/// default here is therefore "neither".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnauthedCeremonies {
    /// `sys/rekey/*` without a token.
    pub rekey: bool,
    /// `sys/generate-root/*` without a token.
    pub generate_root: bool,
}

/// The effective configuration. `Debug` shows the storage URL without its
/// password ([`redact_url`]).
#[derive(Clone, PartialEq)]
pub struct Config {
    /// Address to listen on.
    pub listen_addr: SocketAddr,
    /// Storage URL, password included when one was configured (from the URL,
    /// `storage_url_file` or `storage_password_file`).
    pub storage_url: Zeroizing<String>,
    /// tracing filter, e.g. "info".
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Skip mlockall.
    pub disable_mlock: bool,
    /// One log line per request (target `vault::access`).
    pub access_log: bool,
    /// Largest accepted request body.
    pub max_request_bytes: usize,
    /// TLS, if configured.
    pub tls: Option<TlsConfig>,
    /// Login lockout (brute-force protection).
    pub lockout: crate::auth::lockout::LockoutConfig,
    /// Read cache size in bytes (0: no cache).
    pub cache_max_bytes: u64,
    /// Secret rotation scheduling.
    pub rotation: crate::engines::RotationSettings,
    /// Transit stream limits (`[transit]`).
    pub streams: crate::engines::transit::StreamSettings,
    /// Key ceremonies allowed without a token (none by default).
    pub unauthed_ceremonies: UnauthedCeremonies,
    /// Listener timeouts and connection cap (`[listener]`).
    pub listener: crate::http::serve::ListenerLimits,
    /// Metrics settings (`[telemetry]`).
    pub telemetry: Telemetry,
    /// Built-in rate limits on logins and unseal (`[quotas]`).
    pub quotas: crate::quotas::BuiltinLimits,
    /// `[backup]`: snapshot size limit and scheduled backups.
    pub backup: crate::backup::Settings,
    /// `[audit] file_dirs`: where file audit devices may write (none by
    /// default; `vault-server dev` allows any place).
    pub audit_file_dirs: crate::audit::FileDirs,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen_addr", &self.listen_addr)
            .field("storage_url", &redact_url(&self.storage_url))
            .field("log_level", &self.log_level)
            .field("log_format", &self.log_format)
            .field("disable_mlock", &self.disable_mlock)
            .field("access_log", &self.access_log)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("tls", &self.tls)
            .field("lockout", &self.lockout)
            .field("cache_max_bytes", &self.cache_max_bytes)
            .field("rotation", &self.rotation)
            .field("streams", &self.streams)
            .field("unauthed_ceremonies", &self.unauthed_ceremonies)
            .field("listener", &self.listener)
            .field("telemetry", &self.telemetry)
            .field("quotas", &self.quotas)
            .field("backup", &self.backup)
            .field("audit_file_dirs", &self.audit_file_dirs)
            .finish()
    }
}

/// Command-line (and environment) overrides. `Debug` never shows the URL.
#[derive(Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen_addr: Option<String>,
    /// `--storage` / `VAULT_STORAGE_URL`.
    pub storage_url: Option<String>,
    /// `--storage-file` / `VAULT_STORAGE_URL_FILE`: the storage URL read from
    /// a file (Docker and Kubernetes secrets).
    pub storage_url_file: Option<PathBuf>,
    /// `--storage-password-file` / `VAULT_STORAGE_PASSWORD_FILE`: the
    /// PostgreSQL password read from a file, for a URL without one.
    pub storage_password_file: Option<PathBuf>,
    /// `--log-level`.
    pub log_level: Option<String>,
}

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overrides")
            .field("listen_addr", &self.listen_addr)
            .field("storage_url", &self.storage_url.as_deref().map(redact_url))
            .field("storage_url_file", &self.storage_url_file)
            .field("storage_password_file", &self.storage_password_file)
            .field("log_level", &self.log_level)
            .finish()
    }
}

/// Where the storage URL comes from, highest precedence first: a flag or
/// environment value (URL, then URL file), then the config file's
/// (`storage_url`, then `storage_url_file`), then the default. Giving both
/// forms at one level is an error: which one wins would be a guess.
fn storage_url(o: &Overrides, fc: &FileConfig) -> Result<Zeroizing<String>, ConfigError> {
    fn read(setting: &'static str, path: &Path) -> Result<Zeroizing<String>, ConfigError> {
        use std::io::Read as _;
        let failed = |source| ConfigError::SecretFile { setting, path: path.to_path_buf(), source };
        // A URL or a password is small: a larger file (or /dev/zero, a FIFO
        // never closed) is a mistake, refused before it fills memory.
        const MAX: u64 = 64 * 1024;
        let file = std::fs::File::open(path).map_err(failed)?;
        let meta = file.metadata().map_err(failed)?;
        if !meta.is_file() {
            return Err(ConfigError::Invalid(format!("{setting} {} is not a regular file", path.display())));
        }
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(MAX + 1).read_to_end(&mut bytes).map_err(failed)?;
        if bytes.len() as u64 > MAX {
            return Err(ConfigError::Invalid(format!("{setting} {} is larger than {MAX} bytes", path.display())));
        }
        let text = Zeroizing::new(String::from_utf8(std::mem::take(&mut *bytes)).map_err(|e| {
            // The bytes are secret: wipe them before reporting.
            let mut b = e.into_bytes();
            zeroize::Zeroize::zeroize(&mut b);
            ConfigError::Invalid(format!("{setting} {} is not UTF-8 text", path.display()))
        })?);
        // Files written by `echo` or editors end with a newline; a secret never does.
        let trimmed = text.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            return Err(ConfigError::Invalid(format!("{setting} {} is empty", path.display())));
        }
        Ok(Zeroizing::new(trimmed.to_owned()))
    }
    let url = match (&o.storage_url, &o.storage_url_file, &fc.storage_url, &fc.storage_url_file) {
        (Some(_), Some(_), _, _) => {
            return Err(ConfigError::Invalid(
                "give the storage URL once: --storage (VAULT_STORAGE_URL) or --storage-file (VAULT_STORAGE_URL_FILE)"
                    .into(),
            ));
        }
        (Some(u), None, _, _) => Zeroizing::new(u.clone()),
        (None, Some(p), _, _) => read("--storage-file (VAULT_STORAGE_URL_FILE)", p)?,
        (None, None, Some(_), Some(_)) => {
            return Err(ConfigError::Invalid("give storage_url or storage_url_file, not both".into()));
        }
        (None, None, Some(u), None) => Zeroizing::new(u.clone()),
        (None, None, None, Some(p)) => read("storage_url_file", p)?,
        (None, None, None, None) => Zeroizing::new(DEFAULT_STORAGE.to_owned()),
    };
    let (setting, password_file) = match (&o.storage_password_file, &fc.storage_password_file) {
        (Some(p), _) => ("--storage-password-file (VAULT_STORAGE_PASSWORD_FILE)", p),
        (None, Some(p)) => ("storage_password_file", p),
        (None, None) => return Ok(url),
    };
    let password = read(setting, password_file)?;
    with_password(&url, &password).map_err(|why| ConfigError::Invalid(format!("{setting}: {why}")))
}

/// Split `scheme://authority/rest` into (prefix up to `://`, authority, rest).
fn split_authority(url: &str) -> Option<(&str, &str, &str)> {
    let start = url.find("://")? + 3;
    let end = url[start..].find(['/', '?']).map_or(url.len(), |i| start + i);
    Some((&url[..start], &url[start..end], &url[end..]))
}

/// `postgres://user@host/db` + password → `postgres://user:password@host/db`
/// (the password percent-encoded: it may hold `@`, `/`, `:`).
fn with_password(url: &str, password: &str) -> Result<Zeroizing<String>, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("a password file applies to a postgres:// storage URL only".into());
    }
    let (prefix, authority, rest) = split_authority(url).ok_or("the storage URL has no host")?;
    let Some((user, host)) = authority.rsplit_once('@') else {
        return Err("the storage URL names no user (postgres://USER@host/db)".into());
    };
    if user.contains(':') {
        return Err("the storage URL already holds a password".into());
    }
    if user.is_empty() {
        return Err("the storage URL names no user (postgres://USER@host/db)".into());
    }
    if rest.contains("password=") {
        return Err("the storage URL already holds a password parameter".into());
    }
    let encoded =
        Zeroizing::new(percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC).to_string());
    Ok(Zeroizing::new(format!("{prefix}{user}:{}@{host}{rest}", encoded.as_str())))
}

/// The URL as it may be logged: a password in the user part or in a
/// `password=` parameter replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = match split_authority(url) {
        Some((prefix, authority, rest)) => match authority.rsplit_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{prefix}{user}:***@{host}{rest}")
            }
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    };
    // Query parameters (`?password=...&sslmode=...`).
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

impl Config {
    /// Load `file` (if any) and apply `overrides`.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let fc = match file {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                Self::parse_file(&text).map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })?
            }
        };
        let storage_url = storage_url(&overrides, &fc)?;
        let listen = overrides.listen_addr.or(fc.listen_addr).unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen_addr = listen
            .parse()
            .map_err(|_| ConfigError::Invalid(format!("listen_addr \"{listen}\" is not an IP:port address")))?;
        if !(storage_url.starts_with("sqlite:")
            || storage_url.starts_with("postgres://")
            || storage_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid(
                "storage_url must start with sqlite:, postgres:// or postgresql://".into(),
            ));
        }
        let max_request_bytes = fc.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        if max_request_bytes < 1024 {
            return Err(ConfigError::Invalid("max_request_bytes must be at least 1024".into()));
        }
        let lockout = Self::lockout(fc.lockout.unwrap_or_default())?;
        let rotation = Self::rotation(fc.rotation.unwrap_or_default())?;
        let streams = Self::streams(fc.transit.unwrap_or_default())?;
        let unauthed_ceremonies = UnauthedCeremonies {
            rekey: !fc.disable_unauthed_rekey_endpoints.unwrap_or(true),
            generate_root: !fc.disable_unauthed_generate_root_endpoints.unwrap_or(true),
        };
        let listener = Self::listener(fc.listener.unwrap_or_default())?;
        let telemetry = Telemetry {
            unauthenticated_metrics_access: fc
                .telemetry
                .and_then(|t| t.unauthenticated_metrics_access)
                .unwrap_or(false),
        };
        let quotas = Self::quotas(fc.quotas.unwrap_or_default())?;
        if let Some(t) = &fc.tls {
            if t.tls_require_and_verify_client_cert && t.tls_client_ca_file.is_none() {
                return Err(ConfigError::Invalid(
                    "tls.tls_require_and_verify_client_cert needs tls.tls_client_ca_file".into(),
                ));
            }
            if t.tls_require_and_verify_client_cert && t.tls_disable_client_certs {
                return Err(ConfigError::Invalid(
                    "tls.tls_require_and_verify_client_cert and tls.tls_disable_client_certs contradict each other"
                        .into(),
                ));
            }
        }
        let backup = Self::backup(fc.backup)?;
        let audit_file_dirs =
            crate::audit::FileDirs::from_config(fc.audit.and_then(|a| a.file_dirs).as_deref().unwrap_or_default())
                .map_err(ConfigError::Invalid)?;
        Ok(Config {
            audit_file_dirs,
            telemetry,
            quotas,
            backup,
            lockout,
            rotation,
            streams,
            listener,
            unauthed_ceremonies,
            cache_max_bytes: fc.cache_max_bytes.unwrap_or(crate::storage::DEFAULT_CACHE_BYTES),
            listen_addr,
            storage_url,
            log_level: overrides.log_level.or(fc.log_level).unwrap_or_else(|| "info".into()),
            log_format: fc.log_format.unwrap_or_default(),
            disable_mlock: fc.disable_mlock.unwrap_or(false),
            access_log: fc.access_log.unwrap_or(false),
            max_request_bytes,
            tls: fc.tls,
        })
    }

    fn lockout(f: LockoutFile) -> Result<crate::auth::lockout::LockoutConfig, ConfigError> {
        let mut c = crate::auth::lockout::LockoutConfig::default();
        let dur = |name: &str, v: Option<String>, into: &mut std::time::Duration| -> Result<(), ConfigError> {
            if let Some(v) = v {
                let secs = crate::logical::fields::parse_duration(&v).filter(|s| *s > 0).ok_or_else(|| {
                    ConfigError::Invalid(format!("lockout.{name} \"{v}\" is not a duration such as \"15m\""))
                })?;
                *into = std::time::Duration::from_secs(secs);
            }
            Ok(())
        };
        if let Some(t) = f.threshold {
            if t == 0 {
                return Err(ConfigError::Invalid("lockout.threshold must be at least 1".into()));
            }
            c.threshold = t;
        }
        dur("duration", f.duration, &mut c.duration)?;
        dur("counter_reset", f.counter_reset, &mut c.counter_reset)?;
        Ok(c)
    }

    fn streams(f: TransitFile) -> Result<crate::engines::transit::StreamSettings, ConfigError> {
        use crate::engines::transit::stream_defaults as d;
        let max_bytes = f.stream_max_bytes.unwrap_or(d::MAX_BYTES);
        if max_bytes == 0 {
            return Err(ConfigError::Invalid("transit.stream_max_bytes must be at least 1".into()));
        }
        let max_concurrent = f.stream_max_concurrent.unwrap_or(d::MAX_CONCURRENT);
        // tokio's semaphore holds at most usize::MAX >> 3 permits.
        if !(1..=1_000_000).contains(&max_concurrent) {
            return Err(ConfigError::Invalid("transit.stream_max_concurrent must be between 1 and 1000000".into()));
        }
        Ok(crate::engines::transit::StreamSettings::new(max_bytes, max_concurrent))
    }

    fn rotation(f: RotationFile) -> Result<crate::engines::RotationSettings, ConfigError> {
        let mut r = crate::engines::RotationSettings::default();
        let parse = |name: &str, v: &str| {
            crate::logical::fields::parse_duration(v).filter(|s| *s > 0).map(std::time::Duration::from_secs).ok_or_else(
                || ConfigError::Invalid(format!("rotation.{name} \"{v}\" is not a duration such as \"5s\"")),
            )
        };
        if let Some(v) = f.interval {
            r.interval = parse("interval", &v)?;
        }
        if let Some(v) = f.lease {
            r.lease = parse("lease", &v)?;
        }
        if r.lease < std::time::Duration::from_secs(3) {
            return Err(ConfigError::Invalid("rotation.lease must be at least 3s".into()));
        }
        // Upper bounds: these meet clocks (timer arithmetic must not overflow).
        if r.interval > std::time::Duration::from_secs(3600) {
            return Err(ConfigError::Invalid("rotation.interval must be at most 1h".into()));
        }
        if r.lease > std::time::Duration::from_secs(86_400) {
            return Err(ConfigError::Invalid("rotation.lease must be at most 24h".into()));
        }
        if let Some(n) = f.max_failures {
            if !(1..=1000).contains(&n) {
                return Err(ConfigError::Invalid("rotation.max_failures must be between 1 and 1000".into()));
            }
            r.max_failures = n;
        }
        if let Some(list) = f.postgres_allowed_hosts {
            let parsed = crate::engines::pg_role::HostAllowList::parse(&list)
                .map_err(|e| ConfigError::Invalid(format!("rotation.{e}")))?;
            r.postgres_allowed_hosts = std::sync::Arc::new(parsed);
        }
        Ok(r)
    }

    /// `[listener]`: every timeout must be positive (there is no "never":
    /// an unbounded wait is what these settings exist to prevent).
    fn listener(f: ListenerFile) -> Result<crate::http::serve::ListenerLimits, ConfigError> {
        let mut l = crate::http::serve::ListenerLimits::default();
        let dur = |name: &str, v: Option<String>, into: &mut std::time::Duration| -> Result<(), ConfigError> {
            if let Some(v) = v {
                let secs = crate::logical::fields::parse_duration(&v).filter(|s| *s > 0).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "listener.{name} \"{v}\" is not a positive duration such as \"10s\" (whole seconds)"
                    ))
                })?;
                *into = std::time::Duration::from_secs(secs);
            }
            Ok(())
        };
        dur("http_read_header_timeout", f.http_read_header_timeout, &mut l.read_header_timeout)?;
        dur("http_read_timeout", f.http_read_timeout, &mut l.read_timeout)?;
        dur("http_idle_timeout", f.http_idle_timeout, &mut l.idle_timeout)?;
        dur("tls_handshake_timeout", f.tls_handshake_timeout, &mut l.tls_handshake_timeout)?;
        if let Some(n) = f.max_connections {
            if n == 0 || n > 1_000_000 {
                return Err(ConfigError::Invalid("listener.max_connections must be between 1 and 1000000".into()));
            }
            l.max_connections = n;
        }
        if let Some(n) = f.max_request_bytes_in_flight {
            // At least one full request; below 4 TiB so it counts in u32 KiB permits.
            if !(1024 * 1024..=(1usize << 42)).contains(&n) {
                return Err(ConfigError::Invalid(
                    "listener.max_request_bytes_in_flight must be between 1 MiB and 4 TiB".into(),
                ));
            }
            l.max_request_bytes_in_flight = n;
        }
        Ok(l)
    }

    /// `[quotas]`: a rate of 0 turns a limit off; otherwise it must be a
    /// finite number of requests per second, and the burst at least 1.
    fn quotas(f: QuotasFile) -> Result<crate::quotas::BuiltinLimits, ConfigError> {
        let mut q = crate::quotas::BuiltinLimits::default();
        let rate = |name: &str, v: Option<f64>, into: &mut f64| -> Result<(), ConfigError> {
            if let Some(v) = v {
                if !v.is_finite() || !(0.0..=1_000_000.0).contains(&v) || (v > 0.0 && v < 0.000_001) {
                    return Err(ConfigError::Invalid(format!(
                        "quotas.{name} must be 0 (off) or between 0.000001 and 1000000 requests per second"
                    )));
                }
                *into = v;
            }
            Ok(())
        };
        let burst = |name: &str, v: Option<u32>, into: &mut u32| -> Result<(), ConfigError> {
            if let Some(v) = v {
                if !(1..=1_000_000).contains(&v) {
                    return Err(ConfigError::Invalid(format!("quotas.{name} must be between 1 and 1000000")));
                }
                *into = v;
            }
            Ok(())
        };
        rate("login_rate", f.login_rate, &mut q.login.rate)?;
        burst("login_burst", f.login_burst, &mut q.login.burst)?;
        rate("unseal_rate", f.unseal_rate, &mut q.unseal.rate)?;
        burst("unseal_burst", f.unseal_burst, &mut q.unseal.burst)?;
        for (name, l) in [("login", q.login), ("unseal", q.unseal)] {
            if !l.valid() {
                return Err(ConfigError::Invalid(format!(
                    "quotas.{name}_burst / quotas.{name}_rate (the time a full burst takes to come back) must be at most {} days",
                    crate::quotas::rule::MAX_SPAN.as_secs() / 86_400
                )));
            }
        }
        Ok(q)
    }

    /// `[backup]`: scheduled when `dir` and `interval` are given (one without
    /// the other is a mistake); retention keeps at least today's newest.
    fn backup(f: Option<BackupFile>) -> Result<crate::backup::Settings, ConfigError> {
        let mut s = crate::backup::Settings::default();
        let Some(f) = f else { return Ok(s) };
        if let Some(n) = f.max_snapshot_bytes {
            if !(1024 * 1024..=(1u64 << 40)).contains(&n) {
                return Err(ConfigError::Invalid("backup.max_snapshot_bytes must be between 1 MiB and 1 TiB".into()));
            }
            s.max_snapshot_bytes = n;
        }
        let (dir, interval) = match (f.dir, f.interval) {
            (None, None) => return Ok(s),
            (Some(d), Some(i)) => (d, i),
            _ => return Err(ConfigError::Invalid("backup.dir and backup.interval go together".into())),
        };
        let secs = crate::logical::fields::parse_duration(&interval)
            .filter(|s| (1..=366 * 86_400).contains(s))
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "backup.interval \"{interval}\" is not a duration from 1s to 366d such as \"24h\""
                ))
            })?;
        let keep_daily = f.keep_daily.unwrap_or(30);
        let keep_monthly = f.keep_monthly.unwrap_or(12);
        if !(1..=36_500).contains(&keep_daily) || keep_monthly > 12_000 {
            return Err(ConfigError::Invalid(
                "backup.keep_daily must be between 1 and 36500, backup.keep_monthly at most 12000".into(),
            ));
        }
        s.schedule = Some(crate::backup::schedule::Schedule {
            dir,
            interval: std::time::Duration::from_secs(secs),
            keep_daily,
            keep_monthly,
        });
        Ok(s)
    }

    fn parse_file(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn telemetry_is_off_by_default_and_strict() {
        assert!(!Config::load(None, Overrides::default()).unwrap().telemetry.unauthenticated_metrics_access);
        let f = write("[telemetry]\nunauthenticated_metrics_access = true\n");
        assert!(Config::load(Some(f.path()), Overrides::default()).unwrap().telemetry.unauthenticated_metrics_access);
        // Vault's other telemetry keys (statsd, dogstatsd...) are not served: refused, not ignored.
        let f = write("[telemetry]\nstatsd_address = \"127.0.0.1:8125\"\n");
        assert!(matches!(Config::load(Some(f.path()), Overrides::default()), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn defaults() {
        let c = Config::load(None, Overrides::default()).unwrap();
        assert_eq!(c.listen_addr.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.storage_url.as_str(), DEFAULT_STORAGE);
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.tls.is_none());
        assert_eq!(c.unauthed_ceremonies, UnauthedCeremonies { rekey: false, generate_root: false });
        // Vault's listener defaults.
        let l = c.listener;
        assert_eq!(
            (l.read_header_timeout.as_secs(), l.read_timeout.as_secs(), l.idle_timeout.as_secs()),
            (10, 30, 300)
        );
        assert_eq!((l.max_connections, l.tls_handshake_timeout.as_secs()), (4096, 10));
        let f =
            write("[listener]\nhttp_read_header_timeout = \"2s\"\nhttp_idle_timeout = \"1m\"\nmax_connections = 8\n");
        let l = Config::load(Some(f.path()), Overrides::default()).unwrap().listener;
        assert_eq!((l.read_header_timeout.as_secs(), l.idle_timeout.as_secs(), l.max_connections), (2, 60, 8));
    }

    #[test]
    fn audit_files_go_nowhere_unless_directories_are_listed() {
        let c = Config::load(None, Overrides::default()).unwrap();
        assert_eq!(c.audit_file_dirs, crate::audit::FileDirs::default());
        let dir = tempfile::tempdir().unwrap();
        let f = write(&format!("[audit]\nfile_dirs = [{:?}]\n", dir.path().display().to_string()));
        let c = Config::load(Some(f.path()), Overrides::default()).unwrap();
        assert_eq!(format!("{:?}", c.audit_file_dirs), format!("[{:?}]", dir.path()));
        let f = write("[audit]\nfile_dirs = [\"/nonexistent/vault-audit\"]\n");
        let e = Config::load(Some(f.path()), Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("audit.file_dirs") && e.contains("/nonexistent/vault-audit"), "{e}");
        let f = write("[audit]\nfile_dir = \"/tmp\"\n");
        assert!(matches!(Config::load(Some(f.path()), Overrides::default()), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn unauthed_ceremonies_are_opt_in_one_by_one() {
        let f = write("disable_unauthed_generate_root_endpoints = false\n");
        let c = Config::load(Some(f.path()), Overrides::default()).unwrap();
        assert_eq!(c.unauthed_ceremonies, UnauthedCeremonies { rekey: false, generate_root: true });
        let f = write("disable_unauthed_rekey_endpoints = false\ndisable_unauthed_generate_root_endpoints = true\n");
        let c = Config::load(Some(f.path()), Overrides::default()).unwrap();
        assert_eq!(c.unauthed_ceremonies, UnauthedCeremonies { rekey: true, generate_root: false });
        let f = write("disable_unauthed_rekey_endpoints = \"no\"\n");
        assert!(matches!(Config::load(Some(f.path()), Overrides::default()), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn file_and_overrides() {
        let f = write(
            "listen_addr = \"127.0.0.1:9000\"\nstorage_url = \"postgres://u@localhost/v\"\nlog_format = \"json\"\n\
             [tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
        );
        let c = Config::load(Some(f.path()), Overrides::default()).unwrap();
        assert_eq!(c.listen_addr.port(), 9000);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.tls.unwrap().cert_file, PathBuf::from("c.pem"));
        let f2 = write("[lockout]\nthreshold = 3\nduration = \"1h\"\n");
        let c2 = Config::load(Some(f2.path()), Overrides::default()).unwrap();
        assert_eq!((c2.lockout.threshold, c2.lockout.duration.as_secs()), (3, 3600));
        let o = Overrides { listen_addr: Some("127.0.0.1:9001".into()), ..Default::default() };
        assert_eq!(Config::load(Some(f.path()), o).unwrap().listen_addr.port(), 9001);
    }

    #[test]
    fn errors_are_clear() {
        let f = write("listen_addr = \"nope\"\n");
        let e = Config::load(Some(f.path()), Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("listen_addr"), "{e}");
        let f = write("unknown_key = 1\n");
        let e = Config::load(Some(f.path()), Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("unknown"), "{e}");
        let f = write("storage_url = \"mysql://x\"\n");
        assert!(Config::load(Some(f.path()), Overrides::default()).is_err());
        let f = write("[lockout]\nthreshold = 0\n");
        assert!(Config::load(Some(f.path()), Overrides::default()).unwrap_err().to_string().contains("threshold"));
        let f = write("[lockout]\nduration = \"soon\"\n");
        assert!(
            Config::load(Some(f.path()), Overrides::default()).unwrap_err().to_string().contains("lockout.duration")
        );
        let f = write("[listener]\nhttp_read_header_timeout = \"0s\"\n");
        let e = Config::load(Some(f.path()), Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("listener.http_read_header_timeout"), "{e}");
        let f = write("[listener]\nmax_connections = 0\n");
        assert!(
            Config::load(Some(f.path()), Overrides::default()).unwrap_err().to_string().contains("max_connections")
        );
        let f = write("[listener]\nhttp_idle_timeout = \"soon\"\n");
        assert!(Config::load(Some(f.path()), Overrides::default()).is_err());
        let f = write("listen_addr = [\n");
        assert!(matches!(Config::load(Some(f.path()), Overrides::default()), Err(ConfigError::Parse { .. })));
        assert!(matches!(
            Config::load(Some(Path::new("/nonexistent/x.toml")), Overrides::default()),
            Err(ConfigError::Read { .. })
        ));
    }
}

#[cfg(test)]
mod storage_secrets {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn url_from_a_file_flag_or_config() {
        let url = file("postgres://vault:pw@db:5432/vault\n");
        let o = Overrides { storage_url_file: Some(url.path().into()), ..Default::default() };
        let c = Config::load(None, o).unwrap();
        assert_eq!(c.storage_url.as_str(), "postgres://vault:pw@db:5432/vault", "trailing newline trimmed");
        let cfg = file(&format!("storage_url_file = \"{}\"\n", url.path().display()));
        let c = Config::load(Some(cfg.path()), Overrides::default()).unwrap();
        assert_eq!(c.storage_url.as_str(), "postgres://vault:pw@db:5432/vault");
        // A flag beats the file's setting.
        let o = Overrides { storage_url: Some("sqlite://x.db".into()), ..Default::default() };
        assert_eq!(Config::load(Some(cfg.path()), o).unwrap().storage_url.as_str(), "sqlite://x.db");
        // Both forms at one level: refused.
        let o = Overrides {
            storage_url: Some("sqlite://x.db".into()),
            storage_url_file: Some(url.path().into()),
            ..Default::default()
        };
        assert!(Config::load(None, o).unwrap_err().to_string().contains("once"));
        // Unreadable and empty files name the setting, not a value.
        let o = Overrides { storage_url_file: Some("/nonexistent/url".into()), ..Default::default() };
        let e = Config::load(None, o).unwrap_err().to_string();
        assert!(e.contains("VAULT_STORAGE_URL_FILE") && e.contains("/nonexistent/url"), "{e}");
        let empty = file("\n");
        let o = Overrides { storage_url_file: Some(empty.path().into()), ..Default::default() };
        assert!(Config::load(None, o).unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn secret_files_are_bounded_regular_files() {
        // Larger than any URL or password: refused without reading it all.
        let big = file(&"x".repeat(64 * 1024 + 1));
        let dir = tempfile::tempdir().unwrap();
        for (path, want) in [
            (big.path().to_path_buf(), "larger than 65536 bytes"),
            (dir.path().to_path_buf(), "not a regular file"),
            // Would never end if it were read.
            (PathBuf::from("/dev/zero"), "not a regular file"),
        ] {
            let o = Overrides {
                storage_url: Some("postgres://vault@db/vault".into()),
                storage_password_file: Some(path.clone()),
                ..Default::default()
            };
            let e = Config::load(None, o).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("--storage-password-file"), "{}: {e}", path.display());
            let o = Overrides { storage_url_file: Some(path.clone()), ..Default::default() };
            let e = Config::load(None, o).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("--storage-file"), "{}: {e}", path.display());
        }
    }

    #[test]
    fn password_file_joins_the_url() {
        let pw = file("p@ss:w/rd\n");
        let o = Overrides {
            storage_url: Some("postgres://vault@db:5432/vault?sslmode=disable".into()),
            storage_password_file: Some(pw.path().into()),
            ..Default::default()
        };
        let c = Config::load(None, o).unwrap();
        assert_eq!(c.storage_url.as_str(), "postgres://vault:p%40ss%3Aw%2Frd@db:5432/vault?sslmode=disable");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("p%40ss") && dbg.contains("vault:***@db"), "{dbg}");
        for url in
            ["postgres://vault:x@db/vault", "postgres://db/vault", "sqlite://x.db", "postgres://u@db/v?password=x"]
        {
            let o = Overrides {
                storage_url: Some(url.into()),
                storage_password_file: Some(pw.path().into()),
                ..Default::default()
            };
            let e = Config::load(None, o).unwrap_err().to_string();
            assert!(e.contains("VAULT_STORAGE_PASSWORD_FILE") && !e.contains("p@ss"), "{url}: {e}");
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("postgres://u:secret@h:1/db"), "postgres://u:***@h:1/db");
        assert_eq!(
            redact_url("postgres://u@h/db?password=secret&sslmode=require"),
            "postgres://u@h/db?password=***&sslmode=require"
        );
        assert_eq!(redact_url("sqlite://./vault-data/vault.db"), "sqlite://./vault-data/vault.db");
        assert_eq!(redact_url("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        let o = Overrides { storage_url: Some("postgres://u:secret@h/db".into()), ..Default::default() };
        assert!(!format!("{o:?}").contains("secret"));
    }
}

#[cfg(test)]
mod rotation_settings {
    use super::*;
    use std::io::Write;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        Config::load(Some(f.path()), Overrides::default())
    }

    #[test]
    fn rotation_defaults_and_keys() {
        let c = Config::load(None, Overrides::default()).unwrap();
        assert_eq!(c.rotation.max_failures, crate::engines::DEFAULT_MAX_FAILURES);
        assert!(c.rotation.postgres_allowed_hosts.is_empty(), "no PostgreSQL host is allowed by default");
        let c = load("[rotation]\nmax_failures = 3\npostgres_allowed_hosts = [\"db.internal:5432\", \"10.0.0.0/8\"]\n")
            .unwrap();
        assert_eq!(c.rotation.max_failures, 3);
        assert!(c.rotation.postgres_allowed_hosts.allows("db.internal", 5432));
        assert!(c.rotation.postgres_allowed_hosts.allows("10.2.3.4", 6000));
        assert!(!c.rotation.postgres_allowed_hosts.allows("127.0.0.1", 5432));
        for (text, needle) in [
            ("[rotation]\nmax_failures = 0\n", "max_failures"),
            ("[rotation]\nmax_failures = 1001\n", "max_failures"),
            ("[rotation]\npostgres_allowed_hosts = [\"bad host\"]\n", "postgres_allowed_hosts"),
            ("[rotation]\ninterval = \"2h\"\n", "interval"),
            ("[rotation]\nlease = \"100000000000d\"\n", "lease"),
            ("[rotation]\nlease = \"2d\"\n", "lease"),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}

#[cfg(test)]
mod example_file {
    /// The example shipped in `examples/vault.toml` must stay valid.
    #[test]
    fn example_config_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/vault.toml");
        let c = super::Config::load(Some(&path), super::Overrides::default()).unwrap();
        assert_eq!(c.listen_addr.to_string(), super::DEFAULT_LISTEN);
        assert!(c.tls.is_none());
    }
}
