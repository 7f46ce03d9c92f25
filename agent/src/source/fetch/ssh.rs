//! The `ssh` command gix runs for ssh URLs.
//!
//! gix uses the system OpenSSH client. tend pins everything that decides whom it talks to and
//! how: the configured key only, the configured known_hosts with strict checking and no
//! learning of new keys, batch mode (no prompt can hang a timer run), and the connect timeout.
//! Two additions keep failures explicit:
//! - `-E <log>`: ssh writes its messages to a file that tend reads when a fetch fails, because
//!   gix hides most of them ("Host key verification failed." would otherwise be lost); the
//!   server's own stderr is appended to the same file;
//! - coreutils `timeout`: bounds the whole ssh session, so a server that authenticates and then
//!   stalls cannot hold the run forever (ServerAlive only detects a dead peer).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::SourceConfig;

/// Single-quotes `s` for `sh`: gix runs the command through the shell when it has arguments.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The command line (for `sh`) that gix runs, followed by its own `-p`, host and remote command.
pub(crate) fn command(src: &SourceConfig, log: &Path) -> String {
    let mut argv: Vec<String> = Vec::new();
    if !src.timeout.is_zero() {
        if let Some(timeout) = find_program("timeout") {
            // Seconds, rounded up; ssh gets 5 more seconds to exit after SIGTERM.
            let secs = src.timeout.as_millis().div_ceil(1000).max(1);
            argv.extend([
                quote(&timeout.to_string_lossy()),
                "-k".into(),
                "5".into(),
                secs.to_string(),
            ]);
        }
    }
    argv.push("ssh".into());
    argv.extend(["-E".into(), quote(&log.to_string_lossy())]);
    let mut opt = |o: String| argv.extend(["-o".to_string(), quote(&o)]);
    opt("BatchMode=yes".into());
    opt("StrictHostKeyChecking=yes".into());
    opt("UpdateHostKeys=no".into());
    opt("LogLevel=ERROR".into());
    if !src.connect_timeout.is_zero() {
        opt(format!("ConnectTimeout={}", secs_ceil(src.connect_timeout)));
        // A peer that vanishes mid-transfer is noticed after three missed probes.
        opt(format!(
            "ServerAliveInterval={}",
            secs_ceil(src.connect_timeout)
        ));
        opt("ServerAliveCountMax=3".into());
    }
    if let Some(kh) = &src.known_hosts {
        opt(format!("UserKnownHostsFile={}", kh.display()));
    }
    if let Some(key) = &src.ssh_key {
        opt("IdentitiesOnly=yes".into());
        argv.extend(["-i".into(), quote(&key.to_string_lossy())]);
    }
    // What the server prints on stderr (git's "fatal: … does not appear to be a git
    // repository", a forge's "ERROR: …") goes to the same log. A redirection may stand
    // anywhere in a shell command, so gix's arguments still follow.
    argv.push(format!("2>>{}", quote(&log.to_string_lossy())));
    argv.join(" ")
}

fn secs_ceil(d: Duration) -> u128 {
    d.as_millis().div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_key_known_hosts_and_strict_checking_with_quoted_paths() {
        let mut src = SourceConfig::new("ssh://git@example.com:2222/fleet.git");
        src.ssh_key = Some("/etc/tend/id ed25519".into());
        src.known_hosts = Some("/etc/tend/it's known".into());
        src.connect_timeout = Duration::from_millis(1500);
        src.timeout = Duration::from_secs(60);
        let cmd = command(&src, Path::new("/var/lib/tend/repo.git/tend-ssh.log"));
        assert!(
            cmd.contains(" -k 5 60 ssh -E '/var/lib/tend/repo.git/tend-ssh.log'"),
            "{cmd}"
        );
        assert!(cmd.contains("-o 'StrictHostKeyChecking=yes'"), "{cmd}");
        assert!(cmd.contains("-o 'BatchMode=yes'"), "{cmd}");
        assert!(cmd.contains("-o 'ConnectTimeout=2'"), "{cmd}");
        assert!(
            cmd.contains(r"-o 'UserKnownHostsFile=/etc/tend/it'\''s known'"),
            "{cmd}"
        );
        assert!(cmd.contains("-i '/etc/tend/id ed25519'"), "{cmd}");
        assert!(
            cmd.ends_with(" 2>>'/var/lib/tend/repo.git/tend-ssh.log'"),
            "{cmd}"
        );
        // What sh makes of it is what ssh gets (the log must exist for the redirection).
        let d = tempfile::tempdir().unwrap();
        let cmd = command(&src, &d.path().join("tend-ssh.log"));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s\\n' {} extra-arg", cmd))
            .output()
            .unwrap();
        let args = String::from_utf8(out.stdout).unwrap();
        assert!(
            args.lines()
                .any(|a| a == "UserKnownHostsFile=/etc/tend/it's known"),
            "{args}"
        );
        assert!(args.lines().any(|a| a == "/etc/tend/id ed25519"), "{args}");
        assert_eq!(args.lines().last(), Some("extra-arg"), "{args}");
    }

    #[test]
    fn zero_timeouts_leave_ssh_unbounded() {
        let mut src = SourceConfig::new("git@example.com:fleet.git");
        src.timeout = Duration::ZERO;
        src.connect_timeout = Duration::ZERO;
        let cmd = command(&src, Path::new("/tmp/log"));
        assert!(cmd.starts_with("ssh -E"), "{cmd}");
        assert!(!cmd.contains("ConnectTimeout"), "{cmd}");
    }
}
