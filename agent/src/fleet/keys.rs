//! The keys tend understands on every resource of a role (`when`, `loop`, `notify`, `reboot`,
//! `enforce`), as opposed to the keys of its type: which they are, and what `notify`, `reboot`
//! and `enforce` must hold. A wrong value is a diagnostic at its line, never a silent default.

use serde_json::Value;

use crate::diag::{Diagnostic, Diagnostics};
use crate::fleet::model::Entry;

/// Keys tend understands on every resource; all others belong to the resource type.
pub(super) const COMMON_KEYS: &[&str] = &["when", "loop", "notify", "reboot", "enforce"];

/// `notify`, `reboot` and `enforce` of one entry.
pub(super) struct Common {
    /// Handler names, each with the line of `notify`.
    pub notify: Vec<(String, u64)>,
    pub reboot: bool,
    /// False: audit only, never applied.
    pub enforce: bool,
}

/// The line of `key` in a role entry, else the entry's own line.
pub(super) fn key_line(entry: &Entry, key: &str) -> u64 {
    entry.get(key).map_or(entry.line, |k| k.line)
}

fn get<'e>(entry: &'e Entry, key: &str) -> Option<&'e Value> {
    entry.get(key).map(|k| &k.value)
}

/// Reads the common keys of `entry` (in `path`); None after a diagnostic.
pub(super) fn common(path: &str, entry: &Entry, diags: &mut Diagnostics) -> Option<Common> {
    let line_of = |key: &str| key_line(entry, key);
    let notify = match get(entry, "notify") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![(s.clone(), line_of("notify"))],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
            .iter()
            .map(|v| {
                (
                    v.as_str().unwrap_or_default().to_string(),
                    line_of("notify"),
                )
            })
            .collect(),
        Some(_) => {
            diags.push(Diagnostic::new(
                path,
                line_of("notify"),
                "`notify` must be a handler name or a list of names",
            ));
            return None;
        }
    };
    let mut flag = |key: &str, default: bool, fix: &str| match get(entry, key) {
        None => Some(default),
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            diags.push(
                Diagnostic::new(
                    path,
                    line_of(key),
                    format!("`{key}` must be true or false, not {other}"),
                )
                .fix(fix),
            );
            None
        }
    };
    let reboot = flag(
        "reboot",
        false,
        "write `reboot: true` when a change to this resource needs a reboot to take effect",
    );
    let enforce = flag(
        "enforce",
        true,
        "write `enforce: false` to only read and report this resource, or remove the key to apply it",
    );
    Some(Common {
        notify,
        reboot: reboot?,
        enforce: enforce?,
    })
}
