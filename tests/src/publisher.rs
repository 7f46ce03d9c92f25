//! A fleet engineer's work tree: writes files, commits them signed with a real SSH key
//! (`git commit -S`, gpg.format=ssh) and pushes to the bare repo a git server serves.
//!
//! Suites that pull (`tend run`) need real signed commits, because that is what devices verify;
//! this is the one place that makes them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Result};

/// Runs git in `dir` with no user or system config and a fixed identity.
pub fn git(dir: &Path, args: &[&str]) -> Result<String> {
    git_with_env(dir, args, &[])
}

/// `git` with extra environment, e.g. `GIT_COMMITTER_DATE` for a backdated commit.
pub fn git_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "ops")
        .env("GIT_AUTHOR_EMAIL", "ops@example.org")
        .env("GIT_COMMITTER_NAME", "ops")
        .env("GIT_COMMITTER_EMAIL", "ops@example.org")
        .envs(env.iter().copied())
        .output()?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A new ed25519 key `dir/name` (and `name.pub`), without a passphrase.
pub fn keygen(dir: &Path, name: &str) -> Result<PathBuf> {
    let key = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()?;
    ensure!(st.success(), "ssh-keygen failed");
    Ok(key)
}

pub struct Publisher {
    work: tempfile::TempDir,
    bare: PathBuf,
    key: PathBuf,
}

impl Publisher {
    /// A work tree on `main`, seeded with `fixture` (a directory of this crate's fixtures), that
    /// publishes to the bare repo `bare` with commits signed by `key`.
    pub fn new(bare: &Path, key: PathBuf, fixture: &str) -> Result<Publisher> {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(fixture);
        Publisher::from_dir(bare, key, &fixture)
    }

    /// Like [`Publisher::new`], seeded with the files of `tree` (any directory).
    pub fn from_dir(bare: &Path, key: PathBuf, tree: &Path) -> Result<Publisher> {
        let work = tempfile::tempdir()?;
        git(work.path(), &["init", "-q", "-b", "main"])?;
        crate::copy_tree(tree, work.path())?;
        Ok(Publisher {
            work,
            bare: bare.to_path_buf(),
            key,
        })
    }

    /// The allowed_signers line that trusts this publisher's key.
    pub fn allowed_signers(&self) -> Result<String> {
        let pubkey = std::fs::read_to_string(self.key.with_extension("pub"))?;
        Ok(format!("ops@example.org namespaces=\"git\" {pubkey}"))
    }

    pub fn write(&self, path: &str, content: &str) -> Result<()> {
        let p = self.work.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap_or(self.work.path()))?;
        Ok(std::fs::write(p, content)?)
    }

    /// Commits everything on `branch`, signed, pushes it, and returns the commit id.
    pub fn signed(&self, branch: &str, message: &str) -> Result<String> {
        self.publish(branch, message, Some(&self.key))
    }

    /// Commits everything on `branch`, signed with `key` (or unsigned), pushes it, and returns
    /// the commit id.
    pub fn publish(&self, branch: &str, message: &str, key: Option<&Path>) -> Result<String> {
        self.publish_with_env(branch, message, key, &[])
    }

    /// [`Publisher::signed`] with the committer date `date` (`GIT_COMMITTER_DATE`, e.g.
    /// `1765100000 +0000`): the signed time a device's rollout waves count from.
    pub fn signed_at(&self, branch: &str, message: &str, date: &str) -> Result<String> {
        self.publish_with_env(
            branch,
            message,
            Some(&self.key),
            &[("GIT_COMMITTER_DATE", date)],
        )
    }

    fn publish_with_env(
        &self,
        branch: &str,
        message: &str,
        key: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Result<String> {
        let dir = self.work.path();
        if git(dir, &["symbolic-ref", "--short", "HEAD"])? != branch {
            let exists = git(dir, &["rev-parse", "--verify", "-q", branch]).is_ok();
            let mut args = vec!["checkout", "-q"];
            if !exists {
                args.push("-b");
            }
            args.push(branch);
            git(dir, &args)?;
        }
        git(dir, &["add", "-A"])?;
        let mut args = vec!["-c".to_string(), "gpg.format=ssh".to_string()];
        if let Some(key) = key {
            args.extend(["-c".into(), format!("user.signingkey={}", key.display())]);
        }
        args.extend(["commit".into(), "-q".into()]);
        if key.is_some() {
            args.push("-S".into());
        }
        args.extend(["--allow-empty".into(), "-m".into(), message.into()]);
        git_with_env(
            dir,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            env,
        )?;
        let bare = self.bare.display().to_string();
        git(
            dir,
            &["push", "-q", "-f", &bare, &format!("{branch}:{branch}")],
        )?;
        git(dir, &["rev-parse", "HEAD"])
    }

    /// Force-moves `branch` on the server to `commit` (a rewind or a replayed head).
    pub fn reset_server(&self, branch: &str, commit: &str) -> Result<()> {
        let bare = self.bare.display().to_string();
        git(
            self.work.path(),
            &[
                "push",
                "-q",
                "-f",
                &bare,
                &format!("{commit}:refs/heads/{branch}"),
            ],
        )?;
        Ok(())
    }

    /// Switches the work tree to an existing branch.
    pub fn checkout(&self, branch: &str) -> Result<()> {
        git(self.work.path(), &["checkout", "-q", branch])?;
        Ok(())
    }

    /// The work tree (for git commands a test runs itself, such as `git bundle`).
    pub fn work(&self) -> &Path {
        self.work.path()
    }

    /// The served bare repo this work tree pushes to.
    pub fn bare(&self) -> &Path {
        &self.bare
    }

    /// The signing key's private half.
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// A signed annotated tag `name` on `commit`, pushed.
    pub fn signed_tag(&self, name: &str, commit: &str) -> Result<()> {
        let dir = self.work.path();
        let key = format!("user.signingkey={}", self.key.display());
        git(
            dir,
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &key,
                "tag",
                "-f",
                "-s",
                "-m",
                name,
                name,
                commit,
            ],
        )?;
        let bare = self.bare.display().to_string();
        git(
            dir,
            &["push", "-q", "-f", &bare, &format!("refs/tags/{name}")],
        )?;
        Ok(())
    }
}
