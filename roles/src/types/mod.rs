//! The resource types, one file each. `ALL` is the registry the agent looks types up in.

pub mod apt_source;
pub mod command;
pub mod file;
pub mod group;
pub mod package;
pub mod service;
pub mod user;

use crate::registry::ResourceType;

pub static ALL: &[ResourceType] = &[
    apt_source::TYPE,
    package::TYPE,
    file::TYPE,
    service::TYPE,
    group::TYPE,
    user::TYPE,
    command::TYPE,
];
