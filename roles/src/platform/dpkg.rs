//! dpkg's status database, read straight from the root, and Debian version ordering.
//!
//! The package resource decides from this file alone whether apt must run at all, on a Pi, every
//! few minutes, so the parser borrows from the file's text and allocates only for packages that are
//! present. dpkg writes changes to a journal (`updates/`) before merging them into `status`; the
//! journal is laid over the file as dpkg itself does, and a leftover journal means dpkg was
//! interrupted.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::ResourceError;
use crate::host::Host;

pub const STATUS: &str = "/var/lib/dpkg/status";
const UPDATES: &str = "/var/lib/dpkg/updates";
const LOCKS: [&str; 2] = ["/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledPkg {
    pub name: String,
    pub arch: String,
    pub version: String,
}

/// A package dpkg left half-way: unpacked but not configured, or worse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unfinished {
    pub name: String,
    pub arch: String,
    /// dpkg's state word, e.g. "half-configured", or "reinstreq" when dpkg flagged it broken.
    pub state: String,
}

/// What the package resource needs from the database.
///
/// Keys are apt's spelling: the bare name for the native architecture and `all`, `name:arch` for a
/// foreign architecture (multi-arch). Look names up with [`DpkgStatus::get`].
#[derive(Debug, Default)]
pub struct DpkgStatus {
    /// Configured packages: Status "install ok installed", held ones ("hold ok installed") and
    /// those with triggers pending included.
    pub installed: HashMap<String, InstalledPkg>,
    /// Removed packages whose conffiles remain ("rc"): absent, but not purged.
    pub config_files: HashSet<String>,
    pub unfinished: Vec<Unfinished>,
    /// dpkg's journal holds entries not merged into `status`: dpkg is running or was killed.
    pub journal_pending: bool,
    /// The Architecture of the `dpkg` package.
    pub native_arch: Option<String>,
}

/// The fields of one stanza the resource cares about, borrowed from the file's text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Raw<'a> {
    package: &'a str,
    arch: &'a str,
    version: &'a str,
    status: &'a str,
}

/// Iterates over stanzas, looking only at the four fields; continuation lines (a leading space or
/// tab) are skipped unread, which is where the bulk of the file (descriptions, conffiles) lives.
struct Stanzas<'a> {
    lines: Lines<'a>,
}

/// The file's lines, found with memchr: a byte-at-a-time split made this parse most of a no-op
/// run's own work on a device with 200 packages (docs/benchmarks.md).
struct Lines<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match memchr::memchr(b'\n', rest.as_bytes()) {
            Some(i) => {
                self.rest = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

impl<'a> Iterator for Stanzas<'a> {
    type Item = Raw<'a>;

    fn next(&mut self) -> Option<Raw<'a>> {
        let mut raw = Raw::default();
        let mut seen_field = false;
        for line in self.lines.by_ref() {
            match line.as_bytes().first() {
                Some(b' ' | b'\t') if line.trim().is_empty() => {}
                Some(b' ' | b'\t') => continue,
                Some(_) if line.trim_end().is_empty() => {}
                Some(_) => {
                    seen_field = true;
                    let Some((name, value)) = line.split_once(':') else {
                        continue;
                    };
                    let value = value.trim();
                    match name.len() {
                        7 if name.eq_ignore_ascii_case("Package") => raw.package = value,
                        7 if name.eq_ignore_ascii_case("Version") => raw.version = value,
                        6 if name.eq_ignore_ascii_case("Status") => raw.status = value,
                        12 if name.eq_ignore_ascii_case("Architecture") => raw.arch = value,
                        _ => {}
                    }
                    continue;
                }
                None => {}
            }
            // A blank line ends a stanza; runs of blank lines are one separator.
            if seen_field {
                return Some(raw);
            }
        }
        seen_field.then_some(raw)
    }
}

fn stanzas(text: &str) -> Stanzas<'_> {
    Stanzas {
        lines: Lines { rest: Some(text) },
    }
}

/// What one Status field ("want eflag state") means for tend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Installed,
    ConfigFiles,
    NotInstalled,
    Unfinished,
}

fn state_of(status: &str) -> (State, &str) {
    let mut words = status.split_ascii_whitespace();
    let (_want, eflag, state) = (
        words.next(),
        words.next().unwrap_or(""),
        words.next().unwrap_or(""),
    );
    if eflag == "reinstreq" {
        return (State::Unfinished, "reinstreq");
    }
    let s = match state {
        // Pending triggers are processed by dpkg on apt's next run; the package is configured.
        "installed" | "triggers-pending" | "triggers-awaited" => State::Installed,
        "config-files" => State::ConfigFiles,
        "half-installed" | "unpacked" | "half-configured" => State::Unfinished,
        _ => State::NotInstalled,
    };
    (s, state)
}

impl DpkgStatus {
    /// Parses the status file's text, then the journal's entries in order (later ones win).
    pub fn parse(status: &str, journal: &[&str]) -> DpkgStatus {
        let mut raws: Vec<Raw> = stanzas(status).filter(|r| !r.package.is_empty()).collect();
        for text in journal {
            for j in stanzas(text).filter(|r| !r.package.is_empty()) {
                match raws
                    .iter_mut()
                    .find(|r| r.package == j.package && r.arch == j.arch)
                {
                    Some(r) => *r = j,
                    None => raws.push(j),
                }
            }
        }
        let native = raws
            .iter()
            .filter(|r| r.package == "dpkg" && !r.arch.is_empty())
            .max_by_key(|r| state_of(r.status).0 == State::Installed)
            .map(|r| r.arch.to_string());
        let mut out = DpkgStatus {
            journal_pending: !journal.is_empty(),
            native_arch: native,
            ..Default::default()
        };
        for r in &raws {
            let (state, word) = state_of(r.status);
            if state == State::NotInstalled {
                continue;
            }
            let key = out.key_for(r.package, r.arch);
            match state {
                State::Installed => {
                    let pkg = InstalledPkg {
                        name: r.package.to_string(),
                        arch: r.arch.to_string(),
                        version: r.version.to_string(),
                    };
                    // Without a known native architecture, the first instance of a name takes the bare key.
                    let key = if out.native_arch.is_none() && out.installed.contains_key(&key) {
                        format!("{}:{}", r.package, r.arch)
                    } else {
                        key
                    };
                    out.installed.insert(key, pkg);
                }
                State::ConfigFiles => {
                    out.config_files.insert(key);
                }
                State::Unfinished => out.unfinished.push(Unfinished {
                    name: r.package.to_string(),
                    arch: r.arch.to_string(),
                    state: word.to_string(),
                }),
                State::NotInstalled => {}
            }
        }
        out
    }

    fn is_native(&self, arch: &str) -> bool {
        arch.is_empty() || arch == "all" || self.native_arch.as_deref().is_none_or(|n| n == arch)
    }

    fn key_for(&self, name: &str, arch: &str) -> String {
        if self.is_native(arch) {
            name.to_string()
        } else {
            format!("{name}:{arch}")
        }
    }

    /// The installed package apt would mean by `name` ("curl", "libc6:armhf", "tzdata:all").
    pub fn get(&self, name: &str) -> Option<&InstalledPkg> {
        match name.split_once(':') {
            // An `all` package belongs to every architecture, the native one included.
            Some((bare, arch)) if self.is_native(arch) => self
                .installed
                .get(bare)
                .filter(|p| p.arch == arch || p.arch == "all" || p.arch.is_empty()),
            Some(_) => self.installed.get(name),
            None => self.installed.get(name),
        }
    }

    /// True when only conffiles of `name` remain.
    pub fn has_config_files(&self, name: &str) -> bool {
        match name.split_once(':') {
            Some((bare, arch)) if self.is_native(arch) => self.config_files.contains(bare),
            _ => self.config_files.contains(name),
        }
    }

    /// Why apt cannot be used right now, if dpkg was left half-way, in words that say what to do.
    /// `lock_held` tells an interruption (nobody holds the lock) from a dpkg run in progress.
    pub fn interrupted(&self, lock_held: bool) -> Option<String> {
        let what = self.interruption()?;
        Some(if lock_held {
            format!("dpkg is busy: another process holds the dpkg lock ({what}); tend will retry on its next run")
        } else {
            format!("dpkg was interrupted ({what}): tend finishes it with `dpkg --configure -a` before it installs or removes anything")
        })
    }

    /// The unfinished packages as apt names them ("curl", "libc6:armhf").
    pub fn unfinished_names(&self) -> Vec<String> {
        self.unfinished
            .iter()
            .map(|u| self.key_for(&u.name, &u.arch))
            .collect()
    }

    /// What dpkg left half-way ("curl is half-configured, …"), or None when it finished cleanly.
    pub fn interruption(&self) -> Option<String> {
        if self.unfinished.is_empty() && !self.journal_pending {
            return None;
        }
        let mut what: Vec<String> = self
            .unfinished
            .iter()
            .take(5)
            .map(|u| {
                let arch = if self.is_native(&u.arch) {
                    String::new()
                } else {
                    format!(":{}", u.arch)
                };
                format!("{}{arch} is {}", u.name, u.state)
            })
            .collect();
        if self.unfinished.len() > 5 {
            what.push(format!("{} more", self.unfinished.len() - 5));
        }
        if what.is_empty() {
            what.push("its journal in /var/lib/dpkg/updates is not merged".to_string());
        }
        Some(what.join(", "))
    }
}

fn read_text(path: &Path, device_path: &str) -> Result<Option<String>, ResourceError> {
    match fs::read(path) {
        // dpkg writes UTF-8; an odd byte in some description must not make the database unreadable.
        Ok(bytes) => {
            Ok(Some(String::from_utf8(bytes).unwrap_or_else(|e| {
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            })))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ResourceError::io(Path::new(device_path), e)),
    }
}

/// The journal entries dpkg has not merged yet, oldest first (files named by a decimal number).
fn journal(host: &Host) -> Result<Vec<String>, ResourceError> {
    let dir = host.path(UPDATES)?;
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ResourceError::io(Path::new(UPDATES), e)),
    };
    let mut numbered: Vec<(u64, std::path::PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| name.parse().ok())??;
            Some((n, e.path()))
        })
        .collect();
    numbered.sort();
    let mut texts = Vec::with_capacity(numbered.len());
    for (_, p) in numbered {
        if let Some(t) = read_text(&p, UPDATES)? {
            texts.push(t);
        }
    }
    Ok(texts)
}

/// Reads the status database of the root, journal included.
pub fn read(host: &Host) -> Result<DpkgStatus, ResourceError> {
    let path = host.path(STATUS)?;
    let text = read_text(&path, STATUS)?.ok_or_else(|| {
        ResourceError::other(format!("{STATUS} does not exist under {}: this is not a Debian system (or dpkg is not installed)", host.root().display()))
    })?;
    let journal = journal(host)?;
    let refs: Vec<&str> = journal.iter().map(String::as_str).collect();
    Ok(DpkgStatus::parse(&text, &refs))
}

/// [`read`], shared by every package resource of a run until something changes (see
/// [`Host::forget_read_ahead`]): one parse of the status file, not one per resource.
pub fn read_shared(host: &Host) -> Result<std::sync::Arc<DpkgStatus>, ResourceError> {
    if let Some(status) = host.flags().read_ahead::<DpkgStatus>() {
        return Ok(status);
    }
    let status = std::sync::Arc::new(read(host)?);
    host.flags().keep_read_ahead(status.clone());
    Ok(status)
}

/// Finishes what an interrupted dpkg left half-way (a power cut during an install or removal):
/// unpacked packages are configured, pending triggers run, and the journal is merged. Conffiles
/// are kept as apt calls keep them, so the repair never prompts.
pub fn configure_pending(host: &Host) -> Result<(), ResourceError> {
    host.run(&[
        "dpkg",
        "--force-confdef",
        "--force-confold",
        "--configure",
        "-a",
    ])?;
    Ok(())
}

/// Installed packages, keyed as apt names them (see [`DpkgStatus`]).
pub fn installed(host: &Host) -> Result<HashMap<String, InstalledPkg>, ResourceError> {
    Ok(read(host)?.installed)
}

/// dpkg's architecture ("arm64", "armhf", "amd64"): the Architecture of the `dpkg` package, read
/// without running dpkg, so it also works for a foreign-architecture chroot.
pub fn native_architecture(host: &Host) -> Result<String, ResourceError> {
    let path = host.path(STATUS)?;
    let text = read_text(&path, STATUS)?.unwrap_or_default();
    stanzas(&text)
        .filter(|r| r.package == "dpkg" && !r.arch.is_empty())
        .max_by_key(|r| state_of(r.status).0 == State::Installed)
        .map(|r| r.arch.to_string())
        .ok_or_else(|| {
            ResourceError::other(format!(
                "no `dpkg` package in {STATUS}: cannot tell the architecture"
            ))
        })
}

/// True when a process holds dpkg's lock (apt and dpkg take POSIX record locks on these files).
/// Only asks (F_GETLK); never takes the lock.
pub fn lock_held(host: &Host) -> bool {
    LOCKS
        .iter()
        .any(|l| host.path(l).is_ok_and(|p| record_lock_held(&p)))
}

/// True when a process holds a POSIX record lock on `path` (how apt and dpkg lock their files).
pub fn record_lock_held(path: &Path) -> bool {
    fs::File::open(path).is_ok_and(|f| lock_held_on(&f))
}

fn lock_held_on(f: &fs::File) -> bool {
    // SAFETY: an all-zero flock is a valid value of this plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: the descriptor is open for the duration of the call and `fl` outlives it.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
    r == 0 && fl.l_type != libc::F_UNLCK as libc::c_short
}

#[cfg(test)]
mod tests;
