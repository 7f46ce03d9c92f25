//! Crash-safe file replacement and root-relative path resolution.
//!
//! A device may lose power at any instant, so a file is never written in place: temp file in the
//! same directory, fsync, rename over the target, fsync the directory. Readers see the old file or
//! the new one, never half of either.

use std::collections::hash_map::RandomState;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use crate::rootwalk;

/// Ownership and mode to give a file as it is created, before it becomes visible.
#[derive(Clone, Copy, Debug, Default)]
pub struct Meta {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Temp names tried before giving up: each is random, so a clash means someone plants them.
const TEMP_ATTEMPTS: usize = 16;

/// Atomically replaces `path` with `bytes`.
pub fn atomic_write(path: &Path, bytes: &[u8], meta: Meta) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    let dir = File::open(dir)?;
    atomic_write_at(dir.as_fd(), name, bytes, meta)
}

/// Atomically replaces `name` in the opened directory `dir` with `bytes`: a fresh temp file
/// (random name, `O_EXCL|O_NOFOLLOW`, so nothing planted there is opened), fsync, rename, fsync
/// of the directory. Every step is relative to `dir`.
pub fn atomic_write_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    bytes: &[u8],
    meta: Meta,
) -> io::Result<()> {
    let mode = Mode::from_raw_mode(meta.mode.unwrap_or(0o644));
    let (tmp, fd) = with_temp_name(name, |tmp| {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rfs::openat(dir, tmp, flags, mode)
    })?;
    let result = (|| {
        let mut f = File::from(fd);
        f.write_all(bytes)?;
        if meta.uid.is_some() || meta.gid.is_some() {
            rfs::fchown(
                &f,
                meta.uid.map(rfs::Uid::from_raw),
                meta.gid.map(rfs::Gid::from_raw),
            )?;
        }
        // Set after chown, which clears setuid and setgid bits; also undoes the umask.
        if let Some(mode) = meta.mode {
            rfs::fchmod(&f, Mode::from_raw_mode(mode))?;
        }
        f.sync_all()?;
        drop(f);
        rfs::renameat(dir, &*tmp, dir, name)?;
        remove_stale_temps(dir, name);
        Ok(rfs::fsync(dir)?)
    })();
    if result.is_err() {
        let _ = rfs::unlinkat(dir, &*tmp, AtFlags::empty());
    }
    result
}

/// Points `name` in `dir` at `target` atomically: a link under a fresh temp name, its owner set,
/// renamed over `name`, the directory synced.
pub fn symlink_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    target: &str,
    uid: u32,
    gid: u32,
) -> io::Result<()> {
    let (tmp, ()) = with_temp_name(name, |tmp| rfs::symlinkat(target, dir, tmp))?;
    let result = (|| {
        rfs::chownat(
            dir,
            &*tmp,
            Some(rfs::Uid::from_raw(uid)),
            Some(rfs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        rfs::renameat(dir, &*tmp, dir, name)?;
        remove_stale_temps(dir, name);
        Ok(rfs::fsync(dir)?)
    })();
    if result.is_err() {
        let _ = rfs::unlinkat(dir, &*tmp, AtFlags::empty());
    }
    result
}

/// Runs `create` with fresh temp names `.<name>.tend-<16 hex digits>.tmp` until one does not
/// exist yet. The digits come from the standard library's per-process random hash keys.
fn with_temp_name<T>(
    name: &OsStr,
    mut create: impl FnMut(&OsStr) -> rustix::io::Result<T>,
) -> io::Result<(OsString, T)> {
    let keys = RandomState::new();
    for attempt in 0..TEMP_ATTEMPTS {
        let mut h = keys.build_hasher();
        h.write_usize(attempt);
        h.write_u32(std::process::id());
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".tend-{:016x}.tmp", h.finish()));
        match create(&tmp) {
            Ok(v) => return Ok((tmp, v)),
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{TEMP_ATTEMPTS} fresh temp names for {} were all taken; something is creating them",
            name.to_string_lossy()
        ),
    ))
}

/// Removes the temp files of earlier writes to `name` that a power cut interrupted: a killed
/// process never reaches its cleanup, and only the next write of the same file knows the name.
/// Old temps end in a pid, new ones in 16 hex digits; both are tend's own.
fn remove_stale_temps(dir: BorrowedFd<'_>, name: &OsStr) {
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(name.as_bytes());
    prefix.extend_from_slice(b".tend-");
    let Ok(entries) = rootwalk::entry_names(dir) else {
        return;
    };
    for entry in entries {
        let Some(id) = entry
            .as_bytes()
            .strip_prefix(prefix.as_slice())
            .and_then(|rest| rest.strip_suffix(b".tmp"))
        else {
            continue;
        };
        if !id.is_empty() && id.iter().all(u8::is_ascii_hexdigit) {
            let _ = rfs::unlinkat(dir, &*entry, AtFlags::empty());
        }
    }
}

/// Makes a rename or unlink in `dir` durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Resolves an absolute device path under `root` as [`rootwalk::open_parent`] walks it: symlinks
/// in its *parent* components are followed only when root owns them, inside the root (an absolute
/// target restarts at `root`, `..` never climbs above it). The last component is not followed, so
/// callers can see and manage a link itself. Missing parents end the walk: the rest is taken as
/// written. Prefer [`rootwalk::open_parent`] to act on the path: a name can be swapped afterwards.
pub fn resolve_in_root(root: &Path, device_path: &str) -> Result<PathBuf, rootwalk::WalkError> {
    rootwalk::resolve(root, device_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, FileTypeExt, PermissionsExt};
    use std::time::Duration;

    #[test]
    fn atomic_write_replaces_content_and_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, "old").unwrap();
        atomic_write(
            &p,
            b"new",
            Meta {
                mode: Some(0o600),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        let leftovers: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file remains");
    }

    #[test]
    fn a_temp_file_left_by_a_power_cut_is_removed_by_the_next_write() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.conf");
        fs::write(d.path().join(".app.conf.tend-4242.tmp"), "half").unwrap();
        fs::write(d.path().join(".app.conf.tend-00c0ffee12345678.tmp"), "half").unwrap();
        fs::write(d.path().join(".other.conf.tend-4242.tmp"), "another file's").unwrap();
        fs::write(d.path().join(".app.conf.tend-x.tmp"), "not tend's").unwrap();
        atomic_write(&p, b"new", Meta::default()).unwrap();
        let mut left: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".app.conf.tend-x.tmp",
                ".other.conf.tend-4242.tmp",
                "app.conf"
            ]
        );
    }

    /// Finding 7: `.<name>.tend-<pid>.tmp` was opened without O_EXCL, so a fifo planted there
    /// blocked the write forever. Names are now random and opened O_EXCL|O_NOFOLLOW.
    #[test]
    fn fifo_at_predictable_temp_name_does_not_block_the_write() {
        let d = tempfile::tempdir().unwrap();
        let planted = d
            .path()
            .join(format!(".app.conf.tend-{}.tmp", std::process::id()));
        let c = std::ffi::CString::new(planted.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
        let p = d.path().join("app.conf");
        let (tx, rx) = std::sync::mpsc::channel();
        let target = p.clone();
        std::thread::spawn(move || {
            let _ =
                tx.send(atomic_write(&target, b"new", Meta::default()).map_err(|e| e.to_string()));
        });
        let done = rx.recv_timeout(Duration::from_secs(10));
        if done.is_err() {
            // Unblock the stuck open so the thread (and the test binary) can end.
            let _ = fs::OpenOptions::new().read(true).open(&planted);
        }
        done.expect("the write blocked on a planted fifo").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert!(
            !planted.exists()
                || !fs::symlink_metadata(&planted)
                    .unwrap()
                    .file_type()
                    .is_fifo(),
            "the planted fifo is tend's temp name pattern and is cleared as stale"
        );
    }

    /// The shape `with_temp_name` promises and `remove_stale_temps` relies on.
    fn is_tend_temp(name: &str) -> bool {
        name.starts_with('.') && name.contains(".tend-") && name.ends_with(".tmp")
    }

    #[test]
    fn temp_names_are_fresh_and_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let dir = File::open(d.path()).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let (name, ()) = with_temp_name(OsStr::new("f"), |_| Ok(())).unwrap();
            assert!(is_tend_temp(&name.to_string_lossy()), "{name:?}");
            assert!(seen.insert(name), "a temp name repeated");
        }
        // Every name taken: the write fails instead of opening what is there.
        let e = with_temp_name(OsStr::new("f"), |tmp| {
            rfs::mkdirat(dir.as_fd(), tmp, Mode::from_raw_mode(0o700))?;
            Err::<(), _>(rustix::io::Errno::EXIST)
        })
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
    }

    #[test]
    fn a_link_is_placed_atomically_under_a_fresh_name() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("l"), "a file in the way").unwrap();
        let dir = File::open(d.path()).unwrap();
        // SAFETY: geteuid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        symlink_at(dir.as_fd(), OsStr::new("l"), "/target", uid, gid).unwrap();
        assert_eq!(
            fs::read_link(d.path().join("l")).unwrap(),
            Path::new("/target")
        );
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp link remains"
        );
    }

    #[test]
    fn absolute_symlink_in_parent_stays_under_root() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("real/etc")).unwrap();
        symlink("/real/etc", d.path().join("etc")).unwrap();
        let p = resolve_in_root(d.path(), "/etc/motd").unwrap();
        assert_eq!(p, d.path().join("real/etc/motd"));
    }

    #[test]
    fn dotdot_cannot_climb_above_root() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("tmp")).unwrap();
        symlink("../../../../tmp", d.path().join("up")).unwrap();
        let p = resolve_in_root(d.path(), "/up/x").unwrap();
        assert_eq!(p, d.path().join("tmp/x"));
    }

    #[test]
    fn last_component_link_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        symlink("/elsewhere", d.path().join("l")).unwrap();
        assert_eq!(resolve_in_root(d.path(), "/l").unwrap(), d.path().join("l"));
    }

    #[test]
    fn a_missing_parent_is_taken_as_written_after_the_links_before_it() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("usr/lib")).unwrap();
        symlink("usr/lib", d.path().join("lib")).unwrap();
        assert_eq!(
            resolve_in_root(d.path(), "/lib/new/x").unwrap(),
            d.path().join("usr/lib/new/x")
        );
    }
}
