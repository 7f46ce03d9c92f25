//! Making the device what the validated desired state says: drive the roles engine, keep what a
//! change replaced (backups), prune what is no longer declared, and
//! hold off the restarts and reboots an application's inhibitor asks to wait.

pub mod apply;
pub mod backup;
mod held;
mod output;
pub mod prune;
