//! Issue #14: what a hostile git server can make a device do. The server is the real
//! `git http-backend` behind a proxy that lies (`tend_tests::gitserver::LyingGitServer`), so the
//! objects, packs and signatures are genuine and only what the server alone vouches for is
//! false. The device is a bookworm chroot running `tend run` / `tend apply --ref`.

use anyhow::{ensure, Result};
use tend_tests::gitserver::{Lie, LyingGitServer};
use tend_tests::publisher::git;
use tend_tests::pullbed::PullBed;
use tend_tests::skip_chroot_tests;

/// A pulling device in strict tag mode, fetching through the lying server.
fn tag_bed() -> Result<(PullBed, LyingGitServer)> {
    let bed = PullBed::new("run-fleet")?;
    let server = LyingGitServer::start(bed.repo.root())?;
    bed.configure(&server.url("fleet.git"), "  follow: tags\n", "")?;
    let cfg = bed.dev.read_string("/etc/tend/tend.yaml")?;
    bed.dev.write(
        "/etc/tend/tend.yaml",
        cfg.replace("branch: main", "branch: production"),
    )?;
    Ok((bed, server))
}

/// The device applied a signed `production/1` (site prod-1); the server now holds a signed
/// `production/2` on a signed commit and an unsigned commit (site evil) that it also ships,
/// under a lightweight tag of the same stage. Returns the unsigned commit's id.
fn signed_tag_and_shipped_unsigned_commit(bed: &PullBed) -> Result<String> {
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: prod-1}\n")?;
    let prod1 = bed.publisher.signed("main", "prod 1")?;
    bed.publisher.signed_tag("production/1", &prod1)?;
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "prod-1\n");
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: prod-2}\n")?;
    let prod2 = bed.publisher.signed("main", "prod 2")?;
    bed.publisher.signed_tag("production/2", &prod2)?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: evil}\n")?;
    let evil = bed.publisher.publish("evil", "unsigned", None)?;
    git(
        bed.publisher.work(),
        &[
            "push",
            "-q",
            &bed.publisher.bare().display().to_string(),
            &format!("{evil}:refs/tags/production/2-evil"),
        ],
    )?;
    Ok(evil)
}

/// The bed above, with the server advertising the signed `production/2` as peeling to the
/// unsigned commit (whose id is returned).
fn server_lying_about_production_2() -> Result<(PullBed, LyingGitServer, String)> {
    let (bed, server) = tag_bed()?;
    let evil = signed_tag_and_shipped_unsigned_commit(&bed)?;
    server.lie(Lie::Peel {
        tag: "production/2".into(),
        to: evil.clone(),
    });
    Ok((bed, server, evil))
}

fn refused(bed: &PullBed) -> Result<String> {
    Ok(bed.report()?["git"]["refused"]
        .as_str()
        .unwrap_or("")
        .to_string())
}

#[test]
fn lying_peel_in_ref_advertisement_is_refused() -> Result<()> {
    if skip_chroot_tests("lying_peel_in_ref_advertisement_is_refused") {
        return Ok(());
    }
    let (bed, server, evil) = server_lying_about_production_2()?;
    let out = bed.run()?;
    ensure!(
        bed.site() == "prod-1\n",
        "the commit the server claimed the signed tag peels to was applied\n{out}"
    );
    out.expect_code(4)?;
    let why = refused(&bed)?;
    ensure!(
        why.contains("production/2") && why.contains("lying") && why.contains(&evil),
        "{why}"
    );
    ensure!(
        bed.report()?["git"]["commit"]
            .as_str()
            .is_some_and(|c| !c.starts_with(&evil[..12])),
        "{}",
        bed.report()?
    );

    // An honest server again: the signed production/2 applies, with what its payload names.
    server.lie(Lie::None);
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "prod-2\n");
    Ok(())
}

#[test]
fn lying_peel_is_refused_by_apply_ref_too() -> Result<()> {
    if skip_chroot_tests("lying_peel_is_refused_by_apply_ref_too") {
        return Ok(());
    }
    let (bed, _server, evil) = server_lying_about_production_2()?;
    let out = bed
        .dev
        .tend(&["apply", "--ref", "production/2", "--device", "dev1"])?;
    ensure!(
        bed.site() == "prod-1\n",
        "apply --ref applied the server's peel\n{out}"
    );
    out.expect_code(4)?;
    let why = refused(&bed)?;
    ensure!(why.contains("lying") && why.contains(&evil), "{why}");
    Ok(())
}
