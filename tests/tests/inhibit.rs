//! Issue #16 item 5: an application holds off restarts and reboots. `tend run` inside a Debian
//! chroot pulls signed commits; the test process plays the application and holds an exclusive
//! flock on `/run/tend/inhibit.d/app-update.lock` inside the chroot. While it is held the files
//! still converge, the restart handler and the reboot are deferred and reported with the holder's
//! name; after release the next run runs them exactly once; past `inhibit.max_deferral` they run
//! anyway and the report says so. The restart is a command handler that counts its runs (no
//! systemd runs in a chroot); the reboot command counts reboots the same way.

use std::fs::File;
use std::os::fd::AsRawFd;

use anyhow::{ensure, Result};
use serde_json::Value;
use tend_tests::pullbed::PullBed;
use tend_tests::skip_chroot_tests;

const RESTARTS: &str = "/var/tmp/restarts";
const REBOOTS: &str = "/var/tmp/reboots";
const LOCK: &str = "/run/tend/inhibit.d/app-update.lock";
const METRICS_DIR: &str = "/var/lib/prometheus/node-exporter";
const DEFERRED: &str = "/var/lib/tend/deferred.json";

fn bed(extra: &str) -> Result<PullBed> {
    let pb = PullBed::new("safety-fleet")?;
    let url = pb.url();
    pb.configure(&url, "", extra)?;
    Ok(pb)
}

fn count(bed: &PullBed, path: &str) -> usize {
    bed.dev
        .read_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Takes the application's lock: an exclusive flock, held until the file is dropped.
fn hold(bed: &PullBed, why: &str) -> Result<File> {
    bed.dev.write(LOCK, format!("{why}\n"))?;
    let f = File::open(bed.dev.path(LOCK)?)?;
    // SAFETY: flock on a file this test owns.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    ensure!(rc == 0, "flock: {}", std::io::Error::last_os_error());
    Ok(f)
}

fn app_role(bed: &PullBed, version: &str) -> Result<String> {
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\nroles: [app]\n")?;
    bed.publisher.write(
        "roles/app/role.yaml",
        &format!(
            "resources:\n  - file: /etc/systemd/system/app.service\n    content: \"[Service]\\nExecStart=/usr/bin/app {version}\\n\"\n    notify: restart app\n\
             handlers:\n  restart app:\n    command: echo restarted >> {RESTARTS}\n"
        ),
    )?;
    bed.publisher.signed("main", &format!("app {version}"))
}

fn deferred(r: &Value) -> Vec<(String, String)> {
    r["deferred"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    (
                        d["action"].as_str().unwrap_or("").to_string(),
                        d["holder"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_held_inhibitor_defers_a_restart_which_runs_once_after_release_or_past_max_deferral(
) -> Result<()> {
    if skip_chroot_tests(
        "a_held_inhibitor_defers_a_restart_which_runs_once_after_release_or_past_max_deferral",
    ) {
        return Ok(());
    }
    let bed = bed("")?;
    // node_exporter's textfile directory: its presence turns the metrics on.
    bed.dev.write(&format!("{METRICS_DIR}/.keep"), "")?;
    app_role(&bed, "1")?;
    bed.run()?.expect_code(2)?;
    ensure!(count(&bed, RESTARTS) == 1, "first install restarts");

    // Held: the unit file changes, the restart waits and is reported with the holder.
    let lock = hold(&bed, "flashing the modem")?;
    app_role(&bed, "2")?;
    let out = bed.run()?;
    ensure!(
        bed.dev
            .read_string("/etc/systemd/system/app.service")?
            .contains("app 2"),
        "the file still converges\n{out}"
    );
    ensure!(count(&bed, RESTARTS) == 1, "deferred\n{out}");
    let r = bed.report()?;
    let want = vec![(
        "handler 'restart app'".to_string(),
        "app-update (flashing the modem)".to_string(),
    )];
    ensure!(deferred(&r) == want, "{r:#}");
    ensure!(r["pending_handlers"][0] == "restart app", "{r:#}");
    ensure!(
        out.stdout
            .contains("deferred: held off by app-update (flashing the modem)"),
        "{out}"
    );
    let since = r["deferred"][0]["since"].as_u64().unwrap_or(0);
    ensure!(since > 0, "{r:#}");
    let status = bed.dev.tend(&["status"])?.ok()?.stdout;
    ensure!(
        status.contains("deferred:   handler 'restart app' by app-update"),
        "{status}"
    );
    let prom = bed.dev.read_string(&format!("{METRICS_DIR}/tend.prom"))?;
    ensure!(prom.contains("tend_deferred_actions 1\n"), "{prom}");

    // Still held on a run that changes nothing: still deferred, the first time kept.
    let out = bed.run()?;
    ensure!(count(&bed, RESTARTS) == 1, "{out}");
    ensure!(bed.report()?["deferred"][0]["since"].as_u64() == Some(since));

    // Released: the next run restarts exactly once, then never again for it.
    drop(lock);
    let out = bed.run()?;
    ensure!(count(&bed, RESTARTS) == 2, "runs after release\n{out}");
    let r = bed.report()?;
    ensure!(
        deferred(&r).is_empty() && r["pending_handlers"] == serde_json::json!([]),
        "{r:#}"
    );
    ensure!(!bed.dev.path(DEFERRED)?.exists(), "nothing left deferred");
    bed.run()?.expect_code(0)?;
    ensure!(count(&bed, RESTARTS) == 2, "exactly once");

    // Held for longer than inhibit.max_deferral (24h): the first time is moved a day and an hour
    // back, as a device's clock would have moved; the restart runs and the report says so.
    let _lock = hold(&bed, "stuck")?;
    app_role(&bed, "3")?;
    bed.run()?;
    ensure!(count(&bed, RESTARTS) == 2);
    let text = bed.dev.read_string(DEFERRED)?;
    let mut list: Value = serde_json::from_str(&text)?;
    let moved = list[0]["since"].as_u64().unwrap_or(0) - 25 * 3600;
    list[0]["since"] = moved.into();
    bed.dev.write(DEFERRED, list.to_string())?;
    let out = bed.run()?;
    ensure!(count(&bed, RESTARTS) == 3, "ran past max_deferral\n{out}");
    let r = bed.report()?;
    ensure!(
        r["warnings"].as_array().is_some_and(|w| w.iter().any(|w| w
            == "handler 'restart app' deferred 25h by app-update (stuck); running it now \
                (inhibit.max_deferral is 24h)")),
        "{r:#}"
    );
    ensure!(deferred(&r).is_empty(), "{r:#}");
    Ok(())
}

#[test]
fn a_reboot_inside_the_window_waits_for_the_inhibitor_and_happens_once_after_release() -> Result<()>
{
    if skip_chroot_tests(
        "a_reboot_inside_the_window_waits_for_the_inhibitor_and_happens_once_after_release",
    ) {
        return Ok(());
    }
    let bed = bed(&format!(
        "reboot:\n  window: \"00:00-24:00\"\n  command: [/bin/sh, -c, \"echo rebooted >> {REBOOTS}\"]\n"
    ))?;
    let lock = hold(&bed, "")?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\nroles: [boot]\n")?;
    bed.publisher.write(
        "roles/boot/role.yaml",
        "resources:\n  - file: /boot/config.txt\n    content: \"dtoverlay=vc4-kms-v3d\\n\"\n    reboot: true\n",
    )?;
    bed.publisher.signed("main", "boot config")?;
    let out = bed.run()?;
    out.expect_code(2)?;
    ensure!(
        count(&bed, REBOOTS) == 0,
        "held off inside the window\n{out}"
    );
    let r = bed.report()?;
    ensure!(
        r["reboot"]["pending"] == true && r["reboot"]["deferred_by"] == "app-update",
        "{r:#}"
    );
    ensure!(
        deferred(&r) == [("reboot".to_string(), "app-update".to_string())],
        "{r:#}"
    );
    bed.run()?;
    ensure!(count(&bed, REBOOTS) == 0, "still held");

    drop(lock);
    let out = bed.run()?;
    ensure!(count(&bed, REBOOTS) == 1, "reboots after release\n{out}");
    let r = bed.report()?;
    ensure!(
        r["reboot"]["action"] == "rebooting" && deferred(&r).is_empty(),
        "{r:#}"
    );
    bed.run()?;
    ensure!(count(&bed, REBOOTS) == 1, "once");
    Ok(())
}
