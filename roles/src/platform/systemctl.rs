//! systemctl as the service resource asks it: unit-file state (`is-enabled`, read ahead for every
//! announced unit in one call), `is-active`, alias lookup in the root's unit directories, and the
//! command line every call shares (no password prompts; `SYSTEMD_OFFLINE=1` when systemd is not
//! PID 1 of the root, so that a chroot or an image build is never mistaken for a live system).

use std::path::Path;

use crate::error::ResourceError;
use crate::host::Host;

/// Where an alias symlink may live, in systemd's lookup order (systemd.unit(5)).
pub(crate) const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// A unit file's state as `systemctl is-enabled` prints it (systemctl(1), table 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enablement {
    Enabled,
    EnabledRuntime,
    Linked,
    LinkedRuntime,
    Alias,
    Masked,
    MaskedRuntime,
    Static,
    Indirect,
    Disabled,
    Generated,
    Transient,
    Bad,
    NotFound,
}

impl Enablement {
    pub(crate) fn from_word(word: &str) -> Option<Self> {
        Some(match word {
            "enabled" => Self::Enabled,
            "enabled-runtime" => Self::EnabledRuntime,
            "linked" => Self::Linked,
            "linked-runtime" => Self::LinkedRuntime,
            "alias" => Self::Alias,
            "masked" => Self::Masked,
            "masked-runtime" => Self::MaskedRuntime,
            "static" => Self::Static,
            "indirect" => Self::Indirect,
            "disabled" => Self::Disabled,
            "generated" => Self::Generated,
            "transient" => Self::Transient,
            "bad" => Self::Bad,
            "not-found" => Self::NotFound,
            _ => return None,
        })
    }

    pub(crate) fn is_masked(self) -> bool {
        matches!(self, Self::Masked | Self::MaskedRuntime)
    }
}

/// Reads `systemctl is-enabled` output. Its exit status says nothing useful (disabled, masked and
/// linked all exit non-zero), so only the text counts: the state is stdout's last line (sysv
/// scripts add chatter before it); systemd before 253 reports a missing unit on stderr only.
pub fn parse_is_enabled(stdout: &str, stderr: &str) -> Option<Enablement> {
    let last = stdout.lines().map(str::trim).rfind(|l| !l.is_empty());
    if let Some(state) = last.and_then(Enablement::from_word) {
        return Some(state);
    }
    let missing = stderr.lines().any(|l| {
        l.starts_with("Failed to get unit file state for")
            && l.ends_with("No such file or directory")
    });
    missing.then_some(Enablement::NotFound)
}

pub(crate) fn systemctl(host: &Host, args: &[&str]) -> std::process::Command {
    let argv: Vec<&str> = ["systemctl", "--no-ask-password"]
        .iter()
        .chain(args)
        .copied()
        .collect();
    let mut cmd = host.command(&argv);
    if !host.systemd_running {
        cmd.env("SYSTEMD_OFFLINE", "1");
    }
    cmd
}

/// Runs a query whose exit status is part of its answer; returns stdout, stderr and the output.
pub(crate) fn query(
    host: &Host,
    args: &[&str],
) -> Result<(String, String, std::process::Output), ResourceError> {
    let shown = format!("systemctl {}", args.join(" "));
    let not_installed = || {
        ResourceError::other(format!(
            "systemctl is not installed in {}; the service resource needs systemd there (e.g. `package: systemd` first)",
            host.root().display()
        ))
    };
    let out = systemctl(host, args).output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => not_installed(),
        _ => ResourceError::other(format!("cannot run `{shown}`: {e}")),
    })?;
    // chroot(8) exits 127 when the command does not exist inside the root.
    if out.status.code() == Some(127) && out.stdout.is_empty() {
        return Err(not_installed());
    }
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Ok((stdout, stderr, out))
}

pub(crate) fn is_enabled(host: &Host, unit: &str) -> Result<Enablement, ResourceError> {
    if let Some(state) = read_ahead(host, unit) {
        return Ok(state);
    }
    let (stdout, stderr, out) = query(host, &["is-enabled", unit])?;
    parse_is_enabled(&stdout, &stderr)
        .ok_or_else(|| host.command_error(&format!("systemctl is-enabled {unit}"), &out))
}

/// `unit`'s enablement from one `systemctl is-enabled` for every announced unit, asked when the
/// first of them is read and again after a change. None (ask for `unit` alone) when `unit` was
/// not announced, or the answer is not one state word per unit: systemd before 253 stops at a
/// unit that does not exist, and SysV scripts print more lines.
pub(crate) fn read_ahead(host: &Host, unit: &str) -> Option<Enablement> {
    let units = {
        let flags = host.flags();
        if let Some(word) = flags.unit_states.get(unit) {
            return Enablement::from_word(word);
        }
        if flags.units_announced.len() < 2 || !flags.units_announced.iter().any(|u| u == unit) {
            return None;
        }
        flags.units_announced.clone()
    };
    let mut args = vec!["is-enabled"];
    args.extend(units.iter().map(String::as_str));
    let (stdout, _, _) = query(host, &args).ok()?;
    let words: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| Enablement::from_word(l).is_some())
        .collect();
    if words.len() != units.len() {
        return None;
    }
    let mut flags = host.flags();
    for (u, w) in units.iter().zip(&words) {
        flags.unit_states.insert(u.clone(), w.to_string());
    }
    flags
        .unit_states
        .get(unit)
        .and_then(|w| Enablement::from_word(w))
}

pub(crate) fn is_active(host: &Host, unit: &str) -> Result<String, ResourceError> {
    let (stdout, _, out) = query(host, &["is-active", unit])?;
    match stdout.lines().map(str::trim).rfind(|l| !l.is_empty()) {
        Some(state) => Ok(state.to_string()),
        None => Err(host.command_error(&format!("systemctl is-active {unit}"), &out)),
    }
}

/// The unit an alias symlink points to, looked up in the root's unit directories. An alias of a
/// template instance (`a@x.service` -> `b@.service`) keeps its instance.
pub(crate) fn alias_target(host: &Host, unit: &str) -> Result<Option<String>, ResourceError> {
    for dir in UNIT_DIRS {
        let path = host.path(&format!("{dir}/{unit}"))?;
        let Ok(target) = std::fs::read_link(&path) else {
            continue;
        };
        let Some(name) = target.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if Path::new(name) == Path::new("null") {
            return Ok(None);
        }
        let instance = unit
            .split_once('@')
            .and_then(|(_, rest)| rest.rsplit_once('.'))
            .map(|(i, _)| i);
        return Ok(Some(match instance {
            Some(i) if !i.is_empty() && name.contains("@.") => {
                name.replacen("@.", &format!("@{i}."), 1)
            }
            _ => name.to_string(),
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_is_enabled_output() {
        use Enablement as E;
        for (out, want) in [
            ("enabled\n", E::Enabled),
            ("enabled-runtime\n", E::EnabledRuntime),
            ("disabled\n", E::Disabled),
            ("masked\n", E::Masked),
            ("masked-runtime\n", E::MaskedRuntime),
            ("static\n", E::Static),
            ("alias\n", E::Alias),
            ("indirect\n", E::Indirect),
            ("generated\n", E::Generated),
            ("linked\n", E::Linked),
            ("not-found\n", E::NotFound),
        ] {
            assert_eq!(parse_is_enabled(out, ""), Some(want), "{out}");
        }
        // systemd 252 (bookworm): a missing unit is an error message on stderr, exit 1.
        let stderr = "Failed to get unit file state for nginx.service: No such file or directory\n";
        assert_eq!(parse_is_enabled("", stderr), Some(E::NotFound));
        // A sysv script: systemd-sysv-install talks first, the state comes last.
        let sysv = "foo.service is not a native service, redirecting to systemd-sysv-install.\n\
                    Executing: /lib/systemd/systemd-sysv-install is-enabled foo\n";
        assert_eq!(parse_is_enabled("disabled\n", sysv), Some(E::Disabled));
        assert_eq!(
            parse_is_enabled("", "Failed to connect to bus: No such file or directory\n"),
            None
        );
        assert_eq!(parse_is_enabled("wat\n", ""), None);
    }

    /// Real systemctl output on a real unit tree, through `--root` so nothing outside the tempdir
    /// is touched. Skipped where systemctl is not installed.
    #[test]
    fn parses_real_systemctl_output() {
        let d = tempfile::tempdir().unwrap();
        let lib = d.path().join("usr/lib/systemd/system");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::create_dir_all(d.path().join("etc/systemd/system")).unwrap();
        std::fs::write(
            lib.join("demo.service"),
            "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        std::fs::write(
            lib.join("helper.service"),
            "[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
        let root = format!("--root={}", d.path().display());
        let systemctl = |args: &[&str]| {
            std::process::Command::new("systemctl")
                .arg(&root)
                .args(args)
                .env("SYSTEMD_OFFLINE", "1")
                .output()
        };
        let state = |unit: &str| {
            let out = systemctl(&["is-enabled", unit]).unwrap();
            parse_is_enabled(
                &String::from_utf8_lossy(&out.stdout),
                &String::from_utf8_lossy(&out.stderr),
            )
        };
        if systemctl(&["--version"]).is_err() {
            eprintln!("systemctl is not installed here; skipping");
            return;
        }
        assert_eq!(state("demo.service"), Some(Enablement::Disabled));
        assert_eq!(state("helper.service"), Some(Enablement::Static));
        assert_eq!(state("absent.service"), Some(Enablement::NotFound));
        assert!(systemctl(&["enable", "demo.service"])
            .unwrap()
            .status
            .success());
        assert_eq!(state("demo.service"), Some(Enablement::Enabled));
        assert!(systemctl(&["mask", "helper.service"])
            .unwrap()
            .status
            .success());
        assert_eq!(state("helper.service"), Some(Enablement::Masked));
    }
}
