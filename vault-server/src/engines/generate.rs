//! Value generators for rotation: random passwords drawn from character
//! classes, and random bytes rendered in a text encoding.
//!
//! The specs are stored inside encrypted rotation records (hence serde) and
//! parsed from user requests (hence `from_json`, whose errors are meant to be
//! returned as 400 messages). Generated values live in `Zeroizing` buffers.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::crypto::random;

/// Length used when a spec does not give one.
pub const DEFAULT_LENGTH: usize = 32;
/// Shortest password accepted: shorter ones are too weak to be worth rotating.
pub const PASSWORD_MIN_LENGTH: usize = 8;
/// Longest password accepted.
pub const PASSWORD_MAX_LENGTH: usize = 1024;
/// Fewest random bytes accepted.
pub const BYTES_MIN_LENGTH: usize = 1;
/// Most random bytes accepted.
pub const BYTES_MAX_LENGTH: usize = 1024;

/// The symbols a password may contain: no quotes, backslash or space, so
/// values survive shells, URLs and connection strings unescaped.
pub const SYMBOLS: &[u8] = b"!#$%&*+-.:=?@^_~";

/// How random bytes are rendered as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Standard alphabet, padded (RFC 4648 §4).
    Base64,
    /// URL-safe alphabet, unpadded (RFC 4648 §5).
    Base64Url,
    /// Lowercase hexadecimal.
    Hex,
}

impl Encoding {
    /// The name used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Base64 => "base64",
            Encoding::Base64Url => "base64url",
            Encoding::Hex => "hex",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "base64" => Ok(Encoding::Base64),
            "base64url" => Ok(Encoding::Base64Url),
            "hex" => Ok(Encoding::Hex),
            other => Err(format!("unknown encoding \"{other}\" (expected base64, base64url or hex)")),
        }
    }
}

/// A class of password characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CharClass {
    /// `a`–`z`.
    Lower,
    /// `A`–`Z`.
    Upper,
    /// `0`–`9`.
    Digit,
    /// [`SYMBOLS`].
    Symbol,
}

impl CharClass {
    /// Every class, in the canonical order.
    pub const ALL: [CharClass; 4] = [CharClass::Lower, CharClass::Upper, CharClass::Digit, CharClass::Symbol];

    /// The name used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            CharClass::Lower => "lower",
            CharClass::Upper => "upper",
            CharClass::Digit => "digit",
            CharClass::Symbol => "symbol",
        }
    }

    /// The characters of this class (ASCII, pairwise disjoint between classes).
    pub fn alphabet(self) -> &'static [u8] {
        match self {
            CharClass::Lower => b"abcdefghijklmnopqrstuvwxyz",
            CharClass::Upper => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            CharClass::Digit => b"0123456789",
            CharClass::Symbol => SYMBOLS,
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        CharClass::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown character class \"{s}\" (expected lower, upper, digit or symbol)"))
    }
}

/// How to generate a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordSpec {
    /// Number of characters.
    pub length: usize,
    /// Classes drawn from; each appears at least once in every password.
    pub classes: Vec<CharClass>,
}

impl Default for PasswordSpec {
    fn default() -> Self {
        PasswordSpec { length: DEFAULT_LENGTH, classes: CharClass::ALL.to_vec() }
    }
}

impl PasswordSpec {
    /// Parse and validate a user-supplied spec. `None` or `null` gives the
    /// default length with `default_classes`; an object may set `length`
    /// (integer) and `classes` (array of names, or one comma-separated
    /// string). A `type` key is ignored so a whole generator object can be
    /// passed; any other key is refused, so a typo is not silently a default.
    pub fn from_json(v: Option<&Value>, default_classes: &[CharClass]) -> Result<Self, String> {
        let mut spec = PasswordSpec { length: DEFAULT_LENGTH, classes: default_classes.to_vec() };
        if let Some(obj) = spec_object(v, "password", &["length", "classes"])? {
            if let Some(length) = length_field(obj, "password")? {
                spec.length = length;
            }
            match obj.get("classes") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => {
                    spec.classes = s
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(CharClass::parse)
                        .collect::<Result<_, _>>()?;
                }
                Some(Value::Array(items)) => {
                    spec.classes = items
                        .iter()
                        .map(|i| match i {
                            Value::String(s) => CharClass::parse(s),
                            _ => Err("password classes must be strings".to_string()),
                        })
                        .collect::<Result<_, _>>()?;
                }
                Some(_) => return Err("password classes must be a list of class names".into()),
            }
        }
        spec.validate()?;
        Ok(spec)
    }

    /// Check the bounds: length in 8..=1024, at least one class, no class
    /// twice, and room for one character of each class.
    pub fn validate(&self) -> Result<(), String> {
        if !(PASSWORD_MIN_LENGTH..=PASSWORD_MAX_LENGTH).contains(&self.length) {
            return Err(format!(
                "password length must be between {PASSWORD_MIN_LENGTH} and {PASSWORD_MAX_LENGTH}, got {}",
                self.length
            ));
        }
        if self.classes.is_empty() {
            return Err("password classes must name at least one class".into());
        }
        for (i, c) in self.classes.iter().enumerate() {
            if self.classes[..i].contains(c) {
                return Err(format!("password class \"{}\" is listed twice", c.name()));
            }
        }
        if self.length < self.classes.len() {
            return Err(format!(
                "password length {} is shorter than the number of classes ({})",
                self.length,
                self.classes.len()
            ));
        }
        Ok(())
    }

    /// A fresh password.
    ///
    /// Each character is drawn uniformly from the union of the classes
    /// (rejection sampling on random bytes, so no modulo bias). A password
    /// that misses a class is thrown away and drawn again. Rejecting whole
    /// candidates conditions the uniform distribution on "every class
    /// present", and a uniform distribution conditioned on an event is uniform
    /// over that event: every valid password is exactly as likely as any
    /// other, unlike "force one character of each class into fixed or chosen
    /// positions", which over-represents small classes. The cost is small: at
    /// the worst spec (8 characters, all four classes) a candidate is valid
    /// with probability about 0.5, and that probability rises quickly with
    /// the length; the number of attempts is geometric.
    ///
    /// The spec is expected to be valid ([`validate`](Self::validate));
    /// an invalid one (empty classes, or shorter than the number of classes)
    /// yields the empty string instead of looping forever.
    pub fn generate(&self) -> Zeroizing<String> {
        if self.classes.is_empty() || self.length < self.classes.len() {
            return Zeroizing::new(String::new());
        }
        // Canonical order, so the alphabet does not depend on how the user listed the classes.
        let alphabet: Vec<u8> = CharClass::ALL
            .into_iter()
            .filter(|c| self.classes.contains(c))
            .flat_map(|c| c.alphabet())
            .copied()
            .collect();
        loop {
            let candidate = draw(&alphabet, self.length);
            if self.classes.iter().all(|c| candidate.bytes().any(|b| c.alphabet().contains(&b))) {
                return candidate;
            }
            // `candidate` is dropped (and wiped) here; draw again.
        }
    }

    /// The spec as shown in status output.
    pub fn to_json(&self) -> Value {
        json!({
            "length": self.length,
            "classes": self.classes.iter().map(|c| c.name()).collect::<Vec<_>>(),
        })
    }
}

/// How to generate random bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BytesSpec {
    /// Number of random bytes (before encoding).
    pub length: usize,
    /// How they are rendered.
    pub encoding: Encoding,
}

impl Default for BytesSpec {
    fn default() -> Self {
        BytesSpec { length: DEFAULT_LENGTH, encoding: Encoding::Base64 }
    }
}

impl BytesSpec {
    /// Parse and validate a user-supplied spec. `None` or `null` gives the
    /// defaults; an object may set `length` (integer) and `encoding`. A
    /// `type` key is ignored; any other key is refused.
    pub fn from_json(v: Option<&Value>) -> Result<Self, String> {
        let mut spec = BytesSpec::default();
        if let Some(obj) = spec_object(v, "bytes", &["length", "encoding"])? {
            if let Some(length) = length_field(obj, "bytes")? {
                spec.length = length;
            }
            match obj.get("encoding") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => spec.encoding = Encoding::parse(s)?,
                Some(_) => return Err("bytes encoding must be a string".into()),
            }
        }
        spec.validate()?;
        Ok(spec)
    }

    /// Check the bounds: length in 1..=1024.
    pub fn validate(&self) -> Result<(), String> {
        if !(BYTES_MIN_LENGTH..=BYTES_MAX_LENGTH).contains(&self.length) {
            return Err(format!(
                "bytes length must be between {BYTES_MIN_LENGTH} and {BYTES_MAX_LENGTH}, got {}",
                self.length
            ));
        }
        Ok(())
    }

    /// `length` fresh random bytes, rendered in the encoding.
    pub fn generate(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(vec![0u8; self.length]);
        random::fill(&mut raw);
        Zeroizing::new(match self.encoding {
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(raw.as_slice()),
            Encoding::Base64Url => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.as_slice()),
            Encoding::Hex => hex::encode(raw.as_slice()),
        })
    }

    /// The spec as shown in status output.
    pub fn to_json(&self) -> Value {
        json!({ "length": self.length, "encoding": self.encoding.name() })
    }
}

/// `len` characters drawn uniformly and independently from `alphabet`
/// (at most 256 distinct bytes). A random byte `b` is used only when it is
/// below the largest multiple of the alphabet size that fits in a byte, so
/// `b % size` is exactly uniform; other bytes are discarded.
fn draw(alphabet: &[u8], len: usize) -> Zeroizing<String> {
    let size = alphabet.len();
    let limit = 256 - 256 % size;
    // Capacity up front: the string never reallocates, so no unwiped copy is left behind.
    let mut out = Zeroizing::new(String::with_capacity(len));
    let mut buf = Zeroizing::new([0u8; 64]);
    while out.len() < len {
        random::fill(buf.as_mut());
        for &b in buf.iter() {
            if usize::from(b) < limit && out.len() < len {
                out.push(char::from(alphabet[usize::from(b) % size]));
            }
        }
    }
    out
}

/// The object of a user-supplied spec, or `None` for absent/null. Keys other
/// than `allowed` and `type` are refused.
fn spec_object<'a>(
    v: Option<&'a Value>,
    what: &str,
    allowed: &[&str],
) -> Result<Option<&'a Map<String, Value>>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(obj)) => {
            if let Some(k) = obj.keys().find(|k| k.as_str() != "type" && !allowed.contains(&k.as_str())) {
                return Err(format!("unknown {what} generator parameter \"{k}\""));
            }
            Ok(Some(obj))
        }
        Some(_) => Err(format!("{what} generator parameters must be an object")),
    }
}

/// The optional `length` of a spec object, as a non-negative integer.
fn length_field(obj: &Map<String, Value>, what: &str) -> Result<Option<usize>, String> {
    match obj.get("length") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            // A value too large for usize is out of range anyway: validate reports it.
            .map(|n| Some(usize::try_from(n).unwrap_or(usize::MAX)))
            .ok_or_else(|| format!("{what} length must be a non-negative integer")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn allowed(classes: &[CharClass]) -> Vec<u8> {
        classes.iter().flat_map(|c| c.alphabet()).copied().collect()
    }

    #[test]
    fn symbols_are_exactly_the_documented_set() {
        assert_eq!(SYMBOLS, b"!#$%&*+-.:=?@^_~");
        let all = allowed(&CharClass::ALL);
        assert_eq!(all.len(), 26 + 26 + 10 + 16);
        for q in [b'\'', b'"', b'\\', b' ', b'`'] {
            assert!(!all.contains(&q));
        }
    }

    #[test]
    fn password_lengths_and_alphabet() {
        for length in [8, 9, 32, 100, 1024] {
            for classes in [
                vec![CharClass::Lower],
                vec![CharClass::Digit, CharClass::Symbol],
                vec![CharClass::Lower, CharClass::Upper, CharClass::Digit],
                CharClass::ALL.to_vec(),
            ] {
                let spec = PasswordSpec { length, classes: classes.clone() };
                spec.validate().unwrap();
                let pw = spec.generate();
                assert_eq!(pw.len(), length);
                assert_eq!(pw.chars().count(), length);
                let ok = allowed(&classes);
                assert!(pw.bytes().all(|b| ok.contains(&b)), "unexpected character for {classes:?}");
            }
        }
    }

    #[test]
    fn every_class_present_in_every_password() {
        // The shortest length makes a missing class most likely, so it tests the retry.
        let spec = PasswordSpec { length: 8, classes: CharClass::ALL.to_vec() };
        for _ in 0..2000 {
            let pw = spec.generate();
            for c in CharClass::ALL {
                assert!(pw.bytes().any(|b| c.alphabet().contains(&b)), "class {c:?} missing");
            }
        }
        let spec = PasswordSpec { length: 8, classes: vec![CharClass::Digit, CharClass::Lower] };
        for _ in 0..2000 {
            let pw = spec.generate();
            assert!(pw.bytes().any(|b| b.is_ascii_digit()));
            assert!(pw.bytes().any(|b| b.is_ascii_lowercase()));
        }
    }

    #[test]
    fn roughly_uniform() {
        // 62-character alphabet, 20 000 characters: each is expected ~323 times;
        // a missing one or one far off would show a broken draw.
        let spec = PasswordSpec { length: 1000, classes: vec![CharClass::Lower, CharClass::Upper, CharClass::Digit] };
        let mut counts = [0usize; 256];
        for _ in 0..20 {
            for b in spec.generate().bytes() {
                counts[usize::from(b)] += 1;
            }
        }
        let alphabet = allowed(&[CharClass::Lower, CharClass::Upper, CharClass::Digit]);
        assert_eq!(alphabet.len(), 62);
        for &a in &alphabet {
            let n = counts[usize::from(a)];
            // Expected 322.6, standard deviation ~17.8: these bounds are ~7 sigma away.
            assert!((200..=450).contains(&n), "{} drawn {n} times", char::from(a));
        }
        assert_eq!(counts.iter().sum::<usize>(), 20_000);
    }

    #[test]
    fn passwords_differ() {
        let spec = PasswordSpec::default();
        assert_ne!(*spec.generate(), *spec.generate());
    }

    #[test]
    fn password_validation_errors() {
        let bad = [
            (PasswordSpec { length: 7, classes: vec![CharClass::Lower] }, "between 8 and 1024"),
            (PasswordSpec { length: 1025, classes: vec![CharClass::Lower] }, "between 8 and 1024"),
            (PasswordSpec { length: 16, classes: vec![] }, "at least one class"),
            (PasswordSpec { length: 16, classes: vec![CharClass::Lower, CharClass::Lower] }, "listed twice"),
        ];
        for (spec, msg) in bad {
            let err = spec.validate().unwrap_err();
            assert!(err.contains(msg), "{err}");
            // An invalid spec never loops forever.
            let _ = spec.generate();
        }
        PasswordSpec { length: 8, classes: CharClass::ALL.to_vec() }.validate().unwrap();
        PasswordSpec { length: 1024, classes: vec![CharClass::Symbol] }.validate().unwrap();
    }

    #[test]
    fn password_from_json() {
        let defaults = [CharClass::Lower, CharClass::Upper, CharClass::Digit];
        let d = PasswordSpec::from_json(None, &defaults).unwrap();
        assert_eq!(d, PasswordSpec { length: 32, classes: defaults.to_vec() });
        assert_eq!(PasswordSpec::from_json(Some(&Value::Null), &defaults).unwrap(), d);
        assert_eq!(PasswordSpec::from_json(Some(&json!({})), &CharClass::ALL).unwrap(), PasswordSpec::default());

        let s = PasswordSpec::from_json(
            Some(&json!({"type": "password", "length": 20, "classes": ["digit", "symbol"]})),
            &defaults,
        )
        .unwrap();
        assert_eq!(s, PasswordSpec { length: 20, classes: vec![CharClass::Digit, CharClass::Symbol] });
        let s = PasswordSpec::from_json(Some(&json!({"classes": "upper, lower"})), &defaults).unwrap();
        assert_eq!(s.classes, vec![CharClass::Upper, CharClass::Lower]);

        for (v, msg) in [
            (json!({"length": 4}), "between 8 and 1024"),
            (json!({"length": "32"}), "non-negative integer"),
            (json!({"length": -1}), "non-negative integer"),
            (json!({"length": 12.5}), "non-negative integer"),
            (json!({"length": u64::MAX}), "between 8 and 1024"),
            (json!({"classes": []}), "at least one class"),
            (json!({"classes": ["lower", "lower"]}), "listed twice"),
            (json!({"classes": ["vowels"]}), "unknown character class \"vowels\""),
            (json!({"classes": [1]}), "must be strings"),
            (json!({"classes": 3}), "list of class names"),
            (json!({"lenght": 12}), "unknown password generator parameter \"lenght\""),
            (json!("long"), "must be an object"),
        ] {
            let err = PasswordSpec::from_json(Some(&v), &defaults).unwrap_err();
            assert!(err.contains(msg), "{v}: {err}");
        }
        assert!(PasswordSpec::from_json(None, &[]).is_err());
    }

    #[test]
    fn password_json_round_trip() {
        let spec = PasswordSpec { length: 40, classes: vec![CharClass::Symbol, CharClass::Upper] };
        let shown = spec.to_json();
        assert_eq!(shown, json!({"length": 40, "classes": ["symbol", "upper"]}));
        assert_eq!(PasswordSpec::from_json(Some(&shown), &[]).unwrap(), spec);
        // Storage form (serde) round trip.
        let stored = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<PasswordSpec>(&stored).unwrap(), spec);
        assert_eq!(serde_json::to_value(CharClass::Digit).unwrap(), json!("digit"));
    }

    #[test]
    fn bytes_encodings_decode_to_length() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        for length in [1, 2, 3, 31, 32, 33, 1024] {
            let b64 = BytesSpec { length, encoding: Encoding::Base64 }.generate();
            assert_eq!(STANDARD.decode(b64.as_str()).unwrap().len(), length);
            assert_eq!(b64.len() % 4, 0, "standard base64 is padded");

            let url = BytesSpec { length, encoding: Encoding::Base64Url }.generate();
            assert!(!url.contains('=') && !url.contains('+') && !url.contains('/'));
            assert_eq!(URL_SAFE_NO_PAD.decode(url.as_str()).unwrap().len(), length);

            let h = BytesSpec { length, encoding: Encoding::Hex }.generate();
            assert!(h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert_eq!(hex::decode(h.as_str()).unwrap().len(), length);
        }
        let spec = BytesSpec::default();
        assert_ne!(*spec.generate(), *spec.generate());
    }

    #[test]
    fn bytes_validation_and_json() {
        assert_eq!(BytesSpec::from_json(None).unwrap(), BytesSpec { length: 32, encoding: Encoding::Base64 });
        let s = BytesSpec::from_json(Some(&json!({"type": "bytes", "length": 16, "encoding": "base64url"}))).unwrap();
        assert_eq!(s, BytesSpec { length: 16, encoding: Encoding::Base64Url });
        assert_eq!(BytesSpec::from_json(Some(&s.to_json())).unwrap(), s);
        assert_eq!(s.to_json(), json!({"length": 16, "encoding": "base64url"}));
        let stored = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<BytesSpec>(&stored).unwrap(), s);
        assert_eq!(serde_json::to_value(Encoding::Hex).unwrap(), json!("hex"));

        for (v, msg) in [
            (json!({"length": 0}), "between 1 and 1024"),
            (json!({"length": 1025}), "between 1 and 1024"),
            (json!({"encoding": "base32"}), "unknown encoding \"base32\""),
            (json!({"encoding": 64}), "must be a string"),
            (json!({"classes": ["lower"]}), "unknown bytes generator parameter \"classes\""),
        ] {
            let err = BytesSpec::from_json(Some(&v)).unwrap_err();
            assert!(err.contains(msg), "{v}: {err}");
        }
        BytesSpec { length: 1, encoding: Encoding::Hex }.validate().unwrap();
        BytesSpec { length: 1024, encoding: Encoding::Hex }.validate().unwrap();
    }
}
