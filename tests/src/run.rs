//! Running a command with captured output and a deadline.
//!
//! A hung apt, dpkg prompt or tend run must fail the one test with its output, not hang CI
//! until the job is killed with nothing to show, so every command the bed runs has a timeout.

use std::fmt;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What a finished command did.
#[derive(Debug)]
pub struct Outcome {
    pub shown: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The command's peak resident memory (its `VmHWM`, polled while it runs), in KiB.
    pub peak_rss_kib: u64,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code; None when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Fails with the full output unless the command exited with `want`.
    pub fn expect_code(&self, want: i32) -> Result<()> {
        if self.code() == Some(want) {
            Ok(())
        } else {
            bail!("expected exit {want}\n{self}")
        }
    }

    /// Fails with the full output unless the command succeeded.
    pub fn ok(self) -> Result<Outcome> {
        if self.success() {
            Ok(self)
        } else {
            bail!("{self}")
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "`{}` exited with {}", self.shown, self.status)?;
        writeln!(f, "--- stdout\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr\n{}", self.stderr.trim_end())
    }
}

/// Runs `cmd` with stdin closed, killing its whole process group after `timeout`.
pub fn run(mut cmd: Command, shown: &str, timeout: Duration) -> Result<Outcome> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let stdout = Drain::start(child.stdout.take());
    let stderr = Drain::start(child.stderr.take());
    let started = Instant::now();
    let pid = child.id() as libc::pid_t;
    // The command's peak memory is its own high-water mark (VmHWM), read while it runs: it only
    // grows, and a new program image starts its own. wait4's ru_maxrss cannot serve: at exec the
    // kernel carries the spawning process's high-water RSS into the child's (a vfork child runs
    // on the test binary's memory), so once the test binary held 100 MB every child looked 100 MB.
    let mut peak_rss_kib = 0;
    let status = loop {
        peak_rss_kib = peak_rss_kib.max(vm_hwm_kib(pid).unwrap_or(0));
        let mut raw = 0;
        // SAFETY: a plain out-parameter; the pid is our own child, reaped only here.
        let reaped = unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG) };
        if reaped == pid {
            use std::os::unix::process::ExitStatusExt;
            break ExitStatus::from_raw(raw);
        }
        if reaped < 0 {
            bail!("waiting for `{shown}`: {}", std::io::Error::last_os_error());
        }
        if started.elapsed() > timeout {
            // SAFETY: signalling the process group the child leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            let (out, err) = (stdout.finish(), stderr.finish());
            bail!("`{shown}` timed out after {timeout:?}\n--- stdout\n{out}\n--- stderr\n{err}");
        }
        // Often enough that a peak is seen even when the command exits soon after it.
        thread::sleep(Duration::from_millis(2));
    };
    Ok(Outcome {
        shown: shown.to_string(),
        status,
        stdout: stdout.finish(),
        stderr: stderr.finish(),
        peak_rss_kib,
    })
}

/// Runs `cmd` and fails unless it exits 0.
pub fn run_ok(cmd: Command, shown: &str, timeout: Duration) -> Result<Outcome> {
    run(cmd, shown, timeout)?.ok()
}

/// Reads a pipe on its own thread, so a chatty command never blocks on a full pipe. A daemon the
/// command left behind may hold the pipe open forever, so the reader is waited for only briefly
/// once the command has exited.
struct Drain {
    bytes: Arc<Mutex<Vec<u8>>>,
    done: thread::JoinHandle<()>,
}

impl Drain {
    fn start<R: Read + Send + 'static>(pipe: Option<R>) -> Drain {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = bytes.clone();
        let done = thread::spawn(move || {
            let Some(mut pipe) = pipe else { return };
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Drain { bytes, done }
    }

    fn finish(self) -> String {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.done.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let bytes = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// `VmHWM` of a running process, in KiB; None once it has exited (a zombie has no memory).
fn vm_hwm_kib(pid: libc::pid_t) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let o = run(cmd, "sh", Duration::from_secs(10)).unwrap();
        assert_eq!(o.code(), Some(3));
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.stderr, "err\n");
        assert!(o.ok().unwrap_err().to_string().contains("err"));
    }

    #[test]
    fn a_hung_command_is_killed_at_the_deadline() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; sleep 30 & wait"]);
        let started = Instant::now();
        let err = run(cmd, "sleeper", Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            err.contains("timed out") && err.contains("started"),
            "{err}"
        );
    }

    #[test]
    fn a_daemon_holding_the_pipe_does_not_block_the_result() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "setsid sleep 6 & echo parent done"]);
        let started = Instant::now();
        let o = run(cmd, "daemonizer", Duration::from_secs(10)).unwrap();
        assert!(o.success());
        assert_eq!(o.stdout, "parent done\n");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
