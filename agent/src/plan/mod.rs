//! `tend plan BASE..HEAD`: what a pull request would change on every device, before it merges.
//!
//! A merge reaches a whole stage within one poll interval, so its reviewer needs the blast radius
//! first: which devices change, and how. The plan renders every device at both commits, offline
//! and from git objects (`render`), reduces each render to digests per resource (`changes`), and
//! prints devices with the same change set as one line, largest group first (`group`, `output`).
//! It sits beside `inspect` (`tend validate`), whose render of a device it reuses, so the plan
//! and the validation can never disagree about what a device gets.

pub mod changes;
pub mod facts;
pub mod group;
pub mod output;
pub mod render;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::diag::Diagnostics;
use changes::{compare, LineCounts};
use facts::FactsSource;
use group::{group, Group, Outcome};
use render::{fleet_errors, render_all, resolve, Commit, Device};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{dir} is not in a git repository: {reason}. Fix: run in the fleet repo's checkout or pass --path DIR")]
    NotARepo { dir: String, reason: String },
    #[error("`{range}` is not a commit range. Fix: give BASE..HEAD, e.g. origin/main..HEAD")]
    Range { range: String },
    #[error("`{rev}` is not a commit of {dir}: {reason}. Fix: give a full commit id or a ref name, and fetch it first (in GitHub Actions: actions/checkout with `fetch-depth: 0`)")]
    Revision {
        rev: String,
        dir: String,
        reason: String,
    },
    #[error("commit {commit}: {reason}")]
    Commit { commit: String, reason: String },
}

pub struct PlanOptions {
    /// The fleet repo's checkout (or any directory inside it).
    pub path: PathBuf,
    /// `BASE..HEAD`.
    pub range: String,
    /// An inventory export: `<device-id>.json` or `.yaml` per device.
    pub facts: Option<PathBuf>,
}

/// The plan of a commit range.
pub struct Plan {
    pub base: String,
    pub head: String,
    pub groups: Vec<Group>,
    /// Problems of HEAD that belong to no device (a device file whose name is not an id).
    pub repo_errors: Diagnostics,
}

impl Plan {
    /// Devices that do not render at HEAD.
    pub fn invalid(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Invalid(_)))
    }

    pub fn count(&self, which: impl Fn(&Outcome) -> bool) -> usize {
        self.groups
            .iter()
            .filter(|g| which(&g.outcome))
            .map(|g| g.devices.len())
            .sum()
    }

    pub fn devices(&self) -> usize {
        self.count(|_| true)
    }
}

pub fn plan(opts: &PlanOptions) -> Result<Plan, PlanError> {
    let (base_rev, head_rev) = opts
        .range
        .split_once("..")
        .filter(|(b, h)| !b.is_empty() && !h.is_empty() && !h.starts_with('.'))
        .ok_or_else(|| PlanError::Range {
            range: opts.range.clone(),
        })?;
    let repo = gix::discover(&opts.path).map_err(|e| PlanError::NotARepo {
        dir: opts.path.display().to_string(),
        reason: e.to_string(),
    })?;
    let dir: &Path = &opts.path;
    let base = Commit::open(&repo, resolve(&repo, dir, base_rev)?)?;
    let head = Commit::open(&repo, resolve(&repo, dir, head_rev)?)?;
    let (base_list, head_list) = (base.list()?, head.list()?);

    // Which commits have each device's file. A commit whose fleet.yaml does not load lists no
    // device: its devices are those of the other commit, each failing with the fleet's error.
    let mut ids: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let listed = |l: &render::Listing, other: &render::Listing| {
        l.ids
            .clone()
            .or_else(|| other.ids.clone())
            .unwrap_or_default()
    };
    for id in listed(&base_list, &head_list) {
        ids.entry(id).or_default().0 = true;
    }
    for id in listed(&head_list, &base_list) {
        ids.entry(id).or_default().1 = true;
    }
    let work: Vec<(String, bool, bool)> = ids
        .into_iter()
        .map(|(id, (b, h))| {
            let b = b && base_list.ids.is_some();
            let h = h && head_list.ids.is_some();
            (id, b, h)
        })
        .collect();
    let facts = FactsSource {
        export: opts.facts.clone(),
    };
    let devices = render_all(&repo, (base.id, head.id), work, &facts)?;

    let base_broken = base_list.ids.is_none();
    let head_broken = head_list.ids.is_none().then(|| fleet_errors(&head_list));
    let mut lines = LineCounts::default();
    let results = devices
        .into_iter()
        .map(|d| {
            let o = outcome(&d, base_broken, head_broken.as_ref(), &mut lines);
            (d.id, o)
        })
        .collect();
    let repo_errors = if head_list.ids.is_some() {
        head_list.errors
    } else {
        Diagnostics::default()
    };
    Ok(Plan {
        base: base.id.to_string(),
        head: head.id.to_string(),
        groups: group(results),
        repo_errors,
    })
}

fn outcome(
    d: &Device,
    base_broken: bool,
    head_broken: Option<&Diagnostics>,
    lines: &mut LineCounts,
) -> Outcome {
    if let Some(errors) = head_broken {
        return Outcome::Invalid(errors.0.clone());
    }
    // At BASE: None when the device file is not there, Some(None) when it does not render.
    let base = match &d.base {
        Some(Ok(s)) => Some(Some(s)),
        Some(Err(_)) => Some(None),
        None if base_broken => Some(None),
        None => None,
    };
    match (base, &d.head) {
        (_, Some(Err(ds))) => Outcome::Invalid(ds.0.clone()),
        (None, Some(Ok(_))) => Outcome::New,
        (Some(None), Some(Ok(_))) => Outcome::Fixed,
        (Some(Some(b)), Some(Ok(h))) => {
            let changes = compare(b, h, lines);
            if changes.is_empty() {
                Outcome::Unchanged
            } else {
                Outcome::Changed(changes)
            }
        }
        (_, None) => Outcome::Removed,
    }
}
