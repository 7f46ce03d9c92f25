//! (being written)
use crate::registry::ResourceType;
pub const TYPE: ResourceType = ResourceType { name: "user", primary: "name", build: |_, _| Err(crate::SpecError::new("user: not built yet")) };
