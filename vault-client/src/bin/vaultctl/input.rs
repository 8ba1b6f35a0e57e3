//! Input: `KEY=VALUE` data arguments (with `@file` and `-` for stdin), a
//! JSON object on stdin, and secrets (key shares, tokens) typed without echo
//! or piped.
//!
//! Error messages never quote a value: a mistyped argument may be a secret.

use std::io::{BufRead, IsTerminal as _, Read as _};

use anyhow::{Context as _, bail};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// How `KEY=VALUE` values become JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Values {
    /// Every value is a string (Vault's `write` and `kv put`).
    Strings,
    /// Every value is JSON text (`kv put -json port=5432 tags='["a"]'`).
    Json,
}

/// All of stdin, as text.
pub(crate) fn read_stdin() -> anyhow::Result<Zeroizing<String>> {
    let mut s = Zeroizing::new(String::new());
    std::io::stdin().read_to_string(&mut s).context("cannot read stdin")?;
    Ok(s)
}

/// All of stdin, as bytes.
pub(crate) fn read_stdin_bytes() -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut s = Zeroizing::new(Vec::new());
    std::io::stdin().read_to_end(&mut s).context("cannot read stdin")?;
    Ok(s)
}

/// Request data from arguments: `-` alone reads a JSON object from stdin;
/// otherwise each argument is `KEY=VALUE`, `KEY=@FILE` (the file's
/// contents) or `KEY=-` (stdin, once, one trailing newline removed).
pub(crate) fn parse_data(args: &[String], values: Values) -> anyhow::Result<Map<String, Value>> {
    parse_data_with(args, values, read_stdin)
}

pub(crate) fn parse_data_with(
    args: &[String],
    values: Values,
    read_stdin: impl FnOnce() -> anyhow::Result<Zeroizing<String>>,
) -> anyhow::Result<Map<String, Value>> {
    if args.len() == 1 && args[0] == "-" {
        return json_object(&read_stdin()?, "stdin");
    }
    let mut out = Map::new();
    let mut stdin = Some(read_stdin);
    for (i, p) in args.iter().enumerate() {
        if p == "-" {
            bail!("'-' (a JSON object on stdin) must be the only data argument");
        }
        let (k, v) = p
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| anyhow::anyhow!("invalid data argument #{}: expected KEY=VALUE", i + 1))?;
        let text = if v == "-" {
            let read = stdin.take().context("only one value may be read from stdin ('-')")?;
            let mut s = read()?;
            if s.ends_with('\n') {
                s.pop();
                if s.ends_with('\r') {
                    s.pop();
                }
            }
            s
        } else if let Some(file) = v.strip_prefix('@') {
            // Not the file name: it may be a value that starts with '@'.
            Zeroizing::new(std::fs::read_to_string(file).with_context(|| {
                format!(
                    "key {k}: cannot read the file named after '@' (a value that starts with '@' \
                     can be given on stdin: {k}=-)"
                )
            })?)
        } else {
            Zeroizing::new(v.to_string())
        };
        let value = match values {
            Values::Strings => Value::String(text.to_string()),
            Values::Json => serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!("the value of {k} is not JSON ({}); quote strings: {k}='\"...\"'", what(&e))
            })?,
        };
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

/// A JSON object from `text`; errors give the position, never the content.
pub(crate) fn json_object(text: &str, source: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => bail!("{source} must hold a JSON object"),
        Err(e) => bail!("{source} is not valid JSON ({})", what(&e)),
    }
}

/// A serde_json error without its message (which may quote the input).
fn what(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected value",
        serde_json::error::Category::Eof => "unexpected end",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

/// `--option k=v` and friends.
pub(crate) fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected KEY=VALUE".to_string()),
    }
}

/// A comma-separated list flag (`-versions=1,2`), empty items dropped.
pub(crate) fn comma_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// A secret (key share, token) from the command line or, if absent or `-`,
/// from stdin. At a terminal it is typed without echo (so it is not left on
/// the screen or in the scrollback); otherwise one line is read, with no
/// prompt, so scripts can pipe it in.
pub(crate) fn secret_arg(given: Option<&str>, prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    if let Some(k) = given.filter(|k| *k != "-") {
        return non_empty_key(k);
    }
    if std::io::stdin().is_terminal() {
        let typed = rpassword::prompt_password(format!("{prompt} (will be hidden): "))
            .map(Zeroizing::new)
            .context("cannot read from the terminal")?;
        return non_empty_key(&typed);
    }
    read_key_line(&mut std::io::stdin().lock())
}

/// One line of `input` as the key (the non-terminal case).
pub(crate) fn read_key_line(input: &mut impl BufRead) -> anyhow::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    input.read_line(&mut line).context("cannot read stdin")?;
    non_empty_key(&line)
}

fn non_empty_key(text: &str) -> anyhow::Result<Zeroizing<String>> {
    let key = Zeroizing::new(text.trim().to_string());
    if key.is_empty() {
        bail!("nothing given: pass it as an argument or on one line of stdin");
    }
    Ok(key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn stdin(text: &'static str) -> impl FnOnce() -> anyhow::Result<Zeroizing<String>> {
        move || Ok(Zeroizing::new(text.to_string()))
    }

    #[test]
    fn data_pairs() {
        let m = parse_data_with(&strings(&["foo=bar", "empty=", "eq=a=b", "pw=-"]), Values::Strings, stdin("s3cret\n"))
            .unwrap();
        assert_eq!(Value::Object(m), json!({"foo": "bar", "empty": "", "eq": "a=b", "pw": "s3cret"}));

        assert!(parse_data_with(&strings(&["a=-", "b=-"]), Values::Strings, stdin("")).is_err());
        let e = parse_data_with(&strings(&["novalue-SECRET"]), Values::Strings, stdin("")).unwrap_err().to_string();
        assert!(e.contains("KEY=VALUE") && !e.contains("SECRET"), "{e}");
        assert!(parse_data_with(&strings(&["=v"]), Values::Strings, stdin("")).is_err());
        // stdin is not read unless asked.
        let m = parse_data_with(&strings(&["a=b"]), Values::Strings, || panic!("stdin read")).unwrap();
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn data_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v");
        std::fs::write(&f, "file value\n").unwrap();
        let arg = format!("k=@{}", f.display());
        let m = parse_data_with(&[arg], Values::Strings, stdin("")).unwrap();
        assert_eq!(m["k"], "file value\n");
        let e = parse_data_with(&strings(&["k=@/nonexistent/x"]), Values::Strings, stdin("")).unwrap_err();
        let shown = format!("{e:#}");
        assert!(shown.contains("key k: cannot read the file named after '@'"), "{shown}");
        assert!(!shown.contains("nonexistent"), "the value (a file name?) is not echoed: {shown}");
    }

    #[test]
    fn json_values_and_stdin_objects() {
        let m =
            parse_data_with(&strings(&["port=5432", "on=true", r#"tags=["a"]"#, r#"s="x""#]), Values::Json, stdin(""))
                .unwrap();
        assert_eq!(Value::Object(m), json!({"port": 5432, "on": true, "tags": ["a"], "s": "x"}));
        let e = parse_data_with(&strings(&["pw=SECRETVALUE"]), Values::Json, stdin("")).unwrap_err().to_string();
        assert!(e.contains("pw") && !e.contains("SECRETVALUE"), "{e}");

        let m = parse_data_with(&strings(&["-"]), Values::Strings, stdin(r#"{"a": 1, "b": {"c": [true]}}"#)).unwrap();
        assert_eq!(Value::Object(m), json!({"a": 1, "b": {"c": [true]}}));
        let e = parse_data_with(&strings(&["-"]), Values::Strings, stdin(r#"{"a": SECRET"#)).unwrap_err().to_string();
        assert!(e.contains("not valid JSON") && !e.contains("SECRET"), "{e}");
        let e = parse_data_with(&strings(&["-"]), Values::Strings, stdin(r#"["x"]"#)).unwrap_err().to_string();
        assert!(e.contains("JSON object"), "{e}");
        assert!(parse_data_with(&strings(&["-", "a=b"]), Values::Strings, stdin("{}")).is_err());
    }

    #[test]
    fn key_from_a_pipe_is_one_trimmed_line() {
        let mut input = std::io::Cursor::new(b"  abcd1234\r\nsecond line\n".to_vec());
        assert_eq!(read_key_line(&mut input).unwrap().as_str(), "abcd1234");
        let e = read_key_line(&mut std::io::Cursor::new(b"\n".to_vec())).unwrap_err();
        assert!(e.to_string().contains("nothing given"), "{e}");
        assert!(read_key_line(&mut std::io::Cursor::new(Vec::new())).is_err());
    }

    #[test]
    fn lists_and_pairs() {
        assert_eq!(comma_list("1, 2,,3"), vec!["1", "2", "3"]);
        assert_eq!(parse_pair("a=b=c").unwrap(), ("a".to_string(), "b=c".to_string()));
        assert!(parse_pair("novalue").is_err());
    }
}
