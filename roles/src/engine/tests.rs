//! The engine's rules, on tempdir roots: order, failure, handlers and their persistence.

use super::*;
use crate::error::ResourceError;
use crate::resource::{Change, Resource};
use std::fs;

/// A file under the root with fixed content; fails when the content is "FAIL".
struct Marker {
    path: &'static str,
    content: &'static str,
}

impl Resource for Marker {
    type Actual = Option<String>;
    fn kind(&self) -> &'static str {
        "marker"
    }
    fn id(&self) -> String {
        self.path.to_string()
    }
    fn read(&self, host: &Host) -> Result<Self::Actual, ResourceError> {
        Ok(fs::read_to_string(host.path(self.path)?).ok())
    }
    fn diff(&self, actual: &Self::Actual, _: &Host) -> Option<Change> {
        (actual.as_deref() != Some(self.content)).then(|| {
            let was = actual.as_deref().unwrap_or("");
            Change::new("content").with_diff(Some(format!("-{was}\n+{}\n", self.content)))
        })
    }
    fn apply(&self, _: Self::Actual, host: &Host) -> Result<Applied, ResourceError> {
        if self.content == "FAIL" {
            return Err(ResourceError::other("told to fail"));
        }
        fs::write(host.path(self.path)?, self.content)
            .map_err(|e| ResourceError::io(std::path::Path::new(self.path), e))?;
        Ok(Applied::Done)
    }
}

/// Appends a line to a file every time it runs: counts handler runs.
struct Counter(&'static str);

impl Resource for Counter {
    type Actual = ();
    fn kind(&self) -> &'static str {
        "counter"
    }
    fn id(&self) -> String {
        self.0.to_string()
    }
    fn read(&self, _: &Host) -> Result<(), ResourceError> {
        Ok(())
    }
    fn diff(&self, _: &(), _: &Host) -> Option<Change> {
        Some(Change::new("run"))
    }
    fn apply(&self, _: (), host: &Host) -> Result<Applied, ResourceError> {
        let p = host.path(self.0)?;
        let mut text = fs::read_to_string(&p).unwrap_or_default();
        text.push_str("ran\n");
        fs::write(&p, text).map_err(|e| ResourceError::io(&p, e))?;
        Ok(Applied::Done)
    }
}

fn item(path: &'static str, content: &'static str, notify: &[&str]) -> Item {
    Item {
        resource: Box::new(Marker { path, content }),
        notify: notify.iter().map(|s| s.to_string()).collect(),
        origin: "test".into(),
        reboot: false,
        enforce: true,
    }
}

fn role(name: &str, depends: &[&str], items: Vec<Item>) -> RolePlan {
    RolePlan {
        name: name.into(),
        depends: depends.iter().map(|s| s.to_string()).collect(),
        items,
    }
}

fn handler(name: &str, path: &'static str) -> Handler {
    Handler {
        name: name.into(),
        role: "r".into(),
        resource: Box::new(Counter(path)),
        reboot: false,
    }
}

fn runs(root: &std::path::Path, file: &str) -> usize {
    fs::read_to_string(root.join(file))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn failure_skips_rest_of_role_and_dependents_but_not_others() {
    let d = tempfile::tempdir().unwrap();
    let desired = Desired {
        roles: vec![
            role(
                "a",
                &[],
                vec![
                    item("/a1", "x", &[]),
                    item("/a2", "FAIL", &[]),
                    item("/a3", "x", &[]),
                ],
            ),
            role("b", &["a"], vec![item("/b1", "x", &[])]),
            role("c", &[], vec![item("/c1", "x", &[])]),
        ],
        handlers: vec![],
    };
    let s = converge(&desired, &Host::new(d.path()), None, &mut |_, _, _| {});
    let outcomes: Vec<Outcome> = s.resources.iter().map(|r| r.outcome).collect();
    use Outcome::*;
    assert_eq!(outcomes, [Changed, Failed, Skipped, Skipped, Changed]);
    assert!(!d.path().join("a3").exists() && !d.path().join("b1").exists());
    assert!(d.path().join("c1").exists(), "an independent role goes on");
}

#[test]
fn handlers_run_once_at_the_end_in_declaration_order() {
    let d = tempfile::tempdir().unwrap();
    let desired = Desired {
        roles: vec![role(
            "r",
            &[],
            vec![
                item("/1", "x", &["second", "first"]),
                item("/2", "y", &["first"]),
            ],
        )],
        handlers: vec![handler("first", "/h1"), handler("second", "/h2")],
    };
    let pending = d.path().join("pending.json");
    let s = converge(
        &desired,
        &Host::new(d.path()),
        Some(&pending),
        &mut |_, _, _| {},
    );
    assert_eq!(runs(d.path(), "h1"), 1, "notified twice, runs once");
    assert_eq!(runs(d.path(), "h2"), 1);
    let order: Vec<&str> = s
        .resources
        .iter()
        .filter(|r| r.handler)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(order, ["/h1", "/h2"]);
    assert!(s.pending_handlers.is_empty());
    // Converged: the second run notifies nothing.
    converge(
        &desired,
        &Host::new(d.path()),
        Some(&pending),
        &mut |_, _, _| {},
    );
    assert_eq!(runs(d.path(), "h1"), 1);
    assert_eq!(s.handlers_run, ["first", "second"]);
}

#[test]
fn before_apply_sees_only_changes_and_its_error_fails_the_resource() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("same"), "x").unwrap();
    let desired = Desired {
        roles: vec![role(
            "r",
            &[],
            vec![
                item("/same", "x", &[]),
                item("/new", "x", &[]),
                item("/refused", "x", &[]),
            ],
        )],
        handlers: vec![],
    };
    let mut seen = Vec::new();
    let s = converge_with(
        &desired,
        &Host::new(d.path()),
        None,
        &mut |_, _, _| {},
        &mut |r| {
            seen.push(r.id());
            if r.id() == "/refused" {
                Err("cannot keep the old content".into())
            } else {
                Ok(())
            }
        },
    );
    assert_eq!(
        seen,
        ["/new", "/refused"],
        "unchanged resources are not applied"
    );
    let outcomes: Vec<Outcome> = s.resources.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Unchanged, Outcome::Changed, Outcome::Failed]
    );
    assert_eq!(
        s.resources[2].error.as_deref(),
        Some("cannot keep the old content")
    );
    assert!(!d.path().join("refused").exists(), "never applied");
}

#[test]
fn handler_notified_in_a_failed_run_runs_on_the_next_run() {
    let d = tempfile::tempdir().unwrap();
    let pending = d.path().join("pending.json");
    let failing = Desired {
        roles: vec![
            role("r", &[], vec![item("/1", "x", &["restart"])]),
            role("s", &[], vec![item("/2", "FAIL", &[])]),
        ],
        handlers: vec![handler("restart", "/h")],
    };
    let s = converge(
        &failing,
        &Host::new(d.path()),
        Some(&pending),
        &mut |_, _, _| {},
    );
    assert_eq!(runs(d.path(), "h"), 0, "handlers wait after a failed run");
    assert_eq!(s.pending_handlers, ["restart"]);
    assert!(
        fs::read_to_string(&pending).unwrap().contains("restart"),
        "persisted"
    );
    let fixed = Desired {
        roles: vec![
            role("r", &[], vec![item("/1", "x", &["restart"])]),
            role("s", &[], vec![item("/2", "ok", &[])]),
        ],
        handlers: vec![handler("restart", "/h")],
    };
    let s = converge(
        &fixed,
        &Host::new(d.path()),
        Some(&pending),
        &mut |_, _, _| {},
    );
    assert_eq!(
        runs(d.path(), "h"),
        1,
        "the pending handler ran although /1 no longer changed"
    );
    assert!(s.pending_handlers.is_empty());
    assert_eq!(pending_names(&pending), Vec::<String>::new());
}

/// An application's inhibitor holds a restart off: the files still converge, the handler stays
/// pending (on disk) and is reported deferred by its holder; released, it runs exactly once.
#[test]
fn a_held_handler_is_deferred_and_pending_and_runs_once_after_release() {
    let d = tempfile::tempdir().unwrap();
    let pending = d.path().join("pending.json");
    let desired = Desired {
        roles: vec![role("r", &[], vec![item("/1", "x", &["restart"])])],
        handlers: vec![handler("restart", "/h")],
    };
    let host = Host::new(d.path());
    let mut asked = Vec::new();
    let s = converge_held(
        &desired,
        &host,
        Some(&pending),
        &mut |_, _, _| {},
        &mut |_| Ok(()),
        &mut |name| {
            asked.push(name.to_string());
            Some("app-update".into())
        },
    );
    assert_eq!(fs::read_to_string(d.path().join("1")).unwrap(), "x");
    assert_eq!(runs(d.path(), "h"), 0, "held off");
    assert_eq!(asked, ["restart"]);
    assert_eq!(s.deferred, ["restart"]);
    assert_eq!(s.pending_handlers, ["restart"]);
    assert_eq!(pending_names(&pending), ["restart"]);
    let h = s.resources.iter().find(|r| r.handler).unwrap();
    assert_eq!(h.outcome, Outcome::Skipped);
    assert_eq!(
        h.summary.as_deref(),
        Some("deferred: held off by app-update; the handler stays pending")
    );

    // Still held on a run that changes nothing: still deferred, still pending.
    let s = converge_held(
        &desired,
        &host,
        Some(&pending),
        &mut |_, _, _| {},
        &mut |_| Ok(()),
        &mut |_| Some("app-update".into()),
    );
    assert_eq!((runs(d.path(), "h"), s.deferred.len()), (0, 1));

    // Released: the next run restarts once, and the one after that not again.
    let s = converge(&desired, &host, Some(&pending), &mut |_, _, _| {});
    assert_eq!(runs(d.path(), "h"), 1);
    assert!(s.deferred.is_empty() && s.pending_handlers.is_empty());
    converge(&desired, &host, Some(&pending), &mut |_, _, _| {});
    assert_eq!(runs(d.path(), "h"), 1, "exactly once");
}

#[test]
fn only_changed_resources_and_handlers_marked_reboot_require_one() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("same"), "x").unwrap();
    let marked = |path, content, notify: &[&str]| Item {
        reboot: true,
        ..item(path, content, notify)
    };
    let desired = Desired {
        roles: vec![role(
            "r",
            &[],
            vec![
                marked("/same", "x", &[]),
                marked("/kernel", "6.1", &["fw"]),
                item("/plain", "x", &[]),
            ],
        )],
        handlers: vec![Handler {
            reboot: true,
            ..handler("fw", "/fw")
        }],
    };
    let s = converge(&desired, &Host::new(d.path()), None, &mut |_, _, _| {});
    assert_eq!(s.reboot, ["marker /kernel", "counter /fw"]);
    let again = converge(&desired, &Host::new(d.path()), None, &mut |_, _, _| {});
    assert!(again.reboot.is_empty(), "converged: no reboot");
}

#[test]
fn an_item_not_enforced_that_differs_is_drifted_never_applied_and_notifies_nothing() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("audited"), "local edit").unwrap();
    let audited = |path, content, notify: &[&str]| Item {
        enforce: false,
        reboot: true,
        ..item(path, content, notify)
    };
    let desired = Desired {
        roles: vec![role(
            "r",
            &[],
            vec![
                audited("/audited", "from the repo", &["h"]),
                audited("/missing", "FAIL", &["h"]),
                item("/after", "x", &[]),
            ],
        )],
        handlers: vec![handler("h", "/h")],
    };
    let pending = d.path().join("pending.json");
    let s = converge(
        &desired,
        &Host::new(d.path()),
        Some(&pending),
        &mut |_, _, _| {},
    );
    let outcomes: Vec<Outcome> = s.resources.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Drifted, Outcome::Drifted, Outcome::Changed]
    );
    assert_eq!(
        fs::read_to_string(d.path().join("audited")).unwrap(),
        "local edit"
    );
    assert!(!d.path().join("missing").exists());
    assert_eq!(
        s.resources[0].diff.as_deref(),
        Some("-local edit\n+from the repo\n")
    );
    assert_eq!(s.resources[0].summary.as_deref(), Some("content"));
    assert_eq!((s.failed(), s.drifted(), s.changed()), (0, 2, 1));
    assert_eq!(runs(d.path(), "h"), 0, "a drift notifies no handler");
    assert!(s.pending_handlers.is_empty());
    assert!(s.reboot.is_empty(), "nothing changed that needs a reboot");
}

#[test]
fn check_mode_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let pending = d.path().join("pending.json");
    let desired = Desired {
        roles: vec![role("r", &[], vec![item("/1", "x", &["h"])])],
        handlers: vec![handler("h", "/h")],
    };
    let mut host = Host::new(d.path());
    host.check = true;
    let s = converge(&desired, &host, Some(&pending), &mut |_, _, _| {});
    assert_eq!(s.changed(), 2, "the resource and its handler would change");
    assert_eq!(
        fs::read_dir(d.path()).unwrap().count(),
        0,
        "nothing written, not even pending handlers"
    );
}

/// Writes its file only after checking that the notification it triggers is already on
/// disk: a power cut between the write and the notification must not lose the handler.
struct SeesPending {
    path: &'static str,
    pending: std::path::PathBuf,
}

impl Resource for SeesPending {
    type Actual = bool;
    fn kind(&self) -> &'static str {
        "sees-pending"
    }
    fn id(&self) -> String {
        self.path.to_string()
    }
    fn read(&self, host: &Host) -> Result<bool, ResourceError> {
        Ok(host.path(self.path)?.exists())
    }
    fn diff(&self, exists: &bool, _: &Host) -> Option<Change> {
        (!exists).then(|| Change::new("create"))
    }
    fn apply(&self, _: bool, host: &Host) -> Result<Applied, ResourceError> {
        let on_disk = fs::read_to_string(&self.pending).unwrap_or_default();
        if !on_disk.contains("\"h\"") {
            return Err(ResourceError::other(format!(
                "the notification is not on disk before the change: {on_disk:?}"
            )));
        }
        fs::write(host.path(self.path)?, "x")
            .map_err(|e| ResourceError::io(std::path::Path::new(self.path), e))?;
        Ok(Applied::Done)
    }
}

#[test]
fn a_power_cut_after_a_change_cannot_lose_its_notification() {
    let d = tempfile::tempdir().unwrap();
    let pending = d.path().join("pending.json");
    let desired = Desired {
        roles: vec![role(
            "r",
            &[],
            vec![
                Item {
                    resource: Box::new(SeesPending {
                        path: "/1",
                        pending: pending.clone(),
                    }),
                    notify: vec!["h".into()],
                    origin: "test".into(),
                    reboot: false,
                    enforce: true,
                },
                item("/2", "FAIL", &["g"]),
            ],
        )],
        handlers: vec![handler("h", "/h"), handler("g", "/g")],
    };
    let s = converge(
        &desired,
        &Host::new(d.path()),
        Some(&pending),
        &mut |_, _, _| {},
    );
    assert_eq!(
        s.resources[0].outcome,
        Outcome::Changed,
        "{:?}",
        s.resources[0]
    );
    assert_eq!(
        s.pending_handlers,
        ["h"],
        "a failed change takes back its own notification; the run's failure defers h"
    );
    assert_eq!(pending_names(&pending), ["h"]);
}

fn pending_names(path: &std::path::Path) -> Vec<String> {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// A download that succeeds when `/link-up` exists under the root, bringing 42 bytes.
#[derive(Default)]
struct Link {
    wanted: usize,
    runs: usize,
}

impl crate::prefetch::Fetch for Link {
    fn describe(&self) -> String {
        if self.wanted == 0 {
            String::new()
        } else {
            format!("{} things", self.wanted)
        }
    }
    fn fetch(&mut self, host: &Host) -> Result<crate::prefetch::Fetched, ResourceError> {
        self.runs += 1;
        if host.path("/link-up")?.exists() {
            Ok(crate::prefetch::Fetched { bytes: 42 })
        } else {
            Err(ResourceError::other("connection reset"))
        }
    }
}

/// A marker whose apply needs one thing downloaded first.
struct Downloading(Marker);

impl Resource for Downloading {
    type Actual = Option<String>;
    fn kind(&self) -> &'static str {
        "downloading"
    }
    fn id(&self) -> String {
        Resource::id(&self.0)
    }
    fn read(&self, host: &Host) -> Result<Self::Actual, ResourceError> {
        Resource::read(&self.0, host)
    }
    fn diff(&self, actual: &Self::Actual, host: &Host) -> Option<Change> {
        self.0.diff(actual, host)
    }
    fn apply(&self, actual: Self::Actual, host: &Host) -> Result<Applied, ResourceError> {
        self.0.apply(actual, host)
    }
    fn prefetch(&self, _: &Host, prefetch: &mut crate::prefetch::Prefetch) {
        prefetch.get::<Link>().wanted += 1;
    }
}

fn downloading() -> Desired {
    let fetching = Item {
        resource: Box::new(Downloading(Marker {
            path: "/pkg",
            content: "installed",
        })),
        ..item("/unused", "x", &[])
    };
    Desired {
        roles: vec![role(
            "r",
            &[],
            vec![item("/first", "new", &["h"]), fetching],
        )],
        handlers: vec![handler("h", "/h")],
    }
}

#[test]
fn a_failed_download_before_the_first_change_applies_nothing_and_says_what_failed() {
    let d = tempfile::tempdir().unwrap();
    let pending = d.path().join("pending.json");
    let desired = downloading();
    let s = converge(
        &desired,
        &Host::new(d.path()),
        Some(&pending),
        &mut |_, _, _| {},
    );
    assert!(!d.path().join("first").exists(), "a change was made");
    assert!(!d.path().join("pkg").exists());
    assert_eq!(runs(d.path(), "h"), 0);
    let failure = s.download_failed.as_ref().expect("the failure is reported");
    assert_eq!(failure.what, "1 things");
    assert_eq!(failure.error, "connection reset");
    assert_eq!(s.failed(), 1);
    assert_eq!(s.count(Outcome::Skipped), 2);
    assert_eq!(
        s.resources[0].summary.as_deref(),
        Some("not applied: downloading 1 things before the first change failed")
    );
    assert_eq!(s.downloaded_bytes, 0);

    fs::write(d.path().join("link-up"), "").unwrap();
    let s = converge(
        &desired,
        &Host::new(d.path()),
        Some(&pending),
        &mut |_, _, _| {},
    );
    assert!(s.download_failed.is_none());
    assert_eq!(s.downloaded_bytes, 42);
    assert_eq!(s.changed(), 3, "both resources and the handler");
    assert_eq!(
        fs::read_to_string(d.path().join("pkg")).unwrap(),
        "installed"
    );
    assert_eq!(runs(d.path(), "h"), 1);
}

#[test]
fn check_mode_and_unenforced_items_download_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mut host = Host::new(d.path());
    host.check = true;
    let s = converge(&downloading(), &host, None, &mut |_, _, _| {});
    assert!(s.download_failed.is_none(), "check mode fetched");
    assert_eq!(s.changed(), 3, "both resources and the handler");

    let mut desired = downloading();
    desired.roles[0].items[1].enforce = false;
    let s = converge(&desired, &Host::new(d.path()), None, &mut |_, _, _| {});
    assert!(s.download_failed.is_none(), "an audited item fetched");
    assert_eq!(s.downloaded_bytes, 0);
    assert_eq!(s.drifted(), 1);
}
