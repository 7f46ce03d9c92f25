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
use crate::device::config::{Follow, Source};
use crate::diag::Diagnostic;
use crate::exit;
use crate::fleet::load::Fleet;
use crate::report::{GitInfo, Report, Signer, SourceInfo};
use crate::source::fetch::{Ancestry, LocalRepo, SourceConfig};
use crate::source::monotonic;
use crate::source::tree::Tree;
use crate::source::verify::{verify_commit, verify_tag, TrustRoots};

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

/// Why a head was not applied, and which head it was (when the fetch got that far).
struct Refused {
    cause: String,
    head: Option<gix::ObjectId>,
    /// The fetch was throttled by the server: not a fault of any commit.
    throttled: Option<crate::report::Throttled>,
}

impl From<String> for Refused {
    fn from(cause: String) -> Self {
        Self {
            cause,
            head: None,
            throttled: None,
        }
    }
}

impl Refused {
    fn at(head: gix::ObjectId) -> impl FnOnce(String) -> Refused {
        move |cause| Refused {
            cause,
            head: Some(head),
            throttled: None,
        }
    }

    /// A failed fetch, `what` naming it ("fetching main").
    fn fetch(what: &str, e: &crate::source::fetch::FetchError) -> Refused {
        Refused {
            cause: format!("{what} failed: {e}"),
            head: None,
            throttled: crate::report::Throttled::of(e),
        }
    }
}

/// A head that passed fetch and verification, with where it came from.
struct Candidate {
    branch: String,
    commit: gix::ObjectId,
    signer: Option<Signer>,
    switched_from: Option<String>,
    tree: Arc<dyn Tree>,
    /// A subscription cycle was found; the run stays on its branch and fails with this.
    cycle: Option<String>,
    /// Read from the image's seed bundle because the server was unreachable: the connectivity
    /// guard cannot blame the commit for what was already unreachable before it applied.
    from_seed: bool,
}

fn source_config(s: &Session, src: &Source) -> Result<SourceConfig, RunError> {
    let url = src.url.clone().ok_or_else(|| {
        RunError::Config(
            Diagnostic::new(
                "/etc/tend/tend.yaml",
                0,
                "`source.url` is not set: tend run has nothing to pull",
            )
            .fix("set source: {url: https://git.example.com/fleet.git, branch: production}"),
        )
    })?;
    let under_root =
        |p: &Option<String>| p.as_ref().map(|p| s.root.join(p.trim_start_matches('/')));
    let credentials = match &src.password_file {
        Some(file) => {
            let password = crate::device::credentials::read_password_file(&s.root, file)
                .map_err(RunError::Config)?;
            let username = src.username.clone().or_else(|| {
                src.url_credentials
                    .as_ref()
                    .and_then(|c| c.username.clone())
            });
            Some(crate::device::credentials::Credentials { username, password })
        }
        None => src.url_credentials.clone(),
    };
    Ok(SourceConfig {
        url,
        credentials,
        ca_file: under_root(&src.ca_file),
        proxy: src.proxy.clone(),
        no_proxy: src.no_proxy.clone(),
        ssh_key: under_root(&src.ssh_key),
        known_hosts: under_root(&src.known_hosts),
        connect_timeout: src.connect_timeout,
        timeout: src.timeout,
        retries: src.retries,
        max_fetch_bytes: src.max_fetch_bytes,
        min_transfer_rate: src.min_transfer_rate,
        transfer_rate_window: src.transfer_rate_window,
    })
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
    let src = source_config(&s, &s.config.source)?;
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
        Some(r) => one_shot(&repo, &src, r, &trust, verify_enabled),
        None => follow(&mut s, &repo, &src, &trust, &mut warnings),
    };

    let mut git = GitInfo {
        url: src.url.clone(),
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
            let cycle = c.cycle.clone();
            let mut converged = converge_tree(&s, c.tree, source, out)?;
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
                crate::revert::settle(&mut s, &repo, &src, applied, converged, &mut git, out)?
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
    let commit = git.commit.clone();
    converged.report.git = Some(git);
    crate::converge::apply::finish(
        &mut s,
        &mut converged.report,
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
            exit: exit::FAILED,
            report,
            handlers_run: Vec::new(),
        });
    };
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
    let mut converged = converge_tree(s, Arc::new(tree), source, out)?;
    converged.report.errors.splice(0..0, errors);
    converged.report.result = crate::report::RunResult::Failed;
    converged.exit |= exit::FAILED;
    Ok(converged)
}

/// Follows the subscription: the current branch, moved by `subscribed_branch` in the device file.
fn follow(
    s: &mut Session,
    repo: &LocalRepo,
    src: &SourceConfig,
    trust: &TrustRoots,
    warnings: &mut Vec<String>,
) -> Result<Candidate, Refused> {
    let configured = s.config.source.branch.clone();
    let mut branch = s.run_state.branch(&configured);
    let mut visited = vec![branch.clone()];
    let mut switched_from = None;
    // The current branch's own head: where the device stays if the subscription cycles.
    let mut current: Option<Candidate> = None;
    loop {
        let c = match s.config.source.follow {
            Follow::Branch => verified_branch_head(s, repo, src, trust, &branch, warnings)?,
            Follow::Tags => verified_stage_tag(s, repo, src, trust, &branch, warnings)?,
        };
        let wanted = subscribed_branch(&c.tree, &s.device_id)
            .map_err(|d| format!("commit {} of {branch}: {d}", short(&c.commit)))?;
        match wanted {
            Some(next) if next != branch => {
                if visited.contains(&next) {
                    let stay = current.unwrap_or(c);
                    let mut chain = visited.clone();
                    chain.push(next.clone());
                    let msg = format!(
                        "subscription cycle {}: staying on {}; fix subscribed_branch in devices/{}.yaml",
                        chain.join(" -> "),
                        stay.branch,
                        s.device_id
                    );
                    tracing::error!("{msg}");
                    warnings.push(msg.clone());
                    return Ok(Candidate {
                        cycle: Some(msg),
                        ..stay
                    });
                }
                if current.is_none() {
                    switched_from = Some(branch.clone());
                    current = Some(c);
                }
                visited.push(next.clone());
                branch = next;
            }
            _ => {
                if !s.check {
                    s.run_state.current_branch = Some(branch.clone());
                }
                return Ok(Candidate { switched_from, ..c });
            }
        }
    }
}

fn subscribed_branch(tree: &Arc<dyn Tree>, device_id: &str) -> Result<Option<String>, Diagnostic> {
    let fleet = Fleet::open(tree.as_ref())?;
    Ok(fleet
        .device(device_id)?
        .and_then(|d| d.subscribed_branch.map(|b| b.value)))
}

fn verified_branch_head(
    s: &mut Session,
    repo: &LocalRepo,
    src: &SourceConfig,
    trust: &TrustRoots,
    branch: &str,
    warnings: &mut Vec<String>,
) -> Result<Candidate, Refused> {
    s.notifier.status(&format!("fetching {branch}"));
    let (head, from_seed) = match repo.fetch_branch(src, branch) {
        Ok(fetched) => (fetched.head, false),
        Err(e) => {
            let refused = Refused::fetch(&format!("fetching {branch}"), &e);
            let failed = refused.cause.clone();
            let head = seeded_head(s, repo, branch).map_err(|seed| format!("{failed}; {seed}"))?;
            let Some(head) = head else {
                return Err(refused);
            };
            let note = format!(
                "{failed}; applying {} of {branch} from the image's seed bundle {}",
                short(&head),
                s.config.source.seed_bundle
            );
            tracing::warn!("{note}");
            warnings.push(note);
            (head, true)
        }
    };
    let mut policy_version = None;
    let signer = if let Some(roots) = trust.policy() {
        s.notifier
            .status(&format!("checking approvals of {}", short(&head)));
        let last = s.run_state.policy_version;
        let ok = crate::source::policy::check_head(repo, src, roots, last, branch, &head)
            .map_err(|e| format!("commit {} of {branch} refused: {e}", short(&head)))
            .map_err(Refused::at(head))?;
        tracing::info!(
            approvals = ok.approvals,
            version = ok.version,
            "policy approved the head"
        );
        policy_version = Some(ok.version);
        Some(Signer::of(&ok.signer, None))
    } else if trust.is_empty() {
        None
    } else {
        s.notifier.status(&format!("verifying {}", short(&head)));
        let raw = repo.raw_commit(&head).map_err(|e| e.to_string())?;
        let signer = verify_commit(&raw, trust)
            .map_err(|e| format!("commit {} of {branch} refused: {e}", short(&head)))
            .map_err(Refused::at(head))?;
        Some(Signer::of(&signer, None))
    };
    if let Some(prev) = s.run_state.last_verified.get(branch).cloned() {
        let prev_id = gix::ObjectId::from_hex(prev.as_bytes()).map_err(|e| e.to_string())?;
        if prev_id != head
            && !s.config.verify.allow_rewinds
            && !descends(repo, src, branch, &prev_id, &head)?
        {
            return Err(Refused::at(head)(format!(
                "head {} of {branch} does not descend from the last verified commit {}: an old commit replayed or a rewritten branch; set verify.allow_rewinds: true to accept force-pushes",
                short(&head),
                short(&prev_id)
            )));
        }
    }
    let dated = match &signer {
        Some(_) => {
            let raw = repo.raw_commit(&head).map_err(|e| e.to_string())?;
            let time = crate::source::verify::commit_time(&raw).map_err(|e| e.to_string())?;
            let key = monotonic::branch_key(branch);
            let what = format!("commit {} of {branch}", short(&head));
            monotonic::check(&s.run_state.signed_time, &key, &what, time)
                .map_err(Refused::at(head))?;
            Some((key, time))
        }
        None => None,
    };
    if !s.check {
        s.run_state
            .last_verified
            .insert(branch.to_string(), head.to_string());
        if let Some((key, time)) = dated {
            monotonic::record(&mut s.run_state.signed_time, &key, time);
        }
        if let Some(v) = policy_version {
            let prev = s.run_state.policy_version.unwrap_or(0);
            s.run_state.policy_version = Some(v.max(prev));
        }
    }
    let tree = repo.tree(&head).map_err(|e| e.to_string())?;
    Ok(Candidate {
        branch: branch.to_string(),
        commit: head,
        signer,
        switched_from: None,
        tree: Arc::new(tree),
        cycle: None,
        from_seed,
    })
}

/// The head of `branch` from the image's seed bundle, when the device has never verified a
/// commit of that branch (its first boot): later runs must come from the git server, or an old
/// image would replay its seed. None when there is no bundle or it lacks the branch.
fn seeded_head(
    s: &Session,
    repo: &LocalRepo,
    branch: &str,
) -> Result<Option<gix::ObjectId>, String> {
    if s.run_state.last_verified.contains_key(branch) {
        return Ok(None);
    }
    let bundle = s
        .root
        .join(s.config.source.seed_bundle.trim_start_matches('/'));
    if !bundle.is_file() {
        return Ok(None);
    }
    repo.import_bundle(&bundle, branch)
        .map_err(|e| e.to_string())
}

/// How far back tend fetches history to prove that a new head descends from the last verified
/// commit, when the local repo is shallow (first fetch, or re-created after corruption).
const DEEPEN_STEPS: [u32; 3] = [64, 512, 4096];

/// Whether `head` descends from `prev`. A shallow local history is deepened step by step; if
/// descent still cannot be shown, it is treated as not descending (refused, never assumed).
fn descends(
    repo: &LocalRepo,
    src: &SourceConfig,
    branch: &str,
    prev: &gix::ObjectId,
    head: &gix::ObjectId,
) -> Result<bool, Refused> {
    for step in std::iter::once(0).chain(DEEPEN_STEPS) {
        if step > 0 {
            repo.deepen(src, branch, step)
                .map_err(|e| format!("fetching history of {branch}: {e}"))?;
        }
        match repo.ancestry(prev, head).map_err(|e| e.to_string())? {
            Ancestry::Ancestor => return Ok(true),
            Ancestry::NotAncestor => return Ok(false),
            Ancestry::Unknown => continue,
        }
    }
    Ok(false)
}

/// Strict mode: the stage follows signed annotated tags `<stage>/<n>`; the name binds the stage
/// and the number must grow, so neither another stage's tag nor an older one is accepted.
fn verified_stage_tag(
    s: &mut Session,
    repo: &LocalRepo,
    src: &SourceConfig,
    trust: &TrustRoots,
    stage: &str,
    warnings: &mut Vec<String>,
) -> Result<Candidate, Refused> {
    if trust.is_empty() {
        return Err(String::from("source.follow: tags needs signing keys (verify.allowed_signers or verify.openpgp_keyring)").into());
    }
    let prefix = format!("{stage}/");
    s.notifier.status(&format!("fetching tags {prefix}*"));
    let tags = repo
        .fetch_tags(src, &prefix)
        .map_err(|e| Refused::fetch(&format!("fetching tags {prefix}*"), &e))?;
    let last = s.run_state.last_tag.get(stage).copied().unwrap_or(0);
    let pick = crate::source::stagetag::pick(&tags, stage, last, s.config.verify.max_tag_step)
        .map_err(|e| match e.newest {
            Some(at) => Refused::at(at)(e.reason),
            None => e.reason.into(),
        })?;
    if let Some(w) = pick.skipped {
        tracing::warn!("{w}");
        warnings.push(w);
    }
    let (number, tag) = (pick.number, pick.tag);
    let raw = repo.raw_tag(&tag.tag).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let named = text
        .lines()
        .find_map(|l| l.strip_prefix("tag "))
        .unwrap_or_default();
    if named != tag.name {
        return Err(Refused::at(tag.target)(format!("tag object names itself '{named}' but is served as '{}': refusing a tag from another stage", tag.name)));
    }
    let signer = verify_tag(&raw, trust)
        .map_err(|e| format!("tag {} refused: {e}", tag.name))
        .map_err(Refused::at(tag.target))?;
    let commit = tag_commit(repo, tag)?;
    let key = monotonic::stage_key(stage);
    let time = crate::source::verify::tag_time(&raw).map_err(|e| e.to_string())?;
    if let Some(t) = time {
        monotonic::check(
            &s.run_state.signed_time,
            &key,
            &format!("tag {}", tag.name),
            t,
        )
        .map_err(Refused::at(commit))?;
    }
    if !s.check {
        s.run_state.last_tag.insert(stage.to_string(), number);
        if let Some(t) = time {
            monotonic::record(&mut s.run_state.signed_time, &key, t);
        }
    }
    let tree = repo.tree(&commit).map_err(|e| e.to_string())?;
    Ok(Candidate {
        branch: stage.to_string(),
        commit,
        signer: Some(Signer::of(&signer, Some(&tag.name))),
        switched_from: None,
        tree: Arc::new(tree),
        cycle: None,
        from_seed: false,
    })
}

/// The commit a verified annotated tag names, peeled locally through the object database: the
/// tag object was looked up by the id the server advertised, so its signed payload is what binds
/// the commit. The server's own `peeled:` claim must agree; when it does not, the server is lying
/// about what the tag means, and the run is refused rather than trusting either story.
fn tag_commit(
    repo: &LocalRepo,
    tag: &crate::source::fetch::TagRef,
) -> Result<gix::ObjectId, Refused> {
    // A lightweight tag (only `apply --ref` without verification takes one) is the commit.
    let local = if repo.raw_tag(&tag.tag).is_ok() {
        repo.peel_tag(&tag.tag)
            .map_err(|e| format!("tag {} refused: {e}", tag.name))
            .map_err(Refused::at(tag.target))?
    } else {
        tag.tag
    };
    if local != tag.target {
        return Err(Refused::at(local)(format!(
            "tag {} refused: the server advertised it as peeling to {} but the signed tag object \
             {} leads to {}: the server is lying about the tag's target",
            tag.name, tag.target, tag.tag, local
        )));
    }
    Ok(local)
}

/// `apply --ref`: a branch or a tag, verified unless told otherwise; no ancestry rule, no effect on
/// the subscription or the last good commit.
fn one_shot(
    repo: &LocalRepo,
    src: &SourceConfig,
    reference: &str,
    trust: &TrustRoots,
    verify: bool,
) -> Result<Candidate, Refused> {
    let name = reference
        .trim_start_matches("refs/heads/")
        .trim_start_matches("refs/tags/");
    let (commit, signer) = match repo.fetch_branch(src, name) {
        Ok(f) => {
            let signer = if verify {
                let raw = repo.raw_commit(&f.head).map_err(|e| e.to_string())?;
                let s = verify_commit(&raw, trust).map_err(|e| format!("{name} refused: {e}"))?;
                Some(Signer::of(&s, None))
            } else {
                None
            };
            (f.head, signer)
        }
        Err(branch_err) => {
            let tags = repo
                .fetch_tags(src, name)
                .map_err(|e| format!("{name}: not a branch ({branch_err}) and tags failed: {e}"))?;
            let tag = tags
                .into_iter()
                .find(|t| t.name == name)
                .ok_or_else(|| format!("{name}: no such branch or tag ({branch_err})"))?;
            let signer = if verify {
                let raw = repo.raw_tag(&tag.tag).map_err(|e| e.to_string())?;
                let s = verify_tag(&raw, trust).map_err(|e| format!("tag {name} refused: {e}"))?;
                Some(Signer::of(&s, Some(&tag.name)))
            } else {
                None
            };
            (tag_commit(repo, &tag)?, signer)
        }
    };
    let tree = repo.tree(&commit).map_err(|e| e.to_string())?;
    Ok(Candidate {
        branch: name.to_string(),
        commit,
        signer,
        switched_from: None,
        tree: Arc::new(tree),
        cycle: None,
        from_seed: false,
    })
}
