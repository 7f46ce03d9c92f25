//! One `checks:` entry of a role, rendered and built into a health check. A check is not a
//! resource (it has no `loop`, no type key, and the safety floor builds it), so it has its own
//! path from the role file to the run.

use serde_json::{Map, Value};

use crate::diag::{Diagnostic, Diagnostics};
use crate::fleet::keys::key_line;
use crate::fleet::model::Entry;
use crate::fleet::render::RoleEnv;

use super::expand::render_error;

/// Renders one `checks:` entry (skipped when its `when:` is false) and builds it.
pub(super) fn build_check(
    role: &str,
    path: &str,
    env: &RoleEnv,
    ctx: &minijinja::Value,
    entry: &Entry,
    diags: &mut Diagnostics,
) -> Option<crate::safety::health::Check> {
    let entry_line = entry.line;
    let keys = &entry.keys;
    let line_of = |key: &str| key_line(entry, key);
    if let Some(w) = entry.get("when") {
        match env.condition(&w.value, ctx) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                diags.push(render_error(path, line_of("when"), "when", e));
                return None;
            }
        }
    }
    let mut spec = Map::new();
    for k in keys.iter().filter(|k| k.name != "when") {
        match env.value(&k.value, ctx) {
            Ok(r) => {
                spec.insert(k.name.clone(), r);
            }
            Err(e) => {
                diags.push(render_error(path, k.line, &k.name, e));
                return None;
            }
        }
    }
    let origin = format!("{path}:{entry_line}");
    match crate::safety::health::spec::build(role, origin, Value::Object(spec)) {
        Ok(c) => Some(c),
        Err(e) => {
            let line = e.key.as_deref().map(line_of).unwrap_or(entry_line);
            let mut d = Diagnostic::new(path, line, format!("check: {}", e.message));
            if e.message.starts_with("unknown field") {
                d = d.fix(format!(
                    "a check takes the keys {} and when",
                    crate::safety::health::spec::KEYS.join(", ")
                ));
            }
            diags.push(d);
            None
        }
    }
}
