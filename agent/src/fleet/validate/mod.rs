//! Pipeline step "validate": the whole repo, for this device, is resolved, rendered and built into
//! resources before the first change. Every problem is collected; one is enough to apply nothing.
//!
//! Output is the desired state the engine converges to, plus the rendered specs that
//! `tend render` shows.

mod checks;
mod expand;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use tend_roles::{Desired, Handler, Item, Redactor, RolePlan};

use crate::diag::{Diagnostic, Diagnostics};
use crate::fleet::budget::Budget;
use crate::fleet::facts::Facts;
use crate::fleet::load::Fleet;
use crate::fleet::model::{Entry, RoleFile};
use crate::fleet::render::RoleEnv;
use crate::fleet::resolve::{resolve, LoadedRole};
use crate::fleet::sources::Ctx;
use crate::fleet::vars::{Mode, VarSet};
use crate::source::tree::Tree;

use checks::build_check;
use expand::expand;

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
    pub fingerprints: Vec<crate::fleet::fingerprints::Fingerprint>,
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
    let mut resolved = resolve(
        &fleet,
        &inputs.device_id,
        inputs.facts.device_type.as_deref(),
        &mut diags,
    );
    if inputs.parsed.is_none() {
        // Nothing reads this run's role files again: `resources` can then drop each entry.
        local.forget_roles();
    }

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
    // Each resource's kind and id → where it is first declared: (role, item) in `desired`.
    let mut seen: BTreeMap<(&'static str, String), (usize, usize)> = BTreeMap::new();
    for (n, role) in resolved.roles.iter_mut().enumerate() {
        let env = parsed.role_env(&role.name, || RoleEnv::new(tree.clone(), &role.name));
        let path = role.path();
        let mut plan = RolePlan {
            name: role.name.clone(),
            depends: role.file.depends.iter().map(|d| d.value.clone()).collect(),
            // At least one item an entry (more with `loop`): growing by doubling held up to twice.
            items: Vec::with_capacity(role.file.resources.len()),
        };
        fingerprints.reserve_exact(role.file.resources.len());
        for entry in resources(&mut role.file) {
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
                &entry,
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
                let key = (b.resource.kind(), b.resource.id());
                if let Some(&(r, i)) = seen.get(&key) {
                    let first = &desired.roles.get(r).unwrap_or(&plan).items[i].origin;
                    diags.push(
                        Diagnostic::new(
                            &path,
                            b.line,
                            format!("{} '{}' is also declared at {first}", key.0, key.1),
                        )
                        .fix("declare each resource once; two declarations would fight over it"),
                    );
                } else {
                    seen.insert(key, (n, plan.items.len()));
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
                    entry.line,
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

/// `file`'s resource entries. When this run holds the only copy of the parsed file (`tend
/// validate` shares it between devices), each entry is dropped once built, so that the parsed
/// role and the desired state built from it are not both held whole.
fn resources(file: &mut Arc<RoleFile>) -> impl Iterator<Item = Cow<'_, Entry>> {
    let owned = Arc::get_mut(file).map(|f| std::mem::take(&mut f.resources));
    let shared = match owned {
        Some(_) => &[][..],
        None => &file.resources[..],
    };
    let owned = owned.into_iter().flatten().map(Cow::Owned);
    owned.chain(shared.iter().map(Cow::Borrowed))
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

/// Every handler name of the device's roles → where it is first declared; handler names are
/// fleet-wide, so a second declaration is an error.
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
