//! Power cuts (issue #9): tend's whole process group, apt and dpkg included, is SIGKILLed at a
//! random instant of an apply that rewrites many files, replaces large ones, upgrades, downgrades,
//! installs and removes packages, changes a user and notifies a handler. After every cut:
//!
//! - every managed file holds its old or its new content, never a mix or a truncation;
//! - every JSON file in the state dir (state, report, pending handlers, history) parses;
//! - the next, uninterrupted run succeeds, and finishes an interrupted dpkg itself, saying so;
//! - after it, the device is exactly the new generation: files, packages, user, `dpkg --audit`
//!   clean, and the handler has seen the newest content (a lost notification would leave it
//!   behind); no tend temp file is left anywhere it wrote.
//!
//! One device serves every trial: each trial applies the other generation of the fleet, so the
//! device is always converged to a known generation before the next cut. The number of trials is
//! `TEND_POWERCUT_TRIALS` (default 25, about two minutes); the random instants come from
//! `TEND_POWERCUT_SEED` (printed, so a failure can be replayed). A SIGKILL drops no page cache: a
//! real power cut (a killed VM) is the end-to-end suite's job; this one proves what tend writes and
//! in what order.
//!
//! A second test cuts `tend run` while it fetches a large commit over https: the local repo must be
//! usable (or recovered) and the next run must apply the new head.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tend_tests::gitserver::{Change, FleetRepo, HttpsGitServer, TestCa};
use tend_tests::{mounts, skip_chroot_tests, tend_binary, AptRepo, Device, Outcome};

const STATE_DIR: &str = "/var/lib/tend";
const MANY_FILES: usize = 40;
const BIG_FILES: usize = 2;
const BIG_BYTES: usize = 8 << 20;
const APP_CONF: &str = "/etc/pc/app.conf";
/// Where the handler copies APP_CONF: equal to it once every notification has been honoured.
const HANDLED: &str = "/var/lib/pc/handled";

/// A small deterministic generator: the cut instants must be replayable from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

fn seed() -> Result<u64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    Ok(env_number("TEND_POWERCUT_SEED", now)?.max(1))
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Incompressible bytes that differ per generation and file, so a half-replaced file is caught.
fn big_content(generation: usize, index: usize) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (((generation as u64) << 32) | (index as u64 + 1)));
    let mut out = Vec::with_capacity(BIG_BYTES);
    while out.len() < BIG_BYTES {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out
}

/// One generation of the fleet: everything it manages, and what each managed file must hold.
struct Generation {
    index: usize,
    dir: String,
    /// Device path → sha256 of the content this generation writes.
    files: BTreeMap<String, String>,
    /// Package → the version this generation wants, or None for absent.
    packages: BTreeMap<&'static str, Option<&'static str>>,
    comment: String,
}

impl Generation {
    /// Writes fleet `index` (0 or 1) into the device at /srv/fleet-<index>.
    fn write(dev: &Device, index: usize) -> Result<Generation> {
        let dir = format!("/srv/fleet-{index}");
        let mut files = BTreeMap::new();
        let mut role = String::from("resources:\n");
        // Packages first and last, files in between, so the cuts land in apt, dpkg and tend alike.
        let hello = ["1.0-1", "2.0-1"][index];
        role.push_str(&format!("  - package: [\"tend-hello={hello}\"]\n"));
        for i in 0..MANY_FILES {
            let path = format!("/etc/pc/many/f{i:02}.conf");
            let content = format!("generation {index} file {i}\n{}\n", "x".repeat(900 + i));
            files.insert(path.clone(), sha256(content.as_bytes()));
            role.push_str(&format!(
                "  - file: {path}\n    content: {}\n",
                serde_json::to_string(&content)?
            ));
            if i == MANY_FILES / 2 {
                role.push_str(&format!(
                    "  - package: [tend-tool]\n    state: {}\n",
                    ["present", "absent"][index]
                ));
            }
        }
        for i in 0..BIG_FILES {
            let path = format!("/var/lib/pc/big{i}.bin");
            let bytes = big_content(index, i);
            files.insert(path.clone(), sha256(&bytes));
            dev.write(&format!("{dir}/roles/pc/files/big{i}.bin"), &bytes)?;
            role.push_str(&format!("  - file: {path}\n    source: big{i}.bin\n"));
        }
        let comment = format!("power cut generation {index}");
        role.push_str(&format!(
            "  - user: pcuser\n    comment: \"{comment}\"\n    shell: /bin/sh\n"
        ));
        let app = format!("generation={index}\n");
        files.insert(APP_CONF.into(), sha256(app.as_bytes()));
        role.push_str(&format!(
            "  - file: {APP_CONF}\n    content: {}\n    notify: record\n",
            serde_json::to_string(&app)?
        ));
        role.push_str(&format!(
            "  - package: [tend-conffile]\n    state: {}\n",
            ["absent", "present"][index]
        ));
        role.push_str(&format!(
            "handlers:\n  record:\n    command: \"mkdir -p /var/lib/pc && cp {APP_CONF} {HANDLED}\"\n"
        ));
        dev.write(&format!("{dir}/roles/pc/role.yaml"), role)?;
        dev.write(&format!("{dir}/fleet.yaml"), "format: 1\nroles: [pc]\n")?;
        let packages = BTreeMap::from([
            ("tend-hello", Some(hello)),
            ("tend-tool", [Some("1.0-1"), None][index]),
            ("tend-conffile", [None, Some("1.0-1")][index]),
        ]);
        Ok(Generation {
            index,
            dir,
            files,
            packages,
            comment,
        })
    }
}

/// Device paths whose content is neither generation's, with what they hold.
fn torn_files(dev: &Device, old: &Generation, new: &Generation) -> Vec<String> {
    let mut torn = Vec::new();
    for (path, want_new) in &new.files {
        let got = dev.read(path).map(|b| sha256(&b));
        let want_old = old.files.get(path);
        match got {
            Ok(h) if &h == want_new || Some(&h) == want_old => {}
            Ok(h) => torn.push(format!("{path}: sha256 {h} is neither generation's")),
            Err(e) => torn.push(format!("{path}: {e:#}")),
        }
    }
    torn
}

/// Every JSON file tend keeps (state, report, pending handlers, history) parses.
fn state_readable(dev: &Device) -> Result<()> {
    let dir = dev.path(STATE_DIR)?;
    if !dir.exists() {
        return Ok(());
    }
    let mut paths = vec![];
    for sub in [dir.clone(), dir.join("history")] {
        let Ok(entries) = fs::read_dir(&sub) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                paths.push(e.path());
            }
        }
    }
    for p in paths {
        let bytes = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_slice::<Value>(&bytes)
            .with_context(|| format!("{} is not JSON after a cut", p.display()))?;
    }
    Ok(())
}

/// The packages' installed versions (None: not installed), as dpkg-query says.
fn package_versions(dev: &Device, names: &[&str]) -> Result<BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    for name in names {
        let o = dev.run(&["dpkg-query", "-W", "-f=${db:Status-Abbrev}${Version}", name])?;
        let text = o.stdout.trim();
        let version = text.strip_prefix("ii ").map(|v| v.trim().to_string());
        out.insert(name.to_string(), version);
    }
    Ok(out)
}

/// `dpkg --audit`'s complaints; empty when dpkg's database is consistent.
fn dpkg_audit(dev: &Device) -> Result<String> {
    Ok(dev.run(&["dpkg", "--audit"])?.stdout.trim().to_string())
}

/// Stale `.name.tend-PID.tmp` files in the directories tend writes to.
fn tend_temps(dev: &Device) -> Result<Vec<String>> {
    let mut left = Vec::new();
    for dir in ["/etc/pc/many", "/etc/pc", "/var/lib/pc", STATE_DIR] {
        let Ok(entries) = fs::read_dir(dev.path(dir)?) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(".tend-") && name.ends_with(".tmp") {
                left.push(format!("{dir}/{name}"));
            }
        }
    }
    Ok(left)
}

/// Starts `tend <args>` inside the device as the leader of its own process group (apt, dpkg and
/// maintainer scripts inherit it), SIGKILLs the whole group after `after`, and reports whether the
/// run had already finished by then.
fn cut(dev: &Device, args: &[&str], after: Duration) -> Result<bool> {
    let argv: Vec<&str> = std::iter::once(tend_tests::device::TEND_PATH)
        .chain(args.iter().copied())
        .collect();
    let mut cmd = dev.command(&argv);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn().context("starting tend")?;
    let pgid = child.id() as i32;
    let deadline = Instant::now() + after;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1).min(deadline - Instant::now()));
    }
    // SAFETY: signalling the process group this test created.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    child.wait()?;
    // Anything that left the group (a daemon a maintainer script started) dies with the power too.
    mounts::kill_processes_rooted_under(dev.root());
    Ok(false)
}

fn apply(dev: &Device, generation: &Generation) -> Result<Outcome> {
    dev.tend(&["apply", "--path", &generation.dir, "--device", "dev1"])
}

/// After the recovery run: the device is exactly `g`.
fn check_converged(dev: &Device, g: &Generation) -> Result<()> {
    let mut problems = Vec::new();
    for (path, want) in &g.files {
        match dev.read(path).map(|b| sha256(&b)) {
            Ok(h) if &h == want => {}
            Ok(_) => problems.push(format!("{path} does not hold generation {}", g.index)),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    let names: Vec<&str> = g.packages.keys().copied().collect();
    let versions = package_versions(dev, &names)?;
    for (name, want) in &g.packages {
        let got = versions.get(*name).cloned().flatten();
        if got.as_deref() != *want {
            problems.push(format!("package {name} is {got:?}, wanted {want:?}"));
        }
    }
    let audit = dpkg_audit(dev)?;
    if !audit.is_empty() {
        problems.push(format!("dpkg --audit: {audit}"));
    }
    let passwd = dev.read_string("/etc/passwd")?;
    if !passwd
        .lines()
        .any(|l| l.starts_with("pcuser:") && l.contains(&g.comment))
    {
        problems.push(format!("pcuser's comment is not {:?}", g.comment));
    }
    if dev.read(HANDLED).ok() != dev.read(APP_CONF).ok() {
        problems.push(format!(
            "the handler did not see the newest {APP_CONF}: a notification was lost"
        ));
    }
    let pending = dev.report()?["pending_handlers"].clone();
    if pending.as_array().is_some_and(|a| !a.is_empty()) {
        problems.push(format!("handlers still pending: {pending}"));
    }
    let temps = tend_temps(dev)?;
    if !temps.is_empty() {
        problems.push(format!("tend temp files left: {}", temps.join(", ")));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(())
}

/// What the trials saw, for the summary line (and docs/reliability.md).
#[derive(Default)]
struct Tally {
    trials: usize,
    cut: usize,
    finished_first: usize,
    dpkg_interrupted: usize,
    dpkg_repaired: usize,
    temps_after_cut: usize,
    pending_after_cut: usize,
}

#[test]
fn power_cuts_during_apply_leave_old_or_new_and_the_next_run_converges() -> Result<()> {
    if skip_chroot_tests("power_cuts_during_apply_leave_old_or_new_and_the_next_run_converges") {
        return Ok(());
    }
    let started = Instant::now();
    let trials = env_number("TEND_POWERCUT_TRIALS", 25)? as usize;
    let seed = seed()?;
    println!("power cuts: {trials} trials, TEND_POWERCUT_SEED={seed}");
    let mut rng = Rng(seed);

    let repo = AptRepo::standard()?;
    let dev = Device::bookworm()?;
    dev.install_tend(&tend_binary()?)?;
    dev.use_apt_repo(&repo)?;
    let gens = [Generation::write(&dev, 0)?, Generation::write(&dev, 1)?];

    // Converge to generation 0, then time an uncut 0 → 1 → 0 to know how long an apply lasts.
    let first = apply(&dev, &gens[0])?;
    ensure!(first.code() == Some(2), "first apply\n{first}");
    check_converged(&dev, &gens[0])?;
    let mut full = Duration::ZERO;
    for g in [&gens[1], &gens[0]] {
        let t = Instant::now();
        let out = apply(&dev, g)?;
        full = full.max(t.elapsed());
        ensure!(out.code() == Some(2), "uncut apply\n{out}");
        check_converged(&dev, g)?;
    }
    println!("an uncut apply takes {full:.2?}");

    let mut tally = Tally::default();
    let mut current = 0;
    for trial in 0..trials {
        let target = 1 - current;
        let (old, new) = (&gens[current], &gens[target]);
        // A little past the end too: a cut after the run is one more state to survive.
        let after = full.mul_f64(rng.unit() * 1.1);
        let args = ["apply", "--path", new.dir.as_str(), "--device", "dev1"];
        let finished = cut(&dev, &args, after)?;
        tally.trials += 1;
        if finished {
            tally.finished_first += 1;
        } else {
            tally.cut += 1;
        }
        let context = || format!("trial {trial} (cut at {after:.3?}, seed {seed})");

        let torn = torn_files(&dev, old, new);
        ensure!(
            torn.is_empty(),
            "{}: files torn by the cut:\n{}",
            context(),
            torn.join("\n")
        );
        state_readable(&dev).with_context(context)?;
        let audit = dpkg_audit(&dev)?;
        // dpkg's journal entries are numbered; a `tmp.i` is one it was writing, which it drops.
        let journal: Vec<String> = fs::read_dir(dev.path("/var/lib/dpkg/updates")?)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        let interrupted = !audit.is_empty() || !journal.is_empty();
        tally.dpkg_interrupted += usize::from(interrupted);
        tally.temps_after_cut += usize::from(!tend_temps(&dev)?.is_empty());
        tally.pending_after_cut += usize::from(
            dev.read_string(&format!("{STATE_DIR}/pending-handlers.json"))
                .is_ok_and(|t| t.contains("record")),
        );

        let out = apply(&dev, new)?;
        ensure!(
            matches!(out.code(), Some(0 | 2)),
            "{}: the run after the cut failed\n{out}",
            context()
        );
        if interrupted {
            let text = dev.report()?.to_string();
            ensure!(
                text.contains("dpkg --configure -a"),
                "{}: dpkg was interrupted (audit: {audit:?}, journal: {journal:?}), and the next \
                 run's report does not say it finished it\n{out}",
                context()
            );
            tally.dpkg_repaired += 1;
        }
        check_converged(&dev, new).with_context(context)?;
        current = target;
    }
    // Converged means converged: one more run changes nothing.
    let last = apply(&dev, &gens[current])?;
    ensure!(
        last.code() == Some(0),
        "a run after the last trial changed something\n{last}"
    );

    println!(
        "power cuts: {} trials in {:.1?} (uncut apply {full:.2?}): {} cut mid-run, {} finished \
         before the cut; dpkg interrupted {} times and finished by tend {} times; tend temp files \
         left by {} cuts, all removed; {} cuts left the handler pending, none lost; seed {seed}",
        tally.trials,
        started.elapsed(),
        tally.cut,
        tally.finished_first,
        tally.dpkg_interrupted,
        tally.dpkg_repaired,
        tally.temps_after_cut,
        tally.pending_after_cut,
    );
    Ok(())
}

/// How many cuts the fetch test makes (`TEND_POWERCUT_FETCH_TRIALS`, default 6).
const FETCH_TRIALS_ENV: &str = "TEND_POWERCUT_FETCH_TRIALS";

#[test]
fn power_cuts_during_fetch_keep_a_usable_local_repo() -> Result<()> {
    if skip_chroot_tests("power_cuts_during_fetch_keep_a_usable_local_repo") {
        return Ok(());
    }
    let started = Instant::now();
    let trials = env_number(FETCH_TRIALS_ENV, 6)? as usize;
    let seed = seed()?;
    let mut rng = Rng(seed);
    let repo = FleetRepo::new()?;
    let ca = TestCa::new("tend-powercut")?;
    let server = HttpsGitServer::start(repo.root(), &ca)?;
    let dev = Device::bookworm()?;
    dev.install_tend(&tend_binary()?)?;
    dev.write("/etc/tend/ca.pem", fs::read(ca.cert())?)?;
    dev.write(
        "/etc/tend/tend.yaml",
        format!(
            "source:\n  url: {}\n  branch: main\n  ca_file: /etc/tend/ca.pem\n  retries: 0\n",
            server.url("fleet.git")
        ),
    )?;
    let fleet = "format: 1\nvars: {site: unset}\nroles: [site]\n";
    let role = "resources:\n  - file: /etc/site\n    content: \"{{ site }}\\n\"\n  - file: /var/lib/site/blob\n    source: blob.bin\n";
    // Each commit carries a fresh incompressible blob, so every fetch moves megabytes.
    let commit = |n: usize| -> Result<String> {
        let mut blob = big_content(n + 2, 7);
        blob.truncate(3 << 20);
        repo.commit(
            "main",
            &format!("site {n}"),
            &[
                Change::file("fleet.yaml", fleet),
                Change::file("roles/site/role.yaml", role),
                Change::file("roles/site/files/blob.bin", &blob),
                Change::file("devices/dev1.yaml", format!("vars: {{site: s{n}}}\n")),
            ],
        )
    };
    let run = || dev.tend(&["run", "--device", "dev1"]);
    commit(0)?;
    let t = Instant::now();
    let out = run()?;
    let full = t.elapsed();
    ensure!(out.code() == Some(2), "first run\n{out}");
    ensure!(dev.read_string("/etc/site")? == "s0\n");

    let mut finished_first = 0;
    let mut recovered = 0;
    for n in 1..=trials {
        let head = commit(n)?;
        let after = full.mul_f64(rng.unit());
        finished_first += usize::from(cut(&dev, &["run", "--device", "dev1"], after)?);
        state_readable(&dev).with_context(|| format!("fetch trial {n}"))?;
        let out = run()?;
        ensure!(
            matches!(out.code(), Some(0 | 2)),
            "fetch trial {n} (cut at {after:.3?}, seed {seed}): the next run failed\n{out}"
        );
        let r = dev.report()?;
        ensure!(
            r["git"]["commit"] == head.as_str() && dev.read_string("/etc/site")? == format!("s{n}\n"),
            "fetch trial {n} (cut at {after:.3?}, seed {seed}): the new head was not applied\n{r:#}"
        );
        // A repo tend could not open is moved aside, fetched afresh, and the report says so.
        recovered += usize::from(r.to_string().contains("was corrupt"));
        // The local repo is a sound git repo, not just one tend tolerates.
        let local = dev.path(&format!("{STATE_DIR}/repo.git"))?;
        let fsck = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&local)
            .args(["fsck", "--no-dangling", "--connectivity-only"])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()?;
        ensure!(
            fsck.status.success(),
            "fetch trial {n}: git fsck of the local repo failed: {}",
            String::from_utf8_lossy(&fsck.stderr)
        );
    }
    println!(
        "fetch cuts: {trials} trials in {:.1?} (uncut run {full:.2?}), {finished_first} finished \
         before the cut, {recovered} local repos moved aside and fetched afresh; every next run \
         applied the new head; seed {seed}",
        started.elapsed()
    );
    Ok(())
}
