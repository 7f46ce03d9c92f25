//! Crash-safe file replacement and root-relative path resolution.
//!
//! A device may lose power at any instant, so a file is never written in place: temp file in the
//! same directory, fsync, rename over the target, fsync the directory. Readers see the old file or
//! the new one, never half of either.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Ownership and mode to give a file as it is created, before it becomes visible.
#[derive(Clone, Copy, Debug, Default)]
pub struct Meta {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Atomically replaces `path` with `bytes`.
pub fn atomic_write(path: &Path, bytes: &[u8], meta: Meta) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent directory"))?;
    let name = path
        .file_name()
        .unwrap_or_else(|| OsStr::new("file"))
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tend-{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(meta.mode.unwrap_or(0o644))
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if let Some(mode) = meta.mode {
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        if meta.uid.is_some() || meta.gid.is_some() {
            std::os::unix::fs::fchown(&f, meta.uid, meta.gid)?;
            // chown clears setuid/setgid bits; put the mode back.
            if let Some(mode) = meta.mode {
                f.set_permissions(fs::Permissions::from_mode(mode))?;
            }
        }
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        remove_stale_temps(dir, &name);
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes the temp files of earlier writes to `name` that a power cut interrupted: a killed
/// process never reaches its cleanup, and only the next write of the same file knows the name.
fn remove_stale_temps(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tend-");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".tmp"))
        else {
            continue;
        };
        if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Makes a rename or unlink in `dir` durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a stale temp file left by a write that a power cut interrupted.
pub fn is_tend_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tend-") && name.ends_with(".tmp")
}

/// Resolves an absolute device path under `root`, following symlinks in its *parent* components as
/// the device would (an absolute link target restarts at `root`, `..` never climbs above it). The
/// last component is not followed, so callers can see and manage a link itself.
pub fn resolve_in_root(root: &Path, device_path: &str) -> io::Result<PathBuf> {
    let rel = Path::new(device_path);
    if !rel.is_absolute() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{device_path}: not an absolute path"),
        ));
    }
    let comps: Vec<Component> = rel.components().collect();
    let (last, parents) = match comps.split_last() {
        Some((Component::Normal(l), p)) => (l.to_os_string(), p.to_vec()),
        _ => return Ok(root.to_path_buf()),
    };
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: Vec<std::ffi::OsString> = parents
        .iter()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .rev()
        .collect();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let mut here = root.to_path_buf();
        here.extend(&resolved);
        here.push(&c);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(io::Error::other(format!(
                        "{device_path}: too many levels of symbolic links"
                    )));
                }
                let target = fs::read_link(&here)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved.push(c),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    out.push(last);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

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
}
