//! The verifier: feed it every line of the log files in order, then ask for
//! the findings. Each finding names the file and line where the chain stops
//! matching; after one, checking resumes from that line, so one edit gives
//! one finding and later damage is still found.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;

use crate::{GENESIS, Reason, checkpoint_valid, parse_line};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Severity {
    /// Worth knowing, not evidence of tampering (lines not yet covered by a
    /// checkpoint at the end of a chain, without `--closed`).
    Note,
    /// The log was changed: a line modified, removed, inserted or moved, a
    /// forged checkpoint, a cut.
    Tampered,
}

/// One thing the verifier found, at `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// The file, as the caller named it.
    pub file: String,
    /// Line number, from 1 (0: the end of the input).
    pub line: usize,
    /// What is wrong, in words.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.severity {
            Severity::Note => "note",
            Severity::Tampered => "TAMPERED",
        };
        write!(f, "{}:{}: {what}: {}", self.file, self.line, self.message)
    }
}

/// A place in the input.
#[derive(Debug, Clone)]
struct Place {
    file: String,
    line: usize,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// What is known of one chain so far.
#[derive(Debug)]
struct Chain {
    seq: u64,
    hash: [u8; 32],
    at: Place,
    /// The last valid checkpoint (seq, place, reason).
    checkpoint: Option<(u64, Place, Reason)>,
}

/// A chain head a server reports (its last line written): the files must
/// reach it with that very line.
#[derive(Debug)]
struct Expected {
    node: String,
    seq: u64,
    hash: [u8; 32],
    /// The line at `seq` of that chain, once read: (its place, whether it matches).
    found: Option<(Place, bool)>,
}

/// Checks a log, line by line, against a device's public key.
#[derive(Debug)]
pub struct Verifier {
    key: VerifyingKey,
    expected: Option<Expected>,
    /// The last file given (where an end-of-input finding is reported).
    last_file: String,
    chains: HashMap<String, Chain>,
    /// Chain ids in the order they first appeared (stable reports).
    order: Vec<String>,
    findings: Vec<Finding>,
    entries: u64,
    checkpoints: u64,
}

impl Verifier {
    /// A verifier for the device whose public key is `key`.
    pub fn new(key: VerifyingKey) -> Self {
        Self {
            key,
            expected: None,
            last_file: String::new(),
            chains: HashMap::new(),
            order: Vec::new(),
            findings: Vec::new(),
            entries: 0,
            checkpoints: 0,
        }
    }

    /// The head of the chain the server writes now (`GET sys/audit`, read
    /// before the files): the files must hold that line, so a cut of a live
    /// file's unsigned tail, or a live file left out, emptied or replaced,
    /// is found. Lines up to it count as vouched for by the server.
    pub fn expect_head(&mut self, node: &str, seq: u64, hash: [u8; 32]) {
        self.expected = Some(Expected { node: node.to_string(), seq, hash, found: None });
    }

    fn find(&mut self, severity: Severity, at: &Place, message: String) {
        self.findings.push(Finding { severity, file: at.file.clone(), line: at.line, message });
    }

    /// Check one line (without its newline). `complete` is false for a last
    /// line that had no newline: a write cut short, or a file cut mid-line.
    pub fn line(&mut self, file: &str, line: usize, bytes: &[u8], complete: bool) {
        let at = Place { file: file.to_string(), line };
        if self.last_file != file {
            self.last_file = file.to_string();
        }
        if !complete {
            self.find(Severity::Tampered, &at, "the file ends in the middle of a line (cut or partly written)".into());
            return;
        }
        let p = match parse_line(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.find(Severity::Tampered, &at, format!("not an audit entry of this format: {e}"));
                return;
            }
        };
        self.entries += 1;
        if let Some(e) = &mut self.expected
            && e.node == p.link.node
            && e.seq == p.link.seq
            && e.found.is_none()
        {
            e.found = Some((at.clone(), e.hash == p.hash));
        }
        let node = p.link.node.clone();
        if let Some(c) = self.chains.get(&node) {
            let (expect_seq, expect_prev, prev_at) = (c.seq.saturating_add(1), c.hash, c.at.clone());
            if p.link.seq <= c.seq {
                self.find(
                    Severity::Tampered,
                    &at,
                    format!(
                        "chain {node}: entry {} comes after entry {} ({prev_at}): lines were reordered, duplicated or inserted",
                        p.link.seq, c.seq
                    ),
                );
            } else if p.link.seq > expect_seq {
                self.find(
                    Severity::Tampered,
                    &at,
                    format!(
                        "chain {node}: {} entries missing between {prev_at} and this line (expected entry {expect_seq}, found {}): lines were deleted",
                        p.link.seq - expect_seq,
                        p.link.seq
                    ),
                );
            } else if p.link.prev != expect_prev {
                self.find(
                    Severity::Tampered,
                    &at,
                    format!(
                        "chain {node}: entry {} does not follow {prev_at}: that line was modified, or this one was inserted or changed",
                        p.link.seq
                    ),
                );
            }
        } else {
            // The first line of a chain in the files given must be a signed
            // `open` (seq 0, the chain's start) or `continue` checkpoint (the
            // writer's first line in a file where the chain goes on): anything
            // else means the lines before it were cut, or the chain was made
            // up (nobody without the key can sign its first line).
            self.order.push(node.clone());
            // (A checkpoint of the right reason whose signature fails is
            // reported as forged below.)
            let reason = p.checkpoint.as_ref().map(|c| c.1);
            let problem = if p.link.seq == 0 {
                if p.link.prev != GENESIS {
                    Some(format!("chain {node}: a first entry must have a zero prev hash"))
                } else if reason != Some(Reason::Open) {
                    Some(format!("chain {node}: a chain must start with a signed 'open' checkpoint"))
                } else {
                    None
                }
            } else if reason != Some(Reason::Continue) {
                Some(format!(
                    "chain {node} starts at entry {} without a signed 'open' or 'continue' checkpoint: the lines before it were cut (its start, or the end of an earlier file given, is missing), or the chain was made up",
                    p.link.seq
                ))
            } else {
                None
            };
            if let Some(message) = problem {
                self.find(Severity::Tampered, &at, message);
            }
        }
        let mut checkpoint = self.chains.get(&node).and_then(|c| c.checkpoint.clone());
        if let Some((_, reason, _)) = &p.checkpoint {
            if checkpoint_valid(&self.key, &p) {
                self.checkpoints += 1;
                checkpoint = Some((p.link.seq, at.clone(), *reason));
            } else {
                self.find(
                    Severity::Tampered,
                    &at,
                    format!("chain {node}: forged or altered checkpoint (the signature does not verify under the device key)"),
                );
            }
        }
        self.chains.insert(node, Chain { seq: p.link.seq, hash: p.hash, at, checkpoint });
    }

    /// Feed a whole file's content (lines split on `\n`).
    pub fn file(&mut self, file: &str, content: &[u8]) {
        if content.is_empty() {
            return;
        }
        let complete_end = content.ends_with(b"\n");
        let body = if complete_end { &content[..content.len() - 1] } else { content };
        let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
        let n = lines.len();
        for (i, l) in lines.into_iter().enumerate() {
            self.line(file, i + 1, l, complete_end || i + 1 < n);
        }
    }

    /// Entries read (lines that parsed).
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Valid checkpoints read.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints
    }

    /// Chains seen.
    pub fn chains(&self) -> usize {
        self.chains.len()
    }

    /// The findings, with a last look at each chain's end: lines after its
    /// last checkpoint are chained but unsigned, so a cut there cannot be
    /// proven. With `require_closed` (files no server writes any more), a
    /// chain must end with its `close` or `rotate` checkpoint, and anything
    /// else is a cut.
    pub fn finish(mut self, require_closed: bool) -> Vec<Finding> {
        // The server's head: its line must be in the files, as written.
        let mut vouched = None;
        if let Some(e) = self.expected.take() {
            let end = Place { file: self.last_file.clone(), line: 0 };
            let problem = match (&e.found, self.chains.get(&e.node)) {
                (Some((_, true)), _) => {
                    vouched = Some((e.node.clone(), e.seq));
                    None
                }
                (Some((at, false)), _) => Some((
                    at.clone(),
                    format!("chain {}: entry {} is not the line the server wrote (its hash differs)", e.node, e.seq),
                )),
                (None, Some(c)) => Some((
                    c.at.clone(),
                    format!(
                        "chain {} ends at entry {} but the server has written up to entry {}: the lines after it were cut",
                        e.node, c.seq, e.seq
                    ),
                )),
                (None, None) => Some((
                    end,
                    format!(
                        "the chain the server writes ({}, at entry {}) is in none of the files given: its live file is missing, emptied or replaced (give every file of the device, the live one last)",
                        e.node, e.seq
                    ),
                )),
            };
            if let Some((at, message)) = problem {
                self.find(Severity::Tampered, &at, message);
            }
        }
        for node in std::mem::take(&mut self.order) {
            let Some(c) = self.chains.get(&node) else { continue };
            // Lines up to the head the server reported are vouched for by it.
            if !require_closed && vouched.as_ref().is_some_and(|(n, seq)| *n == node && c.seq <= *seq) {
                continue;
            }
            let ended = matches!(&c.checkpoint, Some((seq, _, Reason::Close | Reason::Rotate)) if *seq == c.seq);
            let last = c.at.clone();
            let message = match &c.checkpoint {
                Some((seq, at, _)) if *seq == c.seq => {
                    if ended || !require_closed {
                        continue;
                    }
                    format!("chain {node} ends at a checkpoint ({at}) that does not close it: lines after it were cut")
                }
                Some((seq, at, _)) => format!(
                    "chain {node}: {} entries after its last checkpoint ({at}), up to {last}, are not signed yet: a cut or an edit after {at} cannot be detected",
                    c.seq.saturating_sub(*seq)
                ),
                None => {
                    // Never the case for a chain written by a device (its first
                    // line is signed): made up, or its signed lines were cut.
                    let message = format!("chain {node} has no valid checkpoint up to {last}: nothing in it is signed");
                    self.findings.push(Finding {
                        severity: Severity::Tampered,
                        file: last.file,
                        line: last.line,
                        message,
                    });
                    continue;
                }
            };
            let severity = if require_closed { Severity::Tampered } else { Severity::Note };
            self.findings.push(Finding { severity, file: last.file, line: last.line, message });
        }
        self.findings
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::{Link, chain_line, checkpoint_line, line_hash};

    /// A log of `n` entries with a checkpoint every `every`, opened and
    /// closed, one line per element.
    fn log(key: &SigningKey, n: u64, every: u64) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut link = Link { node: "n1".into(), seq: 0, prev: GENESIS };
        let mut push = |line: Vec<u8>, link: &mut Link| {
            link.prev = line_hash(&line);
            link.seq += 1;
            lines.push(line);
        };
        push(checkpoint_line(key, &link, "t0", Reason::Open), &mut link);
        for i in 0..n {
            let body = format!(r#"{{"type":"request","request":{{"id":"{i}"}}}}"#);
            push(chain_line(body.as_bytes(), &link), &mut link);
            if (i + 1) % every == 0 {
                push(checkpoint_line(key, &link, "t", Reason::Count), &mut link);
            }
        }
        push(checkpoint_line(key, &link, "t9", Reason::Close), &mut link);
        lines
    }

    fn check(key: &SigningKey, lines: &[Vec<u8>], closed: bool) -> Vec<Finding> {
        let mut v = Verifier::new(key.verifying_key());
        let mut content = lines.join(&b"\n"[..]);
        content.push(b'\n');
        v.file("a.log", &content);
        v.finish(closed)
    }

    fn tampered(f: &[Finding]) -> Vec<(usize, &str)> {
        f.iter().filter(|f| f.severity == Severity::Tampered).map(|f| (f.line, f.message.as_str())).collect()
    }

    #[test]
    fn an_intact_log_verifies() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let lines = log(&key, 10, 3);
        assert_eq!(check(&key, &lines, true), vec![]);
    }

    #[test]
    fn every_kind_of_tampering_is_found_where_it_is() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let lines = log(&key, 10, 3);
        // Modified (line 3): line 4 no longer follows it.
        let mut m = lines.clone();
        m[2] = String::from_utf8(m[2].clone()).unwrap().replace("\"1\"", "\"X\"").into_bytes();
        let f = check(&key, &m, false);
        assert_eq!(tampered(&f).len(), 1, "{f:?}");
        assert_eq!(f[0].line, 4);
        assert!(f[0].message.contains("a.log:3"), "{}", f[0]);
        // Deleted (line 3).
        let mut d = lines.clone();
        d.remove(2);
        let t = check(&key, &d, false);
        assert_eq!(tampered(&t)[0].0, 3);
        assert!(tampered(&t)[0].1.contains("missing"));
        // Inserted (a copy of line 3 after it).
        let mut i = lines.clone();
        i.insert(3, lines[2].clone());
        let t = check(&key, &i, false);
        assert_eq!(tampered(&t)[0].0, 4);
        // Reordered (lines 3 and 4 swapped).
        let mut r = lines.clone();
        r.swap(2, 3);
        let t = check(&key, &r, false);
        assert_eq!(tampered(&t)[0].0, 3);
        // Truncated: the closing checkpoint and 2 entries cut.
        let cut = &lines[..lines.len() - 3];
        assert!(tampered(&check(&key, cut, false)).is_empty(), "an open tail is only a note");
        let t = check(&key, cut, true);
        assert_eq!(tampered(&t).len(), 1);
        assert_eq!(tampered(&t)[0].0, lines.len() - 3);
        // Cut mid-line.
        let mut v = Verifier::new(key.verifying_key());
        let mut content = lines.join(&b"\n"[..]);
        content.truncate(content.len() - 5);
        v.file("a.log", &content);
        let t = v.finish(false);
        assert_eq!(tampered(&t)[0].0, lines.len());
    }

    #[test]
    fn a_forged_checkpoint_is_found_even_with_a_recomputed_chain() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let forger = SigningKey::from_bytes(&[2; 32]);
        // The attacker rewrites line 3 and recomputes every later hash, but
        // cannot sign: the next checkpoint's signature fails.
        let lines = log(&key, 6, 3);
        let mut out = lines[..2].to_vec();
        let mut link = Link { node: "n1".into(), seq: 2, prev: line_hash(&lines[1]) };
        for l in &lines[2..] {
            let p = parse_line(l).unwrap();
            let line = if let Some((time, reason, _)) = p.checkpoint {
                checkpoint_line(&forger, &link, &time, reason)
            } else {
                chain_line(br#"{"type":"request","request":{"id":"forged"}}"#, &link)
            };
            link.prev = line_hash(&line);
            link.seq += 1;
            out.push(line);
        }
        let t = check(&key, &out, true);
        assert!(!tampered(&t).is_empty());
        assert_eq!(tampered(&t)[0].0, 5, "{t:?}");
        assert!(tampered(&t)[0].1.contains("forged"));
    }

    /// `log` rotated after `at` lines: the first file ends with a `rotate`
    /// checkpoint, the second begins with a `continue` one (as the writer does).
    fn rotated(key: &SigningKey, n: u64, every: u64, at: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let lines = log(key, n, every);
        let mut out = Vec::new();
        let mut link = Link { node: "n1".into(), seq: 0, prev: GENESIS };
        let mut push = |line: Vec<u8>, link: &mut Link| {
            link.prev = line_hash(&line);
            link.seq += 1;
            out.push(line);
        };
        for (i, l) in lines.iter().enumerate() {
            if i == at {
                push(checkpoint_line(key, &link, "tr", Reason::Rotate), &mut link);
                push(checkpoint_line(key, &link, "tr", Reason::Continue), &mut link);
            }
            let p = parse_line(l).unwrap();
            let line = match p.checkpoint {
                Some((time, reason, _)) => checkpoint_line(key, &link, &time, reason),
                None => {
                    let text = String::from_utf8(l.clone()).unwrap();
                    let body = format!("{}}}", &text[..text.rfind(",\"chain\":").unwrap()]);
                    chain_line(body.as_bytes(), &link)
                }
            };
            push(line, &mut link);
        }
        // The lines before `at`, and the `rotate` checkpoint.
        let b = out.split_off(at + 1);
        (out, b)
    }

    fn check_files(key: &SigningKey, files: &[(&str, &[Vec<u8>])], closed: bool) -> Vec<Finding> {
        let mut v = Verifier::new(key.verifying_key());
        for (name, part) in files {
            let mut c = part.join(&b"\n"[..]);
            c.push(b'\n');
            v.file(name, &c);
        }
        v.finish(closed)
    }

    #[test]
    fn a_chain_continues_across_files_given_in_order() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let (a, b) = rotated(&key, 9, 3, 6);
        assert!(String::from_utf8_lossy(&b[0]).contains("\"continue\""));
        assert_eq!(check_files(&key, &[("a.log", &a), ("b.log", &b)], true), vec![]);
        // The second file alone: it starts at its signed `continue`, so it is
        // checked from there (dropping whole earlier files of a rotation set
        // cannot be seen without an outside record).
        assert_eq!(check_files(&key, &[("b.log", &b)], true), vec![]);
        // In the wrong order: found.
        assert!(!tampered(&check_files(&key, &[("b.log", &b), ("a.log", &a)], false)).is_empty());
        // The second file without its `continue` line (its head cut): found
        // at its new first line. (This was a note before: a chain could start
        // at any line of the files given.)
        let t = check_files(&key, &[("b.log", &b[1..])], false);
        assert_eq!(tampered(&t).len(), 1, "{t:?}");
        assert_eq!(tampered(&t)[0].0, 1);
        assert!(tampered(&t)[0].1.contains("continue"), "{t:?}");
        // Both files, with the first one's tail and the `continue` cut: the
        // gap in `seq` is found.
        let t = check_files(&key, &[("a.log", &a[..a.len() - 2]), ("b.log", &b[1..])], false);
        assert_eq!(tampered(&t)[0].0, 1, "{t:?}");
        assert!(tampered(&t)[0].1.contains("missing"), "{t:?}");
    }

    #[test]
    fn a_cut_head_is_found_even_at_a_checkpoint() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let lines = log(&key, 10, 3);
        // The first 3 lines deleted: the file now starts at an entry.
        let t = tampered(&check(&key, &lines[3..], false)).into_iter().map(|(l, _)| l).collect::<Vec<_>>();
        assert_eq!(t, vec![1]);
        // Cut exactly at a `count` checkpoint (validly signed, but not a start).
        let cp = lines.iter().position(|l| String::from_utf8_lossy(l).contains("\"count\"")).unwrap();
        let t = check(&key, &lines[cp..], false);
        assert_eq!(tampered(&t).len(), 1, "{t:?}");
        assert_eq!(tampered(&t)[0].0, 1);
        // Cut at the `open` checkpoint's successor, and at the closing one.
        assert_eq!(tampered(&check(&key, &lines[1..], false))[0].0, 1);
        assert_eq!(tampered(&check(&key, &lines[lines.len() - 1..], true))[0].0, 1);
    }

    #[test]
    fn a_fabricated_chain_with_a_new_node_is_found() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let forger = SigningKey::from_bytes(&[2; 32]);
        let lines = log(&key, 10, 3);
        // Made-up lines of a new node, starting mid-way, chained among
        // themselves, inserted after line 5: found at their first line, with
        // or without --closed, and their chain has nothing signed.
        let mut fake = Vec::new();
        let mut link = Link { node: "f4ke".into(), seq: 17, prev: [9; 32] };
        for i in 0..3 {
            let line = chain_line(format!(r#"{{"type":"request","request":{{"id":"x{i}"}}}}"#).as_bytes(), &link);
            link.prev = line_hash(&line);
            link.seq += 1;
            fake.push(line);
        }
        let mut m = lines.clone();
        m.splice(5..5, fake.clone());
        for closed in [false, true] {
            let t = tampered(&check(&key, &m, closed)).into_iter().map(|(l, _)| l).collect::<Vec<_>>();
            assert_eq!(t, vec![6, 8], "closed={closed}");
        }
        // Even starting with a `continue` checkpoint: without the key its
        // signature fails.
        let mut link = Link { node: "f4ke".into(), seq: 17, prev: [9; 32] };
        let start = checkpoint_line(&forger, &link, "t", Reason::Continue);
        link.prev = line_hash(&start);
        link.seq += 1;
        let mut m = lines.clone();
        m.splice(5..5, [start, chain_line(br#"{"type":"request"}"#, &link)]);
        let t = check(&key, &m, false);
        assert!(tampered(&t).iter().any(|(l, m)| *l == 6 && m.contains("forged")), "{t:?}");
        assert!(tampered(&t).iter().any(|(_, m)| m.contains("no valid checkpoint")), "{t:?}");
    }

    #[test]
    fn an_unsigned_fabricated_chain_is_refused() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let link = Link { node: "fake".into(), seq: 0, prev: GENESIS };
        let line = chain_line(br#"{"type":"request"}"#, &link);
        let t = check(&key, &[line], false);
        assert!(tampered(&t)[0].1.contains("open"));
    }

    #[test]
    fn the_head_a_server_reports_must_be_in_the_files() {
        let key = SigningKey::from_bytes(&[1; 32]);
        // A live log: no close, 2 entries after the last checkpoint.
        let mut lines = log(&key, 8, 3);
        lines.pop();
        let head = parse_line(lines.last().unwrap()).unwrap();
        let run = |lines: &[Vec<u8>], head: &crate::Parsed| {
            let mut v = Verifier::new(key.verifying_key());
            v.expect_head(&head.link.node, head.link.seq, head.hash);
            let mut content = lines.join(&b"\n"[..]);
            if !content.is_empty() {
                content.push(b'\n');
            }
            v.file("live.log", &content);
            v.finish(false)
        };
        // Intact: nothing to say (the unsigned tail is vouched for by the server).
        assert_eq!(run(&lines, &head), vec![]);
        assert_eq!(check(&key, &lines, false).len(), 1, "without the head: a note on the unsigned tail");
        // The unsigned tail cut: found.
        let t = run(&lines[..lines.len() - 2], &head);
        assert!(tampered(&t).iter().any(|(_, m)| m.contains("were cut")), "{t:?}");
        // The head line changed (its chain still consistent up to it).
        let mut other = head.clone();
        other.hash = [0; 32];
        assert!(tampered(&run(&lines, &other)).iter().any(|(_, m)| m.contains("not the line the server wrote")));
        // The live file left out or emptied.
        let t = run(&[], &head);
        assert!(tampered(&t).iter().any(|(_, m)| m.contains("none of the files")), "{t:?}");
    }

    #[test]
    fn a_line_repeated_after_a_checkpoint_is_found_without_overflow() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let lines = log(&key, 4, 2);
        // open, e0, e1, count, ...: e1 again right after the checkpoint.
        let mut m = lines[..4].to_vec();
        m.push(lines[2].clone());
        let f = check(&key, &m, false);
        assert!(!tampered(&f).is_empty(), "{f:?}");
    }
}
