//! Issue #2's acceptance, on real Debian chroots: one apply converges a device from the fixture
//! fleet (tests/fixtures/apply-fleet) through real apt, dpkg, useradd and systemctl; a second
//! apply changes nothing and runs no apt-get; `--check` leaves the root byte-identical; handlers
//! run exactly once and survive a failed run; a held dpkg lock fails cleanly; local vars files
//! cannot override reviewed config; secrets never leak.

use std::fs;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use tend_tests::deb::DebSpec;
use tend_tests::reports::{changed, with_outcome};
use tend_tests::{
    copy_tree, skip_chroot_tests, tend_binary, AptRepo, Arch, Device, Outcome, Suite,
};

const SECRET: &str = "s3cret-token-9f2c";
const FLEET: &str = "/srv/fleet";
/// Parts of the tree a run may not be judged by: kernel filesystems and scratch space.
const VOLATILE: &[&str] = &["/proc", "/sys", "/dev", "/run", "/tmp"];
/// Logs the apt-get wrapper appends each invocation to.
const APT_LOG: &str = "/var/log/apt-get-calls.log";

struct Bed {
    dev: Device,
    _repo: AptRepo,
}

impl Bed {
    fn new(suite: Suite) -> Result<Bed> {
        let repo = AptRepo::standard()?;
        let dev = Device::new(suite, Arch::Amd64)?;
        dev.install_tend(&tend_binary()?)?;
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/apply-fleet");
        copy_tree(&fixture, &dev.path(FLEET)?)?;
        dev.write(
            &format!("{FLEET}/roles/repo/files/tend-test.asc"),
            repo.key_armored()?,
        )?;
        dev.write(
            "/etc/tend/vars.d/test.yaml",
            format!("apt_url: {}\nsite_token: {SECRET}\n", repo.url()),
        )?;
        dev.write("/etc/acme/obsolete", "left over from an older release\n")?;
        // Count apt-get invocations: the real one is diverted, a wrapper logs and execs it.
        dev.log_calls("/usr/bin/apt-get", APT_LOG)?;
        Ok(Bed { dev, _repo: repo })
    }

    fn tend(&self, args: &[&str]) -> Result<Outcome> {
        let mut argv = args.to_vec();
        argv.extend(["--path", FLEET, "--device", "dev1"]);
        self.dev.tend(&argv)
    }

    fn report(&self) -> Result<Value> {
        Ok(serde_json::from_slice(
            &self.dev.read("/var/lib/tend/report.json")?,
        )?)
    }

    fn lines(&self, path: &str) -> usize {
        self.dev
            .read_string(path)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn edit(&self, path: &str, from: &str, to: &str) -> Result<()> {
        let full = format!("{FLEET}/{path}");
        let text = self.dev.read_string(&full)?;
        ensure!(text.contains(from), "{full} does not contain {from:?}");
        self.dev.write(&full, text.replace(from, to))
    }
}

fn expect_code(out: &Outcome, code: i32) -> Result<()> {
    ensure!(out.code() == Some(code), "expected exit {code}\n{out}");
    Ok(())
}

fn dpkg_version(dev: &Device, pkg: &str) -> Option<String> {
    let out = dev
        .run(&["dpkg-query", "-W", "-f=${Status} ${Version}", pkg])
        .ok()?;
    let text = out.stdout.trim().to_string();
    text.strip_prefix("install ok installed ")
        .map(str::to_string)
}

#[test]
fn bookworm_first_apply_converges_and_second_changes_nothing() -> Result<()> {
    if skip_chroot_tests("bookworm_first_apply_converges_and_second_changes_nothing") {
        return Ok(());
    }
    first_apply_then_noop(Suite::Bookworm)
}

#[test]
fn trixie_first_apply_converges_and_second_changes_nothing() -> Result<()> {
    if skip_chroot_tests("trixie_first_apply_converges_and_second_changes_nothing") {
        return Ok(());
    }
    first_apply_then_noop(Suite::Trixie)
}

fn first_apply_then_noop(suite: Suite) -> Result<()> {
    let bed = Bed::new(suite)?;
    let dev = &bed.dev;
    let first = bed.tend(&["apply", "--diff"])?;
    expect_code(&first, 2)?;

    // apt source and keyring; packages pinned and latest; no recommends.
    ensure!(dev
        .read_string("/etc/apt/sources.list.d/tend-test.sources")?
        .contains("Signed-By: /etc/apt/keyrings/tend-test.asc"));
    ensure!(dev.exists("/etc/apt/keyrings/tend-test.asc"));
    ensure!(
        dpkg_version(dev, "tend-hello").as_deref() == Some("1.0-1"),
        "pinned version\n{first}"
    );
    ensure!(
        dpkg_version(dev, "tend-tool").as_deref() == Some("1.0-1"),
        "latest\n{first}"
    );
    ensure!(dpkg_version(dev, "tend-with-recommends").is_some());
    ensure!(
        dpkg_version(dev, "tend-recommended").is_none(),
        "recommends are off by default"
    );

    // Files from content, source and template (with a device var), a directory, a link, a removal.
    ensure!(dev.read_string("/etc/acme/content.conf")? == "site=lab\nlab=lab-a\n");
    ensure!(dev
        .read_string("/etc/acme/source.conf")?
        .contains("mode=source"));
    let greeting = dev.read_string("/etc/acme/greeting")?;
    ensure!(
        greeting == format!("hello from lab-a (dev1, {})\n", suite.name()),
        "{greeting:?}"
    );
    ensure!(dev.path("/etc/acme/cache")?.is_dir());
    ensure!(
        fs::read_link(dev.root().join("etc/acme/current"))? == Path::new("/etc/acme/content.conf")
    );
    ensure!(!dev.exists("/etc/acme/obsolete"));
    use std::os::unix::fs::PermissionsExt;
    ensure!(
        fs::metadata(dev.path("/etc/acme/source.conf")?)?
            .permissions()
            .mode()
            & 0o7777
            == 0o640
    );

    // A user, an enabled service, a guarded command run once, a handler run once.
    let passwd = dev.read_string("/etc/passwd")?;
    ensure!(
        passwd
            .lines()
            .any(|l| l.starts_with("acme:") && l.ends_with(":/var/lib/acme:/usr/sbin/nologin")),
        "{passwd}"
    );
    ensure!(
        dev.root()
            .join("etc/systemd/system/multi-user.target.wants/tend-demo.service")
            .is_symlink(),
        "enabled\n{first}"
    );
    ensure!(bed.lines("/var/log/acme-once.log") == 1);
    ensure!(bed.lines("/var/log/acme-handler.log") == 1);

    // The secret reached the device but nothing tend printed or wrote about it.
    ensure!(dev.read_string("/etc/acme/token")? == format!("token={SECRET}\n"));
    let report_text = dev.read_string("/var/lib/tend/report.json")?;
    for (what, text) in [
        ("stdout", &first.stdout),
        ("stderr", &first.stderr),
        ("report", &report_text),
    ] {
        ensure!(
            !text.contains(SECRET),
            "the secret leaked into {what}:\n{text}"
        );
    }
    ensure!(
        first
            .stdout
            .contains("content hidden: it contains a secret value"),
        "{first}"
    );

    // The second apply: nothing changes, exit 0, no apt-get at all.
    dev.write(APT_LOG, "")?;
    let second = bed.tend(&["apply"])?;
    expect_code(&second, 0)?;
    let report = bed.report()?;
    ensure!(report["counts"]["changed"] == 0, "{report:#}");
    ensure!(report["result"] == "ok");
    ensure!(changed(&report).is_empty());
    ensure!(
        dev.read_string(APT_LOG)?.is_empty(),
        "apt-get ran on a no-op run: {}",
        dev.read_string(APT_LOG)?
    );
    ensure!(
        bed.lines("/var/log/acme-once.log") == 1,
        "the guarded command ran twice"
    );
    ensure!(
        bed.lines("/var/log/acme-handler.log") == 1,
        "the handler ran without a change"
    );
    Ok(())
}

#[test]
fn check_mode_prints_the_diff_and_leaves_the_root_byte_identical() -> Result<()> {
    if skip_chroot_tests("check_mode_prints_the_diff_and_leaves_the_root_byte_identical") {
        return Ok(());
    }
    let bed = Bed::new(Suite::Bookworm)?;
    // On an unconverged device: every kind of change is planned, none is made.
    let before = bed.dev.snapshot(VOLATILE)?;
    let check = bed.tend(&["check"])?;
    expect_code(&check, 2)?;
    ensure!(
        check.stdout.contains("+hello from lab-a"),
        "the diff is shown\n{check}"
    );
    ensure!(check.stdout.contains("would"), "{check}");
    let after = bed.dev.snapshot(VOLATILE)?;
    ensure!(
        before.hash() == after.hash(),
        "check mode changed the root: {:?}",
        after.changes_since(&before)
    );

    // And on a converged device with a changed repo.
    expect_code(&bed.tend(&["apply"])?, 2)?;
    bed.edit("devices/dev1.yaml", "greeting: hello", "greeting: bonjour")?;
    let before = bed.dev.snapshot(VOLATILE)?;
    let check = bed.tend(&["apply", "--check", "--diff"])?;
    expect_code(&check, 2)?;
    ensure!(
        check.stdout.contains("-hello from lab-a") && check.stdout.contains("+bonjour from lab-a"),
        "{check}"
    );
    let after = bed.dev.snapshot(VOLATILE)?;
    ensure!(
        before.hash() == after.hash(),
        "check mode changed the root: {:?}",
        after.changes_since(&before)
    );
    Ok(())
}

#[test]
fn one_template_var_rewrites_one_file_and_its_handler_survives_a_failed_run() -> Result<()> {
    if skip_chroot_tests("one_template_var_rewrites_one_file_and_its_handler_survives_a_failed_run")
    {
        return Ok(());
    }
    let bed = Bed::new(Suite::Bookworm)?;
    expect_code(&bed.tend(&["apply"])?, 2)?;
    ensure!(bed.lines("/var/log/acme-handler.log") == 1);

    // One var changes: exactly its file is rewritten, and the handler runs exactly once.
    bed.edit("devices/dev1.yaml", "greeting: hello", "greeting: bonjour")?;
    expect_code(&bed.tend(&["apply"])?, 2)?;
    let report = bed.report()?;
    ensure!(
        changed(&report)
            == [
                "file /etc/acme/greeting",
                "command echo ran >> /var/log/acme-handler.log"
            ],
        "{:?}",
        changed(&report)
    );
    ensure!(bed.lines("/var/log/acme-handler.log") == 2);

    // A run that notifies and then fails keeps the handler pending instead of losing it.
    bed.edit("devices/dev1.yaml", "greeting: bonjour", "greeting: hola")?;
    bed.edit(
        "roles/hooks/role.yaml",
        "resources: []",
        "resources:\n  - command: \"exit 3\"\n    creates: /nonexistent",
    )?;
    let failed = bed.tend(&["apply"])?;
    expect_code(&failed, 6)?;
    ensure!(
        bed.lines("/var/log/acme-handler.log") == 2,
        "handlers do not run after a failure\n{failed}"
    );
    ensure!(bed
        .dev
        .read_string("/var/lib/tend/pending-handlers.json")?
        .contains("count greeting"));
    ensure!(bed.report()?["pending_handlers"][0] == "count greeting");

    // The next good run runs it, although nothing notifies it any more.
    bed.edit(
        "roles/hooks/role.yaml",
        "resources:\n  - command: \"exit 3\"\n    creates: /nonexistent",
        "resources: []",
    )?;
    let fixed = bed.tend(&["apply"])?;
    expect_code(&fixed, 2)?;
    ensure!(bed.lines("/var/log/acme-handler.log") == 3, "{fixed}");
    let pending: Vec<String> =
        serde_json::from_str(&bed.dev.read_string("/var/lib/tend/pending-handlers.json")?)?;
    ensure!(pending.is_empty(), "{pending:?}");
    Ok(())
}

/// Holds dpkg's frontend lock the way apt and dpkg do: an fcntl write lock, not flock.
struct FcntlLock(fs::File);

impl FcntlLock {
    fn take(path: &Path) -> Result<FcntlLock> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as _;
        fl.l_whence = libc::SEEK_SET as _;
        // SAFETY: a plain fcntl on a file descriptor we own.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
        ensure!(
            rc == 0,
            "cannot lock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Ok(FcntlLock(file))
    }
}

#[test]
fn held_dpkg_lock_waits_for_the_timeout_then_fails_cleanly() -> Result<()> {
    if skip_chroot_tests("held_dpkg_lock_waits_for_the_timeout_then_fails_cleanly") {
        return Ok(());
    }
    let bed = Bed::new(Suite::Bookworm)?;
    bed.dev
        .write("/etc/tend/tend.yaml", "apt:\n  lock_timeout: 4\n")?;
    let lock = FcntlLock::take(&bed.dev.path("/var/lib/dpkg/lock-frontend")?)
        .context("taking the dpkg lock")?;
    let started = Instant::now();
    let out = bed.tend(&["apply"])?;
    let waited = started.elapsed();
    drop(lock.0);
    ensure!(
        matches!(out.code(), Some(4) | Some(6)),
        "expected a failed run\n{out}"
    );
    ensure!(
        out.stdout.contains("dpkg is locked by another process"),
        "a clear message\n{out}"
    );
    ensure!(
        waited >= Duration::from_secs(4),
        "tend gave up before its lock timeout ({waited:?})"
    );
    // Nothing half-done: the package is not installed, dpkg is consistent, and the rest of the
    // role after the failed package was skipped, not applied.
    ensure!(dpkg_version(&bed.dev, "tend-hello").is_none());
    ensure!(bed
        .dev
        .run_ok(&["dpkg", "--audit"])?
        .stdout
        .trim()
        .is_empty());
    ensure!(
        !bed.dev.exists("/etc/acme/content.conf"),
        "the role went on after a failure"
    );
    // With the lock released the device converges.
    expect_code(&bed.tend(&["apply"])?, 2)?;
    ensure!(dpkg_version(&bed.dev, "tend-hello").as_deref() == Some("1.0-1"));
    Ok(())
}

#[test]
fn local_vars_file_cannot_set_an_undeclared_var() -> Result<()> {
    if skip_chroot_tests("local_vars_file_cannot_set_an_undeclared_var") {
        return Ok(());
    }
    let bed = Bed::new(Suite::Bookworm)?;
    bed.dev.write(
        "/etc/tend/vars.d/zz-local.yaml",
        "# written on the device\nmotd_site: hijacked\n",
    )?;
    // The state dir exists on an installed device (the package ships it); only its content may change.
    fs::create_dir_all(bed.dev.root().join("var/lib/tend"))?;
    let before = bed.dev.snapshot(&[VOLATILE, &["/var/lib/tend"]].concat())?;
    let out = bed.tend(&["apply"])?;
    expect_code(&out, 10)?;
    ensure!(
        out.stdout.contains("/etc/tend/vars.d/zz-local.yaml:2: sets `motd_site`, which the fleet repo does not declare `local`"),
        "{out}"
    );
    let after = bed.dev.snapshot(&[VOLATILE, &["/var/lib/tend"]].concat())?;
    ensure!(
        before.hash() == after.hash(),
        "a refused run changed the device: {:?}",
        after.changes_since(&before)
    );
    ensure!(bed.report()?["result"] == "invalid");
    Ok(())
}

#[test]
fn a_suspended_device_applies_nothing_until_resumed() -> Result<()> {
    if skip_chroot_tests("a_suspended_device_applies_nothing_until_resumed") {
        return Ok(());
    }
    let bed = Bed::new(Suite::Bookworm)?;
    bed.dev
        .tend(&["suspend", "--reason", "field test in progress"])?
        .ok()?;
    let excludes = [VOLATILE, &["/var/lib/tend"]].concat();
    let before = bed.dev.snapshot(&excludes)?;
    let out = bed.tend(&["apply"])?;
    expect_code(&out, 11)?;
    ensure!(out.stdout.contains("field test in progress"), "{out}");
    let after = bed.dev.snapshot(&excludes)?;
    ensure!(
        before.hash() == after.hash(),
        "a suspended device changed: {:?}",
        after.changes_since(&before)
    );
    ensure!(bed.report()?["result"] == "suspended");
    let inventory = bed.dev.tend(&["inventory"])?.ok()?.stdout;
    ensure!(
        inventory.contains("tend_suspended=field test in progress")
            && inventory.contains("tend_status=suspended"),
        "{inventory}"
    );

    bed.dev.tend(&["resume"])?.ok()?;
    expect_code(&bed.tend(&["apply"])?, 2)?;
    let status = bed.dev.tend(&["status"])?.ok()?.stdout;
    ensure!(
        status.contains("suspended:  no") && status.contains("last run:   changed"),
        "{status}"
    );
    Ok(())
}

/// Each `systemctl` costs a process (3 ms on x86, far more on a Pi): a run reads every service's
/// enablement with one `systemctl is-enabled`, and asks again after each change, since a change
/// may have made the answers stale. A unit that does not exist makes systemd 252 stop the batch;
/// then each unit is asked alone, and the answers are the same.
#[test]
fn services_are_read_with_one_systemctl_call_and_re_read_after_a_change() -> Result<()> {
    if skip_chroot_tests("services_are_read_with_one_systemctl_call_and_re_read_after_a_change") {
        return Ok(());
    }
    const LOG: &str = "/var/log/systemctl-calls.log";
    let dev = Device::bookworm()?;
    dev.install_tend(&tend_binary()?)?;
    dev.log_calls("/usr/bin/systemctl", LOG)?;
    let unit = "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n";
    let mut role = String::from("resources:\n");
    for u in ["a", "b", "c"] {
        role.push_str(&format!(
            "  - file: /etc/systemd/system/{u}.service\n    content: \"{}\"\n",
            unit.escape_default()
        ));
    }
    role.push_str("  - service: \"{{ item }}\"\n    enabled: true\n    loop: [a, b, c]\n");
    dev.write("/srv/units/fleet.yaml", "format: 1\nroles: [units]\n")?;
    dev.write("/srv/units/devices/dev1.yaml", "vars: {}\n")?;
    dev.write("/srv/units/roles/units/role.yaml", &role)?;
    let apply = || dev.tend(&["apply", "--path", "/srv/units", "--device", "dev1"]);
    let calls = || -> Result<Vec<String>> {
        let log = dev.read_string(LOG).unwrap_or_default();
        dev.write(LOG, "")?;
        Ok(log
            .lines()
            .filter(|l| l.contains("is-enabled"))
            .map(|l| l.replace("--no-ask-password ", ""))
            .collect())
    };

    expect_code(&apply()?, 2)?;
    for u in ["a", "b", "c"] {
        let link = format!("etc/systemd/system/multi-user.target.wants/{u}.service");
        ensure!(dev.root().join(link).is_symlink(), "{u} is not enabled");
    }
    calls()?;
    expect_code(&apply()?, 0)?;
    ensure!(
        calls()? == ["is-enabled a.service b.service c.service"],
        "a no-op run reads the three units with one call"
    );

    dev.run_ok(&["systemctl.distrib", "disable", "b.service"])?;
    let out = apply()?;
    expect_code(&out, 2)?;
    let report = dev.report()?;
    ensure!(changed(&report) == ["service b.service"], "{report:#}");

    // A change between two reads makes the batch stale: b is disabled by a command after a's
    // read, and must be seen as disabled when its turn comes.
    dev.write(
        "/srv/units/roles/units/role.yaml",
        role.replace(
            "  - service: \"{{ item }}\"\n    enabled: true\n    loop: [a, b, c]\n",
            "  - service: a\n    enabled: true\n\
             \x20 - command: systemctl.distrib disable b.service && touch /var/lib/b-disabled\n\
             \x20   creates: /var/lib/b-disabled\n\
             \x20 - service: b\n    enabled: true\n  - service: c\n    enabled: true\n",
        ),
    )?;
    expect_code(&apply()?, 2)?;
    let report = dev.report()?;
    ensure!(
        changed(&report).iter().any(|c| c == "service b.service"),
        "b was read from before the command disabled it: {report:#}"
    );
    ensure!(dev
        .root()
        .join("etc/systemd/system/multi-user.target.wants/b.service")
        .is_symlink());

    // d.service does not exist: the batch fails, each unit is asked alone, d fails.
    dev.write(
        "/srv/units/roles/units/role.yaml",
        role.replace("loop: [a, b, c]", "loop: [a, b, c, d]"),
    )?;
    calls()?;
    expect_code(&apply()?, 4)?;
    let asked = calls()?;
    ensure!(
        asked.contains(&"is-enabled a.service".to_string())
            && asked.contains(&"is-enabled d.service".to_string()),
        "{asked:?}"
    );
    let report = dev.report()?;
    let failed = with_outcome(&report, "failed");
    ensure!(
        failed.len() == 1 && failed[0]["id"] == "d.service",
        "{report:#}"
    );
    Ok(())
}

/// The package resources of a run share one read of dpkg's status until something changes: a
/// package that an earlier resource installed (as a dependency) is seen as installed by a later
/// resource that wants it, which then changes nothing and runs no apt-get.
#[test]
fn a_package_installed_by_one_role_is_seen_by_the_next() -> Result<()> {
    if skip_chroot_tests("a_package_installed_by_one_role_is_seen_by_the_next") {
        return Ok(());
    }
    let repo = AptRepo::with_packages(&[
        DebSpec::new("tend-dep-base", "1.0-1").file("/usr/share/tend-dep-base/x", "x\n", 0o644),
        DebSpec::new("tend-dep-top", "1.0-1")
            .depends("tend-dep-base")
            .file("/usr/share/tend-dep-top/x", "x\n", 0o644),
    ])?;
    let dev = Device::bookworm()?;
    dev.install_tend(&tend_binary()?)?;
    dev.use_apt_repo(&repo)?;
    dev.log_calls("/usr/bin/apt-get", APT_LOG)?;
    dev.write("/srv/pk/fleet.yaml", "format: 1\nroles: [one, two]\n")?;
    dev.write("/srv/pk/devices/dev1.yaml", "vars: {}\n")?;
    for (role, package) in [("one", "tend-dep-top"), ("two", "tend-dep-base")] {
        dev.write(
            &format!("/srv/pk/roles/{role}/role.yaml"),
            format!("resources:\n  - package: [{package}]\n"),
        )?;
    }
    let apply = || dev.tend(&["apply", "--path", "/srv/pk", "--device", "dev1"]);
    expect_code(&apply()?, 2)?;
    let report = dev.report()?;
    let changed: Vec<&str> = with_outcome(&report, "changed")
        .into_iter()
        .filter_map(|r| r["role"].as_str())
        .collect();
    ensure!(changed == ["one"], "only role one installs: {report:#}");
    let log = dev.read_string(APT_LOG)?;
    let calls: Vec<&str> = log.lines().filter(|l| l.starts_with("install")).collect();
    let (downloads, installs): (Vec<&str>, Vec<&str>) =
        calls.iter().partition(|l| l.contains("--download-only"));
    ensure!(installs.len() == 1, "{log}");
    // Download, then apply: both resources' packages were fetched before the first install.
    ensure!(downloads.len() == 2 && calls[2] == installs[0], "{log}");
    dev.write(APT_LOG, "")?;
    expect_code(&apply()?, 0)?;
    ensure!(dev.read_string(APT_LOG)?.is_empty());
    Ok(())
}

/// The `alternative` type on a real dpkg database: selecting a path puts the group in manual mode
/// through the root's own update-alternatives, a second run changes nothing, `mode: auto` gives the
/// group back to the highest priority, and a path nobody registered fails with the registered ones.
#[test]
fn an_alternative_is_selected_by_hand_kept_and_given_back_to_auto() -> Result<()> {
    if skip_chroot_tests("an_alternative_is_selected_by_hand_kept_and_given_back_to_auto") {
        return Ok(());
    }
    let dev = Device::new(Suite::Bookworm, Arch::Amd64)?;
    dev.install_tend(&tend_binary()?)?;
    // Two programs registered for one group, as two packages' postinst would.
    dev.sh(
        "update-alternatives --install /usr/local/bin/tend-pick tend-pick /bin/true 10 && \
         update-alternatives --install /usr/local/bin/tend-pick tend-pick /bin/false 20",
    )?;
    let fleet = |entry: &str| -> Result<()> {
        dev.write(&format!("{FLEET}/fleet.yaml"), "format: 1\n")?;
        dev.write(&format!("{FLEET}/devices/dev1.yaml"), "roles: [pick]\n")?;
        dev.write(
            &format!("{FLEET}/roles/pick/role.yaml"),
            format!("resources:\n  - alternative: tend-pick\n    {entry}\n"),
        )
    };
    let apply = || dev.tend(&["apply", "--path", FLEET, "--device", "dev1"]);
    let selected = || -> Result<String> {
        Ok(
            fs::read_link(dev.root().join("etc/alternatives/tend-pick"))?
                .display()
                .to_string(),
        )
    };
    ensure!(
        selected()? == "/bin/false",
        "the higher priority wins in auto mode"
    );

    fleet("path: /bin/true")?;
    let out = apply()?;
    expect_code(&out, 2)?;
    ensure!(
        changed(&dev.report()?) == ["alternative tend-pick"],
        "{out}"
    );
    ensure!(
        out.stdout.contains("/bin/false -> /bin/true (manual)"),
        "{out}"
    );
    ensure!(selected()? == "/bin/true");
    let admin = dev.read_string("/var/lib/dpkg/alternatives/tend-pick")?;
    ensure!(admin.starts_with("manual\n"), "{admin}");
    expect_code(&apply()?, 0)?;

    fleet("mode: auto")?;
    expect_code(&apply()?, 2)?;
    ensure!(
        selected()? == "/bin/false",
        "auto mode picks the highest priority again"
    );
    expect_code(&apply()?, 0)?;

    fleet("path: /bin/ed")?;
    let out = apply()?;
    ensure!(!out.success(), "{out}");
    ensure!(
        out.stdout.contains(
            "/bin/ed is not an alternative for `tend-pick` (registered: /bin/false, /bin/true)"
        ),
        "{out}"
    );
    ensure!(
        selected()? == "/bin/false",
        "a refused selection changes nothing"
    );
    Ok(())
}
