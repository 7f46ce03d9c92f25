//! (being written)
use crate::registry::ResourceType;
pub const TYPE: ResourceType = ResourceType { name: "package", primary: "name", build: |_, _| Err(crate::SpecError::new("package: not built yet")) };
