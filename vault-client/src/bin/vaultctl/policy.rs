//! `vaultctl policy read|write|list|delete|fmt`: ACL policies
//! (`sys/policies/acl`).

use std::io::Write as _;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::common::Env;
use crate::input::read_stdin;
use crate::output::{Outcome, keys, message, render, warnings};

/// `vaultctl policy SUBCOMMAND`.
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCmd {
    /// Print a policy's text (exit code 2 if there is none).
    Read {
        /// Policy name.
        name: String,
    },
    /// Create or replace a policy from FILE (`-`: stdin).
    Write {
        /// Policy name.
        name: String,
        /// HCL or JSON policy file, or `-` for stdin.
        file: String,
    },
    /// List the policies.
    List,
    /// Delete a policy.
    Delete {
        /// Policy name.
        name: String,
    },
    /// Re-indent a policy file in place (two spaces per nesting level,
    /// trailing spaces and repeated blank lines removed).
    Fmt {
        /// The HCL policy file.
        file: String,
    },
}

fn policy_path(name: &str) -> anyhow::Result<String> {
    let n = name.trim();
    if n.is_empty() || n.contains('/') {
        anyhow::bail!("invalid policy name {n:?}");
    }
    Ok(format!("sys/policies/acl/{n}"))
}

pub(crate) async fn run(cmd: PolicyCmd, env: &Env) -> anyhow::Result<Outcome> {
    let fmt = env.format;
    if let PolicyCmd::Fmt { file } = &cmd {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
        let formatted = format_hcl(&text)?;
        let path = std::path::Path::new(file);
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
        tmp.write_all(formatted.as_bytes()).with_context(|| format!("cannot write {file}"))?;
        if let Ok(meta) = std::fs::metadata(path) {
            let _ = std::fs::set_permissions(tmp.path(), meta.permissions());
        }
        tmp.persist(path).map_err(|e| anyhow::anyhow!("cannot replace {file}: {}", e.error))?;
        let mut o = Outcome::default();
        message(&mut o, fmt, &format!("Success! Formatted policy: {file}"));
        return Ok(o);
    }
    let c = env.client()?;
    let mut o = Outcome::default();
    match cmd {
        PolicyCmd::Read { name } => {
            let Some(v) = c.logical().read(&policy_path(&name)?).await? else {
                return Ok(Outcome::no_data(&policy_path(&name)?));
            };
            let text = v.get("data").and_then(|d| d.get("policy")).and_then(Value::as_str).unwrap_or("").to_string();
            render(&mut o, fmt, &v, |out| {
                out.push_str(&text);
                if !text.ends_with('\n') {
                    out.push('\n');
                }
                Ok(())
            })?;
        }
        PolicyCmd::Write { name, file } => {
            let text = if file == "-" {
                read_stdin()?.to_string()
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
            };
            if let Some(v) = c.logical().write(&policy_path(&name)?, &json!({ "policy": text })).await? {
                warnings(&mut o, &v);
            }
            message(&mut o, fmt, &format!("Success! Uploaded policy: {name}"));
        }
        PolicyCmd::List => {
            let ks = c.logical().list("sys/policies/acl").await?;
            keys(&mut o, fmt, &ks)?;
            if fmt == crate::common::Format::Human {
                // Vault's `policy list` prints bare names.
                o.stdout = zeroize::Zeroizing::new(ks.iter().map(|k| format!("{k}\n")).collect());
            }
        }
        PolicyCmd::Delete { name } => {
            c.logical().delete(&policy_path(&name)?).await?;
            message(&mut o, fmt, &format!("Success! Deleted policy: {name}"));
        }
        PolicyCmd::Fmt { .. } => {}
    }
    Ok(o)
}

/// Re-indent HCL by nesting depth (braces and brackets outside strings and
/// comments). Refuses unbalanced input rather than guessing.
fn format_hcl(text: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut depth: i64 = 0;
    let mut blank = false;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() {
            if !blank && !out.is_empty() {
                out.push('\n');
            }
            blank = true;
            continue;
        }
        blank = false;
        let (closes_first, net) = scan_line(t);
        let indent = if closes_first { depth - 1 } else { depth }.max(0);
        out.push_str(&"  ".repeat(usize::try_from(indent).unwrap_or(0)));
        out.push_str(t);
        out.push('\n');
        depth += net;
        if depth < 0 {
            anyhow::bail!("unbalanced braces at line {}", n + 1);
        }
    }
    if depth != 0 {
        anyhow::bail!("unbalanced braces: {depth} left open at the end");
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    Ok(out)
}

/// (whether the line starts with a closer, net depth change)
/// of one trimmed line, skipping strings and `#`/`//` comments.
fn scan_line(t: &str) -> (bool, i64) {
    let closes_first = t.starts_with('}') || t.starts_with(']');
    let mut net = 0;
    let mut in_str = false;
    let mut escaped = false;
    let mut prev = ' ';
    for ch in t.chars() {
        if in_str {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_str = false;
            }
            prev = ch;
            continue;
        }
        match ch {
            '"' => in_str = true,
            '#' => break,
            '/' if prev == '/' => break,
            '{' | '[' => net += 1,
            '}' | ']' => net -= 1,
            _ => {}
        }
        prev = ch;
    }
    (closes_first, net)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn formats_policies() {
        let messy = "path \"secret/data/*\" {\ncapabilities = [\"read\",   \"list\"]   \n      }\n\n\n\n# a { comment\npath \"sys/x\" {\n capabilities = [\n\"deny\"\n]\n}\n\n";
        let want = "path \"secret/data/*\" {\n  capabilities = [\"read\",   \"list\"]\n}\n\n# a { comment\npath \"sys/x\" {\n  capabilities = [\n    \"deny\"\n  ]\n}\n";
        assert_eq!(format_hcl(messy).unwrap(), want);
        assert_eq!(format_hcl(want).unwrap(), want, "idempotent");
        assert!(format_hcl("path \"a\" {\n").is_err());
        assert!(format_hcl("}\n").is_err());
        assert_eq!(format_hcl("path \"a{\" {\n}\n").unwrap(), "path \"a{\" {\n}\n");
        assert!(policy_path("a/b").is_err());
    }
}
