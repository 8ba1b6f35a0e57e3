//! Verification keys and where they come from: static PEM keys, a JWKS
//! document (`jwks_url`), or the JWKS named by an OIDC discovery document
//! (`oidc_discovery_url`), and the cache of a remote key set.
//!
//! JWKS entries are read by `jsonwebtoken` (`jwk::Jwk`, turned into keys by
//! `DecodingKey::from_jwk`); only signature keys of the asymmetric types are
//! kept. Remote key sets are cached ([`JWKS_MAX_AGE`]), refetched once when
//! a token names an unknown `kid` (at most every
//! [`JWKS_FORCED_REFRESH_INTERVAL`]), and fetched with a timeout and a size
//! cap (`remote.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use super::remote::{check_url, get_bytes, get_json, http_client};

/// How long a fetched key set is used before it is fetched again.
pub(crate) const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Minimum time between refetches caused by unknown key ids, so tokens
/// with random `kid`s cannot turn logins into a flood against the issuer.
pub(crate) const JWKS_FORCED_REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// What kind of public key a verification key is (decides the algorithms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::P256, ES256)
                | (KeyKind::P384, ES384)
                | (KeyKind::Ed25519, EdDSA)
        )
    }

    fn probe_alg(self) -> Algorithm {
        match self {
            KeyKind::Rsa => Algorithm::RS256,
            KeyKind::P256 => Algorithm::ES256,
            KeyKind::P384 => Algorithm::ES384,
            KeyKind::Ed25519 => Algorithm::EdDSA,
        }
    }
}

/// A public key able to verify token signatures.
#[derive(Debug, Clone)]
pub(crate) struct VerifyKey {
    pub(crate) kind: KeyKind,
    /// JWKS `kid` (None for PEM keys).
    pub(crate) kid: Option<String>,
    /// JWKS `alg` restriction (None: any algorithm of the key's kind).
    pub(crate) alg: Option<Algorithm>,
    pub(crate) key: DecodingKey,
}

impl VerifyKey {
    /// Whether this key may verify `alg` signatures.
    pub(crate) fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// Whether the crypto backend accepts `key` as a `kind` key: a malformed key
/// fails when its verifier is built, a well-formed one just rejects the
/// dummy signature.
///
/// An Ed25519 key must be exactly 32 bytes (RFC 8037 §2, RFC 8410 §4), and is
/// checked here first: `jsonwebtoken`'s verifier slices it to 32 bytes
/// unchecked, so a shorter one (a JWKS `x` or a PEM bit string) panics and a
/// longer one is silently cut.
fn usable(key: &DecodingKey, kind: KeyKind) -> bool {
    if kind == KeyKind::Ed25519 && key.try_get_as_bytes().map(<[u8]>::len).ok() != Some(32) {
        return false;
    }
    jsonwebtoken::crypto::verify("AA", b"probe", key, kind.probe_alg()).is_ok()
}

/// Parse one PEM public key or certificate (RSA, EC P-256/P-384, Ed25519).
///
/// The PEM label is read here, not by `jsonwebtoken`: its `from_*_pem`
/// would take a private key for a public one, and refusing that needs the
/// label. The curve of an EC key is told by the length of its point, which
/// `DecodingKey` does not otherwise expose.
pub(crate) fn parse_pem_key(pem: &str) -> Result<VerifyKey, String> {
    let tag = pem
        .trim()
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.split_once("-----"))
        .map(|(tag, _)| tag.to_string())
        .ok_or_else(|| "not a PEM block".to_string())?;
    if tag.contains("PRIVATE") {
        return Err("is a private key: give the public key".into());
    }
    if !matches!(tag.as_str(), "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE") {
        return Err(format!("unsupported PEM type \"{tag}\" (expected a public key or a certificate)"));
    }
    let b = pem.trim().as_bytes();
    let mut found = None;
    if let Ok(k) = DecodingKey::from_rsa_pem(b) {
        found = Some((k, KeyKind::Rsa));
    } else if let Ok(k) = DecodingKey::from_ec_pem(b) {
        // An uncompressed SEC1 point: 1 + 2 × 32 bytes (P-256) or 2 × 48 (P-384).
        let kind = match k.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => KeyKind::P256,
            Ok(97) => KeyKind::P384,
            _ => return Err("unsupported elliptic curve (expected P-256 or P-384)".into()),
        };
        found = Some((k, kind));
    } else if let Ok(k) = DecodingKey::from_ed_pem(b) {
        found = Some((k, KeyKind::Ed25519));
    }
    match found {
        Some((key, kind)) if usable(&key, kind) => Ok(VerifyKey { kind, kid: None, alg: None, key }),
        Some(_) => Err("the key is malformed".into()),
        None => Err("unsupported or malformed key (expected RSA, EC P-256/P-384 or Ed25519)".into()),
    }
}

pub(crate) fn parse_pem_keys(pems: &[String]) -> Result<Vec<VerifyKey>, String> {
    pems.iter().enumerate().map(|(i, p)| parse_pem_key(p).map_err(|e| format!("public key #{}: {e}", i + 1))).collect()
}

/// One JWKS entry as a verification key; None for keys that are not
/// signature keys, of unsupported types, malformed, or restricted to an
/// algorithm that is not an asymmetric signature algorithm (such a key
/// could never verify a token).
pub(crate) fn jwk_key(jwk: &Jwk) -> Option<VerifyKey> {
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
        return None;
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => KeyKind::P256,
            EllipticCurve::P384 => KeyKind::P384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => KeyKind::Ed25519,
        // Symmetric (`oct`) keys are never used, nor are unknown types.
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(Algorithm::try_from(a).ok().filter(|&a| kind.fits(a))?),
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    usable(&key, kind).then(|| VerifyKey { kind, kid: jwk.common.key_id.clone(), alg, key })
}

/// The usable signature keys of a JWKS document.
///
/// Each entry is read as a `jsonwebtoken` `Jwk` on its own rather than the
/// document as a `JwkSet`: one entry the crate cannot read (a field of an
/// unexpected type, a key type from a newer spec) would make the whole set
/// unreadable and stop logins with the good keys. Such entries are skipped.
pub(crate) fn parse_jwks(raw: &[u8]) -> Result<Vec<VerifyKey>, String> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<Value>,
    }
    let doc: Value = serde_json::from_slice(raw).map_err(|_| "the JWKS document is not JSON")?;
    let doc = Document::deserialize(&doc).map_err(|_| "the JWKS document has no \"keys\" list")?;
    let keys: Vec<VerifyKey> =
        doc.keys.iter().filter_map(|entry| Jwk::deserialize(entry).ok()).filter_map(|jwk| jwk_key(&jwk)).collect();
    if keys.is_empty() {
        return Err("the JWKS document holds no usable signature keys".into());
    }
    Ok(keys)
}

// ---------------------------------------------------------------------------
// Remote key sets
// ---------------------------------------------------------------------------

/// Where remote keys come from (the cache is valid only for the same source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeySource {
    pub(crate) url: String,
    pub(crate) ca_pem: String,
    /// `url` is an OIDC discovery URL (else a JWKS URL).
    pub(crate) discovery: bool,
}

/// When to fetch a remote key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetch {
    /// Reuse the cached set while it is fresh (every login).
    IfStale,
    /// A token named an unknown key id: refetch, unless one such refetch
    /// happened within [`JWKS_FORCED_REFRESH_INTERVAL`].
    UnknownKid,
    /// Always fetch (config writes check the source works).
    Always,
}

/// A fetched key set.
#[derive(Debug)]
struct Cached {
    source: KeySource,
    keys: Arc<Vec<VerifyKey>>,
    /// The issuer named by the discovery document (tokens must match it).
    issuer: Option<String>,
    fetched: Instant,
    /// Last refetch caused by an unknown key id.
    last_forced: Option<Instant>,
}

/// Keys and the issuer the discovery document requires, if any.
pub(crate) type KeySet = (Arc<Vec<VerifyKey>>, Option<String>);

/// A mount's cache of its remote key set.
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    slot: tokio::sync::Mutex<Option<Cached>>,
}

impl KeyCache {
    /// Forget the cached set (the configuration no longer names one).
    pub(crate) async fn clear(&self) {
        *self.slot.lock().await = None;
    }

    /// The remote key set from `source`, fetched or reused as `mode` says.
    /// The cache lock is held across the fetch, so concurrent logins share
    /// one fetch. When a refetch fails but keys from the same source are
    /// cached, those keep working (logged as `mount`), so an issuer outage
    /// does not stop logins with known keys.
    pub(crate) async fn get(
        &self,
        source: &KeySource,
        mode: Fetch,
        timeout: Duration,
        mount: &str,
    ) -> Result<KeySet, String> {
        let mut cache = self.slot.lock().await;
        let current = cache.as_ref().filter(|c| c.source == *source);
        if let Some(c) = current {
            let reuse = match mode {
                Fetch::IfStale => c.fetched.elapsed() < JWKS_MAX_AGE,
                Fetch::UnknownKid => c.last_forced.is_some_and(|t| t.elapsed() < JWKS_FORCED_REFRESH_INTERVAL),
                Fetch::Always => false,
            };
            if reuse {
                return Ok((c.keys.clone(), c.issuer.clone()));
            }
        }
        let now = Instant::now();
        match fetch_key_set(source, timeout).await {
            Ok((keys, issuer)) => {
                let keys = Arc::new(keys);
                let last_forced =
                    if mode == Fetch::UnknownKid { Some(now) } else { current.and_then(|c| c.last_forced) };
                *cache = Some(Cached {
                    source: source.clone(),
                    keys: keys.clone(),
                    issuer: issuer.clone(),
                    fetched: now,
                    last_forced,
                });
                Ok((keys, issuer))
            }
            Err(e) => match cache.as_mut().filter(|c| c.source == *source) {
                Some(kept) if mode != Fetch::Always => {
                    tracing::warn!(mount = %mount, url = %source.url, error = %e,
                        "refreshing the JWT signing keys failed; using the cached keys");
                    // Failed refetches are rate limited too.
                    if mode == Fetch::UnknownKid {
                        kept.last_forced = Some(now);
                    }
                    Ok((kept.keys.clone(), kept.issuer.clone()))
                }
                _ => Err(e),
            },
        }
    }
}

/// Fetch the key set (through the discovery document when configured).
async fn fetch_key_set(source: &KeySource, timeout: Duration) -> Result<(Vec<VerifyKey>, Option<String>), String> {
    let client = http_client(&source.ca_pem, timeout)?;
    let (jwks_url, issuer) = if source.discovery {
        let base = source.url.trim_end_matches('/');
        let doc = get_json(&client, &format!("{base}/.well-known/openid-configuration")).await?;
        let issuer = doc.get("issuer").and_then(Value::as_str).ok_or("the discovery document has no issuer")?;
        if issuer.trim_end_matches('/') != base {
            return Err(format!("the discovery document's issuer \"{issuer}\" does not match the discovery URL"));
        }
        let jwks = doc.get("jwks_uri").and_then(Value::as_str).ok_or("the discovery document has no jwks_uri")?;
        check_url(jwks, "jwks_uri").map_err(|_| "the discovery document's jwks_uri is not an http(s) URL")?;
        (jwks.to_string(), Some(issuer.to_string()))
    } else {
        (source.url.clone(), None)
    };
    let raw = get_bytes(&client, &jwks_url).await?;
    let keys = parse_jwks(&raw).map_err(|e| format!("{jwks_url}: {e}"))?;
    Ok((keys, issuer))
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    use super::super::testing::*;
    use super::*;

    /// One JWKS entry as `parse_jwks` reads it.
    fn entry(v: &Value) -> Option<VerifyKey> {
        Jwk::deserialize(v).ok().and_then(|jwk| jwk_key(&jwk))
    }

    fn jwks(v: Value) -> Result<Vec<VerifyKey>, String> {
        parse_jwks(v.to_string().as_bytes())
    }

    #[test]
    fn pem_keys_of_every_kind() {
        assert_eq!(parse_pem_key(ED_PUB).unwrap().kind, KeyKind::Ed25519);
        assert_eq!(parse_pem_key(EC_PUB).unwrap().kind, KeyKind::P256);
        assert_eq!(parse_pem_key(EC384_PUB).unwrap().kind, KeyKind::P384);
        assert_eq!(parse_pem_key(RSA_PUB).unwrap().kind, KeyKind::Rsa);
        assert!(parse_pem_key(ED_PRIV).unwrap_err().contains("private key"));
        assert!(parse_pem_key(RSA_PRIV).unwrap_err().contains("private key"));
        assert!(parse_pem_key("garbage").is_err());
        let broken = ED_PUB.replace("MCow", "MCox");
        assert!(parse_pem_key(&broken).is_err());
        assert!(parse_pem_keys(&[ED_PUB.into(), "x".into()]).unwrap_err().starts_with("public key #2"));
    }

    #[test]
    fn jwks_entries() {
        assert_eq!(entry(&ed_jwk(ED_PUB, "a")).unwrap().kind, KeyKind::Ed25519);
        let ec = entry(&ec_jwk(EC_PUB, "b")).unwrap();
        assert_eq!((ec.kind, ec.kid.as_deref(), ec.alg), (KeyKind::P256, Some("b"), Some(Algorithm::ES256)));
        assert!(ec.fits(Algorithm::ES256) && !ec.fits(Algorithm::ES384));
        assert!(entry(&json!({"kty": "oct", "k": "c2VjcmV0"})).is_none(), "symmetric keys are never used");
        assert!(entry(&json!({"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "use": "sig"})).is_none());
        assert!(entry(&json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"})).is_none());
        let mut bad = ec_jwk(EC_PUB, "c");
        bad["x"] = json!(URL_SAFE_NO_PAD.encode([1u8; 32]));
        assert!(entry(&bad).is_none(), "a point off the curve is refused");
        // An `alg` restriction that no signature of the key's kind can meet.
        for alg in ["ES384", "HS256", "RSA-OAEP", "XX"] {
            let mut k = ec_jwk(EC_PUB, "d");
            k["alg"] = json!(alg);
            assert!(entry(&k).is_none(), "{alg}");
        }
        let mut k = ed_jwk(ED_PUB, "e");
        k["crv"] = json!("X25519");
        assert!(entry(&k).is_none(), "key agreement curve");
    }

    #[test]
    fn jwks_documents() {
        let good = ed_jwk(ED_PUB, "k1");
        assert_eq!(jwks(json!({"keys": [good]})).unwrap().len(), 1);
        // Entries the crate cannot read, or keys that cannot verify, are skipped.
        let doc = json!({"keys": [{"kty": "RSA", "kid": 5, "n": "x", "e": "AQAB"}, "junk", null,
                                  {"kty": "oct", "k": "c2VjcmV0"}, good, ec_jwk(EC_PUB, "k2")],
                         "extra": true});
        let keys = jwks(doc).unwrap();
        assert_eq!(keys.iter().map(|k| k.kid.as_deref()).collect::<Vec<_>>(), [Some("k1"), Some("k2")]);
        assert!(jwks(json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})).unwrap_err().contains("no usable"));
        assert!(jwks(json!({"keys": []})).unwrap_err().contains("no usable"));
        assert!(jwks(json!({"keys": {}})).unwrap_err().contains("no \"keys\" list"));
        assert!(jwks(json!([good])).unwrap_err().contains("no \"keys\" list"));
        assert!(parse_jwks(b"<html>").unwrap_err().contains("not JSON"));
    }
}

/// Property tests: no JWKS entry or PEM block, however malformed, makes key
/// parsing panic (a remote key set is untrusted input, and one bad entry
/// must not stop logins with the good ones); every key kept is one the
/// crypto backend can use, of the kind and size its type says.
#[cfg(test)]
mod proptests {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::super::testing::*;
    use super::*;

    /// A key field: base64url of bytes of any length (short, exact, long),
    /// or not base64url at all, or not a string.
    fn field() -> impl Strategy<Value = Value> {
        prop_oneof![
            6 => prop::collection::vec(any::<u8>(), 0..100).prop_map(|b| Value::from(URL_SAFE_NO_PAD.encode(b))),
            1 => prop::collection::vec(any::<u8>(), 0..700).prop_map(|b| Value::from(URL_SAFE_NO_PAD.encode(b))),
            1 => ".{0,10}".prop_map(Value::from),
            1 => prop::sample::select(vec![Value::Null, json!(1), json!([]), json!({})]),
        ]
    }

    fn opt(values: &'static [&'static str]) -> impl Strategy<Value = Option<&'static str>> {
        proptest::option::of(prop::sample::select(values))
    }

    /// A JWK: random members, or one of the test keys with a member replaced.
    fn jwk() -> impl Strategy<Value = Value> {
        let random = (
            opt(&["RSA", "EC", "OKP", "oct", "XX"]),
            opt(&["P-256", "P-384", "P-521", "Ed25519", "X25519", "Ed448", "secp256k1"]),
            opt(&["RS256", "PS512", "ES256", "ES384", "EdDSA", "HS256", "none", "RSA-OAEP", "XX"]),
            opt(&["sig", "enc", "x"]),
            proptest::option::of(".{0,8}"),
            (field(), field(), field(), field(), field()),
        )
            .prop_map(|(kty, crv, alg, usage, kid, (n, e, x, y, k))| {
                let mut j = json!({"n": n, "e": e, "x": x, "y": y, "k": k});
                for (name, v) in [("kty", kty), ("crv", crv), ("alg", alg), ("use", usage)] {
                    if let Some(v) = v {
                        j[name] = json!(v);
                    }
                }
                if let Some(kid) = kid {
                    j["kid"] = json!(kid);
                }
                j
            });
        let mutated = (any::<bool>(), prop::sample::select(&["x", "y", "crv", "alg", "kty", "kid"]), field()).prop_map(
            |(ed, member, v)| {
                let mut j = if ed { ed_jwk(ED_PUB, "m") } else { ec_jwk(EC_PUB, "m") };
                j[member] = v;
                j
            },
        );
        prop_oneof![random, mutated]
    }

    /// DER length octets (short or long form).
    fn der_len(n: usize) -> Vec<u8> {
        match n {
            0..=127 => vec![n as u8],
            128..=255 => vec![0x81, n as u8],
            _ => vec![0x82, (n >> 8) as u8, n as u8],
        }
    }

    /// A SubjectPublicKeyInfo with algorithm `alg` (DER) and a key of any length.
    fn spki(alg: &[u8], key: &[u8]) -> Vec<u8> {
        let mut bits = vec![0x03];
        bits.extend(der_len(key.len() + 1));
        bits.push(0);
        bits.extend_from_slice(key);
        let mut body = vec![0x30];
        body.extend(der_len(alg.len()));
        body.extend_from_slice(alg);
        body.extend(bits);
        let mut out = vec![0x30];
        out.extend(der_len(body.len()));
        out.extend(body);
        out
    }

    const ED25519_ALG: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    const P256_ALG: &[u8] = &[
        0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01,
        0x07,
    ];

    fn pem(label: &str, der: &[u8]) -> String {
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", STANDARD.encode(der))
    }

    /// Check what parsing kept, whatever the input.
    fn check_kept(k: &VerifyKey) {
        assert!(usable(&k.key, k.kind), "kept a key the backend cannot use");
        let len = k.key.try_get_as_bytes().map(<[u8]>::len).ok();
        match k.kind {
            KeyKind::Ed25519 => assert_eq!(len, Some(32), "an Ed25519 key is 32 bytes"),
            KeyKind::P256 => assert_eq!(len, Some(65)),
            KeyKind::P384 => assert_eq!(len, Some(97)),
            KeyKind::Rsa => {}
        }
        if let Some(a) = k.alg {
            assert!(k.kind.fits(a), "{:?} restricted to {a:?}", k.kind);
        }
    }

    proptest! {
        #[test]
        fn jwks_entries_never_panic(entries in prop::collection::vec(jwk(), 0..4)) {
            let doc = json!({"keys": entries});
            if let Ok(keys) = parse_jwks(doc.to_string().as_bytes()) {
                prop_assert!(!keys.is_empty() && keys.len() <= entries.len());
                for k in &keys {
                    check_kept(k);
                }
            }
        }

        #[test]
        fn jwks_documents_never_panic(raw in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_jwks(&raw);
        }

        /// PEM public keys of every length under a known algorithm, and
        /// random DER: refused or usable, never a panic.
        #[test]
        fn pem_keys_never_panic(
            ed in any::<bool>(),
            key in prop::collection::vec(any::<u8>(), 0..120),
            label in prop::sample::select(&["PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE"]),
            raw in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let der = spki(if ed { ED25519_ALG } else { P256_ALG }, &key);
            for text in [pem("PUBLIC KEY", &der), pem(label, &raw)] {
                if let Ok(k) = parse_pem_key(&text) {
                    check_kept(&k);
                }
            }
        }
    }

    /// Found by `jwks_entries_never_panic`: `jsonwebtoken`'s Ed25519
    /// verifier slices the key to 32 bytes without checking its length, so
    /// an `OKP` entry with a short `x` (or a PEM key with a short bit string)
    /// panicked while the key set was read, and one bad entry stopped every
    /// login of the mount. A long one was silently cut to 32 bytes.
    #[test]
    fn ed25519_keys_of_the_wrong_length_are_refused_not_a_panic() {
        let good = ed_jwk(ED_PUB, "good");
        for len in [0usize, 1, 31, 33, 64] {
            let mut bad = good.clone();
            bad["x"] = json!(URL_SAFE_NO_PAD.encode(vec![7u8; len]));
            bad["kid"] = json!("bad");
            let keys = parse_jwks(json!({"keys": [bad, good]}).to_string().as_bytes()).unwrap();
            assert_eq!(keys.iter().map(|k| k.kid.as_deref()).collect::<Vec<_>>(), [Some("good")], "x of {len} bytes");
            let pem_key = pem("PUBLIC KEY", &spki(ED25519_ALG, &vec![7u8; len]));
            assert!(parse_pem_key(&pem_key).is_err(), "PEM key of {len} bytes");
        }
        // The real key, re-encoded by the helpers above, is still accepted.
        let real = pem("PUBLIC KEY", &spki(ED25519_ALG, &spki_tail(ED_PUB, 32)));
        assert_eq!(parse_pem_key(&real).unwrap().kind, KeyKind::Ed25519);
    }
}
