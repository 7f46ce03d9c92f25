//! Time as tend writes it: Unix seconds in state files and reports, RFC 3339 UTC for people and
//! for the Mender attributes. One place, so every file and attribute agrees.

use std::time::SystemTime;

/// Seconds since the epoch; a clock before 1970 (an unset RTC gone wrong) reads as 0.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix seconds as RFC 3339 UTC, for the Mender attributes and `tend status --history`.
pub fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}
