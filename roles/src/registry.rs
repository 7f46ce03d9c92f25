//! The table of resource types. The agent looks a type up by the key a role entry uses
//! (`file:`, `package:` …) and builds it from a rendered spec; nothing else knows the list.

use crate::spec::ResourceType;
use crate::types;

/// Every type, in the order of the reference docs.
static ALL: &[ResourceType] = &[
    types::apt_source::TYPE,
    types::package::TYPE,
    types::file::TYPE,
    types::service::TYPE,
    types::group::TYPE,
    types::user::TYPE,
    types::command::TYPE,
    types::alternative::TYPE,
];

pub fn resource_types() -> &'static [ResourceType] {
    ALL
}

pub fn find_type(name: &str) -> Option<&'static ResourceType> {
    resource_types().iter().find(|t| t.name == name)
}
