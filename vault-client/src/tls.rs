//! TLS settings: the CA bundle given with `VAULT_CACERT`, the client
//! identity of `VAULT_CLIENT_CERT`/`VAULT_CLIENT_KEY`, and the one case where
//! this client trusts more than WebPKI path validation does.
//!
//! # Self-signed certificates that are their own CA
//!
//! `openssl req -x509 -newkey ... -subj /CN=host -addext subjectAltName=...`
//! makes a certificate with `basicConstraints = CA:TRUE` (OpenSSL's default
//! for `req -x509`). Servers are commonly run with such a certificate and
//! clients given the same file as their CA bundle; curl and Vault's Go CLI
//! accept it. WebPKI (rustls) refuses it: a CA certificate may not be used as
//! the server's own (end-entity) certificate (`CaUsedAsEndEntity`).
//!
//! [`PinnedCaVerifier`] accepts it, and nothing more: when the standard
//! verifier fails with exactly that error, the server's certificate is
//! accepted if it is byte-for-byte one of the certificates of the bundle the
//! user told us to trust, and it is valid for the name we connected to. The
//! validity period has already been checked by then (WebPKI checks it before
//! the basic constraints that raise `CaUsedAsEndEntity`), and the handshake
//! signatures are still verified with the crypto provider against that
//! certificate's key, so the peer must hold its private key. Any other
//! failure (unknown issuer, expired, wrong name, ...) is reported as is.
//!
//! Names are matched against the subjectAltName extension only (WebPKI,
//! like Go's TLS stack that Vault's CLI uses, ignores the Common Name): a
//! certificate made with `-subj /CN=vault.example` alone is refused with
//! "certificate not valid for name"; add `-addext
//! "subjectAltName=DNS:vault.example,IP:127.0.0.1"`.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A client certificate chain and its private key, PEM (mutual TLS).
#[derive(Clone)]
pub(crate) struct ClientIdentity {
    pub(crate) cert_pem: Vec<u8>,
    pub(crate) key_pem: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_pem", &format!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl ClientIdentity {
    /// The certificate chain (leaf first) and the key, checked.
    fn parse(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let certs = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("invalid client certificate PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Config("the client certificate PEM holds no certificate".into()));
        }
        // The error never quotes the key (pki-types reports only the PEM structure).
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|_| Error::Config("the client key PEM holds no usable private key".into()))?;
        Ok((certs, key))
    }

    /// The identity in reqwest's form (used when no CA bundle is given, so
    /// reqwest keeps the platform's roots).
    pub(crate) fn to_reqwest(&self) -> Result<reqwest::Identity> {
        // Validate first for a precise message; reqwest wants one PEM buffer.
        self.parse()?;
        let mut both = Zeroizing::new(Vec::with_capacity(self.cert_pem.len() + self.key_pem.len() + 1));
        both.extend_from_slice(&self.key_pem);
        both.push(b'\n');
        both.extend_from_slice(&self.cert_pem);
        reqwest::Identity::from_pem(&both)
            .map_err(|_| Error::Config("the client certificate and key could not be used".into()))
    }
}

/// The certificates of a PEM bundle; an error if it holds none.
pub(crate) fn parse_bundle(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("invalid CA certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Config("the CA certificate PEM holds no certificate".into()));
    }
    Ok(certs)
}

/// A rustls client configuration trusting only the certificates of
/// `ca_pem` (see the module documentation for self-signed CA certificates),
/// presenting `identity` if given.
pub(crate) fn client_config(ca_pem: &[u8], identity: Option<&ClientIdentity>) -> Result<rustls::ClientConfig> {
    let certs = parse_bundle(ca_pem)?;
    let provider =
        CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut roots = RootCertStore::empty();
    for c in &certs {
        roots.add(c.clone()).map_err(|e| Error::Config(format!("unusable CA certificate: {e}")))?;
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Config(format!("cannot build the certificate verifier: {e}")))?;
    let verifier = PinnedCaVerifier { inner, pinned: certs };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS configuration: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let (chain, key) = id.parse()?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Config(format!("unusable client certificate or key: {e}")))?
        }
    };
    // What reqwest itself offers (HTTP/2 and HTTP/1.1).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// WebPKI verification, plus exactly one exception: a server certificate
/// that is itself a CA certificate is accepted when it is one of the pinned
/// certificates (byte for byte) and valid for the server name.
#[derive(Debug)]
pub(crate) struct PinnedCaVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

/// Whether rustls' error is WebPKI's `CaUsedAsEndEntity`. rustls passes that
/// one on as an opaque `Other` error; WebPKI displays its errors by variant
/// name. The TLS tests (`tests/tests/client_transport.rs`) fail if this ever
/// stops matching.
fn is_ca_used_as_end_entity(e: &rustls::Error) -> bool {
    matches!(e, rustls::Error::InvalidCertificate(CertificateError::Other(o)) if o.to_string() == "CaUsedAsEndEntity")
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(e) if is_ca_used_as_end_entity(&e) && self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                // The name check still applies.
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether `e` (or an error in its source chain) is a TLS failure, such as
/// a refused certificate: retrying would only fail again.
pub(crate) fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        // io::Error's `source` skips the error it wraps (and the connector
        // wraps io errors in io errors): look inside.
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            cur = Some(inner);
            continue;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_are_found_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        assert!(is_tls_failure(&io));
        // As the connector reports it: an io error inside an io error.
        let tls = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        let nested = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        assert!(is_tls_failure(&nested));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(!is_tls_failure(&plain));
    }

    #[test]
    fn identity_debug_is_redacted_and_bad_keys_are_config_errors() {
        let id = ClientIdentity { cert_pem: b"nope".to_vec(), key_pem: Zeroizing::new(b"KEYSECRET".to_vec()) };
        assert!(!format!("{id:?}").contains("KEYSECRET"));
        let e = id.parse().unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(!format!("{e} {e:?}").contains("KEYSECRET"));
    }
}
