//! The one trait every resource type implements, and its object-safe face for the engine.
//!
//! A resource reads its actual state under the host's root, diffs it against what it wants, and
//! applies the difference. Splitting read and diff from apply is what makes `--check` free of side
//! effects: check mode stops after the diff.

use crate::error::ResourceError;
use crate::host::Host;
use crate::prefetch::Prefetch;

/// What applying would change, in words an operator reads in a report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// One line, e.g. "content changed, mode 0644 -> 0755".
    pub summary: String,
    /// A unified diff for file content, already redacted.
    pub diff: Option<String>,
    /// Set when the change will deliberately not be made (e.g. a restart while systemd is not
    /// running): the resource is reported as skipped with this reason, in check mode too.
    pub skipped: Option<String>,
}

impl Change {
    pub fn new(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            diff: None,
            skipped: None,
        }
    }
    pub fn with_diff(mut self, diff: Option<String>) -> Self {
        self.diff = diff;
        self
    }
    pub fn skipped(mut self, reason: impl Into<String>) -> Self {
        self.skipped = Some(reason.into());
        self
    }
}

/// How an apply ended when it did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// Not done, on purpose: e.g. a restart while systemd is not running ("offline").
    Skipped(String),
}

/// Something a resource brings into being on the device, recorded by the agent so that it can be
/// removed ("pruned") once no resource declares it any more.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Managed {
    /// The resource type, e.g. "file".
    pub kind: String,
    /// What is managed, unique per kind: a path, a source, unit, package or user name.
    pub key: String,
    /// A spec of the same type that removes it, e.g. `{"path": "/etc/x", "state": "absent"}`.
    pub undo: crate::undo::Undo,
    /// Remove it only when tend created it (a package tend installed, not one that was there).
    #[serde(default)]
    pub only_if_created: bool,
}

/// A resource type. `Actual` is whatever `read` finds on the device.
pub trait Resource: Send + Sync {
    type Actual;

    /// The type name as written in role.yaml, e.g. "file".
    fn kind(&self) -> &'static str;
    /// What this instance manages, e.g. "/etc/motd"; (kind, id) is unique in a desired state.
    fn id(&self) -> String;
    /// Reads the actual state. Never changes anything.
    fn read(&self, host: &Host) -> Result<Self::Actual, ResourceError>;
    /// None when the actual state is already the desired one.
    fn diff(&self, actual: &Self::Actual, host: &Host) -> Option<Change>;
    /// Brings the device to the desired state. Called only when `diff` returned a change.
    fn apply(&self, actual: Self::Actual, host: &Host) -> Result<Applied, ResourceError>;
    /// The device paths `apply` may create, replace or remove, so that the agent can keep what
    /// was there before and put it back if the change has to be reverted. Resources whose effect
    /// is not a file (packages, units, accounts) return none and are reverted by re-applying.
    fn touches(&self) -> Vec<String> {
        Vec::new()
    }
    /// What this resource makes exist, for pruning; nothing for resources that remove, run a
    /// command, or only adjust something that is not theirs.
    fn managed(&self) -> Vec<Managed> {
        Vec::new()
    }
    /// Tells the host, before the run, what `read` will ask the system, so that a type can
    /// answer all its resources with one command (services: one `systemctl is-enabled`).
    fn announce(&self, _host: &Host) {}
    /// The bytes this resource writes to its path, when it writes content it already holds (a
    /// file's content, source or rendered template), so that `tend plan` can count the lines a
    /// commit changes without a device.
    fn content(&self) -> Option<std::sync::Arc<[u8]>> {
        None
    }
    /// Names, before the run's first change, what `apply` will fetch from the network, so that
    /// it is all on the device before anything changes (`crate::prefetch`). Cheap: it must not
    /// touch the network itself, and a resource with nothing to fetch adds nothing.
    fn prefetch(&self, _host: &Host, _prefetch: &mut Prefetch) {}
}

type ApplyFn<'a> = Box<dyn FnOnce(&Host) -> Result<Applied, ResourceError> + 'a>;

/// A planned change, holding what `read` found so that `apply` need not read again.
pub struct Plan<'a> {
    pub change: Option<Change>,
    apply: ApplyFn<'a>,
}

impl Plan<'_> {
    pub fn apply(self, host: &Host) -> Result<Applied, ResourceError> {
        (self.apply)(host)
    }
}

/// The engine's view of a resource: no associated types, so resources of all types share a list.
pub trait DynResource: Send + Sync {
    fn kind(&self) -> &'static str;
    fn id(&self) -> String;
    fn touches(&self) -> Vec<String>;
    fn managed(&self) -> Vec<Managed>;
    fn announce(&self, host: &Host);
    fn content(&self) -> Option<std::sync::Arc<[u8]>>;
    fn prefetch(&self, host: &Host, prefetch: &mut Prefetch);
    fn plan<'a>(&'a self, host: &Host) -> Result<Plan<'a>, ResourceError>;
}

impl<R> DynResource for R
where
    R: Resource,
    R::Actual: 'static,
{
    fn kind(&self) -> &'static str {
        Resource::kind(self)
    }
    fn id(&self) -> String {
        Resource::id(self)
    }
    fn touches(&self) -> Vec<String> {
        Resource::touches(self)
    }
    fn managed(&self) -> Vec<Managed> {
        Resource::managed(self)
    }
    fn announce(&self, host: &Host) {
        Resource::announce(self, host)
    }
    fn content(&self) -> Option<std::sync::Arc<[u8]>> {
        Resource::content(self)
    }
    fn prefetch(&self, host: &Host, prefetch: &mut Prefetch) {
        Resource::prefetch(self, host, prefetch)
    }
    fn plan<'a>(&'a self, host: &Host) -> Result<Plan<'a>, ResourceError> {
        let actual = self.read(host)?;
        let change = self.diff(&actual, host);
        Ok(Plan {
            change,
            apply: Box::new(move |h: &Host| self.apply(actual, h)),
        })
    }
}
