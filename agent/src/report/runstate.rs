//! What `tend run` remembers between runs: which branch it follows, the last verified commit per
//! branch (so a new head must descend from it), and the last good commit (applied with no failure),
//! which it falls back to when anything about a new head is wrong.
//!
//! "Verified" and "good" differ on purpose: a verified commit can still fail to apply, and only
//! a commit that converged the device is safe to fall back to.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tend_roles::statefile;

pub const STATE_FILE: &str = "state.json";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoodCommit {
    pub commit: String,
    pub branch: String,
    /// Unix seconds when it first converged: a later clean run of the same commit does not
    /// rewrite state.json for it (its time is on /run, see `lastrun`).
    pub applied_at: u64,
    /// The key it was trusted under; a fallback to it reports this signer, not the refused head's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<crate::report::Signer>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunState {
    /// The configured branch when `current_branch` was chosen: a new configured branch resets
    /// the subscription to it.
    #[serde(default)]
    pub configured_branch: Option<String>,
    /// The branch followed now (the configured one, or where a device file moved the device).
    #[serde(default)]
    pub current_branch: Option<String>,
    #[serde(default)]
    pub last_good: Option<GoodCommit>,
    /// Branch → the newest commit whose signature verified on it.
    #[serde(default)]
    pub last_verified: BTreeMap<String, String>,
    /// Strict tag mode: stage → the highest tag number accepted.
    #[serde(default)]
    pub last_tag: BTreeMap<String, u64>,
    /// `refs/heads/<branch>` or `refs/tags/<stage>/*` → the newest committer (or tagger) time
    /// verified there: a new head may not be dated earlier (see `monotonic`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signed_time: BTreeMap<String, i64>,
    /// The highest version of the repo's policy/policy.yaml accepted (with verify.policy_roots):
    /// a lower one is refused as a policy rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<u64>,
    /// The device id learnt from Mender, kept for offline runs.
    #[serde(default)]
    pub mender_device_id: Option<String>,
    /// What Mender was last told, and when.
    #[serde(default)]
    pub inventory: Option<crate::report::mender::SendState>,
    /// Branch → the commit reverted on it, which is not applied again until the branch moves on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reverted: BTreeMap<String, crate::report::Reverted>,
    /// What the last converge without failures applied, to tell an intentional change from a
    /// corrective one (`report::cause`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied: Option<crate::report::cause::LastApplied>,
    /// A reboot owed to a commit, and the last commit the device rebooted for.
    #[serde(default)]
    pub reboot: crate::safety::reboot::State,
    /// With `source.pointer`: the newest accepted pointer, the newest trusted time, and the
    /// validators of the last answer.
    #[serde(
        default,
        skip_serializing_if = "crate::source::pointer::State::is_empty"
    )]
    pub pointer: crate::source::pointer::State,
}

impl RunState {
    /// A missing file is a first run; an unreadable one is reported and treated as a first run
    /// for subscription, but keeps nothing that could let an old commit through (empty state
    /// means "no last verified commit", which only relaxes ancestry, never signatures).
    pub fn load(path: &Path) -> Result<Self, String> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Scrubbed like the report: it keeps what Mender was told (`tend_error`) and revert causes.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let json = tend_roles::redact::scrub_json(&json) + "\n";
        statefile::write_bytes(path, json.as_bytes(), 0o600).map(drop)
    }

    /// The branch to follow now, given the configured one.
    pub fn branch(&mut self, configured: &str) -> String {
        if self.configured_branch.as_deref() != Some(configured) {
            self.configured_branch = Some(configured.to_string());
            self.current_branch = Some(configured.to_string());
        }
        self.current_branch
            .clone()
            .unwrap_or_else(|| configured.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_configured_branch_resets_the_subscription() {
        let mut s = RunState::default();
        assert_eq!(s.branch("canary"), "canary");
        s.current_branch = Some("production".into());
        assert_eq!(s.branch("canary"), "production", "a device file moved it");
        assert_eq!(s.branch("main"), "main", "the admin changed the config");
    }

    #[test]
    fn state_round_trips_and_missing_is_a_first_run() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(STATE_FILE);
        assert!(RunState::load(&p).unwrap().last_good.is_none());
        let mut s = RunState {
            last_good: Some(GoodCommit {
                commit: "abc".into(),
                branch: "main".into(),
                applied_at: 1,
                signer: None,
            }),
            ..Default::default()
        };
        s.last_verified.insert("main".into(), "abc".into());
        s.save(&p).unwrap();
        let back = RunState::load(&p).unwrap();
        assert_eq!(back.last_good, s.last_good);
        assert_eq!(back.last_verified["main"], "abc");
    }
}
