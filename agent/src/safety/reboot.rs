//! Reboots that a change needs (a kernel, /boot/config.txt): only inside the device's maintenance
//! window, after the report is written, once per commit, and confirmed after boot.
//!
//! A resource or handler marked `reboot: true` that changed makes a reboot pending for the
//! applied commit; the pending reboot is kept in the run state, so a device outside its window
//! reboots on the first clean run inside it. Before the command runs, tend records the boot id;
//! a later run that sees another boot id reports that the reboot happened (its health checks ran
//! in that run). A commit the device already rebooted for never reboots it again, and a reboot
//! that was asked for but did not happen is not asked again: a device must not reboot in a loop.

use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::clock::unix_seconds;
use crate::device::window::Window;

/// Where the kernel publishes this boot's random id (under the managed root).
pub const BOOT_ID: &str = "proc/sys/kernel/random/boot_id";

/// Minutes since midnight, in the device's local time (its /etc/localtime or TZ).
// libc marks musl's time_t deprecated because it will become 64-bit; that is the type
// localtime_r takes whatever its width, so the warning has nothing to fix here.
#[allow(deprecated)]
pub fn local_minute(now: SystemTime) -> u16 {
    let secs = unix_seconds(now) as libc::time_t;
    // SAFETY: localtime_r writes only into the tm we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return ((secs / 60) % (24 * 60)) as u16;
    }
    (tm.tm_hour * 60 + tm.tm_min) as u16
}

pub fn boot_id(root: &Path) -> Option<String> {
    std::fs::read_to_string(root.join(BOOT_ID))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A reboot owed to a commit, kept in the run state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub commit: String,
    /// "kind id" of what needs it.
    pub reasons: Vec<String>,
    /// Unix seconds when it became pending.
    pub since: u64,
    /// Set when tend ran the reboot command: when, and the boot id then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<Requested>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requested {
    pub at: u64,
    pub boot_id: String,
}

/// The reboot memory of the run state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// The last commit the device rebooted for: never again for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebooted_for: Option<String>,
}

impl State {
    /// At the start of a run: the reboot tend asked for happened when the boot id changed.
    pub fn after_boot(&mut self, boot_id: Option<&str>) -> Option<Happened> {
        let asked = self.pending.as_ref()?.requested.as_ref()?;
        if boot_id.is_none() || boot_id == Some(asked.boot_id.as_str()) {
            return None;
        }
        let p = self.pending.take()?;
        self.rebooted_for = Some(p.commit.clone());
        Some(Happened {
            commit: p.commit,
            reasons: p.reasons,
            requested_at: p.requested.map(|r| r.at).unwrap_or(0),
        })
    }
}

/// One run's inputs to the decision.
pub struct Decision<'a> {
    /// The applied commit; None for `apply --path`, which reports but never reboots.
    pub commit: Option<&'a str>,
    pub required: &'a [String],
    /// The run converged without failures (a reboot never follows a failed or reverted run).
    pub clean: bool,
    pub check: bool,
    pub window: Window,
    pub minute: u16,
    pub now: u64,
    pub boot_id: Option<&'a str>,
    pub happened: Option<Happened>,
    /// An application's inhibitor holds reboots off now (its holder).
    pub held_by: Option<&'a str>,
}

/// Updates the reboot state for this run; returns the report and whether to reboot now.
pub fn decide(state: &mut State, d: Decision) -> (Option<RebootReport>, bool) {
    let mut report = RebootReport {
        required: d.required.to_vec(),
        window: d.window.describe(),
        happened: d.happened,
        ..Default::default()
    };
    if let (Some(commit), false, true, false) = (d.commit, d.required.is_empty(), d.clean, d.check)
    {
        if state.rebooted_for.as_deref() == Some(commit) {
            report.action = Some(format!(
                "not rebooting again: the device already rebooted for commit {commit}"
            ));
        } else {
            let p = state.pending.get_or_insert_with(|| Pending {
                commit: commit.to_string(),
                since: d.now,
                ..Default::default()
            });
            p.commit = commit.to_string();
            for r in d.required {
                if !p.reasons.contains(r) {
                    p.reasons.push(r.clone());
                }
            }
        }
    }
    let mut now = false;
    if let Some(p) = &mut state.pending {
        report.pending = true;
        report.commit = Some(p.commit.clone());
        report.action = Some(match &p.requested {
            Some(r) => format!(
                "a reboot was requested at {} and has not happened; tend does not ask again for commit {}",
                crate::clock::rfc3339(r.at),
                p.commit
            ),
            None if d.check => "check mode: not rebooting".into(),
            None if !d.clean => "waiting for a run without failures".into(),
            None if d.window == Window::Never => {
                "not rebooting: reboot.window is never; reboot the device by hand".into()
            }
            None if !d.window.contains(d.minute) => {
                format!("waiting for the maintenance window {}", d.window.describe())
            }
            None if d.held_by.is_some() => {
                let h = d.held_by.unwrap_or_default();
                report.deferred_by = Some(h.to_string());
                format!("deferred: held off by {h}; tend reboots on the first run after it lets go")
            }
            None => {
                p.requested = Some(Requested {
                    at: d.now,
                    boot_id: d.boot_id.unwrap_or_default().to_string(),
                });
                now = true;
                "rebooting".into()
            }
        });
    }
    let empty = report.required.is_empty() && !report.pending && report.happened.is_none();
    ((!empty || report.action.is_some()).then_some(report), now)
}

/// A reboot that happened, for the report of the first run after it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Happened {
    pub commit: String,
    pub reasons: Vec<String>,
    /// Unix seconds when tend asked for it.
    pub requested_at: u64,
}

/// What the report says about reboots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootReport {
    /// What changed in this run and needs a reboot (check mode: what would).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
    /// A reboot is owed and has not happened yet.
    pub pending: bool,
    /// The commit it is owed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub window: String,
    /// What tend did about it: "rebooting", or why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The reboot that happened before this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub happened: Option<Happened>,
    /// Who held the reboot off in this run (an application's inhibitor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_by: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u16, m: u16) -> u16 {
        h * 60 + m
    }

    #[test]
    fn windows_parse_and_contain_local_times_also_across_midnight() {
        let w = Window::parse("02:00-04:00").unwrap();
        assert!(w.contains(at(2, 0)) && w.contains(at(3, 59)));
        assert!(!w.contains(at(4, 0)) && !w.contains(at(1, 59)));
        let night = Window::parse("22:30-04:00").unwrap();
        assert!(night.contains(at(23, 0)) && night.contains(at(0, 10)));
        assert!(!night.contains(at(12, 0)) && !night.contains(at(22, 29)));
        let any = Window::parse("00:00-24:00").unwrap();
        assert!(any.contains(0) && any.contains(at(23, 59)));
        assert!(!Window::parse("never").unwrap().contains(at(3, 0)));
        assert_eq!(night.describe(), "22:30-04:00");
        for bad in [
            "2-4",
            "02:00",
            "25:00-26:00",
            "02:60-03:00",
            "03:00-03:00",
            "always",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }

    fn decision<'a>(commit: &'a str, required: &'a [String], minute: u16) -> Decision<'a> {
        Decision {
            commit: Some(commit),
            required,
            clean: true,
            check: false,
            window: Window::parse("02:00-04:00").unwrap(),
            minute,
            now: 1000,
            boot_id: Some("boot-1"),
            happened: None,
            held_by: None,
        }
    }

    #[test]
    fn a_reboot_waits_for_the_window_happens_once_and_is_reported_after_boot() {
        let mut s = State::default();
        let kernel = vec!["package linux-image-arm64".to_string()];
        let (r, now) = decide(&mut s, decision("c1", &kernel, at(12, 0)));
        assert!(!now);
        let r = r.unwrap();
        assert!(r.pending && r.action.unwrap().contains("window 02:00-04:00"));

        // Later, inside the window, nothing changes any more: the pending reboot is carried out.
        let (r, now) = decide(&mut s, decision("c1", &[], at(2, 30)));
        assert!(now, "{r:?}");
        assert_eq!(
            s.pending
                .as_ref()
                .unwrap()
                .requested
                .as_ref()
                .unwrap()
                .boot_id,
            "boot-1"
        );

        // Same boot: not asked again.
        assert_eq!(s.after_boot(Some("boot-1")), None);
        let (r, now) = decide(&mut s, decision("c1", &[], at(2, 40)));
        assert!(!now && r.unwrap().action.unwrap().contains("has not happened"));

        // A new boot: reported once, and never again for this commit.
        let happened = s.after_boot(Some("boot-2")).unwrap();
        assert_eq!(
            (happened.commit.as_str(), happened.reasons.clone()),
            ("c1", kernel.clone())
        );
        assert_eq!(s.after_boot(Some("boot-3")), None);
        let (r, now) = decide(&mut s, decision("c1", &kernel, at(3, 0)));
        assert!(!now && !r.unwrap().pending);
        let (_, now) = decide(&mut s, decision("c2", &kernel, at(3, 0)));
        assert!(now, "a new commit may reboot again");
    }

    #[test]
    fn no_reboot_never_in_check_mode_after_failures_or_without_a_commit() {
        let kernel = vec!["file /boot/config.txt".to_string()];
        let never = Decision {
            window: Window::Never,
            ..decision("c", &kernel, at(3, 0))
        };
        assert!(!decide(&mut State::default(), never).1);
        let check = Decision {
            check: true,
            ..decision("c", &kernel, at(3, 0))
        };
        let mut s = State::default();
        let (r, now) = decide(&mut s, check);
        assert!(!now && s.pending.is_none() && r.unwrap().required == kernel);
        let failed = Decision {
            clean: false,
            ..decision("c", &kernel, at(3, 0))
        };
        assert!(!decide(&mut State::default(), failed).1);
        let path = Decision {
            commit: None,
            ..decision("c", &kernel, at(3, 0))
        };
        assert!(!decide(&mut State::default(), path).1);
        let (r, _) = decide(&mut State::default(), decision("c", &[], at(3, 0)));
        assert_eq!(r, None, "nothing to say");
    }

    #[test]
    fn a_held_reboot_inside_the_window_is_deferred_and_happens_after_release() {
        let mut s = State::default();
        let kernel = vec!["package linux-image-arm64".to_string()];
        let held = Decision {
            held_by: Some("app-update"),
            ..decision("c1", &kernel, at(2, 30))
        };
        let (r, now) = decide(&mut s, held);
        let r = r.unwrap();
        assert!(!now && r.pending, "{r:?}");
        assert_eq!(r.deferred_by.as_deref(), Some("app-update"));
        assert!(r
            .action
            .unwrap()
            .starts_with("deferred: held off by app-update"));
        assert!(s.pending.as_ref().unwrap().requested.is_none(), "not asked");

        let (r, now) = decide(&mut s, decision("c1", &[], at(2, 40)));
        assert!(now && r.unwrap().deferred_by.is_none(), "released: reboots");
    }
}
