//! Signed dates only move forward. An SSH key's validity window is judged at the committer (or
//! tagger) date, and the signer writes that date: a retired key (valid-before in the past) can
//! still sign a commit dated inside its old window. Requiring each new head to be dated no
//! earlier than the last one this device verified closes that: once the device has seen a head
//! signed after a key's retirement, nothing that key signs can be dated late enough to pass.
//!
//! Kept per followed ref (a branch, or a stage's tags), because a device file may move a device
//! to a branch whose head is legitimately older than the one it leaves.

use std::collections::BTreeMap;

use crate::source::verify::stamp;

/// The run-state key for a branch head.
pub fn branch_key(branch: &str) -> String {
    format!("refs/heads/{branch}")
}

/// The run-state key for a stage's `<stage>/<n>` tags.
pub fn stage_key(stage: &str) -> String {
    format!("refs/tags/{stage}/*")
}

/// Refuses `time` when it is earlier than the newest time recorded under `key`. `what` names the
/// object for the message ("commit 1a2b3c4 of main").
pub fn check(seen: &BTreeMap<String, i64>, key: &str, what: &str, time: i64) -> Result<(), String> {
    match seen.get(key) {
        Some(&last) if time < last => Err(format!(
            "{what} is dated {}, before {}, the date of the last verified {}: refusing a \
             backdated signature (a retired key's validity is judged at the date its signer \
             wrote); re-sign it with a current key at the current date",
            stamp(time),
            stamp(last),
            if key.starts_with("refs/tags/") {
                "tag"
            } else {
                "commit"
            },
        )),
        _ => Ok(()),
    }
}

/// Records `time` as the newest verified time under `key` (never moving it back).
pub fn record(seen: &mut BTreeMap<String, i64>, key: &str, time: i64) {
    let slot = seen.entry(key.to_string()).or_insert(time);
    *slot = (*slot).max(time);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_is_refused_equal_and_later_pass() {
        let mut seen = BTreeMap::new();
        let key = branch_key("main");
        assert!(
            check(&seen, &key, "commit a", 100).is_ok(),
            "nothing seen yet"
        );
        record(&mut seen, &key, 100);
        assert!(check(&seen, &key, "commit b", 100).is_ok());
        assert!(check(&seen, &key, "commit c", 101).is_ok());
        let e = check(&seen, &key, "commit d", 99).unwrap_err();
        assert!(
            e.contains("1970-01-01 00:01:39 UTC") && e.contains("00:01:40"),
            "{e}"
        );
        assert!(check(&seen, &branch_key("other"), "commit e", 1).is_ok());
    }

    #[test]
    fn record_never_moves_back() {
        let mut seen = BTreeMap::new();
        record(&mut seen, "k", 200);
        record(&mut seen, "k", 150);
        assert_eq!(seen["k"], 200);
    }
}
