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
