//! The device as resources see it: a root directory, and commands that run inside it.
//!
//! Every effect goes through here, so the same resource code manages `/` on a device, a chroot on
//! an image builder, or a tempdir in a unit test. Commands run through `chroot` when the root is
//! not `/`, which is also what makes apt, dpkg, useradd and systemctl act on the right tree.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::ResourceError;
use crate::fsutil;
use crate::redact::Redactor;
use crate::rootwalk::{self, WalkError};

/// Facts about the run that resources share without knowing of each other.
#[derive(Debug, Default)]
pub struct RunFlags {
    /// A unit file changed: systemd needs a daemon-reload before units are acted on.
    pub units_changed: bool,
    /// An apt source changed: the package lists must be refreshed before the next install.
    pub apt_sources_changed: bool,
    /// `apt-get update` already ran in this run.
    pub apt_updated: bool,
    /// Units whose enablement this run will read, announced before the first resource runs, so
    /// that one `systemctl is-enabled` answers for all of them (each call costs a process).
    pub units_announced: Vec<String>,
    /// Those answers, by unit. Emptied by [`Host::forget_read_ahead`] after every change.
    pub unit_states: HashMap<String, String>,
    /// What a platform reader read once for many resources (dpkg's status …), one value per
    /// type, so that the host needs to know none of them. Dropped after every change.
    read_ahead: ReadAhead,
}

impl RunFlags {
    /// The value of type `T` read ahead in this run, if any and still current.
    pub fn read_ahead<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.read_ahead
            .0
            .get(&TypeId::of::<T>())
            .and_then(|v| v.clone().downcast::<T>().ok())
    }

    /// Keeps `value` for the rest of the run, until the next change.
    pub fn keep_read_ahead<T: Any + Send + Sync>(&mut self, value: Arc<T>) {
        self.read_ahead.0.insert(TypeId::of::<T>(), value);
    }
}

#[derive(Default)]
struct ReadAhead(HashMap<TypeId, Arc<dyn Any + Send + Sync>>);

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadAhead({} values)", self.0.len())
    }
}

#[derive(Debug)]
pub struct Host {
    root: PathBuf,
    /// `--check`: plan only. Resources never see `apply` called in check mode.
    pub check: bool,
    /// systemd is PID 1 of this root. When false (a chroot, an image build), starting, stopping
    /// and restarting units is skipped and reported as offline.
    pub systemd_running: bool,
    /// How long apt waits for dpkg's lock before failing (apt's own DPkg::Lock::Timeout).
    pub dpkg_lock_timeout: Duration,
    /// Package lists older than this are refreshed before an install.
    pub apt_lists_max_age: Duration,
    redactor: Redactor,
    flags: Mutex<RunFlags>,
}

pub const CHROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Host {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let systemd_running = root.join("run/systemd/system").is_dir() && root == Path::new("/");
        Self {
            root,
            check: false,
            systemd_running,
            dpkg_lock_timeout: Duration::from_secs(120),
            apt_lists_max_age: Duration::from_secs(24 * 3600),
            redactor: Redactor::default(),
            flags: Mutex::new(RunFlags::default()),
        }
    }

    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn is_real_root(&self) -> bool {
        self.root == Path::new("/")
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// The host path of an absolute device path, resolving root-owned parent symlinks inside the
    /// root and refusing others ([`rootwalk`]). To change what is there, use [`Host::open_parent`].
    pub fn path(&self, device_path: &str) -> Result<PathBuf, ResourceError> {
        fsutil::resolve_in_root(&self.root, device_path).map_err(|e| self.walk_error(e).into())
    }

    /// Opens the directory holding an absolute device path by a walk no local user can redirect;
    /// everything done through it stays in that directory.
    pub fn open_parent(
        &self,
        device_path: &str,
        missing: rootwalk::Missing,
    ) -> Result<rootwalk::ParentDir, WalkError> {
        rootwalk::open_parent(&self.root, device_path, missing).map_err(|e| self.walk_error(e))
    }

    /// Names a refused link's owner from the root's passwd, read by a walk of its own (not
    /// [`Host::path`], whose errors come here).
    fn walk_error(&self, e: WalkError) -> WalkError {
        e.name_owner(|uid| {
            let passwd = rootwalk::open_parent(&self.root, "/etc/passwd", rootwalk::Missing::Fail)
                .ok()?
                .read()
                .ok()?;
            crate::passwd::parse_passwd(&String::from_utf8_lossy(&passwd))
                .into_iter()
                .find(|u| u.uid == uid)
                .map(|u| u.name)
        })
    }

    /// Drops what was read ahead for several resources at once: any change (a package, a unit
    /// file, an enable) may have made it stale.
    pub fn forget_read_ahead(&self) {
        let mut flags = self.flags();
        flags.unit_states.clear();
        flags.read_ahead.0.clear();
    }

    pub fn flags(&self) -> std::sync::MutexGuard<'_, RunFlags> {
        self.flags.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A command that runs inside the root, with a predictable environment.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = if self.is_real_root() {
            Command::new(argv[0])
        } else {
            let mut c = Command::new("chroot");
            c.arg(&self.root).arg(argv[0]);
            c
        };
        cmd.args(&argv[1..])
            .env_clear()
            .env("PATH", CHROOT_PATH)
            .env("LC_ALL", "C.UTF-8")
            .env("HOME", "/root")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("APT_LISTCHANGES_FRONTEND", "none")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a command to completion; a non-zero exit is an error carrying its (redacted) output.
    pub fn run(&self, argv: &[&str]) -> Result<Output, ResourceError> {
        self.run_command(self.command(argv), &argv.join(" "))
    }

    pub fn run_command(&self, mut cmd: Command, shown: &str) -> Result<Output, ResourceError> {
        let out = cmd.output().map_err(|e| {
            ResourceError::other(format!("cannot run `{}`: {e}", self.redact(shown)))
        })?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(self.command_error(shown, &out))
        }
    }

    pub fn command_error(&self, shown: &str, out: &Output) -> ResourceError {
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        if text.trim().is_empty() {
            text = String::from_utf8_lossy(&out.stdout).into_owned();
        }
        let tail: Vec<&str> = text.trim().lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        ResourceError::Command {
            command: self.redact(shown),
            status: out.status.to_string(),
            output: self.redact(&tail.join("\n")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ahead_is_one_value_per_type_until_the_next_change() {
        let host = Host::new("/nonexistent");
        assert!(host.flags().read_ahead::<String>().is_none());
        let kept = Arc::new(String::from("status"));
        host.flags().keep_read_ahead(kept.clone());
        host.flags().keep_read_ahead(Arc::new(7u32));
        let got = host.flags().read_ahead::<String>().unwrap();
        assert!(Arc::ptr_eq(&got, &kept));
        assert_eq!(*host.flags().read_ahead::<u32>().unwrap(), 7);
        host.forget_read_ahead();
        assert!(host.flags().read_ahead::<String>().is_none());
        assert!(host.flags().read_ahead::<u32>().is_none());
    }

    #[test]
    fn tempdir_root_is_never_online() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("run/systemd/system")).unwrap();
        assert!(
            !Host::new(d.path()).systemd_running,
            "a chroot's systemd is not running"
        );
    }

    #[test]
    fn command_errors_are_redacted() {
        let host = Host::new("/").with_redactor(Redactor::new(["hunter22".to_string()]));
        let err = host
            .run(&["sh", "-c", "echo hunter22 >&2; exit 3"])
            .unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("hunter22"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}
