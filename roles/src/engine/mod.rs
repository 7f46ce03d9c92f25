//! The engine: plans and applies a desired state, role by role, then runs notified handlers.
//!
//! It knows no resource's specifics. Its rules are about order and failure: resources apply in
//! order; a failure skips the rest of its role and every role that depends on it; other roles go
//! on. Notifications are persisted the moment they happen, so a crash or a failed run never loses
//! a restart; a handler leaves the pending list only after it succeeded. Handlers do not run after
//! a run with failures (the configuration may be half-applied); they stay pending for the next run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::fsutil;
use crate::host::Host;
use crate::resource::{Applied, DynResource};

pub struct Item {
    pub resource: Box<dyn DynResource>,
    pub notify: Vec<String>,
    /// Where it was declared, "roles/web/role.yaml:12", for reports.
    pub origin: String,
    /// A change to it needs a reboot to take effect (a kernel, /boot/config.txt).
    pub reboot: bool,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Unchanged,
    Changed,
    Failed,
    Skipped,
}

#[derive(Clone, Debug, Serialize)]
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
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub handler: bool,
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
        self.count(Outcome::Failed) + self.errors.len()
    }
}

/// Called after each resource, with (done, total, report): progress for sd-notify and logs.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize, &ResourceReport);

/// Called just before a resource (or handler) is applied; an error fails that resource instead of
/// applying it. The agent keeps what the resource is about to replace here.
pub type BeforeApply<'a> = &'a mut dyn FnMut(&dyn DynResource) -> Result<(), String>;

/// Pending notifications, persisted as a JSON list of handler names.
pub struct PendingHandlers {
    path: Option<PathBuf>,
    names: BTreeSet<String>,
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

    fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let json = serde_json::to_vec(&self.names()).expect("a list of strings serializes");
        fsutil::atomic_write(
            path,
            &json,
            fsutil::Meta {
                mode: Some(0o600),
                ..Default::default()
            },
        )
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
    fn note(&mut self, names: &[String]) -> std::io::Result<Vec<String>> {
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
    fn forget(&mut self, added: &[String]) -> std::io::Result<()> {
        if added.is_empty() {
            return Ok(());
        }
        self.names.retain(|n| !added.contains(n));
        self.save()
    }

    fn remove(&mut self, name: &str) -> std::io::Result<()> {
        if self.names.remove(name) {
            self.save()?;
        }
        Ok(())
    }
}

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
    let mut summary = RunSummary::default();
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
            };
            if let Some(reason) = &skip_reason {
                report.outcome = Outcome::Skipped;
                report.summary = Some(reason.clone());
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
    );
    summary.pending_handlers = pending.names();
    summary
}

enum Step {
    Unchanged,
    Changed(String, Option<String>),
    Skipped(String),
    Failed(String),
}

fn step(resource: &dyn DynResource, host: &Host, before_apply: BeforeApply) -> Step {
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

fn run_handlers(
    desired: &Desired,
    host: &Host,
    pending: &mut PendingHandlers,
    would_notify: &BTreeSet<String>,
    summary: &mut RunSummary,
    before_apply: BeforeApply,
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
        };
        if run_failed {
            report.summary =
                Some("deferred: the run had failures; the handler stays pending".into());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ResourceError;
    use crate::resource::{Change, Resource};
    use std::fs;

    /// A file under the root with fixed content; fails when the content is "FAIL".
    struct Marker {
        path: &'static str,
        content: &'static str,
    }

    impl Resource for Marker {
        type Actual = Option<String>;
        fn kind(&self) -> &'static str {
            "marker"
        }
        fn id(&self) -> String {
            self.path.to_string()
        }
        fn read(&self, host: &Host) -> Result<Self::Actual, ResourceError> {
            Ok(fs::read_to_string(host.path(self.path)?).ok())
        }
        fn diff(&self, actual: &Self::Actual, _: &Host) -> Option<Change> {
            (actual.as_deref() != Some(self.content)).then(|| Change::new("content"))
        }
        fn apply(&self, _: Self::Actual, host: &Host) -> Result<Applied, ResourceError> {
            if self.content == "FAIL" {
                return Err(ResourceError::other("told to fail"));
            }
            fs::write(host.path(self.path)?, self.content)
                .map_err(|e| ResourceError::io(std::path::Path::new(self.path), e))?;
            Ok(Applied::Done)
        }
    }

    /// Appends a line to a file every time it runs: counts handler runs.
    struct Counter(&'static str);

    impl Resource for Counter {
        type Actual = ();
        fn kind(&self) -> &'static str {
            "counter"
        }
        fn id(&self) -> String {
            self.0.to_string()
        }
        fn read(&self, _: &Host) -> Result<(), ResourceError> {
            Ok(())
        }
        fn diff(&self, _: &(), _: &Host) -> Option<Change> {
            Some(Change::new("run"))
        }
        fn apply(&self, _: (), host: &Host) -> Result<Applied, ResourceError> {
            let p = host.path(self.0)?;
            let mut text = fs::read_to_string(&p).unwrap_or_default();
            text.push_str("ran\n");
            fs::write(&p, text).map_err(|e| ResourceError::io(&p, e))?;
            Ok(Applied::Done)
        }
    }

    fn item(path: &'static str, content: &'static str, notify: &[&str]) -> Item {
        Item {
            resource: Box::new(Marker { path, content }),
            notify: notify.iter().map(|s| s.to_string()).collect(),
            origin: "test".into(),
            reboot: false,
        }
    }

    fn role(name: &str, depends: &[&str], items: Vec<Item>) -> RolePlan {
        RolePlan {
            name: name.into(),
            depends: depends.iter().map(|s| s.to_string()).collect(),
            items,
        }
    }

    fn handler(name: &str, path: &'static str) -> Handler {
        Handler {
            name: name.into(),
            role: "r".into(),
            resource: Box::new(Counter(path)),
            reboot: false,
        }
    }

    fn runs(root: &std::path::Path, file: &str) -> usize {
        fs::read_to_string(root.join(file))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    #[test]
    fn failure_skips_rest_of_role_and_dependents_but_not_others() {
        let d = tempfile::tempdir().unwrap();
        let desired = Desired {
            roles: vec![
                role(
                    "a",
                    &[],
                    vec![
                        item("/a1", "x", &[]),
                        item("/a2", "FAIL", &[]),
                        item("/a3", "x", &[]),
                    ],
                ),
                role("b", &["a"], vec![item("/b1", "x", &[])]),
                role("c", &[], vec![item("/c1", "x", &[])]),
            ],
            handlers: vec![],
        };
        let s = converge(&desired, &Host::new(d.path()), None, &mut |_, _, _| {});
        let outcomes: Vec<Outcome> = s.resources.iter().map(|r| r.outcome).collect();
        use Outcome::*;
        assert_eq!(outcomes, [Changed, Failed, Skipped, Skipped, Changed]);
        assert!(!d.path().join("a3").exists() && !d.path().join("b1").exists());
        assert!(d.path().join("c1").exists(), "an independent role goes on");
    }

    #[test]
    fn handlers_run_once_at_the_end_in_declaration_order() {
        let d = tempfile::tempdir().unwrap();
        let desired = Desired {
            roles: vec![role(
                "r",
                &[],
                vec![
                    item("/1", "x", &["second", "first"]),
                    item("/2", "y", &["first"]),
                ],
            )],
            handlers: vec![handler("first", "/h1"), handler("second", "/h2")],
        };
        let pending = d.path().join("pending.json");
        let s = converge(
            &desired,
            &Host::new(d.path()),
            Some(&pending),
            &mut |_, _, _| {},
        );
        assert_eq!(runs(d.path(), "h1"), 1, "notified twice, runs once");
        assert_eq!(runs(d.path(), "h2"), 1);
        let order: Vec<&str> = s
            .resources
            .iter()
            .filter(|r| r.handler)
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(order, ["/h1", "/h2"]);
        assert!(s.pending_handlers.is_empty());
        // Converged: the second run notifies nothing.
        converge(
            &desired,
            &Host::new(d.path()),
            Some(&pending),
            &mut |_, _, _| {},
        );
        assert_eq!(runs(d.path(), "h1"), 1);
        assert_eq!(s.handlers_run, ["first", "second"]);
    }

    #[test]
    fn before_apply_sees_only_changes_and_its_error_fails_the_resource() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("same"), "x").unwrap();
        let desired = Desired {
            roles: vec![role(
                "r",
                &[],
                vec![
                    item("/same", "x", &[]),
                    item("/new", "x", &[]),
                    item("/refused", "x", &[]),
                ],
            )],
            handlers: vec![],
        };
        let mut seen = Vec::new();
        let s = converge_with(
            &desired,
            &Host::new(d.path()),
            None,
            &mut |_, _, _| {},
            &mut |r| {
                seen.push(r.id());
                if r.id() == "/refused" {
                    Err("cannot keep the old content".into())
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(
            seen,
            ["/new", "/refused"],
            "unchanged resources are not applied"
        );
        let outcomes: Vec<Outcome> = s.resources.iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            [Outcome::Unchanged, Outcome::Changed, Outcome::Failed]
        );
        assert_eq!(
            s.resources[2].error.as_deref(),
            Some("cannot keep the old content")
        );
        assert!(!d.path().join("refused").exists(), "never applied");
    }

    #[test]
    fn handler_notified_in_a_failed_run_runs_on_the_next_run() {
        let d = tempfile::tempdir().unwrap();
        let pending = d.path().join("pending.json");
        let failing = Desired {
            roles: vec![
                role("r", &[], vec![item("/1", "x", &["restart"])]),
                role("s", &[], vec![item("/2", "FAIL", &[])]),
            ],
            handlers: vec![handler("restart", "/h")],
        };
        let s = converge(
            &failing,
            &Host::new(d.path()),
            Some(&pending),
            &mut |_, _, _| {},
        );
        assert_eq!(runs(d.path(), "h"), 0, "handlers wait after a failed run");
        assert_eq!(s.pending_handlers, ["restart"]);
        assert!(
            fs::read_to_string(&pending).unwrap().contains("restart"),
            "persisted"
        );
        let fixed = Desired {
            roles: vec![
                role("r", &[], vec![item("/1", "x", &["restart"])]),
                role("s", &[], vec![item("/2", "ok", &[])]),
            ],
            handlers: vec![handler("restart", "/h")],
        };
        let s = converge(
            &fixed,
            &Host::new(d.path()),
            Some(&pending),
            &mut |_, _, _| {},
        );
        assert_eq!(
            runs(d.path(), "h"),
            1,
            "the pending handler ran although /1 no longer changed"
        );
        assert!(s.pending_handlers.is_empty());
        assert_eq!(fs::read_to_string(&pending).unwrap(), "[]");
    }

    #[test]
    fn only_changed_resources_and_handlers_marked_reboot_require_one() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("same"), "x").unwrap();
        let marked = |path, content, notify: &[&str]| Item {
            reboot: true,
            ..item(path, content, notify)
        };
        let desired = Desired {
            roles: vec![role(
                "r",
                &[],
                vec![
                    marked("/same", "x", &[]),
                    marked("/kernel", "6.1", &["fw"]),
                    item("/plain", "x", &[]),
                ],
            )],
            handlers: vec![Handler {
                reboot: true,
                ..handler("fw", "/fw")
            }],
        };
        let s = converge(&desired, &Host::new(d.path()), None, &mut |_, _, _| {});
        assert_eq!(s.reboot, ["marker /kernel", "counter /fw"]);
        let again = converge(&desired, &Host::new(d.path()), None, &mut |_, _, _| {});
        assert!(again.reboot.is_empty(), "converged: no reboot");
    }

    #[test]
    fn check_mode_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let pending = d.path().join("pending.json");
        let desired = Desired {
            roles: vec![role("r", &[], vec![item("/1", "x", &["h"])])],
            handlers: vec![handler("h", "/h")],
        };
        let mut host = Host::new(d.path());
        host.check = true;
        let s = converge(&desired, &host, Some(&pending), &mut |_, _, _| {});
        assert_eq!(s.changed(), 2, "the resource and its handler would change");
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            0,
            "nothing written, not even pending handlers"
        );
    }

    /// Writes its file only after checking that the notification it triggers is already on
    /// disk: a power cut between the write and the notification must not lose the handler.
    struct SeesPending {
        path: &'static str,
        pending: std::path::PathBuf,
    }

    impl Resource for SeesPending {
        type Actual = bool;
        fn kind(&self) -> &'static str {
            "sees-pending"
        }
        fn id(&self) -> String {
            self.path.to_string()
        }
        fn read(&self, host: &Host) -> Result<bool, ResourceError> {
            Ok(host.path(self.path)?.exists())
        }
        fn diff(&self, exists: &bool, _: &Host) -> Option<Change> {
            (!exists).then(|| Change::new("create"))
        }
        fn apply(&self, _: bool, host: &Host) -> Result<Applied, ResourceError> {
            let on_disk = fs::read_to_string(&self.pending).unwrap_or_default();
            if !on_disk.contains("\"h\"") {
                return Err(ResourceError::other(format!(
                    "the notification is not on disk before the change: {on_disk:?}"
                )));
            }
            fs::write(host.path(self.path)?, "x")
                .map_err(|e| ResourceError::io(std::path::Path::new(self.path), e))?;
            Ok(Applied::Done)
        }
    }

    #[test]
    fn a_power_cut_after_a_change_cannot_lose_its_notification() {
        let d = tempfile::tempdir().unwrap();
        let pending = d.path().join("pending.json");
        let desired = Desired {
            roles: vec![role(
                "r",
                &[],
                vec![
                    Item {
                        resource: Box::new(SeesPending {
                            path: "/1",
                            pending: pending.clone(),
                        }),
                        notify: vec!["h".into()],
                        origin: "test".into(),
                        reboot: false,
                    },
                    item("/2", "FAIL", &["g"]),
                ],
            )],
            handlers: vec![handler("h", "/h"), handler("g", "/g")],
        };
        let s = converge(
            &desired,
            &Host::new(d.path()),
            Some(&pending),
            &mut |_, _, _| {},
        );
        assert_eq!(
            s.resources[0].outcome,
            Outcome::Changed,
            "{:?}",
            s.resources[0]
        );
        assert_eq!(
            s.pending_handlers,
            ["h"],
            "a failed change takes back its own notification; the run's failure defers h"
        );
        assert_eq!(fs::read_to_string(&pending).unwrap(), "[\"h\"]");
    }
}
