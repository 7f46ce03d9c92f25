//! After a change: is the device still healthy and reachable? Health checks, the connectivity
//! guard, and reboots inside the maintenance window. Deciding to revert is the run's (`revert.rs`).

pub mod guard;
pub mod health;
pub mod reboot;
