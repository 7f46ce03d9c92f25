//! Readers and writers of Debian's own formats, shared by the resource types: dpkg's status
//! database and version ordering, deb822 stanzas, the account databases, and apt invocation.

pub mod accounts;
pub mod apt;
pub mod deb822;
pub mod diff;
pub mod dpkg;
#[cfg(test)]
pub(crate) mod held_lock;
pub mod version;
