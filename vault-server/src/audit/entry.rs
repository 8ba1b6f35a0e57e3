//! Audit entries in Vault's JSON shape, every sensitive value replaced by
//! `hmac-sha256:<hex>` under the device's key: every string in request and
//! response data (recursively, as Vault does), every token, and accessors
//! unless `hmac_accessor=false`. Keys, numbers, booleans, paths, policies,
//! metadata and error messages stay readable (Vault's choices).
//!
//! Entries are serialized straight from the borrowed request and response
//! (no `serde_json::Value` copy of the data): this runs twice per audited
//! request on the hot path, and the copies cost more than the hashing.

use std::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
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

/// A JSON value with every string (not keys) hashed, at any depth.
struct Data<'a> {
    h: &'a Hasher,
    v: &'a Value,
}

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.v {
            Value::String(x) => self.h.hashed(x).serialize(s),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&Data { h: self.h, v })?;
                }
                seq.end()
            }
            Value::Object(m) => DataMap { h: self.h, m }.serialize(s),
            other => other.serialize(s),
        }
    }
}

/// A JSON object with every string value hashed, at any depth (keys kept).
struct DataMap<'a> {
    h: &'a Hasher,
    m: &'a Map<String, Value>,
}

impl Serialize for DataMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.m.len()))?;
        for (k, v) in self.m {
            map.serialize_entry(k, &Data { h: self.h, v })?;
        }
        map.end()
    }
}

/// The hashed token and accessor of one entry: computed once, written in
/// both the `auth` and the `request` blocks.
struct Who<'a> {
    token: Token,
    accessor: Accessor<'a>,
    caller: Option<&'a Caller>,
}

/// The entry's `auth` block.
struct Auth<'a>(&'a Who<'a>);

impl Serialize for Auth<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let w = self.0;
        let Some(c) = w.caller else {
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry("client_token", &w.token)?;
            return m.end();
        };
        let mut m = s.serialize_map(Some(8))?;
        m.serialize_entry("client_token", &w.token)?;
        m.serialize_entry("accessor", &w.accessor)?;
        m.serialize_entry("display_name", c.display_name())?;
        m.serialize_entry("policies", c.policies())?;
        m.serialize_entry("token_policies", c.policies())?;
        m.serialize_entry("metadata", c.metadata())?;
        m.serialize_entry("entity_id", c.entity_id())?;
        m.serialize_entry("token_type", "service")?;
        m.end()
    }
}

/// `{"id":"root"}`
struct RootNamespace;

impl Serialize for RootNamespace {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("id", "root")?;
        m.end()
    }
}

/// The remote address as text, "" when unknown.
struct Remote(Option<IpAddr>);

impl Serialize for Remote {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(a) => s.collect_str(&a),
            None => s.serialize_str(""),
        }
    }
}

/// The entry's `request` block (with its data in the request entry only).
struct RequestBlock<'a> {
    h: &'a Hasher,
    e: &'a RequestEvent<'a>,
    who: &'a Who<'a>,
}

impl Serialize for RequestBlock<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.e;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", e.request_id)?;
        m.serialize_entry("operation", e.op.capability())?;
        m.serialize_entry("mount_type", e.mount_type)?;
        m.serialize_entry("mount_point", e.mount)?;
        m.serialize_entry("client_token", &self.who.token)?;
        m.serialize_entry("client_token_accessor", &self.who.accessor)?;
        m.serialize_entry("namespace", &RootNamespace)?;
        m.serialize_entry("path", e.path)?;
        m.serialize_entry("remote_address", &Remote(e.remote))?;
        if let Some(d) = e.data {
            m.serialize_entry("data", &DataMap { h: self.h, m: d })?;
        }
        m.end()
    }
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

/// The response entry's `response` block.
struct ResponseBlock<'a> {
    h: &'a Hasher,
    e: &'a ResponseEvent<'a>,
}

impl Serialize for ResponseBlock<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.e;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("mount_type", e.request.mount_type)?;
        m.serialize_entry("status_code", &e.status)?;
        if let Some(d) = e.data {
            m.serialize_entry("data", &DataMap { h: self.h, m: d })?;
        }
        if let Some(a) = e.auth {
            m.serialize_entry("auth", &Login { h: self.h, m: a })?;
        }
        m.end()
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

/// A whole entry, in Vault's field order.
struct Entry<'a> {
    time: &'a str,
    kind: &'static str,
    auth: Auth<'a>,
    request: RequestBlock<'a>,
    response: Option<ResponseBlock<'a>>,
    error: Option<Errors<'a>>,
}

impl Serialize for Entry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("time", self.time)?;
        m.serialize_entry("type", self.kind)?;
        m.serialize_entry("auth", &self.auth)?;
        m.serialize_entry("request", &self.request)?;
        if let Some(r) = &self.response {
            m.serialize_entry("response", r)?;
        }
        if let Some(e) = &self.error {
            m.serialize_entry("error", e)?;
        }
        m.end()
    }
}

/// Room for a typical entry, so the buffer rarely grows while it is
/// written (a response entry repeats the request block and adds the
/// response data: about half as long again).
const REQUEST_CAPACITY: usize = 1024;
const RESPONSE_CAPACITY: usize = 2048;

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
        let mut m = self.keyed.clone();
        m.update(input.as_bytes());
        let mut out = [0u8; PREFIX.len() + 64];
        out[..PREFIX.len()].copy_from_slice(PREFIX);
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(m.finalize().into_bytes(), &mut out[PREFIX.len()..]);
        Hashed(out)
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

    fn write(entry: &Entry<'_>, capacity: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(capacity);
        // Writing to a Vec fails only on a map key that is not a string,
        // which these types never give.
        if serde_json::to_writer(&mut out, entry).is_err() {
            out.clear();
        }
        out
    }

    /// The `request` entry's body (a JSON object; the chain link is added by the writer).
    pub fn request_entry(&self, e: &RequestEvent<'_>, time: &str) -> Vec<u8> {
        let who = self.who(e);
        Self::write(
            &Entry {
                time,
                kind: "request",
                auth: Auth(&who),
                request: RequestBlock { h: self, e, who: &who },
                response: None,
                error: None,
            },
            REQUEST_CAPACITY,
        )
    }

    /// The `response` entry's body.
    pub fn response_entry(&self, e: &ResponseEvent<'_>, time: &str) -> Vec<u8> {
        let who = self.who(e.request);
        Self::write(
            &Entry {
                time,
                kind: "response",
                auth: Auth(&who),
                request: RequestBlock { h: self, e: e.request, who: &who },
                response: Some(ResponseBlock { h: self, e }),
                error: Some(Errors(e.errors)),
            },
            RESPONSE_CAPACITY,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::logical::Operation;

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
}
