//! Pipeline step "apply": converge the device to a validated desired state, then report.
//!
//! A [`Session`] is what every converging command shares: the root, the device config, the device
//! id, the state dir and the lock. [`converge_tree`] validates a fleet tree (a directory or a git
//! commit) for the device and converges to it. Planning and applying interleave per resource
//! inside the engine, because a later resource may depend on an earlier one's effect (a user must
//! exist before a file it owns).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tend_roles::printable::printable;
use tend_roles::{converge_held, DynResource, Host, Outcome, ResourceReport};

use crate::clock::unix_seconds;
use crate::converge::backup::Backup;
use crate::converge::held::Held;
use crate::converge::output::{download_failed, print_check, print_summary};
use crate::device::config::{expand_globs, Config};
use crate::device::identity::{self, IdSource, IdentityError};
use crate::device::state::{Lock, LockError, StateDir, PENDING_HANDLERS_FILE};
use crate::diag::{Diagnostic, Diagnostics};
use crate::exit;
use crate::fleet::facts;
use crate::fleet::validate::{validate, Inputs};
use crate::fleet::vars::Mode;
use crate::report::cause::{self, Classifier, LastApplied};
use crate::report::publish::{self, clean};
use crate::report::runstate::{RunState, STATE_FILE};
use crate::report::{
    corrective_note, downloaded_note, drifted_note, DeviceInfo, Report, RunFacts, RunResult,
    SourceInfo,
};
use crate::safety::reboot::Happened;
use crate::source::tree::{DirTree, Tree};
use crate::{report::status, safety::health};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("device config: {0}")]
    Config(Diagnostic),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("fleet repo {path}: {source}")]
    Source {
        path: String,
        source: std::io::Error,
    },
    #[error("state dir {path}: {source}")]
    State {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

impl RunError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Lock(LockError::Held { .. }) => exit::LOCKED,
            RunError::Usage(_) => exit::USAGE,
            _ => exit::COULD_NOT_RUN,
        }
    }
}

/// Everything a converging command shares, set up once per run.
pub struct Session {
    pub root: PathBuf,
    pub config: Config,
    pub device_id: String,
    pub id_source: IdSource,
    pub state: StateDir,
    pub run_state: RunState,
    pub check: bool,
    pub diff: bool,
    pub command: String,
    pub started: SystemTime,
    /// sd_notify STATUS= lines for `systemctl status tend`.
    pub notifier: crate::report::notify::Notifier,
    /// Things this run must report besides its result (e.g. the device id changed).
    pub notices: Vec<String>,
    clock: Instant,
    _lock: Option<Lock>,
}

pub struct SessionOptions<'a> {
    pub root: PathBuf,
    pub device: Option<&'a str>,
    pub check: bool,
    pub diff: bool,
    pub command: &'a str,
}

impl Session {
    pub fn start(o: SessionOptions) -> Result<Session, RunError> {
        let started = SystemTime::now();
        let clock = Instant::now();
        let config = Config::load(&o.root).map_err(RunError::Config)?;
        let state = StateDir::new(&o.root, &config.state_dir);
        // Check mode has no side effects at all: no lock file, no state dir, no report.
        let lock = if o.check {
            None
        } else {
            Some(Lock::acquire(&o.root)?)
        };
        let mut run_state = RunState::load(&state.file(STATE_FILE)).unwrap_or_else(|e| {
            tracing::warn!("run state unreadable, starting afresh: {e}");
            RunState::default()
        });
        let real_root = o.root == std::path::Path::new("/");
        let mender = || {
            if real_root {
                identity::mender_device_id_via_dbus()
            } else {
                None
            }
        };
        let (device_id, id_source) = identity::device_id(
            &o.root,
            o.device,
            config.device_id.as_deref(),
            &mender,
            run_state.mender_device_id.as_deref(),
        )?;
        let mut notices = Vec::new();
        if id_source == IdSource::Mender
            && run_state.mender_device_id.as_deref() != Some(device_id.as_str())
        {
            if let Some(old) = &run_state.mender_device_id {
                let msg = format!("the Mender device id changed from {old} to {device_id}");
                tracing::warn!(old = %old, new = %device_id, "{msg}");
                notices.push(msg);
            }
            run_state.mender_device_id = Some(device_id.clone());
        }
        Ok(Session {
            root: o.root,
            config,
            device_id,
            id_source,
            state,
            run_state,
            check: o.check,
            diff: o.diff,
            command: o.command.to_string(),
            started,
            notifier: crate::report::notify::Notifier::from_env(),
            notices,
            clock,
            _lock: lock,
        })
    }

    fn run_facts(&self, source: &SourceInfo, device: DeviceInfo) -> RunFacts {
        RunFacts {
            command: self.command.clone(),
            source: source.clone(),
            device,
            started: self.started,
            elapsed: self.clock.elapsed(),
        }
    }

    /// An I/O failure in the state dir.
    fn state_error(&self, source: std::io::Error) -> RunError {
        RunError::State {
            path: self.state.path.display().to_string(),
            source,
        }
    }

    pub fn save_state(&self) -> Result<(), RunError> {
        if self.check {
            return Ok(());
        }
        let err = |e| self.state_error(e);
        self.state.ensure().map_err(err)?;
        self.run_state
            .save(&self.state.file(STATE_FILE))
            .map_err(err)
    }

    /// Publishes the report to every sink (`report::publish`), with this run's notices.
    pub fn write_report(&mut self, report: &Report) -> Result<(), RunError> {
        let mut with_notices;
        let report = if self.notices.is_empty() {
            report
        } else {
            with_notices = report.clone();
            with_notices.warnings.extend(self.notices.iter().cloned());
            &with_notices
        };
        let sinks = publish::Sinks {
            root: &self.root,
            config: &self.config,
            state: &self.state,
            run_state: &mut self.run_state,
            notifier: &self.notifier,
            check: self.check,
        };
        publish::publish(report, sinks).map_err(|e| self.state_error(e))
    }
}

/// The suspension in force, unless this is a check (which changes nothing anyway).
pub fn suspended(s: &Session) -> Option<status::Suspension> {
    if s.check {
        return None;
    }
    status::suspension(&s.state.path)
}

impl Session {
    /// The report of a run that applied nothing because the device is suspended.
    pub fn suspended_report(&self, source: SourceInfo, susp: &status::Suspension) -> Report {
        let device = DeviceInfo {
            id: self.device_id.clone(),
            ..Default::default()
        };
        let mut report = Report::invalid(self.run_facts(&source, device), Vec::new());
        report.result = crate::report::RunResult::Suspended;
        report.warnings.push(format!("suspended: {}", susp.reason));
        report
    }
}

/// The result of converging one tree. `report.result` is `invalid` when the tree did not validate
/// for this device; nothing was applied then.
pub struct Converged {
    pub exit: u8,
    pub report: Report,
    /// Handlers that ran and changed something (a revert runs them again).
    pub handlers_run: Vec<String>,
    /// What was converged to, kept as the last applied state when the run ends clean.
    pub applied: Option<LastApplied>,
}

impl Converged {
    pub fn invalid(&self) -> bool {
        self.exit == exit::INVALID_REPO
    }
}

/// Validates `tree` (of `commit`, if from git) for the session's device and, if it is valid,
/// converges to it.
pub fn converge_tree(
    s: &Session,
    tree: Arc<dyn Tree>,
    source: SourceInfo,
    commit: Option<&str>,
    out: &mut dyn Write,
) -> Result<Converged, RunError> {
    let facts = facts::gather(facts::Inputs {
        root: &s.root,
        device_id: &s.device_id,
        device_type: s.config.device_type.clone(),
    });
    let mut device = DeviceInfo {
        id: s.device_id.clone(),
        device_type: facts.device_type.clone(),
        groups: Vec::new(),
    };
    let validated = validate(Inputs {
        tree,
        device_id: s.device_id.clone(),
        facts,
        root: &s.root,
        vars_files: expand_globs(&s.root, &s.config.vars_files),
        mode: Mode::Device,
        parsed: None,
        max_desired_bytes: s.config.max_desired_bytes,
        keep_specs: false,
    });
    let v = match validated {
        Ok(v) => v,
        Err(Diagnostics(diags)) => {
            for d in &diags {
                tracing::error!("{d}");
                let _ = writeln!(out, "invalid  {d}");
            }
            let _ = writeln!(
                out,
                "tend: the fleet repo ({}) is invalid for this device; nothing was applied",
                source.location
            );
            let report = Report::invalid(s.run_facts(&source, device), diags);
            return Ok(Converged {
                exit: exit::INVALID_REPO,
                report,
                handlers_run: Vec::new(),
                applied: None,
            });
        }
    };
    device.groups = v.groups.clone();

    let mut host = Host::new(&s.root).with_redactor(v.redactor.clone());
    host.check = s.check;
    host.dpkg_lock_timeout = s.config.apt_lock_timeout;
    host.apt_lists_max_age = s.config.apt_lists_max_age;
    if !s.check {
        s.state.ensure().map_err(|e| RunError::State {
            path: s.state.path.display().to_string(),
            source: e,
        })?;
    }
    let pending = s.state.file(PENDING_HANDLERS_FILE);
    s.notifier.status("applying");
    let mut progress = |done: usize, total: usize, r: &ResourceReport| {
        s.notifier.status(&format!("applying {done}/{total}"));
        let resource = format!("{} {}", r.kind, printable(&r.id));
        match r.outcome {
            Outcome::Changed | Outcome::Failed => {
                tracing::info!(resource = %resource, outcome = ?r.outcome, summary = r.summary.as_deref().or(r.error.as_deref()).unwrap_or(""), "{resource}")
            }
            _ => tracing::debug!(resource = %resource, outcome = ?r.outcome, "{resource}"),
        }
    };
    let mut backup = if s.check {
        None
    } else {
        Some(Backup::open(&s.state.path).map_err(|e| {
            RunError::State {
                path: s
                    .state
                    .file(crate::converge::backup::DIR)
                    .display()
                    .to_string(),
                source: e,
            }
        })?)
    };
    // Before a change replaces anything, keep what is there, so a revert can put it back.
    let mut keep = |r: &dyn DynResource| -> Result<(), String> {
        let Some(b) = backup.as_mut() else {
            return Ok(());
        };
        for p in r.touches() {
            b.save(&host, &p).map_err(|e| {
                format!("not changed: cannot keep the current {p} for a revert: {e}")
            })?;
        }
        Ok(())
    };
    let (pass, unreadable) =
        crate::converge::prune::prepare(&s.state.path, &v.desired, &v.prune, &host);
    let mut held = Held::probe(
        &s.root,
        &s.state.file(crate::safety::defer::FILE),
        unix_seconds(SystemTime::now()),
        s.config.inhibit.max_deferral.as_secs(),
        s.check,
    );
    let mut summary = converge_held(
        &v.desired,
        &host,
        Some(&pending),
        &mut progress,
        &mut keep,
        &mut |name| held.handler(name),
    );
    let deferred = held.after_handlers(&summary.deferred, summary.failed() > 0);
    if let Err(e) = held.save() {
        summary
            .errors
            .push(format!("cannot persist deferred actions: {e}"));
    }
    if let Some(f) = summary.download_failed.take() {
        let old = s.run_state.last_good.as_ref().map(|g| g.commit.as_str());
        let old = old.or_else(|| s.run_state.last_applied.as_ref()?.commit.as_deref());
        summary
            .errors
            .push(download_failed(&f, &source.location, commit, old));
    }
    let mut orphans = Vec::new();
    match pass.finish(
        &s.state.path,
        &v.prune,
        &host,
        summary.failed() > 0,
        &mut keep,
    ) {
        Ok(pruned) => {
            summary.resources.extend(pruned.resources);
            orphans = pruned.kept;
        }
        Err(e) => summary
            .errors
            .push(format!("cannot record what tend manages: {e}")),
    }
    let classifier = Classifier {
        last: s.run_state.last_applied.as_ref(),
        commit,
    };
    let causes = cause::classify(&classifier, &v.desired, &v.fingerprints, &summary);
    print_summary(out, &summary, &causes, s.check, s.diff);
    for o in &orphans {
        let _ = writeln!(
            out,
            "orphan   {:<11} {}: no longer declared (role {}), kept: {}",
            o.kind,
            printable(&o.id),
            o.role,
            printable(&o.reason)
        );
    }

    let checks = if s.check || v.checks.is_empty() {
        Vec::new()
    } else {
        s.notifier.status("health checks");
        health::run_all(&v.checks, &host, &mut |r| print_check(out, r))
    };

    s.notifier.status("reporting");
    let mut report = Report::from_summary(s.run_facts(&source, device), &mut summary, &causes);
    report.orphans = orphans;
    report.deferred = deferred;
    for m in held.overdue.iter().chain(&held.inhibitors.warnings) {
        let _ = writeln!(out, "inhibit  {m}");
        report.warnings.push(m.clone());
    }
    if let Some(w) = unreadable {
        report.warnings.push(format!(
            "the record of what tend manages was unreadable, so nothing was pruned: {w}"
        ));
    }
    let failed_checks: Vec<String> = checks
        .iter()
        .filter(|c| c.failed())
        .map(|c| c.describe())
        .collect();
    if !failed_checks.is_empty() {
        report.result = crate::report::RunResult::Failed;
        report.errors.extend(failed_checks.iter().cloned());
    }
    report.checks = checks;
    if !summary.reboot.is_empty() {
        report.reboot = Some(crate::safety::reboot::RebootReport {
            required: summary.reboot.clone(),
            ..Default::default()
        });
    }
    // The resource reports moved into the report: count them there.
    let (changed, failed) = (
        report.counts.changed,
        report.counts.failed + summary.errors.len() + failed_checks.len(),
    );
    let verb = if s.check { "would change" } else { "changed" };
    let _ = writeln!(
        out,
        "tend: {changed} {verb}{}, {failed} failed, {} unchanged, {} skipped{}{} (device {}, {})",
        corrective_note(&report),
        report.counts.unchanged,
        report.counts.skipped,
        drifted_note(&report),
        downloaded_note(&report),
        report.device.id,
        report.source.location
    );
    // As Puppet's --noop with detailed exit codes: 2 in check mode means "would change".
    Ok(Converged {
        exit: exit::for_counts(changed, failed),
        report,
        handlers_run: summary.handlers_run,
        applied: Some(LastApplied::of(commit, &v.desired, &v.fingerprints)),
    })
}

pub struct ApplyOptions {
    pub root: PathBuf,
    pub path: PathBuf,
    pub device: Option<String>,
    pub check: bool,
    pub diff: bool,
}

/// `tend apply --path DIR`: converge to a fleet repo in a directory.
pub fn apply(opts: &ApplyOptions, out: &mut dyn Write) -> Result<Converged, RunError> {
    let mut session = Session::start(SessionOptions {
        root: opts.root.clone(),
        device: opts.device.as_deref(),
        check: opts.check,
        diff: opts.diff,
        command: "apply",
    })?;
    let tree: Arc<dyn Tree> = Arc::new(DirTree::new(&opts.path).map_err(|e| RunError::Source {
        path: opts.path.display().to_string(),
        source: e,
    })?);
    let source = SourceInfo {
        kind: "path".into(),
        location: tree.describe(),
    };
    if let Some(susp) = suspended(&session) {
        let _ = writeln!(
            out,
            "tend: suspended ({}); nothing was applied; `tend resume` to apply again",
            susp.reason
        );
        let report = session.suspended_report(source, &susp);
        session.write_report(&report)?;
        session.save_state()?;
        return Ok(Converged {
            exit: exit::SUSPENDED,
            report,
            handlers_run: Vec::new(),
            applied: None,
        });
    }
    let happened = after_boot(&mut session);
    let mut converged = converge_tree(&session, tree, source, None, out)?;
    finish(&mut session, &mut converged, None, happened, out)?;
    Ok(converged)
}

/// At the start of a run: the reboot this device asked for, if it happened since.
pub fn after_boot(s: &mut Session) -> Option<Happened> {
    if s.check {
        return None;
    }
    let id = crate::safety::reboot::boot_id(&s.root);
    let happened = s.run_state.reboot.after_boot(id.as_deref());
    if let Some(h) = &happened {
        tracing::info!(commit = %h.commit, "the device rebooted as requested");
    }
    happened
}

/// Decides about a reboot, writes the report and the state, then reboots when it is time.
/// `commit` is None for `apply --path`, which never reboots.
pub fn finish(
    s: &mut Session,
    converged: &mut Converged,
    commit: Option<&str>,
    happened: Option<Happened>,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    let report = &mut converged.report;
    if clean(report) && !s.check {
        if let Some(applied) = converged.applied.take() {
            s.run_state.last_applied = Some(applied);
        }
    }
    let required = report.reboot.take().map(|r| r.required).unwrap_or_default();
    let now = SystemTime::now();
    let id = crate::safety::reboot::boot_id(&s.root);
    let mut held = Held::probe(
        &s.root,
        &s.state.file(crate::safety::defer::FILE),
        unix_seconds(now),
        s.config.inhibit.max_deferral.as_secs(),
        s.check,
    );
    let held_by = held.reboot();
    let (summary, reboot_now) = crate::safety::reboot::decide(
        &mut s.run_state.reboot,
        crate::safety::reboot::Decision {
            commit,
            required: &required,
            clean: clean(report),
            check: s.check,
            window: s.config.reboot.window,
            minute: crate::safety::reboot::local_minute(now),
            now: unix_seconds(now),
            boot_id: id.as_deref(),
            happened,
            held_by: held_by.as_deref(),
        },
    );
    let deferred_by = summary.as_ref().and_then(|r| r.deferred_by.clone());
    let owed = s.run_state.reboot.pending.is_some();
    if let Some(d) = held.after_reboot(deferred_by.as_deref(), reboot_now || !owed) {
        report.deferred.push(d);
    }
    if reboot_now {
        for m in &held.overdue {
            let _ = writeln!(out, "inhibit  {m}");
            report.warnings.push(m.clone());
        }
    }
    if let Err(e) = held.save() {
        report
            .errors
            .push(format!("cannot persist deferred actions: {e}"));
    }
    if let Some(r) = &summary {
        if let Some(h) = &r.happened {
            let _ = writeln!(out, "tend: rebooted for commit {} as requested", h.commit);
        }
        if let Some(a) = &r.action {
            let _ = writeln!(out, "reboot   {a}");
        }
    }
    report.reboot = summary;
    s.write_report(report)?;
    s.save_state()?;
    if !reboot_now {
        return Ok(());
    }
    let argv: Vec<&str> = s.config.reboot.command.iter().map(String::as_str).collect();
    tracing::warn!(command = %argv.join(" "), "rebooting: a change needs it");
    if let Err(e) = Host::new(&s.root).run(&argv) {
        // Not requested after all: the next run inside the window tries again.
        let msg = format!("the reboot command failed: {e}");
        tracing::error!("{msg}");
        let _ = writeln!(out, "reboot   {msg}");
        if let Some(p) = &mut s.run_state.reboot.pending {
            p.requested = None;
        }
        if let Some(r) = &mut report.reboot {
            r.action = Some(msg.clone());
        }
        report.errors.push(msg);
        report.result = RunResult::Failed;
        s.write_report(report)?;
        s.save_state()?;
    }
    Ok(())
}
