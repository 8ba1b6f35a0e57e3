//! `vaultctl import`: move hard-coded secrets into KV v2 and leave references.
//!
//! 1. The secrets of FILE are found with `scan`'s rules.
//! 2. They are written to the KV v2 secret in ONE write: a new version
//!    holding the current version's fields plus the imported ones (an
//!    imported field replaces a field of the same name), with check-and-set
//!    on the version read (Vault's `options.cas`), so a concurrent writer's
//!    version is never overwritten: on a mismatch the merge is redone on the
//!    newer version.
//! 3. FILE is rewritten with each value replaced by `vault:MOUNT/PATH#KEY`
//!    (the reference `vaultctl exec --env-file` and the library's `load`
//!    resolve): a temporary file in the same directory, same mode and owner,
//!    synced, renamed over FILE. A symbolic link or a file with several hard
//!    links is refused before anything is written (the rename would leave
//!    the plaintext in the link's target or the other links). No backup copy is left: it would be one more
//!    plaintext copy of the secrets. `--env-template OUT` writes OUT instead
//!    and leaves FILE; `--keep` leaves FILE as it is.
//!
//! Names are printed, values never.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Map, Value, json};
use zeroize::{Zeroize as _, Zeroizing};

use crate::common::{Env, Format};
use crate::scan::parse::{self, Entry, K8s, Quote};
use crate::scan::{self as scanner, Finding};

/// How many times the read-merge-write is redone when another writer wins.
const CAS_ATTEMPTS: usize = 5;

/// Arguments of `vaultctl import`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: vaultctl import .env --to secret/myapp && vaultctl exec --env-file .env -- python app.py\n\
    Supported files: .env, JSON, YAML, TOML/INI. Exit codes: 0 done (or nothing to do), 1 error."
)]
pub(crate) struct Args {
    /// The file holding the secrets.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The KV v2 secret to write them to, MOUNT/PATH (e.g. secret/myapp).
    #[arg(long, value_name = "MOUNT/PATH")]
    to: String,
    /// Show what would be done and write nothing (the current version is still read).
    #[arg(long)]
    dry_run: bool,
    /// Write a copy of FILE with references (for .env files; for other formats,
    /// NAME=reference lines) to OUT, and leave FILE as it is.
    #[arg(long, value_name = "OUT")]
    env_template: Option<PathBuf>,
    /// Write the secrets to the vault but leave FILE as it is.
    #[arg(long, conflicts_with = "env_template")]
    keep: bool,
}

/// A secret to move.
struct Move {
    /// The KV field it goes to.
    field: String,
    value: Zeroizing<String>,
    entry: Entry,
    /// What the write does to the field.
    status: &'static str,
}

/// `--to` split at its first segment (the mount, unless the server says otherwise).
fn split_target(to: &str) -> anyhow::Result<(String, String)> {
    let to = to.trim_matches('/');
    if to.contains('#') || to.split('/').any(str::is_empty) {
        bail!("--to must be MOUNT/PATH, e.g. secret/myapp (got {to:?})");
    }
    match to.split_once('/') {
        Some((m, p)) => Ok((m.to_string(), p.to_string())),
        None => bail!("--to must be MOUNT/PATH, e.g. secret/myapp (got {to:?})"),
    }
}

/// Find the mount serving `to` (Vault's `sys/internal/ui/mounts/{path}`,
/// as `vault kv` does), refusing anything but KV version 2. Without the
/// right to ask, the first path segment is the mount.
async fn mount_of(client: &vault_client::Client, to: &str) -> anyhow::Result<(String, String)> {
    let (mut mount, mut path) = split_target(to)?;
    if let Ok(Some(v)) = client.logical().read(&format!("sys/internal/ui/mounts/{}", to.trim_matches('/'))).await {
        let d = &v["data"];
        if let Some(m) = d["path"].as_str().map(|m| m.trim_matches('/')).filter(|m| !m.is_empty()) {
            let kind = d["type"].as_str().unwrap_or_default();
            let version = d["options"]["version"].as_str().unwrap_or_default();
            if kind != "kv" || version != "2" {
                bail!(
                    "{m}/ is not a KV version 2 mount (type {kind:?}, version {version:?}); enable one with: vaultctl secrets enable -path={m} kv-v2"
                );
            }
            let rest = to.trim_matches('/').strip_prefix(m).unwrap_or_default().trim_matches('/');
            if rest.is_empty() {
                bail!("--to names the mount {m}/ itself: add the secret's path, e.g. {m}/myapp");
            }
            (mount, path) = (m.to_string(), rest.to_string());
        }
    }
    Ok((mount, path))
}

/// The current version of the secret (0: none) and its fields.
async fn current(client: &vault_client::Client, mount: &str, path: &str) -> anyhow::Result<(u64, Map<String, Value>)> {
    let kv = client.kv2(mount);
    // The metadata knows the current version even when it is deleted
    // (check-and-set needs it); a token that may not read metadata falls
    // back to the latest live version.
    match client.logical().read(&format!("{mount}/metadata/{path}")).await {
        Ok(None) => Ok((0, Map::new())),
        Ok(Some(meta)) => {
            let v = meta["data"]["current_version"].as_u64().unwrap_or(0);
            let data = if v == 0 { None } else { kv.read_version(path, v).await? };
            Ok((v, data.map(|s| s.data).unwrap_or_default()))
        }
        Err(e) if e.status() == Some(403) => {
            let s = kv.read(path).await?;
            Ok(s.map(|s| (s.version, s.data)).unwrap_or_default())
        }
        Err(e) => Err(e.into()),
    }
}

/// Wipe the string values of a field map.
fn wipe(m: &mut Map<String, Value>) {
    for v in m.values_mut() {
        if let Value::String(s) = v {
            s.zeroize();
        }
    }
}

/// The reference text replacing a value, encoded for how it was quoted.
/// `in_scalar`: the value is the part after `=` of a bare YAML list item
/// (`- KEY=value`), which must stay bare.
fn replacement(format: parse::Format, e: &Entry, reference: &str, in_scalar: bool) -> String {
    match (format, e.quote) {
        (parse::Format::Yaml, Quote::None) if in_scalar => reference.to_string(),
        (parse::Format::Json, _) | (_, Quote::Double) => {
            let s = serde_json::to_string(reference).unwrap_or_else(|_| reference.to_string());
            s[1..s.len() - 1].to_string()
        }
        (parse::Format::Yaml, Quote::None) => format!("\"{reference}\""),
        (_, Quote::Single) => reference.replace('\'', "''"),
        _ => reference.to_string(),
    }
}

/// `text` with each moved value replaced by its reference.
fn rewrite(format: parse::Format, text: &str, moves: &[Move], target: &str) -> String {
    let mut spans: Vec<(&Entry, String)> = moves
        .iter()
        .map(|m| {
            let in_scalar = m.entry.span.start > 0 && text.as_bytes()[m.entry.span.start - 1] == b'=';
            (&m.entry, replacement(format, &m.entry, &format!("vault:{target}#{}", m.field), in_scalar))
        })
        .collect();
    spans.sort_by_key(|(e, _)| std::cmp::Reverse(e.span.start));
    let mut out = text.to_string();
    for (e, r) in spans {
        out.replace_range(e.span.clone(), &r);
    }
    out
}

/// Whether `text` parses as `format` (for the formats with a parser here).
fn parses(format: parse::Format, text: &str) -> bool {
    match format {
        parse::Format::Json => serde_json::from_str::<Value>(text).is_ok(),
        parse::Format::Yaml => {
            use serde::Deserialize as _;
            serde_norway::Deserializer::from_str(text).all(|d| serde_norway::Value::deserialize(d).is_ok())
        }
        _ => true,
    }
}

/// Refuse to rewrite `file` when the rewrite would leave its plaintext
/// behind: a symbolic link (the rename replaces the link, the target keeps
/// the secrets), a file with other hard links (they keep the old inode), or
/// anything but a regular file. Returns the file's metadata, to give the
/// rewritten file the same mode and owner. Checked before anything is
/// written to the vault.
fn check_rewritable(file: &Path) -> anyhow::Result<std::fs::Metadata> {
    use std::os::unix::fs::MetadataExt as _;
    let link = std::fs::symlink_metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    let alternatives = "or import with --env-template OUT (or --keep) and remove the plaintext yourself";
    if link.file_type().is_symlink() {
        let target = std::fs::canonicalize(file).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into());
        bail!(
            "{} is a symbolic link (to {target}): rewriting it would replace the link and leave the secrets in {target}. \
             Import the file it points to (vaultctl import {target} ...), {alternatives}",
            file.display()
        );
    }
    if !link.file_type().is_file() {
        bail!("{} is not a regular file", file.display());
    }
    if link.nlink() > 1 {
        bail!(
            "{} has {} hard links: rewriting it would leave the secrets in the other {}. \
             Remove the other links first (find / -xdev -samefile {}), {alternatives}",
            file.display(),
            link.nlink(),
            if link.nlink() == 2 { "one" } else { "ones" },
            file.display()
        );
    }
    Ok(link)
}

/// Write `contents` to `path` atomically: a temporary file in the same
/// directory, synced, renamed over `path`. With `like` (the metadata of the
/// file being replaced, from [`check_rewritable`]): the same mode and owner,
/// and `path` must still be that file (not a link swapped in since).
fn write_atomic(path: &Path, contents: &str, like: Option<&std::fs::Metadata>) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".vaultctl-import-")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(contents.as_bytes())?;
    if let Some(like) = like {
        let mine = tmp.as_file().metadata()?;
        if (mine.uid(), mine.gid()) != (like.uid(), like.gid()) {
            // The application may run as the file's owner or group: keep
            // them, or leave the old file (it would become unreadable to it).
            std::os::unix::fs::fchown(tmp.as_file(), Some(like.uid()), Some(like.gid())).with_context(|| {
                format!(
                    "cannot give the new {} its owner {}:{} (run as that user or as root)",
                    path.display(),
                    like.uid(),
                    like.gid()
                )
            })?;
        }
        // After the chown, which may clear set-id bits.
        tmp.as_file().set_permissions(like.permissions())?;
    }
    tmp.as_file().sync_all()?;
    if let Some(like) = like {
        let now = check_rewritable(path)?;
        if (now.dev(), now.ino()) != (like.dev(), like.ino()) {
            bail!("{} was replaced while importing; it was left as it is", path.display());
        }
    }
    tmp.persist(path).map_err(|e| anyhow!("cannot replace {}: {}", path.display(), e.error))?;
    Ok(())
}

/// An environment variable name for a field (`database.password` → `DATABASE_PASSWORD`).
fn env_name(field: &str) -> String {
    field.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

pub(crate) async fn run(args: Args, env: &Env) -> anyhow::Result<ExitCode> {
    let file = &args.file;
    split_target(&args.to)?;
    let format = parse::detect(file);
    if matches!(format, parse::Format::Source(_) | parse::Format::Shell | parse::Format::Text) {
        bail!(
            "cannot import from {}: {} files are not supported (import reads .env, JSON, YAML and TOML/INI files). \
             Move such a value with `vaultctl kv put` and read it at startup with the library's `load` or `vaultctl exec`",
            file.display(),
            format.name()
        );
    }
    // Only when FILE itself is rewritten (dry runs included, to say so early).
    let rewrites_file = args.env_template.is_none() && !args.keep;
    let meta = if rewrites_file { Some(check_rewritable(file)?) } else { None };
    let bytes = Zeroizing::new(std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?);
    let text =
        Zeroizing::new(String::from_utf8(bytes.to_vec()).map_err(|_| anyhow!("{} is not UTF-8 text", file.display()))?);
    let findings: Vec<Finding> = scanner::scan_text(format, &text);

    // What can move, and under which field names.
    let mut moves: Vec<Move> = Vec::new();
    let mut left: Vec<(Finding, &'static str)> = Vec::new();
    for f in findings {
        match &f.entry {
            Some(e) if e.k8s == K8s::Data => left.push((f, "base64 data of a Kubernetes Secret")),
            Some(e) => {
                let value = scanner::value_of(format, &text, e);
                moves.push(Move { field: e.key.clone(), value, entry: e.clone(), status: "new" });
            }
            None => left.push((f, "not a value assigned to a name")),
        }
    }
    // The same name for different values (nested files): qualify with the path.
    let clash =
        |moves: &[Move], i: usize| moves.iter().any(|o| o.field == moves[i].field && *o.value != *moves[i].value);
    let clashing: Vec<bool> = (0..moves.len()).map(|i| clash(&moves, i)).collect();
    for (m, c) in moves.iter_mut().zip(clashing) {
        if c && !m.entry.path.is_empty() {
            m.field = format!("{}_{}", m.entry.path.join("_"), m.entry.key);
        }
    }
    if let Some(m) = (0..moves.len()).find(|i| clash(&moves, *i)) {
        bail!("{} holds different values named {}: rename one, then import again", file.display(), moves[m].field);
    }

    let client = env.client()?;
    let (mount, path) = mount_of(&client, &args.to).await?;
    let target = format!("{mount}/{path}");
    let mut report = Report { format: env.format, lines: Vec::new(), warnings: Vec::new() };

    if moves.is_empty() {
        report.say(&format!("No secrets to import in {}.", file.display()));
        report.left(&left, file);
        report.finish(json!({"path": target, "fields": [], "left": left_json(&left, file)}))?;
        return Ok(ExitCode::SUCCESS);
    }

    // Read, merge, write with check-and-set; redo on a lost race.
    let mut version = None;
    for attempt in 1..=CAS_ATTEMPTS {
        let (cur, mut existing) = match current(&client, &mount, &path).await {
            Ok(c) => c,
            Err(e) if args.dry_run => {
                report.say(&format!("(cannot read the current version of {target}: {e:#})"));
                (0, Map::new())
            }
            Err(e) => return Err(e.context(format!("cannot read {target}"))),
        };
        for m in &mut moves {
            m.status = match existing.get(&m.field) {
                None => "new",
                Some(Value::String(s)) if *s == *m.value => "unchanged",
                Some(_) => "replaces the current value",
            };
        }
        if args.dry_run || moves.iter().all(|m| m.status == "unchanged") {
            wipe(&mut existing);
            version = Some(cur);
            break;
        }
        for m in &moves {
            existing.insert(m.field.clone(), Value::String(m.value.to_string()));
        }
        let body = json!({"options": {"cas": cur}, "data": existing});
        wipe(&mut existing);
        let result = client.logical().write(&format!("{mount}/data/{path}"), &body).await;
        let mut body = body;
        if let Some(d) = body.get_mut("data").and_then(Value::as_object_mut) {
            wipe(d);
        }
        match result {
            Ok(resp) => {
                version = resp.and_then(|r| r["data"]["version"].as_u64());
                break;
            }
            Err(vault_client::Error::Api { status: 400, errors })
                if attempt < CAS_ATTEMPTS && errors.iter().any(|e| e.contains("check-and-set")) =>
            {
                continue;
            }
            Err(e) => return Err(anyhow::Error::from(e).context(format!("cannot write {target}"))),
        }
    }
    let version = version.ok_or_else(|| anyhow!("{target} kept changing; nothing was written, try again"))?;

    let unchanged = moves.iter().all(|m| m.status == "unchanged");
    let verb = match (args.dry_run, unchanged) {
        (true, _) => format!("Would write {} secret(s) to {target} (current version {version}):", moves.len()),
        (false, true) => format!("{} secret(s) already in {target} (version {version}), nothing written:", moves.len()),
        (false, false) => format!("Wrote {} secret(s) to {target} (version {version}):", moves.len()),
    };
    report.say(&verb);
    for m in &moves {
        report.say(&format!("  {} ({}; {}:{})", m.field, m.status, file.display(), m.entry.line));
    }

    // The file with references, where it goes.
    let rewritten = rewrite(format, &text, &moves, &target);
    if parses(format, &text) && !parses(format, &rewritten) {
        bail!("the rewritten {} would not parse as {}; it was left as it is", file.display(), format.name());
    }
    let template_text = match format {
        parse::Format::Dotenv => rewritten.clone(),
        _ => moves.iter().map(|m| format!("{}=vault:{target}#{}\n", env_name(&m.field), m.field)).collect(),
    };
    let (written, verb) = match (&args.env_template, args.keep) {
        (Some(out), _) => (Some(out.clone()), "Wrote the template"),
        (None, true) => (None, ""),
        (None, false) => (Some(file.clone()), "Rewrote"),
    };
    if let Some(out) = &written {
        let what = if args.dry_run { "Would write" } else { verb };
        report.say(&format!(
            "{what} {}: {} value(s) replaced by vault:{target}#NAME references.",
            out.display(),
            moves.len()
        ));
        if !args.dry_run {
            let result = if args.env_template.is_some() {
                write_atomic(out, &template_text, None)
            } else {
                write_atomic(out, &rewritten, meta.as_ref())
            };
            result.with_context(|| {
                format!("the secrets are in {target} (version {version}) but {} was not written", out.display())
            })?;
        }
    } else {
        report.say(&format!("{} left as it is (--keep).", file.display()));
    }
    report.left(&left, file);
    if format == parse::Format::Dotenv && !args.dry_run {
        let envfile = written.as_ref().unwrap_or(file);
        report.say(&format!("Run the program with them: vaultctl exec --env-file {} -- COMMAND", envfile.display()));
    }
    let fields: Vec<Value> = moves
        .iter()
        .map(|m| json!({"name": m.field, "status": m.status, "file": file.display().to_string(), "line": m.entry.line}))
        .collect();
    report.finish(json!({
        "path": target,
        "version": version,
        "dry_run": args.dry_run,
        "fields": fields,
        "rewritten": written.map(|p| p.display().to_string()),
        "left": left_json(&left, file),
    }))?;
    Ok(ExitCode::SUCCESS)
}

fn left_json(left: &[(Finding, &str)], file: &Path) -> Value {
    left.iter()
        .map(|(f, why)| json!({"file": file.display().to_string(), "line": f.line, "key": f.key, "rule": f.rule, "reason": why}))
        .collect()
}

/// Output: lines for people, one JSON document for programs.
struct Report {
    format: Format,
    lines: Vec<String>,
    warnings: Vec<String>,
}

impl Report {
    fn say(&mut self, line: &str) {
        self.lines.push(line.to_string());
    }

    fn left(&mut self, left: &[(Finding, &str)], file: &Path) {
        for (f, why) in left {
            self.warnings.push(format!(
                "Warning: left in place: {}:{}: {} ({}): {why}; move it by hand",
                file.display(),
                f.line,
                f.key,
                f.rule
            ));
        }
    }

    fn finish(self, v: Value) -> anyhow::Result<()> {
        let text = match self.format {
            Format::Json => format!("{}\n", serde_json::to_string_pretty(&v)?),
            _ => self.lines.iter().map(|l| format!("{l}\n")).collect(),
        };
        if self.format != Format::Json {
            let w: String = self.warnings.iter().map(|l| format!("{l}\n")).collect();
            let _ = std::io::stderr().write_all(w.as_bytes());
        }
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|()| out.flush())?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
