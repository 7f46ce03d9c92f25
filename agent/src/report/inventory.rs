//! `tend inventory`: the `tend_*` Mender inventory attributes, from the last report.
//!
//! Mender's client replaces the whole inventory on every send, so tend never patches the server
//! itself: the client runs /usr/share/mender/inventory/mender-inventory-tend (which runs this) and
//! sends what it prints, one `name=value` line per attribute. Values cannot hold a newline;
//! Mender documents URL-style encoding (`%0A`) for special characters, so `%`, CR, LF and other
//! control characters are percent-encoded. Long values are cut so one error cannot bloat the
//! inventory of every device.

use std::io::Write;
use std::path::Path;

use crate::clock::rfc3339;
use crate::report::runstate::RunState;
use crate::report::status::Suspension;
use crate::report::{Report, RunResult};
use tend_roles::Outcome;

/// The longest value tend puts in one attribute.
pub const MAX_VALUE_CHARS: usize = 1024;

/// Percent-encodes what a `name=value` line cannot carry, and truncates (on a char boundary).
/// Credentials are scrubbed first: the inventory is shown to everyone with Mender access.
pub fn encode_value(value: &str) -> String {
    let value = tend_roles::redact::scrub(value);
    let mut out = String::with_capacity(value.len().min(MAX_VALUE_CHARS));
    for (chars, c) in value.chars().enumerate() {
        if chars >= MAX_VALUE_CHARS {
            out.push_str("...");
            break;
        }
        match c {
            '%' => out.push_str("%25"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// One word for fleet views and the promotion gate: ok (converged, with or without changes),
/// failed, invalid, error, suspended, reverted, throttled.
pub fn status_word(report: &Report) -> &'static str {
    match report.result {
        RunResult::Changed => "ok",
        other => other.as_str(),
    }
}

pub fn attributes(
    report: Option<&Report>,
    run_state: &RunState,
    suspended: Option<&Suspension>,
) -> Vec<(&'static str, String)> {
    let mut a: Vec<(&'static str, String)> =
        vec![("tend_version", env!("CARGO_PKG_VERSION").to_string())];
    a.push((
        "tend_suspended",
        suspended
            .map(|s| s.reason.clone())
            .unwrap_or_else(|| "false".into()),
    ));
    let Some(r) = report else {
        a.push(("tend_status", "never-run".into()));
        return a;
    };
    a.push(("tend_status", status_word(r).into()));
    if let Some(g) = &r.git {
        a.push(("tend_branch", g.branch.clone()));
        a.push(("tend_commit", g.commit.clone()));
        if let Some(s) = &g.signer {
            a.push(("tend_signer", s.to_string()));
        }
        if let Some(p) = &g.pointer {
            a.push(("tend_stale", p.stale.to_string()));
        }
        if let Some(w) = &g.rollout {
            a.push(("tend_wave", format!("{}/{}", w.wave, w.waves)));
            a.push(("tend_wave_applies_at", w.applies_at.clone()));
        }
    }
    a.push(("tend_last_run", rfc3339(r.finished)));
    if let Some(good) = &run_state.last_good {
        a.push(("tend_last_success", rfc3339(good.applied_at)));
    }
    a.push(("tend_changed", r.counts.changed.to_string()));
    a.push(("tend_failed", r.counts.failed.to_string()));
    a.push(("tend_corrective", r.counts.corrective.to_string()));
    a.push(("tend_drifted", r.counts.drifted.to_string()));
    if let Some(e) = first_error(r) {
        a.push(("tend_error", e));
    }
    if let Some(c) = r.checks.iter().find(|c| c.failed()) {
        a.push(("tend_failed_check", format!("{}: {}", c.role, c.name)));
    }
    a.push(("tend_orphans", r.orphans.len().to_string()));
    let reboot = r.reboot.as_ref();
    a.push((
        "tend_reboot_pending",
        reboot.is_some_and(|b| b.pending).to_string(),
    ));
    if let Some(h) = reboot.and_then(|b| b.happened.as_ref()) {
        a.push(("tend_rebooted_for", h.commit.clone()));
    }
    if let Some(rv) = r.git.as_ref().and_then(|g| g.reverted.as_ref()) {
        a.push(("tend_reverted_commit", rv.commit.clone()));
        a.push(("tend_revert_cause", rv.cause.clone()));
    }
    a
}

/// The wave attributes as one string, for telling whether Mender must hear of a change.
pub fn wave(r: &Report) -> Option<String> {
    let w = r.git.as_ref()?.rollout.as_ref()?;
    Some(format!(
        "{}/{} {} {}",
        w.wave, w.waves, w.applies_at, w.waiting
    ))
}

/// The run's first error: a run-level one, else the first failed resource's, named.
pub fn first_error(r: &Report) -> Option<String> {
    let first = r.errors.first().cloned().or_else(|| {
        r.resources
            .iter()
            .find(|x| x.outcome == Outcome::Failed)
            .map(|x| {
                format!(
                    "{} {}: {}",
                    x.kind,
                    x.id,
                    x.error.as_deref().unwrap_or("failed")
                )
            })
    });
    first.map(|e| tend_roles::redact::scrub(&e).into_owned())
}

/// `root` is the device root, whose /run holds the last run's times (see `lastrun`).
pub fn print(
    out: &mut dyn Write,
    root: &Path,
    state_dir: &Path,
    run_state: &RunState,
) -> std::io::Result<()> {
    let report = crate::report::lastrun::current_report(root, state_dir);
    // state.json keeps when the commit first converged; a later success is only on /run.
    let mut run_state = run_state.clone();
    let since_boot = crate::report::lastrun::read(root).and_then(|l| l.last_success);
    if let (Some(good), Some(at)) = (run_state.last_good.as_mut(), since_boot) {
        good.applied_at = good.applied_at.max(at);
    }
    let run_state = &run_state;
    let suspended = crate::report::status::suspension(state_dir);
    for (k, v) in attributes(report.as_ref(), run_state, suspended.as_ref()) {
        writeln!(out, "{k}={}", encode_value(&v))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report of a run that did nothing, to fill in.
    fn blank(command: &str, source: &str) -> Report {
        Report::invalid(
            crate::report::RunFacts {
                command: command.into(),
                source: crate::report::SourceInfo {
                    kind: source.into(),
                    location: "x".into(),
                },
                device: Default::default(),
                started: std::time::SystemTime::UNIX_EPOCH,
                elapsed: std::time::Duration::ZERO,
            },
            vec![],
        )
    }

    #[test]
    fn newlines_percent_and_controls_are_encoded() {
        assert_eq!(encode_value("a\nb\r\tc"), "a%0Ab%0D%09c");
        assert_eq!(encode_value("100% done"), "100%25 done");
    }

    #[test]
    fn equals_signs_and_non_ascii_pass_through() {
        // The client splits a line at its first '=', so '=' inside a value is safe.
        assert_eq!(encode_value("key=value=x"), "key=value=x");
        assert_eq!(encode_value("Grüße aus Köln ✓"), "Grüße aus Köln ✓");
    }

    #[test]
    fn ten_kilobyte_errors_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(10_000);
        let v = encode_value(&long);
        assert!(v.ends_with("..."));
        assert_eq!(v.chars().count(), MAX_VALUE_CHARS + 3);
        assert!(!v.contains('\n'));
    }

    #[test]
    fn a_device_that_never_ran_says_so() {
        let a = attributes(None, &RunState::default(), None);
        assert!(a.contains(&("tend_status", "never-run".into())));
        assert!(a.contains(&("tend_suspended", "false".into())));
    }

    #[test]
    fn a_failed_resource_is_the_error_when_the_run_has_none_of_its_own() {
        let mut r = blank("apply", "path");
        r.result = RunResult::Failed;
        r.resources = serde_json::from_value(serde_json::json!([
            {"role": "base", "kind": "file", "id": "/a", "outcome": "changed"},
            {"role": "base", "kind": "command", "id": "flash-check", "outcome": "failed", "error": "flash worn out\nreplace"},
        ]))
        .unwrap();
        let a = attributes(Some(&r), &RunState::default(), None);
        let e = a
            .iter()
            .find(|(k, _)| *k == "tend_error")
            .map(|(_, v)| v.clone())
            .unwrap();
        assert_eq!(
            encode_value(&e),
            "command flash-check: flash worn out%0Areplace"
        );
    }

    #[test]
    fn a_reverted_run_names_the_commit_the_cause_and_the_failed_check() {
        let mut r = blank("run", "git");
        r.result = RunResult::Reverted;
        r.errors = vec!["commit abc reverted: health check failed".into()];
        r.checks = vec![crate::safety::health::CheckResult {
            role: "web".into(),
            name: "web answers".into(),
            kind: "http".into(),
            target: "http://127.0.0.1/".into(),
            outcome: crate::safety::health::CheckOutcome::Failed,
            attempts: 3,
            error: Some("connection refused".into()),
            revert: true,
            origin: "roles/web/role.yaml:4".into(),
        }];
        r.git = Some(crate::report::GitInfo {
            commit: "good".into(),
            reverted: Some(crate::report::Reverted {
                commit: "abc".into(),
                cause: "role web: health check 'web answers' failed".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let a = attributes(Some(&r), &RunState::default(), None);
        let get = |k: &str| a.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("tend_status"), Some("reverted"));
        assert_eq!(get("tend_commit"), Some("good"));
        assert_eq!(get("tend_reverted_commit"), Some("abc"));
        assert_eq!(get("tend_failed_check"), Some("web: web answers"));
        assert!(get("tend_revert_cause").unwrap().contains("web answers"));
    }

    #[test]
    fn a_wave_is_the_tend_wave_and_tend_wave_applies_at_attributes() {
        let mut r = blank("run", "git");
        r.git = Some(crate::report::GitInfo::default());
        let get = |r: &Report, k: &str| {
            attributes(Some(r), &RunState::default(), None)
                .into_iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v)
        };
        assert_eq!(get(&r, "tend_wave"), None, "no rollout: no attribute");
        r.git.as_mut().unwrap().rollout = Some(crate::report::RolloutInfo::waiting_example());
        assert_eq!(get(&r, "tend_wave").as_deref(), Some("3/10"));
        assert_eq!(
            get(&r, "tend_wave_applies_at").as_deref(),
            Some("2026-12-07T15:00:00Z")
        );
    }

    #[test]
    fn a_stale_pointer_is_the_tend_stale_attribute() {
        let mut r = blank("run", "git");
        r.git = Some(crate::report::GitInfo::default());
        let get = |r: &Report| {
            attributes(Some(r), &RunState::default(), None)
                .into_iter()
                .find(|(k, _)| *k == "tend_stale")
                .map(|(_, v)| v)
        };
        assert_eq!(get(&r), None, "no pointer configured: no attribute");
        r.git.as_mut().unwrap().pointer = Some(crate::report::PointerInfo {
            stale: true,
            ..Default::default()
        });
        assert_eq!(get(&r).as_deref(), Some("true"));
    }

    #[test]
    fn the_signer_a_device_trusted_is_an_attribute() {
        let mut r = blank("run", "git");
        r.git = Some(crate::report::GitInfo {
            commit: "c0ffee".into(),
            signer: Some(crate::report::Signer {
                method: "ssh".into(),
                principal: "release@fleet".into(),
                fingerprint: "SHA256:abc".into(),
                tag: Some("production/7".into()),
            }),
            ..Default::default()
        });
        let a = attributes(Some(&r), &RunState::default(), None);
        let signer = a.iter().find(|(k, _)| *k == "tend_signer").map(|(_, v)| v);
        assert_eq!(
            signer.map(String::as_str),
            Some("ssh release@fleet (SHA256:abc) via tag production/7")
        );
        r.git.as_mut().unwrap().signer = None;
        let a = attributes(Some(&r), &RunState::default(), None);
        assert!(!a.iter().any(|(k, _)| *k == "tend_signer"));
    }

    #[test]
    fn orphans_and_a_pending_reboot_are_shown() {
        let mut r = blank("run", "git");
        let get = |r: &Report, k: &str| {
            attributes(Some(r), &RunState::default(), None)
                .into_iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v)
        };
        assert_eq!(get(&r, "tend_orphans").as_deref(), Some("0"));
        assert_eq!(get(&r, "tend_reboot_pending").as_deref(), Some("false"));
        r.orphans = vec![crate::report::Orphan {
            kind: "file".into(),
            id: "/etc/old".into(),
            role: "web".into(),
            reason: "prune is off".into(),
        }];
        r.reboot = Some(crate::safety::reboot::RebootReport {
            pending: true,
            ..Default::default()
        });
        assert_eq!(get(&r, "tend_orphans").as_deref(), Some("1"));
        assert_eq!(get(&r, "tend_reboot_pending").as_deref(), Some("true"));
    }

    #[test]
    fn corrective_changes_and_drifted_resources_are_counted() {
        let mut r = blank("run", "git");
        r.counts.corrective = 3;
        r.counts.drifted = 2;
        let a = attributes(Some(&r), &RunState::default(), None);
        let get = |k: &str| a.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("tend_corrective"), Some("3"));
        assert_eq!(get("tend_drifted"), Some("2"));
    }

    #[test]
    fn rfc3339_is_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
