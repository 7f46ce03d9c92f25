//! Prometheus textfile metrics for node_exporter's textfile collector (or Telegraf), written
//! atomically so a scrape never reads half a file.
//!
//! The textfile changes every run (the last run's time and duration), so it lives on the /run
//! tmpfs and the configured path in node_exporter's directory is a symlink to it, made once: a
//! run that changes nothing writes nothing to flash.

use std::fmt::Write as _;
use std::path::Path;

use tend_roles::statefile;

use crate::report::Report;

fn label(v: &str) -> String {
    tend_roles::redact::scrub(v)
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(report: &Report, suspended: bool) -> String {
    let mut m = String::new();
    let commit = report.git.as_ref().map(|g| g.commit.as_str()).unwrap_or("");
    let branch = report.git.as_ref().map(|g| g.branch.as_str()).unwrap_or("");
    let result = crate::report::inventory::status_word(report);
    let mut gauge = |name: &str, help: &str, value: String| {
        let _ = writeln!(
            m,
            "# HELP tend_{name} {help}\n# TYPE tend_{name} gauge\ntend_{name} {value}"
        );
    };
    gauge(
        "last_run_timestamp_seconds",
        "When the last tend run finished.",
        report.finished.to_string(),
    );
    gauge(
        "last_run_duration_seconds",
        "How long the last tend run took.",
        format!("{:.3}", report.duration_ms as f64 / 1000.0),
    );
    gauge(
        "resources_changed",
        "Resources changed by the last run.",
        report.counts.changed.to_string(),
    );
    gauge(
        "corrective_changes",
        "Changes of the last run that repaired drift under an unchanged desired state.",
        report.counts.corrective.to_string(),
    );
    gauge(
        "downloaded_bytes",
        "Bytes the last run downloaded before its first change (packages).",
        report.downloaded_bytes.to_string(),
    );
    gauge(
        "resources_drifted",
        "Audit-only resources (enforce: false) that differ from the desired state.",
        report.counts.drifted.to_string(),
    );
    gauge(
        "resources_failed",
        "Resources failed in the last run.",
        report.counts.failed.to_string(),
    );
    gauge(
        "deferred_actions",
        "Restarts and reboots an application's inhibitor holds off.",
        report.deferred.len().to_string(),
    );
    gauge(
        "suspended",
        "1 when tend is suspended.",
        u8::from(suspended).to_string(),
    );
    let throttled = report.git.as_ref().and_then(|g| g.throttled.as_ref());
    gauge(
        "fetch_throttled",
        "1 when the git server throttled the last run's fetch (HTTP 429/503) to the end.",
        u8::from(throttled.is_some()).to_string(),
    );
    if let Some(p) = report.git.as_ref().and_then(|g| g.pointer.as_ref()) {
        gauge(
            "pointer_stale",
            "1 when the stage pointer is stale (expired, or older than source.max_staleness).",
            u8::from(p.stale).to_string(),
        );
    }
    if let Some(w) = report.git.as_ref().and_then(|g| g.rollout.as_ref()) {
        gauge(
            "rollout_wave",
            "This device's wave of its stage's rollout for the head.",
            w.wave.to_string(),
        );
        gauge(
            "rollout_waves",
            "The number of waves of the stage's rollout.",
            w.waves.to_string(),
        );
        gauge(
            "rollout_applies_at_seconds",
            "When the head applies on this device (Unix seconds): its time plus (wave - 1) x spacing.",
            w.applies_at_seconds.to_string(),
        );
        gauge(
            "rollout_waiting",
            "1 while the head waits for this device's wave (the device stays on its last good commit).",
            u8::from(w.waiting).to_string(),
        );
    }
    if let Some(secs) = throttled.and_then(|t| t.retry_after_seconds) {
        gauge(
            "fetch_retry_after_seconds",
            "The wait the throttling server's last Retry-After asked for.",
            secs.to_string(),
        );
    }
    let _ = writeln!(
        m,
        "# HELP tend_last_run_info The last run's result, commit and branch.\n# TYPE tend_last_run_info gauge\ntend_last_run_info{{result=\"{}\",commit=\"{}\",branch=\"{}\"}} 1",
        label(result),
        label(commit),
        label(branch)
    );
    if let Some(s) = report.git.as_ref().and_then(|g| g.signer.as_ref()) {
        let _ = writeln!(
            m,
            "# HELP tend_signer_info The key the applied commit was trusted under.\n# TYPE tend_signer_info gauge\ntend_signer_info{{method=\"{}\",principal=\"{}\",fingerprint=\"{}\",tag=\"{}\"}} 1",
            label(&s.method),
            label(&s.principal),
            label(&s.fingerprint),
            label(s.tag.as_deref().unwrap_or(""))
        );
    }
    m
}

/// Where the textfile itself is, under the device root.
pub const VOLATILE: &str = "run/tend/tend.prom";

/// Writes the textfile when the directory of `metrics_file` (a device path) exists
/// (node_exporter is installed); otherwise skips. A path under /run is written in place; any
/// other becomes a symlink to [`VOLATILE`].
pub fn write(
    root: &Path,
    metrics_file: &str,
    report: &Report,
    suspended: bool,
) -> std::io::Result<bool> {
    let path = root.join(metrics_file.trim_start_matches('/'));
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(false);
    };
    if !dir.is_dir() {
        return Ok(false);
    }
    let text = render(report, suspended);
    if Path::new(metrics_file).starts_with("/run") {
        statefile::write_bytes(&path, text.as_bytes(), 0o644)?;
        return Ok(true);
    }
    statefile::write_bytes(&root.join(VOLATILE), text.as_bytes(), 0o644)?;
    let target = format!("/{VOLATILE}");
    if std::fs::read_link(&path).is_ok_and(|t| t == Path::new(&target)) {
        return Ok(true);
    }
    let dir = std::fs::File::open(dir)?;
    use std::os::fd::AsFd;
    // SAFETY: getuid and getgid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    tend_roles::fsutil::symlink_at(dir.as_fd(), name, &target, uid, gid)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::GitInfo;

    #[test]
    fn metrics_carry_result_and_commit_label() {
        let mut r = crate::report::blank(
            std::time::SystemTime::UNIX_EPOCH,
            std::time::Duration::from_millis(1500),
        );
        r.git = Some(GitInfo {
            commit: "abc\"def".into(),
            branch: "canary".into(),
            ..Default::default()
        });
        let text = render(&r, true);
        assert!(
            text.contains(
                "tend_last_run_info{result=\"invalid\",commit=\"abc\\\"def\",branch=\"canary\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("tend_suspended 1"));
        assert!(text.contains("tend_corrective_changes 0\n"), "{text}");
        r.counts.corrective = 2;
        r.counts.drifted = 1;
        let drift = render(&r, true);
        assert!(drift.contains("tend_corrective_changes 2\n"), "{drift}");
        assert!(drift.contains("tend_resources_drifted 1\n"), "{drift}");
        assert!(text.contains("tend_downloaded_bytes 0\n"), "{text}");
        r.downloaded_bytes = 123_456;
        assert!(render(&r, true).contains("tend_downloaded_bytes 123456\n"));
        assert!(!text.contains("tend_signer_info"), "unsigned: {text}");
        r.git.as_mut().unwrap().signer = Some(crate::report::Signer {
            method: "openpgp".into(),
            principal: "Release <r@fleet>".into(),
            fingerprint: "AB12".into(),
            tag: Some("production/3".into()),
        });
        assert!(
            render(&r, true).contains(
                "tend_signer_info{method=\"openpgp\",principal=\"Release <r@fleet>\",fingerprint=\"AB12\",tag=\"production/3\"} 1"
            )
        );
        assert!(text.contains("tend_last_run_duration_seconds 1.500"));
        assert!(text.contains("tend_fetch_throttled 0"), "{text}");
        assert!(!text.contains("tend_fetch_retry_after_seconds"), "{text}");
        let g = r.git.as_mut().unwrap();
        g.throttled = Some(crate::report::Throttled {
            host: "git.example.com".into(),
            status: 429,
            retry_after_seconds: Some(3600),
        });
        r.result = crate::report::RunResult::Throttled;
        let text = render(&r, false);
        assert!(text.contains("tend_fetch_throttled 1"), "{text}");
        assert!(
            text.contains("tend_fetch_retry_after_seconds 3600"),
            "{text}"
        );
        assert!(text.contains("result=\"throttled\""), "{text}");
    }

    #[test]
    fn a_stale_pointer_is_a_gauge_only_where_a_pointer_is_configured() {
        let mut r =
            crate::report::blank(std::time::SystemTime::UNIX_EPOCH, std::time::Duration::ZERO);
        r.git = Some(GitInfo::default());
        assert!(!render(&r, false).contains("tend_pointer_stale"));
        let g = r.git.as_mut().unwrap();
        g.pointer = Some(crate::report::PointerInfo {
            stale: true,
            ..Default::default()
        });
        assert!(render(&r, false).contains("tend_pointer_stale 1"));
        r.git.as_mut().unwrap().pointer.as_mut().unwrap().stale = false;
        assert!(render(&r, false).contains("tend_pointer_stale 0"));
    }

    #[test]
    fn a_rollout_is_its_wave_waves_and_applies_at_gauges() {
        let mut r =
            crate::report::blank(std::time::SystemTime::UNIX_EPOCH, std::time::Duration::ZERO);
        r.git = Some(GitInfo::default());
        assert!(
            !render(&r, false).contains("tend_rollout_"),
            "no rollout: no gauges"
        );
        r.git.as_mut().unwrap().rollout = Some(crate::report::RolloutInfo::waiting_example());
        let text = render(&r, false);
        for line in [
            "tend_rollout_wave 3\n",
            "tend_rollout_waves 10\n",
            "tend_rollout_applies_at_seconds 1765119600\n",
            "tend_rollout_waiting 1\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
    }
}
