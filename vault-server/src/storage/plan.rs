//! Group commit planning: decide, in memory, what a group of write batches
//! does to the database, so the transaction needs a fixed number of
//! statements whatever the group's size (read the revisions, write every
//! put, delete every delete) instead of several round trips per batch.
//!
//! The transaction first locks every path the group touches (PostgreSQL:
//! advisory locks in a global order; SQLite: `BEGIN IMMEDIATE`, one writer),
//! then reads their current revisions; from there nobody else can change
//! them, so evaluating each batch's expectations against those revisions —
//! updated by the batches before it in the group — gives exactly what
//! executing the batches one by one would. A batch whose expectation fails
//! changes nothing and gets `Conflict`; the others apply.

use std::collections::HashMap;

use super::{Expect, Op, SealConfig, StorageError, WriteBatch};

/// The net effect of a group on the `entries` table.
#[derive(Debug, Default)]
pub(super) struct Plan<'a> {
    /// Final value and revision of every path written (last write wins).
    pub(super) upserts: Vec<(&'a str, &'a [u8], i64)>,
    /// Paths that end up absent.
    pub(super) deletes: Vec<&'a str>,
    /// The last seal configuration set, if any.
    pub(super) seal_config: Option<SealConfig>,
    /// Paths of the batches that applied (sorted, unique), to announce.
    pub(super) changed: Vec<&'a str>,
    /// One outcome per batch, in order.
    pub(super) results: Vec<Result<(), StorageError>>,
}

/// Every path whose current revision the plan needs (sorted, unique).
pub(super) fn paths_to_read<'a>(batches: &[&'a WriteBatch]) -> Vec<&'a str> {
    let mut paths: Vec<&str> = batches
        .iter()
        .flat_map(|b| b.ops())
        .filter_map(|op| match op {
            Op::Put { path, .. } | Op::Delete { path, .. } => Some(path.as_str()),
            Op::SetSealConfig(_) => None,
        })
        .collect();
    paths.sort_unstable();
    paths.dedup();
    paths
}

/// Plan a group given the current revision of each path (absent: no entry).
pub(super) fn plan<'a>(batches: &[&'a WriteBatch], current: &HashMap<String, i64>) -> Plan<'a> {
    // Revision per path as the group goes (None: absent), and the value of the last put.
    let mut state: HashMap<&'a str, Option<i64>> = HashMap::new();
    let mut last_value: HashMap<&'a str, Option<&'a [u8]>> = HashMap::new();
    let mut out = Plan::default();
    for batch in batches {
        let mut overlay: HashMap<&'a str, Option<i64>> = HashMap::new();
        let mut values: Vec<(&'a str, Option<&'a [u8]>)> = Vec::new();
        let mut seal = None;
        let mut outcome = Ok(());
        for op in batch.ops() {
            let (path, expect) = match op {
                Op::Put { path, expect, .. } | Op::Delete { path, expect } => (path.as_str(), *expect),
                Op::SetSealConfig(c) => {
                    seal = Some(*c);
                    continue;
                }
            };
            let now = match overlay.get(path).or_else(|| state.get(path)) {
                Some(r) => *r,
                None => current.get(path).copied(),
            };
            let holds = match expect {
                None => true,
                Some(Expect::Absent) => now.is_none(),
                Some(Expect::Rev(r)) => now == Some(r),
            };
            if !holds {
                outcome = Err(StorageError::Conflict(path.to_string()));
                break;
            }
            match op {
                Op::Put { value, .. } => {
                    overlay.insert(path, Some(now.map_or(1, |r| r + 1)));
                    values.push((path, Some(value.as_bytes())));
                }
                Op::Delete { .. } => {
                    overlay.insert(path, None);
                    values.push((path, None));
                }
                Op::SetSealConfig(_) => {}
            }
        }
        if outcome.is_ok() {
            state.extend(overlay);
            last_value.extend(values);
            if seal.is_some() {
                out.seal_config = seal;
            }
            out.changed.extend(batch.paths());
        }
        out.results.push(outcome);
    }
    let mut touched: Vec<&'a str> = last_value.keys().copied().collect();
    touched.sort_unstable();
    for path in touched {
        match (state.get(path).copied().flatten(), last_value.get(path).copied().flatten()) {
            (Some(rev), Some(value)) => out.upserts.push((path, value, rev)),
            _ => out.deletes.push(path),
        }
    }
    out.changed.sort_unstable();
    out.changed.dedup();
    out
}

/// A group whose outcome does not depend on what the transaction would
/// read, so the database can check it and write it in one go: every path
/// appears once in the whole group. Then each expectation is about the state
/// before the group (no earlier batch of the group touched its path), every
/// write's new revision is the stored one plus one (or 1), and if all
/// expectations hold every batch applies, which is what [`plan`] would
/// decide. If one fails, the caller rolls back and plans exactly.
#[derive(Debug, Default)]
pub(super) struct OneShot<'a> {
    /// Every expectation of the group, to check before writing.
    pub(super) checks: Vec<(&'a str, Expect)>,
    /// Paths written and their values.
    pub(super) upserts: Vec<(&'a str, &'a [u8])>,
    /// Paths deleted.
    pub(super) deletes: Vec<&'a str>,
    /// The last seal configuration set, if any.
    pub(super) seal_config: Option<SealConfig>,
}

/// The group as a [`OneShot`], if every path appears once and the group
/// stays within one bulk statement's bounds ([`super::sql::CHUNK_ROWS`]
/// operations, [`super::sql::CHUNK_BYTES`] bytes).
pub(super) fn one_shot<'a>(batches: &[&'a WriteBatch]) -> Option<OneShot<'a>> {
    let mut out = OneShot::default();
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0;
    for op in batches.iter().flat_map(|b| b.ops()) {
        let (path, expect) = match op {
            Op::Put { path, value, expect } => {
                bytes += path.len() + value.as_bytes().len();
                out.upserts.push((path.as_str(), value.as_bytes()));
                (path.as_str(), *expect)
            }
            Op::Delete { path, expect } => {
                bytes += path.len();
                out.deletes.push(path.as_str());
                (path.as_str(), *expect)
            }
            Op::SetSealConfig(c) => {
                out.seal_config = Some(*c);
                continue;
            }
        };
        if !seen.insert(path) || seen.len() > super::sql::CHUNK_ROWS || bytes > super::sql::CHUNK_BYTES {
            return None;
        }
        if let Some(e) = expect {
            out.checks.push((path, e));
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::AeadKey;

    fn ct(b: &[u8]) -> crate::crypto::Ciphertext {
        AeadKey::new(&[7; 32]).seal(&[1], b"t", b)
    }

    #[test]
    fn revisions_follow_the_group_in_order() {
        let mut a = WriteBatch::new();
        a.put("k", ct(b"1"));
        let mut b = WriteBatch::new();
        b.put_expect("k", ct(b"2"), Expect::Rev(4));
        let mut c = WriteBatch::new();
        c.put_expect("k", ct(b"3"), Expect::Rev(4)); // stale after b
        let mut d = WriteBatch::new();
        d.put_expect("n", ct(b"n"), Expect::Absent).put("o", ct(b"o")).delete("gone");
        let current: HashMap<String, i64> = [("k".to_string(), 3), ("gone".to_string(), 9)].into();
        let p = plan(&[&a, &b, &c, &d], &current);
        assert!(p.results[0].is_ok() && p.results[1].is_ok() && p.results[3].is_ok());
        assert!(matches!(&p.results[2], Err(StorageError::Conflict(x)) if x == "k"));
        let revs: Vec<(&str, i64)> = p.upserts.iter().map(|(p, _, r)| (*p, *r)).collect();
        assert_eq!(revs, vec![("k", 5), ("n", 1), ("o", 1)]);
        assert_eq!(p.deletes, vec!["gone"]);
        assert_eq!(p.changed, vec!["gone", "k", "n", "o"]);
    }

    #[test]
    fn a_failed_batch_changes_nothing_and_deletes_then_puts_recreate() {
        let mut a = WriteBatch::new();
        a.put("x", ct(b"x")).put_expect("y", ct(b"y"), Expect::Rev(1));
        let mut b = WriteBatch::new();
        b.delete_expect("z", Expect::Rev(2));
        let mut c = WriteBatch::new();
        c.put("z", ct(b"again"));
        let current: HashMap<String, i64> = [("z".to_string(), 2)].into();
        let p = plan(&[&a, &b, &c], &current);
        assert!(p.results[0].is_err(), "y is absent");
        assert!(p.results[1].is_ok() && p.results[2].is_ok());
        let revs: Vec<(&str, i64)> = p.upserts.iter().map(|(p, _, r)| (*p, *r)).collect();
        assert_eq!(revs, vec![("z", 1)], "x was not written; z deleted then created anew");
        assert!(p.deletes.is_empty());
    }

    #[test]
    fn one_shot_only_when_every_path_appears_once() {
        let mut a = WriteBatch::new();
        a.put_expect("m", ct(b"m"), Expect::Rev(2)).put("v", ct(b"v"));
        let mut b = WriteBatch::new();
        b.delete_expect("d", Expect::Absent).put("w", ct(b"w"));
        let o = one_shot(&[&a, &b]).unwrap();
        assert_eq!(o.checks, vec![("m", Expect::Rev(2)), ("d", Expect::Absent)]);
        let ups: Vec<&str> = o.upserts.iter().map(|(p, _)| *p).collect();
        assert_eq!(ups, vec!["m", "v", "w"]);
        assert_eq!(o.deletes, vec!["d"]);
        // The same path twice, in one batch or across batches: the order matters, plan exactly.
        let mut c = WriteBatch::new();
        c.put_expect("m", ct(b"again"), Expect::Rev(2));
        assert!(one_shot(&[&a, &c]).is_none());
        let mut d = WriteBatch::new();
        d.delete("x").put("x", ct(b"x"));
        assert!(one_shot(&[&d]).is_none());
        // More operations than one bulk statement carries.
        let mut big = WriteBatch::new();
        for i in 0..=crate::storage::sql::CHUNK_ROWS {
            big.delete(format!("k{i}"));
        }
        assert!(one_shot(&[&big]).is_none());
    }
}
