//! Audit entries in Vault's JSON shape, every sensitive value replaced by
//! `hmac-sha256:<hex>` under the device's key: every string in request and
//! response data (recursively, as Vault does), every token, and accessors
//! unless `hmac_accessor=false`. Keys, numbers, booleans, paths, policies,
//! metadata and error messages stay readable (Vault's choices).
//!
//! Entries are serialized straight from the borrowed request and response
//! (no `serde_json::Value` copy of the data): this runs twice per audited
//! request on the hot path, and the copies cost more than the hashing.

use std::io::Write as _;
use std::ops::Range;

use hmac::{Hmac, KeyInit, Mac};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::core::hooks::{Caller, RequestEvent, ResponseEvent};

/// What an entry of one device is made with: its HMAC key (as a keyed state,
/// wiped on drop through hmac's `zeroize` feature) and its options.
pub struct Hasher {
    keyed: Hmac<Sha256>,
    hmac_accessor: bool,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher(<redacted>)")
    }
}

const PREFIX: &[u8] = b"hmac-sha256:";

/// `hmac-sha256:<64 hex digits>`, on the stack (no allocation per value).
struct Hashed([u8; PREFIX.len() + 64]);

impl Hashed {
    fn as_str(&self) -> &str {
        // Always ASCII: the prefix and hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Serialize for Hashed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A token's hash, or "" when none was presented (Vault's shape).
struct Token(Option<Hashed>);

impl Serialize for Token {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(h) => h.serialize(s),
            None => s.serialize_str(""),
        }
    }
}

/// An accessor: hashed, or as is with `hmac_accessor=false` (or empty).
enum Accessor<'a> {
    Hashed(Hashed),
    Plain(&'a str),
}

impl Serialize for Accessor<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Accessor::Hashed(h) => h.serialize(s),
            Accessor::Plain(p) => s.serialize_str(p),
        }
    }
}

/// The hashed token and accessor of one entry: computed once, written in
/// both the `auth` and the `request` blocks.
struct Who<'a> {
    token: Token,
    accessor: Accessor<'a>,
    caller: Option<&'a Caller>,
}

/// A login's or a token creation's `auth` block: the new token always
/// hashed, its accessor unless `hmac_accessor=false`; policies, lease and
/// metadata readable (Vault's choice).
struct Login<'a> {
    h: &'a Hasher,
    m: &'a Map<String, Value>,
}

impl Serialize for Login<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.m.len()))?;
        for (k, v) in self.m {
            match (k.as_str(), v) {
                ("client_token", Value::String(t)) => map.serialize_entry(k, &self.h.hashed(t))?,
                ("accessor", Value::String(a)) => map.serialize_entry(k, &self.h.accessor(a))?,
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

/// The error messages joined with "; " ("" on success), without a copy.
struct Errors<'a>(&'a [String]);

impl std::fmt::Display for Errors<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(e)?;
        }
        Ok(())
    }
}

impl Serialize for Errors<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An entry being written. Its fixed structure is written by hand: keys
/// and punctuation as they are, hashes (ASCII) without escaping; strings
/// that come from requests (ids, paths, names, policies, errors) and data
/// maps go through serde_json, which escapes them. (With serde_json writing
/// whole entries, escaping its own keys and hashes and the many small
/// copies cost more than the hashing: this runs twice per audited request.)
struct Out<'b> {
    buf: &'b mut Vec<u8>,
    /// serde_json failed (only on a map key that is not a string, which
    /// these types never give): the entry is dropped whole.
    failed: bool,
}

/// The bytes a JSON string cannot hold as they are, or that are not ASCII
/// (left to serde_json, and to [`escape_line_breaks`]).
const ESCAPED: [bool; 256] = {
    let mut t = [true; 256];
    let mut b = b' ';
    while b <= b'~' {
        t[b as usize] = matches!(b, b'"' | b'\\');
        b += 1;
    }
    t
};

impl Out<'_> {
    fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// A JSON string. One of printable ASCII without `"` or `\\` (ids,
    /// paths, names, policies, stamps: nearly all of them) is written as it
    /// is, after a table check without an early exit (no branch per byte);
    /// any other goes through serde_json, which escapes it (RFC 8259,
    /// section 7). serde_json's escaping of every string showed in the
    /// profile.
    fn plain(&mut self, s: &str) {
        if !s.bytes().fold(false, |e, b| e | ESCAPED[usize::from(b)]) {
            self.buf.push(b'"');
            self.buf.extend_from_slice(s.as_bytes());
            self.buf.push(b'"');
        } else {
            self.json(s);
        }
    }

    /// A list of strings (policies).
    fn strings(&mut self, list: &[String]) {
        self.raw(b"[");
        for (i, s) in list.iter().enumerate() {
            if i > 0 {
                self.raw(b",");
            }
            self.plain(s);
        }
        self.raw(b"]");
    }

    /// Anything serde can write (escaped as JSON).
    fn json<T: Serialize + ?Sized>(&mut self, v: &T) {
        self.failed |= serde_json::to_writer(&mut self.buf, v).is_err();
    }

    fn hashed(&mut self, h: &Hashed) {
        self.buf.push(b'"');
        self.buf.extend_from_slice(&h.0);
        self.buf.push(b'"');
    }

    /// A JSON value with every string hashed, at any depth (Vault's rule for
    /// request and response data): keys escaped by serde_json, hashes
    /// written straight into the entry, numbers, booleans and null as they
    /// are. (Depth is bounded by the JSON parser's limit: 128.)
    fn data(&mut self, h: &Hasher, v: &Value) {
        match v {
            Value::String(s) => h.hash_into(s, self.buf),
            Value::Array(a) => {
                self.raw(b"[");
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        self.raw(b",");
                    }
                    self.data(h, x);
                }
                self.raw(b"]");
            }
            Value::Object(m) => self.data_map(h, m),
            other => self.json(other),
        }
    }

    fn data_map(&mut self, h: &Hasher, m: &Map<String, Value>) {
        self.raw(b"{");
        for (i, (k, v)) in m.iter().enumerate() {
            if i > 0 {
                self.raw(b",");
            }
            self.plain(k);
            self.raw(b":");
            self.data(h, v);
        }
        self.raw(b"}");
    }

    /// A small number (a status code, an octet) without `core::fmt`.
    fn number(&mut self, n: u16) {
        vault_audit::push_decimal(self.buf, u64::from(n));
    }

    fn token(&mut self, t: &Token) {
        match &t.0 {
            Some(h) => self.hashed(h),
            None => self.raw(b"\"\""),
        }
    }

    fn accessor(&mut self, a: &Accessor<'_>) {
        match a {
            Accessor::Hashed(h) => self.hashed(h),
            Accessor::Plain(p) => self.plain(p),
        }
    }

    /// The `auth` block.
    fn auth(&mut self, w: &Who<'_>) {
        self.raw(b"{\"client_token\":");
        self.token(&w.token);
        if let Some(c) = w.caller {
            self.raw(b",\"accessor\":");
            self.accessor(&w.accessor);
            self.raw(b",\"display_name\":");
            self.plain(c.display_name());
            self.raw(b",\"policies\":");
            let policies = self.buf.len();
            self.strings(c.policies());
            let end = self.buf.len();
            self.raw(b",\"token_policies\":");
            self.buf.extend_from_within(policies..end);
            self.raw(b",\"metadata\":");
            self.json(c.metadata());
            self.raw(b",\"entity_id\":");
            self.plain(c.entity_id());
            self.raw(b",\"token_type\":\"service\"");
        }
        self.raw(b"}");
    }

    /// The `auth` block and the `request` block up to its data, left open:
    /// what both entries of a request share ([`Hasher::write_response_entry`]).
    fn shared(&mut self, e: &RequestEvent<'_>, w: &Who<'_>) {
        self.raw(b",\"auth\":");
        self.auth(w);
        self.raw(b",\"request\":");
        self.request_head(e, w);
    }

    /// The `request` block without its data and closing brace.
    fn request_head(&mut self, e: &RequestEvent<'_>, w: &Who<'_>) {
        self.raw(b"{\"id\":");
        self.plain(e.request_id);
        self.raw(b",\"operation\":");
        self.plain(e.op.capability());
        self.raw(b",\"mount_type\":");
        self.plain(e.mount_type);
        self.raw(b",\"mount_point\":");
        self.plain(e.mount);
        self.raw(b",\"client_token\":");
        self.token(&w.token);
        self.raw(b",\"client_token_accessor\":");
        self.accessor(&w.accessor);
        self.raw(b",\"namespace\":{\"id\":\"root\"},\"path\":");
        self.plain(e.path);
        self.raw(b",\"remote_address\":\"");
        match e.remote {
            Some(std::net::IpAddr::V4(a)) => {
                // Without `core::fmt` (it showed in the profile).
                for (i, octet) in a.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.raw(b".");
                    }
                    self.number(u16::from(octet));
                }
            }
            // An address's text is ASCII hex digits, dots and colons.
            Some(a) => {
                let _ = write!(self.buf, "{a}");
            }
            None => {}
        }
        self.raw(b"\"");
    }

    /// The response entry's `response` block and `error`.
    fn response(&mut self, h: &Hasher, e: &ResponseEvent<'_>) {
        self.raw(b",\"response\":{\"mount_type\":");
        self.plain(e.request.mount_type);
        self.raw(b",\"status_code\":");
        self.number(e.status);
        if let Some(d) = e.data {
            self.raw(b",\"data\":");
            self.data_map(h, d);
        }
        if let Some(a) = e.auth {
            self.raw(b",\"auth\":");
            self.json(&Login { h, m: a });
        }
        self.raw(b"},\"error\":");
        self.json(&Errors(e.errors));
    }
}

/// U+0085, U+2028 and U+2029 escaped (`\u0085`...), and DEL (`\u007f`):
/// valid JSON either way (serde_json leaves them), but tools that split
/// text on every Unicode line break (Python's `splitlines`, some log
/// shippers) would cut the entry in two, and shippers that strip control
/// characters would change the line under its chain hash. Bytes of a JSON
/// text from 0x7F up are in strings only, so the sequences are replaced
/// wherever they are. True if `buf` was rewritten (positions in it may
/// have moved).
fn escape_line_breaks(buf: &mut Vec<u8>) -> bool {
    // Their UTF-8 forms begin with 0xC2 (U+0085) or 0xE2 (U+2028/9): most
    // entries have none of these, and are left as they are (a SIMD search:
    // a byte loop here cost ~2 µs per audited request).
    if memchr::memchr3(0xC2, 0xE2, 0x7F, buf).is_none() {
        return false;
    }
    let line = std::mem::take(buf);
    let mut out = Vec::with_capacity(line.len() + 16);
    let mut i = 0;
    while i < line.len() {
        let escaped: Option<&[u8]> = match &line[i..] {
            [0xC2, 0x85, ..] => Some(b"\\u0085"),
            [0xE2, 0x80, 0xA8, ..] => Some(b"\\u2028"),
            [0xE2, 0x80, 0xA9, ..] => Some(b"\\u2029"),
            [0x7F, ..] => Some(b"\\u007f"),
            _ => None,
        };
        match escaped {
            Some(e) => {
                out.extend_from_slice(e);
                i += match line[i] {
                    0x7F => 1,
                    0xC2 => 2,
                    _ => 3,
                };
            }
            None => {
                out.push(line[i]);
                i += 1;
            }
        }
    }
    *buf = out;
    true
}

impl Hasher {
    /// A hasher under `key`.
    pub fn new(key: &Zeroizing<[u8; 32]>, hmac_accessor: bool) -> Self {
        let keyed = match <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_ref()) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts any key length"),
        };
        Self { keyed, hmac_accessor }
    }

    /// The keyed state is cloned (the key's padding blocks are hashed once,
    /// when the device starts, not per value).
    fn hashed(&self, input: &str) -> Hashed {
        let mut out = [0u8; PREFIX.len() + 64];
        out[..PREFIX.len()].copy_from_slice(PREFIX);
        out[PREFIX.len()..].copy_from_slice(&self.hex_mac(input));
        Hashed(out)
    }

    /// `"hmac-sha256:<hex>"` of `input` (quoted) appended to `out`.
    fn hash_into(&self, input: &str, out: &mut Vec<u8>) {
        out.push(b'"');
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(&self.hex_mac(input));
        out.push(b'"');
    }

    /// The MAC of `input` in lowercase hex.
    fn hex_mac(&self, input: &str) -> [u8; 64] {
        let mut m = self.keyed.clone();
        m.update(input.as_bytes());
        vault_audit::hex32(&m.finalize().into_bytes().into())
    }

    /// `hmac-sha256:<hex>` of `input` (what `sys/audit-hash` answers).
    pub fn hash(&self, input: &str) -> String {
        self.hashed(input).as_str().to_string()
    }

    fn accessor<'a>(&self, a: &'a str) -> Accessor<'a> {
        if self.hmac_accessor && !a.is_empty() { Accessor::Hashed(self.hashed(a)) } else { Accessor::Plain(a) }
    }

    fn who<'a>(&self, e: &'a RequestEvent<'a>) -> Who<'a> {
        Who {
            token: Token(e.client_token.map(|t| self.hashed(t))),
            // No caller, no accessor: "" (not a hash of "").
            accessor: e.caller.map_or(Accessor::Plain(""), |c| self.accessor(c.accessor())),
            caller: e.caller,
        }
    }

    /// An entry in Vault's field order: `time`, `type`, `auth`, `request`
    /// (with its data in the request entry only), then `response` and
    /// `error` for a response entry. `shared`: the `auth` and `request`
    /// blocks as the request entry wrote them (else written here).
    /// Written into `buf` (cleared first: the caller's buffer, reused from
    /// entry to entry). None if it could not be (`buf` is then empty); else
    /// where the shared blocks are in `buf` (empty if they cannot be reused:
    /// line breaks were escaped after them).
    fn entry(
        &self,
        kind: &str,
        time: &str,
        e: &RequestEvent<'_>,
        response: Option<&ResponseEvent<'_>>,
        shared: Option<&[u8]>,
        buf: &mut Vec<u8>,
    ) -> Option<Range<usize>> {
        buf.clear();
        let mut out = Out { buf, failed: false };
        out.raw(b"{\"time\":");
        out.plain(time);
        out.raw(b",\"type\":");
        out.plain(kind);
        let start = out.buf.len();
        match shared {
            Some(blocks) => out.raw(blocks),
            None => out.shared(e, &self.who(e)),
        }
        let end = out.buf.len();
        match response {
            None => {
                if let Some(d) = e.data {
                    out.raw(b",\"data\":");
                    out.data_map(self, d);
                }
                out.raw(b"}");
            }
            Some(r) => {
                out.raw(b"}");
                out.response(self, r);
            }
        }
        out.raw(b"}");
        if out.failed {
            out.buf.clear();
            return None;
        }
        if escape_line_breaks(out.buf) { Some(0..0) } else { Some(start..end) }
    }

    /// The `request` entry's body (a JSON object; the chain link is added
    /// by the writer) into `buf`. None if it could not be written; else
    /// where its `auth` and `request` blocks are, for the response entry
    /// (an empty range: not reusable).
    pub fn write_request_entry(&self, e: &RequestEvent<'_>, time: &str, buf: &mut Vec<u8>) -> Option<Range<usize>> {
        self.entry("request", time, e, None, None, buf)
    }

    /// The `response` entry's body into `buf`, with the request entry's
    /// `auth` and `request` blocks when given (the same bytes: written and
    /// hashed once per request); false if it could not be written.
    pub fn write_response_entry(
        &self,
        e: &ResponseEvent<'_>,
        time: &str,
        shared: Option<&[u8]>,
        buf: &mut Vec<u8>,
    ) -> bool {
        self.entry("response", time, e.request, Some(e), shared, buf).is_some()
    }

    #[cfg(test)]
    pub fn request_entry(&self, e: &RequestEvent<'_>, time: &str) -> Vec<u8> {
        let mut buf = Vec::new();
        assert!(self.write_request_entry(e, time, &mut buf).is_some());
        buf
    }

    #[cfg(test)]
    pub fn response_entry(&self, e: &ResponseEvent<'_>, time: &str) -> Vec<u8> {
        let mut buf = Vec::new();
        assert!(self.write_response_entry(e, time, None, &mut buf));
        // The same bytes with the request entry's blocks reused (the pipeline's way).
        let mut request = Vec::new();
        let shared = self.write_request_entry(e.request, time, &mut request).unwrap();
        let mut reused = Vec::new();
        let blocks = request.get(shared).filter(|b| !b.is_empty());
        assert!(self.write_response_entry(e, time, blocks, &mut reused));
        assert_eq!(String::from_utf8_lossy(&reused), String::from_utf8_lossy(&buf));
        buf
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::logical::Operation;

    static CARRY: crate::audit::Carry = crate::audit::Carry::new();

    #[test]
    fn values_and_tokens_are_hashed_structure_kept() {
        let h = Hasher::new(&Zeroizing::new([1; 32]), true);
        let mut data = Map::new();
        data.insert("password".into(), "CANARY-PW".into());
        data.insert("nested".into(), json!({"list": ["CANARY-IN-LIST", 5, true]}));
        let e = RequestEvent {
            request_id: "rid",
            op: Operation::Update,
            path: "secret/data/x",
            route: "",
            mount: "secret/",
            mount_type: "kv",
            caller: None,
            remote: None,
            data: Some(&data),
            client_token: Some("hvs.CANARY-TOKEN"),
            audit: &CARRY,
        };
        let line = String::from_utf8(h.request_entry(&e, "t")).unwrap();
        assert!(!line.contains("CANARY"), "{line}");
        assert!(line.contains(&h.hash("CANARY-PW")) && line.contains(&h.hash("hvs.CANARY-TOKEN")));
        assert!(line.contains("\"password\"") && line.contains("secret/data/x") && line.contains(",5,true"));
        let mut auth = Map::new();
        auth.insert("client_token".into(), "hvs.CANARY-NEW".into());
        auth.insert("accessor".into(), "CANARY-ACC".into());
        auth.insert("policies".into(), json!(["default"]));
        let r = ResponseEvent {
            request: &e,
            status: 200,
            duration: Duration::ZERO,
            data: Some(&data),
            errors: &[],
            auth: Some(&auth),
        };
        let line = String::from_utf8(h.response_entry(&r, "t")).unwrap();
        assert!(!line.contains("CANARY"), "{line}");
        assert!(line.contains("\"default\""));
        // hmac_accessor=false: the accessor is readable, the token never.
        let h = Hasher::new(&Zeroizing::new([1; 32]), false);
        let line = String::from_utf8(h.response_entry(&r, "t")).unwrap();
        assert!(line.contains("CANARY-ACC") && !line.contains("CANARY-NEW"));
    }

    #[test]
    fn the_hash_is_plain_hmac_sha256_of_the_input() {
        // RFC 4231 test case 2: key "Jefe".
        let mut key = Zeroizing::new([0u8; 32]);
        key[..4].copy_from_slice(b"Jefe");
        let h = Hasher::new(&key, true);
        // HMAC pads short keys with zeros: a 32-byte zero-padded key is the same key.
        assert_eq!(
            h.hash("what do ya want for nothing?"),
            "hmac-sha256:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn entries_have_vaults_shape() {
        let h = Hasher::new(&Zeroizing::new([2; 32]), true);
        let mut meta = Map::new();
        meta.insert("role".into(), "web".into());
        let token = crate::auth::TokenEntry {
            accessor: "acc-1".into(),
            policies: vec!["default".into(), "app".into()],
            display_name: "token-app".into(),
            meta,
            ..Default::default()
        };
        let caller = Caller::new(std::sync::Arc::new(token));
        let mut data = Map::new();
        data.insert("data".into(), json!({"password": "pw", "n": 1.5, "list": ["a", null]}));
        let e = RequestEvent {
            request_id: "rid",
            op: Operation::Read,
            path: "secret/data/x",
            route: "data/{path+}",
            mount: "secret/",
            mount_type: "kv",
            caller: Some(&caller),
            remote: Some("10.0.0.1".parse().unwrap()),
            data: Some(&data),
            client_token: Some("hvs.tok"),
            audit: &CARRY,
        };
        let auth = json!({
            "client_token": h.hash("hvs.tok"),
            "accessor": h.hash("acc-1"),
            "display_name": "token-app",
            "policies": ["default", "app"],
            "token_policies": ["default", "app"],
            "metadata": {"role": "web"},
            "entity_id": "",
            "token_type": "service",
        });
        let mut request = json!({
            "id": "rid",
            "operation": "read",
            "mount_type": "kv",
            "mount_point": "secret/",
            "client_token": h.hash("hvs.tok"),
            "client_token_accessor": h.hash("acc-1"),
            "namespace": {"id": "root"},
            "path": "secret/data/x",
            "remote_address": "10.0.0.1",
            "data": {"data": {"password": h.hash("pw"), "n": 1.5, "list": [h.hash("a"), null]}},
        });
        let got: Value = serde_json::from_slice(&h.request_entry(&e, "T")).unwrap();
        assert_eq!(got, json!({"time": "T", "type": "request", "auth": auth, "request": request}));
        // The response entry: the request without its data, the answer's
        // data hashed, a login's new token and accessor hashed, the rest readable.
        let plain = RequestEvent { data: None, ..e };
        let mut login = Map::new();
        login.insert("client_token".into(), "hvs.new".into());
        login.insert("accessor".into(), "acc-new".into());
        login.insert("lease_duration".into(), 60.into());
        let errors = ["one".to_string(), "two".to_string()];
        let r = ResponseEvent {
            request: &plain,
            status: 200,
            duration: std::time::Duration::ZERO,
            data: Some(&data),
            errors: &errors,
            auth: Some(&login),
        };
        let got: Value = serde_json::from_slice(&h.response_entry(&r, "T")).unwrap();
        request.as_object_mut().unwrap().remove("data");
        let response = json!({
            "mount_type": "kv",
            "status_code": 200,
            "data": {"data": {"password": h.hash("pw"), "n": 1.5, "list": [h.hash("a"), null]}},
            "auth": {"client_token": h.hash("hvs.new"), "accessor": h.hash("acc-new"), "lease_duration": 60},
        });
        assert_eq!(
            got,
            json!({"time": "T", "type": "response", "auth": auth, "request": request,
                   "response": response, "error": "one; two"})
        );
        // No caller: only the token in `auth`, no accessor anywhere.
        let anon = RequestEvent { caller: None, client_token: None, remote: None, ..plain };
        let got: Value = serde_json::from_slice(&h.request_entry(&anon, "T")).unwrap();
        assert_eq!(got["auth"], json!({"client_token": ""}));
        assert_eq!(
            (&got["request"]["client_token_accessor"], &got["request"]["remote_address"]),
            (&json!(""), &json!(""))
        );
    }

    fn caller(display_name: &str, policies: Vec<String>, meta_value: &str) -> Caller {
        let mut meta = Map::new();
        meta.insert("k".into(), meta_value.into());
        let token = crate::auth::TokenEntry {
            accessor: "acc".into(),
            policies,
            display_name: display_name.into(),
            meta,
            ..Default::default()
        };
        Caller::new(std::sync::Arc::new(token))
    }

    #[test]
    fn fields_come_in_vaults_order() {
        let h = Hasher::new(&Zeroizing::new([3; 32]), true);
        let c = caller("n", vec!["p".into()], "m");
        let mut data = Map::new();
        data.insert("x".into(), "y".into());
        let e = RequestEvent {
            request_id: "rid",
            op: Operation::Read,
            path: "secret/data/x",
            route: "",
            mount: "secret/",
            mount_type: "kv",
            caller: Some(&c),
            remote: Some("::1".parse().unwrap()),
            data: None,
            client_token: Some("t"),
            audit: &CARRY,
        };
        let r = ResponseEvent {
            request: &e,
            status: 200,
            duration: Duration::ZERO,
            data: Some(&data),
            errors: &[],
            auth: None,
        };
        let line = String::from_utf8(h.response_entry(&r, "T")).unwrap();
        let keys = [
            "{\"time\":",
            ",\"type\":\"response\",\"auth\":{\"client_token\":",
            ",\"accessor\":",
            ",\"display_name\":\"n\",\"policies\":[\"p\"],\"token_policies\":[\"p\"],\"metadata\":{\"k\":\"m\"}",
            ",\"entity_id\":\"\",\"token_type\":\"service\"},\"request\":{\"id\":\"rid\",\"operation\":\"read\"",
            ",\"mount_type\":\"kv\",\"mount_point\":\"secret/\",\"client_token\":",
            ",\"client_token_accessor\":",
            ",\"namespace\":{\"id\":\"root\"},\"path\":\"secret/data/x\",\"remote_address\":\"::1\"}",
            ",\"response\":{\"mount_type\":\"kv\",\"status_code\":200,\"data\":{\"x\":",
            "},\"error\":\"\"}",
        ];
        let mut at = 0;
        for k in keys {
            let found = line[at..].find(k).unwrap_or_else(|| panic!("{k} after {at} in {line}"));
            at += found + k.len();
        }
        assert_eq!(at, line.len(), "{line}");
    }

    proptest::proptest! {
        /// Whatever a request carries (quotes, backslashes, control
        /// characters, newlines, any Unicode) the entry is one line of
        /// valid JSON that gives the same strings back.
        #[test]
        fn strings_from_requests_are_escaped(
            id in "\\PC*|[\"\\\\\n\u{0}-\u{1f}\u{85}\u{2028}\u{2029}é]{0,8}",
            path in "\\PC*|[\"\\\\\n\u{0}-\u{1f}\u{85}\u{2028}\u{2029}é]{0,8}",
            mount in "\\PC*",
            name in "\\PC*|[\"\\\\\n\u{0}-\u{1f} ~\u{7f}]{0,8}",
            policy in "\\PC*|[\"\\\\\n\u{0}-\u{1f} ~\u{7f}]{0,8}",
            meta in "\\PC*",
            error in "\\PC*|[\"\\\\\n\u{0}-\u{1f}\u{85}\u{2028}\u{2029}é]{0,8}",
            accessor_hashed in proptest::bool::ANY,
        ) {
            let h = Hasher::new(&Zeroizing::new([4; 32]), accessor_hashed);
            let c = caller(&name, vec![policy.clone(), "second".into()], &meta);
            let e = RequestEvent {
                request_id: &id,
                op: Operation::Update,
                path: &path,
                route: "",
                mount: &mount,
                mount_type: &mount,
                caller: Some(&c),
                remote: None,
                data: None,
                client_token: None,
                audit: &CARRY,
            };
            let errors = [error.clone()];
            let r = ResponseEvent { request: &e, status: 400, duration: Duration::ZERO, data: None, errors: &errors, auth: None };
            for line in [h.request_entry(&e, "T"), h.response_entry(&r, "T")] {
                proptest::prop_assert!(!line.contains(&b'\n'));
                let text = String::from_utf8(line.clone()).unwrap();
                proptest::prop_assert!(!text.contains(['\u{85}', '\u{2028}', '\u{2029}', '\u{7f}']), "{}", text);
                let v: Value = serde_json::from_slice(&line).unwrap();
                proptest::prop_assert_eq!(&v["request"]["id"], &json!(id));
                proptest::prop_assert_eq!(&v["request"]["path"], &json!(path));
                proptest::prop_assert_eq!(&v["request"]["mount_point"], &json!(mount));
                proptest::prop_assert_eq!(&v["auth"]["display_name"], &json!(name));
                proptest::prop_assert_eq!(&v["auth"]["token_policies"], &json!([policy, "second"]));
                proptest::prop_assert_eq!(&v["auth"]["policies"], &json!([policy, "second"]));
                proptest::prop_assert_eq!(&v["auth"]["metadata"]["k"], &json!(meta));
            }
            let v: Value = serde_json::from_slice(&h.response_entry(&r, "T")).unwrap();
            proptest::prop_assert_eq!(&v["error"], &json!(error));
        }
    }

    /// What the entry's data must be: every string replaced by its hash.
    fn hashed_strings(h: &Hasher, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(h.hash(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| hashed_strings(h, x)).collect()),
            Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), hashed_strings(h, x))).collect()),
            other => other.clone(),
        }
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            // (Decimals the test's parser reads back exactly: serde_json
            // without `float_roundtrip` may be off in the last digit.)
            (any::<i32>(), 0..6i32).prop_map(|(m, e)| Value::from(f64::from(m) / 10f64.powi(e))),
            ".*".prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map(".*", inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any request or response data: one JSON line whose data is the
        /// same structure with every string (at any depth) hashed and
        /// every key, number, boolean and null kept.
        #[test]
        fn data_of_any_shape_is_hashed_structure_kept(
            input in proptest::collection::btree_map(".*", any_json(), 0..6),
            output in proptest::collection::btree_map(".*", any_json(), 0..6),
            remote in proptest::prelude::any::<std::net::IpAddr>(),
        ) {
            let h = Hasher::new(&Zeroizing::new([5; 32]), true);
            let input: Map<String, Value> = input.into_iter().collect();
            let output: Map<String, Value> = output.into_iter().collect();
            let e = RequestEvent {
                request_id: "rid",
                op: Operation::Update,
                path: "p",
                route: "",
                mount: "m/",
                mount_type: "kv",
                caller: None,
                remote: Some(remote),
                data: Some(&input),
                client_token: None,
                audit: &CARRY,
            };
            let r = ResponseEvent {
                request: &e, status: 200, duration: Duration::ZERO, data: Some(&output), errors: &[], auth: None,
            };
            let req = h.request_entry(&e, "T");
            let resp = h.response_entry(&r, "T");
            proptest::prop_assert!(!req.contains(&b'\n') && !resp.contains(&b'\n'));
            let req: Value = serde_json::from_slice(&req).unwrap();
            let resp: Value = serde_json::from_slice(&resp).unwrap();
            proptest::prop_assert_eq!(&req["request"]["data"], &hashed_strings(&h, &Value::Object(input)));
            proptest::prop_assert_eq!(&req["request"]["remote_address"], &json!(remote.to_string()));
            proptest::prop_assert_eq!(&resp["response"]["data"], &hashed_strings(&h, &Value::Object(output)));
        }
    }
}
