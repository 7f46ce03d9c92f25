//! The state directory and the single-instance lock.
//!
//! State lives under the managed root (default /var/lib/tend, configurable to /data/tend for
//! Mender A/B images), so a chroot or image carries its own. The lock lives in /run/tend, which is
//! a tmpfs on a device: a power cut never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

pub const REPORT_FILE: &str = "report.json";
pub const PENDING_HANDLERS_FILE: &str = "pending-handlers.json";
pub const LOCK_FILE: &str = "run/tend/lock";

pub struct StateDir {
    pub path: PathBuf,
    /// The device root it lies under (the run's volatile files are in its /run).
    pub root: PathBuf,
}

impl StateDir {
    pub fn new(root: &Path, device_path: &str) -> Self {
        Self {
            path: root.join(device_path.trim_start_matches('/')),
            root: root.to_path_buf(),
        }
    }

    pub fn ensure(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.path)?;
        use std::os::unix::fs::PermissionsExt;
        // A chmod to the same mode still writes the inode (its ctime): only when it differs.
        if std::fs::metadata(&self.path)?.permissions().mode() & 0o7777 == 0o700 {
            return Ok(());
        }
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o700))
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another tend run holds the lock {path} (pid {pid}); try again when it has finished")]
    Held { path: String, pid: String },
    #[error("cannot take the lock {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Held for the whole run; released when dropped (or when the process dies).
pub struct Lock {
    _file: File,
}

impl Lock {
    pub fn acquire(root: &Path) -> Result<Self, LockError> {
        let path = root.join(LOCK_FILE);
        let shown = path.display().to_string();
        let io = |source| LockError::Io {
            path: shown.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim().to_string();
                return Err(LockError::Held {
                    path: shown,
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_names_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let first = Lock::acquire(d.path()).unwrap();
        match Lock::acquire(d.path()) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected Held, got {:?}", other.map(|_| ())),
        }
        drop(first);
        assert!(Lock::acquire(d.path()).is_ok());
    }
}
