//! `group`: a local group in /etc/group of the managed root.
//!
//! ```yaml
//! - group: kiosk       # the group name
//!   gid: 1100          # optional; when set, an existing group is renumbered to it
//!   system: false      # optional; only used when the group is created (groupadd --system)
//!   state: present     # present (default) | absent
//! ```
//!
//! The state is read straight from the root's /etc/group (never the host's NSS); changes go through
//! the shadow tools run inside the root (`groupadd`, `groupmod`, `groupdel`), so their locking,
//! gshadow handling and nscd invalidation stay theirs. Renumbering a group does not chown files:
//! files owned by the old gid keep it (groupmod(8)).

use serde::Deserialize;

use crate::error::{ResourceError, SpecError};
use crate::host::Host;
use crate::platform::accounts::{self, GroupEntry};
use crate::resource::{Applied, Change, DynResource, Resource};
use crate::spec::{parse_spec, ResourceType, Sources};

pub const TYPE: ResourceType = ResourceType {
    name: "group",
    primary: "name",
    names: &["name"],
    build,
};

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    #[default]
    Present,
    Absent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    name: String,
    gid: Option<u32>,
    #[serde(default)]
    system: bool,
    #[serde(default)]
    state: Presence,
}

#[derive(Debug)]
pub struct Group {
    name: String,
    gid: Option<u32>,
    system: bool,
    state: Presence,
}

fn build(spec: serde_json::Value, _: &dyn Sources) -> Result<Box<dyn DynResource>, SpecError> {
    let spec: Spec = parse_spec(spec)?;
    accounts::check_name(&spec.name).map_err(|m| SpecError::at_key("group", m))?;
    Ok(Box::new(Group {
        name: spec.name,
        gid: spec.gid,
        system: spec.system,
        state: spec.state,
    }))
}

impl Resource for Group {
    type Actual = Option<GroupEntry>;

    fn kind(&self) -> &'static str {
        "group"
    }

    fn id(&self) -> String {
        self.name.clone()
    }

    fn read(&self, host: &Host) -> Result<Self::Actual, ResourceError> {
        Ok(accounts::groups(host)?
            .into_iter()
            .find(|g| g.name == self.name))
    }

    fn diff(&self, actual: &Self::Actual, _: &Host) -> Option<Change> {
        match (self.state, actual) {
            (Presence::Absent, None) => None,
            (Presence::Absent, Some(_)) => Some(Change::new(format!("remove group {}", self.name))),
            (Presence::Present, None) => {
                let gid = self.gid.map(|g| format!(" (gid {g})")).unwrap_or_default();
                Some(Change::new(format!("create group {}{gid}", self.name)))
            }
            (Presence::Present, Some(entry)) => match self.gid {
                Some(gid) if gid != entry.gid => {
                    Some(Change::new(format!("gid {} -> {gid}", entry.gid)))
                }
                _ => None,
            },
        }
    }

    fn apply(&self, actual: Self::Actual, host: &Host) -> Result<Applied, ResourceError> {
        let argv = self.command_for(actual.as_ref());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        accounts::run_tool(host, &argv)?;
        Ok(Applied::Done)
    }
}

impl Group {
    /// The one shadow-tool invocation that turns `actual` into the desired state.
    fn command_for(&self, actual: Option<&GroupEntry>) -> Vec<String> {
        let mut argv: Vec<String> = Vec::new();
        match (self.state, actual) {
            (Presence::Absent, _) => argv.push("groupdel".into()),
            (Presence::Present, None) => {
                argv.push("groupadd".into());
                if self.system {
                    argv.push("--system".into());
                }
                if let Some(gid) = self.gid {
                    argv.extend(["--gid".into(), gid.to_string()]);
                }
            }
            (Presence::Present, Some(_)) => {
                argv.push("groupmod".into());
                if let Some(gid) = self.gid {
                    argv.extend(["--gid".into(), gid.to_string()]);
                }
            }
        }
        argv.push(self.name.clone());
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::NoSources;
    use serde_json::json;

    fn group(spec: serde_json::Value) -> Group {
        let spec: Spec = parse_spec(spec).unwrap();
        Group {
            name: spec.name,
            gid: spec.gid,
            system: spec.system,
            state: spec.state,
        }
    }

    fn root_with_group(text: &str) -> (tempfile::TempDir, Host) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/group"), text).unwrap();
        let host = Host::new(d.path());
        (d, host)
    }

    #[test]
    fn bad_names_and_unknown_keys_are_refused_at_build() {
        let err = (TYPE.build)(json!({"name": "Kiosk"}), &NoSources)
            .err()
            .unwrap();
        assert_eq!(err.key.as_deref(), Some("group"));
        assert!(err.message.contains("lowercase"), "{}", err.message);
        let err = (TYPE.build)(json!({"name": "kiosk", "members": ["pi"]}), &NoSources)
            .err()
            .unwrap();
        assert_eq!(err.key.as_deref(), Some("members"));
        assert!((TYPE.build)(
            json!({"name": "kiosk", "gid": 1100, "system": true}),
            &NoSources
        )
        .is_ok());
    }

    #[test]
    fn reads_the_roots_group_file_and_diffs_gid() {
        let (_d, host) = root_with_group("root:x:0:\nkiosk:x:1000:pi\n");
        let g = group(json!({"name": "kiosk", "gid": 1100}));
        let actual = g.read(&host).unwrap();
        assert_eq!(actual.as_ref().map(|e| e.gid), Some(1000));
        assert_eq!(g.diff(&actual, &host).unwrap().summary, "gid 1000 -> 1100");
        assert_eq!(
            g.command_for(actual.as_ref()),
            ["groupmod", "--gid", "1100", "kiosk"]
        );

        let same = group(json!({"name": "kiosk", "gid": 1000}));
        assert!(same.diff(&same.read(&host).unwrap(), &host).is_none());
        let any_gid = group(json!({"name": "kiosk"}));
        assert!(
            any_gid.diff(&any_gid.read(&host).unwrap(), &host).is_none(),
            "gid unset: not managed"
        );
    }

    #[test]
    fn creates_missing_and_removes_unwanted_groups() {
        let (_d, host) = root_with_group("root:x:0:\nold:x:1200:\n");
        let new = group(json!({"name": "kiosk", "gid": 1100, "system": true}));
        let actual = new.read(&host).unwrap();
        assert_eq!(
            new.diff(&actual, &host).unwrap().summary,
            "create group kiosk (gid 1100)"
        );
        assert_eq!(
            new.command_for(actual.as_ref()),
            ["groupadd", "--system", "--gid", "1100", "kiosk"]
        );

        let gone = group(json!({"name": "old", "state": "absent"}));
        let actual = gone.read(&host).unwrap();
        assert_eq!(
            gone.diff(&actual, &host).unwrap().summary,
            "remove group old"
        );
        assert_eq!(gone.command_for(actual.as_ref()), ["groupdel", "old"]);

        let never = group(json!({"name": "kiosk", "state": "absent"}));
        assert!(never.diff(&never.read(&host).unwrap(), &host).is_none());
    }
}
