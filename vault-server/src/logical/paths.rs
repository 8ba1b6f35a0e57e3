//! Declarative path tables: each backend lists its paths once (pattern,
//! operations, fields, body kind, sudo/unauthenticated, existence check),
//! and the core reads that table to route, to decide which paths need no
//! token or need `sudo`, to classify create/update, to refuse unknown paths
//! and operations with a clear message, and to validate declared fields
//! before the backend runs. The backend then dispatches on the matched
//! pattern (a `&'static str` it also uses in its table) instead of taking
//! the path apart by hand.
//!
//! Pattern syntax (segments separated by `/`, matched left to right, the
//! first matching entry wins):
//! - `name`: this literal segment;
//! - `{name}`: one non-empty segment, captured;
//! - `{name+}`: one or more segments, captured whole; when literal segments
//!   follow it (`mounts/{path+}/tune`), the path must end with them;
//! - `{name*}` (last): the rest of the path, possibly empty, captured whole
//!   (a LIST prefix keeps its trailing `/`).
//!
//! A trailing `/` on the request path (LIST) is ignored unless the pattern
//! ends in a `*` capture.

use serde_json::{Map, Value};

use super::{LogicalError, Operation, fields};

/// How a path takes its request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// A JSON object, buffered, at most the server's `max_request_bytes`.
    Json,
    /// A byte stream handed to the backend as it arrives (with
    /// backpressure), at most the backend's [`stream_limit`](super::Backend::stream_limit).
    Stream,
}

/// The type a declared field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A string (numbers and booleans are accepted as their text, as Vault).
    String,
    /// An integer (or its decimal text).
    Int,
    /// A non-negative integer (or its decimal text).
    Count,
    /// A boolean (or `"true"`/`"false"`/`"1"`/`"0"`...).
    Bool,
    /// A duration: seconds, or Go-style text such as `"1h30m"`.
    Duration,
    /// A list of strings, or one comma-separated string.
    CommaList,
    /// A JSON object whose values are strings.
    StringMap,
    /// A JSON object (any values).
    Object,
    /// Anything: the backend checks it.
    Any,
}

/// One declared request field.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The field name.
    pub name: &'static str,
    /// Its type.
    pub kind: FieldKind,
}

impl Field {
    /// A field of `kind`.
    pub const fn new(name: &'static str, kind: FieldKind) -> Self {
        Self { name, kind }
    }
}

/// One entry of a backend's path table.
#[derive(Debug, Clone, Copy)]
pub struct PathSpec {
    /// The pattern (see the module docs); also the route template hooks see.
    pub pattern: &'static str,
    /// The operations served here. `Update` also admits `Create` (the core
    /// decides which one a write is, for the policy check).
    pub ops: &'static [Operation],
    /// The request body this path takes.
    pub body: BodyKind,
    /// Declared fields, checked before the backend runs (undeclared fields
    /// are passed through: Vault ignores unknown fields).
    pub fields: &'static [Field],
    /// No token needed (logins).
    pub unauthenticated: bool,
    /// `sudo` needed besides the operation's capability.
    pub sudo: bool,
    /// Writes here are `create` when [`Backend::exists`](super::Backend::exists)
    /// says the target is absent, `update` otherwise.
    pub existence_check: bool,
    /// Captures that name a person (a data subject): hooks and logs see the
    /// path with these left as `{name}`, never their value.
    pub personal: &'static [&'static str],
}

impl PathSpec {
    /// A JSON path serving `ops`, with nothing else declared.
    pub const fn new(pattern: &'static str, ops: &'static [Operation]) -> Self {
        Self {
            pattern,
            ops,
            body: BodyKind::Json,
            fields: &[],
            unauthenticated: false,
            sudo: false,
            existence_check: false,
            personal: &[],
        }
    }
    /// With captures that must not reach logs (see [`PathSpec::personal`]).
    pub const fn personal(mut self, captures: &'static [&'static str]) -> Self {
        self.personal = captures;
        self
    }
    /// With declared fields.
    pub const fn fields(mut self, fields: &'static [Field]) -> Self {
        self.fields = fields;
        self
    }
    /// Taking a byte stream.
    pub const fn stream(mut self) -> Self {
        self.body = BodyKind::Stream;
        self
    }
    /// Needing no token.
    pub const fn unauthenticated(mut self) -> Self {
        self.unauthenticated = true;
        self
    }
    /// Needing `sudo`.
    pub const fn sudo(mut self) -> Self {
        self.sudo = true;
        self
    }
    /// With an existence check (create vs update).
    pub const fn existence_check(mut self) -> Self {
        self.existence_check = true;
        self
    }

    /// Whether `op` is served here.
    pub fn serves(&self, op: Operation) -> bool {
        let op = if op == Operation::Create { Operation::Update } else { op };
        self.ops.contains(&op)
    }

    /// Check the declared fields present in `data` have their types.
    pub fn validate(&self, data: &Map<String, Value>) -> Result<(), LogicalError> {
        for f in self.fields {
            if !data.contains_key(f.name) {
                continue;
            }
            match f.kind {
                FieldKind::String => fields::string(data, f.name).map(drop)?,
                FieldKind::Int => fields::int(data, f.name).map(drop)?,
                FieldKind::Count => fields::count(data, f.name).map(drop)?,
                FieldKind::Bool => fields::boolean(data, f.name).map(drop)?,
                FieldKind::Duration => fields::duration(data, f.name).map(drop)?,
                FieldKind::CommaList => fields::string_list(data, f.name).map(drop)?,
                FieldKind::StringMap => fields::string_map(data, f.name).map(drop)?,
                FieldKind::Object => {
                    if !matches!(data.get(f.name), Some(Value::Object(_) | Value::Null)) {
                        return Err(LogicalError::InvalidRequest(format!("field \"{}\" must be an object", f.name)));
                    }
                }
                FieldKind::Any => {}
            }
        }
        Ok(())
    }
}

/// A request path matched against a table: the entry and its captures.
#[derive(Debug, Clone)]
pub struct Route {
    /// The matched entry.
    pub spec: &'static PathSpec,
    captures: Vec<(&'static str, String)>,
}

impl Route {
    /// The matched pattern (the route template).
    pub fn pattern(&self) -> &'static str {
        self.spec.pattern
    }

    /// A capture by name ("" when the pattern has no such capture).
    pub fn get(&self, name: &str) -> &str {
        self.captures.iter().find(|(n, _)| *n == name).map_or("", |(_, v)| v.as_str())
    }

    /// The matched path as logs may show it: `None` when nothing in it is
    /// personal, else the pattern with every other capture filled in and the
    /// personal ones left as `{name}`.
    pub fn redacted(&self) -> Option<String> {
        if self.spec.personal.is_empty() {
            return None;
        }
        let mut out = self.spec.pattern.to_string();
        for (name, value) in &self.captures {
            if self.spec.personal.contains(name) {
                continue;
            }
            for braces in [format!("{{{name}}}"), format!("{{{name}+}}")] {
                out = out.replace(&braces, value);
            }
        }
        Some(out)
    }
}

/// `req` routed by `table` when its caller did not route it (the core
/// always does; direct calls from tests and internal callers may not),
/// with the errors the core would give.
pub fn ensure_routed(table: &'static [PathSpec], mut req: super::Request) -> Result<super::Request, LogicalError> {
    if req.route.is_none() {
        let route = find(table, &req.path).ok_or_else(|| LogicalError::UnsupportedPath(req.path.clone()))?;
        if !route.spec.serves(req.op) {
            return Err(LogicalError::UnsupportedOperation);
        }
        route.spec.validate(&req.data)?;
        req.route = Some(route);
    }
    Ok(req)
}

/// The first entry of `table` whose pattern matches `path` (mount-relative).
pub fn find(table: &'static [PathSpec], path: &str) -> Option<Route> {
    table
        .iter()
        .filter(|spec| first_literal_fits(spec.pattern, path))
        .find_map(|spec| matches(spec.pattern, path).map(|captures| Route { spec, captures }))
}

/// A cheap pre-check: a pattern that starts with a literal segment can only
/// match a path that starts with it (most of a table is skipped without
/// splitting anything).
fn first_literal_fits(pattern: &str, path: &str) -> bool {
    let first = pattern.split_once('/').map_or(pattern, |(f, _)| f);
    if first.starts_with('{') {
        return true;
    }
    match path.strip_prefix(first) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Match one pattern; the captures on success.
fn matches(pattern: &'static str, path: &str) -> Option<Vec<(&'static str, String)>> {
    let mut captures = Vec::new();
    let mut rest = path;
    let mut segs = pattern.split('/').peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if let Some(name) = name.strip_suffix('*').filter(|_| last) {
                captures.push((name, rest.to_string()));
                return Some(captures);
            }
            if let Some(name) = name.strip_suffix('+') {
                let whole = rest.strip_suffix('/').unwrap_or(rest);
                // Literal segments after the capture: the path's tail.
                let tail: Vec<&str> = segs.by_ref().collect();
                let value = if tail.is_empty() {
                    whole
                } else {
                    let suffix = format!("/{}", tail.join("/"));
                    whole.strip_suffix(suffix.as_str())?
                };
                if value.is_empty() || value.split('/').any(str::is_empty) {
                    return None;
                }
                captures.push((name, value.to_string()));
                return Some(captures);
            }
            let (value, after) = split_segment(rest);
            if value.is_empty() {
                return None;
            }
            captures.push((name, value.to_string()));
            rest = after?;
        } else {
            let (value, after) = split_segment(rest);
            if value != seg {
                return None;
            }
            rest = after?;
        }
        if last {
            // Only a trailing `/` (LIST) may remain.
            return rest.is_empty().then_some(captures);
        }
        let rest_may_be_empty = segs.peek().is_some_and(|s| s.ends_with("*}"));
        if rest.is_empty() && !rest_may_be_empty {
            return None;
        }
    }
    None
}

/// The first segment of `rest` and what follows its `/` (`Some("")` for a
/// path ending in that `/`; `Some(rest)` for the last segment, so the
/// caller sees "nothing left").
fn split_segment(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('/') {
        Some((seg, after)) => (seg, Some(after)),
        None => (rest, Some("")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::*;

    static TABLE: &[PathSpec] = &[
        PathSpec::new("config", &[Read, Update]),
        PathSpec::new("data/{path+}", &[Read, Update, Patch, Delete]).existence_check(),
        PathSpec::new("metadata/{path*}", &[List]),
        PathSpec::new("role/{name}/secret-id", &[Update, List]),
        PathSpec::new("mounts/{path+}/tune", &[Read, Update]),
        PathSpec::new("mounts/{path+}", &[Read, Update, Delete]),
        PathSpec::new("login", &[Update]).unauthenticated(),
    ];

    fn m(path: &str) -> Option<(&'static str, Vec<(&'static str, String)>)> {
        find(TABLE, path).map(|r| (r.pattern(), r.captures))
    }

    #[test]
    fn literals_captures_and_rests() {
        assert_eq!(m("config").unwrap().0, "config");
        assert!(m("config/x").is_none());
        assert!(m("configx").is_none());
        assert_eq!(m("data/a/b").unwrap().1, vec![("path", "a/b".to_string())]);
        assert!(m("data").is_none());
        assert!(m("data/").is_none());
        assert!(m("data/a//b").is_none());
        assert_eq!(m("metadata/").unwrap().1, vec![("path", String::new())]);
        assert_eq!(m("metadata/a/").unwrap().1, vec![("path", "a/".to_string())]);
        assert_eq!(m("role/web/secret-id").unwrap().1, vec![("name", "web".to_string())]);
        assert_eq!(m("role/web/secret-id/").unwrap().0, "role/{name}/secret-id");
        assert!(m("role//secret-id").is_none());
        assert!(m("role/web").is_none());
        assert!(m("role/web/secret-id/x").is_none());
        assert!(m("").is_none());
        assert_eq!(m("mounts/a/b/tune").unwrap(), ("mounts/{path+}/tune", vec![("path", "a/b".to_string())]));
        assert_eq!(m("mounts/a/tune/").unwrap().0, "mounts/{path+}/tune");
        assert_eq!(m("mounts/tune").unwrap(), ("mounts/{path+}", vec![("path", "tune".to_string())]));
        assert_eq!(m("mounts/a/b").unwrap(), ("mounts/{path+}", vec![("path", "a/b".to_string())]));
        assert!(m("mounts//tune").is_none());
        assert!(m("login").unwrap().0 == "login" && find(TABLE, "login").unwrap().spec.unauthenticated);
    }

    #[test]
    fn operations_and_fields() {
        let r = find(TABLE, "data/x").unwrap();
        assert!(r.spec.serves(Create) && r.spec.serves(Update) && !r.spec.serves(List));
        static F: PathSpec = PathSpec::new("x", &[Update])
            .fields(&[Field::new("ttl", FieldKind::Duration), Field::new("n", FieldKind::Int)]);
        let ok = serde_json::json!({"ttl": "1h", "n": "3", "other": [1]});
        assert!(F.validate(ok.as_object().unwrap()).is_ok());
        let bad = serde_json::json!({"ttl": "forever"});
        assert!(matches!(F.validate(bad.as_object().unwrap()), Err(LogicalError::InvalidRequest(_))));
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Any path: a match or none, never a panic; a match's captures
            /// are non-empty single segments (`{name}`) or slices of the path.
            #[test]
            fn matching_is_total(path in "[a-z/{}+*%.-]{0,40}") {
                if let Some(r) = find(TABLE, &path) {
                    for (name, value) in &r.captures {
                        prop_assert!(path.contains(value.as_str()), "{name}={value} not in {path}");
                        if *name == "name" {
                            prop_assert!(!value.is_empty() && !value.contains('/'));
                        }
                    }
                }
            }

            /// The literal pre-check never hides a match: `find` picks what
            /// trying every pattern in order picks.
            #[test]
            fn precheck_changes_nothing(path in "(role|roles|data|config|configs|metadata|mounts|login|x|role/a|)[a-z/]{0,12}") {
                let naive = TABLE.iter().find_map(|spec| matches(spec.pattern, &path).map(|c| (spec.pattern, c)));
                let fast = find(TABLE, &path).map(|r| (r.spec.pattern, r.captures));
                prop_assert_eq!(naive, fast);
            }
        }
    }
}
