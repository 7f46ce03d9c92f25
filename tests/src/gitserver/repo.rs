//! A bare fleet repo that tests commit to, branch, tag and prune, with the git CLI.
//!
//! Commits are written with plumbing (a private index, `commit-tree`, `update-ref`) straight
//! into the bare repo the servers serve, so there is no work tree to keep in step and every
//! commit id is returned to the test. git runs with no system or user config.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::run;

/// One change in a commit.
#[derive(Clone, Debug)]
pub enum Change {
    File(String, Vec<u8>),
    Link(String, String),
    Remove(String),
}

impl Change {
    pub fn file(path: &str, content: impl AsRef<[u8]>) -> Change {
        Change::File(path.to_string(), content.as_ref().to_vec())
    }
}

pub struct FleetRepo {
    dir: tempfile::TempDir,
    bare: PathBuf,
    /// Commit timestamps advance one second per commit, so ids and times are deterministic.
    clock: std::cell::Cell<i64>,
}

impl FleetRepo {
    /// An empty bare repo `fleet.git` in a tempdir (no branch yet).
    pub fn new() -> Result<FleetRepo> {
        let dir = tempfile::tempdir()?;
        let bare = dir.path().join("fleet.git");
        let repo = FleetRepo {
            dir,
            bare,
            clock: std::cell::Cell::new(1_700_000_000),
        };
        run(Command::new("git")
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(&repo.bare)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null"))?;
        Ok(repo)
    }

    /// The bare repo's directory.
    pub fn path(&self) -> &Path {
        &self.bare
    }

    /// The tempdir holding the bare repo (the project root an http server serves).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// Runs git against the bare repo, isolated from the host's git config.
    pub fn git(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("git");
        cmd.arg("--git-dir")
            .arg(&self.bare)
            .args([
                "-c",
                "user.name=Fleet Test",
                "-c",
                "user.email=fleet@example.com",
            ])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", self.dir.path())
            .env("GIT_INDEX_FILE", self.dir.path().join("index"));
        run(&mut cmd)
    }

    fn git_stdin(&self, args: &[&str], input: &[u8]) -> Result<String> {
        use std::io::Write;
        let mut child = Command::new("git")
            .arg("--git-dir")
            .arg(&self.bare)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        child.stdin.take().context("stdin")?.write_all(input)?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(out.status.success(), "git {args:?} failed");
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The commit `branch` points to, if it exists.
    pub fn head(&self, branch: &str) -> Option<String> {
        self.git(&[
            "rev-parse",
            "--verify",
            "-q",
            &format!("refs/heads/{branch}"),
        ])
        .ok()
        .filter(|s| !s.is_empty())
    }

    /// Commits `changes` on top of `branch` (creating it from nothing if missing); returns the id.
    pub fn commit(&self, branch: &str, message: &str, changes: &[Change]) -> Result<String> {
        let parent = self.head(branch);
        let index = self.dir.path().join("index");
        let _ = std::fs::remove_file(&index);
        if let Some(p) = &parent {
            self.git(&["read-tree", p])?;
        }
        for change in changes {
            match change {
                Change::File(path, content) => {
                    let id = self.git_stdin(&["hash-object", "-w", "--stdin"], content)?;
                    self.git(&[
                        "update-index",
                        "--add",
                        "--cacheinfo",
                        &format!("100644,{id},{path}"),
                    ])?;
                }
                Change::Link(path, target) => {
                    let id =
                        self.git_stdin(&["hash-object", "-w", "--stdin"], target.as_bytes())?;
                    self.git(&[
                        "update-index",
                        "--add",
                        "--cacheinfo",
                        &format!("120000,{id},{path}"),
                    ])?;
                }
                Change::Remove(path) => {
                    self.git(&["update-index", "--force-remove", path])?;
                }
            }
        }
        let tree = self.git(&["write-tree"])?;
        let t = self.clock.get() + 1;
        self.clock.set(t);
        let date = format!("{t} +0000");
        let mut cmd = Command::new("git");
        cmd.arg("--git-dir")
            .arg(&self.bare)
            .args(["commit-tree", &tree, "-m", message])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Fleet Test")
            .env("GIT_AUTHOR_EMAIL", "fleet@example.com")
            .env("GIT_COMMITTER_NAME", "Fleet Test")
            .env("GIT_COMMITTER_EMAIL", "fleet@example.com")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date);
        if let Some(p) = &parent {
            cmd.args(["-p", p]);
        }
        let id = run(&mut cmd)?;
        self.git(&["update-ref", &format!("refs/heads/{branch}"), &id])?;
        Ok(id)
    }

    /// Shorthand: commit files given as (path, content).
    pub fn commit_files(
        &self,
        branch: &str,
        message: &str,
        files: &[(&str, &str)],
    ) -> Result<String> {
        let changes: Vec<Change> = files.iter().map(|(p, c)| Change::file(p, c)).collect();
        self.commit(branch, message, &changes)
    }

    /// Points `branch` at `commit` (creating or moving it, like a force-push).
    pub fn set_branch(&self, branch: &str, commit: &str) -> Result<()> {
        self.git(&["update-ref", &format!("refs/heads/{branch}"), commit])
            .map(|_| ())
    }

    pub fn delete_branch(&self, branch: &str) -> Result<()> {
        self.git(&["update-ref", "-d", &format!("refs/heads/{branch}")])
            .map(|_| ())
    }

    /// An annotated tag on `commit`; returns the tag object's id.
    pub fn tag(&self, name: &str, commit: &str, message: &str) -> Result<String> {
        self.git(&["tag", "-a", "-m", message, name, commit])?;
        self.git(&["rev-parse", &format!("refs/tags/{name}")])
    }

    /// What `git cat-file <kind> <id>` prints.
    pub fn cat_file(&self, kind: &str, id: &str) -> Result<Vec<u8>> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&self.bare)
            .args(["cat-file", kind, id])
            .output()?;
        anyhow::ensure!(out.status.success(), "cat-file {kind} {id} failed");
        Ok(out.stdout)
    }

    /// The files of `commit` written into `dest` (symlinks as symlinks), like a checkout.
    pub fn checkout(&self, commit: &str, dest: &Path) -> Result<()> {
        std::fs::create_dir_all(dest)?;
        let archive = Command::new("git")
            .arg("--git-dir")
            .arg(&self.bare)
            .args(["archive", "--format=tar", commit])
            .output()?;
        anyhow::ensure!(archive.status.success(), "git archive {commit} failed");
        use std::io::Write;
        let mut tar = Command::new("tar")
            .args(["-x", "-C"])
            .arg(dest)
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        tar.stdin
            .take()
            .context("stdin")?
            .write_all(&archive.stdout)?;
        anyhow::ensure!(tar.wait()?.success(), "tar -x failed");
        Ok(())
    }
}
