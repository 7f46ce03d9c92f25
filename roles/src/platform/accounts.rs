//! The account databases (/etc/passwd, /etc/group) read straight from the root.
//!
//! Names are resolved against the managed root, never through the host's NSS: in a chroot or an
//! image build, "pi" must mean the image's pi, and a static binary must not load NSS modules.

use std::path::Path;

use crate::error::ResourceError;
use crate::host::Host;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                gecos: f[4].to_string(),
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
        .collect()
}

pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

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
