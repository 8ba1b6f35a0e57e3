//! TLS through rustls (ring provider: no C toolchain beyond what `ring`
//! needs, and the only rustls provider in the tree, so no ambiguity at
//! start). Handshakes run in each connection's task, under
//! `tls_handshake_timeout` (`serve.rs`), so a slow client cannot stall the
//! accept loop.
//!
//! TLS 1.2 and 1.3 only (rustls has nothing older). The certificate and
//! key are served through [`ReloadingCert`], which a SIGHUP swaps
//! atomically ([`CertReloader::reload`]): connections already established
//! keep the session they negotiated, new handshakes get the new pair, and a
//! pair that fails to load leaves the old one in place. Client
//! certificates are optional (Vault's `tls_client_ca_file`,
//! `tls_require_and_verify_client_cert`, `tls_disable_client_certs`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// Kept here for callers that name it `http::tls::PeerAddr`.
pub use super::serve::PeerAddr;

/// TLS set-up failures. None carries key material: files are named, their
/// content never shown.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or parsed.
    #[error("cannot load TLS certificate from {0}")]
    Cert(String),
    /// The key file could not be read or parsed (its content is never printed).
    #[error("cannot load TLS private key from {0}")]
    Key(String),
    /// rustls rejected the pair.
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// Install ring as rustls' process-wide provider (idempotent).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Client-certificate policy of a listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCerts {
    /// CAs client certificates must chain to; `None`: none asked for.
    pub ca_file: Option<PathBuf>,
    /// A handshake without a valid client certificate fails.
    pub required: bool,
    /// Never ask for one (even with a CA file).
    pub disabled: bool,
}

/// A rustls server config from PEM files (TLS 1.2 and 1.3, HTTP/1.1 and h2 by ALPN).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    Ok(listener(cert, key, &ClientCerts::default())?.0)
}

/// The server config of a TLS listener and the handle that reloads its
/// certificate.
pub fn listener(
    cert: &Path,
    key: &Path,
    clients: &ClientCerts,
) -> Result<(Arc<rustls::ServerConfig>, CertReloader), TlsError> {
    install_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = Arc::new(ReloadingCert(RwLock::new(Arc::new(load_pair(cert, key, &provider)?))));
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (&clients.ca_file, clients.disabled) {
        (Some(ca), false) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| TlsError::Config(format!("client CA in {}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if clients.required { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Config(e.to_string()))?)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(resolver.clone());
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let reloader = CertReloader { cert: cert.to_path_buf(), key: key.to_path_buf(), provider, resolver };
    Ok((Arc::new(cfg), reloader))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|_| TlsError::Cert(path.display().to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Cert(path.display().to_string()));
    }
    Ok(certs)
}

/// Load a certificate chain and its key, checking that they belong together.
fn load_pair(cert: &Path, key: &Path, provider: &rustls::crypto::CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|_| TlsError::Key(key.display().to_string()))?;
    // rustls' errors name the problem (mismatch, unsupported key type), never key bytes.
    CertifiedKey::from_der(certs, key_der, provider).map_err(|e| TlsError::Config(e.to_string()))
}

/// The certificate served to new handshakes; swapped whole on reload.
#[derive(Debug)]
pub struct ReloadingCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Reloads a listener's certificate and key from their files.
#[derive(Debug, Clone)]
pub struct CertReloader {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    resolver: Arc<ReloadingCert>,
}

impl CertReloader {
    /// Read the files again and serve the new pair to new handshakes. On
    /// failure the pair in use stays and the error says why (which file,
    /// never its content).
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = load_pair(&self.cert, &self.key, &self.provider)?;
        *self.resolver.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(pair);
        Ok(())
    }

    /// [`reload`](Self::reload), logged (what the SIGHUP handler calls).
    pub fn reload_logged(&self) {
        match self.reload() {
            Ok(()) => tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded"),
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate reload failed; the previous certificate stays in use")
            }
        }
    }
}
