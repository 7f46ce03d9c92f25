//! What a resource type hands the registry: the key that introduces it in role.yaml, and a build
//! function that turns a rendered spec (and the role's files) into a resource. Types depend on
//! this, never on the registry, so the registry can list them without a cycle.

use std::sync::Arc;

use crate::error::SpecError;
use crate::resource::DynResource;

/// A file's content, shared: forty resources made from one source hold one copy.
pub type Content = Arc<[u8]>;

/// What a resource may read from its role while it is being built.
///
/// Every content a resource keeps comes through here (also inline `content:`), so that the agent
/// can hold each distinct content once and refuse a desired state above its memory budget.
pub trait Sources {
    /// The bytes of `roles/<role>/files/<name>`.
    fn file(&self, name: &str) -> Result<Content, String>;
    /// `roles/<role>/templates/<name>`, rendered with the device's vars.
    fn template(&self, name: &str) -> Result<Content, String>;
    /// Content given inline in the spec, kept the same way as files and templates.
    fn content(&self, bytes: Vec<u8>) -> Result<Content, String> {
        Ok(bytes.into())
    }
    /// True while building a handler: handlers run only when notified, which is their guard.
    fn in_handler(&self) -> bool {
        false
    }
}

/// Sources for specs that name no role file: undo specs, and tests.
pub struct NoSources;

impl Sources for NoSources {
    fn file(&self, name: &str) -> Result<Content, String> {
        Err(format!("no role file is readable here ({name})"))
    }
    fn template(&self, name: &str) -> Result<Content, String> {
        Err(format!("no template is readable here ({name})"))
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

/// Deserializes a rendered spec into a type's spec struct. The error names the key it is about
/// (also for a bad value, not only an unknown or missing key), so the agent can point at its line.
pub fn parse_spec<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, SpecError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let message = e.inner().to_string();
        let key = match e.path().iter().next() {
            Some(serde_path_to_error::Segment::Map { key }) => Some(key.clone()),
            _ => message
                .split('`')
                .nth(1)
                .filter(|_| {
                    message.starts_with("unknown field") || message.starts_with("missing field")
                })
                .map(str::to_string),
        };
        SpecError { message, key }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Spec {
        name: String,
        #[serde(default)]
        enabled: Option<bool>,
    }

    #[test]
    fn errors_name_the_key_for_bad_values_unknown_and_missing_keys() {
        let bad_value =
            parse_spec::<Spec>(serde_json::json!({"name": "x", "enabled": "yes"})).unwrap_err();
        assert_eq!(bad_value.key.as_deref(), Some("enabled"), "{bad_value}");
        let unknown =
            parse_spec::<Spec>(serde_json::json!({"name": "x", "enabld": true})).unwrap_err();
        assert_eq!(unknown.key.as_deref(), Some("enabld"), "{unknown}");
        let missing = parse_spec::<Spec>(serde_json::json!({})).unwrap_err();
        assert_eq!(missing.key.as_deref(), Some("name"), "{missing}");
    }
}
