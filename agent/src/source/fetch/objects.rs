//! Reading fetched objects: raw commits and tags for signature checks, commit times, ancestry
//! for the rollback rule, and a commit's tree for the loader.

use std::collections::{HashSet, VecDeque};

use gix::objs::Kind;

use super::{FetchError, LocalRepo, ObjectId};
use crate::source::gittree::GitTree;

/// How many tags of tags [`LocalRepo::peel_tag`] follows before giving up.
pub const MAX_TAG_CHAIN: usize = 8;

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

    /// The commit an annotated tag leads to, read from the tag objects themselves (their
    /// `object` and `type` headers), never from what the server advertised. A tag of a tag is
    /// followed, up to [`MAX_TAG_CHAIN`] hops; the chain must end at a commit. Only the outermost
    /// tag needs a signature: its payload names the next object by id, so the rest of the chain
    /// is bound by the hash.
    pub fn peel_tag(&self, tag: &ObjectId) -> Result<ObjectId, FetchError> {
        let mut id = *tag;
        for _ in 0..MAX_TAG_CHAIN {
            let data = self.raw_tag(&id)?;
            let parsed = gix::objs::TagRef::from_bytes(&data, self.local().object_hash())
                .map_err(|e| FetchError::corrupt(&self.path, format!("tag {id}: {e}")))?;
            let next = parsed.target();
            match parsed.target_kind {
                Kind::Commit => return self.raw_commit(&next).map(|_| next),
                Kind::Tag => id = next,
                other => {
                    return Err(FetchError::other(
                        format!("peeling tag {tag}"),
                        format!("it leads to {next}, a {other}, not a commit"),
                    ))
                }
            }
        }
        Err(FetchError::other(
            format!("peeling tag {tag}"),
            format!("it is a chain of more than {MAX_TAG_CHAIN} tags"),
        ))
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
