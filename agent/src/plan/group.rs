//! Devices with the same outcome are one line of the plan: a reviewer reads "412 devices: file
//! /etc/nginx/nginx.conf +3 -1" once, not 412 times. Groups are ordered largest first, so the
//! blast radius of a pull request is its first line.

use std::collections::HashMap;

use serde::Serialize;

use crate::diag::Diagnostic;
use crate::plan::changes::{count, Change};

/// What a commit range does to one device.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Renders at both commits; these resources differ.
    Changed(Vec<Change>),
    /// Renders at both commits to the same desired state.
    Unchanged,
    /// Does not render at HEAD: the diagnostics, with file and line.
    Invalid(Vec<Diagnostic>),
    /// Its device file is new at HEAD.
    New,
    /// Its device file is gone at HEAD.
    Removed,
    /// Did not render at BASE and renders at HEAD.
    Fixed,
}

impl Outcome {
    /// The word in the JSON schema.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Changed(_) => "changed",
            Outcome::Unchanged => "unchanged",
            Outcome::Invalid(_) => "invalid",
            Outcome::New => "new",
            Outcome::Removed => "removed",
            Outcome::Fixed => "fixed",
        }
    }

    /// One line per change (or one for the whole outcome), as the text output shows them.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Outcome::Changed(cs) => cs.iter().map(Change::label).collect(),
            Outcome::Unchanged => vec!["no change".into()],
            Outcome::Invalid(ds) => ds.iter().map(|d| format!("invalid ({d})")).collect(),
            Outcome::New => vec!["new".into()],
            Outcome::Removed => vec!["removed".into()],
            Outcome::Fixed => vec!["renders again (did not render at BASE)".into()],
        }
    }

    /// Among groups of one size: changes first, then the rest in a fixed order.
    fn rank(&self) -> u8 {
        match self {
            Outcome::Changed(_) => 0,
            Outcome::Invalid(_) => 1,
            Outcome::Fixed => 2,
            Outcome::New => 3,
            Outcome::Removed => 4,
            Outcome::Unchanged => 5,
        }
    }
}

/// Devices that share one outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Group {
    #[serde(skip)]
    pub outcome: Outcome,
    /// Device ids, sorted.
    pub devices: Vec<String>,
}

impl Group {
    /// `412 devices`, `1 device`.
    pub fn size(&self) -> String {
        count(self.devices.len(), "device")
    }
}

/// Groups devices by identical outcome: largest group first (the devices left unchanged last,
/// whatever their number), then by kind of outcome and by the first line, so the order is the
/// same on every run.
pub fn group(results: Vec<(String, Outcome)>) -> Vec<Group> {
    let mut by: HashMap<Outcome, Vec<String>> = HashMap::new();
    for (id, outcome) in results {
        by.entry(outcome).or_default().push(id);
    }
    let mut groups: Vec<Group> = by
        .into_iter()
        .map(|(outcome, mut devices)| {
            devices.sort();
            Group { outcome, devices }
        })
        .collect();
    groups.sort_by(|a, b| {
        let quiet = |g: &Group| g.outcome == Outcome::Unchanged;
        quiet(a)
            .cmp(&quiet(b))
            .then(b.devices.len().cmp(&a.devices.len()))
            .then(a.outcome.rank().cmp(&b.outcome.rank()))
            .then_with(|| a.outcome.lines().cmp(&b.outcome.lines()))
            .then_with(|| a.devices.cmp(&b.devices))
    });
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::changes::Action;

    fn modified(id: &str, lines: (usize, usize)) -> Change {
        Change {
            kind: "file".into(),
            id: id.into(),
            action: Action::Modified,
            fields: Vec::new(),
            lines: Some(lines),
            binary: false,
        }
    }

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:03}")).collect()
    }

    #[test]
    fn identical_change_sets_are_one_group_and_the_largest_comes_first() {
        let nginx = Outcome::Changed(vec![modified("/etc/nginx/nginx.conf", (3, 1))]);
        let both = Outcome::Changed(vec![
            modified("/etc/nginx/nginx.conf", (3, 1)),
            modified("/etc/motd", (1, 0)),
        ]);
        let bad = Outcome::Invalid(vec![Diagnostic::new("devices/x.yaml", 4, "oops")]);
        let mut results = Vec::new();
        results.extend(ids("a", 412).into_iter().map(|i| (i, nginx.clone())));
        results.extend(ids("b", 3).into_iter().map(|i| (i, both.clone())));
        results.push(("x".into(), bad.clone()));
        results.extend(ids("n", 12).into_iter().map(|i| (i, Outcome::New)));
        results.extend(ids("r", 2).into_iter().map(|i| (i, Outcome::Removed)));
        results.reverse();
        let groups = group(results);
        let shown: Vec<(String, Vec<String>)> = groups
            .iter()
            .map(|g| (g.size(), g.outcome.lines()))
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            shown,
            [
                (
                    "412 devices".into(),
                    s(&["file /etc/nginx/nginx.conf +3 -1"])
                ),
                ("12 devices".into(), s(&["new"])),
                (
                    "3 devices".into(),
                    s(&["file /etc/nginx/nginx.conf +3 -1", "file /etc/motd +1 -0"])
                ),
                ("2 devices".into(), s(&["removed"])),
                ("1 device".into(), s(&["invalid (devices/x.yaml:4: oops)"])),
            ]
        );
        assert_eq!(groups[0].devices.first().map(String::as_str), Some("a000"));
        assert_eq!(groups[0].devices.len(), 412);
    }

    #[test]
    fn groups_of_one_size_are_ordered_the_same_on_every_run() {
        let a = Outcome::Changed(vec![modified("/a", (1, 1))]);
        let b = Outcome::Changed(vec![modified("/b", (1, 1))]);
        let one = group(vec![
            ("d4".into(), Outcome::Unchanged),
            ("d2".into(), b.clone()),
            ("d1".into(), a.clone()),
            ("d3".into(), Outcome::Unchanged),
        ]);
        let two = group(vec![
            ("d3".into(), Outcome::Unchanged),
            ("d4".into(), Outcome::Unchanged),
            ("d1".into(), a),
            ("d2".into(), b),
        ]);
        assert_eq!(one, two);
        assert_eq!(one[0].devices, ["d1"]);
        assert_eq!(
            one[2].outcome,
            Outcome::Unchanged,
            "no change comes last, though largest"
        );
    }
}
