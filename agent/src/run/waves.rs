//! Waves within a stage: a new head reaches a stage's devices over hours, not in one poll
//! interval, so a bad commit that passed canary is seen on wave 1 before the last wave takes it.
//!
//! A device's wave is a stable function of its id and the stage (SHA-256 of `stage\0id`), so it
//! needs no coordination and moves only when the number of waves does. Wave `w` applies a head
//! once `head time + (w - 1) × spacing` has passed on the device's trusted clock. The head time
//! is signed: the accepted pointer's `issued` (with `source.pointer`), the stage tag's tagger
//! time (with `source.follow: tags`), else the commit's committer time. The clock is the
//! pointer's (`source::pointer::TrustedClock`): the newest trusted time kept in state (and the
//! head's own signed time, which the device has now seen), and the system clock only when
//! systemd-timesyncd has synchronized it. So a clock set back cannot hold a wave past the
//! trusted time, and a clock set forward can only make a wave apply early.
//!
//! A head whose signed commit message carries the trailer `Tend-Urgent: yes` skips the waves.
//! While a head waits, the device converges to its last good commit (repairing drift as usual)
//! and says which wave it is in and when the head applies.

use sha2::{Digest, Sha256};

use crate::converge::apply::Session;
use crate::device::config::Follow;
use crate::fleet::rollout::Waves;
use crate::report::RolloutInfo;
use crate::source::fetch::LocalRepo;
use crate::source::pointer::TrustedClock;

use super::candidate::Candidate;

/// The trailer that makes a head skip the waves.
pub const URGENT_TRAILER: &str = "Tend-Urgent";

/// The wave of device `device_id` in `stage`, 1..=`waves`.
pub fn wave(stage: &str, device_id: &str, waves: u32) -> u32 {
    let waves = waves.max(1);
    let digest = Sha256::new()
        .chain_update(stage.as_bytes())
        .chain_update([0u8])
        .chain_update(device_id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(waves)) as u32 + 1
}

/// Whether the raw commit object's message ends with a trailer `Tend-Urgent: yes` (or `true`)
/// in its last paragraph, as `git interpret-trailers` reads one.
pub fn urgent(raw_commit: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw_commit);
    // Headers end at the first empty line (a signature's continuation lines start with a space).
    let Some((_, message)) = text.split_once("\n\n") else {
        return false;
    };
    let last = message.trim_end().rsplit("\n\n").next().unwrap_or_default();
    last.lines().any(|line| {
        line.split_once(':').is_some_and(|(key, value)| {
            key.trim().eq_ignore_ascii_case(URGENT_TRAILER)
                && matches!(value.trim().to_ascii_lowercase().as_str(), "yes" | "true")
        })
    })
}

/// When a head of time `head_time` applies in `stage` on `device_id`, and whether it waits at
/// the trusted time `now`.
pub fn decide(
    rollout: Waves,
    stage: &str,
    device_id: &str,
    head_time: i64,
    urgent: bool,
    now: i64,
) -> RolloutInfo {
    let wave = wave(stage, device_id, rollout.waves);
    let delay = if urgent {
        0
    } else {
        i64::try_from(u64::from(wave - 1).saturating_mul(rollout.spacing)).unwrap_or(i64::MAX)
    };
    let applies_at = head_time.saturating_add(delay);
    RolloutInfo {
        wave,
        waves: rollout.waves,
        applies_at: crate::clock::rfc3339(applies_at.max(0) as u64),
        applies_at_seconds: applies_at,
        waiting: now < applies_at,
        urgent,
    }
}

/// The rollout of the candidate head on this device, when its stage has waves in the head's own
/// tree. None without waves, for `apply --ref`, and for a tree whose rollout block is broken
/// (validation refuses that tree anyway). A head that is already the last good commit, or a
/// device with no good commit to stay on, never waits.
pub(super) fn consider(
    s: &Session,
    repo: &LocalRepo,
    c: &Candidate,
    one_shot: bool,
) -> Option<RolloutInfo> {
    if one_shot {
        return None;
    }
    let facts = crate::fleet::facts::gather(crate::fleet::facts::Inputs {
        root: &s.root,
        device_id: &s.device_id,
        device_type: s.config.device_type.clone(),
    });
    let rollouts =
        crate::fleet::rollout::of_tree(c.tree.as_ref(), &s.device_id, facts.device_type.as_deref())
            .ok()?;
    let rollout = *rollouts.get(&c.branch)?;
    let head_time = head_time(s, repo, c);
    let raw = repo.raw_commit(&c.commit).ok()?;
    let now = trusted_now(s, head_time);
    let mut info = decide(
        rollout,
        &c.branch,
        &s.device_id,
        head_time,
        urgent(&raw),
        now,
    );
    let head = c.commit.to_string();
    let stay = s
        .run_state
        .last_good
        .as_ref()
        .is_some_and(|g| g.commit != head);
    info.waiting &= stay;
    Some(info)
}

/// The head's signed time: the pointer's `issued` when the accepted pointer names it, else the
/// tag's or commit's time the candidate was verified with, else the commit's committer time.
fn head_time(s: &Session, repo: &LocalRepo, c: &Candidate) -> i64 {
    let pointed = s.config.source.pointer.is_some()
        && s.config.source.follow == Follow::Branch
        && c.branch == s.config.source.branch;
    let issued = s
        .run_state
        .pointer
        .accepted
        .as_ref()
        .filter(|a| pointed && gix::ObjectId::from_hex(a.commit.as_bytes()).ok() == Some(c.commit))
        .map(|a| a.issued);
    issued
        .or(c.signed_time)
        .unwrap_or_else(|| repo.commit_time(&c.commit).unwrap_or(0))
}

/// The trusted time of this run: the newest trusted time kept in state (the pointer's, every
/// signed date verified), the head's own signed time, and the synchronized system clock.
fn trusted_now(s: &Session, head_time: i64) -> i64 {
    let kept = s
        .run_state
        .signed_time
        .values()
        .copied()
        .chain([s.run_state.pointer.trusted_time, head_time])
        .max()
        .unwrap_or(0);
    TrustedClock::read(&s.root, kept, None).now()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600;

    #[test]
    fn a_wave_is_stable_and_within_range() {
        for waves in [1, 2, 10, 1000] {
            for n in 0..200 {
                let id = format!("pi-{n}");
                let w = wave("production", &id, waves);
                assert!((1..=waves).contains(&w));
                assert_eq!(w, wave("production", &id, waves), "stable");
            }
        }
        assert_eq!(wave("production", "anything", 1), 1);
        // Fixed by the hash, so a release of tend cannot reshuffle a fleet's waves.
        assert_eq!(wave("production", "dev1", 10), 3);
        assert_eq!(wave("main", "dev1", 2), 2);
    }

    #[test]
    fn waves_spread_devices_evenly_and_differ_by_stage() {
        let waves = 10;
        let mut counts = [0usize; 10];
        let mut moved = 0;
        for n in 0..10_000 {
            let id = format!("device-{n:05}");
            let w = wave("production", &id, waves);
            counts[(w - 1) as usize] += 1;
            moved += usize::from(w != wave("canary", &id, waves));
        }
        for (i, c) in counts.iter().enumerate() {
            assert!((850..=1150).contains(c), "wave {} has {c} of 10,000", i + 1);
        }
        assert!(moved > 8000, "the stage is part of the hash: {moved} moved");
    }

    fn id_in(wave_wanted: u32, waves: u32) -> String {
        (0..)
            .map(|n| format!("dev-{n}"))
            .find(|id| wave("production", id, waves) == wave_wanted)
            .unwrap()
    }

    #[test]
    fn wave_two_waits_one_spacing_and_wave_one_applies_at_once() {
        let r = Waves {
            waves: 2,
            spacing: HOUR,
        };
        let t = 1_800_000_000;
        let late = id_in(2, 2);
        let d = decide(r, "production", &late, t, false, t + 10);
        assert!(d.waiting);
        assert_eq!((d.wave, d.waves), (2, 2));
        assert_eq!(d.applies_at_seconds, t + 3600);
        assert_eq!(d.applies_at, crate::clock::rfc3339((t + 3600) as u64));
        assert!(!decide(r, "production", &late, t, false, t + 3600).waiting);
        let early = id_in(1, 2);
        let d = decide(r, "production", &early, t, false, t);
        assert!(!d.waiting);
        assert_eq!(d.applies_at_seconds, t);
    }

    #[test]
    fn an_urgent_head_skips_the_waves() {
        let r = Waves {
            waves: 10,
            spacing: 2 * HOUR,
        };
        let d = decide(r, "production", &id_in(10, 10), 1000, true, 1000);
        assert!(!d.waiting && d.urgent);
        assert_eq!(d.applies_at_seconds, 1000);
        assert!(d.describe().contains("(urgent)"));
    }

    #[test]
    fn wave_three_applies_two_spacings_after_the_head_time() {
        let r = Waves {
            waves: 3,
            spacing: HOUR,
        };
        let id = id_in(3, 3);
        assert!(decide(r, "production", &id, 5000, false, 5000 + 7199).waiting);
        assert!(!decide(r, "production", &id, 5000, false, 5000 + 7200).waiting);
    }

    fn commit(message: &str) -> Vec<u8> {
        format!(
            "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@x> 1 +0000\ncommitter A <a@x> 1 +0000\ngpgsig -----BEGIN SSH SIGNATURE-----\n \n Tend-Urgent: yes\n -----END SSH SIGNATURE-----\n\n{message}"
        )
        .into_bytes()
    }

    #[test]
    fn the_urgent_trailer_is_read_from_the_last_paragraph_only() {
        assert!(urgent(&commit(
            "Fix CVE-2026-1\n\nPatch openssl.\n\nTend-Urgent: yes\n"
        )));
        assert!(urgent(&commit(
            "Fix\n\nSigned-off-by: x\ntend-urgent: True\n"
        )));
        assert!(!urgent(&commit("Fix\n\nTend-Urgent: yes\n\nlater prose\n")));
        assert!(!urgent(&commit("Fix\n\nTend-Urgent: no\n")));
        assert!(
            !urgent(&commit("Fix\n")),
            "the signature's lines are no trailer"
        );
    }
}
