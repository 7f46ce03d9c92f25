//! (being written)
use crate::registry::ResourceType;
pub const TYPE: ResourceType = ResourceType { name: "apt_source", primary: "name", build: |_, _| Err(crate::SpecError::new("apt_source: not built yet")) };
