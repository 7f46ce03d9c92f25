//! A throwaway Debian device: a fresh copy of a cached chroot with /proc and /dev mounted.
//!
//! Each device is extracted into its own tmpfs (about half a second for ~230 MB, against 5-10 s
//! on the ext4 disk, and freed by one unmount), so tests run many devices, in parallel, without
//! sharing state. /proc and /dev are mounted because dpkg, apt and systemctl need them; /sys is
//! not: nothing tend does needs it, and a package script writing to the host's /sys would touch
//! the machine running the tests.
//!
//! Teardown is in Drop so that it also runs when a test panics. A test process killed outright
//! (Ctrl-C, SIGKILL) cannot clean up, so every new device first sweeps devices whose owning
//! process is gone.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::aptrepo::AptRepo;
use crate::chroot::{self, Arch, Suite};
use crate::mounts;
use crate::run::{self, Outcome};
use crate::treehash::{HashCache, TreeSnapshot};

/// The environment commands get inside a device, as tend's own `Host` gives them.
pub const ENV: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("LC_ALL", "C.UTF-8"),
    ("HOME", "/root"),
    ("DEBIAN_FRONTEND", "noninteractive"),
    ("APT_LISTCHANGES_FRONTEND", "none"),
];

/// Replaced by the device root in [`Device::tend_outside`] arguments.
pub const ROOT: &str = "{root}";

const PREFIX: &str = "tend-device-";

/// Where the tend binary goes inside a device.
pub const TEND_PATH: &str = "/usr/bin/tend";

pub struct Device {
    /// On disk: holds the owner file and the `root` mount point.
    dir: PathBuf,
    root: PathBuf,
    suite: Suite,
    arch: Arch,
    timeout: Duration,
    /// Makes repeated snapshots (before and after a run) cheap.
    hashes: HashCache,
}

impl Device {
    /// A bookworm amd64 device.
    pub fn bookworm() -> Result<Device> {
        Device::new(Suite::Bookworm, Arch::Amd64)
    }

    pub fn new(suite: Suite, arch: Arch) -> Result<Device> {
        Device::from_tarball(&chroot::tarball(suite, arch)?, suite, arch)
    }

    /// A device unpacked from `tarball`, a chroot of `suite`/`arch` made by [`chroot::tarball`]
    /// or derived from one (the benchmarks add ansible to theirs).
    pub fn from_tarball(tarball: &Path, suite: Suite, arch: Arch) -> Result<Device> {
        let base = device_base();
        sweep_stale(&base);
        fs::create_dir_all(&base)?;
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(&base)?
            .keep();
        let dir = dir.canonicalize()?;
        let device = Device {
            root: dir.join("root"),
            dir,
            suite,
            arch,
            timeout: Duration::from_secs(if arch == Arch::Amd64 { 600 } else { 1800 }),
            hashes: HashCache::default(),
        };
        write_owner(&device.dir, std::process::id() as i32)?;
        fs::create_dir(&device.root)?;
        mounts::mount_tmpfs(&device.root)?;
        let mut tar = Command::new("tar");
        tar.args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
            .arg(tarball)
            .arg("-C")
            .arg(&device.root);
        run::run_ok(tar, "tar -x (device copy)", Duration::from_secs(300))?;
        mounts::mount_proc(&device.root.join("proc"))?;
        mounts::bind(Path::new("/dev"), &device.root.join("dev"))?;
        if Path::new("/dev/pts/ptmx").exists() {
            fs::create_dir_all(device.root.join("dev/pts"))?;
            mounts::bind(Path::new("/dev/pts"), &device.root.join("dev/pts"))?;
        }
        Ok(device)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The deadline for each command run in or on this device (10 min native, 30 under qemu).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The host path of a device path, following symlinks inside the device.
    pub fn path(&self, device_path: &str) -> Result<PathBuf> {
        crate::rootpath::resolve(&self.root, device_path)
    }

    /// A command that runs `argv` inside the device with a clean, predictable environment;
    /// callers may add env vars before handing it to [`Device::run_command`].
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("chroot");
        cmd.arg(&self.root)
            .args(argv)
            .env_clear()
            .envs(ENV.iter().copied());
        cmd
    }

    pub fn run_command(&self, cmd: Command, shown: &str) -> Result<Outcome> {
        run::run(cmd, shown, self.timeout)
    }

    /// Runs `argv` inside the device; a non-zero exit is an Outcome, not an error.
    pub fn run(&self, argv: &[&str]) -> Result<Outcome> {
        self.run_command(self.command(argv), &argv.join(" "))
    }

    /// Runs `argv` inside the device and fails (with its output) unless it exits 0.
    pub fn run_ok(&self, argv: &[&str]) -> Result<Outcome> {
        self.run(argv)?.ok()
    }

    /// Runs a shell script inside the device and fails unless it exits 0.
    pub fn sh(&self, script: &str) -> Result<Outcome> {
        self.run_ok(&["sh", "-ec", script])
    }

    /// Writes a file (mode 0644), creating parent directories.
    pub fn write(&self, device_path: &str, bytes: impl AsRef<[u8]>) -> Result<()> {
        self.write_mode(device_path, bytes, 0o644)
    }

    pub fn write_mode(&self, device_path: &str, bytes: impl AsRef<[u8]>, mode: u32) -> Result<()> {
        let path = self.path(device_path)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, bytes).with_context(|| format!("writing {device_path} in the device"))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    pub fn read(&self, device_path: &str) -> Result<Vec<u8>> {
        fs::read(self.path(device_path)?)
            .with_context(|| format!("reading {device_path} in the device"))
    }

    pub fn read_string(&self, device_path: &str) -> Result<String> {
        Ok(String::from_utf8(self.read(device_path)?)?)
    }

    /// Whether the path exists in the device (following symlinks inside the device).
    pub fn exists(&self, device_path: &str) -> bool {
        self.path(device_path).is_ok_and(|p| p.exists())
    }

    /// Copies a host binary to /usr/bin/tend in the device (it must match the device's arch).
    pub fn install_tend(&self, binary: &Path) -> Result<()> {
        let bytes = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
        self.write_mode(TEND_PATH, bytes, 0o755)
    }

    /// The last run's `report.json`, parsed.
    pub fn report(&self) -> Result<serde_json::Value> {
        let bytes = self.read("/var/lib/tend/report.json")?;
        serde_json::from_slice(&bytes).context("report.json is not readable JSON")
    }

    /// Diverts `binary` (an absolute path) to `<binary>.distrib` with dpkg-divert and puts a
    /// shell script with `body` in its place.
    pub fn wrap_binary(&self, binary: &str, body: &str) -> Result<()> {
        self.run_ok(&["dpkg-divert", "--local", "--rename", "--add", binary])?;
        self.write_mode(binary, format!("#!/bin/sh\n{body}"), 0o755)
    }

    /// Wraps `binary` so that each call appends its arguments to `log`, then runs the real one.
    pub fn log_calls(&self, binary: &str, log: &str) -> Result<()> {
        self.wrap_binary(
            binary,
            &format!("echo \"$*\" >> {log}\nexec {binary}.distrib \"$@\"\n"),
        )
    }

    /// Installs a tend .deb with `dpkg -i`, as an image build would.
    ///
    /// The chroots have no openssh-client and devices are offline, so an empty stand-in package
    /// satisfies tend's Depends (nothing here uses ssh).
    pub fn install_tend_deb(&self, deb: &Path) -> Result<()> {
        let work = tempfile::tempdir()?;
        let ssh = crate::deb::DebSpec::new("openssh-client", "1:0~tend-test");
        ssh.build(work.path())?;
        self.write(
            "/tmp/openssh-client.deb",
            fs::read(work.path().join(ssh.filename()))?,
        )?;
        self.run_ok(&["dpkg", "-i", "/tmp/openssh-client.deb"])?;
        self.write(
            "/tmp/tend.deb",
            fs::read(deb).with_context(|| format!("reading {}", deb.display()))?,
        )?;
        self.run_ok(&["dpkg", "-i", "/tmp/tend.deb"])?;
        Ok(())
    }

    /// Runs `/usr/bin/tend <args>` inside the device (see [`Device::install_tend`]).
    ///
    /// Retries (a few times) when the exec fails with "Text file busy": right after
    /// [`Device::install_tend`] wrote the binary, a child forked by another test thread may still
    /// hold the write descriptor it inherited, until that child execs.
    pub fn tend(&self, args: &[&str]) -> Result<Outcome> {
        let argv: Vec<&str> = std::iter::once(TEND_PATH)
            .chain(args.iter().copied())
            .collect();
        let mut attempt = 0;
        loop {
            let out = self.run(&argv)?;
            let busy = out.code() == Some(126) && out.stderr.contains("Text file busy");
            if !busy || attempt == 10 {
                return Ok(out);
            }
            attempt += 1;
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Runs a host tend binary against the device. Every [`ROOT`] in `args` becomes the device
    /// root; without one, `--root <root>` is appended.
    pub fn tend_outside(&self, binary: &Path, args: &[&str]) -> Result<Outcome> {
        let root = self.root.to_string_lossy().into_owned();
        let mut argv: Vec<String> = args
            .iter()
            .map(|a| {
                if *a == ROOT {
                    root.clone()
                } else {
                    a.to_string()
                }
            })
            .collect();
        if !args.contains(&ROOT) {
            argv.extend(["--root".to_string(), root]);
        }
        let mut cmd = Command::new(binary);
        cmd.args(&argv).env_clear().envs(ENV.iter().copied());
        self.run_command(cmd, &format!("{} {}", binary.display(), argv.join(" ")))
    }

    /// Configures apt in the device to use `repo` (key in /etc/apt/keyrings, a deb822 source).
    pub fn use_apt_repo(&self, repo: &AptRepo) -> Result<()> {
        self.write(AptRepo::KEYRING_PATH, repo.key_armored()?)?;
        self.write(
            AptRepo::SOURCES_PATH,
            repo.sources_deb822(AptRepo::KEYRING_PATH),
        )
    }

    /// A content-and-metadata snapshot of the device (see [`TreeSnapshot`]).
    pub fn snapshot(&self, excludes: &[&str]) -> Result<TreeSnapshot> {
        TreeSnapshot::take_cached(&self.root, excludes, Some(&self.hashes))
    }

    /// The snapshot's hash: equal hashes mean a byte- and metadata-identical tree.
    pub fn tree_hash(&self, excludes: &[&str]) -> Result<String> {
        Ok(self.snapshot(excludes)?.hash())
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        teardown(&self.dir);
    }
}

/// Kills what still runs inside, unmounts everything (verified against the mount table), then
/// removes the now empty mount point and directory. Nothing is ever deleted recursively: the tree
/// lived in the tmpfs, and a recursive delete through a forgotten bind of /dev would delete the
/// host's device nodes. Anything unexpected is left in place with a warning.
fn teardown(dir: &Path) {
    mounts::kill_processes_rooted_under(dir);
    let result = mounts::unmount_all_under(dir).and_then(|()| {
        let _ = fs::remove_file(dir.join("owner"));
        let root = dir.join("root");
        if root.exists() {
            fs::remove_dir(&root).with_context(|| format!("removing {}", root.display()))?;
        }
        fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))
    });
    if let Err(e) = result {
        eprintln!("warning: device {} left in place: {e:#}", dir.display());
    }
}

/// `$TEND_DEVICE_DIR`, else the temp dir: only mount points live there, the trees are in tmpfs.
fn device_base() -> PathBuf {
    match std::env::var_os("TEND_DEVICE_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir(),
    }
}

/// Tears down devices of test processes that died without running Drop.
fn sweep_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let dir = entry.path();
        let stale = match fs::read_to_string(dir.join("owner")) {
            Ok(stamp) if !stamp.trim().is_empty() => !owner_alive(&stamp),
            // Created but not yet stamped: stale only once clearly abandoned.
            _ => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(120)),
        };
        if stale {
            teardown(&dir.canonicalize().unwrap_or(dir));
        }
    }
}

/// Stamps a device directory with its owner, atomically: a sweep in another test thread must
/// never read a half-written stamp and tear down a device that is being created.
fn write_owner(dir: &Path, pid: i32) -> Result<()> {
    let tmp = dir.join("owner.tmp");
    fs::write(&tmp, owner_stamp(pid))?;
    fs::rename(&tmp, dir.join("owner"))?;
    Ok(())
}

/// "<pid> <start time>": a pid alone may have been reused by an unrelated process.
fn owner_stamp(pid: i32) -> String {
    format!("{pid} {}", process_start(pid).unwrap_or_default())
}

fn owner_alive(stamp: &str) -> bool {
    let mut parts = stamp.split_whitespace();
    let Some(Ok(pid)) = parts.next().map(str::parse::<i32>) else {
        return false;
    };
    process_start(pid).is_some_and(|start| Some(start.as_str()) == parts.next())
}

/// Field 22 of /proc/<pid>/stat (start time in clock ticks since boot).
fn process_start(pid: i32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = std::process::id() as i32;
        assert!(owner_alive(&owner_stamp(me)));
        assert!(
            !owner_alive(&format!("{me} 1")),
            "same pid, other start time"
        );
        assert!(!owner_alive("garbage"));
    }

    #[test]
    fn an_abandoned_device_directory_is_swept() {
        let base = tempfile::tempdir().unwrap();
        let dead = base.path().join(format!("{PREFIX}dead"));
        fs::create_dir_all(dead.join("root")).unwrap();
        fs::write(dead.join("owner"), "999999999 1").unwrap();
        // Not a tmpfs that unmounting empties: a swept device is never deleted recursively.
        let odd = base.path().join(format!("{PREFIX}odd"));
        fs::create_dir_all(odd.join("root/etc")).unwrap();
        fs::write(odd.join("owner"), "999999999 1").unwrap();
        let live = base.path().join(format!("{PREFIX}live"));
        fs::create_dir_all(&live).unwrap();
        fs::write(live.join("owner"), owner_stamp(std::process::id() as i32)).unwrap();
        sweep_stale(base.path());
        assert!(!dead.exists());
        assert!(odd.join("root/etc").exists());
        assert!(live.exists());
    }

    /// CI once tore down a device while `tar` was filling it: a parallel test's sweep read the
    /// owner file after `fs::write` had created it but before it held the stamp.
    #[test]
    fn a_device_being_stamped_is_not_swept() {
        let base = tempfile::tempdir().unwrap();
        let young = base.path().join(format!("{PREFIX}young"));
        fs::create_dir_all(young.join("root")).unwrap();
        fs::write(young.join("owner"), "").unwrap();
        sweep_stale(base.path());
        assert!(
            young.join("root").exists(),
            "an empty stamp is not a dead owner"
        );
        write_owner(&young, std::process::id() as i32).unwrap();
        assert!(!young.join("owner.tmp").exists());
        assert!(owner_alive(
            &fs::read_to_string(young.join("owner")).unwrap()
        ));
    }
}
