//! `tend-bench scale`: issue 15's load test. A simulated fleet of real `tend run`s polls one
//! origin (lighttpd + git-http-backend, as in the test bed) through one interval with nothing
//! new, then through one after a merge to the stage, in two set-ups:
//!
//! - git only: every poll asks the origin's git;
//! - pointer + CDN: every poll is a conditional GET of the signed stage pointer at a caching
//!   proxy (nginx `proxy_cache`) in front of the origin's static files; git only when the pointer
//!   names a new commit.
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

/// The servers, the publisher and a scratch directory for device roots.
struct Origin {
    ca: TestCa,
    server: HttpsGitServer,
    publisher: Publisher,
    _repo: FleetRepo,
    _keys: tempfile::TempDir,
    scratch: tempfile::TempDir,
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
    merge: Round,
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
            scratch: tempfile::tempdir_in("/var/tmp")?,
        })
    }

    /// `tend publish pointer` for the stage's head, into the origin's docroot.
    fn publish_pointer(&self, tend: &Path, sequence: u64) -> Result<()> {
        let out = Command::new(tend)
            .args(["publish", "pointer", "--stage", STAGE, "--expires", "7d"])
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
    let fleet = Fleet::copies(&template, &base.join("devices"), o.devices)?;
    let noop = round(tend, &fleet, o.workers, o.timeout, &origin.server, edge)?;
    eprintln!("  no-op interval: {noop:?}");
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
    let merge = round(tend, &fleet, o.workers, o.timeout, &origin.server, edge)?;
    eprintln!("  merge interval: {merge:?}");
    ensure!(
        merge.changed == o.devices,
        "{} of {} devices took the merge",
        merge.changed,
        o.devices
    );
    std::fs::remove_dir_all(&base).with_context(|| format!("removing {}", base.display()))?;
    Ok(Scenario { noop, merge })
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
    let reqs = |r: &Round| (r.origin_git_requests + r.origin_file_requests) as f64;
    row(
        "origin requests per 1,000 no-op polls",
        format!("{:.0}", per_1000(reqs(&git.noop), n)),
        format!("{:.1}", per_1000(reqs(&cdn.noop), n)),
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
        "origin requests for the merge (whole fleet)",
        format!("{:.0}", reqs(&git.merge)),
        format!("{:.0}", reqs(&cdn.merge)),
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
        "wall time of the no-op interval, compressed",
        format!("{:.1} s", git.noop.wall.as_secs_f64()),
        format!("{:.1} s", cdn.noop.wall.as_secs_f64()),
    );
    t
}

fn csv(rows: &[(&str, &Scenario)]) -> String {
    let mut t = String::from(
        "setup,interval,devices,changed,origin_git_requests,origin_file_requests,origin_git_bytes,\
         origin_file_bytes,origin_cpu_s,edge_requests,edge_bytes,edge_cpu_s,wall_s\n",
    );
    for (name, s) in rows {
        for (interval, r) in [("noop", &s.noop), ("merge", &s.merge)] {
            let _ = writeln!(
                t,
                "{name},{interval},{},{},{},{},{},{},{:.3},{},{},{:.3},{:.3}",
                r.devices,
                r.changed,
                r.origin_git_requests,
                r.origin_file_requests,
                r.origin_git_bytes,
                r.origin_file_bytes,
                r.origin_cpu.as_secs_f64(),
                r.edge_requests,
                r.edge_bytes,
                r.edge_cpu.as_secs_f64(),
                r.wall.as_secs_f64()
            );
        }
    }
    t
}
