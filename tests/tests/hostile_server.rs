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

// Finding 4 (endless data, slow retrieval) and 8 (server bytes in errors): the server attacks
// the client. Each refused fetch keeps the last good commit and stays under PEAK_RSS_KIB.

/// What a refused fetch may take at its peak; before the bounds an endless ref listing grew
/// tend to 4.5 GB.
const PEAK_RSS_KIB: u64 = 64 * 1024;

/// A device over plain http through the lying server, with `source_extra` in its `source:`,
/// that has applied a signed commit (site one) which stays its last good.
fn bounded_bed(source_extra: &str) -> Result<(PullBed, LyingGitServer)> {
    let bed = PullBed::new("run-fleet")?;
    let server = LyingGitServer::start(bed.repo.root())?;
    bed.configure(&server.url("fleet.git"), source_extra, "")?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\n")?;
    bed.publisher.signed("main", "one")?;
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "one\n", "{}", bed.report()?);
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: two}\n")?;
    bed.publisher.signed("main", "two")?;
    Ok((bed, server))
}

/// The run after the lie: refused, the last good commit kept, memory bounded, and the reason
/// (returned) from the report.
fn refused_fetch(bed: &PullBed, name: &str) -> Result<String> {
    let started = std::time::Instant::now();
    let out = bed.run()?;
    eprintln!(
        "{name}: tend took {:.1}s and {} KiB at its peak",
        started.elapsed().as_secs_f64(),
        out.peak_rss_kib
    );
    ensure!(
        bed.site() == "one\n",
        "the last good commit was not kept\n{out}"
    );
    ensure!(out.code() != Some(2) && out.code() != Some(0), "{out}");
    ensure!(
        out.peak_rss_kib < PEAK_RSS_KIB,
        "tend took {} KiB at its peak (bound {PEAK_RSS_KIB})\n{out}",
        out.peak_rss_kib
    );
    let why = refused(bed)?;
    ensure!(!why.is_empty(), "{}", bed.report()?);
    Ok(why)
}

#[test]
fn endless_ref_listing_is_cut_at_the_bound() -> Result<()> {
    if skip_chroot_tests("endless_ref_listing_is_cut_at_the_bound") {
        return Ok(());
    }
    let (bed, server) = bounded_bed("  timeout: 60\n")?;
    server.lie(Lie::EndlessRefs);
    let why = refused_fetch(&bed, "endless ref listing")?;
    ensure!(
        why.contains("the ref listing went past tend's bound") && why.contains("10000 refs"),
        "{why}"
    );
    server.lie(Lie::None);
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "two\n");
    Ok(())
}

#[test]
fn pack_declaring_millions_of_objects_is_refused() -> Result<()> {
    if skip_chroot_tests("pack_declaring_millions_of_objects_is_refused") {
        return Ok(());
    }
    let (bed, server) = bounded_bed("  timeout: 60\n")?;
    server.lie(Lie::Objects(30_000_000));
    let why = refused_fetch(&bed, "pack of 30 M objects")?;
    ensure!(
        why.contains("the pack's object count went past tend's bound")
            && why.contains("30000000 objects")
            && why.contains("source.max_fetch_bytes"),
        "{why}"
    );
    Ok(())
}

#[test]
fn oversized_pack_is_refused_at_max_fetch_bytes() -> Result<()> {
    if skip_chroot_tests("oversized_pack_is_refused_at_max_fetch_bytes") {
        return Ok(());
    }
    let (bed, _server) = bounded_bed("  max_fetch_bytes: 1048576\n")?;
    // 3 MiB that do not compress: the honest pack of the next commit is past the bound.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(bed.publisher.work().join("noise.bin"), noise)?;
    bed.publisher.signed("main", "big")?;
    let why = refused_fetch(&bed, "3 MiB pack, bound 1 MiB")?;
    ensure!(
        why.contains("the pack went past tend's bound")
            && why.contains("more than 1048576 bytes")
            && why.contains("raise source.max_fetch_bytes"),
        "{why}"
    );
    let cfg = bed.dev.read_string("/etc/tend/tend.yaml")?;
    bed.dev.write(
        "/etc/tend/tend.yaml",
        cfg.replace("max_fetch_bytes: 1048576", "max_fetch_bytes: 8388608"),
    )?;
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "two\n");
    Ok(())
}

#[test]
fn slow_retrieval_is_cut_by_the_minimum_rate() -> Result<()> {
    if skip_chroot_tests("slow_retrieval_is_cut_by_the_minimum_rate") {
        return Ok(());
    }
    // Retries share the one 12 s budget: without it, 3 retries of a trickling server hold the
    // run (and its lock) for several timeouts.
    let (bed, server) =
        retrying_bed("  timeout: 12\n  min_transfer_rate: 1024\n  transfer_rate_window: 2\n")?;
    server.lie(Lie::Trickle { delay_ms: 100 });
    let started = std::time::Instant::now();
    let why = refused_fetch(&bed, "10 bytes/s")?;
    let took = started.elapsed();
    ensure!(
        why.contains("the transfer rate went past tend's bound")
            && why.contains("below the minimum of 1024 bytes/s")
            && why.contains("source.min_transfer_rate"),
        "{why}"
    );
    ensure!(took.as_secs() < 20, "the run took {took:?}: {why}");
    Ok(())
}

#[test]
fn server_bytes_in_a_bad_header_are_truncated_and_escaped() -> Result<()> {
    if skip_chroot_tests("server_bytes_in_a_bad_header_are_truncated_and_escaped") {
        return Ok(());
    }
    let (bed, server) = bounded_bed("")?;
    // No colon, so no header: one 60 KB line with a terminal escape and a carriage return.
    let mut line = b"X-Forged \x1b[2J\rchanged file /etc/shadow - created ".to_vec();
    line.extend(std::iter::repeat_n(b'A', 60_000));
    server.lie(Lie::BadHeader(line));
    let out = bed.run()?;
    let why = refused_fetch(&bed, "bad header")?;
    ensure!(
        why.contains("bad header line") && why.contains("\\x1b[2J"),
        "{why}"
    );
    let report = bed.report()?;
    let mut shown = vec![why];
    shown.extend(
        report["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e.to_string()),
    );
    shown.extend(
        out.stdout
            .lines()
            .chain(out.stderr.lines())
            .map(String::from),
    );
    for s in &shown {
        ensure!(
            s.len() < 2048
                && !s.contains('\u{1b}')
                && !s.contains("AAAAAAAAAA".repeat(30).as_str()),
            "server bytes reached a message whole ({} bytes): {}",
            s.len(),
            &s[..s.len().min(400)]
        );
    }
    Ok(())
}

// Issue #15, item 3: a polite device. A server that says "not now" (429/503) is asked again
// after its Retry-After, within the one source.timeout; one that keeps saying it leaves the
// device on its last good commit in a `throttled` state, not a failed one.

/// `bounded_bed` with `retries: 3` (the pull beds default to none).
fn retrying_bed(source_extra: &str) -> Result<(PullBed, LyingGitServer)> {
    let (bed, server) = bounded_bed(source_extra)?;
    let cfg = bed.dev.read_string("/etc/tend/tend.yaml")?;
    bed.dev.write(
        "/etc/tend/tend.yaml",
        cfg.replace("retries: 0", "retries: 3"),
    )?;
    Ok((bed, server))
}

#[test]
fn server_429_with_retry_after_is_honoured_then_the_fetch_succeeds() -> Result<()> {
    if skip_chroot_tests("server_429_with_retry_after_is_honoured_then_the_fetch_succeeds") {
        return Ok(());
    }
    let (bed, server) = retrying_bed("  timeout: 60\n")?;
    let before = server.log().len();
    server.lie(Lie::Throttle {
        status: 429,
        retry_after: Some("2".into()),
        times: 1,
    });
    let out = bed.run()?;
    out.expect_code(2)?;
    ensure!(bed.site() == "two\n", "{out}");
    let log = server.log().split_off(before);
    ensure!(log.len() >= 2 && log[0].status == 429, "{log:#?}");
    let waited = log[1].at.duration_since(log[0].at);
    eprintln!("the server's log: the request after the 429 came {waited:?} later");
    ensure!(
        waited >= std::time::Duration::from_secs(2),
        "asked again {waited:?} after a 429 with Retry-After: 2\n{log:#?}"
    );
    ensure!(
        out.stderr
            .contains("throttled by 127.0.0.1 (429, Retry-After 2 s)"),
        "{out}"
    );
    Ok(())
}

#[test]
fn server_503_without_retry_after_is_asked_again_after_a_jittered_backoff() -> Result<()> {
    if skip_chroot_tests("server_503_without_retry_after_is_asked_again_after_a_jittered_backoff") {
        return Ok(());
    }
    let (bed, server) = retrying_bed("  timeout: 60\n")?;
    let before = server.log().len();
    server.lie(Lie::Throttle {
        status: 503,
        retry_after: None,
        times: 2,
    });
    let out = bed.run()?;
    out.expect_code(2)?;
    ensure!(bed.site() == "two\n", "{out}");
    let log = server.log().split_off(before);
    let statuses: Vec<u16> = log.iter().map(|s| s.status).collect();
    ensure!(statuses.starts_with(&[503, 503, 200]), "{log:#?}");
    // Full jitter: each wait is somewhere in 0..=1 s, then 0..=2 s.
    let waited = log[2].at.duration_since(log[0].at);
    eprintln!("two 503s without Retry-After: asked again after {waited:?} in all");
    ensure!(waited.as_secs() <= 4, "{log:#?}");
    ensure!(
        out.stderr
            .contains("throttled by 127.0.0.1 (503, no Retry-After)"),
        "{out}"
    );
    Ok(())
}

#[test]
fn server_that_keeps_throttling_reports_throttled_and_keeps_the_last_good_commit() -> Result<()> {
    if skip_chroot_tests(
        "server_that_keeps_throttling_reports_throttled_and_keeps_the_last_good_commit",
    ) {
        return Ok(());
    }
    let metrics = "/var/lib/prometheus/node-exporter";
    let (bed, server) = retrying_bed("  timeout: 60\n")?;
    bed.dev.write(&format!("{metrics}/.keep"), "")?;
    let before = server.log().len();
    server.lie(Lie::Throttle {
        status: 429,
        retry_after: Some("86400".into()),
        times: u32::MAX,
    });
    let started = std::time::Instant::now();
    let out = bed.run()?;
    let took = started.elapsed();
    eprintln!("throttled for a day: the run took {took:?}");
    ensure!(
        bed.site() == "one\n",
        "the last good commit was not kept\n{out}"
    );
    // The fetch-failed code: the converge to the last good commit decides the changed bit.
    out.expect_code(4)?;
    ensure!(took.as_secs() < 15, "the run took {took:?}\n{out}");
    let asked = server.log().len() - before;
    ensure!(asked == 1, "asked {asked} times despite Retry-After: 86400");
    let report = bed.report()?;
    ensure!(report["result"] == "throttled", "{report}");
    let t = &report["git"]["throttled"];
    ensure!(
        t["host"] == "127.0.0.1" && t["status"] == 429 && t["retry_after_seconds"] == 86400,
        "{report}"
    );
    let why = refused(&bed)?;
    ensure!(
        why.contains("throttled by 127.0.0.1 (429, Retry-After 86400 s)")
            && why.contains("past what is left of source.timeout"),
        "{why}"
    );
    let prom = bed.dev.read_string(&format!("{metrics}/tend.prom"))?;
    ensure!(
        prom.contains("tend_fetch_throttled 1")
            && prom.contains("tend_fetch_retry_after_seconds 86400")
            && prom.contains("result=\"throttled\""),
        "{prom}"
    );
    let status = bed.dev.tend(&["status"])?;
    ensure!(
        status.stdout.contains("last run:   throttled")
            && status.stdout.contains("throttled by 127.0.0.1"),
        "{status}"
    );
    let inventory = bed.dev.tend(&["inventory"])?;
    ensure!(
        inventory.stdout.contains("tend_status=throttled"),
        "{inventory}"
    );

    // The server lets it through again: the new head applies, and the state clears.
    server.lie(Lie::None);
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "two\n");
    let prom = bed.dev.read_string(&format!("{metrics}/tend.prom"))?;
    ensure!(prom.contains("tend_fetch_throttled 0"), "{prom}");
    Ok(())
}

/// A no-op poll of a repo with 10,000 tags and 1,000 branches costs what one ref costs: tend
/// asks `ls-refs` for exactly the branch it follows (`ref-prefix refs/heads/main`).
const NOOP_POLL_BYTES: u64 = 8 * 1024;

#[test]
fn a_no_op_poll_lists_only_the_subscribed_ref_of_a_repo_with_11000_refs() -> Result<()> {
    if skip_chroot_tests("a_no_op_poll_lists_only_the_subscribed_ref_of_a_repo_with_11000_refs") {
        return Ok(());
    }
    let (bed, server) = bounded_bed("")?;
    let bare = bed.publisher.bare();
    let head = git(bare, &["rev-parse", "refs/heads/main"])?;
    let head = head.trim();
    let mut refs = String::new();
    for n in 0..10_000 {
        refs.push_str(&format!("create refs/tags/release-{n} {head}\n"));
    }
    for n in 0..1_000 {
        refs.push_str(&format!("create refs/heads/feature-{n} {head}\n"));
    }
    let refs_file = bed.keys.path().join("refs.txt");
    std::fs::write(&refs_file, refs)?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "git -C {} update-ref --stdin < {} && git -C {} pack-refs --all",
            bare.display(),
            refs_file.display(),
            bare.display()
        ))
        .status()?;
    ensure!(status.success(), "creating 11,000 refs failed");
    let listed = git(bare, &["for-each-ref", "--format=x"])?.lines().count();
    ensure!(listed >= 11_000, "{listed} refs");
    // Apply the pending head, then poll with nothing new.
    bed.run()?.expect_code(2)?;
    let before = server.log().len();
    bed.run()?.expect_code(0)?;
    let poll = server.log().split_off(before);
    let bytes: u64 = poll.iter().map(|s| s.bytes).sum();
    eprintln!(
        "no-op poll of a repo with {listed} refs: {} requests, {bytes} bytes from the server",
        poll.len()
    );
    let ls_refs: Vec<&tend_tests::gitserver::Served> =
        poll.iter().filter(|s| !s.ref_prefixes.is_empty()).collect();
    ensure!(
        ls_refs.len() == 1 && ls_refs[0].ref_prefixes == ["refs/heads/main"],
        "{poll:#?}"
    );
    ensure!(
        bytes < NOOP_POLL_BYTES,
        "a no-op poll took {bytes} bytes (bound {NOOP_POLL_BYTES})\n{poll:#?}"
    );
    Ok(())
}
