//! Issue #15 item 4, several sources: `source.mirrors` (and `source.pointer_mirrors`) against the
//! test bed's real https server on 127.0.0.1. The origin is down (a closed port) or cuts every
//! connection (the fault relay resets it); the mirror serves the commit and the report names it.
//! What a mirror serves is verified like the origin's head: a commit signed by an unknown key is
//! refused, the device keeps its last good commit, and no further source is asked instead.

use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Result};
use tend_tests::faultrelay::{Fault, FaultyRelay};
use tend_tests::publisher::keygen;
use tend_tests::pullbed::PullBed;
use tend_tests::{skip_chroot_tests, tend_binary};

/// A URL on 127.0.0.1 where nothing listens: connecting is refused.
fn closed_port_url(path: &str) -> Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(format!("https://127.0.0.1:{port}/{path}"))
}

fn warnings(report: &serde_json::Value) -> Vec<String> {
    report["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_origin_that_cuts_every_connection_hands_over_to_the_mirror_which_serves_the_commit(
) -> Result<()> {
    if skip_chroot_tests(
        "an_origin_that_cuts_every_connection_hands_over_to_the_mirror_which_serves_the_commit",
    ) {
        return Ok(());
    }
    let bed = PullBed::new("run-fleet")?;
    let relay = FaultyRelay::start(([127, 0, 0, 1], bed.server.port()).into())?;
    let port = bed.server.port();
    let origin = bed
        .url()
        .replace(&format!(":{port}/"), &format!(":{}/", relay.port()));
    let mirror = bed.url();
    bed.configure(
        &origin,
        &format!("  connect_timeout: 5\n  timeout: 20\n  mirrors: [{mirror}]\n"),
        "",
    )?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\n")?;
    bed.publisher.signed("main", "site one")?;
    relay.set(Fault::None);
    bed.run()?.expect_code(2)?;
    let r = bed.report()?;
    ensure!(
        bed.site() == "one\n" && r["git"]["source_url"] == origin.as_str(),
        "{r:#}"
    );
    ensure!(
        relay.traffic().iter().sum::<u64>() > 0,
        "the origin was not asked"
    );

    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: two}\n")?;
    let two = bed.publisher.signed("main", "site two")?;
    relay.set(Fault::Reset { conn: 0, after: 0 });
    let started = Instant::now();
    let out = bed.run()?;
    let took = started.elapsed();
    out.expect_code(2)?;
    let r = bed.report()?;
    eprintln!("origin reset, mirror served: {took:.1?}");
    ensure!(
        bed.site() == "two\n"
            && r["git"]["commit"] == two.as_str()
            && r["git"]["source_url"] == mirror.as_str()
            && r["git"]["url"] == origin.as_str(),
        "{r:#}"
    );
    let w = warnings(&r);
    ensure!(
        w.iter()
            .any(|w| w.contains(&origin) && w.contains(&format!("trying {mirror}"))),
        "the report must warn that the origin failed and why: {w:#?}"
    );
    Ok(())
}

#[test]
fn an_origin_that_is_down_hands_over_and_a_mirror_commit_signed_by_an_unknown_key_is_refused(
) -> Result<()> {
    if skip_chroot_tests(
        "an_origin_that_is_down_hands_over_and_a_mirror_commit_signed_by_an_unknown_key_is_refused",
    ) {
        return Ok(());
    }
    let bed = PullBed::new("run-fleet")?;
    let origin = closed_port_url("git/fleet.git")?;
    let mirror = bed.url();
    bed.configure(&origin, &format!("  mirrors: [{mirror}]\n"), "")?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\n")?;
    let one = bed.publisher.signed("main", "site one")?;
    bed.run()?.expect_code(2)?;
    let r = bed.report()?;
    ensure!(
        bed.site() == "one\n" && r["git"]["source_url"] == mirror.as_str(),
        "{r:#}"
    );
    ensure!(
        warnings(&r)
            .iter()
            .any(|w| w.contains(&origin) && w.contains("cannot reach")),
        "{r:#}"
    );

    // The mirror serves a commit signed by a key the device does not pin: refused like the
    // origin's would be, the last good commit kept, and the report names the mirror and head.
    let stranger = keygen(bed.keys.path(), "stranger")?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: evil}\n")?;
    let evil = bed
        .publisher
        .publish("main", "signed by a stranger", Some(&stranger))?;
    bed.run()?.expect_code(4)?;
    let r = bed.report()?;
    let refused = r["git"]["refused"].as_str().unwrap_or_default();
    ensure!(
        bed.site() == "one\n"
            && r["git"]["commit"] == one.as_str()
            && r["git"]["head"] == evil.as_str()
            && r["git"]["fell_back"] == true
            && r["git"]["source_url"] == mirror.as_str()
            && refused.contains("refused"),
        "{r:#}"
    );
    Ok(())
}

#[test]
fn a_pointer_mirror_serves_the_pointer_when_the_first_pointer_url_is_down() -> Result<()> {
    if skip_chroot_tests("a_pointer_mirror_serves_the_pointer_when_the_first_pointer_url_is_down") {
        return Ok(());
    }
    let bed = PullBed::new("run-fleet")?;
    let first = closed_port_url("main.pointer")?;
    let second = bed.server.file_url("main.pointer");
    bed.configure(
        &bed.url(),
        &format!("  pointer: {first}\n  pointer_mirrors: [{second}]\n"),
        "",
    )?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\n")?;
    let one = bed.publisher.signed("main", "site one")?;
    let out = Command::new(tend_binary()?)
        .args(["publish", "pointer", "--stage", "main", "--key"])
        .arg(bed.publisher.key())
        .arg("--out")
        .arg(bed.server.docroot().join("main.pointer"))
        .args(["--expires", "1h"])
        .arg(bed.publisher.work())
        .output()?;
    ensure!(out.status.success(), "tend publish pointer: {out:?}");
    bed.run()?.expect_code(2)?;
    let r = bed.report()?;
    ensure!(
        bed.site() == "one\n"
            && r["git"]["commit"] == one.as_str()
            && r["git"]["pointer"]["commit"] == one.as_str(),
        "{r:#}"
    );
    ensure!(
        warnings(&r)
            .iter()
            .any(|w| w.contains(&first) && w.contains(&format!("trying {second}"))),
        "{r:#}"
    );
    Ok(())
}
