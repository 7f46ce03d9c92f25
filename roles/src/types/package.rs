//! `package`: Debian packages installed, upgraded, pinned, removed or purged with apt.
//!
//! ```yaml
//! - package: [curl, "hello=1.0-1"]   # one name or a list; name=version pins a version,
//!                                    # name:arch picks a multi-arch instance
//!   state: present                   # present (default) | latest | absent | purged
//!   install_recommends: false        # default false
//! ```
//!
//! The decision comes from dpkg's status file alone, so a converged device never runs apt: a
//! present package that is installed, a pin whose version is installed, an absent package that is
//! not. Only `latest` needs apt's view (`apt-cache policy`); outside check mode the package lists
//! are refreshed first when they are stale or a source changed. All packages of one resource go
//! through one `apt-get install` (or one remove/purge). A dpkg left half-way (a power cut during an
//! install) is finished with `dpkg --configure -a` (and a package cut during its unpack is
//! reinstalled) before anything else, and the repair is reported
//! as part of the resource's change; while another process holds dpkg's lock, a resource with work
//! to do fails with "retry on the next run" instead. Before the run's first change, what a
//! resource will install is downloaded (`platform::aptdownload`), so a link that drops leaves
//! nothing half-way.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::Deserialize;

use crate::error::{ResourceError, SpecError};
use crate::host::Host;
use crate::platform::aptdownload::AptDownload;
use crate::platform::{apt, dpkg, version};
use crate::prefetch::Prefetch;
use crate::resource::{Applied, Change, DynResource, Managed, Resource};
use crate::spec::{parse_spec, ResourceType, Sources};

pub const TYPE: ResourceType = ResourceType {
    name: "package",
    primary: "names",
    names: &["names"],
    build,
};

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum State {
    #[default]
    Present,
    Latest,
    Absent,
    Purged,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    names: serde_json::Value,
    #[serde(default)]
    state: State,
    #[serde(default)]
    install_recommends: bool,
}

/// One entry of the list: "name", "name:arch", with an optional "=version".
#[derive(Clone, Debug, PartialEq, Eq)]
struct Wanted {
    /// As written, for the resource's id.
    spec: String,
    /// The name with its architecture qualifier, if any.
    name: String,
    version: Option<String>,
}

#[derive(Debug)]
pub struct Package {
    wanted: Vec<Wanted>,
    state: State,
    recommends: bool,
}

/// One package to act on, with the versions for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Op {
    name: String,
    /// What apt-get gets: "curl" or "hello=1.0-1".
    arg: String,
    from: Option<String>,
    to: Option<String>,
}

/// What read found to do. Only installs or only removals: one resource has one state.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Todo {
    installs: Vec<Op>,
    removals: Vec<Op>,
    /// Check mode only: names apt has no candidate for in the current lists (not refreshed).
    unknown: Vec<String>,
    /// What an interrupted dpkg left half-way, to finish before anything else.
    repair: Option<String>,
}

impl Todo {
    fn is_empty(&self) -> bool {
        self.installs.is_empty() && self.removals.is_empty()
    }
}

/// Checks a package name as Debian policy §5.6.7 defines it, plus apt's ":arch" qualifier.
fn check_name(name: &str) -> Result<(), String> {
    let (bare, arch) = match name.split_once(':') {
        Some((b, a)) => (b, Some(a)),
        None => (name, None),
    };
    let ok = bare.len() >= 2
        && bare.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && bare
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !ok {
        return Err(format!(
            "'{name}' is not a Debian package name: use at least two characters among lowercase letters, digits, '+', '-' and '.', starting with a letter or digit (pin a version with name=version)"
        ));
    }
    if let Some(a) = arch {
        if a.is_empty()
            || !a
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!("'{name}': the architecture after ':' must be a dpkg architecture such as armhf or arm64"));
        }
    }
    Ok(())
}

fn parse_wanted(entry: &str) -> Result<Wanted, String> {
    let (name, version) = match entry.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (entry, None),
    };
    check_name(name)?;
    if let Some(v) = version {
        version::validate_version(v).map_err(|m| format!("'{entry}': {m}"))?;
    }
    Ok(Wanted {
        spec: entry.to_string(),
        name: name.to_string(),
        version: version.map(str::to_string),
    })
}

/// A string (several names may be separated by spaces) or a list of strings.
fn names_of(value: serde_json::Value) -> Result<Vec<String>, SpecError> {
    let bad = || {
        SpecError::at_key(
            "package",
            "expected a package name or a list of names, e.g. `package: [curl, \"hello=1.0-1\"]`",
        )
    };
    let items: Vec<String> = match value {
        serde_json::Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        serde_json::Value::Array(a) => a
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s.trim().to_string()),
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad()),
    };
    if items.is_empty() || items.iter().any(String::is_empty) {
        return Err(SpecError::at_key(
            "package",
            "the list of package names is empty or has an empty entry",
        ));
    }
    Ok(items)
}

fn build(spec: serde_json::Value, _: &dyn Sources) -> Result<Box<dyn DynResource>, SpecError> {
    Ok(Box::new(Package::from_spec(parse_spec(spec)?)?))
}

impl Package {
    fn from_spec(spec: Spec) -> Result<Package, SpecError> {
        let mut wanted: Vec<Wanted> = Vec::new();
        for entry in names_of(spec.names)? {
            let w = parse_wanted(&entry).map_err(|m| SpecError::at_key("package", m))?;
            if wanted.iter().any(|o| o.name == w.name) {
                return Err(SpecError::at_key(
                    "package",
                    format!("'{}' is listed twice; list each package once", w.name),
                ));
            }
            wanted.push(w);
        }
        if let Some(pinned) = wanted.iter().find(|w| w.version.is_some()) {
            if spec.state != State::Present {
                return Err(SpecError::at_key(
                    "state",
                    format!("'{}' pins a version, which only state: present can honour; drop the '=version' or use state: present", pinned.spec),
                ));
            }
        }
        Ok(Package {
            wanted,
            state: spec.state,
            recommends: spec.install_recommends,
        })
    }

    /// What to do, from dpkg's status only. `latest` entries that are installed get `to: None`:
    /// their candidate is still to be asked of apt.
    fn plan(&self, status: &dpkg::DpkgStatus) -> Todo {
        let mut todo = Todo::default();
        for w in &self.wanted {
            let installed = status.get(&w.name).map(|p| p.version.clone());
            match self.state {
                State::Present => match (&w.version, &installed) {
                    (None, Some(_)) => {}
                    (Some(v), Some(i)) if version::compare_versions(v, i) == Ordering::Equal => {}
                    _ => todo.installs.push(Op {
                        name: w.name.clone(),
                        arg: w.spec.clone(),
                        from: installed,
                        to: w.version.clone(),
                    }),
                },
                State::Latest => todo.installs.push(Op {
                    name: w.name.clone(),
                    arg: w.name.clone(),
                    from: installed,
                    to: None,
                }),
                State::Absent => {
                    if installed.is_some() {
                        todo.removals.push(Op {
                            name: w.name.clone(),
                            arg: w.name.clone(),
                            from: installed,
                            to: None,
                        });
                    }
                }
                State::Purged => {
                    if installed.is_some() || status.has_config_files(&w.name) {
                        todo.removals.push(Op {
                            name: w.name.clone(),
                            arg: w.name.clone(),
                            from: installed,
                            to: None,
                        });
                    }
                }
            }
        }
        todo
    }

    /// Fills in candidate versions: an install without a pin gets apt's candidate; a `latest` that
    /// is installed and already at (or above) its candidate is dropped.
    fn resolve(
        &self,
        todo: &mut Todo,
        candidates: &HashMap<String, Option<String>>,
        native: Option<&str>,
    ) {
        let lookup = |name: &str| -> Option<String> {
            if let Some(c) = candidates.get(name) {
                return c.clone();
            }
            // apt-cache policy prints a native "curl:arm64" as "curl".
            let (bare, arch) = name.split_once(':')?;
            if Some(arch) == native || arch == "all" {
                candidates.get(bare).cloned().flatten()
            } else {
                None
            }
        };
        let mut unknown = Vec::new();
        todo.installs.retain_mut(|op| {
            if op.to.is_some() {
                return true;
            }
            match lookup(&op.name) {
                Some(c) => {
                    let newer = op
                        .from
                        .as_deref()
                        .is_none_or(|i| version::compare_versions(&c, i) == Ordering::Greater);
                    op.to = Some(c);
                    self.state != State::Latest || newer
                }
                None => {
                    // Installed and unknown to apt (a local .deb): nothing to upgrade to.
                    if self.state == State::Latest && op.from.is_some() {
                        return false;
                    }
                    unknown.push(op.name.clone());
                    true
                }
            }
        });
        todo.unknown = unknown;
    }
}

fn describe(op: &Op) -> String {
    match (&op.from, &op.to) {
        (Some(f), Some(t)) => format!("{} {f} -> {t}", op.name),
        (None, Some(t)) => format!("{} {t}", op.name),
        _ => op.name.clone(),
    }
}

impl Resource for Package {
    type Actual = Todo;

    fn kind(&self) -> &'static str {
        "package"
    }

    fn id(&self) -> String {
        self.wanted
            .iter()
            .map(|w| w.spec.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Each installed package is purged once undeclared, but only when tend installed it: a
    /// package that was there before tend first declared it stays.
    fn managed(&self) -> Vec<Managed> {
        if !matches!(self.state, State::Present | State::Latest) {
            return Vec::new();
        }
        self.wanted
            .iter()
            .map(|w| Managed {
                kind: "package".into(),
                key: w.name.clone(),
                undo: crate::undo::Undo::names_purged(&w.name),
                only_if_created: true,
            })
            .collect()
    }

    /// What it will install, so that the .debs are downloaded before the run's first change. An
    /// interrupted dpkg leaves nothing named (see below); an installed `latest` package is left out: its candidate is only known once the lists are
    /// refreshed, so an upgrade of it is downloaded by its own install.
    fn prefetch(&self, host: &Host, prefetch: &mut Prefetch) {
        if !matches!(self.state, State::Present | State::Latest) {
            return;
        }
        let Ok(status) = dpkg::read_shared(host) else {
            // Unreadable: `read` reports it when the resource runs.
            return;
        };
        if status.interruption().is_some() {
            // apt downloads nothing while dpkg is half-way ("dpkg was interrupted"): the
            // repair comes first, in `apply`, and this run installs as it did before.
            return;
        }
        let specs = self
            .plan(&status)
            .installs
            .into_iter()
            .filter(|o| self.state == State::Present || o.from.is_none())
            .map(|o| o.arg)
            .collect();
        prefetch
            .get::<AptDownload>()
            .install(specs, self.recommends);
    }

    fn read(&self, host: &Host) -> Result<Todo, ResourceError> {
        let status = dpkg::read_shared(host)?;
        let mut todo = self.plan(&status);
        if let Some(what) = status.interruption() {
            if !dpkg::lock_held(host) {
                todo.repair = Some(what);
            } else if !todo.is_empty() {
                return Err(ResourceError::other(
                    status.interrupted(true).unwrap_or(what),
                ));
            }
        }
        if todo.is_empty() {
            return Ok(todo);
        }
        let ask: Vec<&str> = todo
            .installs
            .iter()
            .filter(|o| o.to.is_none())
            .map(|o| o.name.as_str())
            .collect();
        if !ask.is_empty() {
            // Check mode has no side effects: it asks apt about the lists as they are.
            if !host.check {
                apt::ensure_fresh_lists(host)?;
            }
            let candidates = apt::candidates(host, &ask)?;
            self.resolve(&mut todo, &candidates, status.native_arch.as_deref());
        }
        Ok(todo)
    }

    fn diff(&self, todo: &Todo, _: &Host) -> Option<Change> {
        if todo.is_empty() && todo.repair.is_none() {
            return None;
        }
        let mut parts = Vec::new();
        if let Some(what) = &todo.repair {
            parts.push(format!(
                "finish the interrupted dpkg ({what}) with `dpkg --configure -a`;"
            ));
        }
        if !todo.installs.is_empty() {
            let list: Vec<String> = todo.installs.iter().map(describe).collect();
            parts.push(format!("install {}", list.join(", ")));
        }
        if !todo.removals.is_empty() {
            let verb = if self.state == State::Purged {
                "purge"
            } else {
                "remove"
            };
            let list: Vec<&str> = todo.removals.iter().map(|o| o.name.as_str()).collect();
            parts.push(format!("{verb} {}", list.join(", ")));
        }
        if !todo.unknown.is_empty() {
            parts.push(format!(
                "({} not in the current package lists)",
                todo.unknown.join(", ")
            ));
        }
        Some(Change::new(parts.join(" ")))
    }

    fn apply(&self, mut todo: Todo, host: &Host) -> Result<Applied, ResourceError> {
        if todo.repair.is_some() {
            dpkg::configure_pending(host)?;
            // A package cut during its unpack is half-installed: only unpacking it again helps.
            let left = dpkg::read(host)?.unfinished_names();
            let left: Vec<&str> = left.iter().map(String::as_str).collect();
            apt::reinstall(host, &left)?;
            // The repair may have finished the very install this resource wants: plan again,
            // from the status as it is now.
            host.forget_read_ahead();
            todo = self.read(host)?;
            if let Some(what) = todo.repair {
                return Err(ResourceError::other(format!(
                    "dpkg is still unfinished after `dpkg --configure -a` ({what}); run `dpkg --audit` on the device to see why"
                )));
            }
        }
        if !todo.installs.is_empty() {
            apt::ensure_fresh_lists(host)?;
            let args: Vec<&str> = todo.installs.iter().map(|o| o.arg.as_str()).collect();
            apt::install(host, &args, self.recommends)?;
        }
        if !todo.removals.is_empty() {
            let names: Vec<&str> = todo.removals.iter().map(|o| o.arg.as_str()).collect();
            apt::remove(host, &names, self.state == State::Purged)?;
        }
        Ok(Applied::Done)
    }
}

#[cfg(test)]
mod tests;
