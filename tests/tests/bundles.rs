//! Issue #15, objects from static hosting: `tend publish pointer --bundles` writes git bundles
//! beside the pointer in the test bed's https docroot, listed (size, sha256) in the signed
//! pointer. The server's access log shows which file a run fetched and that it made no git
//! request: an incremental bundle when one connects to what the device has, the full one when
//! none does; a truncated or corrupted bundle is refused (a warning in the report) and git
//! serves the run. The bytes a device moves to reach a new commit, bundle against git, are
//! printed for docs/scale.md.

use std::process::Command;

use anyhow::{ensure, Result};
use tend_tests::gitserver::AccessEntry;
use tend_tests::pullbed::PullBed;
use tend_tests::{skip_chroot_tests, tend_binary};

const POINTER: &str = "main.pointer";

fn publish(bed: &PullBed, extra: &[&str]) -> Result<()> {
    let out = Command::new(tend_binary()?)
        .args([
            "publish",
            "pointer",
            "--stage",
            "main",
            "--expires",
            "1h",
            "--key",
        ])
        .arg(bed.publisher.key())
        .arg("--out")
        .arg(bed.server.docroot().join(POINTER))
        .args(extra)
        .arg(bed.publisher.work())
        .output()?;
    ensure!(out.status.success(), "tend publish pointer: {out:?}");
    Ok(())
}

/// The signed pointer's bundle list, as published.
fn listed(bed: &PullBed) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(bed.server.docroot().join(POINTER))?;
    let doc: serde_json::Value = serde_json::from_str(text.lines().next().unwrap_or_default())?;
    Ok(doc["bundles"].as_array().cloned().unwrap_or_default())
}

fn since(bed: &PullBed, seen: &mut usize) -> Result<Vec<AccessEntry>> {
    let all = bed.server.requests()?;
    let new = all[*seen..].to_vec();
    *seen = all.len();
    Ok(new)
}

fn git_requests(r: &[AccessEntry]) -> usize {
    r.iter().filter(|e| e.path.starts_with("/git/")).count()
}

fn bundle_requests(r: &[AccessEntry]) -> Vec<String> {
    r.iter()
        .filter(|e| e.path.ends_with(".bundle"))
        .map(|e| e.path.trim_start_matches('/').to_string())
        .collect()
}

fn wire(r: &[AccessEntry]) -> u64 {
    r.iter().map(|e| e.bytes_in + e.bytes_out).sum()
}

/// A run that converged to `commit`.
fn reaches(bed: &PullBed, commit: &str) -> Result<serde_json::Value> {
    let out = bed.run()?;
    ensure!(matches!(out.code(), Some(0 | 2)), "{out}");
    let report = bed.report()?;
    ensure!(report["git"]["commit"] == commit, "{report}");
    Ok(report)
}

/// A note in the repo: a commit of about the same size each time that changes nothing on the
/// device.
fn note(bed: &PullBed, n: usize) -> Result<String> {
    bed.publisher
        .write("notes.txt", &format!("release note {n}\n"))?;
    bed.publisher.signed("main", &format!("note {n}"))
}

/// A change of the device's files: one device file's vars.
fn change(bed: &PullBed, n: usize) -> Result<String> {
    bed.publisher
        .write("devices/dev1.yaml", &format!("vars: {{site: site-{n}}}\n"))?;
    bed.publisher.signed("main", &format!("change {n}"))
}

#[test]
fn an_incremental_bundle_is_used_when_it_connects_the_full_one_otherwise_and_a_bad_one_falls_back_to_git(
) -> Result<()> {
    if skip_chroot_tests("an_incremental_bundle_is_used_when_it_connects_the_full_one_otherwise_and_a_bad_one_falls_back_to_git") {
        return Ok(());
    }
    let bed = PullBed::new("run-fleet")?;
    let url = bed.server.file_url(POINTER);
    bed.configure(&bed.url(), &format!("  pointer: {url}\n"), "")?;
    let mut seen = 0;

    // The device converges once through git (its files change, so the connectivity guard,
    // which asks the git server, runs then and not after the commits below: they change
    // nothing on the device, so any git request after this is a fetch).
    let c0 = change(&bed, 0)?;
    publish(&bed, &[])?;
    reaches(&bed, &c0)?;
    since(&bed, &mut seen)?;

    // Only the full bundle listed: it is used, and there is no git request.
    let c1 = note(&bed, 1)?;
    publish(&bed, &["--bundles", "--incremental", "0"])?;
    ensure!(listed(&bed)?.len() == 1, "{:?}", listed(&bed)?);
    reaches(&bed, &c1)?;
    let first = since(&bed, &mut seen)?;
    let fetched = bundle_requests(&first);
    ensure!(
        git_requests(&first) == 0 && fetched.len() == 1 && fetched[0].contains(".full."),
        "the full bundle, and no git request: {first:?}"
    );

    // The device has c1: the incremental bundle from it.
    let c2 = note(&bed, 2)?;
    publish(&bed, &["--bundles"])?;
    reaches(&bed, &c2)?;
    let incremental = since(&bed, &mut seen)?;
    let fetched = bundle_requests(&incremental);
    ensure!(
        git_requests(&incremental) == 0
            && fetched.len() == 1
            && fetched[0].contains(&format!(".{}.{}.", &c2[..12], &c1[..12])),
        "the incremental bundle from c1, and no git request: {incremental:?}"
    );
    let by_bundle = wire(&incremental);

    // Two publications the device misses: of the list (from c3, from c2, full) it takes the
    // one from c2, the commit it has.
    let c3 = note(&bed, 3)?;
    publish(&bed, &["--bundles"])?;
    let c4 = note(&bed, 4)?;
    publish(&bed, &["--bundles"])?;
    ensure!(
        listed(&bed)?.len() == 4,
        "full, from c3, c2, c1: {:?}",
        listed(&bed)?
    );
    since(&bed, &mut seen)?;
    reaches(&bed, &c4)?;
    let skipped = since(&bed, &mut seen)?;
    let fetched = bundle_requests(&skipped);
    ensure!(
        git_requests(&skipped) == 0
            && fetched.len() == 1
            && fetched[0].contains(&format!(".{}.{}.", &c4[..12], &c2[..12]))
            && !fetched[0].contains(&c3[..12]),
        "{skipped:?}"
    );

    // A corrupted bundle (one byte changed) and a truncated one are refused; git serves.
    for (n, damage) in [(6, "corrupted"), (7, "truncated")] {
        let c = note(&bed, n)?;
        publish(&bed, &["--bundles"])?;
        let list = listed(&bed)?;
        let inc = list
            .iter()
            .find(|b| b["prerequisite"].is_string())
            .and_then(|b| b["file"].as_str())
            .unwrap_or_default()
            .to_string();
        let path = bed.server.docroot().join(&inc);
        let mut bytes = std::fs::read(&path)?;
        if damage == "corrupted" {
            let at = bytes.len() - 30;
            bytes[at] ^= 0xff;
        } else {
            bytes.truncate(bytes.len() / 2);
        }
        std::fs::write(&path, &bytes)?;
        let report = reaches(&bed, &c)?;
        let warned = report["warnings"].as_array().is_some_and(|w| {
            w.iter().any(|l| {
                l.as_str().is_some_and(|l| {
                    l.contains("refused")
                        && l.contains(&inc)
                        && l.contains(if damage == "corrupted" {
                            "sha256"
                        } else {
                            "truncated"
                        })
                })
            })
        });
        ensure!(warned, "{damage}: {report}");
        let fallback = since(&bed, &mut seen)?;
        ensure!(
            git_requests(&fallback) > 0,
            "{damage}: git serves: {fallback:?}"
        );
    }

    // No bundle listed: git, as without bundles; and the same size of change through git, for
    // the comparison.
    let c8 = note(&bed, 8)?;
    publish(&bed, &[])?;
    reaches(&bed, &c8)?;
    let plain = since(&bed, &mut seen)?;
    ensure!(
        git_requests(&plain) > 0 && bundle_requests(&plain).is_empty(),
        "no bundle listed: git serves: {plain:?}"
    );
    let by_git = wire(&plain);
    eprintln!(
        "bytes on the wire to reach a new commit (one line of one file changed): \
         pointer + incremental bundle {by_bundle}, pointer + git fetch {by_git}"
    );
    Ok(())
}

/// The names of the connectivity guard's steps in a report, with their targets.
fn guard_steps(report: &serde_json::Value) -> Vec<String> {
    report["guard"]["steps"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| format!("{} {}", s["step"].as_str().unwrap_or("?"), s["target"]))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_change_that_came_by_bundle_is_guarded_through_the_pointer_without_a_git_request() -> Result<()>
{
    if skip_chroot_tests(
        "a_change_that_came_by_bundle_is_guarded_through_the_pointer_without_a_git_request",
    ) {
        return Ok(());
    }
    let bed = PullBed::new("run-fleet")?;
    let url = bed.server.file_url(POINTER);
    bed.configure(&bed.url(), &format!("  pointer: {url}\n"), "")?;
    let mut seen = 0;

    // From nothing to the first commit, then to a change of the device's files: both from
    // bundles, both guarded (the device's files change), and the git server hears nothing.
    for n in 0..2 {
        let c = change(&bed, n)?;
        publish(&bed, &["--bundles"])?;
        let report = reaches(&bed, &c)?;
        let steps = guard_steps(&report);
        ensure!(
            report["guard"]["ok"] == true && steps.iter().any(|s| s.starts_with("pointer ")),
            "change {n}: the guard polled the pointer: {steps:?}\n{report}"
        );
        let heard = since(&bed, &mut seen)?;
        ensure!(
            git_requests(&heard) == 0 && !bundle_requests(&heard).is_empty(),
            "change {n}: bundles and no git request: {heard:?}"
        );
    }

    // A pointer without bundles: the next commit would come from git, so the guard asks git.
    let c = change(&bed, 2)?;
    publish(&bed, &[])?;
    let report = reaches(&bed, &c)?;
    let steps = guard_steps(&report);
    ensure!(
        report["guard"]["ok"] == true && steps.iter().any(|s| s.starts_with("refs ")),
        "without bundles the guard lists the git server's refs: {steps:?}"
    );
    Ok(())
}
