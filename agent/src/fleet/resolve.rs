//! Which groups and roles apply to a device, in which order.
//!
//! Groups, lowest precedence first: the device-type group (`groups/<device_type>.yaml`, if the
//! repo has one), then the groups the device file lists, in the order listed. Roles: fleet roles,
//! then the groups' roles, then the device's own; each role once, its `depends` before it.

use std::collections::BTreeSet;

use crate::diag::{Diagnostic, Diagnostics};
use crate::fleet::load::{check_name, Fleet, FLEET_FILE};
use crate::fleet::model::{DeviceFile, GroupFile, RoleFile, Spanned};

pub struct LoadedGroup {
    pub name: String,
    pub file: std::sync::Arc<GroupFile>,
}

pub struct LoadedRole {
    pub name: String,
    pub file: std::sync::Arc<RoleFile>,
}

impl LoadedRole {
    pub fn path(&self) -> String {
        Fleet::role_path(&self.name)
    }
}

pub struct Resolved {
    pub device_id: String,
    pub device: Option<DeviceFile>,
    pub groups: Vec<LoadedGroup>,
    /// Dependencies first.
    pub roles: Vec<LoadedRole>,
}

/// A role named somewhere, with where it was named.
struct RoleRef {
    name: String,
    file: String,
    line: u64,
}

fn refs(names: &[Spanned<String>], file: &str) -> Vec<RoleRef> {
    names
        .iter()
        .map(|n| RoleRef {
            name: n.value.clone(),
            file: file.to_string(),
            line: n.referenced.line(),
        })
        .collect()
}

pub fn resolve(
    fleet: &Fleet,
    device_id: &str,
    device_type: Option<&str>,
    diags: &mut Diagnostics,
) -> Resolved {
    let device_path = Fleet::device_path(device_id);
    let device = fleet.device(device_id).unwrap_or_else(|d| {
        diags.push(d);
        None
    });

    let groups = groups(fleet, device_id, device.as_ref(), device_type, diags);

    let mut wanted = refs(&fleet.file.roles, FLEET_FILE);
    for g in &groups {
        wanted.extend(refs(&g.file.roles, &Fleet::group_path(&g.name)));
    }
    if let Some(d) = &device {
        wanted.extend(refs(&d.roles, &device_path));
    }

    let mut order = Order {
        fleet,
        roles: Vec::new(),
        visiting: Vec::new(),
        failed: BTreeSet::new(),
    };
    for r in wanted {
        order.visit(r, diags);
    }
    Resolved {
        device_id: device_id.to_string(),
        device,
        groups,
        roles: order.roles,
    }
}

/// The groups of device `device_id` (its file `device`), lowest precedence first: its
/// device-type group, if the repo has one, then those its file lists.
pub fn groups(
    fleet: &Fleet,
    device_id: &str,
    device: Option<&DeviceFile>,
    device_type: Option<&str>,
    diags: &mut Diagnostics,
) -> Vec<LoadedGroup> {
    let device_path = Fleet::device_path(device_id);
    let mut groups = Vec::new();
    if let Some(t) = device_type.filter(|t| check_name("group", t).is_ok()) {
        match fleet.group(t) {
            Ok(Some(file)) => groups.push(LoadedGroup {
                name: t.to_string(),
                file,
            }),
            Ok(None) => {}
            Err(d) => diags.push(d),
        }
    }
    for g in device.iter().flat_map(|d| d.groups.iter()) {
        let line = g.referenced.line();
        if let Err(m) = check_name("group", &g.value) {
            diags.push(Diagnostic::new(&device_path, line, m));
            continue;
        }
        if groups.iter().any(|lg| lg.name == g.value) {
            continue;
        }
        match fleet.group(&g.value) {
            Ok(Some(file)) => groups.push(LoadedGroup {
                name: g.value.clone(),
                file,
            }),
            Ok(None) => diags.push(
                Diagnostic::new(
                    &device_path,
                    line,
                    format!("group '{}' does not exist", g.value),
                )
                .fix(format!(
                    "create {} or remove the group from this list",
                    Fleet::group_path(&g.value)
                )),
            ),
            Err(d) => diags.push(d),
        }
    }
    groups
}

struct Order<'a, 't> {
    fleet: &'a Fleet<'t>,
    roles: Vec<LoadedRole>,
    visiting: Vec<String>,
    failed: BTreeSet<String>,
}

impl Order<'_, '_> {
    fn visit(&mut self, r: RoleRef, diags: &mut Diagnostics) {
        if self.roles.iter().any(|l| l.name == r.name) || self.failed.contains(&r.name) {
            return;
        }
        if let Err(m) = check_name("role", &r.name) {
            diags.push(Diagnostic::new(&r.file, r.line, m));
            return;
        }
        if let Some(pos) = self.visiting.iter().position(|v| *v == r.name) {
            let mut cycle = self.visiting[pos..].to_vec();
            cycle.push(r.name.clone());
            diags.push(
                Diagnostic::new(
                    &r.file,
                    r.line,
                    format!(
                        "roles depend on each other in a cycle: {}",
                        cycle.join(" -> ")
                    ),
                )
                .fix("remove one of these `depends` entries"),
            );
            return;
        }
        let file = match self.fleet.role(&r.name) {
            Ok(Some(f)) => f,
            Ok(None) => {
                diags.push(
                    Diagnostic::new(&r.file, r.line, format!("role '{}' does not exist", r.name))
                        .fix(format!(
                            "create {} or correct the name",
                            Fleet::role_path(&r.name)
                        )),
                );
                self.failed.insert(r.name);
                return;
            }
            Err(d) => {
                diags.push(d);
                self.failed.insert(r.name);
                return;
            }
        };
        self.visiting.push(r.name.clone());
        let path = Fleet::role_path(&r.name);
        for dep in refs(&file.depends, &path) {
            self.visit(dep, diags);
        }
        self.visiting.pop();
        if !self.roles.iter().any(|l| l.name == r.name) {
            self.roles.push(LoadedRole { name: r.name, file });
        }
    }
}
