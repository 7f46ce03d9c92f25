//! Issue 16, item 1: waves within a stage. fleet.yaml gives branch main two waves an hour apart;
//! a device applies a new head once the head's signed committer time plus (wave - 1) × spacing
//! has passed on its trusted clock (here the system clock, which the chroot says timesyncd has
//! synchronized). Time is steered through the signed commit dates, never by sleeping.
//! Real git server, real SSH signatures, bookworm chroot.

use std::time::SystemTime;

use anyhow::{ensure, Result};
use tend_agent::run::waves::wave;
use tend_tests::pullbed::PullBed;
use tend_tests::skip_chroot_tests;

const HOUR: i64 = 3600;
const METRICS: &str = "/run/tend-metrics.prom";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A device on main with a synchronized clock and a metrics file; the fleet has
/// `rollout: {main: {waves: 2, spacing: 1h}}`.
fn bed() -> Result<PullBed> {
    let bed = PullBed::new("run-fleet")?;
    bed.configure(
        &bed.url(),
        "",
        &format!("report:\n  metrics_file: {METRICS}\n"),
    )?;
    bed.dev.write(
        &format!("/{}", tend_agent::source::pointer::TIMESYNC_SYNCHRONIZED),
        "",
    )?;
    let fleet = std::fs::read_to_string(bed.publisher.work().join("fleet.yaml"))?;
    bed.publisher.write(
        "fleet.yaml",
        &format!("{fleet}rollout:\n  main: {{waves: 2, spacing: 1h}}\n"),
    )?;
    Ok(bed)
}

/// Commits `site` for every device (fleet.yaml's var), signed and dated `at` (Unix seconds).
fn commit_at(bed: &PullBed, site: &str, message: &str, at: i64) -> Result<String> {
    let fleet = std::fs::read_to_string(bed.publisher.work().join("fleet.yaml"))?;
    let vars = fleet
        .lines()
        .map(|l| {
            if l.starts_with("vars:") {
                format!("vars: {{site: {site}}}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    bed.publisher.write("fleet.yaml", &format!("{vars}\n"))?;
    bed.publisher
        .signed_at("main", message, &format!("{at} +0000"))
}

fn run_as(bed: &PullBed, id: &str) -> Result<tend_tests::Outcome> {
    bed.dev.tend(&["run", "--device", id])
}

/// A device id in wave `w` of main's two waves.
fn id_in(w: u32) -> String {
    (0..)
        .map(|n| format!("pi-{n}"))
        .find(|id| wave("main", id, 2) == w)
        .unwrap_or_default()
}

fn rollout(bed: &PullBed) -> Result<serde_json::Value> {
    Ok(bed.report()?["git"]["rollout"].clone())
}

#[test]
fn wave_two_waits_one_spacing_after_the_head_time_and_keeps_its_last_good_commit() -> Result<()> {
    if skip_chroot_tests(
        "wave_two_waits_one_spacing_after_the_head_time_and_keeps_its_last_good_commit",
    ) {
        return Ok(());
    }
    let bed = bed()?;
    let id = id_in(2);
    let t = now();
    commit_at(&bed, "one", "one", t - 3 * HOUR)?;
    run_as(&bed, &id)?.expect_code(2)?;
    ensure!(bed.site() == "one\n");

    // Dated two hours ago: wave 2's hour has passed.
    let two = commit_at(&bed, "two", "two", t - 2 * HOUR)?;
    let out = run_as(&bed, &id)?;
    out.expect_code(2)?;
    ensure!(bed.site() == "two\n", "{out}");
    let r = rollout(&bed)?;
    ensure!(
        r["wave"] == 2 && r["waves"] == 2 && r["waiting"] == false,
        "{r}"
    );

    // Dated now: wave 2 applies it an hour from now; until then the device stays on `two`.
    let date = now();
    let three = commit_at(&bed, "three", "three", date)?;
    let out = run_as(&bed, &id)?;
    out.expect_code(0)?;
    ensure!(
        bed.site() == "two\n",
        "a head applied before its wave\n{out}"
    );
    let report = bed.report()?;
    let r = &report["git"]["rollout"];
    let at = tend_agent::clock::rfc3339((date + HOUR) as u64);
    ensure!(
        r["wave"] == 2 && r["waves"] == 2 && r["waiting"] == true && r["applies_at"] == at.as_str(),
        "{r}"
    );
    ensure!(report["result"] == "ok", "waiting is no failure: {report}");
    ensure!(report["git"]["commit"] == two.as_str() && report["git"]["head"] == three.as_str());
    ensure!(
        out.stdout
            .contains(&format!("wave 2 of 2, applies at {at}")),
        "{out}"
    );

    let status = bed.dev.tend(&["status"])?.ok()?;
    ensure!(
        status
            .stdout
            .contains(&format!("rollout:    wave 2 of 2, applies at {at}")),
        "{status}"
    );
    let inventory = bed.dev.tend(&["inventory"])?.ok()?;
    ensure!(
        inventory.stdout.contains("tend_wave=2/2\n")
            && inventory
                .stdout
                .contains(&format!("tend_wave_applies_at={at}\n")),
        "{inventory}"
    );
    let metrics = bed.dev.read_string(METRICS)?;
    ensure!(
        metrics.contains("tend_rollout_wave 2\n")
            && metrics.contains("tend_rollout_waves 2\n")
            && metrics.contains(&format!(
                "tend_rollout_applies_at_seconds {}\n",
                date + HOUR
            )),
        "{metrics}"
    );
    Ok(())
}

#[test]
fn wave_one_applies_a_new_head_at_once() -> Result<()> {
    if skip_chroot_tests("wave_one_applies_a_new_head_at_once") {
        return Ok(());
    }
    let bed = bed()?;
    let id = id_in(1);
    commit_at(&bed, "one", "one", now() - 3 * HOUR)?;
    run_as(&bed, &id)?.expect_code(2)?;
    let date = now();
    commit_at(&bed, "two", "two", date)?;
    let out = run_as(&bed, &id)?;
    out.expect_code(2)?;
    ensure!(bed.site() == "two\n", "{out}");
    let r = rollout(&bed)?;
    ensure!(
        r["wave"] == 1
            && r["waiting"] == false
            && r["applies_at"] == tend_agent::clock::rfc3339(date as u64).as_str(),
        "{r}"
    );
    Ok(())
}

#[test]
fn an_urgent_head_applies_at_once_in_wave_two() -> Result<()> {
    if skip_chroot_tests("an_urgent_head_applies_at_once_in_wave_two") {
        return Ok(());
    }
    let bed = bed()?;
    let id = id_in(2);
    commit_at(&bed, "one", "one", now() - 3 * HOUR)?;
    run_as(&bed, &id)?.expect_code(2)?;
    commit_at(
        &bed,
        "fixed",
        "Patch the site file\n\nTend-Urgent: yes\n",
        now(),
    )?;
    let out = run_as(&bed, &id)?;
    out.expect_code(2)?;
    ensure!(bed.site() == "fixed\n", "an urgent head waited\n{out}");
    let r = rollout(&bed)?;
    ensure!(
        r["wave"] == 2 && r["urgent"] == true && r["waiting"] == false,
        "{r}"
    );
    Ok(())
}
