//! What changes replaced, kept in the state dir until the device is on a good commit again.
//!
//! Re-applying the last good commit cannot undo everything a bad one did: a file the bad commit
//! created, or one the good commit does not manage (an /etc/hosts a bad commit took over), would
//! stay as the bad commit left it. So before a resource replaces or removes a path, the path's
//! state is saved here: its bytes, mode and owner, a link's target, a directory's tree, or the
//! fact that nothing was there. The first save of a path wins, so what is kept is the state
//! before the first change since the last good commit, however many runs that took. A revert
//! puts every path back, newest first; a good commit discards the lot.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tend_roles::{fsutil, statefile, Host};

/// Under the state dir.
pub const DIR: &str = "revert";
const JOURNAL: &str = "journal.json";
const BLOBS: &str = "blobs";

/// A directory tree larger than this is kept as metadata only (its contents are not restorable),
/// so that one `state: absent` on a large tree cannot fill a small device's storage.
const MAX_TREE_BYTES: u64 = 64 << 20;
const MAX_TREE_ENTRIES: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Saved {
    /// Nothing was there: a revert removes what is there now.
    Absent,
    File {
        blob: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Link {
        target: String,
        uid: u32,
        gid: u32,
    },
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
        entries: Vec<Child>,
        /// The tree was too large to keep; only the directory itself is restored.
        #[serde(default)]
        truncated: bool,
    },
    /// A fifo, socket or device node: left alone.
    Special,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Child {
    pub name: String,
    pub saved: Saved,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub saved: Saved,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Journal {
    entries: Vec<Entry>,
    next_blob: u64,
}

/// The saved states, on disk under `<state_dir>/revert/`.
pub struct Backup {
    dir: PathBuf,
    journal: Journal,
}

impl Backup {
    /// Opens the journal under `state_dir`; a missing one is empty. An unreadable one is moved
    /// aside (`journal.json.unreadable`) with a warning: losing what a revert would restore must
    /// not stop the device from converging.
    pub fn open(state_dir: &Path) -> io::Result<Backup> {
        let dir = state_dir.join(DIR);
        let path = dir.join(JOURNAL);
        let journal = match fs::read(&path) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!(
                        "{}: {e}; moved aside, nothing is kept for a revert",
                        path.display()
                    );
                    fs::rename(&path, dir.join(format!("{JOURNAL}.unreadable")))?;
                    Journal::default()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Journal::default(),
            Err(e) => return Err(e),
        };
        Ok(Backup { dir, journal })
    }

    pub fn is_empty(&self) -> bool {
        self.journal.entries.is_empty()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.journal.entries
    }

    /// Saves the state of `device_path` unless it was saved already since the last good commit.
    pub fn save(&mut self, host: &Host, device_path: &str) -> io::Result<()> {
        if self.journal.entries.iter().any(|e| e.path == device_path) {
            return Ok(());
        }
        let path = host_path(host, device_path)?;
        fs::create_dir_all(self.dir.join(BLOBS))?;
        let mut budget = Budget::default();
        let saved = self.snapshot(&path, &mut budget)?;
        if budget.exceeded {
            tracing::warn!(
                path = device_path,
                "a directory tree is too large to keep for a revert; only its metadata is kept"
            );
        }
        self.journal.entries.push(Entry {
            path: device_path.to_string(),
            saved,
        });
        self.write_journal()
    }

    fn snapshot(&mut self, path: &Path, budget: &mut Budget) -> io::Result<Saved> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Saved::Absent),
            Err(e) => return Err(e),
        };
        let (uid, gid, mode) = (meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777);
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(path)?.to_string_lossy().into_owned();
            return Ok(Saved::Link { target, uid, gid });
        }
        if ft.is_file() {
            budget.bytes += meta.len();
            let blob = self.journal.next_blob.to_string();
            self.journal.next_blob += 1;
            let bytes = fs::read(path)?;
            fsutil::atomic_write(
                &self.dir.join(BLOBS).join(&blob),
                &bytes,
                fsutil::Meta {
                    mode: Some(0o600),
                    ..Default::default()
                },
            )?;
            return Ok(Saved::File {
                blob,
                mode,
                uid,
                gid,
            });
        }
        if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            names.sort();
            budget.entries += names.len();
            let mut entries = Vec::new();
            let truncated = budget.over() || tree_too_large(path, budget);
            if !truncated {
                for name in names {
                    let saved = self.snapshot(&path.join(&name), budget)?;
                    entries.push(Child {
                        name: name.to_string_lossy().into_owned(),
                        saved,
                    });
                }
            }
            return Ok(Saved::Dir {
                mode,
                uid,
                gid,
                entries,
                truncated,
            });
        }
        Ok(Saved::Special)
    }

    fn write_journal(&self) -> io::Result<()> {
        statefile::write_json(&self.dir.join(JOURNAL), &self.journal, 0o600).map(drop)
    }

    /// Puts every saved path back, newest first. Returns the paths restored and the errors (one
    /// path that cannot be restored does not stop the others).
    pub fn restore(&self, host: &Host) -> (Vec<String>, Vec<String>) {
        let mut restored = Vec::new();
        let mut errors = Vec::new();
        for e in self.journal.entries.iter().rev() {
            match host_path(host, &e.path).and_then(|p| self.put_back(&p, &e.saved)) {
                Ok(()) => restored.push(e.path.clone()),
                Err(err) => errors.push(format!("restoring {}: {err}", e.path)),
            }
        }
        (restored, errors)
    }

    fn put_back(&self, path: &Path, saved: &Saved) -> io::Result<()> {
        let parent = path.parent().unwrap_or(Path::new("/"));
        match saved {
            Saved::Special => return Ok(()),
            Saved::Absent => remove_any(path)?,
            Saved::File {
                blob,
                mode,
                uid,
                gid,
            } => {
                let bytes = fs::read(self.dir.join(BLOBS).join(blob))?;
                if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                    fs::remove_dir_all(path)?;
                }
                fs::create_dir_all(parent)?;
                fsutil::atomic_write(
                    path,
                    &bytes,
                    fsutil::Meta {
                        mode: Some(*mode),
                        uid: Some(*uid),
                        gid: Some(*gid),
                    },
                )?;
            }
            Saved::Link { target, uid, gid } => {
                remove_any(path)?;
                fs::create_dir_all(parent)?;
                std::os::unix::fs::symlink(target, path)?;
                std::os::unix::fs::lchown(path, Some(*uid), Some(*gid))?;
            }
            Saved::Dir {
                mode,
                uid,
                gid,
                entries,
                ..
            } => {
                if !fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                    remove_any(path)?;
                    fs::create_dir_all(path)?;
                }
                std::os::unix::fs::chown(path, Some(*uid), Some(*gid))?;
                fs::set_permissions(path, fs::Permissions::from_mode(*mode))?;
                for c in entries {
                    self.put_back(&path.join(&c.name), &c.saved)?;
                }
            }
        }
        fsutil::fsync_dir(parent).or_else(|e| match e.kind() {
            io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        })
    }

    /// Forgets everything: the device is on a good commit.
    pub fn discard(self) -> io::Result<()> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[derive(Default)]
struct Budget {
    bytes: u64,
    entries: usize,
    exceeded: bool,
}

impl Budget {
    fn over(&mut self) -> bool {
        if self.bytes > MAX_TREE_BYTES || self.entries > MAX_TREE_ENTRIES {
            self.exceeded = true;
        }
        self.exceeded
    }
}

/// Sizes a tree before copying it, stopping as soon as it is over budget.
fn tree_too_large(dir: &Path, budget: &mut Budget) -> bool {
    let mut probe = Budget {
        bytes: budget.bytes,
        entries: budget.entries,
        exceeded: false,
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            probe.entries += 1;
            if let Ok(m) = e.path().symlink_metadata() {
                if m.is_dir() {
                    stack.push(e.path());
                } else if m.is_file() {
                    probe.bytes += m.len();
                }
            }
            if probe.over() {
                budget.exceeded = true;
                return true;
            }
        }
    }
    false
}

fn host_path(host: &Host, device_path: &str) -> io::Result<PathBuf> {
    host.path(device_path).map_err(io::Error::other)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    struct Bed {
        root: tempfile::TempDir,
        state: tempfile::TempDir,
    }

    impl Bed {
        fn new() -> Bed {
            Bed {
                root: tempfile::tempdir().unwrap(),
                state: tempfile::tempdir().unwrap(),
            }
        }
        fn host(&self) -> Host {
            Host::new(self.root.path())
        }
        fn p(&self, rel: &str) -> PathBuf {
            self.root.path().join(rel)
        }
    }

    #[test]
    fn a_replaced_file_comes_back_with_its_bytes_and_mode_and_a_new_one_goes() {
        let b = Bed::new();
        fs::create_dir_all(b.p("etc")).unwrap();
        fs::write(b.p("etc/hosts"), "127.0.0.1 git.example\n").unwrap();
        fs::set_permissions(b.p("etc/hosts"), fs::Permissions::from_mode(0o640)).unwrap();
        let mut backup = Backup::open(b.state.path()).unwrap();
        backup.save(&b.host(), "/etc/hosts").unwrap();
        backup.save(&b.host(), "/etc/new.conf").unwrap();
        // The bad change.
        fs::write(b.p("etc/hosts"), "broken\n").unwrap();
        fs::set_permissions(b.p("etc/hosts"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(b.p("etc/new.conf"), "x").unwrap();

        // A later run (another process) finds the journal on disk.
        let backup = Backup::open(b.state.path()).unwrap();
        let (restored, errors) = backup.restore(&b.host());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(restored, ["/etc/new.conf", "/etc/hosts"], "newest first");
        assert_eq!(
            fs::read_to_string(b.p("etc/hosts")).unwrap(),
            "127.0.0.1 git.example\n"
        );
        assert_eq!(mode(&b.p("etc/hosts")), 0o640);
        assert!(!b.p("etc/new.conf").exists(), "it did not exist before");
    }

    #[test]
    fn the_first_save_wins_until_discarded() {
        let b = Bed::new();
        fs::write(b.p("motd"), "good").unwrap();
        let mut backup = Backup::open(b.state.path()).unwrap();
        backup.save(&b.host(), "/motd").unwrap();
        fs::write(b.p("motd"), "bad one").unwrap();
        backup.save(&b.host(), "/motd").unwrap();
        fs::write(b.p("motd"), "bad two").unwrap();
        assert_eq!(backup.entries().len(), 1);
        backup.restore(&b.host());
        assert_eq!(fs::read_to_string(b.p("motd")).unwrap(), "good");

        backup.discard().unwrap();
        assert!(!b.state.path().join(DIR).exists());
        assert!(Backup::open(b.state.path()).unwrap().is_empty());
    }

    #[test]
    fn links_and_removed_directory_trees_are_restored() {
        let b = Bed::new();
        fs::create_dir_all(b.p("opt/app/sub")).unwrap();
        fs::write(b.p("opt/app/sub/conf"), "v1").unwrap();
        std::os::unix::fs::symlink("/opt/app/sub/conf", b.p("current")).unwrap();
        fs::set_permissions(b.p("opt/app"), fs::Permissions::from_mode(0o750)).unwrap();
        let mut backup = Backup::open(b.state.path()).unwrap();
        backup.save(&b.host(), "/opt/app").unwrap();
        backup.save(&b.host(), "/current").unwrap();
        fs::remove_dir_all(b.p("opt/app")).unwrap();
        fs::remove_file(b.p("current")).unwrap();
        fs::write(b.p("current"), "a file now").unwrap();

        let (_, errors) = backup.restore(&b.host());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(fs::read_to_string(b.p("opt/app/sub/conf")).unwrap(), "v1");
        assert_eq!(mode(&b.p("opt/app")), 0o750);
        assert_eq!(
            fs::read_link(b.p("current")).unwrap(),
            Path::new("/opt/app/sub/conf")
        );
    }

    #[test]
    fn a_directory_that_replaced_a_file_is_removed_for_it() {
        let b = Bed::new();
        fs::write(b.p("thing"), "file").unwrap();
        let mut backup = Backup::open(b.state.path()).unwrap();
        backup.save(&b.host(), "/thing").unwrap();
        fs::remove_file(b.p("thing")).unwrap();
        fs::create_dir_all(b.p("thing/inner")).unwrap();
        let (_, errors) = backup.restore(&b.host());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(fs::read_to_string(b.p("thing")).unwrap(), "file");
    }

    #[test]
    fn an_unreadable_journal_is_moved_aside_not_fatal() {
        let b = Bed::new();
        fs::create_dir_all(b.state.path().join(DIR)).unwrap();
        fs::write(b.state.path().join(DIR).join(JOURNAL), "{\"entries\": [tor").unwrap();
        let backup = Backup::open(b.state.path()).unwrap();
        assert!(backup.is_empty());
        assert!(b
            .state
            .path()
            .join(DIR)
            .join("journal.json.unreadable")
            .exists());
    }

    #[test]
    fn paths_resolve_inside_the_root() {
        let b = Bed::new();
        fs::create_dir_all(b.p("real")).unwrap();
        std::os::unix::fs::symlink("/real", b.p("etc")).unwrap();
        fs::write(b.p("real/x"), "in root").unwrap();
        let mut backup = Backup::open(b.state.path()).unwrap();
        backup.save(&b.host(), "/etc/x").unwrap();
        fs::write(b.p("real/x"), "changed").unwrap();
        backup.restore(&b.host());
        assert_eq!(fs::read_to_string(b.p("real/x")).unwrap(), "in root");
    }
}
