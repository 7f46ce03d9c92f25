//! Reading a verified tree as this device's desired state: load the files, resolve groups and
//! roles, layer the vars, render templates, read the facts, and validate the whole of it (within
//! its memory budget) before anything is changed.

pub mod budget;
pub mod facts;
pub mod fingerprints;
mod keys;
pub mod load;
pub mod model;
pub mod render;
pub mod resolve;
pub mod rollout;
mod sources;
pub mod validate;
pub mod vars;
