//! Health checks that roles declare: after an apply, each is probed (with a timeout, and retried
//! while it fails), and the results go into the report.
//!
//! "Applied without error" is not "working": a config file can be written perfectly and still
//! make the service fail to start. A failed check fails the run; one marked `revert: true` also
//! sends a new commit back to the last good one (see `revert`).

pub mod probe;
pub mod spec;

use serde::{Deserialize, Serialize};
use tend_roles::Host;

pub use spec::{Check, Probe};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckOutcome {
    Passed,
    Failed,
    Skipped,
}

/// One check's result, as the report carries it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckResult {
    pub role: String,
    pub name: String,
    pub kind: String,
    pub target: String,
    pub outcome: CheckOutcome,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub revert: bool,
    pub origin: String,
}

impl CheckResult {
    pub fn failed(&self) -> bool {
        self.outcome == CheckOutcome::Failed
    }

    /// "role web: check 'web answers' failed: …", for errors and the inventory.
    pub fn describe(&self) -> String {
        format!(
            "role {}: health check '{}' failed after {} attempt{}: {}",
            self.role,
            self.name,
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.error.as_deref().unwrap_or("failed")
        )
    }
}

/// Runs every check in order; `progress` hears about each one as it finishes.
pub fn run_all(
    checks: &[Check],
    host: &Host,
    progress: &mut dyn FnMut(&CheckResult),
) -> Vec<CheckResult> {
    checks
        .iter()
        .map(|c| {
            let r = run_one(c, host);
            progress(&r);
            r
        })
        .collect()
}

pub fn run_one(check: &Check, host: &Host) -> CheckResult {
    let mut result = CheckResult {
        role: check.role.clone(),
        name: check.name.clone(),
        kind: check.probe.kind().to_string(),
        target: host.redact(&check.probe.target()),
        outcome: CheckOutcome::Failed,
        attempts: 0,
        error: None,
        revert: check.revert,
        origin: check.origin.clone(),
    };
    for n in 0..=check.retries {
        if n > 0 {
            std::thread::sleep(check.interval);
        }
        result.attempts = n + 1;
        match probe::attempt(&check.probe, host, check.timeout) {
            probe::Attempt::Passed => {
                result.outcome = CheckOutcome::Passed;
                result.error = None;
                return result;
            }
            probe::Attempt::Skipped(why) => {
                result.outcome = CheckOutcome::Skipped;
                result.error = Some(why);
                return result;
            }
            probe::Attempt::Failed(e) => {
                tracing::debug!(check = %check.name, attempt = n + 1, error = %e, "health check attempt failed");
                result.error = Some(e);
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn counting_check(root: &std::path::Path, passes_on: u32, retries: u32) -> Check {
        // Appends a line per attempt and passes once `passes_on` lines are there.
        let log = root.join("attempts");
        let script = format!(
            "echo x >> {log}; test $(wc -l < {log}) -ge {passes_on}",
            log = log.display()
        );
        Check {
            role: "web".into(),
            name: "settles".into(),
            probe: Probe::Command {
                argv: vec!["/bin/sh".into(), "-c".into(), script.clone()],
                shown: script,
            },
            timeout: Duration::from_secs(5),
            retries,
            interval: Duration::ZERO,
            revert: true,
            origin: "roles/web/role.yaml:9".into(),
        }
    }

    #[test]
    fn retries_until_it_passes() {
        let d = tempfile::tempdir().unwrap();
        let r = run_one(&counting_check(d.path(), 3, 5), &Host::new("/"));
        assert_eq!(r.outcome, CheckOutcome::Passed);
        assert_eq!(r.attempts, 3);
        assert!(r.error.is_none());
    }

    #[test]
    fn gives_up_after_its_retries_and_says_so() {
        let d = tempfile::tempdir().unwrap();
        let mut heard = Vec::new();
        let rs = run_all(
            &[counting_check(d.path(), 10, 2)],
            &Host::new("/"),
            &mut |r| heard.push(r.name.clone()),
        );
        assert_eq!(heard, ["settles"]);
        let r = &rs[0];
        assert!(r.failed() && r.revert);
        assert_eq!(r.attempts, 3, "one try and two retries");
        assert!(
            r.describe()
                .starts_with("role web: health check 'settles' failed after 3 attempts"),
            "{}",
            r.describe()
        );
    }
}
