//! tend, the agent: the pipeline from a fleet repo to a converged device, as a library.
//!
//! The pipeline is a straight line, one module per step: load → validate → apply → report
//! (fetch and verify join it with `tend run`). `cli` is a thin shim over it, so every step can be
//! driven from tests against a tempdir or chroot root.

pub mod apply;
pub mod backup;
pub mod budget;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod diag;
pub mod endpoint;
pub mod exit;
pub mod facts;
pub mod fetch;
pub mod gate;
mod gitdirs;
pub mod gittree;
pub mod guard;
pub mod health;
pub mod identity;
pub mod inspect;
pub mod inventory;
pub mod journal;
pub mod lastrun;
pub mod load;
pub mod logging;
pub mod mender;
pub mod metrics;
pub mod model;
pub mod monotonic;
pub mod net;
pub mod notify;
pub mod policy;
pub mod prune;
pub mod reboot;
pub mod render;
pub mod report;
pub mod resolve;
pub mod revert;
pub mod run;
pub mod runstate;
pub mod stagetag;
pub mod state;
pub mod status;
pub mod tree;
pub mod validate;
pub mod vars;
pub mod verify;
pub mod window;
pub mod yaml;
