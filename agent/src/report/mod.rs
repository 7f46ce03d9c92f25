//! What a run tells the world: the run report (this file), the history and `tend status`, the
//! metrics file, the Mender inventory, sd-notify, and the run state kept between runs. The steps
//! fill in a [`Report`]; these modules only write or read it.
//!
//! The report is the device's answer to "what did you apply, from what, and how did it go",
//! written atomically to the state dir. It is versioned (`schema`) so that readers (status, the
//! Mender inventory script, fleet tooling) can evolve with it; fields are only ever added.

pub mod cause;
pub mod inventory;
pub mod lastrun;
pub mod mender;
pub mod metrics;
pub mod notify;
pub mod publish;
pub mod runstate;
pub mod status;
mod wave;

pub use wave::RolloutInfo;

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tend_roles::{statefile, Outcome, ResourceReport, RunSummary};

use crate::clock::unix_seconds;
use crate::diag::Diagnostic;
use crate::report::cause::Cause;
use crate::safety::reboot::RebootReport;

pub const SCHEMA: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    /// Converged, nothing changed.
    Ok,
    Changed,
    Failed,
    /// The fleet repo was invalid for this device; nothing was applied.
    Invalid,
    /// The run could not start (bad config, unreadable state).
    Error,
    /// The device is suspended: it fetched and reported, and applied nothing.
    Suspended,
    /// A new commit failed the connectivity guard or a `revert: true` health check and the
    /// device went back to the last good commit (also while that commit is still the head).
    Reverted,
    /// The git server throttled the fetch (HTTP 429/503) to the end; the device converged to
    /// its last good commit.
    Throttled,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Ok => "ok",
            RunResult::Changed => "changed",
            RunResult::Failed => "failed",
            RunResult::Invalid => "invalid",
            RunResult::Error => "error",
            RunResult::Suspended => "suspended",
            RunResult::Reverted => "reverted",
            RunResult::Throttled => "throttled",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counts {
    pub unchanged: usize,
    pub changed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Of `changed`, those that repaired drift under an unchanged desired state (`report::cause`).
    #[serde(default)]
    pub corrective: usize,
    /// Audit-only resources (`enforce: false`) that differ from the desired state.
    #[serde(default)]
    pub drifted: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SourceInfo {
    /// "path" for `apply --path`.
    pub kind: String,
    pub location: String,
}

/// Where the applied tree came from, for runs that pull (`tend run`, `apply --ref`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GitInfo {
    pub url: String,
    /// The git URL that served this run: `url`, or one of `source.mirrors` when the sources
    /// before it could not be reached (each of those is a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
    /// The branch (or ref) followed in this run.
    pub branch: String,
    /// The commit applied (the branch head, or the last good commit after a fallback).
    pub commit: String,
    /// Committer time of that commit, Unix seconds.
    pub commit_time: i64,
    /// The branch head seen on the server, when it differs from what was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// Who signed the applied commit (or its tag), when keys are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<Signer>,
    /// The configured branch, and the branch a device file moved this device from, if it did.
    pub configured_branch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_from: Option<String>,
    /// True when the new head was refused and tend converged to the last good commit instead.
    #[serde(default)]
    pub fell_back: bool,
    /// Why the new head was not applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_repo: Option<String>,
    /// The commit that was reverted (in this run, or earlier and not retried), and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted: Option<Reverted>,
    /// The git server was still throttling the fetch when tend stopped asking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled: Option<Throttled>,
    /// With `source.pointer`: the newest valid pointer, and whether it is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<PointerInfo>,
    /// The head's wave, when the repo gives its stage a `rollout:` (see `run::waves`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutInfo>,
}

/// The newest valid stage pointer as a run judged it (see `source::pointer`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointerInfo {
    /// None before any pointer was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The trusted time the pointer was judged at, RFC 3339.
    pub trusted_time: String,
    /// Expired on the trusted clock, older than `source.max_staleness`, or none accepted yet:
    /// the device cannot tell "nothing new" from "held back", and keeps its last good commit.
    pub stale: bool,
}

/// A fetch the git server refused with "not now" (HTTP 429 or 503) to the end: the run kept the
/// last good commit, and reports `result: throttled` rather than a failure of that commit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttled {
    pub host: String,
    pub status: u16,
    /// What the server's last `Retry-After` asked for, in seconds (absent: none, or unreadable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

impl Throttled {
    pub fn of(e: &crate::source::fetch::FetchError) -> Option<Throttled> {
        match e {
            crate::source::fetch::FetchError::Throttled {
                host,
                status,
                retry_after,
                ..
            } => Some(Throttled {
                host: host.clone(),
                status: *status,
                retry_after_seconds: match retry_after {
                    Some(crate::source::fetch::RetryAfter::Wait(d)) => Some(d.as_secs()),
                    _ => None,
                },
            }),
            _ => None,
        }
    }
}

/// The key a device trusted for what it applied: shown in the report, `tend status`, metrics
/// (`tend_signer_info`) and Mender (`tend_signer`), so a fleet view tells which key a device
/// trusted, and a compromised key's reach can be listed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SignerRecord")]
pub struct Signer {
    /// "ssh" or "openpgp".
    pub method: String,
    /// The allowed_signers principal, or the OpenPGP user id.
    pub principal: String,
    /// `SHA256:…` for SSH keys, the signing key's hex fingerprint for OpenPGP.
    pub fingerprint: String,
    /// The signed tag the commit came through, in strict tag mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl Signer {
    pub fn of(verified: &crate::source::verify::Signer, tag: Option<&str>) -> Signer {
        Signer {
            method: verified.method.to_string(),
            principal: verified.principal.clone(),
            fingerprint: verified.fingerprint.clone(),
            tag: tag.map(str::to_string),
        }
    }
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} ({})",
            self.method, self.principal, self.fingerprint
        )?;
        if let Some(t) = &self.tag {
            write!(f, " via tag {t}")?;
        }
        Ok(())
    }
}

/// A signer as reports before this field was structured wrote it: one line of text.
#[derive(Deserialize)]
#[serde(untagged)]
enum SignerRecord {
    Fields {
        method: String,
        principal: String,
        fingerprint: String,
        #[serde(default)]
        tag: Option<String>,
    },
    Line(String),
}

impl From<SignerRecord> for Signer {
    fn from(r: SignerRecord) -> Self {
        match r {
            SignerRecord::Fields {
                method,
                principal,
                fingerprint,
                tag,
            } => Signer {
                method,
                principal,
                fingerprint,
                tag,
            },
            SignerRecord::Line(principal) => Signer {
                principal,
                ..Signer::default()
            },
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Reverted {
    pub commit: String,
    pub cause: String,
    /// Unix seconds of the revert.
    pub at: u64,
    /// Paths put back as they were before the commit (in the run that reverted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restored: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub tend_version: String,
    pub command: String,
    pub source: SourceInfo,
    pub device: DeviceInfo,
    /// Seconds since the Unix epoch, UTC.
    pub started: u64,
    pub finished: u64,
    pub duration_ms: u64,
    pub result: RunResult,
    pub counts: Counts,
    /// Bytes downloaded before the first change (packages: docs/reliability.md); 0 for a no-op.
    #[serde(default)]
    pub downloaded_bytes: u64,
    pub resources: Vec<ResourceReport>,
    pub errors: Vec<String>,
    #[serde(default)]
    pub diagnostics: Vec<Diagnostic>,
    #[serde(default)]
    pub pending_handlers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitInfo>,
    /// Things that did not fail the run but must be seen (e.g. no signing keys configured).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The roles' health checks, run after the apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::safety::health::CheckResult>,
    /// The connectivity guard, run after an apply that changed something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<crate::safety::guard::GuardReport>,
    /// Things tend created for resources no longer declared, left in place (docs/safety.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphans: Vec<crate::report::Orphan>,
    /// Reboots: required by this run, pending, done (docs/safety.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<RebootReport>,
    /// Restarts and reboots an application's inhibitor holds off (docs/safety.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<crate::safety::defer::Deferred>,
}

/// An orphan that stays on the device, for the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    pub kind: String,
    pub id: String,
    pub role: String,
    /// Why it stays: "prune is off", "the run had failures", "tend did not install it".
    pub reason: String,
}

pub fn counts(resources: &[ResourceReport]) -> Counts {
    let mut c = Counts::default();
    for r in resources {
        match r.outcome {
            Outcome::Unchanged => c.unchanged += 1,
            Outcome::Changed => c.changed += 1,
            Outcome::Failed => c.failed += 1,
            Outcome::Skipped => c.skipped += 1,
            Outcome::Drifted => c.drifted += 1,
        }
    }
    c
}

pub struct RunFacts {
    pub command: String,
    pub source: SourceInfo,
    pub device: DeviceInfo,
    pub started: SystemTime,
    pub elapsed: Duration,
}

impl Report {
    /// A report of a run that applied nothing yet: the frame every result fills in.
    fn empty(run: RunFacts, result: RunResult) -> Self {
        Self {
            schema: SCHEMA,
            tend_version: env!("CARGO_PKG_VERSION").into(),
            command: run.command,
            source: run.source,
            device: run.device,
            started: unix_seconds(run.started),
            finished: unix_seconds(run.started + run.elapsed),
            duration_ms: run.elapsed.as_millis() as u64,
            result,
            counts: Counts::default(),
            downloaded_bytes: 0,
            resources: Vec::new(),
            errors: Vec::new(),
            diagnostics: Vec::new(),
            pending_handlers: Vec::new(),
            git: None,
            warnings: Vec::new(),
            checks: Vec::new(),
            guard: None,
            orphans: Vec::new(),
            reboot: None,
            deferred: Vec::new(),
        }
    }

    /// The report of a converge. The resource reports are moved out of `summary`, not copied:
    /// with 10,000 managed files they are the largest thing a run holds. `causes` has the cause
    /// of each changed entry of `summary.resources`, by index.
    pub fn from_summary(run: RunFacts, summary: &mut RunSummary, causes: &[Option<Cause>]) -> Self {
        let mut counts = counts(&summary.resources);
        counts.corrective = causes
            .iter()
            .filter(|c| **c == Some(Cause::Corrective))
            .count();
        let mut resources = std::mem::take(&mut summary.resources);
        for (r, c) in resources.iter_mut().zip(causes) {
            r.cause = *c;
        }
        let result = match (counts.changed > 0, counts.failed + summary.errors.len() > 0) {
            (_, true) => RunResult::Failed,
            (true, false) => RunResult::Changed,
            (false, false) => RunResult::Ok,
        };
        Self {
            counts,
            downloaded_bytes: summary.downloaded_bytes,
            resources,
            errors: summary.errors.clone(),
            pending_handlers: summary.pending_handlers.clone(),
            ..Self::empty(run, result)
        }
    }

    pub fn invalid(run: RunFacts, diagnostics: Vec<Diagnostic>) -> Self {
        Self {
            errors: diagnostics.iter().map(|d| d.to_string()).collect(),
            diagnostics,
            ..Self::empty(run, RunResult::Invalid)
        }
    }

    /// Written with every credential scrubbed (report.json is world-readable, and so is the
    /// history made of these).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        statefile::write_bytes(path, self.scrubbed()?.as_bytes(), 0o644).map(drop)
    }

    /// Writes the report unless `path` already says the same but for when the run happened and
    /// how long it took (those live on /run, see `lastrun`): flash is not worn by a no-op.
    /// Returns whether it wrote.
    pub fn write_if_changed(&self, path: &Path) -> std::io::Result<bool> {
        // A run that changed or failed something is news even when its report reads like the
        // last one (the same converge again on a fresh root filesystem): only a no-op is skipped.
        // The comparison streams, line by line against the file, so a no-op over 10,000
        // resources holds neither report as text.
        let no_op = self.counts.changed == 0 && self.counts.failed == 0;
        let scrubber = tend_roles::redact::JsonScrubber::new();
        let lines = statefile::Lines {
            skip: &is_time_line,
            map: &|line| match std::str::from_utf8(line) {
                Ok(text) => match scrubber.scrub(text) {
                    Cow::Borrowed(_) => Cow::Borrowed(line),
                    Cow::Owned(scrubbed) => Cow::Owned(scrubbed.into_bytes()),
                },
                Err(_) => Cow::Borrowed(line),
            },
        };
        if no_op && statefile::reads_as(path, self, &lines) {
            return Ok(false);
        }
        statefile::write_bytes(path, self.scrubbed()?.as_bytes(), 0o644)?;
        Ok(true)
    }

    fn scrubbed(&self) -> std::io::Result<String> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        Ok((tend_roles::redact::scrub_json(&json) + "\n").into_owned())
    }

    pub fn read(path: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }
}

/// A top-level line of the pretty report that only says when the run happened or how long it
/// took (`  "started": 1700000000,`): those live on /run, so they alone are no news.
fn is_time_line(line: &[u8]) -> bool {
    ["started", "finished", "duration_ms"].iter().any(|k| {
        line.strip_prefix(b"  \"")
            .and_then(|l| l.strip_prefix(k.as_bytes()))
            .is_some_and(|l| l.starts_with(b"\": "))
    })
}

/// The report of a `tend run` from git that did nothing, for tests to fill in.
/// " (N corrective)" after the changed count, when some were.
pub fn corrective_note(r: &Report) -> String {
    match r.counts.corrective {
        0 => String::new(),
        n => format!(" ({n} corrective)"),
    }
}

/// "; wave 3 of 10, applies at …" at the end of the summary line, when the stage has waves.
pub fn rollout_note(r: &Report) -> String {
    match r.git.as_ref().and_then(|g| g.rollout.as_ref()) {
        Some(w) => format!("; {}", w.describe()),
        None => String::new(),
    }
}

/// ", 1.5 MiB downloaded" after the skipped count, when the run downloaded before its changes.
pub fn downloaded_note(r: &Report) -> String {
    match r.downloaded_bytes {
        0 => String::new(),
        n => format!(", {} downloaded", human_bytes(n)),
    }
}

/// 512 B, 12.0 KiB, 3.4 MiB, 1.0 GiB.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// ", N drifted" after the skipped count, when audit-only resources differ.
pub fn drifted_note(r: &Report) -> String {
    match r.counts.drifted {
        0 => String::new(),
        n => format!(", {n} drifted"),
    }
}

#[cfg(test)]
pub(crate) fn blank(started: SystemTime, elapsed: Duration) -> Report {
    let run = RunFacts {
        command: "run".into(),
        source: SourceInfo {
            kind: "git".into(),
            location: "x".into(),
        },
        device: DeviceInfo::default(),
        started,
        elapsed,
    };
    Report::invalid(run, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloaded_bytes_show_in_the_summary_line_only_when_there_were_some() {
        let mut r = blank(SystemTime::UNIX_EPOCH, Duration::ZERO);
        assert_eq!(downloaded_note(&r), "");
        r.downloaded_bytes = 512;
        assert_eq!(downloaded_note(&r), ", 512 B downloaded");
        r.downloaded_bytes = 3 * 1024 * 1024 + 400 * 1024;
        assert_eq!(downloaded_note(&r), ", 3.4 MiB downloaded");
        assert_eq!(human_bytes(5 << 40), "5120.0 GiB");
    }

    #[test]
    fn report_round_trips_through_disk() {
        let d = tempfile::tempdir().unwrap();
        let run = RunFacts {
            command: "apply".into(),
            source: SourceInfo {
                kind: "path".into(),
                location: "/fleet".into(),
            },
            device: DeviceInfo {
                id: "pi-1".into(),
                ..Default::default()
            },
            started: SystemTime::now(),
            elapsed: Duration::from_millis(12),
        };
        let r = Report::invalid(
            run,
            vec![Diagnostic::new("fleet.yaml", 3, "bad").fix("good")],
        );
        let p = d.path().join("report.json");
        r.write(&p).unwrap();
        let back = Report::read(&p).unwrap();
        assert_eq!(back.result, RunResult::Invalid);
        assert_eq!(back.diagnostics[0].line, 3);
        assert_eq!(back.errors[0], "fleet.yaml:3: bad (fix: good)");
    }

    /// A second converge with the same changes (a fresh root filesystem after an OS update)
    /// read like the first and was left out of report.json and the history.
    #[test]
    fn a_run_that_changed_something_is_written_even_when_it_reads_like_the_last() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("report.json");
        let mut r = blank(SystemTime::now(), Duration::ZERO);
        r.result = RunResult::Ok;
        assert!(r.write_if_changed(&p).unwrap(), "no report yet");
        assert!(
            !r.write_if_changed(&p).unwrap(),
            "a no-op reads like the last"
        );
        r.counts.changed = 13;
        assert!(r.write_if_changed(&p).unwrap());
        assert!(r.write_if_changed(&p).unwrap(), "13 changes again are news");
    }

    /// The no-op comparison streams line by line: only the times may differ, and a
    /// credential is compared as the file holds it, scrubbed.
    #[test]
    fn a_no_op_report_differing_only_in_its_times_is_not_written_again() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("report.json");
        let mut r = blank(SystemTime::now(), Duration::ZERO);
        r.result = RunResult::Ok;
        r.warnings
            .push("fetched https://user:hunter2@git.example/fleet".into());
        assert!(r.write_if_changed(&p).unwrap());
        assert!(!std::fs::read_to_string(&p).unwrap().contains("hunter2"));
        r.started += 900;
        r.finished += 901;
        r.duration_ms = 1234;
        assert!(!r.write_if_changed(&p).unwrap(), "only the times moved");
        r.warnings.push("one more".into());
        assert!(r.write_if_changed(&p).unwrap(), "a new warning is news");
        r.warnings.pop();
        assert!(
            r.write_if_changed(&p).unwrap(),
            "a warning fewer is news too"
        );
        assert!(!r.write_if_changed(&p).unwrap());
    }
}
