//! Pipeline step "load": read a fleet repo from a [`Tree`] into typed structs.
//!
//! Loading is lazy by design: a device reads fleet.yaml, its own device file, its groups and its
//! roles, never the other 100,000 device files. `tend validate` asks for everything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::device::identity::check_device_id;
use crate::diag::Diagnostic;
use crate::fleet::model::{
    parse_format, DeviceFile, FleetFile, FormatOnly, GroupFile, RoleFile, FORMAT_MAJOR,
};
use crate::source::tree::{EntryKind, Tree, TreeError};
use crate::yaml;

pub const FLEET_FILE: &str = "fleet.yaml";

pub struct Fleet<'t> {
    pub tree: &'t dyn Tree,
    pub file: Arc<FleetFile>,
    parsed: Option<&'t Parsed>,
}

/// fleet.yaml and the role.yaml files, parsed once for the renders of many devices from one tree
/// (`tend validate`), where parsing them again for each device was 40 % of the time.
#[derive(Default)]
pub struct Parsed {
    fleet: Mutex<Option<Arc<FleetFile>>>,
    roles: Memo<RoleFile>,
    groups: Memo<GroupFile>,
    envs: Mutex<HashMap<String, Arc<crate::fleet::render::RoleEnv>>>,
}

impl Parsed {
    /// Drops the memo's copies of the role files (the resolved roles keep theirs).
    pub fn forget_roles(&self) {
        self.roles.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Role `role`'s template environment, which compiles each template file once.
    pub fn role_env(
        &self,
        role: &str,
        make: impl FnOnce() -> crate::fleet::render::RoleEnv,
    ) -> Arc<crate::fleet::render::RoleEnv> {
        self.envs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(role.to_string())
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }
}

/// Parsed files by name (None: the file does not exist).
type Memo<T> = Mutex<HashMap<String, Option<Arc<T>>>>;

/// `read` through `cache` (when there is one), keyed by `name`; only successes are kept.
fn cached<T>(
    cache: Option<&Memo<T>>,
    name: &str,
    read: impl FnOnce() -> Result<Option<T>, Diagnostic>,
) -> Result<Option<Arc<T>>, Diagnostic> {
    let Some(cache) = cache else {
        return Ok(read()?.map(Arc::new));
    };
    if let Some(known) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
        return Ok(known.clone());
    }
    let file = read()?.map(Arc::new);
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_string(), file.clone());
    Ok(file)
}

pub fn tree_error(e: TreeError) -> Diagnostic {
    let fix = e.fix();
    let d = match e {
        TreeError::Invalid { path, reason } => Diagnostic::new(path, 0, reason),
        TreeError::TooLarge { path, size } => {
            Diagnostic::new(path, 0, crate::source::tree::too_large(size))
        }
        TreeError::Io { path, source } => Diagnostic::new(path, 0, source.to_string()),
    };
    match fix {
        Some(f) => d.fix(f),
        None => d,
    }
}

/// Names of groups and roles: also file and directory names, so nothing that could be a path.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("'{name}' is not a valid {kind} name: use letters, digits, '-', '_' and '.', starting with a letter or digit"))
    }
}

fn read_yaml<T: serde::de::DeserializeOwned>(
    tree: &dyn Tree,
    path: &str,
) -> Result<Option<T>, Diagnostic> {
    match tree.read(path).map_err(tree_error)? {
        None => Ok(None),
        Some(bytes) => yaml::parse(path, &bytes).map(Some),
    }
}

impl<'t> Fleet<'t> {
    /// [`Fleet::open`], reusing and filling `parsed`.
    pub fn open_parsed(tree: &'t dyn Tree, parsed: Option<&'t Parsed>) -> Result<Self, Diagnostic> {
        let Some(cache) = parsed else {
            return Self::open(tree);
        };
        let known = cache
            .fleet
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let file = match known {
            Some(file) => file,
            None => {
                let file = Self::open(tree)?.file;
                *cache.fleet.lock().unwrap_or_else(|p| p.into_inner()) = Some(file.clone());
                file
            }
        };
        Ok(Self { tree, file, parsed })
    }

    pub fn open(tree: &'t dyn Tree) -> Result<Self, Diagnostic> {
        let bytes = tree.read(FLEET_FILE).map_err(tree_error)?.ok_or_else(|| {
            Diagnostic::new(FLEET_FILE, 0, format!("not found in {}", tree.describe()))
                .fix("point tend at the top of a fleet repo, which holds fleet.yaml")
        })?;
        let format: FormatOnly = yaml::parse(FLEET_FILE, &bytes)?;
        let Some(format) = format.format else {
            return Err(
                Diagnostic::new(FLEET_FILE, 1, "`format` is missing").fix(format!(
                    "add `format: {FORMAT_MAJOR}` at the top of fleet.yaml"
                )),
            );
        };
        let line = format.referenced.line();
        match parse_format(&format.value) {
            Some((major, _)) if major == FORMAT_MAJOR => {}
            Some((major, minor)) if major > FORMAT_MAJOR => {
                return Err(Diagnostic::new(
                    FLEET_FILE,
                    line,
                    format!(
                        "the fleet repo uses format {major}.{minor}, but this tend ({}) reads format {FORMAT_MAJOR}",
                        env!("CARGO_PKG_VERSION")
                    ),
                )
                .fix("upgrade tend on this device before the repo moves to the new format"));
            }
            _ => {
                return Err(Diagnostic::new(
                    FLEET_FILE,
                    line,
                    format!("`format: {}` is not a format this tend reads", format.value),
                )
                .fix(format!("write `format: {FORMAT_MAJOR}`")));
            }
        }
        let file = Arc::new(yaml::parse(FLEET_FILE, &bytes)?);
        Ok(Self {
            tree,
            file,
            parsed: None,
        })
    }

    pub fn device_path(id: &str) -> String {
        format!("devices/{id}.yaml")
    }

    pub fn device(&self, id: &str) -> Result<Option<DeviceFile>, Diagnostic> {
        check_device_id(id).map_err(|m| Diagnostic::new("devices/", 0, m))?;
        read_yaml(self.tree, &Self::device_path(id))
    }

    pub fn group_path(name: &str) -> String {
        format!("groups/{name}.yaml")
    }

    pub fn group(&self, name: &str) -> Result<Option<Arc<GroupFile>>, Diagnostic> {
        cached(self.parsed.map(|p| &p.groups), name, || {
            read_yaml(self.tree, &Self::group_path(name))
        })
    }

    pub fn role_path(name: &str) -> String {
        format!("roles/{name}/role.yaml")
    }

    pub fn role(&self, name: &str) -> Result<Option<Arc<RoleFile>>, Diagnostic> {
        cached(self.parsed.map(|p| &p.roles), name, || {
            read_yaml(self.tree, &Self::role_path(name))
        })
    }

    /// Names of the YAML files in `dir` (without `.yaml`), and diagnostics for files tend would
    /// otherwise ignore silently (e.g. `.yml`).
    pub fn list_yaml(&self, dir: &str) -> Result<(Vec<String>, Vec<Diagnostic>), Diagnostic> {
        let mut names = Vec::new();
        let mut notes = Vec::new();
        for (name, kind) in self.tree.list(dir).map_err(tree_error)? {
            if kind != EntryKind::File || name.starts_with('.') {
                continue;
            }
            if let Some(stem) = name.strip_suffix(".yaml") {
                names.push(stem.to_string());
            } else if name.ends_with(".yml") {
                notes.push(
                    Diagnostic::new(
                        format!("{dir}/{name}"),
                        0,
                        "tend reads only `.yaml` files; this one is ignored",
                    )
                    .fix(format!("rename it to {}", name.replace(".yml", ".yaml"))),
                );
            }
        }
        Ok((names, notes))
    }
}
