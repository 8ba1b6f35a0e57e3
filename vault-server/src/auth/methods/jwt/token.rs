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

/// Property tests: no string makes the parser panic or take long, every
/// refusal is a clean parse or verification error (the login maps both to a
/// 400), what is accepted is exactly what was sent, and nothing but a real
/// signature by a configured key ever verifies.
#[cfg(test)]
pub(super) mod proptests {
    use std::time::{Duration, Instant};

    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    use jsonwebtoken::Algorithm;
    use proptest::prelude::*;
    use serde_json::json;

    use super::super::keys::{VerifyKey, parse_pem_keys};
    use super::super::testing::*;
    use super::*;

    /// Generous for a debug build on a shared machine; a parse of the
    /// largest token takes milliseconds.
    const SLOW: Duration = Duration::from_secs(2);

    /// Algorithm names: the accepted ones, their near misses, and the
    /// classic attacks (`none`, HMAC).
    const ALGS: &[&str] = &[
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "EdDSA",
        "none",
        "None",
        "NONE",
        "nOnE",
        "HS256",
        "HS384",
        "HS512",
        "ES512",
        "RS1",
        "EdDSA ",
        " RS256",
        "rs256",
        "ED25519",
        "",
        "RSA-OAEP",
        "dir",
        "Ed448",
        "RS256\u{0}",
        "ＲＳ２５６",
    ];

    /// A JSON value as text: odd types, lone surrogates, deep nesting and
    /// very long strings (up to the login's size cap).
    fn json_value() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => ".{0,12}".prop_map(|s| Value::from(s).to_string()),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => prop::sample::select(vec!["null", "true", "[]", "{}", "1e999", "-0", "\"\\ud800\"", "[\"exp\"]", "{\"kty\":\"oct\",\"k\":\"AA\"}"])
                .prop_map(String::from),
            1 => (1usize..3000).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
            1 => (0usize..MAX_JWT_LEN).prop_map(|n| format!("\"{}\"", "k".repeat(n))),
        ]
    }

    fn alg_value() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => prop::sample::select(ALGS).prop_map(|a| Value::from(a).to_string()),
            1 => json_value(),
        ]
    }

    /// A header as JSON text, written by hand so that it may repeat a
    /// member, lack `alg`, or not be an object at all.
    fn header_json() -> impl Strategy<Value = String> {
        let member = prop_oneof![
            2 => alg_value().prop_map(|v| format!("\"alg\":{v}")),
            2 => json_value().prop_map(|v| format!("\"kid\":{v}")),
            1 => prop::sample::select(vec!["[\"exp\"]", "[\"b64\"]", "[]", "null", "\"exp\""]).prop_map(|v| format!("\"crit\":{v}")),
            2 => (prop::sample::select(vec!["crit", "jku", "jwk", "x5u", "x5c", "x5t", "typ", "cty", "b64", "zip", "enc"]), json_value())
                .prop_map(|(k, v)| format!("\"{k}\":{v}")),
            1 => (".{0,8}", json_value()).prop_map(|(k, v)| format!("{}:{v}", Value::from(k))),
        ];
        prop_oneof![
            8 => (proptest::option::of(alg_value()), prop::collection::vec(member, 0..5)).prop_map(|(alg, mut m)| {
                if let Some(a) = alg {
                    m.insert(0, format!("\"alg\":{a}"));
                }
                format!("{{{}}}", m.join(","))
            }),
            1 => json_value(),
            1 => ".{0,16}",
        ]
    }

    fn payload_json() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (json_value(), json_value()).prop_map(|(s, e)| format!("{{\"sub\":{s},\"exp\":{e},\"iss\":\"{ISS}\"}}")),
            1 => json_value(),
            1 => ".{0,16}",
        ]
    }

    /// One part as base64url, or as other base64 alphabets and paddings,
    /// or with one byte replaced by anything (a dot included).
    fn part(json: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
        (json, 0u8..8, any::<prop::sample::Index>(), any::<u8>()).prop_map(|(j, how, at, b)| match how {
            0..=3 => URL_SAFE_NO_PAD.encode(j),
            4 => URL_SAFE.encode(j),
            5 => STANDARD.encode(j),
            6 => j,
            _ => {
                let mut e = URL_SAFE_NO_PAD.encode(j).into_bytes();
                if !e.is_empty() {
                    let i = at.index(e.len());
                    e[i] = b;
                }
                String::from_utf8_lossy(&e).into_owned()
            }
        })
    }

    fn signature() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..600).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
            1 => Just(String::new()),
            1 => ".{0,40}",
            1 => "[A-Za-z0-9_=+/-]{0,700}",
        ]
    }

    /// Well-formed tokens with an unverifiable signature: a known or
    /// near-miss algorithm, a string `kid`, and now and then a `crit` or a
    /// key-pointing member, so that the header checks past decoding run.
    fn plausible_token() -> impl Strategy<Value = String> {
        let extra = prop_oneof![
            prop::sample::select(vec![json!(["exp"]), json!(["b64"]), json!([]), json!(null), json!("exp")])
                .prop_map(|v| ("crit", v)),
            prop::sample::select(vec!["jku", "x5u", "typ", "cty"]).prop_map(|k| (k, json!("https://evil.example/k"))),
        ];
        (prop::sample::select(ALGS), proptest::option::of(".{0,12}"), proptest::option::of(extra), signature())
            .prop_map(|(alg, kid, extra, sig)| {
                let mut h = json!({"alg": alg});
                if let Some(kid) = kid {
                    h["kid"] = json!(kid);
                }
                if let Some((k, v)) = extra {
                    h[k] = v;
                }
                format!("{}.{}.{sig}", b64json(&h), b64json(&claims(json!({}))))
            })
    }

    /// Compact JWS strings, mostly of the right shape, all garbled somewhere.
    pub(crate) fn garbled_token() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => plausible_token(),
            8 => (part(header_json()), part(payload_json()), signature(), 0usize..4, "[ \t\r\n]{0,2}", "[ \t\r\n]{0,2}")
                .prop_map(|(h, p, s, dots, lead, trail)| {
                    // Usually three parts; sometimes two or more than three.
                    let mut parts = vec![h, p, s];
                    match dots {
                        0 => { parts.pop(); }
                        1 => parts.push("x".into()),
                        _ => {}
                    }
                    format!("{lead}{}{trail}", parts.join("."))
                }),
            1 => ".{0,200}",
            1 => "[A-Za-z0-9_.=+/-]{0,300}",
        ]
    }

    /// Parse, checking the outcome whatever it is.
    fn parse_checked(token: &str) -> Result<ParsedJwt<'_>, String> {
        let started = Instant::now();
        let r = parse_jwt(token);
        assert!(started.elapsed() < SLOW, "{} bytes took {:?}", token.len(), started.elapsed());
        match &r {
            Err(m) => assert!(
                m.starts_with("malformed token") || m.starts_with("unsupported token"),
                "not a parse error: {m}"
            ),
            Ok(p) => {
                // What was parsed is what was sent: the signed message and
                // the signature make up the trimmed token.
                let t = token.trim();
                assert_eq!(format!("{}.{}", p.message, p.signature), t);
                let h = t.split('.').next().unwrap_or_default();
                let raw = URL_SAFE_NO_PAD.decode(h).expect("an accepted header is base64url");
                let header: Map<String, Value> = serde_json::from_slice(&raw).expect("an accepted header is an object");
                // RFC 7515 §4: a repeated member is refused or read as its
                // last occurrence (which `Map` keeps); never an earlier one.
                assert_eq!(header.get("alg").and_then(Value::as_str), Some(p.alg.as_str()), "alg of {header:?}");
                if let Some(kid) = &p.kid {
                    assert_eq!(header.get("kid").and_then(Value::as_str), Some(kid.as_str()));
                }
                // No critical parameter is understood, so none may pass.
                assert!(header.get("crit").is_none_or(Value::is_null), "crit accepted: {header:?}");
            }
        }
        r
    }

    /// Every key kind the tests have, as the mount would hold them.
    fn all_keys() -> Vec<VerifyKey> {
        parse_pem_keys(&[ED_PUB.into(), EC_PUB.into(), EC384_PUB.into(), RSA_PUB.into()]).unwrap()
    }

    fn supported() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(prop::sample::select(ALGS).prop_map(String::from), 0..3)
    }

    proptest! {
        #[test]
        fn garbled_tokens_are_parse_errors_never_panics(token in garbled_token()) {
            let _ = parse_checked(&token);
        }

        /// Whatever the token and the mount's algorithm list, verification
        /// is a refusal (400 at login) or a missing key (one refetch, then
        /// 400): no garbled token carries a signature by a configured key.
        #[test]
        fn garbled_tokens_never_verify(token in garbled_token(), supported in supported()) {
            let keys = all_keys();
            let started = Instant::now();
            let r = verify(&token, &supported, &keys);
            prop_assert!(started.elapsed() < SLOW, "{:?}", started.elapsed());
            prop_assert!(matches!(r, Err(VerifyError::Refused(_) | VerifyError::NoKey(_))), "{:?}", r.map(|p| p.alg));
        }

        /// Huge headers, up to the login's size cap: a long `kid`, a long
        /// `alg`, many members. Parsed in bounded time, and a huge `alg` is
        /// never accepted by the algorithm check.
        #[test]
        fn huge_headers_take_bounded_time(
            kid_len in 0usize..MAX_JWT_LEN,
            alg in prop_oneof![prop::sample::select(ALGS).prop_map(String::from), (1usize..MAX_JWT_LEN / 2).prop_map(|n| "R".repeat(n))],
            members in 0usize..2000,
        ) {
            let mut header = json!({"alg": alg, "kid": "k".repeat(kid_len)});
            for i in 0..members {
                header[format!("m{i}")] = json!(i);
            }
            let token = format!("{}.{}.{}", b64json(&header), b64json(&claims(json!({}))), URL_SAFE_NO_PAD.encode([7u8; 64]));
            if let Ok(p) = parse_checked(&token) {
                // The key id is read for the algorithms this server implements
                // (the others are refused before a key is looked up).
                if Algorithm::from_str(&p.alg).is_ok() {
                    prop_assert_eq!(p.kid.as_ref().map(String::len), Some(kid_len));
                }
                if let Err(m) = allowed_alg(&p.alg, &[]) {
                    prop_assert!(!m.is_empty());
                } else {
                    prop_assert!(ASYMMETRIC_ALGS.contains(&p.alg.as_str()));
                }
            }
            prop_assert!(verify(&token, &[], &all_keys()).is_err());
        }

        /// Only the asymmetric algorithms, and only those the mount lists,
        /// are ever allowed; `none` and HMAC never, whatever the list says.
        #[test]
        fn only_listed_asymmetric_algorithms_are_allowed(alg in prop_oneof![prop::sample::select(ALGS).prop_map(String::from), ".{0,10}"], supported in supported()) {
            match allowed_alg(&alg, &supported) {
                Ok(a) => {
                    prop_assert!(ASYMMETRIC_ALGS.contains(&alg.as_str()), "{alg} allowed");
                    prop_assert!(supported.is_empty() || supported.contains(&alg));
                    prop_assert_eq!(Algorithm::from_str(&alg).ok(), Some(a));
                }
                Err(m) => prop_assert!(!m.is_empty()),
            }
        }
    }

    /// Signing is slow in a debug build: fewer cases.
    fn signed_cases() -> ProptestConfig {
        ProptestConfig { cases: 64, ..ProptestConfig::default() }
    }

    fn signed(alg_ed: bool, kid: Option<&str>, extra: &Value) -> String {
        if alg_ed {
            sign(Algorithm::EdDSA, ED_PRIV, kid, &claims(extra.clone()))
        } else {
            sign(Algorithm::ES256, EC_PRIV, kid, &claims(extra.clone()))
        }
    }

    proptest! {
        #![proptest_config(signed_cases())]

        /// A real token verifies; changing any one character of it, or
        /// relabelling its header with another algorithm while keeping the
        /// signature, never does.
        #[test]
        fn any_change_to_a_signed_token_is_refused(
            ed in prop::bool::weighted(0.8),
            kid in proptest::option::of("[a-z0-9]{1,8}"),
            sub in ".{0,16}",
            at in any::<prop::sample::Index>(),
            with in prop::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \n".to_vec()),
            relabel in prop::sample::select(ALGS),
        ) {
            let keys = all_keys();
            let good = signed(ed, kid.as_deref(), &json!({"sub": sub}));
            prop_assert!(verify(&good, &[], &keys).is_ok());

            let mut bytes = good.clone().into_bytes();
            let i = at.index(bytes.len());
            prop_assume!(bytes[i] != with);
            bytes[i] = with;
            let changed = String::from_utf8(bytes).unwrap();
            let r = verify(&changed, &[], &keys);
            prop_assert!(r.is_err(), "byte {} of {} changed to {:?} still verifies", i, good, with as char);

            let (_, rest) = good.split_once('.').unwrap();
            let header = json!({"alg": relabel, "kid": kid});
            let relabelled = format!("{}.{rest}", b64json(&header));
            prop_assume!(relabel != if ed { "EdDSA" } else { "ES256" });
            prop_assert!(verify(&relabelled, &[], &keys).is_err(), "relabelled as {relabel}");
        }
    }

    /// RFC 7515 §4: a header that repeats a member is refused, or read
    /// with the last occurrence; an earlier `alg` is never the one checked.
    #[test]
    fn repeated_header_members_are_refused_or_read_last() {
        let parse = |h: &str| parse_jwt(&format!("{}.e30.AA", URL_SAFE_NO_PAD.encode(h))).map(|p| (p.alg, p.kid));
        // `jsonwebtoken` refuses the repetition; the fallback reads the last
        // `alg`, which is refused as malformed when the crate knows it...
        for h in [
            r#"{"alg":"none","alg":"ES256"}"#,
            r#"{"alg":"ES256","alg":"EdDSA"}"#,
            r#"{"alg":"ES256","kid":"a","kid":"b"}"#,
        ] {
            assert!(parse(h).unwrap_err().starts_with("malformed token"), "{h}");
        }
        // ...and kept by name (for TokenReview) when it does not, so the
        // algorithm check refuses it.
        for (h, last) in [(r#"{"alg":"ES256","alg":"none"}"#, "none"), (r#"{"alg":"ES256","alg":"ES512"}"#, "ES512")] {
            let (alg, kid) = parse(h).unwrap();
            assert_eq!((alg.as_str(), kid), (last, None));
            assert!(allowed_alg(&alg, &[]).is_err());
        }
    }

    #[test]
    fn the_login_size_cap_is_the_parser_bound() {
        // `take_jwt` refuses more than MAX_JWT_LEN bytes before parsing: the
        // largest token parsed is the size the tests above generate.
        let mut data = Map::new();
        data.insert("jwt".into(), Value::from("a".repeat(MAX_JWT_LEN + 1)));
        assert!(matches!(take_jwt(&mut data), Err(LogicalError::InvalidRequest(m)) if m.contains("too large")));
        data.insert("jwt".into(), Value::from("a".repeat(MAX_JWT_LEN)));
        assert!(take_jwt(&mut data).is_ok());
    }
}
