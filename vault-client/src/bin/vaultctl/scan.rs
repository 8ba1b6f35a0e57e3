//! `vaultctl scan`: find hard-coded secrets in files (names and places, never values).
//!
//! Each file is read according to its format (see [`parse`]): the values
//! assigned to names are checked against the rules in [`rules`] (known
//! token formats, private keys, credentials in URLs, secret-sounding names,
//! random-looking values), and every line is also checked on its own for
//! token formats, private keys and credentials in URLs (prose, comments,
//! templates). A finding prints as `FILE:LINE: KEY (RULE)`; values are never
//! printed.
//!
//! Exit codes: 0 nothing found, 1 secrets found, 2 usage error or a file
//! or directory that could not be read (the scan is incomplete; findings
//! are still printed).

pub(crate) mod parse;
pub(crate) mod rules;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use zeroize::Zeroizing;

use crate::common::{Env, Format};
use parse::{Entry, K8s, Quote};

/// The marker that silences findings on its line.
pub(crate) const IGNORE_MARKER: &str = "vaultctl:ignore";

/// The file of glob patterns to skip, read from each directory scanned.
pub(crate) const IGNORE_FILE: &str = ".vaultctl-scan-ignore";

/// Directories never entered: version control, build output, dependencies.
const SKIP_DIRS: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "target",
    "node_modules",
    "__pycache__",
    ".venv",
    "venv",
    ".tox",
    ".mypy_cache",
    ".pytest_cache",
    ".terraform",
    ".gradle",
];

/// Files never read: lock files (full of hashes) and the ignore file.
const SKIP_FILES: &[&str] = &[
    "Cargo.lock",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "poetry.lock",
    "Pipfile.lock",
    "go.sum",
    "composer.lock",
    "Gemfile.lock",
    "uv.lock",
    IGNORE_FILE,
];

/// Arguments of `vaultctl scan`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Prints FILE:LINE: KEY (RULE) for each hard-coded secret, never the value.\n\
    A line containing `vaultctl:ignore` (e.g. in a `# vaultctl:ignore` comment) is not reported;\n\
    glob patterns in a .vaultctl-scan-ignore file of a scanned directory skip files.\n\
    Exit codes: 0 nothing found, 1 secrets found, 2 usage error or unreadable file (scan incomplete).")]
pub(crate) struct Args {
    /// Files or directories to scan (default: the current directory).
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Skip files larger than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    max_size: u64,
    /// Skip files matching this glob (repeatable; like a line of .vaultctl-scan-ignore).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
}

/// A hard-coded secret found in a file.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    /// 1-based line.
    pub(crate) line: usize,
    /// The name the value is assigned to, `-` when none (a token in prose).
    pub(crate) key: String,
    /// The rule it breaks.
    pub(crate) rule: &'static str,
    /// The assignment, when the value is one.
    pub(crate) entry: Option<Entry>,
}

/// The value of `e` in `text` as the file's readers see it (quotes' escapes decoded).
pub(crate) fn value_of(format: parse::Format, text: &str, e: &Entry) -> Zeroizing<String> {
    let raw = &text[e.span.clone()];
    Zeroizing::new(match (format, e.quote) {
        (parse::Format::Json, _) => parse::unescape_json(raw),
        (parse::Format::Dotenv | parse::Format::Yaml | parse::Format::Ini, Quote::Double) => unescape_c(raw),
        (parse::Format::Yaml, Quote::Single) => raw.replace("''", "'"),
        _ => raw.to_string(),
    })
}

/// Backslash escapes of double-quoted .env / YAML / TOML strings.
fn unescape_c(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The hard-coded secrets in `text`, read as `format`, in line order.
pub(crate) fn scan_text(format: parse::Format, text: &str) -> Vec<Finding> {
    let ignored: BTreeSet<usize> =
        text.lines().enumerate().filter(|(_, l)| l.contains(IGNORE_MARKER)).map(|(i, _)| i + 1).collect();
    let entries = parse::entries(format, text);
    let mut out: Vec<Finding> = Vec::new();
    for e in &entries {
        if ignored.contains(&e.line) {
            continue;
        }
        let value = value_of(format, text, e);
        if let Some(rule) = rules::check_value(&e.key, &value, e.k8s != K8s::No, format == parse::Format::Dotenv) {
            out.push(Finding { line: e.line, key: e.key.clone(), rule, entry: Some(e.clone()) });
        }
    }
    // Lines covered by a reported value (a multi-line key) are not re-checked.
    let lines = parse::Lines::new(text);
    let flagged: BTreeSet<usize> = out
        .iter()
        .flat_map(|f| match &f.entry {
            Some(e) => lines.line_of(e.span.start)..=lines.line_of(e.span.end),
            None => f.line..=f.line,
        })
        .collect();
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let n = i + 1;
        let start = offset;
        offset += line.len();
        if ignored.contains(&n) || flagged.contains(&n) {
            continue;
        }
        if let Some((rule, r)) = rules::check_text(line) {
            let (a, b) = (start + r.start, start + r.end);
            let entry =
                entries.iter().find(|e| e.span.start <= a && b <= e.span.end || a <= e.span.start && e.span.end <= b);
            let key = entry.map_or_else(|| "-".to_string(), |e| e.key.clone());
            out.push(Finding { line: n, key, rule, entry: None });
        }
    }
    out.sort_by_key(|f| f.line);
    out
}

/// Whether `bytes` look like a binary file (a NUL in the first 8 KiB).
fn is_binary(bytes: &[u8]) -> bool {
    bytes.iter().take(8192).any(|b| *b == 0)
}

/// Glob patterns of files to skip, gitignore-like: a pattern without `/`
/// matches a file or directory name at any depth, one with `/` the path
/// from the scanned directory; `*` and `?` stay within a name, `**`
/// crosses directories.
#[derive(Debug, Default, Clone)]
pub(crate) struct Ignore {
    patterns: Vec<String>,
}

impl Ignore {
    pub(crate) fn add(&mut self, pattern: &str) {
        let p = pattern.trim();
        if !p.is_empty() && !p.starts_with('#') {
            self.patterns.push(p.trim_start_matches("./").trim_end_matches('/').to_string());
        }
    }

    /// Whether `rel` (a `/`-separated path from the scanned directory) is skipped.
    pub(crate) fn matches(&self, rel: &str) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        self.patterns.iter().any(|p| {
            if p.contains('/') {
                glob(p.trim_start_matches('/').as_bytes(), rel.as_bytes())
            } else {
                glob(p.as_bytes(), name.as_bytes())
            }
        })
    }
}

/// `*` (any run without `/`), `**` (any run, `/` included; `**/` may also
/// match nothing), `?` (one character but `/`).
///
/// The ignore file comes from the scanned tree, so the pattern is untrusted:
/// instead of trying every split for every `*` (exponential backtracking),
/// fill the table "does `p[i..]` match `s[j..]`" from the pattern's end, each
/// cell from at most two others: O(len(p) * len(s)) time, O(len(s)) memory.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let n = s.len();
    // Row i needs rows i+1 ..= i+3 only (`**/` is three bytes): four rows.
    let mut rows: [Vec<bool>; 4] = std::array::from_fn(|_| vec![false; n + 1]);
    rows[p.len() % 4][n] = true;
    for i in (0..p.len()).rev() {
        let mut cur = std::mem::take(&mut rows[i % 4]);
        cur.resize(n + 1, false);
        let next = &rows[(i + 1) % 4];
        match p[i] {
            b'*' if p.get(i + 1) == Some(&b'*') => {
                let r = if p.get(i + 2) == Some(&b'/') { i + 3 } else { i + 2 };
                let rest = &rows[r % 4];
                cur[n] = rest[n];
                for j in (0..n).rev() {
                    cur[j] = rest[j] || cur[j + 1];
                }
            }
            b'*' => {
                cur[n] = next[n];
                for j in (0..n).rev() {
                    cur[j] = next[j] || (s[j] != b'/' && cur[j + 1]);
                }
            }
            c => {
                cur[n] = false;
                for j in 0..n {
                    cur[j] = if c == b'?' { s[j] != b'/' } else { s[j] == c } && next[j + 1];
                }
            }
        }
        rows[i % 4] = cur;
    }
    rows[0][0]
}

/// One scanned file's results.
#[derive(Debug, Serialize)]
struct Reported {
    file: String,
    line: usize,
    key: String,
    rule: &'static str,
}

/// The walk's state.
#[derive(Debug, Default)]
struct Scan {
    findings: Vec<Reported>,
    errors: Vec<String>,
    files: usize,
    skipped: usize,
}

impl Scan {
    fn walk_dir(&mut self, dir: &Path, rel: &str, ignore: &Ignore, max: u64) {
        let read = match std::fs::read_dir(dir) {
            Ok(r) => r,
            Err(e) => return self.errors.push(format!("cannot read {}: {e}", dir.display())),
        };
        let mut items: Vec<_> =
            read.filter_map(|e| e.map_err(|e| self.errors.push(format!("{}: {e}", dir.display()))).ok()).collect();
        items.sort_by_key(std::fs::DirEntry::file_name);
        for item in items {
            let name = item.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            if ignore.matches(&child_rel) {
                continue;
            }
            let path = item.path();
            // Symbolic links are not followed (loops, files outside the tree).
            let Ok(ft) = item.file_type() else { continue };
            if ft.is_dir() {
                if !SKIP_DIRS.contains(&name.as_str()) {
                    self.walk_dir(&path, &child_rel, ignore, max);
                }
            } else if ft.is_file() && !SKIP_FILES.contains(&name.as_str()) {
                self.file(&path, max);
            }
        }
    }

    fn file(&mut self, path: &Path, max: u64) {
        match std::fs::metadata(path) {
            Ok(m) if m.len() > max => {
                self.skipped += 1;
                return;
            }
            Ok(_) => {}
            Err(e) => return self.errors.push(format!("cannot read {}: {e}", path.display())),
        }
        let bytes = match std::fs::read(path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) => return self.errors.push(format!("cannot read {}: {e}", path.display())),
        };
        if is_binary(&bytes) {
            self.skipped += 1;
            return;
        }
        let text = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
        self.files += 1;
        let file = path.display().to_string();
        for f in scan_text(parse::detect(path), &text) {
            self.findings.push(Reported { file: file.clone(), line: f.line, key: f.key, rule: f.rule });
        }
    }
}

/// The ignore patterns of `dir`'s .vaultctl-scan-ignore, plus `extra`.
fn load_ignore(dir: &Path, extra: &[String], errors: &mut Vec<String>) -> Ignore {
    let mut ig = Ignore::default();
    let file = dir.join(IGNORE_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => text.lines().for_each(|l| ig.add(l)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(format!("cannot read {}: {e}", file.display())),
    }
    extra.iter().for_each(|p| ig.add(p));
    ig
}

pub(crate) async fn run(args: Args, env: &Env) -> anyhow::Result<ExitCode> {
    let mut scan = Scan::default();
    let paths = if args.paths.is_empty() { vec![PathBuf::from(".")] } else { args.paths.clone() };
    for p in &paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => {
                let ig = load_ignore(p, &args.exclude, &mut scan.errors);
                scan.walk_dir(p, "", &ig, args.max_size);
            }
            Ok(_) => scan.file(p, args.max_size),
            Err(e) => scan.errors.push(format!("cannot read {}: {e}", p.display())),
        }
    }
    let mut out = String::new();
    // JSON for programs; anything else (the table format) for people.
    match env.format {
        Format::Json => {
            let v = serde_json::json!({
                "findings": scan.findings,
                "files_scanned": scan.files,
                "files_skipped": scan.skipped,
                "errors": scan.errors,
            });
            out = format!("{}\n", serde_json::to_string_pretty(&v)?);
        }
        _ => {
            for f in &scan.findings {
                out.push_str(&format!("{}:{}: {} ({})\n", f.file, f.line, f.key, f.rule));
            }
        }
    }
    let mut stderr = String::new();
    if env.format != Format::Json {
        for e in &scan.errors {
            stderr.push_str(&format!("Error: {e}\n"));
        }
        let files: BTreeSet<&str> = scan.findings.iter().map(|f| f.file.as_str()).collect();
        stderr.push_str(&match scan.findings.len() {
            0 => format!("No hard-coded secrets found ({} files scanned).\n", scan.files),
            n => format!(
                "{n} hard-coded secret{} in {} file{} ({} files scanned). Move them with `vaultctl import FILE --to secret/APP`.\n",
                if n == 1 { "" } else { "s" },
                files.len(),
                if files.len() == 1 { "" } else { "s" },
                scan.files
            ),
        });
    }
    let _ = std::io::stderr().write_all(stderr.as_bytes());
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        anyhow::bail!("cannot write output: {e}");
    }
    Ok(ExitCode::from(if !scan.errors.is_empty() {
        2
    } else if scan.findings.is_empty() {
        0
    } else {
        1
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
