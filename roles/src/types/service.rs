//! (being written)
use crate::registry::ResourceType;
pub const TYPE: ResourceType = ResourceType { name: "service", primary: "name", build: |_, _| Err(crate::SpecError::new("service: not built yet")) };
