//! Pipeline step "validate": the whole repo, for this device, is resolved, rendered and built into
//! resources before the first change. Every problem is collected; one is enough to apply nothing.
//!
//! Output is the desired state the engine converges to, plus the rendered specs that
//! `tend render` shows.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use tend_roles::{
    find_type, resource_types, Desired, DynResource, Handler, Item, Redactor, RolePlan,
};

use crate::diag::{Diagnostic, Diagnostics};
use crate::fleet::budget::{spec_bytes, Budget, BUDGET_FIX};
use crate::fleet::facts::Facts;
use crate::fleet::keys::{common, key_line, COMMON_KEYS};
use crate::fleet::load::Fleet;
use crate::fleet::model::Entry;
use crate::fleet::render::{RenderError, RoleEnv};
use crate::fleet::resolve::{resolve, LoadedRole};
use crate::fleet::sources::{spec_digest, Ctx, RoleSources};
use crate::fleet::vars::{Mode, VarSet};
use crate::source::tree::Tree;

pub struct Inputs<'a> {
    pub tree: Arc<dyn Tree>,
    pub device_id: String,
    pub facts: Facts,
    /// Where device-local vars files are read from.
    pub root: &'a Path,
    /// Device paths of local vars files (already expanded).
    pub vars_files: Vec<String>,
    pub mode: Mode,
    /// Files already parsed for other devices of the same tree (`tend validate`).
    pub parsed: Option<&'a crate::fleet::load::Parsed>,
    /// `apply.max_desired_bytes`: the most content and spec text the desired state may hold.
    pub max_desired_bytes: u64,
    /// Keep every rendered spec in [`Validated::specs`] (`tend render` prints them); a run has
    /// no use for them, and with 10,000 resources they would double what the run holds.
    pub keep_specs: bool,
}

/// One resource as rendered, for `tend render`.
#[derive(Debug, Serialize)]
pub struct RenderedSpec {
    pub role: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub spec: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
    pub origin: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
}

pub struct Validated {
    pub device_id: String,
    pub facts: Facts,
    pub vars: VarSet,
    pub groups: Vec<String>,
    pub subscribed_branch: Option<String>,
    pub desired: Desired,
    pub specs: Vec<RenderedSpec>,
    /// What each resource of `desired` wants, as a hash (in the order of its roles and items):
    /// the same fingerprint on a later commit means the commit did not change that resource.
    pub fingerprints: Vec<String>,
    pub redactor: Redactor,
    /// The roles' health checks, in role order.
    pub checks: Vec<crate::safety::health::Check>,
    /// `prune:` of fleet.yaml and of each role of this device.
    pub prune: crate::fleet::validate::Settings,
    /// `rollout:` for this device, per stage.
    pub rollout: crate::fleet::rollout::Rollouts,
}

/// `prune:` as the fleet repo sets it for this device.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// fleet.yaml's `prune`.
    pub fleet: Option<bool>,
    /// Each role of this device → its own `prune`, if it sets one.
    pub roles: BTreeMap<String, Option<bool>>,
}

pub fn validate(inputs: Inputs) -> Result<Validated, Diagnostics> {
    let mut diags = Diagnostics::default();
    let tree = inputs.tree.clone();
    // One device's run shares parsed files between its roles, resources, handlers and checks;
    // `tend validate` shares them between devices too.
    let local = crate::fleet::load::Parsed::default();
    let parsed = inputs.parsed.unwrap_or(&local);
    let fleet = Fleet::open_parsed(tree.as_ref(), Some(parsed))?;
    let resolved = resolve(
        &fleet,
        &inputs.device_id,
        inputs.facts.device_type.as_deref(),
        &mut diags,
    );

    let mut vars = VarSet::from_repo(&fleet, &resolved, &mut diags);
    match inputs.mode {
        Mode::Device => vars.apply_local_files(inputs.root, &inputs.vars_files, &mut diags),
        Mode::Placeholders => vars.fill_placeholders(),
    }
    let redactor = Redactor::new(vars.secret_values());

    let mut ctx_map: Map<String, Value> = vars.values.clone();
    ctx_map.insert(
        "facts".into(),
        serde_json::to_value(&inputs.facts).unwrap_or(Value::Null),
    );
    let ctx = minijinja::Value::from(minijinja::value::Serde(&ctx_map));

    let handler_names = collect_handler_names(&resolved.roles, &mut diags);
    let mut prune = crate::fleet::validate::Settings {
        fleet: prune_flag("fleet.yaml", fleet.file.prune.as_ref(), &mut diags),
        roles: BTreeMap::new(),
    };
    for role in &resolved.roles {
        let flag = prune_flag(&role.path(), role.file.prune.as_ref(), &mut diags);
        prune.roles.insert(role.name.clone(), flag);
    }
    let rollout = crate::fleet::rollout::for_device(&fleet, &resolved.groups, &mut diags);

    let budget = Budget::new(inputs.max_desired_bytes);
    let mut desired = Desired::default();
    let mut specs = Vec::new();
    let mut fingerprints = Vec::new();
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    for role in &resolved.roles {
        let env = parsed.role_env(&role.name, || RoleEnv::new(tree.clone(), &role.name));
        let path = role.path();
        let mut plan = RolePlan {
            name: role.name.clone(),
            depends: role.file.depends.iter().map(|d| d.value.clone()).collect(),
            items: Vec::new(),
        };
        for entry in &role.file.resources {
            let built = expand(
                Ctx {
                    tree: &tree,
                    role: &role.name,
                    path: &path,
                    env: &env,
                    ctx: &ctx,
                    handler: None,
                    budget: &budget,
                    keep_spec: inputs.keep_specs,
                },
                entry,
                &mut diags,
            );
            for b in built {
                for (name, line) in &b.notify {
                    if !handler_names.contains_key(name) {
                        diags.push(
                            Diagnostic::new(
                                &path,
                                *line,
                                format!("notifies handler '{name}', which no role declares"),
                            )
                            .fix("declare it under `handlers:` in a role, or correct the name"),
                        );
                    }
                }
                let key = (b.resource.kind().to_string(), b.resource.id());
                if let Some(first) = seen.get(&key) {
                    diags.push(
                        Diagnostic::new(
                            &path,
                            b.line,
                            format!("{} '{}' is also declared at {first}", key.0, key.1),
                        )
                        .fix("declare each resource once; two declarations would fight over it"),
                    );
                } else {
                    seen.insert(key, b.origin.clone());
                }
                let notify: Vec<String> = b.notify.iter().map(|(n, _)| n.clone()).collect();
                if inputs.keep_specs {
                    let shown = RenderedSpec::of(&role.name, &b, &redactor, notify.clone(), None);
                    specs.push(shown);
                }
                fingerprints.push(b.fingerprint);
                plan.items.push(Item {
                    resource: b.resource,
                    notify,
                    origin: b.origin,
                    reboot: b.reboot,
                    enforce: b.enforce,
                });
            }
        }
        desired.roles.push(plan);
    }

    for role in &resolved.roles {
        let env = parsed.role_env(&role.name, || RoleEnv::new(tree.clone(), &role.name));
        let path = role.path();
        for (name, entry) in &role.file.handlers.0 {
            let c = Ctx {
                tree: &tree,
                role: &role.name,
                path: &path,
                env: &env,
                ctx: &ctx,
                handler: Some(&name.value),
                budget: &budget,
                keep_spec: inputs.keep_specs,
            };
            let mut built = expand(c, entry, &mut diags);
            if built.len() > 1 {
                diags.push(Diagnostic::new(
                    &path,
                    entry.referenced.line(),
                    "a handler is one resource; `loop` is not allowed here",
                ));
                continue;
            }
            if let Some(b) = built.pop() {
                if inputs.keep_specs {
                    let handler = Some(name.value.clone());
                    specs.push(RenderedSpec::of(
                        &role.name,
                        &b,
                        &redactor,
                        Vec::new(),
                        handler,
                    ));
                }
                desired.handlers.push(Handler {
                    name: name.value.clone(),
                    role: role.name.clone(),
                    resource: b.resource,
                    reboot: b.reboot,
                });
            }
        }
    }

    let mut checks = Vec::new();
    for role in &resolved.roles {
        let env = parsed.role_env(&role.name, || RoleEnv::new(tree.clone(), &role.name));
        let path = role.path();
        for entry in &role.file.checks {
            if let Some(c) = build_check(&role.name, &path, &env, &ctx, entry, &mut diags) {
                checks.push(c);
            }
        }
    }

    let groups = resolved.groups.iter().map(|g| g.name.clone()).collect();
    let subscribed_branch = resolved
        .device
        .as_ref()
        .and_then(|d| d.subscribed_branch.as_ref().map(|b| b.value.clone()));
    diags.into_result(Validated {
        device_id: inputs.device_id,
        facts: inputs.facts,
        vars,
        groups,
        subscribed_branch,
        desired,
        specs,
        fingerprints,
        redactor,
        checks,
        prune,
        rollout,
    })
}

/// A `prune:` value: true or false, nothing else (a typo must not silently delete or keep).
fn prune_flag(
    path: &str,
    value: Option<&crate::fleet::model::Spanned<Value>>,
    diags: &mut Diagnostics,
) -> Option<bool> {
    let v = value?;
    match &v.value {
        Value::Bool(b) => Some(*b),
        other => {
            diags.push(
                Diagnostic::new(
                    path,
                    v.referenced.line(),
                    format!("`prune` must be true or false, not {other}"),
                )
                .fix("write `prune: true` to remove what undeclared resources created, or `prune: false` to only report them"),
            );
            None
        }
    }
}

/// Renders one `checks:` entry (skipped when its `when:` is false) and builds it.
fn build_check(
    role: &str,
    path: &str,
    env: &RoleEnv,
    ctx: &minijinja::Value,
    entry: &Entry,
    diags: &mut Diagnostics,
) -> Option<crate::safety::health::Check> {
    let entry_line = entry.referenced.line();
    let keys = &entry.value.0;
    let line_of = |key: &str| key_line(entry, key);
    if let Some((_, w)) = keys.iter().find(|(k, _)| k.value == "when") {
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
    for (k, v) in keys.iter().filter(|(k, _)| k.value != "when") {
        match env.value(&v.value, ctx) {
            Ok(r) => {
                spec.insert(k.value.clone(), r);
            }
            Err(e) => {
                diags.push(render_error(path, k.referenced.line(), &k.value, e));
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

fn collect_handler_names(
    roles: &[LoadedRole],
    diags: &mut Diagnostics,
) -> BTreeMap<String, String> {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for role in roles {
        let path = role.path();
        for (name, _) in &role.file.handlers.0 {
            let here = format!("{path}:{}", name.referenced.line());
            if let Some(first) = names.get(&name.value) {
                diags.push(
                    Diagnostic::new(
                        &path,
                        name.referenced.line(),
                        format!("handler '{}' is also declared at {first}", name.value),
                    )
                    .fix("handler names are fleet-wide; rename one of them"),
                );
            } else {
                names.insert(name.value.clone(), here);
            }
        }
    }
    names
}

struct Built {
    resource: Box<dyn DynResource>,
    /// The rendered spec, when kept for `tend render`.
    spec: Option<Value>,
    notify: Vec<(String, u64)>,
    origin: String,
    line: u64,
    reboot: bool,
    enforce: bool,
    /// See [`Validated::fingerprints`].
    fingerprint: String,
}

impl RenderedSpec {
    /// What `tend render` shows of a built resource or handler: its spec with secrets redacted.
    fn of(
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

fn render_error(path: &str, line: u64, key: &str, e: RenderError) -> Diagnostic {
    match e.file {
        Some(_) => Diagnostic::new(path, line, format!("in `{key}`: {e}")),
        None => Diagnostic::new(path, line, format!("in `{key}`: {}", e.message)),
    }
}

/// Turns one role entry into zero (when: false), one, or many (loop:) built resources.
fn expand(c: Ctx, entry: &Entry, diags: &mut Diagnostics) -> Vec<Built> {
    if c.budget.is_over() {
        // Refused already; building more would only take more memory.
        return Vec::new();
    }
    let path = c.path;
    let entry_line = entry.referenced.line();
    let keys = &entry.value.0;
    let line_of = |key: &str| key_line(entry, key);

    // The type is the entry's first key (other than tend's common keys): `group` is a type and
    // also a key of `file` and `user`, so position, not membership, decides.
    let first = keys
        .iter()
        .map(|(k, _)| k.value.as_str())
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
            if keys.iter().any(|(x, _)| x.value == k) {
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

    let get = |key: &str| {
        keys.iter()
            .find(|(k, _)| k.value == key)
            .map(|(_, v)| &v.value)
    };
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
        for (k, v) in keys {
            if COMMON_KEYS.contains(&k.value.as_str()) {
                continue;
            }
            let field = if k.value == rtype.name {
                rtype.primary
            } else {
                k.value.as_str()
            };
            match c.env.value(&v.value, &ctx) {
                Ok(r) => {
                    spec.insert(field.to_string(), r);
                }
                Err(e) => {
                    diags.push(render_error(path, k.referenced.line(), &k.value, e));
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
