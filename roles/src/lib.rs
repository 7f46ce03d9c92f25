//! tend's resource engine and its declarative resource types.
//!
//! Why a separate crate: the engine must know no resource's specifics, and a resource type must know
//! nothing of fleets, git or vars. The agent renders a fleet repo into concrete resource specs; this
//! crate turns each spec into a [`Resource`], reads the actual state under a root, diffs, and applies.

pub mod child;
pub mod engine;
pub mod error;
pub mod fsutil;
pub mod host;
pub mod passwd;
pub mod platform;
pub mod prefetch;
pub mod printable;
pub mod redact;
pub mod registry;
pub mod resource;
pub mod rootwalk;
pub mod spec;
pub mod statefile;
pub mod types;
pub mod undo;

pub use engine::{
    converge, converge_held, converge_with, Desired, Handler, Hold, Item, Outcome, ResourceReport,
    RolePlan, RunSummary,
};
pub use error::{ResourceError, SpecError};
pub use host::Host;
pub use redact::Redactor;
pub use registry::{find_type, resource_types};
pub use resource::{Applied, Change, DynResource, Managed, Plan, Resource};
pub use spec::{NoSources, ResourceType, Sources};
pub use undo::Undo;
