//! Scheduled backups (`[backup]` in the server configuration): every
//! `interval`, one server of those sharing the storage (a lease row, as the
//! token tidy) takes a snapshot into `dir` (a temporary file, fsynced, then
//! renamed: a file is whole or absent; mode 0600), runs the restore drill on
//! it with the server's own keys, and prunes old files by retention (the
//! newest file of each of the last `keep_daily` days and of each of the last
//! `keep_monthly` months are kept). The outcome is logged and counted
//! (`State::last_success_timestamp_seconds`, `State::failures_total`).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{BackupError, drill, format};
use crate::barrier::now_unix;
use crate::core::Core;

/// File names: `vault-backup-YYYYMMDDTHHMMSSZ.snap`.
const PREFIX: &str = "vault-backup-";
const SUFFIX: &str = ".snap";
/// The lease row that makes one server of several take each backup.
const LEASE: &str = "scheduled-backup";

/// `[backup]` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Where backups are written (created 0700 if missing).
    pub dir: PathBuf,
    /// Time between backups.
    pub interval: Duration,
    /// Days for which the newest backup of the day is kept.
    pub keep_daily: u32,
    /// Months for which the newest backup of the month is kept.
    pub keep_monthly: u32,
}

/// Run scheduled backups until `stop` turns true.
pub async fn run(core: Arc<Core>, s: Schedule, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(s.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Ok(u) = core.unsealed() else {
            tracing::info!("scheduled backup skipped: the vault is sealed");
            continue;
        };
        let lease_secs = i64::try_from(s.interval.as_secs()).unwrap_or(i64::MAX).max(1);
        match crate::core::lease::try_claim(core.barrier(), &u, LEASE, lease_secs).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "scheduled backup: cannot take the lease");
                core.backup().record(false);
                continue;
            }
        }
        drop(u);
        match once(&core, &s).await {
            Ok((file, report)) => {
                core.backup().record(true);
                tracing::info!(
                    file = %file.display(),
                    entries = report.entries,
                    sha256 = %report.sha256,
                    "scheduled backup written and verified"
                );
            }
            Err(e) => {
                core.backup().record(false);
                tracing::error!(error = %e, "scheduled backup failed");
            }
        }
    }
}

/// One backup: write, verify, prune. Returns the file and the drill's report.
pub async fn once(core: &Core, s: &Schedule) -> Result<(PathBuf, drill::Report), BackupError> {
    let io = |what: &str, e: std::io::Error| BackupError::Io(format!("{what}: {e}"));
    ensure_dir(&s.dir).map_err(|e| io("cannot create the backup directory", e))?;
    let mut chunks = super::take(core).await?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".vault-backup-")
        .suffix(".tmp")
        .tempfile_in(&s.dir)
        .map_err(|e| io("cannot create a file in the backup directory", e))?;
    while let Some(chunk) = chunks.recv().await {
        tmp.write_all(&chunk?).map_err(|e| io("cannot write the backup", e))?;
    }
    tmp.as_file().sync_all().map_err(|e| io("cannot sync the backup", e))?;
    let name = file_name(now_unix());
    let path = s.dir.join(&name);
    tmp.persist_noclobber(&path).map_err(|e| io("cannot name the backup", e.error))?;
    sync_dir(&s.dir);
    let verified = verify_file(core, &path).await;
    let report = match verified {
        Ok(r) if r.verified => r,
        Ok(r) => {
            let _ = std::fs::remove_file(&path);
            return Err(BackupError::Invalid(format!(
                "the backup did not pass its drill: {} of {} entries did not open (removed)",
                r.failed, r.entries
            )));
        }
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    prune(&s.dir, s.keep_daily, s.keep_monthly).map_err(|e| io("cannot prune old backups", e))?;
    Ok((path, report))
}

/// Read a backup file back and run the drill on it with the server's keys.
async fn verify_file(core: &Core, path: &Path) -> Result<drill::Report, BackupError> {
    let bytes =
        tokio::fs::read(path).await.map_err(|e| BackupError::Io(format!("cannot read the backup back: {e}")))?;
    let parsed = format::parse(&bytes)?;
    let sha256 = format::sha256_hex(&bytes);
    drop(bytes);
    let mut report = drill::run(&parsed, drill::Keys::Server(core), None).await?;
    report.sha256 = sha256;
    Ok(report)
}

fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Make the rename durable (best effort: some filesystems refuse a directory fsync).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// `vault-backup-20261202T193000Z.snap` for a Unix time.
pub fn file_name(unix: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{PREFIX}{:04}{:02}{:02}T{:02}{:02}{:02}Z{SUFFIX}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The time stamp (`YYYYMMDDTHHMMSSZ`) of a backup file name, if it is one.
fn stamp(name: &str) -> Option<&str> {
    let s = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    (s.len() == 16 && s.as_bytes()[8] == b'T' && s.ends_with('Z')).then_some(s)
}

/// Which of `stamps` to keep: the newest of each of the `daily` most recent
/// days that have one, and of each of the `monthly` most recent months.
/// (Stamps sort as times: fixed-width digits.)
pub fn keep(stamps: &[String], daily: u32, monthly: u32) -> BTreeSet<String> {
    let mut sorted: Vec<&String> = stamps.iter().collect();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut kept = BTreeSet::new();
    for (len, n) in [(8usize, daily), (6, monthly)] {
        let mut periods = BTreeSet::new();
        for s in &sorted {
            let period = &s[..len];
            if periods.contains(period) {
                continue;
            }
            if periods.len() >= n as usize {
                break;
            }
            periods.insert(period.to_string());
            kept.insert((*s).clone());
        }
    }
    kept
}

/// Delete backups of `dir` that retention does not keep.
fn prune(dir: &Path, daily: u32, monthly: u32) -> std::io::Result<()> {
    let mut stamps = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(s) = e.file_name().to_str().and_then(stamp) {
            stamps.push(s.to_string());
        }
    }
    let kept = keep(&stamps, daily, monthly);
    for s in stamps.iter().filter(|s| !kept.contains(*s)) {
        let path = dir.join(format!("{PREFIX}{s}{SUFFIX}"));
        std::fs::remove_file(&path)?;
        tracing::info!(file = %path.display(), "old backup pruned by retention");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_stamps() {
        let n = file_name(1_796_211_000);
        assert_eq!(n, "vault-backup-20261202T113000Z.snap");
        assert_eq!(stamp(&n), Some("20261202T113000Z"));
        for bad in ["vault-backup-x.snap", "other.snap", ".vault-backup-20261202T113000Z.tmp", "vault-backup-.snap"] {
            assert_eq!(stamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn retention_keeps_newest_per_day_and_month() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let all = s(&[
            "20261202T120000Z",
            "20261202T060000Z",
            "20261201T120000Z",
            "20261130T230000Z",
            "20261130T010000Z",
            "20261015T000000Z",
            "20250101T000000Z",
        ]);
        let kept = keep(&all, 2, 3);
        let want: BTreeSet<String> =
            s(&["20261202T120000Z", "20261201T120000Z", "20261130T230000Z", "20261015T000000Z"]).into_iter().collect();
        assert_eq!(kept, want);
        // One per day on the same day: only the newest.
        assert_eq!(keep(&s(&["20261202T010000Z", "20261202T020000Z"]), 30, 12).len(), 1);
        // The newest is always kept while keep_daily >= 1.
        assert!(keep(&all, 1, 0).contains("20261202T120000Z"));
        assert!(keep(&[], 3, 3).is_empty());
    }
}
