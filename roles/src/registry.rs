//! The table of resource types. The agent looks a type up by the key a role entry uses
//! (`file:`, `package:` …) and builds it from a rendered spec; nothing else knows the list.

use crate::error::SpecError;
use crate::resource::DynResource;

/// What a resource may read from its role while it is being built.
pub trait Sources {
    /// The bytes of `roles/<role>/files/<name>`.
    fn file(&self, name: &str) -> Result<Vec<u8>, String>;
    /// `roles/<role>/templates/<name>`, rendered with the device's vars.
    fn template(&self, name: &str) -> Result<String, String>;
    /// True while building a handler: handlers run only when notified, which is their guard.
    fn in_handler(&self) -> bool {
        false
    }
}

pub type BuildFn = fn(serde_json::Value, &dyn Sources) -> Result<Box<dyn DynResource>, SpecError>;

pub struct ResourceType {
    /// The key that introduces the resource in role.yaml, e.g. "file".
    pub name: &'static str,
    /// The spec field that the introducing key's value fills, e.g. "path" for `file: /etc/motd`.
    pub primary: &'static str,
    pub build: BuildFn,
}

pub fn resource_types() -> &'static [ResourceType] {
    crate::types::ALL
}

pub fn find_type(name: &str) -> Option<&'static ResourceType> {
    resource_types().iter().find(|t| t.name == name)
}

/// Deserializes a rendered spec into a type's spec struct, turning serde's message into a
/// [`SpecError`] that names the offending key when serde does.
pub fn parse_spec<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, SpecError> {
    serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        let key = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.starts_with("unknown field") || msg.starts_with("missing field"))
            .map(str::to_string);
        SpecError { message: msg, key }
    })
}
