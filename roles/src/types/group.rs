//! (being written)
use crate::registry::ResourceType;
pub const TYPE: ResourceType = ResourceType { name: "group", primary: "name", build: |_, _| Err(crate::SpecError::new("group: not built yet")) };
