//! (being written)
use crate::registry::ResourceType;
pub const TYPE: ResourceType = ResourceType { name: "command", primary: "name", build: |_, _| Err(crate::SpecError::new("command: not built yet")) };
