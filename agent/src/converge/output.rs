//! What a converge prints on stdout, one line per resource that did not stay as it was (with its
//! diff under `--diff`), and the notes the summary line carries: how many changes were
//! corrective, how many audit-only resources drifted.

use std::io::Write;

use tend_roles::printable::printable;
use tend_roles::{Outcome, RunSummary};

use crate::report::cause::Cause;
use crate::safety::health;

pub(super) fn print_check(out: &mut dyn Write, r: &health::CheckResult) {
    let word = match r.outcome {
        health::CheckOutcome::Passed => "healthy",
        health::CheckOutcome::Failed => "UNHEALTHY",
        health::CheckOutcome::Skipped => "skipped",
    };
    let why = r
        .error
        .as_deref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    let _ = writeln!(out, "{word:<8} check       {} ({}){why}", r.name, r.role);
}

pub(super) fn print_summary(
    out: &mut dyn Write,
    summary: &RunSummary,
    causes: &[Option<Cause>],
    check: bool,
    diff: bool,
) {
    for (n, r) in summary.resources.iter().enumerate() {
        let word = match r.outcome {
            Outcome::Unchanged => continue,
            Outcome::Changed if check => "would",
            Outcome::Changed => "changed",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Drifted => "drifted",
        };
        let what = r.error.as_deref().or(r.summary.as_deref()).unwrap_or("");
        let handler = if r.handler { " (handler)" } else { "" };
        let note = match (r.outcome, causes.get(n)) {
            (_, Some(Some(Cause::Corrective))) => " (corrective)",
            (Outcome::Drifted, _) => " (not enforced)",
            _ => "",
        };
        // Ids from elsewhere (dpkg, systemd, a server) are shown escaped: no forged lines.
        let (id, what) = (printable(&r.id), printable(what));
        let _ = writeln!(out, "{word:<8} {:<11} {id}{handler}: {what}{note}", r.kind);
        if diff {
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

/// "downloading 3 packages for commit abc1234 failed: …; nothing was changed, the device stays
/// on commit 9f8e7d6": the download before the first change failed, so the run applied nothing.
/// `location` names the tree without a commit (`apply --path`); `old` is the commit the device
/// is on.
pub fn download_failed(
    f: &tend_roles::prefetch::FetchFailure,
    location: &str,
    commit: Option<&str>,
    old: Option<&str>,
) -> String {
    let short = |c: &str| c.chars().take(7).collect::<String>();
    let of = commit.map_or_else(|| location.to_string(), |c| format!("commit {}", short(c)));
    let old = old.filter(|_| commit.is_some()).map_or_else(
        || "its current state".to_string(),
        |c| format!("commit {}", short(c)),
    );
    format!(
        "downloading {} for {of} failed: {}; nothing was changed, the device stays on {old} (tend tries again on its next run)",
        f.what, f.error
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_download_names_the_new_commit_and_the_one_the_device_stays_on() {
        let f = tend_roles::prefetch::FetchFailure {
            what: "3 packages".into(),
            error: "E: Failed to fetch http://x/a.deb".into(),
        };
        assert_eq!(
            download_failed(&f, "git", Some("abc1234ffff"), Some("9f8e7d6aaaa")),
            "downloading 3 packages for commit abc1234 failed: E: Failed to fetch http://x/a.deb; nothing was changed, the device stays on commit 9f8e7d6 (tend tries again on its next run)"
        );
        assert!(download_failed(&f, "/srv/fleet", None, Some("9f8e7d6"))
            .starts_with("downloading 3 packages for /srv/fleet failed"));
        assert!(download_failed(&f, "/srv/fleet", None, Some("9f8e7d6"))
            .contains("the device stays on its current state"));
    }
}
