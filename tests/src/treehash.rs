//! A content-and-metadata snapshot of a device tree, to prove that `--check` changes nothing.
//!
//! Each entry records its type, permission bits, owner, group, size, modification time, content
//! (sha256) and link target. The mtime is included on purpose: check mode rewriting a file with
//! identical bytes, or creating and deleting a temporary file in a directory (which bumps the
//! directory's mtime), is still a write and must be caught. Access and change times are left out:
//! reading a file must not count, and ctime cannot be restored by anyone. Extended attributes and
//! hard-link counts are left out too; tend manages neither. Callers exclude paths where churn is
//! legitimate (for instance apt's caches).
//!
//! A snapshot keeps a readable line per path so that a failing assertion names what changed.
//!
//! Hashing a whole Debian tree reads ~230 MB, so a device keeps a [`HashCache`]: a file whose
//! inode, size, mtime and ctime are unchanged since it was hashed is not read again. The kernel
//! sets ctime on every write and it cannot be set back, so an unchanged ctime means unchanged
//! content, provided the ctime was already in the past when the file was read (timestamps come
//! from a coarse clock; see [`SETTLED`]).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Paths never hashed: kernel and runtime filesystems that are not the device's persistent state.
pub const ALWAYS_EXCLUDED: &[&str] = &["/proc", "/sys", "/dev", "/run", "/tmp"];

/// Device path (bytes) → description of the entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeSnapshot {
    entries: BTreeMap<Vec<u8>, String>,
}

impl TreeSnapshot {
    /// Snapshots `root`, skipping [`ALWAYS_EXCLUDED`], `excludes` (device paths, with everything
    /// below them) and anything mounted below the root.
    pub fn take(root: &Path, excludes: &[&str]) -> Result<TreeSnapshot> {
        TreeSnapshot::take_cached(root, excludes, None)
    }

    /// As [`TreeSnapshot::take`], reusing and filling `cache`.
    pub fn take_cached(
        root: &Path,
        excludes: &[&str],
        cache: Option<&HashCache>,
    ) -> Result<TreeSnapshot> {
        let mut skip: Vec<PathBuf> = ALWAYS_EXCLUDED
            .iter()
            .chain(excludes)
            .map(|e| root.join(e.trim_start_matches('/')))
            .collect();
        skip.extend(
            crate::mounts::mounts_under(root)?
                .into_iter()
                .filter(|m| m != root),
        );
        let walker = Walker { root, skip, cache };
        let mut entries = BTreeMap::new();
        walker.walk(root, &mut entries)?;
        Ok(TreeSnapshot { entries })
    }

    /// One sha256 over every entry, in path order.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for (path, line) in &self.entries {
            h.update(path);
            h.update([0]);
            h.update(line.as_bytes());
            h.update([b'\n']);
        }
        hex(&h.finalize())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Panics, naming every difference, unless the tree is identical to `before`.
    pub fn assert_unchanged_since(&self, before: &TreeSnapshot) {
        let changes = self.changes_since(before);
        assert!(
            changes.is_empty(),
            "the tree changed:\n{}",
            changes.join("\n")
        );
    }

    /// Human-readable differences from `before` to `self`: added, removed and changed paths.
    pub fn changes_since(&self, before: &TreeSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (path, line) in &self.entries {
            let shown = String::from_utf8_lossy(path);
            match before.entries.get(path) {
                None => out.push(format!("added   {shown}: {line}")),
                Some(old) if old != line => out.push(format!("changed {shown}: {old} -> {line}")),
                Some(_) => {}
            }
        }
        for (path, line) in &before.entries {
            if !self.entries.contains_key(path) {
                out.push(format!("removed {}: {line}", String::from_utf8_lossy(path)));
            }
        }
        out
    }
}

/// A file changed at most this long before it was read is not cached: file timestamps come from a
/// coarse clock (one tick, 1-10 ms), so a write in the same tick could leave ctime unchanged.
pub const SETTLED: Duration = Duration::from_millis(100);

/// Content hashes by host path, valid while the file's stamp is unchanged.
#[derive(Default)]
pub struct HashCache {
    entries: Mutex<HashMap<PathBuf, (Stamp, String)>>,
}

#[derive(Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// Whether the file's last change was clearly before `read_at`.
    fn settled_before(&self, read_at: SystemTime) -> bool {
        let (secs, nanos) = self.ctime;
        let Ok(secs) = u64::try_from(secs) else {
            return false;
        };
        let ctime = UNIX_EPOCH + Duration::new(secs, nanos.clamp(0, 999_999_999) as u32);
        ctime + SETTLED < read_at
    }
}

impl HashCache {
    fn content_sha256(&self, path: &Path, m: &fs::Metadata) -> Result<String> {
        let stamp = Stamp::of(m);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached, hash)) = entries.get(path) {
            if *cached == stamp {
                return Ok(hash.clone());
            }
        }
        let read_at = SystemTime::now();
        let hash = file_sha256(path)?;
        if stamp.settled_before(read_at) {
            entries.insert(path.to_path_buf(), (stamp, hash.clone()));
        } else {
            entries.remove(path);
        }
        Ok(hash)
    }
}

struct Walker<'a> {
    root: &'a Path,
    skip: Vec<PathBuf>,
    cache: Option<&'a HashCache>,
}

impl Walker<'_> {
    fn walk(&self, path: &Path, out: &mut BTreeMap<Vec<u8>, String>) -> Result<()> {
        if self.skip.iter().any(|s| path == s) {
            return Ok(());
        }
        let meta =
            fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
        let rel = path.strip_prefix(self.root).unwrap_or(path);
        let mut key = b"/".to_vec();
        key.extend_from_slice(rel.as_os_str().as_bytes());
        out.insert(key, self.describe(path, &meta)?);
        if meta.is_dir() {
            let mut children: Vec<PathBuf> = fs::read_dir(path)
                .with_context(|| format!("listing {}", path.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()?;
            children.sort();
            for child in children {
                self.walk(&child, out)?;
            }
        }
        Ok(())
    }

    fn describe(&self, path: &Path, m: &fs::Metadata) -> Result<String> {
        let ft = m.file_type();
        let common = format!(
            "{:o} {}:{} mtime={}.{:09}",
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
            m.mtime(),
            m.mtime_nsec()
        );
        Ok(if ft.is_file() {
            let sha = match self.cache {
                Some(cache) => cache.content_sha256(path, m)?,
                None => file_sha256(path)?,
            };
            format!("file {common} size={} sha256={sha}", m.len())
        } else if ft.is_dir() {
            format!("dir {common}")
        } else if ft.is_symlink() {
            let target = fs::read_link(path)?;
            format!("link {common} -> {}", target.display())
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() {
                "chardev"
            } else {
                "blockdev"
            };
            format!("{kind} {common} rdev={:x}", m.rdev())
        } else if ft.is_fifo() {
            format!("fifo {common}")
        } else {
            format!("socket {common}")
        })
    }
}

fn file_sha256(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::time::{Duration, SystemTime};

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc/app")).unwrap();
        fs::write(d.path().join("etc/app/conf"), "a=1\n").unwrap();
        symlink("app/conf", d.path().join("etc/link")).unwrap();
        fs::create_dir_all(d.path().join("tmp")).unwrap();
        d
    }

    fn snap(d: &tempfile::TempDir) -> TreeSnapshot {
        TreeSnapshot::take(d.path(), &[]).unwrap()
    }

    #[test]
    fn stable_when_nothing_changes() {
        let d = tree();
        assert_eq!(snap(&d).hash(), snap(&d).hash());
        assert_eq!(
            snap(&d).len(),
            5,
            "/, /etc, /etc/app, /etc/app/conf, /etc/link"
        );
    }

    #[test]
    fn content_change_is_seen_and_named() {
        let d = tree();
        let before = snap(&d);
        fs::write(d.path().join("etc/app/conf"), "a=2\n").unwrap();
        let after = snap(&d);
        assert_ne!(before.hash(), after.hash());
        let changes = after.changes_since(&before);
        assert!(
            changes
                .iter()
                .any(|c| c.starts_with("changed /etc/app/conf")),
            "{changes:?}"
        );
    }

    #[test]
    fn mode_change_alone_is_seen() {
        let d = tree();
        let before = snap(&d);
        fs::set_permissions(
            d.path().join("etc/app/conf"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert_ne!(before.hash(), snap(&d).hash());
    }

    #[test]
    fn rewriting_identical_bytes_is_seen_through_mtime() {
        let d = tree();
        let conf = d.path().join("etc/app/conf");
        let old = SystemTime::now() - Duration::from_secs(100);
        fs::File::options()
            .write(true)
            .open(&conf)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let before = snap(&d);
        fs::write(&conf, "a=1\n").unwrap();
        assert_ne!(before.hash(), snap(&d).hash());
    }

    #[test]
    fn link_target_change_is_seen() {
        let d = tree();
        let before = snap(&d);
        fs::remove_file(d.path().join("etc/link")).unwrap();
        symlink("app/other", d.path().join("etc/link")).unwrap();
        let changes = snap(&d).changes_since(&before);
        assert!(
            changes.iter().any(|c| c.contains("-> app/other")),
            "{changes:?}"
        );
    }

    #[test]
    fn excluded_paths_are_ignored() {
        let d = tree();
        let before = TreeSnapshot::take(d.path(), &["/etc/app"]).unwrap();
        fs::write(d.path().join("etc/app/new"), "x").unwrap();
        fs::write(d.path().join("tmp/scratch"), "x").unwrap();
        let after = TreeSnapshot::take(d.path(), &["/etc/app"]).unwrap();
        assert_eq!(before.hash(), after.hash());
    }

    #[test]
    fn cached_snapshots_see_a_same_size_rewrite_with_mtime_put_back() {
        let d = tree();
        let conf = d.path().join("etc/app/conf");
        let old = SystemTime::now() - Duration::from_secs(100);
        let set_old = || {
            let f = fs::File::options().write(true).open(&conf).unwrap();
            f.set_modified(old).unwrap();
        };
        set_old();
        std::thread::sleep(SETTLED * 2);
        let cache = HashCache::default();
        let take = || TreeSnapshot::take_cached(d.path(), &[], Some(&cache)).unwrap();
        let before = take();
        assert!(
            cache.entries.lock().unwrap().contains_key(&conf),
            "conf is cached"
        );
        // Same size and mtime: only the content and ctime (which nobody can put back) differ.
        fs::write(&conf, "a=9\n").unwrap();
        set_old();
        let after = take();
        let changes = after.changes_since(&before);
        assert!(
            changes
                .iter()
                .any(|c| c.starts_with("changed /etc/app/conf")),
            "{changes:?}"
        );
        assert_eq!(after, TreeSnapshot::take(d.path(), &[]).unwrap());
    }

    #[test]
    fn settled_files_are_served_from_the_cache() {
        let d = tree();
        let conf = d.path().join("etc/app/conf");
        std::thread::sleep(SETTLED * 2);
        let cache = HashCache::default();
        let first = TreeSnapshot::take_cached(d.path(), &[], Some(&cache)).unwrap();
        assert!(cache.entries.lock().unwrap().contains_key(&conf));
        let again = TreeSnapshot::take_cached(d.path(), &[], Some(&cache)).unwrap();
        assert_eq!(first, again);
    }

    #[test]
    fn removal_is_named() {
        let d = tree();
        let before = snap(&d);
        fs::remove_file(d.path().join("etc/link")).unwrap();
        let changes = snap(&d).changes_since(&before);
        assert!(
            changes.iter().any(|c| c.starts_with("removed /etc/link")),
            "{changes:?}"
        );
    }
}
