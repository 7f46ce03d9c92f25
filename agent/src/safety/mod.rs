//! After a change: is the device still healthy and reachable? Health checks, the connectivity
//! guard, reboots inside the maintenance window, and the inhibitors that hold restarts and reboots
//! off. Deciding to revert is the run's (`revert.rs`).

pub mod defer;
pub mod guard;
pub mod health;
pub mod inhibit;
pub mod reboot;
