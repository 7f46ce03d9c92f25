//! The figures of docs/benchmarks.md, one function each. Every run is checked (exit code, and
//! that a no-op changed nothing where the tool says so) before it counts: a figure of a failed
//! or half-done run would compare nothing.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use crate::acct::Accounting;
use crate::bed::{changed, expect_ok, state_digest, Bed, Tool};
use crate::measure::{self, Sample};
use crate::refstate::RefState;
use crate::results::Results;

pub struct Opts {
    pub runs: usize,
    pub first_runs: usize,
    pub template_runs: usize,
    pub ansible_runs: usize,
    pub ansible_max_files: usize,
    pub scaling: Vec<usize>,
    pub fleet_devices: usize,
    pub validate_devices: usize,
    pub profile: Option<String>,
}

impl Opts {
    /// Repetitions of a no-op or changed-template figure for `tool`.
    fn runs_for(&self, tool: Tool, runs: usize) -> usize {
        if tool.is_ansible() {
            runs.min(self.ansible_runs)
        } else {
            runs
        }
    }
}

/// Wall, CPU and peak RSS of `samples`, as `who`'s (a tool's name, or "floor").
fn record(res: &mut Results, figure: &'static str, who: &str, param: &str, samples: &[Sample]) {
    let col = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<_>>();
    res.add(figure, who, param, "wall", "s", &col(|s| s.wall));
    res.add(figure, who, param, "cpu", "s", &col(|s| s.cpu));
    res.add(
        figure,
        who,
        param,
        "peak RSS",
        "KiB",
        &col(|s| s.rss_kib as f64),
    );
}

fn expect_noop(tool: Tool, s: &Sample) -> Result<()> {
    expect_ok(tool, s)?;
    // tend says so by its exit code (0), ansible-pull in its recap; rash does not say.
    match changed(tool, s) {
        Some(0) => Ok(()),
        None if tool != Tool::Tend => Ok(()),
        other => bail!(
            "{}'s no-op changed something ({other:?}); stdout:\n{}",
            tool.name(),
            s.stdout
        ),
    }
}

/// The reference device (30 files): first apply, no-op, a poll's bytes, one changed template,
/// and the floor; checks that the tools converged to the same state.
pub fn reference(bed: &Bed, opts: &Opts, tools: &[Tool], res: &mut Results) -> Result<()> {
    let state = RefState::new(30)?;
    let tend_pub = bed.publisher("fleet.git")?;
    let ansible_pub = bed.publisher("ansible.git")?;
    bed.publish_state(&tend_pub, &ansible_pub, state, 0)?;
    let mut digests: Vec<(Tool, String)> = Vec::new();
    let mut rev = 0;
    for &tool in tools {
        eprintln!("reference: {}", tool.name());
        let mut firsts = Vec::new();
        let mut agent = Vec::new();
        let mut apt = Vec::new();
        let mut dev = None;
        for _ in 0..opts.first_runs {
            let d = bed.device(tool, "fleet.git")?;
            if tool == Tool::Rash {
                bed.write_rash(&d, state, 0)?;
            }
            let work = tempfile::tempdir()?;
            let acct = Accounting::start(work.path())?;
            let s = bed.run(tool, &d, "ansible.git")?;
            let apt_time = acct.stop(s.pid)?;
            expect_ok(tool, &s).context("first apply")?;
            agent.push(s.wall - apt_time);
            apt.push(apt_time);
            firsts.push(s);
            dev = Some(d);
        }
        let dev = dev.context("--first-runs must be at least 1")?;
        record(res, "first-apply", tool.name(), "30", &firsts);
        res.add("first-apply", tool.name(), "30", "agent wall", "s", &agent);
        res.add("first-apply", tool.name(), "30", "apt+dpkg wall", "s", &apt);
        digests.push((tool, state_digest(&dev)?));

        let mut noops = Vec::new();
        let mut bytes = Vec::new();
        for _ in 0..opts.runs_for(tool, opts.runs) {
            let s = bed.run(tool, &dev, "ansible.git")?;
            expect_noop(tool, &s)?;
            let (tx, rx) = bed.relay.bytes();
            bytes.push((tx + rx) as f64);
            noops.push(s);
        }
        record(res, "noop", tool.name(), "30", &noops);
        // One more no-op, traced: what it writes to the device's storage (SD cards die of writes).
        let w = bed.writes(tool, &dev, "ansible.git")?;
        eprintln!(
            "  {} no-op wrote {} B to {:?}",
            tool.name(),
            w.bytes,
            w.files
        );
        res.add(
            "noop",
            tool.name(),
            "30",
            "bytes written",
            "B",
            &[w.bytes as f64],
        );
        res.add("noop", tool.name(), "30", "syncs", "", &[w.syncs as f64]);
        let volatile = [w.volatile_syncs as f64];
        res.add("noop", tool.name(), "30", "volatile syncs", "", &volatile);
        if tool != Tool::Rash {
            res.add(
                "poll-no-commit",
                tool.name(),
                "30",
                "wire bytes",
                "B",
                &bytes,
            );
            // At the shipped timer's 15-minute interval.
            let per_day: Vec<f64> = bytes.iter().map(|b| b * 96.0).collect();
            res.add(
                "poll-no-commit",
                tool.name(),
                "30",
                "wire bytes per day",
                "B",
                &per_day,
            );
        }
        if tool == Tool::Tend {
            floor(bed, &dev, opts, res)?;
            profile(opts, "noop", "30", &dev)?;
        }

        let mut edits = Vec::new();
        for _ in 0..opts.runs_for(tool, opts.template_runs) {
            rev += 1;
            if tool == Tool::Rash {
                bed.write_rash(&dev, state, rev)?;
            } else {
                bed.publish_state(&tend_pub, &ansible_pub, state, rev)?;
            }
            let s = bed.run(tool, &dev, "ansible.git")?;
            expect_ok(tool, &s)?;
            ensure!(
                changed(tool, &s) != Some(0),
                "{} did not apply the changed template",
                tool.name()
            );
            let got = fs::read_to_string(dev.root().join("etc/bench/tmpl-1.conf"))?;
            ensure!(
                got.contains(&format!("revision = {rev}")),
                "{}: tmpl-1.conf is not at revision {rev}:\n{got}",
                tool.name()
            );
            edits.push(s);
        }
        if opts.template_runs > 0 {
            res.add(
                "changed-template",
                tool.name(),
                "30",
                "wall",
                "s",
                &edits.iter().map(|s| s.wall).collect::<Vec<_>>(),
            );
            if tool != Tool::Rash {
                bed.publish_state(&tend_pub, &ansible_pub, state, 0)?;
            }
        }
    }
    let first = &digests[0];
    for (tool, d) in &digests[1..] {
        ensure!(
            d == &first.1,
            "{} and {} converged to different states:\n  {}\n  {}",
            first.0.name(),
            tool.name(),
            first.1,
            d
        );
    }
    eprintln!("reference: every tool converged to: {}", first.1);
    Ok(())
}

/// Runs `--profile`'s command on tend's device after a no-op figure, with $ROOT, $FIGURE and
/// $PARAM set.
fn profile(opts: &Opts, figure: &str, param: &str, dev: &tend_tests::Device) -> Result<()> {
    profile_at(opts, figure, param, dev.root())
}

/// [`profile`] with $ROOT set to `root` (for `validate`: the fleet repo).
fn profile_at(opts: &Opts, figure: &str, param: &str, root: &Path) -> Result<()> {
    let Some(cmd) = &opts.profile else {
        return Ok(());
    };
    let st = std::process::Command::new("sh")
        .args(["-c", cmd])
        .env("ROOT", root)
        .env("FIGURE", figure)
        .env("PARAM", param)
        .status()?;
    ensure!(st.success(), "--profile command failed: {st}");
    Ok(())
}

/// The floor of a no-op: read dpkg's status, stat and hash the managed files, one ref
/// advertisement over https (see [`crate::floor`]), measured like the tools.
fn floor(bed: &Bed, dev: &tend_tests::Device, opts: &Opts, res: &mut Results) -> Result<()> {
    let exe = std::env::current_exe()?;
    let root = dev.root().display().to_string();
    let url = bed.url("fleet.git");
    let exe = exe.display().to_string();
    let mut samples = Vec::new();
    for _ in 0..opts.runs {
        let s = measure::run(None, &[&exe, "floor", &root, &url], &[])?;
        ensure!(s.code == 0, "floor failed: {}", s.stderr);
        samples.push(s);
    }
    record(res, "noop", "floor", "30", &samples);
    Ok(())
}

/// No-op converge with more managed files.
pub fn scaling(bed: &Bed, opts: &Opts, tools: &[Tool], res: &mut Results) -> Result<()> {
    let tend_pub = bed.publisher("scaling.git")?;
    let ansible_pub = bed.publisher("scaling-ansible.git")?;
    for &files in &opts.scaling {
        let state = RefState::new(files)?;
        bed.publish_state(&tend_pub, &ansible_pub, state, 0)?;
        for &tool in tools {
            if tool.is_ansible() && files > opts.ansible_max_files {
                continue;
            }
            eprintln!("scaling: {} files, {}", files, tool.name());
            let dev = bed.device(tool, "scaling.git")?;
            if tool == Tool::Rash {
                bed.write_rash(&dev, state, 0)?;
            }
            let first = bed.run(tool, &dev, "scaling-ansible.git")?;
            expect_ok(tool, &first).context("first apply")?;
            let n = fs::read_dir(dev.root().join("etc/bench"))?.count();
            ensure!(
                n == files,
                "{}: {n} files in /etc/bench, not {files}",
                tool.name()
            );
            let mut noops = Vec::new();
            for _ in 0..opts.runs_for(tool, opts.runs) {
                let s = bed.run(tool, &dev, "scaling-ansible.git")?;
                expect_noop(tool, &s)?;
                noops.push(s);
            }
            record(res, "noop-scaling", tool.name(), &files.to_string(), &noops);
            if tool == Tool::Tend {
                profile(opts, "noop-scaling", &files.to_string(), &dev)?;
            }
        }
    }
    Ok(())
}

/// A fleet repo with `fleet_devices` device files against one with 10: the first run (a
/// clone) and the no-op after it, tend only.
pub fn fleet_size(bed: &Bed, opts: &Opts, res: &mut Results) -> Result<()> {
    let state = RefState::new(30)?;
    let apt = bed.apt_ref()?;
    for devices in [10, opts.fleet_devices] {
        let name = format!("fleet-{devices}.git");
        let p = bed.publisher(&name)?;
        bed.publish(&p, &format!("{devices} devices"), |dir| {
            state.write_tend(dir, &apt, 0)?;
            write_devices(dir, devices - 1)
        })?;
        eprintln!("fleet size: {devices} devices");
        let dev = bed.device(Tool::Tend, &name)?;
        let first = bed.run(Tool::Tend, &dev, "ansible.git")?;
        expect_ok(Tool::Tend, &first)?;
        let (tx, rx) = bed.relay.bytes();
        let param = devices.to_string();
        record(
            res,
            "fleet-size-clone",
            Tool::Tend.name(),
            &param,
            std::slice::from_ref(&first),
        );
        res.add(
            "fleet-size-clone",
            "tend",
            &param,
            "wire bytes",
            "B",
            &[(tx + rx) as f64],
        );
        let mut noops = Vec::new();
        let mut bytes = Vec::new();
        for _ in 0..opts.runs {
            let s = bed.run(Tool::Tend, &dev, "ansible.git")?;
            expect_noop(Tool::Tend, &s)?;
            let (tx, rx) = bed.relay.bytes();
            bytes.push((tx + rx) as f64);
            noops.push(s);
        }
        record(res, "fleet-size-noop", Tool::Tend.name(), &param, &noops);
        profile(opts, "fleet-size-noop", &param, &dev)?;
        res.add("fleet-size-noop", "tend", &param, "wire bytes", "B", &bytes);
    }
    Ok(())
}

/// `count` more device files, spread over 100 groups of 1,000 devices' worth of directories the
/// way a large fleet lays them out (one file per device).
fn write_devices(dir: &Path, count: usize) -> Result<()> {
    let devices = dir.join("devices");
    fs::create_dir_all(&devices)?;
    for i in 1..=count {
        fs::write(
            devices.join(format!("dev-{i:06}.yaml")),
            format!("vars:\n  site: site-{:04}\n", i % 1000),
        )?;
    }
    Ok(())
}

/// `tend validate` of a fleet repo with `validate_devices` devices (every device rendered).
pub fn validate(tend: &Path, bed: &Bed, opts: &Opts, res: &mut Results) -> Result<()> {
    let dir = tempfile::tempdir()?;
    RefState::new(30)?.write_tend(dir.path(), &bed.apt_ref()?, 0)?;
    write_devices(dir.path(), opts.validate_devices - 1)?;
    let tend = tend.display().to_string();
    let path = dir.path().display().to_string();
    let mut samples = Vec::new();
    for _ in 0..opts.first_runs.max(3) {
        let s = measure::run(None, &[&tend, "validate", &path], &[])?;
        ensure!(
            s.code == 0,
            "tend validate failed: {}{}",
            s.stdout,
            s.stderr
        );
        samples.push(s);
    }
    let param = opts.validate_devices.to_string();
    record(res, "validate", Tool::Tend.name(), &param, &samples);
    profile_at(opts, "validate", &param, dir.path())
}

/// The Debian architectures the .debs ship, and the Rust targets scripts/cross-build builds them as.
pub const CROSS: [(&str, &str); 3] = [
    ("amd64", "x86_64-unknown-linux-musl"),
    ("arm64", "aarch64-unknown-linux-musl"),
    ("armhf", "armv7-unknown-linux-gnueabihf"),
];

/// Where scripts/cross-build leaves the static binary of `triple` under `target_dir`.
pub fn static_binary(target_dir: &Path, triple: &str) -> PathBuf {
    target_dir.join(format!("cross/{triple}/release/tend"))
}

/// The static binary per architecture (what the .debs ship), rash's binary, and what
/// ansible-core adds to the image.
pub fn sizes(target_dir: &Path, rash: &Path, res: &mut Results) -> Result<()> {
    for (arch, triple) in CROSS {
        let bin = static_binary(target_dir, triple);
        match fs::metadata(&bin) {
            Ok(m) => res.add("binary-size", "tend", arch, "bytes", "B", &[m.len() as f64]),
            Err(_) => eprintln!(
                "sizes: {} missing (scripts/cross-build {arch})",
                bin.display()
            ),
        }
    }
    res.add(
        "binary-size",
        "rash",
        "amd64",
        "bytes",
        "B",
        &[fs::metadata(rash)?.len() as f64],
    );
    Ok(())
}
