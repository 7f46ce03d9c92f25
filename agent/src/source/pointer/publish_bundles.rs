//! `tend publish pointer --bundles`: beside the pointer, a full git bundle of the stage's head
//! and an incremental one from each of the last N pointers' commits, listed (size, sha256) in
//! the signed pointer, so a static host or CDN can serve a merge's objects without being trusted.
//!
//! The last pointers' commits come from the pointer this publication replaces (the `--out` file
//! as it is before the write): its commit, then the prerequisites of its own bundles, newest
//! first. So the chain needs no state of its own beyond the published directory. A commit that
//! is not an ancestor of the new head (a rollback, a force-push) gets no bundle: it cannot
//! connect.
//!
//! Names carry the commits and a piece of the hash, `<stem>.<to12>.<from12|full>.<sha16>.bundle`,
//! so a file's name never names other bytes and a CDN may cache it forever. Bundles listed by
//! neither the new pointer nor the one before are removed; the one before keeps its bundles for
//! the devices that fetched it a moment ago. The bundles are made by `git bundle create` (CI has
//! git; a device never runs git).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::publish::PublishError;
use super::{Bundle, Document};

/// Where and how many.
pub struct BundleOut {
    /// The directory of the pointer file.
    pub dir: PathBuf,
    /// The pointer's file name without `.pointer`: the bundles' names start with it.
    pub stem: String,
    /// How many of the last pointers' commits get an incremental bundle.
    pub incremental: usize,
    /// The pointer this publication replaces, if there is one.
    pub previous: Option<Document>,
}

impl BundleOut {
    /// For the pointer file `out`, reading the pointer it holds now (if any) as the previous one.
    pub fn beside(out: &Path, incremental: usize) -> Result<BundleOut, PublishError> {
        let bad = |why: String| PublishError::Bundles {
            dir: out.display().to_string(),
            why,
        };
        let name = out
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| bad("--out has no file name".into()))?;
        let stem = name.strip_suffix(".pointer").unwrap_or(name).to_string();
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let previous = match std::fs::read(out) {
            Ok(bytes) => {
                let (payload, _) = super::split(&bytes).map_err(|why| {
                    bad(format!(
                        "the pointer there now is not one ({why}); remove it to start the chain anew"
                    ))
                })?;
                let (doc, _, _) = super::parse(payload).map_err(|why| {
                    bad(format!(
                        "the pointer there now does not parse ({why}); remove it to start the chain anew"
                    ))
                })?;
                Some(doc)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(bad(format!("reading it: {e}"))),
        };
        Ok(BundleOut {
            dir,
            stem,
            incremental,
            previous,
        })
    }

    /// The commits that get an incremental bundle to `head`, newest first.
    fn prerequisites(&self, repo: &Path, head: &str) -> Vec<String> {
        let Some(prev) = &self.previous else {
            return Vec::new();
        };
        let chain = std::iter::once(prev.commit.clone())
            .chain(prev.bundles.iter().filter_map(|b| b.prerequisite.clone()));
        let mut out: Vec<String> = Vec::new();
        for c in chain {
            if out.len() >= self.incremental {
                break;
            }
            if c != head && !out.contains(&c) && is_ancestor(repo, &c, head) {
                out.push(c);
            }
        }
        out
    }

    /// Writes the bundles for `head` of `stage` and returns their list for the pointer.
    pub fn write(&self, repo: &Path, stage: &str, head: &str) -> Result<Vec<Bundle>, PublishError> {
        let mut list = Vec::new();
        let from: Vec<Option<String>> = std::iter::once(None)
            .chain(self.prerequisites(repo, head).into_iter().map(Some))
            .collect();
        for prerequisite in from {
            list.push(self.one(repo, stage, head, prerequisite)?);
        }
        Ok(list)
    }

    fn one(
        &self,
        repo: &Path,
        stage: &str,
        head: &str,
        prerequisite: Option<String>,
    ) -> Result<Bundle, PublishError> {
        let fail = |why: String| PublishError::Bundles {
            dir: self.dir.display().to_string(),
            why,
        };
        let part = self.dir.join(format!(".{}.bundle.part", self.stem));
        let mut git = Command::new("git");
        git.arg("-C")
            .arg(repo)
            .args(["bundle", "create", "-q"])
            .arg(&part)
            .arg(format!("refs/heads/{stage}"));
        if let Some(p) = &prerequisite {
            git.arg(format!("^{p}"));
        }
        let out = git
            .output()
            .map_err(|e| fail(format!("cannot run git ({e}); install git")))?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&part);
            return Err(fail(format!(
                "git bundle create failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let bytes =
            std::fs::read(&part).map_err(|e| fail(format!("reading {}: {e}", part.display())))?;
        let sha256 = format!("{:x}", Sha256::digest(&bytes));
        let from = prerequisite.as_deref().map_or("full", |p| &p[..12]);
        let file = format!(
            "{}.{}.{from}.{}.bundle",
            self.stem,
            &head[..12],
            &sha256[..16]
        );
        let target = self.dir.join(&file);
        std::fs::rename(&part, &target).map_err(|e| {
            fail(format!(
                "renaming {} to {}: {e}",
                part.display(),
                target.display()
            ))
        })?;
        Ok(Bundle {
            prerequisite,
            file,
            size: bytes.len() as u64,
            sha256,
        })
    }

    /// Removes this stem's bundles that neither `list` nor the previous pointer names.
    pub fn prune(&self, list: &[Bundle]) -> Result<(), PublishError> {
        let fail = |why: String| PublishError::Bundles {
            dir: self.dir.display().to_string(),
            why,
        };
        let keep: Vec<&str> = list
            .iter()
            .chain(self.previous.iter().flat_map(|p| p.bundles.iter()))
            .map(|b| b.file.as_str())
            .collect();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| fail(format!("listing it: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| fail(format!("listing it: {e}")))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if is_ours(&self.stem, name) && !keep.contains(&name) {
                std::fs::remove_file(entry.path())
                    .map_err(|e| fail(format!("removing {name}: {e}")))?;
            }
        }
        Ok(())
    }
}

/// Whether `name` is `<stem>.<12 hex>.<12 hex|full>.<16 hex>.bundle`.
fn is_ours(stem: &str, name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix(stem)
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_suffix(".bundle"))
    else {
        return false;
    };
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = rest.split('.').collect();
    matches!(parts.as_slice(), [to, from, sha]
        if hex(to, 12) && (*from == "full" || hex(from, 12)) && hex(sha, 16))
}

/// `git merge-base --is-ancestor`: false too when the repo does not have `a`.
fn is_ancestor(repo: &Path, a: &str, b: &str) -> bool {
    Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["merge-base", "--is-ancestor", a, b])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[cfg(test)]
mod tests {
    use super::is_ours;

    #[test]
    fn only_this_stems_bundles_are_pruned() {
        assert!(is_ours(
            "main",
            "main.0123456789ab.full.0123456789abcdef.bundle"
        ));
        assert!(is_ours(
            "main",
            "main.0123456789ab.ba9876543210.0123456789abcdef.bundle"
        ));
        // Another stage whose name starts with this one's.
        assert!(!is_ours(
            "main",
            "main.eu.0123456789ab.full.0123456789abcdef.bundle"
        ));
        assert!(!is_ours("main", "main.pointer"));
        assert!(!is_ours("main", "main.notes.bundle"));
    }
}
