//! Real git servers on 127.0.0.1 for fetch tests: a fleet repo fixture, git over https
//! (`git http-backend` behind lighttpd, with a CA made at test time), git over ssh (OpenSSH's
//! sshd with its own host key and config), and plain `file://` paths.
//!
//! Fetching is where a pull agent meets the network, so it is tested against the servers devices
//! really talk to rather than a mock that would agree with the client's own assumptions. Each
//! server runs in the foreground as a child process in a tempdir, on an ephemeral port, and is
//! killed when dropped. The packages come from `scripts/testbed-deps`.

mod https;
mod lying;
mod repo;
mod ssh;
mod tls;

pub use https::{AccessEntry, HttpsGitServer};
pub use lying::{Lie, LyingGitServer, Served};
pub use repo::{Change, FleetRepo};
pub use ssh::SshGitServer;
pub use tls::TestCa;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A port that was free a moment ago (servers that take a port number, not a socket, need one).
pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The program's path, or an error saying how to install it.
pub(crate) fn require(program: &str) -> Result<std::path::PathBuf> {
    crate::gate::find_in_path(program).with_context(|| {
        format!("`{program}` is not installed: run `scripts/testbed-deps` as root")
    })
}

/// A child process that is killed (and reaped) when dropped.
pub(crate) struct Daemon {
    name: &'static str,
    child: Child,
}

impl Daemon {
    /// Spawns `cmd` and waits until it listens on `port`; `log` is shown if it does not. A port
    /// that accepts connections is not proof: between choosing a free port and the daemon's
    /// bind, another test's server may have taken it, and this daemon then exits with a bind
    /// error while the port answers (in another protocol). So the listening socket must be one
    /// of the child's own.
    pub(crate) fn start(
        name: &'static str,
        mut cmd: Command,
        port: u16,
        log: &Path,
    ) -> Result<Daemon> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let mut d = Daemon { name, child };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && listens_on(d.child.id(), port)
            {
                return Ok(d);
            }
            if let Some(status) = d.child.try_wait()? {
                bail!(
                    "{name} exited ({status}) before listening on {port}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} did not listen on {port} within {START_TIMEOUT:?}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether process `pid` holds a listening TCP socket on `port` (any address), from
/// /proc/net/tcp{,6} and the process's descriptors.
fn listens_on(pid: u32, port: u16) -> bool {
    let port_hex = format!(":{port:04X}");
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    // local_address, state 0A (LISTEN), inode
                    (f.len() > 9 && f[1].ends_with(&port_hex) && f[3] == "0A")
                        .then(|| format!("socket:[{}]", f[9]))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

impl Daemon {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The CPU time of process `pid` and of its children it has reaped (a CGI server's
/// `git-upload-pack`s), from /proc/<pid>/stat; zero if it is gone.
pub(crate) fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11) // state … cmajflt: utime is field 14 of the line, the 12th after ')'
        .take(4) // utime, stime, cutime, cstime
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(f.iter().sum::<u64>() * 1000 / hz)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill() {
            eprintln!("stopping {}: {e}", self.name);
        }
        let _ = self.child.wait();
    }
}

/// Runs a command to completion, failing with its output.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
