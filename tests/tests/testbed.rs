//! The test bed works: devices are real Debian systems that install from the signed local
//! repository offline, run in parallel, hash stably and are torn down even when a test panics.
//! These tests use only the bed, never tend's behaviour, so they stay meaningful while tend grows.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Result};
use tend_tests::cache::log_timing;
use tend_tests::device::ROOT;
use tend_tests::{mounts, skip_chroot_tests, AptRepo, Arch, Device, Suite};

#[test]
fn bookworm_device_installs_pinned_package_and_enables_unit_offline() -> Result<()> {
    if skip_chroot_tests("bookworm_device_installs_pinned_package_and_enables_unit_offline") {
        return Ok(());
    }
    installs_and_enables(Suite::Bookworm)
}

#[test]
fn trixie_device_installs_pinned_package_and_enables_unit_offline() -> Result<()> {
    if skip_chroot_tests("trixie_device_installs_pinned_package_and_enables_unit_offline") {
        return Ok(());
    }
    installs_and_enables(Suite::Trixie)
}

fn installs_and_enables(suite: Suite) -> Result<()> {
    let started = Instant::now();
    let repo = AptRepo::standard()?;
    tend_tests::chroot::tarball(suite, Arch::Amd64)?;
    let copy = Instant::now();
    let dev = Device::new(suite, Arch::Amd64)?;
    log_timing(
        &format!("device copy ({} amd64)", suite.name()),
        copy.elapsed(),
    );

    // The tarball ships no Debian mirror: the local repository is the only source.
    let sources = dev.run_ok(&[
        "sh",
        "-c",
        "cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true",
    ])?;
    ensure!(
        sources.stdout.trim().is_empty(),
        "unexpected apt sources: {}",
        sources.stdout
    );
    ensure!(
        repo.server().request_count() == 0,
        "requests before apt-get update"
    );

    // The signature is really checked: without the key, apt takes nothing from the repository.
    dev.use_apt_repo(&repo)?;
    std::fs::remove_file(dev.path(AptRepo::KEYRING_PATH)?)?;
    let unsigned = dev.run(&["apt-get", "update"])?;
    let unknown = dev.run(&["apt-cache", "show", "tend-hello"])?;
    ensure!(
        !unknown.success(),
        "apt used the repository without its key:\n{unsigned}\n{unknown}"
    );

    dev.use_apt_repo(&repo)?;
    dev.run_ok(&["apt-get", "update"])?;
    let fetched = repo.server().requests();
    ensure!(
        fetched
            .iter()
            .any(|r| r.path.ends_with("/dists/tend/InRelease") && r.status == 200),
        "apt did not fetch the signed InRelease: {fetched:?}"
    );
    dev.run_ok(&["apt-get", "install", "-y", "tend-hello=1.0-1"])?;
    ensure!(dev.read_string("/usr/share/tend-hello/version")? == "1.0-1\n");
    ensure!(dev.run_ok(&["tend-hello"])?.stdout == "1.0-1\n");
    let policy = dev.run_ok(&["apt-cache", "policy", "tend-hello"])?.stdout;
    ensure!(
        policy.contains("Candidate: 2.0-1"),
        "2.0-1 must be the candidate:\n{policy}"
    );

    // A unit shipped by a package is enabled for real, with no systemd running.
    dev.run_ok(&["apt-get", "install", "-y", "tend-demo-service"])?;
    ensure!(
        dev.run(&["systemctl", "is-enabled", "tend-demo.service"])?
            .stdout
            .trim()
            == "disabled"
    );
    dev.run_ok(&["systemctl", "enable", "tend-demo.service"])?;
    ensure!(dev.exists("/etc/systemd/system/multi-user.target.wants/tend-demo.service"));
    ensure!(
        dev.run(&["systemctl", "is-enabled", "tend-demo.service"])?
            .stdout
            .trim()
            == "enabled"
    );

    log_timing(&format!("smoke test ({})", suite.name()), started.elapsed());
    Ok(())
}

#[test]
fn tree_hash_is_stable_and_sees_a_write_and_the_request_log_sees_nothing() -> Result<()> {
    if skip_chroot_tests("tree_hash_is_stable_and_sees_a_write_and_the_request_log_sees_nothing") {
        return Ok(());
    }
    let repo = AptRepo::standard()?;
    let dev = Device::bookworm()?;
    dev.use_apt_repo(&repo)?;
    let hashing = Instant::now();
    let first = dev.snapshot(&[])?;
    log_timing("tree snapshot (bookworm amd64)", hashing.elapsed());
    let hashing = Instant::now();
    let second = dev.snapshot(&[])?;
    log_timing(
        "tree snapshot again, cached (bookworm amd64)",
        hashing.elapsed(),
    );
    ensure!(
        first.len() > 5000,
        "a Debian tree has thousands of entries, got {}",
        first.len()
    );
    second.assert_unchanged_since(&first);
    ensure!(first.hash() == dev.tree_hash(&[])?);

    // Reading files and running a read-only command change nothing.
    dev.read("/etc/os-release")?;
    dev.run_ok(&["dpkg-query", "-W", "dpkg"])?;
    dev.snapshot(&[])?.assert_unchanged_since(&first);

    dev.write("/etc/motd", "changed by the bed\n")?;
    let after = dev.snapshot(&[])?;
    ensure!(after.hash() != first.hash());
    let changes = after.changes_since(&first);
    ensure!(
        changes.iter().any(|c| c.contains("/etc/motd")),
        "{changes:?}"
    );
    ensure!(
        dev.tree_hash(&["/etc/motd"])? != first.hash(),
        "the write touched /etc's mtime too"
    );

    // Runtime paths are excluded: /tmp and /run churn without changing the hash.
    dev.write("/tmp/scratch", "x")?;
    dev.write("/run/scratch", "x")?;
    ensure!(dev.tree_hash(&[])? == after.hash());
    ensure!(
        repo.server().request_count() == 0,
        "nothing in this test talks to the repository"
    );
    Ok(())
}

#[test]
fn devices_are_independent_and_run_in_parallel() -> Result<()> {
    if skip_chroot_tests("devices_are_independent_and_run_in_parallel") {
        return Ok(());
    }
    let workers: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || -> Result<(PathBuf, String)> {
                let dev = Device::bookworm()?;
                dev.write("/etc/whoami", format!("device {i}\n"))?;
                dev.run_ok(&["useradd", "--system", &format!("bed{i}")])?;
                let users = dev.read_string("/etc/passwd")?;
                Ok((dev.root().to_path_buf(), users))
            })
        })
        .collect();
    let mut roots = Vec::new();
    for (i, w) in workers.into_iter().enumerate() {
        let (root, passwd) = w.join().expect("device thread panicked")?;
        ensure!(passwd.contains(&format!("bed{i}:")));
        ensure!(
            !passwd.contains(&format!("bed{}:", 1 - i)),
            "device {i} saw the other's user"
        );
        roots.push(root);
    }
    ensure!(roots[0] != roots[1]);
    for root in &roots {
        ensure!(
            mounts::mounts_under(root)?.is_empty(),
            "{} still mounted",
            root.display()
        );
        ensure!(!root.exists(), "{} not removed", root.display());
    }
    Ok(())
}

#[test]
fn a_panicking_test_still_unmounts_and_removes_its_device() -> Result<()> {
    if skip_chroot_tests("a_panicking_test_still_unmounts_and_removes_its_device") {
        return Ok(());
    }
    let root = std::sync::Mutex::new(None::<PathBuf>);
    let leftover = std::sync::Mutex::new(None::<std::process::Child>);
    let outcome = std::panic::catch_unwind(|| {
        let dev = Device::bookworm().expect("device");
        *root.lock().unwrap() = Some(dev.root().to_path_buf());
        assert!(!mounts::mounts_under(dev.root()).unwrap().is_empty());
        // A process left running inside must not pin the mounts.
        let child = dev.command(&["sleep", "300"]).spawn().expect("spawn");
        // Wait (bounded) until the child has entered the chroot: teardown finds processes by
        // their root directory, and `chroot` may not have switched yet on a loaded machine.
        let proc_root = PathBuf::from(format!("/proc/{}/root", child.id()));
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_link(&proc_root).ok().as_deref() != Some(dev.root())
            && Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        *leftover.lock().unwrap() = Some(child);
        panic!("test failure inside a device");
    });
    ensure!(outcome.is_err());
    let mut child = leftover.into_inner().unwrap().expect("process was started");
    let status = child.wait()?;
    ensure!(
        !status.success(),
        "the leftover process was killed, not left to finish: {status}"
    );
    let root = root.into_inner().unwrap().expect("device was created");
    ensure!(
        mounts::mounts_under(&root)?.is_empty(),
        "still mounted after panic"
    );
    ensure!(!root.exists(), "device left behind after panic");
    Ok(())
}

#[test]
fn tend_is_installed_and_run_inside_and_outside_with_root_argument() -> Result<()> {
    if skip_chroot_tests("tend_is_installed_and_run_inside_and_outside_with_root_argument") {
        return Ok(());
    }
    let dev = Device::bookworm()?;
    let tools = tempfile::tempdir()?;
    let fake = tools.path().join("tend");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"argv: $*\"\necho \"path: $PATH\"\nexit 3\n",
    )?;
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;

    // Inside: a chroot, so the binary sees the device as /.
    dev.install_tend(&fake)?;
    let inside = dev.tend(&["check", "--diff"])?;
    ensure!(inside.code() == Some(3), "{inside}");
    ensure!(
        inside.stdout.starts_with("argv: check --diff\n"),
        "{inside}"
    );
    ensure!(
        inside
            .stdout
            .contains("\npath: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"),
        "the device's clean environment, not the test's: {inside}"
    );

    // Outside: the host binary gets `--root <root>` appended, or where ROOT is.
    let root = dev.root().display().to_string();
    let appended = dev.tend_outside(&fake, &["apply", "--check"])?;
    ensure!(
        appended
            .stdout
            .starts_with(&format!("argv: apply --check --root {root}\n")),
        "{appended}"
    );
    let placed = dev.tend_outside(&fake, &["--root", ROOT, "status"])?;
    ensure!(
        placed
            .stdout
            .starts_with(&format!("argv: --root {root} status\n")),
        "{placed}"
    );

    // The real binary under test is found and copied in (its behaviour is other suites' job).
    let real = tend_tests::tend_binary()?;
    dev.install_tend(&real)?;
    ensure!(same_bytes(&real, &dev.path("/usr/bin/tend")?)?);
    Ok(())
}

fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    Ok(std::fs::read(a)? == std::fs::read(b)?)
}
