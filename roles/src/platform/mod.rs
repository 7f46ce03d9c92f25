//! Readers and writers of Debian's own formats and tools, shared by the resource types: dpkg's status
//! database, version ordering, deb822 stanzas, the account databases, apt and systemctl.

pub mod accounts;
pub mod apt;
pub mod aptdownload;
pub mod deb822;
pub mod diff;
pub mod dpkg;
#[cfg(test)]
pub(crate) mod held_lock;
pub mod systemctl;
pub mod version;
