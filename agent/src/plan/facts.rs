//! The facts a plan renders each device with.
//!
//! Offline, a device has the facts `tend validate` gives it: defaults, with the fleet's
//! `facts/<device_type>.yaml` over them. A fleet whose templates depend on what the devices
//! really are (addresses, hostnames) can hand `tend plan --facts DIR` an inventory export: one
//! file per device, `DIR/<device-id>.json` or `.yaml`, holding the facts the device reported (the
//! `facts` object of `tend render`). Other keys are ignored, since an export carries more than
//! facts; a device without a file keeps its offline facts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::diag::Diagnostic;
use crate::fleet::facts::Facts;
use crate::fleet::load::Parsed;
use crate::fleet::model::{FactsFixture, FixtureInterface};
use crate::inspect::{apply_fixture, fixture_facts};
use crate::source::tree::Tree;

/// A device's reported facts, as an inventory export holds them.
#[derive(Debug, Default, Deserialize)]
struct Exported {
    os_id: Option<String>,
    os_codename: Option<String>,
    os_version_id: Option<String>,
    architecture: Option<String>,
    hostname: Option<String>,
    device_type: Option<String>,
    #[serde(default)]
    interfaces: Vec<FixtureInterface>,
}

/// Where the facts come from: the fleet's files only, or an export over them.
pub struct FactsSource {
    pub export: Option<PathBuf>,
}

impl FactsSource {
    /// The facts of device `id` for a render of `tree`.
    pub fn facts(
        &self,
        tree: &Arc<dyn Tree>,
        id: &str,
        parsed: &Parsed,
    ) -> Result<Facts, Diagnostic> {
        let mut facts = fixture_facts(tree, id, Some(parsed))?;
        let Some(dir) = &self.export else {
            return Ok(facts);
        };
        let Some((path, bytes)) = read_export(dir, id)? else {
            return Ok(facts);
        };
        let e: Exported = crate::yaml::parse(&path, &bytes)?;
        if facts.device_type.is_none() {
            facts.device_type = e.device_type;
        }
        apply_fixture(
            &mut facts,
            FactsFixture {
                os_id: e.os_id,
                os_codename: e.os_codename,
                os_version_id: e.os_version_id,
                architecture: e.architecture,
                hostname: e.hostname,
                interfaces: e.interfaces,
            },
        );
        Ok(facts)
    }
}

fn read_export(dir: &Path, id: &str) -> Result<Option<(String, Vec<u8>)>, Diagnostic> {
    for ext in ["json", "yaml"] {
        let path = dir.join(format!("{id}.{ext}"));
        match std::fs::read(&path) {
            Ok(bytes) => return Ok(Some((path.display().to_string(), bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(
                    Diagnostic::new(path.display().to_string(), 0, e.to_string())
                        .fix("make the facts export readable, or leave out --facts"),
                )
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::tree::DirTree;

    #[test]
    fn an_exported_device_file_overrides_the_offline_facts_and_ignores_other_keys() {
        let repo = tempfile::tempdir().unwrap();
        std::fs::write(repo.path().join("fleet.yaml"), "format: 1\n").unwrap();
        let export = tempfile::tempdir().unwrap();
        std::fs::write(
            export.path().join("dev1.json"),
            r#"{"hostname": "kiosk-7", "architecture": "armhf", "device_type": "pi3",
                "tend_version": "0.1", "interfaces": [{"name": "eth0", "ipv4": ["10.0.0.7"], "ipv6": []}]}"#,
        )
        .unwrap();
        let tree: Arc<dyn Tree> = Arc::new(DirTree::new(repo.path()).unwrap());
        let parsed = Parsed::default();
        let source = FactsSource {
            export: Some(export.path().to_path_buf()),
        };
        let f = source.facts(&tree, "dev1", &parsed).unwrap();
        assert_eq!(f.hostname, "kiosk-7");
        assert_eq!(f.architecture, "armhf");
        assert_eq!(f.device_type.as_deref(), Some("pi3"));
        assert_eq!(f.interfaces[0].ipv4, ["10.0.0.7"]);
        let other = source.facts(&tree, "dev2", &parsed).unwrap();
        assert_eq!(other.hostname, "dev2");
    }
}
