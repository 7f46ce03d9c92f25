//! The commit the devices must run: the branch head in the fleet repo's checkout.
//!
//! A device counts as current when it runs the head, or a commit with the head's tree: promotion
//! by merge (and re-signing a merge) makes new commits whose content is the same, and what a
//! device converges to is the tree, not the commit's history.

use std::path::Path;

use gix::ObjectId;

/// How a device's reported commit relates to the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// The head itself.
    Head,
    /// Another commit whose tree equals the head's.
    SameTree,
    /// A commit with other content.
    Other,
    /// Not in the repo (not fetched, or not a commit of this fleet).
    Unknown,
}

pub struct Head {
    repo: gix::Repository,
    /// The ref the head was read from, e.g. `refs/remotes/origin/canary`.
    pub reference: String,
    pub commit: ObjectId,
    pub tree: ObjectId,
}

impl Head {
    /// The head of `branch` in the repo at (or above) `dir`: the remote-tracking branch
    /// `origin/<branch>` (what devices pull from the server) when the checkout has it, else the
    /// local branch.
    pub fn resolve(dir: &Path, branch: &str) -> Result<Head, String> {
        let repo = gix::discover(dir).map_err(|e| {
            format!(
                "{} is not in a git repository: {e}. Fix: run in the fleet repo's checkout or pass \
                 --repo DIR",
                dir.display()
            )
        })?;
        let candidates = [
            format!("refs/remotes/origin/{branch}"),
            format!("refs/heads/{branch}"),
        ];
        for name in &candidates {
            if let Some((commit, tree)) = peel(&repo, name)? {
                return Ok(Head {
                    repo,
                    reference: name.clone(),
                    commit,
                    tree,
                });
            }
        }
        Err(format!(
            "branch `{branch}` is in neither {} nor {} of {}. Fix: fetch it (`git fetch origin \
             {branch}`; in GitHub Actions: actions/checkout with `fetch-depth: 0`), or check \
             --branch",
            candidates[0],
            candidates[1],
            repo.git_dir().display()
        ))
    }

    /// How the commit a device reports (full hex id) relates to the head.
    pub fn classify(&self, reported: &str) -> Match {
        let Ok(id) = ObjectId::from_hex(reported.trim().as_bytes()) else {
            return Match::Unknown;
        };
        if id == self.commit {
            return Match::Head;
        }
        match self
            .repo
            .find_commit(id)
            .ok()
            .and_then(|c| c.tree_id().ok())
        {
            Some(tree) if tree.detach() == self.tree => Match::SameTree,
            Some(_) => Match::Other,
            None => Match::Unknown,
        }
    }
}

/// The commit `name` leads to and its tree; None when the ref does not exist.
fn peel(repo: &gix::Repository, name: &str) -> Result<Option<(ObjectId, ObjectId)>, String> {
    let found = repo
        .try_find_reference(name)
        .map_err(|e| format!("reading {name}: {e}"))?;
    let Some(mut reference) = found else {
        return Ok(None);
    };
    let commit = reference
        .peel_to_commit()
        .map_err(|e| format!("{name} does not lead to a commit: {e}"))?;
    let tree = commit.tree_id().map_err(|e| format!("{name}: {e}"))?;
    Ok(Some((commit.id, tree.detach())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.org",
                "-c",
                "init.defaultBranch=main",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn a_merge_with_the_same_tree_counts_and_other_content_does_not() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        git(p, &["init", "-q"]);
        std::fs::write(p.join("fleet.yaml"), "format: 1\n").unwrap();
        git(p, &["add", "-A"]);
        git(p, &["commit", "-q", "-m", "one"]);
        let old = git(p, &["rev-parse", "HEAD"]);
        git(p, &["checkout", "-q", "-b", "canary"]);
        std::fs::write(p.join("fleet.yaml"), "format: 1\nroles: []\n").unwrap();
        git(p, &["commit", "-q", "-am", "two"]);
        let canary = git(p, &["rev-parse", "HEAD"]);
        // Promotion by a merge commit: new id, same tree as canary's head.
        git(p, &["checkout", "-q", "main"]);
        git(p, &["merge", "-q", "--no-ff", "-m", "promote", "canary"]);
        let merge = git(p, &["rev-parse", "HEAD"]);

        let head = Head::resolve(p, "canary").unwrap();
        assert_eq!(head.reference, "refs/heads/canary");
        assert_eq!(head.commit.to_string(), canary);
        assert_eq!(head.classify(&canary), Match::Head);
        assert_eq!(head.classify(&merge), Match::SameTree);
        assert_eq!(head.classify(&old), Match::Other);
        assert_eq!(head.classify(&"0".repeat(40)), Match::Unknown);
        assert_eq!(head.classify("not-a-commit"), Match::Unknown);
    }

    #[test]
    fn a_missing_branch_says_how_to_fetch_it() {
        let d = tempfile::tempdir().unwrap();
        git(d.path(), &["init", "-q"]);
        let e = Head::resolve(d.path(), "canary").err().unwrap();
        assert!(e.contains("git fetch origin canary"), "{e}");
    }
}
