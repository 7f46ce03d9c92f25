//! `tend gate --rollout`: per wave, how many devices took the head and how many of them failed.
//!
//! A stage rolls out in waves: each device reports its wave as the Mender attribute `tend_wave`
//! (`W/N`, absent: wave 1 of 1) and when it applies a new head (`tend_wave_applies_at`). Once a
//! wave has taken the head, its failure rate says whether the later waves should get it: above
//! `--max-failure-rate` the rollout halts (a signed revert, docs/fleet-workflow.md). A device that
//! reverted the head (`tend_reverted_commit` is the head, `tend_status` reverted) took it and
//! failed: it is counted as a failure, like one whose run on the head failed.
//!
//! Kept free of I/O (the head is asked through a closure), so every rule is a unit test.

use serde::Serialize;

use super::head::Match;
use super::mender::Device;
use super::verdict::{parse_time, FAILED_STATUSES};

/// A wave of a stage: `index` of `of`, both from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Wave {
    pub index: u32,
    pub of: u32,
}

impl Wave {
    /// A device without `tend_wave` (no `rollout:` for its stage, or an older tend).
    pub const ONLY: Wave = Wave { index: 1, of: 1 };

    /// `3/10`; an empty text is wave 1 of 1.
    pub fn parse(text: &str) -> Result<Wave, String> {
        let t = text.trim();
        if t.is_empty() {
            return Ok(Wave::ONLY);
        }
        let parsed = t
            .split_once('/')
            .and_then(|(w, n)| Some((w.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, of)) if 1 <= index && index <= of => Ok(Wave { index, of }),
            _ => Err(format!("tend_wave `{t}` is not W/N with 1 <= W <= N")),
        }
    }
}

/// A share in hundredths of a percent (basis points): 5 % is 500. Integers keep `5 %` exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rate(pub u32);

impl Rate {
    /// `failed` of `took`, rounded to the nearest basis point; 0 when nobody took the head.
    pub fn of(failed: usize, took: usize) -> Rate {
        if took == 0 {
            return Rate(0);
        }
        let (f, t) = (failed as u128, took as u128);
        Rate(((f * 10_000 * 2 + t) / (2 * t)) as u32)
    }

    /// Whether `failed` of `took` is more than this share, exactly (no rounding).
    pub fn exceeded_by(self, failed: usize, took: usize) -> bool {
        failed as u128 * 10_000 > self.0 as u128 * took as u128
    }
}

impl std::fmt::Display for Rate {
    /// `7.5 %`, `5 %`, `33.33 %`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "{whole} %"),
            n if n % 10 == 0 => write!(f, "{whole}.{} %", n / 10),
            n => write!(f, "{whole}.{n:02} %"),
        }
    }
}

/// `5%`, `5`, `0.5 %` (percent, at most two decimals, 0 to 100); for `--max-failure-rate`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let t = text.trim();
    let number = t.strip_suffix('%').unwrap_or(t).trim();
    let bad = || format!("`{text}` is not a percentage; write e.g. 5%, 0.5% or 10");
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty()
        || frac.len() > 2
        || !(whole.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: u32 = whole.parse().map_err(|_| bad())?;
    let frac: u32 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    let bp = whole.checked_mul(100).and_then(|w| w.checked_add(frac));
    match bp {
        Some(bp) if bp <= 10_000 => Ok(Rate(bp)),
        _ => Err(format!("`{text}` is more than 100 %")),
    }
}

/// What one device says about the rollout of the head.
#[derive(Clone, Debug, Serialize)]
pub struct Member {
    pub device: String,
    /// None when `tend_wave` cannot be read (`wave_error` says why).
    pub wave: Option<Wave>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wave_error: Option<String>,
    /// Unix seconds of `tend_wave_applies_at`, when readable.
    #[serde(skip)]
    pub applies_at: Option<i64>,
    pub status: String,
    /// It runs the head (or its tree), or ran it and reverted.
    pub took_head: bool,
    pub reverted: bool,
    /// Why it counts as a failure of the head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// Reads one device's attributes; `head` relates a reported commit to the branch head.
pub fn member(d: &Device, head: &dyn Fn(&str) -> Match) -> Member {
    let attr = |k: &str| d.attributes.get(k).map(String::as_str).unwrap_or("");
    let is_head =
        |c: &str| !c.trim().is_empty() && matches!(head(c), Match::Head | Match::SameTree);
    let status = attr("tend_status");
    let (wave, wave_error) = match Wave::parse(attr("tend_wave")) {
        Ok(w) => (Some(w), None),
        Err(e) => (None, Some(e)),
    };
    // A revert leaves tend_commit at the last good commit and names the head it left.
    let reverted = is_head(attr("tend_reverted_commit"));
    let on_head = is_head(attr("tend_commit"));
    let failure = if reverted {
        let cause = attr("tend_revert_cause");
        Some(if cause.is_empty() {
            "reverted the head".to_string()
        } else {
            format!("reverted the head: {cause}")
        })
    } else if on_head && FAILED_STATUSES.contains(&status) {
        let error = attr("tend_error");
        Some(if error.is_empty() {
            format!("tend_status={status}")
        } else {
            error.to_string()
        })
    } else {
        None
    };
    Member {
        device: d.id.clone(),
        wave,
        wave_error,
        applies_at: parse_time(attr("tend_wave_applies_at")),
        status: if status.is_empty() { "-" } else { status }.to_string(),
        took_head: reverted || on_head,
        reverted,
        failure,
    }
}

/// The answer for one wave, or for the whole branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Continue,
    Halt,
    /// Fewer than `--min-devices` took the head: too few to judge; the rollout continues.
    NotJudged,
}

#[derive(Clone, Debug)]
pub struct Tally {
    /// None: the whole branch (`overall`), or devices whose `tend_wave` is unreadable.
    pub wave: Option<Wave>,
    pub devices: usize,
    pub took_head: usize,
    /// Of `took_head`: failed on the head, or reverted it.
    pub failed: usize,
    /// Of `failed`: reverted the head.
    pub reverted: usize,
    pub rate: Rate,
    /// The earliest `tend_wave_applies_at` of a device not on the head yet (Unix seconds).
    pub applies_at: Option<i64>,
    pub decision: Decision,
}

impl Tally {
    fn of<'a>(
        wave: Option<Wave>,
        members: impl Iterator<Item = &'a Member>,
        t: Threshold,
    ) -> Tally {
        let mut tally = Tally {
            wave,
            devices: 0,
            took_head: 0,
            failed: 0,
            reverted: 0,
            rate: Rate(0),
            applies_at: None,
            decision: Decision::Continue,
        };
        for m in members {
            tally.devices += 1;
            tally.took_head += usize::from(m.took_head);
            tally.failed += usize::from(m.failure.is_some());
            tally.reverted += usize::from(m.reverted);
            // What is still to come: the devices that took the head applied already.
            let pending = m.applies_at.filter(|_| !m.took_head);
            tally.applies_at = match (tally.applies_at, pending) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        tally.rate = Rate::of(tally.failed, tally.took_head);
        tally.decision = if tally.took_head < t.min_devices.max(1) {
            Decision::NotJudged
        } else if t
            .max_failure_rate
            .exceeded_by(tally.failed, tally.took_head)
        {
            Decision::Halt
        } else {
            Decision::Continue
        };
        tally
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Threshold {
    pub max_failure_rate: Rate,
    /// A wave with fewer devices on the head is not judged (at least 1).
    pub min_devices: usize,
}

#[derive(Clone, Debug)]
pub struct Rollout {
    /// Wave by wave, in order; devices with an unreadable `tend_wave` last.
    pub waves: Vec<Tally>,
    pub overall: Tally,
}

impl Rollout {
    pub fn of(members: &[Member], t: Threshold) -> Rollout {
        let mut keys: Vec<Option<Wave>> = members.iter().map(|m| m.wave).collect();
        // Some(..) sorts after None: put the unreadable ones last.
        keys.sort_by_key(|w| (w.is_none(), *w));
        keys.dedup();
        let waves = keys
            .into_iter()
            .map(|w| Tally::of(w, members.iter().filter(|m| m.wave == w), t))
            .collect();
        Rollout {
            waves,
            overall: Tally::of(None, members.iter(), t),
        }
    }

    /// Halt when any wave, or the branch as a whole, passed the threshold.
    pub fn halts(&self) -> bool {
        self.overall.decision == Decision::Halt
            || self.waves.iter().any(|w| w.decision == Decision::Halt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const HEAD: &str = "1111111111111111111111111111111111111111";
    const SAME_TREE: &str = "2222222222222222222222222222222222222222";
    const OLD: &str = "3333333333333333333333333333333333333333";

    fn head(c: &str) -> Match {
        match c {
            HEAD => Match::Head,
            SAME_TREE => Match::SameTree,
            OLD => Match::Other,
            _ => Match::Unknown,
        }
    }

    fn device(id: &str, attrs: &[(&str, &str)]) -> Member {
        let mut a: BTreeMap<String, String> = [
            ("tend_branch", "production"),
            ("tend_commit", HEAD),
            ("tend_status", "ok"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in attrs {
            a.insert(k.to_string(), v.to_string());
        }
        member(
            &Device {
                id: id.into(),
                attributes: a,
            },
            &head,
        )
    }

    /// `took` devices of wave `w`, the first `failed` of them failed on the head.
    fn wave(w: &str, took: usize, failed: usize) -> Vec<Member> {
        (0..took)
            .map(|i| {
                let status = if i < failed { "failed" } else { "ok" };
                device(
                    &format!("{w}-{i}"),
                    &[("tend_wave", w), ("tend_status", status)],
                )
            })
            .collect()
    }

    const FIVE: Threshold = Threshold {
        max_failure_rate: Rate(500),
        min_devices: 1,
    };

    #[test]
    fn waves_read_as_w_of_n_and_absent_is_wave_1_of_1() {
        assert_eq!(Wave::parse("3/10"), Ok(Wave { index: 3, of: 10 }));
        assert_eq!(Wave::parse(" 1 / 1 "), Ok(Wave::ONLY));
        assert_eq!(Wave::parse(""), Ok(Wave::ONLY));
        for bad in ["0/3", "4/3", "3", "a/b", "-1/2"] {
            assert!(Wave::parse(bad).unwrap_err().contains("W/N"), "{bad}");
        }
        assert_eq!(device("d", &[]).wave, Some(Wave::ONLY));
    }

    #[test]
    fn rates_parse_as_percent_and_print_exactly() {
        assert_eq!(parse_rate("5%"), Ok(Rate(500)));
        assert_eq!(parse_rate("5"), Ok(Rate(500)));
        assert_eq!(parse_rate("0.5 %"), Ok(Rate(50)));
        assert_eq!(parse_rate("7.25%"), Ok(Rate(725)));
        assert_eq!(parse_rate("100%"), Ok(Rate(10_000)));
        assert!(parse_rate("101%").unwrap_err().contains("more than 100"));
        for bad in ["", "%", "five", "1.234%", "-1%", ".5%"] {
            assert!(parse_rate(bad).unwrap_err().contains("e.g. 5%"), "{bad}");
        }
        assert_eq!(Rate::of(3, 40).to_string(), "7.5 %");
        assert_eq!(Rate::of(2, 40).to_string(), "5 %");
        assert_eq!(Rate::of(1, 3).to_string(), "33.33 %");
        assert_eq!(Rate::of(1, 400).to_string(), "0.25 %");
        assert_eq!(Rate::of(0, 0).to_string(), "0 %");
    }

    #[test]
    fn a_wave_above_the_threshold_halts_and_at_or_below_continues() {
        // 3 of 40 is 7.5 % > 5 %.
        let r = Rollout::of(&wave("1/10", 40, 3), FIVE);
        assert_eq!(r.waves[0].decision, Decision::Halt);
        assert!(r.halts());
        // 2 of 40 is exactly 5 %: not more than the threshold.
        let r = Rollout::of(&wave("1/10", 40, 2), FIVE);
        assert_eq!(r.waves[0].decision, Decision::Continue);
        assert!(!r.halts());
        // A rate that rounds to the threshold but passes it halts: 1 of 19 is 5.26 %.
        assert!(Rate(500).exceeded_by(1, 19));
        assert!(!Rate(500).exceeded_by(1, 20));
    }

    #[test]
    fn waves_are_counted_apart_and_in_order() {
        let mut all = wave("2/3", 10, 0);
        all.extend(wave("1/3", 20, 1));
        // Wave 3 has not taken the head yet: it runs an older commit.
        all.extend((0..5).map(|i| {
            device(
                &format!("late-{i}"),
                &[
                    ("tend_wave", "3/3"),
                    ("tend_commit", OLD),
                    ("tend_wave_applies_at", "2027-01-15T10:00:00Z"),
                ],
            )
        }));
        let r = Rollout::of(&all, FIVE);
        let got: Vec<(u32, usize, usize, usize, Decision)> = r
            .waves
            .iter()
            .map(|t| {
                (
                    t.wave.unwrap().index,
                    t.devices,
                    t.took_head,
                    t.failed,
                    t.decision,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 20, 20, 1, Decision::Continue),
                (2, 10, 10, 0, Decision::Continue),
                (3, 5, 0, 0, Decision::NotJudged),
            ]
        );
        assert_eq!(r.waves[2].applies_at, parse_time("2027-01-15T10:00:00Z"));
        // A device on the head applied already: its time is not what comes next.
        let done = device("d", &[("tend_wave_applies_at", "2027-01-15T09:00:00Z")]);
        assert_eq!(Rollout::of(&[done], FIVE).waves[0].applies_at, None);
        assert_eq!(
            (r.overall.devices, r.overall.took_head, r.overall.failed),
            (35, 30, 1)
        );
        assert!(!r.halts());
    }

    #[test]
    fn a_device_that_reverted_the_head_counts_as_a_failure() {
        let m = device(
            "pi",
            &[
                ("tend_status", "reverted"),
                ("tend_commit", OLD),
                ("tend_reverted_commit", SAME_TREE),
                (
                    "tend_revert_cause",
                    "role web: health check 'web answers' failed",
                ),
            ],
        );
        assert!(m.took_head && m.reverted);
        assert_eq!(
            m.failure.as_deref(),
            Some("reverted the head: role web: health check 'web answers' failed")
        );
        // Reverting an older commit says nothing about this head.
        let m = device(
            "pi",
            &[
                ("tend_status", "reverted"),
                ("tend_commit", OLD),
                (
                    "tend_reverted_commit",
                    "4444444444444444444444444444444444444444",
                ),
            ],
        );
        assert!(!m.took_head && m.failure.is_none());
        let r = Rollout::of(
            &[
                device("a", &[]),
                device("b", &[("tend_commit", OLD), ("tend_reverted_commit", HEAD)]),
            ],
            FIVE,
        );
        assert_eq!((r.overall.failed, r.overall.reverted), (1, 1));
        assert!(r.halts());
    }

    #[test]
    fn a_failure_on_an_older_commit_is_not_the_heads() {
        let m = device("pi", &[("tend_status", "failed"), ("tend_commit", OLD)]);
        assert!(!m.took_head && m.failure.is_none());
    }

    #[test]
    fn too_few_devices_on_the_head_are_not_judged_but_the_branch_is() {
        let t = Threshold {
            max_failure_rate: Rate(500),
            min_devices: 10,
        };
        let mut all = wave("1/2", 5, 3);
        all.extend(wave("2/2", 6, 3));
        let r = Rollout::of(&all, t);
        assert!(r.waves.iter().all(|w| w.decision == Decision::NotJudged));
        // 11 on the head, 6 failed: the branch as a whole passed the threshold.
        assert_eq!(r.overall.decision, Decision::Halt);
        assert!(r.halts());
    }

    #[test]
    fn an_unreadable_wave_is_its_own_group_and_still_counts() {
        let mut all = wave("1/1", 3, 0);
        all.push(device(
            "odd",
            &[("tend_wave", "wave-two"), ("tend_status", "error")],
        ));
        let r = Rollout::of(&all, FIVE);
        assert_eq!(r.waves.len(), 2);
        assert_eq!(r.waves[1].wave, None);
        assert_eq!(r.waves[1].decision, Decision::Halt);
        assert!(all[3].wave_error.as_deref().unwrap().contains("wave-two"));
    }
}
