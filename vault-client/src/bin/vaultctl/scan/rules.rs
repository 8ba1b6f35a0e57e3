//! The detection rules of `vaultctl scan`, as data, and the checks that
//! apply them to one value.
//!
//! Where the rules come from: the token formats are the prefixes and
//! lengths the providers publish for their credentials (AWS access key IDs,
//! GitHub's prefixed tokens, Slack's `xox*-` tokens, Stripe's live/test
//! keys, Google API keys, GitLab personal access tokens, npm and PyPI
//! tokens, SendGrid keys, HashiCorp Vault's `hvs.`/`hvb.`/`hvr.` tokens),
//! JSON Web Tokens are recognised by their compact form (RFC 7519: three
//! base64url parts, the first two JSON objects, so starting `eyJ`), private
//! keys by their PEM label (RFC 7468), credentials in URLs by their
//! `user:password@` userinfo (RFC 3986). The key-name words and the
//! placeholder list are written from common configuration conventions. No
//! other tool's rule file was copied.

use std::ops::Range;

use zeroize::Zeroizing;

/// What a token body may contain after its prefix.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Body {
    /// `A-Z0-9`.
    UpperAlnum,
    /// `A-Za-z0-9`.
    Alnum,
    /// `A-Za-z0-9_`.
    Word,
    /// `A-Za-z0-9_-`.
    UrlSafe,
    /// `A-Za-z0-9_-.` (several dot-separated parts).
    Dotted,
}

impl Body {
    fn allows(self, c: u8) -> bool {
        match self {
            Body::UpperAlnum => c.is_ascii_uppercase() || c.is_ascii_digit(),
            Body::Alnum => c.is_ascii_alphanumeric(),
            Body::Word => c.is_ascii_alphanumeric() || c == b'_',
            Body::UrlSafe => c.is_ascii_alphanumeric() || c == b'_' || c == b'-',
            Body::Dotted => c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.',
        }
    }
}

/// A credential recognisable by its shape alone.
#[derive(Debug)]
pub(crate) struct TokenFormat {
    /// The rule name printed with a finding.
    pub(crate) rule: &'static str,
    /// Any of these starts the token.
    pub(crate) prefixes: &'static [&'static str],
    /// The characters after the prefix.
    pub(crate) body: Body,
    /// Length of the body (after the prefix), inclusive bounds.
    pub(crate) len: (usize, usize),
}

/// Credential formats (see the module documentation for their sources).
pub(crate) const TOKEN_FORMATS: &[TokenFormat] = &[
    // Long-term (AKIA) and temporary (ASIA) access key IDs: 16 more characters.
    TokenFormat { rule: "aws-access-key-id", prefixes: &["AKIA", "ASIA"], body: Body::UpperAlnum, len: (16, 16) },
    // Personal, OAuth, user-to-server, server-to-server, refresh tokens.
    TokenFormat {
        rule: "github-token",
        prefixes: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        body: Body::Alnum,
        len: (30, 255),
    },
    TokenFormat { rule: "github-token", prefixes: &["github_pat_"], body: Body::Word, len: (22, 255) },
    TokenFormat { rule: "gitlab-token", prefixes: &["glpat-"], body: Body::UrlSafe, len: (20, 255) },
    TokenFormat {
        rule: "slack-token",
        prefixes: &["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xoxe-"],
        body: Body::UrlSafe,
        len: (10, 255),
    },
    TokenFormat {
        rule: "stripe-secret-key",
        prefixes: &["sk_live_", "rk_live_", "sk_test_", "rk_test_"],
        body: Body::Alnum,
        len: (16, 255),
    },
    TokenFormat { rule: "google-api-key", prefixes: &["AIza"], body: Body::UrlSafe, len: (35, 35) },
    TokenFormat { rule: "npm-token", prefixes: &["npm_"], body: Body::Alnum, len: (36, 36) },
    // PyPI API tokens are macaroons whose serialized form starts like this.
    TokenFormat { rule: "pypi-token", prefixes: &["pypi-AgEIcHlwaS5vcmc"], body: Body::UrlSafe, len: (16, 4096) },
    TokenFormat { rule: "sendgrid-key", prefixes: &["SG."], body: Body::Dotted, len: (60, 80) },
    TokenFormat { rule: "vault-token", prefixes: &["hvs.", "hvb.", "hvr."], body: Body::UrlSafe, len: (24, 4096) },
    TokenFormat { rule: "anthropic-key", prefixes: &["sk-ant-"], body: Body::UrlSafe, len: (32, 4096) },
    TokenFormat { rule: "openai-key", prefixes: &["sk-proj-", "sk-svcacct-"], body: Body::UrlSafe, len: (32, 4096) },
];

/// A rule on the name a value is assigned to.
#[derive(Debug)]
pub(crate) struct NameRule {
    /// The rule name printed with a finding.
    pub(crate) rule: &'static str,
    /// Matches if the name, lower-cased without separators, contains one of these.
    pub(crate) contains: &'static [&'static str],
    /// Matches if one of the name's words (split at `_`, `-`, `.`, camelCase) is one of these.
    pub(crate) words: &'static [&'static str],
    /// Matches if the last word is one of these (and there are at least two words).
    pub(crate) last_word: &'static [&'static str],
}

/// Names that hold secrets (`*PASSWORD*`, `*SECRET*`, `*TOKEN*`, `*_KEY`, `*CREDENTIAL*`).
pub(crate) const NAME_RULES: &[NameRule] = &[
    NameRule {
        rule: "password",
        contains: &["password", "passwd", "passphrase"],
        words: &["pwd", "pw", "pass"],
        last_word: &[],
    },
    NameRule { rule: "secret", contains: &["secret"], words: &[], last_word: &[] },
    NameRule { rule: "token", contains: &["token"], words: &[], last_word: &[] },
    NameRule { rule: "credential", contains: &["credential"], words: &["creds", "cred"], last_word: &[] },
    NameRule {
        rule: "key",
        contains: &["apikey", "accesskey", "privatekey", "signingkey", "encryptionkey", "masterkey", "licensekey"],
        words: &[],
        last_word: &["key", "keys"],
    },
];

/// Words that, in a name matched above, show it names something else:
/// `PASSWORD_FILE`, `TOKEN_TTL`, `SECRET_NAME`, `tokenizer`, `public_key`...
/// A word anywhere in the name for the first list; the word before `key`
/// for the second.
#[rustfmt::skip]
pub(crate) const NOT_SECRET_WORDS: &[&str] = &[
    "file", "files", "path", "dir", "directory", "url", "uri", "endpoint", "host", "port", "ttl",
    "timeout", "expiry", "expires", "expiration", "lifetime", "length", "len", "size", "count",
    "min", "max", "name", "names", "type", "kind", "header", "field", "env", "var", "mount",
    "policy", "rotation", "enabled", "enable", "required", "algorithm", "alg", "format", "prefix",
    "version", "regex", "pattern", "label", "description", "desc", "provider", "strategy", "mode",
    "location", "source", "hint", "reset", "rules", "strength", "validators", "validation",
    "confirmation", "input", "placeholder", "param", "tokenizer", "tokenize", "tokenization",
    "tokenized", "secretary", "manager", "store", "ref", "arn", "method", "scope", "scopes",
    "audience", "issuer", "usage", "id_field", "policies", "cidr", "cidrs", "uses", "num", "bound",
    "accessor", "period",
];

/// Words before `key` that make it something other than a secret key.
#[rustfmt::skip]
pub(crate) const NOT_SECRET_KEY_QUALIFIERS: &[&str] = &[
    "public", "pub", "primary", "foreign", "sort", "partition", "cache", "idempotency", "lookup",
    "routing", "row", "unique", "composite", "index", "dedup", "object", "map", "dict", "hot",
    "shortcut", "sign", "group", "lock", "redis", "storage", "config", "i18n", "translation",
    "query", "metadata", "ssh_host",
];

/// Words in a name that make a random-looking value expected (a digest, an
/// identifier, a commit), not a secret: they turn the entropy check off.
#[rustfmt::skip]
pub(crate) const NOT_SECRET_FOR_ENTROPY: &[&str] = &[
    "sha", "sha1", "sha256", "sha512", "hash", "digest", "checksum", "commit", "integrity", "etag",
    "fingerprint", "version", "id", "ids", "uuid", "guid", "image", "revision", "rev", "tag", "url",
    "uri", "path", "file", "name", "nonce", "hmac_id", "kid", "locale", "color", "regex", "pattern",
    "signature_id",
];

/// Whole values (lower-cased) that stand in for a secret in examples.
#[rustfmt::skip]
pub(crate) const PLACEHOLDER_WORDS: &[&str] = &[
    "example", "placeholder", "redacted", "removed", "hidden", "masked", "none", "null", "nil",
    "undefined", "unset", "todo", "tbd", "fixme", "n/a", "na", "dummy", "secret_here",
    "password_here", "token_here",
];

/// Parts of values (lower-cased) that mark them as made up for an example.
pub(crate) const PLACEHOLDER_PARTS: &[&str] = &["example", "notareal", "not-a-real", "not_a_real"];

/// Values that are not literals (`true`, numbers) are never secrets.
const NON_SECRET_LITERALS: &[&str] =
    &["true", "false", "yes", "no", "on", "off", "enabled", "disabled", "required", "optional"];

/// Whether `value` stands for a secret instead of being one: empty,
/// `${VAR}` / `$VAR` / `{{ tpl }}` / `%(x)s` interpolations, a
/// `vault:` reference, a `<...>` placeholder, a mask (`***`, `xxxx`),
/// `your-...` / `...-here` examples, anything containing `example` or
/// `notareal` (documentation keys such as AWS's `...EXAMPLE`), values
/// truncated with `...`, or an already-encrypted value (sops `ENC[...]`,
/// Ansible vault).
pub(crate) fn is_placeholder(value: &str) -> bool {
    let v = value.trim();
    // Copies of values are wiped like the file text they come from.
    let lower = Zeroizing::new(v.to_ascii_lowercase());
    if v.is_empty() || lower.starts_with("vault:") {
        return true;
    }
    if v.contains("${") || v.contains("{{") || v.contains("$(") || v.contains("%(") || v.starts_with("ENC[") {
        return true;
    }
    if lower.starts_with("$ansible_vault") || lower.starts_with("!vault") {
        return true;
    }
    // `$VAR`, `%VAR%`, `{name}` (format strings), `<your token>`, `[REDACTED]`.
    let word = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
    if let Some(rest) = v.strip_prefix('$')
        && word(rest)
    {
        return true;
    }
    let enclosed = |open: char, close: char| v.len() >= 2 && v.starts_with(open) && v.ends_with(close);
    if enclosed('<', '>') || enclosed('%', '%') || enclosed('{', '}') {
        return true;
    }
    // A format string with a `{name}` field.
    if let Some(open) = v.find('{')
        && let Some(len) = v[open + 1..].find('}')
        && word(&v[open + 1..open + 1 + len])
    {
        return true;
    }
    if enclosed('[', ']') && v[1..v.len() - 1].bytes().all(|c| c.is_ascii_alphabetic() || c == b' ' || c == b'_') {
        return true;
    }
    if v.len() >= 3 && v.bytes().all(|c| matches!(c, b'*' | b'x' | b'X' | b'.' | b'#' | b'-' | b'_' | b'?')) {
        return true;
    }
    if v.len() >= 3 && v.bytes().all(|c| c == v.as_bytes()[0]) {
        return true;
    }
    if PLACEHOLDER_WORDS.contains(&lower.as_str()) || PLACEHOLDER_PARTS.iter().any(|p| lower.contains(p)) {
        return true;
    }
    // Truncated in documentation: `hvs.c4Vb...`.
    if v.ends_with("...") || v.ends_with('\u{2026}') {
        return true;
    }
    let starts_your =
        ["your-", "your_", "your ", "my-secret-", "insert-", "insert_", "replace-", "replace_", "replace "]
            .iter()
            .any(|p| lower.starts_with(p));
    let ends_here = ["-here", "_here", " here"].iter().any(|p| lower.ends_with(p));
    starts_your || ends_here
}

/// A value a secret-sounding name may hold without it being a secret:
/// numbers, booleans, paths, URLs without credentials and, outside .env
/// files (`env_file`), prose (three words or more) or the name itself
/// (`"password": "Password"` in a UI's labels).
pub(crate) fn is_non_secret_value(name: &str, value: &str, env_file: bool) -> bool {
    let v = value.trim();
    // Copies of values are wiped like the file text they come from.
    let lower = Zeroizing::new(v.to_ascii_lowercase());
    if NON_SECRET_LITERALS.contains(&lower.as_str()) || v.parse::<f64>().is_ok() {
        return true;
    }
    // Durations and sizes: `3600s`, `24h`, `10MB`.
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && v.len() - digits <= 2 && v[digits..].bytes().all(|c| c.is_ascii_alphabetic()) {
        return true;
    }
    if ["/", "./", "../", "~/", "file:"].iter().any(|p| v.starts_with(p))
        || (v.len() > 2 && v.as_bytes()[1] == b':' && matches!(v.as_bytes()[2], b'\\' | b'/'))
    {
        return true;
    }
    if v.contains("://") {
        // Credentials in it are the URL rule's business.
        return true;
    }
    // An API path or route (`role/{name}/secret-id`, `secret/data/*`).
    if v.contains('/') && v.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"/_-{}.:*+".contains(&c)) {
        return true;
    }
    if env_file {
        return false;
    }
    if v.split_whitespace().count() >= 3 {
        return true;
    }
    let squash = |s: &str| s.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_ascii_lowercase();
    let (n, val) = (squash(name), Zeroizing::new(squash(v)));
    !val.is_empty() && (n == *val || n.ends_with(val.as_str()) && val.len() >= 5)
}

/// The words of a name: split at non-alphanumerics and lower→upper case
/// changes, lower-cased (`dbPassword` → `db`, `password`).
pub(crate) fn words(name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The name rule `name` matches, if any.
pub(crate) fn name_rule(name: &str) -> Option<&'static str> {
    let w = words(name);
    if w.is_empty() || w.iter().any(|x| NOT_SECRET_WORDS.contains(&x.as_str())) {
        return None;
    }
    // The shell's working directory, not a password.
    if w.len() == 1 && (w[0] == "pwd" || w[0] == "oldpwd") {
        return None;
    }
    let compact: String = w.concat();
    for r in NAME_RULES {
        let hit = r.contains.iter().any(|c| compact.contains(c))
            || w.iter().any(|x| r.words.contains(&x.as_str()))
            || (w.len() >= 2 && r.last_word.iter().any(|l| w.last().is_some_and(|x| x == l)) && {
                let before = &w[w.len() - 2];
                !NOT_SECRET_KEY_QUALIFIERS.contains(&before.as_str())
            });
        if hit {
            return Some(r.rule);
        }
    }
    None
}

/// Whether the entropy check applies to values of `name`.
pub(crate) fn entropy_applies(name: &str) -> bool {
    !words(name).iter().any(|x| NOT_SECRET_FOR_ENTROPY.contains(&x.as_str()) || NOT_SECRET_WORDS.contains(&x.as_str()))
}

/// Shannon entropy of `s` in bits per character.
pub(crate) fn shannon_entropy(s: &str) -> f64 {
    let mut counts = [0usize; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts.iter().filter(|c| **c > 0).map(|c| *c as f64 / n).map(|p| -p * p.log2()).sum()
}

/// Whether `value` looks like random key material: 20+ characters of
/// base64/base64url with upper case, lower case and digits and close to
/// the highest entropy its length allows, or 32+ hex digits. (Measured on
/// random base64url strings: about 96% of 20-character, 98% of 24, 99% of
/// 32+ character ones are found, while identifiers, host names and version
/// strings are left alone; see the tests.)
pub(crate) fn is_high_entropy(value: &str) -> bool {
    let v = value.trim_end_matches('=');
    let len = v.len();
    if !(20..=4096).contains(&len) {
        return false;
    }
    let hex = v.bytes().all(|c| c.is_ascii_hexdigit());
    if hex {
        let one_case = !v.bytes().any(|c| c.is_ascii_lowercase()) || !v.bytes().any(|c| c.is_ascii_uppercase());
        return len >= 32 && one_case && v.bytes().any(|c| c.is_ascii_alphabetic()) && shannon_entropy(v) >= 3.2;
    }
    if !v.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'_' | b'-' | b'.')) {
        return false;
    }
    let punct = v.bytes().filter(|c| !c.is_ascii_alphanumeric()).count();
    let classes = v.bytes().any(|c| c.is_ascii_uppercase())
        && v.bytes().any(|c| c.is_ascii_lowercase())
        && v.bytes().any(|c| c.is_ascii_digit());
    // A UUID is an identifier.
    let uuid = len == 36 && v.bytes().filter(|c| *c == b'-').count() == 4;
    let max = (len.min(64) as f64).log2();
    classes && !uuid && punct * 100 <= len * 15 && shannon_entropy(v) >= 0.82 * max
}

/// A credential of a known format in `text`: its rule and byte range.
pub(crate) fn find_token(text: &str) -> Option<(&'static str, Range<usize>)> {
    let b = text.as_bytes();
    for f in TOKEN_FORMATS {
        for p in f.prefixes {
            let mut from = 0;
            while let Some(off) = text[from..].find(p) {
                let start = from + off;
                from = start + 1;
                if start > 0 && (b[start - 1].is_ascii_alphanumeric()) {
                    continue;
                }
                let body_start = start + p.len();
                let body = b[body_start..].iter().take_while(|c| f.body.allows(**c)).count();
                if (f.len.0..=f.len.1).contains(&body) {
                    return Some((f.rule, start..body_start + body));
                }
            }
        }
    }
    find_jwt(text).map(|r| ("jwt", r))
}

/// A JSON Web Token (compact serialization) in `text`.
fn find_jwt(text: &str) -> Option<Range<usize>> {
    let b = text.as_bytes();
    let b64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_';
    let mut from = 0;
    while let Some(off) = text[from..].find("eyJ") {
        let start = from + off;
        from = start + 1;
        if start > 0 && b64(&b[start - 1]) {
            continue;
        }
        let h = b[start..].iter().take_while(|c| b64(c)).count();
        let p0 = start + h;
        if h < 10 || b.get(p0) != Some(&b'.') || !b[p0 + 1..].starts_with(b"eyJ") {
            continue;
        }
        let p = b[p0 + 1..].iter().take_while(|c| b64(c)).count();
        let s0 = p0 + 1 + p;
        if p < 10 || b.get(s0) != Some(&b'.') {
            continue;
        }
        let s = b[s0 + 1..].iter().take_while(|c| b64(c)).count();
        return Some(start..s0 + 1 + s);
    }
    None
}

/// A PEM private key's `-----BEGIN ... PRIVATE KEY-----` line in `text`.
pub(crate) fn find_private_key(text: &str) -> Option<Range<usize>> {
    let mut from = 0;
    while let Some(off) = text[from..].find("-----BEGIN ") {
        let start = from + off;
        from = start + 1;
        let rest = &text[start + 11..];
        let Some(end) = rest.find("-----") else { continue };
        let label = &rest[..end];
        let words_only = label.bytes().all(|c| c.is_ascii_uppercase() || c == b' ');
        if words_only && label.len() <= 40 && (label.ends_with("PRIVATE KEY") || label.ends_with("PRIVATE KEY BLOCK")) {
            return Some(start..start + 11 + end + 5);
        }
    }
    None
}

/// A URL with a password in its userinfo (`scheme://user:pass@host`) in
/// `text`, the password not a placeholder: the range of the whole URL.
pub(crate) fn find_url_credentials(text: &str) -> Option<Range<usize>> {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(off) = text[from..].find("://") {
        let sep = from + off;
        from = sep + 3;
        let scheme =
            b[..sep].iter().rev().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'.' | b'-')).count();
        if scheme < 2 {
            continue;
        }
        let rest = &text[sep + 3..];
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '"' | '\'' | '`' | '>' | ',' | ')'))
            .unwrap_or(rest.len());
        let authority = &rest[..end];
        let Some(at) = authority.rfind('@') else { continue };
        let Some((user, pass)) = authority[..at].split_once(':') else { continue };
        // `user:password@host` is how documentation shows the syntax.
        let illustrative = matches!(user, "user" | "username") && matches!(pass, "pass" | "password");
        if pass.is_empty()
            || is_placeholder(pass)
            || illustrative
            || authority[at + 1..].is_empty()
            || user.contains('@')
        {
            continue;
        }
        let tail = rest[end..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '>'))
            .unwrap_or(rest.len() - end);
        return Some(sep - scheme..sep + 3 + end + tail);
    }
    None
}

/// A `Password=...;` (or `pwd=`) pair in a connection string.
pub(crate) fn find_connection_string_password(text: &str) -> bool {
    let lower = Zeroizing::new(text.to_ascii_lowercase());
    for key in ["password=", "pwd="] {
        let mut from = 0;
        while let Some(off) = lower[from..].find(key) {
            let start = from + off;
            from = start + 1;
            let before_ok = start == 0 || matches!(lower.as_bytes()[start - 1], b';' | b' ' | b'"' | b'\'');
            let val = &text[start + key.len()..];
            let val = &val[..val.find(';').unwrap_or(val.len())];
            if before_ok && text.contains(';') && !is_placeholder(val.trim_matches(|c| c == '\'' || c == '"')) {
                return true;
            }
        }
    }
    false
}

/// The rule a value found under `name` breaks, if any. `k8s_secret`: the
/// value is an entry of a Kubernetes Secret's `data`/`stringData` (always
/// a secret unless a placeholder). `env_file`: the value is a .env
/// variable's (never a label or prose).
pub(crate) fn check_value(name: &str, value: &str, k8s_secret: bool, env_file: bool) -> Option<&'static str> {
    if is_placeholder(value) {
        return None;
    }
    if let Some((rule, _)) = find_token(value) {
        return Some(rule);
    }
    if find_private_key(value).is_some() {
        return Some("private-key");
    }
    if find_url_credentials(value).is_some() {
        return Some("url-credentials");
    }
    if find_connection_string_password(value) {
        return Some("connection-string");
    }
    if k8s_secret {
        return Some("kubernetes-secret");
    }
    if let Some(rule) = name_rule(name)
        && !is_non_secret_value(name, value, env_file)
    {
        return Some(rule);
    }
    if entropy_applies(name) && is_high_entropy(value) {
        return Some("entropy");
    }
    None
}

/// The rule a free-text line breaks, if any, and where: known token
/// formats, private keys, credentials in URLs.
pub(crate) fn check_text(line: &str) -> Option<(&'static str, Range<usize>)> {
    if let Some(hit) = find_token(line) {
        // Documentation examples (AWS's `...EXAMPLE` keys) are not secrets.
        if !is_placeholder(&line[hit.1.clone()]) {
            return Some(hit);
        }
    }
    if let Some(r) = find_private_key(line) {
        return Some(("private-key", r));
    }
    find_url_credentials(line).map(|r| ("url-credentials", r))
}
