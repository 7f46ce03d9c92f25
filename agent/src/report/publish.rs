//! The publishing step: a finished run's [`Report`] handed to every sink, in one place.
//!
//! The steps above only fill in a report; this is the one function that knows where a result
//! goes: the journal's summary line, `report.json` and its history (only when the report says
//! something new, so a no-op run writes nothing to flash), the run's times in `/run`, the
//! Prometheus textfile, sd-notify's STATUS, and the Mender inventory (only when what it shows
//! changed or a heartbeat passed). Adding a sink means adding it here and nowhere else.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::clock::unix_seconds;
use crate::device::config::Config;
use crate::device::state::{StateDir, REPORT_FILE};
use crate::report::notify::Notifier;
use crate::report::runstate::RunState;
use crate::report::{
    corrective_note, drifted_note, inventory, lastrun, mender, metrics, rollout_note, status,
    Report, RunResult,
};

/// Where a report goes, borrowed from the run that made it.
pub struct Sinks<'a> {
    pub root: &'a Path,
    pub config: &'a Config,
    pub state: &'a StateDir,
    /// What Mender was last told, updated when it is told again.
    pub run_state: &'a mut RunState,
    pub notifier: &'a Notifier,
    /// `--check`: the summary line only; nothing is written anywhere.
    pub check: bool,
}

/// Whether a report counts as clean: what a reboot and the last-run record judge a run by.
pub fn clean(report: &Report) -> bool {
    matches!(report.result, RunResult::Ok | RunResult::Changed)
}

/// Publishes the report. Only the state dir failing is an error (the report is the device's
/// record); every other sink logs its failure and the run goes on.
pub fn publish(report: &Report, sinks: Sinks) -> std::io::Result<()> {
    journal_line(report);
    if sinks.check {
        return Ok(());
    }
    sinks.state.ensure()?;
    // Only a report that says something new goes to flash and the history; the times of every
    // run go to /run (docs/reporting.md).
    if report.write_if_changed(&sinks.state.file(REPORT_FILE))? {
        if let Err(e) = status::record_history(&sinks.state.path, report, sinks.config.history) {
            tracing::warn!("cannot keep the report history: {e}");
        }
    }
    if let Err(e) = lastrun::write(sinks.root, report, clean(report)) {
        tracing::warn!("cannot record the run's times in /{}: {e}", lastrun::FILE);
    }
    let suspended = status::suspension(&sinks.state.path).is_some();
    if let Some(m) = &sinks.config.metrics_file {
        if let Err(e) = metrics::write(sinks.root, m, report, suspended) {
            tracing::warn!("cannot write metrics to {m}: {e}");
        }
    }
    sinks.notifier.status(&format!(
        "{}: {} changed, {} failed",
        report.result.as_str(),
        report.counts.changed,
        report.counts.failed
    ));
    if sinks.root == Path::new("/") {
        tell_mender(report, suspended, sinks.config.heartbeat, sinks.run_state);
    }
    Ok(())
}

/// The run's one summary line, with the fields a journal query filters on.
fn journal_line(report: &Report) {
    let git = report.git.as_ref();
    tracing::info!(
        commit = git.map(|g| g.commit.as_str()).unwrap_or(""),
        branch = git.map(|g| g.branch.as_str()).unwrap_or(""),
        result = report.result.as_str(),
        changed = report.counts.changed,
        corrective = report.counts.corrective,
        drifted = report.counts.drifted,
        failed = report.counts.failed,
        "run finished: {}, {} changed{}, {} failed{}{}",
        report.result.as_str(),
        report.counts.changed,
        corrective_note(report),
        report.counts.failed,
        drifted_note(report),
        rollout_note(report)
    );
}

/// Asks the Mender client to send inventory when what it shows changed or a heartbeat passed.
fn tell_mender(report: &Report, suspended: bool, heartbeat: Duration, run_state: &mut RunState) {
    let git = report.git.as_ref();
    let shown = mender::Shown {
        branch: git.map(|g| g.branch.clone()).unwrap_or_default(),
        commit: git.map(|g| g.commit.clone()).unwrap_or_default(),
        status: inventory::status_word(report).to_string(),
        error: inventory::first_error(report).unwrap_or_default(),
        suspended,
        drift: report.counts.corrective + report.counts.drifted > 0,
        wave: inventory::wave(report).unwrap_or_default(),
    };
    let now = unix_seconds(SystemTime::now());
    if !mender::due(run_state.inventory.as_ref(), &shown, now, heartbeat) {
        return;
    }
    match mender::send_inventory(Duration::from_secs(60)) {
        Ok(true) => {
            tracing::info!(commit = %shown.commit, branch = %shown.branch, "asked the Mender client to send inventory");
            run_state.inventory = Some(mender::SendState {
                shown,
                sent_at: now,
            });
        }
        Ok(false) => {}
        Err(e) => tracing::warn!("mender send-inventory: {e}"),
    }
}
