//! Writing one device's log: the chain head, the file and the signing key,
//! shared by the requests and one thread per device.
//!
//! Group commit without a thread hop: a request hands in its entry and, if
//! no one is writing, lets the other ready tasks hand in theirs (one
//! `yield_now`), then writes (the *leader*): everything queued is linked
//! into the chain (checkpoints added when due) and written with one
//! `write(2)`; entries handed in meanwhile wait (asynchronously, bounded by
//! the caller's timeout) for the leader's next round. A round is a few
//! microseconds of page-cache write, so requests no longer wait for a
//! thread to be scheduled (which, on a busy host, cost milliseconds per
//! request and most of the throughput). A leader writes a few rounds at
//! most, then hands the queue to the device's thread.
//!
//! The thread does what may block for long: `fdatasync` (after every round
//! with `fsync=batch`, before its requests go on; about once a second with
//! `interval`), interval checkpoints, rotation (SIGHUP) and the closing
//! checkpoint. Only one writer (a leader or the thread) touches the chain at
//! a time; a hung disk holds at most one runtime worker (the leader in its
//! `write(2)`), the other requests time out and are refused.
//!
//! A failed write leaves no trace: the round's bytes already written are
//! cut off the file again ([`append_whole`]) and the chain head is
//! restored, so the next round continues the chain as if the failed one had
//! never been tried (and its requests were refused, or their failure
//! counted).

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use tokio::sync::oneshot;
use vault_audit::{GENESIS, Link, Reason};

use super::place::FileDirs;
use super::stamp::Stamp;
use super::table::{Fsync, Options, Sink};

/// Work for a device's thread.
enum Msg {
    /// A leader handed over the queue (it is the thread's to write).
    Lead,
    /// An entry waits with no writer at work and the thread is not
    /// looking: write it unless a round takes it first ([`Handle::queue`]).
    Tick,
    /// `fsync=batch`: flush this file, then answer these entries.
    Sync(Arc<File>, Vec<oneshot::Sender<bool>>),
    /// Close the file with a `rotate` checkpoint and reopen the path (SIGHUP).
    Rotate,
    /// Write a `close` checkpoint, flush, stop; answered when done.
    Close(oneshot::Sender<()>),
}

/// Rounds a request writes as leader before handing the queue to the
/// thread (bounds how long one request writes for others).
const MAX_ROUNDS: usize = 4;
/// `fsync=interval` flushes this often.
const FSYNC_EVERY: Duration = Duration::from_secs(1);
/// The thread looks at its timers at least this often (leaders write
/// without telling it).
const POLL: Duration = Duration::from_secs(1);
/// How often a round compares the path with the open file (a `stat` per
/// round cost ~3% of an audited request's CPU under load). Entries written
/// meanwhile into a file moved away stay in its chain (it is signed off
/// with `rotate`); into a deleted file they are lost, as is all the
/// deleted file held (`verify --device` and the stored heads find that).
const MOVE_CHECK_EVERY: Duration = Duration::from_millis(20);
/// Entries waiting for a writer at most (a hung disk must not pile up the
/// entries of refused requests in memory, to be written later as if run).
const MAX_QUEUED: usize = 16 * 1024;
/// Bytes of entries waiting at most (as [`MAX_QUEUED`]: big entries too).
const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// Capacity of the round buffer kept between rounds.
const ROUND_KEPT: usize = 256 * 1024;
/// Bytes read back from the end of the file to find the last entry.
const TAIL_BYTES: u64 = 256 * 1024;

/// A chain's last line as this server wrote it: what `GET sys/audit` shows
/// (so `vaultctl audit verify --device` finds a cut of a live file) and
/// what the barrier keeps when a writer signs off (so a restarted server
/// finds a file cut back to an earlier `close`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub node: String,
    pub seq: u64,
    pub hash: [u8; 32],
}

/// Who answers for an entry.
enum Waiter {
    /// A response entry: nobody waits; a failure is counted.
    Unwaited,
    /// A request waiting for its entry.
    Ack(oneshot::Sender<bool>),
}

/// Entries in the order handed in: their bodies back to back in `bytes`
/// (copied in from the caller's reused buffer: no allocation per entry,
/// and none freed on another thread), each one's end and waiter in `items`.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    items: Vec<(usize, Waiter)>,
}

impl Batch {
    fn push(&mut self, body: &[u8], waiter: Waiter) {
        self.bytes.extend_from_slice(body);
        self.items.push((self.bytes.len(), waiter));
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether another entry may wait: fewer than [`MAX_QUEUED`] entries
    /// and [`MAX_QUEUED_BYTES`] waiting. The entry's own size is not held
    /// against it: one huge entry (a large secret read back, every string
    /// hashed) is written like any other; only a backlog (a hung disk) is
    /// refused.
    fn has_room(&self) -> bool {
        self.items.len() < MAX_QUEUED && self.bytes.len() < MAX_QUEUED_BYTES
    }

    /// Emptied for reuse (answered already), its room kept unless a burst
    /// made it large.
    fn recycled(mut self) -> Batch {
        self.bytes.clear();
        self.items.clear();
        if self.bytes.capacity() > ROUND_KEPT {
            self.bytes = Vec::new();
        }
        if self.items.capacity() > ROUND_KEPT / 64 {
            self.items = Vec::new();
        }
        self
    }

    fn bodies(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.items.iter().map(move |(end, _)| {
            let body = self.bytes.get(start..*end).unwrap_or_default();
            start = *end;
            body
        })
    }

    /// The waiters, to answer (the batch keeps its room: [`Batch::recycled`]).
    fn waiters(&mut self) -> impl Iterator<Item = Waiter> + '_ {
        self.items.drain(..).map(|(_, w)| w)
    }
}

/// Who writes now.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    Nobody,
    /// A request (a runtime task), as leader.
    Task,
    /// The device's thread.
    Thread,
}

/// Entries waiting for the writer. Invariant: with `owner == Nobody` the
/// queue holds only entries handed in since the last round that will be
/// written soon: request entries by their handers, who flush after one
/// yield (whichever flushes first writes them all), response entries by
/// the next round or, within [`TICK`], by the device's thread, which is
/// looking ([`Shared::ticking`]) or told to ([`Msg::Tick`]).
struct Queue {
    entries: Batch,
    /// The last round's batch, emptied: the next round's room (two buffers
    /// taking turns, no allocation per round).
    spare: Batch,
    /// Rounds that took entries (the thread writes entries left over a whole
    /// tick with no round: nobody else is about to).
    taken: u64,
    owner: Owner,
    /// The thread waits (on [`Shared::turn`]) for the leader to finish.
    thread_waiting: bool,
    /// The device signed off: nothing more is written.
    closed: bool,
}

/// The chain and the file: touched only by the current writer.
struct Chain {
    opts: Options,
    /// Where the file may be (re)opened.
    dirs: FileDirs,
    key: SigningKey,
    /// Shared with the thread's flushes (an `fdatasync` needs no lock).
    file: Option<Arc<File>>,
    /// (device, inode) of `file`: a path that names another file now (moved
    /// by log rotation without SIGHUP, deleted, replaced) is reopened.
    file_id: Option<(u64, u64)>,
    /// Inside [`Chain::rotate`] (its checkpoint goes to the old file).
    rotating: bool,
    /// The head after the last `close` written (None if it failed).
    closed_at: Option<Head>,
    link: Link,
    /// The checkpoint to write before the next line: `open` for a new chain,
    /// `continue` when the chain goes on in a file where it does not begin
    /// (reopened after a rotation or a failed write). None once written.
    needs_start: Option<Reason>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    unsynced: bool,
    last_sync: Instant,
    /// When the path was last compared with the open file.
    last_move_check: Instant,
}

struct Shared {
    queue: Mutex<Queue>,
    turn: Condvar,
    chain: Mutex<Chain>,
    /// The round's buffer, kept between rounds (locked after `chain`, by
    /// its writer only).
    round: Mutex<Vec<u8>>,
    /// The device's policy (fixed for its life).
    fsync: Fsync,
    /// Entries written without waiting that could not be written.
    unwaited_failures: Arc<AtomicU64>,
    /// The thread looks at the queue every [`TICK`] (it was busy lately);
    /// otherwise an entry left waiting must wake it ([`Msg::Tick`]).
    ticking: std::sync::atomic::AtomicBool,
}

/// How often the thread, while busy, looks for response entries left
/// waiting (a request's round usually takes them within microseconds).
const TICK: Duration = Duration::from_millis(2);
/// Ticks with nothing to do before the thread stops looking.
const IDLE_TICKS: u32 = 50;

impl Queue {
    /// The entries, for a round.
    fn take(&mut self) -> Batch {
        self.taken = self.taken.wrapping_add(1);
        let spare = std::mem::take(&mut self.spare);
        std::mem::replace(&mut self.entries, spare)
    }

    /// A round's batch back, answered: the next one's room.
    fn give_back(&mut self, b: Batch) {
        self.spare = b.recycled();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running device writer (dropping it closes the chain and stops the thread).
pub struct Handle {
    shared: Arc<Shared>,
    tx: Sender<Msg>,
}

/// What became of an entry handed to [`Handle::queue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handed {
    /// The device is closed: not written.
    Closed,
    /// A writer will write it with its next round.
    Queued,
    /// No one is writing: it goes with the next round (a request's) or the
    /// thread's within a few milliseconds; [`Handle::flush`] writes it now.
    Pending,
}

/// A fresh chain id (16 hex digits).
fn new_node() -> String {
    crate::crypto::random::hex_id(8)
}

/// Open `path` as a device's log, with every check, at enable and at each
/// reopen (rotation, a moved file, after a failed write): the path may have
/// been swapped meanwhile. Refused: a place under /proc, /sys or /dev, a
/// symbolic link as the last component (`O_NOFOLLOW`: a link planted at the
/// path must not redirect the log to /dev/null or to another file), anything
/// but a regular file (opened `O_NONBLOCK`, so a FIFO planted at the path
/// cannot hang the opener), and a file that is neither empty nor an audit
/// log. Only then is an existing file's mode narrowed to `mode`, never
/// widened (Vault sets it outright; here a sudo token pointing a device at
/// /etc/shadow with mode 0644 must not make it readable); 0 leaves it alone.
/// A new file is created with `mode` (0600 for 0).
pub fn open(path: &Path, mode: u32, dirs: &FileDirs) -> std::io::Result<File> {
    let mut f = dirs.open(path, if mode == 0 { 0o600 } else { mode })?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("it is not a regular file (file_path=stdout writes to standard output)"));
    }
    // A hard link made in an allowed directory to a file elsewhere (an empty
    // file under /etc/cron.d) would carry the log out of it.
    if meta.nlink() > 1 {
        return Err(std::io::Error::other("it has other names (hard links): give a file of its own"));
    }
    if !is_audit_log(&mut f) {
        return Err(std::io::Error::other("it exists and is not an audit log: give a new or empty file"));
    }
    if mode != 0 {
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
///
/// The *first* line is looked at: a log begins with a short signed
/// checkpoint, while its last line may be torn (a crash, a cut-back that
/// failed) or longer than anything worth reading back (a huge LIST answer),
/// and neither may make the file unusable.
pub fn is_audit_log(f: &mut File) -> bool {
    let Ok(meta) = f.metadata() else { return false };
    if !meta.is_file() || meta.len() == 0 {
        return true;
    }
    let mut head = Vec::new();
    if f.seek(SeekFrom::Start(0)).is_err() || (&*f).take(TAIL_BYTES).read_to_end(&mut head).is_err() {
        return false;
    }
    head.split(|b| *b == b'\n').next().is_some_and(|l| head.len() > l.len() && vault_audit::parse_line(l).is_ok())
}

fn file_id(f: &File) -> Option<(u64, u64)> {
    f.metadata().ok().map(|m| (m.dev(), m.ino()))
}

fn read_tail(f: &mut File, len: u64) -> Option<Vec<u8>> {
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES))).ok()?;
    let mut tail = Vec::new();
    f.take(TAIL_BYTES).read_to_end(&mut tail).ok()?;
    Some(tail)
}

impl Handle {
    /// Start a writer for `opts` (resuming the chain the file ends with if it
    /// ends with this device's valid `close` checkpoint; continuing from the
    /// head in `closed` instead if this server closed that chain later) and
    /// its thread.
    pub fn start(
        name: String,
        opts: Options,
        dirs: FileDirs,
        key: SigningKey,
        closed: &[Head],
        mine: Option<&Head>,
        unwaited_failures: Arc<AtomicU64>,
    ) -> std::io::Result<Handle> {
        let fsync = opts.fsync;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                entries: Batch::default(),
                spare: Batch::default(),
                taken: 0,
                owner: Owner::Nobody,
                thread_waiting: false,
                closed: false,
            }),
            turn: Condvar::new(),
            chain: Mutex::new(Chain::new(opts, dirs, key, closed, mine)),
            round: Mutex::new(Vec::new()),
            fsync,
            unwaited_failures,
            ticking: std::sync::atomic::AtomicBool::new(false),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let for_thread = shared.clone();
        let spawned = std::thread::Builder::new().name(name).spawn(move || run(&for_thread, &rx));
        if let Err(e) = spawned {
            // Nothing could flush, rotate or close: refuse every entry.
            lock(&shared.queue).closed = true;
            return Err(e);
        }
        Ok(Handle { shared, tx })
    }

    /// [`Handle::hand_in`] and [`Ticket::wait`] at once (the tests' way).
    #[cfg(test)]
    pub async fn record(&self, body: impl AsRef<[u8]>, timeout: Duration) -> bool {
        match self.hand_in(body.as_ref()) {
            Some(ticket) => ticket.wait(timeout).await,
            None => false,
        }
    }

    /// Hand in a copy of a request's entry (the caller's buffer is free
    /// again), to wait for with the ticket: true once it is in the file (and
    /// flushed, with `fsync=batch`). None: refused (the device is closed, or
    /// too much is waiting: a hung disk).
    ///
    /// With no write under way the entry is not written at once: the tasks
    /// ready to run go first (one `yield_now`), hand in their entries too,
    /// and the first of them back writes them all with one `write(2)`; the
    /// others find theirs answered. Under load that is one write and no
    /// cross-thread wake-up for a whole batch of requests, instead of one
    /// each (most of what auditing cost); alone, it costs one yield.
    pub fn hand_in(&self, body: &[u8]) -> Option<Ticket<'_>> {
        let (ack, done) = oneshot::channel();
        let mut q = lock(&self.shared.queue);
        if q.closed || !q.entries.has_room() {
            return None;
        }
        q.entries.push(body, Waiter::Ack(ack));
        // The thread waiting for its turn (close, rotation, timers) writes
        // it; so does a writer at work, with its next round.
        let flush = q.owner == Owner::Nobody && !q.thread_waiting;
        Some(Ticket { handle: self, done, flush })
    }
}

/// A request's entry handed in ([`Handle::hand_in`]). It owes a flush when
/// no writer was at work: paid after one yield in [`Ticket::wait`], or when
/// dropped (an entry somebody waits for is never left alone).
pub struct Ticket<'a> {
    handle: &'a Handle,
    done: oneshot::Receiver<bool>,
    flush: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.flush {
            self.handle.flush();
        }
    }
}

impl Ticket<'_> {
    /// True once the entry is in the file (flushed, with `fsync=batch`).
    pub async fn wait(mut self, timeout: Duration) -> bool {
        if self.flush {
            tokio::task::yield_now().await;
            self.flush = false;
            self.handle.flush();
        }
        // Written already (by this task as leader, or by the leader that
        // took it): answered without arming a timer.
        match self.done.try_recv() {
            Ok(ok) => ok,
            Err(oneshot::error::TryRecvError::Closed) => false,
            Err(oneshot::error::TryRecvError::Empty) => {
                matches!(tokio::time::timeout(timeout, &mut self.done).await, Ok(Ok(true)))
            }
        }
    }
}

impl Handle {
    /// Hand in one entry nobody waits for (a response entry; a failure is
    /// counted). It is not written at once: with a write under way it goes
    /// with that writer's next round ([`Handed::Queued`]); with none
    /// ([`Handed::Pending`]), with the next request's round (one `write(2)`
    /// for both), or else the thread's within [`TICK`] or so. The caller
    /// neither waits nor yields: under load, that yield (a whole extra poll
    /// of the request's task) cost more than the rest of the hand-in.
    pub fn queue(&self, body: impl AsRef<[u8]>) -> Handed {
        let body = body.as_ref();
        let handed = {
            let mut q = lock(&self.shared.queue);
            if q.closed || !q.entries.has_room() {
                return Handed::Closed;
            }
            q.entries.push(body, Waiter::Unwaited);
            // The first entry waiting needs someone to write it (those after
            // it go with it: its hander's round, or the thread's).
            if q.owner == Owner::Nobody && !q.thread_waiting && q.entries.len() == 1 {
                Handed::Pending
            } else {
                Handed::Queued
            }
        };
        // Read after the entry is in (the queue's lock orders it with the
        // thread's `ticking = false` and its last look at the queue): a
        // thread that stopped looking without seeing it is told.
        if handed == Handed::Pending && !self.shared.ticking.load(Ordering::SeqCst) {
            let _ = self.tx.send(Msg::Tick);
        }
        handed
    }

    /// Write the entries pending (handed in while no one was writing), if
    /// no writer took them meanwhile. Synchronous (also run on drop).
    pub fn flush(&self) {
        let entries = {
            let mut q = lock(&self.shared.queue);
            if q.owner != Owner::Nobody || q.thread_waiting || q.entries.is_empty() {
                return;
            }
            q.owner = Owner::Task;
            q.take()
        };
        self.lead(entries);
    }

    /// Write as leader (the caller set `owner = Task`): `entries`, then what
    /// was queued meanwhile, for a few rounds; then release or hand over.
    /// Synchronous: no await while leading, so a dropped request cannot
    /// leave the queue without a writer.
    fn lead(&self, mut entries: Batch) {
        for round in 1.. {
            let (ok, file) = self.shared.write(&entries);
            self.settle(ok, file, entries.waiters());
            let mut q = lock(&self.shared.queue);
            q.give_back(std::mem::take(&mut entries));
            if q.entries.is_empty() {
                q.owner = Owner::Nobody;
                if q.thread_waiting {
                    self.shared.turn.notify_one();
                }
                break;
            }
            if round >= MAX_ROUNDS {
                q.owner = Owner::Thread;
                if q.thread_waiting {
                    self.shared.turn.notify_one();
                    break;
                }
                drop(q);
                if self.tx.send(Msg::Lead).is_ok() {
                    break;
                }
                // No thread: keep writing (the queue must not be left alone).
                q = lock(&self.shared.queue);
                q.owner = Owner::Task;
            }
            entries = q.take();
        }
    }

    /// Answer a round's entries (with `fsync=batch`, those written are
    /// answered by the thread after its flush).
    fn settle(&self, ok: bool, file: Option<Arc<File>>, waiters: impl Iterator<Item = Waiter>) {
        let sync_first = ok && self.shared.fsync == Fsync::Batch;
        let mut after_sync = Vec::new();
        for w in waiters {
            match w {
                Waiter::Unwaited if !ok => {
                    self.shared.unwaited_failures.fetch_add(1, Ordering::Relaxed);
                }
                Waiter::Unwaited => {}
                Waiter::Ack(a) if sync_first => after_sync.push(a),
                Waiter::Ack(a) => {
                    let _ = a.send(ok);
                }
            }
        }
        if !after_sync.is_empty() {
            match file {
                // Stdout: nothing to flush.
                None => after_sync.into_iter().for_each(|a| {
                    let _ = a.send(true);
                }),
                Some(f) => {
                    if let Err(std::sync::mpsc::SendError(Msg::Sync(_, acks))) = self.tx.send(Msg::Sync(f, after_sync))
                    {
                        // No thread to flush: not durable, refused.
                        acks.into_iter().for_each(|a| {
                            let _ = a.send(false);
                        });
                    }
                }
            }
        }
    }

    /// Sign off and stop the thread (waits for the `close` checkpoint).
    /// The chain's head at its `close`, if that was written.
    pub async fn close(&self, timeout: Duration) -> Option<Head> {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Close(ack)).is_err() {
            return None;
        }
        match tokio::time::timeout(timeout, done).await {
            // (Not after a timeout: the thread may be stuck in a write holding the chain.)
            Ok(Ok(())) => lock(&self.shared.chain).closed_at.clone(),
            _ => None,
        }
    }

    /// The chain's last line written so far.
    pub fn head(&self) -> Option<Head> {
        lock(&self.shared.chain).head()
    }

    /// SIGHUP: reopen the file (after log rotation).
    pub fn rotate(&self) {
        let _ = self.tx.send(Msg::Rotate);
    }
}

impl Shared {
    /// One round, as the writer.
    fn write(&self, entries: &Batch) -> (bool, Option<Arc<File>>) {
        let mut chain = lock(&self.chain);
        chain.write_entries(entries, &mut lock(&self.round))
    }

    /// The thread becomes the writer (waits for a leader's round to end),
    /// unless a leader handed it the queue already.
    fn take_turn(&self) {
        let mut q = lock(&self.queue);
        while q.owner == Owner::Task {
            q.thread_waiting = true;
            q = self.turn.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        q.thread_waiting = false;
        q.owner = Owner::Thread;
    }

    /// As the writer (the thread): write what is queued, run `then` on the
    /// chain, write what was queued meanwhile, and release. `close` marks
    /// the device closed as it releases (later entries are refused).
    fn drain(&self, then: impl FnOnce(&mut Chain), close: bool) {
        let mut then = Some(then);
        loop {
            let mut entries = {
                let mut q = lock(&self.queue);
                // Closing: what is handed in from now on is refused, so
                // nothing follows the `close` line (and the head kept is
                // the file's end).
                q.closed |= close;
                q.take()
            };
            let (ok, file) = {
                let mut chain = lock(&self.chain);
                let r = chain.write_entries(&entries, &mut lock(&self.round));
                if let Some(f) = then.take() {
                    f(&mut chain);
                }
                r
            };
            // `fsync=batch`: answered only once flushed (a failed flush refuses).
            let ok = ok && (file.is_none() || self.fsync != Fsync::Batch || sync_file(file.as_deref()));
            for w in entries.waiters() {
                match w {
                    Waiter::Ack(a) => {
                        let _ = a.send(ok);
                    }
                    Waiter::Unwaited if !ok => {
                        self.unwaited_failures.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            let mut q = lock(&self.queue);
            q.give_back(entries);
            if q.entries.is_empty() {
                q.owner = Owner::Nobody;
                return;
            }
        }
    }
}

/// Append `buf` to `f` with `write` (one `write(2)` in append mode, as a
/// rule), whole or not at all: after a failure the bytes of `buf` already
/// written are cut off again (a regular file; devices cannot be cut). They
/// are counted, not found with a `stat` before every round (a syscall per
/// request): this round's bytes are the file's last ones, the file being
/// this server's alone (docs/audit.md).
fn append_whole(
    f: &File,
    buf: &[u8],
    mut write: impl FnMut(&File, &[u8]) -> std::io::Result<usize>,
) -> std::io::Result<()> {
    let mut written = 0;
    let r = loop {
        if written == buf.len() {
            break Ok(());
        }
        match write(f, &buf[written..]) {
            Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    if r.is_err()
        && written > 0
        && let Ok(m) = f.metadata()
        && m.is_file()
    {
        let _ = f.set_len(m.len().saturating_sub(written as u64));
    }
    r
}

fn sync_file(f: Option<&File>) -> bool {
    match f.map(File::sync_data) {
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot flush the audit log to disk");
            false
        }
        _ => true,
    }
}

/// The device's thread: flushes, timers, rotation, closing.
fn run(shared: &Shared, rx: &Receiver<Msg>) {
    let mut next = None;
    let mut look = Look::default();
    loop {
        let msg = match next.take() {
            Some(m) => Ok(m),
            None => {
                let mut wait = lock(&shared.chain).next_timer();
                if shared.ticking.load(Ordering::SeqCst) {
                    wait = wait.min(TICK);
                }
                rx.recv_timeout(wait)
            }
        };
        match msg {
            Ok(Msg::Tick) => {
                shared.ticking.store(true, Ordering::SeqCst);
                look.idle = 0;
                // Told: an entry is waiting with no writer at work.
                shared.write_left(&mut look, true);
            }
            Ok(Msg::Lead) => {
                // Taken as any turn: an earlier message may have used and
                // released the handed-over turn already.
                shared.take_turn();
                shared.drain(|_| {}, false);
            }
            Ok(Msg::Sync(file, mut acks)) => {
                // Every flush asked for meanwhile is served by one
                // `fdatasync` (the group commit of `fsync=batch`).
                let mut files = vec![file];
                while let Ok(m) = rx.try_recv() {
                    match m {
                        Msg::Sync(f, more) => {
                            if !files.iter().any(|x| Arc::ptr_eq(x, &f)) {
                                files.push(f);
                            }
                            acks.extend(more);
                        }
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                // Every file flushed, even after a failure.
                let ok = files.iter().filter(|f| !sync_file(Some(f))).count() == 0;
                for a in acks {
                    let _ = a.send(ok);
                }
            }
            Ok(Msg::Rotate) => {
                shared.take_turn();
                shared.drain(Chain::rotate_on_signal, false);
            }
            Ok(Msg::Close(done)) => {
                shared.take_turn();
                shared.drain(Chain::close, true);
                let _ = done.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                timers(shared);
                if shared.ticking.load(Ordering::SeqCst) {
                    shared.tick(&mut look);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                // The device was dropped (seal, disabled): sign off.
                shared.take_turn();
                shared.drain(Chain::close, true);
                return;
            }
        }
    }
}

/// What the thread saw at its last look at the queue.
#[derive(Default)]
struct Look {
    /// Ticks in a row with nothing waiting.
    idle: u32,
    /// [`Queue::taken`] then.
    taken: u64,
}

impl Shared {
    /// While looking: write the entries left waiting over a whole tick with
    /// no round (`now`: whatever waits); stop looking after [`IDLE_TICKS`]
    /// with nothing waiting.
    fn tick(&self, look: &mut Look) {
        if self.write_left(look, false) {
            return;
        }
        look.idle += 1;
        if look.idle < IDLE_TICKS {
            return;
        }
        self.ticking.store(false, Ordering::SeqCst);
        // An entry handed in before this store may have seen `ticking`
        // still set (and sent nothing): one more look, under the lock the
        // hander took, finds it (one handed in after it sees `false`).
        if !lock(&self.queue).entries.is_empty() {
            self.ticking.store(true, Ordering::SeqCst);
            look.idle = 0;
        }
    }

    /// Write the entries waiting with no writer at work, if `now` or if no
    /// round took any since the last look. True if anything was waiting.
    fn write_left(&self, look: &mut Look, now: bool) -> bool {
        let (waiting, left) = {
            let q = lock(&self.queue);
            let waiting = !q.entries.is_empty();
            let left = waiting && q.owner == Owner::Nobody && !q.thread_waiting && (now || q.taken == look.taken);
            look.taken = q.taken;
            (waiting, left)
        };
        if left {
            self.take_turn();
            self.drain(|_| {}, false);
        }
        if waiting {
            look.idle = 0;
        }
        waiting
    }
}

/// Interval checkpoints and flushes, when due.
fn timers(shared: &Shared) {
    let (checkpoint, flush) = lock(&shared.chain).due();
    if checkpoint {
        shared.take_turn();
        shared.drain(Chain::interval_checkpoint, false);
    }
    if flush {
        // Outside the writer's turn: leaders keep writing while the disk
        // flushes. Marked first, so a write during the flush marks it again.
        let file = {
            let mut chain = lock(&shared.chain);
            chain.synced();
            chain.file.clone()
        };
        sync_file(file.as_deref());
    }
}

impl Chain {
    fn new(opts: Options, dirs: FileDirs, key: SigningKey, closed: &[Head], mine: Option<&Head>) -> Chain {
        let mut c = Chain {
            opts,
            dirs,
            key,
            file: None,
            file_id: None,
            rotating: false,
            closed_at: None,
            link: Link { node: new_node(), seq: 0, prev: GENESIS },
            needs_start: Some(Reason::Open),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            unsynced: false,
            last_sync: Instant::now(),
            last_move_check: Instant::now(),
        };
        if let Sink::File(path) = c.opts.sink.clone() {
            let tail = match open(&path, c.opts.mode, &c.dirs) {
                Ok(mut f) => {
                    let tail = last_line(&mut f);
                    c.file_id = file_id(&f);
                    c.file = Some(Arc::new(f));
                    tail
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot open the audit file");
                    Tail::Unknown
                }
            };
            if let Some((link, start)) = start_point(&path, &tail, &c.key.verifying_key(), closed, mine) {
                c.link = link;
                c.needs_start = start;
            }
        }
        c
    }

    /// The chain's last line (None before its first).
    fn head(&self) -> Option<Head> {
        (self.link.seq > 0).then(|| Head { node: self.link.node.clone(), seq: self.link.seq - 1, hash: self.link.prev })
    }

    /// Whether the path names another file than the one open (or none).
    /// Also true when the open file got another name (a hard link made
    /// after it was opened): reopening it is then refused, as at a start.
    /// The path is not followed (a link put at the path is a change).
    fn moved(&self) -> bool {
        let (Sink::File(path), Some(id)) = (&self.opts.sink, self.file_id) else { return false };
        let renamed = std::fs::symlink_metadata(path).map_or(true, |m| (m.dev(), m.ino()) != id);
        let linked = self.file.as_ref().is_some_and(|f| f.metadata().is_ok_and(|m| m.nlink() != 1));
        renamed || linked
    }

    /// Open the path as the chain's file.
    fn open_path(&mut self, path: &Path) -> std::io::Result<()> {
        let f = open(path, self.opts.mode, &self.dirs)?;
        self.file_id = file_id(&f);
        self.file = Some(Arc::new(f));
        Ok(())
    }

    /// How long until a checkpoint or a flush may be due.
    fn next_timer(&self) -> Duration {
        let mut wait = POLL;
        if self.since_checkpoint > 0 {
            wait = wait.min(self.opts.checkpoint_interval.saturating_sub(self.last_checkpoint.elapsed()));
        }
        if self.unsynced && self.opts.fsync == Fsync::Interval {
            wait = wait.min(FSYNC_EVERY.saturating_sub(self.last_sync.elapsed()));
        }
        wait.max(Duration::from_millis(1))
    }

    /// (an interval checkpoint is due, an interval flush is due)
    fn due(&self) -> (bool, bool) {
        (
            self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= self.opts.checkpoint_interval,
            self.unsynced && self.opts.fsync == Fsync::Interval && self.last_sync.elapsed() >= FSYNC_EVERY,
        )
    }

    fn synced(&mut self) {
        self.unsynced = false;
        self.last_sync = Instant::now();
    }

    /// Link `entries` into the chain (checkpoints when due) and write them
    /// with one `write(2)` from `buf` (the round's buffer, reused: no
    /// allocation per round); on failure the chain is as before. Returns
    /// (written, the file written to, who to answer).
    fn write_entries(&mut self, entries: &Batch, buf: &mut Vec<u8>) -> (bool, Option<Arc<File>>) {
        if entries.is_empty() {
            return (true, None);
        }
        self.prepare();
        let saved = (self.link.clone(), self.since_checkpoint, self.needs_start, self.last_checkpoint);
        let size = entries.bytes.len() + 128 * entries.len();
        buf.clear();
        if buf.capacity() > ROUND_KEPT && size <= ROUND_KEPT {
            // A burst's buffer is not kept for ever.
            buf.shrink_to(ROUND_KEPT);
        }
        buf.reserve(size);
        for body in entries.bodies() {
            if let Some(reason) = self.needs_start.take() {
                self.checkpoint(buf, reason);
            }
            self.link.prev = vault_audit::push_chain_line(buf, body, &self.link);
            self.link.seq += 1;
            buf.push(b'\n');
            self.since_checkpoint += 1;
            if self.since_checkpoint >= self.opts.checkpoint_entries {
                self.checkpoint(buf, Reason::Count);
            }
        }
        let ok = self.commit(buf);
        if !ok {
            // Nothing of the round is in the file: the chain goes on from before it.
            (self.link, self.since_checkpoint, self.needs_start, self.last_checkpoint) = saved;
        }
        (ok, self.file.clone())
    }

    /// Append a checkpoint line for the current head to `buf`.
    fn checkpoint(&mut self, buf: &mut Vec<u8>, reason: Reason) {
        let line = vault_audit::checkpoint_line(&self.key, &self.link, Stamp::now().as_str(), reason);
        self.link.prev = vault_audit::line_hash(&line);
        self.link.seq += 1;
        buf.extend_from_slice(&line);
        buf.push(b'\n');
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
    }

    /// A started chain about to be written to a file that is not open (a
    /// failed write closed it; it is reopened and may be a new file): its
    /// first line there is a `continue` checkpoint.
    fn prepare(&mut self) {
        // A `stat` every MOVE_CHECK_EVERY at most: entries do not go on into
        // a file that was deleted or moved away (it is signed off and the
        // path reopened).
        let look = !self.rotating && self.file.is_some() && self.last_move_check.elapsed() >= MOVE_CHECK_EVERY;
        if look {
            self.last_move_check = Instant::now();
        }
        if look && self.moved() {
            if let Sink::File(path) = &self.opts.sink {
                tracing::warn!(file = %path.display(), "the audit file was moved, replaced or removed: signing off the old file and reopening the path");
            }
            self.rotate();
        }
        if self.file.is_none() && self.needs_start.is_none() && matches!(self.opts.sink, Sink::File(_)) {
            self.needs_start = Some(Reason::Continue);
        }
    }

    /// Write a checkpoint alone (the thread: timers, rotation, close), after
    /// the pending `open`/`continue` if any.
    fn write_checkpoint(&mut self, reason: Reason) -> bool {
        self.prepare();
        let mut buf = Vec::new();
        let saved = (self.link.clone(), self.since_checkpoint, self.needs_start, self.last_checkpoint);
        if let Some(start) = self.needs_start.take() {
            self.checkpoint(&mut buf, start);
        }
        self.checkpoint(&mut buf, reason);
        let ok = self.commit(&buf);
        if !ok {
            (self.link, self.since_checkpoint, self.needs_start, self.last_checkpoint) = saved;
        }
        ok
    }

    fn interval_checkpoint(&mut self) {
        if self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= self.opts.checkpoint_interval {
            self.write_checkpoint(Reason::Interval);
        }
    }

    /// Write `buf` whole or not at all (flushing is the thread's).
    fn commit(&mut self, buf: &[u8]) -> bool {
        let result = match &self.opts.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(buf).and_then(|()| out.flush())
            }
            Sink::File(_) => self.write_file(buf),
        };
        match result {
            Ok(()) => {
                self.unsynced = true;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot write the audit log");
                false
            }
        }
    }

    fn write_file(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            let Sink::File(path) = &self.opts.sink else { return Err(std::io::Error::other("not a file device")) };
            let f = open(path, self.opts.mode, &self.dirs)?;
            self.file_id = file_id(&f);
            self.file = Some(Arc::new(f));
        }
        let Some(f) = self.file.as_deref() else { return Err(std::io::Error::other("audit file not open")) };
        let r = append_whole(f, buf, |mut f, b| f.write(b));
        if r.is_err() {
            // Reopened next time (the file may have been replaced).
            self.file = None;
        }
        r
    }

    fn sync(&mut self) {
        sync_file(self.file.as_deref());
        self.synced();
    }

    /// SIGHUP: as [`Chain::rotate`], unless the file open is still the one
    /// at the path (a round already noticed the move and reopened it).
    fn rotate_on_signal(&mut self) {
        if self.file.is_some() && !self.moved() {
            return;
        }
        self.rotate();
    }

    /// Sign off the old file, reopen the path (a new file after a
    /// rotation), continue the chain there: its first line in the new file
    /// is a signed `continue` checkpoint (written with the next line).
    fn rotate(&mut self) {
        let Sink::File(path) = self.opts.sink.clone() else { return };
        self.rotating = true;
        // A chain not written yet has nothing to sign off. One pending its
        // `continue` (nothing written since the last rotation) writes it
        // first: the file it leaves holds `continue` and `rotate`.
        if self.needs_start != Some(Reason::Open) {
            self.write_checkpoint(Reason::Rotate);
            self.needs_start = Some(Reason::Continue);
        }
        self.sync();
        self.file = None;
        self.file_id = None;
        if let Err(e) = self.open_path(&path) {
            tracing::error!(file = %path.display(), error = %e, "cannot reopen the audit file");
        }
        self.rotating = false;
    }

    /// Sign off the chain (`close`) and flush.
    fn close(&mut self) {
        let written = self.needs_start != Some(Reason::Open) && self.write_checkpoint(Reason::Close);
        // Kept as the chain's end only once on disk (a power cut must not
        // leave a stored head past the file's end).
        if sync_file(self.file.as_deref()) && written {
            self.closed_at = self.head();
        }
        self.synced();
        self.file = None;
        self.file_id = None;
    }
}

/// The end of a log file at start.
enum Tail {
    /// New or empty.
    Empty,
    /// Its last line.
    Line(Box<vault_audit::Parsed>),
    /// Torn (no newline at the end: a crash mid-write) or not readable as a
    /// line of the format (longer than what is read back): a new chain.
    Unknown,
}

fn last_line(f: &mut File) -> Tail {
    let Ok(len) = f.metadata().map(|m| m.len()) else { return Tail::Unknown };
    if len == 0 {
        return Tail::Empty;
    }
    let Some(tail) = read_tail(f, len) else { return Tail::Unknown };
    let Some(body) = tail.strip_suffix(b"\n") else {
        // A torn last line: end it, so the next line is not glued to it
        // (the verifier reports the fragment where it is).
        let _ = (&*f).write_all(b"\n");
        return Tail::Unknown;
    };
    match body.rsplit(|b| *b == b'\n').next().map(vault_audit::parse_line) {
        // (Whole: a newline before it in what was read, or the whole file read.)
        Some(Ok(p)) if body.contains(&b'\n') || len <= TAIL_BYTES => Tail::Line(Box::new(p)),
        _ => Tail::Unknown,
    }
}

/// Where a starting writer's chain goes on (None: a new chain, `open`),
/// from the file's last line (`tail`; None: new, empty or unopenable), the
/// heads at which this device's chains were closed (kept in the barrier by
/// every server) and the newest of them this host closed for this path
/// (`mine`).
///
/// - The file ends with the validly signed `close` of a chain whose stored
///   head is that line (or none is stored): the chain resumes after it.
/// - It ends *before* (or off) the stored head of its chain: it was cut back
///   (or replaced by an older copy) while the server was stopped: the chain
///   continues from the stored head with a `continue`, so the verifier
///   reports the entries missing; an error is logged.
/// - It ends *after* it (resumed, then a crash): the unsigned tail cannot be
///   told from a cut; a new chain starts.
/// - The file is new or empty (rotated or removed while stopped): this
///   host's last chain for the path continues there with a `continue`.
fn start_point(
    path: &Path,
    tail: &Tail,
    key: &ed25519_dalek::VerifyingKey,
    closed: &[Head],
    mine: Option<&Head>,
) -> Option<(Link, Option<Reason>)> {
    let from =
        |h: &Head| (Link { node: h.node.clone(), seq: h.seq.saturating_add(1), prev: h.hash }, Some(Reason::Continue));
    let t = match tail {
        Tail::Line(t) => t,
        Tail::Unknown => return None,
        Tail::Empty => {
            let m = mine?;
            tracing::warn!(file = %path.display(), node = %m.node, closed_at = m.seq, "the audit file is new or empty: this server's chain continues there from where it was closed (rotated or removed while stopped)");
            return Some(from(m));
        }
    };
    let valid_close = matches!(&t.checkpoint, Some((_, Reason::Close, _))) && vault_audit::checkpoint_valid(key, t);
    let resume = (Link { node: t.link.node.clone(), seq: t.link.seq.saturating_add(1), prev: t.hash }, None);
    match closed.iter().find(|h| h.node == t.link.node) {
        Some(k) if t.link.seq < k.seq || (t.link.seq == k.seq && t.hash != k.hash) => {
            tracing::error!(
                file = %path.display(), node = %k.node, file_ends_at = t.link.seq, closed_at = k.seq,
                "the audit file does not end where this server closed its chain: it was cut back or replaced by an older copy; the chain continues from where it was closed, so the gap shows"
            );
            Some(from(k))
        }
        Some(_) | None if valid_close => {
            tracing::info!(file = %path.display(), node = %t.link.node, seq = t.link.seq, "audit chain resumed");
            // The chain goes on in the file that holds it (its `close` is the
            // file's last line): no `continue`, so a cut of the file's head
            // back to this point is still found.
            Some(resume)
        }
        _ => None,
    }
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

    fn body(i: usize) -> Vec<u8> {
        format!(r#"{{"type":"request","n":{i}}}"#).into_bytes()
    }

    fn start(path: &Path, entries: u64, key: &SigningKey, failures: Arc<AtomicU64>) -> Handle {
        Handle::start("audit-test".into(), opts(path, entries), FileDirs::Anywhere, key.clone(), &[], None, failures)
            .unwrap()
    }

    const T: Duration = Duration::from_secs(10);

    fn verify(key: &SigningKey, files: &[&Path]) -> Vec<vault_audit::Finding> {
        let mut v = vault_audit::Verifier::new(key.verifying_key());
        for f in files {
            v.file(&f.display().to_string(), &std::fs::read(f).unwrap());
        }
        v.finish(true)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_chain_rotate_and_resume_after_a_clean_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = SigningKey::from_bytes(&[3; 32]);
        let h = Arc::new(start(&path, 4, &key, Default::default()));
        // Many at once: leaders write for the others, entries unwaited mixed in.
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move {
                    if i % 3 == 0 {
                        let handed = h.queue(body(i));
                        if handed == Handed::Pending {
                            tokio::task::yield_now().await;
                            h.flush();
                        }
                        handed != Handed::Closed
                    } else {
                        h.record(body(i), T).await
                    }
                })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap());
        }
        // Rotate: the old file is moved away, a new one starts.
        let old = dir.path().join("audit.log.1");
        std::fs::rename(&path, &old).unwrap();
        h.rotate();
        assert!(h.record(body(1000), T).await);
        h.close(T).await;
        assert!(!h.record(body(1001), T).await, "closed: refused");
        assert_eq!(verify(&key, &[&old, &path]), vec![]);
        // The new file starts with a signed `continue`: it verifies alone, but
        // not without its first line.
        let first = |p: &Path| {
            vault_audit::parse_line(std::fs::read_to_string(p).unwrap().lines().next().unwrap().as_bytes()).unwrap()
        };
        assert_eq!(first(&path).checkpoint.unwrap().1, Reason::Continue);
        assert_eq!(verify(&key, &[&path]), vec![]);
        let headless = dir.path().join("headless.log");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&headless, &text[text.find('\n').unwrap() + 1..]).unwrap();
        assert!(
            verify(&key, &[&headless]).iter().any(|f| f.severity == vault_audit::Severity::Tampered && f.line == 1)
        );
        let written = |p: &Path| std::fs::read_to_string(p).unwrap().matches("\"type\":\"request\"").count();
        assert_eq!(written(&old) + written(&path), 201);
        // Restart: the chain goes on in the same file.
        let h = start(&path, 4, &key, Default::default());
        assert!(h.record(body(1002), T).await);
        drop(h); // Dropped: signs off as it stops.
        eventually_closed(&path);
        assert_eq!(verify(&key, &[&old, &path]), vec![]);
        let nodes: HashMap<String, ()> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| (vault_audit::parse_line(l.as_bytes()).unwrap().link.node, ()))
            .collect();
        assert_eq!(nodes.len(), 1, "one chain across the restart");
        // Another key's close is not resumed (a new chain starts).
        assert_eq!(
            Chain::new(opts(&path, 4), FileDirs::Anywhere, SigningKey::from_bytes(&[4; 32]), &[], None).needs_start,
            Some(Reason::Open)
        );
        assert_eq!(Chain::new(opts(&path, 4), FileDirs::Anywhere, key, &[], None).needs_start, None);
    }

    #[test]
    fn a_chain_reopened_after_a_failed_write_continues_with_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = SigningKey::from_bytes(&[6; 32]);
        let mut c = Chain::new(opts(&path, 100), FileDirs::Anywhere, key.clone(), &[], None);
        let unwaited = |i| {
            let mut b = Batch::default();
            b.push(&body(i), Waiter::Unwaited);
            b
        };
        assert!(c.write_entries(&unwaited(0), &mut Vec::new()).0);
        // As after a failed write: the file is closed, and reopened by the
        // next write (here a new file: the old one was moved away).
        let old = dir.path().join("audit.log.1");
        std::fs::rename(&path, &old).unwrap();
        c.file = None;
        assert!(c.write_entries(&unwaited(1), &mut Vec::new()).0);
        c.close();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().next().unwrap().contains("\"continue\""), "{text}");
        assert_eq!(
            verify(&key, &[&old, &path]).into_iter().filter(|f| f.severity == vault_audit::Severity::Tampered).count(),
            0
        );
        assert_eq!(verify(&key, &[&path]), vec![]);
    }

    /// Past the next look at the path (MOVE_CHECK_EVERY).
    async fn moved_check_due() {
        tokio::time::sleep(MOVE_CHECK_EVERY + Duration::from_millis(5)).await;
    }

    #[tokio::test]
    async fn a_file_moved_or_removed_under_the_writer_is_signed_off_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = SigningKey::from_bytes(&[8; 32]);
        let h = start(&path, 100, &key, Default::default());
        assert!(h.record(body(0), T).await);
        // Rotated without SIGHUP: the old file ends with `rotate`, the new one
        // starts with `continue`, and the two verify as one chain.
        let old = dir.path().join("audit.log.1");
        std::fs::rename(&path, &old).unwrap();
        moved_check_due().await;
        assert!(h.record(body(1), T).await);
        assert!(path.exists(), "the path was reopened");
        assert!(std::fs::read_to_string(&old).unwrap().lines().last().unwrap().contains("\"rotate\""));
        // Removed: entries go to a new file, not to the deleted one.
        std::fs::remove_file(&path).unwrap();
        moved_check_due().await;
        assert!(h.record(body(2), T).await);
        assert!(std::fs::read_to_string(&path).unwrap().contains("\"n\":2"));
        // Replaced by a directory (unwritable): refused, then written again
        // once the path is usable.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        moved_check_due().await;
        assert!(!h.record(body(3), T).await, "nothing can be written: refused");
        std::fs::remove_dir(&path).unwrap();
        // A link to /dev/null (or any other file) planted at the path: refused,
        // never "recorded" into it.
        std::os::unix::fs::symlink("/dev/null", &path).unwrap();
        moved_check_due().await;
        assert!(!h.record(body(5), T).await, "a link at the path: refused");
        std::fs::remove_file(&path).unwrap();
        let fifo = std::process::Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(fifo.success());
        moved_check_due().await;
        assert!(!h.record(body(6), T).await, "a FIFO at the path: refused, not hung");
        std::fs::remove_file(&path).unwrap();
        moved_check_due().await;
        assert!(h.record(body(4), T).await);
        let head = h.close(T).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().next().unwrap().contains("\"continue\""), "{text}");
        assert!(!text.contains("\"n\":3") && !text.contains("\"n\":5") && !text.contains("\"n\":6"));
        let last = vault_audit::parse_line(text.lines().last().unwrap().as_bytes()).unwrap();
        assert_eq!((last.link.seq, last.hash), (head.seq, head.hash));
        assert_eq!(verify(&key, &[&path]), vec![]);
        let f = verify(&key, &[&old]);
        assert_eq!(f, vec![], "{f:?}");
    }

    #[tokio::test]
    async fn a_hard_link_made_to_the_open_file_stops_the_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = SigningKey::from_bytes(&[10; 32]);
        let h = start(&path, 100, &key, Default::default());
        assert!(h.record(body(0), T).await);
        // As at a start: a file with another name is not written (the name
        // may be outside the allowed directories).
        let elsewhere = dir.path().join("elsewhere");
        std::fs::hard_link(&path, &elsewhere).unwrap();
        moved_check_due().await;
        assert!(!h.record(body(1), T).await, "refused while the file has two names");
        std::fs::remove_file(&elsewhere).unwrap();
        moved_check_due().await;
        assert!(h.record(body(2), T).await);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("\"n\":1") && text.contains("\"n\":2"), "{text}");
        h.close(T).await.unwrap();
        assert_eq!(verify(&key, &[&path]), vec![]);
    }

    #[tokio::test]
    async fn a_file_cut_back_to_an_earlier_close_is_not_resumed_from_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = SigningKey::from_bytes(&[9; 32]);
        let h = start(&path, 100, &key, Default::default());
        assert!(h.record(body(0), T).await);
        let first = h.close(T).await.unwrap();
        let cut_len = std::fs::metadata(&path).unwrap().len();
        // A restart resumes the chain; it is closed again later.
        let h = Handle::start(
            "t".into(),
            opts(&path, 100),
            FileDirs::Anywhere,
            key.clone(),
            std::slice::from_ref(&first),
            None,
            Default::default(),
        )
        .unwrap();
        assert!(h.record(body(1), T).await);
        assert_eq!(h.head().unwrap().node, first.node, "resumed");
        let second = h.close(T).await.unwrap();
        assert_eq!(verify(&key, &[&path]), vec![]);
        // Cut back to the first close while the server is stopped: a signed
        // close ends the file, and alone it verifies.
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut_len).unwrap();
        assert_eq!(verify(&key, &[&path]), vec![]);
        // The server knows where it closed the chain: it does not resume from
        // the cut but from its own head, and the gap shows.
        let h = Handle::start(
            "t".into(),
            opts(&path, 100),
            FileDirs::Anywhere,
            key.clone(),
            std::slice::from_ref(&second),
            None,
            Default::default(),
        )
        .unwrap();
        assert!(h.record(body(2), T).await);
        h.close(T).await.unwrap();
        let f = verify(&key, &[&path]);
        assert!(
            f.iter().any(|f| f.severity == vault_audit::Severity::Tampered && f.message.contains("missing")),
            "{f:?}"
        );
        // An intact file with the same head resumes as usual.
        assert_eq!(Chain::new(opts(&path, 4), FileDirs::Anywhere, key.clone(), &[], None).needs_start, None);
    }

    #[tokio::test]
    async fn a_start_checks_the_file_against_the_stored_heads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = SigningKey::from_bytes(&[10; 32]);
        let h = start(&path, 3, &key, Default::default());
        for i in 0..7 {
            assert!(h.record(body(i), T).await);
        }
        let head = h.close(T).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let cut_at = |n: usize| std::fs::write(&path, format!("{}\n", lines[..n].join("\n"))).unwrap();
        // Cut back to a `count` checkpoint, or to an entry: continued from the
        // stored head (not resumed from the cut, not a new chain).
        let count = lines.iter().position(|l| l.contains("\"count\"")).unwrap();
        for n in [count + 1, count + 2] {
            cut_at(n);
            let c = Chain::new(opts(&path, 3), FileDirs::Anywhere, key.clone(), std::slice::from_ref(&head), None);
            assert_eq!(c.needs_start, Some(Reason::Continue), "cut to line {n}");
            assert_eq!((c.link.node.as_str(), c.link.seq, c.link.prev), (head.node.as_str(), head.seq + 1, head.hash));
        }
        // Intact: resumed after its close.
        std::fs::write(&path, &text).unwrap();
        let c = Chain::new(opts(&path, 3), FileDirs::Anywhere, key.clone(), std::slice::from_ref(&head), None);
        assert_eq!((c.needs_start, c.link.seq), (None, head.seq + 1));
        // Gone or emptied while stopped (rotated): this host's chain goes on there.
        std::fs::remove_file(&path).unwrap();
        let c = Chain::new(opts(&path, 3), FileDirs::Anywhere, key.clone(), std::slice::from_ref(&head), Some(&head));
        assert_eq!((c.needs_start, c.link.node.as_str()), (Some(Reason::Continue), head.node.as_str()));
        // Resumed, then a crash (the chain went on after its stored head): a new chain.
        std::fs::write(&path, &text).unwrap();
        let h = Handle::start(
            "t".into(),
            opts(&path, 100),
            FileDirs::Anywhere,
            key.clone(),
            std::slice::from_ref(&head),
            None,
            Default::default(),
        )
        .unwrap();
        assert!(h.record(body(8), T).await);
        std::mem::forget(h); // No close: as a crash.
        let c = Chain::new(opts(&path, 3), FileDirs::Anywhere, key.clone(), std::slice::from_ref(&head), None);
        assert_eq!(c.needs_start, Some(Reason::Open));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_follows_the_close_and_torn_or_long_lines_do_not_lock_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = SigningKey::from_bytes(&[11; 32]);
        let h = Arc::new(start(&path, 100, &key, Default::default()));
        // The chain is started (a chain with no entry has nothing to close,
        // and the close may come before any racer).
        assert!(h.record(body(0), T).await);
        // Entries racing the close: each is written before the `close` or
        // refused; none after it.
        let racers: Vec<_> = (0..50)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move { h.record(body(i + 1), T).await })
            })
            .collect();
        let head = h.close(T).await.unwrap();
        let mut written = 1;
        for r in racers {
            written += usize::from(r.await.unwrap());
        }
        assert!(!h.record(body(99), T).await, "closed: refused");
        let text = std::fs::read_to_string(&path).unwrap();
        let last = vault_audit::parse_line(text.lines().last().unwrap().as_bytes()).unwrap();
        assert_eq!(last.checkpoint.unwrap().1, Reason::Close);
        assert_eq!((last.link.seq, last.hash), (head.seq, head.hash), "the head kept is the file's end");
        assert_eq!(text.matches("\"type\":\"request\"").count(), written);
        assert_eq!(verify(&key, &[&path]), vec![]);
        // A long last line (more than is read back) and a torn one (a crash
        // mid-write): the file still opens, a new chain starts after it.
        let long = format!(r#"{{"type":"request","pad":"{}"}}"#, "x".repeat(300 * 1024));
        let h = start(&path, 100, &key, Default::default());
        assert!(h.record(long.into_bytes(), T).await);
        drop(h);
        eventually_closed(&path);
        let h = start(&path, 100, &key, Default::default());
        assert!(h.record(body(100), T).await, "a long last line does not lock the file");
        h.close(T).await.unwrap();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"type\":\"req").unwrap();
        let h = start(&path, 100, &key, Default::default());
        assert!(h.record(body(101), T).await, "a torn last line does not lock the file");
        h.close(T).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("{\"type\":\"req\n"), "the torn line ended, not glued to the next");
        let f = verify(&key, &[&path]);
        assert_eq!(f.iter().filter(|f| f.severity == vault_audit::Severity::Tampered).count(), 1, "{f:?}");
    }

    /// Wait for the thread of a dropped handle to write its `close`.
    fn eventually_closed(path: &Path) {
        for _ in 0..500 {
            let text = std::fs::read_to_string(path).unwrap();
            if text.lines().last().is_some_and(|l| l.contains("\"close\"")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no close checkpoint");
    }

    #[tokio::test]
    async fn batch_fsync_answers_after_the_flush_and_interval_checkpoints_come() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = SigningKey::from_bytes(&[5; 32]);
        let mut m = serde_json::Map::new();
        m.insert("file_path".into(), path.display().to_string().into());
        m.insert("fsync".into(), "batch".into());
        m.insert("checkpoint_interval".into(), "1s".into());
        let h = Handle::start(
            "t".into(),
            Options::parse(&m).unwrap(),
            FileDirs::Anywhere,
            key.clone(),
            &[],
            None,
            Default::default(),
        )
        .unwrap();
        assert!(h.record(body(0), T).await);
        assert_eq!(h.queue(body(1)), Handed::Pending);
        h.flush();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"interval\""), "{text}");
        h.close(T).await;
        assert_eq!(verify(&key, &[&path]), vec![]);
    }

    #[test]
    fn modes_only_narrow_and_only_regular_audit_logs_open() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |p: &Path, why: &str| {
            let e = open(p, 0o600, &FileDirs::Anywhere).unwrap_err().to_string();
            assert!(e.contains(why), "{}: {e}", p.display());
        };
        // A foreign file: refused, and its mode left alone (checked first).
        let p = dir.path().join("f");
        std::fs::write(&p, b"root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        refused(&p, "not an audit log");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644, "untouched");
        // An audit log: narrowed, never widened.
        let log = dir.path().join("audit.log");
        std::fs::write(&log, format!("{}\n", String::from_utf8(body(0)).unwrap().replace('}', r#","chain":{"node":"a","seq":0,"prev":"0000000000000000000000000000000000000000000000000000000000000000"}}"#))).unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o600)).unwrap();
        open(&log, 0o644, &FileDirs::Anywhere).unwrap();
        assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600, "never widened");
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
        open(&log, 0o640, &FileDirs::Anywhere).unwrap();
        assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o640, "narrowed");
        assert!(is_audit_log(&mut open(&dir.path().join("new"), 0o600, &FileDirs::Anywhere).unwrap()));
        // Links, devices, FIFOs, directories, kernel interfaces.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&log, &link).unwrap();
        refused(&link, "symbolic link");
        let null = dir.path().join("null");
        std::os::unix::fs::symlink("/dev/null", &null).unwrap();
        refused(&null, "symbolic link");
        refused(Path::new("/dev/full"), "/dev");
        refused(Path::new("/proc/self/mem"), "/proc");
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        refused(&fifo, "not a regular file");
        refused(dir.path(), "");
    }

    #[test]
    fn a_short_write_then_a_failure_is_cut_off_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, b"before\n").unwrap();
        let f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        // The disk takes 5 bytes, then is full.
        let mut calls = 0;
        let r = append_whole(&f, b"0123456789\n", |mut f, b| {
            calls += 1;
            if calls == 1 { f.write(&b[..5]) } else { Err(std::io::Error::from_raw_os_error(28)) }
        });
        assert_eq!(r.unwrap_err().raw_os_error(), Some(28));
        assert_eq!(std::fs::read(&path).unwrap(), b"before\n", "nothing of the round stays");
        // Interrupted and short writes go on until all is written.
        let mut calls = 0;
        append_whole(&f, b"0123456789\n", |mut f, b| {
            calls += 1;
            match calls {
                1 => Err(std::io::ErrorKind::Interrupted.into()),
                2 => f.write(&b[..3]),
                _ => f.write(b),
            }
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"before\n0123456789\n");
    }

    #[tokio::test]
    async fn a_failed_write_is_refused_and_leaves_the_chain_intact() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let failures = Arc::new(AtomicU64::new(0));
        let h = start(Path::new("/dev/full"), 4, &key, failures.clone());
        assert!(!h.record(body(0), T).await);
        // An entry nobody waits for (a response entry) is counted instead.
        assert_eq!(h.queue(b"{}"), Handed::Pending);
        // Taken with the first, or (the thread, told, took the first
        // already) waiting on its own: written either way, never refused.
        assert_ne!(h.queue(b"{}"), Handed::Closed);
        h.flush();
        // Counted by whichever writer took them (the thread, perhaps later).
        for _ in 0..200 {
            if failures.load(Ordering::Relaxed) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(failures.load(Ordering::Relaxed), 2);
        h.close(T).await;
    }

    #[test]
    fn a_batch_keeps_bodies_in_order_and_bounds_its_bytes() {
        let mut b = Batch::default();
        for body in [&b"{\"a\":1}"[..], b"{}", b"{\"b\":\"x\"}"] {
            b.push(body, Waiter::Unwaited);
        }
        assert_eq!(b.bodies().collect::<Vec<_>>(), vec![&b"{\"a\":1}"[..], b"{}", b"{\"b\":\"x\"}"]);
        let mut taken = std::mem::take(&mut b);
        assert_eq!(taken.waiters().count(), 3);
        let room = taken.recycled();
        assert!(room.is_empty() && room.bytes.is_empty() && room.items.capacity() >= 3, "room kept for as many");
        // One entry larger than the bound is taken when little waits (red
        // team: a 110 MB response entry was dropped); a backlog is refused.
        assert!(b.has_room());
        b.push(&vec![b' '; MAX_QUEUED_BYTES + 1], Waiter::Unwaited);
        assert!(!b.has_room(), "bytes bounded, not only entries");
        let b = b.recycled();
        assert!(b.has_room() && b.bytes.capacity() == 0, "a burst's room is not kept");
    }

    #[tokio::test]
    async fn a_ticket_dropped_before_its_wait_still_has_its_entry_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = SigningKey::from_bytes(&[9; 32]);
        let h = start(&path, 100, &key, Default::default());
        // No writer at work: the ticket owes the flush, and pays it when
        // dropped (a request dropped between handing in and waiting).
        let ticket = h.hand_in(&body(7)).unwrap();
        assert!(ticket.flush);
        drop(ticket);
        assert!(std::fs::read_to_string(&path).unwrap().contains("\"n\":7"));
        h.close(T).await.unwrap();
        assert_eq!(verify(&key, &[&path]), vec![]);
    }

    /// Waits up to 2 s for `path` to hold entry `n`.
    async fn written_soon(path: &Path, n: usize) -> bool {
        for _ in 0..200 {
            if std::fs::read_to_string(path).unwrap_or_default().contains(&format!("\"n\":{n},")) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_response_entry_left_waiting_is_written_by_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = SigningKey::from_bytes(&[12; 32]);
        let h = start(&path, 100, &key, Default::default());
        // No writer at work, no request to take it, nobody flushes: the
        // thread, told, writes it, then looks every tick for a while.
        assert_eq!(h.queue(body(1)), Handed::Pending);
        assert!(written_soon(&path, 1).await);
        assert!(h.shared.ticking.load(Ordering::SeqCst));
        // While it looks, nothing is sent: still written, within a tick or two.
        assert_eq!(h.queue(body(2)), Handed::Pending);
        assert!(written_soon(&path, 2).await);
        // Idle long enough, it stops looking; the next entry tells it again.
        // (50 ticks of 2 ms, longer on a busy machine.)
        for _ in 0..300 {
            if !h.shared.ticking.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(TICK * 5).await;
        }
        assert!(!h.shared.ticking.load(Ordering::SeqCst), "stops looking when idle");
        assert_eq!(h.queue(body(3)), Handed::Pending);
        assert!(written_soon(&path, 3).await);
        h.close(T).await.unwrap();
        assert_eq!(verify(&key, &[&path]), vec![]);
    }
}
