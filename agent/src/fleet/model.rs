//! The fleet repo's files as typed structs.
//!
//! Unknown keys are errors (`deny_unknown_fields`), so a typo never silently does nothing. Values
//! that later errors must point at are `Spanned`, which carries their line.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
pub use serde_saphyr::Spanned;

/// The major version of the fleet format this tend reads.
pub const FORMAT_MAJOR: u64 = 1;

/// A YAML mapping whose key order and key lines are kept (handlers run in declaration order).
#[derive(Debug)]
pub struct Keyed<V>(pub Vec<(Spanned<String>, V)>);

impl<V> Default for Keyed<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Keyed<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyedVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for KeyedVisitor<V> {
            type Value = Keyed<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keyed<V>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<Spanned<String>, V>()? {
                    entries.push(entry);
                }
                Ok(Keyed(entries))
            }
        }
        d.deserialize_map(KeyedVisitor(PhantomData))
    }
}

pub type Value = serde_json::Value;
/// Vars as written: name (with its line) → value.
pub type Vars = Keyed<Value>;
pub type Names = Vec<Spanned<String>>;

/// Only the format version, read before anything else so that a repo written for a newer tend
/// says "upgrade tend" instead of listing keys this tend does not know.
#[derive(Deserialize)]
pub struct FormatOnly {
    pub format: Option<Spanned<Value>>,
}

/// `fleet.yaml`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    pub format: Spanned<Value>,
    #[serde(default)]
    pub vars: Vars,
    /// Vars that a device's local vars files may set.
    #[serde(default)]
    pub local: Names,
    /// Vars whose values are redacted in logs, diffs and reports.
    #[serde(default)]
    pub secret: Names,
    /// Roles every device gets.
    #[serde(default)]
    pub roles: Names,
    /// Remove what tend created for resources that are no longer declared, fleet-wide (a role's
    /// own `prune` wins). See docs/safety.md.
    #[serde(default)]
    pub prune: Option<Spanned<Value>>,
    /// Waves per stage (see `fleet::rollout`).
    #[serde(default)]
    pub rollout: Option<RolloutBlock>,
}

/// One stage's entry of `rollout:`, as written (checked by `fleet::rollout`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutEntry {
    pub waves: Spanned<Value>,
    pub spacing: Spanned<Value>,
}

/// `rollout:` as written: stage → its entry.
pub type RolloutBlock = Keyed<Spanned<RolloutEntry>>;

/// `groups/<name>.yaml`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    #[serde(default)]
    pub vars: Vars,
    #[serde(default)]
    pub roles: Names,
    /// Replaces fleet.yaml's rollout of a stage for the devices in this group.
    #[serde(default)]
    pub rollout: Option<RolloutBlock>,
}

/// `devices/<id>.yaml`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceFile {
    /// The branch this device follows from its next run on.
    pub subscribed_branch: Option<Spanned<String>>,
    /// The device's type, as the device reports it (Mender's device_type). Offline validation
    /// renders the device with `facts/<device_type>.yaml`; on the device the fact wins.
    pub device_type: Option<Spanned<String>>,
    /// Groups in increasing precedence: a later group's vars win over an earlier one's.
    #[serde(default)]
    pub groups: Names,
    #[serde(default)]
    pub vars: Vars,
    #[serde(default)]
    pub roles: Names,
}

/// `facts/<device_type>.yaml`: the facts `tend validate` renders devices of that type with.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactsFixture {
    pub os_id: Option<String>,
    pub os_codename: Option<String>,
    pub os_version_id: Option<String>,
    pub architecture: Option<String>,
    pub hostname: Option<String>,
    #[serde(default)]
    pub interfaces: Vec<FixtureInterface>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureInterface {
    pub name: String,
    pub mac: Option<String>,
    #[serde(default)]
    pub ipv4: Vec<String>,
    #[serde(default)]
    pub ipv6: Vec<String>,
}

/// One key of a role entry as written: its name, its line, and its value.
#[derive(Clone, Debug)]
pub struct EntryKey {
    pub name: String,
    pub line: u64,
    pub value: Value,
}

/// One entry of `resources:` or `checks:`, or one handler: the type key (`file: /etc/x`), its
/// keys, and tend's common keys (`when`, `loop`, `notify`), each with its line. It is made from
/// the spanned YAML as each entry is read: a spanned pair holds two locations for its key and two
/// for its value (336 bytes), which a role of 10,000 resources held 6.7 MB of.
#[derive(Clone, Debug)]
pub struct Entry {
    pub line: u64,
    pub keys: Vec<EntryKey>,
}

impl Entry {
    pub fn get(&self, key: &str) -> Option<&EntryKey> {
        self.keys.iter().find(|k| k.name == key)
    }
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Keyed<Value>>::deserialize(d)?;
        let pairs = spanned.value.0;
        // A new vector of the exact size: collecting in place would keep the spanned one's.
        let mut keys = Vec::with_capacity(pairs.len());
        keys.extend(pairs.into_iter().map(|(k, value)| EntryKey {
            line: k.referenced.line(),
            name: k.value,
            value,
        }));
        Ok(Entry {
            line: spanned.referenced.line(),
            keys,
        })
    }
}

/// `roles/<name>/role.yaml`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFile {
    /// Roles applied before this one; if one of them fails, this one is skipped.
    #[serde(default)]
    pub depends: Names,
    /// Lowest-precedence vars.
    #[serde(default)]
    pub defaults: Vars,
    #[serde(default)]
    pub local: Names,
    #[serde(default)]
    pub secret: Names,
    #[serde(default)]
    pub resources: Vec<Entry>,
    #[serde(default)]
    pub handlers: Keyed<Entry>,
    /// Health checks run after every apply (see docs/safety.md).
    #[serde(default)]
    pub checks: Vec<Entry>,
    /// Remove what this role's resources created once they are no longer declared.
    #[serde(default)]
    pub prune: Option<Spanned<Value>>,
}

/// Parses a format version written as `1`, `"1"` or `"1.2"` into (major, minor).
pub fn parse_format(v: &Value) -> Option<(u64, u64)> {
    match v {
        Value::Number(n) => n.as_u64().map(|m| (m, 0)).or_else(|| {
            let f = n.as_f64()?;
            let s = format!("{f}");
            parse_format(&Value::String(s))
        }),
        Value::String(s) => {
            let mut parts = s.trim().splitn(2, '.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next().map(|m| m.parse().ok()).unwrap_or(Some(0))?;
            Some((major, minor))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_versions() {
        assert_eq!(parse_format(&serde_json::json!(1)), Some((1, 0)));
        assert_eq!(parse_format(&serde_json::json!("1.3")), Some((1, 3)));
        assert_eq!(parse_format(&serde_json::json!(2.1)), Some((2, 1)));
        assert_eq!(parse_format(&serde_json::json!("one")), None);
    }

    #[test]
    fn entries_keep_key_order_and_lines() {
        let y = b"resources:\n  - file: /etc/x\n    mode: 0644\nhandlers:\n  b: {command: x}\n  a: {command: y}\n";
        let r: RoleFile = crate::yaml::parse("role.yaml", y).unwrap();
        let e = &r.resources[0];
        assert_eq!(e.line, 2);
        assert_eq!((e.keys[1].name.as_str(), e.keys[1].line), ("mode", 3));
        assert_eq!(e.keys[1].value, serde_json::json!("0644"));
        let names: Vec<_> = r.handlers.0.iter().map(|(k, _)| k.value.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
    }
}
