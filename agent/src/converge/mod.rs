//! Making the device what the validated desired state says: drive the roles engine, keep what a
//! change replaced (backups), and prune what is no longer declared.

pub mod apply;
pub mod backup;
mod output;
pub mod prune;
