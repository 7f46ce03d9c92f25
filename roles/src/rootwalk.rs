//! Opening the directory that holds a device path, one component at a time, under a root.
//!
//! Why: tend runs as root, and a managed path often runs through directories a local user owns
//! (`/home/kiosk/bin/kiosk.sh`). Had tend resolved the path by name, that user could swap
//! `/home/kiosk/bin` for a symlink to `/etc/profile.d` and have root write there. So the walk opens
//! each parent with `O_NOFOLLOW|O_DIRECTORY` relative to the one before it and follows a symlink
//! only when root (or tend itself) owns it (merged-usr's `/lib -> usr/lib` must keep working), resolving it inside
//! the root: an absolute target restarts at the root and `..` never climbs above it. A symlink
//! owned by anyone else is refused, whoever owns the directory holding it: the owner of
//! `/home/kiosk` is exactly who must not choose where root writes. Everything done afterwards
//! (read, write, chown, chmod, rename, unlink, mkdir) is relative to the opened parent, so a swap
//! between the check and the write cannot redirect it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

/// Symlinks followed in one walk before it is refused as a loop (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// Why a device path could not be walked.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error(
        "{path}: its parent {link} is a symlink (-> {target}) owned by {owner}, not by root; tend \
         does not follow a symlink that a local user could have planted. If the link is meant to \
         be there, let root own it (`chown -h root:root {link}`), or manage the path it points to"
    )]
    UntrustedSymlink {
        path: String,
        link: String,
        target: String,
        /// "uid 1000", or "kiosk (uid 1000)" once [`WalkError::name_owner`] named it.
        owner: String,
        uid: u32,
    },
    #[error("{path}: more than {MAX_LINKS} symlinks in its parents (a loop?); fix the links")]
    TooManyLinks { path: String },
    #[error("{path}: its parent {parent} does not exist")]
    MissingParent { path: String, parent: String },
    #[error(
        "{path}: its parent {parent} is not a directory; remove it first or choose another path"
    )]
    ParentNotADirectory { path: String, parent: String },
    #[error("{path}: not an absolute path")]
    NotAbsolute { path: String },
    #[error("{path}: {at}: {source}")]
    Io {
        path: String,
        at: String,
        source: io::Error,
    },
}

impl WalkError {
    /// Names the owner of a refused symlink, as the device's passwd knows it.
    pub fn name_owner(mut self, name: impl FnOnce(u32) -> Option<String>) -> Self {
        if let WalkError::UntrustedSymlink { owner, uid, .. } = &mut self {
            if let Some(n) = name(*uid) {
                *owner = format!("{n} (uid {uid})");
            }
        }
        self
    }
}

/// The directory holding a device path's last component, opened by a trusted walk.
#[derive(Debug)]
pub struct ParentDir {
    fd: OwnedFd,
    name: OsString,
    /// The host path the walk arrived at (root, the resolved parents, the name), for messages
    /// and for callers that still work by path.
    host_path: PathBuf,
}

/// What the walk does at a missing parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Creates it (0755 root:root, as a package would).
    Create,
    /// Fails with [`WalkError::MissingParent`].
    Fail,
}

/// Opens the parent of `device_path` under `root`. The last component is not followed.
pub fn open_parent(
    root: &Path,
    device_path: &str,
    missing: Missing,
) -> Result<ParentDir, WalkError> {
    match walk(root, device_path, Some(missing))? {
        (host_path, Some((fd, name))) => Ok(ParentDir {
            fd,
            name,
            host_path,
        }),
        (_, None) => unreachable!("a walk that may not stop early opened its parent"),
    }
}

/// The host path `device_path` resolves to under `root`, by the same rules; a missing parent
/// ends the walk and the rest is taken as written. For messages and path-based readers only:
/// a name can be swapped after it was resolved, an opened [`ParentDir`] cannot.
pub fn resolve(root: &Path, device_path: &str) -> Result<PathBuf, WalkError> {
    Ok(walk(root, device_path, None)?.0)
}

/// The walk; `missing: None` stops at a missing parent (or one that is not a directory) and
/// returns the path only.
#[allow(clippy::type_complexity)]
fn walk(
    root: &Path,
    device_path: &str,
    missing: Option<Missing>,
) -> Result<(PathBuf, Option<(OwnedFd, OsString)>), WalkError> {
    let io_err = |at: &str, source: io::Error| WalkError::Io {
        path: device_path.to_string(),
        at: at.to_string(),
        source,
    };
    let rel = Path::new(device_path);
    if !rel.is_absolute() {
        return Err(WalkError::NotAbsolute {
            path: device_path.to_string(),
        });
    }
    let root_fd = open_dir(rfs::CWD, root).map_err(|e| io_err(&root.display().to_string(), e))?;
    let mut parts: Vec<OsString> = components(rel);
    let Some(name) = parts.pop() else {
        // The root itself: its "parent" is the root, named ".".
        return Ok((root.to_path_buf(), Some((root_fd, ".".into()))));
    };
    // The opened directories from the root down, with their names; `..` pops one.
    let mut stack: Vec<(OsString, OwnedFd)> = Vec::new();
    let mut pending: Vec<OsString> = parts.into_iter().rev().collect();
    let mut links = 0;
    let shown = |stack: &[(OsString, OwnedFd)], c: &OsStr| {
        let mut p = PathBuf::from("/");
        p.extend(stack.iter().map(|(n, _)| n));
        p.push(c);
        p.display().to_string()
    };
    while let Some(c) = pending.pop() {
        if c == ".." {
            stack.pop();
            continue;
        }
        let here = stack.last().map_or(root_fd.as_fd(), |(_, fd)| fd.as_fd());
        let opened = match open_dir(here, &c) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound && missing == Some(Missing::Create) => {
                make_dir(here, &c, 0o755, 0, 0).map_err(|e| io_err(&shown(&stack, &c), e))?;
                open_dir(here, &c).map_err(|e| io_err(&shown(&stack, &c), e))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && missing.is_none() => {
                return Ok((rest_as_written(root, &stack, c, pending, &name), None))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(WalkError::MissingParent {
                    path: device_path.to_string(),
                    parent: shown(&stack, &c),
                })
            }
            // ELOOP (a symlink under O_NOFOLLOW) or ENOTDIR: look at what it is.
            Err(e) => {
                let st = rfs::statat(here, &*c, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|_| io_err(&shown(&stack, &c), e))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Symlink && missing.is_none() {
                    return Ok((rest_as_written(root, &stack, c, pending, &name), None));
                }
                if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                    return Err(WalkError::ParentNotADirectory {
                        path: device_path.to_string(),
                        parent: shown(&stack, &c),
                    });
                }
                let target = rfs::readlinkat(here, &*c, Vec::new())
                    .map_err(|e| io_err(&shown(&stack, &c), e.into()))?;
                let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                if !trusted_owner(st.st_uid) {
                    return Err(WalkError::UntrustedSymlink {
                        path: device_path.to_string(),
                        link: shown(&stack, &c),
                        target: target.display().to_string(),
                        owner: format!("uid {}", st.st_uid),
                        uid: st.st_uid,
                    });
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(WalkError::TooManyLinks {
                        path: device_path.to_string(),
                    });
                }
                if target.is_absolute() {
                    stack.clear();
                }
                pending.extend(components(&target).into_iter().rev());
                continue;
            }
        };
        stack.push((c, opened));
    }
    let mut host_path = root.to_path_buf();
    host_path.extend(stack.iter().map(|(n, _)| n));
    host_path.push(&name);
    let fd = match stack.pop() {
        Some((_, fd)) => fd,
        None => root_fd,
    };
    Ok((host_path, Some((fd, name))))
}

/// The root, the resolved parents, then the unwalked rest and the name as written.
fn rest_as_written(
    root: &Path,
    stack: &[(OsString, OwnedFd)],
    at: OsString,
    mut pending: Vec<OsString>,
    name: &OsStr,
) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(stack.iter().map(|(n, _)| n));
    pending.push(at);
    p.extend(pending.iter().rev());
    p.push(name);
    p
}

/// A symlink tend may follow: root's, or its own when it runs unprivileged (a unit test, an
/// image build as a user), which no one else can have planted either.
fn trusted_owner(uid: u32) -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

/// The normal and `..` components of a path (`.` and the root dropped).
fn components(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

fn open_dir<Fd: AsFd>(dir: Fd, name: impl rustix::path::Arg) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rfs::openat(dir, name, flags, Mode::empty())?)
}

/// A directory with exactly this mode and owner (mkdir alone is subject to the umask); an
/// existing directory is kept.
fn make_dir(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    match rfs::mkdirat(dir, name, Mode::from_raw_mode(mode)) {
        Err(rustix::io::Errno::EXIST) => {}
        r => r?,
    }
    let fd = open_dir(dir, name)?;
    set_stat(&fd, mode, uid, gid)?;
    Ok(rfs::fsync(dir)?)
}

/// Owner, then mode (chown clears setuid and setgid bits), touching only what differs.
pub fn set_stat(fd: impl AsFd, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    let st = rfs::fstat(&fd)?;
    if st.st_uid != uid || st.st_gid != gid {
        rfs::fchown(&fd, Some(uid_of(uid)), Some(gid_of(gid)))?;
    }
    if rfs::fstat(&fd)?.st_mode & 0o7777 != mode {
        rfs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    }
    Ok(())
}

fn uid_of(uid: u32) -> rfs::Uid {
    rfs::Uid::from_raw(uid)
}

fn gid_of(gid: u32) -> rfs::Gid {
    rfs::Gid::from_raw(gid)
}

/// What is at a name, seen without following it.
pub struct Entry {
    pub kind: FileType,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub dev: u64,
}

impl ParentDir {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn name(&self) -> &OsStr {
        &self.name
    }

    pub fn host_path(&self) -> &Path {
        &self.host_path
    }

    /// What is at the name, or None.
    pub fn lstat(&self) -> io::Result<Option<Entry>> {
        match rfs::statat(&self.fd, &*self.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Entry {
                kind: FileType::from_raw_mode(st.st_mode),
                mode: st.st_mode & 0o7777,
                uid: st.st_uid,
                gid: st.st_gid,
                dev: st.st_dev,
            })),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens the object itself for reading (never through a symlink, never blocking on a fifo).
    pub fn open(&self, directory: bool) -> io::Result<File> {
        let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        if directory {
            flags |= OFlags::DIRECTORY;
        }
        Ok(rfs::openat(&self.fd, &*self.name, flags, Mode::empty())?.into())
    }

    pub fn read(&self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io::Read::read_to_end(&mut self.open(false)?, &mut buf)?;
        Ok(buf)
    }

    pub fn read_link(&self) -> io::Result<PathBuf> {
        let t = rfs::readlinkat(&self.fd, &*self.name, Vec::new())?;
        Ok(PathBuf::from(OsStr::from_bytes(t.as_bytes())))
    }

    /// How many entries the directory at the name holds (top level).
    pub fn count_entries(&self) -> io::Result<usize> {
        let dir = open_dir(&self.fd, &*self.name)?;
        Ok(entry_names(&dir)?.len())
    }

    /// Sets mode and owner of the object (not through a symlink).
    pub fn set_stat(&self, directory: bool, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        set_stat(self.open(directory)?, mode, uid, gid)
    }

    /// Owner of a symlink itself.
    pub fn chown_link(&self, uid: u32, gid: u32) -> io::Result<()> {
        match self.lstat()? {
            Some(e) if e.uid == uid && e.gid == gid => Ok(()),
            _ => Ok(rfs::chownat(
                &self.fd,
                &*self.name,
                Some(uid_of(uid)),
                Some(gid_of(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?),
        }
    }

    pub fn make_dir(&self, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        make_dir(self.fd(), &self.name, mode, uid, gid)
    }

    /// Unlinks a file, link or node at the name, durably.
    pub fn unlink(&self) -> io::Result<()> {
        rfs::unlinkat(&self.fd, &*self.name, AtFlags::empty())?;
        Ok(rfs::fsync(&self.fd)?)
    }

    /// Removes the directory at the name and everything in it, never following a symlink and
    /// never entering a mounted filesystem: a `/data` partition must not be wiped because a role
    /// asked for a file where it is mounted.
    pub fn remove_tree(&self) -> io::Result<()> {
        let parent_dev = rfs::fstat(&self.fd)?.st_dev;
        remove_tree_at(self.fd(), &self.name, parent_dev)?;
        Ok(rfs::fsync(&self.fd)?)
    }
}

fn remove_tree_at(parent: BorrowedFd<'_>, name: &OsStr, dev: u64) -> io::Result<()> {
    let dir = open_dir(parent, name)?;
    if rfs::fstat(&dir)?.st_dev != dev {
        return Err(io::Error::other(
            "is a mount point; tend does not remove mounted filesystems (unmount it, or choose another path)",
        ));
    }
    for entry in entry_names(&dir)? {
        let st = rfs::statat(&dir, &*entry, AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            remove_tree_at(dir.as_fd(), &entry, dev)?;
        } else {
            rfs::unlinkat(&dir, &*entry, AtFlags::empty())?;
        }
    }
    Ok(rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)?)
}

/// The names in an opened directory, without `.` and `..`.
pub fn entry_names(dir: impl AsFd) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rfs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name != "." && name != ".." {
            names.push(name.to_os_string());
        }
    }
    Ok(names)
}
