//! Asking the Mender client to send inventory now, so the fleet view follows a device's run.
//!
//! Only after a run that changed what Mender shows (branch, commit, status, error, suspension), and
//! otherwise at most once per heartbeat, so `tend_last_run` in Mender is never older than one
//! heartbeat plus a timer interval. Client 3.x: `mender send-inventory` (it reaches the daemon);
//! 4.x: `mender-update send-inventory`. A device without a Mender client is fine.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tend_roles::child::{Error as ChildError, Finished};

/// What Mender shows of a run; a change of any of these triggers a send.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    pub branch: String,
    pub commit: String,
    pub status: String,
    /// `tend_error`: a refused head leaves branch, commit and status as they were, and the
    /// fleet view must still show the refusal after this run, not a heartbeat later.
    #[serde(default)]
    pub error: String,
    pub suspended: bool,
    /// Whether the run corrected drift or found an audit-only resource drifted: the fleet view
    /// learns at once that something on the device fights the config (the counts follow).
    #[serde(default)]
    pub drift: bool,
    /// `tend_wave` and `tend_wave_applies_at`: a rollout gate reads them, so a device that
    /// starts or stops waiting tells Mender at once.
    #[serde(default)]
    pub wave: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SendState {
    pub shown: Shown,
    /// Unix seconds of the last successful send.
    pub sent_at: u64,
}

pub fn due(last: Option<&SendState>, now: &Shown, now_secs: u64, heartbeat: Duration) -> bool {
    match last {
        None => true,
        // A last send "in the future" means the clock went back (a Pi without an RTC, an NTP
        // correction): waiting for the clock to pass it could silence the heartbeat for years.
        Some(l) => {
            l.shown != *now || l.sent_at > now_secs || now_secs - l.sent_at >= heartbeat.as_secs()
        }
    }
}

/// The client command for the installed Mender, if any: 4.x first (its `mender` is the auth
/// daemon), then 3.x.
fn client(path: &str) -> Option<Vec<&'static str>> {
    let exists = |bin: &str| {
        path.split(':')
            .any(|d| std::path::Path::new(d).join(bin).is_file())
    };
    if exists("mender-update") {
        Some(vec!["mender-update", "send-inventory"])
    } else if exists("mender") {
        Some(vec!["mender", "send-inventory"])
    } else {
        None
    }
}

/// Runs the client's send-inventory with a bound; Ok(false) when there is no client.
pub fn send_inventory(timeout: Duration) -> Result<bool, String> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let Some(argv) = client(&path) else {
        return Ok(false);
    };
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null());
    match tend_roles::child::run(cmd, timeout) {
        Ok(Finished::Exited(out)) if out.status.success() => Ok(true),
        Ok(Finished::Exited(out)) => Err(format!(
            "{} exited with {}: {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(Finished::TimedOut(_)) => Err(format!(
            "{} did not finish in {} s",
            argv.join(" "),
            timeout.as_secs()
        )),
        Err(ChildError::Spawn(e)) => Err(format!("{}: {e}", argv.join(" "))),
        Err(ChildError::Wait(e)) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(commit: &str) -> Shown {
        Shown {
            branch: "canary".into(),
            commit: commit.into(),
            status: "ok".into(),
            error: String::new(),
            suspended: false,
            drift: false,
            wave: String::new(),
        }
    }

    #[test]
    fn sends_on_change_and_on_heartbeat_only() {
        let hb = Duration::from_secs(3600);
        assert!(due(None, &shown("a"), 100, hb), "first run");
        let last = SendState {
            shown: shown("a"),
            sent_at: 100,
        };
        assert!(!due(Some(&last), &shown("a"), 200, hb), "nothing changed");
        assert!(due(Some(&last), &shown("b"), 200, hb), "new commit");
        assert!(
            due(
                Some(&last),
                &Shown {
                    suspended: true,
                    ..shown("a")
                },
                200,
                hb
            ),
            "suspension"
        );
        assert!(
            due(
                Some(&last),
                &Shown {
                    error: "commit 1a2b3c4 of canary refused".into(),
                    ..shown("a")
                },
                200,
                hb
            ),
            "a refused head leaves branch, commit and status unchanged"
        );
        let drift = Shown {
            drift: true,
            ..shown("a")
        };
        assert!(
            due(Some(&last), &drift, 200, hb),
            "drift corrected or found"
        );
        assert!(due(Some(&last), &shown("a"), 100 + 3600, hb), "heartbeat");
    }

    #[test]
    fn a_clock_that_jumped_back_does_not_silence_the_heartbeat() {
        let hb = Duration::from_secs(3600);
        // Sent while the clock said 2038; the clock is now corrected to 2026.
        let last = SendState {
            shown: shown("a"),
            sent_at: 2_170_000_000,
        };
        assert!(due(Some(&last), &shown("a"), 1_790_000_000, hb));
    }

    #[test]
    fn client_detection_prefers_mender_4() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().display().to_string();
        assert_eq!(client(&p), None);
        std::fs::write(d.path().join("mender"), "").unwrap();
        assert_eq!(client(&p), Some(vec!["mender", "send-inventory"]));
        std::fs::write(d.path().join("mender-update"), "").unwrap();
        assert_eq!(client(&p), Some(vec!["mender-update", "send-inventory"]));
    }
}
