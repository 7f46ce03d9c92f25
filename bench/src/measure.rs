//! One measured run of a command inside a device, and the statistics over repeated runs.
//!
//! The command runs as `/usr/bin/time -f %M chroot ROOT argv…`: GNU time forks a small child
//! that execs chroot, which execs the tool, so the peak RSS time reports is the tool's own (a
//! child forked from this harness would carry the harness's pages into the figure). Wall time is
//! taken here around spawn and wait4, CPU time from wait4's rusage (user + system, the tool and
//! every process it waited for, such as apt-get); both include the ~1 ms of the two execs in
//! front of the tool, the same for every tool.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub wall: f64,
    pub cpu: f64,
    pub rss_kib: u64,
    pub code: i32,
    /// The pid of the launcher (GNU time), the root of the run's process tree.
    pub pid: u32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `argv` in the chroot `root` (or on the host when `root` is None) with the device
/// environment plus `env`.
pub fn run(root: Option<&Path>, argv: &[&str], env: &[(&str, &str)]) -> Result<Sample> {
    let dir = tempfile::tempdir()?;
    let rss_file = dir.path().join("rss");
    let out_file = dir.path().join("stdout");
    let err_file = dir.path().join("stderr");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.args(["-f", "%M", "-o"]).arg(&rss_file);
    if let Some(root) = root {
        cmd.arg("chroot").arg(root);
    }
    cmd.args(argv)
        .env_clear()
        .envs(tend_tests::device::ENV.iter().copied())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_file)?)
        .stderr(fs::File::create(&err_file)?);
    let started = Instant::now();
    let child = cmd
        .spawn()
        .context("spawning /usr/bin/time (apt-get install time)")?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for the child spawned above, which nothing else waits for.
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed().as_secs_f64();
    if got != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let rss_text = fs::read_to_string(&rss_file).unwrap_or_default();
    // time writes "Command exited with non-zero status N" before the figure on failures.
    let rss_kib = rss_text
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .with_context(|| format!("no peak RSS from /usr/bin/time: {rss_text:?}"))?;
    Ok(Sample {
        wall,
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        rss_kib,
        code,
        pid: pid as u32,
        stdout: fs::read_to_string(&out_file).unwrap_or_default(),
        stderr: fs::read_to_string(&err_file).unwrap_or_default(),
    })
}

/// Median, min and max of one metric over repeated runs.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Stat {
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Stat {
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
            n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(Stat::of(&[3.0, 1.0, 2.0]).median, 2.0);
        let s = Stat::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 4.0, 4));
    }
}
