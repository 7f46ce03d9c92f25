//! The last run's volatile facts (when it started and finished, how long it took, when a run
//! last succeeded), kept on the /run tmpfs rather than in the state dir.
//!
//! Why: SD cards die of writes, and a timer run every 15 minutes that finds nothing new would
//! otherwise rewrite report.json, the history, the metrics and state.json only because the times
//! moved. The persistent report is rewritten only when something other than its times changes;
//! readers (`tend status`, `tend inventory`, the metrics) lay this record over it. After a reboot
//! /run is empty and the report's own times (those of the last run that changed it) show until
//! the next run.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tend_roles::statefile;

use crate::report::Report;

/// Under the device root, next to the run lock.
pub const FILE: &str = "run/tend/last-run.json";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    pub started: u64,
    pub finished: u64,
    pub duration_ms: u64,
    /// When a run last ended ok or changed (Unix seconds), since boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<u64>,
}

fn path(root: &Path) -> PathBuf {
    root.join(FILE)
}

pub fn read(root: &Path) -> Option<LastRun> {
    let bytes = std::fs::read(path(root)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Records `report`'s times; `clean` says whether it counts as a success.
pub fn write(root: &Path, report: &Report, clean: bool) -> std::io::Result<()> {
    let last_success = if clean {
        Some(report.finished)
    } else {
        read(root).and_then(|l| l.last_success)
    };
    let record = LastRun {
        started: report.started,
        finished: report.finished,
        duration_ms: report.duration_ms,
        last_success,
    };
    statefile::write_json(&path(root), &record, 0o644).map(drop)
}

/// `report` with the times of the last run, when that run came after the one that wrote it.
pub fn overlay(root: &Path, mut report: Report) -> Report {
    if let Some(l) = read(root).filter(|l| l.started >= report.started) {
        report.started = l.started;
        report.finished = l.finished;
        report.duration_ms = l.duration_ms;
    }
    report
}

/// The state dir's report.json with the last run's times laid over it.
pub fn current_report(root: &Path, state_dir: &Path) -> Option<Report> {
    let report = Report::read(&state_dir.join(crate::device::state::REPORT_FILE)).ok()?;
    Some(overlay(root, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn report(started: u64, ms: u64) -> Report {
        crate::report::blank(
            SystemTime::UNIX_EPOCH + Duration::from_secs(started),
            Duration::from_millis(ms),
        )
    }

    #[test]
    fn a_newer_run_lends_its_times_and_an_older_record_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), &report(100, 2000), true).unwrap();
        let shown = overlay(d.path(), report(50, 10));
        assert_eq!(
            (shown.started, shown.finished, shown.duration_ms),
            (100, 102, 2000)
        );
        let newer = overlay(d.path(), report(200, 10));
        assert_eq!(
            newer.started, 200,
            "the report was written after the record"
        );
        write(d.path(), &report(300, 0), false).unwrap();
        assert_eq!(read(d.path()).unwrap().last_success, Some(102));
    }
}
