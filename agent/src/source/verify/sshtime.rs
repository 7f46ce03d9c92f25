//! The timestamps of allowed_signers' `valid-after=` / `valid-before=` options, read exactly as
//! ssh-keygen reads them (OpenSSH misc.c `parse_absolute_time`), so that the device and
//! `git verify-commit` on an engineer's laptop agree on when a key is valid.
//!
//! Forms: `YYYYMMDD`, `YYYYMMDDHHMM`, `YYYYMMDDHHMMSS`, each optionally suffixed `Z` or `UTC`
//! (case-insensitive) for UTC; without a suffix, the device's local time zone.

use jiff::civil::{Date, Time};
use jiff::tz::Offset;

/// Seconds since the epoch, or what is wrong with the text.
pub(crate) fn parse(text: &str) -> Result<i64, String> {
    let lower = text.to_ascii_lowercase();
    let (digits, utc) = if let Some(d) = lower.strip_suffix("utc") {
        (d, true)
    } else if let Some(d) = lower.strip_suffix('z') {
        (d, true)
    } else {
        (lower.as_str(), false)
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` is not a timestamp; write YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, \
             with a Z suffix for UTC (e.g. 20250131Z)"
        ));
    }
    let num = |r: std::ops::Range<usize>| digits[r].parse::<i16>().unwrap_or(i16::MAX);
    let (year, month, day) = (num(0..4), num(4..6), num(6..8));
    let (hour, minute) = if digits.len() >= 12 {
        (num(8..10), num(10..12))
    } else {
        (0, 0)
    };
    let second = if digits.len() == 14 { num(12..14) } else { 0 };
    let bad = || format!("`{text}` is not a valid date and time");
    let small = |n: i16| i8::try_from(n).map_err(|_| bad());
    let date = Date::new(year, small(month)?, small(day)?).map_err(|_| bad())?;
    let clock = Time::new(small(hour)?, small(minute)?, small(second)?, 0).map_err(|_| bad())?;
    let secs = if utc {
        utc_seconds(date, clock).ok_or_else(bad)?
    } else {
        local_to_unix(date, clock).ok_or_else(bad)?
    };
    // ssh-keygen refuses times before the epoch (and 0 means "unset" there).
    if secs <= 0 {
        return Err(format!("`{text}` is before 1970"));
    }
    Ok(secs)
}

/// A wall-clock time read as UTC, in seconds since the epoch.
fn utc_seconds(date: Date, clock: Time) -> Option<i64> {
    Offset::UTC
        .to_timestamp(date.to_datetime(clock))
        .ok()
        .map(|t| t.as_second())
}

/// Local wall-clock time to seconds since the epoch, through the C library's time zone rules
/// (TZ, /etc/localtime) as ssh-keygen does.
fn local_to_unix(date: Date, clock: Time) -> Option<i64> {
    mktime(date, clock).or_else(|| {
        (date.year() >= 2038)
            .then(|| via_2037(date, clock))
            .flatten()
    })
}

/// A 32-bit `time_t` (armhf) cannot hold 2038 or later: use the zone's offset on the same day
/// of 2037 instead. The zone rules of the far future are a guess either way.
fn via_2037(date: Date, clock: Time) -> Option<i64> {
    let near = Date::new(2037, date.month(), date.day().min(28)).ok()?;
    let offset = mktime(near, clock)? - utc_seconds(near, clock)?;
    Some(utc_seconds(date, clock)? + offset)
}

/// C `mktime`. Like ssh-keygen, `tm_isdst` is 0 (it zeroes the struct before strptime), so both
/// read a summer-time timestamp the same way.
#[allow(clippy::useless_conversion)] // time_t is i32 on armhf and i64 elsewhere
fn mktime(date: Date, clock: Time) -> Option<i64> {
    // SAFETY: `tm` is a plain C struct for which all-zero bytes are a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = i32::from(date.year()) - 1900;
    tm.tm_mon = i32::from(date.month()) - 1;
    tm.tm_mday = i32::from(date.day());
    tm.tm_hour = i32::from(clock.hour());
    tm.tm_min = i32::from(clock.minute());
    tm.tm_sec = i32::from(clock.second());
    tm.tm_isdst = 0;
    // SAFETY: mktime reads and normalises the struct we own; it is thread-safe in glibc and musl.
    let t = unsafe { libc::mktime(&mut tm) };
    (t != -1).then_some(i64::from(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_forms() {
        assert_eq!(parse("20240101Z").unwrap(), 1_704_067_200);
        assert_eq!(parse("20240101z").unwrap(), 1_704_067_200);
        assert_eq!(parse("20240101UTC").unwrap(), 1_704_067_200);
        assert_eq!(
            parse("202401011230Z").unwrap(),
            1_704_067_200 + 12 * 3600 + 30 * 60
        );
        assert_eq!(parse("20240101123005Z").unwrap(), 1_704_112_205);
    }

    #[test]
    fn local_time_is_within_a_day_of_utc() {
        let local = parse("20240101").unwrap();
        assert!((local - 1_704_067_200).abs() <= 14 * 3600, "{local}");
    }

    #[test]
    fn far_future_local_time_survives_a_32_bit_time_t() {
        let date = Date::new(2050, 6, 15).unwrap();
        let clock = Time::new(12, 0, 0, 0).unwrap();
        match mktime(date, clock) {
            // 64-bit time_t: the fallback must agree with mktime itself.
            Some(direct) => assert_eq!(via_2037(date, clock), Some(direct)),
            // 32-bit time_t (armhf): mktime cannot, the fallback must.
            None => assert!(via_2037(date, clock).is_some()),
        }
        let local = parse("20991231").unwrap();
        let utc = parse("20991231Z").unwrap();
        assert!((local - utc).abs() <= 14 * 3600, "{local} vs {utc}");
    }

    #[test]
    fn refused_forms_say_what_to_write() {
        for bad in [
            "2024010",
            "202401011",
            "2024-01-01",
            "20241301Z",
            "20240230Z",
            "20240101250000Z",
            "20240101126000Z",
            "Z",
            "",
            "19690101Z",
            "x20240101",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(bad) || bad.is_empty(), "{bad}: {err}");
        }
        assert!(parse("2024").unwrap_err().contains("YYYYMMDD"));
    }
}
