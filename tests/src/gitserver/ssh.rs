//! Git over ssh: OpenSSH's sshd on a loopback port, with its own host key, config and
//! authorized key in a tempdir.
//!
//! sshd logs in the user running the tests (root in CI; a non-root sshd can only log in as
//! itself, so that also works unprivileged), key only. Clients get a matching key pair and a
//! known_hosts file that pins the server's host key for `[127.0.0.1]:<port>`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use super::{free_port, require, run, Daemon};

pub struct SshGitServer {
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    _daemon: Daemon,
}

fn current_user() -> Result<String> {
    // SAFETY: getpwuid returns a pointer into static storage or null; read at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        anyhow::ensure!(!pw.is_null(), "the current uid has no passwd entry");
        Ok(std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned())
    }
}

fn keygen(path: &Path, comment: &str) -> Result<()> {
    run(Command::new(require("ssh-keygen")?)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path))
    .map(|_| ())
}

impl SshGitServer {
    pub fn start() -> Result<SshGitServer> {
        Self::start_with("")
    }

    /// With `extra` appended to sshd_config (e.g. a `ForceCommand` that makes the server stall
    /// after authentication).
    pub fn start_with(extra: &str) -> Result<SshGitServer> {
        let sshd = require("sshd")?;
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        keygen(&d.join("host_ed25519"), "tend test host")?;
        keygen(&d.join("client_ed25519"), "tend test client")?;
        std::fs::copy(d.join("client_ed25519.pub"), d.join("authorized_keys"))?;
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // sshd's privilege-separation directory; boot creates it, containers may not.
            std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
        }
        let user = current_user()?;
        let mut last_err = None;
        for _ in 0..3 {
            let port = free_port()?;
            let conf = d.join("sshd_config");
            std::fs::write(&conf, config(d, port, &user) + extra)?;
            let log = d.join("sshd.log");
            let mut cmd = Command::new(&sshd);
            cmd.args(["-D", "-e", "-f"])
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?);
            match Daemon::start("sshd", cmd, port, &log) {
                Ok(daemon) => {
                    let host_key = std::fs::read_to_string(d.join("host_ed25519.pub"))?;
                    let key: Vec<&str> = host_key.split_whitespace().take(2).collect();
                    std::fs::write(
                        d.join("known_hosts"),
                        format!("[127.0.0.1]:{port} {}\n", key.join(" ")),
                    )?;
                    return Ok(SshGitServer {
                        dir,
                        port,
                        user,
                        _daemon: daemon,
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("sshd did not start")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ssh://<user>@127.0.0.1:<port><repo>` for a repo at an absolute path.
    pub fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    /// The private key sshd accepts.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// A known_hosts file that pins this server's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// sshd's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

fn config(dir: &Path, port: u16, user: &str) -> String {
    format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {dir}/host_ed25519\n\
         PidFile none\n\
         AuthorizedKeysFile {dir}/authorized_keys\n\
         AllowUsers {user}\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         UsePAM {pam}\n\
         StrictModes no\n\
         AcceptEnv GIT_PROTOCOL\n\
         LogLevel VERBOSE\n",
        dir = dir.display(),
        // A password-locked account (root in containers, `!` in shadow) may still log in with a
        // key through PAM, as on Debian; a non-root sshd cannot use PAM.
        // SAFETY: geteuid cannot fail.
        pam = if unsafe { libc::geteuid() } == 0 {
            "yes"
        } else {
            "no"
        },
    )
}
