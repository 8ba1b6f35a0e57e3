//! TLS through rustls (ring provider: no C toolchain beyond what `ring`
//! needs, and the only rustls provider in the tree, so no ambiguity at
//! start). Handshakes run in each connection's task, under
//! `tls_handshake_timeout` (`serve.rs`), so a slow client cannot stall the
//! accept loop.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Kept here for callers that name it `http::tls::PeerAddr`.
pub use super::serve::PeerAddr;

/// TLS set-up failures.
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

/// A rustls server config from PEM files (TLS 1.2 and 1.3, HTTP/1.1 and h2 by ALPN).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    install_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|_| TlsError::Cert(cert.display().to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Cert(cert.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|_| TlsError::Key(key.display().to_string()))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
