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
//! user told us to trust, it is valid for the name we connected to, and its
//! extendedKeyUsage allows a TLS server (absent, or listing serverAuth). The
//! validity period has already been checked by then (WebPKI checks it before
//! the basic constraints that raise `CaUsedAsEndEntity`); the EKU is what
//! WebPKI checks after them, so it is checked here (rustls-webpki 0.103,
//! `check_issuer_independent_properties`: validity, basic constraints, EKU;
//! the issuer's signature needs no check for a certificate trusted byte for
//! byte, and no CRLs are configured). The handshake signatures are still
//! verified with the crypto provider against that certificate's key, so the
//! peer must hold its private key. Any other failure (unknown issuer,
//! expired, wrong name, ...) is reported as is.
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
                // And the purpose: a pinned clientAuth-only certificate is
                // no server's.
                match extended_key_usages(end_entity.as_ref()) {
                    None => Err(CertificateError::BadEncoding.into()),
                    Some(Some(purposes)) if !purposes.contains(&ID_KP_SERVER_AUTH) => {
                        Err(CertificateError::InvalidPurpose.into())
                    }
                    Some(_) => Ok(ServerCertVerified::assertion()),
                }
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

/// OID 2.5.29.37 (extKeyUsage), DER contents.
const ID_CE_EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
/// OID 1.3.6.1.5.5.7.3.1 (id-kp-serverAuth), DER contents.
const ID_KP_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];

/// One DER element of `input`: (tag, contents, what follows). `None` when
/// malformed. Low tag numbers and definite lengths only: what DER
/// certificates use.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// The key purpose OIDs of a DER certificate's extendedKeyUsage extension:
/// `Some(None)` without one, `None` when the certificate cannot be read.
/// (webpki parses the extension but does not expose it; an empty list
/// allows nothing, as for webpki.)
fn extended_key_usages(cert: &[u8]) -> Option<Option<Vec<&[u8]>>> {
    const SEQUENCE: u8 = 0x30;
    let Some((SEQUENCE, certificate, _)) = der(cert) else { return None };
    let Some((SEQUENCE, mut tbs, _)) = der(certificate) else { return None };
    // version, serial, signature, issuer, validity, subject, key, unique
    // IDs: skipped up to the extensions ([3] EXPLICIT), if any.
    let mut extensions = loop {
        if tbs.is_empty() {
            return Some(None);
        }
        let (tag, contents, rest) = der(tbs)?;
        tbs = rest;
        if tag == 0xa3 {
            let Some((SEQUENCE, list, _)) = der(contents) else { return None };
            break list;
        }
    };
    while !extensions.is_empty() {
        let Some((SEQUENCE, extension, rest)) = der(extensions) else { return None };
        extensions = rest;
        let Some((0x06, oid, rest)) = der(extension) else { return None };
        if oid != ID_CE_EXT_KEY_USAGE {
            continue;
        }
        // critical BOOLEAN DEFAULT FALSE, then the OCTET STRING.
        let (mut tag, mut value, after) = der(rest)?;
        if tag == 0x01 {
            (tag, value, _) = der(after)?;
        }
        if tag != 0x04 {
            return None;
        }
        let Some((SEQUENCE, mut oids, _)) = der(value) else { return None };
        let mut purposes = Vec::new();
        while !oids.is_empty() {
            let Some((0x06, oid, next)) = der(oids) else { return None };
            purposes.push(oid);
            oids = next;
        }
        return Some(Some(purposes));
    }
    Some(None)
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

    /// A self-signed certificate (OpenSSL's `req -x509` defaults: CA:TRUE)
    /// for IP 127.0.0.1 with `extra` `-addext` options, as DER.
    fn openssl_cert(extra: &[&str]) -> CertificateDer<'static> {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("c.key"));
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=eku-test", "-addext", "subjectAltName=IP:127.0.0.1"]);
        for e in extra {
            cmd.args(["-addext", e]);
        }
        let out = cmd.arg("-keyout").arg(&key).arg("-out").arg(&cert).output().expect("openssl is needed");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        CertificateDer::from_pem_file(&cert).unwrap()
    }

    /// The verifier `client_config` builds, with `cert` as the bundle.
    fn verify_pinned(cert: &CertificateDer<'static>) -> Result<ServerCertVerified, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        let verifier = PinnedCaVerifier { inner, pinned: vec![cert.clone()] };
        let name = ServerName::try_from("127.0.0.1").unwrap();
        verifier.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
    }

    #[test]
    fn pinned_self_signed_certificates_need_a_server_purpose() {
        // No EKU, or one listing serverAuth: a server certificate.
        for extra in [&[][..], &["extendedKeyUsage=serverAuth"], &["extendedKeyUsage=clientAuth,serverAuth"]] {
            let cert = openssl_cert(extra);
            assert!(verify_pinned(&cert).is_ok(), "{extra:?}");
        }
        // clientAuth only (critical or not), or codeSigning: refused.
        for extra in [
            &["extendedKeyUsage=clientAuth"][..],
            &["extendedKeyUsage=critical,clientAuth"],
            &["extendedKeyUsage=codeSigning"],
        ] {
            let cert = openssl_cert(extra);
            assert_eq!(extended_key_usages(cert.as_ref()).map(|p| p.is_some()), Some(true));
            let e = verify_pinned(&cert).unwrap_err();
            assert_eq!(e, rustls::Error::InvalidCertificate(CertificateError::InvalidPurpose), "{extra:?}");
        }
    }

    #[test]
    fn der_reading_never_panics_on_truncated_input() {
        let cert = openssl_cert(&["extendedKeyUsage=serverAuth"]);
        let der_bytes = cert.as_ref();
        assert_eq!(extended_key_usages(der_bytes), Some(Some(vec![ID_KP_SERVER_AUTH])));
        for n in 0..der_bytes.len() {
            assert_eq!(extended_key_usages(&der_bytes[..n]), None, "{n}");
        }
        assert_eq!(der(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(der(&[0x30, 0x80]), None);
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
