//! Pipeline step "apply": converge the device to a validated desired state, then report.
//!
//! `tend apply --path DIR` runs the straight line load → validate → plan/apply → report on a fleet
//! repo in a directory. Planning and applying interleave per resource inside the engine, because a
//! later resource may depend on an earlier one's effect (a user must exist before a file it owns).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tend_roles::{converge, Host, Outcome, ResourceReport, RunSummary};

use crate::config::{expand_globs, Config};
use crate::diag::{Diagnostic, Diagnostics};
use crate::exit;
use crate::facts;
use crate::identity::{device_id, IdentityError};
use crate::report::{DeviceInfo, Report, RunFacts, SourceInfo};
use crate::state::{Lock, LockError, StateDir, PENDING_HANDLERS_FILE, REPORT_FILE};
use crate::tree::{DirTree, Tree};
use crate::validate::{validate, Inputs, Validated};
use crate::vars::Mode;

pub struct ApplyOptions {
    pub root: PathBuf,
    pub path: PathBuf,
    pub device: Option<String>,
    pub check: bool,
    pub diff: bool,
}

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
}

impl RunError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Lock(LockError::Held { .. }) => exit::LOCKED,
            _ => exit::COULD_NOT_RUN,
        }
    }
}

/// What the caller needs to print and exit with.
pub struct Applied {
    pub exit: u8,
    pub report: Report,
}

pub fn apply(opts: &ApplyOptions, out: &mut dyn Write) -> Result<Applied, RunError> {
    let started = SystemTime::now();
    let clock = Instant::now();
    let config = Config::load(&opts.root).map_err(RunError::Config)?;
    let id = device_id(
        &opts.root,
        opts.device.as_deref(),
        config.device_id.as_deref(),
    )?;
    // Check mode has no side effects at all: no lock file, no state dir, no report.
    let _lock = if opts.check {
        None
    } else {
        Some(Lock::acquire(&opts.root)?)
    };
    let state = StateDir::new(&opts.root, &config.state_dir);

    let tree: Arc<dyn Tree> = Arc::new(DirTree::new(&opts.path).map_err(|e| RunError::Source {
        path: opts.path.display().to_string(),
        source: e,
    })?);
    let facts = facts::gather(facts::Inputs {
        root: &opts.root,
        device_id: &id,
        device_type: config.device_type.clone(),
    });
    let source = SourceInfo {
        kind: "path".into(),
        location: tree.describe(),
    };
    let mut device = DeviceInfo {
        id: id.clone(),
        device_type: facts.device_type.clone(),
        groups: Vec::new(),
    };

    let validated = validate(Inputs {
        tree,
        device_id: id,
        facts,
        root: &opts.root,
        vars_files: expand_globs(&opts.root, &config.vars_files),
        mode: Mode::Device,
    });
    let run = |device: DeviceInfo| RunFacts {
        command: "apply".into(),
        source: source.clone(),
        device,
        started,
        elapsed: clock.elapsed(),
    };

    let v: Validated = match validated {
        Ok(v) => v,
        Err(Diagnostics(diags)) => {
            for d in &diags {
                tracing::error!("{d}");
                let _ = writeln!(out, "invalid  {d}");
            }
            let _ = writeln!(
                out,
                "tend: the fleet repo is invalid for this device; nothing was applied"
            );
            let report = Report::invalid(run(device), diags);
            if !opts.check {
                write_report(&state, &report)?;
            }
            return Ok(Applied {
                exit: exit::INVALID_REPO,
                report,
            });
        }
    };
    device.groups = v.groups.clone();

    let mut host = Host::new(&opts.root).with_redactor(v.redactor.clone());
    host.check = opts.check;
    host.dpkg_lock_timeout = config.apt_lock_timeout;
    host.apt_lists_max_age = config.apt_lists_max_age;
    if !opts.check {
        state.ensure().map_err(|e| RunError::State {
            path: state.path.display().to_string(),
            source: e,
        })?;
    }
    let pending = state.file(PENDING_HANDLERS_FILE);
    let mut progress = |done: usize, total: usize, r: &ResourceReport| {
        tracing::debug!(done, total, kind = %r.kind, id = %r.id, outcome = ?r.outcome, "resource");
    };
    let summary = converge(&v.desired, &host, Some(&pending), &mut progress);
    print_summary(out, &summary, opts);

    let report = Report::from_summary(run(device), &summary);
    if !opts.check {
        write_report(&state, &report)?;
    }
    let failed = summary.failed();
    let changed = summary.changed();
    let verb = if opts.check {
        "would change"
    } else {
        "changed"
    };
    let _ = writeln!(
        out,
        "tend: {changed} {verb}, {failed} failed, {} unchanged, {} skipped (device {}, {})",
        report.counts.unchanged, report.counts.skipped, report.device.id, report.source.location
    );
    // As Puppet's --noop with detailed exit codes: 2 in check mode means "would change".
    let exit = exit::for_counts(changed, failed);
    Ok(Applied { exit, report })
}

fn write_report(state: &StateDir, report: &Report) -> Result<(), RunError> {
    let err = |e| RunError::State {
        path: state.path.display().to_string(),
        source: e,
    };
    state.ensure().map_err(err)?;
    report.write(&state.file(REPORT_FILE)).map_err(err)
}

fn print_summary(out: &mut dyn Write, summary: &RunSummary, opts: &ApplyOptions) {
    for r in &summary.resources {
        let word = match r.outcome {
            Outcome::Unchanged => continue,
            Outcome::Changed if opts.check => "would",
            Outcome::Changed => "changed",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        };
        let what = r.error.as_deref().or(r.summary.as_deref()).unwrap_or("");
        let handler = if r.handler { " (handler)" } else { "" };
        let _ = writeln!(out, "{word:<8} {:<11} {}{handler}: {what}", r.kind, r.id);
        if opts.diff {
            if let Some(d) = &r.diff {
                let _ = writeln!(out, "{}", d.trim_end());
            }
        }
    }
    for e in &summary.errors {
        let _ = writeln!(out, "error    {e}");
    }
    if !summary.pending_handlers.is_empty() {
        let _ = writeln!(
            out,
            "pending handlers: {}",
            summary.pending_handlers.join(", ")
        );
    }
}
