//! Finding the values assigned to names in a file, per format, with their
//! exact byte ranges (so `import` can replace them in place, keeping the
//! rest of the file as it was) and line numbers.
//!
//! The parsers are deliberately forgiving and line-oriented: a scanner must
//! read half-broken, templated and commented files that a strict parser
//! would refuse, and it needs positions that serde parsers do not give.

use std::ops::Range;
use std::path::Path;

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `KEY=value` lines: `.env` files (also `export KEY=...`, Dockerfile `ENV`/`ARG`).
    Dotenv,
    /// JSON (comments tolerated).
    Json,
    /// YAML, including docker-compose files and Kubernetes manifests.
    Yaml,
    /// TOML, INI, `.properties`, `.conf`.
    Ini,
    /// Program source: assignments of string literals. `true`: a language
    /// where `` `...` `` is a string (JavaScript, TypeScript, Go).
    Source(bool),
    /// Shell scripts, Dockerfiles: both `KEY=value` lines and assignments.
    Shell,
    /// Anything else that is text (README, notes): both, prose ignored.
    Text,
}

impl Format {
    /// A short name for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Dotenv => ".env",
            Format::Json => "JSON",
            Format::Yaml => "YAML",
            Format::Ini => "TOML/INI",
            Format::Source(_) => "source code",
            Format::Shell => "shell",
            Format::Text => "text",
        }
    }
}

/// Source file extensions read as [`Format::Source`].
const SOURCE_EXTENSIONS: &[&str] = &[
    "py", "pyw", "js", "mjs", "cjs", "jsx", "ts", "tsx", "go", "rs", "rb", "java", "kt", "kts", "scala", "groovy",
    "gradle", "php", "cs", "swift", "c", "h", "cc", "cpp", "hpp", "m", "pl", "pm", "lua", "r", "ex", "exs", "dart",
    "tf", "hcl", "vue", "svelte", "erl", "clj", "fs", "vb",
];

/// Extensions of languages where `` `...` `` is a string literal.
const BACKTICK_STRINGS: &[&str] = &["js", "mjs", "cjs", "jsx", "ts", "tsx", "go", "vue", "svelte"];

/// Function names whose second argument is a default value for the
/// setting named by the first: `os.getenv("PASSWORD", "...")`.
const GETTERS: &[&str] = &["getenv", "get", "fetch", "env", "getProperty", "GetEnv", "Getenv", "setdefault", "get_or"];

/// The format of the file at `path`, from its name.
pub(crate) fn detect(path: &Path) -> Format {
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if name == ".env" || name.starts_with(".env.") || ext == "env" || name == ".envrc" {
        return Format::Dotenv;
    }
    if name == "dockerfile" || name.starts_with("dockerfile.") || ext == "dockerfile" || name == "makefile" {
        return Format::Shell;
    }
    // INI files known by name: package index and cloud tool credentials.
    if [".pypirc", ".gitconfig", ".s3cfg", ".boto", "credentials"].contains(&name.as_str()) {
        return Format::Ini;
    }
    match ext.as_str() {
        "json" | "jsonc" | "json5" => Format::Json,
        "yaml" | "yml" => Format::Yaml,
        "toml" | "ini" | "cfg" | "conf" | "properties" | "cnf" => Format::Ini,
        "sh" | "bash" | "zsh" | "ksh" | "ps1" | "bat" | "cmd" => Format::Shell,
        e if SOURCE_EXTENSIONS.contains(&e) => Format::Source(BACKTICK_STRINGS.contains(&e)),
        _ => Format::Text,
    }
}

/// How a value was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quote {
    /// Bare.
    None,
    /// `"..."`.
    Double,
    /// `'...'`.
    Single,
    /// `` `...` ``, or a multi-line `"""`/`'''` string.
    Other,
}

/// Where a Kubernetes Secret holds a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum K8s {
    /// Not in a Secret.
    No,
    /// In `data` (base64).
    Data,
    /// In `stringData`.
    StringData,
}

/// A value assigned to a name. Holds positions only, never the value.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// 1-based line where the value starts.
    pub(crate) line: usize,
    /// The name it is assigned to (for an env-var list entry
    /// `{name: X, value: ...}`, X).
    pub(crate) key: String,
    /// The names of the enclosing mappings / sections (outermost first).
    pub(crate) path: Vec<String>,
    /// The value's bytes in the file (inside the quotes).
    pub(crate) span: Range<usize>,
    /// How it is quoted.
    pub(crate) quote: Quote,
    /// Whether it is in a Kubernetes Secret.
    pub(crate) k8s: K8s,
}

/// Byte offsets of line starts, to turn offsets into line numbers.
#[derive(Debug)]
pub(crate) struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    pub(crate) fn new(text: &str) -> Lines {
        let mut starts = vec![0];
        starts.extend(text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1));
        Lines { starts }
    }

    /// The 1-based line of byte `offset`.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|s| *s <= offset)
    }
}

/// Every line of `text` with its starting byte offset (without the line end).
fn lines_with_offsets(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut offset = 0;
    text.split_inclusive('\n').map(move |l| {
        let start = offset;
        offset += l.len();
        (start, l.trim_end_matches('\n').trim_end_matches('\r'))
    })
}

/// The values assigned to names in `text`, read as `format`.
pub(crate) fn entries(format: Format, text: &str) -> Vec<Entry> {
    let lines = Lines::new(text);
    let mut out = match format {
        Format::Dotenv => dotenv(text, &lines, false, false),
        Format::Json => {
            let mut v = json(text, &lines);
            if v.is_empty() {
                v = source(text, &lines, true);
            }
            v
        }
        Format::Yaml => yaml(text, &lines),
        Format::Ini => ini(text, &lines),
        Format::Source(backticks) => source(text, &lines, backticks),
        Format::Shell => [dotenv(text, &lines, true, false), source(text, &lines, true)].concat(),
        // In prose (Markdown), backticks mark code, not strings.
        Format::Text => [dotenv(text, &lines, false, true), source(text, &lines, false)].concat(),
    };
    out.sort_by_key(|e| (e.span.start, e.span.end));
    out.dedup_by_key(|e| e.span.start);
    out
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')
}

/// The end of a quoted string starting at `open` (the quote), honouring
/// backslash escapes when `escapes`: the offset of the closing quote.
fn closing_quote(b: &[u8], open: usize, escapes: bool) -> Option<usize> {
    let q = b[open];
    let mut i = open + 1;
    while i < b.len() {
        if escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// `.env` files: `[export ] KEY=value`, values bare (a ` #` starts a
/// comment), `'single'` or `"double"` quoted (may span lines). `shell`:
/// a bare value ends at a blank (`PGPASSWORD=$X psql`). `strict`: only
/// upper-case names (read in prose files, where `word = text` is prose).
fn dotenv(text: &str, lines: &Lines, shell: bool, strict: bool) -> Vec<Entry> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut skip_until = 0;
    for (start, line) in lines_with_offsets(text) {
        if start < skip_until {
            continue;
        }
        // Leading blanks, and a byte-order mark on the first line.
        let trimmed = line.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        let mut pos = start + (line.len() - trimmed.len());
        let mut rest = trimmed;
        for prefix in ["export ", "ENV ", "ARG ", "set ", "declare "] {
            if let Some(r) = rest.strip_prefix(prefix) {
                let r2 = r.trim_start();
                pos += rest.len() - r2.len();
                rest = r2;
                break;
            }
        }
        let rb = rest.as_bytes();
        if rb.is_empty() || !is_name_start(rb[0]) {
            continue;
        }
        let klen = rb.iter().take_while(|c| is_name_char(**c)).count();
        let key = &rest[..klen];
        if strict && !key.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_') {
            continue;
        }
        let after = &rest[klen..];
        let after_t = after.trim_start_matches([' ', '\t']);
        let Some(val) = after_t.strip_prefix('=') else { continue };
        if val.starts_with('=') {
            continue;
        }
        let val_t = val.trim_start_matches([' ', '\t']);
        let vpos = pos + klen + (after.len() - after_t.len()) + 1 + (val.len() - val_t.len());
        let (span, quote) = match val_t.as_bytes().first() {
            Some(q @ (b'"' | b'\'')) => {
                let Some(close) = closing_quote(b, vpos, *q == b'"') else { continue };
                skip_until = close;
                (vpos + 1..close, if *q == b'"' { Quote::Double } else { Quote::Single })
            }
            _ => {
                let end = if shell {
                    val_t.find(char::is_whitespace)
                } else {
                    val_t.find(" #").or_else(|| val_t.find("\t#"))
                };
                let v = val_t[..end.unwrap_or(val_t.len())].trim_end();
                (vpos..vpos + v.len(), Quote::None)
            }
        };
        out.push(Entry {
            line: lines.line_of(span.start.min(text.len())),
            key: key.to_string(),
            path: Vec::new(),
            span,
            quote,
            k8s: K8s::No,
        });
    }
    out
}

/// One JSON container being read.
struct Frame {
    object: bool,
    /// The key naming this container in its parent.
    label: Option<String>,
    /// In an object: the key whose value comes next.
    key: Option<String>,
    /// In an object: its `name` member (for `{"name": X, "value": ...}`).
    name: Option<String>,
}

/// JSON: every string value with its key path. Tolerates `//` comments.
fn json(text: &str, lines: &Lines) -> Vec<Entry> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'{' | b'[' => {
                let label = stack.last_mut().and_then(|f| if f.object { f.key.take() } else { f.label.clone() });
                stack.push(Frame { object: c == b'{', label, key: None, name: None });
            }
            b'}' | b']' => {
                stack.pop();
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                let Some(close) = closing_quote(b, i, true) else { return out };
                let raw = &text[i + 1..close];
                let Some(top) = stack.last_mut() else { return out };
                if top.object
                    && top.key.is_none()
                    && b[close + 1..].iter().find(|c| !c.is_ascii_whitespace()) == Some(&b':')
                {
                    top.key = Some(unescape_json(raw));
                } else {
                    let key = if top.object { top.key.take() } else { top.label.clone() };
                    if let Some(key) = key {
                        if key == "name" {
                            top.name = Some(unescape_json(raw));
                        }
                        let key = match (&top.name, key.as_str()) {
                            (Some(n), "value") => n.clone(),
                            _ => key,
                        };
                        let path = stack.iter().filter_map(|f| f.label.clone()).collect();
                        out.push(Entry {
                            line: lines.line_of(i + 1),
                            key,
                            path,
                            span: i + 1..close,
                            quote: Quote::Double,
                            k8s: K8s::No,
                        });
                    }
                }
                i = close + 1;
                continue;
            }
            c if c.is_ascii_alphanumeric() || c == b'-' => {
                // A number or literal ends the pending key's value.
                if let Some(top) = stack.last_mut() {
                    top.key = None;
                }
                while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'-' | b'+' | b'.')) {
                    i += 1;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// A JSON string's content, unescaped (as is if it does not decode).
pub(crate) fn unescape_json(raw: &str) -> String {
    serde_json::from_str::<String>(&format!("\"{raw}\"")).unwrap_or_else(|_| raw.to_string())
}

/// The offset in `line` where a YAML comment starts (a `#` at the start or
/// after a blank, outside quotes).
fn yaml_comment(line: &str) -> usize {
    let b = line.as_bytes();
    let mut quote: Option<u8> = None;
    for (i, c) in b.iter().enumerate() {
        match quote {
            Some(q) if *c == q => quote = None,
            Some(_) => {}
            None if (*c == b'"' || *c == b'\'')
                && (i == 0 || matches!(b[i - 1], b' ' | b':' | b'-' | b'[' | b'{' | b',')) =>
            {
                quote = Some(*c)
            }
            None if *c == b'#' && (i == 0 || b[i - 1] == b' ' || b[i - 1] == b'\t') => return i,
            None => {}
        }
    }
    b.len()
}

/// YAML, line by line: `key: value` (plain, quoted), `- KEY=value` list
/// items (docker-compose `environment`), `- name: X` / `value: ...` pairs
/// (Kubernetes `env`), Kubernetes Secrets' `data` / `stringData`.
fn yaml(text: &str, lines: &Lines) -> Vec<Entry> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let all: Vec<(usize, &str)> = lines_with_offsets(text).collect();
    // Split into documents.
    let mut docs: Vec<&[(usize, &str)]> = Vec::new();
    let mut from = 0;
    for (i, (_, l)) in all.iter().enumerate() {
        if *l == "---" || l.starts_with("--- ") || *l == "..." {
            docs.push(&all[from..i]);
            from = i + 1;
        }
    }
    docs.push(&all[from..]);
    for doc in docs {
        let secret = doc.iter().any(|(_, l)| {
            let l = &l[..yaml_comment(l)];
            l.strip_prefix("kind:").is_some_and(|k| k.trim().trim_matches(['"', '\'']) == "Secret")
        });
        let mut stack: Vec<(usize, String)> = Vec::new();
        let mut names: Vec<(usize, String)> = Vec::new();
        let mut block: Option<usize> = None;
        for (start, line) in doc {
            let indent = line.len() - line.trim_start_matches(' ').len();
            if let Some(bi) = block {
                if line.trim().is_empty() || indent > bi {
                    continue;
                }
                block = None;
            }
            let line = &line[..yaml_comment(line)];
            if line.trim().is_empty() {
                continue;
            }
            let mut col = indent;
            let mut content = &line[indent..];
            let mut item = false;
            while let Some(r) = content.strip_prefix("- ").or_else(|| (content == "-").then_some("")) {
                item = true;
                let r2 = r.trim_start();
                col += content.len() - r2.len();
                content = r2;
            }
            while stack.last().is_some_and(|(i, _)| *i >= col) {
                stack.pop();
            }
            names.retain(|(i, _)| if item { *i < col } else { *i <= col });
            let content = content.trim_end();
            if content.is_empty() {
                continue;
            }
            let cpos = start + (line.len() - line[col..].len());
            // `key: value`?
            let (key, vrel) = match yaml_key(content) {
                Some(kv) => kv,
                None if item => {
                    // A list item scalar: `- KEY=value` or a plain value.
                    let (span, quote) = yaml_scalar(b, cpos, content);
                    let Some(parent) = stack.last().map(|(_, k)| k.clone()) else { continue };
                    let (key, span) = match text[span.clone()].split_once('=') {
                        Some((k, _)) if !k.is_empty() && k.bytes().all(is_name_char) => {
                            (k.to_string(), span.start + k.len() + 1..span.end)
                        }
                        _ => (parent, span),
                    };
                    let path = stack.iter().map(|(_, k)| k.clone()).collect();
                    out.push(Entry { line: lines.line_of(span.start), key, path, span, quote, k8s: K8s::No });
                    continue;
                }
                None => continue,
            };
            let value = content[vrel..].trim_start();
            let vpos = cpos + content.len() - content[vrel..].len() + (content[vrel..].len() - value.len());
            if value.is_empty() {
                stack.push((col, key));
                continue;
            }
            if value.starts_with('|') || value.starts_with('>') {
                block = Some(col);
                continue;
            }
            if value.starts_with('{') || value.starts_with('[') || value.starts_with('*') {
                continue;
            }
            if key == "name" {
                names.push((col, value.trim_matches(['"', '\'']).to_string()));
            }
            let (span, quote) = yaml_scalar(b, vpos, value);
            let k8s = match (secret, stack.as_slice()) {
                (true, [(0, k)]) if k == "data" => K8s::Data,
                (true, [(0, k)]) if k == "stringData" => K8s::StringData,
                _ => K8s::No,
            };
            let key = match (key.as_str(), names.iter().rev().find(|(i, _)| *i == col)) {
                ("value", Some((_, n))) => n.clone(),
                _ => key,
            };
            let path = stack.iter().map(|(_, k)| k.clone()).collect();
            out.push(Entry { line: lines.line_of(span.start), key, path, span, quote, k8s });
        }
    }
    out
}

/// `key: rest` in a YAML line: the key and where the rest starts.
fn yaml_key(content: &str) -> Option<(String, usize)> {
    let b = content.as_bytes();
    let (key, after) = if b.first().is_some_and(|c| *c == b'"' || *c == b'\'') {
        let close = closing_quote(b, 0, b[0] == b'"')?;
        (content[1..close].to_string(), close + 1)
    } else {
        let colon = content.find(": ").or_else(|| content.ends_with(':').then(|| content.len() - 1))?;
        let k = &content[..colon];
        if k.is_empty() || k.contains(['"', '\'', '{', '[']) || k.contains(" #") {
            return None;
        }
        (k.trim_end().to_string(), colon)
    };
    let rest = &content[after..];
    let rest = rest.strip_prefix(':')?;
    Some((key, content.len() - rest.len()))
}

/// A YAML scalar starting at byte `pos` (its text `value`): its span
/// (inside quotes) and quoting. A tag (`!!str`) is skipped.
fn yaml_scalar(b: &[u8], pos: usize, value: &str) -> (Range<usize>, Quote) {
    let mut pos = pos;
    let mut value = value;
    if value.starts_with('!')
        && let Some(sp) = value.find(' ')
    {
        let v = value[sp..].trim_start();
        pos += value.len() - v.len();
        value = v;
    }
    match value.as_bytes().first() {
        Some(q @ (b'"' | b'\'')) => {
            let end = closing_quote(b, pos, *q == b'"').unwrap_or(pos + value.len());
            (pos + 1..end, if *q == b'"' { Quote::Double } else { Quote::Single })
        }
        _ => (pos..pos + value.len(), Quote::None),
    }
}

/// TOML, INI, `.properties`: `[section]`, `key = value` (also `key: value`
/// and bare values in INI), `"""multi-line"""` strings, inline tables.
fn ini(text: &str, lines: &Lines) -> Vec<Entry> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut section: Vec<String> = Vec::new();
    let mut skip_until = 0;
    for (start, line) in lines_with_offsets(text) {
        if start < skip_until {
            continue;
        }
        let t = line.trim_start();
        let tpos = start + line.len() - t.len();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if t.starts_with('[') {
            let name = t.trim_start_matches('[');
            let name = &name[..name.find(']').unwrap_or(name.len())];
            section = name.split('.').map(|s| s.trim().trim_matches(['"', '\'']).to_string()).collect();
            continue;
        }
        let Some(op) = t.find(['=', ':']) else { continue };
        let key = t[..op].trim().trim_matches(['"', '\'']);
        if key.is_empty() || key.contains(char::is_whitespace) && !key.contains('.') {
            continue;
        }
        let val = t[op + 1..].trim_start();
        let vpos = tpos + t.len() - val.len();
        let (span, quote) = if val.starts_with("\"\"\"") || val.starts_with("'''") {
            let delim = &val[..3];
            let Some(end) = text[vpos + 3..].find(delim) else { continue };
            skip_until = vpos + 3 + end;
            (vpos + 3..vpos + 3 + end, Quote::Other)
        } else if val.starts_with('"') || val.starts_with('\'') {
            let Some(close) = closing_quote(b, vpos, val.starts_with('"')) else { continue };
            (vpos + 1..close, if val.starts_with('"') { Quote::Double } else { Quote::Single })
        } else if val.starts_with('{') {
            // An inline table: its pairs like assignments in code.
            let mut inner = source_line(line, start, lines, true);
            for e in &mut inner {
                e.path = section.iter().cloned().chain(std::iter::once(key.to_string())).collect();
            }
            out.extend(inner);
            continue;
        } else if val.starts_with('[') {
            continue;
        } else {
            let end = val.find(" ;").or_else(|| val.find(" #")).unwrap_or(val.len());
            let v = val[..end].trim_end();
            (vpos..vpos + v.len(), Quote::None)
        };
        let (leaf, mut path) = match key.rsplit_once('.') {
            Some((p, l)) => (l.trim().to_string(), p.split('.').map(|s| s.trim().to_string()).collect::<Vec<_>>()),
            None => (key.to_string(), Vec::new()),
        };
        path.splice(0..0, section.iter().cloned());
        out.push(Entry { line: lines.line_of(span.start), key: leaf, path, span, quote, k8s: K8s::No });
    }
    out
}

/// Source code: string literals assigned to names, line by line.
/// `backticks`: `` `...` `` is a string (JavaScript, Go, shell).
fn source(text: &str, lines: &Lines, backticks: bool) -> Vec<Entry> {
    lines_with_offsets(text).flat_map(|(start, line)| source_line(line, start, lines, backticks)).collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(Range<usize>),
    Str(Range<usize>, u8),
    Punct(&'static str),
}

const OPS: &[&str] = &[":=", "=>", "==", "!=", "<=", ">=", "::", "->", "+=", "-=", "||", "&&", "?=", "??", "**"];

/// Split one line of code into identifiers, string literals and punctuation.
fn tokens(line: &str, backticks: bool) -> Vec<Tok> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'"' || c == b'\'' || (c == b'`' && backticks) {
            match closing_quote(b, i, true) {
                Some(close) => {
                    out.push(Tok::Str(i + 1..close, c));
                    i = close + 1;
                }
                None if c == b'\'' => {
                    // A Rust lifetime or an apostrophe.
                    out.push(Tok::Punct("'"));
                    i += 1;
                }
                None => break,
            }
        } else if is_name_start(c) || c == b'$' || c == b'@' {
            let n = b[i..].iter().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'@')).count();
            let word = &line[i..i + n];
            // Python string prefixes: f"...", r'...', b"...".
            let prefix = n <= 2
                && word.bytes().all(|c| matches!(c.to_ascii_lowercase(), b'f' | b'r' | b'b' | b'u'))
                && matches!(b.get(i + n), Some(b'"' | b'\''));
            if !prefix {
                out.push(Tok::Ident(i..i + n));
            }
            i += n;
        } else {
            let op = OPS.iter().find(|op| line[i..].starts_with(*op));
            let s: &'static str = match op {
                Some(op) => op,
                None => match c {
                    b'=' => "=",
                    b':' => ":",
                    b',' => ",",
                    b'(' => "(",
                    b')' => ")",
                    b'[' => "[",
                    b']' => "]",
                    b'.' => ".",
                    b'&' => "&",
                    b'<' => "<",
                    b'>' => ">",
                    b'*' => "*",
                    b'+' => "+",
                    _ => "?",
                },
            };
            i += if op.is_some() { s.len() } else { line[i..].chars().next().map_or(1, char::len_utf8) };
            out.push(Tok::Punct(s));
        }
    }
    out
}

/// Type names skipped when looking for the assigned name (`var pw string = "..."`).
const TYPE_WORDS: &[&str] = &["string", "str", "String", "const", "static", "final", "var", "let", "val", "mut", "pub"];

/// String literals assigned to names in one line of code: `NAME = "v"`,
/// `name := "v"`, `NAME: &str = "v"`, `"name": "v"`, `name: "v"`,
/// `'name' => 'v'`, `env["NAME"] = "v"`, `getenv("NAME", "default")`.
fn source_line(line: &str, start: usize, lines: &Lines, backticks: bool) -> Vec<Entry> {
    let toks = tokens(line, backticks);
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        let Tok::Str(span, q) = t else { continue };
        // The first part of a concatenation is not the value.
        if i == 0 || toks.get(i + 1) == Some(&Tok::Punct("+")) {
            continue;
        }
        let text_of = |r: &Range<usize>| line[r.clone()].to_string();
        let key = match &toks[i - 1] {
            // Not a Rust match arm (`Kind::X => "..."`).
            Tok::Punct(":" | "=>") if i >= 3 && toks[i - 3] == Tok::Punct("::") => None,
            Tok::Punct(":" | "=>") => match toks.get(i.wrapping_sub(2)) {
                Some(Tok::Ident(r)) | Some(Tok::Str(r, _)) if i >= 2 => Some(text_of(r)),
                _ => None,
            },
            Tok::Punct("=" | ":=" | "?=") => {
                let mut j = i - 1;
                let mut key = None;
                if j >= 3
                    && toks[j - 1] == Tok::Punct("]")
                    && let (Tok::Str(r, _), Tok::Punct("[")) = (&toks[j - 2], &toks[j - 3])
                {
                    key = Some(text_of(r));
                }
                // Walk back over a type annotation to the name.
                let mut last_ident = None;
                while key.is_none() && j > 0 {
                    j -= 1;
                    match &toks[j] {
                        Tok::Ident(r) => {
                            let w = &line[r.clone()];
                            if last_ident.is_none() && !TYPE_WORDS.contains(&w) {
                                last_ident = Some(text_of(r));
                            }
                        }
                        Tok::Punct(":") => {
                            if let Some(Tok::Ident(r)) = j.checked_sub(1).map(|k| &toks[k]) {
                                key = Some(text_of(r));
                            }
                        }
                        Tok::Punct("&" | "'" | "<" | ">" | "*" | "." | "[" | "]") => {}
                        _ => break,
                    }
                }
                key.or(last_ident)
            }
            Tok::Punct(",") if i >= 4 && toks[i - 3] == Tok::Punct("(") => match (&toks[i - 4], &toks[i - 2]) {
                (Tok::Ident(f), Tok::Str(r, _)) if GETTERS.contains(&&line[f.clone()]) => Some(text_of(r)),
                _ => None,
            },
            _ => None,
        };
        // A name, not a path or a sentence in quotes.
        let Some(key) = key.filter(|k| !k.is_empty() && k.bytes().all(is_name_char)) else { continue };
        let quote = match q {
            b'"' => Quote::Double,
            b'\'' => Quote::Single,
            _ => Quote::Other,
        };
        let span = start + span.start..start + span.end;
        out.push(Entry { line: lines.line_of(span.start), key, path: Vec::new(), span, quote, k8s: K8s::No });
    }
    out
}
