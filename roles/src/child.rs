//! Running a program under a deadline, for every child tend starts: command resources, health
//! checks, and the agent's helpers (getent, busctl, the Mender client).
//!
//! One place, because each naive copy had the same traps: a child that writes more than a pipe
//! holds blocks forever if nobody reads while waiting; a timed-out shell leaves its children
//! running; and a background process the child started may keep the pipes open long after the
//! child exited. So the child runs in its own process group, its output is read with poll(2)
//! while waiting (only the tail is kept), the group is terminated and then killed when the
//! deadline passes, and nothing waits for end-of-file after the exit.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How much of each output stream is kept; failures show only the last lines anyway.
pub const TAIL_BYTES: usize = 64 * 1024;
/// Between SIGTERM and SIGKILL of a timed-out process group.
const KILL_GRACE: Duration = Duration::from_secs(3);

/// How the child ended; either way with the tail of its output.
#[derive(Debug)]
pub enum Finished {
    Exited(Output),
    /// The deadline passed and the process group was killed.
    TimedOut(Output),
}

impl Finished {
    pub fn output(&self) -> &Output {
        match self {
            Finished::Exited(o) | Finished::TimedOut(o) => o,
        }
    }
}

#[derive(Debug)]
pub enum Error {
    /// The program could not be started (missing, not executable).
    Spawn(std::io::Error),
    /// Waiting for it failed.
    Wait(std::io::Error),
}

/// Runs `cmd` with stdin from /dev/null (unless the caller set one), stdout and stderr captured,
/// in its own process group, killed when `timeout` passes.
pub fn run(mut cmd: Command, timeout: Duration) -> Result<Finished, Error> {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(Error::Spawn)?;
    let mut pipes = Pipes {
        out: child.stdout.take(),
        err: child.stderr.take(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    let deadline = Instant::now() + timeout;
    loop {
        pipes.pump(Duration::from_millis(100).min(timeout));
        if let Some(status) = child.try_wait().map_err(Error::Wait)? {
            pipes.drain();
            return Ok(Finished::Exited(pipes.into_output(status)));
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    // The process group id is the child's pid (process_group(0)); chroot execs in place.
    let pgid = child.id() as libc::pid_t;
    // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let grace = Instant::now() + KILL_GRACE;
    while Instant::now() < grace && child.try_wait().map_err(Error::Wait)?.is_none() {
        pipes.pump(Duration::from_millis(100));
    }
    // SAFETY: as above; members that ignored SIGTERM are killed, a gone group is ESRCH.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let status = child.wait().map_err(Error::Wait)?;
    pipes.drain();
    Ok(Finished::TimedOut(pipes.into_output(status)))
}

/// The child's output pipes, read with poll(2) on this thread. Nothing waits for end-of-file
/// after the child exited: a background process it started may keep the pipes open forever.
struct Pipes {
    out: Option<ChildStdout>,
    err: Option<ChildStderr>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Pipes {
    /// Reads what arrives within `wait`; returns whether anything was read or closed.
    fn pump(&mut self, wait: Duration) -> bool {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(2);
        for fd in [
            self.out.as_ref().map(|p| p.as_raw_fd()),
            self.err.as_ref().map(|p| p.as_raw_fd()),
        ] {
            fds.push(libc::pollfd {
                fd: fd.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if self.out.is_none() && self.err.is_none() {
            std::thread::sleep(wait);
            return false;
        }
        let ms = wait.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: fds points to fds.len() initialized pollfd structs that outlive the call;
        // poll ignores entries with a negative fd.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if ready <= 0 {
            return false;
        }
        let mut progressed = false;
        let mut buf = [0u8; 8192];
        if fds[0].revents != 0 {
            progressed = true;
            if read_into(&mut self.out, &mut buf, &mut self.stdout) {
                self.out = None;
            }
        }
        if fds[1].revents != 0 {
            progressed = true;
            if read_into(&mut self.err, &mut buf, &mut self.stderr) {
                self.err = None;
            }
        }
        progressed
    }

    /// After exit: take what is still buffered, for at most a second.
    fn drain(&mut self) {
        let until = Instant::now() + Duration::from_secs(1);
        while (self.out.is_some() || self.err.is_some()) && Instant::now() < until {
            if !self.pump(Duration::from_millis(50)) {
                break;
            }
        }
    }

    fn into_output(self, status: ExitStatus) -> Output {
        Output {
            status,
            stdout: self.stdout,
            stderr: self.stderr,
        }
    }
}

/// One read from a ready pipe into `sink`, keeping only its tail. True at end of file or error.
fn read_into<R: Read>(pipe: &mut Option<R>, buf: &mut [u8], sink: &mut Vec<u8>) -> bool {
    let Some(p) = pipe else { return true };
    match p.read(buf) {
        Ok(0) => true,
        Ok(n) => {
            sink.extend_from_slice(&buf[..n]);
            if sink.len() > TAIL_BYTES {
                sink.drain(..sink.len() - TAIL_BYTES);
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => false,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    // The deadline and the process group are tested through the command resource
    // (types::command), which runs everything it starts through here.
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", script]).stdin(Stdio::null());
        cmd
    }

    #[test]
    fn a_child_that_fills_its_pipes_is_read_while_it_runs() {
        // 1 MiB on each stream: far beyond a pipe's 64 KiB, so a wait-then-read would hang.
        let out = match run(
            sh("head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2; echo end"),
            Duration::from_secs(20),
        )
        .unwrap()
        {
            Finished::Exited(out) => out,
            other => panic!("{other:?}"),
        };
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), TAIL_BYTES);
        assert!(out.stdout.ends_with(b"end\n"));
        assert_eq!(out.stderr.len(), TAIL_BYTES);
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let e = run(
            Command::new("/nonexistent/tend-test"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Spawn(_)), "{e:?}");
    }
}
