//! Device paths to host paths, with chroot semantics.
//!
//! A device holds absolute symlinks (`/etc/localtime -> /usr/share/zoneinfo/...`). Joining the
//! device path onto the root and letting the host kernel follow such a link would read or, worse,
//! overwrite the host's file. Links are therefore followed here, one component at a time, with
//! absolute targets and `..` clamped to the device root. The bed keeps its own resolver rather than
//! borrowing tend's, so that a bug in tend cannot hide itself in the tests.

use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Result};

/// Symlinks followed before giving up (as the kernel's ELOOP limit).
const MAX_LINKS: usize = 40;

/// The host path of `device_path` under `root`, following every symlink inside the root. The
/// final components may not exist yet (for a file about to be written).
pub fn resolve(root: &Path, device_path: &str) -> Result<PathBuf> {
    if !device_path.starts_with('/') {
        bail!("device path {device_path:?} must be absolute");
    }
    // Components still to walk, last first, so a link target can be pushed in front.
    let mut todo: Vec<OsString> = components(Path::new(device_path));
    todo.reverse();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = join(root, &resolved).join(&name);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    bail!("too many levels of symbolic links resolving {device_path}");
                }
                let target = fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                todo.extend(components(&target).into_iter().rev());
            }
            _ => resolved.push(name),
        }
    }
    Ok(join(root, &resolved))
}

fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

fn join(root: &Path, parts: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_links_stay_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("usr/share/zoneinfo")).unwrap();
        fs::create_dir(root.join("etc")).unwrap();
        symlink("/usr/share/zoneinfo/UTC", root.join("etc/localtime")).unwrap();
        assert_eq!(
            resolve(root, "/etc/localtime").unwrap(),
            root.join("usr/share/zoneinfo/UTC")
        );
    }

    #[test]
    fn relative_links_and_dotdot_cannot_climb_out() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("../../../../../etc", root.join("usr/escape")).unwrap();
        assert_eq!(
            resolve(root, "/lib/x.service").unwrap(),
            root.join("usr/lib/x.service")
        );
        assert_eq!(
            resolve(root, "/usr/escape/passwd").unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve(root, "/../../etc/shadow").unwrap(),
            root.join("etc/shadow")
        );
    }

    #[test]
    fn link_loops_are_an_error() {
        let d = tempfile::tempdir().unwrap();
        symlink("/b", d.path().join("a")).unwrap();
        symlink("/a", d.path().join("b")).unwrap();
        assert!(resolve(d.path(), "/a/x").is_err());
    }

    #[test]
    fn relative_device_paths_are_refused() {
        let d = tempfile::tempdir().unwrap();
        assert!(resolve(d.path(), "etc/passwd").is_err());
    }
}
