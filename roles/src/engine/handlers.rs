//! Handlers: notifications persisted the moment they happen, and the handlers run at the end.
//!
//! A restart must survive a crash or a failed run, so a notification is on disk before the change
//! that makes it, and a handler leaves the pending list only after it succeeded.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{step, BeforeApply, Desired, Hold, Outcome, ResourceReport, RunSummary, Step};
use crate::host::Host;
use crate::statefile;

/// Pending notifications, persisted as a JSON list of handler names.
pub struct PendingHandlers {
    pub(super) path: Option<PathBuf>,
    pub(super) names: BTreeSet<String>,
}

impl PendingHandlers {
    /// `None` keeps them in memory only (check mode, tests).
    pub fn load(path: Option<&Path>) -> Self {
        let names = path
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
            .unwrap_or_default();
        Self {
            path: path.map(Path::to_path_buf),
            names: names.into_iter().collect(),
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.names.iter().cloned().collect()
    }

    pub(super) fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        statefile::write_json(path, &self.names(), 0o600).map(drop)
    }

    /// Adds notifications and persists them (e.g. handlers to run again after a revert).
    pub fn add(&mut self, names: &[String]) -> std::io::Result<()> {
        let before = self.names.len();
        self.names.extend(names.iter().cloned());
        if self.names.len() != before {
            self.save()?;
        }
        Ok(())
    }

    /// Adds and persists `names` before a change; returns those that were not pending yet.
    pub(super) fn note(&mut self, names: &[String]) -> std::io::Result<Vec<String>> {
        let added: Vec<String> = names
            .iter()
            .filter(|n| self.names.insert((*n).clone()))
            .cloned()
            .collect();
        if !added.is_empty() {
            if let Err(e) = self.save() {
                self.names.retain(|n| !added.contains(n));
                return Err(e);
            }
        }
        Ok(added)
    }

    /// Takes back what [`PendingHandlers::note`] added, when the change was not made after all.
    pub(super) fn forget(&mut self, added: &[String]) -> std::io::Result<()> {
        if added.is_empty() {
            return Ok(());
        }
        self.names.retain(|n| !added.contains(n));
        self.save()
    }

    pub(super) fn remove(&mut self, name: &str) -> std::io::Result<()> {
        if self.names.remove(name) {
            self.save()?;
        }
        Ok(())
    }
}

pub(super) fn run_handlers(
    desired: &Desired,
    host: &Host,
    pending: &mut PendingHandlers,
    would_notify: &BTreeSet<String>,
    summary: &mut RunSummary,
    before_apply: BeforeApply,
    hold: Hold,
) {
    let known: BTreeSet<&str> = desired.handlers.iter().map(|h| h.name.as_str()).collect();
    for stale in pending.names() {
        if !known.contains(stale.as_str()) {
            tracing::warn!(handler = %stale, "dropping a pending handler that the fleet repo no longer declares");
            if let Err(e) = pending.remove(&stale) {
                summary
                    .errors
                    .push(format!("cannot persist pending handlers: {e}"));
            }
        }
    }
    let run_failed = summary.failed() > 0;
    for handler in &desired.handlers {
        let notified =
            pending.names.contains(&handler.name) || would_notify.contains(&handler.name);
        if !notified {
            continue;
        }
        let mut report = ResourceReport {
            role: handler.role.clone(),
            kind: handler.resource.kind().to_string(),
            id: host.redact(&handler.resource.id()),
            outcome: Outcome::Skipped,
            summary: None,
            diff: None,
            error: None,
            origin: Some(format!("handler '{}'", handler.name)),
            handler: true,
            cause: None,
        };
        let held = if run_failed {
            None
        } else {
            hold(&handler.name)
        };
        if run_failed {
            report.summary =
                Some("deferred: the run had failures; the handler stays pending".into());
        } else if let Some(who) = held {
            report.summary = Some(format!(
                "deferred: held off by {}; the handler stays pending",
                host.redact(&who)
            ));
            if host.check {
                // Nothing was persisted: make the pending list say what a real run would keep.
                pending.names.insert(handler.name.clone());
            }
            summary.deferred.push(handler.name.clone());
        } else {
            match step(handler.resource.as_ref(), host, before_apply) {
                Step::Unchanged => report.outcome = Outcome::Unchanged,
                Step::Changed(s, d) => {
                    report.outcome = Outcome::Changed;
                    if handler.reboot {
                        summary
                            .reboot
                            .push(format!("{} {}", report.kind, report.id));
                    }
                    if !host.check {
                        summary.handlers_run.push(handler.name.clone());
                    }
                    report.summary = Some(if host.check {
                        format!("would run: {s}")
                    } else {
                        s
                    });
                    report.diff = d;
                }
                Step::Skipped(reason) => report.summary = Some(reason),
                Step::Failed(e) => {
                    report.outcome = Outcome::Failed;
                    report.error = Some(host.redact(&e));
                }
            }
            if !host.check && report.outcome != Outcome::Failed {
                if let Err(e) = pending.remove(&handler.name) {
                    summary
                        .errors
                        .push(format!("cannot persist pending handlers: {e}"));
                }
            }
        }
        summary.resources.push(report);
    }
}
