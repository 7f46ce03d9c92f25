//! Tree objects for [`crate::source::gittree::GitTree`]: each read and decoded once per run, looked up by
//! bisection, and, for trees too big to read on every run, answers kept across runs.
//!
//! Why: the loader reads a role's files one by one, and each read used to inflate and decode the
//! directory's tree again, so a no-op with 1,000 managed files took 16× the 20-file one, and
//! 10,000 files took 21 s. A fleet with 100,000 devices has a `devices/` tree of 4 MB; finding
//! one device's file in it on every run tripled a no-op. A tree's id names its content, so what
//! a name in it resolves to can never go stale: `<repo>/tend-lookups` keeps the lookups in big
//! trees that the last run made, and a run on an unchanged commit does not inflate them again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use gix::objs::tree::EntryMode;
use gix::objs::Kind;
use gix::ObjectId;

/// Trees at least this big (bytes) have their lookups remembered across runs (≈ 1,500 entries).
const BIG_TREE: usize = 64 * 1024;
const LOOKUPS_FILE: &str = "tend-lookups";

/// What a name in a tree is: its mode and object.
pub type Found = (EntryMode, ObjectId);

/// One tree object, decoded; names stay in the object's bytes.
pub struct Dir {
    data: Vec<u8>,
    entries: Vec<DirEntry>,
    /// In git's canonical order (as git writes every tree), so lookups can bisect; a tree that
    /// is not (a hand-crafted object) is searched from start to end instead.
    sorted: bool,
}

#[derive(Clone, Copy)]
struct DirEntry {
    start: u32,
    len: u32,
    mode: EntryMode,
    id: ObjectId,
}

impl Dir {
    fn parse(data: Vec<u8>, hash: gix::hash::Kind) -> Result<Dir, String> {
        let mut entries = Vec::new();
        for e in gix::objs::TreeRefIter::from_bytes(&data, hash) {
            let e = e.map_err(|e| e.to_string())?;
            let start = e.filename.as_ptr() as usize - data.as_ptr() as usize;
            entries.push(DirEntry {
                start: start as u32,
                len: e.filename.len() as u32,
                mode: e.mode,
                id: e.oid.to_owned(),
            });
        }
        let mut dir = Dir {
            data,
            entries,
            sorted: false,
        };
        dir.sorted = dir.entries.windows(2).all(|w| {
            gix::objs::tree::name_order(
                dir.name(&w[0]),
                w[0].mode.is_tree(),
                dir.name(&w[1]),
                w[1].mode.is_tree(),
            )
            .is_lt()
        });
        Ok(dir)
    }

    fn name(&self, e: &DirEntry) -> &[u8] {
        &self.data[e.start as usize..(e.start + e.len) as usize]
    }

    /// The entry named `name` (a file, link, submodule or directory).
    pub fn find(&self, name: &[u8]) -> Option<Found> {
        let found = if self.sorted {
            // A directory sorts as if its name ended in '/', anything else as if in NUL.
            [false, true].into_iter().find_map(|as_tree| {
                self.entries
                    .binary_search_by(|e| {
                        gix::objs::tree::name_order(self.name(e), e.mode.is_tree(), name, as_tree)
                    })
                    .ok()
            })
        } else {
            self.entries.iter().position(|e| self.name(e) == name)
        };
        found.map(|i| (self.entries[i].mode, self.entries[i].id))
    }

    /// Every entry, in the tree's order, names decoded lossily as a checkout would show them.
    pub fn entries(&self) -> impl Iterator<Item = (String, EntryMode, ObjectId)> + '_ {
        self.entries.iter().map(|e| {
            (
                String::from_utf8_lossy(self.name(e)).into_owned(),
                e.mode,
                e.id,
            )
        })
    }
}

/// The trees read in this run, and the remembered lookups.
pub struct Dirs {
    dirs: HashMap<ObjectId, Arc<Dir>>,
    remembered: Remembered,
}

impl Dirs {
    /// `git_dir`: where the lookups in big trees are kept (None: not kept).
    pub fn new(git_dir: Option<PathBuf>) -> Dirs {
        Dirs {
            dirs: HashMap::new(),
            remembered: Remembered::load(git_dir.map(|d| d.join(LOOKUPS_FILE))),
        }
    }

    /// Tree `id`, read from `repo` the first time.
    pub fn dir(&mut self, repo: &gix::Repository, id: ObjectId) -> Result<Arc<Dir>, String> {
        if let Some(d) = self.dirs.get(&id) {
            return Ok(d.clone());
        }
        let obj = repo
            .try_find_object(id)
            .map_err(|e| format!("object {id}: {e}"))?
            .ok_or_else(|| format!("object {id} is missing from the local repo"))?;
        if obj.kind != Kind::Tree {
            return Err(format!("object {id} is a {}, expected a tree", obj.kind));
        }
        let dir = Arc::new(
            Dir::parse(obj.detach().data, repo.object_hash())
                .map_err(|e| format!("tree {id}: {e}"))?,
        );
        self.dirs.insert(id, dir.clone());
        Ok(dir)
    }

    /// What `name` is in tree `id`.
    pub fn find(
        &mut self,
        repo: &gix::Repository,
        id: ObjectId,
        name: &str,
    ) -> Result<Option<Found>, String> {
        if !self.dirs.contains_key(&id) {
            if let Some(found) = self.remembered.get(id, name) {
                return Ok(found);
            }
        }
        let dir = self.dir(repo, id)?;
        let found = dir.find(name.as_bytes());
        if dir.data.len() >= BIG_TREE {
            self.remembered.note(id, name, found);
        }
        Ok(found)
    }

    /// Writes the lookups this run made in big trees, if they differ from the file's.
    pub fn save(&mut self) {
        self.remembered.save();
    }
}

/// `tend-lookups`: one line per lookup in a big tree, `<tree> <mode|-> <object|-> <name as hex>`.
/// It holds exactly the lookups of the last run that made any, so it does not grow; a line that
/// does not parse discards the file (it is only a cache).
struct Remembered {
    path: Option<PathBuf>,
    loaded: HashMap<(ObjectId, String), Option<Found>>,
    used: HashMap<(ObjectId, String), Option<Found>>,
}

impl Remembered {
    fn load(path: Option<PathBuf>) -> Remembered {
        let loaded = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|text| text.lines().map(parse_line).collect::<Option<_>>())
            .unwrap_or_default();
        Remembered {
            path,
            loaded,
            used: HashMap::new(),
        }
    }

    fn get(&mut self, tree: ObjectId, name: &str) -> Option<Option<Found>> {
        let key = (tree, name.to_string());
        let found = *self.loaded.get(&key)?;
        self.used.insert(key, found);
        Some(found)
    }

    fn note(&mut self, tree: ObjectId, name: &str, found: Option<Found>) {
        self.used.insert((tree, name.to_string()), found);
    }

    fn save(&mut self) {
        let Some(path) = &self.path else { return };
        if self.used.is_empty() || self.used == self.loaded {
            return;
        }
        let mut lines: Vec<String> = self
            .used
            .iter()
            .map(|((tree, name), found)| {
                let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
                match found {
                    Some((mode, id)) => format!("{tree} {:o} {id} {hex}", mode.value()),
                    None => format!("{tree} - - {hex}"),
                }
            })
            .collect();
        lines.sort();
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, lines.join("\n") + "\n")
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::debug!(path = %path.display(), error = %e, "cannot keep tree lookups");
            let _ = std::fs::remove_file(&tmp);
        }
        self.loaded = std::mem::take(&mut self.used);
    }
}

fn parse_line(line: &str) -> Option<((ObjectId, String), Option<Found>)> {
    let mut f = line.split(' ');
    let tree = ObjectId::from_hex(f.next()?.as_bytes()).ok()?;
    let (mode, id, hex) = (f.next()?, f.next()?, f.next()?);
    if f.next().is_some() || hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    let name = String::from_utf8(bytes).ok()?;
    let found = match (mode, id) {
        ("-", "-") => None,
        _ => Some((
            EntryMode::try_from(u32::from_str_radix(mode, 8).ok()?).ok()?,
            ObjectId::from_hex(id.as_bytes()).ok()?,
        )),
    };
    Some(((tree, name), found))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_bytes(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (mode, name) in entries {
            out.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            out.extend_from_slice(&[7u8; 20]);
        }
        out
    }

    #[test]
    fn bisection_finds_files_and_directories_in_git_order() {
        // Git's order: "a.b" < "a" (as "a/") < "a0"; a directory sorts as if it ended in '/'.
        let data = tree_bytes(&[
            ("100644", "a.b"),
            ("40000", "a"),
            ("100644", "a0"),
            ("120000", "z"),
        ]);
        let dir = Dir::parse(data, gix::hash::Kind::Sha1).unwrap();
        assert!(dir.sorted);
        assert!(dir.find(b"a").unwrap().0.is_tree());
        assert!(dir.find(b"a.b").unwrap().0.is_blob());
        assert!(dir.find(b"z").unwrap().0.is_link());
        assert!(dir.find(b"a0").is_some());
        assert!(dir.find(b"b").is_none());
    }

    #[test]
    fn an_unsorted_tree_is_searched_in_full() {
        let data = tree_bytes(&[("100644", "z"), ("100644", "a")]);
        let dir = Dir::parse(data, gix::hash::Kind::Sha1).unwrap();
        assert!(!dir.sorted);
        assert!(dir.find(b"a").is_some() && dir.find(b"z").is_some());
    }

    #[test]
    fn remembered_lookups_round_trip_and_a_damaged_file_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(LOOKUPS_FILE);
        let tree = ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap();
        let blob = ObjectId::from_hex(b"2222222222222222222222222222222222222222").unwrap();
        let mut r = Remembered::load(Some(path.clone()));
        r.note(
            tree,
            "dev 1.yaml",
            Some((EntryMode::try_from(0o100644).unwrap(), blob)),
        );
        r.note(tree, "missing.yaml", None);
        r.save();
        let mut again = Remembered::load(Some(path.clone()));
        assert_eq!(
            again.get(tree, "dev 1.yaml"),
            Some(Some((EntryMode::try_from(0o100644).unwrap(), blob)))
        );
        assert_eq!(again.get(tree, "missing.yaml"), Some(None));
        assert_eq!(again.get(tree, "other.yaml"), None);
        std::fs::write(&path, "not a lookup\n").unwrap();
        assert!(Remembered::load(Some(path)).loaded.is_empty());
    }
}
