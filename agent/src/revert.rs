//! After a verified commit converged: is the device still reachable and healthy? Then the commit
//! is good. If not, and the commit is new, go back to the last good one.
//!
//! The order matters. The connectivity guard runs after any apply that changed something, and
//! health checks ran inside the apply. When the guard or a `revert: true` check fails on a commit
//! that is not the last good one, tend puts back every path the commit (and any failed attempt
//! since the last good commit) replaced, re-applies the last good commit (which restores its
//! sources, services and users, and runs again the handlers the bad commit ran), and checks
//! again. Only when the device is healthy again on the good commit is the new one remembered as
//! bad, so a server outage that the guard happened to see does not condemn a good commit: it
//! is tried again on the next run.

use std::io::Write;
use std::sync::Arc;
use std::time::SystemTime;

use crate::clock::unix_seconds;
use crate::converge::apply::{converge_tree, Converged, RunError, Session};
use crate::converge::backup::Backup;
use crate::device::config::Follow;
use crate::device::state::PENDING_HANDLERS_FILE;
use crate::exit;
use crate::report::runstate::{GoodCommit, RunState};
use crate::report::{GitInfo, Reverted, RunResult, SourceInfo};
use crate::safety::guard::{self, GuardReport};
use crate::source::fetch::{FetchError, LocalRepo, SourceConfig};
use tend_roles::engine::PendingHandlers;
use tend_roles::Host;

/// The commit that converged, and where it came from.
pub struct Applied<'a> {
    pub commit: gix::ObjectId,
    pub branch: &'a str,
    /// `apply --ref`: may be reverted, but is never recorded as good or bad.
    pub one_shot: bool,
    /// Read from the image's seed bundle because the server was unreachable: the guard is not
    /// run, since it cannot blame the commit for a server that was unreachable before it.
    pub from_seed: bool,
    pub signer: Option<&'a crate::report::Signer>,
}

/// The reverted commit when `commit` is the one remembered as bad on `branch`.
pub fn known_bad(state: &RunState, branch: &str, commit: &gix::ObjectId) -> Option<Reverted> {
    state
        .reverted
        .get(branch)
        .filter(|r| gix::ObjectId::from_hex(r.commit.as_bytes()).is_ok_and(|id| id == *commit))
        .cloned()
}

/// Guards, then records the commit as good, reverts it, or fails the run.
pub fn settle(
    s: &mut Session,
    repo: &LocalRepo,
    src: &SourceConfig,
    applied: Applied,
    mut converged: Converged,
    git: &mut GitInfo,
    out: &mut dyn Write,
) -> Result<Converged, RunError> {
    if s.check {
        return Ok(converged);
    }
    if converged.report.counts.changed > 0 && !applied.from_seed {
        converged.report.guard = Some(run_guard(s, repo, src, out));
    }
    let guard_failure = converged
        .report
        .guard
        .as_ref()
        .and_then(GuardReport::failure);
    let revert_check = converged
        .report
        .checks
        .iter()
        .find(|c| c.failed() && c.revert)
        .map(|c| c.describe());
    let commit = applied.commit.to_string();
    let good = s.run_state.last_good.clone();
    let facts = Settled {
        guard_failure: guard_failure.clone(),
        revert_check,
        clean: converged.report.counts.failed == 0 && converged.report.errors.is_empty(),
        one_shot: applied.one_shot,
        commit: &commit,
        last_good: good.as_ref().map(|g| g.commit.as_str()),
    };
    match verdict(&facts) {
        Verdict::Revert { cause } => {
            let good = good.expect("a revert has a last good commit");
            revert(s, repo, src, &applied, &good, cause, converged, git, out)
        }
        verdict => {
            if let Some(g) = guard_failure {
                converged.report.errors.push(g);
                converged.report.result = RunResult::Failed;
                converged.exit |= exit::FAILED;
            }
            if verdict == Verdict::Good {
                mark_good(s, &applied);
            }
            Ok(converged)
        }
    }
}

/// What `settle` knows about a commit that has just converged.
#[derive(Debug)]
pub struct Settled<'a> {
    /// Why the connectivity guard failed, when it ran and failed.
    pub guard_failure: Option<String>,
    /// The first failed health check marked `revert: true`.
    pub revert_check: Option<String>,
    /// No resource failed and the report has no error.
    pub clean: bool,
    pub one_shot: bool,
    pub commit: &'a str,
    pub last_good: Option<&'a str>,
}

/// The decision about a converged commit, apart from the effects that carry it out.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it and remember it as the last good commit.
    Good,
    /// Keep it without remembering it: it had failures, it is a one-shot `apply --ref`, or it
    /// failed a check with nothing (else) to go back to.
    Keep,
    /// Go back to the last good commit, for this cause.
    Revert { cause: String },
}

/// A guard failure (else a failed `revert: true` check) reverts a commit other than the last
/// good one; the last good commit itself, or a device with none, has nowhere to go back to.
pub fn verdict(f: &Settled) -> Verdict {
    let cause = f.guard_failure.clone().or_else(|| f.revert_check.clone());
    match (cause, f.last_good) {
        (Some(cause), Some(good)) if good != f.commit => Verdict::Revert { cause },
        (None, _) if f.clean && !f.one_shot => Verdict::Good,
        _ => Verdict::Keep,
    }
}

fn mark_good(s: &mut Session, applied: &Applied) {
    let good = GoodCommit {
        commit: applied.commit.to_string(),
        branch: applied.branch.to_string(),
        applied_at: unix_seconds(SystemTime::now()),
        signer: applied.signer.cloned(),
    };
    // The same good commit again keeps its time, so a no-op run leaves state.json as it was.
    let same = |old: &GoodCommit| {
        (&old.commit, &old.branch, &old.signer) == (&good.commit, &good.branch, &good.signer)
    };
    if !s.run_state.last_good.as_ref().is_some_and(same) {
        s.run_state.last_good = Some(good);
    }
    s.run_state.reverted.remove(applied.branch);
    discard_backup(s);
}

fn discard_backup(s: &Session) {
    if let Err(e) = Backup::open(&s.state.path).and_then(Backup::discard) {
        tracing::warn!("cannot discard what was kept for a revert: {e}");
    }
}

fn run_guard(
    s: &Session,
    repo: &LocalRepo,
    src: &SourceConfig,
    out: &mut dyn Write,
) -> GuardReport {
    s.notifier.status("connectivity guard");
    let followed = s
        .run_state
        .current_branch
        .clone()
        .unwrap_or_else(|| s.config.source.branch.clone());
    let quick = SourceConfig {
        retries: 0,
        ..src.clone()
    };
    let list_refs = || -> Result<(), String> {
        let listed = match s.config.source.follow {
            Follow::Branch => repo.fetch_branch(&quick, &followed).map(|_| ()),
            Follow::Tags => repo.fetch_tags(&quick, &format!("{followed}/")).map(|_| ()),
        };
        match listed {
            // The server answered: reachable, even if the branch went away meanwhile.
            Ok(()) | Err(FetchError::BranchMissing { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    };
    // A device on its stage's pointer whose pointer lists bundles gets its next commit from
    // them (the full bundle always fits), git only as a fallback: the guard asks the pointer.
    let pointer = s
        .config
        .source
        .pointer
        .as_deref()
        .filter(|_| followed == s.config.source.branch)
        .filter(|_| {
            s.run_state
                .pointer
                .accepted
                .as_ref()
                .is_some_and(|a| !a.bundles.is_empty())
        });
    let via = pointer.map_or(guard::Via::Git, guard::Via::Pointer);
    let ask = || match via {
        guard::Via::Git => list_refs(),
        guard::Via::Pointer(url) => {
            let client = crate::source::fetch::http_client(&quick).map_err(|e| e.to_string())?;
            crate::source::pointer::poll(&client, url, &s.run_state.pointer)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    let report = guard::check(&guard::Inputs {
        root: &s.root,
        src,
        config: &s.config.guard,
        via,
        ask: &ask,
    });
    match report.failure() {
        None => {
            let _ = writeln!(out, "reachable {} (connectivity guard)", src.url);
        }
        Some(f) => {
            tracing::error!("{f}");
            let _ = writeln!(out, "UNREACHABLE {f}");
        }
    }
    report
}

#[allow(clippy::too_many_arguments)]
fn revert(
    s: &mut Session,
    repo: &LocalRepo,
    src: &SourceConfig,
    applied: &Applied,
    good: &GoodCommit,
    cause: String,
    failed: Converged,
    git: &mut GitInfo,
    out: &mut dyn Write,
) -> Result<Converged, RunError> {
    let bad = applied.commit.to_string();
    let _ = writeln!(
        out,
        "tend: reverting commit {} of {}: {cause}",
        short(&bad),
        applied.branch
    );
    tracing::error!(commit = %bad, branch = applied.branch, "reverting: {cause}");
    s.notifier.status("reverting");
    let state_err = |e: std::io::Error| RunError::State {
        path: s.state.path.display().to_string(),
        source: e,
    };
    let kept = Backup::open(&s.state.path).map_err(state_err)?;
    let (restored, errors) = kept.restore(&Host::new(&s.root));
    for p in &restored {
        let _ = writeln!(out, "restored {p}");
    }
    if errors.is_empty() {
        kept.discard().map_err(state_err)?;
    }
    // Services restarted for the bad commit's files must restart again for the restored ones.
    let mut pending = PendingHandlers::load(Some(&s.state.file(PENDING_HANDLERS_FILE)));
    pending.add(&failed.handlers_run).map_err(state_err)?;

    let good_id = gix::ObjectId::from_hex(good.commit.as_bytes()).map_err(|e| RunError::State {
        path: "state.json".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let tree = repo.tree(&good_id).map_err(|e| RunError::State {
        path: "repo.git".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let source = SourceInfo {
        kind: "git".into(),
        location: format!(
            "{} {} {} (last good, after reverting {})",
            src.url,
            good.branch,
            short(&good.commit),
            short(&bad)
        ),
    };
    let mut back = converge_tree(s, Arc::new(tree), source, Some(&good.commit), out)?;
    let guard_again = run_guard(s, repo, src, out);
    let still = guard_again.failure().or_else(|| {
        back.report
            .checks
            .iter()
            .find(|c| c.failed() && c.revert)
            .map(|c| c.describe())
    });
    back.report.guard = Some(guard_again);

    let reverted = Reverted {
        commit: bad.clone(),
        cause: cause.clone(),
        at: unix_seconds(SystemTime::now()),
        restored,
    };
    let mut errs = vec![format!(
        "commit {} of {} was reverted to the last good commit {}: {cause}",
        short(&bad),
        applied.branch,
        short(&good.commit)
    )];
    errs.extend(errors);
    match &still {
        None if !applied.one_shot => {
            let _ = writeln!(
                out,
                "tend: back on {}; {} will not be applied again until {} moves on",
                short(&good.commit),
                short(&bad),
                applied.branch
            );
            s.run_state.reverted.insert(
                applied.branch.to_string(),
                Reverted {
                    restored: Vec::new(),
                    ..reverted.clone()
                },
            );
            discard_backup(s);
        }
        None => {}
        Some(f) => {
            let msg = format!(
                "still failing on the last good commit ({f}): the failure may not be the commit's, so it will be tried again"
            );
            let _ = writeln!(out, "tend: {msg}");
            errs.push(msg);
        }
    }
    back.report.errors.splice(0..0, errs);
    back.report.result = RunResult::Reverted;
    back.exit |= exit::CHANGED_AND_FAILED;
    git.branch = good.branch.clone();
    git.commit = good.commit.clone();
    git.commit_time = repo.commit_time(&good_id).unwrap_or(0);
    git.head = Some(bad);
    git.signer = None;
    git.fell_back = true;
    git.reverted = Some(reverted);
    Ok(back)
}

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(commit: &'a str, last_good: Option<&'a str>) -> Settled<'a> {
        Settled {
            guard_failure: None,
            revert_check: None,
            clean: true,
            one_shot: false,
            commit,
            last_good,
        }
    }

    #[test]
    fn a_healthy_clean_commit_is_good_and_a_one_shot_is_only_kept() {
        assert_eq!(verdict(&facts("b", Some("a"))), Verdict::Good);
        assert_eq!(
            verdict(&facts("a", None)),
            Verdict::Good,
            "the first commit"
        );
        let one_shot = Settled {
            one_shot: true,
            ..facts("b", Some("a"))
        };
        assert_eq!(verdict(&one_shot), Verdict::Keep);
        let failed = Settled {
            clean: false,
            ..facts("b", Some("a"))
        };
        assert_eq!(verdict(&failed), Verdict::Keep, "failures are not good");
    }

    #[test]
    fn a_guard_failure_reverts_a_new_commit_before_a_failed_check_does() {
        let f = Settled {
            guard_failure: Some("git.lan:443 unreachable".into()),
            revert_check: Some("check web failed".into()),
            ..facts("b", Some("a"))
        };
        assert_eq!(
            verdict(&f),
            Verdict::Revert {
                cause: "git.lan:443 unreachable".into()
            }
        );
        let check = Settled {
            revert_check: Some("check web failed".into()),
            ..facts("b", Some("a"))
        };
        assert_eq!(
            verdict(&check),
            Verdict::Revert {
                cause: "check web failed".into()
            }
        );
        let one_shot = Settled {
            one_shot: true,
            ..check
        };
        assert!(
            matches!(verdict(&one_shot), Verdict::Revert { .. }),
            "apply --ref is reverted too"
        );
    }

    /// A failure on the last good commit itself (a server outage the guard saw after drift was
    /// repaired) has nothing to go back to: the run fails and the commit stays good.
    #[test]
    fn a_failure_on_the_last_good_commit_or_with_none_is_kept_not_reverted() {
        let on_good = Settled {
            guard_failure: Some("down".into()),
            ..facts("a", Some("a"))
        };
        assert_eq!(verdict(&on_good), Verdict::Keep);
        let first = Settled {
            revert_check: Some("check".into()),
            ..facts("b", None)
        };
        assert_eq!(verdict(&first), Verdict::Keep);
    }
}
