//! Inhibitors: an application in the middle of critical work holds off restarts and reboots.
//!
//! Two kinds of holder are seen, both read through the managed root, so a chroot test sees its
//! own: a lock file `/run/tend/inhibit.d/NAME.lock` that the application holds with an exclusive
//! flock (it defers handlers, which are how tend restarts and reloads things, and reboots), and a
//! systemd-logind inhibitor lock on `shutdown` in block mode (it defers reboots), read from the
//! records logind keeps in `/run/systemd/inhibit/`. tend never creates, truncates or writes a lock
//! file, opens it without following a symlink and without blocking, and takes only a shared lock
//! for the instant of the probe; anything else a local user plants there (a symlink, a FIFO, a
//! directory) is ignored with a warning, never followed or waited on.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use tend_roles::printable::printable;
use tend_roles::rootwalk::{self, Missing};

/// Where applications put their lock files (device path).
pub const LOCK_DIR: &str = "/run/tend/inhibit.d";
/// Where systemd-logind keeps one record per inhibitor (device path).
pub const LOGIND_DIR: &str = "/run/systemd/inhibit";

/// At most this much of a lock file is read for its first line.
const FIRST_LINE_MAX: u64 = 256;

/// Who holds something off, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The lock file's stem, or logind's WHO=.
    pub name: String,
    /// The lock file's first line, or logind's WHY=.
    pub why: Option<String>,
}

impl Holder {
    /// "app-update (flashing the modem)".
    pub fn describe(&self) -> String {
        match &self.why {
            Some(w) => format!("{} ({w})", self.name),
            None => self.name.clone(),
        }
    }
}

/// What is held off right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inhibitors {
    /// Holders that defer handlers (restarts, reloads).
    pub restarts: Vec<Holder>,
    /// Holders that defer reboots.
    pub reboots: Vec<Holder>,
    /// Entries ignored because they are not what a holder puts there.
    pub warnings: Vec<String>,
}

impl Inhibitors {
    /// The holders as one phrase, or None when nothing is held.
    fn phrase(holders: &[Holder]) -> Option<String> {
        (!holders.is_empty()).then(|| {
            holders
                .iter()
                .map(Holder::describe)
                .collect::<Vec<_>>()
                .join(", ")
        })
    }

    pub fn restart_holder(&self) -> Option<String> {
        Self::phrase(&self.restarts)
    }

    pub fn reboot_holder(&self) -> Option<String> {
        Self::phrase(&self.reboots)
    }
}

/// Looks at both kinds of holder under `root`.
pub fn probe(root: &Path) -> Inhibitors {
    let mut found = Inhibitors::default();
    for entry in entries(root, LOCK_DIR, &mut found.warnings) {
        let Some(stem) = entry.strip_suffix(".lock") else {
            continue;
        };
        let path = format!("{LOCK_DIR}/{entry}");
        match lock_file(root, &path) {
            Ok(Some(why)) => {
                let h = Holder {
                    name: printable(stem).into_owned(),
                    why,
                };
                found.restarts.push(h.clone());
                found.reboots.push(h);
            }
            Ok(None) => {}
            Err(e) => found
                .warnings
                .push(format!("inhibitor {path} ignored: {e}")),
        }
    }
    for entry in entries(root, LOGIND_DIR, &mut found.warnings) {
        if entry.ends_with(".ref") {
            continue; // logind's FIFO beside each record
        }
        let path = format!("{LOGIND_DIR}/{entry}");
        let Ok(Some(text)) = regular_text(root, &path, 64 * 1024) else {
            continue;
        };
        if let Some(h) = logind_blocks_shutdown(&text) {
            found.reboots.push(h);
        }
    }
    found
}

/// The names in a directory under the root, sorted; a missing directory has none.
fn entries(root: &Path, dir: &str, warnings: &mut Vec<String>) -> Vec<String> {
    let opened = match rootwalk::open_parent(root, dir, Missing::Fail) {
        Ok(p) => p.open(true),
        Err(rootwalk::WalkError::MissingParent { .. }) => return Vec::new(),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    };
    let dirfd = match opened {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warnings.push(format!("inhibitors in {dir} not read: {e}"));
            return Vec::new();
        }
    };
    let mut names: Vec<String> = rootwalk::entry_names(&dirfd)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// Opens a regular file under the root without following a symlink or blocking on a FIFO.
fn open_regular(root: &Path, path: &str) -> std::io::Result<Option<File>> {
    let parent = rootwalk::open_parent(root, path, Missing::Fail)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let file = match parent.open(false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(std::io::Error::other("a symlink, not a lock file"))
        }
        Err(e) => return Err(e),
    };
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(std::io::Error::other(format!(
            "{what}, not a lock file; an application's lock is a regular file"
        )));
    }
    Ok(Some(file))
}

fn regular_text(root: &Path, path: &str, max: u64) -> std::io::Result<Option<String>> {
    let Some(f) = open_regular(root, path)? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Whether the lock file is held (its first line, if any, as Some(why)); None when it is free.
fn lock_file(root: &Path, path: &str) -> std::io::Result<Option<Option<String>>> {
    let Some(f) = open_regular(root, path)? else {
        return Ok(None);
    };
    // SAFETY: flock on an fd we own; a shared, non-blocking lock changes nothing for a holder of
    // an exclusive one and is dropped when the file is closed below.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(None);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(err);
    }
    let mut buf = Vec::new();
    (&f).take(FIRST_LINE_MAX).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let first = text.lines().next().unwrap_or("").trim();
    Ok(Some(
        (!first.is_empty()).then(|| printable(first).into_owned()),
    ))
}

/// A logind record (`WHAT=shutdown:sleep`, `MODE=block`, `WHO=`, `WHY=`) that blocks shutdown.
fn logind_blocks_shutdown(text: &str) -> Option<Holder> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(unquote)
    };
    let what = field("WHAT")?;
    if !what.split(':').any(|w| w == "shutdown") {
        return None;
    }
    // A record without MODE= is a block (logind's own default when it loads one).
    let mode = field("MODE").unwrap_or_else(|| "block".into());
    if mode != "block" && mode != "block-weak" {
        return None;
    }
    let name = field("WHO").filter(|w| !w.is_empty());
    Some(Holder {
        name: printable(&name.unwrap_or_else(|| "a logind inhibitor".into())).into_owned(),
        why: field("WHY")
            .filter(|w| !w.is_empty())
            .map(|w| printable(&w).into_owned()),
    })
}

/// Undoes logind's two escapes: the env-file quoting, then C escapes (`\\`, `\"`, `\n`, `\xNN`).
fn unquote(v: &str) -> String {
    let v = v.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .map(|s| unescape(s, false))
        .unwrap_or_else(|| v.to_string());
    unescape(&v, true)
}

fn unescape(s: &str, c: bool) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some('n') if c => out.push('\n'),
            Some('t') if c => out.push('\t'),
            Some('x') if c => {
                let hex: String = chars.by_ref().take(2).collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(b) => out.push(char::from(b)),
                    Err(_) => out.push_str(&hex),
                }
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// "24h", "90m", "45s": a deferral's length for messages.
pub fn human(secs: u64) -> String {
    match secs {
        s if s >= 3600 && (s % 3600) / 60 == 0 => format!("{}h", s / 3600),
        s if s >= 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
#[path = "inhibit/tests.rs"]
mod tests;
