//! Where a file audit device may write (`[audit] file_dirs`).
//!
//! A device's `file_path` comes from the API, i.e. from any token with
//! `sudo` on `sys/audit/*`, and the server appends to it every request path,
//! anyone's. Left unconfined, that token could create a file the host runs
//! (`/etc/profile.d/x.sh`, a cron directory) whose lines hold a request
//! path such as `$(...)`: the class of Vault's CVE-2025-6000 (HCSEC-2025-14)
//! and OpenBao's CVE-2025-54997. A server therefore writes audit files only
//! below directories its operator listed in the configuration file, which
//! an API token cannot change; `vault-server dev` allows any place.
//!
//! Each open (enable, restart, rotation, reopen of a moved file) resolves
//! the path below its directory with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` (Linux ≥ 5.6): neither `..` nor a link planted in
//! the directory can lead out of it, also when the directory changes after
//! the device was enabled.

use std::fs::File;
use std::io::{Error, ErrorKind};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// The directories file devices may write below.
#[derive(Clone, PartialEq, Eq)]
pub enum FileDirs {
    /// Anywhere the server can create a file (`vault-server dev` only).
    Anywhere,
    /// Below these directories (none: no file device can be enabled).
    Under(Arc<[Dir]>),
}

/// One allowed directory: as configured, resolved once at start, and the
/// directory found there then (device, inode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir {
    given: PathBuf,
    real: PathBuf,
    id: (u64, u64),
}

impl std::fmt::Debug for FileDirs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileDirs::Anywhere => f.write_str("Anywhere"),
            FileDirs::Under(d) => f.debug_list().entries(d.iter().map(|d| &d.given)).finish(),
        }
    }
}

impl Default for FileDirs {
    /// Nowhere: a server without `[audit] file_dirs` only has `stdout` devices.
    fn default() -> Self {
        FileDirs::Under(Arc::from(Vec::new()))
    }
}

/// Kernel interfaces that look like files (`/proc/self/mem`).
const SPECIAL: [&str; 3] = ["/proc", "/sys", "/dev"];

/// A directory below which files run or configure things (the root, system
/// trees, homes): a place an audit file should not be chosen from.
fn broad(real: &Path) -> bool {
    const TREES: [&str; 7] = ["/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/boot"];
    const EXACT: [&str; 6] = ["/", "/var", "/root", "/home", "/opt", "/srv"];
    TREES.iter().any(|t| real.starts_with(t)) || EXACT.iter().any(|e| real == Path::new(e))
}

impl FileDirs {
    /// The configured directories: absolute, existing directories outside
    /// /proc, /sys and /dev. The message names the offending entry.
    pub fn from_config(dirs: &[PathBuf]) -> Result<FileDirs, String> {
        let mut out = Vec::new();
        for given in dirs {
            if !given.is_absolute() {
                return Err(format!("audit.file_dirs: {} is not an absolute path", given.display()));
            }
            let real =
                std::fs::canonicalize(given).map_err(|e| format!("audit.file_dirs: {}: {e}", given.display()))?;
            let m = std::fs::metadata(&real).map_err(|e| format!("audit.file_dirs: {}: {e}", given.display()))?;
            if !m.is_dir() {
                return Err(format!("audit.file_dirs: {} is not a directory", given.display()));
            }
            if SPECIAL.iter().any(|p| real.starts_with(p)) {
                return Err(format!("audit.file_dirs: {} is in {}", given.display(), real.display()));
            }
            if broad(&real) {
                // Allowed (the operator's choice), but said: any token with
                // `sudo` on sys/audit may then create files there.
                tracing::warn!(
                    dir = %real.display(),
                    "audit.file_dirs names a system directory: a token with sudo on sys/audit can create files \
                     anywhere below it (a cron or profile script); prefer a directory of its own such as /var/log/vault"
                );
            }
            use std::os::unix::fs::MetadataExt as _;
            out.push(Dir { given: given.clone(), real, id: (m.dev(), m.ino()) });
        }
        Ok(FileDirs::Under(Arc::from(out)))
    }

    /// Open `path` for appending, creating it with `mode`, without following
    /// a link as its last component and without blocking on a FIFO.
    pub fn open(&self, path: &Path, mode: u32) -> std::io::Result<File> {
        let flags = OFlags::RDWR | OFlags::APPEND | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK;
        let mode = Mode::from_raw_mode(mode);
        match self {
            FileDirs::Anywhere => {
                refuse_special_place(path)?;
                Ok(File::from(rustix::fs::open(path, flags | OFlags::CLOEXEC, mode).map_err(explain)?))
            }
            FileDirs::Under(dirs) => {
                let (dir, rel) = Self::below(dirs, path)?;
                // The directory itself, without following a link anywhere on
                // its (canonical) path, and only if it is still the one found
                // at start: whoever may write a parent directory must not
                // swap it for a link to /etc or for another directory.
                let fd = rustix::fs::openat2(
                    rustix::fs::CWD,
                    &dir.real,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
                )
                .map_err(|e| Error::other(format!("cannot open the directory {}: {e}", dir.given.display())))?;
                let st = rustix::fs::fstat(&fd)?;
                if (st.st_dev, st.st_ino) != dir.id {
                    return Err(Error::other(format!(
                        "the directory {} was replaced since the server started",
                        dir.given.display()
                    )));
                }
                let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
                let f = rustix::fs::openat2(&fd, rel, flags | OFlags::CLOEXEC, mode, resolve).map_err(|e| {
                    if e == rustix::io::Errno::XDEV || e == rustix::io::Errno::LOOP {
                        Error::other(format!(
                            "a symbolic link in the path would lead out of {} (audit files are opened without following links)",
                            dir.given.display()
                        ))
                    } else {
                        explain(e)
                    }
                })?;
                Ok(File::from(f))
            }
        }
    }

    /// The allowed directory `path` is below, and the rest of it.
    fn below<'a>(dirs: &'a [Dir], path: &'a Path) -> std::io::Result<(&'a Dir, &'a Path)> {
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(Error::new(ErrorKind::InvalidInput, "'..' is not allowed in an audit file path"));
        }
        dirs.iter()
            .find_map(|d| {
                [&d.given, &d.real]
                    .into_iter()
                    .find_map(|base| path.strip_prefix(base).ok())
                    .filter(|rel| rel.components().next().is_some())
                    .map(|rel| (d, rel))
            })
            .ok_or_else(|| {
                let listed: Vec<String> = dirs.iter().map(|d| d.given.display().to_string()).collect();
                let msg = if listed.is_empty() {
                    "this server writes audit files nowhere: list the directories allowed for them in its \
                     configuration file ([audit] file_dirs), or use file_path=stdout"
                        .to_string()
                } else {
                    format!(
                        "audit files must be below a directory listed in the server configuration ([audit] file_dirs): {}",
                        listed.join(", ")
                    )
                };
                Error::new(ErrorKind::PermissionDenied, msg)
            })
    }
}

/// An open's error, a link at the path said as such.
fn explain(e: rustix::io::Errno) -> Error {
    if e == rustix::io::Errno::LOOP {
        Error::other("it is a symbolic link: give the file itself")
    } else {
        Error::from(e)
    }
}

/// Refuse kernel interfaces as audit files (`/proc/self/mem` looks like an
/// empty regular file): the directory is resolved first, so `..` and links
/// do not hide them.
fn refuse_special_place(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let real = std::fs::canonicalize(dir)?;
    if SPECIAL.iter().any(|p| real.starts_with(p)) {
        return Err(Error::other(format!(
            "it is in {}: an audit file must be a regular file on a file system",
            real.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_directories_are_told_apart() {
        for d in ["/", "/etc", "/etc/cron.d", "/usr/local/bin", "/root", "/var", "/boot/efi"] {
            assert!(broad(Path::new(d)), "{d}");
        }
        for d in ["/var/log/vault", "/srv/vault/audit", "/tmp/x", "/home/vault/logs", "/etcetera"] {
            assert!(!broad(Path::new(d)), "{d}");
        }
    }

    #[test]
    fn files_open_only_below_the_configured_directories() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("logs");
        let outside = root.path().join("etc");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let dirs = FileDirs::from_config(std::slice::from_ref(&allowed)).unwrap();

        dirs.open(&allowed.join("a.log"), 0o600).unwrap();
        dirs.open(&allowed.join("sub/b.log"), 0o600).unwrap();

        let refused = |p: PathBuf| dirs.open(&p, 0o600).unwrap_err().to_string();
        assert!(refused(outside.join("x.sh")).contains("[audit] file_dirs"));
        assert!(refused(allowed.clone()).contains("[audit] file_dirs"), "the directory itself is no file");
        assert!(refused(allowed.join("../etc/x.sh")).contains(".."));
        // A link in the directory (planted before or after the enable) leads nowhere.
        std::os::unix::fs::symlink(&outside, allowed.join("out")).unwrap();
        assert!(refused(allowed.join("out/x.sh")).contains("symbolic link"));
        std::os::unix::fs::symlink(outside.join("y.sh"), allowed.join("y.log")).unwrap();
        assert!(refused(allowed.join("y.log")).contains("symbolic link"));
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "nothing was created outside");
        // A hard link in the directory to an empty file elsewhere (a cron file).
        let cron = outside.join("cron");
        std::fs::write(&cron, b"").unwrap();
        std::fs::hard_link(&cron, allowed.join("z.log")).unwrap();
        let e = super::super::writer::open(&allowed.join("z.log"), 0o600, &dirs).unwrap_err().to_string();
        assert!(e.contains("hard links"), "{e}");
        assert_eq!(std::fs::read(&cron).unwrap(), b"");

        // The directory swapped for a link (by whoever may write its parent).
        let moved_away = root.path().join("logs.real");
        std::fs::rename(&allowed, &moved_away).unwrap();
        std::os::unix::fs::symlink(&outside, &allowed).unwrap();
        assert!(refused(allowed.join("a.log")).contains("cannot open the directory"));
        std::fs::remove_file(&allowed).unwrap();
        std::fs::create_dir(&allowed).unwrap();
        assert!(refused(allowed.join("a.log")).contains("replaced"));
        assert!(std::fs::read_dir(&outside).unwrap().all(|e| e.unwrap().file_name() == "cron"));

        // No directory configured: nothing but stdout.
        let none = FileDirs::default();
        assert!(none.open(&allowed.join("a.log"), 0o600).unwrap_err().to_string().contains("nowhere"));
    }

    #[test]
    fn the_configured_directories_are_checked() {
        let root = tempfile::tempdir().unwrap();
        assert!(FileDirs::from_config(&[PathBuf::from("relative")]).is_err());
        assert!(FileDirs::from_config(&[root.path().join("missing")]).is_err());
        let file = root.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(FileDirs::from_config(&[file]).unwrap_err().contains("not a directory"));
        assert!(FileDirs::from_config(&[PathBuf::from("/proc/self")]).unwrap_err().contains("/proc"));
        // A directory given through a link is matched under both names.
        let real = root.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let dirs = FileDirs::from_config(std::slice::from_ref(&link)).unwrap();
        dirs.open(&link.join("a.log"), 0o600).unwrap();
        dirs.open(&real.join("b.log"), 0o600).unwrap();
        assert_eq!(format!("{dirs:?}"), format!("[{link:?}]"));
    }

    #[test]
    fn anywhere_still_refuses_kernel_interfaces() {
        let e = FileDirs::Anywhere.open(Path::new("/proc/self/mem"), 0o600).unwrap_err().to_string();
        assert!(e.contains("/proc"), "{e}");
    }
}
