//! The device's copy of the fleet repo: a bare git repo under the state dir, fetched with gix.
//!
//! Only what a run needs is fetched: one branch (or the tags of one stage), shallow the first
//! time and incrementally after, so the history since the last fetched head is complete and the
//! caller can prove a new head descends from the last verified one. There is no worktree: the
//! fleet is read straight from objects through [`crate::source::gittree::GitTree`].
//!
//! The repo is opened *isolated*: no system, global or user git config, no `GIT_*` environment.
//! A device's behaviour must follow from tend's config alone, not from whatever a developer left
//! in /root/.gitconfig. Transports are configured explicitly (see `http` and `ssh`).

mod bounds;
mod bundle;
mod error;
mod http;
mod integrity;
mod objects;
mod ssh;
mod throttle;
mod transfer;
mod trust;
mod watch;

use crate::device::config::{
    DEFAULT_MAX_FETCH_BYTES, DEFAULT_MIN_TRANSFER_RATE, DEFAULT_TRANSFER_RATE_WINDOW,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use bounds::Limit;
pub use error::FetchError;
pub use gix::ObjectId;
pub use http::client as http_client;
/// The https client setup (system roots plus a CA file, rustls on ring), shared with `tend gate`.
pub(crate) use http::proxy_settings;
pub use objects::Ancestry;
pub use throttle::http_date;
pub use throttle::RetryAfter;
pub(crate) use trust::client_config;

/// Where and how to fetch from; built by the caller from `source:` in tend.yaml.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// `https://…`, `http://…`, `ssh://[user@]host[:port]/path`, `user@host:path`, `file:///path`.
    /// Never with a password: that is in `credentials`.
    pub url: String,
    /// HTTP Basic credentials; only the http transport reads them.
    pub credentials: Option<crate::device::credentials::Credentials>,
    /// A PEM CA bundle trusted in addition to the system roots (https).
    pub ca_file: Option<PathBuf>,
    /// `http://[user:pass@]host:port`; None: `https_proxy`/`HTTPS_PROXY` from the environment.
    pub proxy: Option<String>,
    /// Comma-separated hosts that bypass the proxy; None: `no_proxy`/`NO_PROXY`.
    pub no_proxy: Option<String>,
    /// The private key ssh uses (and only it).
    pub ssh_key: Option<PathBuf>,
    /// The known_hosts file that pins the server's key; unknown keys are refused.
    pub known_hosts: Option<PathBuf>,
    /// Bound on establishing a connection (TCP, TLS, ssh handshake). Zero: no bound.
    pub connect_timeout: Duration,
    /// Bound on a fetch as a whole, its retries included. Zero: no bound.
    pub timeout: Duration,
    /// Further attempts after a transient failure (unreachable, timeout, too slow), with
    /// backoff, within `timeout`.
    pub retries: u32,
    /// The most bytes a pack may take (http(s); see `bounds`).
    pub max_fetch_bytes: u64,
    /// The least a server must send, in bytes per second averaged over `transfer_rate_window`
    /// (http(s)). Zero: no bound but `timeout`.
    pub min_transfer_rate: u64,
    pub transfer_rate_window: Duration,
}

impl SourceConfig {
    /// `url` with tend's defaults: 20 s to connect, 300 s in all, 3 retries, 256 MiB, 1 KiB/s
    /// over 60 s.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            credentials: None,
            ca_file: None,
            proxy: None,
            no_proxy: None,
            ssh_key: None,
            known_hosts: None,
            connect_timeout: Duration::from_secs(20),
            timeout: Duration::from_secs(300),
            retries: 3,
            max_fetch_bytes: DEFAULT_MAX_FETCH_BYTES,
            min_transfer_rate: DEFAULT_MIN_TRANSFER_RATE,
            transfer_rate_window: DEFAULT_TRANSFER_RATE_WINDOW,
        }
    }
}

/// What a fetch brought.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The commit the branch points to on the server (now `refs/remotes/origin/<branch>`).
    pub head: ObjectId,
    /// False when nothing new was transferred (the head was already known).
    pub received_pack: bool,
    /// Size of the received pack.
    pub bytes: u64,
}

/// A tag on the server, as fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagRef {
    /// Without `refs/tags/`, e.g. `production/42`.
    pub name: String,
    /// The tag object (for an annotated tag) or the commit (for a lightweight one).
    pub tag: ObjectId,
    /// The commit the tag leads to.
    pub target: ObjectId,
}

pub struct LocalRepo {
    path: PathBuf,
    repo: gix::ThreadSafeRepository,
    recovered: Option<String>,
}

fn open_options() -> gix::open::Options {
    gix::open::Options::isolated().with(gix::sec::Trust::Full)
}

impl LocalRepo {
    /// Opens or creates the bare repo at `path`. A corrupt repo is moved aside (to `path` +
    /// ".corrupt-<unix time>", replacing an older one) and re-created; `recovered()` then says
    /// so (for the report).
    pub fn open(path: &Path) -> Result<LocalRepo, FetchError> {
        let fresh = !path.exists() || std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none());
        if fresh {
            let repo = init(path)?;
            return Ok(LocalRepo {
                path: path.to_path_buf(),
                repo,
                recovered: None,
            });
        }
        let damage = match gix::open_opts(path, open_options()) {
            Ok(repo) if !repo.is_bare() => Err(format!(
                "{} is a repository with a worktree, not tend's bare repo",
                path.display()
            )),
            Ok(repo) => integrity::check(&repo).map(|()| repo),
            Err(e) => Err(format!("it does not open as a git repository: {e}")),
        };
        match damage {
            Ok(repo) => Ok(LocalRepo {
                path: path.to_path_buf(),
                repo: repo.into_sync(),
                recovered: None,
            }),
            Err(reason) => {
                let aside = move_aside(path)?;
                let repo = init(path)?;
                Ok(LocalRepo {
                    path: path.to_path_buf(),
                    repo,
                    recovered: Some(format!(
                        "the local repo {} was corrupt ({reason}); it was moved to {} and \
                         re-created, so this run fetched the fleet afresh",
                        path.display(),
                        aside.display()
                    )),
                })
            }
        }
    }

    /// Set when `open` found the repo corrupt and re-created it: why, and where the old one is.
    pub fn recovered(&self) -> Option<&str> {
        self.recovered.as_deref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn local(&self) -> gix::Repository {
        self.repo.to_thread_local()
    }
}

fn init(path: &Path) -> Result<gix::ThreadSafeRepository, FetchError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| FetchError::other(format!("creating {}", parent.display()), e))?;
    }
    gix::ThreadSafeRepository::init_opts(
        path,
        gix::create::Kind::Bare,
        gix::create::Options::default(),
        open_options(),
    )
    .map_err(|e| FetchError::other(format!("creating the local repo {}", path.display()), e))
}

/// Renames a damaged repo out of the way, keeping only the newest damaged copy (for diagnosis)
/// so that repeated damage cannot fill a small device's storage.
fn move_aside(path: &Path) -> Result<PathBuf, FetchError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repo".into());
    let prefix = format!("{name}.corrupt-");
    let parent = path.parent().unwrap_or(Path::new("."));
    if let Ok(entries) = std::fs::read_dir(parent) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let aside = parent.join(format!("{prefix}{now}"));
    std::fs::rename(path, &aside).map_err(|e| FetchError::Corrupt {
        path: path.to_path_buf(),
        cause: format!("moving it aside to {} failed: {e}", aside.display()),
    })?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn the_repo_can_be_shared_between_threads() {
        assert_send_sync::<LocalRepo>();
    }

    #[test]
    fn open_creates_a_bare_repo_and_reopens_it_as_it_is() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state/repo.git");
        let repo = LocalRepo::open(&path).unwrap();
        assert!(repo.recovered().is_none());
        assert!(path.join("HEAD").is_file() && !path.join(".git").exists());
        drop(repo);
        assert!(LocalRepo::open(&path).unwrap().recovered().is_none());
    }

    #[test]
    fn garbage_is_moved_aside_keeping_only_the_newest_copy() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("repo.git");
        std::fs::create_dir_all(d.path().join("repo.git.corrupt-1")).unwrap();
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("junk"), "not a repo").unwrap();
        let repo = LocalRepo::open(&path).unwrap();
        let note = repo.recovered().expect("recovered");
        assert!(note.contains("does not open as a git repository"), "{note}");
        let aside: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("repo.git.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_ne!(aside[0], "repo.git.corrupt-1");
        assert!(d.path().join(&aside[0]).join("junk").is_file());
        assert!(path.join("HEAD").is_file());
    }
}
