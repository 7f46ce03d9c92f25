//! apt-get and apt-cache, run inside the root through the host.
//!
//! Every call is unattended and conservative: no prompts, existing config files are kept
//! (confdef/confold), no recommends unless asked, and apt waits a bounded time for dpkg's lock so
//! a run never hangs behind unattended-upgrades. apt's failures are turned into errors that say
//! what to do; the two that are not the fleet repo's fault (a held lock, an interrupted dpkg) say so.
//!
//! Package lists are refreshed only when a source changed or they are older than the host's
//! limit. apt gives list files the server's Last-Modified time, so a rarely published repository
//! would look stale forever; a successful full update is therefore also recorded in
//! `/var/lib/apt/periodic/update-success-stamp`, the stamp Debian tools already use for that.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use crate::error::ResourceError;
use crate::host::Host;
use crate::platform::dpkg;

pub const LISTS: &str = "/var/lib/apt/lists";
const LISTS_LOCK: &str = "/var/lib/apt/lists/lock";
const PERIODIC: &str = "/var/lib/apt/periodic";
/// Touched by tend after a complete update (the name Ubuntu's update-notifier also uses).
const SUCCESS_STAMP: &str = "/var/lib/apt/periodic/update-success-stamp";
/// Touched by Debian's apt-daily after its own successful update.
const DAILY_STAMP: &str = "/var/lib/apt/periodic/update-stamp";
/// Touched by [`update_source`]: lists of one source were fetched alone since the last complete
/// update, so the newest list file no longer dates the others.
const PARTIAL_STAMP: &str = "/var/lib/apt/periodic/tend-source-update-stamp";

/// The options every apt-get call gets, after `apt-get <subcommand>`.
pub(crate) fn common_options(host: &Host, recommends: bool) -> Vec<String> {
    [
        "-y".to_string(),
        "-q".to_string(),
        "-o".to_string(),
        format!("DPkg::Lock::Timeout={}", host.dpkg_lock_timeout.as_secs()),
        "-o".to_string(),
        "Dpkg::Options::=--force-confold".to_string(),
        "-o".to_string(),
        "Dpkg::Options::=--force-confdef".to_string(),
        "-o".to_string(),
        format!("APT::Install-Recommends={recommends}"),
    ]
    .into()
}

/// An apt-get invocation: `subcommand`, options, then operands. `shown` in errors is the short
/// form an operator would type.
fn apt_get(
    host: &Host,
    subcommand: &str,
    extra: &[&str],
    operands: &[&str],
    recommends: bool,
) -> Result<Output, ResourceError> {
    let mut argv: Vec<String> = vec!["apt-get".into(), subcommand.into()];
    argv.extend(common_options(host, recommends));
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv.extend(operands.iter().map(|s| s.to_string()));
    let shown = std::iter::once(format!("apt-get {subcommand}"))
        .chain(operands.iter().map(|s| s.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    run(host, &argv, &shown)
}

pub(crate) fn run(host: &Host, argv: &[String], shown: &str) -> Result<Output, ResourceError> {
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    tracing::debug!(command = %host.redact(&refs.join(" ")), "running apt");
    let out = host
        .command(&refs)
        .output()
        .map_err(|e| ResourceError::other(format!("cannot run `{}`: {e}", host.redact(shown))))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(failure(host, shown, &out))
    }
}

/// The lines of apt's output that explain a failure: its errors and warnings, and dpkg's own.
fn explaining_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = Vec::new();
    for l in text.lines().map(str::trim_end) {
        if (l.starts_with("E: ") || l.starts_with("W: ") || l.starts_with("dpkg: "))
            && !lines.contains(&l)
        {
            lines.push(l);
        }
    }
    if lines.len() > 12 {
        lines.drain(..lines.len() - 12);
    }
    lines
}

/// Turns a failed apt run into an error that says what to do.
fn failure(host: &Host, shown: &str, out: &Output) -> ResourceError {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    classify(host, shown, &out.status.to_string(), &text)
}

fn classify(host: &Host, shown: &str, status: &str, text: &str) -> ResourceError {
    let errors: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("E:"))
        .collect();
    let lock = errors
        .iter()
        .find(|l| l.contains("Could not get lock"))
        .or_else(|| {
            errors.iter().find(|l| {
                l.contains("Unable to acquire the dpkg frontend lock")
                    || l.contains("Unable to lock")
            })
        });
    if let Some(line) = lock {
        let what = if line.contains("/lists") {
            "apt's package lists are"
        } else {
            "dpkg is"
        };
        return ResourceError::other(host.redact(&format!(
            "{what} locked by another process (held longer than {} s): {line}; tend will retry on its next run",
            host.dpkg_lock_timeout.as_secs()
        )));
    }
    if let Some(line) = errors.iter().find(|l| l.contains("dpkg was interrupted")) {
        return ResourceError::other(host.redact(&format!(
            "dpkg was interrupted: tend finishes it with `dpkg --configure -a` on its next run ({line})"
        )));
    }
    let lines = explaining_lines(text);
    let output = if lines.is_empty() {
        let tail: Vec<&str> = text.trim().lines().rev().take(8).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    } else {
        lines.join("\n")
    };
    ResourceError::Command {
        command: host.redact(shown),
        status: status.to_string(),
        output: host.redact(&output),
    }
}

/// True when apt-get update left some index out ("W: Failed to fetch", "Some index files failed").
fn incomplete_update(out: &Output) -> bool {
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines().any(|l| {
        l.starts_with("W: Failed to fetch")
            || l.starts_with("W: Some index files failed")
            || l.starts_with("E: ")
    })
}

/// `apt-get update` of every source. Like apt, a source that cannot be fetched only warns (its old
/// lists stay in use), so an unreachable mirror does not stop packages that are already known.
pub fn update(host: &Host) -> Result<(), ResourceError> {
    wait_for_lists_lock(host);
    let out = apt_get(host, "update", &[], &[], false)?;
    {
        let mut flags = host.flags();
        flags.apt_updated = true;
        flags.apt_sources_changed = false;
    }
    if incomplete_update(&out) {
        tracing::warn!(warnings = %host.redact(&explaining_lines(&String::from_utf8_lossy(&out.stderr)).join("; ")), "apt-get update left some sources out");
    } else if let Err(e) = touch_stamp(host) {
        tracing::warn!(error = %e, "cannot record the package list refresh in {SUCCESS_STAMP}");
    }
    Ok(())
}

/// `apt-get update` of one `.sources` file only (a device path), failing on any error, even a
/// transient one: this is how a new or changed source proves that its URIs, suites and key work,
/// without other sources' troubles being blamed on it. Other sources' lists are left alone, and
/// the package caches are not rewritten with this one source only.
pub fn update_source(host: &Host, sources_file: &str) -> Result<(), ResourceError> {
    let list = format!("Dir::Etc::SourceList={sources_file}");
    let extra = [
        "--error-on=any",
        "-o",
        &list,
        "-o",
        "Dir::Etc::SourceParts=-",
        "-o",
        "APT::Get::List-Cleanup=false",
        "-o",
        "Dir::Cache::pkgcache=",
        "-o",
        "Dir::Cache::srcpkgcache=",
    ];
    let mut argv: Vec<String> = vec!["apt-get".into(), "update".into()];
    argv.extend(common_options(host, false));
    argv.extend(extra.iter().map(|s| s.to_string()));
    wait_for_lists_lock(host);
    run(
        host,
        &argv,
        &format!("apt-get update (of {sources_file} only)"),
    )?;
    if let Err(e) = touch(host, PARTIAL_STAMP) {
        tracing::warn!(error = %e, "cannot record the partial list refresh in {PARTIAL_STAMP}");
    }
    Ok(())
}

/// apt-get update does not wait for the lists lock as apt-get install waits for dpkg's (it fails
/// at once), so tend waits for it the same bounded time, e.g. behind apt-daily's update.
fn wait_for_lists_lock(host: &Host) {
    let Ok(lock) = host.path(LISTS_LOCK) else {
        return;
    };
    let start = Instant::now();
    while dpkg::record_lock_held(&lock) && start.elapsed() < host.dpkg_lock_timeout {
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Records a complete update.
fn touch_stamp(host: &Host) -> std::io::Result<()> {
    touch(host, SUCCESS_STAMP)
}

/// Sets a stamp's time to now; creates apt's periodic directory when an image lacks it.
fn touch(host: &Host, stamp: &str) -> std::io::Result<()> {
    let dir = host.path(PERIODIC).map_err(std::io::Error::other)?;
    fs::create_dir_all(&dir)?;
    let f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(host.path(stamp).map_err(std::io::Error::other)?)?;
    f.set_modified(SystemTime::now())
}

/// The time of the last known refresh of all package lists: the OLDEST Release/InRelease file
/// (one source fetched alone, as `apt_source` does, says nothing about the others), or a stamp
/// of a complete update, whichever is newer. When a source was fetched alone after the last
/// complete update, only that update's stamp counts (the other sources' lists may be missing
/// altogether). None when there are no lists at all, or no complete update since a partial one.
pub fn lists_refreshed_at(host: &Host) -> Result<Option<SystemTime>, ResourceError> {
    let dir = host.path(LISTS)?;
    let mut oldest: Option<SystemTime> = None;
    let mut any_list = false;
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries.filter_map(Result::ok) {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if !(name.ends_with("_InRelease") || name.ends_with("_Release")) {
                    continue;
                }
                any_list = true;
                if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
                    oldest = Some(oldest.map_or(t, |o| o.min(t)));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ResourceError::io(Path::new(LISTS), e)),
    }
    if !any_list {
        // A stamp without lists (an image with its lists removed) proves nothing.
        return Ok(None);
    }
    let stamp_time = |s: &str| fs::metadata(host.path(s).ok()?).ok()?.modified().ok();
    let complete = [SUCCESS_STAMP, DAILY_STAMP]
        .into_iter()
        .filter_map(stamp_time)
        .max();
    if let Some(partial) = stamp_time(PARTIAL_STAMP) {
        if complete.is_none_or(|c| partial > c) {
            return Ok(complete);
        }
    }
    Ok(oldest.max(complete))
}

/// True when the lists must be refreshed before they are trusted: none at all, or older than
/// `max_age` as of `now`. A time in the future (a clock set back) counts as fresh.
pub fn lists_stale(refreshed: Option<SystemTime>, max_age: Duration, now: SystemTime) -> bool {
    match refreshed {
        None => true,
        Some(t) => now.duration_since(t).is_ok_and(|age| age > max_age),
    }
}

/// Runs `apt-get update` when a source changed in this run, or when the lists are stale and no
/// update ran yet in this run. Returns whether it ran.
pub fn ensure_fresh_lists(host: &Host) -> Result<bool, ResourceError> {
    let (sources_changed, updated) = {
        let f = host.flags();
        (f.apt_sources_changed, f.apt_updated)
    };
    let needed = sources_changed
        || (!updated
            && lists_stale(
                lists_refreshed_at(host)?,
                host.apt_lists_max_age,
                SystemTime::now(),
            ));
    if needed {
        update(host)?;
    }
    Ok(needed)
}

/// `apt-get install` of specs ("curl", "hello=1.0-1", "libc6:armhf"). A pinned version may be
/// older than the installed one, which apt refuses under -y without --allow-downgrades.
pub fn install(host: &Host, specs: &[&str], recommends: bool) -> Result<(), ResourceError> {
    if specs.is_empty() {
        return Ok(());
    }
    let extra: &[&str] = if specs.iter().any(|s| s.contains('=')) {
        &["--allow-downgrades"]
    } else {
        &[]
    };
    apt_get(host, "install", extra, specs, recommends)?;
    Ok(())
}

/// `apt-get install --reinstall`: unpacks again what a cut left half-installed, which
/// `dpkg --configure -a` cannot finish (dpkg flags such packages "reinstreq").
pub fn reinstall(host: &Host, names: &[&str]) -> Result<(), ResourceError> {
    if names.is_empty() {
        return Ok(());
    }
    ensure_fresh_lists(host)?;
    apt_get(host, "install", &["--reinstall"], names, false)?;
    Ok(())
}

/// `apt-get remove`, or `apt-get purge` to drop configuration files too.
pub fn remove(host: &Host, names: &[&str], purge: bool) -> Result<(), ResourceError> {
    if names.is_empty() {
        return Ok(());
    }
    apt_get(
        host,
        if purge { "purge" } else { "remove" },
        &[],
        names,
        false,
    )?;
    Ok(())
}

/// The candidate version apt would install for each name, from `apt-cache policy`. A name apt does
/// not know is missing from the map; one without a candidate maps to None.
pub fn candidates(
    host: &Host,
    names: &[&str],
) -> Result<HashMap<String, Option<String>>, ResourceError> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let mut argv: Vec<String> = vec!["apt-cache".into()];
    if host.check {
        // apt-cache rewrites a stale package cache; check mode leaves even that alone.
        argv.extend(
            [
                "-o",
                "Dir::Cache::pkgcache=",
                "-o",
                "Dir::Cache::srcpkgcache=",
            ]
            .map(String::from),
        );
    }
    argv.push("policy".into());
    argv.extend(names.iter().map(|s| s.to_string()));
    let out = run(
        host,
        &argv,
        &format!("apt-cache policy {}", names.join(" ")),
    )?;
    Ok(parse_policy(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `apt-cache policy` output: an unindented "name:" line per package (a foreign
/// architecture shows as "name:arch:"), then indented "Installed:" and "Candidate:" lines.
pub fn parse_policy(text: &str) -> HashMap<String, Option<String>> {
    let mut out = HashMap::new();
    let mut current: Option<&str> = None;
    for line in text.lines() {
        if !line.starts_with([' ', '\t']) {
            current = line.trim_end().strip_suffix(':');
            continue;
        }
        if let (Some(name), Some(v)) = (current, line.trim_start().strip_prefix("Candidate:")) {
            let v = v.trim();
            out.insert(
                name.to_string(),
                (v != "(none)" && !v.is_empty()).then(|| v.to_string()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests;
