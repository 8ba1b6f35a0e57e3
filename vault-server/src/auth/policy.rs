//! Vault ACL policies: the HCL documents (or their JSON form) that name paths
//! and the capabilities granted on them.
//!
//! ```hcl
//! # Read and list everything under secret/data/.
//! path "secret/data/*" {
//!   capabilities = ["read", "list"]
//! }
//! ```
//!
//! The parser is a small, purpose-built reader for the subset of HCL that
//! policies use (blocks with labels, `key = value` attributes, strings,
//! numbers, booleans, lists and objects, `#`, `//` and `/* */` comments). The
//! JSON form (`{"path": {"secret/*": {"capabilities": ["read"]}}}`) goes
//! through the same reader, so every error, syntactic or semantic, names the
//! line and column it refers to.
//!
//! Parsing only describes the rules; [`super::acl::Acl`] compiles the policies
//! of a token into the structure consulted on every request.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::logical::Operation;

/// Vault's built-in `default` policy, attached to every token unless the
/// token was created with `no_default_policy`. It may be edited (but not
/// deleted) by operators.
pub const DEFAULT_POLICY: &str = r#"# Allow a token to look up its own properties.
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow a token to renew itself.
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow a token to revoke itself.
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path.
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Allow a token to look up its resultant ACL from all of its policies
# (used by UIs; the format of this internal endpoint may change).
path "sys/internal/ui/resultant-acl" {
    capabilities = ["read"]
}

# Allow a token to renew a lease by lease_id in the request body (the old
# path for old clients, the new one for newer clients).
path "sys/renew" {
    capabilities = ["update"]
}
path "sys/leases/renew" {
    capabilities = ["update"]
}

# Allow looking up the properties of a lease. This needs the lease ID and
# reveals nothing sensitive.
path "sys/leases/lookup" {
    capabilities = ["update"]
}

# Allow a token to manage its own cubbyhole.
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}

# Allow a token to wrap arbitrary values in a response-wrapping token.
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}

# Allow a token to look up the creation time and TTL of a response-wrapping
# token.
path "sys/wrapping/lookup" {
    capabilities = ["update"]
}

# Allow a token to unwrap a response-wrapping token.
path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}

# Allow the general purpose tools.
path "sys/tools/hash" {
    capabilities = ["update"]
}
path "sys/tools/hash/*" {
    capabilities = ["update"]
}
path "sys/tools/random" {
    capabilities = ["update"]
}
path "sys/tools/random/*" {
    capabilities = ["update"]
}
"#;

/// Name of the built-in policy that grants everything.
pub const ROOT_POLICY_NAME: &str = "root";
/// Name of the built-in policy attached to every token by default.
pub const DEFAULT_POLICY_NAME: &str = "default";

/// Deepest nesting of lists/objects accepted (bounds recursion on hostile input).
const MAX_DEPTH: usize = 32;

/// Errors from parsing a policy or validating a policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy text is malformed or invalid at `line`/`column` (1-based).
    #[error("policy parse error at line {line}, column {column}: {message}")]
    Parse {
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The policy name is not acceptable.
    #[error("invalid policy name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A built-in policy that cannot be created, modified or deleted (`root`).
    #[error("cannot update {0:?} policy")]
    Immutable(String),
    /// A policy that can be modified but not deleted (`default`).
    #[error("cannot delete {0:?} policy")]
    Undeletable(String),
}

impl PolicyError {
    /// The 1-based line a parse error refers to.
    pub fn line(&self) -> Option<usize> {
        match self {
            PolicyError::Parse { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Check that `name` may be used to create or update a policy: non-empty,
/// only lowercase ASCII letters, digits, `-`, `_` and `.`, and not `root`
/// (which is built in and immutable). `default` may be updated.
pub fn validate_name(name: &str) -> Result<(), PolicyError> {
    let invalid = |reason| Err(PolicyError::InvalidName { name: name.to_string(), reason });
    if name.is_empty() {
        return invalid("must not be empty");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')) {
        return invalid("may contain only lowercase letters, digits, '-', '_' and '.'");
    }
    if name == "." || name == ".." {
        return invalid("must not be \".\" or \"..\"");
    }
    if name == ROOT_POLICY_NAME {
        return Err(PolicyError::Immutable(name.to_string()));
    }
    Ok(())
}

/// Check that the policy `name` may be deleted: everything [`validate_name`]
/// checks, and not `default`.
pub fn validate_delete(name: &str) -> Result<(), PolicyError> {
    validate_name(name)?;
    if name == DEFAULT_POLICY_NAME {
        return Err(PolicyError::Undeletable(name.to_string()));
    }
    Ok(())
}

/// A set of policy capabilities (a small bit set).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u16);

impl Capabilities {
    /// No capability at all.
    pub const NONE: Self = Self(0);
    /// `deny`: overrides everything else on the same rule.
    pub const DENY: Self = Self(1);
    /// `create`.
    pub const CREATE: Self = Self(1 << 1);
    /// `read`.
    pub const READ: Self = Self(1 << 2);
    /// `update`.
    pub const UPDATE: Self = Self(1 << 3);
    /// `patch`.
    pub const PATCH: Self = Self(1 << 4);
    /// `delete`.
    pub const DELETE: Self = Self(1 << 5);
    /// `list`.
    pub const LIST: Self = Self(1 << 6);
    /// `sudo`: needed on root-protected paths.
    pub const SUDO: Self = Self(1 << 7);

    /// Every capability with its name, in alphabetical order of the names.
    const NAMED: [(&'static str, Self); 8] = [
        ("create", Self::CREATE),
        ("delete", Self::DELETE),
        ("deny", Self::DENY),
        ("list", Self::LIST),
        ("patch", Self::PATCH),
        ("read", Self::READ),
        ("sudo", Self::SUDO),
        ("update", Self::UPDATE),
    ];

    /// The capability called `name` (`"read"`, `"deny"`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMED.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }

    /// The capability an operation needs.
    pub const fn for_operation(op: Operation) -> Self {
        match op {
            Operation::Read => Self::READ,
            Operation::List => Self::LIST,
            Operation::Create => Self::CREATE,
            Operation::Update => Self::UPDATE,
            Operation::Patch => Self::PATCH,
            Operation::Delete => Self::DELETE,
        }
    }

    /// Whether every capability of `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets together.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether this set denies (contains `deny`).
    pub const fn is_deny(self) -> bool {
        self.0 & Self::DENY.0 != 0
    }

    /// Combine the grants of two rules for the same path (from different
    /// policies, or repeated in one): `deny` wins, otherwise the union.
    #[must_use]
    pub const fn merge(self, other: Self) -> Self {
        if self.is_deny() || other.is_deny() { Self::DENY } else { self.union(other) }
    }

    /// The names, sorted alphabetically (just `["deny"]` when denying).
    pub fn names(self) -> Vec<&'static str> {
        if self.is_deny() {
            return vec!["deny"];
        }
        Self::NAMED.iter().filter(|(_, c)| self.contains(*c) && !c.is_empty()).map(|(n, _)| *n).collect()
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl std::ops::BitOrAssign for Capabilities {
    fn bitor_assign(&mut self, rhs: Self) {
        *self = self.union(rhs);
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// One `path "..." { ... }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    /// The path pattern as written, minus one leading `/`: exact, with a
    /// trailing `*` (prefix glob) and/or `+` segments (one-segment wildcard).
    pub path: String,
    /// Granted capabilities (just `deny` if the block denies).
    pub capabilities: Capabilities,
    /// The block's constraints on request parameters; None when it has none
    /// (or denies), so an unconstrained rule carries nothing to check.
    pub parameters: Option<Box<Parameters>>,
    /// Line of the block in the policy text.
    pub line: usize,
}

/// A path block's constraints on the parameters of a request (Vault's
/// `allowed_parameters`, `denied_parameters` and `required_parameters`),
/// enforced by [`super::acl::Acl::parameters_allowed`].
///
/// Parameter names are folded to lower case here, as Vault does: `allowed`
/// and `denied` are matched against the request's names folded the same
/// way, `required` names must be present exactly so. Values are JSON values;
/// an empty list means "any value"; a string value may start and/or end with
/// a `*` glob.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parameters {
    /// Name → allowed values. Non-empty: only these names may be given
    /// (`"*"` admits the others).
    pub allowed: BTreeMap<String, Vec<Value>>,
    /// Name → refused values (`"*"` refuses every parameter).
    pub denied: BTreeMap<String, Vec<Value>>,
    /// Names that must be present.
    pub required: Vec<String>,
}

impl Parameters {
    /// Whether nothing is constrained.
    pub fn is_empty(&self) -> bool {
        self.allowed.is_empty() && self.denied.is_empty() && self.required.is_empty()
    }

    /// Combine with the constraints of another block for the same path
    /// (Vault's ACL merge): per name, an empty list (any value) on either
    /// side wins, otherwise the value lists are concatenated; a name
    /// constrained on only one side keeps that side's list; required names
    /// are the union. So a block that allows only some names restricts
    /// another block for the same path that allows every name, as in Vault.
    pub fn merge(&mut self, other: &Parameters) {
        merge_values(&mut self.allowed, &other.allowed);
        merge_values(&mut self.denied, &other.denied);
        for name in &other.required {
            if !self.required.contains(name) {
                self.required.push(name.clone());
            }
        }
    }
}

fn merge_values(into: &mut BTreeMap<String, Vec<Value>>, from: &BTreeMap<String, Vec<Value>>) {
    for (name, values) in from {
        match into.get_mut(name) {
            None => {
                into.insert(name.clone(), values.clone());
            }
            Some(existing) if existing.is_empty() => {}
            Some(existing) if values.is_empty() => existing.clear(),
            Some(existing) => existing.extend(values.iter().cloned()),
        }
    }
}

/// A parameter name as `allowed_parameters`/`denied_parameters` compare it:
/// folded to lower case (Vault's `strings.ToLower` on both sides). Borrows
/// when folding changes nothing, the common case, so a request's names cost
/// no allocation.
pub(crate) fn fold_name(name: &str) -> Cow<'_, str> {
    if name.chars().all(|c| c.to_lowercase().eq(std::iter::once(c))) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(name.to_lowercase())
    }
}

/// A parsed ACL policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The policy's name.
    pub name: String,
    raw: String,
    rules: Vec<PathRule>,
    root: bool,
}

impl Policy {
    /// Parse the policy `name` from its HCL or JSON `text`.
    pub fn parse(name: &str, text: &str) -> Result<Policy, PolicyError> {
        let items = Parser::new(text).document()?;
        let rules = interpret(&items)?;
        Ok(Policy { name: name.to_string(), raw: text.to_string(), rules, root: false })
    }

    /// The built-in `root` policy: everything is allowed.
    pub fn root() -> Policy {
        Policy { name: ROOT_POLICY_NAME.to_string(), raw: String::new(), rules: Vec::new(), root: true }
    }

    /// The built-in `default` policy, parsed from [`DEFAULT_POLICY`].
    pub fn default_policy() -> Result<Policy, PolicyError> {
        Policy::parse(DEFAULT_POLICY_NAME, DEFAULT_POLICY)
    }

    /// The original policy text (as stored and returned by reads).
    pub fn text(&self) -> &str {
        &self.raw
    }

    /// The path rules, in the order written.
    pub fn rules(&self) -> &[PathRule] {
        &self.rules
    }

    /// Whether this is the built-in root policy (only [`Policy::root`] makes one).
    pub fn is_root(&self) -> bool {
        self.root
    }
}

// ---------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: usize,
    column: usize,
}

fn error_at(pos: Pos, message: impl Into<String>) -> PolicyError {
    PolicyError::Parse { line: pos.line, column: pos.column, message: message.into() }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    LBrace,
    RBrace,
    LBrack,
    RBrack,
    /// `=` (HCL) or `:` (JSON).
    Assign,
    Comma,
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "identifier `{s}`"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Num(s) => write!(f, "number {s}"),
            Tok::LBrace => f.write_str("'{'"),
            Tok::RBrace => f.write_str("'}'"),
            Tok::LBrack => f.write_str("'['"),
            Tok::RBrack => f.write_str("']'"),
            Tok::Assign => f.write_str("'='"),
            Tok::Comma => f.write_str("','"),
            Tok::Eof => f.write_str("end of input"),
        }
    }
}

struct Lexer {
    chars: Vec<char>,
    i: usize,
    line: usize,
    column: usize,
}

impl Lexer {
    fn new(text: &str) -> Self {
        // A byte-order mark is not content.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Self { chars: text.chars().collect(), i: 0, line: 1, column: 1 }
    }

    fn pos(&self) -> Pos {
        Pos { line: self.line, column: self.column }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn peek2(&self) -> Option<char> {
        self.chars.get(self.i + 1).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn skip_trivia(&mut self) -> Result<(), PolicyError> {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('#') => self.skip_line(),
                Some('/') if self.peek2() == Some('/') => self.skip_line(),
                Some('/') if self.peek2() == Some('*') => {
                    let start = self.pos();
                    self.bump();
                    self.bump();
                    loop {
                        match self.bump() {
                            None => {
                                return Err(error_at(start, "unterminated comment: '/*' is never closed"));
                            }
                            Some('*') if self.peek() == Some('/') => {
                                self.bump();
                                break;
                            }
                            Some(_) => {}
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.peek() {
            if c == '\n' {
                break;
            }
            self.bump();
        }
    }

    fn next(&mut self) -> Result<(Tok, Pos), PolicyError> {
        self.skip_trivia()?;
        let pos = self.pos();
        let Some(c) = self.bump() else { return Ok((Tok::Eof, pos)) };
        let tok = match c {
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            '[' => Tok::LBrack,
            ']' => Tok::RBrack,
            '=' | ':' => Tok::Assign,
            ',' => Tok::Comma,
            '"' => Tok::Str(self.string(pos)?),
            c if c.is_ascii_digit() || (c == '-' && self.peek().is_some_and(|d| d.is_ascii_digit())) => {
                let mut s = String::from(c);
                while let Some(d) = self.peek() {
                    let exponent_sign = matches!(d, '+' | '-') && s.ends_with(['e', 'E']);
                    if d.is_ascii_digit() || matches!(d, '.' | 'e' | 'E') || exponent_sign {
                        s.push(d);
                        self.bump();
                    } else {
                        break;
                    }
                }
                Tok::Num(s)
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut s = String::from(c);
                while let Some(d) = self.peek() {
                    if d.is_alphanumeric() || matches!(d, '_' | '-' | '.') {
                        s.push(d);
                        self.bump();
                    } else {
                        break;
                    }
                }
                Tok::Ident(s)
            }
            '<' if self.peek() == Some('<') => {
                return Err(error_at(pos, "heredoc strings are not supported in policies; use a quoted string"));
            }
            other => return Err(error_at(pos, format!("unexpected character {other:?}"))),
        };
        Ok((tok, pos))
    }

    /// A double-quoted string; the opening quote is consumed.
    fn string(&mut self, start: Pos) -> Result<String, PolicyError> {
        let mut out = String::new();
        loop {
            let here = self.pos();
            match self.bump() {
                None => return Err(error_at(start, "unterminated string: the closing '\"' is missing")),
                Some('\n') => {
                    return Err(error_at(
                        start,
                        "unterminated string: the closing '\"' is missing before the end of the line",
                    ));
                }
                Some('"') => return Ok(out),
                Some('\\') => {
                    let escaped = match self.bump() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('u') => self.unicode_escape(here)?,
                        Some(other) => {
                            return Err(error_at(here, format!("invalid escape sequence '\\{other}' in string")));
                        }
                        None => return Err(error_at(start, "unterminated string: the closing '\"' is missing")),
                    };
                    out.push(escaped);
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// `\uXXXX` (after the `u`), including a JSON surrogate pair.
    fn unicode_escape(&mut self, at: Pos) -> Result<char, PolicyError> {
        let first = self.hex4(at)?;
        let code = if (0xD800..0xDC00).contains(&first) {
            if self.peek() != Some('\\') || self.peek2() != Some('u') {
                return Err(error_at(at, "invalid unicode escape: unpaired surrogate"));
            }
            self.bump();
            self.bump();
            let second = self.hex4(at)?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(error_at(at, "invalid unicode escape: unpaired surrogate"));
            }
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else {
            first
        };
        char::from_u32(code).ok_or_else(|| error_at(at, "invalid unicode escape"))
    }

    fn hex4(&mut self, at: Pos) -> Result<u32, PolicyError> {
        let mut v = 0;
        for _ in 0..4 {
            let d = self.bump().and_then(|c| c.to_digit(16));
            let Some(d) = d else { return Err(error_at(at, "invalid unicode escape: expected four hex digits")) };
            v = v * 16 + d;
        }
        Ok(v)
    }
}

// ---------------------------------------------------------------------------
// Parser: a generic tree of items and values, with positions.

#[derive(Debug)]
struct Node {
    pos: Pos,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Str(String),
    /// The number as written (kept for parameter values and wrapping TTLs).
    Num(String),
    Bool(bool),
    Null,
    List(Vec<Node>),
    Object(Vec<Item>),
}

impl Kind {
    fn describe(&self) -> &'static str {
        match self {
            Kind::Str(_) => "a string",
            Kind::Num(_) => "a number",
            Kind::Bool(_) => "a boolean",
            Kind::Null => "null",
            Kind::List(_) => "a list",
            Kind::Object(_) => "an object",
        }
    }
}

/// `key = value`, `key: value` (JSON) or `key "label" ... { body }`.
#[derive(Debug)]
struct Item {
    keys: Vec<(String, Pos)>,
    value: Node,
}

impl Item {
    fn key(&self) -> (&str, Pos) {
        // Items are only ever built with at least one key.
        self.keys.first().map_or(("", self.value.pos), |(k, p)| (k.as_str(), *p))
    }
}

struct Parser {
    lexer: Lexer,
    peeked: Option<(Tok, Pos)>,
}

impl Parser {
    fn new(text: &str) -> Self {
        Self { lexer: Lexer::new(text), peeked: None }
    }

    fn next(&mut self) -> Result<(Tok, Pos), PolicyError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next(),
        }
    }

    fn peek(&mut self) -> Result<&(Tok, Pos), PolicyError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next()?);
        }
        match &self.peeked {
            Some(t) => Ok(t),
            None => Err(error_at(self.lexer.pos(), "internal parser error")),
        }
    }

    /// The whole document: an HCL body, or a JSON object.
    fn document(&mut self) -> Result<Vec<Item>, PolicyError> {
        let (tok, pos) = self.peek()?.clone();
        if tok != Tok::LBrace {
            return self.items(None, 0);
        }
        self.next()?;
        let items = self.items(Some(pos), 1)?;
        match self.next()? {
            (Tok::Eof, _) => Ok(items),
            (tok, pos) => Err(error_at(pos, format!("unexpected {tok} after the closing '}}' of the document"))),
        }
    }

    /// Items up to the `}` closing the brace at `open`, or to the end of
    /// input at the top level (`open` is None).
    fn items(&mut self, open: Option<Pos>, depth: usize) -> Result<Vec<Item>, PolicyError> {
        if depth > MAX_DEPTH {
            return Err(error_at(open.unwrap_or(self.lexer.pos()), "nesting is too deep"));
        }
        let mut items = Vec::new();
        loop {
            let (tok, pos) = self.next()?;
            let first = match tok {
                Tok::Eof => match open {
                    None => return Ok(items),
                    Some(p) => {
                        return Err(error_at(
                            p,
                            format!(
                                "unterminated block: the '{{' opened at line {}, column {} is never closed",
                                p.line, p.column
                            ),
                        ));
                    }
                },
                Tok::RBrace => match open {
                    Some(_) => return Ok(items),
                    None => return Err(error_at(pos, "unexpected '}' with no block open")),
                },
                Tok::Comma => continue,
                Tok::Ident(k) | Tok::Str(k) => k,
                other => {
                    return Err(error_at(pos, format!("expected a key (such as `path`), found {other}")));
                }
            };
            let mut keys = vec![(first, pos)];
            let value = loop {
                let (tok, p) = self.next()?;
                match tok {
                    Tok::Ident(k) | Tok::Str(k) => keys.push((k, p)),
                    Tok::LBrace => break Node { pos: p, kind: Kind::Object(self.items(Some(p), depth + 1)?) },
                    Tok::Assign if keys.len() == 1 => break self.value(depth + 1)?,
                    Tok::Assign => {
                        return Err(error_at(p, format!("expected '{{' to open the `{}` block, found '='", keys[0].0)));
                    }
                    other => {
                        let what = if keys.len() == 1 { "'=' or '{'" } else { "'{'" };
                        return Err(error_at(p, format!("expected {what} after `{}`, found {other}", keys[0].0)));
                    }
                }
            };
            items.push(Item { keys, value });
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, PolicyError> {
        let (tok, pos) = self.next()?;
        if depth > MAX_DEPTH {
            return Err(error_at(pos, "nesting is too deep"));
        }
        let kind = match tok {
            Tok::Str(s) => Kind::Str(s),
            Tok::Num(s) => Kind::Num(s),
            Tok::Ident(s) if s == "true" || s == "false" => Kind::Bool(s == "true"),
            Tok::Ident(s) if s == "null" => Kind::Null,
            Tok::Ident(s) => {
                return Err(error_at(
                    pos,
                    format!("unexpected identifier `{s}` where a value was expected (quote strings)"),
                ));
            }
            Tok::LBrack => Kind::List(self.list(pos, depth)?),
            Tok::LBrace => Kind::Object(self.items(Some(pos), depth + 1)?),
            other => return Err(error_at(pos, format!("expected a value, found {other}"))),
        };
        Ok(Node { pos, kind })
    }

    fn list(&mut self, open: Pos, depth: usize) -> Result<Vec<Node>, PolicyError> {
        let unterminated = || {
            error_at(
                open,
                format!(
                    "unterminated list: the '[' opened at line {}, column {} is never closed",
                    open.line, open.column
                ),
            )
        };
        let mut values = Vec::new();
        loop {
            match self.peek()? {
                (Tok::RBrack, _) => {
                    self.next()?;
                    return Ok(values);
                }
                (Tok::Eof, _) => return Err(unterminated()),
                _ => {}
            }
            values.push(self.value(depth + 1)?);
            match self.next()? {
                (Tok::Comma, _) => {}
                (Tok::RBrack, _) => return Ok(values),
                (Tok::Eof, _) => return Err(unterminated()),
                (other, p) => return Err(error_at(p, format!("expected ',' or ']' in list, found {other}"))),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Interpretation: items to path rules.

fn interpret(items: &[Item]) -> Result<Vec<PathRule>, PolicyError> {
    let mut rules = Vec::new();
    for item in items {
        let (key, pos) = item.key();
        match key {
            "name" => {
                if item.keys.len() != 1 || !matches!(item.value.kind, Kind::Str(_)) {
                    return Err(error_at(pos, "`name` must be a string attribute"));
                }
            }
            "path" => match item.keys.as_slice() {
                [_, (path, _)] => rules.push(path_rule(path, pos, &item.value)?),
                // JSON form: "path": {"<path>": {...}, ...} or "path": [{...}, ...].
                [_] => match &item.value.kind {
                    Kind::Object(entries) => path_entries(entries, &mut rules)?,
                    Kind::List(list) => {
                        for node in list {
                            let Kind::Object(entries) = &node.kind else {
                                return Err(error_at(
                                    node.pos,
                                    "each element of `path` must be an object of path rules",
                                ));
                            };
                            path_entries(entries, &mut rules)?;
                        }
                    }
                    other => {
                        return Err(error_at(
                            pos,
                            format!("`path` must be a block (path \"<path>\" {{ ... }}), found {}", other.describe()),
                        ));
                    }
                },
                _ => return Err(error_at(pos, "a `path` block takes exactly one label: path \"<path>\" { ... }")),
            },
            other => {
                return Err(error_at(pos, format!("invalid key {other:?}: a policy contains only `path` blocks")));
            }
        }
    }
    Ok(rules)
}

fn path_entries(entries: &[Item], rules: &mut Vec<PathRule>) -> Result<(), PolicyError> {
    for entry in entries {
        let (path, pos) = entry.key();
        if entry.keys.len() != 1 {
            return Err(error_at(pos, format!("path {path:?}: unexpected extra label")));
        }
        rules.push(path_rule(path, pos, &entry.value)?);
    }
    Ok(())
}

/// Keys a path block may contain. A non-zero `min_wrapping_ttl` or
/// `max_wrapping_ttl` makes Vault refuse unwrapped requests to the path;
/// this server refuses wrapping, so such a block fails closed (see below).
const PATH_KEYS: [&str; 8] = [
    "capabilities",
    "policy",
    "comment",
    "allowed_parameters",
    "denied_parameters",
    "required_parameters",
    "min_wrapping_ttl",
    "max_wrapping_ttl",
];

fn path_rule(written: &str, pos: Pos, body: &Node) -> Result<PathRule, PolicyError> {
    let fail = |at: Pos, msg: String| Err(error_at(at, format!("path {written:?}: {msg}")));
    let Kind::Object(items) = &body.kind else {
        return fail(body.pos, format!("expected a block {{ ... }}, found {}", body.kind.describe()));
    };
    let path = written.strip_prefix('/').unwrap_or(written);
    if path.contains("+*") {
        return fail(pos, "invalid use of wildcards ('+*' is forbidden)".into());
    }
    if path.find('*').is_some_and(|i| i + 1 != path.len()) {
        return fail(pos, "the glob '*' is only supported as the last character of a path".into());
    }

    let mut seen: Vec<&str> = Vec::new();
    let mut listed: Vec<&str> = Vec::new();
    let mut legacy: Option<&str> = None;
    let mut requires_wrapping = false;
    let mut parameters = Parameters::default();
    for item in items {
        let (key, kpos) = item.key();
        if item.keys.len() != 1 {
            return fail(kpos, format!("unexpected block `{key}`"));
        }
        if !PATH_KEYS.contains(&key) {
            return fail(
                kpos,
                format!(
                    "invalid key {key:?} (valid keys: capabilities, policy, allowed_parameters, denied_parameters, \
                     required_parameters, min_wrapping_ttl, max_wrapping_ttl, comment)"
                ),
            );
        }
        if seen.contains(&key) {
            return fail(kpos, format!("duplicate key {key:?}"));
        }
        seen.push(key);
        let v = &item.value;
        match key {
            "capabilities" => {
                let Some(names) = string_list(v) else {
                    return fail(kpos, "`capabilities` must be a list of strings, e.g. [\"read\", \"list\"]".into());
                };
                listed = names;
            }
            "policy" => {
                let Kind::Str(s) = &v.kind else {
                    return fail(kpos, "`policy` must be a string".into());
                };
                legacy = Some(s);
            }
            "comment" => {
                if !matches!(v.kind, Kind::Str(_)) {
                    return fail(kpos, "`comment` must be a string".into());
                }
            }
            "allowed_parameters" | "denied_parameters" => {
                let shape = |at| fail(at, format!("`{key}` must map parameter names to lists of values"));
                let Kind::Object(params) = &v.kind else { return shape(kpos) };
                let mut map = BTreeMap::new();
                for param in params {
                    let (name, npos) = param.key();
                    let Kind::List(values) = &param.value.kind else { return shape(npos) };
                    if param.keys.len() != 1 {
                        return shape(npos);
                    }
                    let values = values
                        .iter()
                        .map(json_value)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|(at, msg)| error_at(at, format!("path {written:?}: {key} {name:?}: {msg}")))?;
                    // Names differing only in case fold together: merge them
                    // as two blocks would be, rather than let one silently win.
                    merge_values(&mut map, &BTreeMap::from([(fold_name(name).into_owned(), values)]));
                }
                if key == "allowed_parameters" {
                    parameters.allowed = map;
                } else {
                    parameters.denied = map;
                }
            }
            "required_parameters" => {
                let Some(names) = string_list(v) else {
                    return fail(kpos, "`required_parameters` must be a list of strings".into());
                };
                for name in names {
                    // Vault looks a required name up folded to lower case.
                    let name = name.to_lowercase();
                    if !parameters.required.contains(&name) {
                        parameters.required.push(name);
                    }
                }
            }
            // min_wrapping_ttl / max_wrapping_ttl: a duration string or seconds.
            _ => {
                if !matches!(v.kind, Kind::Str(_) | Kind::Num(_)) {
                    return fail(kpos, format!("`{key}` must be a duration string or a number of seconds"));
                }
                // Zero means "no bound"; anything else, even a value Vault
                // would not parse, counts as a requirement (the safe reading).
                let zero = match &v.kind {
                    Kind::Str(t) => crate::logical::fields::parse_duration(t) == Some(0),
                    Kind::Num(t) => json_number(t).and_then(|n| n.as_f64()) == Some(0.0),
                    _ => false,
                };
                if !zero {
                    requires_wrapping = true;
                }
            }
        }
    }

    let mut caps = match legacy {
        None => Capabilities::NONE,
        Some("deny") => Capabilities::DENY,
        Some("read") => Capabilities::READ | Capabilities::LIST,
        Some("write") => {
            Capabilities::CREATE | Capabilities::READ | Capabilities::UPDATE | Capabilities::DELETE | Capabilities::LIST
        }
        Some("sudo") => {
            Capabilities::CREATE
                | Capabilities::READ
                | Capabilities::UPDATE
                | Capabilities::DELETE
                | Capabilities::LIST
                | Capabilities::SUDO
        }
        Some(other) => {
            return fail(pos, format!("invalid policy {other:?} (expected \"deny\", \"read\", \"write\" or \"sudo\")"));
        }
    };
    let mut unknown = Vec::new();
    for name in listed {
        match Capabilities::from_name(name) {
            Some(c) => caps |= c,
            None => unknown.push(format!("{name:?}")),
        }
    }
    if !unknown.is_empty() {
        let noun = if unknown.len() == 1 { "capability" } else { "capabilities" };
        return fail(
            pos,
            format!(
                "unknown {noun} {} (valid: create, read, update, patch, delete, list, sudo, deny)",
                unknown.join(", ")
            ),
        );
    }
    // Vault refuses an unwrapped request to a path whose (merged) rule has a
    // `min_wrapping_ttl` or a `max_wrapping_ttl` (its AllowOperation: no
    // wrap info, not allowed); response wrapping is refused here, so such a
    // path can never be used: deny it rather than silently drop the
    // requirement.
    if caps.is_deny() || requires_wrapping {
        caps = Capabilities::DENY;
    }
    // A denying block has nothing left to constrain (Vault drops its
    // parameters too).
    let parameters = (!caps.is_deny() && !parameters.is_empty()).then(|| Box::new(parameters));
    Ok(PathRule { path: path.to_string(), capabilities: caps, parameters, line: pos.line })
}

/// A parameter value of a policy as the JSON value a request would carry.
/// Errors carry the position of the offending value.
fn json_value(node: &Node) -> Result<Value, (Pos, String)> {
    Ok(match &node.kind {
        Kind::Str(s) => Value::String(s.clone()),
        Kind::Num(text) => Value::Number(json_number(text).ok_or((node.pos, format!("invalid number {text}")))?),
        Kind::Bool(b) => Value::Bool(*b),
        Kind::Null => Value::Null,
        Kind::List(values) => Value::Array(values.iter().map(json_value).collect::<Result<_, _>>()?),
        // HCL's `a "b" { ... }` inside a value is `{"a": {"b": {...}}}`.
        Kind::Object(items) => {
            let mut map = serde_json::Map::new();
            for item in items {
                let mut value = json_value(&item.value)?;
                for (k, _) in item.keys.iter().skip(1).rev() {
                    value = Value::Object(serde_json::Map::from_iter([(k.clone(), value)]));
                }
                map.insert(item.key().0.to_string(), value);
            }
            Value::Object(map)
        }
    })
}

/// A number as written in a policy: an integer if it is one, else a finite float.
fn json_number(text: &str) -> Option<serde_json::Number> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(i.into());
    }
    if let Ok(u) = text.parse::<u64>() {
        return Some(u.into());
    }
    text.parse::<f64>().ok().and_then(serde_json::Number::from_f64)
}

fn string_list(node: &Node) -> Option<Vec<&str>> {
    let Kind::List(values) = &node.kind else { return None };
    values
        .iter()
        .map(|v| match &v.kind {
            Kind::Str(s) => Some(s.as_str()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapping_requirement_fails_closed() {
        let p = Policy::parse(
            "w",
            "path \"a\" {\n capabilities = [\"read\"]\n min_wrapping_ttl = \"1m\"\n}\n\
             path \"b\" {\n capabilities = [\"read\"]\n max_wrapping_ttl = 90\n}\n\
             path \"c\" {\n capabilities = [\"read\"]\n min_wrapping_ttl = \"0s\"\n}\n\
             path \"d\" {\n capabilities = [\"read\"]\n max_wrapping_ttl = \"90s\"\n}\n\
             path \"e\" {\n capabilities = [\"read\"]\n max_wrapping_ttl = 0\n min_wrapping_ttl = 0.0\n}\n\
             path \"f\" {\n capabilities = [\"read\"]\n min_wrapping_ttl = 1\n}\n",
        )
        .unwrap();
        assert_eq!(caps(&p, "a"), vec!["deny"], "wrapping is required but never done: deny");
        // Vault refuses an unwrapped request under a maximum too (its
        // AllowOperation: MaxWrappingTTL > 0 and no wrap info).
        assert_eq!(caps(&p, "b"), vec!["deny"]);
        assert_eq!(caps(&p, "d"), vec!["deny"]);
        assert_eq!(caps(&p, "f"), vec!["deny"]);
        // Zero bounds nothing.
        assert_eq!(caps(&p, "c"), vec!["read"]);
        assert_eq!(caps(&p, "e"), vec!["read"]);
    }

    fn caps(p: &Policy, path: &str) -> Vec<&'static str> {
        p.rules().iter().find(|r| r.path == path).map(|r| r.capabilities.names()).unwrap()
    }

    fn parse_err(text: &str) -> PolicyError {
        Policy::parse("t", text).unwrap_err()
    }

    #[test]
    fn parses_blocks_and_comments() {
        let text = r#"
# hash comment
// slash comment
/* block
   comment */
path "secret/data/*" {
  capabilities = ["read", "list"] # trailing
}
path "secret/+/config" { capabilities = ["create", "update", "patch", "delete", "sudo"] }
path "/sys/mounts" {
  capabilities = [
    "read",
  ]
}
"#;
        let p = Policy::parse("dev", text).unwrap();
        assert_eq!(p.name, "dev");
        assert_eq!(p.text(), text);
        assert!(!p.is_root());
        assert_eq!(p.rules().len(), 3);
        assert_eq!(caps(&p, "secret/data/*"), vec!["list", "read"]);
        assert_eq!(caps(&p, "secret/+/config"), vec!["create", "delete", "patch", "sudo", "update"]);
        // One leading slash is stripped.
        assert_eq!(caps(&p, "sys/mounts"), vec!["read"]);
        assert_eq!(p.rules()[0].line, 6);
        assert_eq!(p.rules()[1].line, 9);
    }

    #[test]
    fn every_capability_name_parses() {
        for name in ["create", "read", "update", "patch", "delete", "list", "sudo", "deny"] {
            let p = Policy::parse("t", &format!("path \"a\" {{ capabilities = [\"{name}\"] }}")).unwrap();
            assert_eq!(p.rules()[0].capabilities.names(), vec![name]);
        }
    }

    #[test]
    fn deny_replaces_other_capabilities() {
        let p = Policy::parse("t", r#"path "a" { capabilities = ["read", "deny", "sudo"] }"#).unwrap();
        assert_eq!(p.rules()[0].capabilities, Capabilities::DENY);
    }

    #[test]
    fn empty_policy_and_empty_capabilities() {
        assert!(Policy::parse("t", "").unwrap().rules().is_empty());
        assert!(Policy::parse("t", "  # nothing\n").unwrap().rules().is_empty());
        let p = Policy::parse("t", r#"path "a" {}"#).unwrap();
        assert!(p.rules()[0].capabilities.is_empty());
        assert!(p.rules()[0].capabilities.names().is_empty());
    }

    #[test]
    fn unknown_capability_names_the_path_block_line() {
        let text = "path \"ok\" {\n  capabilities = [\"read\"]\n}\n\npath \"secret/*\" {\n  capabilities = [\"read\",\n    \"raed\"]\n}\n";
        let err = parse_err(text);
        assert_eq!(err.line(), Some(5));
        let msg = err.to_string();
        assert!(msg.starts_with("policy parse error at line 5, column 1:"), "{msg}");
        assert!(msg.contains("\"raed\""), "{msg}");
        assert!(msg.contains("secret/*"), "{msg}");

        let err = parse_err("path \"a\" { capabilities = [\"root\", \"write\"] }");
        let msg = err.to_string();
        assert!(msg.contains("unknown capabilities \"root\", \"write\""), "{msg}");
    }

    #[test]
    fn unterminated_block_names_the_opening_line() {
        let text = "path \"a\" {\n  capabilities = [\"read\"]\n}\npath \"b\" {\n  capabilities = [\"read\"]\n";
        let err = parse_err(text);
        let msg = err.to_string();
        assert_eq!(err.line(), Some(4), "{msg}");
        assert!(msg.contains("unterminated block"), "{msg}");
    }

    #[test]
    fn syntax_errors_name_the_line_and_column() {
        // Missing '=' between key and value.
        let err =
            parse_err("path \"a\" {\n  capabilities = [\"read\"]\n}\npath \"b\" {\n  capabilities [\"read\"]\n}\n");
        assert_eq!(
            err,
            PolicyError::Parse {
                line: 5,
                column: 16,
                message: "expected '=' or '{' after `capabilities`, found '['".into()
            }
        );
        // Missing comma in a list.
        let err = parse_err("path \"a\" {\n  capabilities = [\"read\" \"list\"]\n}");
        assert_eq!(err.line(), Some(2));
        assert!(err.to_string().contains("expected ',' or ']'"), "{err}");
        // Unquoted value.
        let err = parse_err("path \"a\" {\n\n  policy = read\n}");
        assert_eq!(
            err.to_string(),
            "policy parse error at line 3, column 12: unexpected identifier `read` where a value was expected (quote strings)"
        );
        // Stray closing brace.
        assert_eq!(parse_err("path \"a\" {}\n}").line(), Some(2));
        // Unterminated string, list and comment.
        assert_eq!(parse_err("path \"a\" {}\npath \"b {}\n").line(), Some(2));
        assert!(parse_err("path \"a\" {\n capabilities = [\"read\",\n").to_string().contains("unterminated list"));
        let err = parse_err("path \"a\" {}\n\n/* never closed\n");
        assert_eq!(err.line(), Some(3));
        assert!(err.to_string().contains("unterminated comment"));
        // Labels then '='.
        assert_eq!(parse_err("\npath \"a\" = {}").line(), Some(2));
        // Unexpected character.
        assert_eq!(parse_err("path \"a\" {\n capabilities = [\"read\"];\n}").line(), Some(2));
    }

    #[test]
    fn semantic_errors() {
        let err = parse_err("path \"a\" {\n  capabilities = [\"read\"]\n  colour = \"blue\"\n}");
        assert_eq!(err.line(), Some(3));
        assert!(err.to_string().contains("invalid key \"colour\""), "{err}");
        let err = parse_err("\nfoo \"a\" {}");
        assert_eq!(err.line(), Some(2));
        assert!(err.to_string().contains("invalid key \"foo\""), "{err}");
        let err = parse_err("path \"a\" {\n capabilities = \"read\"\n}");
        assert!(err.to_string().contains("must be a list of strings"), "{err}");
        let err = parse_err("path \"a\" {\n capabilities = [\"read\"]\n capabilities = [\"list\"]\n}");
        assert_eq!(err.line(), Some(3));
        assert!(err.to_string().contains("duplicate key"), "{err}");
        assert!(parse_err("path \"a/+*\" { capabilities = [\"read\"] }").to_string().contains("'+*'"));
        assert!(parse_err("path \"a/*/b\" { capabilities = [\"read\"] }").to_string().contains("last character"));
        assert!(parse_err("path \"a\" \"b\" { }").to_string().contains("exactly one label"));
        assert!(parse_err("path \"a\" { policy = \"admin\" }").to_string().contains("invalid policy \"admin\""));
    }

    #[test]
    fn optional_keys_are_accepted() {
        let text = r#"
path "secret/restricted" {
  capabilities = ["create"]
  allowed_parameters = {
    "foo" = []
    "bar" = ["zip", "zap"]
  }
  denied_parameters = { "*" = [] }
  required_parameters = ["bar"]
  min_wrapping_ttl = "1s"
  max_wrapping_ttl = 90
  comment = "restricted"
}
path "secret/other" {
  capabilities = ["read"]
  allowed_parameters {
    "n" = [1, 2.5, true, null]
  }
}
"#;
        let p = Policy::parse("t", text).unwrap();
        // The wrapping requirement cannot be met: the block denies.
        assert_eq!(caps(&p, "secret/restricted"), vec!["deny"]);
        assert_eq!(caps(&p, "secret/other"), vec!["read"]);
        let err = parse_err("path \"a\" {\n capabilities = []\n allowed_parameters = [\"x\"]\n}");
        assert_eq!(err.line(), Some(3));
    }

    fn params(p: &Policy, path: &str) -> Option<Parameters> {
        p.rules().iter().find(|r| r.path == path).unwrap().parameters.as_deref().cloned()
    }

    #[test]
    fn parameter_constraints_are_parsed() {
        let p = Policy::parse(
            "t",
            r#"
path "a" {
  capabilities = ["update"]
  allowed_parameters = {
    "Password" = []
    "n" = [1, -2, 2.5, 1e3, true, null, "s*", ["x", 1], { "k" = "v", "o" "p" { "q" = 3 } }]
    "PASSWORD" = ["ignored: the other spelling allows any value"]
    "list" = ["a"]
    "List" = ["b"]
  }
  denied_parameters { "*" = [] }
  required_parameters = ["Team", "team", "id"]
}
path "plain" { capabilities = ["read"] }
path "empty" {
  capabilities = ["read"]
  allowed_parameters = {}
  denied_parameters = {}
  required_parameters = []
}
path "denied" {
  capabilities = ["deny"]
  allowed_parameters = { "a" = [] }
}
"#,
        )
        .unwrap();
        let a = params(&p, "a").unwrap();
        assert_eq!(a.allowed.keys().collect::<Vec<_>>(), ["list", "n", "password"], "names fold to lower case");
        assert_eq!(a.allowed["password"], Vec::<Value>::new(), "[] wins when two spellings merge");
        assert_eq!(a.allowed["list"], vec![Value::from("a"), Value::from("b")]);
        assert_eq!(
            Value::Array(a.allowed["n"].clone()),
            serde_json::json!([1, -2, 2.5, 1000.0, true, null, "s*", ["x", 1], {"k": "v", "o": {"p": {"q": 3}}}])
        );
        assert_eq!(a.denied.keys().collect::<Vec<_>>(), ["*"]);
        assert_eq!(a.required, ["team", "id"]);
        // No constraint, only empty ones, or a deny: nothing to check.
        assert_eq!(params(&p, "plain"), None);
        assert_eq!(params(&p, "empty"), None);
        assert_eq!(params(&p, "denied"), None);

        // Shapes Vault refuses are a 400 naming the line.
        let err = parse_err("path \"a\" {\n allowed_parameters = {\n \"x\" = [1.2.3]\n }\n}");
        assert_eq!(err.line(), Some(3), "{err}");
        assert!(err.to_string().contains("invalid number"), "{err}");
        let err = parse_err("path \"a\" {\n denied_parameters = { \"x\" = \"y\" }\n}");
        assert!(err.to_string().contains("lists of values"), "{err}");
        let err = parse_err("path \"a\" {\n required_parameters = [1]\n}");
        assert!(err.to_string().contains("list of strings"), "{err}");
    }

    #[test]
    fn parameter_constraints_merge_like_vault() {
        let mut a = Policy::parse(
            "a",
            r#"path "x" { allowed_parameters = { "a" = ["1"], "b" = [] } required_parameters = ["r"] }"#,
        )
        .unwrap()
        .rules()[0]
            .parameters
            .as_deref()
            .cloned()
            .unwrap();
        let b = Policy::parse(
            "b",
            r#"path "x" { allowed_parameters = { "a" = ["2"], "b" = ["3"], "c" = [] } denied_parameters = { "d" = [] } required_parameters = ["s", "r"] }"#,
        )
        .unwrap()
        .rules()[0]
        .parameters
        .as_deref()
        .cloned()
        .unwrap();
        a.merge(&b);
        assert_eq!(a.allowed["a"], vec![Value::from("1"), Value::from("2")]);
        assert!(a.allowed["b"].is_empty() && a.allowed["c"].is_empty());
        assert!(a.denied["d"].is_empty());
        assert_eq!(a.required, ["r", "s"]);
    }

    #[test]
    fn legacy_policy_shorthand() {
        let p = Policy::parse(
            "t",
            r#"
path "d" { policy = "deny" }
path "r" { policy = "read" }
path "w" { policy = "write" }
path "s" { policy = "sudo" }
path "m" { policy = "read" capabilities = ["patch"] }
"#,
        )
        .unwrap();
        assert_eq!(caps(&p, "d"), vec!["deny"]);
        assert_eq!(caps(&p, "r"), vec!["list", "read"]);
        assert_eq!(caps(&p, "w"), vec!["create", "delete", "list", "read", "update"]);
        assert_eq!(caps(&p, "s"), vec!["create", "delete", "list", "read", "sudo", "update"]);
        assert_eq!(caps(&p, "m"), vec!["list", "patch", "read"]);
    }

    #[test]
    fn json_form() {
        let text = r#"{
  "path": {
    "secret/*": {
      "capabilities": ["read", "list"]
    },
    "secret/super-secret": {
      "capabilities": ["deny"]
    },
    "sys/\u006dounts": { "policy": "write", "allowed_parameters": {"a": []} }
  }
}"#;
        let p = Policy::parse("j", text).unwrap();
        assert_eq!(p.text(), text);
        assert_eq!(caps(&p, "secret/*"), vec!["list", "read"]);
        assert_eq!(caps(&p, "secret/super-secret"), vec!["deny"]);
        assert_eq!(caps(&p, "sys/mounts"), vec!["create", "delete", "list", "read", "update"]);
        assert_eq!(p.rules()[0].line, 3);

        // The array form HCL's JSON reader also accepts.
        let p =
            Policy::parse("j", r#"{"path": [{"a/*": {"capabilities": ["read"]}}, {"b": {"capabilities": ["list"]}}]}"#)
                .unwrap();
        assert_eq!(caps(&p, "a/*"), vec!["read"]);
        assert_eq!(caps(&p, "b"), vec!["list"]);

        // Semantic error names the line of the path key.
        let err = parse_err(
            "{\n \"path\": {\n  \"ok\": {\"capabilities\": [\"read\"]},\n  \"bad\": {\"capabilities\": [\"reed\"]}\n }\n}",
        );
        assert_eq!(err.line(), Some(4));
        assert!(err.to_string().contains("\"reed\""));
        // Syntax error names the line.
        let err = parse_err(
            "{\n \"path\": {\n  \"a\": {\"capabilities\": [\"read\"]}\n  \"b\": {\"capabilities\": [\"read\",]]}\n }\n}",
        );
        assert_eq!(err.line(), Some(4));
        // Trailing garbage after the document.
        assert_eq!(parse_err("{\"path\": {}}\n\n}").line(), Some(3));
        // Unterminated JSON document.
        assert!(parse_err("{\"path\": {\"a\": {}}").to_string().contains("unterminated block"));
    }

    #[test]
    fn name_key_is_ignored() {
        let p = Policy::parse("t", "name = \"x\"\npath \"a\" { capabilities = [\"read\"] }").unwrap();
        assert_eq!(p.name, "t");
        assert_eq!(p.rules().len(), 1);
    }

    #[test]
    fn hostile_nesting_is_rejected() {
        let text =
            format!("path \"a\" {{ allowed_parameters = {{ \"x\" = {}{} }} }}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_err(&text).to_string().contains("too deep"));
    }

    #[test]
    fn default_and_root_policies() {
        let d = Policy::default_policy().unwrap();
        assert_eq!(d.name, "default");
        assert_eq!(d.text(), DEFAULT_POLICY);
        assert_eq!(caps(&d, "auth/token/lookup-self"), vec!["read"]);
        assert_eq!(caps(&d, "cubbyhole/*"), vec!["create", "delete", "list", "read", "update"]);
        for path in [
            "auth/token/renew-self",
            "auth/token/revoke-self",
            "sys/capabilities-self",
            "sys/wrapping/wrap",
            "sys/leases/renew",
            "sys/leases/lookup",
            "sys/tools/hash",
        ] {
            assert_eq!(caps(&d, path), vec!["update"], "{path}");
        }
        assert_eq!(caps(&d, "sys/internal/ui/resultant-acl"), vec!["read"]);
        let r = Policy::root();
        assert!(r.is_root());
        assert_eq!(r.name, "root");
        assert!(!Policy::parse("root", "").unwrap().is_root());
    }

    #[test]
    fn names() {
        for ok in ["default", "dev-team_1.read", "a", "0"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "Dev", "a/b", "a b", "é", "..", ".", "a*"] {
            assert!(matches!(validate_name(bad), Err(PolicyError::InvalidName { .. })), "{bad}");
        }
        assert_eq!(validate_name("root"), Err(PolicyError::Immutable("root".into())));
        assert_eq!(validate_name("root").unwrap_err().to_string(), "cannot update \"root\" policy");
        assert_eq!(validate_delete("default"), Err(PolicyError::Undeletable("default".into())));
        assert!(matches!(validate_delete("root"), Err(PolicyError::Immutable(_))));
        validate_delete("dev").unwrap();
    }

    #[test]
    fn capability_set_ops() {
        for op in [
            Operation::Read,
            Operation::List,
            Operation::Create,
            Operation::Update,
            Operation::Patch,
            Operation::Delete,
        ] {
            assert_eq!(Capabilities::from_name(op.capability()), Some(Capabilities::for_operation(op)));
        }
        let rw = Capabilities::READ | Capabilities::UPDATE;
        assert_eq!(rw.merge(Capabilities::LIST), rw | Capabilities::LIST);
        assert_eq!(rw.merge(Capabilities::DENY), Capabilities::DENY);
        assert_eq!(Capabilities::DENY.merge(rw), Capabilities::DENY);
        assert_eq!(format!("{rw:?}"), "{\"read\", \"update\"}");
    }
}

/// Property tests: whatever the text, parsing returns (never panics, never
/// overflows the stack, in time roughly linear in the input), and every
/// failure is a parse error naming a position inside the text; generated
/// policies parse back to the rules they were generated from, in both the
/// HCL and the JSON form.
#[cfg(test)]
mod proptests {
    use std::time::{Duration, Instant};

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// Parse, and check the outcome's shape whatever it is.
    fn parse_checked(text: &str) -> Result<Policy, PolicyError> {
        let started = Instant::now();
        let result = Policy::parse("p", text);
        assert!(started.elapsed() < Duration::from_secs(2), "{} bytes took {:?}", text.len(), started.elapsed());
        if let Err(e) = &result {
            let PolicyError::Parse { line, column, message } = e else { panic!("not a parse error: {e:?}") };
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(
                *line >= 1 && *line <= lines.len() && *column >= 1,
                "position {line}:{column} outside the text: {e}"
            );
            // At most one past the line's last character (end of input).
            let width = lines[*line - 1].chars().count();
            assert!(*column <= width + 1, "column {column} past the end of line {line} ({width} characters): {e}");
            assert!(!message.is_empty());
            assert!(e.to_string().starts_with("policy parse error at line "));
        }
        result
    }

    /// Pieces of policy syntax, to build near-valid and broken documents.
    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("path".to_string()),
            Just("\"secret/*\"".to_string()),
            Just("{".to_string()),
            Just("}".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just("=".to_string()),
            Just(":".to_string()),
            Just(",".to_string()),
            Just("\n".to_string()),
            Just("capabilities".to_string()),
            Just("allowed_parameters".to_string()),
            Just("required_parameters".to_string()),
            Just("min_wrapping_ttl".to_string()),
            Just("\"read\"".to_string()),
            Just("\"deny\"".to_string()),
            Just("true".to_string()),
            Just("null".to_string()),
            Just("-1.5e3".to_string()),
            Just("# c\n".to_string()),
            Just("/* c */".to_string()),
            Just("/*".to_string()),
            Just("\"".to_string()),
            Just("\"\\ud800\"".to_string()),
            Just("\"\\u00e9\\n\"".to_string()),
            Just("<<EOF".to_string()),
            Just("\u{feff}".to_string()),
            "[a-z_]{1,6}",
            "\"[^\"\\\\\n]{0,6}\"",
            any::<char>().prop_map(String::from),
        ]
    }

    fn soup() -> impl Strategy<Value = String> {
        prop::collection::vec(fragment(), 0..60).prop_map(|parts| parts.join(" "))
    }

    // --- generated valid policies -------------------------------------------

    #[derive(Debug, Clone)]
    struct Rule {
        /// As written (maybe with one leading `/`).
        written: String,
        caps: Vec<&'static str>,
        allowed: BTreeMap<String, Vec<Value>>,
        denied: BTreeMap<String, Vec<Value>>,
        required: Vec<String>,
    }

    fn path() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            4 => "[a-z0-9_.-]{1,8}",
            1 => Just("+".to_string()),
            1 => "[^*+/\"\\\\\n]{1,4}",
        ];
        (any::<bool>(), prop::collection::vec(segment, 1..5), any::<bool>()).prop_map(|(slash, segs, glob)| {
            let mut p = format!("{}{}", if slash { "/" } else { "" }, segs.join("/"));
            if glob && !p.ends_with('+') {
                p.push('*');
            }
            p
        })
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(Value::Null),
            ".{0,8}".prop_map(Value::from),
        ]
    }

    fn values() -> impl Strategy<Value = Vec<Value>> {
        prop::collection::vec(scalar(), 0..4)
    }

    fn names() -> impl Strategy<Value = BTreeMap<String, Vec<Value>>> {
        prop::collection::btree_map("[a-z*][a-z0-9_]{0,5}", values(), 0..4)
    }

    fn rule() -> impl Strategy<Value = Rule> {
        let caps = prop::sample::subsequence(Capabilities::NAMED.iter().map(|(n, _)| *n).collect::<Vec<_>>(), 0..=8);
        (path(), caps, names(), names(), prop::collection::vec("[a-z][a-z0-9_]{0,5}", 0..4)).prop_map(
            |(written, caps, allowed, denied, mut required)| {
                let mut seen = std::collections::HashSet::new();
                required.retain(|r| seen.insert(r.clone()));
                Rule { written, caps, allowed, denied, required }
            },
        )
    }

    /// What parsing `r` must give.
    fn expected(r: &Rule, line: usize) -> PathRule {
        let mut capabilities = Capabilities::NONE;
        for c in &r.caps {
            capabilities |= Capabilities::from_name(c).unwrap();
        }
        if capabilities.is_deny() {
            capabilities = Capabilities::DENY;
        }
        let params = Parameters { allowed: r.allowed.clone(), denied: r.denied.clone(), required: r.required.clone() };
        PathRule {
            path: r.written.strip_prefix('/').unwrap_or(&r.written).to_string(),
            capabilities,
            parameters: (!capabilities.is_deny() && !params.is_empty()).then(|| Box::new(params)),
            line,
        }
    }

    fn quote(s: &str) -> String {
        serde_json::to_string(s).unwrap()
    }

    fn hcl_values(values: &[Value]) -> String {
        // JSON's spelling of scalars is HCL's too.
        format!("[{}]", values.iter().map(Value::to_string).collect::<Vec<_>>().join(", "))
    }

    /// The HCL form, one attribute per line; returns the text and the line
    /// of each block.
    fn hcl(rules: &[Rule]) -> (String, Vec<usize>) {
        let mut out = String::from("# generated\n");
        let mut lines = Vec::new();
        for r in rules {
            lines.push(out.lines().count() + 1);
            out.push_str(&format!("path {} {{\n", quote(&r.written)));
            let caps: Vec<String> = r.caps.iter().map(|c| quote(c)).collect();
            out.push_str(&format!("  capabilities = [{}]\n", caps.join(", ")));
            for (key, map) in [("allowed_parameters", &r.allowed), ("denied_parameters", &r.denied)] {
                if !map.is_empty() {
                    out.push_str(&format!("  {key} = {{\n"));
                    for (name, v) in map {
                        out.push_str(&format!("    {} = {}\n", quote(name), hcl_values(v)));
                    }
                    out.push_str("  }\n");
                }
            }
            if !r.required.is_empty() {
                let req: Vec<String> = r.required.iter().map(|n| quote(n)).collect();
                out.push_str(&format!("  required_parameters = [{}]\n", req.join(", ")));
            }
            out.push_str("}\n");
        }
        (out, lines)
    }

    /// The JSON form (the list shape, so paths may repeat).
    fn json_form(rules: &[Rule]) -> String {
        let blocks: Vec<Value> = rules
            .iter()
            .map(|r| {
                let mut body = serde_json::Map::new();
                body.insert("capabilities".into(), json!(r.caps));
                if !r.allowed.is_empty() {
                    body.insert("allowed_parameters".into(), json!(r.allowed));
                }
                if !r.denied.is_empty() {
                    body.insert("denied_parameters".into(), json!(r.denied));
                }
                if !r.required.is_empty() {
                    body.insert("required_parameters".into(), json!(r.required));
                }
                json!({ r.written.clone(): body })
            })
            .collect();
        serde_json::to_string_pretty(&json!({ "path": blocks })).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = parse_checked(&text);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_checked(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn policy_shaped_soup_never_panics(text in soup()) {
            let _ = parse_checked(&text);
            let _ = parse_checked(&format!("{{ {text} }}"));
            let _ = parse_checked(&format!("path \"a\" {{ {text} }}"));
        }

        #[test]
        fn generated_policies_round_trip(rules in prop::collection::vec(rule(), 0..6)) {
            let (text, lines) = hcl(&rules);
            let p = parse_checked(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let want: Vec<PathRule> = rules.iter().zip(&lines).map(|(r, l)| expected(r, *l)).collect();
            prop_assert_eq!(p.rules(), &want[..], "{}", text);
            prop_assert_eq!(p.text(), &text[..]);

            let text = json_form(&rules);
            let p = parse_checked(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let got: Vec<PathRule> = p.rules().iter().cloned().map(|r| PathRule { line: 0, ..r }).collect();
            let want: Vec<PathRule> = want.into_iter().map(|r| PathRule { line: 0, ..r }).collect();
            prop_assert_eq!(got, want, "{}", text);
        }

        /// Cutting a valid policy anywhere gives a policy or a positioned
        /// parse error, never a panic.
        #[test]
        fn truncated_policies(rules in prop::collection::vec(rule(), 1..4), cut in any::<prop::sample::Index>()) {
            let (text, _) = hcl(&rules);
            let mut at = cut.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let _ = parse_checked(&text[..at]);
        }
    }

    proptest! {
        // Each case parses about a megabyte: fewer cases.
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Large documents (up to 256 KiB: many blocks, long strings, deep
        /// nesting past the limit) parse in bounded time, with the same
        /// outcome checks.
        #[test]
        fn large_documents_take_bounded_time(
            piece in soup(),
            repeat in 1usize..4096,
            depth in 0usize..100_000,
            rules in prop::collection::vec(rule(), 1..3),
        ) {
            let big = piece.repeat(repeat.min(256 * 1024 / piece.len().max(1)));
            let _ = parse_checked(&big);
            let _ = parse_checked(&format!("path \"a\" {{ x = {}{} }}", "[".repeat(depth), "]".repeat(depth)));
            let _ = parse_checked(&format!("{}{}", "{".repeat(depth), "}".repeat(depth)));
            let (one, _) = hcl(&rules);
            let many = one.repeat((256 * 1024 / one.len()).max(1));
            prop_assert!(parse_checked(&many).is_ok());
        }
    }
}
