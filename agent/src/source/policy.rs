//! The in-repo policy, applied to a branch head: reads policy/policy.yaml and its root
//! signatures from the head's own tree and the head's `approve/<commit-id>/*` tags from the
//! server, and hands them to `verify::Policy` to count. The policy may come from the unverified
//! head because it is self-authenticating: only the device's pinned roots can make it count.

use crate::source::fetch::{LocalRepo, SourceConfig};
use crate::source::tree::{EntryKind, Tree};
use crate::source::verify::{self, PolicyRoots, POLICY_FILE};

/// Where the policy and its signatures live in the repo.
const DIR: &str = "policy";

/// A head the policy accepts: who is reported as its signer, and the policy version that
/// accepted it (the device refuses lower versions from then on).
#[derive(Debug)]
pub struct Accepted {
    pub signer: verify::Signer,
    pub version: u64,
    pub approvals: usize,
}

/// Checks `head` of `stage` against the repo's policy. `last_version` is the version accepted
/// before, if any.
pub fn check_head(
    repo: &LocalRepo,
    src: &SourceConfig,
    roots: &PolicyRoots,
    last_version: Option<u64>,
    stage: &str,
    head: &gix::ObjectId,
) -> Result<Accepted, String> {
    let hex = head.to_string();
    let tree = repo.tree(head).map_err(|e| e.to_string())?;
    let yaml = tree
        .read(POLICY_FILE)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "commit {hex} has no {POLICY_FILE}; this device has verify.policy_roots set and \
             applies only heads approved under a root-signed policy"
            )
        })?;
    let mut sigs = Vec::new();
    for (name, kind) in tree.list(DIR).map_err(|e| e.to_string())? {
        if kind == EntryKind::File && name.starts_with("policy.yaml.") && name.ends_with(".sig") {
            let path = format!("{DIR}/{name}");
            if let Some(bytes) = tree.read(&path).map_err(|e| e.to_string())? {
                sigs.push((path, bytes));
            }
        }
    }
    let now = jiff::Timestamp::now().as_second();
    let policy = roots.verify(&yaml, &sigs, now).map_err(|e| e.to_string())?;
    if let Some(last) = last_version.filter(|&last| policy.version < last) {
        return Err(format!(
            "commit {hex} carries {POLICY_FILE} version {}, older than version {last} this \
             device already accepted: refusing a policy rollback; publish the policy with a \
             version of at least {last}",
            policy.version
        ));
    }
    let prefix = format!("approve/{hex}/");
    let tags = repo
        .fetch_tags(src, &prefix)
        .map_err(|e| format!("fetching approvals {prefix}*: {e}"))?;
    let raw_tags: Vec<(String, Vec<u8>)> = tags
        .iter()
        .filter_map(|t| repo.raw_tag(&t.tag).ok().map(|raw| (t.name.clone(), raw)))
        .collect();
    let raw = repo.raw_commit(head).map_err(|e| e.to_string())?;
    let ok = policy
        .approve(stage, &hex, &raw, &raw_tags, now)
        .map_err(|e| e.to_string())?;
    Ok(Accepted {
        signer: ok.signer,
        version: policy.version,
        approvals: ok.fingerprints.len(),
    })
}
