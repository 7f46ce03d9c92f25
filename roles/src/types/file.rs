//! The `file` resource: a regular file (content, source or template), a directory, a symlink, or
//! nothing at a path, with its mode and ownership.
//!
//! Why it is careful: tend runs as root on devices nobody can reach by hand. A symlink at the final
//! path is never followed (writing through it would let anything that can plant a link aim tend at
//! any file), files are replaced atomically with their final owner and mode already set, and a
//! change of kind (a directory becoming a file) is spelled out in the report, never implied.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ResourceError, SpecError};
use crate::host::Host;
use crate::platform::{accounts, diff};
use crate::resource::{Applied, Change, DynResource, Managed, Resource};
use crate::rootwalk::{Missing, ParentDir, WalkError};
use crate::spec::{parse_spec, Content, ResourceType, Sources};

mod converge;
mod spec;

use spec::{account, check_path, parse_mode, read_content, text};

pub const TYPE: ResourceType = ResourceType {
    name: "file",
    primary: "path",
    names: &["path", "target", "owner", "group", "source", "template"],
    build,
};

/// A change below these directories changes a systemd unit: systemd needs a daemon-reload.
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system/",
    "/run/systemd/system/",
    "/usr/local/lib/systemd/system/",
    "/usr/lib/systemd/system/",
    "/lib/systemd/system/",
];

const DEFAULT_FILE_MODE: u32 = 0o644;
const DEFAULT_DIR_MODE: u32 = 0o755;

/// The spec as written. Loosely typed values are checked by hand so that every error names its key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    path: Value,
    content: Option<Value>,
    source: Option<Value>,
    template: Option<Value>,
    state: Option<Value>,
    target: Option<Value>,
    mode: Option<Value>,
    owner: Option<Value>,
    group: Option<Value>,
}

#[derive(Debug)]
enum Want {
    File(Content),
    Directory,
    Link(String),
    Absent,
}

impl Want {
    fn noun(&self) -> String {
        match self {
            Want::File(_) => "file".into(),
            Want::Directory => "directory".into(),
            Want::Link(target) => format!("link -> {target}"),
            Want::Absent => "nothing".into(),
        }
    }
}

#[derive(Debug)]
struct FileResource {
    path: String,
    want: Want,
    mode: Option<u32>,
    owner: Option<String>,
    group: Option<String>,
}

fn build(value: Value, sources: &dyn Sources) -> Result<Box<dyn DynResource>, SpecError> {
    Ok(Box::new(FileResource::from_spec(
        parse_spec(value)?,
        sources,
    )?))
}

impl FileResource {
    fn from_spec(spec: Spec, sources: &dyn Sources) -> Result<Self, SpecError> {
        let path = check_path(&text("path", Some(spec.path))?.unwrap_or_default())?;
        let state = text("state", spec.state)?.unwrap_or_else(|| "file".to_string());
        let given: Vec<(&str, Value)> = [
            ("content", spec.content),
            ("source", spec.source),
            ("template", spec.template),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.filter(|v| !v.is_null()).map(|v| (k, v)))
        .collect();
        let target = text("target", spec.target)?;
        let mode = spec
            .mode
            .filter(|v| !v.is_null())
            .map(|v| parse_mode(&v))
            .transpose()?;
        let owner = account("owner", spec.owner)?;
        let group = account("group", spec.group)?;

        if state != "file" {
            if let Some((key, _)) = given.first() {
                return Err(SpecError::at_key(
                    key,
                    format!("`{key}` only applies to `state: file`, not `state: {state}`; remove it or set `state: file`"),
                ));
            }
        }
        if state != "link" && target.is_some() {
            return Err(SpecError::at_key(
                "target",
                format!("`target` only applies to `state: link`; remove it or set `state: link` (state is `{state}`)"),
            ));
        }
        let forbid = |key: &str, set: bool, why: &str| {
            if set {
                Err(SpecError::at_key(
                    key,
                    format!("`{key}` cannot be used with `state: {state}`: {why}; remove it"),
                ))
            } else {
                Ok(())
            }
        };
        let want = match state.as_str() {
            "file" => Want::File(read_content(given, sources)?),
            "directory" => Want::Directory,
            "link" => {
                forbid("mode", mode.is_some(), "a symlink has no mode of its own on Linux")?;
                let target = target.filter(|t| !t.is_empty()).ok_or_else(|| {
                    SpecError::at_key("target", "`state: link` needs `target:`, the path the link points to, e.g. `target: /usr/bin/foo`")
                })?;
                if target.contains('\0') {
                    return Err(SpecError::at_key("target", "`target` contains a NUL character"));
                }
                Want::Link(target)
            }
            "absent" => {
                let why = "there is nothing left to own once it is removed";
                forbid("mode", mode.is_some(), why)?;
                forbid("owner", owner.is_some(), why)?;
                forbid("group", group.is_some(), why)?;
                Want::Absent
            }
            other => {
                return Err(SpecError::at_key(
                    "state",
                    format!("unknown state `{other}`; use one of: file (the default), directory, link, absent"),
                ))
            }
        };
        Ok(Self {
            path,
            want,
            mode,
            owner,
            group,
        })
    }

    fn is_unit_file(&self) -> bool {
        UNIT_DIRS.iter().any(|d| self.path.starts_with(d))
    }
}

/// Owner and mode of what is at the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    mode: u32,
    uid: u32,
    gid: u32,
}

/// What is at the path, seen without following a final symlink.
#[derive(Debug)]
enum Found {
    Missing,
    /// `content` is read only when a file is wanted: nothing else compares it.
    File {
        stat: Stat,
        content: Vec<u8>,
    },
    /// `entries` (top level) is counted only when the directory may go away.
    Dir {
        stat: Stat,
        entries: usize,
    },
    Link {
        stat: Stat,
        target: PathBuf,
    },
    /// A fifo, socket or device node.
    Other {
        kind: &'static str,
    },
}

#[derive(Debug)]
struct Actual {
    found: Found,
    /// The wanted owner and group resolved in the root; Err holds why a name is unknown, so that
    /// check mode can still report the change and apply can fail with the reason.
    uid: Option<Result<u32, String>>,
    gid: Option<Result<u32, String>>,
}

impl Resource for FileResource {
    type Actual = Actual;

    fn kind(&self) -> &'static str {
        "file"
    }

    fn id(&self) -> String {
        self.path.clone()
    }

    fn touches(&self) -> Vec<String> {
        vec![self.path.clone()]
    }

    fn content(&self) -> Option<Content> {
        match &self.want {
            Want::File(c) => Some(c.clone()),
            _ => None,
        }
    }

    /// Files and links are tend's to delete once undeclared; a directory is not, as it may hold
    /// data that no resource declared.
    fn managed(&self) -> Vec<Managed> {
        match self.want {
            Want::File(_) | Want::Link(_) => vec![Managed {
                kind: "file".into(),
                key: self.path.clone(),
                undo: crate::undo::Undo::path_absent(&self.path),
                only_if_created: false,
            }],
            Want::Directory | Want::Absent => Vec::new(),
        }
    }

    fn read(&self, host: &Host) -> Result<Actual, ResourceError> {
        let found = match host.open_parent(&self.path, Missing::Fail) {
            Ok(parent) => self.inspect(&parent)?,
            Err(WalkError::MissingParent { .. }) => Found::Missing,
            // A parent is a file: nothing can be at the path, which is what `absent` wants.
            Err(WalkError::ParentNotADirectory { .. }) if matches!(self.want, Want::Absent) => {
                Found::Missing
            }
            Err(e) => return Err(e.into()),
        };
        let uid = self
            .owner
            .as_deref()
            .map(|o| accounts::uid_of(host, o).map_err(|e| e.to_string()));
        let gid = self
            .group
            .as_deref()
            .map(|g| accounts::gid_of(host, g).map_err(|e| e.to_string()));
        Ok(Actual { found, uid, gid })
    }

    fn diff(&self, actual: &Actual, host: &Host) -> Option<Change> {
        let mut parts: Vec<String> = Vec::new();
        let mut content_diff = None;
        match (&self.want, &actual.found) {
            (Want::Absent, Found::Missing) => {}
            (Want::Absent, Found::Dir { entries: 0, .. }) => parts.push("removed directory".into()),
            (Want::Absent, Found::Dir { entries, .. }) => parts.push(format!(
                "removed directory and everything in it ({entries} entries)"
            )),
            (Want::Absent, Found::File { .. }) => parts.push("removed".into()),
            (Want::Absent, found) => parts.push(format!("removed {}", describe(found))),

            (Want::File(new), Found::File { stat, content }) => {
                if content[..] != new[..] {
                    parts.push("content changed".into());
                    content_diff =
                        diff::content_diff(&self.path, Some(content), new, host.redactor());
                }
                self.stat_changes(stat, actual, host, &mut parts);
            }
            (Want::Directory, Found::Dir { stat, .. }) => {
                self.stat_changes(stat, actual, host, &mut parts)
            }
            (Want::Link(want), Found::Link { stat, target }) => {
                if target.as_os_str() != want.as_str() {
                    parts.push(format!("link -> {want} (was {})", target.display()));
                }
                self.stat_changes(stat, actual, host, &mut parts);
            }

            (want, found) => {
                let what = want.noun();
                parts.push(match found {
                    Found::Missing if matches!(want, Want::File(_)) => "created".to_string(),
                    Found::Missing => format!("created {what}"),
                    _ => format!("replaced {} with a {what}", describe(found)),
                });
                if let Want::File(new) = want {
                    content_diff = diff::content_diff(&self.path, None, new, host.redactor());
                }
                self.new_object_notes(&mut parts);
            }
        }
        if parts.is_empty() {
            return None;
        }
        Some(Change::new(parts.join(", ")).with_diff(content_diff))
    }

    fn apply(&self, actual: Actual, host: &Host) -> Result<Applied, ResourceError> {
        let result = self.converge(actual, host);
        // Also on failure: a half-done apply may already have removed or replaced the unit.
        if self.is_unit_file() {
            host.flags().units_changed = true;
        }
        result.map(|()| Applied::Done)
    }
}

/// "a file", "a directory (and the 3 entries in it)", "a link -> /x", for replacement summaries.
fn describe(found: &Found) -> String {
    match found {
        Found::Missing => "nothing".into(),
        Found::File { .. } => "a file".into(),
        Found::Dir { entries: 0, .. } => "a directory".into(),
        Found::Dir { entries, .. } => format!("a directory (and the {entries} entries in it)"),
        Found::Link { target, .. } => format!("a link -> {}", target.display()),
        Found::Other { kind, .. } => format!("a {kind}"),
    }
}

fn user_label(host: &Host, uid: u32) -> String {
    accounts::user_name(host, uid)
        .ok()
        .flatten()
        .unwrap_or_else(|| uid.to_string())
}

fn group_label(host: &Host, gid: u32) -> String {
    accounts::group_name(host, gid)
        .ok()
        .flatten()
        .unwrap_or_else(|| gid.to_string())
}

/// A resolved id differs from the current one; an unresolvable name always differs.
fn differs(want: &Option<Result<u32, String>>, have: u32) -> bool {
    matches!(want, Some(r) if r.as_ref().ok() != Some(&have))
}

/// The wanted id when set; an unknown name fails here, before anything is changed.
fn resolved(want: &Option<Result<u32, String>>) -> Result<Option<u32>, ResourceError> {
    want.as_ref()
        .map(|r| r.clone().map_err(ResourceError::other))
        .transpose()
}

#[cfg(test)]
mod tests;
