//! `tend-bench scale`: issue 15's load test. A simulated fleet of real `tend run`s polls one
//! origin (lighttpd + git-http-backend, as in the test bed) through one interval with nothing
//! new, then through one after a merge to the stage, in two set-ups:
//!
//! - git only: every poll asks the origin's git;
//! - pointer + CDN: every poll is a conditional GET of the signed stage pointer at a caching
//!   proxy (nginx `proxy_cache`) in front of the origin's static files, published with
//!   `--bundles`, so that a device reaches a new commit through an incremental bundle from the
//!   edge; git only when no bundle fits (and for the connectivity guard after a change).
//!
//! The figures are the origin's requests and CPU time, and the HTTP bytes a device moves, per
//! poll and for the merge (docs/scale.md quotes them and extrapolates to 100,000 devices). They
//! are measured, never asserted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tend_tests::cdn::Cdn;
use tend_tests::gitserver::{FleetRepo, HttpsGitServer, TestCa};
use tend_tests::publisher::{keygen, Publisher};

use crate::rounds::{round, Fleet, Round};

const STAGE: &str = "production";
const POINTER: &str = "production.pointer";

pub struct ScaleOpts {
    pub devices: usize,
    pub workers: usize,
    /// How long the edge serves a cached pointer before revalidating it with the origin.
    pub max_age: Duration,
    /// Bound on one device's run.
    pub timeout: Duration,
}

/// The servers, the publisher and a tmpfs for device roots (deleting 1,000 roots of hard links
/// on the host's disk took longer than polling them; unmounting empties it at once).
struct Origin {
    ca: TestCa,
    server: HttpsGitServer,
    publisher: Publisher,
    _repo: FleetRepo,
    _keys: tempfile::TempDir,
    scratch: Scratch,
}

/// A tmpfs mounted on a temp dir for as long as it lives.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Result<Scratch> {
        let dir = tempfile::tempdir_in("/var/tmp")?;
        tend_tests::mounts::mount_tmpfs(dir.path()).context("a tmpfs for the device roots")?;
        Ok(Scratch(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = tend_tests::mounts::unmount(self.0.path()) {
            eprintln!("unmounting {}: {e:#}", self.0.path().display());
        }
    }
}

pub fn run(tend: &Path, o: &ScaleOpts, out: &Path) -> Result<()> {
    let origin = Origin::new()?;
    let edge = Cdn::start(origin.server.port(), &origin.ca, o.max_age)?;
    eprintln!("== scale: git only, {} devices", o.devices);
    let git = scenario(tend, o, &origin, None, "git")?;
    eprintln!("== scale: pointer + CDN, {} devices", o.devices);
    let cdn = scenario(tend, o, &origin, Some(&edge), "cdn")?;
    std::fs::create_dir_all(out)?;
    let md = table(o, &git, &cdn);
    std::fs::write(out.join("scale.md"), &md)?;
    std::fs::write(out.join("scale.csv"), csv(&[("git", &git), ("cdn", &cdn)]))?;
    println!("{md}");
    Ok(())
}

/// A no-op interval and a merge interval of one set-up.
struct Scenario {
    noop: Round,
    /// Every device's poll after the merge, and the late devices' next poll.
    merge: Round,
    /// Devices that still saw the old pointer on their first poll after the merge (an edge
    /// serves its stale copy while it revalidates) and took the merge on their next poll.
    late: usize,
}

impl Origin {
    fn new() -> Result<Origin> {
        let keys = tempfile::tempdir()?;
        let key = keygen(keys.path(), "ops")?;
        let repo = FleetRepo::new()?;
        let ca = TestCa::new("tend-scale")?;
        let server = HttpsGitServer::start(repo.root(), &ca)?;
        let tree = tempfile::tempdir()?;
        let publisher = Publisher::from_dir(repo.path(), key, tree.path())?;
        publisher.write("fleet.yaml", &fleet_yaml(1))?;
        publisher.write(
            "roles/site/role.yaml",
            "resources:\n  - file: /etc/site\n    content: \"{{ site }}\\n\"\n",
        )?;
        publisher.signed(STAGE, "the fleet")?;
        Ok(Origin {
            ca,
            server,
            publisher,
            _repo: repo,
            _keys: keys,
            scratch: Scratch::new()?,
        })
    }

    /// `tend publish pointer --bundles` for the stage's head, into the origin's docroot.
    fn publish_pointer(&self, tend: &Path, sequence: u64) -> Result<()> {
        let out = Command::new(tend)
            .args([
                "publish",
                "pointer",
                "--stage",
                STAGE,
                "--expires",
                "7d",
                "--bundles",
            ])
            .arg("--sequence")
            .arg(sequence.to_string())
            .arg("--key")
            .arg(self.publisher.key())
            .arg("--out")
            .arg(self.server.docroot().join(POINTER))
            .arg(self.publisher.work())
            .output()?;
        ensure!(out.status.success(), "tend publish pointer: {out:?}");
        Ok(())
    }
}

/// Every device has the same desired state, so one converged root copies into a fleet.
fn fleet_yaml(generation: u32) -> String {
    format!("format: 1\nvars: {{site: generation-{generation}}}\nroles: [site]\n")
}

fn scenario(
    tend: &Path,
    o: &ScaleOpts,
    origin: &Origin,
    edge: Option<&Cdn>,
    name: &str,
) -> Result<Scenario> {
    let base = origin.scratch.path().join(name);
    let template = base.join("template");
    let pointer = edge.map(|e| e.file_url(POINTER));
    if pointer.is_some() {
        origin.publish_pointer(tend, 1)?;
    }
    write_device_config(origin, &template, pointer.as_deref())?;
    let first = Command::new(tend)
        .arg("run")
        .arg("--root")
        .arg(&template)
        .args(["--device", "dev0"])
        .output()?;
    ensure!(
        matches!(first.status.code(), Some(0 | 2)),
        "the template device's first run: {first:?}\n{}",
        edge.map(Cdn::error_log).unwrap_or_default()
    );
    let copying = std::time::Instant::now();
    let fleet = Fleet::copies(&template, &base.join("devices"), o.devices)?;
    eprintln!(
        "  {} device roots copied in {:.1} s",
        o.devices,
        copying.elapsed().as_secs_f64()
    );
    let poll = |devices: &[usize]| {
        round(
            tend,
            &fleet,
            devices,
            o.workers,
            o.timeout,
            &origin.server,
            edge,
        )
    };
    let everyone = fleet.all();
    let noop = poll(&everyone)?;
    eprintln!("  no-op interval: {}", noop.summary());
    let generation = if edge.is_some() { 3 } else { 2 };
    origin
        .publisher
        .write("fleet.yaml", &fleet_yaml(generation))?;
    origin.publisher.signed(STAGE, "a merge to production")?;
    if let Some(edge) = edge {
        origin.publish_pointer(tend, 2)?;
        // The edge still serves the old pointer until its copy is older than max_age: every
        // real CDN adds that delay, and the fleet's next interval starts after it.
        std::thread::sleep(o.max_age + Duration::from_secs(1));
        eprintln!("  {} requests at the edge so far", edge.requests()?.len());
    }
    let mut merge = poll(&everyone)?;
    let late = merge.unchanged_devices.clone();
    if !late.is_empty() {
        let next = poll(&late)?;
        ensure!(
            next.changed == late.len(),
            "{} of {} late devices took the merge on their next poll",
            next.changed,
            late.len()
        );
        merge.absorb(&next);
    }
    eprintln!("  merge interval: {}", merge.summary());
    ensure!(
        merge.changed + late.len() == o.devices,
        "{} of {} devices took the merge",
        merge.changed + late.len(),
        o.devices
    );
    std::fs::remove_dir_all(&base).with_context(|| format!("removing {}", base.display()))?;
    Ok(Scenario {
        noop,
        merge,
        late: late.len(),
    })
}

fn write_device_config(origin: &Origin, root: &Path, pointer: Option<&str>) -> Result<()> {
    let etc: PathBuf = root.join("etc/tend");
    std::fs::create_dir_all(&etc)?;
    std::fs::copy(origin.ca.cert(), etc.join("ca.pem"))?;
    std::fs::write(
        etc.join("allowed_signers"),
        origin.publisher.allowed_signers()?,
    )?;
    let pointer = pointer.map_or(String::new(), |p| format!("  pointer: {p}\n"));
    std::fs::write(
        etc.join("tend.yaml"),
        format!(
            "source:\n  url: {}\n  branch: {STAGE}\n  ca_file: /etc/tend/ca.pem\n  retries: 0\n\
             {pointer}verify:\n  allowed_signers: /etc/tend/allowed_signers\n",
            origin.server.url("fleet.git")
        ),
    )?;
    Ok(())
}

fn per_1000(n: f64, devices: usize) -> f64 {
    n * 1000.0 / devices.max(1) as f64
}

/// A device's HTTP bytes in a round: to the edge, and to the origin's git (the edge's own
/// requests to the origin's files are not a device's).
fn device_bytes(r: &Round) -> f64 {
    (r.edge_bytes + r.origin_git_bytes) as f64 / r.devices.max(1) as f64
}

fn table(o: &ScaleOpts, git: &Scenario, cdn: &Scenario) -> String {
    let mut t = String::new();
    let n = o.devices;
    let _ = writeln!(
        t,
        "{n} devices, {} at a time; the edge's max-age {} s.\n",
        o.workers,
        o.max_age.as_secs()
    );
    let _ = writeln!(t, "| figure | git only | pointer + CDN |\n|---|---|---|");
    let mut row = |name: &str, a: String, b: String| {
        let _ = writeln!(t, "| {name} | {a} | {b} |");
    };
    let git_reqs = |r: &Round| r.origin_git_requests as f64;
    let file_reqs = |r: &Round| r.origin_file_requests as f64;
    row(
        "origin git requests per 1,000 no-op polls",
        format!("{:.0}", per_1000(git_reqs(&git.noop), n)),
        format!("{:.0}", per_1000(git_reqs(&cdn.noop), n)),
    );
    row(
        "origin static-file requests per 1,000 no-op polls",
        format!("{:.0}", per_1000(file_reqs(&git.noop), n)),
        format!("{:.1}", per_1000(file_reqs(&cdn.noop), n)),
    );
    row(
        "origin CPU-seconds per 1,000 no-op polls",
        format!("{:.2}", per_1000(git.noop.origin_cpu.as_secs_f64(), n)),
        format!("{:.2}", per_1000(cdn.noop.origin_cpu.as_secs_f64(), n)),
    );
    row(
        "HTTP bytes per no-op poll per device",
        format!("{:.0}", device_bytes(&git.noop)),
        format!("{:.0}", device_bytes(&cdn.noop)),
    );
    row(
        "edge CPU-seconds per 1,000 no-op polls",
        "–".into(),
        format!("{:.2}", per_1000(cdn.noop.edge_cpu.as_secs_f64(), n)),
    );
    row(
        "origin git requests for the merge (whole fleet)",
        format!("{:.0}", git_reqs(&git.merge)),
        format!("{:.0}", git_reqs(&cdn.merge)),
    );
    row(
        "origin static-file requests for the merge (of which bundles)",
        format!(
            "{:.0} ({})",
            file_reqs(&git.merge),
            git.merge.origin_bundle_requests
        ),
        format!(
            "{:.0} ({})",
            file_reqs(&cdn.merge),
            cdn.merge.origin_bundle_requests
        ),
    );
    row(
        "bundle downloads at the edge for the merge",
        "–".into(),
        cdn.merge.edge_bundle_requests.to_string(),
    );
    row(
        "origin CPU-seconds for the merge",
        format!("{:.2}", git.merge.origin_cpu.as_secs_f64()),
        format!("{:.2}", cdn.merge.origin_cpu.as_secs_f64()),
    );
    row(
        "HTTP bytes per device to reach the new commit",
        format!("{:.0}", device_bytes(&git.merge)),
        format!("{:.0}", device_bytes(&cdn.merge)),
    );
    row(
        "devices one poll late for the merge (a stale edge copy)",
        git.late.to_string(),
        cdn.late.to_string(),
    );
    row(
        "wall time of the no-op interval, compressed",
        format!("{:.1} s", git.noop.wall.as_secs_f64()),
        format!("{:.1} s", cdn.noop.wall.as_secs_f64()),
    );
    t
}

fn csv(rows: &[(&str, &Scenario)]) -> String {
    let mut t = String::from(
        "setup,interval,devices,changed,late,origin_git_requests,origin_file_requests,\
         origin_bundle_requests,origin_git_bytes,origin_file_bytes,origin_cpu_s,edge_requests,\
         edge_bundle_requests,edge_bytes,edge_cpu_s,wall_s\n",
    );
    for (name, s) in rows {
        for (interval, r, late) in [("noop", &s.noop, 0), ("merge", &s.merge, s.late)] {
            let _ = writeln!(
                t,
                "{name},{interval},{},{},{late},{},{},{},{},{},{:.3},{},{},{},{:.3},{:.3}",
                r.devices,
                r.changed + late,
                r.origin_git_requests,
                r.origin_file_requests,
                r.origin_bundle_requests,
                r.origin_git_bytes,
                r.origin_file_bytes,
                r.origin_cpu.as_secs_f64(),
                r.edge_requests,
                r.edge_bundle_requests,
                r.edge_bytes,
                r.edge_cpu.as_secs_f64(),
                r.wall.as_secs_f64()
            );
        }
    }
    t
}
