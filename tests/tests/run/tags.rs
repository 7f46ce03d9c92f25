//! Strict tag mode (`source.follow: tags`): the device follows one stage's signed tags, whose
//! numbers only grow. Another stage's tag and an older number are refused, and a tag numbered
//! far ahead moves the device no more than `verify.max_tag_step`.

use super::*;

#[test]
fn strict_tag_mode_refuses_another_stages_tag_and_older_numbers() -> Result<()> {
    if skip_chroot_tests("strict_tag_mode_refuses_another_stages_tag_and_older_numbers") {
        return Ok(());
    }
    let bed = Bed::new()?;
    let cfg = bed.dev.read_string("/etc/tend/tend.yaml")?;
    bed.dev.write(
        "/etc/tend/tend.yaml",
        cfg.replace("branch: main", "branch: production\n  follow: tags"),
    )?;
    first_production_tag(&bed)?;
    ensure!(
        bed.report()?["git"]["signer"]["tag"] == "production/1",
        "{}",
        bed.report()?
    );

    // A signed tag of another stage, re-served under production's name: refused.
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: canary-only}\n")?;
    let canary = bed.signed("main", "canary work")?;
    bed.publisher.signed_tag("canary/7", &canary)?;
    let raw_tag = git(bed.publisher.work(), &["rev-parse", "refs/tags/canary/7"])?;
    git(
        bed.publisher.work(),
        &[
            "push",
            "-q",
            "-f",
            &bed.publisher.bare().display().to_string(),
            &format!("{raw_tag}:refs/tags/production/2"),
        ],
    )?;
    let out = bed.run()?;
    out.expect_code(4)?;
    ensure!(
        bed.site() == "prod-1\n",
        "another stage's tag was applied\n{out}"
    );
    ensure!(
        bed.report()?["git"]["refused"]
            .as_str()
            .unwrap_or("")
            .contains("another stage"),
        "{}",
        bed.report()?
    );

    // A properly signed production/3 is applied; then only an older number is left: refused.
    bed.publisher.signed_tag("production/3", &canary)?;
    git(
        bed.publisher.work(),
        &[
            "push",
            "-q",
            &bed.publisher.bare().display().to_string(),
            ":refs/tags/production/2",
        ],
    )?;
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "canary-only\n");
    git(
        bed.publisher.work(),
        &[
            "push",
            "-q",
            &bed.publisher.bare().display().to_string(),
            ":refs/tags/production/3",
        ],
    )?;
    let out = bed.run()?;
    out.expect_code(4)?;
    ensure!(
        bed.report()?["git"]["refused"]
            .as_str()
            .unwrap_or("")
            .contains("rollback"),
        "{out}"
    );
    Ok(())
}

/// TUF's fast-forward attack: a tag numbered far ahead (signed with a stolen key) would make
/// every later genuine tag look like a rollback. With `verify.max_tag_step` the device never
/// moves further than the step in one run, so the genuine next tags keep applying.
#[test]
fn signed_tag_far_ahead_is_not_a_fast_forward() -> Result<()> {
    if skip_chroot_tests("signed_tag_far_ahead_is_not_a_fast_forward") {
        return Ok(());
    }
    let bed = Bed::new()?;
    bed.configure(&bed.url(), "  follow: tags\n", "  max_tag_step: 5\n")?;
    let cfg = bed.dev.read_string("/etc/tend/tend.yaml")?;
    bed.dev.write(
        "/etc/tend/tend.yaml",
        cfg.replace("branch: main", "branch: production"),
    )?;
    first_production_tag(&bed)?;

    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: far-ahead}\n")?;
    let far = bed.signed("main", "far ahead")?;
    bed.publisher.signed_tag("production/1000000", &far)?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: prod-2}\n")?;
    let prod2 = bed.signed("main", "prod 2")?;
    bed.publisher.signed_tag("production/2", &prod2)?;
    let out = bed.run()?;
    out.expect_code(2)?;
    ensure!(bed.site() == "prod-2\n", "the far tag was taken\n{out}");
    let report = bed.report()?;
    ensure!(
        report["warnings"]
            .to_string()
            .contains("production/1000000"),
        "{report}"
    );

    // The genuine next tag still applies: the far one did not move the device's floor.
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: prod-3}\n")?;
    let prod3 = bed.signed("main", "prod 3")?;
    bed.publisher.signed_tag("production/3", &prod3)?;
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "prod-3\n");
    Ok(())
}

/// Publishes and applies `production/1`, a signed tag of a commit of `main`.
fn first_production_tag(bed: &Bed) -> Result<()> {
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: prod-1}\n")?;
    let prod1 = bed.signed("main", "prod 1")?;
    bed.publisher.signed_tag("production/1", &prod1)?;
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "prod-1\n");
    Ok(())
}
