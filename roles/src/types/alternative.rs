//! `alternative`: which program a Debian alternatives group points to (update-alternatives(1)).
//!
//! ```yaml
//! - alternative: editor          # the group's name (update-alternatives --list NAME)
//!   path: /usr/bin/vim.basic     # the alternative to select; the group goes to manual mode
//! - alternative: x-www-browser
//!   mode: auto                   # or: give the group back to its highest priority
//! ```
//!
//! The state is read from the root's own database, never from the host: the group's admin file
//! `/var/lib/dpkg/alternatives/NAME` (its mode and the alternatives packages registered) and the
//! link `/etc/alternatives/NAME` (the one selected). A change goes through `update-alternatives`
//! run inside the root, so its slave links and its log stay its own. The group and the wanted
//! alternative must exist when the resource is read: install the package that provides them in an
//! earlier entry, which the engine applies first.

use serde::Deserialize;

use crate::error::{ResourceError, SpecError};
use crate::host::Host;
use crate::resource::{Applied, Change, Resource};
use crate::rootwalk::{Missing, WalkError};
use crate::spec::{parse_spec, ResourceType, Sources};

pub const TYPE: ResourceType = ResourceType {
    name: "alternative",
    primary: "name",
    names: &["name", "path"],
    build,
};

const ADMIN_DIR: &str = "/var/lib/dpkg/alternatives";
const LINK_DIR: &str = "/etc/alternatives";

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Manual,
    Auto,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    name: String,
    path: Option<String>,
    mode: Option<Mode>,
}

/// What the group should be: one alternative chosen by hand, or the automatic choice.
#[derive(Debug, PartialEq, Eq)]
enum Want {
    Path(String),
    Auto,
}

#[derive(Debug)]
pub struct Alternative {
    name: String,
    want: Want,
}

fn build(
    spec: serde_json::Value,
    _: &dyn Sources,
) -> Result<Box<dyn crate::DynResource>, SpecError> {
    Ok(Box::new(from_spec(spec)?))
}

fn from_spec(spec: serde_json::Value) -> Result<Alternative, SpecError> {
    let spec: Spec = parse_spec(spec)?;
    check_group_name(&spec.name).map_err(|m| SpecError::at_key("alternative", m))?;
    let want = match (spec.path, spec.mode) {
        (Some(path), None | Some(Mode::Manual)) => {
            if !path.starts_with('/') {
                return Err(SpecError::at_key("path", format!("`{path}` is not an absolute path"))
                    .fix("give the alternative's full path, as `update-alternatives --list` shows it"));
            }
            Want::Path(path)
        }
        (None, Some(Mode::Auto)) => Want::Auto,
        (Some(_), Some(Mode::Auto)) => {
            return Err(SpecError::at_key(
                "mode",
                "`mode: auto` selects by priority; it takes no `path`",
            )
            .fix("remove `path`, or remove `mode: auto` to select the path by hand"))
        }
        (None, _) => {
            return Err(SpecError::new(
                "an alternative needs `path` (the one to select) or `mode: auto`",
            )
            .fix("add `path: /usr/bin/...`, or `mode: auto`"))
        }
    };
    Ok(Alternative {
        name: spec.name,
        want,
    })
}

/// A group name is one file name in the admin directory.
fn check_group_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(format!(
            "`{name}` is not an alternatives group name (one file name, as `update-alternatives --get-selections` lists it)"
        ));
    }
    Ok(())
}

/// A group as the root's alternatives database holds it.
#[derive(Debug, PartialEq, Eq)]
pub struct Group {
    mode: Mode,
    /// The registered alternatives, in the admin file's order.
    choices: Vec<String>,
    /// Where /etc/alternatives/NAME points, if it exists.
    selected: Option<String>,
}

/// Parses an admin file: the mode, the master link, slave name/link pairs up to an empty line,
/// then per alternative its path, its priority and one line per slave.
fn parse_admin(text: &str) -> Result<(Mode, Vec<String>), String> {
    let mut lines = text.lines();
    let mode = match lines.next() {
        Some("auto") => Mode::Auto,
        Some("manual") => Mode::Manual,
        other => {
            return Err(format!(
                "unknown mode {:?} on its first line",
                other.unwrap_or("")
            ))
        }
    };
    lines.next().ok_or("no master link on its second line")?;
    let mut slaves = 0;
    loop {
        match lines.next() {
            Some("") => break,
            Some(_) => {
                lines.next().ok_or("a slave name without its link")?;
                slaves += 1;
            }
            None => return Err("the list of slave links does not end".into()),
        }
    }
    let mut choices = Vec::new();
    while let Some(path) = lines.next() {
        if path.is_empty() {
            break;
        }
        lines
            .next()
            .ok_or_else(|| format!("{path} has no priority"))?;
        for _ in 0..slaves {
            lines
                .next()
                .ok_or_else(|| format!("{path} lacks a slave line"))?;
        }
        choices.push(path.to_string());
    }
    Ok((mode, choices))
}

/// Reads a file or a link at a device path; None when it or its parent is missing.
fn read_at<T>(
    host: &Host,
    path: &str,
    read: impl FnOnce(&crate::rootwalk::ParentDir) -> std::io::Result<T>,
) -> Result<Option<T>, ResourceError> {
    let dir = match host.open_parent(path, Missing::Fail) {
        Ok(dir) => dir,
        Err(WalkError::MissingParent { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match read(&dir) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ResourceError::io(std::path::Path::new(path), e)),
    }
}

impl Resource for Alternative {
    type Actual = Group;

    fn kind(&self) -> &'static str {
        "alternative"
    }

    fn id(&self) -> String {
        self.name.clone()
    }

    fn read(&self, host: &Host) -> Result<Group, ResourceError> {
        let admin = format!("{ADMIN_DIR}/{}", self.name);
        let Some(text) = read_at(host, &admin, |d| d.read())? else {
            return Err(ResourceError::other(format!(
                "there is no alternatives group `{}` ({admin} does not exist); install the package \
                 that provides it in an earlier entry, or correct the name",
                self.name
            )));
        };
        let (mode, choices) = parse_admin(&String::from_utf8_lossy(&text)).map_err(|m| {
            ResourceError::other(format!(
                "{admin}: {m}; `update-alternatives --config {}` repairs it",
                self.name
            ))
        })?;
        let link = format!("{LINK_DIR}/{}", self.name);
        let selected = read_at(host, &link, |d| d.read_link())?.map(|p| p.display().to_string());
        if let Want::Path(path) = &self.want {
            if !choices.contains(path) {
                return Err(ResourceError::other(format!(
                    "{path} is not an alternative for `{}` (registered: {}); install the package \
                     that provides it in an earlier entry, or choose one of those",
                    self.name,
                    if choices.is_empty() {
                        "none".to_string()
                    } else {
                        choices.join(", ")
                    }
                )));
            }
        }
        Ok(Group {
            mode,
            choices,
            selected,
        })
    }

    fn diff(&self, actual: &Group, _: &Host) -> Option<Change> {
        let now = actual.selected.as_deref().unwrap_or("nothing");
        match &self.want {
            Want::Path(path) => (actual.mode != Mode::Manual
                || actual.selected.as_ref() != Some(path))
            .then(|| Change::new(format!("{now} -> {path} (manual)"))),
            Want::Auto => {
                (actual.mode != Mode::Auto).then(|| Change::new(format!("manual ({now}) -> auto")))
            }
        }
    }

    fn apply(&self, _: Group, host: &Host) -> Result<Applied, ResourceError> {
        match &self.want {
            Want::Path(path) => host.run(&["update-alternatives", "--set", &self.name, path])?,
            Want::Auto => host.run(&["update-alternatives", "--auto", &self.name])?,
        };
        Ok(Applied::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EDITOR: &str =
        "manual\n/usr/bin/editor\neditor.1.gz\n/usr/share/man/man1/editor.1.gz\n\n\
        /bin/nano\n40\n/usr/share/man/man1/nano.1.gz\n\
        /usr/bin/vim.basic\n30\n/usr/share/man/man1/vim.1.gz\n\n";

    fn want(spec: serde_json::Value) -> Result<Want, String> {
        from_spec(spec).map(|a| a.want).map_err(|e| e.to_string())
    }

    #[test]
    fn the_admin_file_gives_the_mode_and_every_registered_alternative() {
        let (mode, choices) = parse_admin(EDITOR).unwrap();
        assert_eq!(mode, Mode::Manual);
        assert_eq!(choices, ["/bin/nano", "/usr/bin/vim.basic"]);
        let (mode, choices) = parse_admin("auto\n/usr/bin/awk\n\n/usr/bin/mawk\n5\n\n").unwrap();
        assert_eq!(
            (mode, choices),
            (Mode::Auto, vec!["/usr/bin/mawk".to_string()])
        );
    }

    #[test]
    fn a_truncated_admin_file_is_an_error_not_an_empty_group() {
        for text in [
            "",
            "sideways\n/x\n\n",
            "auto\n",
            "auto\n/usr/bin/awk\nawk.1.gz\n",
            "auto\n/x\n\n/bin/y\n",
        ] {
            assert!(parse_admin(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn a_spec_selects_a_path_or_auto_and_refuses_both_or_neither() {
        assert_eq!(
            want(json!({"name": "editor", "path": "/bin/nano"})),
            Ok(Want::Path("/bin/nano".into()))
        );
        assert_eq!(
            want(json!({"name": "editor", "mode": "auto"})),
            Ok(Want::Auto)
        );
        for bad in [
            json!({"name": "editor"}),
            json!({"name": "editor", "mode": "auto", "path": "/bin/nano"}),
            json!({"name": "editor", "path": "nano"}),
            json!({"name": "../passwd", "path": "/bin/nano"}),
        ] {
            assert!(want(bad.clone()).is_err(), "{bad}");
        }
    }

    fn group(mode: Mode, selected: &str) -> Group {
        let (_, choices) = parse_admin(EDITOR).unwrap();
        Group {
            mode,
            choices,
            selected: Some(selected.into()),
        }
    }

    #[test]
    fn the_diff_is_empty_only_when_the_group_is_in_the_wanted_mode_and_selection() {
        let host = Host::new("/nonexistent");
        let pick = Alternative {
            name: "editor".into(),
            want: Want::Path("/bin/nano".into()),
        };
        assert_eq!(pick.diff(&group(Mode::Manual, "/bin/nano"), &host), None);
        // Auto mode that happens to select the same path still changes: a later package with a
        // higher priority would take the group over.
        let c = pick.diff(&group(Mode::Auto, "/bin/nano"), &host).unwrap();
        assert_eq!(c.summary, "/bin/nano -> /bin/nano (manual)");
        let c = pick
            .diff(&group(Mode::Manual, "/usr/bin/vim.basic"), &host)
            .unwrap();
        assert_eq!(c.summary, "/usr/bin/vim.basic -> /bin/nano (manual)");
        let auto = Alternative {
            name: "editor".into(),
            want: Want::Auto,
        };
        assert_eq!(auto.diff(&group(Mode::Auto, "/bin/nano"), &host), None);
        assert!(auto
            .diff(&group(Mode::Manual, "/bin/nano"), &host)
            .is_some());
    }

    #[test]
    fn a_group_is_read_from_the_roots_own_database_and_an_unknown_path_is_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/lib/dpkg/alternatives")).unwrap();
        std::fs::create_dir_all(root.path().join("etc/alternatives")).unwrap();
        std::fs::write(root.path().join("var/lib/dpkg/alternatives/editor"), EDITOR).unwrap();
        std::os::unix::fs::symlink(
            "/usr/bin/vim.basic",
            root.path().join("etc/alternatives/editor"),
        )
        .unwrap();
        let host = Host::new(root.path());
        let pick = Alternative {
            name: "editor".into(),
            want: Want::Path("/bin/nano".into()),
        };
        let g = pick.read(&host).unwrap();
        assert_eq!(g.selected.as_deref(), Some("/usr/bin/vim.basic"));
        assert_eq!(g.mode, Mode::Manual);
        let stray = Alternative {
            name: "editor".into(),
            want: Want::Path("/bin/ed".into()),
        };
        let e = stray.read(&host).unwrap_err().to_string();
        assert!(e.contains("/bin/ed is not an alternative for `editor` (registered: /bin/nano, /usr/bin/vim.basic)"), "{e}");
        let none = Alternative {
            name: "pager".into(),
            want: Want::Auto,
        };
        let e = none.read(&host).unwrap_err().to_string();
        assert!(e.contains("there is no alternatives group `pager`"), "{e}");
    }
}
