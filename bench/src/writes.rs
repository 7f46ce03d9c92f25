//! What a run writes to the device's storage: bytes written to files and the number of syncs,
//! counted from a trace of the run's system calls (every process it starts included).
//!
//! The benchmark devices live in tmpfs, where `/proc/<pid>/io`'s `write_bytes` (block-layer
//! bytes) stays zero, and `wchar` counts pipes and terminals too. So one extra run per figure is
//! traced with `strace -f -y`, which names each write's file: a write counts when its file is
//! under the device root and outside the volatile trees (`/run`, `/proc`, `/sys`, `/dev`, `/tmp`
//! are tmpfs or kernel filesystems on a device, not flash). Syncs are split the same way: one of
//! a file in a volatile tree costs the flash nothing, while one of a persistent file, or one that
//! names no file (`sync`, or an fd strace could not name), counts as a sync of the flash. The
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
    /// fsync, fdatasync, syncfs, sync, sync_file_range and msync calls of persistent files, or
    /// of no file the trace names.
    pub syncs: u64,
    /// The same calls on files in the volatile trees.
    pub volatile_syncs: u64,
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
        let path = args
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(p, _)| p);
        let on_device = path
            .and_then(|p| p.strip_prefix(root))
            .filter(|p| p.starts_with('/'));
        let volatile = on_device.is_some_and(|p| {
            VOLATILE
                .iter()
                .any(|v| p.starts_with(v) || p == v.trim_end_matches('/'))
        });
        if SYNCS.contains(&name) {
            if result(call).is_none_or(|r| r >= 0) {
                if volatile {
                    w.volatile_syncs += 1;
                } else {
                    w.syncs += 1;
                }
            }
            continue;
        }
        let Some(on_device) = on_device.filter(|_| WRITES.contains(&name) && !volatile) else {
            continue;
        };
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
    fn writes_and_syncs_split_by_tree_and_pipes_and_failures_do_not_count() {
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
102 fsync(5</d/root/run/tend/last-run.json>) = 0
102 fsync(6</d/root/run>) = 0
102 fsync(7</d/root/runner/state>) = 0
102 fsync(8) = 0
102 sync() = 0
102 +++ exited with 0 +++
";
        let w = count(log, "/d/root");
        assert_eq!(w.bytes, 522);
        // report.json.tmp, /etc, /runner/state (not /run), the unnamed fd 8 and sync().
        assert_eq!(w.syncs, 5);
        assert_eq!(w.volatile_syncs, 2);
        assert_eq!(
            w.files.into_iter().collect::<Vec<_>>(),
            ["/etc/motd", "/var/lib/tend/report.json.tmp"]
        );
    }
}
