//! The stage pointer in a run (`source.pointer`): asked before git, so an unchanged pointer is
//! one conditional GET and no git traffic, and git's head is taken only when it is exactly the
//! commit a valid pointer names. The pointer is for the configured branch (its stage); a branch
//! a device file moves the device to is followed through git alone.

use crate::converge::apply::Session;
use crate::source::fetch::SourceConfig;
use crate::source::pointer::{self, Polled, TrustedClock};
use crate::source::verify::TrustRoots;

use super::candidate::Refused;

/// What the pointer said this run.
pub(super) struct Pointed {
    /// The commit the newest valid pointer names.
    pub(super) commit: gix::ObjectId,
    /// The server answered 304: the pointer is the one accepted before.
    pub(super) unchanged: bool,
}

/// Polls and checks the pointer for `branch`; None when no pointer applies to it.
pub(super) fn consult(
    s: &mut Session,
    src: &SourceConfig,
    trust: &TrustRoots,
    branch: &str,
) -> Result<Option<Pointed>, Refused> {
    let Some(url) = s.config.source.pointer.clone() else {
        return Ok(None);
    };
    if branch != s.config.source.branch {
        return Ok(None);
    }
    if trust.is_empty() || trust.policy().is_some() {
        return Err(String::from(
            "source.pointer needs verify.allowed_signers or verify.openpgp_keyring, the keys \
             that sign the pointer; set one, or remove source.pointer",
        )
        .into());
    }
    s.notifier
        .status(&format!("polling the pointer of {branch}"));
    let client =
        crate::source::fetch::http_client(src).map_err(|e| format!("pointer {url}: {e}"))?;
    let mut state = s.run_state.pointer.clone();
    let polled = pointer::poll(&client, &url, &state).map_err(|e| e.to_string())?;
    let (accepted, unchanged) = match polled {
        Polled::Unchanged { date } => {
            let clock = TrustedClock::read(&s.root, state.trusted_time, date.as_deref());
            let accepted = state
                .accepted
                .clone()
                .ok_or_else(|| format!("pointer {url}: 304 without a pointer kept"))?;
            state.trusted_time = clock.now();
            pointer::check_expiry(&url, &accepted, clock.now()).map_err(|e| e.to_string())?;
            (accepted, true)
        }
        Polled::Body {
            bytes,
            etag,
            last_modified,
            date,
        } => {
            let clock = TrustedClock::read(&s.root, state.trusted_time, date.as_deref());
            state.trusted_time = clock.now();
            let (accepted, signer) =
                pointer::accept(&url, &bytes, branch, trust, &state, clock.now())
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
            (accepted, false)
        }
    };
    // The signed issue time is a witness too: the device has seen a pointer made then.
    state.trusted_time = state.trusted_time.max(accepted.issued);
    if !s.check {
        s.run_state.pointer = state;
    }
    let commit = gix::ObjectId::from_hex(accepted.commit.as_bytes())
        .map_err(|e| format!("pointer {url}: {e}"))?;
    Ok(Some(Pointed { commit, unchanged }))
}
