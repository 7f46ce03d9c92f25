//! The host side of the VM's command channel: shell scripts sent over a virtio-serial port to the
//! guest agent (see `guest`), answered with the exit code and both outputs.
//!
//! A serial line, not ssh: no keys, no sshd, no network port to forward, and it works from the
//! moment the agent unit starts. Each request carries an id so that an answer left over from a
//! timed-out request is never taken for the answer to the next one.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;

/// What a guest command did.
#[derive(Debug, Clone)]
pub struct GuestOutcome {
    pub script: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl GuestOutcome {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

impl std::fmt::Display for GuestOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "guest `{}` exited with {}",
            self.script.trim(),
            self.code
        )?;
        writeln!(f, "--- stdout\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr\n{}", self.stderr.trim_end())
    }
}

pub struct Agent {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Agent {
    /// Connects to qemu's socket for the port (qemu creates it when it starts).
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Agent> {
        let deadline = Instant::now() + timeout;
        loop {
            match UnixStream::connect(socket) {
                Ok(stream) => {
                    let writer = stream.try_clone()?;
                    return Ok(Agent {
                        reader: BufReader::new(stream),
                        writer,
                        next_id: 1,
                    });
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(e).with_context(|| {
                        format!("connecting to the VM's agent socket {}", socket.display())
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Runs `script` with `sh` in the guest; fails when no answer comes within `timeout`.
    pub fn run(&mut self, script: &str, timeout: Duration) -> Result<GuestOutcome> {
        let id = self.next_id;
        self.next_id += 1;
        let b64 = base64::engine::general_purpose::STANDARD;
        writeln!(self.writer, "{id} {}", b64.encode(script))?;
        let deadline = Instant::now() + timeout;
        let mut line = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("the VM did not answer `{script}` within {timeout:?}");
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            match self.reader.read_line(&mut line) {
                Ok(0) => bail!("the VM's agent channel closed while running `{script}`"),
                Ok(_) if line.ends_with('\n') => {}
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(e) => return Err(e.into()),
            }
            if let Some(out) = parse_answer(line.trim_end_matches('\n'), id, script)? {
                return Ok(out);
            }
            line.clear();
        }
    }
}

/// `R <id> <code> <b64 stdout> <b64 stderr>`: the outcome when `id` matches, None for an answer
/// to an earlier (timed-out) request.
fn parse_answer(line: &str, id: u64, script: &str) -> Result<Option<GuestOutcome>> {
    let f: Vec<&str> = line.split(' ').collect();
    if f.len() != 5 || f[0] != "R" {
        bail!("malformed answer from the VM's agent: {line:?}");
    }
    if f[1] != id.to_string() {
        return Ok(None);
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = |s: &str| -> Result<String> {
        Ok(String::from_utf8_lossy(&b64.decode(s).context("agent answer base64")?).into_owned())
    };
    Ok(Some(GuestOutcome {
        script: script.to_string(),
        code: f[2].parse().context("agent exit code")?,
        stdout: text(f[3])?,
        stderr: text(f[4])?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_and_stale_ones_are_skipped() {
        let out = parse_answer("R 7 3 aGk= ", 7, "x").unwrap().unwrap();
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (3, "hi", "")
        );
        assert!(parse_answer("R 6 0  ", 7, "x").unwrap().is_none());
        assert!(parse_answer("garbage", 7, "x").is_err());
    }
}
