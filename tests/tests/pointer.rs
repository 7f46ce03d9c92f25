//! Issue #15: the signed stage pointer against the test bed's real https server (lighttpd, test
//! CA), with the pointer as a static file beside git-http-backend, made by `tend publish
//! pointer`. The server's access log counts the requests: an unchanged pointer is one `304` and
//! no git request; a pointer that names another commit than the git head, a replayed (lower
//! sequence) one and an expired one are refused, and the device keeps its last good commit.

use std::process::Command;

use anyhow::{ensure, Result};
use tend_tests::gitserver::AccessEntry;
use tend_tests::pullbed::PullBed;
use tend_tests::{skip_chroot_tests, tend_binary};

const POINTER: &str = "main.pointer";

/// `tend publish pointer` on the publisher's work tree, into the server's docroot.
fn publish(bed: &PullBed, extra: &[&str]) -> Result<()> {
    let out = Command::new(tend_binary()?)
        .args(["publish", "pointer", "--stage", "main", "--key"])
        .arg(bed.publisher.key())
        .arg("--out")
        .arg(bed.server.docroot().join(POINTER))
        .args(extra)
        .arg(bed.publisher.work())
        .output()?;
    ensure!(out.status.success(), "tend publish pointer: {out:?}");
    Ok(())
}

/// The requests logged since `seen` of them.
fn since(bed: &PullBed, seen: &mut usize) -> Result<Vec<AccessEntry>> {
    let all = bed.server.requests()?;
    let new = all[*seen..].to_vec();
    *seen = all.len();
    Ok(new)
}

fn git_requests(r: &[AccessEntry]) -> usize {
    r.iter().filter(|e| e.path.starts_with("/git/")).count()
}

/// A run that converged (0 or 2).
fn converged(bed: &PullBed) -> Result<()> {
    let out = bed.run()?;
    ensure!(matches!(out.code(), Some(0 | 2)), "{out}");
    Ok(())
}

fn applied(bed: &PullBed) -> Result<String> {
    Ok(bed.report()?["git"]["commit"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

#[test]
fn an_unchanged_pointer_is_one_304_and_a_wrong_replayed_or_expired_pointer_is_refused() -> Result<()>
{
    if skip_chroot_tests(
        "an_unchanged_pointer_is_one_304_and_a_wrong_replayed_or_expired_pointer_is_refused",
    ) {
        return Ok(());
    }
    let bed = PullBed::new("run-fleet")?;
    let url = bed.server.file_url(POINTER);
    bed.configure(&bed.url(), &format!("  pointer: {url}\n"), "")?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\n")?;
    let c1 = bed.publisher.signed("main", "one")?;
    publish(&bed, &["--sequence", "10", "--expires", "1h"])?;
    let mut seen = 0;

    // A new pointer: one GET of it, then git, and exactly the named commit is applied.
    converged(&bed)?;
    ensure!(applied(&bed)? == c1, "{}", bed.report()?);
    let first = since(&bed, &mut seen)?;
    ensure!(
        first[0].path == format!("/{POINTER}")
            && first[0].status == 200
            && git_requests(&first) > 0,
        "{first:?}"
    );

    // Unchanged: one request, a 304, and no git request, even with a new head on the server.
    let c2 = bed.publisher.signed("main", "two")?;
    converged(&bed)?;
    let quiet = since(&bed, &mut seen)?;
    ensure!(
        quiet.len() == 1 && quiet[0].status == 304 && quiet[0].path == format!("/{POINTER}"),
        "an unchanged pointer must be one 304 and no git request: {quiet:?}"
    );
    let wire = quiet[0].bytes_in + quiet[0].bytes_out;
    eprintln!("an unchanged pointer: 1 request, {wire} bytes of HTTP on the wire");
    ensure!(
        wire <= 1024,
        "an unchanged pointer must cost at most 1 KiB: {quiet:?}"
    );
    ensure!(applied(&bed)? == c1, "{}", bed.report()?);

    // A new pointer names c2: git is asked and c2 applied.
    publish(&bed, &["--sequence", "11", "--expires", "1h"])?;
    converged(&bed)?;
    ensure!(applied(&bed)? == c2, "{}", bed.report()?);
    since(&bed, &mut seen)?;

    // The pointer names a commit the git server does not serve as the head: refused.
    let c3 = bed.publisher.signed("main", "three")?;
    publish(&bed, &["--sequence", "12", "--expires", "1h"])?;
    bed.publisher.signed("main", "four, not the pointer's")?;
    let out = bed.run()?;
    out.expect_code(4)?;
    let report = bed.report()?;
    ensure!(
        applied(&bed)? == c2
            && report["git"]["refused"]
                .as_str()
                .is_some_and(|r| r.contains("the signed pointer names") && r.contains(&c3[..12])),
        "{report}"
    );

    // A lower sequence is a replay: refused before any git request.
    publish(&bed, &["--sequence", "5", "--expires", "1h"])?;
    since(&bed, &mut seen)?;
    bed.run()?.expect_code(4)?;
    let replay = since(&bed, &mut seen)?;
    ensure!(git_requests(&replay) == 0, "{replay:?}");
    let report = bed.report()?;
    ensure!(
        applied(&bed)? == c2
            && report["git"]["refused"]
                .as_str()
                .is_some_and(|r| r.contains("refusing a replayed pointer")),
        "{report}"
    );

    // An expired pointer (judged by the server's Date) is refused.
    publish(&bed, &["--sequence", "20", "--expires", "1s"])?;
    std::thread::sleep(std::time::Duration::from_secs(3));
    bed.run()?.expect_code(4)?;
    let report = bed.report()?;
    ensure!(
        applied(&bed)? == c2
            && report["git"]["refused"]
                .as_str()
                .is_some_and(|r| r.contains("expired at")),
        "{report}"
    );
    ensure!(
        git_requests(&since(&bed, &mut seen)?) == 0,
        "an expired pointer must not lead to git"
    );
    Ok(())
}

#[test]
fn a_frozen_pointer_past_max_staleness_reports_stale_and_keeps_the_last_good_commit() -> Result<()>
{
    if skip_chroot_tests(
        "a_frozen_pointer_past_max_staleness_reports_stale_and_keeps_the_last_good_commit",
    ) {
        return Ok(());
    }
    let bed = PullBed::new("run-fleet")?;
    let url = bed.server.file_url(POINTER);
    bed.configure(
        &bed.url(),
        &format!("  pointer: {url}\n  max_staleness: 2\n"),
        "",
    )?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\n")?;
    let c1 = bed.publisher.signed("main", "one")?;
    publish(&bed, &["--expires", "1h"])?;
    converged(&bed)?;
    let fresh = bed.report()?;
    ensure!(
        applied(&bed)? == c1 && fresh["git"]["pointer"]["stale"] == false,
        "{fresh}"
    );
    let mut seen = bed.server.requests()?.len();

    // The pointer is frozen (the server keeps answering 304) while git moves on.
    bed.publisher.signed("main", "two")?;
    std::thread::sleep(std::time::Duration::from_secs(4));
    let out = bed.run()?;
    out.expect_code(13)?;
    let report = bed.report()?;
    ensure!(
        applied(&bed)? == c1 && report["git"]["pointer"]["stale"] == true,
        "{report}"
    );
    let frozen = since(&bed, &mut seen)?;
    ensure!(frozen.len() == 1 && frozen[0].status == 304, "{frozen:?}");
    let status = bed.dev.tend(&["status"])?.ok()?.stdout;
    ensure!(status.contains("(stale)"), "{status}");
    let inventory = bed.dev.tend(&["inventory"])?.ok()?.stdout;
    ensure!(inventory.contains("tend_stale=true"), "{inventory}");
    Ok(())
}
