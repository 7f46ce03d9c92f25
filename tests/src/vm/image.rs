//! The VM's base image: Debian bookworm amd64 with systemd, a kernel and initrd, Debian's
//! mender-client and the tend .deb, as an ext4 disk image, built once and cached.
//!
//! mmdebstrap builds a directory tree (as edi and other image builders do), the test bed's guest
//! files are added (see `guest`), and `mkfs.ext4 -d` turns the tree into a raw disk image: no loop
//! mounts, so it works in containers. The kernel and initrd are kept next to it, because qemu
//! boots them directly (`-kernel`/`-initrd`), without a bootloader. Every VM writes to its own
//! qcow2 overlay, so the cached image is never changed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::guest;
use crate::cache::{self, cache_dir};
use crate::run::run_ok;
use crate::treehash::hex;

/// Debian packages of the image. `minbase` plus an init system, a kernel that boots from virtio,
/// udev (virtio-serial port names), and what tend and its resources run.
const INCLUDE: &str = "systemd,systemd-sysv,udev,dbus,linux-image-amd64,initramfs-tools,\
ca-certificates,gnupg,passwd,apt-utils,procps,iproute2,mender-client";

/// Sparse size of the root filesystem: room for the packages tests install.
const IMAGE_SIZE: &str = "3G";

const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// A built image: the root filesystem and what boots it.
#[derive(Clone, Debug)]
pub struct Image {
    pub rootfs: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// The cached image holding `deb`, built first when missing or built from other inputs (another
/// .deb, other packages or guest files).
pub fn image(deb: &Path) -> Result<Image> {
    let dest = cache_dir().join("vm").join("bookworm-amd64");
    let recipe = recipe(deb)?;
    if let Some(took) = cache::get_or_build(&dest, &recipe, |tmp| build(deb, tmp))? {
        cache::log_timing("vm image bookworm-amd64 built", took);
    }
    Ok(Image {
        rootfs: dest.join("rootfs.img"),
        kernel: dest.join("vmlinuz"),
        initrd: dest.join("initrd.img"),
    })
}

/// Names everything the image depends on: the packages, the .deb's bytes, the guest files.
fn recipe(deb: &Path) -> Result<String> {
    let bytes = fs::read(deb).with_context(|| format!("reading {}", deb.display()))?;
    let mut h = Sha256::new();
    for f in guest::FILES {
        h.update(f.path);
        h.update(f.mode.to_le_bytes());
        h.update(f.content);
    }
    for unit in guest::ENABLE {
        h.update(unit);
    }
    Ok(format!(
        "vm-image-1\ninclude={INCLUDE}\nsize={IMAGE_SIZE}\ndeb={}\nguest={}\n",
        hex(&Sha256::digest(&bytes)),
        hex(&h.finalize())
    ))
}

fn build(deb: &Path, out: &Path) -> Result<()> {
    fs::create_dir_all(out)?;
    let tree = out.join("tree");
    let mirror = std::env::var("TEND_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.into());
    let deb_in_guest = "/tmp/tend.deb";
    let mut cmd = Command::new("mmdebstrap");
    cmd.args([
        "--variant=minbase",
        &format!("--include={INCLUDE}"),
        "--components=main",
        "--architectures=amd64",
        "--format=directory",
        &format!("--customize-hook=copy-in {} /tmp", deb.display()),
        // The copied file keeps its name; install it under a fixed one.
        &format!(
            "--customize-hook=mv \"$1/tmp/{}\" \"$1{deb_in_guest}\"",
            file_name(deb)?
        ),
        // apt, not dpkg: it installs the package's dependencies (openssh-client, …) too.
        &format!(
            "--customize-hook=chroot \"$1\" env DEBIAN_FRONTEND=noninteractive apt-get install \
             -y -q --no-install-recommends {deb_in_guest}"
        ),
        &format!("--customize-hook=rm -f \"$1{deb_in_guest}\""),
        // No Debian mirror on the device: everything it installs comes from the test's repos.
        r#"--customize-hook=rm -f "$1/etc/apt/sources.list" "$1"/etc/apt/sources.list.d/*"#,
        "bookworm",
    ])
    .arg(&tree)
    .arg(&mirror);
    run_ok(cmd, "mmdebstrap (vm image)", Duration::from_secs(1800))?;

    for f in guest::FILES {
        let path = tree.join(f.path.trim_start_matches('/'));
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        // /etc/resolv.conf may be a link into the build host's runtime state.
        let _ = fs::remove_file(&path);
        fs::write(&path, f.content)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(f.mode))?;
    }
    let mut enable = Command::new("systemctl");
    enable
        .arg(format!("--root={}", tree.display()))
        .arg("enable");
    enable.args(guest::ENABLE);
    run_ok(enable, "systemctl --root enable", Duration::from_secs(60))?;

    fs::copy(boot_file(&tree, "vmlinuz-")?, out.join("vmlinuz"))?;
    fs::copy(boot_file(&tree, "initrd.img-")?, out.join("initrd.img"))?;

    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-L", "root", "-d"])
        .arg(&tree)
        .arg(out.join("rootfs.img"))
        .arg(IMAGE_SIZE);
    run_ok(mkfs, "mkfs.ext4 -d (vm image)", Duration::from_secs(600))?;
    fs::remove_dir_all(&tree)?;
    Ok(())
}

fn file_name(path: &Path) -> Result<String> {
    Ok(path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy()
        .into_owned())
}

/// The one `/boot/<prefix><version>` of the tree (the kernel or its initrd).
fn boot_file(tree: &Path, prefix: &str) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(tree.join("boot"))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    if found.len() != 1 {
        bail!(
            "expected one /boot/{prefix}* in the image, found {found:?} (linux-image-amd64 and \
             initramfs-tools must be installed)"
        );
    }
    Ok(found.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipe_changes_with_the_deb() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.deb"), d.path().join("b.deb"));
        fs::write(&a, "one").unwrap();
        fs::write(&b, "two").unwrap();
        assert_ne!(recipe(&a).unwrap(), recipe(&b).unwrap());
        assert_eq!(recipe(&a).unwrap(), recipe(&a).unwrap());
    }

    #[test]
    fn boot_file_wants_exactly_one() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("boot")).unwrap();
        assert!(boot_file(d.path(), "vmlinuz-").is_err());
        fs::write(d.path().join("boot/vmlinuz-6.1.0-1-amd64"), "k").unwrap();
        assert!(boot_file(d.path(), "vmlinuz-")
            .unwrap()
            .ends_with("vmlinuz-6.1.0-1-amd64"));
        fs::write(d.path().join("boot/vmlinuz-6.1.0-2-amd64"), "k").unwrap();
        assert!(boot_file(d.path(), "vmlinuz-").is_err());
    }
}
