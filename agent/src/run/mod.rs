//! `tend run` (what the timer starts) and `tend apply --ref`: fetch → verify → load → validate →
//! apply → report, following the branch this device subscribes to.
//!
//! Nothing the network or the git server does may make the device apply something unverified,
//! stale, or meant for another stage, or leave it unconverged. So a new head is applied only
//! when it is signed by a pinned key, descends from the last verified commit of its branch, and
//! validates for this device. When anything about it is wrong, tend converges again to the last
//! good commit (which also repairs drift) and reports why the head was refused.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::converge::apply::{converge_tree, Converged, RunError, Session, SessionOptions};
use crate::device::config::Follow;
use crate::diag::Diagnostic;
use crate::exit;
use crate::report::{GitInfo, Report, SourceInfo};
use crate::source::fetch::LocalRepo;
use crate::source::verify::TrustRoots;

mod candidate;
mod pointer;
mod sources;
pub mod waves;

use candidate::{follow, one_shot, Refused};

pub const REPO_DIR: &str = "repo.git";

pub struct RunOptions {
    pub root: PathBuf,
    pub device: Option<String>,
    /// Sleep a random 0..splay seconds first, so a fleet does not hit the server at once.
    pub splay: Option<u64>,
    /// `apply --ref`: a one-shot run of this branch or tag instead of the subscription.
    pub reference: Option<String>,
    pub insecure_skip_verify: bool,
    pub check: bool,
    pub diff: bool,
}

fn splay(seconds: u64) {
    if seconds == 0 {
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let wait = (u64::from(nanos) ^ u64::from(std::process::id()).wrapping_mul(2654435761))
        % (seconds * 1000);
    tracing::info!(ms = wait, "splay");
    std::thread::sleep(Duration::from_millis(wait));
}

pub fn run(o: &RunOptions, out: &mut dyn Write) -> Result<Converged, RunError> {
    let mut s = Session::start(SessionOptions {
        root: o.root.clone(),
        device: o.device.as_deref(),
        check: o.check,
        diff: o.diff,
        command: if o.reference.is_some() {
            "apply"
        } else {
            "run"
        },
    })?;
    if let Some(sec) = o.splay {
        splay(sec);
    }
    let happened = crate::converge::apply::after_boot(&mut s);
    let mut sources = sources::Sources::of(&s, &s.config.source)?;
    let mut trust = TrustRoots::load(
        &s.root,
        s.config.verify.allowed_signers.as_deref(),
        s.config.verify.openpgp_keyring.as_deref(),
    )
    .map_err(|e| RunError::Config(Diagnostic::new("verify", 0, e.to_string())))?;
    if let Some(roots) = &s.config.verify.policy_roots {
        if s.config.source.follow == Follow::Tags {
            return Err(RunError::Config(Diagnostic::new(
                "verify",
                0,
                "verify.policy_roots applies to branch heads; with source.follow: tags remove \
                 it (tags are verified against verify.allowed_signers)"
                    .to_string(),
            )));
        }
        trust
            .load_policy(&s.root, roots, s.config.verify.policy_threshold)
            .map_err(|e| RunError::Config(Diagnostic::new("verify", 0, e.to_string())))?;
    }
    let mut warnings = Vec::new();
    if trust.is_empty() {
        let w =
            "no signing keys are configured (verify.allowed_signers / verify.openpgp_keyring): \
                 this device applies any commit its git server serves";
        tracing::warn!("{w}");
        warnings.push(w.to_string());
        if o.reference.is_some() && !o.insecure_skip_verify {
            return Err(RunError::Usage(
                "apply --ref needs signing keys to verify the ref; pass --insecure-skip-verify to apply it unverified".into(),
            ));
        }
    }
    if o.insecure_skip_verify {
        let w = "--insecure-skip-verify: the ref is applied without checking its signature";
        tracing::warn!("{w}");
        warnings.push(w.to_string());
    }
    let repo_path = s.state.file(REPO_DIR);
    s.state.ensure().map_err(|e| RunError::State {
        path: s.state.path.display().to_string(),
        source: e,
    })?;
    let repo = LocalRepo::open(&repo_path).map_err(|e| RunError::State {
        path: repo_path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let recovered = repo.recovered().map(str::to_string);
    if let Some(r) = &recovered {
        warnings.push(format!(
            "the local repo was corrupt and was cloned again ({r})"
        ));
    }

    let configured = s.config.source.branch.clone();
    let verify_enabled = !trust.is_empty() && !o.insecure_skip_verify;
    let attempt = match &o.reference {
        Some(r) => one_shot(&repo, &mut sources, r, &trust, verify_enabled),
        None => follow(&mut s, &repo, &mut sources, &trust, &mut warnings),
    };
    warnings.append(&mut sources.failed);
    // The source that answered last: the one that served the head, if one did.
    let src = sources.current();
    let served = match &attempt {
        Ok(c) => !c.from_seed,
        Err(r) => r.head.is_some(),
    };

    let mut git = GitInfo {
        url: s.config.source.url.clone().unwrap_or_default(),
        source_url: served.then(|| src.url.clone()),
        configured_branch: configured,
        recovered_repo: recovered,
        ..Default::default()
    };
    let mut converged = match attempt {
        Ok(c) => 'head: {
            git.branch = c.branch.clone();
            git.commit = c.commit.to_string();
            git.commit_time = repo.commit_time(&c.commit).unwrap_or(0);
            git.signer = c.signer.clone();
            git.switched_from = c.switched_from.clone();
            if let Some(from) = &c.switched_from {
                tracing::warn!(from = %from, to = %c.branch, "the device file moved this device to another branch");
                let _ = writeln!(
                    out,
                    "tend: following branch {} (moved from {from} by devices/{}.yaml)",
                    c.branch, s.device_id
                );
            }
            let source = SourceInfo {
                kind: "git".into(),
                location: format!("{} {} {}", src.url, c.branch, short(&c.commit)),
            };
            if let Some(susp) = crate::converge::apply::suspended(&s) {
                // Suspended: the head was fetched and verified (so status shows the lag), and
                // nothing is applied.
                let _ = writeln!(
                    out,
                    "tend: suspended ({}); fetched {} of {}, applied nothing",
                    susp.reason,
                    short(&c.commit),
                    c.branch
                );
                git.head = Some(c.commit.to_string());
                let report = s.suspended_report(source, &susp);
                let mut converged = Converged {
                    exit: exit::SUSPENDED,
                    report,
                    handlers_run: Vec::new(),
                    applied: None,
                };
                converged.report.warnings.extend(warnings);
                converged.report.git = Some(git);
                s.write_report(&converged.report)?;
                s.save_state()?;
                return Ok(converged);
            }
            let bad = o
                .reference
                .is_none()
                .then(|| crate::revert::known_bad(&s.run_state, &c.branch, &c.commit))
                .flatten();
            if let Some(bad) = bad {
                // Reverted before: stay on the last good commit until the branch moves on.
                let cause = format!(
                    "commit {} of {} was reverted ({}); waiting for a new head",
                    short(&c.commit),
                    c.branch,
                    bad.cause
                );
                let _ = writeln!(out, "refused  {cause}");
                git.head = Some(c.commit.to_string());
                git.signer = None;
                git.reverted = Some(bad);
                let mut converged = fall_back(&s, &repo, cause, None, &mut git, out)?;
                converged.report.result = crate::report::RunResult::Reverted;
                break 'head converged;
            }
            git.rollout = waves::consider(&s, &repo, &c, o.reference.is_some());
            if let (Some(w), Some(good)) = (
                git.rollout.as_ref().filter(|w| w.waiting),
                s.run_state.last_good.clone(),
            ) {
                // Not this device's wave yet: stay on the last good commit, not a failure.
                let _ = writeln!(
                    out,
                    "tend: {}: commit {} of {} waits; staying on the last good commit",
                    w.describe(),
                    short(&c.commit),
                    c.branch
                );
                tracing::info!(wave = w.wave, waves = w.waves, applies_at = %w.applies_at, "waiting for this device's wave");
                git.head = Some(c.commit.to_string());
                break 'head last_good(&s, &repo, &good, &mut git, out)?;
            }
            let cycle = c.cycle.clone();
            let commit = c.commit.to_string();
            let mut converged = converge_tree(&s, c.tree, source, Some(&commit), out)?;
            if let Some(msg) = cycle {
                // The current branch was applied; the broken subscription still fails the run.
                converged.report.errors.push(msg);
                converged.report.result = crate::report::RunResult::Failed;
                converged.exit |= exit::FAILED;
            }
            if converged.invalid() {
                let cause = format!(
                    "commit {} of {} is invalid for this device",
                    short(&c.commit),
                    c.branch
                );
                // The report names the refused head, as for a refused signature.
                git.head = Some(c.commit.to_string());
                fall_back(
                    &s,
                    &repo,
                    cause,
                    Some(converged.report.errors.clone()),
                    &mut git,
                    out,
                )?
            } else {
                let applied = crate::revert::Applied {
                    commit: c.commit,
                    branch: &c.branch,
                    one_shot: o.reference.is_some(),
                    from_seed: c.from_seed,
                    signer: c.signer.as_ref(),
                };
                crate::revert::settle(&mut s, &repo, src, applied, converged, &mut git, out)?
            }
        }
        Err(Refused {
            cause,
            head,
            throttled,
        }) => {
            git.head = head.map(|h| h.to_string());
            if throttled.is_some() {
                tracing::warn!("{cause}");
            } else {
                tracing::error!("{cause}");
            }
            let _ = writeln!(out, "refused  {cause}");
            git.throttled = throttled;
            let mut converged = fall_back(&s, &repo, cause, None, &mut git, out)?;
            // Throttling says nothing about the commit: the run's state is its own.
            if git.throttled.is_some() && converged.report.counts.failed == 0 {
                converged.report.result = crate::report::RunResult::Throttled;
            }
            converged
        }
    };
    converged.report.warnings.extend(warnings);
    git.pointer = pointer::info(&s);
    if let Some(p) = git.pointer.as_ref().filter(|p| p.stale) {
        let w = format!(
            "the stage pointer is stale (sequence {}, expires {}, trusted time {}): this device \
             cannot tell \"nothing new\" from \"held back\"; it keeps its last good commit",
            p.sequence.map_or("none".into(), |n| n.to_string()),
            p.expires.as_deref().unwrap_or("never accepted"),
            p.trusted_time
        );
        tracing::warn!("{w}");
        converged.report.warnings.push(w);
        if converged.exit == exit::OK || converged.exit == exit::CHANGED {
            converged.exit = exit::STALE;
        }
    }
    let commit = git.commit.clone();
    converged.report.git = Some(git);
    crate::converge::apply::finish(
        &mut s,
        &mut converged,
        (!commit.is_empty()).then_some(commit.as_str()),
        happened,
        out,
    )?;
    Ok(converged)
}

fn short(id: &gix::ObjectId) -> String {
    id.to_hex_with_len(12).to_string()
}

/// Converges to the last good commit after the new head was refused.
fn fall_back(
    s: &Session,
    repo: &LocalRepo,
    cause: String,
    details: Option<Vec<String>>,
    git: &mut GitInfo,
    out: &mut dyn Write,
) -> Result<Converged, RunError> {
    git.refused = Some(cause.clone());
    git.fell_back = true;
    let mut errors = vec![cause.clone()];
    errors.extend(details.unwrap_or_default());
    let good = s.run_state.last_good.clone();
    let Some(good) = good else {
        let _ = writeln!(
            out,
            "tend: no good commit to fall back to yet; nothing was applied"
        );
        let mut report = Report::invalid(
            crate::report::RunFacts {
                command: s.command.clone(),
                source: SourceInfo {
                    kind: "git".into(),
                    location: git.url.clone(),
                },
                device: crate::report::DeviceInfo {
                    id: s.device_id.clone(),
                    ..Default::default()
                },
                started: s.started,
                elapsed: std::time::Duration::ZERO,
            },
            Vec::new(),
        );
        report.result = crate::report::RunResult::Failed;
        report.errors = errors;
        git.fell_back = false;
        return Ok(Converged {
            applied: None,
            exit: exit::FAILED,
            report,
            handlers_run: Vec::new(),
        });
    };
    let mut converged = last_good(s, repo, &good, git, out)?;
    converged.report.errors.splice(0..0, errors);
    converged.report.result = crate::report::RunResult::Failed;
    converged.exit |= exit::FAILED;
    Ok(converged)
}

/// Converges to the last good commit `good`, filling `git` with it.
fn last_good(
    s: &Session,
    repo: &LocalRepo,
    good: &crate::report::runstate::GoodCommit,
    git: &mut GitInfo,
    out: &mut dyn Write,
) -> Result<Converged, RunError> {
    let commit = gix::ObjectId::from_hex(good.commit.as_bytes()).map_err(|e| RunError::State {
        path: "state.json".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let _ = writeln!(
        out,
        "tend: converging to the last good commit {} of {}",
        &good.commit[..12.min(good.commit.len())],
        good.branch
    );
    let tree = repo.tree(&commit).map_err(|e| RunError::State {
        path: "repo.git".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    git.branch = good.branch.clone();
    git.commit = good.commit.clone();
    git.signer = good.signer.clone();
    git.commit_time = repo.commit_time(&commit).unwrap_or(0);
    let source = SourceInfo {
        kind: "git".into(),
        location: format!(
            "{} {} {} (last good)",
            git.url,
            good.branch,
            &good.commit[..12.min(good.commit.len())]
        ),
    };
    converge_tree(s, Arc::new(tree), source, Some(&good.commit), out)
}
