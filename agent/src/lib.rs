//! tend, the agent: the pipeline from a fleet repo to a converged device, as a library.
//!
//! The pipeline is a straight line, one module per step: load → validate → apply → report
//! (fetch and verify join it with `tend run`). `cli` is a thin shim over it, so every step can be
//! driven from tests against a tempdir or chroot root.

pub mod cli;
pub mod clock;
pub mod converge;
pub mod device;
pub mod diag;
pub mod exit;
pub mod fleet;
pub mod gate;
pub mod inspect;
pub mod journal;
pub mod logging;
pub mod net;
pub mod plan;
pub mod report;
pub mod revert;
pub mod run;
pub mod safety;
pub mod source;
pub mod yaml;
