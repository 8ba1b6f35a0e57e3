//! Document fields (beyond Vault, docs/transit-extensions.md): encrypt and
//! decrypt chosen fields of a JSON document, named by JSON pointers
//! (RFC 6901), leaving the rest as it was.
//!
//! Each field's value, whatever its JSON type, is encrypted as its JSON text,
//! so it comes back exactly (numbers, nulls, objects). The ciphertext is
//! bound to its pointer: the associated data is
//! `"vault-transit-field-v1" 0x00 | len(pointer) (u32, big-endian) | pointer | associated_data`,
//! so a ciphertext moved to another field, or to another document's field
//! under another name, fails to decrypt.

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::Transit;
use super::index;
use super::key::TransitKey;
use super::ops::{
    Bound, ItemError, ItemResult, answer, can_seal, each_item, open_one, references, requested_version, seal_one,
    subject_of, work,
};
use super::subjects::{Resolved, SubjectId, item_subject};
use crate::barrier::Unsealed;
use crate::logical::{LogicalError, Response};

const LABEL: &[u8] = b"vault-transit-field-v1\0";

/// Most fields one document may name.
const MAX_FIELDS: usize = 1024;

/// The associated data of the field at `pointer`.
fn field_aad(pointer: &str, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(LABEL.len() + 4 + pointer.len() + aad.len());
    out.extend_from_slice(LABEL);
    // Pointers are bounded by the body limit, far below u32::MAX.
    out.extend_from_slice(&(pointer.len() as u32).to_be_bytes());
    out.extend_from_slice(pointer.as_bytes());
    out.extend_from_slice(aad);
    out
}

/// The `fields` of an item: non-empty RFC 6901 pointers, none repeated and
/// none inside another (encrypting `/a` and `/a/b` would nest ciphertexts).
fn pointers(item: &Map<String, Value>, data: &Map<String, Value>) -> Result<Vec<String>, ItemError> {
    let raw = item.get("fields").or_else(|| data.get("fields"));
    let list = match raw {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(ItemError::new("missing 'fields': a list of JSON pointers")),
        Some(_) => return Err(ItemError::new("'fields' must be a list of JSON pointers")),
    };
    if list.is_empty() || list.len() > MAX_FIELDS {
        return Err(ItemError::new(format!("'fields' must name 1 to {MAX_FIELDS} fields")));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for p in list {
        let Value::String(p) = p else { return Err(ItemError::new("every field must be a JSON pointer string")) };
        if !p.starts_with('/') {
            return Err(ItemError::new(format!("invalid JSON pointer {p:?}: it must start with '/' (RFC 6901)")));
        }
        for q in &out {
            let inside = |a: &str, b: &str| b.len() > a.len() && b.starts_with(a) && b.as_bytes()[a.len()] == b'/';
            if q == p || inside(q, p) || inside(p, q) {
                return Err(ItemError::new(format!("fields {q:?} and {p:?} overlap")));
            }
        }
        out.push(p.clone());
    }
    Ok(out)
}

fn document(item: &Map<String, Value>) -> Result<Value, ItemError> {
    match item.get("document") {
        None => Err(ItemError::new("missing 'document'")),
        Some(d) => Ok(d.clone()),
    }
}

/// Blind indexes of the fields named by `index_fields`, computed on the
/// values before encryption: a string's text, any other value's JSON text;
/// the pointer is the index's field name (query with `blind-index/{name}`
/// and `field` set to the pointer).
fn indexes(
    k: &TransitKey,
    doc: &Value,
    item: &Map<String, Value>,
    data: &Map<String, Value>,
) -> Result<Option<Value>, ItemError> {
    let Some(list) = item.get("index_fields").or_else(|| data.get("index_fields")).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let mut wrapped = Map::new();
    wrapped.insert("fields".into(), list.clone());
    let ptrs = pointers(&wrapped, &Map::new())?;
    let ik = k.index_key.as_deref().ok_or_else(|| ItemError::new("the key has no index key"))?;
    let p = index::params(item, data)?;
    let mut out = Map::new();
    for ptr in ptrs {
        let v = doc.pointer(&ptr).ok_or_else(|| ItemError::new(format!("field {ptr:?} is not in the document")))?;
        let input = Zeroizing::new(match v {
            Value::String(s) => s.as_bytes().to_vec(),
            other => serde_json::to_vec(other).map_err(|_| ItemError::new("unserializable field"))?,
        });
        out.insert(ptr.clone(), index::index(ik, &ptr, &input, p)?.into());
    }
    Ok(Some(Value::Object(out)))
}

fn encrypt_one(
    k: &TransitKey,
    item: &Map<String, Value>,
    data: &Map<String, Value>,
    batch: bool,
    subjects: &Resolved,
) -> ItemResult {
    let mut doc = document(item)?;
    let ptrs = pointers(item, data)?;
    let idx = indexes(k, &doc, item, data)?;
    let inputs = Bound::of(item)?;
    let requested = requested_version(item, data, batch)?;
    let subject = item_subject(item, data, batch)?.map(|s| subjects.for_encrypt(s)).transpose()?;
    let mut version = 0;
    for p in &ptrs {
        let slot = doc.pointer_mut(p).ok_or_else(|| ItemError::new(format!("field {p:?} is not in the document")))?;
        let plain = Zeroizing::new(serde_json::to_vec(slot).map_err(|_| ItemError::new("unserializable field"))?);
        let (v, ct) = seal_one(k, requested, &plain, inputs.context(), None, &field_aad(p, inputs.aad()), subject)?;
        version = v;
        *slot = Value::String(ct);
    }
    let mut m = Map::new();
    m.insert("document".into(), doc);
    m.insert("key_version".into(), version.into());
    if let Some(i) = idx {
        m.insert("indexes".into(), i);
    }
    Ok(m)
}

fn decrypt_one(
    k: &TransitKey,
    item: &Map<String, Value>,
    data: &Map<String, Value>,
    batch: bool,
    subjects: &Resolved,
) -> ItemResult {
    let mut doc = document(item)?;
    let ptrs = pointers(item, data)?;
    let inputs = Bound::of(item)?;
    let subject = item_subject(item, data, batch)?;
    for p in &ptrs {
        let slot = doc.pointer_mut(p).ok_or_else(|| ItemError::new(format!("field {p:?} is not in the document")))?;
        let Value::String(ct) = &*slot else {
            return Err(ItemError::new(format!("field {p:?} does not hold a ciphertext")));
        };
        let (plain, _) = open_one(k, ct, inputs.context(), &field_aad(p, inputs.aad()), subjects, subject)?;
        // What was encrypted was JSON text; anything else did not come from
        // encrypt-fields (and could not have authenticated).
        *slot = serde_json::from_slice(&plain)
            .map_err(|_| ItemError::new(format!("field {p:?} did not decrypt to JSON")))?;
    }
    let mut m = Map::new();
    m.insert("document".into(), doc);
    Ok(m)
}

/// The subject ids the named fields' ciphertexts are tagged with (items
/// that do not parse are skipped here and fail on their own).
fn tagged_fields(list: &[&Map<String, Value>], data: &Map<String, Value>) -> Vec<SubjectId> {
    let mut ids = Vec::new();
    for item in list {
        let (Some(doc), Ok(ptrs)) = (item.get("document"), pointers(item, data)) else { continue };
        for p in ptrs {
            if let Some(id) = doc.pointer(&p).and_then(Value::as_str).and_then(subject_of) {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl Transit {
    pub(super) async fn encrypt_fields(
        &self,
        u: &Unsealed,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let (batch, list) = work(data)?;
        let wants_index = data.contains_key("index_fields") || list.iter().any(|i| i.contains_key("index_fields"));
        let key = if wants_index { self.key_with_index(u, name).await? } else { self.key(u, name).await? };
        // A subject is made only for an item that will use it.
        let k = key.clone();
        let will_encrypt = move |item: &Map<String, Value>| {
            let (Some(doc), Ok(ptrs)) = (item.get("document"), pointers(item, data)) else { return false };
            ptrs.iter().all(|p| doc.pointer(p).is_some())
                && indexes(&k, doc, item, data).is_ok()
                && can_seal(&k, item, data, batch)
        };
        let (key, subjects) =
            Box::pin(self.request_subjects(u, key, name, data, &list, batch, &[], will_encrypt)).await?;
        let results = each_item(&list, |item| encrypt_one(&key, item, data, batch, &subjects));
        answer(data, batch, results, references(&list), true)
    }

    pub(super) async fn decrypt_fields(
        &self,
        u: &Unsealed,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let (batch, list) = work(data)?;
        let key = self.key(u, name).await?;
        let tagged = tagged_fields(&list, data);
        let (key, subjects) =
            Box::pin(self.request_subjects(u, key, name, data, &list, batch, &tagged, |_| false)).await?;
        let results = each_item(&list, |item| decrypt_one(&key, item, data, batch, &subjects));
        answer(data, batch, results, references(&list), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ptrs(v: Value) -> Result<Vec<String>, ItemError> {
        pointers(v.as_object().unwrap(), &Map::new())
    }

    #[test]
    fn pointers_are_checked() {
        assert_eq!(ptrs(json!({"fields": ["/a", "/b/0", "/a~1b"]})).unwrap().len(), 3);
        for bad in [
            json!({}),
            json!({"fields": []}),
            json!({"fields": "/a"}),
            json!({"fields": ["a"]}),
            json!({"fields": [""]}),
            json!({"fields": [1]}),
            json!({"fields": ["/a", "/a"]}),
            json!({"fields": ["/a", "/a/b"]}),
            json!({"fields": ["/a/b", "/a"]}),
        ] {
            assert!(ptrs(bad.clone()).is_err(), "{bad}");
        }
        // A common prefix is not nesting.
        assert!(ptrs(json!({"fields": ["/ab", "/a"]})).is_ok());
    }

    #[test]
    fn the_pointer_is_bound_unambiguously() {
        assert_ne!(field_aad("/a", b"/b"), field_aad("/a/b", b""));
        assert_ne!(field_aad("/a", b""), field_aad("/b", b""));
    }
}
