//! The audit device table: one barrier record ([`TABLE_PATH`]) listing every
//! enabled device with its options and its keys (HMAC key, Ed25519 signing
//! key), so keys exist in the clear only in memory while unsealed, and every
//! server on one PostgreSQL sees the same devices.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use super::AuditError;

/// Where the table lives (inside the barrier).
pub const TABLE_PATH: &str = "core/audit";

/// How often the file is flushed to disk (`fsync` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// After every batch, before any request of the batch goes on: an
    /// acknowledged entry survives a power cut (costs a disk flush per batch).
    Batch,
    /// About once a second: a power cut may lose the last second of entries
    /// (a crash of the server process loses nothing: entries are written
    /// before requests go on).
    Interval,
    /// Never (the kernel flushes when it likes).
    Never,
}

impl Fsync {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "batch" | "every-batch" | "every_batch" => Fsync::Batch,
            "interval" => Fsync::Interval,
            "never" => Fsync::Never,
            _ => return None,
        })
    }
    fn as_str(self) -> &'static str {
        match self {
            Fsync::Batch => "batch",
            Fsync::Interval => "interval",
            Fsync::Never => "never",
        }
    }
}

/// Where entries go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// A file, appended to (reopened on SIGHUP).
    File(std::path::PathBuf),
    /// The server's standard output.
    Stdout,
}

/// A device's options, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Where entries go.
    pub sink: Sink,
    /// File mode for a created file (0: leave the mode alone, as Vault).
    pub mode: u32,
    /// Whether accessors are hashed too.
    pub hmac_accessor: bool,
    /// Disk flush policy.
    pub fsync: Fsync,
    /// A checkpoint after this many entries.
    pub checkpoint_entries: u64,
    /// A checkpoint after this long with unsigned entries.
    pub checkpoint_interval: Duration,
}

/// Default entries between checkpoints.
pub const DEFAULT_CHECKPOINT_ENTRIES: u64 = 1000;
/// Default time between checkpoints (when entries were written).
pub const DEFAULT_CHECKPOINT_SECS: u64 = 30;

impl Options {
    /// The file's path as given (None for stdout or a path not in UTF-8).
    pub fn file_path(&self) -> Option<&str> {
        match &self.sink {
            Sink::File(p) => p.to_str(),
            Sink::Stdout => None,
        }
    }

    /// Check Vault's and our options (a map of strings). Unknown options,
    /// `log_raw=true` and formats other than `json` are refused.
    pub fn parse(o: &Map<String, Value>) -> Result<Options, AuditError> {
        const KNOWN: &[&str] = &[
            "file_path",
            "path",
            "mode",
            "log_raw",
            "hmac_accessor",
            "format",
            "fsync",
            "checkpoint_entries",
            "checkpoint_interval",
        ];
        if let Some(k) = o.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(AuditError::Invalid(format!("unknown audit device option '{k}'")));
        }
        let get = |k: &str| o.get(k).and_then(Value::as_str).map(str::trim);
        let bool_opt = |k: &str, default: bool| -> Result<bool, AuditError> {
            match get(k) {
                None | Some("") => Ok(default),
                Some(v) => crate::logical::fields::parse_bool(v)
                    .ok_or_else(|| AuditError::Invalid(format!("invalid value for option '{k}': expected a boolean"))),
            }
        };
        let path = get("file_path")
            .or(get("path"))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| AuditError::Invalid("'file_path' must be set".into()))?;
        let sink = if path == "stdout" {
            Sink::Stdout
        } else if path.ends_with('/') || path.ends_with("/.") {
            // `x.log/` opens `x.log` but does not stat as it: the writer
            // would see the file moved on every look.
            return Err(AuditError::Invalid("'file_path' must name a file, not end with '/'".into()));
        } else if path.starts_with('/') && !path.contains('\0') {
            Sink::File(path.into())
        } else {
            return Err(AuditError::Invalid("'file_path' must be an absolute path or 'stdout'".into()));
        };
        let mode = match get("mode") {
            None | Some("") => 0o600,
            // At most rw-rw-r--: an audit log is never executable, never
            // writable by everyone (anyone could append forged lines).
            Some(m) => u32::from_str_radix(m, 8).ok().filter(|m| *m & !0o664 == 0).ok_or_else(|| {
                AuditError::Invalid(
                    "invalid value for option 'mode': expected octal up to 0664 (no execute bits, no world write), e.g. 0600"
                        .into(),
                )
            })?,
        };
        // Raw entries would put every secret and token in the file in the
        // clear, the one thing the log must never hold (docs/audit.md).
        if bool_opt("log_raw", false)? {
            return Err(AuditError::Invalid(
                "log_raw=true is not supported: entries always hash secrets (use sys/audit-hash to find a known value)"
                    .into(),
            ));
        }
        match get("format") {
            None | Some("") | Some("json") => {}
            Some(_) => return Err(AuditError::Invalid("only format=json is supported".into())),
        }
        let fsync = match get("fsync") {
            None | Some("") => Fsync::Interval,
            Some(f) => Fsync::parse(f).ok_or_else(|| {
                AuditError::Invalid("invalid value for option 'fsync': expected batch, interval or never".into())
            })?,
        };
        let checkpoint_entries = match get("checkpoint_entries") {
            None | Some("") => DEFAULT_CHECKPOINT_ENTRIES,
            Some(n) => n.parse::<u64>().ok().filter(|n| (1..=1_000_000).contains(n)).ok_or_else(|| {
                AuditError::Invalid("invalid value for option 'checkpoint_entries': expected 1 to 1000000".into())
            })?,
        };
        let checkpoint_interval = match get("checkpoint_interval") {
            None | Some("") => DEFAULT_CHECKPOINT_SECS,
            Some(d) => {
                crate::logical::fields::parse_duration(d).filter(|s| (1..=86_400).contains(s)).ok_or_else(|| {
                    AuditError::Invalid("invalid value for option 'checkpoint_interval': expected 1s to 24h".into())
                })?
            }
        };
        Ok(Options {
            sink,
            mode,
            hmac_accessor: bool_opt("hmac_accessor", true)?,
            fsync,
            checkpoint_entries,
            checkpoint_interval: Duration::from_secs(checkpoint_interval),
        })
    }

    /// The options as the listing shows them (all of them, defaults filled).
    pub fn to_map(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let path = match &self.sink {
            Sink::File(p) => p.display().to_string(),
            Sink::Stdout => "stdout".into(),
        };
        m.insert("file_path".into(), path.into());
        m.insert("mode".into(), format!("{:04o}", self.mode).into());
        m.insert("log_raw".into(), "false".into());
        m.insert("hmac_accessor".into(), self.hmac_accessor.to_string().into());
        m.insert("format".into(), "json".into());
        m.insert("fsync".into(), self.fsync.as_str().into());
        m.insert("checkpoint_entries".into(), self.checkpoint_entries.to_string().into());
        m.insert("checkpoint_interval".into(), format!("{}s", self.checkpoint_interval.as_secs()).into());
        m
    }
}

/// One enabled device, as stored (keys included: the record lives in the barrier).
pub struct Record {
    /// Mount-style path, ending in `/` (e.g. `file/`).
    pub path: String,
    /// Device type (`file`).
    pub kind: String,
    /// Free text.
    pub description: String,
    /// Checked options.
    pub options: Options,
    /// Random id: a device disabled and enabled again at the same path is a
    /// new device (new keys, new writer).
    pub uuid: String,
    /// HMAC-SHA-256 key for hashing values.
    pub hmac_key: Zeroizing<[u8; 32]>,
    /// Ed25519 seed signing checkpoints.
    pub signing_seed: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("options", &self.options)
            .field("uuid", &self.uuid)
            .finish_non_exhaustive()
    }
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

impl Record {
    /// The stored form (keys in base64; the caller puts it in the barrier).
    fn to_json(&self) -> Value {
        serde_json::json!({
            "path": self.path,
            "type": self.kind,
            "description": self.description,
            "options": self.options.to_map(),
            "uuid": self.uuid,
            "hmac_key": b64().encode(*self.hmac_key),
            "signing_key": b64().encode(*self.signing_seed),
        })
    }

    fn from_json(v: &mut Value) -> Result<Record, AuditError> {
        let bad = || AuditError::Internal("audit device table malformed".into());
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string).ok_or_else(bad);
        let key = |v: &mut Value, k: &str| -> Result<Zeroizing<[u8; 32]>, AuditError> {
            let Some(Value::String(text)) = v.get_mut(k) else { return Err(bad()) };
            let raw = Zeroizing::new(b64().decode(text.as_bytes()).map_err(|_| bad())?);
            text.zeroize();
            let mut out = Zeroizing::new([0u8; 32]);
            if raw.len() != 32 {
                return Err(bad());
            }
            out.copy_from_slice(&raw);
            Ok(out)
        };
        let options = match v.get("options") {
            Some(Value::Object(o)) => Options::parse(o)?,
            _ => return Err(bad()),
        };
        Ok(Record {
            path: s(v, "path")?,
            kind: s(v, "type")?,
            description: s(v, "description")?,
            options,
            uuid: s(v, "uuid")?,
            hmac_key: key(v, "hmac_key")?,
            signing_seed: key(v, "signing_key")?,
        })
    }
}

/// Parse the stored table (the barrier's plaintext).
pub fn decode(raw: &[u8]) -> Result<Vec<Record>, AuditError> {
    let mut v: Value =
        serde_json::from_slice(raw).map_err(|_| AuditError::Internal("audit device table malformed".into()))?;
    let Some(list) = v.as_array_mut() else {
        return Err(AuditError::Internal("audit device table malformed".into()));
    };
    list.iter_mut().map(Record::from_json).collect()
}

/// Serialize the table (to be sealed by the barrier; wiped after use).
pub fn encode(records: &[Record]) -> Zeroizing<Vec<u8>> {
    let mut list: Vec<Value> = records.iter().map(Record::to_json).collect();
    let out = Zeroizing::new(serde_json::to_vec(&list).unwrap_or_default());
    // The keys' base64 copies are wiped too, not just freed.
    for v in &mut list {
        for k in ["hmac_key", "signing_key"] {
            if let Some(Value::String(s)) = v.get_mut(k) {
                s.zeroize();
            }
        }
    }
    out
}

/// A device path in its stored form (`file` -> `file/`), or a 400.
pub fn normalize(path: &str) -> Result<String, AuditError> {
    let p = path.trim_matches('/');
    let ok = !p.is_empty()
        && p.len() <= 128
        && p.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
        && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if !ok {
        return Err(AuditError::Invalid(
            "invalid audit device path: letters, digits, '-', '_', '.' and '/' only, at most 128".into(),
        ));
    }
    Ok(format!("{p}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Result<Options, AuditError> {
        let m: Map<String, Value> = pairs.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
        Options::parse(&m)
    }

    #[test]
    fn options_default_and_refuse_what_would_leak_or_is_unknown() {
        let o = opts(&[("file_path", "/tmp/a.log")]).unwrap();
        assert_eq!((o.mode, o.hmac_accessor, o.fsync), (0o600, true, Fsync::Interval));
        assert_eq!(opts(&[("file_path", "stdout")]).unwrap().sink, Sink::Stdout);
        assert!(opts(&[("file_path", "/tmp/a"), ("log_raw", "false")]).is_ok());
        for bad in [
            vec![],
            vec![("file_path", "relative.log")],
            vec![("file_path", "/var/log/x.log/")],
            vec![("file_path", "/var/log/x.log/.")],
            vec![("file_path", "/a"), ("log_raw", "true")],
            vec![("file_path", "/a"), ("format", "jsonx")],
            vec![("file_path", "/a"), ("mode", "999")],
            vec![("file_path", "/a"), ("fsync", "sometimes")],
            vec![("file_path", "/a"), ("checkpoint_entries", "0")],
            vec![("file_path", "/a"), ("checkpoint_entries", "18446744073709551616")],
            vec![("file_path", "/a"), ("checkpoint_interval", "0s")],
            vec![("file_path", "/a"), ("what", "x")],
        ] {
            assert!(matches!(opts(&bad), Err(AuditError::Invalid(_))), "{bad:?}");
        }
        // The listing's form parses back to the same options.
        let o = opts(&[("file_path", "/x"), ("fsync", "batch"), ("checkpoint_interval", "2m")]).unwrap();
        assert_eq!(Options::parse(&o.to_map()).unwrap(), o);
    }

    #[test]
    fn the_table_round_trips_and_its_debug_hides_keys() {
        let r = Record {
            path: "file/".into(),
            kind: "file".into(),
            description: "d".into(),
            options: opts(&[("file_path", "/x")]).unwrap(),
            uuid: "u".into(),
            hmac_key: Zeroizing::new([0xab; 32]),
            signing_seed: Zeroizing::new([0xcd; 32]),
        };
        let back = decode(&encode(std::slice::from_ref(&r))).unwrap();
        assert_eq!(*back[0].hmac_key, [0xab; 32]);
        assert_eq!(*back[0].signing_seed, [0xcd; 32]);
        let shown = format!("{r:?}");
        assert!(!shown.contains("171") && !shown.contains("ab, ab") && !shown.contains("q6ur"), "{shown}");
        assert!(decode(b"{}").is_err() && decode(b"[{}]").is_err());
    }

    #[test]
    fn paths_are_normalized_or_refused() {
        assert_eq!(normalize("file").unwrap(), "file/");
        assert_eq!(normalize("/a/b/").unwrap(), "a/b/");
        for bad in ["", "/", "a/../b", "a b", "a//b"] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }
}
