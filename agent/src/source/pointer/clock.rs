//! The time a pointer's expiry is judged against. A Pi has no RTC: after a power cut its clock
//! starts wherever systemd-timesyncd's last save left it (or at the build date) until NTP
//! answers, and an attacker who controls the network can answer NTP. So the system clock is one
//! witness among three, and only when systemd-timesyncd says it is synchronized:
//! - the newest trusted time this device has seen, kept in state (it never moves back);
//! - the `Date` of the pointer server's HTTPS answer (the server holds a certificate the device
//!   trusts);
//! - the system clock, when `/run/systemd/timesync/synchronized` exists (timesyncd creates it
//!   at its first synchronization after boot and the tmpfs forgets it at the next).
//!
//! The trusted time is the latest of these: setting a clock back cannot revive an expired
//! pointer, because the state and the signed `issued` of every accepted pointer hold it forward.

use std::path::Path;
use std::time::SystemTime;

/// What systemd-timesyncd touches once the system clock is synchronized (systemd ≥ 239).
pub const TIMESYNC_SYNCHRONIZED: &str = "run/systemd/timesync/synchronized";

/// The witnesses of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrustedClock {
    /// The newest trusted time kept in state.
    pub kept: i64,
    /// The HTTPS `Date` of the pointer's answer, when it sent a readable one.
    pub date: Option<i64>,
    /// The system clock, when it is synchronized.
    pub system: Option<i64>,
}

impl TrustedClock {
    /// The witnesses under the device root `root`, with the server's `Date` header value.
    pub fn read(root: &Path, kept: i64, date_header: Option<&str>) -> Self {
        Self {
            kept,
            date: date_header
                .and_then(crate::source::fetch::http_date)
                .and_then(|d| i64::try_from(d).ok()),
            system: synchronized(root)
                .then(|| i64::try_from(crate::clock::unix_seconds(SystemTime::now())).unwrap_or(0)),
        }
    }

    /// The trusted time: the latest witness.
    pub fn now(&self) -> i64 {
        self.kept
            .max(self.date.unwrap_or(0))
            .max(self.system.unwrap_or(0))
    }
}

/// Whether systemd-timesyncd says the clock of the device at `root` is synchronized.
pub fn synchronized(root: &Path) -> bool {
    root.join(TIMESYNC_SYNCHRONIZED).exists()
}
