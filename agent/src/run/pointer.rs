//! The stage pointer in a run (`source.pointer`): asked before git, so an unchanged pointer is
//! one conditional GET and no git traffic, and git's head is taken only when it is exactly the
//! commit a valid pointer names. The pointer is for the configured branch (its stage); a branch
//! a device file moves the device to is followed through git alone.

use crate::converge::apply::Session;
use crate::report::PointerInfo;
use crate::source::fetch::SourceConfig;
use crate::source::pointer::{self, Polled, TrustedClock};
use crate::source::verify::TrustRoots;

/// What the pointer said this run.
pub(super) struct Pointed {
    /// The commit the newest valid pointer names.
    pub(super) commit: gix::ObjectId,
    /// The server answered 304: the pointer is the one accepted before.
    pub(super) unchanged: bool,
    /// That kept pointer has expired: it vouches for nothing new, so git is not asked.
    pub(super) expired: bool,
    /// The URL that served the pointer: its bundles are beside it.
    pub(super) url: String,
    /// The pointer's signed bundle list.
    pub(super) bundles: Vec<pointer::Bundle>,
}

/// Polls and checks the pointer for `branch`; None when no pointer applies to it. An error is
/// why the pointer was refused (the run then refuses the head, as for a bad commit).
pub(super) fn consult(
    s: &mut Session,
    src: &SourceConfig,
    trust: &TrustRoots,
    branch: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<Pointed>, String> {
    let Some(first) = s.config.source.pointer.clone() else {
        return Ok(None);
    };
    if branch != s.config.source.branch {
        return Ok(None);
    }
    if trust.is_empty() || trust.policy().is_some() {
        return Err(
            "source.pointer needs verify.allowed_signers or verify.openpgp_keyring, the \
                    keys that sign the pointer; set one, or remove source.pointer"
                .into(),
        );
    }
    s.notifier
        .status(&format!("polling the pointer of {branch}"));
    let client =
        crate::source::fetch::http_client(src).map_err(|e| format!("pointer {first}: {e}"))?;
    let mut state = s.run_state.pointer.clone();
    let urls: Vec<String> = std::iter::once(first)
        .chain(s.config.source.pointer_mirrors.iter().cloned())
        .collect();
    let (url, polled) = poll_in_order(&client, &urls, &state, warnings)?;
    let date = match &polled {
        Polled::Unchanged { date } | Polled::Body { date, .. } => date.as_deref(),
    };
    let now = TrustedClock::read(&s.root, state.trusted_time, date).now();
    state.trusted_time = now;
    if !s.check {
        // The time seen is kept even when the pointer is refused.
        s.run_state.pointer.trusted_time = now;
    }
    let (accepted, unchanged, expired) = match polled {
        Polled::Unchanged { .. } => {
            let accepted = state
                .accepted
                .clone()
                .ok_or_else(|| format!("pointer {url}: 304 without a pointer kept"))?;
            let expired = pointer::check_expiry(&url, &accepted, now).is_err();
            (accepted, true, expired)
        }
        Polled::Body {
            bytes,
            etag,
            last_modified,
            ..
        } => {
            let (accepted, signer) = pointer::accept(&url, &bytes, branch, trust, &state, now)
                .map_err(|e| e.to_string())?;
            tracing::info!(
                sequence = accepted.sequence,
                commit = %accepted.commit,
                signer = %signer.principal,
                "pointer accepted"
            );
            state.accepted = Some(accepted.clone());
            state.url = Some(url.clone());
            state.etag = etag;
            state.last_modified = last_modified;
            (accepted, false, false)
        }
    };
    // The signed issue time is a witness too: the device has seen a pointer made then.
    state.trusted_time = state.trusted_time.max(accepted.issued);
    if !s.check {
        s.run_state.pointer = state;
    }
    let commit = gix::ObjectId::from_hex(accepted.commit.as_bytes())
        .map_err(|e| format!("pointer {url}: {e}"))?;
    Ok(Some(Pointed {
        commit,
        unchanged,
        expired,
        url,
        bundles: accepted.bundles,
    }))
}

/// Brings the pointer's commit from its bundles (`source::pointer::bundles`): the smallest that
/// connects to what `repo` has, else the full one. None when no bundle fits or the one chosen
/// was refused (a warning in the report says why); git then serves the run.
pub(super) fn from_bundle(
    src: &SourceConfig,
    repo: &crate::source::fetch::LocalRepo,
    branch: &str,
    p: &Pointed,
    warnings: &mut Vec<String>,
) -> Option<gix::ObjectId> {
    let has = |id: &gix::ObjectId| repo.raw_commit(id).is_ok();
    let chosen = pointer::bundles::pick(&p.bundles, src.max_fetch_bytes, has)?;
    let client = match crate::source::fetch::http_client(src) {
        Ok(c) => c,
        Err(e) => {
            warnings.push(format!("bundle {}: {e}; fetching with git", chosen.file));
            return None;
        }
    };
    let part = repo.path().join("tend-bundle.part");
    match pointer::bundles::fetch_and_import(&client, &p.url, chosen, &part, repo, branch, p.commit)
    {
        Ok(()) => {
            tracing::info!(
                bundle = %chosen.file,
                bytes = chosen.size,
                incremental = chosen.prerequisite.is_some(),
                "objects from the pointer's bundle: no git request"
            );
            Some(p.commit)
        }
        Err(why) => {
            let line = format!("{why}; fetching with git");
            tracing::warn!("{line}");
            warnings.push(line);
            None
        }
    }
}

/// Polls each URL in order until one answers; a URL that cannot be reached or fails as a
/// server is a warning and hands over to the next. A served pointer is judged by the caller,
/// whichever URL served it, and a refused one is not retried elsewhere (as for git's sources).
fn poll_in_order(
    client: &crate::net::Client,
    urls: &[String],
    state: &pointer::State,
    warnings: &mut Vec<String>,
) -> Result<(String, Polled), String> {
    let mut urls = urls.iter().peekable();
    while let Some(url) = urls.next() {
        match pointer::poll(client, url, state) {
            Ok(polled) => return Ok((url.clone(), polled)),
            Err(e) if e.falls_through() && urls.peek().is_some() => {
                let line = format!("{e}; trying {}", urls.peek().map_or("", |u| u.as_str()));
                tracing::warn!("{line}");
                warnings.push(line);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("no pointer URL is configured".into())
}

/// The pointer for the report: the newest valid one and whether it is stale at the trusted time
/// (the time kept, or the synchronized system clock if later). None without `source.pointer`, and
/// in strict tag mode, which does not use it.
pub(super) fn info(s: &Session) -> Option<PointerInfo> {
    s.config.source.pointer.as_ref()?;
    if s.config.source.follow != crate::device::config::Follow::Branch {
        return None;
    }
    let state = &s.run_state.pointer;
    let now = TrustedClock::read(&s.root, state.trusted_time, None).now();
    let max = s.config.source.max_staleness.map(|d| d.as_secs());
    let stamp = |t: i64| crate::clock::rfc3339(t.max(0) as u64);
    Some(match &state.accepted {
        Some(a) => PointerInfo {
            sequence: Some(a.sequence),
            commit: Some(a.commit.clone()),
            issued: Some(stamp(a.issued)),
            expires: Some(stamp(a.expires)),
            trusted_time: stamp(now),
            stale: pointer::is_stale(a, now, max),
        },
        None => PointerInfo {
            trusted_time: stamp(now),
            stale: true,
            ..Default::default()
        },
    })
}
