//! A git server that says "not now" (HTTP 429 Too Many Requests, 503 Service Unavailable).
//!
//! A fleet that polls one origin must back off when the origin asks it to, or every device
//! retrying at once keeps the origin down. So a throttling answer is retried with exponential
//! backoff and full jitter (each wait a random fraction of the doubled ceiling, so devices that
//! were throttled together do not come back together), and a `Retry-After` the server sends is
//! honoured: delta-seconds or an HTTP-date. The header is server bytes: it is read with bounds,
//! and an unreadable or absurd value is reported, never slept on.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::net::quote;

/// Longer than this a `Retry-After` is not read (the longest HTTP-date is 29 bytes).
const MAX_HEADER: usize = 64;
/// A wait longer than this is absurd for a timer run, whatever the budget: it is not slept on.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// What a `Retry-After` header said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryAfter {
    /// Come back after this long (zero for a date in the past). Saturates for huge values.
    Wait(Duration),
    /// Neither delta-seconds nor an HTTP-date: the value as shown (quoted, bounded).
    Unreadable(String),
}

impl std::fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryAfter::Wait(d) => write!(f, "Retry-After {} s", d.as_secs()),
            RetryAfter::Unreadable(v) => write!(f, "unreadable Retry-After `{v}`"),
        }
    }
}

/// The server's "not now": its status and what its `Retry-After` said, if it sent one. Carried
/// inside the io::Error the http backend hands to gix, and read back by the classifier.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Received HTTP status {status}{}", self.retry_after.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
pub struct Throttle {
    pub status: u16,
    pub retry_after: Option<RetryAfter>,
}

impl Throttle {
    /// The statuses a server throttles with.
    pub fn is_throttle(status: u16) -> bool {
        status == 429 || status == 503
    }
}

/// Reads a `Retry-After` value (RFC 9110 §10.2.3) against the time `now`.
pub fn parse(value: &str, now: SystemTime) -> RetryAfter {
    let v = value.trim();
    let unreadable = || RetryAfter::Unreadable(quote::bounded(v.as_bytes(), MAX_HEADER));
    if v.is_empty() || v.len() > MAX_HEADER {
        return unreadable();
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than u64 holds is still "very long": saturate rather than refuse.
        let secs = v.parse::<u64>().unwrap_or(u64::MAX);
        return RetryAfter::Wait(Duration::from_secs(secs));
    }
    match http_date(v) {
        Some(at) => {
            let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            RetryAfter::Wait(Duration::from_secs(at.saturating_sub(now)))
        }
        None => unreadable(),
    }
}

/// Unix seconds of an HTTP-date: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), and the
/// obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`)
/// forms a recipient must also accept.
pub fn http_date(v: &str) -> Option<u64> {
    let cleaned = v.replace([',', '-'], " ");
    let t: Vec<&str> = cleaned.split_whitespace().collect();
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let day_name = t.first()?.to_ascii_lowercase();
    if !DAYS.iter().any(|d| day_name.starts_with(d)) {
        return None;
    }
    let (day, month, year, time) = match t.as_slice() {
        [_, d, m, y, time, "GMT"] => (*d, *m, *y, *time),
        [_, m, d, time, y] => (*d, *m, *y, *time),
        _ => return None,
    };
    let num = |s: &str, max_len: usize| -> Option<u64> {
        (!s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as u64 + 1;
    let day = num(day, 2).filter(|d| (1..=31).contains(d))?;
    let year = match year.len() {
        // RFC 850's two digits: RFC 9110 says to read a year more than 50 years ahead as past.
        2 => num(year, 2).map(|y| if y < 70 { 2000 + y } else { 1900 + y })?,
        4 => num(year, 4).filter(|y| *y >= 1970)?,
        _ => return None,
    };
    let hms: Vec<&str> = time.split(':').collect();
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    let (h, m, s) = (
        num(h, 2).filter(|h| *h < 24)?,
        num(m, 2).filter(|m| *m < 60)?,
        num(s, 2).filter(|s| *s <= 60)?,
    );
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year ≥ 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A random wait in `0..=ceiling` ("full jitter"). The randomness is the standard library's
/// per-process hash keys: enough to spread a fleet, and no generator to carry.
pub fn full_jitter(ceiling: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let millis = ceiling.as_millis().min(u128::from(u64::MAX)) as u64;
    Duration::from_millis(h.finish() % millis.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-07 05:50:00 UTC.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_622_600)
    }

    #[test]
    fn retry_after_is_read_as_seconds_dates_garbage_and_huge_values() {
        let wait = |v: &str| parse(v, now());
        assert_eq!(wait("30"), RetryAfter::Wait(Duration::from_secs(30)));
        assert_eq!(wait(" 0 "), RetryAfter::Wait(Duration::ZERO));
        // The three HTTP-date forms, 90 s ahead of now.
        for date in [
            "Mon, 07 Dec 2026 05:51:30 GMT",
            "Monday, 07-Dec-26 05:51:30 GMT",
            "Mon Dec  7 05:51:30 2026",
        ] {
            assert_eq!(
                wait(date),
                RetryAfter::Wait(Duration::from_secs(90)),
                "{date}"
            );
        }
        assert_eq!(
            wait("Sun, 06 Nov 1994 08:49:37 GMT"),
            RetryAfter::Wait(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(
            wait("99999999999999999999999999"),
            RetryAfter::Wait(Duration::from_secs(u64::MAX))
        );
        assert!(matches!(wait("99999999999999999999999999"), RetryAfter::Wait(d) if d > MAX_WAIT));
        for garbage in [
            "",
            "-5",
            "+5",
            "1.5",
            "soon",
            "Mon, 32 Dec 2026 05:51:30 GMT",
            "Mon, 07 Dec 2026 25:51:30 GMT",
            "Mon, 07 Foo 2026 05:51:30 GMT",
            "Mon, 07 Dec 2026 05:51:30 CET",
            "Mon, 07 Dec 99999999 05:51:30 GMT",
        ] {
            assert!(
                matches!(wait(garbage), RetryAfter::Unreadable(_)),
                "{garbage:?} was read"
            );
        }
        let evil = format!("\u{1b}[2J{}", "9x".repeat(10_000));
        let RetryAfter::Unreadable(shown) = wait(&evil) else {
            panic!("read");
        };
        assert!(shown.len() < 200 && !shown.contains('\u{1b}'), "{shown}");
    }

    #[test]
    fn the_wait_shows_in_the_message() {
        let t = Throttle {
            status: 429,
            retry_after: Some(RetryAfter::Wait(Duration::from_secs(30))),
        };
        assert_eq!(t.to_string(), "Received HTTP status 429 (Retry-After 30 s)");
    }

    #[test]
    fn full_jitter_stays_under_its_ceiling() {
        let ceiling = Duration::from_millis(50);
        let waits: Vec<Duration> = (0..64).map(|_| full_jitter(ceiling)).collect();
        assert!(waits.iter().all(|w| *w <= ceiling));
        assert!(waits.iter().any(|w| *w != waits[0]), "{waits:?}");
        assert_eq!(full_jitter(Duration::ZERO), Duration::ZERO);
    }
}
