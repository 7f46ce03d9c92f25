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

/// A fleet of device roots made from one template.
pub struct Fleet {
    pub roots: Vec<PathBuf>,
}

impl Fleet {
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
    /// Devices whose run changed something (exit 2) and that converged without (exit 0).
    pub changed: usize,
    pub unchanged: usize,
    /// Requests at the origin: to git, and to its static files (an edge's revalidations).
    pub origin_git_requests: usize,
    pub origin_file_requests: usize,
    /// HTTP bytes in and out at the origin, of its git requests and of its static files.
    pub origin_git_bytes: u64,
    pub origin_file_bytes: u64,
    pub origin_cpu: Duration,
    pub edge_requests: usize,
    pub edge_bytes: u64,
    pub edge_cpu: Duration,
    pub wall: Duration,
}

/// Runs every device once, `workers` at a time, each run bounded by `timeout`.
pub fn round(
    tend: &Path,
    fleet: &Fleet,
    workers: usize,
    timeout: Duration,
    origin: &HttpsGitServer,
    edge: Option<&Cdn>,
) -> Result<Round> {
    let origin_seen = origin.requests()?.len();
    let edge_seen = edge.map(|e| e.requests().map(|r| r.len())).transpose()?;
    let (origin_cpu, edge_cpu) = (origin.cpu(), edge.map(|e| e.cpu()));
    let next = AtomicUsize::new(0);
    let codes = Mutex::new(Vec::with_capacity(fleet.roots.len()));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(root) = fleet.roots.get(i) else {
                    break;
                };
                let code = run_device(tend, root, i, timeout);
                codes.lock().unwrap().push((i, code));
            });
        }
    });
    let wall = start.elapsed();
    let mut r = Round {
        devices: fleet.roots.len(),
        wall,
        ..Round::default()
    };
    for (i, code) in codes.into_inner().unwrap() {
        match code? {
            0 => r.unchanged += 1,
            2 => r.changed += 1,
            c => bail!("device dev{i} ({}) exited {c}", fleet.roots[i].display()),
        }
    }
    for e in &origin.requests()?[origin_seen..] {
        let bytes = e.bytes_in + e.bytes_out;
        if e.path.starts_with("/git/") {
            r.origin_git_requests += 1;
            r.origin_git_bytes += bytes;
        } else {
            r.origin_file_requests += 1;
            r.origin_file_bytes += bytes;
        }
    }
    r.origin_cpu = origin.cpu().saturating_sub(origin_cpu);
    if let (Some(edge), Some(seen), Some(cpu)) = (edge, edge_seen, edge_cpu) {
        for e in &edge.requests()?[seen..] {
            r.edge_requests += 1;
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
