//! Templates (minijinja) with a `secret(path)` function, and atomic file
//! writes.
//!
//! `secret("secret/myapp")` is the data map of the latest version of the KV
//! secret `secret/myapp` (mount + path), read with the library's
//! [`Client::read_secret`]. minijinja functions are synchronous, so a
//! template is rendered in rounds: a round that calls `secret` for a path
//! not read yet fails, the paths it asked for are read, and the next round
//! has them. The number of rounds is bounded by the number of distinct
//! secrets. Undefined values are errors (a misspelt field must not render
//! as an empty password), and nothing is escaped.

use std::collections::BTreeMap;
use std::fs::Permissions;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context as _, anyhow};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior, Value};
use vault_client::{Client, Secret};
use zeroize::Zeroizing;

/// What a render produced: the text, and each secret read with its version.
#[derive(Default)]
pub(crate) struct Rendered {
    pub(crate) text: Zeroizing<String>,
    pub(crate) secrets: BTreeMap<String, u64>,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered").field("secrets", &self.secrets).finish_non_exhaustive()
    }
}

/// Marks the error a round ends with when it needs a secret not read yet.
const NEEDS_READ: &str = "secret not read yet";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Render `source` (named `name` in errors), reading the secrets it asks
/// for with `client`. Errors name the template, the line and the secret
/// path (only when the template spells it out: a computed path may be made
/// of secret values), never a value.
pub(crate) async fn render(client: &Client, name: &str, source: &str) -> anyhow::Result<Rendered> {
    let read: Arc<Mutex<BTreeMap<String, Secret>>> = Arc::default();
    let wanted: Arc<Mutex<Vec<String>>> = Arc::default();
    loop {
        let round = {
            let env = environment(read.clone(), wanted.clone());
            env.template_from_named_str(name, source).and_then(|t| t.render(()))
        };
        let e = match round {
            Ok(text) => {
                let secrets = lock(&read).iter().map(|(p, d)| (p.clone(), d.version)).collect();
                return Ok(Rendered { text: Zeroizing::new(text), secrets });
            }
            Err(e) => e,
        };
        let paths: Vec<String> = std::mem::take(&mut *lock(&wanted));
        if paths.is_empty() {
            // minijinja's plain Display: kind, detail, template and line
            // (the alternate form would add variable values).
            return Err(anyhow!("template {name}: {e}"));
        }
        for p in paths {
            if lock(&read).contains_key(&p) {
                continue;
            }
            let s = if source.contains(p.as_str()) {
                client
                    .read_secret(&p)
                    .await
                    .with_context(|| format!("template {name}: cannot read secret {p}"))?
                    .with_context(|| format!("template {name}: secret {p} not found"))?
            } else {
                // A path the template computed (maybe from a secret's
                // value): not named, and neither is the library's error
                // (its URL or the server's message would name it).
                let computed = "a secret at a path the template computed";
                match client.read_secret(&p).await {
                    Ok(Some(s)) => s,
                    Ok(None) => return Err(anyhow!("template {name}: {computed} was not found")),
                    Err(e) => {
                        let why = e.status().map_or_else(|| "request failed".to_string(), |s| format!("status {s}"));
                        return Err(anyhow!("template {name}: cannot read {computed} ({why})"));
                    }
                }
            };
            lock(&read).insert(p, s);
        }
    }
}

/// The template environment of one round.
fn environment(read: Arc<Mutex<BTreeMap<String, Secret>>>, wanted: Arc<Mutex<Vec<String>>>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Files end as their templates do (Jinja would drop a final newline).
    // (Building fails only for conflicting delimiters; these are the defaults.)
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder().keep_trailing_newline(true).build() {
        env.set_syntax(syntax);
    }
    env.add_function("secret", move |path: String| -> Result<Value, Error> {
        let path = path.trim_matches('/').to_string();
        if path.is_empty() || !path.contains('/') {
            return Err(Error::new(ErrorKind::InvalidOperation, "secret(path) needs MOUNT/PATH, e.g. secret/myapp"));
        }
        if let Some(d) = lock(&read).get(&path) {
            return Ok(Value::from(minijinja::value::Serde(&d.data)));
        }
        lock(&wanted).push(path);
        Err(Error::new(ErrorKind::InvalidOperation, NEEDS_READ))
    });
    env
}

/// Parse a file mode: octal text (`"0400"`, `"640"`).
pub(crate) fn parse_mode(s: &str) -> anyhow::Result<u32> {
    let m = u32::from_str_radix(s.trim().trim_start_matches("0o"), 8)
        .with_context(|| format!("invalid file mode {s:?}: expected octal, e.g. \"0400\""))?;
    anyhow::ensure!(m <= 0o7777, "invalid file mode {s:?}: expected at most 0o7777");
    Ok(m)
}

/// Write `contents` to `dest` atomically with permissions `mode`: a
/// temporary file in the same directory (so the rename stays within one
/// file system), written, given its mode, synced, renamed over `dest`, and
/// the directory synced so the rename survives a crash. A reader sees the
/// old file or the new one, never a part.
pub(crate) fn write_atomic(dest: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let what = || format!("cannot write {}", dest.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".vaultctl-")
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(what)?;
    tmp.write_all(contents).with_context(what)?;
    // Set after writing: a 0400 file is still writable through this handle,
    // and fchmod is not subject to the umask.
    tmp.as_file().set_permissions(Permissions::from_mode(mode)).with_context(what)?;
    tmp.as_file().sync_all().with_context(what)?;
    tmp.persist(dest).map_err(|e| e.error).with_context(what)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(what)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn render_with(source: &str, secrets: &[(&str, serde_json::Value)]) -> Result<String, Error> {
        let read: Arc<Mutex<BTreeMap<String, Secret>>> = Arc::default();
        for (p, v) in secrets {
            let data = v.as_object().unwrap().clone();
            lock(&read).insert(p.to_string(), Secret { data, version: 1, created_time: String::new() });
        }
        let env = environment(read, Arc::default());
        env.render_str(source, ())
    }

    #[test]
    fn templates() {
        let s = [("secret/app", serde_json::json!({"password": "p<w>&", "port": 5432}))];
        let out =
            render_with(r#"DB_PASSWORD={{ secret("secret/app").password }} {{ secret("/secret/app/")["port"] }}"#, &s);
        assert_eq!(out.unwrap(), "DB_PASSWORD=p<w>& 5432");
        let out = render_with(r#"{% for k, v in secret("secret/app")|items %}{{ k }}={{ v }};{% endfor %}"#, &s);
        assert_eq!(out.unwrap(), "password=p<w>&;port=5432;");
        assert_eq!(render_with("a\n", &s).unwrap(), "a\n", "the final newline is kept");
        // A misspelt field is an error, not an empty value; the error has no value.
        let e = render_with(r#"{{ secret("secret/app").pasword }}"#, &s).unwrap_err();
        assert!(!e.to_string().contains("p<w>"), "{e}");
        // Not read yet: the marker error.
        let e = render_with(r#"{{ secret("secret/other").x }}"#, &s).unwrap_err();
        assert!(e.to_string().contains(NEEDS_READ), "{e}");
        assert!(render_with(r#"{{ secret("nomount").x }}"#, &s).unwrap_err().to_string().contains("MOUNT/PATH"));
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0400").unwrap(), 0o400);
        assert_eq!(parse_mode("640").unwrap(), 0o640);
        assert!(parse_mode("0800").is_err() && parse_mode("77777").is_err());
    }

    #[test]
    fn atomic_write_replaces_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.env");
        write_atomic(&dest, b"one", 0o400).unwrap();
        write_atomic(&dest, b"two", 0o400).unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "two");
        assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o400);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        assert!(write_atomic(&dir.path().join("missing/x"), b"x", 0o400).is_err());
    }
}
