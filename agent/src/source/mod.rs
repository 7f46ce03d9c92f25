//! Getting a commit and deciding whether to trust it: the fetch into the device's bare repo, the
//! signature and policy checks, and read access to a commit's tree. Nothing here reads the fleet's
//! meaning; it hands the next step a verified tree.

pub mod fetch;
mod gitdirs;
pub mod gittree;
pub mod monotonic;
pub mod pointer;
pub mod policy;
pub mod stagetag;
pub mod tree;
pub mod verify;
