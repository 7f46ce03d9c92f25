//! Issue #6: a device cannot lock itself out. `tend run` inside a Debian chroot pulls signed
//! commits from a real https git server on loopback. A commit that breaks name resolution (a
//! managed /etc/hosts) fails the connectivity guard and is reverted: the file comes back byte for
//! byte, the device returns to the last good commit and keeps fetching, and the bad commit is not
//! applied again until the branch moves on. A failing health check is reported, and reverts the
//! commit only when it says `revert: true`. What an undeclared resource created is listed, or
//! removed with `prune: true`; a change that needs a reboot reboots only inside the window, once
//! per commit, and the run after the boot says so.

use anyhow::{ensure, Result};
use serde_json::Value;
use tend_tests::aptrepo::{COMPONENT, SUITE};
use tend_tests::pullbed::PullBed;
use tend_tests::{skip_chroot_tests, AptRepo, Device};

/// The device resolves `localhost` only through its own /etc/hosts: no nameserver answers.
const HOSTS: &str = "127.0.0.1 localhost\n";
const RESOLV: &str = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n";

struct Bed {
    pb: PullBed,
}

/// The suite's bed is the shared pulling device (`bed.dev`, `bed.publisher` …).
impl std::ops::Deref for Bed {
    type Target = PullBed;
    fn deref(&self) -> &PullBed {
        &self.pb
    }
}

impl Bed {
    /// `host` names the git server in the device's source URL.
    fn new(host: &str) -> Result<Bed> {
        let pb = PullBed::new("safety-fleet")?;
        pb.dev.write("/etc/hosts", HOSTS)?;
        pb.dev.write("/etc/resolv.conf", RESOLV)?;
        let url = pb.url().replace("127.0.0.1", host);
        pb.configure(&url, "", "guard:\n  timeout: 5\n  retries: 0\n")?;
        Ok(Bed { pb })
    }

    fn inventory(&self) -> Result<String> {
        Ok(self.dev.tend(&["inventory"])?.ok()?.stdout)
    }
}

#[test]
fn a_commit_that_breaks_dns_is_reverted_and_the_device_keeps_fetching() -> Result<()> {
    if skip_chroot_tests("a_commit_that_breaks_dns_is_reverted_and_the_device_keeps_fetching") {
        return Ok(());
    }
    let bed = Bed::new("localhost")?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\n")?;
    let good = bed.publisher.signed("main", "site one")?;
    bed.run()?.expect_code(2)?;
    let r = bed.report()?;
    ensure!(
        r["guard"]["ok"] == true,
        "the guard ran after a change\n{r:#}"
    );

    // The bad commit takes over /etc/hosts and drops localhost: the git server's name is gone.
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: two}\nroles: [net]\n")?;
    bed.publisher.write(
        "roles/net/role.yaml",
        "resources:\n  - file: /etc/hosts\n    content: \"10.0.0.1 printer\\n\"\n    mode: \"0600\"\n",
    )?;
    let bad = bed.publisher.signed("main", "break dns")?;
    let out = bed.run()?;
    out.expect_code(6)?;
    ensure!(
        bed.dev.read_string("/etc/hosts")? == HOSTS,
        "/etc/hosts was not restored\n{out}"
    );
    ensure!(
        bed.site() == "one\n",
        "the last good commit was not re-applied\n{out}"
    );
    let r = bed.report()?;
    ensure!(r["result"] == "reverted", "{r:#}");
    ensure!(
        r["git"]["commit"] == good.as_str() && r["git"]["head"] == bad.as_str(),
        "{r:#}"
    );
    let rv = &r["git"]["reverted"];
    ensure!(rv["commit"] == bad.as_str(), "{r:#}");
    ensure!(
        rv["cause"]
            .as_str()
            .unwrap_or("")
            .contains("resolve failed"),
        "the cause names the failed step\n{r:#}"
    );
    ensure!(
        rv["restored"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p == "/etc/hosts")),
        "{r:#}"
    );
    ensure!(
        r["guard"]["ok"] == true,
        "reachable again after the revert\n{r:#}"
    );
    let inv = bed.inventory()?;
    ensure!(inv.contains("tend_status=reverted\n"), "{inv}");
    ensure!(
        inv.contains(&format!("tend_reverted_commit={bad}\n")),
        "{inv}"
    );

    // The head is still the bad commit: fetched (the device still reaches its server), not retried.
    let out = bed.run()?;
    out.expect_code(4)?;
    ensure!(bed.dev.read_string("/etc/hosts")? == HOSTS, "{out}");
    ensure!(bed.site() == "one\n", "{out}");
    let r = bed.report()?;
    ensure!(
        r["result"] == "reverted" && r["git"]["head"] == bad.as_str(),
        "{r:#}"
    );
    ensure!(
        r["git"]["refused"]
            .as_str()
            .unwrap_or("")
            .contains("waiting for a new head"),
        "{r:#}"
    );

    // A new head that keeps localhost is applied.
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: three}\nroles: [net]\n")?;
    bed.publisher.write(
        "roles/net/role.yaml",
        "resources:\n  - file: /etc/hosts\n    content: \"127.0.0.1 localhost\\n10.0.0.1 printer\\n\"\n",
    )?;
    let fixed = bed.publisher.signed("main", "printer, keeping localhost")?;
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "three\n");
    let r = bed.report()?;
    ensure!(
        r["result"] == "changed" && r["git"]["commit"] == fixed.as_str(),
        "{r:#}"
    );
    ensure!(
        !bed.dev.exists("/var/lib/tend/revert"),
        "a good commit discards what was kept for a revert"
    );
    Ok(())
}

#[test]
fn a_failing_health_check_is_reported_and_reverts_only_with_revert_true() -> Result<()> {
    if skip_chroot_tests("a_failing_health_check_is_reported_and_reverts_only_with_revert_true") {
        return Ok(());
    }
    let bed = Bed::new("127.0.0.1")?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\n")?;
    let good = bed.publisher.signed("main", "site one")?;
    bed.run()?.expect_code(2)?;

    // Reported, not reverted: the commit stays applied and the run fails.
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: two}\nroles: [app]\n")?;
    let check = "checks:\n  - name: app ready\n    command: test -e /etc/app-ready\n    retries: 1\n    interval: 0\n";
    bed.publisher.write("roles/app/role.yaml", check)?;
    let reported = bed.publisher.signed("main", "app, unhealthy")?;
    let out = bed.run()?;
    out.expect_code(6)?;
    ensure!(
        bed.site() == "two\n",
        "revert: false keeps the commit\n{out}"
    );
    let r = bed.report()?;
    ensure!(
        r["result"] == "failed" && r["git"]["commit"] == reported.as_str(),
        "{r:#}"
    );
    let c = &r["checks"][0];
    ensure!(
        c["name"] == "app ready" && c["outcome"] == "failed" && c["attempts"] == 2,
        "{r:#}"
    );
    ensure!(c["origin"] == "roles/app/role.yaml:2", "{r:#}");
    let inv = bed.inventory()?;
    ensure!(
        inv.contains("tend_status=failed\n") && inv.contains("tend_failed_check=app: app ready\n"),
        "{inv}"
    );

    // The same check with revert: true sends the device back to the last good commit, and the
    // file changed by both unhealthy commits comes back as the good commit left it.
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: three}\nroles: [app]\n")?;
    bed.publisher
        .write("roles/app/role.yaml", &format!("{check}    revert: true\n"))?;
    let bad = bed.publisher.signed("main", "app, unhealthy, revert")?;
    let out = bed.run()?;
    out.expect_code(6)?;
    ensure!(bed.site() == "one\n", "{out}");
    let r = bed.report()?;
    ensure!(
        r["result"] == "reverted" && r["git"]["commit"] == good.as_str(),
        "{r:#}"
    );
    ensure!(
        r["git"]["reverted"]["cause"]
            .as_str()
            .unwrap_or("")
            .contains("health check 'app ready' failed"),
        "{r:#}"
    );
    let inv = bed.inventory()?;
    ensure!(inv.contains("tend_status=reverted\n"), "{inv}");
    ensure!(
        inv.contains("tend_revert_cause=role app: health check 'app ready'"),
        "{inv}"
    );

    // Not retried while it is the head.
    bed.run()?.expect_code(4)?;
    ensure!(bed.site() == "one\n");
    ensure!(bed.report()?["git"]["head"] == bad.as_str());

    // A new head that makes the check pass is applied and is good.
    bed.publisher.write(
        "roles/app/role.yaml",
        &format!(
            "resources:\n  - file: /etc/app-ready\n    content: \"\"\n{check}    revert: true\n"
        ),
    )?;
    let healthy = bed.publisher.signed("main", "app ready")?;
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "three\n");
    let r = bed.report()?;
    ensure!(
        r["result"] == "changed"
            && r["git"]["commit"] == healthy.as_str()
            && r["checks"][0]["outcome"] == "passed",
        "{r:#}"
    );
    bed.run()?.expect_code(0)?;
    Ok(())
}

/// Everything a role can create, of each kind tend prunes; procps was installed before tend.
fn kit_role(repo: &AptRepo) -> Result<String> {
    let key = repo.key_armored()?.replace('\n', "\\n");
    Ok(format!(
        "resources:\n\
         \x20 - apt_source: vendor\n    uris: {url}\n    suites: [{SUITE}]\n    components: [{COMPONENT}]\n    key_content: \"{key}\"\n\
         \x20 - package: [tend-tool, procps]\n\
         \x20 - file: /etc/kit.conf\n    content: \"kit\\n\"\n\
         \x20 - file: /etc/systemd/system/kit.service\n    content: \"[Unit]\\nDescription=kit\\n[Service]\\nExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\n\"\n\
         \x20 - service: kit\n    enabled: true\n\
         \x20 - user: kit\n    system: true\n",
        url = repo.url()
    ))
}

fn dpkg_installed(dev: &Device, package: &str) -> Result<bool> {
    let out = dev.run(&["dpkg-query", "-W", "-f", "${Status}", package])?;
    Ok(out.success() && out.stdout.contains("install ok installed"))
}

fn kinds_ids(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| {
                    format!(
                        "{} {}",
                        o["kind"].as_str().unwrap_or(""),
                        o["id"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn undeclared_resources_are_listed_without_prune_and_removed_with_it() -> Result<()> {
    if skip_chroot_tests("undeclared_resources_are_listed_without_prune_and_removed_with_it") {
        return Ok(());
    }
    let repo = AptRepo::standard()?;
    let bed = Bed::new("127.0.0.1")?;
    let dev = &bed.dev;
    ensure!(dpkg_installed(dev, "procps")? && !dpkg_installed(dev, "tend-tool")?);
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\nroles: [kit]\n")?;
    bed.publisher
        .write("roles/kit/role.yaml", &kit_role(&repo)?)?;
    bed.publisher.signed("main", "kit")?;
    let out = bed.run()?;
    out.expect_code(2)?;
    let wants = "/etc/systemd/system/multi-user.target.wants/kit.service";
    // What exists, in the order: file, source, keyring, enabled unit, tend-tool, user, procps.
    let present = |what: &str| -> Result<Vec<bool>> {
        let v = vec![
            dev.exists("/etc/kit.conf"),
            dev.exists("/etc/apt/sources.list.d/vendor.sources"),
            dev.exists("/etc/apt/keyrings/vendor.asc"),
            dev.exists(wants),
            dpkg_installed(dev, "tend-tool")?,
            dev.read_string("/etc/passwd")?.contains("\nkit:"),
            dpkg_installed(dev, "procps")?,
        ];
        eprintln!("{what}: {v:?}");
        Ok(v)
    };
    ensure!(present("applied")?.iter().all(|p| *p), "{out}");

    // The role stays but declares nothing: without prune, everything stays and is listed.
    bed.publisher
        .write("roles/kit/role.yaml", "resources: []\n")?;
    bed.publisher.signed("main", "kit empty")?;
    let out = bed.run()?;
    out.expect_code(0)?;
    ensure!(present("prune off")?.iter().all(|p| *p), "{out}");
    let r = bed.report()?;
    let listed = kinds_ids(&r["orphans"]);
    let want = [
        "apt_source vendor",
        "file /etc/kit.conf",
        "file /etc/systemd/system/kit.service",
        "package procps",
        "package tend-tool",
        "service kit.service",
        "user kit",
    ];
    ensure!(listed == want, "{listed:?}\n{r:#}");
    ensure!(bed.inventory()?.contains("tend_orphans=7\n"));

    // prune: true on the role: check mode says what would go and removes nothing.
    bed.publisher
        .write("roles/kit/role.yaml", "prune: true\nresources: []\n")?;
    bed.publisher.signed("main", "kit pruned")?;
    let check = dev.tend(&["run", "--device", "dev1", "--check"])?;
    check.expect_code(2)?;
    ensure!(check.stdout.contains("pruned: "), "{check}");
    ensure!(present("check")?.iter().all(|p| *p), "{check}");

    let out = bed.run()?;
    out.expect_code(2)?;
    ensure!(
        present("pruned")? == [false, false, false, false, false, false, true],
        "everything tend created is gone; procps, there before tend, stays\n{out}"
    );
    let r = bed.report()?;
    let pruned: Vec<&Value> = r["resources"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| {
                    x["summary"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("pruned: "))
                })
                .collect()
        })
        .unwrap_or_default();
    ensure!(pruned.len() == 6, "{r:#}");
    ensure!(
        kinds_ids(&r["orphans"]) == ["package procps"]
            && r["orphans"][0]["reason"] == "it was there before tend managed it",
        "{r:#}"
    );
    bed.run()?.expect_code(0)?;
    let r = bed.report()?;
    ensure!(r.get("orphans").is_none(), "all settled\n{r:#}");
    ensure!(bed.inventory()?.contains("tend_orphans=0\n"));
    Ok(())
}

const REBOOTS: &str = "/var/tmp/reboots";

impl Bed {
    fn reboot_window(&self, window: &str) -> Result<()> {
        self.dev.write(
            "/etc/tend/tend.d/reboot.yaml",
            format!("reboot:\n  window: \"{window}\"\n  command: [/bin/sh, -c, \"echo rebooted >> {REBOOTS}\"]\n"),
        )
    }

    fn reboots(&self) -> usize {
        self.dev
            .read_string(REBOOTS)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

/// A one-hour window that starts two hours from now, device local time.
fn window_excluding_now(dev: &Device) -> Result<String> {
    let hour: u32 = dev.run_ok(&["date", "+%H"])?.stdout.trim().parse()?;
    Ok(format!(
        "{:02}:00-{:02}:00",
        (hour + 2) % 24,
        (hour + 3) % 24
    ))
}

#[test]
fn a_reboot_happens_only_inside_the_window_once_per_commit_and_is_reported_after_boot() -> Result<()>
{
    if skip_chroot_tests(
        "a_reboot_happens_only_inside_the_window_once_per_commit_and_is_reported_after_boot",
    ) {
        return Ok(());
    }
    let bed = Bed::new("127.0.0.1")?;
    let dev = &bed.dev;
    // The kernel's boot id, replaced by a file the test can change: a "boot".
    let ids = tempfile::tempdir()?;
    let boot_id = ids.path().join("boot_id");
    std::fs::write(&boot_id, "boot-1\n")?;
    let proc_boot_id = dev.path("/proc/sys/kernel/random/boot_id")?;
    tend_tests::mounts::bind(&boot_id, &proc_boot_id)?;
    let result = reboot_scenario(&bed, &boot_id);
    tend_tests::mounts::unmount(&proc_boot_id)?;
    result
}

fn reboot_scenario(bed: &Bed, boot_id: &std::path::Path) -> Result<()> {
    let dev = &bed.dev;
    bed.reboot_window(&window_excluding_now(dev)?)?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\nroles: [boot]\n")?;
    bed.publisher.write(
        "roles/boot/role.yaml",
        "resources:\n  - file: /boot/config.txt\n    content: \"dtoverlay=vc4-kms-v3d\\n\"\n    reboot: true\n\
         checks:\n  - name: boot config\n    command: test -s /boot/config.txt\n",
    )?;
    let commit = bed.publisher.signed("main", "boot config")?;

    // Outside the window: pending, no reboot.
    let out = bed.run()?;
    out.expect_code(2)?;
    ensure!(bed.reboots() == 0, "{out}");
    let r = bed.report()?;
    let rb = &r["reboot"];
    ensure!(
        rb["pending"] == true
            && rb["commit"] == commit.as_str()
            && rb["required"][0] == "file /boot/config.txt"
            && rb["action"]
                .as_str()
                .unwrap_or("")
                .contains("waiting for the maintenance window"),
        "{r:#}"
    );
    ensure!(bed.inventory()?.contains("tend_reboot_pending=true\n"));

    // Inside the window: the next run reboots, once, after writing its report.
    bed.reboot_window("00:00-24:00")?;
    let out = bed.run()?;
    out.expect_code(0)?;
    ensure!(bed.reboots() == 1, "{out}");
    ensure!(bed.report()?["reboot"]["action"] == "rebooting");

    // The device did not reboot (same boot id): tend does not ask again.
    let out = bed.run()?;
    ensure!(bed.reboots() == 1, "{out}");
    ensure!(
        bed.report()?["reboot"]["action"]
            .as_str()
            .unwrap_or("")
            .contains("has not happened"),
        "{out}"
    );

    // After the boot: reported once, health checks ran, nothing pending.
    std::fs::write(boot_id, "boot-2\n")?;
    let out = bed.run()?;
    out.expect_code(0)?;
    let r = bed.report()?;
    ensure!(
        r["reboot"]["happened"]["commit"] == commit.as_str()
            && r["reboot"]["pending"] == false
            && r["checks"][0]["outcome"] == "passed",
        "{r:#}"
    );
    let inv = bed.inventory()?;
    ensure!(
        inv.contains("tend_reboot_pending=false\n")
            && inv.contains(&format!("tend_rebooted_for={commit}\n")),
        "{inv}"
    );
    bed.run()?.expect_code(0)?;
    ensure!(bed.report()?.get("reboot").is_none(), "said once");

    // The same commit changes the file again (drift repaired): never a second reboot for it.
    dev.write("/boot/config.txt", "edited by hand\n")?;
    let out = bed.run()?;
    out.expect_code(2)?;
    ensure!(bed.reboots() == 1, "{out}");
    let r = bed.report()?;
    ensure!(
        r["reboot"]["action"]
            .as_str()
            .unwrap_or("")
            .contains("already rebooted for commit"),
        "{r:#}"
    );
    Ok(())
}
