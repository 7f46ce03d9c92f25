//! Pruning: what tend created for a resource that is no longer declared must not linger silently.
//!
//! After every apply, tend records in the state dir what the desired state manages (files,
//! links, apt sources, units it enabled, packages, users; see `Resource::managed`). A recorded
//! thing that the next desired state no longer manages is an orphan. With `prune: true` (the
//! role's, else fleet.yaml's) it is removed through its type's own "absent" form (the `undo` spec
//! recorded with it), planned and applied by the engine like any resource, so check mode, diffs,
//! redaction and the revert backup work the same; without it, the report lists the orphan.
//! A package is purged only when tend found it absent before it first managed it.

use std::path::Path;

use crate::fleet::validate::Settings;
use crate::report::Orphan;
use serde::{Deserialize, Serialize};
use tend_roles::{
    converge_with, find_type, statefile, Desired, DynResource, Host, Item, Managed, NoSources,
    Outcome, ResourceReport, RolePlan,
};

pub const FILE: &str = "managed.json";

/// Whether an orphan is removed: its role's own setting while the device still has the role,
/// else the setting the role had when it last declared it; then fleet.yaml's; default no.
fn prunes(settings: &Settings, entry: &Entry) -> bool {
    let own = match settings.roles.get(&entry.role) {
        Some(flag) => *flag,
        None => entry.role_prune,
    };
    own.or(settings.fleet).unwrap_or(false)
}

/// One managed thing, as recorded: the fields of its [`Managed`], then the agent's own.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "Recorded")]
pub struct Entry {
    pub managed: Managed,
    /// The role that declared it last.
    pub role: String,
    /// That role's own `prune`, for when the device no longer has the role.
    pub role_prune: Option<bool>,
    /// Absent before tend first managed it (decides whether a package is purged).
    pub created: bool,
}

/// An [`Entry`] as `managed.json` holds it, one flat object. Spelled out rather than
/// `#[serde(flatten)]`, which buffers every entry as generic content before reading it.
#[derive(Serialize, Deserialize)]
struct Recorded<K = String, U = tend_roles::Undo> {
    kind: K,
    key: K,
    undo: U,
    #[serde(default)]
    only_if_created: bool,
    role: K,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role_prune: Option<bool>,
    #[serde(default)]
    created: bool,
}

impl From<Recorded> for Entry {
    fn from(r: Recorded) -> Self {
        Entry {
            managed: Managed {
                kind: r.kind,
                key: r.key,
                undo: r.undo,
                only_if_created: r.only_if_created,
            },
            role: r.role,
            role_prune: r.role_prune,
            created: r.created,
        }
    }
}

impl Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Recorded {
            kind: self.managed.kind.as_str(),
            key: self.managed.key.as_str(),
            undo: &self.managed.undo,
            only_if_created: self.managed.only_if_created,
            role: self.role.as_str(),
            role_prune: self.role_prune,
            created: self.created,
        }
        .serialize(serializer)
    }
}

impl Entry {
    fn key_ref(&self) -> (&str, &str) {
        (&self.managed.kind, &self.managed.key)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    entries: Vec<Entry>,
}

/// What one apply manages and what it no longer does. The previous record is not kept: with
/// 10,000 managed files it is as large as the current one, and only a failed run needs it
/// again, which reads it back (the run's lock keeps anyone else from writing it meanwhile).
pub struct Pass {
    current: Vec<Entry>,
    orphans: Vec<Entry>,
}

/// The result of [`Pass::finish`].
#[derive(Default)]
pub struct Pruned {
    /// One report per orphan removed (or that would be, in check mode), or that failed.
    pub resources: Vec<ResourceReport>,
    /// Orphans left in place.
    pub kept: Vec<Orphan>,
}

fn undo(entry: &Entry) -> Result<Box<dyn DynResource>, String> {
    let kind = &entry.managed.kind;
    let t = find_type(kind).ok_or_else(|| format!("this tend has no resource type {kind}"))?;
    (t.build)(entry.managed.undo.spec(), &NoSources).map_err(|e| e.to_string())
}

/// Services are disabled before their unit files go, packages before their sources.
fn order(kind: &str) -> u8 {
    match kind {
        "service" => 0,
        "file" => 1,
        "package" => 2,
        "apt_source" => 3,
        _ => 4,
    }
}

/// Reads the record and compares it with `desired`. Called before the converge, so that "was it
/// there before tend" is answered before tend installs anything. An unreadable record is
/// returned as the error text with an empty pass (nothing is pruned on a guess).
pub fn prepare(
    state_dir: &Path,
    desired: &Desired,
    settings: &Settings,
    host: &Host,
) -> (Pass, Option<String>) {
    let (mut previous, warning) = read_record(state_dir);
    // Read or built by growing, each list could hold room for twice its entries.
    previous.shrink_to_fit();
    let mut current = Vec::with_capacity(desired.resource_count());
    for role in &desired.roles {
        let role_prune = settings.roles.get(&role.name).copied().flatten();
        for item in &role.items {
            current.extend(item.resource.managed().into_iter().map(|managed| Entry {
                managed,
                role: role.name.clone(),
                role_prune,
                created: false,
            }));
        }
    }
    // The first declaration of a thing is the one recorded.
    let by_key = sorted(&current);
    let mut first = vec![true; current.len()];
    for pair in by_key.windows(2) {
        if current[pair[0]].key_ref() == current[pair[1]].key_ref() {
            first[pair[1]] = false;
        }
    }
    let mut at = 0;
    current.retain(|_| {
        at += 1;
        first[at - 1]
    });
    let known = sorted(&previous);
    for entry in &mut current {
        entry.created = match find(&previous, &known, entry.key_ref()) {
            Some(before) => before.created,
            None => entry.managed.only_if_created && absent(entry, host),
        };
    }
    let seen = sorted(&current);
    let mut orphans: Vec<Entry> = previous
        .into_iter()
        .filter(|e| find(&current, &seen, e.key_ref()).is_none())
        .collect();
    // Collected in place, the orphans keep the whole previous list's buffer through the run.
    orphans.shrink_to_fit();
    orphans.sort_by_key(|e| order(&e.managed.kind));
    (Pass { current, orphans }, warning)
}

/// The indices of `entries` in the order of their (kind, key), equal keys in list order: a
/// lookup by key that copies no key.
fn sorted(entries: &[Entry]) -> Vec<usize> {
    let mut by_key: Vec<usize> = (0..entries.len()).collect();
    by_key.sort_by(|a, b| entries[*a].key_ref().cmp(&entries[*b].key_ref()));
    by_key
}

/// The entry with this (kind, key), through its [`sorted`] indices.
fn find<'a>(entries: &'a [Entry], by_key: &[usize], key: (&str, &str)) -> Option<&'a Entry> {
    by_key
        .binary_search_by(|i| entries[*i].key_ref().cmp(&key))
        .ok()
        .map(|at| &entries[by_key[at]])
}

/// The record of what tend managed after the last apply; an unreadable one is empty, with why.
fn read_record(state_dir: &Path) -> (Vec<Entry>, Option<String>) {
    let path = state_dir.join(FILE);
    match std::fs::File::open(&path) {
        Ok(f) => match serde_json::from_reader::<_, Record>(std::io::BufReader::new(f)) {
            Ok(r) => (r.entries, None),
            Err(e) => (Vec::new(), Some(format!("{}: {e}", path.display()))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), None),
        Err(e) => (Vec::new(), Some(format!("{}: {e}", path.display()))),
    }
}

/// Whether the thing is absent now: its undo would change nothing.
fn absent(entry: &Entry, host: &Host) -> bool {
    let Ok(resource) = undo(entry) else {
        return false;
    };
    let absent = resource.plan(host).is_ok_and(|plan| plan.change.is_none());
    absent
}

impl Pass {
    /// After the converge: removes the orphans that are to be pruned (unless the run had
    /// failures: a half-applied commit may be reverted) and records what is managed now.
    /// `keep` is called before each removal, as for any change (the revert backup).
    pub fn finish(
        self,
        state_dir: &Path,
        settings: &Settings,
        host: &Host,
        run_failed: bool,
        keep: tend_roles::engine::BeforeApply,
    ) -> Result<Pruned, String> {
        let mut out = Pruned::default();
        let mut record = Vec::new();
        let keep_orphan = |e: &Entry, reason: &str, out: &mut Pruned| {
            out.kept.push(Orphan {
                kind: e.managed.kind.clone(),
                id: host.redact(&e.managed.key),
                role: e.role.clone(),
                reason: reason.to_string(),
            });
        };
        for orphan in &self.orphans {
            if run_failed {
                keep_orphan(orphan, "the run had failures", &mut out);
                record.push(orphan.clone());
                continue;
            }
            if !prunes(settings, orphan) {
                keep_orphan(orphan, "prune is off", &mut out);
                record.push(orphan.clone());
                continue;
            }
            if orphan.managed.only_if_created && !orphan.created {
                // Not tend's to remove: it is forgotten, and reported once.
                keep_orphan(orphan, "it was there before tend managed it", &mut out);
                continue;
            }
            let report = remove(orphan, host, &mut *keep);
            if report.outcome == Outcome::Failed {
                record.push(orphan.clone());
            }
            out.resources.push(report);
        }
        if run_failed {
            // Keep what was recorded, plus only what this run found absent and may have
            // created: a resource that never got applied must not become tend's to delete.
            let (mut merged, _) = read_record(state_dir);
            let known = sorted(&merged);
            let new: Vec<Entry> = self
                .current
                .into_iter()
                .filter(|e| e.created && find(&merged, &known, e.key_ref()).is_none())
                .collect();
            merged.extend(new);
            record = merged;
        } else {
            let kept = std::mem::replace(&mut record, self.current);
            record.extend(kept);
        }
        if !host.check {
            save(state_dir, record)
                .map_err(|e| format!("{}: {e}", state_dir.join(FILE).display()))?;
        }
        Ok(out)
    }
}

/// Converges the orphan's undo resource through the engine, reported as a prune.
fn remove(orphan: &Entry, host: &Host, keep: tend_roles::engine::BeforeApply) -> ResourceReport {
    let origin = format!("prune: no longer declared (last by role {})", orphan.role);
    let resource = match undo(orphan) {
        Ok(r) => r,
        Err(e) => {
            return ResourceReport {
                role: orphan.role.clone(),
                kind: orphan.managed.kind.clone(),
                id: host.redact(&orphan.managed.key),
                outcome: Outcome::Failed,
                summary: None,
                diff: None,
                error: Some(format!("cannot prune: {e}")),
                origin: Some(origin),
                handler: false,
                cause: None,
            }
        }
    };
    let desired = Desired {
        roles: vec![RolePlan {
            name: orphan.role.clone(),
            depends: Vec::new(),
            items: vec![Item {
                resource,
                notify: Vec::new(),
                origin: origin.clone(),
                reboot: false,
                enforce: true,
            }],
        }],
        handlers: Vec::new(),
    };
    let summary = converge_with(&desired, host, None, &mut |_, _, _| {}, keep);
    let mut report = summary
        .resources
        .into_iter()
        .next()
        .unwrap_or(ResourceReport {
            role: orphan.role.clone(),
            kind: orphan.managed.kind.clone(),
            id: host.redact(&orphan.managed.key),
            outcome: Outcome::Unchanged,
            summary: None,
            diff: None,
            error: None,
            origin: Some(origin),
            handler: false,
            cause: None,
        });
    report.summary = report.summary.map(|s| format!("pruned: {s}"));
    report
}

fn save(state_dir: &Path, entries: Vec<Entry>) -> std::io::Result<()> {
    statefile::write_json(&state_dir.join(FILE), &Record { entries }, 0o600).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn desired(roles: &[(&str, Vec<(&str, serde_json::Value)>)]) -> Desired {
        Desired {
            roles: roles
                .iter()
                .map(|(name, items)| RolePlan {
                    name: name.to_string(),
                    depends: Vec::new(),
                    items: items
                        .iter()
                        .map(|(kind, spec)| Item {
                            resource: (find_type(kind).unwrap().build)(spec.clone(), &NoSources)
                                .unwrap(),
                            notify: Vec::new(),
                            origin: "test".into(),
                            reboot: false,
                            enforce: true,
                        })
                        .collect(),
                })
                .collect(),
            handlers: Vec::new(),
        }
    }

    fn settings(fleet: Option<bool>, roles: &[(&str, Option<bool>)]) -> Settings {
        Settings {
            fleet,
            roles: roles.iter().map(|(r, f)| (r.to_string(), *f)).collect(),
        }
    }

    /// Applies `d` (files only, so it runs in a tempdir) then records and prunes.
    fn apply(root: &Path, state: &Path, d: &Desired, s: &Settings, check: bool) -> Pruned {
        let mut host = Host::new(root);
        host.check = check;
        let (pass, warning) = prepare(state, d, s, &host);
        assert_eq!(warning, None);
        let summary = tend_roles::converge(d, &host, None, &mut |_, _, _| {});
        pass.finish(state, s, &host, summary.failed() > 0, &mut |_| Ok(()))
            .unwrap()
    }

    fn file(path: &str) -> (&'static str, serde_json::Value) {
        ("file", json!({"path": path, "content": "x\n"}))
    }

    #[test]
    fn an_undeclared_file_is_listed_without_prune_and_deleted_with_it() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let both = desired(&[("web", vec![file("/a"), file("/b")])]);
        let only_a = desired(&[("web", vec![file("/a")])]);
        let off = settings(None, &[("web", None)]);
        apply(root.path(), state.path(), &both, &off, false);
        let p = apply(root.path(), state.path(), &only_a, &off, false);
        assert!(root.path().join("b").exists(), "prune is off by default");
        assert_eq!(p.kept.len(), 1);
        assert_eq!(
            (p.kept[0].id.as_str(), p.kept[0].reason.as_str()),
            ("/b", "prune is off")
        );

        let on = settings(Some(false), &[("web", Some(true))]);
        let p = apply(root.path(), state.path(), &only_a, &on, true);
        assert!(root.path().join("b").exists(), "check mode removes nothing");
        assert_eq!(
            p.resources[0].outcome,
            Outcome::Changed,
            "but says it would"
        );

        let p = apply(root.path(), state.path(), &only_a, &on, false);
        assert!(
            !root.path().join("b").exists(),
            "the role's prune wins over the fleet's"
        );
        assert!(root.path().join("a").exists());
        assert_eq!(p.resources[0].id, "/b");
        assert!(p.resources[0]
            .summary
            .as_deref()
            .unwrap()
            .starts_with("pruned: "));
        let again = apply(root.path(), state.path(), &only_a, &on, false);
        assert!(
            again.resources.is_empty() && again.kept.is_empty(),
            "pruned once"
        );
    }

    #[test]
    fn the_managed_list_reads_and_writes_as_it_did_with_json_undo_specs() {
        // As an earlier tend wrote it: the undo a JSON object, a package's `only_if_created`
        // and `created`, a role's own prune, and a spec of a shape no type writes today.
        let before = r#"{
  "entries": [
    {
      "kind": "file",
      "key": "/a",
      "undo": {
        "path": "/a",
        "state": "absent"
      },
      "only_if_created": false,
      "role": "r",
      "role_prune": false,
      "created": false
    },
    {
      "kind": "service",
      "key": "kiosk.service",
      "undo": {
        "enabled": false,
        "name": "kiosk.service",
        "state": "stopped"
      },
      "only_if_created": false,
      "role": "old",
      "created": false
    },
    {
      "kind": "package",
      "key": "curl",
      "undo": {
        "names": "curl",
        "state": "purged"
      },
      "only_if_created": true,
      "role": "old",
      "created": true
    },
    {
      "kind": "file",
      "key": "/b",
      "undo": {
        "force": true,
        "path": "/b",
        "state": "absent"
      },
      "only_if_created": false,
      "role": "old",
      "created": false
    }
  ]
}
"#;
        let (entries, warning) = {
            let state = tempfile::tempdir().unwrap();
            std::fs::write(state.path().join(FILE), before).unwrap();
            read_record(state.path())
        };
        assert_eq!(warning, None);
        assert_eq!(entries[0].managed.undo, tend_roles::Undo::path_absent("/a"));
        assert_eq!(entries[0].role_prune, Some(false));
        assert_eq!(
            entries[1].managed.undo,
            tend_roles::Undo::stopped("kiosk.service")
        );
        assert!(entries[2].managed.only_if_created && entries[2].created);
        assert_eq!(
            entries[3].managed.undo,
            tend_roles::Undo::Spec(json!({"force": true, "path": "/b", "state": "absent"}))
        );
        let written = serde_json::to_string_pretty(&Record { entries }).unwrap() + "\n";
        assert_eq!(written, before, "an unchanged list is not rewritten");
    }

    #[test]
    fn a_removed_role_keeps_its_own_prune_setting_and_else_the_fleets() {
        let s = settings(Some(true), &[("web", Some(false))]);
        let entry = |role: &str, role_prune| Entry {
            managed: Managed {
                kind: "file".into(),
                key: "/x".into(),
                undo: tend_roles::Undo::Spec(json!({})),
                only_if_created: false,
            },
            role: role.into(),
            role_prune,
            created: false,
        };
        assert!(
            !prunes(&s, &entry("web", Some(true))),
            "a current role: its setting now"
        );
        assert!(
            !prunes(&s, &entry("gone", Some(false))),
            "a removed role: its last setting"
        );
        assert!(prunes(&s, &entry("gone", None)), "else fleet.yaml's");
        assert!(
            !prunes(&settings(None, &[]), &entry("gone", None)),
            "default off"
        );
    }

    #[test]
    fn nothing_is_pruned_after_a_failed_run_and_unapplied_resources_are_not_recorded() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let on = settings(Some(true), &[]);
        apply(
            root.path(),
            state.path(),
            &desired(&[("r", vec![file("/a")])]),
            &on,
            false,
        );
        // /a is undeclared now, but /etc/x cannot be written (its parent is a file): a failure.
        std::fs::write(root.path().join("etc"), "").unwrap();
        let failing = desired(&[("r", vec![file("/etc/x")])]);
        let p = apply(root.path(), state.path(), &failing, &on, false);
        assert!(root.path().join("a").exists());
        assert_eq!(p.kept[0].reason, "the run had failures");
        let record = std::fs::read_to_string(state.path().join(FILE)).unwrap();
        assert!(
            record.contains("\"/a\"") && !record.contains("/etc/x"),
            "{record}"
        );
    }
}
