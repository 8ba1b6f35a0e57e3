//! Blind indexes (beyond Vault, docs/transit-extensions.md): a keyed hash of
//! a value, so an application can find rows by an encrypted field with an
//! equality query, without the database learning the value.
//!
//! `index = HMAC-SHA-256(K_field, normalize(input))`, truncated to `bits`,
//! where `K_field = HKDF-SHA-256(ikm = the key's index key, no salt,
//! info = "vault-transit-blind-index-v1" 0x00 | field)`. The index key belongs
//! to the named key, not to a version: indexes are stable across rotations
//! and trims. Different fields get unrelated indexes for the same value.

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::Transit;
use super::crypto::{self, HashAlg};
use super::key::{INDEX_KEY_LEN, TransitKey};
use super::ops::{ItemError, ItemResult, answer, b64_field, each_item, references, work};
use super::store::Change;
use crate::barrier::Unsealed;
use crate::logical::{LogicalError, Response, fields};

const INFO: &[u8] = b"vault-transit-blind-index-v1\0";

/// How an input is normalized before hashing.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Normalize {
    lowercase: bool,
    trim: bool,
}

/// The index parameters of an item (falling back to the request's).
#[derive(Debug, Clone, Copy)]
pub(super) struct Params {
    normalize: Normalize,
    bits: u16,
}

fn normalize_of(v: Option<&Value>) -> Result<Normalize, ItemError> {
    let mut n = Normalize::default();
    let names: Vec<String> = match v {
        None | Some(Value::Null) => return Ok(n),
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(|| ItemError::new("'normalize' must list strings")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ItemError::new("'normalize' must be a list such as [\"lowercase\", \"trim\"]")),
    };
    for name in names {
        match name.as_str() {
            "lowercase" => n.lowercase = true,
            "trim" => n.trim = true,
            other => return Err(ItemError::new(format!("unknown normalization {other:?}: use lowercase and/or trim"))),
        }
    }
    Ok(n)
}

pub(super) fn params(item: &Map<String, Value>, data: &Map<String, Value>) -> Result<Params, ItemError> {
    let pick = |f: &str| item.get(f).or_else(|| data.get(f));
    let normalize = normalize_of(pick("normalize"))?;
    let bits = match pick("bits") {
        None | Some(Value::Null) => 256,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|b| (1..=256).contains(b))
            .ok_or_else(|| ItemError::new("'bits' must be between 1 and 256"))? as u16,
    };
    Ok(Params { normalize, bits })
}

/// The index of `input` for `field`, as lowercase hex of `ceil(bits/8)`
/// bytes with the bits past `bits` set to zero.
/// The key of `field`'s indexes (derive once per field and request: a batch
/// usually names one field for all its items).
pub(super) fn field_key(index_key: &[u8; INDEX_KEY_LEN], field: &str) -> Result<Zeroizing<Vec<u8>>, ItemError> {
    let mut info = Vec::with_capacity(INFO.len() + field.len());
    info.extend_from_slice(INFO);
    info.extend_from_slice(field.as_bytes());
    Ok(crypto::derive(index_key, &info, 32)?)
}

/// The index of `input` under a field's key (see [`field_key`]).
pub(super) fn index_with(field_key: &[u8], input: &[u8], p: Params) -> Result<String, ItemError> {
    let normalized: Zeroizing<Vec<u8>> = if p.normalize.lowercase || p.normalize.trim {
        let text = std::str::from_utf8(input).map_err(|_| ItemError::new("normalization needs UTF-8 input"))?;
        let text = if p.normalize.trim { text.trim() } else { text };
        Zeroizing::new(if p.normalize.lowercase { text.to_lowercase().into_bytes() } else { text.as_bytes().to_vec() })
    } else {
        Zeroizing::new(input.to_vec())
    };
    let mut mac = crypto::hmac(HashAlg::Sha2_256, field_key, &normalized)?;
    let bytes = usize::from(p.bits).div_ceil(8);
    mac.truncate(bytes);
    let spare = bytes * 8 - usize::from(p.bits);
    if let Some(last) = mac.last_mut() {
        *last &= 0xffu8 << spare;
    }
    Ok(hex::encode(mac))
}

/// The index of `input` for `field`, as lowercase hex of `ceil(bits/8)`
/// bytes with the bits past `bits` set to zero.
pub(super) fn index(
    index_key: &[u8; INDEX_KEY_LEN],
    field: &str,
    input: &[u8],
    p: Params,
) -> Result<String, ItemError> {
    index_with(&field_key(index_key, field)?, input, p)
}

/// Field keys derived once for the request (the top-level `field`, which a
/// batch's items usually share); other fields are derived per item.
fn one(
    k: &TransitKey,
    shared: Option<(&str, &[u8])>,
    item: &Map<String, Value>,
    data: &Map<String, Value>,
) -> ItemResult {
    let ik = k.index_key.as_deref().ok_or_else(|| ItemError::new("the key has no index key"))?;
    let input = b64_field(item, "input")?.ok_or_else(|| ItemError::new("missing input"))?;
    let field = match item.get("field").or_else(|| data.get("field")) {
        Some(Value::String(f)) if !f.is_empty() => f.as_str(),
        _ => return Err(ItemError::new("missing 'field': the name of the field the value belongs to")),
    };
    let p = params(item, data)?;
    let index = match shared {
        Some((f, fk)) if f == field => index_with(fk, &input, p)?,
        _ => index(ik, field, &input, p)?,
    };
    let mut m = Map::new();
    m.insert("index".into(), index.into());
    Ok(m)
}

impl Transit {
    /// The key `name` with an index key (records from before blind indexes
    /// get one now, once).
    pub(super) async fn key_with_index(
        &self,
        u: &Unsealed,
        name: &str,
    ) -> Result<std::sync::Arc<TransitKey>, LogicalError> {
        let key = self.key(u, name).await?;
        if key.index_key.is_some() {
            return Ok(key);
        }
        self.keys
            .change(&self.view, u, name, |current| {
                let mut k = current.ok_or_else(|| LogicalError::InvalidRequest("encryption key not found".into()))?;
                if k.index_key.is_some() {
                    return Ok(Change::Keep(()));
                }
                k.index_key = Some(crate::crypto::random::key32().map_err(LogicalError::internal)?);
                Ok(Change::Write(k, ()))
            })
            .await?;
        self.key(u, name).await
    }

    pub(super) async fn blind_index(
        &self,
        u: &Unsealed,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let (batch, list) = work(data)?;
        // Checked once for the request, so a bad value is a 400 even alone.
        params(data, data).map_err(|e| LogicalError::InvalidRequest(e.to_string()))?;
        let top_field = fields::string(data, "field")?.filter(|f| !f.is_empty());
        let key = self.key_with_index(u, name).await?;
        let shared = match (&top_field, key.index_key.as_deref()) {
            (Some(f), Some(ik)) => {
                Some((f.as_str(), field_key(ik, f).map_err(|e| LogicalError::InvalidRequest(e.to_string()))?))
            }
            _ => None,
        };
        let shared = shared.as_ref().map(|(f, k)| (*f, &k[..]));
        let results = each_item(&list, |item| one(&key, shared, item, data));
        answer(data, batch, results, references(&list), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: [u8; 32] = [7; 32];

    fn p(lowercase: bool, trim: bool, bits: u16) -> Params {
        Params { normalize: Normalize { lowercase, trim }, bits }
    }

    #[test]
    fn fields_are_separated_and_normalization_applies() {
        let a = index(&K, "email", b"Ada@Example.com", p(false, false, 256)).unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, index(&K, "name", b"Ada@Example.com", p(false, false, 256)).unwrap());
        assert_ne!(a, index(&K, "email", b"ada@example.com", p(false, false, 256)).unwrap());
        assert_eq!(
            index(&K, "email", b"  Ada@Example.com ", p(true, true, 256)).unwrap(),
            index(&K, "email", b"ada@example.com", p(true, true, 256)).unwrap()
        );
        assert!(index(&K, "email", &[0xff, 0xfe], p(true, false, 256)).is_err());
        assert_ne!(a, index(&[8; 32], "email", b"Ada@Example.com", p(false, false, 256)).unwrap());
    }

    #[test]
    fn truncation_keeps_a_prefix_and_zeroes_the_rest() {
        let full = index(&K, "f", b"v", p(false, false, 256)).unwrap();
        let t12 = index(&K, "f", b"v", p(false, false, 12)).unwrap();
        assert_eq!(t12.len(), 4);
        let full_bits = u16::from_str_radix(&full[..4], 16).unwrap();
        assert_eq!(u16::from_str_radix(&t12, 16).unwrap(), full_bits & 0xfff0);
        assert_eq!(index(&K, "f", b"v", p(false, false, 8)).unwrap(), full[..2]);
    }

    #[test]
    fn parameters_are_checked() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert!(params(&m(serde_json::json!({"bits": 0})), &Map::new()).is_err());
        assert!(params(&m(serde_json::json!({"bits": 257})), &Map::new()).is_err());
        assert!(params(&m(serde_json::json!({"normalize": ["upper"]})), &Map::new()).is_err());
        let ok = params(&m(serde_json::json!({"normalize": "lowercase, trim", "bits": "16"})), &Map::new()).unwrap();
        assert!(ok.normalize.lowercase && ok.normalize.trim && ok.bits == 16);
    }
}
