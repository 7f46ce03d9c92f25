//! Mounting and, above all, reliably unmounting what a device needs.
//!
//! A bind mount of /dev left under a directory that is later deleted recursively would delete the
//! host's device nodes, so unmounting is verified against /proc/self/mountinfo before anything is
//! removed, with a lazy unmount as the fallback for busy mounts. Processes left running inside a
//! device (a daemon a postinst started) are killed first so they cannot pin its mounts.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

fn cstr(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).context("path contains a NUL byte")
}

fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<()> {
    let (src, tgt, fs, dat) = (
        CString::new(source)?,
        cstr(target)?,
        CString::new(fstype)?,
        CString::new(data)?,
    );
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ptr(),
            flags,
            dat.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("mount {fstype} {source} on {}", target.display()));
    }
    Ok(())
}

/// A fresh tmpfs (mode 0755, so the device root looks like a disk's root).
pub fn mount_tmpfs(target: &Path) -> Result<()> {
    mount("tend-device", target, "tmpfs", 0, "mode=0755")?;
    make_private(target)
}

pub fn mount_proc(target: &Path) -> Result<()> {
    mount(
        "proc",
        target,
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    )
}

/// Binds `source` (not its submounts) on `target`, privately: a bind of a shared mount joins its
/// peer group, and unmounting below it would then propagate to the host's own mounts.
pub fn bind(source: &Path, target: &Path) -> Result<()> {
    let src = source.to_str().context("non-UTF-8 bind source")?;
    mount(src, target, "", libc::MS_BIND, "")?;
    make_private(target)
}

fn make_private(target: &Path) -> Result<()> {
    mount("none", target, "", libc::MS_PRIVATE, "")
}

/// Unmounts `target`, lazily if it is busy.
pub fn unmount(target: &Path) -> Result<()> {
    let t = cstr(target)?;
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(t.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let first = io::Error::last_os_error();
    // SAFETY: as above.
    if unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    Err(first).with_context(|| format!("unmounting {}", target.display()))
}

/// Mount points at or below `dir`, deepest first (the order to unmount them in). An unreadable
/// mount table is an error, never "nothing mounted".
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let info = fs::read_to_string("/proc/self/mountinfo").context("reading the mount table")?;
    let mut found: Vec<PathBuf> = parse_mountinfo(&info)
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    Ok(found)
}

/// Unmounts everything at or below `dir`, deepest first; Ok only if nothing is left mounted.
pub fn unmount_all_under(dir: &Path) -> Result<()> {
    for _ in 0..3 {
        let mounts = mounts_under(dir)?;
        if mounts.is_empty() {
            return Ok(());
        }
        for m in mounts {
            let _ = unmount(&m);
        }
    }
    let left = mounts_under(dir)?;
    anyhow::ensure!(left.is_empty(), "still mounted: {left:?}");
    Ok(())
}

/// Mount points from /proc/self/mountinfo (field 5, with its octal escapes decoded).
fn parse_mountinfo(info: &str) -> Vec<PathBuf> {
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(p))))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Kills every process whose root directory is at or below `dir` (left over inside a device).
pub fn kill_processes_rooted_under(dir: &Path) {
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if fs::read_link(entry.path().join("root")).is_ok_and(|r| r.starts_with(dir)) {
            // SAFETY: sending a signal; a vanished pid just fails.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_mount_points_are_decoded() {
        let info = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    90 27 0:50 / /tmp/a\\040b\\134c rw - tmpfs tmpfs rw\n";
        assert_eq!(
            parse_mountinfo(info),
            vec![PathBuf::from("/proc"), PathBuf::from("/tmp/a b\\c")]
        );
    }

    #[test]
    fn a_backslash_without_octal_digits_is_kept() {
        assert_eq!(unescape("a\\x"), b"a\\x");
        assert_eq!(unescape("end\\04"), b"end\\04");
    }

    #[test]
    fn proc_is_a_mount_point_and_nothing_is_under_a_fresh_tempdir() {
        assert!(mounts_under(Path::new("/"))
            .unwrap()
            .contains(&PathBuf::from("/proc")));
        let d = tempfile::tempdir().unwrap();
        assert!(mounts_under(d.path()).unwrap().is_empty());
        unmount_all_under(d.path()).unwrap();
    }
}
