//! tend's exit codes. They are an interface (systemd units, SSH scripts, CI) and do not change.
//!
//! 0, 2, 4 and 6 follow Puppet's `--detailed-exitcodes`: bit 2 means "changes were applied" and
//! bit 4 "something failed". The others are distinct values outside that bit pattern.

/// Converged: nothing needed to change.
pub const OK: u8 = 0;
/// Could not run: bad device config, unreadable state, an internal error. Nothing was applied.
pub const COULD_NOT_RUN: u8 = 1;
/// Changes were applied, none failed.
pub const CHANGED: u8 = 2;
/// Some resources failed; nothing changed.
pub const FAILED: u8 = 4;
/// Some resources changed and some failed.
pub const CHANGED_AND_FAILED: u8 = 6;
/// The fleet repo is invalid for this device. Nothing was applied.
pub const INVALID_REPO: u8 = 10;
/// The device is suspended (`tend suspend`). Nothing was applied.
pub const SUSPENDED: u8 = 11;
/// Another tend run holds the lock. Nothing was done.
pub const LOCKED: u8 = 12;
/// Converged (changed or not), but the stage pointer is stale: expired on the trusted clock or
/// older than `source.max_staleness`. The device keeps its last good commit; failures (4, 6)
/// take precedence.
pub const STALE: u8 = 13;
/// `tend gate --rollout`: a wave's failures passed `--max-failure-rate`; the rollout must halt
/// (a signed revert of the merge, docs/fleet-workflow.md).
pub const HALT: u8 = 14;
/// The command line was wrong.
pub const USAGE: u8 = 64;

/// The code for a finished converge.
pub fn for_counts(changed: usize, failed: usize) -> u8 {
    match (changed > 0, failed > 0) {
        (false, false) => OK,
        (true, false) => CHANGED,
        (false, true) => FAILED,
        (true, true) => CHANGED_AND_FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detailed_codes_are_bits() {
        assert_eq!(for_counts(0, 0), 0);
        assert_eq!(for_counts(3, 0), 2);
        assert_eq!(for_counts(0, 1), 4);
        assert_eq!(for_counts(1, 1), 6);
        for distinct in [
            COULD_NOT_RUN,
            INVALID_REPO,
            SUSPENDED,
            LOCKED,
            STALE,
            HALT,
            USAGE,
        ] {
            assert!(![OK, CHANGED, FAILED, CHANGED_AND_FAILED].contains(&distinct));
        }
    }
}
