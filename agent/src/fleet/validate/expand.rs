//! One `resources:` or `handlers:` entry of a role, rendered and built: its type, `loop`, `when`,
//! every key rendered against the vars, then the type's build within the memory budget. Kept
//! apart from the walk over roles in `mod.rs`, which only decides where each built thing goes.

use serde_json::{Map, Value};
use tend_roles::{find_type, resource_types, DynResource, Redactor};

use crate::diag::{Diagnostic, Diagnostics};
use crate::fleet::budget::{spec_bytes, BUDGET_FIX};
use crate::fleet::keys::{common, key_line, COMMON_KEYS};
use crate::fleet::model::Entry;
use crate::fleet::render::RenderError;
use crate::fleet::sources::{spec_digest, Ctx, RoleSources};

use super::RenderedSpec;

pub(super) struct Built {
    pub(super) resource: Box<dyn DynResource>,
    /// The rendered spec, when kept for `tend render`.
    pub(super) spec: Option<Value>,
    pub(super) notify: Vec<(String, u64)>,
    pub(super) origin: String,
    pub(super) line: u64,
    pub(super) reboot: bool,
    pub(super) enforce: bool,
    /// See [`super::Validated::fingerprints`].
    pub(super) fingerprint: crate::fleet::fingerprints::Fingerprint,
}

impl RenderedSpec {
    /// What `tend render` shows of a built resource or handler: its spec with secrets redacted.
    pub(super) fn of(
        role: &str,
        b: &Built,
        redactor: &Redactor,
        notify: Vec<String>,
        handler: Option<String>,
    ) -> Self {
        RenderedSpec {
            role: role.to_string(),
            kind: b.resource.kind().to_string(),
            spec: b
                .spec
                .as_ref()
                .map(|v| redact_value(v, redactor))
                .unwrap_or_default(),
            notify,
            origin: b.origin.clone(),
            handler,
        }
    }
}

pub(super) fn render_error(path: &str, line: u64, key: &str, e: RenderError) -> Diagnostic {
    match e.file {
        Some(_) => Diagnostic::new(path, line, format!("in `{key}`: {e}")),
        None => Diagnostic::new(path, line, format!("in `{key}`: {}", e.message)),
    }
}

/// Turns one role entry into zero (when: false), one, or many (loop:) built resources.
pub(super) fn expand(c: Ctx, entry: &Entry, diags: &mut Diagnostics) -> Vec<Built> {
    if c.budget.is_over() {
        // Refused already; building more would only take more memory.
        return Vec::new();
    }
    let path = c.path;
    let entry_line = entry.line;
    let keys = &entry.keys;
    let line_of = |key: &str| key_line(entry, key);

    // The type is the entry's first key (other than tend's common keys): `group` is a type and
    // also a key of `file` and `user`, so position, not membership, decides.
    let first = keys
        .iter()
        .map(|k| k.name.as_str())
        .find(|k| !COMMON_KEYS.contains(k));
    let rtype = match first.and_then(find_type) {
        Some(t) => t,
        None => {
            let names: Vec<&str> = resource_types().iter().map(|t| t.name).collect();
            let what = match first {
                Some(k) => format!("`{k}` is not a resource type"),
                None => "this entry names no resource type".to_string(),
            };
            diags.push(Diagnostic::new(path, entry_line, what).fix(format!(
                "start the entry with its type, one of: {}",
                names.join(", ")
            )));
            return Vec::new();
        }
    };
    if c.handler.is_some() {
        for k in ["loop", "notify", "enforce"] {
            if entry.get(k).is_some() {
                diags.push(
                    Diagnostic::new(
                        path,
                        line_of(k),
                        format!("`{k}` is not allowed on a handler"),
                    )
                    .fix(format!("remove `{k}`")),
                );
                return Vec::new();
            }
        }
    }

    let get = |key: &str| entry.get(key).map(|k| &k.value);
    let Some(common) = common(path, entry, diags) else {
        return Vec::new();
    };

    let items: Vec<Option<Value>> = match get("loop") {
        None => vec![None],
        Some(l) => match c.env.items(l, c.ctx) {
            Ok(items) => items.into_iter().map(Some).collect(),
            Err(e) => {
                diags.push(render_error(path, line_of("loop"), "loop", e));
                return Vec::new();
            }
        },
    };

    let mut out = Vec::new();
    for item in items {
        let ctx = match &item {
            None => c.ctx.clone(),
            Some(i) => {
                minijinja::context! { item => minijinja::Value::from(minijinja::value::Serde(i)), ..c.ctx.clone() }
            }
        };
        if let Some(w) = get("when") {
            match c.env.condition(w, &ctx) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    diags.push(render_error(path, line_of("when"), "when", e));
                    continue;
                }
            }
        }
        let mut spec = Map::new();
        let mut failed = false;
        for k in keys {
            if COMMON_KEYS.contains(&k.name.as_str()) {
                continue;
            }
            let field = if k.name == rtype.name {
                rtype.primary
            } else {
                k.name.as_str()
            };
            match c.env.value(&k.value, &ctx) {
                Ok(r) => {
                    spec.insert(field.to_string(), r);
                }
                Err(e) => {
                    diags.push(render_error(path, k.line, &k.name, e));
                    failed = true;
                }
            }
        }
        if failed {
            continue;
        }
        let spec = Value::Object(spec);
        let bytes = spec_bytes(&spec);
        let sources = RoleSources::new(&c, &ctx);
        let spec_digest = spec_digest(rtype.name, &spec);
        // Device names are checked first, the same way for every type, before a type sees them.
        let (built, spec) = match rtype.check_names(&spec) {
            Err(e) => (Err(e), None),
            Ok(()) if c.keep_spec => ((rtype.build)(spec.clone(), &sources), Some(spec)),
            Ok(()) => ((rtype.build)(spec, &sources), None),
        };
        match built {
            Ok(resource) => {
                if let Err(m) = c.budget.charge(bytes) {
                    diags.push(Diagnostic::new(path, entry_line, m).fix(BUDGET_FIX));
                    return out;
                }
                let origin = match &item {
                    None => format!("{path}:{entry_line}"),
                    Some(i) => format!("{path}:{entry_line} (item {i})"),
                };
                let fingerprint = sources.fingerprint(&spec_digest);
                out.push(Built {
                    resource,
                    spec,
                    notify: common.notify.clone(),
                    origin,
                    line: entry_line,
                    reboot: common.reboot,
                    enforce: common.enforce,
                    fingerprint,
                });
            }
            Err(e) => {
                let key = e
                    .key
                    .as_deref()
                    .map(|k| if k == rtype.primary { rtype.name } else { k });
                let line = key.map(line_of).unwrap_or(entry_line);
                let d = match sources.failure.take() {
                    // A template's own error: point at the template, say which entry used it.
                    Some(d) if d.file != path => {
                        let message = format!("{} (rendered for {path}:{line})", d.message);
                        Diagnostic { message, ..d }
                    }
                    Some(d) => Diagnostic { line, message: format!("{}: {}", rtype.name, d.message), ..d },
                    None if e.message.starts_with("unknown field") => {
                        Diagnostic::new(path, line, format!("{}: {}", rtype.name, e.message))
                            .fix("remove the key or correct its spelling; the keys this type takes are listed")
                    }
                    None => {
                        let d = Diagnostic::new(path, line, format!("{}: {}", rtype.name, e.message));
                        match e.fix {
                            Some(fix) => d.fix(fix),
                            None => d,
                        }
                    }
                };
                diags.push(d);
                if c.budget.is_over() {
                    return out;
                }
            }
        }
    }
    out
}

/// Replaces secret values inside a rendered spec, for display.
fn redact_value(v: &Value, r: &Redactor) -> Value {
    if r.is_empty() {
        return v.clone();
    }
    match v {
        Value::String(s) => Value::String(r.redact(s)),
        Value::Array(a) => Value::Array(a.iter().map(|x| redact_value(x, r)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), redact_value(x, r)))
                .collect(),
        ),
        other => other.clone(),
    }
}
