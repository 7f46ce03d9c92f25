//! Deferred actions: what an inhibitor holds off, since when, and when it may wait no longer.
//!
//! A handler held off stays in the pending-handler list, and a reboot stays pending in the run
//! state, as any other that has not run yet; this file (`deferred.json` in the state dir) adds
//! who held each one off and since when, so the report can say so on every run and, once
//! `inhibit.max_deferral` has passed, tend runs the action anyway and says that it did.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tend_roles::statefile;

use crate::safety::inhibit::human;

pub const FILE: &str = "deferred.json";

/// The action a reboot is recorded under.
pub const REBOOT: &str = "reboot";

/// The action a handler is recorded under.
pub fn handler(name: &str) -> String {
    format!("handler '{name}'")
}

/// One action held off, for the report (report.json `deferred`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deferred {
    /// `handler 'restart nginx'` or `reboot`.
    pub action: String,
    /// Who holds it off (a lock file's name, logind's WHO=), with why.
    pub holder: String,
    /// Unix seconds when it was first held off.
    pub since: u64,
}

/// What to do with an action now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing holds it off.
    Run,
    /// Held off by this holder.
    Hold(String),
    /// Held off for longer than allowed: run it, and report this.
    Overdue(String),
}

/// The deferred actions, kept in the state dir between runs.
pub struct Deferrals {
    path: Option<PathBuf>,
    entries: BTreeMap<String, Deferred>,
}

impl Deferrals {
    /// `None` keeps them in memory only (check mode). A missing or unreadable file has none.
    pub fn load(path: Option<&Path>) -> Self {
        let entries = path
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<Vec<Deferred>>(&b).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|d| (d.action.clone(), d))
            .collect();
        Self {
            path: path.map(Path::to_path_buf),
            entries,
        }
    }

    /// Whether `action`, held by `holder` (None: nothing holds it), runs now.
    pub fn verdict(&self, action: &str, holder: Option<String>, now: u64, max: u64) -> Verdict {
        let Some(holder) = holder else {
            return Verdict::Run;
        };
        match self.entries.get(action) {
            Some(d) if now.saturating_sub(d.since) >= max => Verdict::Overdue(format!(
                "{action} deferred {} by {holder}; running it now (inhibit.max_deferral is {})",
                human(now.saturating_sub(d.since)),
                human(max)
            )),
            _ => Verdict::Hold(holder),
        }
    }

    /// Records that `action` is held off by `holder` now; keeps the time it was first held off.
    pub fn hold(&mut self, action: &str, holder: &str, now: u64) -> Deferred {
        let d = self
            .entries
            .entry(action.to_string())
            .or_insert_with(|| Deferred {
                action: action.to_string(),
                holder: holder.to_string(),
                since: now,
            });
        d.holder = holder.to_string();
        d.clone()
    }

    /// Keeps only the actions `keep` says are still held off.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.entries.retain(|a, _| keep(a));
    }

    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if self.entries.is_empty() {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let list: Vec<&Deferred> = self.entries.values().collect();
        statefile::write_json(path, &list, 0o600).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deferral_keeps_its_first_time_across_runs_and_is_overdue_after_max() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(FILE);
        let action = handler("restart nginx");
        let mut s = Deferrals::load(Some(&path));
        assert_eq!(s.verdict(&action, None, 100, 50), Verdict::Run);
        assert_eq!(
            s.verdict(&action, Some("app".into()), 100, 50),
            Verdict::Hold("app".into())
        );
        s.hold(&action, "app", 100);
        s.save().unwrap();

        // A later run: the time it was first held off survives, the holder's words are new.
        let mut s = Deferrals::load(Some(&path));
        let again = s.hold(&action, "app (flashing)", 130);
        assert_eq!(
            (again.since, again.holder.as_str()),
            (100, "app (flashing)")
        );
        assert_eq!(
            s.verdict(&action, Some("app".into()), 149, 50),
            Verdict::Hold("app".into())
        );
        match s.verdict(&action, Some("app".into()), 100 + 24 * 3600, 24 * 3600) {
            Verdict::Overdue(m) => assert_eq!(
                m,
                "handler 'restart nginx' deferred 24h by app; running it now \
                 (inhibit.max_deferral is 24h)"
            ),
            v => panic!("{v:?}"),
        }
        s.save().unwrap();

        // Released: dropped, and the file goes with the last entry.
        s.retain(|_| false);
        s.save().unwrap();
        assert!(!path.exists());
        assert!(Deferrals::load(Some(&path)).entries.is_empty());
    }

    #[test]
    fn an_unreadable_deferral_file_holds_nothing_and_check_mode_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(FILE);
        std::fs::write(&path, "{not json").unwrap();
        let s = Deferrals::load(Some(&path));
        assert!(s.entries.is_empty());
        let mut mem = Deferrals::load(None);
        mem.hold(REBOOT, "logind", 5);
        mem.save().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{not json");
    }
}
