//! Server configuration: a TOML file, overridden by command-line flags.
//!
//! ```toml
//! listen_addr  = "127.0.0.1:8200"
//! storage_url  = "sqlite://./vault-data/vault.db"   # or postgres://user@host/db
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
//! [tls]
//! cert_file = "/etc/vault/tls/cert.pem"
//! key_file  = "/etc/vault/tls/key.pem"
//!
//! cache_max_bytes = 67108864   # read cache of stored (encrypted) records; 0 disables
//!
//! [rotation]             # KV v2 secret rotation (docs/kv-rotation.md)
//! interval = "5s"        # how often due rotations are looked for
//! lease = "60s"          # how long a server's claim on a rotation lasts
//! max_failures = 10      # consecutive failures before a rotation is suspended
//! postgres_allowed_hosts = ["db.internal:5432", "10.0.0.0/8"]  # default: none
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
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    disable_mlock: Option<bool>,
    access_log: Option<bool>,
    max_request_bytes: Option<usize>,
    tls: Option<TlsConfig>,
    lockout: Option<LockoutFile>,
    cache_max_bytes: Option<u64>,
    rotation: Option<RotationFile>,
    disable_unauthed_rekey_endpoints: Option<bool>,
    disable_unauthed_generate_root_endpoints: Option<bool>,
    listener: Option<ListenerFile>,
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

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on.
    pub listen_addr: SocketAddr,
    /// Storage URL.
    pub storage_url: String,
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
    /// Key ceremonies allowed without a token (none by default).
    pub unauthed_ceremonies: UnauthedCeremonies,
    /// Listener timeouts and connection cap (`[listener]`).
    pub listener: crate::http::serve::ListenerLimits,
}

/// Command-line overrides.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen_addr: Option<String>,
    /// `--storage`.
    pub storage_url: Option<String>,
    /// `--log-level`.
    pub log_level: Option<String>,
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
        let listen = overrides.listen_addr.or(fc.listen_addr).unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen_addr = listen
            .parse()
            .map_err(|_| ConfigError::Invalid(format!("listen_addr \"{listen}\" is not an IP:port address")))?;
        let storage_url = overrides.storage_url.or(fc.storage_url).unwrap_or_else(|| DEFAULT_STORAGE.into());
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
        let unauthed_ceremonies = UnauthedCeremonies {
            rekey: !fc.disable_unauthed_rekey_endpoints.unwrap_or(true),
            generate_root: !fc.disable_unauthed_generate_root_endpoints.unwrap_or(true),
        };
        let listener = Self::listener(fc.listener.unwrap_or_default())?;
        Ok(Config {
            lockout,
            rotation,
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
    fn defaults() {
        let c = Config::load(None, Overrides::default()).unwrap();
        assert_eq!(c.listen_addr.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.storage_url, DEFAULT_STORAGE);
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
