//! Issue 9, disk and system faults on a real Debian chroot: a full disk, a read-only /etc and a
//! missing /etc/machine-id. Each must end in a clear error that names the path (or the fix),
//! change nothing half-way, leave the report readable, and converge on the next run once the
//! fault is gone. (An interrupted dpkg is the power-cut suite's: tests/tests/powercut.rs.)

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Result};
use serde_json::Value;
use tend_tests::{skip_chroot_tests, tend_binary, Arch, Device, Suite};

const FLEET: &str = "/srv/fleet";

/// A mount made for one test, undone even when the test fails.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn host(argv: &[&str], path: &Path) -> Result<()> {
    let st = Command::new(argv[0]).args(&argv[1..]).arg(path).status()?;
    ensure!(st.success(), "{argv:?} {}: {st}", path.display());
    Ok(())
}

fn device(role: &str) -> Result<Device> {
    let dev = Device::new(Suite::Bookworm, Arch::Amd64)?;
    dev.install_tend(&tend_binary()?)?;
    dev.write(
        &format!("{FLEET}/fleet.yaml"),
        "format: 1\nroles: [faults]\n",
    )?;
    dev.write(&format!("{FLEET}/devices/dev1.yaml"), "vars: {}\n")?;
    dev.write(&format!("{FLEET}/roles/faults/role.yaml"), role)?;
    Ok(dev)
}

fn apply(dev: &Device) -> Result<tend_tests::Outcome> {
    dev.tend(&["apply", "--path", FLEET, "--device", "dev1"])
}

/// The report's entry for a resource with this id, as text.
fn resource(r: &Value, id: &str) -> String {
    r["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["id"] == id)
        .map(|x| x.to_string())
        .unwrap_or_default()
}

#[test]
fn a_full_disk_fails_the_file_cleanly_and_keeps_the_old_content() -> Result<()> {
    if skip_chroot_tests("a_full_disk_fails_the_file_cleanly_and_keeps_the_old_content") {
        return Ok(());
    }
    let dev = device(
        "resources:\n  - file: /srv/small/big\n    source: big.bin\n  \
         - file: /srv/small/note\n    content: \"note\\n\"\n",
    )?;
    let big: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    dev.write(&format!("{FLEET}/roles/faults/files/big.bin"), &big)?;
    let small = dev.root().join("srv/small");
    std::fs::create_dir_all(&small)?;
    host(
        &["mount", "-t", "tmpfs", "-o", "size=1m", "tend-full"],
        &small,
    )?;
    let _mounted = Mounted(small.clone());
    dev.write("/srv/small/big", "old\n")?;

    let out = apply(&dev)?;
    out.expect_code(4)?;
    let r = dev.report()?;
    let entry = resource(&r, "/srv/small/big");
    ensure!(
        entry.contains("\"failed\"") && entry.contains("No space left on device"),
        "the file must fail with ENOSPC: {entry}\n{out}"
    );
    ensure!(
        dev.read_string("/srv/small/big")? == "old\n",
        "the old content must stay whole"
    );
    // The role stops at its first failure: what follows waits for the next run.
    ensure!(
        resource(&r, "/srv/small/note").contains("\"skipped\""),
        "{r:#}"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&small)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    ensure!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Room again: the next run converges.
    host(&["mount", "-o", "remount,size=8m"], &small)?;
    apply(&dev)?.expect_code(2)?;
    ensure!(dev.read("/srv/small/big")? == big);
    apply(&dev)?.expect_code(0)?;
    Ok(())
}

#[test]
fn a_read_only_etc_fails_clearly_and_the_run_still_reports() -> Result<()> {
    if skip_chroot_tests("a_read_only_etc_fails_clearly_and_the_run_still_reports") {
        return Ok(());
    }
    let dev = device("resources:\n  - file: /etc/tend-motd\n    content: \"hello\\n\"\n")?;
    let etc = dev.root().join("etc");
    let st = Command::new("mount")
        .arg("--bind")
        .arg(&etc)
        .arg(&etc)
        .status()?;
    ensure!(st.success(), "mount --bind {}: {st}", etc.display());
    let mounted = Mounted(etc.clone());
    host(&["mount", "-o", "remount,bind,ro"], &etc)?;

    let out = apply(&dev)?;
    out.expect_code(4)?;
    let r = dev.report()?;
    let entry = resource(&r, "/etc/tend-motd");
    ensure!(
        entry.contains("\"failed\"") && entry.contains("Read-only file system"),
        "the file must fail naming the read-only filesystem: {entry}\n{out}"
    );
    ensure!(!dev.exists("/etc/tend-motd"));

    drop(mounted);
    apply(&dev)?.expect_code(2)?;
    ensure!(dev.read_string("/etc/tend-motd")? == "hello\n");
    Ok(())
}

#[test]
fn a_missing_machine_id_without_a_configured_id_is_a_clear_error() -> Result<()> {
    if skip_chroot_tests("a_missing_machine_id_without_a_configured_id_is_a_clear_error") {
        return Ok(());
    }
    let dev = device("resources:\n  - file: /etc/tend-motd\n    content: \"hello\\n\"\n")?;
    let _ = std::fs::remove_file(dev.root().join("etc/machine-id"));
    let out = dev.tend(&["apply", "--path", FLEET])?;
    out.expect_code(1)?;
    ensure!(
        out.stderr.contains("no device id")
            && out.stderr.contains("machine-id")
            && out.stderr.contains("--device"),
        "the error must name machine-id and the fix\n{out}"
    );
    ensure!(!dev.exists("/etc/tend-motd"), "nothing may be applied");
    Ok(())
}
