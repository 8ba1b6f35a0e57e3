//! Claim checks on verified tokens: times with leeways, issuer, audiences,
//! subject, bound claims, the user claim and claim mappings; and the role
//! fields that configure them.
//!
//! Claims are named by a JSON pointer (`/a/b`), a top-level key, or a
//! dotted path into nested objects (`kubernetes.io.namespace`, where keys
//! may themselves contain dots). Error messages name the failed check and
//! the claim, never a claim's value.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use super::JwtRole;
use super::common::bad;
use crate::logical::{LogicalError, fields};

/// Vault's defaults for the leeways of JWT roles (seconds; -1 disables).
pub(crate) const DEFAULT_CLOCK_SKEW_LEEWAY: i64 = 60;
pub(crate) const DEFAULT_EXPIRATION_LEEWAY: i64 = 150;
pub(crate) const DEFAULT_NOT_BEFORE_LEEWAY: i64 = 150;

/// Longest leeway accepted (one day). Vault sets no bound, but a leeway of
/// years silently turns `exp`/`nbf` checks off; -1 or a role without the
/// claim check says that openly.
const MAX_LEEWAY: i64 = 24 * 3600;

/// Longest dotted claim path followed (bounds the search on hostile names).
const MAX_DOTTED_SEGMENTS: usize = 32;

// ---------------------------------------------------------------------------
// Role fields
// ---------------------------------------------------------------------------

/// A leeway in seconds: an integer (-1 disables), or a duration string, at
/// most [`MAX_LEEWAY`].
pub(crate) fn leeway(d: &Map<String, Value>, field: &str) -> Result<Option<i64>, LogicalError> {
    let invalid =
        || bad(format!("invalid value for '{field}': expected seconds or a duration up to 24h, or -1 to disable"));
    let in_range = |v: &i64| (-1..=MAX_LEEWAY).contains(v);
    match d.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().filter(in_range).map(Some).ok_or_else(invalid),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) if s.trim() == "-1" => Ok(Some(-1)),
        Some(Value::String(s)) => {
            fields::parse_duration(s).and_then(|v| i64::try_from(v).ok()).filter(in_range).map(Some).ok_or_else(invalid)
        }
        Some(_) => Err(invalid()),
    }
}

/// The effective value of a leeway setting: 0 means the default, -1 none.
fn effective_leeway(v: i64, default: i64) -> i64 {
    match v {
        0 => default,
        v if v < 0 => 0,
        v => v,
    }
}

/// `bound_claims`: claim names to a scalar or a non-empty list of scalars.
pub(crate) fn bound_claims(d: &Map<String, Value>) -> Result<Option<Map<String, Value>>, LogicalError> {
    match d.get("bound_claims") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let ok = match v {
                    Value::Array(a) => !a.is_empty() && a.iter().all(|x| scalar_string(x).is_some()),
                    other => scalar_string(other).is_some(),
                };
                if k.is_empty() || !ok {
                    return Err(bad(format!(
                        "invalid 'bound_claims' entry \"{k}\": expected a string or a list of strings"
                    )));
                }
            }
            Ok(Some(m.clone()))
        }
        Some(_) => Err(bad("'bound_claims' must be a map of claim names to values")),
    }
}

/// `claim_mappings`: claim names to distinct metadata keys (`role` is
/// reserved: it names the role in every login's metadata).
pub(crate) fn claim_mappings(d: &Map<String, Value>) -> Result<Option<BTreeMap<String, String>>, LogicalError> {
    let Some(m) = fields::string_map(d, "claim_mappings")? else { return Ok(None) };
    let mut mappings = BTreeMap::new();
    let mut targets = HashSet::new();
    for (k, v) in m {
        let target = v.as_str().unwrap_or_default().to_string();
        if target.is_empty() {
            return Err(bad(format!("claim mapping for \"{k}\" has an empty metadata key")));
        }
        if target == "role" {
            return Err(bad("metadata key \"role\" is reserved and may not be a target of a claim mapping"));
        }
        if !targets.insert(target.clone()) {
            return Err(bad(format!("multiple claims are mapped to metadata key \"{target}\"")));
        }
        mappings.insert(k, target);
    }
    Ok(Some(mappings))
}

// ---------------------------------------------------------------------------
// Claim lookup
// ---------------------------------------------------------------------------

/// A claim rendered as a string, for scalars.
pub(crate) fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Look a claim up by name: a JSON pointer (`/a/b`), a top-level key, or a
/// dotted path into nested objects.
pub(crate) fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if path.starts_with('/') {
        return pointer(claims, path);
    }
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let segments: Vec<&str> = path.split('.').collect();
    if segments.len() > MAX_DOTTED_SEGMENTS {
        return None;
    }
    dotted(claims, &segments)
}

fn dotted<'a>(obj: &'a Map<String, Value>, segments: &[&str]) -> Option<&'a Value> {
    for i in 1..=segments.len() {
        let key = segments[..i].join(".");
        let Some(v) = obj.get(&key) else { continue };
        if i == segments.len() {
            return Some(v);
        }
        if let Value::Object(inner) = v
            && let Some(found) = dotted(inner, &segments[i..])
        {
            return Some(found);
        }
    }
    None
}

/// RFC 6901 JSON pointer into the claims.
pub(crate) fn pointer<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut tokens = path.split('/').skip(1);
    let first = tokens.next()?.replace("~1", "/").replace("~0", "~");
    let mut cur = claims.get(&first)?;
    for t in tokens {
        let t = t.replace("~1", "/").replace("~0", "~");
        cur = match cur {
            Value::Object(m) => m.get(&t)?,
            Value::Array(a) => a.get(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

fn numeric_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, String> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            // A fractional time counts by its whole seconds (`as` saturates).
            n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).map(Some).ok_or_else(|| format!("invalid {name} claim"))
        }
        Some(_) => Err(format!("invalid {name} claim: expected a number")),
    }
}

/// Leeways for time checks, in seconds (already resolved from settings).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Leeways {
    pub(crate) skew: i64,
    pub(crate) exp: i64,
    pub(crate) nbf: i64,
}

/// Check `exp`, `nbf` and `iat`. With `require`, at least one must be
/// present, and a token without `exp` expires `exp` leeway after its
/// `iat`/`nbf` (so no token is valid forever).
pub(crate) fn check_times(claims: &Map<String, Value>, now: i64, lw: Leeways, require: bool) -> Result<(), String> {
    let exp = numeric_claim(claims, "exp")?;
    let nbf = numeric_claim(claims, "nbf")?;
    let iat = numeric_claim(claims, "iat")?;
    if require && exp.is_none() && nbf.is_none() && iat.is_none() {
        return Err("no issued at (iat), not before (nbf), or expiration time (exp) claims in token".into());
    }
    match exp {
        Some(e) if now > e.saturating_add(lw.exp).saturating_add(lw.skew) => return Err("token is expired".into()),
        None if require => {
            let start = iat.max(nbf).unwrap_or(i64::MIN);
            if now > start.saturating_add(lw.exp).saturating_add(lw.skew) {
                return Err("token is expired (it has no exp claim and was issued too long ago)".into());
            }
        }
        _ => {}
    }
    if let Some(n) = nbf
        && now.saturating_add(lw.nbf).saturating_add(lw.skew) < n
    {
        return Err("token is not yet valid (nbf)".into());
    }
    if let Some(i) = iat
        && now.saturating_add(lw.skew) < i
    {
        return Err("token was issued in the future (iat)".into());
    }
    Ok(())
}

/// The token's audiences (`aud` as a string or a list of strings).
pub(crate) fn audiences(claims: &Map<String, Value>) -> Option<Vec<String>> {
    match claims.get("aud")? {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => Some(a.iter().filter_map(Value::as_str).map(String::from).collect()),
        _ => Some(Vec::new()),
    }
}

/// The allowed values of a bound claim (a string or a list).
fn bound_values(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().filter_map(scalar_string).collect(),
        other => scalar_string(other).into_iter().collect(),
    }
}

/// Everything a JWT role checks on verified claims.
pub(super) fn check_jwt_claims(
    claims: &Map<String, Value>,
    role: &JwtRole,
    bound_issuer: &str,
    discovered_issuer: Option<&str>,
    now: i64,
) -> Result<(), String> {
    let lw = Leeways {
        skew: effective_leeway(role.clock_skew_leeway, DEFAULT_CLOCK_SKEW_LEEWAY),
        exp: effective_leeway(role.expiration_leeway, DEFAULT_EXPIRATION_LEEWAY),
        nbf: effective_leeway(role.not_before_leeway, DEFAULT_NOT_BEFORE_LEEWAY),
    };
    check_times(claims, now, lw, true)?;
    let iss = claims.get("iss").and_then(Value::as_str);
    for expected in [Some(bound_issuer).filter(|s| !s.is_empty()), discovered_issuer].into_iter().flatten() {
        if iss != Some(expected) {
            return Err("invalid issuer (iss) claim".into());
        }
    }
    match (audiences(claims), role.bound_audiences.is_empty()) {
        (Some(_), true) => return Err("audience claim found in JWT but no audiences bound to the role".into()),
        (None, false) => return Err("invalid audience (aud) claim: the token has no audience".into()),
        (Some(aud), false) if !aud.iter().any(|a| role.bound_audiences.contains(a)) => {
            return Err("invalid audience (aud) claim: audience claim does not match any expected audience".into());
        }
        _ => {}
    }
    if !role.bound_subject.is_empty() && claims.get("sub").and_then(Value::as_str) != Some(role.bound_subject.as_str())
    {
        return Err("sub claim does not match bound subject".into());
    }
    for (name, expected) in &role.bound_claims {
        let allowed = bound_values(expected);
        let actual = claim(claims, name).ok_or_else(|| format!("claim \"{name}\" is missing"))?;
        let values: Vec<String> = match actual {
            Value::Array(a) => a.iter().filter_map(scalar_string).collect(),
            v => scalar_string(v).into_iter().collect(),
        };
        if !values.iter().any(|v| allowed.contains(v)) {
            return Err(format!("claim \"{name}\" does not match any associated bound claim values"));
        }
    }
    Ok(())
}

/// The user (alias) name from the role's user claim.
pub(super) fn user_name(claims: &Map<String, Value>, role: &JwtRole) -> Result<String, String> {
    let v =
        if role.user_claim_json_pointer { pointer(claims, &role.user_claim) } else { claim(claims, &role.user_claim) };
    let v = v.ok_or_else(|| format!("claim \"{}\" not found in token", role.user_claim))?;
    scalar_string(v)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("claim \"{}\" could not be converted to a string", role.user_claim))
}

/// Vault checks the groups claim's shape even though groups grant nothing here.
pub(super) fn check_groups(claims: &Map<String, Value>, role: &JwtRole) -> Result<(), String> {
    if role.groups_claim.is_empty() {
        return Ok(());
    }
    match claim(claims, &role.groups_claim) {
        None => Err(format!("\"{}\" claim not found in token", role.groups_claim)),
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => Ok(()),
        Some(_) => Err(format!("\"{}\" claim is not a string or a list of strings", role.groups_claim)),
    }
}

/// Metadata: the role name plus the claim mappings.
pub(super) fn jwt_metadata(
    claims: &Map<String, Value>,
    role: &JwtRole,
    role_name: &str,
) -> Result<Map<String, Value>, String> {
    let mut m = Map::new();
    m.insert("role".into(), role_name.into());
    for (claim_name, key) in &role.claim_mappings {
        let Some(v) = claim(claims, claim_name) else { continue };
        let s = scalar_string(v).ok_or_else(|| format!("error converting claim \"{claim_name}\" to a string"))?;
        m.insert(key.clone(), s.into());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn claim_paths() {
        let c = json!({"a": {"b": {"c": "deep"}}, "kubernetes.io": {"namespace": "apps"}, "x.y": "lit",
                       "groups": ["g1", "g2"], "s/l": {"~t": 1}})
        .as_object()
        .cloned()
        .unwrap();
        assert_eq!(claim(&c, "a.b.c"), Some(&json!("deep")));
        assert_eq!(claim(&c, "/a/b/c"), Some(&json!("deep")));
        assert_eq!(claim(&c, "kubernetes.io.namespace"), Some(&json!("apps")));
        assert_eq!(claim(&c, "x.y"), Some(&json!("lit")));
        assert_eq!(claim(&c, "/groups/1"), Some(&json!("g2")));
        assert_eq!(claim(&c, "/s~1l/~0t"), Some(&json!(1)));
        assert_eq!(claim(&c, "a.b.missing"), None);
        assert_eq!(claim(&c, "/nope"), None);
        assert_eq!(claim(&c, &"a.".repeat(40)), None, "too many segments");
    }

    #[test]
    fn time_checks_with_leeway() {
        let lw = Leeways { skew: 60, exp: 150, nbf: 150 };
        let c = |v: Value| v.as_object().cloned().unwrap();
        let now = 1_000_000;
        assert!(check_times(&c(json!({"exp": now + 10})), now, lw, true).is_ok());
        assert!(check_times(&c(json!({"exp": now - 200})), now, lw, true).is_ok(), "within leeway");
        assert_eq!(check_times(&c(json!({"exp": now - 211})), now, lw, true).unwrap_err(), "token is expired");
        let none = Leeways { skew: 0, exp: 0, nbf: 0 };
        assert!(check_times(&c(json!({"exp": now - 1})), now, none, true).is_err());
        assert!(
            check_times(&c(json!({"exp": now + 10, "nbf": now + 5000})), now, lw, true)
                .unwrap_err()
                .contains("not yet valid")
        );
        assert!(
            check_times(&c(json!({"exp": now + 10, "iat": now + 5000})), now, lw, true).unwrap_err().contains("future")
        );
        assert!(check_times(&c(json!({})), now, lw, true).unwrap_err().contains("no issued at"));
        assert!(check_times(&c(json!({})), now, lw, false).is_ok(), "legacy k8s tokens have no times");
        assert!(check_times(&c(json!({"iat": now - 100})), now, lw, true).is_ok());
        assert!(check_times(&c(json!({"iat": now - 1000})), now, lw, true).unwrap_err().contains("expired"));
        assert!(check_times(&c(json!({"exp": "soon"})), now, lw, true).is_err());
        assert!(check_times(&c(json!({"exp": (now + 10) as f64 + 0.5})), now, lw, true).is_ok());
        // Extreme values saturate instead of wrapping.
        assert!(check_times(&c(json!({"exp": i64::MAX})), now, lw, true).is_ok());
        assert!(check_times(&c(json!({"exp": 1e300})), now, lw, true).is_ok());
        assert!(check_times(&c(json!({"exp": i64::MIN})), now, lw, true).is_err());
        assert!(check_times(&c(json!({"nbf": i64::MIN, "exp": now + 10})), now, lw, true).is_ok());
    }

    #[test]
    fn leeways_are_bounded() {
        let d = |v: Value| json!({ "l": v }).as_object().cloned().unwrap();
        assert_eq!(leeway(&d(json!(30)), "l").unwrap(), Some(30));
        assert_eq!(leeway(&d(json!("2m")), "l").unwrap(), Some(120));
        assert_eq!(leeway(&d(json!("-1")), "l").unwrap(), Some(-1));
        assert_eq!(leeway(&d(json!("")), "l").unwrap(), None);
        for bad in [json!(-2), json!(86_401), json!("25h"), json!(true), json!(1.5)] {
            assert!(leeway(&d(bad.clone()), "l").is_err(), "{bad}");
        }
        assert_eq!((effective_leeway(0, 60), effective_leeway(-1, 60), effective_leeway(5, 60)), (60, 0, 5));
    }
}
