//! The deserializers behind [`Client::load`](crate::Client::load) and
//! [`Client::watch`](crate::Client::watch):
//!
//! * [`field_names`]: a struct's field names, asked of its `Deserialize`
//!   impl (serde passes them to `deserialize_struct`), so fallbacks can be
//!   looked up per field;
//! * [`from_map`]: a borrowed JSON map to `T` that coerces strings to the
//!   type a field asks for (`"5432"` for a `u16`, `"true"` for a `bool`,
//!   JSON text for a list or struct) and reports errors with the field's
//!   path and the expected type, never the value (serde's own messages quote
//!   values, and these values are secrets).

use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeOwned, Expected, IntoDeserializer, Unexpected, Visitor};
use serde_json::{Map, Value};

/// Why a value did not deserialize. Holds field names and type names only.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DeError {
    /// A field the target requires is absent (dotted path for nested fields).
    Missing(String),
    /// The value of `field` (dotted path) did not fit: `detail` says how.
    Field { field: String, detail: String },
    /// The whole value did not fit (not tied to a field).
    Other(String),
}

impl DeError {
    /// This error, seen from the field `key` of the enclosing map or list.
    fn within(self, key: &str) -> DeError {
        match self {
            DeError::Missing(f) => DeError::Missing(format!("{key}.{f}")),
            DeError::Field { field, detail } => DeError::Field { field: format!("{key}.{field}"), detail },
            DeError::Other(detail) => DeError::Field { field: key.to_string(), detail },
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeError::Missing(field) => write!(f, "missing field `{field}`"),
            DeError::Field { field, detail } => write!(f, "field `{field}`: {detail}"),
            DeError::Other(detail) => f.write_str(detail),
        }
    }
}

impl std::error::Error for DeError {}

/// What kind of value was found, without the value itself.
fn kind(u: &Unexpected<'_>) -> &'static str {
    match u {
        Unexpected::Bool(_) => "a boolean",
        Unexpected::Unsigned(_) | Unexpected::Signed(_) => "an integer",
        Unexpected::Float(_) => "a number",
        Unexpected::Char(_) => "a character",
        Unexpected::Str(_) => "a string",
        Unexpected::Bytes(_) => "bytes",
        Unexpected::Unit => "null",
        Unexpected::Option => "an optional value",
        Unexpected::NewtypeStruct => "a newtype struct",
        Unexpected::Seq => "a list",
        Unexpected::Map => "a map",
        Unexpected::Enum => "an enum",
        Unexpected::UnitVariant | Unexpected::NewtypeVariant | Unexpected::TupleVariant | Unexpected::StructVariant => {
            "an enum variant"
        }
        Unexpected::Other(_) => "another kind of value",
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        // A type's own message may quote the value (e.g. a parse error).
        DeError::Other("the value was rejected by the field's type".into())
    }
    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        DeError::Other(format!("expected {exp}, found {}", kind(&unexp)))
    }
    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        DeError::Other(format!("invalid value ({}), expected {exp}", kind(&unexp)))
    }
    fn invalid_length(len: usize, exp: &dyn Expected) -> Self {
        DeError::Other(format!("invalid length {len}, expected {exp}"))
    }
    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
        // The variant name is the value: not shown.
        DeError::Other(format!("unknown variant, expected one of: {}", expected.join(", ")))
    }
    fn unknown_field(field: &str, _expected: &'static [&'static str]) -> Self {
        DeError::Other(format!("unknown field `{field}`"))
    }
    fn missing_field(field: &'static str) -> Self {
        DeError::Missing(field.to_string())
    }
    fn duplicate_field(field: &'static str) -> Self {
        DeError::Other(format!("duplicate field `{field}`"))
    }
}

/// `T` from `map` (borrowed, so the caller can wipe it afterwards).
pub(crate) fn from_map<T: DeserializeOwned>(map: &Map<String, Value>) -> Result<T, DeError> {
    T::deserialize(MapDe(map))
}

/// The field names of `T` if it deserializes as a struct (`None` for maps,
/// `#[serde(flatten)]` structs and anything else).
pub(crate) fn field_names<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    match T::deserialize(FieldNames) {
        Err(Found(fields)) => fields,
        Ok(_) => None,
    }
}

/// The "error" [`FieldNames`] returns: the field list it was shown.
#[derive(Debug)]
struct Found(Option<&'static [&'static str]>);

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names")
    }
}
impl std::error::Error for Found {}
impl de::Error for Found {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Found(None)
    }
}

/// A deserializer that stops at `deserialize_struct` with the field list.
struct FieldNames;

impl<'de> Deserializer<'de> for FieldNames {
    type Error = Found;
    fn deserialize_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Found> {
        Err(Found(None))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _v: V,
    ) -> Result<V::Value, Found> {
        Err(Found(Some(fields)))
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, v: V) -> Result<V::Value, Found> {
        v.visit_newtype_struct(self)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// The top-level map (also used for nested objects).
struct MapDe<'a>(&'a Map<String, Value>);

impl<'de, 'a> Deserializer<'de> for MapDe<'a> {
    type Error = DeError;
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_map(Entries { iter: self.0.iter(), pending: None })
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// A map's entries; errors of a value are tagged with its key.
struct Entries<'a> {
    iter: serde_json::map::Iter<'a>,
    pending: Option<(&'a str, &'a Value)>,
}

impl<'de, 'a> de::MapAccess<'de> for Entries<'a> {
    type Error = DeError;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            Some((k, v)) => {
                self.pending = Some((k.as_str(), v));
                seed.deserialize(k.as_str().into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<S: de::DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, DeError> {
        let Some((k, v)) = self.pending.take() else {
            return Err(DeError::Other("value asked before its key".into()));
        };
        seed.deserialize(ValueDe(v)).map_err(|e| e.within(k))
    }
}

/// A list's items; errors are tagged with the item's index.
struct Items<'a> {
    iter: std::iter::Enumerate<std::slice::Iter<'a, Value>>,
}

impl<'de, 'a> de::SeqAccess<'de> for Items<'a> {
    type Error = DeError;
    fn next_element_seed<S: de::DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, DeError> {
        match self.iter.next() {
            Some((i, v)) => seed.deserialize(ValueDe(v)).map(Some).map_err(|e| e.within(&i.to_string())),
            None => Ok(None),
        }
    }
}

/// One JSON value; a string is coerced to what the target asks for.
struct ValueDe<'a>(&'a Value);

/// A string that should have held JSON text (for a list or map target).
fn parse_json_text(s: &str, what: &str) -> Result<Value, DeError> {
    serde_json::from_str(s)
        .map_err(|_| DeError::Other(format!("expected {what} (or JSON text of one), found a string")))
}

macro_rules! coerce_int {
    ($($method:ident => $parse:ty, $visit:ident;)*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            match self.0 {
                Value::String(s) => match s.trim().parse::<$parse>() {
                    Ok(n) => v.$visit(n),
                    Err(_) => Err(de::Error::invalid_type(Unexpected::Str(s), &v)),
                },
                _ => self.deserialize_any(v),
            }
        }
    )*};
}

impl<'de, 'a> Deserializer<'de> for ValueDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => v.visit_unit(),
            Value::Bool(b) => v.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    v.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    v.visit_i64(i)
                } else {
                    v.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => v.visit_str(s),
            Value::Array(a) => v.visit_seq(Items { iter: a.iter().enumerate() }),
            Value::Object(m) => v.visit_map(Entries { iter: m.iter(), pending: None }),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            // The spellings environment variables use for booleans.
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => v.visit_bool(true),
                "false" | "0" | "no" | "off" => v.visit_bool(false),
                _ => Err(de::Error::invalid_type(Unexpected::Str(s), &v)),
            },
            _ => self.deserialize_any(v),
        }
    }

    coerce_int! {
        deserialize_i8 => i64, visit_i64;
        deserialize_i16 => i64, visit_i64;
        deserialize_i32 => i64, visit_i64;
        deserialize_i64 => i64, visit_i64;
        deserialize_i128 => i128, visit_i128;
        deserialize_u8 => u64, visit_u64;
        deserialize_u16 => u64, visit_u64;
        deserialize_u32 => u64, visit_u64;
        deserialize_u64 => u64, visit_u64;
        deserialize_u128 => u128, visit_u128;
        deserialize_f32 => f64, visit_f64;
        deserialize_f64 => f64, visit_f64;
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, v: V) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) => match parse_json_text(s, "a list")? {
                Value::Array(a) => v.visit_seq(Items { iter: a.iter().enumerate() }),
                _ => Err(DeError::Other("expected a list (or JSON text of one), found a string".into())),
            },
            _ => self.deserialize_any(v),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) => match parse_json_text(s, "a map")? {
                Value::Object(m) => v.visit_map(Entries { iter: m.iter(), pending: None }),
                _ => Err(DeError::Other("expected a map (or JSON text of one), found a string".into())),
            },
            _ => self.deserialize_any(v),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) => v.visit_enum(s.as_str().into_deserializer()),
            Value::Object(m) if m.len() == 1 => match m.iter().next() {
                Some((variant, value)) => v.visit_enum(EnumDe { variant, value }),
                None => Err(DeError::Other("expected an enum".into())),
            },
            _ => Err(DeError::Other("expected an enum (a string, or a map with one key)".into())),
        }
    }

    serde::forward_to_deserialize_any! {
        char str string bytes byte_buf unit unit_struct identifier ignored_any
    }
}

/// An enum written as `{"Variant": value}`.
struct EnumDe<'a> {
    variant: &'a str,
    value: &'a Value,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumDe<'a> {
    type Error = DeError;
    type Variant = ValueDe<'a>;
    fn variant_seed<S: de::DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, ValueDe<'a>), DeError> {
        let v = seed.deserialize(self.variant.into_deserializer())?;
        Ok((v, ValueDe(self.value)))
    }
}

impl<'de, 'a> de::VariantAccess<'de> for ValueDe<'a> {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        match self.0 {
            Value::Null => Ok(()),
            _ => Err(DeError::Other("expected a unit variant".into())),
        }
    }
    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, DeError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }
    fn struct_variant<V: Visitor<'de>>(self, _fields: &'static [&'static str], v: V) -> Result<V::Value, DeError> {
        self.deserialize_map(v)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Db {
        host: String,
        port: u16,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Level {
        Debug,
        Info,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Conf {
        password: String,
        port: u16,
        debug: bool,
        ratio: f64,
        hosts: Vec<String>,
        db: Db,
        level: Level,
        #[serde(default)]
        optional: Option<String>,
        #[serde(rename = "api-key")]
        api_key: String,
    }

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!(),
        }
    }

    #[test]
    fn field_names_of_a_struct() {
        let f = field_names::<Conf>().unwrap();
        assert!(f.contains(&"password") && f.contains(&"api-key") && f.contains(&"optional"), "{f:?}");
        assert_eq!(field_names::<std::collections::HashMap<String, String>>(), None);
        assert_eq!(field_names::<String>(), None);
    }

    #[test]
    fn strings_are_coerced() {
        let m = map(json!({
            "password": "hunter2", "port": " 5432 ", "debug": "yes", "ratio": "0.5",
            "hosts": "[\"a\",\"b\"]", "db": "{\"host\":\"h\",\"port\":\"6\"}", "level": "info",
            "api-key": "k", "ignored": 1
        }));
        let c: Conf = from_map(&m).unwrap();
        assert_eq!(c.port, 5432);
        assert!(c.debug);
        assert_eq!(c.ratio, 0.5);
        assert_eq!(c.hosts, vec!["a", "b"]);
        assert_eq!(c.db, Db { host: "h".into(), port: 6 });
        assert_eq!(c.level, Level::Info);
        assert_eq!(c.optional, None);
        // Native JSON works too.
        let m = map(json!({
            "password": "x", "port": 1, "debug": false, "ratio": 2, "hosts": [], "db": {"host": "h", "port": 1},
            "level": "debug", "api-key": "k", "optional": "o"
        }));
        let c: Conf = from_map(&m).unwrap();
        assert_eq!((c.port, c.debug, c.level, c.optional.as_deref()), (1, false, Level::Debug, Some("o")));
    }

    #[test]
    fn errors_name_fields_never_values() {
        let base = json!({
            "password": "x", "port": 1, "debug": false, "ratio": 2, "hosts": [], "db": {"host": "h", "port": 1},
            "level": "debug", "api-key": "k"
        });
        let with = |k: &str, v: Value| {
            let mut m = map(base.clone());
            m.insert(k.into(), v);
            from_map::<Conf>(&m).unwrap_err()
        };
        let e = with("port", json!("SECRET-99999"));
        assert!(matches!(&e, DeError::Field { field, .. } if field == "port"), "{e:?}");
        let e = with("port", json!("70000"));
        assert!(matches!(&e, DeError::Field { field, .. } if field == "port"), "{e:?}");
        let e = with("debug", json!("SECRET-maybe"));
        assert!(matches!(&e, DeError::Field { field, detail } if field == "debug" && detail.contains("bool")), "{e:?}");
        let e = with("level", json!("SECRET-level"));
        assert!(matches!(&e, DeError::Field { field, .. } if field == "level"), "{e:?}");
        let e = with("db", json!({"host": "h", "port": "SECRET-p"}));
        assert!(matches!(&e, DeError::Field { field, .. } if field == "db.port"), "{e:?}");
        let e = with("db", json!({"port": 1}));
        assert_eq!(e, DeError::Missing("db.host".into()));
        let e = with("hosts", json!(["a", 7]));
        assert!(matches!(&e, DeError::Field { field, .. } if field == "hosts.1"), "{e:?}");
        let e = with("hosts", json!("SECRET not json"));
        assert!(matches!(&e, DeError::Field { field, .. } if field == "hosts"), "{e:?}");
        for e in [with("port", json!("SECRET-99999")), with("level", json!("SECRET-level"))] {
            assert!(!e.to_string().contains("SECRET") && !format!("{e:?}").contains("SECRET"), "{e}");
        }
        let mut m = map(base);
        m.remove("password");
        assert_eq!(from_map::<Conf>(&m).unwrap_err(), DeError::Missing("password".into()));
    }
}
