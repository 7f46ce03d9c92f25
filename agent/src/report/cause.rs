//! Why a resource changed: because a new commit asked for it (intentional), or because the
//! device had drifted from a desired state it already had (corrective: a managed file edited by
//! hand, a package removed). A fleet view of corrective changes shows the devices where something
//! fights the config.
//!
//! The rule needs what the last clean converge applied: its commit and a fingerprint of every
//! resource's desired state ([`LastApplied`], kept in state.json). A change is intentional when
//! the commit differs from that one and the resource's fingerprint is new or differs; it is
//! corrective when the commit, or the resource's desired state, is the same. A device with no
//! record (its first run) changes intentionally. `apply --path` has no commit: its fingerprints
//! alone decide.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tend_roles::{Desired, Outcome, RunSummary};

pub use tend_roles::engine::Cause;

use crate::fleet::fingerprints::{Fingerprint, Fingerprints};

/// What the last converge without failures applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastApplied {
    /// The commit; none for `apply --path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// "kind id" → the fingerprint of that resource's desired state.
    #[serde(default)]
    pub fingerprints: Fingerprints,
}

impl LastApplied {
    /// The record of converging `desired` (with its fingerprints, in item order) from `commit`.
    pub fn of(commit: Option<&str>, desired: &Desired, fingerprints: &[Fingerprint]) -> Self {
        let items = desired.roles.iter().flat_map(|r| &r.items);
        LastApplied {
            commit: commit.map(str::to_string),
            fingerprints: Fingerprints::collect(
                items
                    .zip(fingerprints)
                    .map(|(i, f)| (key(i.resource.kind(), &i.resource.id()), *f)),
            ),
        }
    }
}

fn key(kind: &str, id: &str) -> String {
    format!("{kind} {id}")
}

/// Decides causes against the last record, for a run that applies `commit`.
pub struct Classifier<'a> {
    pub last: Option<&'a LastApplied>,
    pub commit: Option<&'a str>,
}

impl Classifier<'_> {
    fn same_commit(&self) -> bool {
        self.commit.is_some() && self.last.and_then(|l| l.commit.as_deref()) == self.commit
    }

    /// The cause of a change to the resource `kind id`, whose desired state has `fingerprint`
    /// (none for what has none: a pruned leftover).
    pub fn cause(&self, kind: &str, id: &str, fingerprint: Option<Fingerprint>) -> Cause {
        let Some(last) = self.last else {
            return Cause::Intentional;
        };
        if self.same_commit() {
            return Cause::Corrective;
        }
        match fingerprint {
            Some(f) if last.fingerprints.get(&key(kind, id)) == Some(f) => Cause::Corrective,
            _ => Cause::Intentional,
        }
    }
}

/// The cause of every changed entry of `summary.resources` (None for the others), which lists
/// `desired`'s items first, in order, then the handlers that ran, then what pruning removed.
/// A handler's run is intentional when an intentional change notified it in this run.
pub fn classify(
    c: &Classifier,
    desired: &Desired,
    fingerprints: &[Fingerprint],
    summary: &RunSummary,
) -> Vec<Option<Cause>> {
    let items: Vec<_> = desired.roles.iter().flat_map(|r| &r.items).collect();
    let mut causes = Vec::with_capacity(summary.resources.len());
    let mut intended: BTreeSet<String> = BTreeSet::new();
    for (n, r) in summary.resources.iter().enumerate() {
        if r.outcome != Outcome::Changed {
            causes.push(None);
            continue;
        }
        let cause = match items.get(n) {
            Some(item) if !r.handler => {
                let fingerprint = fingerprints.get(n).copied();
                let cause = c.cause(item.resource.kind(), &item.resource.id(), fingerprint);
                if cause == Cause::Intentional {
                    intended.extend(item.notify.iter().map(|h| format!("handler '{h}'")));
                }
                cause
            }
            _ if r.handler => match &r.origin {
                Some(o) if intended.contains(o) => Cause::Intentional,
                _ => Cause::Corrective,
            },
            _ => c.cause(&r.kind, &r.id, None),
        };
        causes.push(Some(cause));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(commit: Option<&str>, entries: &[(&str, &str)]) -> LastApplied {
        LastApplied {
            commit: commit.map(str::to_string),
            fingerprints: Fingerprints::collect(entries.iter().map(|(k, f)| (k, fp(f)))),
        }
    }

    /// A stand-in fingerprint named by up to 16 bytes of text.
    fn fp(name: &str) -> Fingerprint {
        let mut b = [0; 16];
        b[..name.len()].copy_from_slice(name.as_bytes());
        Fingerprint(b)
    }

    #[test]
    fn a_first_run_is_intentional() {
        let c = Classifier {
            last: None,
            commit: Some("a"),
        };
        assert_eq!(
            c.cause("file", "/etc/x", Some(fp("f1"))),
            Cause::Intentional
        );
    }

    #[test]
    fn the_same_commit_again_only_corrects_drift() {
        let last = record(Some("a"), &[("file /etc/x", "f1")]);
        let c = Classifier {
            last: Some(&last),
            commit: Some("a"),
        };
        assert_eq!(c.cause("file", "/etc/x", Some(fp("f1"))), Cause::Corrective);
        // Device-local vars or facts changed under the same commit: the commit asked nothing new.
        assert_eq!(c.cause("file", "/etc/x", Some(fp("f2"))), Cause::Corrective);
        assert_eq!(
            c.cause("file", "/etc/new", Some(fp("f3"))),
            Cause::Corrective
        );
    }

    #[test]
    fn a_new_commit_is_intentional_only_for_what_it_changed() {
        let last = record(Some("a"), &[("file /etc/x", "f1"), ("file /etc/y", "g1")]);
        let c = Classifier {
            last: Some(&last),
            commit: Some("b"),
        };
        assert_eq!(
            c.cause("file", "/etc/x", Some(fp("f2"))),
            Cause::Intentional
        );
        assert_eq!(c.cause("file", "/etc/y", Some(fp("g1"))), Cause::Corrective);
        assert_eq!(
            c.cause("file", "/etc/new", Some(fp("n1"))),
            Cause::Intentional
        );
        assert_eq!(
            c.cause("package", "/etc/x", Some(fp("f1"))),
            Cause::Intentional,
            "the key is kind and id"
        );
        assert_eq!(c.cause("file", "/old", None), Cause::Intentional, "pruned");
    }

    #[test]
    fn without_a_commit_the_fingerprint_decides() {
        let last = record(None, &[("file /etc/x", "f1")]);
        let c = Classifier {
            last: Some(&last),
            commit: None,
        };
        assert_eq!(c.cause("file", "/etc/x", Some(fp("f1"))), Cause::Corrective);
        assert_eq!(
            c.cause("file", "/etc/x", Some(fp("f2"))),
            Cause::Intentional
        );
    }

    fn file(path: &str, notify: &[&str]) -> tend_roles::Item {
        let spec = serde_json::json!({"path": path, "content": "x"});
        tend_roles::Item {
            resource: (tend_roles::find_type("file").unwrap().build)(spec, &tend_roles::NoSources)
                .unwrap(),
            notify: notify.iter().map(|n| n.to_string()).collect(),
            origin: "roles/r/role.yaml:1".into(),
            reboot: false,
            enforce: true,
        }
    }

    fn report(id: &str, outcome: Outcome, handler: Option<&str>) -> tend_roles::ResourceReport {
        tend_roles::ResourceReport {
            role: "r".into(),
            kind: "file".into(),
            id: id.into(),
            outcome,
            summary: None,
            diff: None,
            error: None,
            origin: handler.map(|h| format!("handler '{h}'")),
            handler: handler.is_some(),
            cause: None,
        }
    }

    /// Reports list the items in order, then the handlers that ran, then what pruning removed: a
    /// handler takes the cause of the changes that notified it, a pruned leftover the commit's.
    #[test]
    fn handlers_follow_what_notified_them_and_pruning_follows_the_commit() {
        let desired = Desired {
            roles: vec![tend_roles::RolePlan {
                name: "r".into(),
                depends: Vec::new(),
                items: vec![
                    file("/new", &["fresh"]),
                    file("/same", &["repair"]),
                    file("/quiet", &[]),
                ],
            }],
            handlers: Vec::new(),
        };
        let fingerprints = ["n2", "s1", "q1"].map(fp);
        let last = record(Some("a"), &[("file /new", "n1"), ("file /same", "s1")]);
        let summary = RunSummary {
            resources: vec![
                report("/new", Outcome::Changed, None),
                report("/same", Outcome::Changed, None),
                report("/quiet", Outcome::Unchanged, None),
                report("/h1", Outcome::Changed, Some("fresh")),
                report("/h2", Outcome::Changed, Some("repair")),
                report("/gone", Outcome::Changed, None),
            ],
            ..Default::default()
        };
        let new_commit = Classifier {
            last: Some(&last),
            commit: Some("b"),
        };
        use Cause::*;
        assert_eq!(
            classify(&new_commit, &desired, &fingerprints, &summary),
            [
                Some(Intentional),
                Some(Corrective),
                None,
                Some(Intentional),
                Some(Corrective),
                Some(Intentional)
            ]
        );
        let same_commit = Classifier {
            last: Some(&last),
            commit: Some("a"),
        };
        let causes = classify(&same_commit, &desired, &fingerprints, &summary);
        assert!(
            causes.iter().flatten().all(|c| *c == Corrective),
            "{causes:?}"
        );
        let applied = LastApplied::of(Some("b"), &desired, &fingerprints);
        assert_eq!(applied.fingerprints.get("file /new"), Some(fp("n2")));
        assert_eq!(applied.fingerprints.len(), 3);
    }

    #[test]
    fn a_record_round_trips_through_json() {
        let last = record(Some("a"), &[("file /etc/x", "f1")]);
        let json = serde_json::to_string(&last).unwrap();
        assert_eq!(serde_json::from_str::<LastApplied>(&json).unwrap(), last);
        let cause = serde_json::to_string(&Cause::Corrective).unwrap();
        assert_eq!(cause, "\"corrective\"");
    }
}
