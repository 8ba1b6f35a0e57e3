//! Token parsing and signature verification.
//!
//! `jsonwebtoken` decodes the header (`decode_header`) and the payload, and
//! checks signatures (`crypto::verify`); this module decides what is
//! acceptable. Only asymmetric algorithms are ever accepted: `none` and the
//! HMAC family are refused whatever the configuration says (an HMAC
//! "signature" made with a public key as the secret is the classic key
//! confusion). Header fields that point at keys (`jku`, `jwk`, `x5u`, `x5c`)
//! are ignored: keys come only from the mount's configuration. A token with
//! critical header parameters (`crit`) is refused, since none is understood.

use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::errors::ErrorKind;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::common::bad;
use super::keys::VerifyKey;
use crate::logical::LogicalError;

/// Longest token accepted (service-account and ID tokens are a few KiB).
pub(crate) const MAX_JWT_LEN: usize = 64 * 1024;
/// The only signing algorithms ever accepted.
pub(crate) const ASYMMETRIC_ALGS: &[&str] =
    &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

const CRITICAL: &str = "unsupported token: critical header parameters are not supported";

/// A token split and decoded, before any verification.
pub(crate) struct ParsedJwt<'a> {
    /// The `alg` header as written.
    pub(crate) alg: String,
    pub(crate) kid: Option<String>,
    /// The payload. Not to be trusted before [`check_signature`]
    /// accepted the token: it is decoded first because the Kubernetes
    /// method checks the service-account names before asking TokenReview.
    pub(crate) claims: Map<String, Value>,
    /// `base64url(header).base64url(payload)`: what was signed.
    message: &'a str,
    signature: &'a str,
}

impl std::fmt::Debug for ParsedJwt<'_> {
    // The message and signature together are the token, a bearer credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedJwt").field("alg", &self.alg).field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// Split and decode a token (no verification).
pub(crate) fn parse_jwt(token: &str) -> Result<ParsedJwt<'_>, String> {
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("malformed token: expected three dot-separated parts".into());
    };
    if h.is_empty() || p.is_empty() {
        return Err("malformed token".into());
    }
    let (alg, kid) = match jsonwebtoken::decode_header(token) {
        Ok(header) => {
            if header.crit.is_some() {
                return Err(CRITICAL.into());
            }
            // The name as the crate writes it in a header: the JOSE name.
            let name = serde_json::to_value(header.alg).ok().and_then(|v| v.as_str().map(String::from));
            (name.ok_or("malformed token: the header has no algorithm")?, header.kid)
        }
        Err(e) if matches!(e.kind(), ErrorKind::Base64(_)) => {
            return Err("malformed token: the header is not base64url".into());
        }
        Err(_) => (foreign_alg(h)?, None),
    };
    let claims = jsonwebtoken::dangerous::insecure_decode_claims::<Map<String, Value>>(token).map_err(|e| {
        match e.kind() {
            ErrorKind::Base64(_) => "malformed token: the payload is not base64url",
            _ => "malformed token: the payload is not a JSON object",
        }
        .to_string()
    })?;
    Ok(ParsedJwt { alg, kid, claims, message: &token[..h.len() + 1 + p.len()], signature: sig })
}

/// The algorithm of a header `jsonwebtoken` refused. Its `Header` knows
/// only the algorithms it implements, so it refuses `none` or `ES512` like
/// a malformed header; but such a token must still be refused with the
/// reason (Vault's messages), and a Kubernetes mount that asks TokenReview
/// never verifies the signature itself, so the algorithm may be one this
/// server does not implement. Only `alg` and `crit` are read here; a header
/// with a known algorithm that the crate refused is malformed.
fn foreign_alg(h: &str) -> Result<String, String> {
    let raw = URL_SAFE_NO_PAD.decode(h).map_err(|_| "malformed token: the header is not base64url")?;
    let Ok(Value::Object(header)) = serde_json::from_slice(&raw) else {
        return Err("malformed token: the header is not a JSON object".into());
    };
    let alg = header.get("alg").and_then(Value::as_str).ok_or("malformed token: the header has no algorithm")?;
    if header.contains_key("crit") {
        return Err(CRITICAL.into());
    }
    if Algorithm::from_str(alg).is_ok() {
        return Err("malformed token: the header has a field of the wrong type".into());
    }
    Ok(alg.to_string())
}

/// The token's algorithm if allowed: asymmetric, and in `supported` (all
/// asymmetric algorithms when empty).
pub(crate) fn allowed_alg(alg: &str, supported: &[String]) -> Result<Algorithm, String> {
    if alg.eq_ignore_ascii_case("none") {
        return Err("unsigned tokens (alg \"none\") are not accepted".into());
    }
    if alg.starts_with("HS") {
        return Err(format!("signing algorithm \"{alg}\" is not accepted: only public-key algorithms are supported"));
    }
    if !ASYMMETRIC_ALGS.contains(&alg) || !(supported.is_empty() || supported.iter().any(|s| s == alg)) {
        return Err(format!("signing algorithm \"{alg}\" is not supported by this mount"));
    }
    Algorithm::from_str(alg).map_err(|_| format!("signing algorithm \"{alg}\" is not supported"))
}

/// Why a token was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum VerifyError {
    /// Malformed, a refused algorithm or a bad signature.
    Refused(String),
    /// No key fits the token's algorithm or key id (a remote key set may
    /// have rotated: worth one refetch).
    NoKey(String),
}

impl VerifyError {
    pub(crate) fn message(self) -> String {
        match self {
            VerifyError::Refused(m) | VerifyError::NoKey(m) => m,
        }
    }
}

/// Check the signature with the keys that fit `alg` (and the token's `kid`,
/// when both name one).
pub(crate) fn check_signature(p: &ParsedJwt<'_>, alg: Algorithm, keys: &[VerifyKey]) -> Result<(), VerifyError> {
    let for_alg: Vec<&VerifyKey> = keys.iter().filter(|k| k.fits(alg)).collect();
    let candidates: Vec<&VerifyKey> = for_alg
        .iter()
        .copied()
        .filter(|k| match (&p.kid, &k.kid) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        })
        .collect();
    if candidates.is_empty() {
        return Err(VerifyError::NoKey(if for_alg.is_empty() {
            format!("no configured key can verify {} signatures", p.alg)
        } else {
            "no key in the key set matches the token's key id (kid)".into()
        }));
    }
    let ok = candidates
        .iter()
        .any(|k| jsonwebtoken::crypto::verify(p.signature, p.message.as_bytes(), &k.key, alg).unwrap_or(false));
    if ok { Ok(()) } else { Err(VerifyError::Refused("signature verification failed".into())) }
}

/// Parse `token`, check its algorithm against `supported` (every asymmetric
/// one when empty) and its signature against `keys`.
pub(crate) fn verify<'a>(
    token: &'a str,
    supported: &[String],
    keys: &[VerifyKey],
) -> Result<ParsedJwt<'a>, VerifyError> {
    let parsed = parse_jwt(token).map_err(VerifyError::Refused)?;
    let alg = allowed_alg(&parsed.alg, supported).map_err(VerifyError::Refused)?;
    check_signature(&parsed, alg, keys)?;
    Ok(parsed)
}

/// Remove the token from the request data into a wiping buffer.
pub(crate) fn take_jwt(data: &mut Map<String, Value>) -> Result<Zeroizing<String>, LogicalError> {
    match data.remove("jwt") {
        Some(Value::String(s)) => {
            let s = Zeroizing::new(s);
            if s.trim().is_empty() {
                Err(bad("missing jwt"))
            } else if s.len() > MAX_JWT_LEN {
                Err(bad("jwt is too large"))
            } else {
                Ok(s)
            }
        }
        None | Some(Value::Null) => Err(bad("missing jwt")),
        Some(_) => Err(bad("invalid value for 'jwt': expected a string")),
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::super::keys::{parse_pem_key, parse_pem_keys};
    use super::super::testing::*;
    use super::*;

    #[test]
    fn token_parsing() {
        assert!(parse_jwt("a.b").is_err());
        assert!(parse_jwt("a.b.c.d").is_err());
        assert!(parse_jwt(".e30.x").unwrap_err().starts_with("malformed token"));
        assert!(parse_jwt("!!.e30.x").unwrap_err().contains("base64url"));
        let h = b64json(&json!({"alg": "EdDSA", "crit": ["exp"]}));
        assert!(parse_jwt(&format!("{h}.e30.x")).unwrap_err().contains("critical"));
        let h = b64json(&json!({"alg": "EdDSA", "kid": "k"}));
        let raw = format!("  {h}.e30.sig\n");
        let p = parse_jwt(&raw).unwrap();
        assert_eq!((p.alg.as_str(), p.kid.as_deref(), p.signature), ("EdDSA", Some("k"), "sig"));
        assert_eq!(p.message, format!("{h}.e30"));
        assert!(p.claims.is_empty());
        assert!(!format!("{p:?}").contains("sig"), "Debug never shows the token");
        // Payloads.
        assert!(parse_jwt(&format!("{h}.!!.x")).unwrap_err().contains("payload is not base64url"));
        assert!(parse_jwt(&format!("{h}.{}.x", b64json(&json!([1])))).unwrap_err().contains("payload is not"));
        // Headers the crate refuses: an algorithm it does not implement is
        // kept by name (TokenReview may still vouch for the token), anything
        // else is malformed.
        let tok = |v: Value| format!("{}.e30.x", b64json(&v));
        assert_eq!(parse_jwt(&tok(json!({"alg": "none"}))).unwrap().alg, "none");
        assert_eq!(parse_jwt(&tok(json!({"alg": "ES512", "kid": "k"}))).unwrap().alg, "ES512");
        assert!(parse_jwt(&tok(json!({"alg": "ES512", "crit": 1}))).unwrap_err().contains("critical"));
        assert!(parse_jwt(&tok(json!({"alg": "RS256", "kid": 5}))).unwrap_err().contains("wrong type"));
        assert!(parse_jwt(&tok(json!({"kid": "k"}))).unwrap_err().contains("no algorithm"));
        assert!(parse_jwt(&tok(json!({"alg": 5}))).unwrap_err().contains("no algorithm"));
        assert!(parse_jwt(&tok(json!(["alg"]))).unwrap_err().contains("not a JSON object"));
        assert!(parse_jwt(&format!("{}.e30.x", URL_SAFE_NO_PAD.encode(b"\xff\xfe"))).is_err());
        // Key-pointing header fields are read (and ignored), not refused.
        let jku = tok(json!({"alg": "EdDSA", "jku": "https://evil.example/keys", "x5u": "https://evil.example/c"}));
        assert_eq!(parse_jwt(&jku).unwrap().alg, "EdDSA");
    }

    #[test]
    fn algorithms() {
        assert!(allowed_alg("none", &[]).unwrap_err().contains("unsigned"));
        assert!(allowed_alg("NONE", &[]).is_err());
        assert!(allowed_alg("HS256", &[]).unwrap_err().contains("public-key"));
        assert!(allowed_alg("HS256", &["HS256".into()]).is_err(), "never HMAC, whatever the config");
        assert!(allowed_alg("ES512", &[]).is_err());
        assert_eq!(allowed_alg("ES256", &[]).unwrap(), Algorithm::ES256);
        assert!(allowed_alg("EdDSA", &["ES256".into()]).is_err());
        for alg in ASYMMETRIC_ALGS {
            assert!(allowed_alg(alg, &[]).is_ok(), "{alg}");
        }
    }

    #[test]
    fn signatures() {
        let keys = parse_pem_keys(&[ED_PUB.into(), EC_PUB.into()]).unwrap();
        let c = claims(json!({}));
        let good = sign(Algorithm::EdDSA, ED_PRIV, None, &c);
        assert_eq!(verify(&good, &[], &keys).unwrap().claims["sub"], "user-1");
        let other = sign(Algorithm::EdDSA, ED2_PRIV, None, &c);
        assert_eq!(
            verify(&other, &[], &keys).unwrap_err(),
            VerifyError::Refused("signature verification failed".into())
        );
        let rsa = sign(Algorithm::RS256, RSA_PRIV, None, &c);
        assert!(matches!(verify(&rsa, &[], &keys), Err(VerifyError::NoKey(m)) if m.contains("RS256")));
        assert!(matches!(verify(&good, &["ES256".into()], &keys), Err(VerifyError::Refused(_))));
        // A key id names the key; a PEM key (no kid) is tried for any.
        let mut kid_key = parse_pem_key(ED_PUB).unwrap();
        kid_key.kid = Some("k1".into());
        let with_kid = sign(Algorithm::EdDSA, ED_PRIV, Some("k1"), &c);
        assert!(verify(&with_kid, &[], std::slice::from_ref(&kid_key)).is_ok());
        let wrong_kid = sign(Algorithm::EdDSA, ED_PRIV, Some("k2"), &c);
        assert!(matches!(verify(&wrong_kid, &[], &[kid_key]), Err(VerifyError::NoKey(m)) if m.contains("kid")));
        assert!(verify(&wrong_kid, &[], &keys).is_ok());
        // HMAC with the public key as the secret (key confusion), and none.
        let hs = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &EncodingKey::from_secret(ED_PUB.as_bytes()))
            .unwrap();
        assert!(verify(&hs, &[], &keys).unwrap_err().message().contains("HS256"));
        let none = format!("{}.{}.", b64json(&json!({"alg": "none"})), b64json(&c));
        assert!(verify(&none, &[], &keys).unwrap_err().message().contains("unsigned"));
    }
}
