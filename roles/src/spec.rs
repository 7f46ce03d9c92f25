//! What a resource type hands the registry: the key that introduces it in role.yaml, and a build
//! function that turns a rendered spec (and the role's files) into a resource. Types depend on
//! this, never on the registry, so the registry can list them without a cycle.

use std::sync::Arc;

use crate::error::SpecError;
use crate::printable::{escape, is_control, printable};
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
    /// The spec keys that name something on the device (a path, a unit, a user, a package …),
    /// as strings or lists of strings. [`ResourceType::check_names`] refuses a control character
    /// in any of them; content (`content`, scripts) may hold whatever it needs.
    pub names: &'static [&'static str],
    pub build: BuildFn,
}

impl ResourceType {
    /// Refuses a rendered spec whose device names hold a control character: a newline in a path
    /// would forge a line of tend's output, an ESC would drive the terminal that shows it.
    pub fn check_names(&self, spec: &serde_json::Value) -> Result<(), SpecError> {
        for key in self.names {
            let Some(value) = spec.get(key) else { continue };
            if let Some((s, c)) = first_control(value) {
                let shown = if *key == self.primary { self.name } else { key };
                return Err(SpecError::at_key(
                    key,
                    format!(
                        "`{shown}` holds a control character ({}): '{}'",
                        escape(c),
                        printable(s)
                    ),
                )
                .fix(format!(
                    "remove the control character from `{shown}`; a name on the device is printed and logged, where it could forge a line"
                )));
            }
        }
        Ok(())
    }
}

/// The first string (inside lists and maps too) holding a control character, and the character.
fn first_control(value: &serde_json::Value) -> Option<(&str, char)> {
    match value {
        serde_json::Value::String(s) => s.chars().find(|c| is_control(*c)).map(|c| (s.as_str(), c)),
        serde_json::Value::Array(items) => items.iter().find_map(first_control),
        serde_json::Value::Object(map) => map.values().find_map(first_control),
        _ => None,
    }
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
        SpecError {
            message,
            key,
            fix: None,
        }
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

    #[test]
    fn every_declared_name_is_a_key_of_its_type_and_refuses_control_characters() {
        for t in crate::registry::resource_types() {
            for key in t.names {
                let mut spec = serde_json::json!({ t.primary: "x" });
                spec[*key] = serde_json::json!("y");
                if let Err(e) = (t.build)(spec.clone(), &NoSources) {
                    assert!(
                        !e.message.starts_with("unknown field"),
                        "{} {key}: {e}",
                        t.name
                    );
                }
                spec[*key] = serde_json::json!(["ok", "a\u{85}b"]);
                let e = t.check_names(&spec).unwrap_err();
                assert_eq!(e.key.as_deref(), Some(*key), "{}", t.name);
                assert!(e.message.contains("\\u{85}"), "{e}");
                assert!(e.fix.unwrap().starts_with("remove the control character"));
            }
        }
        let file = crate::registry::find_type("file").unwrap();
        let content = serde_json::json!({"path": "/etc/motd", "content": "\u{1b}[1mhi\n"});
        assert!(file.check_names(&content).is_ok(), "content is not a name");
    }
}
