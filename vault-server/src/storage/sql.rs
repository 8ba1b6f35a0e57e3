//! SQL shared by both backends. SQLite (>= 3.24) and PostgreSQL accept the
//! same statements here (`$n` placeholders, `ON CONFLICT ... DO UPDATE`).
//! The group-commit statements that differ (PostgreSQL takes arrays, SQLite
//! multi-row `VALUES`) live with each backend.

pub(super) const GET: &str = "SELECT value, rev FROM entries WHERE path = $1";
pub(super) const SCAN_ALL: &str = "SELECT path FROM entries WHERE path >= $1 ORDER BY path";
pub(super) const SCAN_RANGE: &str = "SELECT path FROM entries WHERE path >= $1 AND path < $2 ORDER BY path";
pub(super) const SEAL_CONFIG_GET: &str = "SELECT config FROM seal_config WHERE id = 1";
pub(super) const SEAL_CONFIG_PUT: &str = "INSERT INTO seal_config (id, config) VALUES (1, $1) \
     ON CONFLICT (id) DO UPDATE SET config = excluded.config";

/// Upsert with an explicit revision (the group commit computed it).
pub(super) const UPSERT_TAIL: &str = " ON CONFLICT (path) DO UPDATE SET value = excluded.value, rev = excluded.rev";
/// Rows and bytes per bulk statement: bounded so one statement stays far
/// below both databases' limits (SQLite: 32766 parameters; PostgreSQL: 1 GiB messages).
pub(super) const CHUNK_ROWS: usize = 500;
pub(super) const CHUNK_BYTES: usize = 32 * 1024 * 1024;

/// Split `items` into runs of at most [`CHUNK_ROWS`] items and about [`CHUNK_BYTES`] bytes.
pub(super) fn chunks<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && (i - start >= CHUNK_ROWS || bytes + n > CHUNK_BYTES) {
            out.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += n;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// `$1, $2, ...` placeholders for `n` items, grouped by `per` per row.
pub(super) fn placeholders(n: usize, per: usize) -> String {
    placeholders_from(1, n, per)
}

/// Numbered placeholders starting at `$first` (several statements of one
/// query string share one argument list).
pub(super) fn placeholders_from(first: usize, n: usize, per: usize) -> String {
    (0..n)
        .map(|row| {
            let cols: Vec<String> = (0..per).map(|c| format!("${}", first + row * per + c)).collect();
            if per == 1 { cols.join(",") } else { format!("({})", cols.join(",")) }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_and_placeholders() {
        let v: Vec<usize> = (0..1200).collect();
        let c = chunks(&v, |_| 1);
        assert_eq!(c.iter().map(|c| c.len()).collect::<Vec<_>>(), vec![500, 500, 200]);
        let big = [CHUNK_BYTES, 1, CHUNK_BYTES];
        assert_eq!(chunks(&big, |n| *n).len(), 3);
        assert_eq!(placeholders(2, 3), "($1,$2,$3),($4,$5,$6)");
        assert_eq!(placeholders(3, 1), "$1,$2,$3");
        assert_eq!(placeholders_from(4, 2, 1), "$4,$5");
        assert!(chunks::<u8>(&[], |_| 1).is_empty());
    }
}
