//! (being written)
use crate::registry::ResourceType;
pub const TYPE: ResourceType = ResourceType { name: "file", primary: "name", build: |_, _| Err(crate::SpecError::new("file: not built yet")) };
