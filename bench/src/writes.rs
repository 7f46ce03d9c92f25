//! What a run writes to the device's storage: bytes written to files and the number of syncs,
//! counted from a trace of the run's system calls (every process it starts included).
//!
//! The benchmark devices live in tmpfs, where `/proc/<pid>/io`'s `write_bytes` (block-layer
//! bytes) stays zero, and `wchar` counts pipes and terminals too. So one extra run per figure is
//! traced with `strace -f -y`, which names each write's file: a write counts when its file is
//! under the device root and outside the volatile trees (`/run`, `/proc`, `/sys`, `/dev`, `/tmp`
//! are tmpfs or kernel filesystems on a device, not flash). A sync counts whatever it syncs. The
//! traced run is never timed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The system calls that write file data or sync it.
const WRITES: &[&str] = &["write", "pwrite64", "writev", "pwritev", "pwritev2"];
const SYNCS: &[&str] = &[
    "fsync",
    "fdatasync",
    "syncfs",
    "sync",
    "sync_file_range",
    "msync",
];
/// Device trees whose writes never reach flash.
const VOLATILE: &[&str] = &["/run/", "/proc/", "/sys/", "/dev/", "/tmp/"];

#[derive(Debug, Default, PartialEq)]
pub struct Writes {
    /// Bytes written to files on the device's persistent trees.
    pub bytes: u64,
    /// fsync, fdatasync, syncfs, sync, sync_file_range and msync calls.
    pub syncs: u64,
    /// The device paths written, for the log.
    pub files: BTreeSet<String>,
}

/// Runs `argv` in the chroot `root` under strace and counts what it wrote there.
pub fn trace(root: &Path, argv: &[&str], env: &[(&str, &str)]) -> Result<Writes> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("trace");
    let calls = [WRITES, SYNCS].concat().join(",");
    let status = Command::new("strace")
        .args(["-f", "-qq", "-y", "-s", "0", "-e", "signal=none"])
        .arg("-e")
        .arg(format!("trace={calls}"))
        .arg("-o")
        .arg(&log)
        .arg("chroot")
        .arg(root)
        .args(argv)
        .env_clear()
        .envs(tend_tests::device::ENV.iter().copied())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running strace (apt-get install strace)")?;
    if status.code().is_none() {
        bail!("the traced run was killed: {status}");
    }
    let text = std::fs::read_to_string(&log).context("reading the strace log")?;
    Ok(count(&text, &root.to_string_lossy()))
}

/// Counts the writes and syncs of an `strace -f -y` log whose paths are host paths under `root`.
pub fn count(log: &str, root: &str) -> Writes {
    let mut w = Writes::default();
    for line in log.lines() {
        // "1234 write(3</root/dev/var/lib/x.tmp>, ""..., 512) = 512"
        let call = line
            .split_once(' ')
            .map_or(line, |(_, rest)| rest)
            .trim_start();
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        if SYNCS.contains(&name) {
            if result(call).is_none_or(|r| r >= 0) {
                w.syncs += 1;
            }
            continue;
        }
        if !WRITES.contains(&name) {
            continue;
        }
        let Some(path) = args
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(p, _)| p)
        else {
            continue;
        };
        let Some(on_device) = path.strip_prefix(root).filter(|p| p.starts_with('/')) else {
            continue;
        };
        if VOLATILE.iter().any(|v| on_device.starts_with(v)) {
            continue;
        }
        if let Some(n) = result(call).filter(|n| *n > 0) {
            w.bytes += n as u64;
            w.files.insert(on_device.to_string());
        }
    }
    w
}

/// The return value at the end of a traced call ("... = 512"), if it finished.
fn result(call: &str) -> Option<i64> {
    let (_, r) = call.rsplit_once(" = ")?;
    r.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_under_the_root_count_and_volatile_trees_pipes_and_failures_do_not() {
        let log = "\
101 write(3</d/root/var/lib/tend/report.json.tmp>, \"\"..., 512) = 512
101 pwrite64(4</d/root/etc/motd>, \"\"..., 10, 0) = 10
101 write(5</d/root/run/tend/last-run.json>, \"\"..., 300) = 300
101 write(1<pipe:[1234]>, \"\"..., 40) = 40
101 write(6</d/root/etc/x>, \"\"..., 7) = -1 ENOSPC (No space left on device)
102 write(3</d/rootless/etc/y>, \"\"..., 9) = 9
102 fsync(3</d/root/var/lib/tend/report.json.tmp>) = 0
102 fdatasync(4</d/root/etc>) = 0
102 fsync(9) = -1 EBADF (Bad file descriptor)
102 +++ exited with 0 +++
";
        let w = count(log, "/d/root");
        assert_eq!(w.bytes, 522);
        assert_eq!(w.syncs, 2);
        assert_eq!(
            w.files.into_iter().collect::<Vec<_>>(),
            ["/etc/motd", "/var/lib/tend/report.json.tmp"]
        );
    }
}
