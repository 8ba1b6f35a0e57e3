//! Audit entries in Vault's JSON shape, every sensitive value replaced by
//! `hmac-sha256:<hex>` under the device's key: every string in request and
//! response data (recursively, as Vault does), every token, and accessors
//! unless `hmac_accessor=false`. Keys, numbers, booleans, paths, policies,
//! metadata and error messages stay readable (Vault's choices).

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value, json};
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

impl Hasher {
    /// A hasher under `key`.
    pub fn new(key: &Zeroizing<[u8; 32]>, hmac_accessor: bool) -> Self {
        let keyed = match <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_ref()) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts any key length"),
        };
        Self { keyed, hmac_accessor }
    }

    /// `hmac-sha256:<hex>` of `input` (what `sys/audit-hash` answers).
    pub fn hash(&self, input: &str) -> String {
        let mut m = self.keyed.clone();
        m.update(input.as_bytes());
        format!("hmac-sha256:{}", hex::encode(m.finalize().into_bytes()))
    }

    fn accessor(&self, a: &str) -> String {
        if self.hmac_accessor && !a.is_empty() { self.hash(a) } else { a.to_string() }
    }

    /// Every string in `v` hashed, recursively (keys kept).
    fn data(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.hash(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.data(x)).collect()),
            Value::Object(m) => Value::Object(self.map(m)),
            other => other.clone(),
        }
    }

    fn map(&self, m: &Map<String, Value>) -> Map<String, Value> {
        m.iter().map(|(k, v)| (k.clone(), self.data(v))).collect()
    }

    fn auth(&self, caller: Option<&Caller>, token: Option<&str>) -> Value {
        let Some(c) = caller else {
            return json!({"client_token": token.map(|t| self.hash(t)).unwrap_or_default()});
        };
        json!({
            "client_token": token.map(|t| self.hash(t)).unwrap_or_default(),
            "accessor": self.accessor(c.accessor()),
            "display_name": c.display_name(),
            "policies": c.policies(),
            "token_policies": c.policies(),
            "metadata": c.metadata(),
            "entity_id": c.entity_id(),
            "token_type": "service",
        })
    }

    fn request(&self, e: &RequestEvent<'_>) -> Value {
        let mut r = json!({
            "id": e.request_id,
            "operation": e.op.capability(),
            "mount_type": e.mount_type,
            "mount_point": e.mount,
            "client_token": e.client_token.map(|t| self.hash(t)).unwrap_or_default(),
            "client_token_accessor": e.caller.map(|c| self.accessor(c.accessor())).unwrap_or_default(),
            "namespace": {"id": "root"},
            "path": e.path,
            "remote_address": e.remote.map(|a| a.to_string()).unwrap_or_default(),
        });
        if let (Some(d), Value::Object(o)) = (e.data, &mut r) {
            o.insert("data".into(), Value::Object(self.map(d)));
        }
        r
    }

    /// The `request` entry's body (a JSON object; the chain link is added by the writer).
    pub fn request_entry(&self, e: &RequestEvent<'_>, time: &str) -> Vec<u8> {
        let v = json!({
            "time": time,
            "type": "request",
            "auth": self.auth(e.caller, e.client_token),
            "request": self.request(e),
        });
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// The `response` entry's body.
    pub fn response_entry(&self, e: &ResponseEvent<'_>, time: &str) -> Vec<u8> {
        let mut response = json!({
            "mount_type": e.request.mount_type,
            "status_code": e.status,
        });
        if let Value::Object(o) = &mut response {
            if let Some(d) = e.data {
                o.insert("data".into(), Value::Object(self.map(d)));
            }
            if let Some(a) = e.auth {
                o.insert("auth".into(), Value::Object(self.login(a)));
            }
        }
        let v = json!({
            "time": time,
            "type": "response",
            "auth": self.auth(e.request.caller, e.request.client_token),
            "request": self.request(e.request),
            "response": response,
            "error": e.errors.join("; "),
        });
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// A login's or a token creation's `auth` block: the new token always
    /// hashed, its accessor unless `hmac_accessor=false`; policies, lease and
    /// metadata readable (Vault's choice).
    fn login(&self, a: &Map<String, Value>) -> Map<String, Value> {
        let mut out = a.clone();
        if let Some(Value::String(t)) = out.get_mut("client_token") {
            *t = self.hash(t);
        }
        if let Some(Value::String(t)) = out.get_mut("accessor") {
            *t = self.accessor(t);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
}
