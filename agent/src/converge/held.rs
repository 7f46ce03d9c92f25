//! Inhibitors in a run: which notified handlers and which reboot an application holds off now,
//! what that leaves in `deferred.json`, and what the report says (`safety::inhibit` finds the
//! holders, `safety::defer` keeps the times).

use std::collections::BTreeSet;
use std::path::Path;

use crate::safety::defer::{self, Deferrals, Deferred, Verdict};
use crate::safety::inhibit::{self, Inhibitors};

/// The inhibitors of one run and the deferrals they update.
pub struct Held {
    pub inhibitors: Inhibitors,
    deferrals: Deferrals,
    now: u64,
    max: u64,
    check: bool,
    /// Messages for actions that waited longer than `inhibit.max_deferral` and now run.
    pub overdue: Vec<String>,
}

impl Held {
    /// Probes the holders under `root`; `file` is `deferred.json` (read, and in check mode never
    /// written).
    pub fn probe(root: &Path, file: &Path, now: u64, max: u64, check: bool) -> Self {
        Self {
            inhibitors: inhibit::probe(root),
            deferrals: Deferrals::load(Some(file)),
            now,
            max,
            check,
            overdue: Vec::new(),
        }
    }

    /// The engine's hold: who holds off handler `name` now, or None to run it.
    pub fn handler(&mut self, name: &str) -> Option<String> {
        let holder = self.inhibitors.restart_holder();
        self.decide(&defer::handler(name), holder)
    }

    /// Who holds a reboot off now, or None to let it happen.
    pub fn reboot(&mut self) -> Option<String> {
        let holder = self.inhibitors.reboot_holder();
        self.decide(defer::REBOOT, holder)
    }

    fn decide(&mut self, action: &str, holder: Option<String>) -> Option<String> {
        match self.deferrals.verdict(action, holder, self.now, self.max) {
            Verdict::Run => None,
            Verdict::Hold(h) => Some(h),
            Verdict::Overdue(m) => {
                tracing::warn!("{m}");
                self.overdue.push(m);
                None
            }
        }
    }

    /// After the handlers: `deferred` (by name) stay held; other handlers' entries go, unless
    /// the run failed (then no handler was asked, and each keeps its time).
    pub fn after_handlers(&mut self, deferred: &[String], failed: bool) -> Vec<Deferred> {
        let holder = self.inhibitors.restart_holder().unwrap_or_default();
        let held: BTreeSet<String> = deferred.iter().map(|n| defer::handler(n)).collect();
        let out = held
            .iter()
            .map(|a| self.deferrals.hold(a, &holder, self.now))
            .collect();
        self.deferrals.retain(|a| {
            a == defer::REBOOT || held.contains(a) || (failed && a.starts_with("handler "))
        });
        out
    }

    /// After the reboot decision: `held_by` held it off now; `done` says the reboot runs now or
    /// none is owed. A reboot waiting outside its window keeps the time it was first held off.
    pub fn after_reboot(&mut self, held_by: Option<&str>, done: bool) -> Option<Deferred> {
        if let Some(h) = held_by {
            return Some(self.deferrals.hold(defer::REBOOT, h, self.now));
        }
        if done || self.inhibitors.reboot_holder().is_none() {
            self.deferrals.retain(|a| a != defer::REBOOT);
        }
        None
    }

    /// Writes `deferred.json` (not in check mode).
    pub fn save(&self) -> std::io::Result<()> {
        if self.check {
            return Ok(());
        }
        self.deferrals.save()
    }
}
