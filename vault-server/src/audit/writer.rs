//! One writer thread per device: it owns the file, the chain head and the
//! signing key. Requests hand it entry bodies and wait for the answer; it
//! takes everything queued at once (group commit), links each entry into
//! the chain, adds checkpoints when due, and writes the batch with one
//! `write(2)` (then `fsync` per the policy) before answering the batch.
//! A thread, not a task: file writes block, and a slow disk must not take a
//! runtime worker.
//!
//! A failed write leaves no trace: the file is cut back to its length before
//! the batch and the chain head is restored, so the next batch continues the
//! chain as if the failed one had never been tried (and its requests were
//! refused, or their failure counted).

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use tokio::sync::oneshot;
use vault_audit::{GENESIS, Link, Reason};

use super::table::{Fsync, Options, Sink};

/// Work for a writer.
pub enum Msg {
    /// An entry body (a JSON object); the answer, if asked for, says whether
    /// it is written (request entries wait for it; response entries do not:
    /// the answer is decided, and a failure is counted instead).
    Entry(Vec<u8>, Option<oneshot::Sender<bool>>),
    /// Close the file with a `rotate` checkpoint and reopen the path (SIGHUP).
    Rotate,
    /// Write a `close` checkpoint, flush, stop; answered when done.
    Close(oneshot::Sender<()>),
}

/// At most this many entries per batch (bounds the answer latency of the first).
const MAX_BATCH: usize = 4096;
/// `fsync=interval` flushes this often.
const FSYNC_EVERY: Duration = Duration::from_secs(1);
/// Bytes read back from the end of the file to find the last entry.
const TAIL_BYTES: u64 = 256 * 1024;

pub struct Writer {
    /// Entries written without waiting that could not be written.
    unwaited_failures: std::sync::Arc<std::sync::atomic::AtomicU64>,
    opts: Options,
    key: SigningKey,
    file: Option<File>,
    link: Link,
    /// A new chain must open with a signed `open` checkpoint first.
    needs_open: bool,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    unsynced: bool,
    last_sync: Instant,
}

/// A fresh chain id (16 hex digits).
fn new_node() -> String {
    crate::crypto::random::hex_id(8)
}

pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Open `path` for appending, created with `mode`. An existing regular
/// file's mode is only ever narrowed to `mode`, never widened (Vault sets it
/// outright; here a sudo token pointing a device at /etc/shadow with mode
/// 0644 must not make it readable). 0 leaves the mode alone. Device files
/// such as /dev/full are never chmod'ed.
pub fn open(path: &Path, mode: u32) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .append(true)
        .read(true)
        .create(true)
        .mode(if mode == 0 { 0o600 } else { mode })
        .open(path)?;
    let meta = f.metadata()?;
    if mode != 0 && meta.is_file() {
        let have = meta.permissions().mode() & 0o7777;
        if have & !mode != 0 {
            f.set_permissions(std::fs::Permissions::from_mode(have & mode))?;
        }
    }
    Ok(f)
}

/// Whether an existing file may become a device's log: a device (such as
/// /dev/stdout), an empty file, or one whose last line is an entry of this
/// format. Anything else (a configuration file, /etc/passwd) is refused:
/// a device appends to its file and must not damage another one.
pub fn is_audit_log(f: &mut File) -> bool {
    let Ok(meta) = f.metadata() else { return false };
    if !meta.is_file() || meta.len() == 0 {
        return true;
    }
    let Some(tail) = read_tail(f, meta.len()) else { return false };
    let Some(body) = tail.strip_suffix(b"\n") else { return false };
    body.rsplit(|b| *b == b'\n').next().is_some_and(|l| vault_audit::parse_line(l).is_ok())
}

fn read_tail(f: &mut File, len: u64) -> Option<Vec<u8>> {
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES))).ok()?;
    let mut tail = Vec::new();
    f.take(TAIL_BYTES).read_to_end(&mut tail).ok()?;
    Some(tail)
}

impl Writer {
    /// A writer for `opts`, resuming the chain the file ends with if it ends
    /// with this device's valid `close` checkpoint (a clean stop: the chain
    /// head survives a restart); otherwise a new chain.
    pub fn new(
        opts: Options,
        key: SigningKey,
        unwaited_failures: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Writer {
        let mut w = Writer {
            unwaited_failures,
            opts,
            key,
            file: None,
            link: Link { node: new_node(), seq: 0, prev: GENESIS },
            needs_open: true,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            unsynced: false,
            last_sync: Instant::now(),
        };
        if let Sink::File(path) = w.opts.sink.clone() {
            match open(&path, w.opts.mode) {
                Ok(mut f) => {
                    if let Some(link) = resumable(&mut f, &w.key) {
                        tracing::info!(file = %path.display(), node = %link.node, seq = link.seq, "audit chain resumed");
                        w.link = link;
                        w.needs_open = false;
                    }
                    w.file = Some(f);
                }
                Err(e) => tracing::error!(file = %path.display(), error = %e, "cannot open the audit file"),
            }
        }
        w
    }

    /// Run until closed (or every sender is gone, which closes too).
    pub fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let wait = self.next_timer();
            let first = match rx.recv_timeout(wait) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    self.timers();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.close();
                    return;
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            if self.handle(batch) {
                return;
            }
            self.timers();
        }
    }

    /// How long until a checkpoint or a flush is due.
    fn next_timer(&self) -> Duration {
        let mut wait = Duration::from_secs(3600);
        if self.since_checkpoint > 0 {
            wait = wait.min(self.opts.checkpoint_interval.saturating_sub(self.last_checkpoint.elapsed()));
        }
        if self.unsynced && self.opts.fsync == Fsync::Interval {
            wait = wait.min(FSYNC_EVERY.saturating_sub(self.last_sync.elapsed()));
        }
        wait.max(Duration::from_millis(1))
    }

    fn timers(&mut self) {
        if self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= self.opts.checkpoint_interval {
            let mut buf = Vec::new();
            let saved = (self.link.clone(), self.since_checkpoint);
            self.checkpoint(&mut buf, Reason::Interval);
            if !self.commit(buf) {
                (self.link, self.since_checkpoint) = saved;
            }
        }
        if self.unsynced && self.opts.fsync == Fsync::Interval && self.last_sync.elapsed() >= FSYNC_EVERY {
            self.sync();
        }
    }

    /// Append a checkpoint line for the current head to `buf`.
    fn checkpoint(&mut self, buf: &mut Vec<u8>, reason: Reason) {
        let line = vault_audit::checkpoint_line(&self.key, &self.link, &now_rfc3339(), reason);
        self.push(buf, line);
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
    }

    fn push(&mut self, buf: &mut Vec<u8>, line: Vec<u8>) {
        self.link.prev = vault_audit::line_hash(&line);
        self.link.seq += 1;
        buf.extend_from_slice(&line);
        buf.push(b'\n');
    }

    /// Process a batch; true when the writer is closed.
    fn handle(&mut self, batch: Vec<Msg>) -> bool {
        let mut buf = Vec::new();
        let mut acks = Vec::new();
        let mut saved = (self.link.clone(), self.since_checkpoint, self.needs_open);
        for m in batch {
            match m {
                Msg::Entry(body, ack) => {
                    if self.needs_open {
                        self.checkpoint(&mut buf, Reason::Open);
                        self.needs_open = false;
                    }
                    let line = vault_audit::chain_line(&body, &self.link);
                    self.push(&mut buf, line);
                    acks.push(ack);
                    self.since_checkpoint += 1;
                    if self.since_checkpoint >= self.opts.checkpoint_entries {
                        self.checkpoint(&mut buf, Reason::Count);
                    }
                }
                Msg::Rotate => {
                    self.finish_batch(std::mem::take(&mut buf), std::mem::take(&mut acks), &saved);
                    self.rotate();
                    saved = (self.link.clone(), self.since_checkpoint, self.needs_open);
                }
                Msg::Close(done) => {
                    self.finish_batch(std::mem::take(&mut buf), std::mem::take(&mut acks), &saved);
                    self.close();
                    let _ = done.send(());
                    return true;
                }
            }
        }
        self.finish_batch(buf, acks, &saved);
        false
    }

    fn finish_batch(&mut self, buf: Vec<u8>, acks: Vec<Option<oneshot::Sender<bool>>>, saved: &(Link, u64, bool)) {
        if buf.is_empty() {
            return;
        }
        let ok = self.commit(buf);
        if !ok {
            // Nothing of the batch is in the file: the chain goes on from before it.
            (self.link, self.since_checkpoint, self.needs_open) = saved.clone();
        }
        for a in acks {
            match a {
                Some(a) => {
                    let _ = a.send(ok);
                }
                None if !ok => {
                    self.unwaited_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                None => {}
            }
        }
    }

    /// Write `buf` whole or not at all; flush per the policy.
    fn commit(&mut self, buf: Vec<u8>) -> bool {
        let result = match &self.opts.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&buf).and_then(|()| out.flush())
            }
            Sink::File(path) => {
                let path = path.clone();
                self.write_file(&path, &buf)
            }
        };
        match result {
            Ok(()) => {
                self.unsynced = true;
                if self.opts.fsync == Fsync::Batch {
                    self.sync();
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot write the audit log");
                false
            }
        }
    }

    fn write_file(&mut self, path: &Path, buf: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(open(path, self.opts.mode)?);
        }
        let Some(f) = self.file.as_mut() else { return Err(std::io::Error::other("audit file not open")) };
        let before = f.metadata().map(|m| m.len()).ok();
        let r = f.write_all(buf);
        if r.is_err() {
            // Cut back a partial write (a regular file; devices cannot be cut),
            // and reopen next time (the file may have been replaced).
            if let (Some(len), Ok(true)) = (before, f.metadata().map(|m| m.is_file())) {
                let _ = f.set_len(len);
            }
            self.file = None;
        }
        r
    }

    fn sync(&mut self) {
        if let Some(f) = &self.file
            && let Err(e) = f.sync_data()
        {
            tracing::error!(error = %e, "cannot flush the audit log to disk");
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
    }

    /// SIGHUP: sign off the old file, reopen the path (a new file after a
    /// rotation), continue the chain there.
    fn rotate(&mut self) {
        let Sink::File(path) = self.opts.sink.clone() else { return };
        if !self.needs_open {
            let mut buf = Vec::new();
            let saved = (self.link.clone(), self.since_checkpoint);
            self.checkpoint(&mut buf, Reason::Rotate);
            if !self.commit(buf) {
                (self.link, self.since_checkpoint) = saved;
            }
        }
        self.sync();
        self.file = match open(&path, self.opts.mode) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot reopen the audit file");
                None
            }
        };
    }

    /// Sign off the chain (`close`) and flush.
    fn close(&mut self) {
        if !self.needs_open {
            let mut buf = Vec::new();
            self.checkpoint(&mut buf, Reason::Close);
            let _ = self.commit(buf);
        }
        self.sync();
        self.file = None;
    }
}

/// The chain to resume: the file's last line, if it is a `close`
/// checkpoint this key signed.
fn resumable(f: &mut File, key: &SigningKey) -> Option<Link> {
    let len = f.metadata().ok()?.len();
    if len == 0 {
        return None;
    }
    let tail = read_tail(f, len)?;
    let body = tail.strip_suffix(b"\n")?;
    let line = body.rsplit(|b| *b == b'\n').next()?;
    let p = vault_audit::parse_line(line).ok()?;
    let closed = matches!(&p.checkpoint, Some((_, Reason::Close, _)));
    if !closed || !vault_audit::checkpoint_valid(&key.verifying_key(), &p) {
        return None;
    }
    Some(Link { node: p.link.node, seq: p.link.seq.saturating_add(1), prev: p.hash })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn opts(path: &Path, entries: u64) -> Options {
        let mut m = serde_json::Map::new();
        m.insert("file_path".into(), path.display().to_string().into());
        m.insert("checkpoint_entries".into(), entries.to_string().into());
        Options::parse(&m).unwrap()
    }

    fn entry(tx: &std::sync::mpsc::Sender<Msg>, i: usize) -> oneshot::Receiver<bool> {
        let (a, r) = oneshot::channel();
        tx.send(Msg::Entry(format!(r#"{{"type":"request","n":{i}}}"#).into_bytes(), Some(a))).unwrap();
        r
    }

    fn verify(key: &SigningKey, files: &[&Path]) -> Vec<vault_audit::Finding> {
        let mut v = vault_audit::Verifier::new(key.verifying_key());
        for f in files {
            v.file(&f.display().to_string(), &std::fs::read(f).unwrap());
        }
        v.finish(true)
    }

    #[test]
    fn batches_chain_rotate_and_resume_after_a_clean_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = SigningKey::from_bytes(&[3; 32]);
        let (tx, rx) = std::sync::mpsc::channel();
        let w = Writer::new(opts(&path, 4), key.clone(), Default::default());
        let t = std::thread::spawn(move || w.run(rx));
        let acks: Vec<_> = (0..10).map(|i| entry(&tx, i)).collect();
        for a in acks {
            assert!(a.blocking_recv().unwrap());
        }
        // Rotate: the old file is moved away, a new one starts.
        let old = dir.path().join("audit.log.1");
        std::fs::rename(&path, &old).unwrap();
        tx.send(Msg::Rotate).unwrap();
        assert!(entry(&tx, 10).blocking_recv().unwrap());
        let (done, r) = oneshot::channel();
        tx.send(Msg::Close(done)).unwrap();
        r.blocking_recv().unwrap();
        t.join().unwrap();
        assert_eq!(verify(&key, &[&old, &path]), vec![]);
        // Restart: the chain goes on in the same file.
        let w = Writer::new(opts(&path, 4), key.clone(), Default::default());
        assert!(!w.needs_open);
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || w.run(rx));
        assert!(entry(&tx, 11).blocking_recv().unwrap());
        drop(tx);
        t.join().unwrap();
        assert_eq!(verify(&key, &[&old, &path]), vec![]);
        let nodes: HashMap<String, ()> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| (vault_audit::parse_line(l.as_bytes()).unwrap().link.node, ()))
            .collect();
        assert_eq!(nodes.len(), 1, "one chain across the restart");
        // Another key's close is not resumed (a new chain starts).
        assert!(Writer::new(opts(&path, 4), SigningKey::from_bytes(&[4; 32]), Default::default()).needs_open);
    }

    #[test]
    fn modes_only_narrow_and_foreign_files_are_not_logs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut f = open(&p, 0o644).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600, "never widened");
        assert!(!is_audit_log(&mut f));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        open(&p, 0o640).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o640, "narrowed");
        let empty = dir.path().join("new");
        assert!(is_audit_log(&mut open(&empty, 0o600).unwrap()));
        assert!(is_audit_log(&mut open(Path::new("/dev/full"), 0o600).unwrap()));
    }

    #[test]
    fn a_failed_write_is_refused_and_leaves_the_chain_intact() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let (tx, rx) = std::sync::mpsc::channel();
        let failures = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let w = Writer::new(opts(Path::new("/dev/full"), 4), key, failures.clone());
        let t = std::thread::spawn(move || w.run(rx));
        assert!(!entry(&tx, 0).blocking_recv().unwrap());
        // An entry nobody waits for (a response entry) is counted instead.
        tx.send(Msg::Entry(b"{}".to_vec(), None)).unwrap();
        drop(tx);
        t.join().unwrap();
        assert_eq!(failures.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
