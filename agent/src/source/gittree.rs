//! A fleet repo read from a commit's objects in the device's bare repo.
//!
//! `tend run` never checks the fleet out: a worktree could be half-written by a power cut, and
//! would be one more thing to keep in sync. [`GitTree`] answers the loader's reads from the tree
//! objects of one commit, with the same rules as [`DirTree`](crate::source::tree::DirTree) on a checkout:
//! repo-relative paths only, symlinks followed only while they stay inside the repo, dangling
//! symlinks refused, files above [`MAX_FILE_BYTES`] refused, and a submodule is an empty
//! directory (which is what a checkout without `--recurse-submodules` has).

use std::collections::VecDeque;
use std::sync::Mutex;

use gix::objs::Kind;
use gix::ObjectId;

use crate::source::gitdirs::Dirs;
use crate::source::tree::{check_relative, EntryKind, Tree, TreeError, MAX_FILE_BYTES};

/// Like Linux's limit on symlink hops in one lookup (it reports ELOOP beyond 40).
const MAX_LINK_HOPS: usize = 40;
/// A symlink's target is a path, not content.
const MAX_LINK_BYTES: usize = 4096;

pub struct GitTree {
    // gix::Repository caches are not Sync; reads are short, so one lock is enough.
    inner: Mutex<Inner>,
    root: ObjectId,
    commit: ObjectId,
}

struct Inner {
    repo: gix::Repository,
    dirs: Dirs,
}

/// What a path names in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Tree(ObjectId),
    Blob(ObjectId),
    /// A gitlink: its directory exists, empty.
    Submodule,
}

impl GitTree {
    /// The tree of `commit` in `repo`.
    pub fn from_commit(repo: gix::Repository, commit: ObjectId) -> Result<GitTree, String> {
        let obj = repo
            .try_find_object(commit)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("commit {commit} is not in the local repo"))?;
        if obj.kind != Kind::Commit {
            return Err(format!("{commit} is a {}, not a commit", obj.kind));
        }
        let root = gix::objs::CommitRefIter::from_bytes(&obj.data, repo.object_hash())
            .tree_id()
            .map_err(|e| format!("commit {commit}: {e}"))?;
        drop(obj);
        let dirs = Dirs::new(Some(repo.path().to_path_buf()));
        Ok(GitTree {
            inner: Mutex::new(Inner { repo, dirs }),
            root,
            commit,
        })
    }

    pub fn commit(&self) -> ObjectId {
        self.commit
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows `path` from the root, resolving symlinks inside the repo.
    fn lookup(&self, inner: &mut Inner, path: &str) -> Result<Option<Node>, TreeError> {
        check_relative(path)?;
        let invalid = |reason: &str| TreeError::Invalid {
            path: path.to_string(),
            reason: reason.to_string(),
        };
        let mut todo: VecDeque<String> = parts(path).collect();
        // Where we are, as resolved directory names from the root, and that directory's tree.
        let mut dir: Vec<String> = Vec::new();
        let mut tree = self.root;
        let mut hops = 0;
        let mut in_final_link = false;
        while let Some(name) = todo.pop_front() {
            if name == ".." {
                if dir.pop().is_none() {
                    return Err(invalid("a symlink leads outside the fleet repo"));
                }
                tree = self.tree_at(inner, &dir, path)?;
                continue;
            }
            let found = inner
                .dirs
                .find(&inner.repo, tree, &name)
                .map_err(|e| io_error(path, e))?;
            let Some((mode, id)) = found else {
                if in_final_link {
                    return Err(invalid("dangling symlink"));
                }
                return Ok(None);
            };
            if mode.is_link() {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(invalid("too many levels of symlinks"));
                }
                let target = object(&inner.repo, id, Kind::Blob, path)?;
                if target.len() > MAX_LINK_BYTES || target.contains(&0) {
                    return Err(invalid("a symlink with an invalid target"));
                }
                let target = String::from_utf8_lossy(&target).into_owned();
                if target.starts_with('/') {
                    return Err(invalid("a symlink leads outside the fleet repo"));
                }
                if todo.is_empty() {
                    in_final_link = true;
                }
                for part in parts(&target).rev() {
                    todo.push_front(part);
                }
                continue;
            }
            if mode.is_tree() {
                if todo.is_empty() {
                    return Ok(Some(Node::Tree(id)));
                }
                dir.push(name);
                tree = id;
                continue;
            }
            if mode.is_commit() {
                // Inside a submodule's (empty) directory nothing exists.
                return Ok(todo.is_empty().then_some(Node::Submodule));
            }
            if todo.is_empty() {
                return Ok(Some(Node::Blob(id)));
            }
            return Err(invalid("a file is used as a directory"));
        }
        // Only `.` parts, or a symlink to `.`: the directory we are in.
        Ok(Some(Node::Tree(tree)))
    }

    /// The tree of a directory given as already-resolved names (no symlinks on the way).
    fn tree_at(
        &self,
        inner: &mut Inner,
        dir: &[String],
        path: &str,
    ) -> Result<ObjectId, TreeError> {
        let mut tree = self.root;
        for name in dir {
            tree = inner
                .dirs
                .find(&inner.repo, tree, name)
                .map_err(|e| io_error(path, e))?
                .filter(|(mode, _)| mode.is_tree())
                .map(|(_, id)| id)
                .ok_or_else(|| io_error(path, format!("directory {name} vanished from tree")))?;
        }
        Ok(tree)
    }
}

impl Drop for GitTree {
    fn drop(&mut self) {
        self.inner().dirs.save();
    }
}

impl Tree for GitTree {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TreeError> {
        let mut inner = self.inner();
        let id = match self.lookup(&mut inner, path)? {
            None => return Ok(None),
            Some(Node::Tree(_) | Node::Submodule) => {
                return Err(TreeError::Invalid {
                    path: path.to_string(),
                    reason: "is a directory, expected a file".into(),
                })
            }
            Some(Node::Blob(id)) => id,
        };
        let repo = &inner.repo;
        let size = repo
            .find_header(id)
            .map_err(|e| io_error(path, format!("object {id}: {e}")))?
            .size();
        if size > MAX_FILE_BYTES {
            return Err(TreeError::TooLarge {
                path: path.to_string(),
                size,
            });
        }
        object(repo, id, Kind::Blob, path).map(Some)
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, EntryKind)>, TreeError> {
        let mut inner = self.inner();
        let Some(Node::Tree(tree)) = self.lookup(&mut inner, dir)? else {
            return Ok(Vec::new());
        };
        let listing = {
            let Inner { repo, dirs } = &mut *inner;
            dirs.dir(repo, tree).map_err(|e| io_error(dir, e))?
        };
        let mut out = Vec::new();
        for (name, mode, _) in listing.entries() {
            let kind = if mode.is_tree() || mode.is_commit() {
                EntryKind::Dir
            } else if mode.is_link() {
                // As a checkout's `is_dir()` would see it: the kind of what the link leads to.
                let target = format!("{}/{}", dir.trim_end_matches('/'), name);
                match self.lookup(&mut inner, &target) {
                    Ok(Some(Node::Tree(_) | Node::Submodule)) => EntryKind::Dir,
                    _ => EntryKind::File,
                }
            } else {
                EntryKind::File
            };
            out.push((name, kind));
        }
        out.sort();
        Ok(out)
    }

    fn describe(&self) -> String {
        let hex = self.commit.to_hex().to_string();
        format!("commit {}", &hex[..12.min(hex.len())])
    }
}

/// The non-empty, non-`.` parts of a path.
fn parts(path: &str) -> impl DoubleEndedIterator<Item = String> + '_ {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_string)
}

fn object(
    repo: &gix::Repository,
    id: ObjectId,
    want: Kind,
    path: &str,
) -> Result<Vec<u8>, TreeError> {
    let obj = repo
        .try_find_object(id)
        .map_err(|e| io_error(path, format!("object {id}: {e}")))?
        .ok_or_else(|| io_error(path, format!("object {id} is missing from the local repo")))?;
    if obj.kind != want {
        return Err(io_error(
            path,
            format!("object {id} is a {}, expected a {want}", obj.kind),
        ));
    }
    Ok(obj.data.clone())
}

fn io_error(path: &str, msg: String) -> TreeError {
    TreeError::Io {
        path: path.to_string(),
        source: std::io::Error::other(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::tree::DirTree;
    use std::path::Path;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .output()
            .expect("git is installed");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A work tree with nested dirs, symlinks in and out, a dangling one, and a committed tree.
    fn fixture() -> (tempfile::TempDir, GitTree) {
        let d = tempfile::tempdir().unwrap();
        let w = d.path().join("w");
        std::fs::create_dir_all(w.join("roles/base/files")).unwrap();
        std::fs::write(w.join("fleet.yaml"), "version: 1\n").unwrap();
        std::fs::write(w.join("roles/base/role.yaml"), "resources: []\n").unwrap();
        std::fs::write(w.join("roles/base/files/motd"), "hello\n").unwrap();
        std::os::unix::fs::symlink("../base/files/motd", w.join("roles/base/motd-link")).unwrap();
        std::os::unix::fs::symlink("roles/base", w.join("base")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", w.join("leak")).unwrap();
        std::fs::create_dir_all(w.join("esc")).unwrap();
        std::os::unix::fs::symlink("../../../..", w.join("esc/up")).unwrap();
        std::os::unix::fs::symlink("nowhere", w.join("dangling")).unwrap();
        std::os::unix::fs::symlink("loop2", w.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", w.join("loop2")).unwrap();
        git(&w, &["init", "-q", "-b", "main"]);
        git(&w, &["add", "-A"]);
        git(&w, &["commit", "-q", "-m", "fixture"]);
        let head = git(&w, &["rev-parse", "HEAD"]);
        let repo = gix::open_opts(w.join(".git"), gix::open::Options::isolated()).unwrap();
        let tree =
            GitTree::from_commit(repo, ObjectId::from_hex(head.as_bytes()).unwrap()).unwrap();
        (d, tree)
    }

    #[test]
    fn reads_and_lists_like_a_checkout() {
        let (d, t) = fixture();
        let dir = DirTree::new(d.path().join("w")).unwrap();
        for path in [
            "fleet.yaml",
            "roles/base/files/motd",
            "roles/base/motd-link",
            "base/role.yaml",
            "nope",
            "roles/nope/x",
        ] {
            assert_eq!(t.read(path).unwrap(), dir.read(path).unwrap(), "{path}");
        }
        for path in [
            "roles",
            "roles/base",
            "base",
            "base/files",
            "fleet.yaml",
            "missing",
        ] {
            let mut want = dir.list(path).unwrap();
            want.retain(|(n, _)| n != ".git");
            assert_eq!(t.list(path).unwrap(), want, "{path}");
        }
    }

    #[test]
    fn symlinks_out_of_the_repo_dangling_and_looping_are_refused() {
        let (_d, t) = fixture();
        for (path, reason) in [
            ("leak", "outside"),
            ("esc/up/etc/passwd", "outside"),
            ("dangling", "dangling"),
            ("loop1", "too many levels"),
        ] {
            match t.read(path) {
                Err(TreeError::Invalid { reason: r, .. }) => {
                    assert!(r.contains(reason), "{path}: {r}")
                }
                other => panic!("{path}: {other:?}"),
            }
        }
    }

    #[test]
    fn paths_are_checked_and_directories_are_not_files() {
        let (_d, t) = fixture();
        assert!(matches!(t.read("../x"), Err(TreeError::Invalid { .. })));
        assert!(matches!(
            t.read("/fleet.yaml"),
            Err(TreeError::Invalid { .. })
        ));
        assert!(matches!(t.read("roles"), Err(TreeError::Invalid { .. })));
        assert!(matches!(
            t.read("fleet.yaml/x"),
            Err(TreeError::Invalid { .. })
        ));
        assert!(t.describe().starts_with("commit ") && t.describe().len() == 19);
    }
}
