//! A device's wave of its stage's rollout, as the report and every sink show it: the decision
//! itself is `run::waves`; this is only what it decided, in one shape for report.json, the
//! summary and status lines, the metrics and the Mender attributes.

use serde::{Deserialize, Serialize};

/// This device's wave for the head, and when the head applies on it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutInfo {
    /// 1..=waves.
    pub wave: u32,
    pub waves: u32,
    /// RFC 3339: the head's time plus (wave - 1) × spacing, or the head's time when urgent.
    pub applies_at: String,
    /// The same, Unix seconds.
    pub applies_at_seconds: i64,
    /// The head is not applied yet: the device stays on its last good commit until then.
    pub waiting: bool,
    /// The head carries `Tend-Urgent: yes` and skipped the waves.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub urgent: bool,
}

impl RolloutInfo {
    /// Wave 3 of 10, waiting until 2026-12-07T15:00:00Z: what the sinks' tests show.
    #[cfg(test)]
    pub(crate) fn waiting_example() -> Self {
        Self {
            wave: 3,
            waves: 10,
            applies_at: "2026-12-07T15:00:00Z".into(),
            applies_at_seconds: 1_765_119_600,
            waiting: true,
            urgent: false,
        }
    }

    /// "wave 3 of 10, applies at 2026-12-07T13:00:00Z" (the summary and status lines).
    pub fn describe(&self) -> String {
        let verb = if self.waiting { "applies" } else { "applied" };
        let urgent = if self.urgent { " (urgent)" } else { "" };
        format!(
            "wave {} of {}, {verb} at {}{urgent}",
            self.wave, self.waves, self.applies_at
        )
    }
}
