//! What each device's `tend_*` attributes say about the head, and whether the gate passes.
//!
//! Kept free of I/O (the head is asked through a closure, the clock is a parameter), so every
//! rule is a unit test.

use std::time::Duration;

use serde::Serialize;

use super::head::Match;
use super::mender::Device;
#[cfg(test)]
use crate::clock::parse_duration;

/// Statuses that mean the last run did not converge (see `inventory::status_word`).
pub const FAILED_STATUSES: &[&str] = &["failed", "invalid", "error"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// On the head (or its tree), status ok, recent.
    Passed,
    /// The last run failed.
    Failed,
    /// Not on the head yet, or never ran.
    Lagging,
    /// On the head, but its last run is older than `--max-age` (or unknown).
    Stale,
    /// Suspended with `tend suspend`: it applies nothing, so it proves nothing.
    Suspended,
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub device: String,
    pub state: State,
    pub commit: String,
    pub status: String,
    /// Seconds since the last run, when Mender has it.
    pub age: Option<u64>,
    pub reason: String,
    /// Whether the device runs the head's content; a failure there ends `--wait` at once.
    pub on_head: bool,
}

/// Classifies one device. `head` relates a reported commit to the branch head; `now` is Unix
/// seconds.
pub fn classify(d: &Device, head: &dyn Fn(&str) -> Match, now: i64, max_age: Duration) -> Row {
    let attr = |k: &str| d.attributes.get(k).map(String::as_str).unwrap_or("");
    let commit = attr("tend_commit");
    let status = attr("tend_status");
    let matched = if commit.is_empty() {
        Match::Unknown
    } else {
        head(commit)
    };
    let on_head = matches!(matched, Match::Head | Match::SameTree);
    let last_run = parse_time(attr("tend_last_run"));
    let age = last_run.map(|t| now.saturating_sub(t).max(0) as u64);
    let suspended = attr("tend_suspended");

    let (state, reason) = if FAILED_STATUSES.contains(&status) {
        let error = attr("tend_error");
        let why = if error.is_empty() {
            format!("tend_status={status}")
        } else {
            error.to_string()
        };
        (State::Failed, why)
    } else if status == "suspended" || !(suspended.is_empty() || suspended == "false") {
        (State::Suspended, format!("suspended: {suspended}"))
    } else if !on_head {
        let why = match matched {
            _ if commit.is_empty() => "reports no tend_commit (never ran `tend run`)".to_string(),
            Match::Unknown => format!("runs {}, which is not in the repo", short(commit)),
            _ => format!("runs {}, not the head", short(commit)),
        };
        (State::Lagging, why)
    } else if status != "ok" {
        (State::Lagging, format!("tend_status={status}"))
    } else {
        match age {
            None => (State::Stale, "no valid tend_last_run".to_string()),
            Some(a) if a > max_age.as_secs() => (
                State::Stale,
                format!(
                    "last run {} (max age {})",
                    crate::report::status::age(a),
                    span(max_age)
                ),
            ),
            Some(_) => (State::Passed, String::new()),
        }
    };
    Row {
        device: d.id.clone(),
        state,
        commit: short(commit).to_string(),
        status: if status.is_empty() {
            "-".into()
        } else {
            status.into()
        },
        age,
        reason,
        on_head,
    }
}

/// The verdict over all rows.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub passed: usize,
    pub failed: usize,
    pub waiting: usize,
    pub min_devices: usize,
}

impl Verdict {
    pub fn of(rows: &[Row], min_devices: usize) -> Verdict {
        let count = |s: State| rows.iter().filter(|r| r.state == s).count();
        let passed = count(State::Passed);
        let failed = count(State::Failed);
        Verdict {
            passed,
            failed,
            waiting: rows.len() - passed - failed,
            min_devices,
        }
    }

    /// At least `min_devices` passed and none failed.
    pub fn passes(&self) -> bool {
        self.failed == 0 && self.passed >= self.min_devices
    }
}

/// Whether waiting longer cannot help: a device failed on the head's content itself.
pub fn hopeless(rows: &[Row]) -> bool {
    rows.iter().any(|r| r.state == State::Failed && r.on_head)
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// RFC 3339 (what `tend inventory` writes) to Unix seconds.
pub fn parse_time(text: &str) -> Option<i64> {
    text.trim()
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

/// A duration the way it was likely typed: `90 min`, `2 h`, `45 s`.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    match (s % 3600, s % 60) {
        (0, _) if s >= 3600 => format!("{} h", s / 3600),
        (_, 0) if s >= 60 => format!("{} min", s / 60),
        _ => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const HEAD: &str = "1111111111111111111111111111111111111111";
    const SAME_TREE: &str = "2222222222222222222222222222222222222222";
    const OLD: &str = "3333333333333333333333333333333333333333";
    const NOW: i64 = 1_800_000_000;
    const MAX_AGE: Duration = Duration::from_secs(5400);

    fn head(c: &str) -> Match {
        match c {
            HEAD => Match::Head,
            SAME_TREE => Match::SameTree,
            OLD => Match::Other,
            _ => Match::Unknown,
        }
    }

    fn device(attrs: &[(&str, &str)]) -> Device {
        let mut a: BTreeMap<String, String> = [
            ("tend_branch", "canary"),
            ("tend_commit", HEAD),
            ("tend_status", "ok"),
            ("tend_last_run", "2027-01-15T08:00:00Z"),
            ("tend_suspended", "false"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in attrs {
            a.insert(k.to_string(), v.to_string());
        }
        Device {
            id: "dev".into(),
            attributes: a,
        }
    }

    fn state(attrs: &[(&str, &str)]) -> (State, String) {
        // "Now" is the fixture's last run.
        let r = classify(
            &device(attrs),
            &head,
            parse_time("2027-01-15T08:00:00Z").unwrap(),
            MAX_AGE,
        );
        (r.state, r.reason)
    }

    #[test]
    fn a_current_device_passes_on_the_head_or_its_tree() {
        assert_eq!(state(&[]).0, State::Passed);
        assert_eq!(state(&[("tend_commit", SAME_TREE)]).0, State::Passed);
    }

    #[test]
    fn lagging_failed_stale_and_suspended_are_told_apart() {
        let (s, why) = state(&[("tend_commit", OLD)]);
        assert_eq!(s, State::Lagging);
        assert!(why.contains("333333333333, not the head"), "{why}");
        let (s, why) = state(&[("tend_commit", "4444444444444444444444444444444444444444")]);
        assert_eq!(s, State::Lagging);
        assert!(why.contains("not in the repo"), "{why}");
        let (s, why) = state(&[
            ("tend_status", "failed"),
            ("tend_error", "package foo: 404"),
        ]);
        assert_eq!((s, why.as_str()), (State::Failed, "package foo: 404"));
        let (s, why) = state(&[("tend_last_run", "2027-01-15T06:00:00Z")]);
        assert_eq!(s, State::Stale);
        assert!(why.contains("2 h ago") && why.contains("90 min"), "{why}");
        assert_eq!(state(&[("tend_last_run", "yesterday")]).0, State::Stale);
        let (s, why) = state(&[
            ("tend_status", "suspended"),
            ("tend_suspended", "flash test"),
        ]);
        assert_eq!(
            (s, why.as_str()),
            (State::Suspended, "suspended: flash test")
        );
        assert_eq!(
            state(&[("tend_status", "never-run"), ("tend_commit", "")]).0,
            State::Lagging
        );
    }

    #[test]
    fn the_gate_needs_enough_passes_and_no_failure() {
        let rows: Vec<Row> = [&[][..], &[("tend_commit", OLD)][..]]
            .iter()
            .map(|a| classify(&device(a), &head, NOW, Duration::from_secs(u64::MAX / 2)))
            .collect();
        assert!(Verdict::of(&rows, 1).passes());
        assert!(!Verdict::of(&rows, 2).passes());
        let failed = classify(&device(&[("tend_status", "error")]), &head, NOW, MAX_AGE);
        let mut with_failure = rows.clone();
        with_failure.push(failed.clone());
        assert!(!Verdict::of(&with_failure, 1).passes());
        assert!(hopeless(&with_failure));
        // A failure on an old commit may clear once the device pulls the head: keep waiting.
        let old_failure = classify(
            &device(&[("tend_status", "failed"), ("tend_commit", OLD)]),
            &head,
            NOW,
            MAX_AGE,
        );
        assert!(!hopeless(&[old_failure]));
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert!(parse_duration("soon").unwrap_err().contains("e.g. 90m"));
        assert!(parse_duration("5w").unwrap_err().contains("unknown unit"));
        assert_eq!(span(Duration::from_secs(5400)), "90 min");
        assert_eq!(span(Duration::from_secs(7200)), "2 h");
    }

    #[test]
    fn rfc3339_with_offsets_and_fractions_parses() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("1970-01-01T01:00:00.5+01:00"), Some(0));
        assert_eq!(parse_time("2026-13-01T00:00:00Z"), None);
    }
}
