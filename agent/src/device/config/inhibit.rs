//! `inhibit:` in the device config: how long an application's inhibitor may hold off a restart or
//! a reboot before tend runs it anyway (docs/safety.md, "Inhibitors").

use std::time::Duration;

use serde::Deserialize;

/// The default: a day, longer than any update an application should need to finish.
pub const DEFAULT_MAX_DEFERRAL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InhibitFragment {
    /// Seconds an action may be held off; then it runs and the report says so.
    max_deferral: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Inhibit {
    pub max_deferral: Duration,
}

impl Default for Inhibit {
    fn default() -> Self {
        Self {
            max_deferral: DEFAULT_MAX_DEFERRAL,
        }
    }
}

impl Inhibit {
    pub(super) fn merge(&mut self, f: InhibitFragment) {
        if let Some(s) = f.max_deferral {
            self.max_deferral = Duration::from_secs(s);
        }
    }
}
