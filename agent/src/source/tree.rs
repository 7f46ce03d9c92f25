//! Read access to a fleet repo, whatever holds it.
//!
//! The loader never opens files itself: it asks a [`Tree`]. A directory (for `tend apply --path`
//! and `tend validate`) is one implementation; git objects in the device's bare repo are another,
//! so loading never depends on a checkout. Paths are repo-relative and may not escape the repo.

use std::path::{Component, Path, PathBuf};

/// The largest single file a fleet repo may hand to a device.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("{}: {}", .path, too_large(*.size))]
    TooLarge { path: String, size: u64 },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Why a file of `size` bytes is refused.
pub fn too_large(size: u64) -> String {
    format!("{size} bytes, above the {MAX_FILE_BYTES} byte limit for one file")
}

/// What to do about a path the tree refuses.
pub const PATH_FIX: &str =
    "keep every path inside the fleet repo, without `..` or symlinks that leave it";

impl TreeError {
    /// What the repo's author should do about it, when it is the repo's fault.
    pub fn fix(&self) -> Option<&'static str> {
        match self {
            TreeError::Invalid { .. } => Some(PATH_FIX),
            TreeError::TooLarge { .. } => {
                Some("ship large payloads in a Debian package; a fleet repo is configuration")
            }
            TreeError::Io { .. } => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    File,
    Dir,
}

pub trait Tree: Send + Sync {
    /// The bytes of a file, or None when it does not exist.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TreeError>;
    /// Entries of a directory, sorted by name; empty when the directory does not exist.
    fn list(&self, dir: &str) -> Result<Vec<(String, EntryKind)>, TreeError>;
    /// What the tree is, for reports: a path or a commit.
    fn describe(&self) -> String;
}

/// Checks that `path` is a plain repo-relative path: no leading `/`, no `..`, no empty parts.
pub fn check_relative(path: &str) -> Result<(), TreeError> {
    let bad = |reason: &str| {
        Err(TreeError::Invalid {
            path: path.to_string(),
            reason: reason.to_string(),
        })
    };
    if path.is_empty() {
        return bad("empty path");
    }
    if path.contains('\0') {
        return bad("path contains a NUL byte");
    }
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return bad("path leaves the fleet repo through `..`"),
            Component::RootDir | Component::Prefix(_) => {
                return bad("absolute path; paths in a fleet repo are relative to it")
            }
        }
    }
    Ok(())
}

/// A fleet repo in a directory.
pub struct DirTree {
    root: PathBuf,
    canonical_root: PathBuf,
}

impl DirTree {
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        let canonical_root = root.canonicalize()?;
        Ok(Self {
            root,
            canonical_root,
        })
    }

    /// The on-disk path of a repo path, refusing symlinks that lead out of the repo.
    fn locate(&self, path: &str) -> Result<Option<PathBuf>, TreeError> {
        check_relative(path)?;
        let full = self.root.join(path);
        match full.canonicalize() {
            Ok(c) if c.starts_with(&self.canonical_root) => Ok(Some(c)),
            Ok(_) => Err(TreeError::Invalid {
                path: path.to_string(),
                reason: "a symlink leads outside the fleet repo".into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A missing file behind a directory symlink that leaves the repo is that symlink's
                // fault: "does not exist" would send the author looking for a file.
                let existing = full
                    .ancestors()
                    .skip(1)
                    .find(|a| a.symlink_metadata().is_ok());
                if existing
                    .and_then(|a| a.canonicalize().ok())
                    .is_some_and(|c| !c.starts_with(&self.canonical_root))
                {
                    return Err(TreeError::Invalid {
                        path: path.to_string(),
                        reason: "a symlink leads outside the fleet repo".into(),
                    });
                }
                if std::fs::symlink_metadata(&full).is_ok() {
                    return Err(TreeError::Invalid {
                        path: path.to_string(),
                        reason: "dangling symlink".into(),
                    });
                }
                Ok(None)
            }
            Err(e) => Err(TreeError::Io {
                path: path.to_string(),
                source: e,
            }),
        }
    }
}

impl Tree for DirTree {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TreeError> {
        let Some(full) = self.locate(path)? else {
            return Ok(None);
        };
        let io = |e| TreeError::Io {
            path: path.to_string(),
            source: e,
        };
        let meta = std::fs::metadata(&full).map_err(io)?;
        if meta.is_dir() {
            return Err(TreeError::Invalid {
                path: path.to_string(),
                reason: "is a directory, expected a file".into(),
            });
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(TreeError::TooLarge {
                path: path.to_string(),
                size: meta.len(),
            });
        }
        std::fs::read(&full).map(Some).map_err(io)
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, EntryKind)>, TreeError> {
        let Some(full) = self.locate(dir)? else {
            return Ok(Vec::new());
        };
        let io = |e| TreeError::Io {
            path: dir.to_string(),
            source: e,
        };
        if !full.is_dir() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&full).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = if entry.path().is_dir() {
                EntryKind::Dir
            } else {
                EntryKind::File
            };
            out.push((name, kind));
        }
        out.sort();
        Ok(out)
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotdot_and_absolute_paths_are_refused() {
        assert!(check_relative("roles/../../etc/passwd").is_err());
        assert!(check_relative("/etc/passwd").is_err());
        assert!(check_relative("roles/base/files/motd").is_ok());
    }

    #[test]
    fn symlink_out_of_the_repo_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("leak")).unwrap();
        std::fs::write(d.path().join("ok"), "x").unwrap();
        std::os::unix::fs::symlink("ok", d.path().join("inside")).unwrap();
        let t = DirTree::new(d.path()).unwrap();
        assert!(matches!(t.read("leak"), Err(TreeError::Invalid { .. })));
        assert_eq!(t.read("inside").unwrap().unwrap(), b"x");
        assert_eq!(t.read("missing").unwrap(), None);
    }

    /// A source behind `files -> /etc` was reported as "does not exist" when /etc lacked it.
    #[test]
    fn a_missing_file_behind_a_directory_symlink_out_of_the_repo_names_the_symlink() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("files")).unwrap();
        let t = DirTree::new(d.path()).unwrap();
        match t.read("files/nothing-here") {
            Err(e @ TreeError::Invalid { .. }) => {
                assert!(e.to_string().contains("a symlink leads outside"), "{e}")
            }
            other => panic!("expected the symlink to be named, got {other:?}"),
        }
        assert_eq!(t.read("no-dir/nothing").unwrap(), None);
    }

    #[test]
    fn a_file_above_the_limit_says_so_with_its_own_fix() {
        let d = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(d.path().join("big")).unwrap();
        f.set_len(MAX_FILE_BYTES + 1).unwrap();
        let e = DirTree::new(d.path()).unwrap().read("big").unwrap_err();
        assert!(matches!(e, TreeError::TooLarge { .. }), "{e}");
        assert!(e.fix().is_some_and(|f| f.contains("package")), "{e}");
    }
}
