//! The device itself: its configuration (vendor defaults, /etc, drop-ins), its identity, the state
//! directory and its lock, and the config values several steps share (the git credential, the
//! maintenance window, the guard's endpoints). The floor every step stands on: it imports no step.

pub mod config;
pub mod credentials;
pub mod endpoint;
pub mod identity;
pub mod state;
pub mod window;
