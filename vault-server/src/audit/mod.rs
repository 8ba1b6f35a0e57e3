//! Audit devices (Vault's `sys/audit`), with a tamper-evident log: entries
//! in Vault's JSON shape with secrets hashed ([`entry`]), chained and
//! signed per the `vault-audit` format by one writer thread per device
//! ([`writer`]), devices and their keys kept in the barrier ([`table`]).
//!
//! The [`Broker`] is a request hook. With devices enabled it fails closed:
//! a request that no device could record is refused before anything runs
//! (Vault's rule); a response entry that no device could record is logged
//! and counted ([`Broker::failures`]), the answer being already decided.
//!
//! Devices are loaded at unseal before the core takes any request, reloaded
//! when the table changes (here or on another server: the change feed), and
//! closed with a signed `close` checkpoint on seal and shutdown. Keys leave
//! memory on seal (writer threads end, their keys zeroized on drop).

mod entry;
mod heads;
mod place;
mod stamp;
pub mod table;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::barrier::{Barrier, BarrierError, Batch, Unsealed};
use crate::core::hooks::{Hook, HookError, RequestEvent, ResponseEvent};
use crate::logical::{BoxFuture, LogicalError};
use crate::storage::{Expect, StorageError};

pub use place::FileDirs;
pub use table::TABLE_PATH;

/// Errors of the audit layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Bad input: options, paths, an unusable file (400).
    #[error("{0}")]
    Invalid(String),
    /// Sealed (503).
    #[error("Vault is sealed")]
    Sealed,
    /// Many concurrent table changes (retry).
    #[error("the audit device table is being changed by other requests; retry")]
    Busy,
    /// Internal failure; the detail is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl From<BarrierError> for AuditError {
    fn from(e: BarrierError) -> Self {
        match e {
            BarrierError::Sealed => AuditError::Sealed,
            other => AuditError::Internal(other.to_string()),
        }
    }
}

impl From<AuditError> for LogicalError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Invalid(m) => LogicalError::InvalidRequest(m),
            AuditError::Sealed => LogicalError::Sealed,
            AuditError::Busy => LogicalError::Busy(e.to_string()),
            AuditError::Internal(d) => LogicalError::Internal(d),
        }
    }
}

/// The refusal when no device could record a request.
pub const NOT_RECORDED: &str = "no audit device could record the request";

/// How long a request waits for its entry to be written before the device
/// counts as failed (a hung disk must not hang every request forever).
const RECORD_TIMEOUT: Duration = Duration::from_secs(10);

/// One running device.
struct Device {
    path: String,
    kind: String,
    description: String,
    options: table::Options,
    uuid: String,
    hasher: entry::Hasher,
    public_key: VerifyingKey,
    /// None: its writer could not start (every entry fails: closed).
    writer: Option<writer::Handle>,
}

impl Device {
    fn start(
        r: &table::Record,
        dirs: FileDirs,
        known: &heads::Known,
        response_failures: Arc<AtomicU64>,
    ) -> Arc<Device> {
        let signing = SigningKey::from_bytes(&r.signing_seed);
        let public_key = signing.verifying_key();
        let name = format!("audit-{}", r.path.trim_end_matches('/'));
        let writer = writer::Handle::start(
            name,
            r.options.clone(),
            dirs,
            signing,
            &known.all,
            known.mine.as_ref(),
            response_failures,
        )
        .inspect_err(|e| tracing::error!(error = %e, "cannot start the audit writer thread"))
        .ok();
        Arc::new(Device {
            path: r.path.clone(),
            kind: r.kind.clone(),
            description: r.description.clone(),
            options: r.options.clone(),
            uuid: r.uuid.clone(),
            hasher: entry::Hasher::new(&r.hmac_key, r.options.hmac_accessor),
            public_key,
            writer,
        })
    }

    /// Hand in the request entry of `e`, to wait for (None: not written or
    /// refused by the writer: closed, or too much waiting); `keep` is given
    /// its `auth` and `request` blocks once it is handed in.
    fn hand_in(&self, e: &RequestEvent<'_>, time: &str, keep: impl FnOnce(&[u8])) -> Option<writer::Ticket<'_>> {
        let w = self.writer.as_ref()?;
        with_scratch(|buf| {
            let shared = self.hasher.write_request_entry(e, time, buf)?;
            let ticket = w.hand_in(buf)?;
            keep(buf.get(shared).unwrap_or_default());
            Some(ticket)
        })
    }

    /// Hand in the entry `make` writes without waiting (the writer counts a
    /// failure to write it; one not written is `Closed`).
    fn queue(&self, make: impl FnOnce(&entry::Hasher, &mut Vec<u8>) -> bool) -> writer::Handed {
        let Some(w) = &self.writer else { return writer::Handed::Closed };
        with_scratch(|buf| if make(&self.hasher, buf) { w.queue(buf) } else { writer::Handed::Closed })
    }

    /// Sign off and stop the writer (waits for the `close` checkpoint);
    /// the chain's head at its `close`.
    async fn close(&self) -> Option<writer::Head> {
        match &self.writer {
            Some(w) => w.close(RECORD_TIMEOUT).await,
            None => None,
        }
    }

    fn listing(&self) -> Value {
        // This server's chain head: `vaultctl audit verify --device` checks
        // that the files reach it (a cut of a live file's unsigned tail).
        let chain = self
            .writer
            .as_ref()
            .and_then(writer::Handle::head)
            .map(|h| serde_json::json!({"node": h.node, "seq": h.seq, "hash": hex::encode(h.hash)}));
        serde_json::json!({
            "chain": chain,
            "type": self.kind,
            "description": self.description,
            "options": self.options.to_map(),
            "path": self.path,
            "local": false,
            "public_key": vault_audit::encode_public_key(&self.public_key),
        })
    }
}

/// The devices in use: (table revision they were loaded from, devices).
#[derive(Default)]
struct Installed {
    rev: Option<i64>,
    devices: Vec<Arc<Device>>,
    /// Audited requests recorded by these devices whose response entry is
    /// not handed in yet (a device removed waits for them before it closes).
    in_flight: Arc<AtomicU64>,
}

/// The audit devices of a core, and the hook that records every request.
#[derive(Default)]
pub struct Broker {
    installed: RwLock<Arc<Installed>>,
    /// Whether any device is installed (read on every request).
    any: AtomicBool,
    /// Moved by every seal: a load that read the table before a seal must
    /// not install devices (keys) after it.
    seals: AtomicU64,
    /// Serializes loads (the table is read, then devices are started and stopped).
    loading: tokio::sync::Mutex<()>,
    request_failures: AtomicU64,
    /// Shared with the writers, which count the response entries they could not write.
    response_failures: Arc<AtomicU64>,
    /// Where file devices may write (configuration, not the API: [`place`]).
    file_dirs: RwLock<FileDirs>,
    /// Audited requests whose response entry is not handed in yet (a seal
    /// waits for them before the chains close).
    in_flight: Arc<AtomicU64>,
    /// A seal is closing the devices: new requests are refused.
    closing: AtomicBool,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("devices", &self.current().devices.len()).finish_non_exhaustive()
    }
}

/// Devices at most (each has a thread and hashes every entry again).
const MAX_DEVICES: usize = 16;

/// Attempts at a table change before answering "busy".
const MAX_TABLE_ATTEMPTS: u32 = 8;

impl Broker {
    fn current(&self) -> Arc<Installed> {
        self.installed.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Set where file devices may write (`[audit] file_dirs`; before the
    /// first unseal: devices loaded earlier keep the old setting).
    pub fn configure_files(&self, dirs: FileDirs) {
        *self.file_dirs.write().unwrap_or_else(|p| p.into_inner()) = dirs;
    }

    fn file_dirs(&self) -> FileDirs {
        self.file_dirs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn install(&self, i: Installed) {
        self.any.store(!i.devices.is_empty(), Ordering::Release);
        *self.installed.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(i);
    }

    /// Requests refused because no device could record them, plus response
    /// entries a device could not write (for the metrics exporter).
    pub fn failures(&self) -> u64 {
        self.request_failures.load(Ordering::Relaxed) + self.response_failures.load(Ordering::Relaxed)
    }

    /// Response entries a device could not write (counted per device).
    pub fn response_failures(&self) -> u64 {
        self.response_failures.load(Ordering::Relaxed)
    }

    /// Requests refused because no device could record them.
    pub fn request_failures(&self) -> u64 {
        self.request_failures.load(Ordering::Relaxed)
    }

    async fn read_table(barrier: &Barrier, u: &Unsealed) -> Result<(Vec<table::Record>, Option<i64>), AuditError> {
        match barrier.get_with_rev(u, TABLE_PATH).await? {
            None => Ok((Vec::new(), None)),
            Some((raw, rev)) => Ok((table::decode(&raw)?, Some(rev))),
        }
    }

    /// Bring the running devices in line with the stored table: start new
    /// ones, stop (sign off) removed ones. Called at unseal before the core
    /// serves, after a local change, and on change-feed events.
    pub async fn load(&self, barrier: &Barrier, u: &Unsealed) -> Result<(), AuditError> {
        let _one = self.loading.lock().await;
        let seals = self.seals.load(Ordering::Acquire);
        let (records, rev) = Self::read_table(barrier, u).await?;
        let old = self.current();
        if let (Some(have), Some(read)) = (old.rev, rev)
            && read < have
        {
            return Ok(()); // A newer table is installed already.
        }
        if self.seals.load(Ordering::Acquire) != seals || barrier.is_sealed() {
            return Ok(());
        }
        let mut devices = Vec::new();
        for r in &records {
            match old.devices.iter().find(|d| d.uuid == r.uuid) {
                Some(d) => devices.push(d.clone()),
                None => {
                    let known = heads::read(barrier, u, &r.uuid, r.options.file_path()).await;
                    devices.push(Device::start(r, self.file_dirs(), &known, self.response_failures.clone()));
                }
            }
        }
        let gone: Vec<_> = old.devices.iter().filter(|d| !records.iter().any(|r| r.uuid == d.uuid)).cloned().collect();
        self.install(Installed { rev, devices, in_flight: Arc::default() });
        if !gone.is_empty() {
            // The requests the removed devices recorded get their response
            // entries first (they still see the old list: `Recorded`).
            wait_for(&old.in_flight, "a device was disabled").await;
        }
        for d in gone {
            d.close().await;
            heads::forget(barrier, u, &d.uuid).await;
        }
        Ok(())
    }

    /// Sign off every device and stop (before a seal or shutdown), keeping
    /// each chain's closing head in the barrier (a restarted server checks
    /// its file against it). Requests still arriving are refused until the
    /// seal completes ([`Broker::clear`]).
    pub async fn close(&self, barrier: &Barrier, u: Option<&Unsealed>) {
        // Before the lock: a request in flight may be changing the device
        // table (enable, disable), which loads under it.
        self.drain().await;
        let _one = self.loading.lock().await;
        let old = self.current();
        for d in &old.devices {
            if let (Some(head), Some(u)) = (d.close().await, u) {
                heads::keep(barrier, u, &d.uuid, d.options.file_path(), &head).await;
            }
        }
    }

    /// Before the chains close: refuse new requests, and wait (at most
    /// [`DRAIN_TIMEOUT`]) for the audited requests in flight to hand in their
    /// response entries, so the `close` checkpoint signs them too (a request
    /// answered after it could not be recorded: its keys are gone).
    async fn drain(&self) {
        // SeqCst with `on_request`'s count-then-look: either a request sees
        // `closing`, or this sees it counted.
        self.closing.store(true, Ordering::SeqCst);
        wait_for(&self.in_flight, "the seal").await;
    }

    /// Drop every device and its keys (the seal). Writers not closed yet
    /// sign off as they stop.
    pub fn clear(&self) {
        self.seals.fetch_add(1, Ordering::AcqRel);
        self.install(Installed::default());
        self.closing.store(false, Ordering::SeqCst);
    }

    /// SIGHUP: every file device reopens its file (after log rotation).
    pub fn rotate(&self) {
        for d in &self.current().devices {
            if let Some(w) = &d.writer {
                w.rotate();
            }
        }
    }

    /// `GET sys/audit`: path -> device (with its public key).
    pub fn list(&self) -> Map<String, Value> {
        self.current().devices.iter().map(|d| (d.path.clone(), d.listing())).collect()
    }

    /// `sys/audit-hash/{path}`: what the device writes for `input`.
    pub fn hash(&self, path: &str, input: &str) -> Result<String, AuditError> {
        let path = table::normalize(path)?;
        let current = self.current();
        let d = current
            .devices
            .iter()
            .find(|d| d.path == path)
            .ok_or_else(|| AuditError::Invalid(format!("unknown audit device '{path}'")))?;
        Ok(d.hasher.hash(input))
    }

    /// Read-modify-write of the table (revision-guarded against other
    /// servers), then load it here.
    async fn change(
        &self,
        barrier: &Barrier,
        u: &Unsealed,
        mut f: impl FnMut(&mut Vec<table::Record>) -> Result<bool, AuditError>,
    ) -> Result<(), AuditError> {
        for attempt in 0..MAX_TABLE_ATTEMPTS {
            let (mut records, rev) = Self::read_table(barrier, u).await?;
            if !f(&mut records)? {
                return Ok(());
            }
            let mut batch = Batch::new();
            batch.put_expect(u, TABLE_PATH, &table::encode(&records), rev.map_or(Expect::Absent, Expect::Rev));
            match barrier.write(batch).await {
                Ok(()) => return self.load(barrier, u).await,
                Err(BarrierError::Storage(StorageError::Conflict(_))) => {
                    let ms = 1u64 << attempt.min(6);
                    tokio::time::sleep(Duration::from_millis(ms + rand::random_range(0..=ms))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuditError::Busy)
    }

    /// `PUT sys/audit/{path}`: enable a device (new keys). The file must
    /// open now, so a typo is a 400 rather than a server that refuses
    /// every request.
    pub async fn enable(
        &self,
        barrier: &Barrier,
        u: &Unsealed,
        path: &str,
        kind: &str,
        description: String,
        options: &Map<String, Value>,
    ) -> Result<(), AuditError> {
        let path = table::normalize(path)?;
        if kind != "file" {
            return Err(AuditError::Invalid(format!("unsupported audit device type '{kind}': only 'file'")));
        }
        let options = table::Options::parse(options)?;
        let mut file_id = None;
        if let table::Sink::File(p) = &options.sink {
            let f = writer::open(p, options.mode, &self.file_dirs())
                .map_err(|e| AuditError::Invalid(format!("cannot open the audit file {}: {e}", p.display())))?;
            let meta = f.metadata().map_err(|e| AuditError::Invalid(format!("cannot read {}: {e}", p.display())))?;
            use std::os::unix::fs::MetadataExt as _;
            file_id = Some((meta.dev(), meta.ino()));
        }
        let hmac_key = crate::crypto::random::key32().map_err(|e| AuditError::Internal(e.to_string()))?;
        let signing_seed = crate::crypto::random::key32().map_err(|e| AuditError::Internal(e.to_string()))?;
        let uuid = crate::crypto::random::uuid();
        self.change(barrier, u, |records| {
            if records.len() >= MAX_DEVICES {
                return Err(AuditError::Invalid(format!("at most {MAX_DEVICES} audit devices")));
            }
            if records.iter().any(|r| r.path == path) {
                return Err(AuditError::Invalid(format!("path already in use: {path}")));
            }
            // The same file under another name too (`..`, a link): two
            // chains and two keys in one file fail each other's verify.
            let same_file = |r: &table::Record| match (&r.options.sink, file_id) {
                (table::Sink::File(q), Some(id)) => {
                    use std::os::unix::fs::MetadataExt as _;
                    std::fs::metadata(q).is_ok_and(|m| (m.dev(), m.ino()) == id)
                }
                _ => false,
            };
            if options.sink != table::Sink::Stdout
                && records.iter().any(|r| r.options.sink == options.sink || same_file(r))
            {
                return Err(AuditError::Invalid("another audit device writes that file already".into()));
            }
            records.push(table::Record {
                path: path.clone(),
                kind: kind.to_string(),
                description: description.clone(),
                options: options.clone(),
                uuid: uuid.clone(),
                hmac_key: Zeroizing::new(*hmac_key),
                signing_seed: Zeroizing::new(*signing_seed),
            });
            Ok(true)
        })
        .await
    }

    /// `DELETE sys/audit/{path}`: disable (its writer signs off the chain).
    /// Disabling a path with no device succeeds (as Vault).
    pub async fn disable(&self, barrier: &Barrier, u: &Unsealed, path: &str) -> Result<(), AuditError> {
        let path = table::normalize(path)?;
        self.change(barrier, u, |records| {
            let before = records.len();
            records.retain(|r| r.path != path);
            Ok(records.len() != before)
        })
        .await
    }

    /// Give every device the request entry of `e`; true if at least one
    /// wrote it. Each device's `auth` and `request` blocks are kept in
    /// `blocks` (device `i`'s end at `ends[i]`) for its response entry.
    async fn record_request(
        devices: &[Arc<Device>],
        e: &RequestEvent<'_>,
        time: &str,
        blocks: &mut Vec<u8>,
        ends: &mut [u32; MAX_DEVICES],
    ) -> bool {
        let mut end_here = |i: usize, blocks: &Vec<u8>| {
            if let Some(slot) = ends.get_mut(i) {
                *slot = u32::try_from(blocks.len()).unwrap_or(u32::MAX);
            }
        };
        if let [d] = devices {
            // The usual case: no futures to join (no allocation).
            let ticket = d.hand_in(e, time, |b| blocks.extend_from_slice(b));
            end_here(0, blocks);
            return match ticket {
                Some(ticket) => ticket.wait(RECORD_TIMEOUT).await,
                None => false,
            };
        }
        let mut tickets = Vec::with_capacity(devices.len());
        for (i, d) in devices.iter().enumerate() {
            tickets.extend(d.hand_in(e, time, |b| blocks.extend_from_slice(b)));
            end_here(i, blocks);
        }
        let waits = tickets.into_iter().map(|t| t.wait(RECORD_TIMEOUT));
        futures_util::future::join_all(waits).await.into_iter().any(|ok| ok)
    }
}

/// How long a seal (or a device's removal) waits for audited requests in
/// flight to be answered.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Wait until `count` requests in flight are none (at most [`DRAIN_TIMEOUT`]).
async fn wait_for(count: &AtomicU64, what: &str) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while count.load(Ordering::SeqCst) > 0 {
        if tokio::time::Instant::now() >= deadline {
            tracing::error!(
                requests = count.load(Ordering::SeqCst),
                "audited requests still running at {what}: their response entries will not be recorded"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// What the broker keeps of one request from its request entry to its
/// response entry: the devices that recorded it and each one's `auth` and
/// `request` blocks (the response entry repeats them: written and hashed
/// once). Counted in flight until dropped (with the request), so a seal can
/// wait for its response entry.
pub struct Carry(std::sync::OnceLock<Recorded>);

impl Carry {
    /// Nothing recorded yet.
    pub const fn new() -> Self {
        Carry(std::sync::OnceLock::new())
    }
}

impl std::fmt::Debug for Carry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Carry").field("recorded", &self.0.get().is_some()).finish()
    }
}

impl Default for Carry {
    fn default() -> Self {
        Self::new()
    }
}

struct Recorded {
    /// The devices that recorded it (weak: a seal drops their keys even
    /// while the request runs on; and no other device list can take this
    /// one's address while it is held).
    installed: std::sync::Weak<Installed>,
    /// The blocks of device `i` end at `ends[i]` and start where the
    /// previous device's end (empty: none kept).
    blocks: Vec<u8>,
    ends: [u32; MAX_DEVICES],
    _counted: Option<InFlight>,
}

impl Recorded {
    /// The blocks device `i` of `current` wrote in the request entry, if
    /// the devices are the same as then.
    fn blocks_of(&self, current: &Arc<Installed>, i: usize) -> Option<&[u8]> {
        if !std::ptr::eq(self.installed.as_ptr(), Arc::as_ptr(current)) {
            return None;
        }
        let start = if i == 0 { 0 } else { *self.ends.get(i - 1)? as usize };
        let end = *self.ends.get(i)? as usize;
        self.blocks.get(start..end).filter(|b| !b.is_empty())
    }
}

/// One audited request in flight, counted for the seal and for its
/// device list (the counts drop with it).
struct InFlight {
    all: Arc<AtomicU64>,
    list: Arc<AtomicU64>,
}

impl InFlight {
    fn enter(all: &Arc<AtomicU64>, list: &Arc<AtomicU64>) -> Self {
        all.fetch_add(1, Ordering::SeqCst);
        list.fetch_add(1, Ordering::SeqCst);
        InFlight { all: all.clone(), list: list.clone() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.list.fetch_sub(1, Ordering::SeqCst);
        self.all.fetch_sub(1, Ordering::SeqCst);
    }
}

thread_local! {
    /// Where this thread writes an entry before a device copies it in
    /// (reused: no allocation per entry).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A huge entry's buffer is not kept (a LIST of many keys).
const SCRATCH_KEPT: usize = 64 * 1024;

/// Run `f` with this thread's entry buffer (a fresh one if it is in use:
/// `f` does not re-enter, but nothing breaks if it did).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut buf) => {
            let r = f(&mut buf);
            if buf.capacity() > SCRATCH_KEPT {
                *buf = Vec::new();
            }
            r
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// `sys/health` is neither recorded nor refused (as in Vault, which audits
/// no status endpoint): probes ask every few seconds and learn nothing
/// secret, and a failing audit device must not fail a liveness probe, whose
/// restart of the server would lose the unseal (the requests that matter
/// are still refused: docs/metrics.md, "Health probes").
fn unaudited(e: &RequestEvent<'_>) -> bool {
    // Spelled as the raw router reads it (`sys_raw::handle` ignores a trailing `/`).
    e.path.trim_end_matches('/') == "sys/health"
}

impl Hook for Broker {
    fn wants_response_data(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    fn on_request<'a>(&'a self, e: &'a RequestEvent<'a>) -> BoxFuture<'a, Result<(), HookError>> {
        Box::pin(async move {
            let current = self.current();
            if current.devices.is_empty() || unaudited(e) {
                return Ok(());
            }
            // Counted before `closing` is read (see `drain`).
            let counted = InFlight::enter(&self.in_flight, &current.in_flight);
            if self.closing.load(Ordering::SeqCst) {
                // Not an audit failure: answered as the sealed vault it is about to be.
                return Err(HookError::Sealing);
            }
            let time = stamp::Stamp::now();
            let mut blocks = Vec::new();
            let mut ends = [0; MAX_DEVICES];
            if Self::record_request(&current.devices, e, time.as_str(), &mut blocks, &mut ends).await {
                let _counted = (!not_waited_for(e)).then_some(counted);
                let installed = Arc::downgrade(&current);
                // (Set once: a request passes its request hook once.)
                let _ = e.audit.0.set(Recorded { installed, blocks, ends, _counted });
                return Ok(());
            }
            drop(counted);
            self.request_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(request_id = e.request_id, "{NOT_RECORDED}: refused");
            Err(HookError::Refused(NOT_RECORDED.into()))
        })
    }

    fn on_response<'a>(&'a self, e: &'a ResponseEvent<'a>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let recorded = e.request.audit.0.get();
            if recorded.is_none() && self.closing.load(Ordering::SeqCst) {
                // Refused by a seal's drain (503, never recorded): not a
                // response entry lost.
                return;
            }
            // The devices that recorded the request (one removed since waits
            // for this entry before it closes), else those in use.
            let list = recorded.and_then(|r| r.installed.upgrade()).unwrap_or_else(|| self.current());
            if list.devices.is_empty() || unaudited(e.request) {
                return;
            }
            // Queued, not waited for: the answer is decided, and the
            // request entry already holds the request to its device. It is
            // written with the next round (a request's) or by the device's
            // thread within milliseconds; the writer counts (and logs) an
            // entry it cannot write; the queue is ordered, so a later seal
            // still signs it off.
            let time = stamp::Stamp::now();
            for (i, d) in list.devices.iter().enumerate() {
                let shared = recorded.and_then(|r| r.blocks_of(&list, i));
                if d.queue(|h, buf| h.write_response_entry(e, time.as_str(), shared, buf)) == writer::Handed::Closed {
                    self.response_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        request_id = e.request.request_id,
                        device = %d.path,
                        "the response entry could not be handed to the audit device (closed, or too much waiting): not recorded"
                    );
                }
            }
        })
    }
}

/// Requests a seal or a device's removal does not wait for: raw `sys/`
/// endpoints (the seal's own request, which is the one waiting; snapshot
/// restores, which seal; unseal, init and ceremonies, whose bodies are read
/// after the hooks, so a slow client could hold every seal) and device
/// changes (whose own request does the removing). Their response entries
/// are written when they come, to the devices then open.
fn not_waited_for(e: &RequestEvent<'_>) -> bool {
    (e.mount == "sys/" && e.route.is_empty()) || e.path.starts_with("sys/audit/")
}
