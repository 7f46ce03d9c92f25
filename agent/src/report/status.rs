//! What an operator asks a device: what is applied, since when, did the last run work, is it
//! suspended, and what is pending. Also `tend suspend` / `tend resume`, and the report history.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tend_roles::{fsutil, statefile};

use crate::clock::unix_seconds;
use crate::report::runstate::RunState;
use crate::report::{Report, RunResult};

pub const SUSPENDED_FILE: &str = "suspended.json";
pub const HISTORY_DIR: &str = "history";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    pub reason: String,
    /// Unix seconds.
    pub since: u64,
}

pub fn suspension(state_dir: &Path) -> Option<Suspension> {
    let bytes = std::fs::read(state_dir.join(SUSPENDED_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn suspend(state_dir: &Path, reason: &str) -> std::io::Result<Suspension> {
    std::fs::create_dir_all(state_dir)?;
    let s = Suspension {
        reason: reason.to_string(),
        since: unix_seconds(SystemTime::now()),
    };
    statefile::write_json(&state_dir.join(SUSPENDED_FILE), &s, 0o644)?;
    Ok(s)
}

/// Returns whether the device was suspended.
pub fn resume(state_dir: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(state_dir.join(SUSPENDED_FILE)) {
        Ok(()) => {
            fsutil::fsync_dir(state_dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Keeps a copy of `report` in the history and drops the oldest beyond `keep`.
pub fn record_history(state_dir: &Path, report: &Report, keep: usize) -> std::io::Result<()> {
    let dir = state_dir.join(HISTORY_DIR);
    std::fs::create_dir_all(&dir)?;
    report.write(&dir.join(format!(
        "{:012}-{:07}.json",
        report.finished,
        std::process::id()
    )))?;
    let mut names: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep);
    for n in &names[..excess] {
        let _ = std::fs::remove_file(dir.join(n));
    }
    Ok(())
}

pub fn history(state_dir: &Path) -> Vec<Report> {
    let dir = state_dir.join(HISTORY_DIR);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .rev()
        .filter_map(|p| Report::read(p).ok())
        .collect()
}

/// Everything `tend status` shows, also as JSON.
#[derive(Debug, Serialize)]
pub struct Status {
    pub device: Option<String>,
    pub applied: Option<Applied>,
    pub last_run: Option<LastRun>,
    pub pending_handlers: Vec<String>,
    /// What an application's inhibitor held off in the last run.
    pub deferred: Vec<crate::safety::defer::Deferred>,
    pub suspended: Option<Suspension>,
    /// The branch head seen last is newer than the applied commit.
    pub lagging: Option<Lag>,
    /// With `source.pointer`: the newest valid pointer, and whether it is stale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<crate::report::PointerInfo>,
    /// When the stage has waves: this device's wave for the head, and when it applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::report::RolloutInfo>,
}

#[derive(Debug, Serialize)]
pub struct Applied {
    pub branch: String,
    pub commit: String,
    pub since: u64,
    /// The key the applied commit was trusted under, when keys are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<crate::report::Signer>,
}

#[derive(Debug, Serialize)]
pub struct LastRun {
    pub result: RunResult,
    pub finished: u64,
    pub age_seconds: u64,
    pub source: String,
    pub changed: usize,
    /// Of `changed`, the changes that repaired drift.
    pub corrective: usize,
    pub failed: usize,
    /// Audit-only resources that differ from the desired state.
    pub drifted: usize,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Lag {
    pub applied: String,
    pub head: String,
    pub reason: Option<String>,
}

/// `root` is the device root, whose /run holds the last run's times (see `lastrun`).
pub fn status(root: &Path, state_dir: &Path, run_state: &RunState, now: SystemTime) -> Status {
    let report = crate::report::lastrun::current_report(root, state_dir);
    let pending: Vec<String> =
        std::fs::read(state_dir.join(crate::device::state::PENDING_HANDLERS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
    let applied = run_state.last_good.as_ref().map(|g| Applied {
        branch: g.branch.clone(),
        commit: g.commit.clone(),
        since: g.applied_at,
        signer: g.signer.clone(),
    });
    let lagging = report.as_ref().and_then(|r| r.git.as_ref()).and_then(|g| {
        let good = run_state.last_good.as_ref()?;
        let head = g.head.clone().unwrap_or_else(|| g.commit.clone());
        (g.fell_back || head != good.commit).then(|| Lag {
            applied: good.commit.clone(),
            head,
            reason: g.refused.clone().or_else(|| {
                g.rollout
                    .as_ref()
                    .filter(|w| w.waiting)
                    .map(|w| w.describe())
            }),
        })
    });
    Status {
        device: report.as_ref().map(|r| r.device.id.clone()),
        applied,
        last_run: report.as_ref().map(|r| LastRun {
            result: r.result,
            finished: r.finished,
            age_seconds: unix_seconds(now).saturating_sub(r.finished),
            source: r.source.location.clone(),
            changed: r.counts.changed,
            corrective: r.counts.corrective,
            failed: r.counts.failed,
            drifted: r.counts.drifted,
            errors: r.errors.clone(),
        }),
        pointer: report
            .as_ref()
            .and_then(|r| r.git.as_ref())
            .and_then(|g| g.pointer.clone()),
        rollout: report
            .as_ref()
            .and_then(|r| r.git.as_ref())
            .and_then(|g| g.rollout.clone()),
        pending_handlers: pending,
        deferred: report.map(|r| r.deferred).unwrap_or_default(),
        suspended: suspension(state_dir),
        lagging,
    }
}

pub(crate) fn age(seconds: u64) -> String {
    match seconds {
        0..=119 => format!("{seconds} s ago"),
        120..=7199 => format!("{} min ago", seconds / 60),
        7200..=172_799 => format!("{} h ago", seconds / 3600),
        _ => format!("{} days ago", seconds / 86400),
    }
}

pub fn print(out: &mut dyn Write, s: &Status, now: SystemTime) -> std::io::Result<()> {
    let now = unix_seconds(now);
    if let Some(d) = &s.device {
        writeln!(out, "device:     {d}")?;
    }
    match &s.applied {
        Some(a) => writeln!(
            out,
            "applied:    {} {} (since {})",
            a.branch,
            &a.commit[..12.min(a.commit.len())],
            age(now.saturating_sub(a.since))
        )?,
        None => writeln!(out, "applied:    nothing from git yet")?,
    }
    if let Some(signer) = s.applied.as_ref().and_then(|a| a.signer.as_ref()) {
        writeln!(out, "signed by:  {signer}")?;
    }
    match &s.last_run {
        Some(r) => {
            writeln!(
                out,
                "last run:   {} {} ({} changed, {} corrective, {} failed, {} drifted) from {}",
                r.result.as_str(),
                age(r.age_seconds),
                r.changed,
                r.corrective,
                r.failed,
                r.drifted,
                r.source
            )?;
            for e in &r.errors {
                writeln!(out, "  error:    {e}")?;
            }
        }
        None => writeln!(out, "last run:   never")?,
    }
    if let Some(l) = &s.lagging {
        let why = l.reason.as_deref().unwrap_or("not applied yet");
        writeln!(
            out,
            "lagging:    head {} is not applied ({why})",
            &l.head[..12.min(l.head.len())]
        )?;
    }
    if let Some(p) = &s.pointer {
        match (p.sequence, &p.expires) {
            (Some(seq), Some(expires)) => writeln!(
                out,
                "pointer:    sequence {seq}, expires {expires}{}",
                if p.stale { " (stale)" } else { "" }
            )?,
            _ => writeln!(out, "pointer:    none accepted yet (stale)")?,
        }
    }
    if let Some(w) = &s.rollout {
        writeln!(out, "rollout:    {}", w.describe())?;
    }
    if !s.pending_handlers.is_empty() {
        writeln!(out, "pending:    {}", s.pending_handlers.join(", "))?;
    }
    for d in &s.deferred {
        writeln!(
            out,
            "deferred:   {} by {} (since {})",
            d.action,
            d.holder,
            age(now.saturating_sub(d.since))
        )?;
    }
    match &s.suspended {
        Some(x) => writeln!(
            out,
            "suspended:  yes, {} ({})",
            x.reason,
            age(now.saturating_sub(x.since))
        )?,
        None => writeln!(out, "suspended:  no")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspend_and_resume_round_trip() {
        let d = tempfile::tempdir().unwrap();
        assert!(suspension(d.path()).is_none());
        suspend(d.path(), "site visit: do not touch").unwrap();
        assert_eq!(
            suspension(d.path()).unwrap().reason,
            "site visit: do not touch"
        );
        assert!(resume(d.path()).unwrap());
        assert!(!resume(d.path()).unwrap(), "resuming twice is fine");
        assert!(suspension(d.path()).is_none());
    }

    #[test]
    fn status_of_a_fresh_device_says_never() {
        let d = tempfile::tempdir().unwrap();
        let s = status(d.path(), d.path(), &RunState::default(), SystemTime::now());
        let mut out = Vec::new();
        print(&mut out, &s, SystemTime::now()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("last run:   never") && text.contains("suspended:  no"),
            "{text}"
        );
    }

    #[test]
    fn status_names_the_key_the_applied_commit_was_trusted_under() {
        let d = tempfile::tempdir().unwrap();
        let run_state = RunState {
            last_good: Some(crate::report::runstate::GoodCommit {
                branch: "production".into(),
                commit: "0123456789abcdef".into(),
                signer: Some(crate::report::Signer {
                    method: "ssh".into(),
                    principal: "release@fleet".into(),
                    fingerprint: "SHA256:abc".into(),
                    tag: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = status(d.path(), d.path(), &run_state, SystemTime::now());
        let mut out = Vec::new();
        print(&mut out, &s, SystemTime::now()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("signed by:  ssh release@fleet (SHA256:abc)"),
            "{text}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["applied"]["signer"]["fingerprint"], "SHA256:abc");
    }
}
