//! One poll interval of a simulated fleet, compressed: every device's root runs the real `tend
//! run` once, a few at a time, and the servers' logs and CPU counters are read before and after.
//!
//! The devices are copies of one converged root (`cp -al`: the git objects are shared, as tend
//! never writes a file in place; a run that changes something replaces files by rename, so a
//! device's change never reaches another), each with its own empty /run (its run lock). What a round costs the servers is the difference of
//! their counters, so setup and the other rounds are not counted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use tend_tests::cdn::Cdn;
use tend_tests::gitserver::HttpsGitServer;

/// A fleet of device roots made from one template: device `dev<i>` at `roots[i]`.
pub struct Fleet {
    pub roots: Vec<PathBuf>,
}

impl Fleet {
    /// Every device's index, for a round of the whole fleet.
    pub fn all(&self) -> Vec<usize> {
        (0..self.roots.len()).collect()
    }

    /// `n` copies of `template` under `dir` (which must not hold them yet), as devices
    /// `dev0`…: the template must have converged as `dev0` on a fleet where every device's
    /// desired state is the same, so that every copy is converged too.
    pub fn copies(template: &Path, dir: &Path, n: usize) -> Result<Fleet> {
        std::fs::create_dir_all(dir)?;
        let mut roots = Vec::with_capacity(n);
        for i in 0..n {
            let root = dir.join(format!("dev{i}"));
            let st = Command::new("cp")
                .arg("-al")
                .arg(template)
                .arg(&root)
                .status()?;
            ensure!(
                st.success(),
                "cp -al {} {}",
                template.display(),
                root.display()
            );
            // A linked run lock would be one lock for the whole fleet; /run is empty at boot.
            let run = root.join("run");
            if run.exists() {
                std::fs::remove_dir_all(&run)?;
            }
            roots.push(root);
        }
        Ok(Fleet { roots })
    }
}

/// What the servers did during a round, and what the devices said.
#[derive(Debug, Default)]
pub struct Round {
    pub devices: usize,
    /// Devices whose run changed something (exit 2).
    pub changed: usize,
    /// The devices that converged without a change (exit 0).
    pub unchanged_devices: Vec<usize>,
    /// Requests at the origin: to git, and to its static files (an edge's revalidations of the
    /// pointer and its first fetch of each bundle), of which bundles.
    pub origin_git_requests: usize,
    pub origin_file_requests: usize,
    pub origin_bundle_requests: usize,
    /// HTTP bytes in and out at the origin, of its git requests and of its static files.
    pub origin_git_bytes: u64,
    pub origin_file_bytes: u64,
    pub origin_cpu: Duration,
    pub edge_requests: usize,
    /// Of the edge's requests, the devices' bundle downloads.
    pub edge_bundle_requests: usize,
    pub edge_bytes: u64,
    pub edge_cpu: Duration,
    pub wall: Duration,
}

impl Round {
    /// One line for the log: the outcomes and the servers' figures.
    pub fn summary(&self) -> String {
        format!(
            "{} devices ({} changed) in {:.1} s; origin: {} git + {} static requests \
             ({} bundles), {:.2} CPU-s; edge: {} requests ({} bundles), {:.2} CPU-s",
            self.devices,
            self.changed,
            self.wall.as_secs_f64(),
            self.origin_git_requests,
            self.origin_file_requests,
            self.origin_bundle_requests,
            self.origin_cpu.as_secs_f64(),
            self.edge_requests,
            self.edge_bundle_requests,
            self.edge_cpu.as_secs_f64()
        )
    }

    /// Adds a later round's server figures to this one (a catch-up poll of some devices within
    /// the same interval); the devices' outcomes are this round's.
    pub fn absorb(&mut self, later: &Round) {
        self.origin_git_requests += later.origin_git_requests;
        self.origin_file_requests += later.origin_file_requests;
        self.origin_bundle_requests += later.origin_bundle_requests;
        self.origin_git_bytes += later.origin_git_bytes;
        self.origin_file_bytes += later.origin_file_bytes;
        self.origin_cpu += later.origin_cpu;
        self.edge_requests += later.edge_requests;
        self.edge_bundle_requests += later.edge_bundle_requests;
        self.edge_bytes += later.edge_bytes;
        self.edge_cpu += later.edge_cpu;
        self.wall += later.wall;
    }
}

fn is_bundle(path: &str) -> bool {
    path.ends_with(".bundle")
}

/// Runs the fleet's devices `chosen` once, `workers` at a time, each run bounded by `timeout`.
pub fn round(
    tend: &Path,
    fleet: &Fleet,
    chosen: &[usize],
    workers: usize,
    timeout: Duration,
    origin: &HttpsGitServer,
    edge: Option<&Cdn>,
) -> Result<Round> {
    let origin_seen = origin.requests()?.len();
    let edge_seen = edge.map(|e| e.requests().map(|r| r.len())).transpose()?;
    let (origin_cpu, edge_cpu) = (origin.cpu(), edge.map(|e| e.cpu()));
    let next = AtomicUsize::new(0);
    let codes = Mutex::new(Vec::with_capacity(chosen.len()));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| {
                while let Some(&i) = chosen.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let root = &fleet.roots[i];
                    let code = run_device(tend, root, i, timeout);
                    codes.lock().unwrap().push((i, code));
                }
            });
        }
    });
    let wall = start.elapsed();
    let mut r = Round {
        devices: chosen.len(),
        wall,
        ..Round::default()
    };
    for (i, code) in codes.into_inner().unwrap() {
        match code? {
            0 => r.unchanged_devices.push(i),
            2 => r.changed += 1,
            c => bail!("device dev{i} ({}) exited {c}", fleet.roots[i].display()),
        }
    }
    r.unchanged_devices.sort_unstable();
    for e in &origin.requests()?[origin_seen..] {
        let bytes = e.bytes_in + e.bytes_out;
        if e.path.starts_with("/git/") {
            r.origin_git_requests += 1;
            r.origin_git_bytes += bytes;
        } else {
            r.origin_file_requests += 1;
            r.origin_bundle_requests += usize::from(is_bundle(&e.path));
            r.origin_file_bytes += bytes;
        }
    }
    r.origin_cpu = origin.cpu().saturating_sub(origin_cpu);
    if let (Some(edge), Some(seen), Some(cpu)) = (edge, edge_seen, edge_cpu) {
        for e in &edge.requests()?[seen..] {
            r.edge_requests += 1;
            r.edge_bundle_requests += usize::from(is_bundle(&e.path));
            r.edge_bytes += e.bytes_in + e.bytes_out;
        }
        r.edge_cpu = edge.cpu().saturating_sub(cpu);
    }
    Ok(r)
}

/// `tend run` as device `dev<i>` on `root`; its exit code (stderr is shown on failure).
fn run_device(tend: &Path, root: &Path, i: usize, timeout: Duration) -> Result<i32> {
    let mut child = Command::new("timeout")
        .arg(format!("{}s", timeout.as_secs().max(1)))
        .arg(tend)
        .arg("run")
        .arg("--root")
        .arg(root)
        .arg("--device")
        .arg(format!("dev{i}"))
        .env_remove("TEND_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        e.read_to_string(&mut err)?;
    }
    let code = child.wait()?.code().unwrap_or(-1);
    if !matches!(code, 0 | 2) {
        eprintln!("dev{i}: exit {code}: {err}");
    }
    Ok(code)
}
