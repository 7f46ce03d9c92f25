//! Reading fetched objects: raw commits and tags for signature checks, commit times, ancestry
//! for the rollback rule, and a commit's tree for the loader.

use std::collections::{HashSet, VecDeque};

use gix::objs::Kind;

use super::{FetchError, LocalRepo, ObjectId};
use crate::gittree::GitTree;

/// Whether one commit is in another's history, as far as the local repo can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ancestry {
    Ancestor,
    NotAncestor,
    /// The walk reached the shallow boundary (history not fetched) without finding it.
    Unknown,
}

impl LocalRepo {
    /// The commit object exactly as `git cat-file commit <id>` prints it (what was signed).
    pub fn raw_commit(&self, id: &ObjectId) -> Result<Vec<u8>, FetchError> {
        self.raw(id, Kind::Commit)
    }

    /// The tag object exactly as `git cat-file tag <id>` prints it.
    pub fn raw_tag(&self, id: &ObjectId) -> Result<Vec<u8>, FetchError> {
        self.raw(id, Kind::Tag)
    }

    fn raw(&self, id: &ObjectId, want: Kind) -> Result<Vec<u8>, FetchError> {
        let repo = self.local();
        let obj = repo
            .try_find_object(*id)
            .map_err(|e| FetchError::corrupt(&self.path, format!("reading {id}: {e}")))?
            .ok_or_else(|| {
                FetchError::other(
                    format!("reading {want} {id}"),
                    "not in the local repo (fetch it first)",
                )
            })?;
        if obj.kind != want {
            return Err(FetchError::other(
                format!("reading {want} {id}"),
                format!("it is a {}, not a {want}", obj.kind),
            ));
        }
        Ok(obj.data.clone())
    }

    /// The committer time of a commit, in seconds since the epoch.
    pub fn commit_time(&self, id: &ObjectId) -> Result<i64, FetchError> {
        let data = self.raw_commit(id)?;
        let repo = self.local();
        let commit = gix::objs::CommitRef::from_bytes(&data, repo.object_hash())
            .map_err(|e| FetchError::corrupt(&self.path, format!("commit {id}: {e}")))?;
        let time = commit
            .time()
            .map_err(|e| FetchError::corrupt(&self.path, format!("commit {id}: {e}")))?;
        Ok(time.seconds)
    }

    /// Whether `ancestor` is `descendant` or in its history. False, not an error, when the walk
    /// reaches the shallow boundary without finding it (see [`Self::ancestry`] to tell apart).
    pub fn is_ancestor(
        &self,
        ancestor: &ObjectId,
        descendant: &ObjectId,
    ) -> Result<bool, FetchError> {
        Ok(self.ancestry(ancestor, descendant)? == Ancestry::Ancestor)
    }

    /// Walks the history of `descendant` looking for `ancestor`.
    pub fn ancestry(
        &self,
        ancestor: &ObjectId,
        descendant: &ObjectId,
    ) -> Result<Ancestry, FetchError> {
        if ancestor == descendant {
            return Ok(Ancestry::Ancestor);
        }
        let repo = self.local();
        let shallow: HashSet<ObjectId> = repo
            .shallow_commits()
            .map_err(|e| FetchError::corrupt(&self.path, format!("the shallow file: {e}")))?
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let mut queue = VecDeque::from([*descendant]);
        let mut seen = HashSet::from([*descendant]);
        let mut boundary = false;
        while let Some(id) = queue.pop_front() {
            if id == *ancestor {
                return Ok(Ancestry::Ancestor);
            }
            if shallow.contains(&id) {
                boundary = true;
                continue;
            }
            let obj = repo
                .try_find_object(id)
                .map_err(|e| FetchError::corrupt(&self.path, format!("reading {id}: {e}")))?;
            let Some(obj) = obj else {
                if id == *descendant {
                    return Err(FetchError::other(
                        format!("walking the history of {id}"),
                        "the commit is not in the local repo (fetch it first)",
                    ));
                }
                return Err(FetchError::corrupt(
                    &self.path,
                    format!("commit {id} is missing from the history"),
                ));
            };
            if obj.kind != Kind::Commit {
                return Err(FetchError::other(
                    format!("walking the history of {descendant}"),
                    format!("{id} is a {}, not a commit", obj.kind),
                ));
            }
            let parents: Vec<ObjectId> =
                gix::objs::CommitRefIter::from_bytes(&obj.data, repo.object_hash())
                    .parent_ids()
                    .collect();
            for p in parents {
                if seen.insert(p) {
                    queue.push_back(p);
                }
            }
        }
        Ok(if boundary {
            Ancestry::Unknown
        } else {
            Ancestry::NotAncestor
        })
    }

    /// The fleet as of `commit`, read from objects.
    pub fn tree(&self, commit: &ObjectId) -> Result<GitTree, FetchError> {
        GitTree::from_commit(self.local(), *commit)
            .map_err(|e| FetchError::other(format!("reading the tree of {commit}"), e))
    }
}
