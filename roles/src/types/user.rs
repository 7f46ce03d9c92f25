//! `user`: a local account in /etc/passwd of the managed root.
//!
//! ```yaml
//! - user: kiosk              # the login name
//!   uid: 1100                # optional
//!   group: kiosk             # optional primary group (name or gid)
//!   groups: [video, audio]   # optional; the EXACT supplementary set: the user is removed from
//!                            # any group not listed ([] removes them all). Omit to leave it alone.
//!   home: /home/kiosk        # optional; changing it moves the old home there (usermod -m),
//!                            # or just points at it when it already exists
//!   shell: /bin/bash         # optional
//!   comment: Kiosk user      # optional (GECOS)
//!   system: false            # only used at creation (useradd --system)
//!   create_home: true        # only used at creation; default true, false for system users
//!   state: present           # present (default) | absent
//! ```
//!
//! Only the keys that are set are compared, so a role can own a user's groups without owning its
//! shell. State is read from the root's /etc/passwd and /etc/group (supplementary membership is
//! the groups' member lists); changes go through useradd/usermod/userdel inside the root.
//! Without `group`, creation follows useradd's USERGROUPS behaviour (a group named like the user),
//! except that a group of that name which already exists is used instead of failing.
//! Removing a user keeps its home directory. Changing `uid` re-owns the files in its home only
//! (usermod(8)). Password hashes are deliberately not managed.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use crate::error::{ResourceError, SpecError};
use crate::host::Host;
use crate::platform::accounts::{self, GroupEntry, PasswdEntry};
use crate::resource::{Applied, Change, DynResource, Managed, Resource};
use crate::spec::{parse_spec, ResourceType, Sources};
use crate::types::group::Presence;

pub const TYPE: ResourceType = ResourceType {
    name: "user",
    primary: "name",
    names: &["name", "group", "groups", "home", "shell", "comment"],
    build,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    name: String,
    uid: Option<u32>,
    group: Option<String>,
    groups: Option<Vec<String>>,
    home: Option<String>,
    shell: Option<String>,
    comment: Option<String>,
    #[serde(default)]
    system: bool,
    create_home: Option<bool>,
    #[serde(default)]
    state: Presence,
}

#[derive(Debug)]
pub struct User {
    name: String,
    uid: Option<u32>,
    group: Option<String>,
    groups: Option<BTreeSet<String>>,
    home: Option<String>,
    shell: Option<String>,
    comment: Option<String>,
    system: bool,
    create_home: bool,
    state: Presence,
}

/// The account as found: its passwd line (if any) and the whole group database, which holds both
/// the primary group's name and the supplementary memberships.
pub struct Actual {
    entry: Option<PasswdEntry>,
    groups: Vec<GroupEntry>,
    /// Only when `home` is to change.
    home: Option<HomeMove>,
}

/// What is on disk when the home directory changes. usermod writes /etc/passwd before it moves
/// the directory, so a move it cannot do must be refused before it runs, not after.
#[derive(Clone, Copy, Debug, Default)]
struct HomeMove {
    old_exists: bool,
    new_exists: bool,
    new_parent_exists: bool,
}

fn is_in_root(host: &Host, path: &str) -> bool {
    path.starts_with('/') && host.path(path).is_ok_and(|p| p.symlink_metadata().is_ok())
}

fn build(spec: serde_json::Value, _: &dyn Sources) -> Result<Box<dyn DynResource>, SpecError> {
    Ok(Box::new(User::from_spec(parse_spec(spec)?)?))
}

impl User {
    fn from_spec(spec: Spec) -> Result<Self, SpecError> {
        accounts::check_name(&spec.name).map_err(|m| SpecError::at_key("user", m))?;
        if let Some(g) = &spec.group {
            if g.parse::<u32>().is_err() {
                accounts::check_name(g).map_err(|m| SpecError::at_key("group", m))?;
            }
        }
        if let Some(groups) = &spec.groups {
            for g in groups {
                accounts::check_name(g).map_err(|m| {
                    SpecError::at_key("groups", format!("{m}; list supplementary groups by name"))
                })?;
            }
        }
        for (key, value) in [("home", &spec.home), ("shell", &spec.shell)] {
            if let Some(v) = value {
                if !v.starts_with('/') || v.contains([':', '\n']) {
                    return Err(SpecError::at_key(
                        key,
                        format!(
                            "{key} must be an absolute path without ':' or newlines, got '{v}'"
                        ),
                    ));
                }
            }
        }
        if let Some(c) = &spec.comment {
            if c.contains([':', '\n']) {
                return Err(SpecError::at_key(
                    "comment",
                    "a comment cannot contain ':' or a newline (it is a field of /etc/passwd)",
                ));
            }
        }
        Ok(User {
            create_home: spec.create_home.unwrap_or(!spec.system),
            name: spec.name,
            uid: spec.uid,
            group: spec.group,
            groups: spec.groups.map(|g| g.into_iter().collect()),
            home: spec.home,
            shell: spec.shell,
            comment: spec.comment,
            system: spec.system,
            state: spec.state,
        })
    }

    /// The supplementary groups `name` is listed in.
    fn member_of(&self, groups: &[GroupEntry]) -> BTreeSet<String> {
        groups
            .iter()
            .filter(|g| g.members.contains(&self.name))
            .map(|g| g.name.clone())
            .collect()
    }

    /// Whether the actual primary gid is the wanted group (by number, or by name in the root).
    fn primary_matches(&self, gid: u32, groups: &[GroupEntry]) -> bool {
        match &self.group {
            None => true,
            Some(want) => match want.parse::<u32>() {
                Ok(n) => n == gid,
                Err(_) => groups.iter().any(|g| g.gid == gid && &g.name == want),
            },
        }
    }

    /// What differs on an existing account, as usermod options and as report phrases.
    fn modifications(&self, entry: &PasswdEntry, actual: &Actual) -> (Vec<String>, Vec<String>) {
        let groups = &actual.groups;
        let mut args: Vec<String> = Vec::new();
        let mut said: Vec<String> = Vec::new();
        if let Some(uid) = self.uid.filter(|u| *u != entry.uid) {
            args.extend(["--uid".into(), uid.to_string()]);
            said.push(format!("uid {} -> {uid}", entry.uid));
        }
        if let Some(group) = self
            .group
            .as_ref()
            .filter(|_| !self.primary_matches(entry.gid, groups))
        {
            args.extend(["--gid".into(), group.clone()]);
            let old = groups
                .iter()
                .find(|g| g.gid == entry.gid)
                .map_or(entry.gid.to_string(), |g| g.name.clone());
            said.push(format!("group {old} -> {group}"));
        }
        if let Some(want) = &self.groups {
            let have = self.member_of(groups);
            if &have != want {
                let added: Vec<&str> = want.difference(&have).map(String::as_str).collect();
                let removed: Vec<&str> = have.difference(want).map(String::as_str).collect();
                let mut phrase = String::from("groups");
                if !added.is_empty() {
                    phrase.push_str(&format!(" +{}", added.join(",")));
                }
                if !removed.is_empty() {
                    phrase.push_str(&format!(" -{}", removed.join(",")));
                }
                args.extend(["--groups".into(), join(want)]);
                said.push(phrase);
            }
        }
        if let Some(home) = self.home.as_ref().filter(|h| **h != entry.home) {
            args.extend(["--home".into(), home.clone()]);
            let facts = actual.home.unwrap_or_default();
            if facts.old_exists && !facts.new_exists {
                args.push("--move-home".into());
                said.push(format!("home {} -> {home} (moved)", entry.home));
            } else if facts.old_exists {
                said.push(format!(
                    "home {} -> {home} (exists already; {} is left as it is)",
                    entry.home, entry.home
                ));
            } else {
                said.push(format!("home {} -> {home}", entry.home));
            }
        }
        if let Some(shell) = self.shell.as_ref().filter(|s| **s != entry.shell) {
            args.extend(["--shell".into(), shell.clone()]);
            said.push(format!("shell {} -> {shell}", entry.shell));
        }
        if let Some(comment) = self.comment.as_ref().filter(|c| **c != entry.gecos) {
            args.extend(["--comment".into(), comment.clone()]);
            said.push(format!("comment '{}' -> '{comment}'", entry.gecos));
        }
        (args, said)
    }

    /// The useradd invocation for a new account.
    fn useradd(&self, groups: &[GroupEntry]) -> Vec<String> {
        let mut argv: Vec<String> = vec!["useradd".into()];
        if self.system {
            argv.push("--system".into());
        }
        if let Some(uid) = self.uid {
            argv.extend(["--uid".into(), uid.to_string()]);
        }
        match &self.group {
            Some(g) => argv.extend(["--gid".into(), g.clone()]),
            // useradd refuses to create the user group when it already exists; use it instead.
            None if groups.iter().any(|g| g.name == self.name) => {
                argv.extend(["--gid".into(), self.name.clone()])
            }
            None => {}
        }
        if let Some(groups) = self.groups.as_ref().filter(|g| !g.is_empty()) {
            argv.extend(["--groups".into(), join(groups)]);
        }
        if let Some(home) = &self.home {
            argv.extend(["--home-dir".into(), home.clone()]);
        }
        if let Some(shell) = &self.shell {
            argv.extend(["--shell".into(), shell.clone()]);
        }
        if let Some(comment) = &self.comment {
            argv.extend(["--comment".into(), comment.clone()]);
        }
        argv.push(
            if self.create_home {
                "--create-home"
            } else {
                "--no-create-home"
            }
            .into(),
        );
        argv.push(self.name.clone());
        argv
    }

    /// Fails with a fix when a group the account needs is missing, before the shadow tools would
    /// fail with less context.
    fn check_groups_exist(&self, groups: &[GroupEntry]) -> Result<(), ResourceError> {
        let missing: Vec<&str> = self
            .group
            .iter()
            .filter(|g| g.parse::<u32>().is_err())
            .chain(self.groups.iter().flatten())
            .filter(|want| !groups.iter().any(|g| &&g.name == want))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(ResourceError::other(format!(
            "user {}: group(s) {} do not exist on the device; create them with `group` resources before this user",
            self.name,
            missing.join(", ")
        )))
    }

    fn check_home_move(&self, facts: Option<HomeMove>) -> Result<(), ResourceError> {
        let (Some(f), Some(home)) = (facts, &self.home) else {
            return Ok(());
        };
        if f.old_exists && !f.new_exists && !f.new_parent_exists {
            let parent = Path::new(home)
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(ResourceError::other(format!(
                "user {}: cannot move the home directory to {home}: {parent} does not exist on the device; create \
                 it first (a `file` resource with `state: directory`)",
                self.name
            )));
        }
        Ok(())
    }
}

fn join(groups: &BTreeSet<String>) -> String {
    groups
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

impl Resource for User {
    type Actual = Actual;

    fn kind(&self) -> &'static str {
        "user"
    }

    fn id(&self) -> String {
        self.name.clone()
    }

    /// A present user is removed once undeclared (its home directory stays, as with `absent`).
    fn managed(&self) -> Vec<Managed> {
        if self.state != Presence::Present {
            return Vec::new();
        }
        vec![Managed {
            kind: "user".into(),
            key: self.name.clone(),
            undo: crate::undo::Undo::name_absent(&self.name),
            only_if_created: false,
        }]
    }

    fn read(&self, host: &Host) -> Result<Actual, ResourceError> {
        let entry = accounts::users(host)?
            .into_iter()
            .find(|u| u.name == self.name);
        let home = match (&entry, &self.home) {
            (Some(e), Some(home)) if e.home != *home => Some(HomeMove {
                old_exists: is_in_root(host, &e.home),
                new_exists: is_in_root(host, home),
                new_parent_exists: Path::new(home)
                    .parent()
                    .is_some_and(|p| is_in_root(host, &p.to_string_lossy())),
            }),
            _ => None,
        };
        Ok(Actual {
            entry,
            groups: accounts::groups(host)?,
            home,
        })
    }

    fn diff(&self, actual: &Actual, _: &Host) -> Option<Change> {
        match (self.state, &actual.entry) {
            (Presence::Absent, None) => None,
            (Presence::Absent, Some(_)) => Some(Change::new(format!(
                "remove user {} (home kept)",
                self.name
            ))),
            (Presence::Present, None) => Some(Change::new(format!("create user {}", self.name))),
            (Presence::Present, Some(entry)) => {
                let (_, said) = self.modifications(entry, actual);
                (!said.is_empty()).then(|| Change::new(said.join("; ")))
            }
        }
    }

    fn apply(&self, actual: Actual, host: &Host) -> Result<Applied, ResourceError> {
        let argv = match (self.state, &actual.entry) {
            (Presence::Absent, _) => vec!["userdel".to_string(), self.name.clone()],
            (Presence::Present, None) => {
                self.check_groups_exist(&actual.groups)?;
                self.useradd(&actual.groups)
            }
            (Presence::Present, Some(entry)) => {
                self.check_groups_exist(&actual.groups)?;
                self.check_home_move(actual.home)?;
                let (args, _) = self.modifications(entry, &actual);
                std::iter::once("usermod".to_string())
                    .chain(args)
                    .chain([self.name.clone()])
                    .collect()
            }
        };
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        accounts::run_tool(host, &argv)?;
        Ok(Applied::Done)
    }
}

#[cfg(test)]
mod tests;
