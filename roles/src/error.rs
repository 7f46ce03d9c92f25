//! Errors of the resource layer. They carry enough to tell an operator what failed, where on the
//! device, and what to do; the agent adds the fleet-repo location.

use std::path::Path;

/// A resource spec from the fleet repo is wrong. Raised while building, before anything is applied.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    pub message: String,
    /// The spec key the error is about, when there is one (lets the agent point at its line).
    pub key: Option<String>,
    /// How to fix it, when the type knows better than a generic hint.
    pub fix: Option<String>,
}

impl SpecError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            key: None,
            fix: None,
        }
    }
    pub fn at_key(key: &str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            key: Some(key.to_string()),
            fix: None,
        }
    }
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Reading or changing the device failed.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("{0}")]
    Other(String),
    /// A managed path could not be walked safely (see [`crate::rootwalk`]).
    #[error(transparent)]
    Walk(#[from] crate::rootwalk::WalkError),
}

impl ResourceError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
    pub fn other(message: impl Into<String>) -> Self {
        Self::Other(message.into())
    }
}
