//! After a change: is the device still healthy and reachable? Health checks, the connectivity
//! guard, the revert to the last good commit, and reboots inside the maintenance window.

pub mod guard;
pub mod health;
pub mod reboot;
pub mod revert;
