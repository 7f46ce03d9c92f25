//! Time as tend writes it: Unix seconds in state files and reports, RFC 3339 UTC for people and
//! for the Mender attributes. One place, so every file and attribute agrees.

use std::time::{Duration, SystemTime};

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

/// `90m`, `2h`, `45s`, `1d`, or plain seconds; for `tend gate`'s `--max-age`, `--wait` and
/// `--interval` and a fleet repo's rollout `spacing`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write e.g. 90m, 2h, 45s or 1d"))?;
    let factor = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}`; use s, m, h or d"
            ))
        }
    };
    n.checked_mul(factor)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long"))
}
