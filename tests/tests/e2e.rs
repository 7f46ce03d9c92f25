//! Issue #7: the fleet rollout end to end on a booted device. A Debian bookworm VM (qemu, TCG)
//! with systemd, the tend .deb and Debian's mender-client follows its branch on tend's timer,
//! against the test bed's services on the host's loopback: the https git server with signed
//! commits, one signed apt repository per stage, and the Mender device-API double.
//!
//! One test, one story, each step asserted on the device, in tend's report and at the Mender
//! double:
//! 1. first boot on canary: the timer runs tend, which installs the canary package, writes a
//!    templated config with a device var and enables and starts a service; systemd shows tend's
//!    STATUS text during the run; Mender gets tend_commit = canary head and tend_status ok;
//! 2. a change on main merged into canary: applied alone, the service restarts once, inventory
//!    is sent;
//! 3. a commit signed by an unknown key: refused, the device keeps the last good commit, and
//!    reports the refusal;
//! 4. a signed commit that breaks the device's way to the git server (/etc/hosts): the guard
//!    fails, tend reverts, Mender shows `reverted`;
//! 5. the device file moves the device to production: new branch and commit reported;
//! 6. power cut (SIGKILL of qemu) in the middle of an apply that rewrites a large file and
//!    installs a package, proven from the serial console; after the next boot no managed file is
//!    partial, `dpkg --audit` is clean and the next run converges;
//! 7. `journalctl -u tend -o json` holds the runs with tend's structured fields;
//! 8. the device follows production through the signed stage pointer, fetched from a caching
//!    proxy (nginx `proxy_cache`) in front of the git server's static files: its no-op polls
//!    are `304`s at the proxy, and the origin's log shows no request for them.
//!
//! Run alone (as root, after `scripts/build-debs amd64`):
//! `cargo test -p tend-tests --test e2e -- --nocapture` (docs/testing.md). The console log's path
//! is printed at the start and with every failure.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tend_tests::cdn::Cdn;
use tend_tests::gitserver::{FleetRepo, HttpsGitServer, TestCa};
use tend_tests::mender::MenderServer;
use tend_tests::publisher::{git, keygen, Publisher};
use tend_tests::rollout;
use tend_tests::vm::{self, Forward, Vm};
use tend_tests::{tend_binary, AptRepo};

#[path = "e2e/bed.rs"]
mod bed;
use bed::*;

/// Guest ports of the host services (proxied in the guest from 127.0.0.1/localhost).
const GIT_PORT: u16 = 8443;
const MENDER_PORT: u16 = 9443;
const CDN_PORT: u16 = 8444;
const POINTER: &str = "production.pointer";
const STAGES: [(&str, u16); 3] = [
    ("development", 8081),
    ("canary", 8082),
    ("production", 8083),
];

/// The slowest step: a run that updates apt lists and installs under TCG, after the timer fired.
const STEP_TIMEOUT: Duration = Duration::from_secs(420);
const POLL: Duration = Duration::from_secs(3);
const CMD: Duration = Duration::from_secs(120);

/// Size of the file the power cut interrupts the rewrite of.
const BIG_FILE_MIB: usize = 24;

/// What the bad commit of step 4 adds: `localhost`, the name the device reaches its git server
/// by, now points where nothing answers.
const BAD_HOSTS: &str = "  - file: /etc/hosts\n    content: \"10.0.2.99 localhost\\n\"\n";

/// What step 6's commit adds: a large file rewrite, then a package install.
const POWERCUT_RESOURCES: &str =
    "  - file: /var/lib/e2e/big.bin\n    source: big.bin\n  - package: tend-tool\n";

#[test]
fn fleet_rollout_on_a_booted_device() -> Result<()> {
    if vm::skip_vm_tests("fleet_rollout_on_a_booted_device") {
        return Ok(());
    }
    let started = Instant::now();
    let mut bed = Bed::new()?;
    eprintln!("e2e: VM console log: {}", bed.vm.console_log().display());
    let (canary, production) = rollout::publish_fleet(&bed.publisher, "vm1", [8081, 8082, 8083])?;
    let took = bed.vm.boot()?;
    eprintln!("e2e: booted in {took:.0?}");
    let result = scenario(&mut bed, &canary, &production);
    if let Err(e) = &result {
        eprintln!("e2e FAILED: {e:#}\n{}", bed.vm.failure_context());
    }
    eprintln!("e2e: total {:.0?}", started.elapsed());
    result
}

fn scenario(bed: &mut Bed, canary: &str, production: &str) -> Result<()> {
    step1_first_boot(bed, canary)?;
    let merged = step2_promotion(bed)?;
    step3_forged(bed, &merged)?;
    let good = step4_revert(bed, &merged)?;
    step5_production(bed, &good, production)?;
    step8_pointer(bed, production)?;
    // Before the power cut: the journal is only sure to hold this boot's runs.
    step7_journal(bed)?;
    step6_power_cut(bed)
}

fn step1_first_boot(bed: &mut Bed, canary: &str) -> Result<()> {
    let mut statuses = Vec::new();
    let r = bed.wait_report(
        "the canary head applied",
        |r| git_field(r, "commit") == canary,
        |vm| {
            let s = vm.sh_ok("systemctl show -p StatusText --value tend", CMD)?;
            if !s.stdout.trim().is_empty() {
                statuses.push(s.stdout.trim().to_string());
            }
            Ok(())
        },
    )?;
    ensure!(r["result"] == "changed", "{r:#}");
    ensure!(git_field(&r, "branch") == "canary", "{r:#}");
    ensure!(
        !statuses.is_empty(),
        "systemd never showed tend's STATUS text during the first run"
    );
    eprintln!("e2e: STATUS texts seen: {statuses:?}");
    // The timer started it: nobody else runs tend in this VM.
    let trig = bed.sh("systemctl show -p LastTriggerUSecMonotonic --value tend.timer")?;
    ensure!(
        trig.trim() != "0" && !trig.trim().is_empty(),
        "tend.timer never fired"
    );

    let hello = bed.sh("dpkg-query -W -f '${Version}' tend-hello")?;
    ensure!(
        hello == "2.0-1",
        "the canary snapshot has tend-hello 2.0-1, installed {hello:?}"
    );
    let conf = bed.sh("cat /etc/e2e-app.conf")?;
    ensure!(
        conf == "# managed by tend\nsite=lab-7\ngreeting=hello\n",
        "{conf:?}"
    );
    ensure!(bed.sh("systemctl is-enabled e2e-app")?.trim() == "enabled");
    ensure!(bed.sh("systemctl is-active e2e-app")?.trim() == "active");
    bed.wait_mender(&[
        ("tend_commit", canary),
        ("tend_status", "ok"),
        ("tend_branch", "canary"),
    ])?;
    Ok(())
}

fn step2_promotion(bed: &mut Bed) -> Result<String> {
    let starts = bed.app_starts()?;
    let updates = bed.mender.inventory_updates().len();
    bed.publisher.checkout("main")?;
    bed.publisher
        .write("roles/app/role.yaml", &rollout::role("hi", ""))?;
    let merged = bed.merge_main_into_canary("greet with hi")?;
    let r = bed.wait_report(
        "the merge applied",
        |r| git_field(r, "commit") == merged,
        |_| Ok(()),
    )?;
    let changed = tend_tests::reports::changed(&r);
    ensure!(
        changed.iter().any(|c| c.ends_with("/etc/e2e-app.conf"))
            && changed
                .iter()
                .all(|c| c.ends_with("/etc/e2e-app.conf") || c.contains("e2e-app")),
        "the merge changed only the config (and its handler), not {changed:?}\n{r:#}"
    );
    let conf = bed.sh("cat /etc/e2e-app.conf")?;
    ensure!(
        conf.contains("greeting=hi\n") && conf.contains("site=lab-7\n"),
        "{conf:?}"
    );
    ensure!(
        bed.sh("grep -c 8082 /etc/apt/sources.list.d/e2e.sources")?
            .trim()
            == "1",
        "the merge must not bring main's snapshot to canary"
    );
    bed.wait_mender(&[("tend_commit", &merged), ("tend_status", "ok")])?;
    ensure!(
        bed.mender.inventory_updates().len() > updates,
        "no inventory send"
    );
    // One restart, and no more on the following runs (which change nothing).
    let finished = r["finished"].as_u64().unwrap_or(0);
    bed.wait_report(
        "a later run",
        |r| r["finished"].as_u64().unwrap_or(0) > finished,
        |_| Ok(()),
    )?;
    let now = bed.app_starts()?;
    ensure!(
        now == starts + 1,
        "e2e-app started {} times for one config change",
        now - starts
    );
    Ok(merged)
}

fn step3_forged(bed: &mut Bed, good: &str) -> Result<()> {
    bed.publisher.checkout("canary")?;
    bed.publisher
        .write("roles/app/role.yaml", &rollout::role("forged", ""))?;
    let stranger = bed.stranger.clone();
    let forged = bed
        .publisher
        .publish("canary", "signed by a stranger", Some(&stranger))?;
    let r = bed.wait_report(
        "the forged head refused",
        |r| git_field(r, "head") == forged,
        |_| Ok(()),
    )?;
    ensure!(git_field(&r, "commit") == good, "{r:#}");
    ensure!(
        git_field(&r, "refused").contains("allowed_signers"),
        "{r:#}"
    );
    ensure!(bed.sh("cat /etc/e2e-app.conf")?.contains("greeting=hi\n"));
    // The refusal alone (same branch, commit and status) must reach Mender in this run.
    let shows_refusal = |a: &BTreeMap<String, Value>| {
        a.get("tend_commit").and_then(Value::as_str) == Some(good)
            && a.get("tend_error")
                .and_then(Value::as_str)
                .is_some_and(|e| e.contains("allowed_signers"))
    };
    bed.mender
        .wait_until(Duration::from_secs(120), "the refusal in Mender", |s| {
            shows_refusal(&s.attributes())
        })
        .with_context(|| {
            format!(
                "Mender does not show the refusal: {:#?}",
                bed.mender.attributes()
            )
        })?;
    // Take the forged commit off the work tree; the next signed commit replaces it on the server.
    git(bed.publisher.work(), &["reset", "-q", "--hard", good])?;
    Ok(())
}

fn step4_revert(bed: &mut Bed, good: &str) -> Result<String> {
    let hosts = bed.sh("cat /etc/hosts")?;
    bed.publisher
        .write("roles/app/role.yaml", &rollout::role("hi", BAD_HOSTS))?;
    let bad = bed
        .publisher
        .signed("canary", "pin localhost (breaks the git server)")?;
    let r = bed.wait_report(
        "the bad commit reverted",
        |r| r["git"]["reverted"]["commit"] == bad,
        |_| Ok(()),
    )?;
    ensure!(
        r["result"] == "reverted" && git_field(&r, "commit") == good,
        "{r:#}"
    );
    ensure!(
        bed.sh("cat /etc/hosts")? == hosts,
        "/etc/hosts was not restored"
    );
    bed.wait_mender(&[("tend_status", "reverted"), ("tend_reverted_commit", &bad)])?;
    // Undo it in the repository too, as the fleet engineer would.
    bed.publisher
        .write("roles/app/role.yaml", &rollout::role("hi", ""))?;
    Ok(bad)
}

fn step5_production(bed: &mut Bed, _bad: &str, production: &str) -> Result<()> {
    bed.publisher.write(
        "devices/vm1.yaml",
        "subscribed_branch: production\nvars:\n  site: lab-7\n",
    )?;
    bed.publisher.signed("canary", "move vm1 to production")?;
    let r = bed.wait_report(
        "the device on production",
        |r| git_field(r, "branch") == "production",
        |_| Ok(()),
    )?;
    ensure!(
        git_field(&r, "commit") == production && git_field(&r, "switched_from") == "canary",
        "{r:#}"
    );
    ensure!(bed
        .sh("cat /etc/e2e-app.conf")?
        .contains("greeting=hello\n"));
    ensure!(
        bed.sh("grep -c 8083 /etc/apt/sources.list.d/e2e.sources")?
            .trim()
            == "1"
    );
    bed.wait_mender(&[("tend_branch", "production"), ("tend_commit", production)])?;
    Ok(())
}

/// The report's start time (Unix seconds), which every finished run moves.
fn started(r: &Value) -> u64 {
    r["started"].as_u64().unwrap_or(0)
}

fn step8_pointer(bed: &mut Bed, production: &str) -> Result<()> {
    // The fleet's CI publishes production's pointer next to the git server's files.
    let out = std::process::Command::new(tend_binary()?)
        .args([
            "publish",
            "pointer",
            "--stage",
            "production",
            "--expires",
            "1d",
        ])
        .args(["--sequence", "1", "--key"])
        .arg(bed.publisher.key())
        .arg("--out")
        .arg(bed.git.docroot().join(POINTER))
        .arg(bed.publisher.work())
        .output()?;
    ensure!(out.status.success(), "tend publish pointer: {out:?}");
    bed.sh(&format!(
        "printf 'source:\\n  branch: production\\n  pointer: https://localhost:{CDN_PORT}/{POINTER}\\n' \
         > /etc/tend/tend.d/60-pointer.yaml"
    ))?;
    let r = bed.wait_report(
        "the production pointer accepted",
        |r| r["git"]["pointer"]["sequence"].as_u64() == Some(1),
        |_| Ok(()),
    )?;
    ensure!(
        git_field(&r, "commit") == production && r["git"]["pointer"]["stale"] == false,
        "{r:#}"
    );
    // Two more timer runs with nothing new: each is one conditional GET at the proxy.
    let (origin_seen, edge_seen) = (bed.git.requests()?.len(), bed.cdn.requests()?.len());
    let mut last = started(&r);
    for n in 1..=2 {
        let r = bed.wait_report(
            &format!("no-op poll {n} through the pointer"),
            |r| started(r) > last,
            |_| Ok(()),
        )?;
        ensure!(git_field(&r, "commit") == production, "{r:#}");
        last = started(&r);
    }
    let origin = bed.git.requests()?;
    let git_requests: Vec<_> = origin[origin_seen..]
        .iter()
        .filter(|e| e.path.starts_with("/git/"))
        .collect();
    ensure!(
        git_requests.is_empty(),
        "no-op polls through the pointer reached git: {git_requests:?}"
    );
    let edge = bed.cdn.requests()?;
    let polls = &edge[edge_seen..];
    ensure!(
        polls.len() >= 2
            && polls
                .iter()
                .all(|e| e.path == format!("/{POINTER}") && e.status == 304),
        "the proxy saw {polls:?}"
    );
    eprintln!(
        "e2e: {} no-op polls were 304s at the proxy; the origin saw {} requests, none to git",
        polls.len(),
        origin.len() - origin_seen
    );
    // The steps after this one push commits without publishing a pointer for them: back to
    // polling git, as a device without a pointer does.
    bed.sh("rm /etc/tend/tend.d/60-pointer.yaml")?;
    Ok(())
}

fn step6_power_cut(bed: &mut Bed) -> Result<()> {
    // The old and the new content of the large file.
    let old: Vec<u8> = (0..BIG_FILE_MIB << 20).map(|i| (i % 251) as u8).collect();
    let new: Vec<u8> = (0..BIG_FILE_MIB << 20).map(|i| (i % 241) as u8).collect();
    let (old_sum, new_sum) = (hex(&Sha256::digest(&old)), hex(&Sha256::digest(&new)));
    let role_with = rollout::role("hello", POWERCUT_RESOURCES);
    bed.publisher.checkout("production")?;
    bed.publisher.write(
        "roles/app/role.yaml",
        &role_with.replace("  - package: tend-tool\n", ""),
    )?;
    std::fs::write(bed.publisher.work().join("roles/app/files/big.bin"), &old)?;
    let first = bed.publisher.signed("production", "a large file")?;
    bed.wait_report(
        "the large file",
        |r| git_field(r, "commit") == first,
        |_| Ok(()),
    )?;
    ensure!(bed
        .sh("sha256sum /var/lib/e2e/big.bin")?
        .starts_with(&old_sum));

    // Rewrite it and install a package; cut the power once the rewrite is logged.
    bed.publisher.write("roles/app/role.yaml", &role_with)?;
    std::fs::write(bed.publisher.work().join("roles/app/files/big.bin"), &new)?;
    let second = bed
        .publisher
        .signed("production", "rewrite the large file, add a tool")?;
    let console = bed.vm.console_log();
    let mark = std::fs::metadata(&console)?.len() as usize;
    let deadline = Instant::now() + STEP_TIMEOUT;
    let cut_at = loop {
        let log = std::fs::read(&console)?;
        let tail = String::from_utf8_lossy(&log[mark.min(log.len())..]).into_owned();
        if tail.contains("/var/lib/e2e/big.bin") {
            bed.vm.power_cut();
            break tail;
        }
        ensure!(
            Instant::now() < deadline,
            "the rewrite never showed on the console\n{}",
            bed.vm.failure_context()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Mid-apply: the rewrite was logged, the run had not finished.
    let after = &cut_at[cut_at.find("/var/lib/e2e/big.bin").unwrap_or(0)..];
    ensure!(
        !after.contains("run finished"),
        "the kill landed after the run:\n{after}"
    );
    let last: Vec<&str> = cut_at.lines().rev().take(4).collect();
    eprintln!(
        "e2e: power cut; the console's last lines:\n{}",
        last.into_iter().rev().collect::<Vec<_>>().join("\n")
    );

    let took = bed.vm.boot()?;
    eprintln!("e2e: booted again in {took:.0?}");
    let sum = bed.sh("sha256sum /var/lib/e2e/big.bin | cut -d' ' -f1")?;
    ensure!(
        sum.trim() == old_sum || sum.trim() == new_sum,
        "big.bin is partial after the power cut"
    );
    let audit = bed.vm.sh("dpkg --audit", CMD)?;
    let journal = bed.sh("journalctl -b -u tend -o cat | grep -i dpkg || true")?;
    ensure!(
        audit.stdout.trim().is_empty() || journal.contains("repair"),
        "dpkg --audit after the power cut:\n{audit}\ntend said:\n{journal}"
    );
    let r = bed.wait_report(
        "the run after the power cut converged",
        |r| git_field(r, "commit") == second && (r["result"] == "ok" || r["result"] == "changed"),
        |_| Ok(()),
    )?;
    ensure!(r["counts"]["failed"] == 0, "{r:#}");
    ensure!(bed
        .sh("sha256sum /var/lib/e2e/big.bin")?
        .starts_with(&new_sum));
    ensure!(bed.sh("dpkg-query -W -f '${Status}' tend-tool")? == "install ok installed");
    ensure!(bed.vm.sh("dpkg --audit", CMD)?.stdout.trim().is_empty());
    Ok(())
}

fn step7_journal(bed: &mut Bed) -> Result<()> {
    let out = bed.sh("journalctl -u tend -o json --no-pager")?;
    let entries: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let finished: Vec<&Value> = entries
        .iter()
        .filter(|e| e.get("TEND_RESULT").is_some() && e.get("TEND_COMMIT").is_some())
        .collect();
    ensure!(
        finished.len() >= 5,
        "expected tend's run records with TEND_RESULT and TEND_COMMIT, found {} of {} entries",
        finished.len(),
        entries.len()
    );
    let results: Vec<&str> = finished
        .iter()
        .filter_map(|e| e["TEND_RESULT"].as_str())
        .collect();
    ensure!(
        results.contains(&"reverted") && results.contains(&"changed"),
        "{results:?}"
    );
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
