//! k-of-n approvals per stage, with the signers named in the fleet repo itself.
//!
//! A single pinned signing key is a single point of compromise, and replacing it means
//! re-imaging devices. With `verify.policy_roots`, the device pins only root keys; the repo's
//! `policy/policy.yaml` names each stage's signers and threshold and is signed (detached SSH
//! signatures, namespace `tend-policy`) by at least `verify.policy_threshold` distinct roots. A
//! head is applied only with `threshold` approvals from distinct signer keys of its stage: its
//! own commit signature and signed tags `approve/<commit-id>/<name>` whose signed payload names
//! that commit. Rotating a signer is then a commit that changes the policy and its root
//! signatures; the version may never go down (rollback).
//!
//! Signers are inline allowed_signers lines: a key file elsewhere in the repo would not be
//! covered by the root signatures, which cover policy.yaml's bytes only.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use ssh_key::{HashAlg, PublicKey, SshSig};

use super::allowed_signers::AllowedSigners;
use super::{object, sshsig, SigFormat, Signer, VerifyError};

/// The namespace root keys sign policy.yaml in (`ssh-keygen -Y sign -n tend-policy`).
pub const NAMESPACE: &str = "tend-policy";
/// Where the policy lives in the fleet repo.
pub const FILE: &str = "policy/policy.yaml";

/// The root keys pinned on the device, and how many must sign a policy.
#[derive(Debug, Clone)]
pub struct PolicyRoots {
    pub(crate) signers: AllowedSigners,
    pub(crate) threshold: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: u64,
    stages: BTreeMap<String, StageFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageFile {
    #[serde(default = "one")]
    threshold: usize,
    signers: Vec<String>,
}

fn one() -> usize {
    1
}

/// A policy whose root signatures verified.
#[derive(Debug)]
pub struct Policy {
    pub version: u64,
    stages: BTreeMap<String, StageRule>,
}

#[derive(Debug)]
struct StageRule {
    signers: AllowedSigners,
    threshold: usize,
}

/// A head with enough approvals: the signer reported for it (its own signature when that counts,
/// else the first approval) and the distinct keys that approved it.
#[derive(Debug)]
pub struct Approved {
    pub signer: Signer,
    pub fingerprints: Vec<String>,
}

fn refuse(detail: impl Into<String>) -> VerifyError {
    VerifyError::Policy {
        detail: detail.into(),
    }
}

impl PolicyRoots {
    pub(crate) fn parse(file: &str, text: &str, threshold: u32) -> Result<Self, VerifyError> {
        if threshold == 0 {
            return Err(VerifyError::config(
                file,
                0,
                "verify.policy_threshold is 0; it must be at least 1",
            ));
        }
        Ok(Self {
            signers: AllowedSigners::parse(file, text)?,
            threshold: threshold as usize,
        })
    }

    /// Checks the detached signatures `sigs` (file name, armored bytes) over `yaml`, then parses
    /// it. `now` judges the roots' validity windows (a detached signature carries no date).
    pub fn verify(
        &self,
        yaml: &[u8],
        sigs: &[(String, Vec<u8>)],
        now: i64,
    ) -> Result<Policy, VerifyError> {
        let mut good = BTreeSet::new();
        let mut notes = Vec::new();
        for (name, armor) in sigs {
            match self.root_of(yaml, armor, now) {
                Ok(fp) => {
                    good.insert(fp);
                }
                Err(why) => notes.push(format!("{name}: {why}")),
            }
        }
        if good.len() < self.threshold {
            return Err(refuse(format!(
                "{FILE} is signed by {} of the {} policy root key(s) verify.policy_threshold \
                 requires ({}); sign it with root keys listed in {}: `ssh-keygen -Y sign -n \
                 {NAMESPACE} -f <root key> {FILE}`, saved as {FILE}.<name>.sig",
                good.len(),
                self.threshold,
                if notes.is_empty() {
                    "no signatures found".to_string()
                } else {
                    notes.join("; ")
                },
                self.signers.file
            )));
        }
        let file: PolicyFile = crate::yaml::parse(FILE, yaml).map_err(|e| refuse(e.to_string()))?;
        let mut stages = BTreeMap::new();
        for (stage, s) in file.stages {
            let where_ = format!("{FILE} (stage {stage})");
            let signers = AllowedSigners::parse(&where_, &s.signers.join("\n"))
                .map_err(|e| refuse(e.to_string()))?;
            if s.threshold == 0 || s.threshold > signers.entries.len() {
                return Err(refuse(format!(
                    "{where_}: threshold {} must be between 1 and its {} signer(s)",
                    s.threshold,
                    signers.entries.len()
                )));
            }
            stages.insert(
                stage,
                StageRule {
                    signers,
                    threshold: s.threshold,
                },
            );
        }
        Ok(Policy {
            version: file.version,
            stages,
        })
    }

    /// The fingerprint of the root key that made this good signature, or why it does not count.
    fn root_of(&self, yaml: &[u8], armor: &[u8], now: i64) -> Result<String, String> {
        let sig = SshSig::from_pem(armor).map_err(|e| format!("not an SSH signature ({e})"))?;
        let key = PublicKey::new(sig.public_key().clone(), "");
        let fp = key.fingerprint(HashAlg::Sha256).to_string();
        let entries: Vec<_> = self.signers.entries_for(sig.public_key()).collect();
        if entries.is_empty() {
            return Err(format!("key {fp} is not a policy root"));
        }
        key.verify(sig.namespace(), yaml, &sig).map_err(|e| {
            format!("bad signature by {fp} ({e}): the policy was changed after signing")
        })?;
        if sig.namespace() != NAMESPACE {
            return Err(format!(
                "signed for namespace \"{}\", not \"{NAMESPACE}\"",
                sig.namespace()
            ));
        }
        entries
            .iter()
            .find(|e| e.allows_namespace(NAMESPACE) && e.valid_at(now))
            .map(|_| fp.clone())
            .ok_or_else(|| {
                format!(
                    "root key {fp} is not allowed namespace {NAMESPACE} now (see {})",
                    self.signers.file
                )
            })
    }
}

impl Policy {
    /// Counts the approvals of `commit` (hex id) for `stage`: the raw commit's own signature and
    /// the raw approval tags (name, bytes); distinct signer keys of the stage, at least its
    /// threshold, or the refusal says who approved and what is missing.
    pub fn approve(
        &self,
        stage: &str,
        commit: &str,
        raw_commit: &[u8],
        tags: &[(String, Vec<u8>)],
        now: i64,
    ) -> Result<Approved, VerifyError> {
        let rule = self.stages.get(stage).ok_or_else(|| {
            refuse(format!(
                "{FILE} version {} has no stage `{stage}`: add it with its signers and threshold",
                self.version
            ))
        })?;
        let mut keys: BTreeMap<String, Signer> = BTreeMap::new();
        let mut first = None;
        let mut notes = Vec::new();
        match rule.count(object::split_commit(raw_commit)?, now) {
            Ok(s) => {
                first = Some(s.fingerprint.clone());
                keys.insert(s.fingerprint.clone(), s);
            }
            Err(e) => notes.push(format!("the commit's own signature: {e}")),
        }
        for (name, raw) in tags {
            let obj = match object::split_tag(raw) {
                Ok(o) => o,
                Err(e) => {
                    notes.push(format!("tag {name}: {e}"));
                    continue;
                }
            };
            if !names_commit(&obj.payload, commit) {
                notes.push(format!(
                    "tag {name}: its signed object is not commit {commit}"
                ));
                continue;
            }
            match rule.count(obj, now) {
                Ok(s) => {
                    first.get_or_insert(s.fingerprint.clone());
                    keys.entry(s.fingerprint.clone()).or_insert(s);
                }
                Err(e) => notes.push(format!("tag {name}: {e}")),
            }
        }
        if keys.len() < rule.threshold {
            return Err(refuse(format!(
                "commit {commit} has {} of the {} approvals stage `{stage}` needs under {FILE} \
                 version {}{}{}; add approvals by other signers of the stage: \
                 `git tag -s approve/{commit}/<name> {commit}`",
                keys.len(),
                rule.threshold,
                self.version,
                if keys.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (approved by {})",
                        keys.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                },
                if notes.is_empty() {
                    String::new()
                } else {
                    format!("; not counted: {}", notes.join("; "))
                },
            )));
        }
        let fingerprints: Vec<String> = keys.keys().cloned().collect();
        let signer = first
            .and_then(|fp| keys.remove(&fp))
            .expect("at least one approval when the threshold (>= 1) is met");
        Ok(Approved {
            signer,
            fingerprints,
        })
    }
}

impl StageRule {
    /// The signer of one commit or tag, if it is a signer of this stage (SSH only: the policy
    /// lists allowed_signers lines).
    fn count(&self, obj: object::SignedObject, now: i64) -> Result<Signer, VerifyError> {
        match obj.signature()? {
            Some((SigFormat::Ssh, sig)) => sshsig::verify(
                sig,
                &obj.payload,
                obj.time.unwrap_or(now),
                Some(&self.signers),
            ),
            Some((SigFormat::OpenPgp, _)) => Err(refuse(
                "an OpenPGP signature; the policy lists SSH signers only",
            )),
            None => Err(VerifyError::Unsigned {
                object: obj.kind,
                fix: "sign it with a key the policy lists for the stage".into(),
            }),
        }
    }
}

/// Whether a tag's signed payload names `commit` as its commit object.
fn names_commit(payload: &[u8], commit: &str) -> bool {
    let text = String::from_utf8_lossy(payload);
    let mut lines = text.lines();
    lines.next() == Some(&format!("object {commit}")) && lines.next() == Some("type commit")
}
