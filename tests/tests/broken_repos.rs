//! Every broken fleet repo in `tests/corpus/broken` is refused: `tend validate` names the file and
//! line of the problem (exit 10), and `tend apply` on a device applies nothing.
//!
//! The corpus is data, not code (see tests/corpus/README.md), so that adding a case is adding a
//! directory. Each case is an overlay on `tests/corpus/base`, a valid fleet; the base is checked
//! too, because a corpus whose base is already broken would "pass" without testing anything.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tend_tests::{run, skip_chroot_tests, tend_binary, Device};

/// The corpus covers at least this many kinds of breakage; fewer means a directory went missing.
const MIN_CASES: usize = 24;
const INVALID_REPO: i32 = 10;
/// Marks a file that the test turns into a symlink (git and copies may not keep one that leaves
/// the repo; a marker always survives).
const SYMLINK_MARKER: &str = ".symlink";
const EXPECT_FILE: &str = "expect.txt";

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

struct Case {
    name: String,
    overlay: PathBuf,
    /// `path:line`, or `path` for a problem with a whole file.
    location: String,
    /// Substrings the message at `location` must contain.
    wanted: Vec<String>,
}

impl Case {
    /// Whether one output line is the expected diagnostic. The location must be the line's prefix
    /// followed by ": ", so `fleet.yaml:1` does not match `fleet.yaml:12: …`, and a bare path does
    /// not match the same path with a line.
    fn matches(&self, line: &str) -> bool {
        line.strip_prefix(&self.location)
            .is_some_and(|rest| rest.starts_with(": "))
            && self.wanted.iter().all(|w| line.contains(w.as_str()))
    }

    /// A typo in expect.txt must not turn into a "tend bug": the expected file exists in the
    /// materialized repo (a symlink counts) and has the expected line.
    fn check_location(&self, repo: &Path) -> Result<()> {
        let (path, line) = match self.location.rsplit_once(':') {
            Some((p, l)) if l.bytes().all(|b| b.is_ascii_digit()) => (p, Some(l.parse::<usize>()?)),
            _ => (self.location.as_str(), None),
        };
        let full = repo.join(path);
        ensure!(
            full.symlink_metadata().is_ok(),
            "{}: expect.txt names {path}, which the case does not have",
            self.name
        );
        if let Some(line) = line {
            let bytes = fs::read(&full)?;
            let lines = bytes.split(|b| *b == b'\n').count() - usize::from(bytes.ends_with(b"\n"));
            ensure!(
                (1..=lines).contains(&line),
                "{}: expect.txt names line {line} of {path}, which has {lines} lines",
                self.name
            );
        }
        Ok(())
    }

    fn expectation(&self) -> String {
        format!("{} … {}", self.location, self.wanted.join(" … "))
    }
}

/// Every case, sorted by name, with its expectation read and checked for shape.
fn cases() -> Result<Vec<Case>> {
    let dir = corpus().join("broken");
    let mut cases = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let overlay = entry?.path();
        if !overlay.is_dir() {
            continue;
        }
        let name = overlay
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let expect_path = overlay.join(EXPECT_FILE);
        let text = fs::read_to_string(&expect_path)
            .with_context(|| format!("case {name} needs {}", expect_path.display()))?;
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        let (location, wanted): (String, Vec<String>) = match lines.as_slice() {
            [loc, rest @ ..] if !loc.is_empty() && !rest.is_empty() && rest.len() <= 2 => (
                loc.to_string(),
                rest.iter().map(|s| s.to_string()).collect(),
            ),
            _ => bail!(
                "{}: expected `path:line`, a message substring and optionally a fix substring, \
                 one per line",
                expect_path.display()
            ),
        };
        ensure!(
            wanted.iter().all(|w| !w.is_empty()),
            "{}: an empty substring matches anything",
            expect_path.display()
        );
        cases.push(Case {
            name,
            overlay,
            location,
            wanted,
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    ensure!(
        cases.len() >= MIN_CASES,
        "only {} cases in {}; the corpus has at least {MIN_CASES}",
        cases.len(),
        dir.display()
    );
    Ok(cases)
}

/// Copies `from` into `to`: directories merge, files replace, and a `<name>.symlink` marker
/// becomes a symlink `<name>` to the marker's first line.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        let src = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&src, &to.join(&name))?;
            continue;
        }
        let (dest, link_target) = if let Some(link) = name.strip_suffix(SYMLINK_MARKER) {
            let text = fs::read_to_string(&src)?;
            let target = text.lines().next().unwrap_or_default().trim().to_string();
            ensure!(
                !target.is_empty(),
                "{}: empty symlink target",
                src.display()
            );
            (to.join(link), Some(PathBuf::from(target)))
        } else if kind.is_symlink() {
            (to.join(&name), Some(fs::read_link(&src)?))
        } else {
            (to.join(&name), None)
        };
        // An overlay replaces what base has at that path, whatever its type.
        if dest.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
            fs::remove_file(&dest)?;
        }
        match link_target {
            Some(target) => std::os::unix::fs::symlink(target, &dest)?,
            None => {
                fs::copy(&src, &dest).with_context(|| format!("copying {}", src.display()))?;
            }
        }
    }
    Ok(())
}

/// Builds the case's repo in `dest` (a fresh directory): base, then the overlay.
fn materialize(case: &Case, dest: &Path) -> Result<()> {
    copy_tree(&corpus().join("base"), dest)?;
    copy_tree(&case.overlay, dest)?;
    fs::remove_file(dest.join(EXPECT_FILE))?;
    Ok(())
}

fn tend_validate(bin: &Path, dir: &Path) -> Result<run::Outcome> {
    let mut cmd = Command::new(bin);
    cmd.arg("validate")
        .arg(dir)
        .env_clear()
        .env("LC_ALL", "C.UTF-8");
    run::run(
        cmd,
        &format!("tend validate {}", dir.display()),
        Duration::from_secs(60),
    )
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("(no output)")
}

#[test]
fn every_broken_repo_fails_validate_with_file_and_line() -> Result<()> {
    let bin = tend_binary()?;
    let cases = cases()?;

    let base = tend_validate(&bin, &corpus().join("base"))?;
    ensure!(
        base.code() == Some(0),
        "the corpus base must be a valid fleet, or no case proves anything:\n{base}"
    );

    let mut table = String::new();
    let mut failures = Vec::new();
    for case in &cases {
        let work = tempfile::tempdir()?;
        let dir = work.path().join("fleet");
        materialize(case, &dir)?;
        case.check_location(&dir)?;
        let out = tend_validate(&bin, &dir)?;
        // The temp path varies per run; the table and failures show it as DIR.
        let stdout = out.stdout.replace(&dir.display().to_string(), "DIR");
        let _ = writeln!(table, "{:<34} {}", case.name, first_line(&stdout));
        let mut problems = Vec::new();
        if out.code() != Some(INVALID_REPO) {
            problems.push(format!(
                "exit code {:?}, expected {INVALID_REPO} (invalid fleet repo)",
                out.code()
            ));
        }
        if !stdout.lines().any(|l| case.matches(l)) {
            problems.push(format!("no line `{}`", case.expectation()));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n  stdout:\n{}\n  stderr:\n{}",
                case.name,
                problems.join("; "),
                indent(&stdout),
                indent(&out.stderr)
            ));
        }
    }
    println!("case → first line of `tend validate`:\n{table}");
    ensure!(
        failures.is_empty(),
        "{} of {} broken repos were not refused as expected:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    Ok(())
}

fn indent(text: &str) -> String {
    let text = text.trim_end();
    if text.is_empty() {
        return "    (empty)".to_string();
    }
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where tend keeps its report: each invalid run writes one there, and nothing else may change.
const STATE_DIR: &str = "/var/lib/tend";

#[test]
fn broken_repos_change_nothing_on_a_device() -> Result<()> {
    if skip_chroot_tests("broken_repos_change_nothing_on_a_device") {
        return Ok(());
    }
    let started = Instant::now();
    let cases = cases()?;
    let dev = Device::bookworm()?;
    dev.install_tend(&tend_binary()?)?;
    // Copying the repos in changes the tree, so every repo goes in before the first snapshot.
    let srv = dev.path("/srv")?;
    for case in &cases {
        materialize(case, &srv.join(format!("fleet-{}", case.name)))?;
    }
    // The report is the one write an invalid run makes. Creating its directory would also bump
    // /var/lib's mtime, so it exists before the snapshot, as on a device that has run tend before.
    dev.sh(&format!("mkdir -p -m 0700 {STATE_DIR}"))?;
    let excludes = [STATE_DIR];
    let before = dev.snapshot(&excludes)?;

    let mut failures = Vec::new();
    let mut last = before.clone();
    for case in &cases {
        let repo = format!("/srv/fleet-{}", case.name);
        // A report left by the previous case must not pass for this one's.
        let report = dev.path(&format!("{STATE_DIR}/report.json"))?;
        if report.exists() {
            fs::remove_file(&report)?;
        }
        let out = dev.tend(&["apply", "--path", &repo, "--device", "dev1"])?;
        let mut problems = Vec::new();
        if out.code() != Some(INVALID_REPO) {
            problems.push(format!(
                "exit code {:?}, expected {INVALID_REPO}",
                out.code()
            ));
        }
        if let Err(e) = check_invalid_report(&dev) {
            problems.push(format!("{e:#}"));
        }
        // One snapshot per case (cheap: unchanged files are not read again) names the culprit.
        let now = dev.snapshot(&excludes)?;
        let changes = now.changes_since(&last);
        if !changes.is_empty() {
            problems.push(format!(
                "changed the device:\n{}",
                indent(&changes.join("\n"))
            ));
        }
        last = now;
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n  stdout:\n{}\n  stderr:\n{}",
                case.name,
                problems.join("; "),
                indent(&out.stdout),
                indent(&out.stderr)
            ));
        }
    }
    let after = dev.snapshot(&excludes)?;
    let changes = after.changes_since(&before);
    println!(
        "{} broken repos applied on one device in {:.1?}",
        cases.len(),
        started.elapsed()
    );
    ensure!(
        failures.is_empty() && changes.is_empty(),
        "{} of {} broken repos were not refused cleanly on the device:\n\n{}\n\nall changes since \
         the first run:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n"),
        indent(&changes.join("\n"))
    );
    Ok(())
}

/// The run's report says `invalid` and carries the diagnostics that explain it.
fn check_invalid_report(dev: &Device) -> Result<()> {
    let path = format!("{STATE_DIR}/report.json");
    let text = dev
        .read_string(&path)
        .with_context(|| format!("no {path} after an invalid run"))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{path} is not JSON"))?;
    ensure!(
        report["result"] == "invalid",
        "{path} says result {}, expected \"invalid\"",
        report["result"]
    );
    let diagnostics = report["diagnostics"].as_array().map(Vec::len).unwrap_or(0);
    ensure!(
        diagnostics > 0,
        "{path} has no diagnostics for an invalid run"
    );
    ensure!(
        report["device"]["id"] == "dev1",
        "{path} is for device {}, expected dev1",
        report["device"]["id"]
    );
    Ok(())
}
