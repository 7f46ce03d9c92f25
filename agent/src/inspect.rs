//! `tend validate` and `tend render`: offline views of a fleet repo, for its CI and its authors.
//!
//! Validation renders devices with placeholder values for vars that only exist on devices (local
//! and secret vars), because the repo's CI never sees a device's secrets.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use crate::diag::{Diagnostic, Diagnostics};
use crate::fleet::facts::Facts;
use crate::fleet::load::{Fleet, Parsed};
use crate::fleet::model::FactsFixture;
use crate::fleet::validate::{validate, Inputs, Validated};
use crate::fleet::vars::Mode;
use crate::source::tree::{DirTree, Tree};

/// Facts used when a repo is checked away from any device.
pub fn offline_facts(device_id: &str) -> Facts {
    Facts {
        os_id: "debian".into(),
        os_codename: "bookworm".into(),
        os_version_id: "12".into(),
        architecture: "arm64".into(),
        hostname: device_id.into(),
        device_id: device_id.into(),
        device_type: None,
        interfaces: Vec::new(),
        tend_version: env!("CARGO_PKG_VERSION").into(),
    }
}

pub fn open(dir: &Path) -> Result<Arc<dyn Tree>, Diagnostic> {
    DirTree::new(dir)
        .map(|t| Arc::new(t) as Arc<dyn Tree>)
        .map_err(|e| {
            Diagnostic::new(dir.display().to_string(), 0, e.to_string())
                .fix("pass the path of a fleet repo")
        })
}

/// Offline facts for a device: the defaults, with `facts/<device_type>.yaml` over them when the
/// device file names its type.
pub fn fixture_facts(
    tree: &Arc<dyn Tree>,
    id: &str,
    parsed: Option<&Parsed>,
) -> Result<Facts, Diagnostic> {
    let mut facts = offline_facts(id);
    let Ok(fleet) = Fleet::open_parsed(tree.as_ref(), parsed) else {
        return Ok(facts);
    };
    let Ok(Some(device)) = fleet.device(id) else {
        return Ok(facts);
    };
    let Some(t) = device.device_type else {
        return Ok(facts);
    };
    crate::fleet::load::check_name("device type", &t.value)
        .map_err(|m| Diagnostic::new(Fleet::device_path(id), t.referenced.line(), m))?;
    facts.device_type = Some(t.value.clone());
    let path = format!("facts/{}.yaml", t.value);
    let Some(bytes) = tree.read(&path).map_err(crate::fleet::load::tree_error)? else {
        return Ok(facts);
    };
    let f: FactsFixture = crate::yaml::parse(&path, &bytes)?;
    apply_fixture(&mut facts, f);
    Ok(facts)
}

/// Sets every fact the fixture gives over `facts`.
pub fn apply_fixture(facts: &mut Facts, f: FactsFixture) {
    let set = |field: &mut String, v: Option<String>| {
        if let Some(v) = v {
            *field = v;
        }
    };
    set(&mut facts.os_id, f.os_id);
    set(&mut facts.os_codename, f.os_codename);
    set(&mut facts.os_version_id, f.os_version_id);
    set(&mut facts.architecture, f.architecture);
    set(&mut facts.hostname, f.hostname);
    if !f.interfaces.is_empty() {
        facts.interfaces = f
            .interfaces
            .into_iter()
            .map(|i| crate::fleet::facts::Interface {
                name: i.name,
                mac: i.mac,
                ipv4: i.ipv4,
                ipv6: i.ipv6,
            })
            .collect();
    }
}

/// Validates the device's desired state; `keep_specs` for `tend render`, which prints them.
fn render_device(
    tree: &Arc<dyn Tree>,
    id: &str,
    parsed: Option<&Parsed>,
    keep_specs: bool,
) -> Result<Validated, Diagnostics> {
    let facts = fixture_facts(tree, id, parsed)?;
    render_with_facts(tree, id, parsed, facts, keep_specs)
}

/// Renders one device as `tend validate` does (placeholders for local and secret vars), with
/// the given facts.
pub fn render_with_facts(
    tree: &Arc<dyn Tree>,
    id: &str,
    parsed: Option<&Parsed>,
    facts: Facts,
    keep_specs: bool,
) -> Result<Validated, Diagnostics> {
    validate(Inputs {
        tree: tree.clone(),
        device_id: id.to_string(),
        facts,
        root: Path::new("/nonexistent"),
        vars_files: Vec::new(),
        mode: Mode::Placeholders,
        parsed,
        max_desired_bytes: crate::device::config::DEFAULT_MAX_DESIRED_BYTES,
        keep_specs,
    })
}

/// The ids of the tree's device files. Files whose name is not a valid device id are reported
/// into `all` and left out; None when the fleet itself does not load (its diagnostics in `all`).
pub fn device_ids(
    tree: &Arc<dyn Tree>,
    all: &mut Diagnostics,
) -> Result<Option<Vec<String>>, Diagnostic> {
    let fleet = match Fleet::open(tree.as_ref()) {
        Ok(f) => f,
        Err(d) => {
            all.push(d);
            return Ok(None);
        }
    };
    let (mut ids, notes) = fleet.list_yaml("devices")?;
    for n in notes {
        all.push(n);
    }
    for bad in ids
        .iter()
        .filter(|id| crate::device::identity::check_device_id(id).is_err())
    {
        all.push(
            Diagnostic::new(
                format!("devices/{bad}.yaml"),
                0,
                "the file name is not a valid device id",
            )
            .fix("name device files <device-id>.yaml, with letters, digits and '-_.:@'"),
        );
    }
    ids.retain(|id| crate::device::identity::check_device_id(id).is_ok());
    Ok(Some(ids))
}

/// Validates the named devices, or every device file plus a device with no file of its own.
/// Returns every diagnostic found, deduplicated.
pub fn validate_repo(dir: &Path, devices: &[String]) -> Result<(usize, Diagnostics), Diagnostic> {
    let tree = open(dir)?;
    let mut all = Diagnostics::default();
    let ids: Vec<String> = if devices.is_empty() {
        let Some(mut ids) = device_ids(&tree, &mut all)? else {
            return Ok((0, all));
        };
        // A device without a file of its own gets the fleet-wide roles: check that too.
        ids.push("tend-validate-default-device".into());
        ids
    } else {
        devices.to_vec()
    };
    let parsed = Parsed::default();
    for id in &ids {
        if let Err(ds) = render_device(&tree, id, Some(&parsed), false) {
            for d in ds.0 {
                all.push(d);
            }
        }
    }
    Ok((ids.len(), all))
}

pub fn render(dir: &Path, device: &str, out: &mut dyn Write) -> Result<(), Diagnostics> {
    let tree = open(dir)?;
    let v = render_device(&tree, device, None, true)?;
    let doc = json!({
        "device": v.device_id,
        "groups": v.groups,
        "subscribed_branch": v.subscribed_branch,
        "facts": v.facts,
        "vars": v.vars.redacted(),
        "var_origins": v.vars.origin,
        "roles": v.desired.roles.iter().map(|r| json!({"name": r.name, "depends": r.depends})).collect::<Vec<_>>(),
        "resources": v.specs,
    });
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    let _ = writeln!(out, "{text}");
    Ok(())
}
