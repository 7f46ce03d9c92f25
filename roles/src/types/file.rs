//! The `file` resource: a regular file (content, source or template), a directory, a symlink, or
//! nothing at a path, with its mode and ownership.
//!
//! Why it is careful: tend runs as root on devices nobody can reach by hand. A symlink at the final
//! path is never followed (writing through it would let anything that can plant a link aim tend at
//! any file), files are replaced atomically with their final owner and mode already set, and a
//! change of kind (a directory becoming a file) is spelled out in the report, never implied.

use std::io;
use std::path::{Component, Path, PathBuf};

use rustix::fs::FileType;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ResourceError, SpecError};
use crate::fsutil::{self, Meta};
use crate::host::Host;
use crate::platform::{accounts, diff};
use crate::resource::{Applied, Change, DynResource, Managed, Resource};
use crate::rootwalk::{Missing, ParentDir, WalkError};
use crate::spec::{parse_spec, Content, ResourceType, Sources};

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

/// Reads the one content key now, so a missing source fails the build before anything changes.
fn read_content(given: Vec<(&str, Value)>, sources: &dyn Sources) -> Result<Content, SpecError> {
    if let [(first, _), (second, _), ..] = given.as_slice() {
        return Err(SpecError::at_key(
            second,
            format!("`{first}` and `{second}` both give the file's content; keep exactly one of content, source, template"),
        ));
    }
    let Some((key, value)) = given.into_iter().next() else {
        return Err(SpecError::new(
            "a file needs its content: set one of `content:` (inline text), `source:` (a file from the role's \
             files/) or `template:` (a template from the role's templates/); for a directory or link set `state:`",
        ));
    };
    match key {
        "content" => sources
            .content(text(key, Some(value))?.unwrap_or_default().into_bytes())
            .map_err(|e| SpecError::at_key(key, e)),
        "source" => {
            let name = source_name(key, value)?;
            sources
                .file(&name)
                .map_err(|e| SpecError::at_key(key, format!("source `{name}`: {e}")))
        }
        _ => {
            let name = source_name(key, value)?;
            sources
                .template(&name)
                .map_err(|e| SpecError::at_key(key, format!("template `{name}`: {e}")))
        }
    }
}

fn source_name(key: &str, v: Value) -> Result<String, SpecError> {
    text(key, Some(v))?
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| {
            SpecError::at_key(
                key,
                format!("`{key}` is empty; give a file name relative to the role"),
            )
        })
}

/// A string value; numbers and booleans are refused rather than guessed at.
fn text(key: &str, v: Option<Value>) -> Result<Option<String>, SpecError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(SpecError::at_key(
            key,
            format!("`{key}` must be text, not `{other}`; quote it"),
        )),
    }
}

/// Absolute, no `..` (a fleet repo must not be able to climb out of what it names), normalised.
fn check_path(raw: &str) -> Result<String, SpecError> {
    let err = |why: &str| SpecError::at_key("path", format!("file path `{raw}` {why}"));
    if raw.contains('\0') {
        return Err(err("contains a NUL character"));
    }
    let p = Path::new(raw);
    if !p.is_absolute() {
        return Err(err("must be absolute, e.g. /etc/motd"));
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                return Err(err("must not contain `..`; write the path it means"))
            }
            _ => {}
        }
    }
    if parts.is_empty() {
        return Err(err(
            "names the root directory itself, which tend does not manage as a file",
        ));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// An octal mode: "0644", "644", "4755", or a YAML number written the same way (its digits are read
/// as octal, so `mode: 644` and `mode: 0644` both mean rw-r--r--).
fn parse_mode(v: &Value) -> Result<u32, SpecError> {
    let digits = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) if n.is_u64() => n.to_string(),
        other => {
            return Err(SpecError::at_key(
                "mode",
                format!("mode `{other}` is not an octal mode; write it like \"0644\""),
            ))
        }
    };
    let bare = digits.strip_prefix("0o").unwrap_or(&digits);
    // "00644" is still 0644; five significant digits are not a mode.
    let bare = match bare.strip_prefix('0') {
        Some(rest) if bare.len() > 4 => rest,
        _ => bare,
    };
    let bad = |why: &str| {
        let fix = "write it as octal digits, quoted, like \"0644\" or \"0755\"";
        Err(SpecError::at_key(
            "mode",
            format!("mode `{digits}` {why}; {fix}"),
        ))
    };
    if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_digit()) {
        return bad("is not an octal mode (symbolic modes like u=rw are not supported)");
    }
    if bare.len() > 4 {
        return bad("has more than four octal digits");
    }
    if bare.bytes().any(|b| b == b'8' || b == b'9') {
        return bad("has an 8 or 9, which octal has not");
    }
    u32::from_str_radix(bare, 8).or_else(|e| bad(&e.to_string()))
}

/// A user or group: a name, or a number (YAML may give it as an integer).
fn account(key: &str, v: Option<Value>) -> Result<Option<String>, SpecError> {
    let name = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)) => {
            n.to_string()
        }
        Some(other) => {
            return Err(SpecError::at_key(
                key,
                format!("`{key}` must be a name or a numeric id, not `{other}`"),
            ))
        }
    };
    if name.is_empty() || name.contains(|c: char| c == ':' || c.is_whitespace()) {
        return Err(SpecError::at_key(
            key,
            format!("`{key}` `{name}` is not a valid name: it is empty or has a colon or space"),
        ));
    }
    Ok(Some(name))
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

    /// Files and links are tend's to delete once undeclared; a directory is not, as it may hold
    /// data that no resource declared.
    fn managed(&self) -> Vec<Managed> {
        match self.want {
            Want::File(_) | Want::Link(_) => vec![Managed {
                kind: "file".into(),
                key: self.path.clone(),
                undo: serde_json::json!({"path": self.path, "state": "absent"}),
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

impl FileResource {
    /// What is at the name in its opened parent, never following it.
    fn inspect(&self, parent: &ParentDir) -> Result<Found, ResourceError> {
        let err = |e: io::Error| ResourceError::io(Path::new(&self.path), e);
        let Some(entry) = parent.lstat().map_err(err)? else {
            return Ok(Found::Missing);
        };
        let stat = Stat {
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
        };
        Ok(match entry.kind {
            FileType::RegularFile => {
                let content = match self.want {
                    Want::File(_) => parent.read().map_err(err)?,
                    _ => Vec::new(),
                };
                Found::File { stat, content }
            }
            FileType::Directory => {
                let entries = match self.want {
                    Want::Directory => 0,
                    _ => parent.count_entries().map_err(err)?,
                };
                Found::Dir { stat, entries }
            }
            FileType::Symlink => Found::Link {
                stat,
                target: parent.read_link().map_err(err)?,
            },
            FileType::Fifo => Found::Other { kind: "fifo" },
            FileType::Socket => Found::Other { kind: "socket" },
            FileType::BlockDevice => Found::Other {
                kind: "block device",
            },
            _ => Found::Other {
                kind: "character device",
            },
        })
    }

    /// Mode, owner and group of an existing object of the wanted kind; unset means keep.
    fn stat_changes(&self, stat: &Stat, actual: &Actual, host: &Host, parts: &mut Vec<String>) {
        if let Some(mode) = self.mode.filter(|m| *m != stat.mode) {
            parts.push(format!("mode {:04o} -> {mode:04o}", stat.mode));
        }
        if let (true, Some(owner)) = (differs(&actual.uid, stat.uid), &self.owner) {
            parts.push(format!("owner {} -> {owner}", user_label(host, stat.uid)));
        }
        if let (true, Some(group)) = (differs(&actual.gid, stat.gid), &self.group) {
            parts.push(format!("group {} -> {group}", group_label(host, stat.gid)));
        }
    }

    /// What a new object gets beyond the defaults (0644/0755, root:root).
    fn new_object_notes(&self, parts: &mut Vec<String>) {
        if let Some(mode) = self.mode {
            parts.push(format!("mode {mode:04o}"));
        }
        if let Some(owner) = &self.owner {
            parts.push(format!("owner {owner}"));
        }
        if let Some(group) = &self.group {
            parts.push(format!("group {group}"));
        }
    }

    /// Changes the object at the path through its opened parent: a swapped parent directory
    /// cannot redirect any step.
    fn converge(&self, actual: Actual, host: &Host) -> Result<(), ResourceError> {
        let io_err = |e: io::Error| ResourceError::io(Path::new(&self.path), e);
        let uid = resolved(&actual.uid)?;
        let gid = resolved(&actual.gid)?;
        let absent = matches!(self.want, Want::Absent);
        let parent = match host.open_parent(
            &self.path,
            if absent {
                Missing::Fail
            } else {
                Missing::Create
            },
        ) {
            Ok(parent) => parent,
            Err(WalkError::MissingParent { .. } | WalkError::ParentNotADirectory { .. })
                if absent =>
            {
                return Ok(())
            }
            Err(e) => return Err(e.into()),
        };
        let p = &parent;
        let write =
            |bytes: &[u8], meta: Meta| fsutil::atomic_write_at(p.fd(), p.name(), bytes, meta);
        let link = |target: &str, uid: u32, gid: u32| {
            fsutil::symlink_at(p.fd(), p.name(), target, uid, gid)
        };
        // Ownership of a new object (or one of another kind that it replaces) defaults to root.
        let (new_uid, new_gid) = (uid.unwrap_or(0), gid.unwrap_or(0));
        match (&self.want, actual.found) {
            (Want::Absent, Found::Missing) => Ok(()),
            (Want::Absent, Found::Dir { .. }) => p.remove_tree(),
            (Want::Absent, _) => p.unlink(),

            (Want::File(new), found) => {
                let mode = self.mode.unwrap_or(DEFAULT_FILE_MODE);
                let meta = Meta {
                    mode: Some(mode),
                    uid: Some(new_uid),
                    gid: Some(new_gid),
                };
                match found {
                    Found::File { stat, content } => {
                        let (mode, uid, gid) = (
                            self.mode.unwrap_or(stat.mode),
                            uid.unwrap_or(stat.uid),
                            gid.unwrap_or(stat.gid),
                        );
                        if content[..] == new[..] {
                            p.set_stat(false, mode, uid, gid)
                        } else {
                            write(
                                new,
                                Meta {
                                    mode: Some(mode),
                                    uid: Some(uid),
                                    gid: Some(gid),
                                },
                            )
                        }
                    }
                    Found::Dir { .. } => p.remove_tree().and_then(|()| write(new, meta)),
                    // rename() replaces a link or node itself: nothing is written through a link.
                    Found::Missing | Found::Link { .. } | Found::Other { .. } => write(new, meta),
                }
            }

            (Want::Directory, found) => {
                let mode = self.mode.unwrap_or(DEFAULT_DIR_MODE);
                match found {
                    Found::Dir { stat, .. } => p.set_stat(
                        true,
                        self.mode.unwrap_or(stat.mode),
                        uid.unwrap_or(stat.uid),
                        gid.unwrap_or(stat.gid),
                    ),
                    Found::Missing => p.make_dir(mode, new_uid, new_gid),
                    _ => p.unlink().and_then(|()| p.make_dir(mode, new_uid, new_gid)),
                }
            }

            (Want::Link(target), found) => match found {
                Found::Link { stat, target: have } if have.as_os_str() == target.as_str() => {
                    p.chown_link(uid.unwrap_or(stat.uid), gid.unwrap_or(stat.gid))
                }
                Found::Link { stat, .. } => {
                    link(target, uid.unwrap_or(stat.uid), gid.unwrap_or(stat.gid))
                }
                Found::Dir { .. } => p
                    .remove_tree()
                    .and_then(|()| link(target, new_uid, new_gid)),
                Found::Missing | Found::File { .. } | Found::Other { .. } => {
                    link(target, new_uid, new_gid)
                }
            },
        }
        .map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Redactor;
    use serde_json::json;
    use std::collections::HashMap;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    /// Role files and templates served from memory, as the agent serves them from the repo.
    #[derive(Default)]
    struct MapSources {
        files: HashMap<String, Vec<u8>>,
        templates: HashMap<String, String>,
    }

    impl Sources for MapSources {
        fn file(&self, name: &str) -> Result<Content, String> {
            self.files
                .get(name)
                .map(|b| b.as_slice().into())
                .ok_or_else(|| "not found in the role's files/".to_string())
        }
        fn template(&self, name: &str) -> Result<Content, String> {
            self.templates
                .get(name)
                .map(|t| t.as_bytes().into())
                .ok_or_else(|| "not found in the role's templates/".to_string())
        }
    }

    fn build_with(spec: Value, sources: &MapSources) -> Result<Box<dyn DynResource>, SpecError> {
        (TYPE.build)(spec, sources)
    }

    fn make(spec: Value) -> Box<dyn DynResource> {
        build_with(spec, &MapSources::default()).unwrap()
    }

    fn spec_error(spec: Value) -> SpecError {
        match build_with(spec, &MapSources::default()) {
            Ok(_) => panic!("spec was accepted"),
            Err(e) => e,
        }
    }

    struct Root {
        dir: tempfile::TempDir,
        host: Host,
    }

    impl Root {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let host = Host::new(dir.path());
            Self { dir, host }
        }
        fn with_accounts() -> Self {
            let r = Self::new();
            r.write(
                "/etc/passwd",
                "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1001:Pi:/home/pi:/bin/bash\n",
            );
            r.write("/etc/group", "root:x:0:\npi:x:1001:\nvideo:x:44:pi\n");
            r
        }
        fn p(&self, device: &str) -> PathBuf {
            self.dir.path().join(device.trim_start_matches('/'))
        }
        fn write(&self, device: &str, text: &str) {
            let p = self.p(device);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        fn chmod(&self, device: &str, mode: u32) {
            fs::set_permissions(self.p(device), fs::Permissions::from_mode(mode)).unwrap();
        }
        fn lstat(&self, device: &str) -> fs::Metadata {
            fs::symlink_metadata(self.p(device)).unwrap()
        }
        fn mode(&self, device: &str) -> u32 {
            self.lstat(device).mode() & 0o7777
        }
        fn change(&self, r: &dyn DynResource) -> Option<Change> {
            r.plan(&self.host).unwrap().change
        }
        /// Plans, applies, and checks that a second plan finds nothing to do (idempotence).
        fn converge(&self, r: &dyn DynResource) -> Change {
            let plan = r.plan(&self.host).unwrap();
            let change = plan.change.clone().expect("a change was planned");
            assert_eq!(plan.apply(&self.host).unwrap(), Applied::Done);
            assert_eq!(
                self.change(r),
                None,
                "not idempotent after: {}",
                change.summary
            );
            change
        }
    }

    #[test]
    fn new_file_gets_parents_content_and_defaults() {
        let root = Root::new();
        let r = make(json!({"path": "/etc/app/conf.d/motd", "content": "hello\n"}));
        let c = root.converge(r.as_ref());
        assert_eq!(c.summary, "created");
        assert!(c
            .diff
            .as_deref()
            .unwrap()
            .ends_with("+++ /etc/app/conf.d/motd (desired)\n@@ -0,0 +1 @@\n+hello\n"));
        assert_eq!(
            fs::read(root.p("/etc/app/conf.d/motd")).unwrap(),
            b"hello\n"
        );
        assert_eq!(root.mode("/etc/app/conf.d/motd"), 0o644);
        for dir in ["/etc", "/etc/app", "/etc/app/conf.d"] {
            assert_eq!(root.mode(dir), 0o755, "{dir}");
            assert_eq!(
                (root.lstat(dir).uid(), root.lstat(dir).gid()),
                (0, 0),
                "{dir}"
            );
        }
        let m = root.lstat("/etc/app/conf.d/motd");
        assert_eq!((m.uid(), m.gid()), (0, 0));
    }

    #[test]
    fn changed_content_keeps_unset_mode_and_owner() {
        let root = Root::new();
        root.write("/etc/motd", "old\n");
        root.chmod("/etc/motd", 0o600);
        std::os::unix::fs::chown(root.p("/etc/motd"), Some(1000), Some(1001)).unwrap();
        let c = root.converge(make(json!({"path": "/etc/motd", "content": "new\n"})).as_ref());
        assert_eq!(c.summary, "content changed");
        assert!(
            c.diff.as_deref().unwrap().contains("\n-old\n+new\n"),
            "{:?}",
            c.diff
        );
        assert_eq!(fs::read(root.p("/etc/motd")).unwrap(), b"new\n");
        assert_eq!(root.mode("/etc/motd"), 0o600);
        assert_eq!(
            (root.lstat("/etc/motd").uid(), root.lstat("/etc/motd").gid()),
            (1000, 1001)
        );
    }

    #[test]
    fn same_content_is_unchanged() {
        let root = Root::new();
        root.write("/etc/motd", "same\n");
        root.chmod("/etc/motd", 0o640);
        assert_eq!(
            root.change(make(json!({"path": "/etc/motd", "content": "same\n"})).as_ref()),
            None
        );
    }

    #[test]
    fn mode_only_change_has_no_content_diff() {
        let root = Root::new();
        root.write("/usr/local/bin/run", "#!/bin/sh\n");
        root.chmod("/usr/local/bin/run", 0o644);
        let r =
            make(json!({"path": "/usr/local/bin/run", "content": "#!/bin/sh\n", "mode": "0755"}));
        let c = root.converge(r.as_ref());
        assert_eq!(c, Change::new("mode 0644 -> 0755"));
        assert_eq!(root.mode("/usr/local/bin/run"), 0o755);
    }

    #[test]
    fn owner_and_group_by_name_resolve_in_the_root() {
        let root = Root::with_accounts();
        root.write("/home/pi/kiosk.sh", "x\n");
        std::os::unix::fs::chown(root.p("/home/pi/kiosk.sh"), Some(0), Some(0)).unwrap();
        let r = make(
            json!({"path": "/home/pi/kiosk.sh", "content": "x\n", "owner": "pi", "group": "video"}),
        );
        assert_eq!(
            root.converge(r.as_ref()).summary,
            "owner root -> pi, group root -> video"
        );
        let m = root.lstat("/home/pi/kiosk.sh");
        assert_eq!((m.uid(), m.gid()), (1000, 44));
        // Numbers work too, also as YAML integers.
        let r =
            make(json!({"path": "/home/pi/kiosk.sh", "content": "x\n", "owner": 0, "group": "0"}));
        assert_eq!(
            root.converge(r.as_ref()).summary,
            "owner pi -> 0, group video -> 0"
        );
    }

    #[test]
    fn chown_keeps_setuid_bit_when_mode_is_unset() {
        let root = Root::with_accounts();
        root.write("/usr/local/bin/helper", "bin");
        root.chmod("/usr/local/bin/helper", 0o4755);
        let r = make(json!({"path": "/usr/local/bin/helper", "content": "bin", "owner": "pi"}));
        root.converge(r.as_ref());
        assert_eq!(root.lstat("/usr/local/bin/helper").uid(), 1000);
        assert_eq!(
            root.mode("/usr/local/bin/helper"),
            0o4755,
            "chown cleared setuid and it was not restored"
        );
    }

    #[test]
    fn unknown_owner_is_reported_in_check_mode_and_fails_apply() {
        let root = Root::with_accounts();
        root.write("/etc/motd", "x\n");
        let r = make(json!({"path": "/etc/motd", "content": "y\n", "owner": "ghost"}));
        let plan = r.plan(&root.host).unwrap();
        assert_eq!(
            plan.change.as_ref().unwrap().summary,
            "content changed, owner root -> ghost"
        );
        let err = plan.apply(&root.host).unwrap_err().to_string();
        assert!(
            err.contains("user 'ghost' does not exist on the device"),
            "{err}"
        );
        assert_eq!(
            fs::read(root.p("/etc/motd")).unwrap(),
            b"x\n",
            "nothing changes when the owner is unknown"
        );
        let missing = make(json!({"path": "/etc/new", "content": "y\n", "group": "nogroup"}));
        assert_eq!(
            root.change(missing.as_ref()).unwrap().summary,
            "created, group nogroup"
        );
        assert!(missing.plan(&root.host).unwrap().apply(&root.host).is_err());
        assert!(!root.p("/etc/new").exists());
    }

    #[test]
    fn source_and_template_come_from_the_role() {
        let root = Root::new();
        let mut sources = MapSources::default();
        sources
            .files
            .insert("logo.bin".into(), vec![0x89, b'P', b'N', b'G', 0, 1, 2]);
        sources
            .templates
            .insert("app.conf.j2".into(), "url=https://example.org\n".into());
        let bin = build_with(
            json!({"path": "/usr/share/logo.png", "source": "logo.bin"}),
            &sources,
        )
        .unwrap();
        let c = root.converge(bin.as_ref());
        let d = c.diff.unwrap();
        assert!(d.starts_with("binary content differs (sha256 none→"), "{d}");
        assert_eq!(d.lines().count(), 1);
        assert_eq!(
            fs::read(root.p("/usr/share/logo.png")).unwrap(),
            sources.files["logo.bin"]
        );
        let tpl = build_with(
            json!({"path": "/etc/app.conf", "template": "app.conf.j2"}),
            &sources,
        )
        .unwrap();
        root.converge(tpl.as_ref());
        assert_eq!(
            fs::read_to_string(root.p("/etc/app.conf")).unwrap(),
            "url=https://example.org\n"
        );
    }

    #[test]
    fn binary_content_change_is_one_line() {
        let root = Root::new();
        fs::create_dir_all(root.p("/opt")).unwrap();
        fs::write(root.p("/opt/blob"), [0u8, 1, 2, 3]).unwrap();
        let mut sources = MapSources::default();
        sources.files.insert("blob".into(), vec![0, 1, 2, 4]);
        let r = build_with(json!({"path": "/opt/blob", "source": "blob"}), &sources).unwrap();
        let c = root.converge(r.as_ref());
        assert_eq!(c.summary, "content changed");
        let d = c.diff.unwrap();
        assert!(
            d.starts_with("binary content differs (sha256 ") && !d.contains("none"),
            "{d}"
        );
        assert_eq!(d.lines().count(), 1);
    }

    #[test]
    fn missing_source_or_template_is_a_spec_error() {
        let e = spec_error(json!({"path": "/etc/x", "source": "nope.txt"}));
        assert_eq!(e.key.as_deref(), Some("source"));
        assert!(
            e.message.contains("nope.txt") && e.message.contains("not found"),
            "{}",
            e.message
        );
        let e = spec_error(json!({"path": "/etc/x", "template": "nope.j2"}));
        assert_eq!(e.key.as_deref(), Some("template"));
    }

    #[test]
    fn secret_content_diff_is_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path()).with_redactor(Redactor::new(["hunter22".to_string()]));
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/wpa.conf"), "psk=old-value\n").unwrap();
        let r = make(json!({"path": "/etc/wpa.conf", "content": "psk=hunter22\n", "mode": "0600"}));
        let c = r.plan(&host).unwrap().change.unwrap();
        assert_eq!(
            c.diff.as_deref(),
            Some("content hidden: it contains a secret value")
        );
        assert!(!c.summary.contains("hunter22"));
        // The old content is protected too when the secret is being removed.
        fs::write(dir.path().join("etc/wpa.conf"), "psk=hunter22\n").unwrap();
        let r = make(json!({"path": "/etc/wpa.conf", "content": "psk=other\n"}));
        let c = r.plan(&host).unwrap().change.unwrap();
        assert_eq!(c.diff.as_deref(), Some(diff::HIDDEN));
    }

    #[test]
    fn directory_created_changed_unchanged() {
        let root = Root::with_accounts();
        let r = make(json!({"path": "/srv/data/cache", "state": "directory"}));
        assert_eq!(root.converge(r.as_ref()).summary, "created directory");
        assert!(root.lstat("/srv/data/cache").is_dir());
        assert_eq!(root.mode("/srv/data/cache"), 0o755);
        let r = make(
            json!({"path": "/srv/data/cache", "state": "directory", "mode": 2770, "group": "pi"}),
        );
        assert_eq!(
            root.converge(r.as_ref()).summary,
            "mode 0755 -> 2770, group root -> pi"
        );
        assert_eq!(root.mode("/srv/data/cache"), 0o2770);
        assert_eq!(root.lstat("/srv/data/cache").gid(), 1001);
        fs::write(root.p("/srv/data/cache/x"), "").unwrap();
        assert_eq!(
            root.change(make(json!({"path": "/srv/data/cache", "state": "directory"})).as_ref()),
            None
        );
    }

    #[test]
    fn directory_replaces_a_file_and_says_so() {
        let root = Root::new();
        root.write("/var/lib/app", "i am a file");
        let r = make(json!({"path": "/var/lib/app", "state": "directory", "mode": "0700"}));
        assert_eq!(
            root.converge(r.as_ref()).summary,
            "replaced a file with a directory, mode 0700"
        );
        assert!(root.lstat("/var/lib/app").is_dir());
        assert_eq!(root.mode("/var/lib/app"), 0o700);
    }

    #[test]
    fn file_replaces_a_directory_and_says_so() {
        let root = Root::new();
        root.write("/etc/app.conf/a", "1");
        root.write("/etc/app.conf/b", "2");
        let r = make(json!({"path": "/etc/app.conf", "content": "k=v\n"}));
        let c = root.converge(r.as_ref());
        assert_eq!(
            c.summary,
            "replaced a directory (and the 2 entries in it) with a file"
        );
        assert!(c.diff.unwrap().contains("+k=v"));
        assert!(root.lstat("/etc/app.conf").is_file());
        assert_eq!(root.mode("/etc/app.conf"), 0o644);
    }

    #[test]
    fn file_replaces_a_fifo() {
        let root = Root::new();
        fs::create_dir_all(root.p("/run")).unwrap();
        let c_path =
            std::ffi::CString::new(root.p("/run/pipe").into_os_string().into_encoded_bytes())
                .unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let r = make(json!({"path": "/run/pipe", "content": "x"}));
        assert_eq!(
            root.converge(r.as_ref()).summary,
            "replaced a fifo with a file"
        );
    }

    #[test]
    fn link_created_retargeted_unchanged() {
        let root = Root::new();
        let r =
            make(json!({"path": "/usr/bin/editor", "state": "link", "target": "/usr/bin/nano"}));
        assert_eq!(
            root.converge(r.as_ref()).summary,
            "created link -> /usr/bin/nano"
        );
        assert_eq!(
            fs::read_link(root.p("/usr/bin/editor")).unwrap(),
            Path::new("/usr/bin/nano")
        );
        let r = make(json!({"path": "/usr/bin/editor", "state": "link", "target": "vim.basic"}));
        assert_eq!(
            root.converge(r.as_ref()).summary,
            "link -> vim.basic (was /usr/bin/nano)"
        );
        assert_eq!(
            fs::read_link(root.p("/usr/bin/editor")).unwrap(),
            Path::new("vim.basic")
        );
        let leftovers: Vec<_> = fs::read_dir(root.p("/usr/bin")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp link remains");
    }

    #[test]
    fn link_owner_is_the_links_own() {
        let root = Root::with_accounts();
        root.write("/home/pi/real", "x");
        let r =
            make(json!({"path": "/home/pi/l", "state": "link", "target": "real", "owner": "pi"}));
        assert_eq!(
            root.converge(r.as_ref()).summary,
            "created link -> real, owner pi"
        );
        assert_eq!(root.lstat("/home/pi/l").uid(), 1000);
        assert_eq!(
            root.lstat("/home/pi/real").uid(),
            0,
            "the target's owner is untouched"
        );
    }

    #[test]
    fn link_replaces_a_file_and_a_directory() {
        let root = Root::new();
        root.write("/etc/resolv.conf", "nameserver 1.1.1.1\n");
        let r = make(
            json!({"path": "/etc/resolv.conf", "state": "link", "target": "/run/systemd/resolve/stub-resolv.conf"}),
        );
        assert_eq!(
            root.converge(r.as_ref()).summary,
            "replaced a file with a link -> /run/systemd/resolve/stub-resolv.conf"
        );
        root.write("/opt/current/bin", "");
        let r = make(json!({"path": "/opt/current", "state": "link", "target": "/opt/v2"}));
        assert_eq!(
            root.converge(r.as_ref()).summary,
            "replaced a directory (and the 1 entries in it) with a link -> /opt/v2"
        );
        assert!(root.lstat("/opt/current").file_type().is_symlink());
    }

    #[test]
    fn absent_removes_file_link_and_directory() {
        let root = Root::new();
        root.write("/etc/old.conf", "x");
        root.write("/etc/keep", "kept");
        symlink("/etc/keep", root.p("/etc/alias")).unwrap();
        root.write("/var/cache/app/a/b", "x");
        root.write("/var/cache/app/c", "x");
        fs::create_dir_all(root.p("/var/empty-dir")).unwrap();

        let cases = [
            ("/etc/old.conf", "removed"),
            ("/etc/alias", "removed a link -> /etc/keep"),
            (
                "/var/cache/app",
                "removed directory and everything in it (2 entries)",
            ),
            ("/var/empty-dir", "removed directory"),
        ];
        for (path, summary) in cases {
            let r = make(json!({"path": path, "state": "absent"}));
            assert_eq!(root.converge(r.as_ref()).summary, summary);
            assert!(
                fs::symlink_metadata(root.p(path)).is_err(),
                "{path} still exists"
            );
        }
        assert_eq!(
            fs::read(root.p("/etc/keep")).unwrap(),
            b"kept",
            "removing a link leaves its target"
        );
        assert_eq!(
            root.change(make(json!({"path": "/nothing/here", "state": "absent"})).as_ref()),
            None
        );
    }

    #[test]
    fn mounted_filesystem_is_never_removed() {
        let root = Root::new();
        fs::create_dir_all(root.p("/data")).unwrap();
        let target =
            std::ffi::CString::new(root.p("/data").into_os_string().into_encoded_bytes()).unwrap();
        let fstype = c"tmpfs";
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            eprintln!(
                "skipped: cannot mount a tmpfs here ({})",
                io::Error::last_os_error()
            );
            return;
        }
        root.write("/data/precious", "keep");
        let outcomes: Vec<String> = [
            json!({"path": "/data", "state": "absent"}),
            json!({"path": "/data", "content": "x"}),
        ]
        .into_iter()
        .map(|spec| {
            let r = make(spec);
            r.plan(&root.host)
                .unwrap()
                .apply(&root.host)
                .unwrap_err()
                .to_string()
        })
        .collect();
        let kept = fs::read(root.p("/data/precious"));
        // SAFETY: unmounts what this test mounted.
        unsafe { libc::umount(target.as_ptr()) };
        for err in outcomes {
            assert!(err.contains("is a mount point"), "{err}");
        }
        assert_eq!(kept.unwrap(), b"keep");
    }

    #[test]
    fn symlink_at_final_path_is_replaced_not_followed() {
        let root = Root::new();
        root.write("/etc/shadow", "root:secret-hash:19000::::::\n");
        root.chmod("/etc/shadow", 0o640);
        symlink("/etc/shadow", root.p("/etc/motd")).unwrap();
        let r = make(json!({"path": "/etc/motd", "content": "welcome\n", "mode": "0644"}));
        let c = root.converge(r.as_ref());
        assert_eq!(
            c.summary,
            "replaced a link -> /etc/shadow with a file, mode 0644"
        );
        assert!(
            !c.diff.unwrap().contains("secret-hash"),
            "the link's target was read"
        );
        assert!(root.lstat("/etc/motd").is_file());
        assert_eq!(fs::read(root.p("/etc/motd")).unwrap(), b"welcome\n");
        assert_eq!(
            fs::read(root.p("/etc/shadow")).unwrap(),
            b"root:secret-hash:19000::::::\n"
        );
        assert_eq!(root.mode("/etc/shadow"), 0o640);
        // The same holds for mode-only and directory states.
        symlink("/etc/shadow", root.p("/etc/dir")).unwrap();
        root.converge(make(json!({"path": "/etc/dir", "state": "directory"})).as_ref());
        assert!(root.lstat("/etc/dir").is_dir());
        assert_eq!(root.mode("/etc/shadow"), 0o640);
    }

    #[test]
    fn parent_symlinks_resolve_inside_the_root() {
        let root = Root::new();
        fs::create_dir_all(root.p("/data/etc")).unwrap();
        symlink("/data/etc", root.p("/etc")).unwrap();
        root.converge(make(json!({"path": "/etc/hostname", "content": "dev1\n"})).as_ref());
        assert_eq!(fs::read(root.p("/data/etc/hostname")).unwrap(), b"dev1\n");
    }

    /// A link owned by uid 1000 at `/home/kiosk/bin` (in a home that uid owns), aimed at
    /// `/etc/profile.d`, which holds `kiosk.sh` already. Needs root (lchown); None otherwise.
    fn kiosk_with_swapped_bin() -> Option<Root> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: planting a link owned by another user needs root");
            return None;
        }
        let root = Root::with_accounts();
        root.write("/etc/profile.d/kiosk.sh", "root's own\n");
        fs::create_dir_all(root.p("/home/kiosk")).unwrap();
        std::os::unix::fs::lchown(root.p("/home/kiosk"), Some(1000), Some(1001)).unwrap();
        symlink("/etc/profile.d", root.p("/home/kiosk/bin")).unwrap();
        std::os::unix::fs::lchown(root.p("/home/kiosk/bin"), Some(1000), Some(1001)).unwrap();
        Some(root)
    }

    #[test]
    fn user_symlink_swapped_in_for_a_parent_is_refused() {
        let Some(root) = kiosk_with_swapped_bin() else {
            return;
        };
        let r =
            make(json!({"path": "/home/kiosk/bin/kiosk.sh", "content": "evil\n", "owner": "pi"}));
        let err = r.plan(&root.host).err().expect("refused").to_string();
        assert!(
            err.contains("/home/kiosk/bin/kiosk.sh: its parent /home/kiosk/bin is a symlink (-> /etc/profile.d) owned by pi (uid 1000)"),
            "{err}"
        );
        assert!(err.contains("chown -h root:root /home/kiosk/bin"), "{err}");
        assert_eq!(
            fs::read(root.p("/etc/profile.d/kiosk.sh")).unwrap(),
            b"root's own\n"
        );
        let gone = make(json!({"path": "/home/kiosk/bin/kiosk.sh", "state": "absent"}));
        assert!(
            gone.plan(&root.host).is_err(),
            "absent must not look through the link"
        );
        assert!(root.p("/etc/profile.d/kiosk.sh").exists());
    }

    #[test]
    fn a_parent_swapped_after_the_check_does_not_redirect_the_write() {
        let Some(root) = kiosk_with_swapped_bin() else {
            return;
        };
        // The check saw a real directory; the user swaps in the link before the write.
        fs::remove_file(root.p("/home/kiosk/bin")).unwrap();
        fs::create_dir(root.p("/home/kiosk/bin")).unwrap();
        let r = make(json!({"path": "/home/kiosk/bin/kiosk.sh", "content": "new\n"}));
        let plan = r.plan(&root.host).unwrap();
        fs::remove_dir(root.p("/home/kiosk/bin")).unwrap();
        symlink("/etc/profile.d", root.p("/home/kiosk/bin")).unwrap();
        std::os::unix::fs::lchown(root.p("/home/kiosk/bin"), Some(1000), Some(1001)).unwrap();
        assert!(plan.apply(&root.host).is_err());
        assert_eq!(
            fs::read(root.p("/etc/profile.d/kiosk.sh")).unwrap(),
            b"root's own\n"
        );
    }

    #[test]
    fn root_owned_relative_link_in_a_parent_is_followed_as_merged_usr_needs() {
        let root = Root::new();
        fs::create_dir_all(root.p("/usr/lib")).unwrap();
        symlink("usr/lib", root.p("/lib")).unwrap();
        root.converge(make(json!({"path": "/lib/tend/x.conf", "content": "x\n"})).as_ref());
        assert_eq!(fs::read(root.p("/usr/lib/tend/x.conf")).unwrap(), b"x\n");
        root.converge(make(json!({"path": "/lib/tend/x.conf", "state": "absent"})).as_ref());
        assert!(!root.p("/usr/lib/tend/x.conf").exists());
    }

    #[test]
    fn parent_that_is_a_file_is_a_clear_error() {
        let root = Root::new();
        root.write("/etc/app", "file");
        let r = make(json!({"path": "/etc/app/conf", "content": "x"}));
        let err = r.plan(&root.host).err().unwrap().to_string();
        assert!(
            err.contains("its parent /etc/app is not a directory"),
            "{err}"
        );
        // Nothing can be there, so `absent` is already true.
        let gone = make(json!({"path": "/etc/app/conf", "state": "absent"}));
        assert_eq!(root.change(gone.as_ref()), None);
    }

    #[test]
    fn unit_file_changes_set_the_units_flag() {
        let root = Root::new();
        let other = make(json!({"path": "/etc/default/app", "content": "X=1\n"}));
        root.converge(other.as_ref());
        assert!(!root.host.flags().units_changed);
        let unit =
            make(json!({"path": "/etc/systemd/system/app.service", "content": "[Service]\n"}));
        let mut check = Host::new(root.dir.path());
        check.check = true;
        assert!(unit.plan(&check).unwrap().change.is_some());
        assert!(
            !check.flags().units_changed,
            "planning alone changes nothing"
        );
        root.converge(unit.as_ref());
        assert!(root.host.flags().units_changed);
        let removed = Root::new();
        removed.write("/lib/systemd/system/old.service", "[Unit]\n");
        removed.converge(
            make(json!({"path": "/lib/systemd/system/old.service", "state": "absent"})).as_ref(),
        );
        assert!(removed.host.flags().units_changed);
    }

    #[test]
    fn bad_specs_name_their_key() {
        let cases = [
            (
                json!({"path": "etc/motd", "content": ""}),
                "path",
                "must be absolute",
            ),
            (
                json!({"path": "/etc/../root/x", "content": ""}),
                "path",
                "`..`",
            ),
            (
                json!({"path": "/", "state": "directory"}),
                "path",
                "root directory",
            ),
            (
                json!({"path": "/x", "content": "a", "source": "b"}),
                "source",
                "keep exactly one",
            ),
            (
                json!({"path": "/x", "source": "a", "template": "b"}),
                "template",
                "keep exactly one",
            ),
            (
                json!({"path": "/x", "content": "a", "target": "/y"}),
                "target",
                "only applies to `state: link`",
            ),
            (
                json!({"path": "/x", "state": "link"}),
                "target",
                "needs `target:`",
            ),
            (
                json!({"path": "/x", "state": "link", "target": "/y", "mode": "0644"}),
                "mode",
                "no mode",
            ),
            (
                json!({"path": "/x", "state": "directory", "content": "a"}),
                "content",
                "only applies to `state: file`",
            ),
            (
                json!({"path": "/x", "state": "absent", "owner": "pi"}),
                "owner",
                "state: absent",
            ),
            (
                json!({"path": "/x", "state": "gone"}),
                "state",
                "unknown state",
            ),
            (
                json!({"path": "/x", "content": "a", "mode": "0888"}),
                "mode",
                "8 or 9",
            ),
            (
                json!({"path": "/x", "content": "a", "mode": 689}),
                "mode",
                "8 or 9",
            ),
            (
                json!({"path": "/x", "content": "a", "mode": "u=rw,g=r"}),
                "mode",
                "symbolic",
            ),
            (
                json!({"path": "/x", "content": "a", "mode": "12345"}),
                "mode",
                "more than four",
            ),
            (
                json!({"path": "/x", "content": "a", "mode": -1}),
                "mode",
                "not an octal mode",
            ),
            (
                json!({"path": "/x", "content": "a", "mode": 6.44}),
                "mode",
                "not an octal mode",
            ),
            (
                json!({"path": "/x", "content": 42}),
                "content",
                "must be text",
            ),
            (
                json!({"path": "/x", "content": "a", "owner": "a b"}),
                "owner",
                "not a valid name",
            ),
            (
                json!({"path": "/x", "content": "a", "group": true}),
                "group",
                "name or a numeric id",
            ),
            (
                json!({"path": "/x", "content": "a", "recurse": true}),
                "recurse",
                "unknown field",
            ),
        ];
        for (spec, key, text) in cases {
            let e = spec_error(spec.clone());
            assert_eq!(e.key.as_deref(), Some(key), "{spec}: {}", e.message);
            assert!(e.message.contains(text), "{spec}: {}", e.message);
        }
        let e = spec_error(json!({"path": "/x"}));
        assert!(
            e.message.contains("content") && e.message.contains("source"),
            "{}",
            e.message
        );
    }

    #[test]
    fn modes_read_as_octal_from_strings_and_integers() {
        for (v, want) in [
            (json!("0644"), 0o644),
            (json!("644"), 0o644),
            (json!("0o750"), 0o750),
            (json!("4755"), 0o4755),
            (json!("00644"), 0o644),
            (json!(644), 0o644),
            (json!(755), 0o755),
            (json!(0), 0),
        ] {
            assert_eq!(parse_mode(&v).unwrap(), want, "{v}");
        }
    }

    #[test]
    fn path_is_normalised_for_its_id() {
        let r = make(json!({"path": "/etc//motd/", "content": ""}));
        assert_eq!(r.id(), "/etc/motd");
        assert_eq!(r.kind(), "file");
    }
}
