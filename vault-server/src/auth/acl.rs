//! Policy evaluation. A token's policies compile once into an [`Acl`]; a
//! request is allowed if the ACL grants the operation's capability on the
//! path (and `sudo` on root-protected paths). The `root` policy allows
//! everything.
//!
//! Matching follows Vault:
//! * an exact rule for the path wins over every glob;
//! * otherwise, among the matching rules with a trailing `*` (prefix glob)
//!   and/or `+` segments (one-segment wildcard), the highest-priority one
//!   wins: the first wildcard later in the pattern; then not ending in `*`;
//!   then fewer `+` segments; then the longer pattern; then the
//!   lexicographically greater pattern;
//! * rules for the identical pattern (in one or several policies) are merged:
//!   the union of their capabilities, unless one denies, in which case the
//!   merged rule only denies;
//! * `deny` on the winning rule denies everything, including `sudo`;
//! * the winning rule's parameter constraints (`allowed_parameters`,
//!   `denied_parameters`, `required_parameters`, merged across the blocks for
//!   its pattern) are checked against the request's data on read, create,
//!   update and patch ([`check_parameters`]), as Vault's `AllowOperation` does.
//!
//! This module is the single place where the decision is made.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::policy::{Capabilities, Parameters, PathRule, Policy, ROOT_POLICY_NAME, fold_name};
use super::{Authorized, TokenEntry};
use crate::barrier::Unsealed;
use crate::logical::{LogicalError, Operation};

/// A compiled set of policies.
///
/// A check is one hash lookup for an exact rule, then (without one) a hash
/// lookup of the path's first segment and a scan, in priority order and
/// stopping at the first match, of the glob rules of that segment plus the
/// few whose literal part is shorter than a segment. Nothing is allocated.
/// Measured on a 60-rule ACL plus `default` (loaded machine): 12-40 ns for
/// exact and unmatched paths, ~140-220 ns when 13-17 glob rules sharing a
/// literal prefix are tried before the match; the criterion bench
/// `cargo bench -p vault-server --bench auth` tracks it (`auth/acl_only`).
#[derive(Debug, Clone, Default)]
pub struct Acl {
    root: bool,
    /// Whether any rule constrains parameters: without one (the common
    /// case), [`Acl::parameters_allowed`] answers before looking anything up.
    constrained: bool,
    exact: FastMap<Box<str>, Permissions>,
    /// Glob rules whose literal part covers the path's whole first segment
    /// (`secret/data/*`, `kv/+/config`), keyed by that segment; each list
    /// has the highest priority first.
    by_segment: FastMap<Box<str>, Vec<GlobRule>>,
    /// The other glob rules (`*`, `sec*`, `+/config`), highest priority first.
    general: Vec<GlobRule>,
}

/// Maps keyed by policy paths. Only the policy author chooses the keys, and
/// a lookup of an arbitrary request path costs at most one probe sequence,
/// so a fast unkeyed hash (FNV-1a) is safe and saves most of the hashing
/// time on the request path.
type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

#[derive(Debug, Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// What the rules for one pattern grant, merged.
#[derive(Debug, Clone, Default)]
struct Permissions {
    capabilities: Capabilities,
    /// None when the merged rule constrains no parameter: a rule without
    /// constraints allocates nothing and costs nothing to check.
    parameters: Option<Box<Parameters>>,
}

impl Permissions {
    fn new(rule: &PathRule) -> Self {
        let parameters = if rule.capabilities.is_deny() { None } else { rule.parameters.clone() };
        Self { capabilities: rule.capabilities, parameters }
    }

    /// Add another block for the same pattern, as Vault's ACL does: a deny
    /// (already there or new) leaves only the deny; otherwise the union of
    /// the capabilities and the merge of the parameter constraints.
    fn merge(&mut self, rule: &PathRule) {
        if self.capabilities.is_deny() {
            return;
        }
        if rule.capabilities.is_deny() {
            *self = Self { capabilities: Capabilities::DENY, parameters: None };
            return;
        }
        self.capabilities = self.capabilities.merge(rule.capabilities);
        if let Some(p) = &rule.parameters {
            match &mut self.parameters {
                Some(mine) => mine.merge(p),
                None => self.parameters = Some(p.clone()),
            }
        }
    }
}

/// A rule with a trailing `*` and/or `+` segments.
#[derive(Debug, Clone)]
struct GlobRule {
    /// The pattern without its trailing `*`.
    pattern: Box<str>,
    /// Ends in `*`.
    prefix: bool,
    /// Number of `+` segments.
    wildcards: usize,
    /// Byte offset of the first `+` segment, or of the trailing `*`: the
    /// pattern before it is literal text every matching path starts with.
    first_wildcard: usize,
    /// The segments from the first `+` on (empty without `+`).
    rest: Box<[Segment]>,
    permissions: Permissions,
}

#[derive(Debug, Clone)]
enum Segment {
    /// `+`: any one segment.
    Any,
    /// Literal text (the last one is a prefix of the path segment when the
    /// rule ends in `*`).
    Literal(Box<str>),
}

impl GlobRule {
    fn new(path: &str, permissions: Permissions) -> Self {
        let (pattern, prefix) = match path.strip_suffix('*') {
            Some(p) => (p, true),
            None => (path, false),
        };
        let mut wildcards = 0;
        let mut first_wildcard = pattern.len();
        let mut offset = 0;
        for segment in pattern.split('/') {
            if segment == "+" {
                if wildcards == 0 {
                    first_wildcard = offset;
                }
                wildcards += 1;
            }
            offset += segment.len() + 1;
        }
        let rest = if wildcards == 0 {
            Box::default()
        } else {
            pattern[first_wildcard..]
                .split('/')
                .map(|s| if s == "+" { Segment::Any } else { Segment::Literal(s.into()) })
                .collect()
        };
        Self { pattern: pattern.into(), prefix, wildcards, first_wildcard, rest, permissions }
    }

    /// Vault's priority order: `Greater` means `self` wins over `other`.
    fn priority(&self, other: &Self) -> Ordering {
        self.first_wildcard
            .cmp(&other.first_wildcard)
            .then_with(|| other.prefix.cmp(&self.prefix))
            .then_with(|| other.wildcards.cmp(&self.wildcards))
            .then_with(|| self.pattern.len().cmp(&other.pattern.len()))
            .then_with(|| self.pattern.cmp(&other.pattern))
    }

    /// The literal text before the first wildcard.
    fn literal(&self) -> &str {
        self.pattern.get(..self.first_wildcard).unwrap_or_default()
    }

    fn matches(&self, path: &str) -> bool {
        // The literal part before the first wildcard rejects most paths.
        let Some(tail) = path.strip_prefix(self.literal()) else { return false };
        if self.wildcards == 0 {
            // A prefix rule: the literal part is the whole pattern.
            return true;
        }
        // The literal part ends at a segment boundary, so `tail` starts at
        // the segment matched by the first `+`.
        let last = self.rest.len() - 1;
        let mut rest = Some(tail);
        for (i, segment) in self.rest.iter().enumerate() {
            let Some(remaining) = rest else { return false };
            let (part, after) = match remaining.bytes().position(|b| b == b'/') {
                Some(slash) => (&remaining[..slash], Some(&remaining[slash + 1..])),
                None => (remaining, None),
            };
            rest = after;
            match segment {
                Segment::Any => {}
                // A trailing `*` cannot follow a `+` directly, so the last
                // segment of a prefix rule is literal text.
                Segment::Literal(text) if self.prefix && i == last => return part.starts_with(&**text),
                Segment::Literal(text) if **text == *part => {}
                Segment::Literal(_) => return false,
            }
        }
        rest.is_none()
    }
}

/// Whether a pattern contains a `+` segment.
fn has_wildcard_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "+")
}

impl Acl {
    /// Compile a token's policies. A [`Policy::root`] among them makes the
    /// root ACL.
    pub fn new(policies: &[Arc<Policy>]) -> Self {
        if policies.iter().any(|p| p.is_root()) {
            return Self::root();
        }
        let mut exact: FastMap<Box<str>, Permissions> = FastMap::default();
        let mut globs: HashMap<&str, Permissions> = HashMap::new();
        for rule in policies.iter().flat_map(|p| p.rules()) {
            let path = rule.path.as_str();
            if path.ends_with('*') || has_wildcard_segment(path) {
                match globs.get_mut(path) {
                    Some(p) => p.merge(rule),
                    None => {
                        globs.insert(path, Permissions::new(rule));
                    }
                }
            } else {
                match exact.get_mut(path) {
                    Some(p) => p.merge(rule),
                    None => {
                        exact.insert(path.into(), Permissions::new(rule));
                    }
                }
            }
        }
        let constrained = exact.values().chain(globs.values()).any(|p| p.parameters.is_some());
        let mut by_segment: FastMap<Box<str>, Vec<GlobRule>> = FastMap::default();
        let mut general = Vec::new();
        for (path, permissions) in globs {
            let rule = GlobRule::new(path, permissions);
            match rule.literal().split_once('/') {
                Some((first, _)) => by_segment.entry(first.into()).or_default().push(rule),
                None => general.push(rule),
            }
        }
        for rules in by_segment.values_mut().chain(std::iter::once(&mut general)) {
            rules.sort_by(|a, b| b.priority(a));
            rules.shrink_to_fit();
        }
        exact.shrink_to_fit();
        by_segment.shrink_to_fit();
        Self { root: false, constrained, exact, by_segment, general }
    }

    /// The ACL of the root policy: everything is allowed.
    pub fn root() -> Self {
        Self { root: true, ..Self::default() }
    }

    /// Interim: the root ACL if `root` is among the policy names, otherwise
    /// an ACL that denies everything. Replaced by the policy store.
    pub fn for_policies(policies: &[String]) -> Self {
        if policies.iter().any(|p| p == ROOT_POLICY_NAME) { Self::root() } else { Self::default() }
    }

    /// Whether this is the root ACL.
    pub fn is_root(&self) -> bool {
        self.root
    }

    /// What the most specific rule matching `path` grants, or None when
    /// nothing matches. `list` also tries an exact rule for the path without
    /// its trailing `/`, as Vault does.
    fn lookup(&self, path: &str, list: bool) -> Option<&Permissions> {
        let path = path.trim_start_matches('/');
        if let Some(p) = self.exact.get(path) {
            return Some(p);
        }
        if list
            && let Some(trimmed) = path.strip_suffix('/')
            && let Some(p) = self.exact.get(trimmed)
        {
            return Some(p);
        }
        // The best rule overall is the better of the best in the path's
        // first-segment bucket and the best general rule.
        let bucketed = path
            .split_once('/')
            .and_then(|(first, _)| self.by_segment.get(first))
            .and_then(|rules| rules.iter().find(|g| g.matches(path)));
        let general = self.general.iter().find(|g| g.matches(path));
        match (bucketed, general) {
            (Some(b), Some(g)) => Some(&if b.priority(g).is_ge() { b } else { g }.permissions),
            (b, g) => b.or(g).map(|r| &r.permissions),
        }
    }

    /// The capabilities on `path`, as `sys/capabilities-self` reports them:
    /// `["root"]` for the root ACL, `["deny"]` when nothing is granted or
    /// the path is denied, else the sorted capability names.
    pub fn capabilities(&self, path: &str) -> Vec<&'static str> {
        if self.root {
            return vec![ROOT_POLICY_NAME];
        }
        match self.lookup(path, true).map(|p| p.capabilities) {
            Some(c) if !c.is_deny() && !c.is_empty() => c.names(),
            _ => vec!["deny"],
        }
    }

    /// Does this ACL allow `op` on `path` (full path, no mount stripping),
    /// with `sudo` when `needs_sudo`?
    pub fn allows(&self, path: &str, op: Operation, needs_sudo: bool) -> bool {
        if self.root {
            return true;
        }
        let Some(granted) = self.lookup(path, op == Operation::List).map(|p| p.capabilities) else { return false };
        if granted.is_deny() {
            return false;
        }
        let mut needed = Capabilities::for_operation(op);
        if needs_sudo {
            needed |= Capabilities::SUDO;
        }
        granted.contains(needed)
    }

    /// Do the parameter constraints of the rule that governs `path` admit
    /// `data`, the request data the backend will see (the body of a write,
    /// the query parameters of a read)? This judges parameters only: call
    /// it after [`Acl::allows`] granted the operation.
    ///
    /// As Vault: only read, create, update and patch are checked (list and
    /// delete never are); required names must be present; a request without
    /// data passes otherwise; a denied name (`"*"`: any name) with a matching
    /// value refuses; then, if names are allowed, every name must be allowed
    /// (or `"*"` be) with an allowed value. Root passes.
    pub fn parameters_allowed(&self, path: &str, op: Operation, data: &Map<String, Value>) -> bool {
        if self.root || !self.constrained {
            return true;
        }
        if !matches!(op, Operation::Read | Operation::Create | Operation::Update | Operation::Patch) {
            return true;
        }
        match self.lookup(path, false) {
            // Nothing grants the path: `allows` refused already; stay closed.
            None => false,
            Some(p) if p.capabilities.is_deny() => false,
            Some(Permissions { parameters: None, .. }) => true,
            Some(Permissions { parameters: Some(params), .. }) => admits(params, data),
        }
    }
}

/// Vault's parameter check (`AllowOperation`, after the capability check).
fn admits(params: &Parameters, data: &Map<String, Value>) -> bool {
    if params.required.iter().any(|name| !data.contains_key(name.as_str())) {
        return false;
    }
    if data.is_empty() {
        return true;
    }
    if !params.denied.is_empty() {
        if params.denied.contains_key("*") {
            return false;
        }
        for (name, value) in data {
            if let Some(values) = params.denied.get(&*fold_name(name))
                && value_in_denied(value, values)
            {
                return false;
            }
        }
    }
    if params.allowed.is_empty() {
        return true;
    }
    let any_name = params.allowed.contains_key("*");
    if any_name && params.allowed.len() == 1 {
        return true;
    }
    data.iter().all(|(name, value)| match params.allowed.get(&*fold_name(name)) {
        Some(values) => value_in_allowed(value, values),
        None => any_name,
    })
}

/// An allowed value list admits `value` if it is empty, holds the value,
/// or holds every element of it: of a list, or of a string read as a
/// comma-separated list (Vault 1.21's per-element matching; an API may well
/// split such a string, so each part must be allowed).
fn value_in_allowed(value: &Value, allowed: &[Value]) -> bool {
    if allowed.is_empty() || value_in_list(value, allowed) {
        return true;
    }
    match value {
        Value::Array(items) => items.iter().all(|item| value_in_list(item, allowed)),
        Value::String(s) => comma_parts(s).all(|part| str_in_list(part, allowed)),
        _ => false,
    }
}

/// A denied value list refuses `value` if it is empty, holds the value, or
/// holds any element of it (of a list, or of a comma-separated string).
fn value_in_denied(value: &Value, denied: &[Value]) -> bool {
    if denied.is_empty() || value_in_list(value, denied) || bool_in_list(value, denied) {
        return true;
    }
    match value {
        Value::Array(items) => items.iter().any(|item| value_in_list(item, denied)),
        Value::String(s) => comma_parts(s).any(|part| str_in_list(part, denied)),
        _ => false,
    }
}

/// The parts of a comma-separated string, trimmed (Vault's
/// `ParseCommaStringSlice`); none for the empty string.
fn comma_parts(s: &str) -> impl Iterator<Item = &str> {
    (!s.is_empty()).then(|| s.split(',').map(str::trim)).into_iter().flatten()
}

/// Vault's `valueInParameterList`: null matches only null, a string in the
/// policy matches a string value as a glob, anything else must be equal.
fn value_in_list(value: &Value, list: &[Value]) -> bool {
    list.iter().any(|item| match (item, value) {
        (Value::Null, _) | (_, Value::Null) => item.is_null() && value.is_null(),
        (Value::String(pattern), _) => value.as_str().is_some_and(|v| glob_matches(pattern, v)),
        _ => json_eq(item, value),
    })
}

/// Engines read a boolean field in every spelling Go's `ParseBool` takes
/// (`1`, `t`, `TRUE`, `true`, ..., and JSON `true`), so a denied `true` must
/// refuse them all, not only the spelling the policy wrote. Used for denied
/// lists only: there a looser match refuses more, never allows more.
fn bool_in_list(value: &Value, list: &[Value]) -> bool {
    let as_bool = |v: &Value| match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => crate::logical::fields::parse_bool(s),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        _ => None,
    };
    as_bool(value).is_some_and(|b| list.iter().any(|item| as_bool(item) == Some(b)))
}

fn str_in_list(value: &str, list: &[Value]) -> bool {
    list.iter().any(|item| item.as_str().is_some_and(|pattern| glob_matches(pattern, value)))
}

/// Vault's `GlobbedStringsMatch`: a leading and/or trailing `*` in the
/// pattern matches any text there; a lone `*` is literal.
fn glob_matches(pattern: &str, value: &str) -> bool {
    if pattern.len() < 2 {
        return pattern == value;
    }
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(rest), Some(_)) => value.contains(&rest[..rest.len() - 1]),
        (Some(suffix), None) => value.ends_with(suffix),
        (None, Some(prefix)) => value.starts_with(prefix),
        (None, None) => pattern == value,
    }
}

/// JSON equality where numbers compare by value (`1`, `1.0` and `1e0` are
/// one number, as JSON has one number type). Strings inside lists and
/// objects compare exactly.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else if x.is_f64() || y.is_f64() {
                x.as_f64() == y.as_f64()
            } else {
                // A negative and a too-large-for-i64 integer.
                false
            }
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Check `token` (whose policies compiled to `acl`) against `path`/`op`
/// and, if allowed, make the capability.
pub fn authorize(
    unsealed: Unsealed,
    token: Arc<TokenEntry>,
    acl: &Acl,
    path: &str,
    op: Operation,
    needs_sudo: bool,
) -> Result<Authorized, LogicalError> {
    if !acl.allows(path, op, needs_sudo) {
        return Err(LogicalError::PermissionDenied);
    }
    Ok(Authorized::new(unsealed, Some(token)))
}

/// After [`authorize`]: refuse (403, as Vault) a request whose data the
/// parameter constraints of the governing rule do not admit, before the
/// backend runs. See [`Acl::parameters_allowed`].
pub fn check_parameters(acl: &Acl, path: &str, op: Operation, data: &Map<String, Value>) -> Result<(), LogicalError> {
    if acl.parameters_allowed(path, op, data) { Ok(()) } else { Err(LogicalError::PermissionDenied) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::policy::DEFAULT_POLICY;
    use serde_json::json;

    const OPS: [Operation; 6] =
        [Operation::Read, Operation::List, Operation::Create, Operation::Update, Operation::Patch, Operation::Delete];

    fn policy(text: &str) -> Arc<Policy> {
        Arc::new(Policy::parse("p", text).unwrap())
    }

    fn acl(texts: &[&str]) -> Acl {
        Acl::new(&texts.iter().map(|t| policy(t)).collect::<Vec<_>>())
    }

    fn rule(path: &str, caps: &str) -> String {
        format!("path \"{path}\" {{ capabilities = [{caps}] }}\n")
    }

    fn can_read(acl: &Acl, path: &str) -> bool {
        acl.allows(path, Operation::Read, false)
    }

    #[test]
    fn capability_operation_matrix() {
        for granted in ["read", "list", "create", "update", "patch", "delete"] {
            let a = acl(&[&rule("secret/x", &format!("\"{granted}\""))]);
            for op in OPS {
                assert_eq!(a.allows("secret/x", op, false), op.capability() == granted, "{granted} vs {op:?}");
                assert!(!a.allows("secret/y", op, false));
            }
        }
        // All six together, on a glob and a `+` pattern.
        let all = "\"create\", \"read\", \"update\", \"patch\", \"delete\", \"list\"";
        let a = acl(&[&(rule("secret/*", all) + &rule("kv/+/config", all))]);
        for op in OPS {
            assert!(a.allows("secret/a/b", op, false));
            assert!(a.allows("kv/team/config", op, false));
            assert!(!a.allows("kv/team/other", op, false));
        }
        // Deny and sudo grant no operation by themselves.
        for caps in ["\"deny\"", "\"sudo\"", ""] {
            let a = acl(&[&rule("secret/x", caps)]);
            for op in OPS {
                assert!(!a.allows("secret/x", op, false), "{caps} {op:?}");
            }
        }
    }

    #[test]
    fn exact_and_prefix_globs() {
        // Examples from Vault's policy documentation.
        let a = acl(&[&(rule("secret/foo", "\"read\"")
            + &rule("secret/bar/*", "\"read\"")
            + &rule("secret/zip-*", "\"read\""))]);
        assert!(can_read(&a, "secret/foo"));
        assert!(!can_read(&a, "secret/food"));
        assert!(!can_read(&a, "secret/foo/bar"));
        assert!(can_read(&a, "secret/bar/zip"));
        assert!(can_read(&a, "secret/bar/zip/zap"));
        assert!(!can_read(&a, "secret/bars/zip"));
        assert!(!can_read(&a, "secret/bar"));
        assert!(can_read(&a, "secret/zip-zap"));
        assert!(can_read(&a, "secret/zip-zap/zong"));
        assert!(!can_read(&a, "secret/zip/zap"));
        // Leading slashes on the request path are ignored.
        assert!(can_read(&a, "/secret/foo"));
        // A lone `*` matches everything.
        let a = acl(&[&rule("*", "\"read\"")]);
        assert!(can_read(&a, "anything/at/all"));
        assert!(can_read(&a, ""));
    }

    #[test]
    fn segment_wildcards() {
        let a = acl(&[&(rule("secret/+/teamb", "\"read\"")
            + &rule("secret/+/+/teamc", "\"read\"")
            + &rule("secret/+/config", "\"read\""))]);
        assert!(can_read(&a, "secret/foo/teamb"));
        assert!(!can_read(&a, "secret/foo/bar/teamb"));
        assert!(!can_read(&a, "secret/teamb"));
        assert!(can_read(&a, "secret/foo/bar/teamc"));
        assert!(!can_read(&a, "secret/foo/teamc"));
        assert!(can_read(&a, "secret/a/config"));
        assert!(!can_read(&a, "secret/a/b/config"));
        assert!(!can_read(&a, "secret/a/config/x"));
        assert!(!can_read(&a, "secret/a/configs"));
        assert!(!can_read(&a, "other/a/config"));

        // `+` combined with a trailing `*`.
        let a = acl(&[&(rule("secret/data/+/*", "\"read\"")
            + &rule("app/+/log-*", "\"read\"")
            + &rule("+/x", "\"read\""))]);
        assert!(can_read(&a, "secret/data/team/a"));
        assert!(can_read(&a, "secret/data/team/a/b/c"));
        assert!(can_read(&a, "secret/data/team/"));
        assert!(!can_read(&a, "secret/data/team"));
        assert!(!can_read(&a, "secret/metadata/team/a"));
        assert!(can_read(&a, "app/one/log-1"));
        assert!(can_read(&a, "app/one/log-1/more"));
        assert!(!can_read(&a, "app/one/lo"));
        assert!(!can_read(&a, "app/one/two/log-1"));
        assert!(can_read(&a, "anything/x"));
        assert!(!can_read(&a, "any/thing/x"));
    }

    #[test]
    fn exact_rule_beats_globs() {
        let a = acl(&[&(rule("secret/*", "\"create\", \"read\", \"update\", \"patch\", \"delete\", \"list\"")
            + &rule("secret/super-secret", "\"deny\""))]);
        assert!(can_read(&a, "secret/other"));
        for op in OPS {
            assert!(!a.allows("secret/super-secret", op, false));
        }
        // ... and `secret/super-secret/x` is still covered by the glob.
        assert!(can_read(&a, "secret/super-secret/x"));

        // An exact rule granting less than a glob also wins.
        let a = acl(&[&(rule("secret/+", "\"read\", \"update\"") + &rule("secret/a", "\"list\""))]);
        assert!(!can_read(&a, "secret/a"));
        assert!(a.allows("secret/a", Operation::List, false));
        assert!(can_read(&a, "secret/b"));
    }

    /// The winner among two patterns that both match `path`, whatever the
    /// policy order.
    fn winner(p1: &str, p2: &str, path: &str) -> &'static str {
        let a = acl(&[&(rule(p1, "\"read\"") + &rule(p2, "\"list\""))]);
        let b = acl(&[&rule(p2, "\"list\""), &rule(p1, "\"read\"")]);
        let (ra, rb) = (can_read(&a, path), can_read(&b, path));
        assert_eq!(ra, rb, "policy order changed the outcome for {p1} vs {p2}");
        let la = a.allows(path, Operation::List, false);
        assert_ne!(ra, la, "exactly one of {p1} / {p2} must win on {path}");
        if ra { "first" } else { "second" }
    }

    #[test]
    fn glob_priority_order() {
        // Vault's documentation: same first wildcard, both end in `*`, the
        // one with more `+` segments loses.
        assert_eq!(winner("secret/*", "secret/+/+/foo/*", "secret/a/b/foo/c"), "first");
        // 1. first wildcard later wins.
        assert_eq!(winner("foo/a*", "foo/+", "foo/ab"), "first");
        assert_eq!(winner("foo/bar/+/baz", "foo/+/bar/baz", "foo/bar/bar/baz"), "first");
        assert_eq!(winner("secret/*", "secret/a/*", "secret/a/b"), "second");
        assert_eq!(winner("secret/+/x/*", "secret/a/*", "secret/a/x/y"), "second");
        // 2. not ending in `*` wins.
        assert_eq!(winner("foo/+/bar", "foo/+/ba*", "foo/x/bar"), "first");
        assert_eq!(winner("foo/+", "foo/*", "foo/x"), "first");
        // 3. fewer `+` segments wins.
        assert_eq!(winner("foo/+/+/baz", "foo/+/bar/baz", "foo/x/bar/baz"), "second");
        // 4. longer wins.
        assert_eq!(winner("foo/+/bar/ba*", "foo/+/bar/b*", "foo/x/bar/baz"), "first");
        // 5. lexicographically greater wins (both match, same shape).
        assert_eq!(winner("a/+/b", "a/+/+", "a/x/b"), "first");
        assert_eq!(winner("x/+/c*", "x/+/d*", "x/y/c"), "first");
    }

    #[test]
    fn deny_merging_across_policies() {
        let grant = rule("secret/shared", "\"read\", \"update\"");
        let deny = rule("secret/shared", "\"deny\"");
        for order in [[&grant, &deny], [&deny, &grant]] {
            let a = acl(&[order[0], order[1]]);
            assert!(!can_read(&a, "secret/shared"));
            assert_eq!(a.capabilities("secret/shared"), vec!["deny"]);
        }
        // Same for glob patterns.
        let a = acl(&[&rule("secret/*", "\"read\""), &rule("secret/*", "\"deny\"")]);
        assert!(!can_read(&a, "secret/a"));
        let a = acl(&[&rule("secret/+/x", "\"deny\""), &rule("secret/+/x", "\"read\"")]);
        assert!(!can_read(&a, "secret/a/x"));
        // Union without deny, also within one policy.
        let a =
            acl(&[&rule("secret/x", "\"read\""), &(rule("secret/x", "\"list\"") + &rule("secret/x", "\"update\""))]);
        assert_eq!(a.capabilities("secret/x"), vec!["list", "read", "update"]);
    }

    #[test]
    fn specific_rules_override_broader_ones() {
        // A more specific deny overrides a broader grant (from any policy).
        let a = acl(&[&rule("secret/*", "\"read\", \"list\""), &rule("secret/admin/*", "\"deny\"")]);
        assert!(can_read(&a, "secret/app"));
        assert!(!can_read(&a, "secret/admin/creds"));
        assert!(!a.allows("secret/admin/creds", Operation::List, false));
        let a = acl(&[&rule("secret/*", "\"read\""), &rule("secret/+/admin", "\"deny\"")]);
        assert!(!can_read(&a, "secret/team/admin"));
        assert!(can_read(&a, "secret/team/user"));
        // As in Vault, a more specific grant also wins over a broader deny.
        let a = acl(&[&rule("secret/*", "\"deny\""), &rule("secret/public/*", "\"read\"")]);
        assert!(can_read(&a, "secret/public/x"));
        assert!(!can_read(&a, "secret/private/x"));
    }

    #[test]
    fn sudo() {
        let a = acl(&[&(rule("sys/audit/*", "\"update\", \"sudo\"") + &rule("sys/mounts/*", "\"update\""))]);
        assert!(a.allows("sys/audit/file", Operation::Update, true));
        assert!(a.allows("sys/audit/file", Operation::Update, false));
        assert!(!a.allows("sys/audit/file", Operation::Delete, true));
        assert!(!a.allows("sys/mounts/kv", Operation::Update, true));
        assert!(a.allows("sys/mounts/kv", Operation::Update, false));
        // Deny beats sudo.
        let a = acl(&[&rule("sys/audit/*", "\"update\", \"sudo\""), &rule("sys/audit/*", "\"deny\"")]);
        assert!(!a.allows("sys/audit/file", Operation::Update, true));
    }

    #[test]
    fn root_acl() {
        for a in [
            Acl::root(),
            Acl::new(&[Arc::new(Policy::root())]),
            Acl::new(&[policy(&rule("a", "\"deny\"")), Arc::new(Policy::root())]),
            Acl::for_policies(&["default".into(), "root".into()]),
        ] {
            assert!(a.is_root());
            assert!(a.allows("sys/rotate", Operation::Update, true));
            assert!(a.allows("anything", Operation::Delete, true));
            assert_eq!(a.capabilities("a"), vec!["root"]);
        }
        let none = Acl::for_policies(&["default".into()]);
        assert!(!none.is_root());
        assert!(!none.allows("auth/token/lookup-self", Operation::Read, false));
        // A policy that is merely named "root" grants nothing special.
        assert!(!Acl::new(&[Arc::new(Policy::parse("root", "").unwrap())]).is_root());
        assert!(!Acl::new(&[]).allows("x", Operation::Read, false));
    }

    #[test]
    fn default_policy() {
        let a = Acl::new(&[Arc::new(Policy::default_policy().unwrap())]);
        assert!(a.allows("auth/token/lookup-self", Operation::Read, false));
        assert!(a.allows("auth/token/renew-self", Operation::Update, false));
        assert!(a.allows("auth/token/revoke-self", Operation::Update, false));
        assert!(a.allows("sys/capabilities-self", Operation::Update, false));
        assert!(a.allows("cubbyhole/mine", Operation::Create, false));
        assert!(a.allows("cubbyhole/", Operation::List, false));
        assert!(a.allows("sys/tools/hash/sha2-256", Operation::Update, false));
        assert!(!a.allows("auth/token/lookup-self", Operation::Read, true));
        assert!(!a.allows("auth/token/lookup-self", Operation::Update, false));
        assert!(!a.allows("auth/token/create", Operation::Update, false));
        assert!(!a.allows("secret/x", Operation::Read, false));
        assert!(!a.allows("sys/seal", Operation::Update, true));
        assert_eq!(a.capabilities("secret/x"), vec!["deny"]);
        assert_eq!(a.capabilities("cubbyhole/x"), vec!["create", "delete", "list", "read", "update"]);
        assert_eq!(Policy::default_policy().unwrap().text(), DEFAULT_POLICY);
    }

    #[test]
    fn capabilities_report() {
        let a = acl(&[&(rule("secret/x", "\"update\", \"read\", \"sudo\", \"create\"")
            + &rule("secret/d", "\"deny\"")
            + &rule("secret/e", ""))]);
        assert_eq!(a.capabilities("secret/x"), vec!["create", "read", "sudo", "update"]);
        assert_eq!(a.capabilities("secret/d"), vec!["deny"]);
        assert_eq!(a.capabilities("secret/e"), vec!["deny"]);
        assert_eq!(a.capabilities("secret/none"), vec!["deny"]);
        // The list fallback: "secret/x/" is looked up as "secret/x".
        assert_eq!(a.capabilities("secret/x/"), vec!["create", "read", "sudo", "update"]);
    }

    #[test]
    fn list_trailing_slash_falls_back_to_exact_rule() {
        let a = acl(&[&rule("secret/metadata", "\"list\"")]);
        assert!(a.allows("secret/metadata/", Operation::List, false));
        assert!(a.allows("secret/metadata", Operation::List, false));
        assert!(!a.allows("secret/metadata/", Operation::Read, false));
    }

    #[test]
    fn legacy_and_json_policies_compile() {
        let a =
            acl(&["path \"secret/*\" { policy = \"write\" }", "{\"path\": {\"secret/ro/*\": {\"policy\": \"read\"}}}"]);
        for op in [Operation::Create, Operation::Read, Operation::Update, Operation::Delete, Operation::List] {
            assert!(a.allows("secret/x", op, false), "{op:?}");
        }
        assert!(!a.allows("secret/x", Operation::Patch, false));
        assert!(can_read(&a, "secret/ro/x"));
        assert!(!a.allows("secret/ro/x", Operation::Update, false));
    }

    // -----------------------------------------------------------------
    // Parameter constraints.

    /// Whether a request with `data` (a JSON object) may `op` on `path`:
    /// the capability check, then the parameter check, as the core does.
    fn admits(a: &Acl, op: Operation, path: &str, data: Value) -> bool {
        let Value::Object(data) = data else { panic!("data must be an object") };
        a.allows(path, op, false) && a.parameters_allowed(path, op, &data)
    }

    fn update(a: &Acl, path: &str, data: Value) -> bool {
        admits(a, Operation::Update, path, data)
    }

    fn block(path: &str, body: &str) -> String {
        format!(
            "path \"{path}\" {{\n capabilities = [\"create\", \"read\", \"update\", \"patch\", \"list\", \"delete\"]\n{body}\n}}\n"
        )
    }

    #[test]
    fn allowed_parameters_limit_the_names() {
        // The red team's case: bob may change his password, nothing else.
        let a = acl(&[r#"path "auth/userpass/users/bob" {
  capabilities = ["update"]
  allowed_parameters = { "password" = [] }
}"#]);
        let bob = "auth/userpass/users/bob";
        assert!(update(&a, bob, json!({"password": "new"})));
        assert!(update(&a, bob, json!({"password": 12})), "[] allows any value");
        assert!(!update(&a, bob, json!({"token_policies": ["admin"]})));
        assert!(!update(&a, bob, json!({"password": "new", "token_policies": "admin"})));
        assert!(!update(&a, bob, json!({"Token_Policies": "admin"})), "names are compared case-insensitively");
        assert!(update(&a, bob, json!({"PassWord": "new"})));
        assert!(update(&a, bob, json!({})), "no data: nothing to refuse");
        assert!(!update(&a, "auth/userpass/users/alice", json!({"password": "x"})));
    }

    #[test]
    fn allowed_values_and_globs() {
        let a = acl(&[&block(
            "kv/x",
            r#"allowed_parameters = {
  "ttl" = ["1h", "2h"]
  "env" = ["dev-*", "*-test", "*sandbox*", "*"]
}"#,
        )]);
        assert!(update(&a, "kv/x", json!({"ttl": "1h"})));
        assert!(update(&a, "kv/x", json!({"ttl": "2h", "env": "dev-1"})));
        assert!(!update(&a, "kv/x", json!({"ttl": "3h"})));
        assert!(!update(&a, "kv/x", json!({"ttl": "1h", "other": 1})), "unlisted name");
        // Lists and comma-separated strings: every element must be allowed.
        assert!(update(&a, "kv/x", json!({"ttl": ["1h", "2h"]})));
        assert!(update(&a, "kv/x", json!({"ttl": ["2h"]})));
        assert!(!update(&a, "kv/x", json!({"ttl": ["1h", "3h"]})));
        assert!(update(&a, "kv/x", json!({"ttl": "1h,2h"})));
        assert!(update(&a, "kv/x", json!({"ttl": " 1h , 2h "})), "parts are trimmed");
        assert!(!update(&a, "kv/x", json!({"ttl": "1h,3h"})));
        assert!(!update(&a, "kv/x", json!({"ttl": ["1h", ["2h"]]})), "a nested list is one (unlisted) value");
        // Globs: prefix, suffix, infix; a lone "*" value is literal.
        assert!(update(&a, "kv/x", json!({"env": "dev-"})));
        assert!(update(&a, "kv/x", json!({"env": "unit-test"})));
        assert!(update(&a, "kv/x", json!({"env": "my-sandbox-2"})));
        assert!(update(&a, "kv/x", json!({"env": "*"})));
        assert!(!update(&a, "kv/x", json!({"env": "prod"})));
        assert!(!update(&a, "kv/x", json!({"env": "xdev-1"})));
        assert!(!update(&a, "kv/x", json!({"env": ["dev-1", "prod"]})));
        assert!(!update(&a, "kv/x", json!({"env": null})), "null is not an allowed value here");
        assert!(!update(&a, "kv/x", json!({"env": 5})), "a string pattern never matches a number");
    }

    #[test]
    fn values_compare_as_json() {
        let a = acl(&[&block(
            "kv/x",
            r#"allowed_parameters = {
  "n" = [1, 2.5, -3]
  "b" = [false]
  "z" = [null]
  "m" = [{ "k" = "v" }]
  "l" = [["a", "b"]]
}"#,
        )]);
        for ok in [
            json!({"n": 1}),
            json!({"n": 1.0}),
            json!({"n": 2.5}),
            json!({"n": -3}),
            json!({"n": [1, 2.5]}),
            json!({"b": false}),
            json!({"z": null}),
            json!({"m": {"k": "v"}}),
            json!({"l": ["a", "b"]}),
        ] {
            assert!(update(&a, "kv/x", ok.clone()), "{ok}");
        }
        for refused in [
            json!({"n": 2}),
            json!({"n": "1"}),
            json!({"n": null}),
            json!({"n": 18_446_744_073_709_551_615_u64}),
            json!({"b": true}),
            json!({"b": "false"}),
            json!({"z": "null"}),
            json!({"m": {"k": "w"}}),
            json!({"m": {"k": "v", "j": 1}}),
            json!({"l": ["b", "a"]}),
            json!({"l": ["a*"]}),
        ] {
            assert!(!update(&a, "kv/x", refused.clone()), "{refused}");
        }
    }

    #[test]
    fn star_allows_the_other_names() {
        let a = acl(&[&block("kv/x", r#"allowed_parameters = { "*" = [], "size" = ["s", "m"] }"#)]);
        assert!(update(&a, "kv/x", json!({"anything": 1, "size": "s"})));
        assert!(!update(&a, "kv/x", json!({"anything": 1, "size": "xl"})), "listed names keep their values");
        let a = acl(&[&block("kv/x", r#"allowed_parameters = { "*" = [] }"#)]);
        assert!(update(&a, "kv/x", json!({"anything": [1, 2], "else": null})));
    }

    #[test]
    fn denied_parameters() {
        let a = acl(&[&block(
            "auth/token/roles/*",
            r#"denied_parameters = {
  "token_policies" = []
  "allowed_policies" = ["admin", "root*"]
}"#,
        )]);
        let role = "auth/token/roles/r";
        assert!(update(&a, role, json!({"allowed_policies": "dev", "ttl": "1h"})), "the others are allowed");
        assert!(!update(&a, role, json!({"token_policies": "dev"})), "[] denies any value");
        assert!(!update(&a, role, json!({"token_policies": null})));
        assert!(!update(&a, role, json!({"allowed_policies": "admin"})));
        assert!(!update(&a, role, json!({"Allowed_Policies": "admin"})));
        assert!(!update(&a, role, json!({"allowed_policies": "rooted"})), "glob");
        assert!(!update(&a, role, json!({"allowed_policies": ["dev", "admin"]})), "any element denied");
        assert!(!update(&a, role, json!({"allowed_policies": "dev, admin"})), "any comma part denied");
        assert!(update(&a, role, json!({"allowed_policies": ["dev", "ops"]})));
        assert!(update(&a, role, json!({"allowed_policies": "administrator"})));

        // "*" denies every parameter, but not a request without any.
        let a = acl(&[&block("kv/x", r#"denied_parameters = { "*" = [] }"#)]);
        assert!(!update(&a, "kv/x", json!({"v": 1})));
        assert!(update(&a, "kv/x", json!({})));
        assert!(admits(&a, Operation::Read, "kv/x", json!({})));
    }

    /// A denied boolean refuses every spelling the engines read as that
    /// boolean (red team: `force: "1"` passed a denied `true`); allowed
    /// lists stay exact.
    #[test]
    fn denied_booleans_cover_every_spelling() {
        let a = acl(&[&block("transit/restore/*", r#"denied_parameters = { "force" = ["true"] }"#)]);
        let p = "transit/restore/k";
        for v in
            [json!(true), json!("true"), json!("1"), json!(1), json!("t"), json!("T"), json!("TRUE"), json!("True")]
        {
            assert!(!update(&a, p, json!({"force": v})), "{v}");
        }
        for v in [json!(false), json!("0"), json!("f"), json!(0)] {
            assert!(update(&a, p, json!({"force": v})), "{v}");
        }
        let a = acl(&[&block("transit/keys/*", r#"denied_parameters = { "exportable" = [true] }"#)]);
        assert!(!update(&a, "transit/keys/k", json!({"exportable": "1"})));
        let a = acl(&[&block("transit/keys/*", r#"allowed_parameters = { "exportable" = ["false"] }"#)]);
        assert!(update(&a, "transit/keys/k", json!({"exportable": "false"})));
        assert!(!update(&a, "transit/keys/k", json!({"exportable": "0"})), "allowed lists are not widened");
    }

    #[test]
    fn denied_wins_over_allowed() {
        let a = acl(&[&block(
            "kv/x",
            r#"allowed_parameters = { "v" = [], "w" = ["a", "b"] }
denied_parameters = { "v" = ["bad*"], "w" = ["b"] }"#,
        )]);
        assert!(update(&a, "kv/x", json!({"v": "good", "w": "a"})));
        assert!(!update(&a, "kv/x", json!({"v": "bad1"})));
        assert!(!update(&a, "kv/x", json!({"w": "b"})));
        let a = acl(&[&block(
            "kv/x",
            r#"allowed_parameters = { "*" = [] }
denied_parameters = { "*" = [] }"#,
        )]);
        assert!(!update(&a, "kv/x", json!({"v": 1})));
    }

    #[test]
    fn required_parameters() {
        let a = acl(&[&block("kv/x", r#"required_parameters = ["name", "ID"]"#)]);
        assert!(update(&a, "kv/x", json!({"name": "n", "id": 1, "other": true})));
        assert!(!update(&a, "kv/x", json!({"name": "n"})));
        assert!(!update(&a, "kv/x", json!({})), "no data: required names are still missing");
        // As in Vault, a required name is looked up folded to lower case.
        assert!(!update(&a, "kv/x", json!({"name": "n", "ID": 1})));
        // Vault checks reads too (their data are the query parameters).
        assert!(!admits(&a, Operation::Read, "kv/x", json!({})));
        assert!(admits(&a, Operation::Read, "kv/x", json!({"name": "a", "id": "b"})));
    }

    #[test]
    fn which_operations_are_checked() {
        let a = acl(&[&block(
            "kv/x",
            r#"allowed_parameters = { "v" = [] }
required_parameters = ["v"]"#,
        )]);
        let bad = || json!({"w": 1});
        for op in [Operation::Read, Operation::Create, Operation::Update, Operation::Patch] {
            assert!(!admits(&a, op, "kv/x", bad()), "{op:?} is checked");
            assert!(admits(&a, op, "kv/x", json!({"v": 1})), "{op:?}");
        }
        // List and delete never carry parameters for a policy to judge (Vault).
        assert!(admits(&a, Operation::List, "kv/x", bad()));
        assert!(admits(&a, Operation::Delete, "kv/x", bad()));
        // Root is not constrained.
        let Value::Object(data) = bad() else { unreachable!() };
        assert!(Acl::root().parameters_allowed("kv/x", Operation::Update, &data));
    }

    #[test]
    fn only_the_winning_rule_constrains() {
        let a = acl(&[&(block("secret/*", r#"allowed_parameters = { "a" = [] }"#)
            + &rule("secret/open", "\"update\"")
            + &block("secret/+/strict", r#"denied_parameters = { "*" = [] }"#))]);
        assert!(update(&a, "secret/open", json!({"b": 1})), "the exact rule has no constraint");
        assert!(!update(&a, "secret/other", json!({"b": 1})));
        assert!(update(&a, "secret/other", json!({"a": 1})));
        assert!(!update(&a, "secret/t/strict", json!({"a": 1})), "the more specific glob wins");
        assert!(update(&a, "secret/t/other", json!({"a": 1})));
        // An unconstrained ACL never looks a path up for parameters.
        let plain = acl(&[&rule("secret/*", "\"update\"")]);
        assert!(!plain.constrained);
        assert!(a.constrained);
        assert!(update(&plain, "secret/x", json!({"anything": 1})));
    }

    /// Both orders of two policies, which must give the same ACL behaviour.
    fn both_orders(p1: &str, p2: &str) -> [Acl; 2] {
        [acl(&[p1, p2]), acl(&[p2, p1])]
    }

    #[test]
    fn merging_allowed_parameters() {
        // An allow-list in one block restricts another block for the same
        // path that allowed every name (Vault merges the maps).
        for a in both_orders(&block("kv/x", r#"allowed_parameters = { "a" = [] }"#), &block("kv/x", "")) {
            assert!(update(&a, "kv/x", json!({"a": 1})));
            assert!(!update(&a, "kv/x", json!({"b": 1})));
        }
        // Value lists concatenate; names from both are allowed.
        for a in both_orders(
            &block("kv/x", r#"allowed_parameters = { "a" = ["1"], "b" = [] }"#),
            &block("kv/x", r#"allowed_parameters = { "a" = ["2"], "c" = ["x"] }"#),
        ) {
            assert!(update(&a, "kv/x", json!({"a": "1", "b": true, "c": "x"})));
            assert!(update(&a, "kv/x", json!({"a": ["1", "2"]})));
            assert!(!update(&a, "kv/x", json!({"a": "3"})));
            assert!(!update(&a, "kv/x", json!({"c": "y"})));
            assert!(!update(&a, "kv/x", json!({"d": 1})));
        }
        // An empty list (any value) wins over a value list.
        for a in both_orders(
            &block("kv/x", r#"allowed_parameters = { "a" = [] }"#),
            &block("kv/x", r#"allowed_parameters = { "a" = ["1"] }"#),
        ) {
            assert!(update(&a, "kv/x", json!({"a": "anything"})));
        }
        // "*" from one block admits the names the other does not list.
        for a in both_orders(
            &block("kv/x", r#"allowed_parameters = { "*" = [] }"#),
            &block("kv/x", r#"allowed_parameters = { "a" = ["1"] }"#),
        ) {
            assert!(update(&a, "kv/x", json!({"b": 2, "a": "1"})));
            assert!(!update(&a, "kv/x", json!({"a": "2"})));
        }
        // Within one policy too.
        let a = acl(&[&(block("kv/x", r#"allowed_parameters = { "a" = [] }"#)
            + &block("kv/x", r#"allowed_parameters = { "b" = [] }"#))]);
        assert!(update(&a, "kv/x", json!({"a": 1, "b": 2})));
        assert!(!update(&a, "kv/x", json!({"c": 1})));
    }

    #[test]
    fn merging_denied_and_required_parameters() {
        for a in both_orders(
            &block(
                "kv/x",
                r#"denied_parameters = { "a" = ["1"], "b" = ["x"] }
required_parameters = ["r1"]"#,
            ),
            &block(
                "kv/x",
                r#"denied_parameters = { "a" = ["2"], "b" = [], "c" = [] }
required_parameters = ["r2", "r1"]"#,
            ),
        ) {
            let ok = json!({"r1": 1, "r2": 2, "a": "3"});
            assert!(update(&a, "kv/x", ok));
            assert!(!update(&a, "kv/x", json!({"r1": 1, "r2": 2, "a": "1"})));
            assert!(!update(&a, "kv/x", json!({"r1": 1, "r2": 2, "a": "2"})));
            assert!(!update(&a, "kv/x", json!({"r1": 1, "r2": 2, "b": "y"})), "[] wins: any value of b");
            assert!(!update(&a, "kv/x", json!({"r1": 1, "r2": 2, "c": 0})));
            assert!(!update(&a, "kv/x", json!({"r1": 1, "a": "3"})), "required names are the union");
            assert!(!update(&a, "kv/x", json!({"r2": 1, "a": "3"})));
        }
        // A deny on the same path leaves only the deny.
        for a in both_orders(&block("kv/x", r#"allowed_parameters = { "*" = [] }"#), &rule("kv/x", "\"deny\"")) {
            assert!(!update(&a, "kv/x", json!({})));
            assert!(!a.constrained, "the deny dropped the constraints");
        }
        // Merged glob rules behave the same.
        for a in both_orders(
            &block("kv/+/x*", r#"allowed_parameters = { "a" = [] }"#),
            &block("kv/+/x*", r#"allowed_parameters = { "b" = [] }"#),
        ) {
            assert!(update(&a, "kv/t/xy", json!({"a": 1, "b": 1})));
            assert!(!update(&a, "kv/t/xy", json!({"c": 1})));
        }
    }
}
