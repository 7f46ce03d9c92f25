//! Renders every device of a commit, from git objects, each device once, on every core.
//!
//! The commits are read through [`GitTree`], as `tend run` reads them on a device, so a plan needs
//! no checkout of either commit and sees exactly what a device would load. The devices are shared
//! out between threads by a counter, since one device may take far longer than another. Each
//! thread opens the two commits for itself, and its renders share their parsed fleet.yaml, groups
//! and roles (as `tend validate` does): a tree and parse cache shared by all threads made them
//! wait on each other's locks, three times slower on two busy cores than one thread.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use gix::ObjectId;

use crate::diag::{Diagnostic, Diagnostics};
use crate::fleet::load::Parsed;
use crate::inspect::{device_ids, render_with_facts};
use crate::plan::changes::{snapshot, Contents, Snapshot};
use crate::plan::facts::FactsSource;
use crate::plan::PlanError;
use crate::source::gittree::GitTree;
use crate::source::tree::Tree;

/// One commit of the fleet repo, opened for rendering.
pub struct Commit {
    pub id: ObjectId,
    tree: Arc<dyn Tree>,
    parsed: Parsed,
}

/// The device files of a commit; None when its fleet.yaml does not load, with why in `errors`.
pub struct Listing {
    pub ids: Option<Vec<String>>,
    pub errors: Diagnostics,
}

impl Commit {
    pub fn open(repo: &gix::Repository, id: ObjectId) -> Result<Commit, PlanError> {
        let tree = GitTree::from_commit(repo.clone(), id).map_err(|reason| PlanError::Commit {
            commit: id.to_string(),
            reason,
        })?;
        Ok(Commit {
            id,
            tree: Arc::new(tree),
            parsed: Parsed::default(),
        })
    }

    pub fn list(&self) -> Result<Listing, PlanError> {
        let mut errors = Diagnostics::default();
        let ids = device_ids(&self.tree, &mut errors).map_err(|d| PlanError::Commit {
            commit: self.id.to_string(),
            reason: d.to_string(),
        })?;
        Ok(Listing { ids, errors })
    }

    fn render(&self, id: &str, facts: &FactsSource, contents: &Contents) -> Rendered {
        let f = facts
            .facts(&self.tree, id, &self.parsed)
            .map_err(Diagnostics::from)?;
        let v = render_with_facts(&self.tree, id, Some(&self.parsed), f, true)?;
        Ok(snapshot(&v, contents))
    }
}

/// A device's desired resources, or why it does not render (file:line).
pub type Rendered = Result<Snapshot, Diagnostics>;

/// What one device is at each commit: None when its file is not there.
pub struct Device {
    pub id: String,
    pub base: Option<Rendered>,
    pub head: Option<Rendered>,
}

/// Renders each of `ids` at the commits that have its file (`in_base`, `in_head`).
pub fn render_all(
    repo: &gix::Repository,
    commits: (ObjectId, ObjectId),
    ids: Vec<(String, bool, bool)>,
    facts: &FactsSource,
) -> Result<Vec<Device>, PlanError> {
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(ids.len().max(1));
    let work = |repo: gix::Repository| -> Result<Vec<(usize, Device)>, PlanError> {
        let (base, head) = (
            Commit::open(&repo, commits.0)?,
            Commit::open(&repo, commits.1)?,
        );
        let contents = Contents::default();
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((id, in_base, in_head)) = ids.get(i) else {
                return Ok(done);
            };
            let at = |c: &Commit, present: bool| present.then(|| c.render(id, facts, &contents));
            done.push((
                i,
                Device {
                    id: id.clone(),
                    base: at(&base, *in_base),
                    head: at(&head, *in_head),
                },
            ));
        }
    };
    let mut all: Vec<(usize, Device)> = Vec::with_capacity(ids.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let repo = repo.clone();
                s.spawn(move || work(repo))
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(done) => all.extend(done?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok::<_, PlanError>(())
    })?;
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, d)| d).collect())
}

/// The commit a revision names: a full hex id, or a ref (`main`, `origin/main`, `HEAD`, a tag).
pub fn resolve(repo: &gix::Repository, dir: &Path, rev: &str) -> Result<ObjectId, PlanError> {
    let bad = |reason: String| PlanError::Revision {
        rev: rev.to_string(),
        dir: dir.display().to_string(),
        reason,
    };
    if rev.len() == 40 {
        if let Ok(id) = ObjectId::from_hex(rev.as_bytes()) {
            return Ok(id);
        }
    }
    let mut reference = repo
        .try_find_reference(rev)
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("no such ref".into()))?;
    let commit = reference
        .peel_to_commit()
        .map_err(|e| bad(format!("does not lead to a commit: {e}")))?;
    Ok(commit.id)
}

/// A diagnostic for every device when a commit's fleet.yaml itself does not load.
pub fn fleet_errors(listing: &Listing) -> Diagnostics {
    let mut d = Diagnostics::default();
    for e in &listing.errors.0 {
        d.push(e.clone());
    }
    if d.is_empty() {
        d.push(Diagnostic::new("fleet.yaml", 0, "the fleet does not load"));
    }
    d
}
