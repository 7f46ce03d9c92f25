//! Booted Debian devices: a bookworm amd64 VM with systemd, the tend .deb and Debian's
//! mender-client, under qemu-system-x86_64 with TCG (no KVM needed), for the end-to-end suite.
//!
//! Chroots prove resources and runs; only a booted system proves the timer, the unit, sd_notify,
//! journald, the Mender daemon and what survives a power cut. The image is built once and cached
//! (`image`), each VM boots an overlay of it with a per-test seed (`machine`), and the host drives
//! it over a serial command channel (`agent`). The guest reaches only the ports the test forwards.

mod agent;
mod guest;
mod image;
mod machine;

pub use agent::GuestOutcome;
pub use guest::HOST_IP;
pub use image::{image, Image};
pub use machine::{Forward, Vm, BOOT_TIMEOUT};

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};

/// Host tools the VM suite needs beyond the chroot bed's (`scripts/testbed-deps`).
const TOOLS: &[&str] = &["qemu-system-x86_64", "qemu-img", "mkfs.ext4", "socat"];

/// Call first in every VM test: `if tend_tests::vm::skip_vm_tests("name") { return Ok(()); }`.
///
/// Skips (printing why) when `TEND_SKIP_VM=1` or `TEND_SKIP_CHROOT=1`, or when
/// qemu-system-x86_64 is not installed: a developer machine without it still runs every other
/// suite. Any other missing prerequisite fails with the fix, like the chroot suites.
pub fn skip_vm_tests(test: &str) -> bool {
    let skip = |why: &str| {
        // Straight to the stream: the harness captures the output of passing tests.
        let _ = writeln!(std::io::stderr(), "skipped {test}: {why}");
        true
    };
    if std::env::var("TEND_SKIP_VM").is_ok_and(|v| v == "1") {
        return skip("TEND_SKIP_VM=1");
    }
    if crate::gate::find_in_path("qemu-system-x86_64").is_none() {
        return skip("qemu-system-x86_64 is not installed (scripts/testbed-deps installs it)");
    }
    if crate::skip_chroot_tests(test) {
        return true;
    }
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| crate::gate::find_in_path(t).is_none())
        .collect();
    if !missing.is_empty() {
        panic!(
            "{test} needs {} on PATH.\nFix: run `scripts/testbed-deps` as root, or set \
             TEND_SKIP_VM=1 to skip the VM tests deliberately.",
            missing.join(", ")
        );
    }
    false
}

/// The tend .deb to put in the image: `$TEND_DEB` if set, else the amd64 package
/// `scripts/build-debs` built from the current sources.
pub fn tend_deb() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TEND_DEB") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("TEND_DEB={} is not a file", path.display());
        }
        return Ok(path);
    }
    crate::built_deb("amd64").map_err(|e| anyhow::anyhow!("{e}\n(or point TEND_DEB at a .deb)"))
}
