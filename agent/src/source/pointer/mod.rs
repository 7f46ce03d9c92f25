//! The signed, expiring stage pointer: a small document the fleet's CI publishes per stage
//! (`tend publish pointer`), naming the commit the stage's devices should run, with a sequence
//! number and an expiry, signed by a key the device already pins.
//!
//! Why: a git server (or anyone between it and the device) can hold a device back by serving an
//! old but validly signed head: "nothing new" and "held back" look the same (a freeze attack).
//! A pointer that expires makes "held back" visible, and a growing sequence refuses a replayed
//! one. It also lets a device learn "nothing new" from one small conditional GET that a CDN can
//! answer with `304`, so the git server sees only devices that have something to fetch.
//!
//! The file, `<stage>.pointer`, is the JSON document followed by its detached armored signature:
//!
//! ```text
//! {"stage":"production","commit":"<40 hex>","sequence":1765100000,"issued":"2026-12-07T11:00:00Z","expires":"2026-12-08T11:00:00Z"}
//! -----BEGIN SSH SIGNATURE-----
//! …
//! -----END SSH SIGNATURE-----
//! ```
//!
//! The signed payload is every byte before the line that opens the armor (`-----BEGIN `), its
//! final newline included: exactly the file `ssh-keygen -Y sign -n git` signed. The verifiers are
//! the commits' own (`verify::verify_detached`): SSH in the `git` namespace against
//! `verify.allowed_signers`, the key's validity window judged at `issued`, or OpenPGP against
//! `verify.openpgp_keyring`. A pointer's payload opens with `{`, a commit's with `tree `, so a
//! signature over one can never pass as a signature over the other.

pub mod bundles;
mod clock;
mod poll;
pub mod publish;
pub mod publish_bundles;

#[cfg(test)]
mod tests;

pub use bundles::Bundle;
pub use clock::{synchronized, TrustedClock, TIMESYNC_SYNCHRONIZED};
pub use poll::{poll, Polled};

use serde::{Deserialize, Serialize};

use crate::source::verify::{stamp, verify_detached, Signer, TrustRoots, VerifyError};

/// A pointer is a few hundred bytes; anything larger is not one.
pub const MAX_POINTER_BYTES: u64 = 64 * 1024;
const ARMOR_BEGIN: &[u8] = b"-----BEGIN ";

/// The document, as CI signs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// The branch the pointer is for.
    pub stage: String,
    /// The full hex id of the commit the stage runs.
    pub commit: String,
    /// Grows with every pointer CI publishes for the stage.
    pub sequence: u64,
    /// RFC 3339.
    pub issued: String,
    /// RFC 3339; after it, the pointer no longer says anything about the present.
    pub expires: String,
    /// The bundles beside the pointer that bring the commit's objects (`bundles`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bundles: Vec<Bundle>,
}

/// A pointer that verified and passed every rule, in the form the run state keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub stage: String,
    pub commit: String,
    pub sequence: u64,
    /// Unix seconds.
    pub issued: i64,
    /// Unix seconds.
    pub expires: i64,
    /// The pointer's bundle list, kept so a run after a `304` can still use it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bundles: Vec<Bundle>,
}

/// What the device keeps between runs about the pointer (inside the run state, written
/// atomically with it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The newest pointer accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Accepted>,
    /// The newest trusted time seen, Unix seconds: it never moves back (see `clock`).
    #[serde(default)]
    pub trusted_time: i64,
    /// The URL the validators below belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The `ETag` and `Last-Modified` of the response that carried `accepted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

impl State {
    /// Nothing kept: a device without `source.pointer` writes no `pointer` key.
    pub fn is_empty(&self) -> bool {
        *self == State::default()
    }
}

/// Why a pointer was refused. Each message names the pointer's URL and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum PointerError {
    #[error("pointer {url} is malformed: {why}; publish it with `tend publish pointer`")]
    Malformed { url: String, why: String },
    #[error("pointer {url} refused: {source}")]
    Signature {
        url: String,
        #[source]
        source: VerifyError,
    },
    #[error(
        "pointer {url} is for stage `{got}`, not `{want}`: refusing another stage's pointer; \
         point source.pointer at the {want} pointer"
    )]
    WrongStage {
        url: String,
        got: String,
        want: String,
    },
    #[error(
        "pointer {url} has sequence {got}, below {last}, the last one this device accepted: \
         refusing a replayed pointer; publish a new one with a sequence of at least {last}"
    )]
    Replayed { url: String, got: u64, last: u64 },
    #[error(
        "pointer {url} has sequence {sequence} like the one accepted before, but names commit \
         {got} instead of {want}: two signed pointers with one sequence; publish a new one with \
         a higher sequence"
    )]
    Equivocal {
        url: String,
        sequence: u64,
        got: String,
        want: String,
    },
    #[error(
        "pointer {url} expired at {expires}, and the trusted time is {now}: the stage's pointer \
         is not being renewed, or this device is being held back; publish a fresh pointer"
    )]
    Expired {
        url: String,
        expires: String,
        now: String,
    },
    #[error("fetching pointer {url} failed: {why}")]
    Fetch {
        url: String,
        why: String,
        /// Unreachable or a server error (5xx, 429): `source.pointer_mirrors` are worth asking.
        unavailable: bool,
    },
}

impl PointerError {
    /// The pointer's server could not be reached or failed as a server: the next of
    /// `source.pointer_mirrors` is asked. A pointer that was served but fails a check is not.
    pub fn falls_through(&self) -> bool {
        matches!(
            self,
            PointerError::Fetch {
                unavailable: true,
                ..
            }
        )
    }
}

/// Cuts a pointer file into the signed payload and its armored signature.
pub fn split(bytes: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let mut at = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(ARMOR_BEGIN) {
            if at == 0 {
                return Err("no document before the signature".into());
            }
            return Ok((&bytes[..at], &bytes[at..]));
        }
        at += line.len();
    }
    Err("no signature block (`-----BEGIN SSH SIGNATURE-----` or `-----BEGIN PGP SIGNATURE-----`) after the document".into())
}

/// Parses the payload: a JSON document with exactly the five fields, and the bundle list.
pub fn parse(payload: &[u8]) -> Result<(Document, i64, i64), String> {
    let doc: Document =
        serde_json::from_slice(payload).map_err(|e| format!("not a pointer document: {e}"))?;
    if doc.commit.len() != 40 || !doc.commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "commit `{}` is not a full 40-digit hex id",
            crate::net::quote::bounded(doc.commit.as_bytes(), 64)
        ));
    }
    let time = |name: &str, v: &str| {
        v.parse::<jiff::Timestamp>()
            .map(|t| t.as_second())
            .map_err(|e| {
                format!(
                    "{name} `{}` is not an RFC 3339 time ({e})",
                    crate::net::quote::bounded(v.as_bytes(), 64)
                )
            })
    };
    bundles::check_list(&doc.bundles)?;
    let issued = time("issued", &doc.issued)?;
    let expires = time("expires", &doc.expires)?;
    if expires <= issued {
        return Err(format!(
            "expires ({}) is not after issued ({})",
            doc.expires, doc.issued
        ));
    }
    Ok((doc, issued, expires))
}

/// Checks a pointer file fetched from `url` for `stage`: its signature by a pinned key, its
/// stage, its sequence against the last accepted one, its expiry against the trusted time `now`.
pub fn accept(
    url: &str,
    bytes: &[u8],
    stage: &str,
    trust: &TrustRoots,
    state: &State,
    now: i64,
) -> Result<(Accepted, Signer), PointerError> {
    let malformed = |why: String| PointerError::Malformed {
        url: url.to_string(),
        why,
    };
    let (payload, armor) = split(bytes).map_err(malformed)?;
    let (doc, issued, expires) = parse(payload).map_err(malformed)?;
    let signer = verify_detached("pointer", payload, armor, issued, trust).map_err(|source| {
        PointerError::Signature {
            url: url.to_string(),
            source,
        }
    })?;
    if doc.stage != stage {
        return Err(PointerError::WrongStage {
            url: url.to_string(),
            got: crate::net::quote::bounded(doc.stage.as_bytes(), 64),
            want: stage.to_string(),
        });
    }
    let commit = doc.commit.to_ascii_lowercase();
    if let Some(last) = state.accepted.as_ref().filter(|a| a.stage == stage) {
        if doc.sequence < last.sequence {
            return Err(PointerError::Replayed {
                url: url.to_string(),
                got: doc.sequence,
                last: last.sequence,
            });
        }
        if doc.sequence == last.sequence && commit != last.commit {
            return Err(PointerError::Equivocal {
                url: url.to_string(),
                sequence: doc.sequence,
                got: commit,
                want: last.commit.clone(),
            });
        }
    }
    let accepted = Accepted {
        stage: doc.stage,
        commit,
        sequence: doc.sequence,
        issued,
        expires,
        bundles: doc.bundles,
    };
    check_expiry(url, &accepted, now)?;
    Ok((accepted, signer))
}

/// Refuses a pointer whose `expires` is before the trusted time `now`.
pub fn check_expiry(url: &str, pointer: &Accepted, now: i64) -> Result<(), PointerError> {
    if pointer.expires < now {
        return Err(PointerError::Expired {
            url: url.to_string(),
            expires: stamp(pointer.expires),
            now: stamp(now),
        });
    }
    Ok(())
}

/// Whether the newest valid pointer is stale at the trusted time `now`: expired, or issued
/// longer than `max_staleness` seconds ago (when one is configured).
pub fn is_stale(pointer: &Accepted, now: i64, max_staleness: Option<u64>) -> bool {
    pointer.expires < now
        || max_staleness.is_some_and(|max| now.saturating_sub(pointer.issued) > max as i64)
}
