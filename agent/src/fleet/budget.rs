//! The desired state's memory budget (`apply.max_desired_bytes`).
//!
//! Each repo file is limited in size, but a signed commit could still ask for any number of
//! copies: one 60 MB source in a `loop:` of 40 files took 2.4 GB before anything was compared,
//! and a device with less memory aborted on every run without a report or a fallback. Content is
//! therefore held once per distinct bytes (a source read once, equal contents shared), and the
//! total a commit needs is counted while it is built: a commit above the budget is invalid like
//! any other broken commit, so `tend run` falls back to the last good one.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

use tend_roles::spec::Content;

/// What to do when a commit is over the budget.
pub const BUDGET_FIX: &str = "ship large payloads in a Debian package, or raise `apply.max_desired_bytes` in the device's tend.yaml (docs/device.md)";

/// The content and rendered specs of one desired state, and what they add up to.
pub struct Budget {
    max: u64,
    used: Cell<u64>,
    over: Cell<bool>,
    /// Keyed by the bytes themselves: a SHA-256 of every content only to find its shared copy
    /// was 3.6 % of a 10,000-file no-op's instructions.
    distinct: RefCell<HashSet<Content>>,
    by_path: RefCell<HashMap<String, Content>>,
}

impl Budget {
    pub fn new(max: u64) -> Self {
        Self {
            max,
            used: Cell::new(0),
            over: Cell::new(false),
            distinct: RefCell::default(),
            by_path: RefCell::default(),
        }
    }

    /// Bytes counted so far.
    pub fn used(&self) -> u64 {
        self.used.get()
    }

    /// Whether the budget was crossed: nothing more is built then.
    pub fn is_over(&self) -> bool {
        self.over.get()
    }

    /// Counts `n` bytes that each resource holds on its own (its rendered spec).
    pub fn charge(&self, n: u64) -> Result<(), String> {
        let used = self.used.get().saturating_add(n);
        self.used.set(used);
        if used > self.max {
            self.over.set(true);
            return Err(format!(
                "the desired state needs {used} bytes of content and specs, above \
                 apply.max_desired_bytes ({} bytes) on this device",
                self.max
            ));
        }
        Ok(())
    }

    /// The one shared copy of `bytes`: counted the first time these bytes are seen.
    pub fn intern(&self, bytes: Vec<u8>) -> Result<Content, String> {
        if let Some(known) = self.distinct.borrow().get(&bytes[..]) {
            return Ok(known.clone());
        }
        self.charge(bytes.len() as u64)?;
        let content: Content = bytes.into();
        self.distinct.borrow_mut().insert(content.clone());
        Ok(content)
    }

    /// Repo file `path`, read once however many resources use it.
    pub fn file<E>(
        &self,
        path: &str,
        read: impl FnOnce() -> Result<Option<Vec<u8>>, E>,
    ) -> Result<Option<Content>, Read<E>> {
        if let Some(known) = self.by_path.borrow().get(path) {
            return Ok(Some(known.clone()));
        }
        let Some(bytes) = read().map_err(Read::Source)? else {
            return Ok(None);
        };
        let content = self.intern(bytes).map_err(Read::Over)?;
        self.by_path
            .borrow_mut()
            .insert(path.to_string(), content.clone());
        Ok(Some(content))
    }
}

/// Why [`Budget::file`] has no content.
pub enum Read<E> {
    /// Reading failed.
    Source(E),
    /// The file would take the desired state over the budget.
    Over(String),
}

/// The bytes of text a rendered spec holds (its strings, keys included).
pub fn spec_bytes(v: &serde_json::Value) -> u64 {
    use serde_json::Value;
    match v {
        Value::String(s) => s.len() as u64,
        Value::Array(a) => a.iter().map(spec_bytes).sum(),
        Value::Object(o) => o.iter().map(|(k, x)| k.len() as u64 + spec_bytes(x)).sum(),
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_contents_are_held_and_counted_once() {
        let b = Budget::new(100);
        let one = b.intern(vec![7; 60]).unwrap();
        let two = b.intern(vec![7; 60]).unwrap();
        assert!(std::sync::Arc::ptr_eq(&one, &two));
        assert_eq!(b.used(), 60);
        let e = b.intern(vec![8; 60]).unwrap_err();
        assert!(e.contains("120 bytes") && e.contains("apply.max_desired_bytes (100 bytes)"));
        assert!(b.is_over());
    }

    #[test]
    fn a_file_is_read_once() {
        let b = Budget::new(100);
        let mut reads = 0;
        for _ in 0..3 {
            let got = b.file("roles/r/files/x", || {
                reads += 1;
                Ok::<_, ()>(Some(vec![1; 10]))
            });
            assert!(matches!(got, Ok(Some(c)) if c.len() == 10));
        }
        assert_eq!((reads, b.used()), (1, 10));
    }
}
