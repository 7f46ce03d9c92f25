//! A record lock for tests to hold where apt and dpkg lock their files.
//!
//! tend looks for apt's and dpkg's locks with `F_GETLK`, which never reports the asking process's
//! own traditional locks. An open file description lock (`F_OFD_SETLK`) conflicts with a
//! traditional one even inside one process, so a test can hold "another program's" lock
//! in-process: no helper interpreter to install, and it cannot outlive the test.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// A write lock on a whole file, released when dropped (the descriptor closes).
pub(crate) struct HeldLock {
    _file: File,
}

impl HeldLock {
    pub(crate) fn take(path: &Path) -> HeldLock {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        // SAFETY: an all-zero flock is a valid value of this plain C struct (OFD locks require
        // l_pid to be 0).
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: the descriptor is open for the duration of the call and `fl` outlives it.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        assert_eq!(
            rc,
            0,
            "locking {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        HeldLock { _file: file }
    }
}
