//! Cached Debian chroot tarballs, one per suite and architecture, shared by every suite.
//!
//! Building a chroot downloads and configures ~120 packages (about half a minute on amd64, several
//! minutes under qemu), so each tarball is built once into `<cache>/chroots/<suite>-<arch>.tar`
//! and every device is a fresh copy of it. `minbase` has no init system: systemd is included so
//! units, `systemctl enable` and the service resource are real. The Debian mirror is removed from
//! the tarball's apt sources: devices only see the local test repository, so no test depends on
//! (or slows down because of) the network.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::cache::{self, cache_dir};

/// Packages added to minbase, the variant that is closest to a small device image.
const INCLUDE: &str = "systemd,systemd-sysv,dbus,ca-certificates,gnupg,passwd,apt-utils,procps";

/// Runs inside the finished chroot: no Debian mirror (tests are hermetic and offline).
const CUSTOMIZE: &str = r#"rm -f "$1/etc/apt/sources.list" "$1"/etc/apt/sources.list.d/*"#;

/// Overridable for CI machines with a nearby mirror or caching proxy.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    Bookworm,
    Trixie,
}

impl Suite {
    pub const ALL: [Suite; 2] = [Suite::Bookworm, Suite::Trixie];

    pub fn name(self) -> &'static str {
        match self {
            Suite::Bookworm => "bookworm",
            Suite::Trixie => "trixie",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
    Armhf,
}

impl Arch {
    /// The Debian architecture name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
        }
    }

    /// The binfmt_misc entry that runs this architecture's binaries (None: runs natively).
    fn binfmt(self) -> Option<&'static str> {
        match self {
            Arch::Amd64 => None,
            Arch::Arm64 => Some("qemu-aarch64"),
            Arch::Armhf => Some("qemu-arm"),
        }
    }
}

/// The cached tarball for `suite`/`arch`, built first if missing or built from another recipe.
pub fn tarball(suite: Suite, arch: Arch) -> Result<PathBuf> {
    let name = format!("{}-{}", suite.name(), arch.name());
    let dest = cache_dir().join("chroots").join(format!("{name}.tar"));
    let argv = mmdebstrap_args(suite, arch);
    let recipe = argv.join("\n");
    if let Some(took) = cache::get_or_build(&dest, &recipe, |tmp| build(arch, &argv, tmp))? {
        cache::log_timing(&format!("chroot {name} built"), took);
    }
    Ok(dest)
}

/// mmdebstrap's arguments, without the output path and mirror.
fn mmdebstrap_args(suite: Suite, arch: Arch) -> Vec<String> {
    vec![
        "--variant=minbase".into(),
        format!("--include={INCLUDE}"),
        "--components=main".into(),
        format!("--architectures={}", arch.name()),
        "--format=tar".into(),
        format!("--customize-hook={CUSTOMIZE}"),
        suite.name().into(),
    ]
}

fn build(arch: Arch, args: &[String], tmp: &std::path::Path) -> Result<()> {
    if let Some(entry) = arch.binfmt() {
        let status = std::fs::read_to_string(format!("/proc/sys/fs/binfmt_misc/{entry}"));
        if !status.is_ok_and(|s| s.starts_with("enabled")) {
            bail!(
                "building a {} chroot needs binfmt_misc entry {entry}: run scripts/testbed-deps",
                arch.name()
            );
        }
    }
    let mirror = std::env::var("TEND_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.into());
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(args).arg(tmp).arg(&mirror);
    let timeout = Duration::from_secs(if arch.binfmt().is_some() { 3600 } else { 1200 });
    crate::run::run_ok(cmd, &format!("mmdebstrap {}", args.join(" ")), timeout)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_names_suite_arch_and_packages() {
        let args = mmdebstrap_args(Suite::Trixie, Arch::Arm64);
        assert_eq!(args.last().map(String::as_str), Some("trixie"));
        assert!(args.contains(&"--architectures=arm64".to_string()));
        assert!(args.iter().any(|a| a.contains("systemd-sysv")));
    }
}
