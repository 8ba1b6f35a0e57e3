//! Typed access to request data with Vault's lenient coercions (numbers
//! given as strings, booleans as "true", durations as "1h" or seconds).
//! Every accessor returns a 400-class error naming the field, never panics.

use serde_json::{Map, Value};

use super::LogicalError;

fn bad(field: &str, what: &str) -> LogicalError {
    LogicalError::InvalidRequest(format!("invalid value for '{field}': expected {what}"))
}

/// A string field; JSON null counts as absent.
pub fn string(data: &Map<String, Value>, field: &str) -> Result<Option<String>, LogicalError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(bad(field, "a string")),
    }
}

/// An integer field (accepts numeric strings).
pub fn int(data: &Map<String, Value>, field: &str) -> Result<Option<i64>, LogicalError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| bad(field, "an integer")),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad(field, "an integer")),
        Some(_) => Err(bad(field, "an integer")),
    }
}

/// A boolean field (accepts "true"/"false"/"1"/"0"/"t"/"f" as Go's ParseBool).
pub fn boolean(data: &Map<String, Value>, field: &str) -> Result<Option<bool>, LogicalError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => parse_bool(s).map(Some).ok_or_else(|| bad(field, "a boolean")),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(0) => Ok(Some(false)),
            Some(1) => Ok(Some(true)),
            _ => Err(bad(field, "a boolean")),
        },
        Some(_) => Err(bad(field, "a boolean")),
    }
}

/// Go's `strconv.ParseBool`, which Vault uses for query flags.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// A map of string to string (accepts null as absent; values coerced to strings).
pub fn string_map(data: &Map<String, Value>, field: &str) -> Result<Option<Map<String, Value>>, LogicalError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => {
            let mut out = Map::new();
            for (k, v) in m {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return Err(bad(field, "a map of strings")),
                };
                out.insert(k.clone(), Value::String(s));
            }
            Ok(Some(out))
        }
        Some(_) => Err(bad(field, "a map of strings")),
    }
}

/// The longest duration any field accepts: 100 years. Every duration a
/// caller sends ends up added to a clock (expiry times, in seconds and in
/// nanoseconds as `i64`); below this bound none of those sums can overflow,
/// and no real setting needs more (Vault's own cap, Go's `time.Duration`, is
/// about 292 years).
pub const MAX_DURATION_SECS: u64 = 100 * 365 * 86_400;

/// A duration in seconds: an integer, or a string such as "90", "30m",
/// "1h30m", "2d". Negative, malformed or over [`MAX_DURATION_SECS`] is a 400.
pub fn duration(data: &Map<String, Value>, field: &str) -> Result<Option<u64>, LogicalError> {
    let secs = match data.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| bad(field, "a non-negative duration"))?,
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => parse_duration(s).ok_or_else(|| {
            bad(
                field,
                "a duration such as \"90\", \"30m\" or \"1h30m\" (whole seconds: a non-zero one under 1s is refused)",
            )
        })?,
        Some(_) => return Err(bad(field, "a duration")),
    };
    if secs > MAX_DURATION_SECS {
        return Err(LogicalError::InvalidRequest(format!(
            "invalid value for '{field}': durations may be at most {MAX_DURATION_SECS} seconds (100 years)"
        )));
    }
    Ok(Some(secs))
}

/// A non-negative integer field (a count such as `num_uses`): negative is a 400.
pub fn count(data: &Map<String, Value>, field: &str) -> Result<Option<u64>, LogicalError> {
    match int(data, field)? {
        None => Ok(None),
        Some(n) => u64::try_from(n)
            .map(Some)
            .map_err(|_| LogicalError::InvalidRequest(format!("invalid value for '{field}': cannot be negative"))),
    }
}

/// Parse "300", "300s", "5m", "1h30m", "2d" (Vault accepts `d` for days) into seconds.
/// Milliseconds round down to whole seconds, but a non-zero duration under
/// a second is None, not 0: Vault reads "500ms" as 0, which in a TTL means
/// "the default" or "never", the opposite of what the caller asked for.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut any = false;
    let mut nonzero = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                // Milliseconds: round down to whole seconds.
                let n: u64 = num.parse().ok()?;
                nonzero |= n > 0;
                total = total.checked_add(n / 1000)?;
                num.clear();
                any = true;
                continue;
            }
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return None,
        };
        let n: u64 = num.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any || (nonzero && total == 0) {
        return None;
    }
    Some(total)
}

/// Policies given as a JSON list or a comma-separated string.
pub fn policy_list(d: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, LogicalError> {
    let list = match d.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(|s| s.trim().to_string()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| LogicalError::InvalidRequest(format!("'{field}' must be a list of strings")))?,
        Some(_) => return Err(LogicalError::InvalidRequest(format!("'{field}' must be a list of strings"))),
    };
    let mut list: Vec<String> = list.into_iter().map(|p: String| p.to_lowercase()).filter(|p| !p.is_empty()).collect();
    // A name no policy can have (quotes, control characters, `/`) would make
    // every request of the token fail later, far from its cause ("root" is
    // for the caller to allow or refuse).
    if let Some(bad) = list
        .iter()
        .find(|p| p.as_str() != crate::auth::policy::ROOT_POLICY_NAME && crate::auth::policy::validate_name(p).is_err())
    {
        return Err(LogicalError::InvalidRequest(format!(
            "'{field}': invalid policy name {bad:?}: policy names contain only letters, digits, '-', '_' and '.'"
        )));
    }
    list.sort();
    list.dedup();
    Ok(Some(list))
}

/// A list of strings given as a JSON list or a comma-separated string.
pub fn string_list(d: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, LogicalError> {
    match d.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            Ok(Some(s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()))
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| LogicalError::InvalidRequest(format!("'{field}' must be a list of strings"))),
        Some(_) => Err(LogicalError::InvalidRequest(format!("'{field}' must be a list of strings"))),
    }
}

/// Unix seconds as RFC 3339 UTC.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("2d"), Some(172800));
        // Under a second but not zero: refused, not read as 0 ("unset",
        // hence the default or "never" in a TTL: a red team's finding).
        assert_eq!(parse_duration("500ms"), None);
        assert_eq!(parse_duration("999ms"), None);
        assert_eq!(parse_duration("0ms"), Some(0));
        assert_eq!(parse_duration("0s"), Some(0));
        assert_eq!(parse_duration("1500ms"), Some(1));
        assert_eq!(parse_duration("1s500ms"), Some(1));
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("10x"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn durations_are_bounded_and_counts_non_negative() {
        let d = json!({"max": MAX_DURATION_SECS, "over": MAX_DURATION_SECS + 1, "huge": u64::MAX,
                       "i64": "9223372036854775807", "neg": -1, "words": "876001h", "ok": "768h",
                       "uses": 3, "neg_uses": -1, "neg_str": "-1"})
        .as_object()
        .unwrap()
        .clone();
        assert_eq!(duration(&d, "max").unwrap(), Some(MAX_DURATION_SECS));
        assert_eq!(duration(&d, "ok").unwrap(), Some(768 * 3600));
        for f in ["over", "huge", "i64", "neg", "words"] {
            let e = duration(&d, f).unwrap_err().to_string();
            assert!(e.contains(&format!("'{f}'")), "{f}: {e}");
        }
        assert_eq!(count(&d, "uses").unwrap(), Some(3));
        assert!(count(&d, "neg_uses").unwrap_err().to_string().contains("cannot be negative"));
        assert!(count(&d, "neg_str").is_err());
    }

    #[test]
    fn coercions_and_errors() {
        let d = json!({"a": "5", "b": true, "c": [1], "n": null, "s": 3}).as_object().unwrap().clone();
        assert_eq!(int(&d, "a").unwrap(), Some(5));
        assert_eq!(boolean(&d, "b").unwrap(), Some(true));
        assert!(int(&d, "c").is_err());
        assert_eq!(string(&d, "n").unwrap(), None);
        assert_eq!(string(&d, "s").unwrap().as_deref(), Some("3"));
        assert!(string(&d, "c").unwrap_err().to_string().contains("'c'"));
    }
}
