//! The account databases (/etc/passwd, /etc/group) read straight from the root.
//!
//! Names are resolved against the managed root, never through the host's NSS: in a chroot or an
//! image build, "pi" must mean the image's pi, and a static binary must not load NSS modules.

use std::path::Path;

use crate::error::ResourceError;
use crate::host::Host;

pub use crate::passwd::{parse_group, parse_passwd, GroupEntry, PasswdEntry};

fn read_db(host: &Host, path: &str) -> Result<String, ResourceError> {
    let p = host.path(path)?;
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(ResourceError::io(Path::new(path), e)),
    }
}

pub fn users(host: &Host) -> Result<Vec<PasswdEntry>, ResourceError> {
    Ok(parse_passwd(&read_db(host, "/etc/passwd")?))
}

pub fn groups(host: &Host) -> Result<Vec<GroupEntry>, ResourceError> {
    Ok(parse_group(&read_db(host, "/etc/group")?))
}

/// The lock files shadow's tools (useradd, usermod, groupadd …) create next to the databases.
const LOCKS: [&str; 4] = [
    "/etc/passwd.lock",
    "/etc/shadow.lock",
    "/etc/group.lock",
    "/etc/gshadow.lock",
];

/// Removes the account databases' lock files that no running process holds. shadow keeps a lock for as long as the process id
/// written in it exists, and an id outlives its process: a tool killed mid-change is a zombie
/// until it is reaped, and after a power cut and a reboot another process may have the id, which
/// would block every account change until someone deletes the file. A lock is stale when no
/// process has its id, when that process is a zombie, or when it started after the lock was
/// written. Process ids are those of tend's own namespace, where the tools it runs live, so the
/// running system's /proc is read, not the root's.
fn clear_stale_locks(host: &Host) -> Result<(), ResourceError> {
    for lock in LOCKS {
        let path = host.path(lock)?;
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let why = match text.trim().parse::<i32>() {
            Ok(pid) if pid > 0 => stale_because(pid, meta.modified().ok()),
            _ => Some("it names no process".to_string()),
        };
        if let Some(why) = why {
            tracing::warn!(lock, %why, "removing a stale account database lock");
            std::fs::remove_file(&path).map_err(|e| ResourceError::io(Path::new(lock), e))?;
        }
    }
    Ok(())
}

/// Runs an account tool (useradd, usermod, groupadd …) in the root, once no stale lock of the
/// account databases stands in its way (see [`clear_stale_locks`]).
pub fn run_tool(host: &Host, argv: &[&str]) -> Result<(), ResourceError> {
    clear_stale_locks(host)?;
    host.run(argv)?;
    Ok(())
}

/// Why a lock held by `pid` and last written at `written` is stale, or None if it may be held.
fn stale_because(pid: i32, written: Option<std::time::SystemTime>) -> Option<String> {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Some(format!("no process {pid} is running"));
    };
    // The fields after the command name, which is in parentheses and may hold anything.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return Some(format!("process {pid} has exited (a zombie)"));
    }
    let started = process_start(fields.get(19)?.parse().ok()?)?;
    let written = written?;
    // A second of slack: the start time has a tick's resolution, the mtime the filesystem's.
    (started > written + std::time::Duration::from_secs(1)).then(|| {
        format!("process {pid} started after the lock was written: another process has its id")
    })
}

/// The wall-clock time a process started, from its start in clock ticks after boot.
fn process_start(ticks: u64) -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    let secs =
        std::time::Duration::from_secs(btime) + std::time::Duration::from_millis(ticks * 1000 / hz);
    Some(std::time::UNIX_EPOCH + secs)
}

/// A uid from a user name or a number, resolved in the root.
pub fn uid_of(host: &Host, user: &str) -> Result<u32, ResourceError> {
    if let Ok(n) = user.parse() {
        return Ok(n);
    }
    users(host)?
        .into_iter()
        .find(|u| u.name == user)
        .map(|u| u.uid)
        .ok_or_else(|| ResourceError::other(format!("user '{user}' does not exist on the device; create it with a `user` resource in an earlier role or earlier in this one")))
}

/// A gid from a group name or a number, resolved in the root.
pub fn gid_of(host: &Host, group: &str) -> Result<u32, ResourceError> {
    if let Ok(n) = group.parse() {
        return Ok(n);
    }
    groups(host)?
        .into_iter()
        .find(|g| g.name == group)
        .map(|g| g.gid)
        .ok_or_else(|| ResourceError::other(format!("group '{group}' does not exist on the device; create it with a `group` resource first")))
}

/// Checks a user or group name against Debian's conservative rule (adduser's NAME_REGEX, plus a
/// leading underscore): `^[a-z_][-a-z0-9_]*\$?$`, at most 32 characters. Names outside it work
/// badly with other tools (a leading digit reads as an id, capitals confuse mail and NSS).
pub fn check_name(name: &str) -> Result<(), String> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let mut chars = body.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !first_ok || !rest_ok {
        return Err(format!(
            "'{name}' is not a valid account name: use lowercase letters, digits, '-' and '_', starting with a letter or '_' (an optional trailing '$' is allowed)"
        ));
    }
    if name.len() > 32 {
        return Err(format!(
            "'{name}' is {} characters long; account names have at most 32",
            name.len()
        ));
    }
    Ok(())
}

pub fn user_name(host: &Host, uid: u32) -> Result<Option<String>, ResourceError> {
    Ok(users(host)?
        .into_iter()
        .find(|u| u.uid == uid)
        .map(|u| u.name))
}

pub fn group_name(host: &Host, gid: u32) -> Result<Option<String>, ResourceError> {
    Ok(groups(host)?
        .into_iter()
        .find(|g| g.gid == gid)
        .map(|g| g.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_account_locks_are_removed_and_held_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        let host = Host::new(d.path());
        let lock = |name: &str, pid: &str| {
            let p = d.path().join("etc").join(name);
            std::fs::write(&p, pid).unwrap();
            p
        };
        // Held: this test's own process, which started before the lock was written.
        let held = lock("passwd.lock", &std::process::id().to_string());
        // A process that has exited (and was reaped).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let dead = lock("group.lock", &dead_pid.to_string());
        // Written long before its process started: the id was reused (a reboot).
        let reused = lock("shadow.lock", &std::process::id().to_string());
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 24 * 3600);
        std::fs::File::options()
            .write(true)
            .open(&reused)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let garbage = lock("gshadow.lock", "not a pid");
        clear_stale_locks(&host).unwrap();
        assert!(held.exists());
        assert!(!dead.exists() && !reused.exists() && !garbage.exists());

        // A killed tool that nobody has reaped yet: its id still exists, as a zombie.
        let mut zombie = std::process::Command::new("true").spawn().unwrap();
        let stat = format!("/proc/{}/stat", zombie.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !std::fs::read_to_string(&stat).is_ok_and(|s| s.contains(") Z ")) {
            assert!(std::time::Instant::now() < deadline, "no zombie");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let undead = lock("passwd.lock", &zombie.id().to_string());
        clear_stale_locks(&host).unwrap();
        assert!(!undead.exists());
        zombie.wait().unwrap();
    }

    #[test]
    fn parses_debian_passwd_and_group() {
        let u = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000:Pi,,,:/home/pi:/bin/bash\nbroken\n",
        );
        assert_eq!(u.len(), 2);
        assert_eq!(u[1].name, "pi");
        assert_eq!(u[1].home, "/home/pi");
        let g = parse_group("sudo:x:27:pi,admin\nstaff:x:50:\n");
        assert_eq!(g[0].members, vec!["pi", "admin"]);
        assert!(g[1].members.is_empty());
    }

    #[test]
    fn account_names_follow_debian_rules() {
        let long = "a".repeat(32);
        for ok in [
            "kiosk",
            "_apt",
            "systemd-timesync",
            "www-data",
            "host$",
            "a",
            &long,
        ] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        let too_long = "a".repeat(33);
        for bad in [
            "",
            "Kiosk",
            "1pi",
            "-x",
            "a b",
            "a:b",
            "a$b",
            "$",
            "caf\u{e9}",
            &too_long,
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolves_names_in_the_root_not_the_host() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "kiosk:x:1234:1234::/home/kiosk:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "kiosk:x:1234:\n").unwrap();
        let host = Host::new(d.path());
        assert_eq!(uid_of(&host, "kiosk").unwrap(), 1234);
        assert_eq!(gid_of(&host, "kiosk").unwrap(), 1234);
        assert_eq!(uid_of(&host, "42").unwrap(), 42);
        assert!(
            uid_of(&host, "root").is_err(),
            "the host's root is not the tempdir's"
        );
    }
}
