//! The snapshot file format (docs/formats.md, "Storage snapshots"):
//!
//! ```text
//! "VLTSNAP1"                      8 bytes, magic and format version
//! u32 BE length, header JSON      format, version, created time, storage type, seal configuration
//! per row: b'R', u32 BE path length, path, u32 BE value length, value, i64 BE revision
//! b'M', u32 BE length, manifest JSON   entries, rows per storage area, SHA-256 of everything before b'M'
//! (end of file)
//! ```
//!
//! Values are the stored ciphertext, byte for byte: a snapshot holds no
//! plaintext. The manifest detects corruption and truncation (the digest
//! and the counts); it is not a signature: an edited entry is caught when
//! it fails to open under the keys (the barrier binds each value to its
//! path), which is what the restore drill checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::storage::{MAX_PATH_BYTES, Row, SealConfig};

/// Magic and format version, the file's first bytes.
pub const MAGIC: &[u8; 8] = b"VLTSNAP1";
/// The header's `format` field.
pub const FORMAT: &str = "vault-storage-snapshot";
/// The header's `version` field.
pub const VERSION: u32 = 1;
const TAG_ROW: u8 = b'R';
const TAG_MANIFEST: u8 = b'M';
/// Largest header or manifest accepted (both are small JSON objects).
const MAX_JSON: usize = 16 * 1024 * 1024;
/// Largest single stored value accepted (far above any record this server writes).
pub const MAX_VALUE: usize = 256 * 1024 * 1024;

/// What is wrong with a snapshot file. Messages name places and counts, never values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Not a snapshot, or a version this server does not read.
    #[error("not a storage snapshot: {0}")]
    NotASnapshot(String),
    /// The file ends before its manifest, or mid-record.
    #[error("the snapshot is truncated ({0})")]
    Truncated(String),
    /// A record or the manifest is malformed.
    #[error("the snapshot is malformed: {0}")]
    Malformed(String),
    /// The manifest does not match the rows (digest or counts).
    #[error("the snapshot does not match its manifest: {0}")]
    Mismatch(String),
}

/// The header: what the snapshot is of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub created_time: String,
    /// The same, in seconds since the epoch.
    pub created_unix: i64,
    /// The storage it was read from (`sqlite`, `postgresql`).
    pub storage_type: String,
    /// The server version that took it.
    pub server_version: String,
    /// The seal configuration (share count and threshold) of the snapshot's vault.
    pub seal_config: Option<SealConfig>,
}

/// The trailer: counts and digest of what precedes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Number of rows.
    pub entries: u64,
    /// Rows per storage area (`core/`, `logical/<uuid>/`, `auth/<uuid>/`, `sys/`...).
    pub areas: BTreeMap<String, u64>,
    /// SHA-256 (hex) of every byte before the manifest's tag.
    pub sha256: String,
}

/// SHA-256 (hex) of a whole file, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The storage area a path belongs to: a mount's data prefix
/// (`logical/<uuid>/`, `auth/<uuid>/`) or the first segment (`core/`).
pub fn area(path: &str) -> String {
    let mut parts = path.splitn(3, '/');
    let first = parts.next().unwrap_or_default();
    match (first, parts.next(), parts.next()) {
        ("logical" | "auth", Some(id), Some(_)) => format!("{first}/{id}/"),
        (_, Some(_), _) => format!("{first}/"),
        _ => first.to_string(),
    }
}

/// Writes a snapshot piece by piece (the rows come from a stream), hashing
/// and counting as it goes.
#[derive(Default)]
pub struct Encoder {
    hash: Sha256,
    entries: u64,
    areas: BTreeMap<String, u64>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoder({} rows)", self.entries)
    }
}

impl Encoder {
    /// The magic and the header.
    pub fn header(&mut self, h: &Header) -> Vec<u8> {
        let json = serde_json::to_vec(h).unwrap_or_default();
        let mut out = Vec::with_capacity(12 + json.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        self.hash.update(&out);
        out
    }

    /// One row's record.
    pub fn row(&mut self, r: &Row) -> Vec<u8> {
        let mut out = Vec::with_capacity(17 + r.path.len() + r.value.len());
        out.push(TAG_ROW);
        out.extend_from_slice(&(r.path.len() as u32).to_be_bytes());
        out.extend_from_slice(r.path.as_bytes());
        out.extend_from_slice(&(r.value.len() as u32).to_be_bytes());
        out.extend_from_slice(&r.value);
        out.extend_from_slice(&r.rev.to_be_bytes());
        self.hash.update(&out);
        self.entries += 1;
        *self.areas.entry(area(&r.path)).or_default() += 1;
        out
    }

    /// The manifest, last in the file; also returned for the caller's report.
    pub fn finish(self) -> (Vec<u8>, Manifest) {
        let m = Manifest { entries: self.entries, areas: self.areas, sha256: hex::encode(self.hash.finalize()) };
        let json = serde_json::to_vec(&m).unwrap_or_default();
        let mut out = Vec::with_capacity(5 + json.len());
        out.push(TAG_MANIFEST);
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        (out, m)
    }
}

/// A snapshot read and checked against its manifest.
#[derive(Debug)]
pub struct Parsed {
    /// The header.
    pub header: Header,
    /// The rows, in path order.
    pub rows: Vec<Row>,
    /// The manifest (matched by the rows).
    pub manifest: Manifest,
}

/// A cursor over the file's bytes that reports where it ran out.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FormatError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len()).ok_or_else(|| {
            FormatError::Truncated(format!("{what} at byte {} needs {n} bytes, {} left", self.at, self.left()))
        })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<usize, FormatError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }
}

/// Read `bytes` as a snapshot and check it against its manifest: the
/// digest, the entry count and the count of every area. Any mismatch,
/// truncation or trailing byte is an error; nothing is trusted otherwise.
pub fn parse(bytes: &[u8]) -> Result<Parsed, FormatError> {
    let mut c = Cursor { bytes, at: 0 };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(FormatError::NotASnapshot("the file does not start with the snapshot magic".into()));
    }
    c.at = MAGIC.len();
    let n = c.u32("header length")?;
    if n > MAX_JSON {
        return Err(FormatError::Malformed(format!("header length {n} is too large")));
    }
    let header: Header = serde_json::from_slice(c.take(n, "header")?)
        .map_err(|e| FormatError::Malformed(format!("header: {}", e.classify_name())))?;
    if header.format != FORMAT || header.version != VERSION {
        return Err(FormatError::NotASnapshot(format!(
            "format {:?} version {} (this server reads {FORMAT} version {VERSION})",
            header.format, header.version
        )));
    }
    let mut hash = Sha256::new();
    let mut rows = Vec::new();
    let mut areas: BTreeMap<String, u64> = BTreeMap::new();
    let manifest_at = loop {
        let start = c.at;
        match c.take(1, "record tag")?[0] {
            TAG_ROW => {
                let n = c.u32("path length")?;
                if n == 0 || n > MAX_PATH_BYTES {
                    return Err(FormatError::Malformed(format!("row {} has a path of {n} bytes", rows.len())));
                }
                let path = std::str::from_utf8(c.take(n, "path")?)
                    .map_err(|_| FormatError::Malformed(format!("row {} has a path that is not UTF-8", rows.len())))?
                    .to_string();
                let n = c.u32("value length")?;
                if n > MAX_VALUE {
                    return Err(FormatError::Malformed(format!("the value of {path} is {n} bytes")));
                }
                let value = c.take(n, "value")?.to_vec();
                let rev = c.take(8, "revision")?;
                let rev = i64::from_be_bytes([rev[0], rev[1], rev[2], rev[3], rev[4], rev[5], rev[6], rev[7]]);
                // What storage would refuse, refused here with a clear
                // message: control characters, disorder or a duplicate (a
                // snapshot is written in path order), a revision below 1.
                if path.chars().any(char::is_control) {
                    return Err(FormatError::Malformed(format!(
                        "row {} has a control character in its path",
                        rows.len()
                    )));
                }
                if rows.last().is_some_and(|r: &Row| r.path >= path) {
                    return Err(FormatError::Malformed(format!("rows out of order or repeated at {path}")));
                }
                if rev < 1 {
                    return Err(FormatError::Malformed(format!("the revision of {path} is {rev}")));
                }
                *areas.entry(area(&path)).or_default() += 1;
                rows.push(Row { path, value, rev });
            }
            TAG_MANIFEST => break start,
            t => return Err(FormatError::Malformed(format!("unknown record tag 0x{t:02x} at byte {start}"))),
        }
    };
    hash.update(&bytes[..manifest_at]);
    let n = c.u32("manifest length")?;
    if n > MAX_JSON {
        return Err(FormatError::Malformed(format!("manifest length {n} is too large")));
    }
    let manifest: Manifest = serde_json::from_slice(c.take(n, "manifest")?)
        .map_err(|e| FormatError::Malformed(format!("manifest: {}", e.classify_name())))?;
    if c.left() != 0 {
        return Err(FormatError::Malformed(format!("{} bytes after the manifest", c.left())));
    }
    let digest = hex::encode(hash.finalize());
    if !bool::from(subtle::ConstantTimeEq::ct_eq(digest.as_bytes(), manifest.sha256.as_bytes())) {
        return Err(FormatError::Mismatch(format!(
            "SHA-256 of the rows is {digest}, the manifest says {}",
            manifest.sha256.chars().take(64).collect::<String>()
        )));
    }
    if manifest.entries != rows.len() as u64 {
        return Err(FormatError::Mismatch(format!("{} rows, the manifest says {}", rows.len(), manifest.entries)));
    }
    if manifest.areas != areas {
        let differ: Vec<&String> = areas
            .keys()
            .chain(manifest.areas.keys())
            .filter(|k| areas.get(*k) != manifest.areas.get(*k))
            .take(5)
            .collect();
        return Err(FormatError::Mismatch(format!("rows per area differ from the manifest at {differ:?}")));
    }
    Ok(Parsed { header, rows, manifest })
}

/// `serde_json` error categories, without the text (which may quote input).
trait Classify {
    fn classify_name(&self) -> String;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> String {
        format!("invalid JSON ({:?} at line {} column {})", self.classify(), self.line(), self.column())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            created_time: "2026-12-02T00:00:00Z".into(),
            created_unix: 1_790_000_000,
            storage_type: "sqlite".into(),
            server_version: "test".into(),
            seal_config: Some(SealConfig { secret_shares: 3, secret_threshold: 2 }),
        }
    }

    fn file(rows: &[Row]) -> Vec<u8> {
        let mut e = Encoder::default();
        let mut out = e.header(&header());
        for r in rows {
            out.extend(e.row(r));
        }
        out.extend(e.finish().0);
        out
    }

    fn rows() -> Vec<Row> {
        vec![
            Row { path: "core/keyring".into(), value: vec![1, 2, 3], rev: 1 },
            Row { path: "logical/abc/data/x".into(), value: vec![9; 40], rev: 3 },
            Row { path: "logical/abc/meta/x".into(), value: vec![], rev: 1 },
        ]
    }

    #[test]
    fn round_trip_with_counts() {
        let p = parse(&file(&rows())).unwrap();
        assert_eq!(p.header, header());
        assert_eq!(p.rows, rows());
        assert_eq!(p.manifest.entries, 3);
        assert_eq!(p.manifest.areas.get("logical/abc/"), Some(&2));
        assert_eq!(p.manifest.areas.get("core/"), Some(&1));
        let empty = parse(&file(&[])).unwrap();
        assert_eq!(empty.manifest.entries, 0);
    }

    #[test]
    fn areas() {
        assert_eq!(area("logical/u1/data/a/b"), "logical/u1/");
        assert_eq!(area("auth/u2/role/x"), "auth/u2/");
        assert_eq!(area("core/mounts"), "core/");
        assert_eq!(area("sys/token/id/x"), "sys/");
        assert_eq!(area("single"), "single");
        assert_eq!(area("logical/only"), "logical/");
    }

    /// Every single flipped bit, and every truncation, is refused.
    #[test]
    fn any_flip_or_cut_is_refused() {
        let good = file(&rows());
        for i in 0..good.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= bit;
                assert!(parse(&bad).is_err(), "flip of bit {bit:#x} at byte {i} accepted");
            }
        }
        for n in 0..good.len() {
            assert!(parse(&good[..n]).is_err(), "cut at {n} accepted");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(parse(&longer), Err(FormatError::Malformed(_))));
    }

    /// A manifest edited to hide a dropped row (digest recomputed by hand is
    /// the only way through, and then the counts must match too).
    #[test]
    fn edited_manifest_is_refused() {
        let mut e = Encoder::default();
        let mut out = e.header(&header());
        for r in rows() {
            out.extend(e.row(&r));
        }
        let (_, mut m) = e.finish();
        m.entries = 2;
        let json = serde_json::to_vec(&m).unwrap();
        out.push(TAG_MANIFEST);
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        let err = parse(&out).unwrap_err().to_string();
        assert!(err.contains("3 rows, the manifest says 2"), "{err}");
    }

    /// Rows storage would refuse are refused by the parser, with the digest
    /// and counts matching (a crafted file, not a damaged one).
    #[test]
    fn crafted_rows_are_refused() {
        let bad = |rows: &[Row], says: &str| {
            let e = parse(&file(rows)).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        };
        let r = |p: &str, rev: i64| Row { path: p.into(), value: vec![1], rev };
        bad(&[r("b", 1), r("a", 1)], "out of order");
        bad(&[r("a", 1), r("a", 1)], "repeated");
        bad(&[r("a", 0)], "revision");
        bad(&[r("a\nb", 1)], "control character");
    }

    #[test]
    fn huge_lengths_are_refused_not_allocated() {
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(parse(&bad), Err(FormatError::Malformed(_))));
        // A row claiming a 4 GiB value.
        let mut good = Encoder::default().header(&header());
        good.push(TAG_ROW);
        good.extend_from_slice(&1u32.to_be_bytes());
        good.push(b'x');
        good.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(parse(&good), Err(FormatError::Malformed(_))));
    }
}
