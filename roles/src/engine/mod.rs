//! The engine: plans and applies a desired state, role by role, then runs notified handlers.
//!
//! It knows no resource's specifics. Its rules are about order and failure: resources apply in
//! order; a failure skips the rest of its role and every role that depends on it; other roles go
//! on. Notifications are persisted the moment they happen, so a crash or a failed run never loses
//! a restart; a handler leaves the pending list only after it succeeded. Handlers do not run after
//! a run with failures (the configuration may be half-applied), nor while the caller's hold says an
//! application holds them off; they stay pending for the next run.
//! An item with `enforce: false` is only audited: read and diffed, reported drifted, never applied,
//! and it notifies nothing.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

mod handlers;

use handlers::run_handlers;
pub use handlers::PendingHandlers;

use crate::host::Host;
use crate::prefetch::{FetchFailure, Prefetch};
use crate::resource::{Applied, DynResource};

pub struct Item {
    pub resource: Box<dyn DynResource>,
    pub notify: Vec<String>,
    /// Where it was declared, "roles/web/role.yaml:12", for reports.
    pub origin: String,
    /// A change to it needs a reboot to take effect (a kernel, /boot/config.txt).
    pub reboot: bool,
    /// False: audit only. A difference is reported as [`Outcome::Drifted`] and never applied.
    pub enforce: bool,
}

pub struct RolePlan {
    pub name: String,
    pub depends: Vec<String>,
    pub items: Vec<Item>,
}

pub struct Handler {
    pub name: String,
    pub role: String,
    pub resource: Box<dyn DynResource>,
    /// Running it needs a reboot to take effect.
    pub reboot: bool,
}

#[derive(Default)]
pub struct Desired {
    pub roles: Vec<RolePlan>,
    /// In declaration order, which is the order they run in.
    pub handlers: Vec<Handler>,
}

impl Desired {
    pub fn resource_count(&self) -> usize {
        self.roles.iter().map(|r| r.items.len()).sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Unchanged,
    Changed,
    Failed,
    Skipped,
    /// Differs from the desired state and was left as it is (`enforce: false`).
    Drifted,
}

/// One resource's line in the run report (report.json's `resources`), read back by `tend status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResourceReport {
    pub role: String,
    pub kind: String,
    pub id: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handler: bool,
    /// Why a changed resource changed, as the agent judged it (the engine leaves it unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
}

/// Why a change was made: a new commit asked for it, or the device had drifted from an
/// unchanged desired state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    Intentional,
    Corrective,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RunSummary {
    pub resources: Vec<ResourceReport>,
    /// Handlers still owed a run (notified, not yet succeeded).
    pub pending_handlers: Vec<String>,
    /// Errors not tied to one resource, e.g. the pending-handler file could not be written.
    pub errors: Vec<String>,
    /// Handlers that ran and changed something, by name (a revert runs them again).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub handlers_run: Vec<String>,
    /// "kind id" of every changed resource or handler marked `reboot: true` (in check mode: that
    /// would change).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reboot: Vec<String>,
    /// Handlers notified and held off by the caller's [`Hold`] (they stay pending), by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<String>,
    /// Bytes downloaded before the first change (`crate::prefetch`); 0 when nothing was needed.
    pub downloaded_bytes: u64,
    /// The download before the first change failed: nothing was applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_failed: Option<FetchFailure>,
}

impl RunSummary {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.resources
            .iter()
            .filter(|r| r.outcome == outcome)
            .count()
    }
    pub fn changed(&self) -> usize {
        self.count(Outcome::Changed)
    }
    pub fn failed(&self) -> usize {
        self.count(Outcome::Failed)
            + self.errors.len()
            + usize::from(self.download_failed.is_some())
    }
    pub fn drifted(&self) -> usize {
        self.count(Outcome::Drifted)
    }
}

/// Called after each resource, with (done, total, report): progress for sd-notify and logs.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize, &ResourceReport);

/// Called just before a resource (or handler) is applied; an error fails that resource instead of
/// applying it. The agent keeps what the resource is about to replace here.
pub type BeforeApply<'a> = &'a mut dyn FnMut(&dyn DynResource) -> Result<(), String>;

/// Asked before a notified handler runs, with its name: Some(who) holds it off (an application's
/// inhibitor); it stays pending and is reported as deferred by who.
pub type Hold<'a> = &'a mut dyn FnMut(&str) -> Option<String>;

/// Plans and (unless `host.check`) applies `desired`. `pending_path` is where notifications persist.
pub fn converge(
    desired: &Desired,
    host: &Host,
    pending_path: Option<&Path>,
    progress: Progress,
) -> RunSummary {
    converge_with(desired, host, pending_path, progress, &mut |_| Ok(()))
}

/// [`converge`], calling `before_apply` before each change is applied.
pub fn converge_with(
    desired: &Desired,
    host: &Host,
    pending_path: Option<&Path>,
    progress: Progress,
    before_apply: BeforeApply,
) -> RunSummary {
    converge_held(
        desired,
        host,
        pending_path,
        progress,
        before_apply,
        &mut |_| None,
    )
}

/// [`converge_with`], asking `hold` before each notified handler runs.
pub fn converge_held(
    desired: &Desired,
    host: &Host,
    pending_path: Option<&Path>,
    progress: Progress,
    before_apply: BeforeApply,
    hold: Hold,
) -> RunSummary {
    let mut summary = RunSummary::default();
    // One report per item (handlers that run add a few): growing by doubling held up to twice.
    summary.resources.reserve_exact(desired.resource_count());
    let persist = if host.check { None } else { pending_path };
    let mut pending = PendingHandlers::load(pending_path);
    // In check mode, notifications are collected here and never written.
    let mut would_notify: BTreeSet<String> = BTreeSet::new();
    let mut failed_roles: BTreeSet<&str> = BTreeSet::new();
    let total = desired.resource_count();
    let mut done = 0;
    if persist.is_none() {
        pending.path = None;
    }
    for role in &desired.roles {
        role.items.iter().for_each(|i| i.resource.announce(host));
    }
    desired
        .handlers
        .iter()
        .for_each(|h| h.resource.announce(host));
    if !host.check {
        match download(desired, host) {
            Ok(bytes) => summary.downloaded_bytes = bytes,
            Err(failure) => {
                not_applied(desired, host, &failure, &mut summary);
                summary.download_failed = Some(failure);
                summary.pending_handlers = pending.names();
                return summary;
            }
        }
    }

    for role in &desired.roles {
        let blocked_by = role
            .depends
            .iter()
            .find(|d| failed_roles.contains(d.as_str()));
        let mut skip_reason =
            blocked_by.map(|d| format!("skipped: depends on role '{d}', which failed"));
        for item in &role.items {
            let mut report = ResourceReport {
                role: role.name.clone(),
                kind: item.resource.kind().to_string(),
                id: host.redact(&item.resource.id()),
                outcome: Outcome::Unchanged,
                summary: None,
                diff: None,
                error: None,
                origin: Some(item.origin.clone()),
                handler: false,
                cause: None,
            };
            if let Some(reason) = &skip_reason {
                report.outcome = Outcome::Skipped;
                report.summary = Some(reason.clone());
            } else if !item.enforce {
                match audit(item.resource.as_ref(), host) {
                    Ok(None) => {}
                    Ok(Some((summary_line, diff))) => {
                        report.outcome = Outcome::Drifted;
                        report.summary = Some(summary_line);
                        report.diff = diff;
                    }
                    Err(error) => {
                        report.outcome = Outcome::Failed;
                        report.error = Some(host.redact(&error));
                        skip_reason = Some(format!(
                            "skipped: an earlier resource of role '{}' failed",
                            role.name
                        ));
                    }
                }
            } else {
                // Write-ahead: the notification is durable before the change is made, so a power
                // cut between the two can cause one extra handler run, never a lost one.
                let mut noted = Vec::new();
                let mut note_then = |r: &dyn DynResource| {
                    noted = pending.note(&item.notify).map_err(|e| {
                        format!("cannot persist pending handlers before the change: {e}")
                    })?;
                    before_apply(r)
                };
                let outcome = step(item.resource.as_ref(), host, &mut note_then);
                if !matches!(outcome, Step::Changed(..)) {
                    // Nothing was changed after all: the handlers are owed no run for it.
                    if let Err(e) = pending.forget(&noted) {
                        summary
                            .errors
                            .push(format!("cannot persist pending handlers: {e}"));
                    }
                }
                match outcome {
                    Step::Unchanged => {}
                    Step::Changed(summary_line, diff) => {
                        report.outcome = Outcome::Changed;
                        if item.reboot {
                            summary
                                .reboot
                                .push(format!("{} {}", report.kind, report.id));
                        }
                        report.summary = Some(summary_line);
                        report.diff = diff;
                        if host.check {
                            would_notify.extend(item.notify.iter().cloned());
                        }
                    }
                    Step::Skipped(reason) => {
                        report.outcome = Outcome::Skipped;
                        report.summary = Some(reason);
                    }
                    Step::Failed(error) => {
                        report.outcome = Outcome::Failed;
                        report.error = Some(host.redact(&error));
                        skip_reason = Some(format!(
                            "skipped: an earlier resource of role '{}' failed",
                            role.name
                        ));
                    }
                }
            }
            done += 1;
            progress(done, total, &report);
            summary.resources.push(report);
        }
        if skip_reason.is_some() {
            failed_roles.insert(role.name.as_str());
        }
    }

    run_handlers(
        desired,
        host,
        &mut pending,
        &would_notify,
        &mut summary,
        before_apply,
        hold,
    );
    summary.pending_handlers = pending.names();
    summary
}

/// Download, then apply: everything the enforced resources will fetch, before the first change.
fn download(desired: &Desired, host: &Host) -> Result<u64, FetchFailure> {
    let mut prefetch = Prefetch::default();
    for item in desired.roles.iter().flat_map(|r| &r.items) {
        if item.enforce {
            item.resource.prefetch(host, &mut prefetch);
        }
    }
    prefetch.run(host)
}

/// Every resource is reported skipped: the download before the first change failed, so none
/// was applied (nor read: reading may refresh apt's lists).
fn not_applied(desired: &Desired, host: &Host, failure: &FetchFailure, summary: &mut RunSummary) {
    let reason = format!(
        "not applied: downloading {} before the first change failed",
        failure.what
    );
    for role in &desired.roles {
        for item in &role.items {
            summary.resources.push(ResourceReport {
                role: role.name.clone(),
                kind: item.resource.kind().to_string(),
                id: host.redact(&item.resource.id()),
                outcome: Outcome::Skipped,
                summary: Some(reason.clone()),
                diff: None,
                error: None,
                origin: Some(item.origin.clone()),
                handler: false,
                cause: None,
            });
        }
    }
}

pub(super) enum Step {
    Unchanged,
    Changed(String, Option<String>),
    Skipped(String),
    Failed(String),
}

/// Reads and diffs an audit-only resource: its change (summary, diff), redacted, or None when it
/// is as desired. Never applies.
fn audit(
    resource: &dyn DynResource,
    host: &Host,
) -> Result<Option<(String, Option<String>)>, String> {
    let plan = resource.plan(host).map_err(|e| e.to_string())?;
    Ok(plan.change.map(|c| {
        let diff = c.diff.as_deref().map(|d| host.redact(d));
        (host.redact(&c.summary), diff)
    }))
}

pub(super) fn step(resource: &dyn DynResource, host: &Host, before_apply: BeforeApply) -> Step {
    let plan = match resource.plan(host) {
        Ok(plan) => plan,
        Err(e) => return Step::Failed(e.to_string()),
    };
    let Some(change) = plan.change.clone() else {
        return Step::Unchanged;
    };
    let summary = host.redact(&change.summary);
    let diff = change.diff.as_deref().map(|d| host.redact(d));
    if host.check {
        return match change.skipped {
            Some(reason) => Step::Skipped(host.redact(&reason)),
            None => Step::Changed(summary, diff),
        };
    }
    if let Err(e) = before_apply(resource) {
        return Step::Failed(e);
    }
    let applied = plan.apply(host);
    host.forget_read_ahead();
    match applied {
        Ok(Applied::Done) => Step::Changed(summary, diff),
        Ok(Applied::Skipped(reason)) => Step::Skipped(host.redact(&reason)),
        Err(e) => Step::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests;
