//! Issue 14, findings 2 and 7: what a hostile local user can do where tend, as root, writes. In a
//! Debian chroot an unprivileged `kiosk` owns /home/kiosk, and tend manages
//! /home/kiosk/bin/kiosk.sh. The user swaps /home/kiosk/bin for a symlink to /etc/profile.d:
//! tend must refuse to follow it (naming the link, its owner and the fix) for a file, for
//! `state: absent` and for pruning, and /etc/profile.d must get or lose nothing. A fifo planted at
//! the temp name tend used to pick (`.<name>.tend-<pid>.tmp`) must not block a run, and root-owned
//! links in parents (merged-usr's /lib -> usr/lib) keep working.

use std::time::Duration;

use anyhow::{ensure, Result};
use serde_json::Value;
use tend_tests::device::TEND_PATH;
use tend_tests::{skip_chroot_tests, tend_binary, Arch, Device, Outcome, Suite};

const FLEET: &str = "/srv/fleet";
const SCRIPT: &str = "/home/kiosk/bin/kiosk.sh";
const OUTSIDE: &str = "/etc/profile.d/kiosk.sh";
const ROOTS_OWN: &str = "# root's own profile snippet\n";

/// A device with the `kiosk` user, its home, and a fleet whose one role is `role`.
fn device(fleet: &str, role: &str) -> Result<Device> {
    let mut dev = Device::new(Suite::Bookworm, Arch::Amd64)?;
    // A run that blocks (a fifo) must fail the test, not hang it.
    dev.set_timeout(Duration::from_secs(120));
    dev.install_tend(&tend_binary()?)?;
    dev.run_ok(&[
        "useradd",
        "--create-home",
        "--home-dir",
        "/home/kiosk",
        "kiosk",
    ])?;
    as_kiosk(&dev, "mkdir /home/kiosk/bin")?;
    dev.write(&format!("{FLEET}/fleet.yaml"), fleet)?;
    dev.write(&format!("{FLEET}/devices/dev1.yaml"), "vars: {}\n")?;
    set_role(&dev, role)?;
    Ok(dev)
}

fn set_role(dev: &Device, role: &str) -> Result<()> {
    dev.write(&format!("{FLEET}/roles/kiosk/role.yaml"), role)
}

/// Runs a shell script as the unprivileged user, as a local attacker would.
fn as_kiosk(dev: &Device, script: &str) -> Result<Outcome> {
    dev.run_ok(&[
        "setpriv",
        "--reuid=kiosk",
        "--regid=kiosk",
        "--init-groups",
        "sh",
        "-ec",
        script,
    ])
}

/// The user's swap: their `bin` becomes a link to /etc/profile.d.
fn swap_bin_for_profile_d(dev: &Device) -> Result<()> {
    as_kiosk(
        dev,
        "rm -rf /home/kiosk/bin && ln -s /etc/profile.d /home/kiosk/bin",
    )?;
    Ok(())
}

fn apply(dev: &Device) -> Result<Outcome> {
    dev.tend(&["apply", "--path", FLEET, "--device", "dev1"])
}

/// The report entry's error for the resource with this id.
fn error_of(dev: &Device, id: &str) -> Result<String> {
    let r: Value = dev.report()?;
    Ok(r["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["id"] == id)
        .and_then(|x| x["error"].as_str())
        .unwrap_or_default()
        .to_string())
}

/// The refusal names the path, the link and where it points, its owner by name, and the fix.
fn ensure_refused(dev: &Device, out: &Outcome, code: i32) -> Result<()> {
    out.expect_code(code)?;
    let uid = dev
        .run_ok(&["id", "-u", "kiosk"])?
        .stdout
        .trim()
        .to_string();
    let want = format!(
        "{SCRIPT}: its parent /home/kiosk/bin is a symlink (-> /etc/profile.d) owned by kiosk (uid {uid}), not by root"
    );
    let error = error_of(dev, SCRIPT)?;
    ensure!(error.contains(&want), "report error {error:?}\n{out}");
    ensure!(
        error.contains("chown -h root:root /home/kiosk/bin"),
        "{error}"
    );
    ensure!(
        out.stdout.contains(&want) || out.stderr.contains(&want),
        "{out}"
    );
    Ok(())
}

const FILE_ROLE: &str =
    "resources:\n  - file: /home/kiosk/bin/kiosk.sh\n    content: \"echo kiosk\\n\"\n    owner: kiosk\n    mode: \"0755\"\n";

#[test]
fn user_symlink_swapped_in_for_a_parent_is_refused() -> Result<()> {
    if skip_chroot_tests("user_symlink_swapped_in_for_a_parent_is_refused") {
        return Ok(());
    }
    let dev = device("format: 1\nroles: [kiosk]\n", FILE_ROLE)?;
    apply(&dev)?.expect_code(2)?;
    ensure!(dev.read_string(SCRIPT)? == "echo kiosk\n");

    swap_bin_for_profile_d(&dev)?;
    let out = apply(&dev)?;
    ensure_refused(&dev, &out, 4)?;
    ensure!(
        !dev.exists(OUTSIDE),
        "tend wrote through the user's link\n{out}"
    );
    let listing = dev.run_ok(&["ls", "-A", "/etc/profile.d"])?.stdout;
    ensure!(
        !listing.contains("kiosk") && !listing.contains(".tend-"),
        "{listing}"
    );

    // The user puts a real directory back: tend manages the file there again.
    as_kiosk(&dev, "rm /home/kiosk/bin && mkdir /home/kiosk/bin")?;
    apply(&dev)?.expect_code(2)?;
    ensure!(dev.read_string(SCRIPT)? == "echo kiosk\n");
    Ok(())
}

#[test]
fn user_symlink_in_a_parent_does_not_let_absent_delete_outside() -> Result<()> {
    if skip_chroot_tests("user_symlink_in_a_parent_does_not_let_absent_delete_outside") {
        return Ok(());
    }
    let role = "resources:\n  - file: /home/kiosk/bin/kiosk.sh\n    state: absent\n";
    let dev = device("format: 1\nroles: [kiosk]\n", role)?;
    dev.write(OUTSIDE, ROOTS_OWN)?;
    swap_bin_for_profile_d(&dev)?;
    let out = apply(&dev)?;
    ensure_refused(&dev, &out, 4)?;
    ensure!(dev.read_string(OUTSIDE)? == ROOTS_OWN, "{out}");
    Ok(())
}

#[test]
fn user_symlink_in_a_parent_does_not_let_pruning_delete_outside() -> Result<()> {
    if skip_chroot_tests("user_symlink_in_a_parent_does_not_let_pruning_delete_outside") {
        return Ok(());
    }
    let dev = device("format: 1\nroles: [kiosk]\nprune: true\n", FILE_ROLE)?;
    apply(&dev)?.expect_code(2)?;
    dev.write(OUTSIDE, ROOTS_OWN)?;
    // The file is no longer declared: pruning removes it, through the swapped parent if let.
    set_role(
        &dev,
        "resources:\n  - file: /etc/kiosk-marker\n    content: \"x\\n\"\n",
    )?;
    swap_bin_for_profile_d(&dev)?;
    let out = apply(&dev)?;
    // 6: the marker was created, the prune failed.
    ensure_refused(&dev, &out, 6)?;
    ensure!(
        dev.read_string(OUTSIDE)? == ROOTS_OWN,
        "pruning deleted it\n{out}"
    );
    Ok(())
}

#[test]
fn fifo_at_predictable_temp_name_does_not_block_the_run() -> Result<()> {
    if skip_chroot_tests("fifo_at_predictable_temp_name_does_not_block_the_run") {
        return Ok(());
    }
    let role = "resources:\n  - file: /home/kiosk/bin/kiosk.sh\n    content: \"echo kiosk\\n\"\n  \
                - file: /home/kiosk/bin/kiosk-link\n    state: link\n    target: kiosk.sh\n";
    let dev = device("format: 1\nroles: [kiosk]\n", role)?;
    // `exec` keeps the shell's pid, so the fifos sit exactly where the old names would be, in
    // the user's directory and in tend's state directory; more at the pids around it.
    let script = format!(
        "for n in kiosk.sh kiosk-link; do \
           for p in $$ $(($$+1)) $(($$+2)); do \
             setpriv --reuid=kiosk --regid=kiosk --init-groups mkfifo /home/kiosk/bin/.$n.tend-$p.tmp; \
           done; \
         done; \
         mkdir -p /var/lib/tend; \
         for n in report.json status.json; do mkfifo /var/lib/tend/.$n.tend-$$.tmp; done; \
         exec {TEND_PATH} apply --path {FLEET} --device dev1"
    );
    let started = std::time::Instant::now();
    let out = dev.run(&["sh", "-c", &script])?;
    ensure!(
        started.elapsed() < Duration::from_secs(100),
        "the run took {:?}",
        started.elapsed()
    );
    out.expect_code(2)?;
    ensure!(dev.read_string(SCRIPT)? == "echo kiosk\n", "{out}");
    let link = dev
        .run_ok(&["readlink", "/home/kiosk/bin/kiosk-link"])?
        .stdout;
    ensure!(link.trim() == "kiosk.sh", "{link}");
    Ok(())
}

#[test]
fn root_owned_merged_usr_links_in_parents_still_work() -> Result<()> {
    if skip_chroot_tests("root_owned_merged_usr_links_in_parents_still_work") {
        return Ok(());
    }
    let role = "resources:\n  - file: /lib/tend-local-user/x.conf\n    content: \"x\\n\"\n";
    let dev = device("format: 1\nroles: [kiosk]\n", role)?;
    let lib = dev.run_ok(&["readlink", "/lib"])?.stdout;
    ensure!(
        lib.trim() == "usr/lib",
        "the chroot is merged-usr: /lib -> {lib}"
    );
    apply(&dev)?.expect_code(2)?;
    ensure!(dev.read_string("/usr/lib/tend-local-user/x.conf")? == "x\n");
    apply(&dev)?.expect_code(0)?;
    set_role(
        &dev,
        "resources:\n  - file: /lib/tend-local-user/x.conf\n    state: absent\n",
    )?;
    apply(&dev)?.expect_code(2)?;
    ensure!(!dev.exists("/usr/lib/tend-local-user/x.conf"));
    Ok(())
}
