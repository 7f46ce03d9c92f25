//! Issue 9, network faults: a relay between the device and a server does to the server's answers
//! what a bad network does. It cuts a download short, resets the connection in the middle of it,
//! flips one byte of it, or stops sending and holds the connection open.
//!
//! - Git (https): `tend run` in a chroot must end within its configured timeout, keep the last
//!   good commit (and converge to it), say what failed, and leave a local repository that the
//!   next clean fetch uses: the new commit applies once the network is good again, and
//!   `git fsck` finds nothing wrong.
//! - Apt (http, the signed test repository): packages are downloaded before the first change, so
//!   a cut fails the run with apt's error and changes nothing (no file of the commit, no source,
//!   `dpkg --audit` clean, no file of the package on disk), the run ends within apt's own
//!   timeout, and the next run applies all of it.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use sha2::{Digest, Sha256};
use tend_tests::deb::DebSpec;
use tend_tests::faultrelay::{Fault, FaultyRelay};
use tend_tests::pullbed::PullBed;
use tend_tests::{skip_chroot_tests, tend_binary, AptRepo, Arch, Device, Outcome, Suite};

/// The fetch's overall timeout on the device; a stalled transfer must end soon after it.
const TIMEOUT_SECS: u64 = 8;
/// Far above the timeout, far below "hangs": what a run may take, whatever the fault.
const BOUND: Duration = Duration::from_secs(45);
/// Where in an answer the faults land (only the pack is that large), and the size of the file
/// that makes the pack larger.
const FAULT_AT: u64 = 100_000;
const BLOB_BYTES: usize = 300_000;

struct Bed {
    pb: PullBed,
    relay: FaultyRelay,
}

/// The suite's bed is the shared pulling device (`bed.dev`, `bed.publisher` …).
impl std::ops::Deref for Bed {
    type Target = PullBed;
    fn deref(&self) -> &PullBed {
        &self.pb
    }
}

impl Bed {
    fn new() -> Result<Bed> {
        let pb = PullBed::new("run-fleet")?;
        let relay = FaultyRelay::start(([127, 0, 0, 1], pb.server.port()).into())?;
        let port = pb.server.port();
        let url = pb
            .url()
            .replace(&format!(":{port}/"), &format!(":{}/", relay.port()));
        pb.configure(
            &url,
            &format!("  connect_timeout: 5\n  timeout: {TIMEOUT_SECS}\n"),
            "",
        )?;
        Ok(Bed { pb, relay })
    }
}

/// `n` bytes that do not compress, so that the pack carrying them is about as large.
fn incompressible(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut block = Sha256::digest(b"tend faults");
    while out.len() < n {
        block = Sha256::digest(block);
        // Base64-like text: git stores it as a blob, zlib cannot squeeze random symbols much.
        for b in block.iter() {
            out.push(char::from(b'!' + (b % 90)));
        }
    }
    out.truncate(n);
    out
}

/// The four faults, each landing `FAULT_AT` bytes into whichever answer is that large.
fn faults() -> [Fault; 4] {
    let (conn, after) = (0, FAULT_AT);
    [
        Fault::Truncate { conn, after },
        Fault::Reset { conn, after },
        Fault::Corrupt { conn, after },
        Fault::Stall { conn, after },
    ]
}

/// Runs `run` under `fault`; checks it ended in time and that the fault fired.
fn under_fault(
    relay: &FaultyRelay,
    fault: Fault,
    run: impl FnOnce() -> Result<Outcome>,
) -> Result<(Outcome, String)> {
    relay.set(fault);
    let started = Instant::now();
    let out = run()?;
    let took = started.elapsed();
    ensure!(took < BOUND, "{fault:?}: the run took {took:?}\n{out}");
    // The fault fired in the large answer: one answer reached the offset (and, but for a
    // flipped byte, stopped there).
    let traffic = relay.traffic();
    ensure!(
        traffic.iter().any(|&b| b >= FAULT_AT),
        "{fault:?}: the fault never fired (traffic {traffic:?})\n{out}"
    );
    let figure = format!("{fault:?}: exit {:?} after {took:.1?}", out.code());
    Ok((out, figure))
}

#[test]
fn network_faults_mid_fetch_keep_the_last_good_commit_and_the_repo_usable() -> Result<()> {
    if skip_chroot_tests("network_faults_mid_fetch_keep_the_last_good_commit_and_the_repo_usable") {
        return Ok(());
    }
    let bed = Bed::new()?;
    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: one}\n")?;
    bed.publisher.signed("main", "site one")?;
    bed.relay.set(Fault::None);
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "one\n");

    bed.publisher
        .write("devices/dev1.yaml", "vars: {site: two}\n")?;
    bed.publisher
        .write("roles/site/files/blob.txt", &incompressible(BLOB_BYTES))?;
    let two = bed
        .publisher
        .signed("main", "site two, with a large file")?;

    let mut figures = Vec::new();
    for fault in faults() {
        let (out, figure) = under_fault(&bed.relay, fault, || bed.run())?;
        figures.push(figure);
        out.expect_code(4)?;
        let r = bed.report()?;
        ensure!(r["git"]["fell_back"] == true, "{fault:?}\n{r:#}");
        let refused = r["git"]["refused"].as_str().unwrap_or("");
        ensure!(
            refused.contains("fetching main failed"),
            "{fault:?}: the report must say the fetch failed\n{r:#}"
        );
        ensure!(
            bed.site() == "one\n",
            "{fault:?}: left the last good commit"
        );
    }
    eprintln!("git faults: {figures:#?}");

    // The network is good again: the next run fetches the new commit and applies it.
    bed.relay.set(Fault::None);
    bed.run()?.expect_code(2)?;
    ensure!(bed.site() == "two\n");
    ensure!(bed.report()?["git"]["commit"] == two.as_str());
    let repo = bed.dev.root().join("var/lib/tend/repo.git");
    let fsck = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&repo)
        .args(["fsck", "--no-dangling"])
        .output()?;
    ensure!(
        fsck.status.success(),
        "git fsck of the device's repository: {}",
        String::from_utf8_lossy(&fsck.stderr)
    );
    Ok(())
}

/// Download, then apply: a commit that adds a file, an apt source and a package from it. A cut
/// in the middle of the package's download leaves the device as it was: neither the file nor the
/// source is written, nothing is half installed, and the report names the download. Once the link
/// is back, the next run applies all of it and reports what it downloaded; a no-op downloads 0.
#[test]
fn a_cut_mid_download_changes_nothing_and_the_next_run_applies_all() -> Result<()> {
    if skip_chroot_tests("a_cut_mid_download_changes_nothing_and_the_next_run_applies_all") {
        return Ok(());
    }
    let data = incompressible(BLOB_BYTES);
    let big = DebSpec::new("tend-big", "1.0-1").file("/usr/share/tend-big/data", &data, 0o644);
    let repo = AptRepo::with_packages(&[big])?;
    let port: u16 = repo
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_default();
    let relay = FaultyRelay::start(([127, 0, 0, 1], port).into())?;
    let dev = Device::new(Suite::Bookworm, Arch::Amd64)?;
    dev.install_tend(&tend_binary()?)?;
    // apt's idle timeout and retries bound a stalled download (120 s and 3 retries by default
    // on bookworm); a device with a slow link tunes them the same way.
    dev.write(
        "/etc/apt/apt.conf.d/90tend-test-timeout",
        "Acquire::http::Timeout \"8\";\nAcquire::Retries \"0\";\n",
    )?;
    // The metrics textfile is written where node-exporter's collector directory exists.
    dev.write("/var/lib/prometheus/node-exporter/.keep", "")?;
    dev.write("/srv/fleet/fleet.yaml", "format: 1\nroles: [big]\n")?;
    dev.write("/srv/fleet/devices/dev1.yaml", "vars: {}\n")?;
    dev.write("/srv/fleet/roles/big/files/repo.asc", repo.key_armored()?)?;
    dev.write(
        "/srv/fleet/roles/big/role.yaml",
        format!(
            "resources:\n  - file: /etc/tend-big.conf\n    content: \"new\\n\"\n  \
             - apt_source: tend-test\n    uris: http://127.0.0.1:{}\n    \
             suites: [tend]\n    components: [main]\n    key: repo.asc\n  \
             - package: tend-big\n",
            relay.port()
        ),
    )?;
    let apply = || dev.tend(&["apply", "--path", "/srv/fleet", "--device", "dev1"]);

    let mut figures = Vec::new();
    for fault in faults() {
        let (out, figure) = under_fault(&relay, fault, apply)?;
        figures.push(figure);
        ensure!(out.code() == Some(4), "{fault:?}: the run must fail\n{out}");
        let status = dev.run(&["dpkg-query", "-W", "-f=${Status}", "tend-big"])?;
        ensure!(
            !status.stdout.contains("installed"),
            "{fault:?}: tend-big is {:?}",
            status.stdout
        );
        let audit = dev.run_ok(&["dpkg", "--audit"])?;
        ensure!(
            audit.stdout.trim().is_empty(),
            "{fault:?}: dpkg --audit: {}",
            audit.stdout
        );
        for path in [
            "/usr/share/tend-big/data",
            "/etc/tend-big.conf",
            "/etc/apt/sources.list.d/tend-test.sources",
            "/etc/apt/keyrings/tend-test.asc",
            "/var/cache/tend/apt",
        ] {
            ensure!(!dev.exists(path), "{fault:?}: {path} is on disk\n{out}");
        }
        let r = dev.report()?;
        let errors = r["errors"].to_string();
        ensure!(
            errors.contains("downloading 1 package for")
                && errors.contains("nothing was changed, the device stays on its current state"),
            "{fault:?}: the report must name the failed download\n{r:#}"
        );
        ensure!(
            r["counts"]["changed"] == 0 && r["downloaded_bytes"] == 0,
            "{r:#}"
        );
    }
    eprintln!("apt faults: {figures:#?}");

    relay.set(Fault::None);
    let out = apply()?;
    out.expect_code(2)?;
    ensure!(dev.read_string("/usr/share/tend-big/data")? == data);
    ensure!(dev.read_string("/etc/tend-big.conf")? == "new\n");
    let downloaded = dev.report()?["downloaded_bytes"].as_u64().unwrap_or(0);
    ensure!(
        downloaded >= BLOB_BYTES as u64 / 2,
        "the .deb's bytes are reported: {downloaded}\n{out}"
    );
    ensure!(out.stdout.contains(" downloaded (device dev1"), "{out}");
    eprintln!("downloaded before the change: {downloaded} bytes");
    apply()?.expect_code(0)?;
    ensure!(
        dev.report()?["downloaded_bytes"] == 0,
        "a no-op downloads nothing"
    );
    let metrics = dev.read_string("/var/lib/prometheus/node-exporter/tend.prom")?;
    ensure!(metrics.contains("tend_downloaded_bytes 0\n"), "{metrics}");
    Ok(())
}
