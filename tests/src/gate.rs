//! Whether the chroot suites can run here, and what to do when they cannot.
//!
//! Device tests need root (chroot, mounts) and Debian tools. A test that returns early and passes
//! on a machine without them would report success for something never tested, so a missing
//! prerequisite fails the test with the fix, unless the developer opts out explicitly with
//! `TEND_SKIP_CHROOT=1`; the skip is then printed.

use std::io::Write;

/// Host tools the bed runs; all come from `scripts/testbed-deps`.
const TOOLS: &[&str] = &[
    "mmdebstrap",
    "chroot",
    "tar",
    "gpg",
    "gpgconf",
    "dpkg-deb",
    "apt-ftparchive",
];

/// Call first in every test that needs a device or the apt repository:
/// `if tend_tests::skip_chroot_tests("name") { return; }`.
///
/// Returns true (after printing "skipped") when `TEND_SKIP_CHROOT=1`; panics with what is missing
/// and how to fix it when the prerequisites are absent; returns false when the test can run.
pub fn skip_chroot_tests(test: &str) -> bool {
    if std::env::var("TEND_SKIP_CHROOT").is_ok_and(|v| v == "1") {
        // Straight to the stream: the harness captures println!/eprintln! of passing tests, and a
        // skip must be visible in every run.
        let _ = writeln!(std::io::stderr(), "skipped {test}: TEND_SKIP_CHROOT=1");
        return true;
    }
    let missing = missing_prerequisites();
    if !missing.is_empty() {
        panic!(
            "{test} needs {}.\nFix: run as root after `scripts/testbed-deps`, or set \
             TEND_SKIP_CHROOT=1 to skip the chroot tests deliberately.",
            missing.join(", ")
        );
    }
    false
}

fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (chroot and mounts)".to_string());
    }
    for tool in TOOLS {
        if find_in_path(tool).is_none() {
            missing.push(format!("`{tool}` on PATH"));
        }
    }
    missing
}

pub(crate) fn find_in_path(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_is_found_and_nonsense_is_not() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("no-such-tool-tend").is_none());
    }
}
