//! Output: what a command produced (stdout, stderr, exit code), rendered as
//! tables for people or JSON/YAML for programs (`-format`), and the shared
//! renderings of Vault's response shapes (`data`, `auth`, lists).

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::common::Format;

/// Exit code for "nothing there" (not found, empty list) and "sealed".
pub(crate) const EXIT_NO_DATA: u8 = 2;

/// What a command produced. Stdout may hold secrets (init shares, tokens,
/// secret values), so it is wiped from memory once written.
#[derive(Default)]
pub(crate) struct Outcome {
    pub(crate) stdout: Zeroizing<String>,
    /// Bytes written after `stdout` as they are (a decrypted plaintext).
    pub(crate) raw: Option<Zeroizing<Vec<u8>>>,
    pub(crate) stderr: String,
    pub(crate) code: u8,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcome").field("code", &self.code).finish_non_exhaustive()
    }
}

impl Outcome {
    /// Nothing at `what`: a one-line reason on stderr, exit code 2.
    pub(crate) fn no_data(what: &str) -> Outcome {
        Outcome { stderr: format!("No value found at {what}\n"), code: EXIT_NO_DATA, ..Outcome::default() }
    }

    /// Append a line to stdout.
    pub(crate) fn line(&mut self, text: &str) {
        self.stdout.push_str(text);
        self.stdout.push('\n');
    }
}

/// Encode `value` as `fmt` (JSON or YAML) text.
pub(crate) fn encode<T: Serialize + ?Sized>(fmt: Format, value: &T) -> anyhow::Result<Zeroizing<String>> {
    match fmt {
        Format::Yaml => serde_norway::to_string(value)
            .map(Zeroizing::new)
            .map_err(|e| anyhow::anyhow!("cannot encode YAML output: {e}")),
        Format::Json | Format::Human => {
            let mut s = serde_json::to_string_pretty(value)
                .map(Zeroizing::new)
                .map_err(|e| anyhow::anyhow!("cannot encode JSON output: {e}"))?;
            s.push('\n');
            Ok(s)
        }
    }
}

/// Render `value` as JSON or YAML or, for people, with `human`.
pub(crate) fn render<T: Serialize + ?Sized>(
    o: &mut Outcome,
    fmt: Format,
    value: &T,
    human: impl FnOnce(&mut String) -> std::fmt::Result,
) -> anyhow::Result<()> {
    match fmt {
        Format::Json | Format::Yaml => o.stdout.push_str(&encode(fmt, value)?),
        Format::Human => human(&mut o.stdout).map_err(|_| anyhow::anyhow!("formatting output failed"))?,
    }
    Ok(())
}

/// A success message (people only: for programs the exit code says it).
pub(crate) fn message(o: &mut Outcome, fmt: Format, msg: &str) {
    if fmt == Format::Human {
        o.line(msg);
    }
}

/// Forward the server's warnings to stderr.
pub(crate) fn warnings(o: &mut Outcome, v: &Value) {
    if let Some(ws) = v.get("warnings").and_then(Value::as_array).filter(|w| !w.is_empty()) {
        o.stderr.push_str("WARNING! The following warnings were returned from the server:\n");
        for w in ws {
            let text = w.as_str().map_or_else(|| w.to_string(), str::to_string);
            o.stderr.push_str(&format!("  * {text}\n"));
        }
    }
}

/// A response that may carry secrets (a token, secret values): every
/// string in it is overwritten when it is dropped.
pub(crate) struct Wiped(pub(crate) Value);

impl std::ops::Deref for Wiped {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        fn wipe(v: &mut Value) {
            match v {
                Value::String(s) => zeroize::Zeroize::zeroize(s),
                Value::Array(items) => items.iter_mut().for_each(wipe),
                Value::Object(m) => m.values_mut().for_each(wipe),
                _ => {}
            }
        }
        wipe(&mut self.0);
    }
}

/// A two-column Key/Value table.
pub(crate) fn table<K: AsRef<str>>(out: &mut String, rows: &[(K, String)]) -> std::fmt::Result {
    let width = rows.iter().map(|(k, _)| k.as_ref().chars().count()).max().unwrap_or(0).max(3);
    writeln!(out, "{:<width$}    Value", "Key")?;
    writeln!(out, "{:<width$}    -----", "---")?;
    for (k, v) in rows {
        let line = format!("{:<width$}    {v}", k.as_ref());
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// A table with headers and any number of columns.
pub(crate) fn columns(out: &mut String, headers: &[&str], rows: &[Vec<String>]) -> std::fmt::Result {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: &[String]| -> std::fmt::Result {
        let mut text = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            write!(text, "{cell:<w$}    ")?;
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &headers.iter().map(|h| h.to_string()).collect::<Vec<_>>())?;
    line(out, &headers.iter().map(|h| "-".repeat(h.chars().count())).collect::<Vec<_>>())?;
    for r in rows {
        line(out, r)?;
    }
    Ok(())
}

/// A `=== Title ===` section header, as Vault's `kv get`.
pub(crate) fn section(out: &mut String, title: &str) -> std::fmt::Result {
    writeln!(out, "{0} {title} {0}", "=".repeat(3))
}

/// A JSON value as a table cell: strings bare, null as n/a, a list of
/// strings as Vault's CLI shows it (`[app default]`), anything else as JSON.
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "n/a".into(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let words: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            format!("[{}]", words.join(" "))
        }
        other => other.to_string(),
    }
}

/// A value printed alone (`-field`): strings bare, anything else as JSON.
pub(crate) fn raw(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Seconds as Vault's CLI shows durations (`768h`, `1h30m`, `45s`); 0 is
/// shown as `∞` (a token that never expires).
pub(crate) fn duration(secs: u64) -> String {
    if secs == 0 {
        return "∞".into();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// The rows Vault's CLI shows for an `auth` block (a login, a token
/// creation): the token, its accessor, duration, renewability and policies.
pub(crate) fn auth_rows(auth: &Map<String, Value>) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let get = |k: &str| auth.get(k).unwrap_or(&Value::Null);
    rows.push(("token".to_string(), cell(get("client_token"))));
    rows.push(("token_accessor".to_string(), cell(get("accessor"))));
    rows.push(("token_duration".to_string(), duration(get("lease_duration").as_u64().unwrap_or(0))));
    rows.push(("token_renewable".to_string(), cell(get("renewable"))));
    rows.push(("token_policies".to_string(), cell(get("token_policies"))));
    rows.push(("identity_policies".to_string(), cell(get("identity_policies"))));
    rows.push(("policies".to_string(), cell(get("policies"))));
    if let Some(Value::Object(meta)) = auth.get("metadata") {
        for (k, v) in meta {
            rows.push((format!("token_meta_{k}"), cell(v)));
        }
    }
    rows
}

/// A field of an `auth` block by the name Vault's `-field` uses.
fn auth_field<'a>(auth: &'a Map<String, Value>, name: &str) -> Option<Value> {
    let key = match name {
        "token" => "client_token",
        "token_accessor" => "accessor",
        "token_duration" => "lease_duration",
        "token_renewable" => "renewable",
        "token_policies" => "token_policies",
        other => {
            if let Some(meta) = other.strip_prefix("token_meta_") {
                return auth.get("metadata").and_then(|m| m.get(meta)).cloned();
            }
            other
        }
    };
    let found: Option<&'a Value> = auth.get(key);
    found.cloned()
}

/// `-field=NAME` of a response: from its `auth` block (Vault's names:
/// `token`, `token_accessor`, ...), else from `data`.
pub(crate) fn field_of(v: &Value, name: &str) -> Option<Value> {
    if let Some(Value::Object(auth)) = v.get("auth")
        && let Some(f) = auth_field(auth, name)
    {
        return Some(f);
    }
    match v.get("data") {
        Some(Value::Object(d)) => d.get(name).cloned(),
        _ => v.as_object().and_then(|m| m.get(name)).cloned(),
    }
}

/// Print `-field=NAME` of `v`, or fail naming the field.
pub(crate) fn print_field(o: &mut Outcome, v: &Value, name: &str) -> anyhow::Result<()> {
    let f = field_of(v, name).ok_or_else(|| anyhow::anyhow!("field {name:?} not present in the response"))?;
    let text = Zeroizing::new(raw(&f));
    o.line(&text);
    Ok(())
}

/// A read/write answer for people: the `auth` block if any (a login, a
/// token), then the lease and the `data` fields (or, for answers without an
/// envelope, the top-level fields).
pub(crate) fn response_table(out: &mut String, v: &Value) -> std::fmt::Result {
    let mut rows: Vec<(String, String)> = Vec::new();
    if let Some(Value::Object(auth)) = v.get("auth") {
        rows.extend(auth_rows(auth));
    }
    if let Some(secs) = v.get("lease_duration").and_then(Value::as_u64).filter(|s| *s > 0) {
        rows.push(("lease_duration".into(), duration(secs)));
        if let Some(id) = v.get("lease_id").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            rows.push(("lease_id".into(), id.to_string()));
        }
        if let Some(r) = v.get("renewable").and_then(Value::as_bool) {
            rows.push(("lease_renewable".into(), r.to_string()));
        }
    }
    let fields = match v.get("data") {
        Some(Value::Object(d)) => Some(d),
        Some(_) => None,
        None if v.get("auth").is_some() => None,
        None => v.as_object(),
    };
    match fields {
        Some(d) => rows.extend(d.iter().map(|(k, v)| (k.clone(), cell(v)))),
        None if rows.is_empty() => {
            return writeln!(out, "{}", cell(v));
        }
        None => {}
    }
    table(out, &rows)
}

/// Whether a response has something to show (an `auth` block or `data`).
pub(crate) fn has_content(v: &Value) -> bool {
    v.get("auth").is_some_and(Value::is_object) || v.get("data").is_some_and(|d| !d.is_null())
}

/// A list of keys: one per line under a `Keys` header, or a JSON/YAML list.
pub(crate) fn keys(o: &mut Outcome, fmt: Format, keys: &[String]) -> anyhow::Result<()> {
    render(o, fmt, keys, |out| {
        writeln!(out, "Keys\n----")?;
        for k in keys {
            writeln!(out, "{k}")?;
        }
        Ok(())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align() {
        let mut s = String::new();
        table(&mut s, &[("Sealed", "false".to_string()), ("Key Term", "2".to_string())]).unwrap();
        assert_eq!(s, "Key         Value\n---         -----\nSealed      false\nKey Term    2\n");
        let mut s = String::new();
        columns(&mut s, &["Path", "Type"], &[vec!["secret/".into(), "kv".into()]]).unwrap();
        assert_eq!(s, "Path       Type\n----       ----\nsecret/    kv\n");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0), "∞");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(3600), "1h");
        assert_eq!(duration(5400), "1h30m");
        assert_eq!(duration(2_764_800), "768h");
    }

    #[test]
    fn auth_blocks_are_shown() {
        let v = json!({"data": null, "auth": {"client_token": "hvs.TOKEN", "accessor": "acc", "lease_duration": 3600,
            "renewable": true, "policies": ["app", "default"], "token_policies": ["app", "default"],
            "metadata": {"role_name": "web"}}});
        let mut s = String::new();
        response_table(&mut s, &v).unwrap();
        assert!(s.contains("token                   hvs.TOKEN"), "{s}");
        assert!(s.contains("token_duration          1h"), "{s}");
        assert!(s.contains("token_policies          [app default]"), "{s}");
        assert!(s.contains("token_meta_role_name    web"), "{s}");
        assert!(has_content(&v));
        assert_eq!(field_of(&v, "token"), Some(json!("hvs.TOKEN")));
        assert_eq!(field_of(&v, "token_accessor"), Some(json!("acc")));
        assert_eq!(field_of(&v, "token_meta_role_name"), Some(json!("web")));
        assert_eq!(field_of(&v, "nope"), None);
    }

    #[test]
    fn data_fields() {
        let v = json!({"lease_duration": 0, "data": {"foo": "bar", "n": 3}});
        let mut s = String::new();
        response_table(&mut s, &v).unwrap();
        assert!(s.contains("foo    bar") && s.contains("n      3"), "{s}");
        assert_eq!(field_of(&v, "n"), Some(json!(3)));
        assert!(!has_content(&json!({"data": null})));
        let mut s = String::new();
        response_table(&mut s, &json!({"sealed": false})).unwrap();
        assert!(s.contains("sealed    false"), "{s}");
    }

    #[test]
    fn yaml_and_json() {
        let v = json!({"a": [1, 2], "b": "x"});
        let y = encode(Format::Yaml, &v).unwrap();
        let back: Value = serde_norway::from_str(&y).unwrap();
        assert_eq!(back, v);
        let j = encode(Format::Json, &v).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&j).unwrap(), v);
    }
}
