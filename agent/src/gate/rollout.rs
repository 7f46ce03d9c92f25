//! `tend gate --branch production --rollout`: halt or continue a rollout in waves.
//!
//! A scheduled CI job asks this while a stage rolls out. It reads the inventory of the devices
//! following the branch, counts per wave those that took the head and those of them that failed
//! or reverted (`wave`), and exits `exit::HALT` when a wave (or the branch as a whole) passed
//! `--max-failure-rate`. The halt itself is the job's next step, a signed `git revert` of the
//! merge pushed to the branch: devices that took the head apply the revert, later waves never
//! apply the bad head (docs/fleet-workflow.md). One ask, no `--wait`: the schedule is the loop.

use std::io::Write;

use serde_json::{json, Value};

use super::wave::{member, Decision, Member, Rate, Rollout, Tally, Threshold};
use super::{connect, GateOptions};
use crate::exit;

pub fn run(opts: &GateOptions, max_failure_rate: Rate, out: &mut dyn Write) -> u8 {
    let (head, client) = match connect(opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tend gate: {e}");
            return exit::COULD_NOT_RUN;
        }
    };
    let devices = match client.devices_following(&opts.branch) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tend gate: {e}");
            return exit::COULD_NOT_RUN;
        }
    };
    let matches = |c: &str| head.classify(c);
    let members: Vec<Member> = devices.iter().map(|d| member(d, &matches)).collect();
    let threshold = Threshold {
        max_failure_rate,
        min_devices: opts.min_devices.max(1),
    };
    let rollout = Rollout::of(&members, threshold);
    let answer = Answer {
        branch: &opts.branch,
        head: head.commit.to_string(),
        reference: &head.reference,
        threshold,
        rollout: &rollout,
        members: &members,
    };
    let printed = if opts.json {
        answer.print_json(out)
    } else {
        answer.print_text(out)
    };
    if let Err(e) = printed {
        eprintln!("tend gate: {e}");
        return exit::COULD_NOT_RUN;
    }
    if rollout.halts() {
        exit::HALT
    } else {
        exit::OK
    }
}

struct Answer<'a> {
    branch: &'a str,
    head: String,
    reference: &'a str,
    threshold: Threshold,
    rollout: &'a Rollout,
    members: &'a [Member],
}

fn label(t: &Tally) -> String {
    match t.wave {
        Some(w) => format!("wave {} of {}", w.index, w.of),
        None => "unreadable tend_wave".to_string(),
    }
}

fn word(d: Decision) -> &'static str {
    match d {
        Decision::Halt => "halt",
        Decision::Continue | Decision::NotJudged => "continue",
    }
}

fn applies_at(t: &Tally) -> Option<String> {
    t.applies_at
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|s| s.to_string())
}

impl Answer<'_> {
    /// `wave 1 of 10: 40 took the head, 3 failed (7.5 %) > 5 %: halt (of 42 devices)`.
    fn line(&self, label: &str, t: &Tally) -> String {
        let max = self.threshold.max_failure_rate;
        let mut line = if t.took_head == 0 {
            format!("{label}: none took the head yet: continue")
        } else if t.decision == Decision::NotJudged {
            format!(
                "{label}: {} took the head, {} failed ({}); fewer than --min-devices {}, not \
                 judged: continue",
                t.took_head, t.failed, t.rate, self.threshold.min_devices
            )
        } else {
            let cmp = if t.decision == Decision::Halt {
                ">"
            } else {
                "<="
            };
            format!(
                "{label}: {} took the head, {} failed ({}) {cmp} {max}: {}",
                t.took_head,
                t.failed,
                t.rate,
                word(t.decision)
            )
        };
        line.push_str(&format!(" (of {} devices", t.devices));
        if t.reverted > 0 {
            line.push_str(&format!("; {} reverted", t.reverted));
        }
        if let Some(at) = applies_at(t) {
            line.push_str(&format!("; next applies at {at}"));
        }
        line.push(')');
        line
    }

    fn summary(&self) -> String {
        let r = self.rollout;
        let at = format!(
            "branch {} at {} ({})",
            self.branch,
            &self.head[..self.head.len().min(12)],
            self.reference
        );
        if r.halts() {
            let halted: Vec<String> = r
                .waves
                .iter()
                .filter(|w| w.decision == Decision::Halt)
                .map(label)
                .collect();
            let which = if halted.is_empty() {
                "the branch as a whole".to_string()
            } else {
                halted.join(", ")
            };
            format!(
                "tend gate --rollout HALT: {at}: {which} passed --max-failure-rate {}. Fix: \
                 push a signed `git revert -m 1` of the merge to {} (docs/fleet-workflow.md)",
                self.threshold.max_failure_rate, self.branch
            )
        } else if r.overall.devices == 0 {
            format!(
                "tend gate --rollout CONTINUE: {at}: no device reports tend_branch={} in Mender",
                self.branch
            )
        } else {
            format!(
                "tend gate --rollout CONTINUE: {at}: no wave passed --max-failure-rate {} \
                 (--min-devices {} per wave)",
                self.threshold.max_failure_rate, self.threshold.min_devices
            )
        }
    }

    /// The failures, one line each, then one line per wave, the branch, and the verdict.
    fn print_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let failures: Vec<&Member> = self
            .members
            .iter()
            .filter(|m| m.failure.is_some() || m.wave_error.is_some())
            .collect();
        if !failures.is_empty() {
            let width = failures
                .iter()
                .map(|m| m.device.len())
                .max()
                .unwrap_or(6)
                .max(6);
            writeln!(
                out,
                "{:<width$}  {:<7}  {:<9}  REASON",
                "DEVICE", "WAVE", "STATUS"
            )?;
            for m in failures {
                let wave = m
                    .wave
                    .map(|w| format!("{}/{}", w.index, w.of))
                    .unwrap_or_else(|| "?".into());
                let why = [m.failure.as_deref(), m.wave_error.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; ");
                writeln!(
                    out,
                    "{:<width$}  {:<7}  {:<9}  {}",
                    m.device,
                    wave,
                    m.status,
                    crate::report::inventory::encode_value(&why)
                )?;
            }
        }
        for t in &self.rollout.waves {
            writeln!(out, "{}", self.line(&label(t), t))?;
        }
        writeln!(out, "{}", self.line("overall", &self.rollout.overall))?;
        writeln!(out, "{}", self.summary())
    }

    fn tally_json(t: &Tally) -> Value {
        json!({
            "wave": t.wave.map(|w| format!("{}/{}", w.index, w.of)),
            "devices": t.devices,
            "took_head": t.took_head,
            "failed": t.failed,
            "reverted": t.reverted,
            "failure_rate_percent": f64::from(t.rate.0) / 100.0,
            "applies_at": applies_at(t),
            "decision": t.decision,
        })
    }

    fn print_json(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let doc = json!({
            "branch": self.branch,
            "head": self.head,
            "reference": self.reference,
            "verdict": if self.rollout.halts() { "halt" } else { "continue" },
            "max_failure_rate_percent": f64::from(self.threshold.max_failure_rate.0) / 100.0,
            "min_devices": self.threshold.min_devices,
            "waves": self.rollout.waves.iter().map(Self::tally_json).collect::<Vec<_>>(),
            "overall": Self::tally_json(&self.rollout.overall),
            "failures": self.members.iter().filter(|m| m.failure.is_some()).collect::<Vec<_>>(),
        });
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        )
    }
}
