//! Which head a run takes: the subscribed branch (moved by the device file), its head verified
//! against the pinned keys or the policy, descending from the last verified commit and never
//! dated earlier; a stage's signed tag in strict mode; or the one ref of `tend apply --ref`.
//! Anything wrong is a [`Refused`] with the head it was about, for the run to fall back.

use std::sync::Arc;

use crate::converge::apply::Session;
use crate::device::config::Follow;
use crate::diag::Diagnostic;
use crate::fleet::load::Fleet;
use crate::report::Signer;
use crate::source::fetch::{Ancestry, LocalRepo, SourceConfig};

use super::sources::Sources;
use crate::source::monotonic;
use crate::source::tree::Tree;
use crate::source::verify::{verify_commit, verify_tag, TrustRoots};

use super::short;

/// Why a head was not applied, and which head it was (when the fetch got that far).
pub(super) struct Refused {
    pub(super) cause: String,
    pub(super) head: Option<gix::ObjectId>,
    /// The fetch was throttled by the server: not a fault of any commit.
    pub(super) throttled: Option<crate::report::Throttled>,
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
pub(super) struct Candidate {
    pub(super) branch: String,
    pub(super) commit: gix::ObjectId,
    pub(super) signer: Option<Signer>,
    pub(super) switched_from: Option<String>,
    pub(super) tree: Arc<dyn Tree>,
    /// A subscription cycle was found; the run stays on its branch and fails with this.
    pub(super) cycle: Option<String>,
    /// Read from the image's seed bundle because the server was unreachable: the connectivity
    /// guard cannot blame the commit for what was already unreachable before it applied.
    pub(super) from_seed: bool,
    /// The signed committer (or tagger) time it was verified with: where its waves start.
    pub(super) signed_time: Option<i64>,
}

/// Follows the subscription: the current branch, moved by `subscribed_branch` in the device file.
pub(super) fn follow(
    s: &mut Session,
    repo: &LocalRepo,
    sources: &mut Sources,
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
            Follow::Branch => verified_branch_head(s, repo, sources, trust, &branch, warnings)?,
            Follow::Tags => verified_stage_tag(s, repo, sources, trust, &branch, warnings)?,
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
    sources: &mut Sources,
    trust: &TrustRoots,
    branch: &str,
    warnings: &mut Vec<String>,
) -> Result<Candidate, Refused> {
    let pointed = super::pointer::consult(s, sources.current(), trust, branch, warnings)
        .map_err(Refused::from)?;
    // The pointer names a commit this device verified on the branch and still has: no git.
    let known = pointed.as_ref().map(|p| p.commit).filter(|c| {
        s.run_state.last_verified.get(branch) == Some(&c.to_string()) && repo.raw_commit(c).is_ok()
    });
    if let Some(p) = pointed.as_ref().filter(|p| p.expired && known.is_none()) {
        return Err(format!(
            "the stage pointer of {branch} expired, and its commit {} is not the verified head: \
             not asking git until CI publishes a fresh pointer",
            short(&p.commit)
        )
        .into());
    }
    if let (Some(c), Some(p)) = (known, &pointed) {
        tracing::info!(commit = %short(&c), unchanged = p.unchanged, "the pointer names the verified head: no git request");
    } else {
        s.notifier.status(&format!("fetching {branch}"));
    }
    let bundled = match (&pointed, known) {
        (Some(p), None) if !p.bundles.is_empty() => {
            super::pointer::from_bundle(sources.current(), repo, branch, p, warnings)
        }
        _ => None,
    };
    let fetched = match known.or(bundled) {
        Some(c) => Ok(c),
        None => sources
            .fetch(&format!("fetching {branch}"), |src| {
                repo.fetch_branch(src, branch)
            })
            .map(|f| f.head),
    };
    // History, approvals and the guard come from the source that served the head.
    let src = sources.current();
    let (head, from_seed) = match fetched {
        Ok(head) => (head, false),
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
    if let Some(p) = pointed.filter(|p| p.commit != head) {
        return Err(Refused::at(head)(format!(
            "head {} of {branch} is not {}, the commit the signed pointer names: refusing a \
             head the pointer does not name (the git server is behind or ahead of the pointer; \
             publish the pointer after pushing, with `tend publish pointer`)",
            short(&head),
            short(&p.commit)
        )));
    }
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
    let signed_time = dated.as_ref().map(|(_, t)| *t);
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
        signed_time,
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
    sources: &mut Sources,
    trust: &TrustRoots,
    stage: &str,
    warnings: &mut Vec<String>,
) -> Result<Candidate, Refused> {
    if trust.is_empty() {
        return Err(String::from("source.follow: tags needs signing keys (verify.allowed_signers or verify.openpgp_keyring)").into());
    }
    let prefix = format!("{stage}/");
    s.notifier.status(&format!("fetching tags {prefix}*"));
    let what = format!("fetching tags {prefix}*");
    let tags = sources
        .fetch(&what, |src| repo.fetch_tags(src, &prefix))
        .map_err(|e| Refused::fetch(&what, &e))?;
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
        signed_time: time,
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
pub(super) fn one_shot(
    repo: &LocalRepo,
    sources: &mut Sources,
    reference: &str,
    trust: &TrustRoots,
    verify: bool,
) -> Result<Candidate, Refused> {
    let name = reference
        .trim_start_matches("refs/heads/")
        .trim_start_matches("refs/tags/");
    let (commit, signer) = match sources.fetch(&format!("fetching {name}"), |src| {
        repo.fetch_branch(src, name)
    }) {
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
            let tags = sources
                .fetch(&format!("fetching tags {name}"), |src| {
                    repo.fetch_tags(src, name)
                })
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
        signed_time: None,
    })
}
