//! `service`: a systemd unit's enablement, masking and running state.
//!
//! ```yaml
//! - service: nginx     # unit name; ".service" is appended when it has no unit suffix
//!   enabled: true      # optional: true | false
//!   masked: false      # optional: true | false
//!   state: started     # optional: started | stopped | restarted | reloaded
//! ```
//!
//! Enablement is read with `systemctl is-enabled`, which works on unit files and so also in a
//! chroot or an image build; an alias name is followed to the unit it points to. Whether a unit
//! runs is asked only when systemd is PID 1 of the root (`host.systemd_running`).
//!
//! Offline (a chroot, an image build) enable/disable/mask/unmask are real, but nothing is ever
//! started, stopped, restarted or reloaded: a change that consists only of that is reported as
//! skipped, on every run; `state: stopped` is already true, as no unit runs without systemd.
//! Online, a pending unit-file change (`units_changed`) is made known with a daemon-reload first.
//! `restarted` and `reloaded` are actions, not states: they always change, so they belong in
//! handlers (`restart lightdm: {service: lightdm, state: restarted}`). `reloaded` starts a unit
//! that is not running. A static, generated or transient unit cannot be enabled or disabled: it is
//! left as it is (mask it to keep it from starting). A masked unit is only unmasked when
//! `masked: false` says so; `enabled: true` or `state: started` on a masked unit is an error.

use serde::Deserialize;

use crate::error::{ResourceError, SpecError};
use crate::host::Host;
use crate::platform::systemctl::{
    alias_target, is_active, is_enabled, systemctl, Enablement, UNIT_DIRS,
};
use crate::resource::{Applied, Change, DynResource, Managed, Resource};
use crate::spec::{parse_spec, ResourceType, Sources};

pub const TYPE: ResourceType = ResourceType {
    name: "service",
    primary: "name",
    names: &["name"],
    build,
};

/// Unit types systemd knows (systemd.unit(5)); any other suffix is part of a service's name.
const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "slice",
    "scope",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    name: String,
    enabled: Option<bool>,
    masked: Option<bool>,
    state: Option<State>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Started,
    Stopped,
    Restarted,
    Reloaded,
}

#[derive(Debug)]
pub struct Service {
    unit: String,
    enabled: Option<bool>,
    masked: Option<bool>,
    state: Option<State>,
}

/// What `read` found: the unit acted on (an alias resolved), its enablement, and, only when
/// systemd runs, its `is-active` state.
#[derive(Clone, Debug)]
pub struct Actual {
    unit: String,
    enablement: Enablement,
    active: Option<String>,
}

/// One systemctl action, in the order they are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Unmask { runtime: bool },
    Enable,
    Disable { runtime: bool },
    Start,
    Stop,
    Restart,
    Reload,
    Mask,
}

impl Op {
    /// Acts on the running system: impossible, and skipped, without systemd.
    fn is_runtime(self) -> bool {
        matches!(self, Op::Start | Op::Stop | Op::Restart | Op::Reload)
    }
    fn verb(self) -> &'static str {
        match self {
            Op::Unmask { .. } => "unmask",
            Op::Enable => "enable",
            Op::Disable { .. } => "disable",
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Restart => "restart",
            Op::Reload => "reload",
            Op::Mask => "mask",
        }
    }
    fn past(self) -> &'static str {
        match self {
            Op::Unmask { .. } => "unmasked",
            Op::Enable => "enabled",
            Op::Disable { .. } => "disabled",
            Op::Start => "started",
            Op::Stop => "stopped",
            Op::Restart => "restarted",
            Op::Reload => "reloaded",
            Op::Mask => "masked",
        }
    }
    fn runtime_only(self) -> bool {
        matches!(
            self,
            Op::Unmask { runtime: true } | Op::Disable { runtime: true }
        )
    }
}

fn build(spec: serde_json::Value, _: &dyn Sources) -> Result<Box<dyn DynResource>, SpecError> {
    Ok(Box::new(Service::from_spec(parse_spec(spec)?)?))
}

/// The full unit name for `name`, or why it is not one.
fn unit_name(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.\\@-".contains(c));
    if !valid {
        return Err(format!(
            "'{name}' is not a systemd unit name; write the unit as `systemctl list-unit-files` shows it, \
             e.g. `service: nginx` or `service: fstrim.timer`"
        ));
    }
    let typed = name
        .rsplit_once('.')
        .is_some_and(|(stem, ext)| !stem.is_empty() && UNIT_TYPES.contains(&ext));
    Ok(if typed {
        name.to_string()
    } else {
        format!("{name}.service")
    })
}

impl Service {
    fn from_spec(spec: Spec) -> Result<Self, SpecError> {
        let unit = unit_name(&spec.name).map_err(|m| SpecError::at_key("service", m))?;
        if spec.enabled.is_none() && spec.masked.is_none() && spec.state.is_none() {
            return Err(SpecError::at_key(
                "service",
                format!("nothing to manage for {unit}: set `enabled`, `masked` or `state`"),
            ));
        }
        if spec.masked == Some(true) {
            if spec.enabled == Some(true) {
                return Err(SpecError::at_key(
                    "masked",
                    "a masked unit cannot be enabled; drop `enabled: true` or `masked: true`",
                ));
            }
            if matches!(
                spec.state,
                Some(State::Started | State::Restarted | State::Reloaded)
            ) {
                return Err(SpecError::at_key(
                    "state",
                    "a masked unit cannot run; use `state: stopped` or drop `masked: true`",
                ));
            }
        }
        Ok(Service {
            unit,
            enabled: spec.enabled,
            masked: spec.masked,
            state: spec.state,
        })
    }

    fn wants_unit(&self) -> bool {
        self.enabled == Some(true)
            || matches!(
                self.state,
                Some(State::Started | State::Restarted | State::Reloaded)
            )
    }

    /// Refuses states the spec cannot be applied to, with the fix. In check mode a missing unit
    /// is not an error: an earlier `package` resource would have installed it.
    fn check_usable(&self, actual: &Actual, check: bool) -> Result<(), ResourceError> {
        let unit = &actual.unit;
        match actual.enablement {
            Enablement::Bad => Err(ResourceError::other(format!(
                "systemd cannot load {unit}: its unit file is invalid; check it with `systemd-analyze verify {unit}`"
            ))),
            Enablement::NotFound if self.wants_unit() && !check => {
                let package = unit.split(['@', '.']).next().unwrap_or(unit);
                Err(ResourceError::other(format!(
                    "{unit} does not exist on the device (no unit file of that name is installed); install the \
                     package that ships it in an earlier resource (e.g. `package: {package}`), or check the name \
                     with `systemctl list-unit-files`"
                )))
            }
            e if e.is_masked() && self.masked != Some(false) && self.wants_unit() => Err(ResourceError::other(format!(
                "{unit} is masked on the device, so it cannot be enabled or started; add `masked: false` to unmask it"
            ))),
            Enablement::Indirect if self.enabled == Some(true) => Err(ResourceError::other(format!(
                "{unit} is not enabled itself but through other units (is-enabled says indirect: its [Install] \
                 section only has Also=, or it is a template); enable the unit it names instead, e.g. its \
                 .socket or .timer, or an instance such as name@instance.service"
            ))),
            _ => Ok(()),
        }
    }

    /// The actions that bring `actual` to the spec. `online`: systemd runs in the root.
    fn ops(&self, actual: &Actual, online: bool) -> Vec<Op> {
        use Enablement as E;
        let e = actual.enablement;
        let mut ops = Vec::new();
        let unmasking = self.masked == Some(false) && e.is_masked();
        if unmasking {
            ops.push(Op::Unmask {
                runtime: e == E::MaskedRuntime,
            });
        }
        // Once unmasked, the enablement underneath is unknown; enable and disable are idempotent.
        match self.enabled {
            Some(true)
                if unmasking
                    || matches!(
                        e,
                        E::Disabled
                            | E::Linked
                            | E::LinkedRuntime
                            | E::EnabledRuntime
                            | E::NotFound
                    ) =>
            {
                ops.push(Op::Enable)
            }
            Some(false) if unmasking || e == E::Enabled => ops.push(Op::Disable { runtime: false }),
            Some(false) if e == E::EnabledRuntime => ops.push(Op::Disable { runtime: true }),
            _ => {}
        }
        let active = actual.active.as_deref().unwrap_or("inactive");
        let up = matches!(active, "active" | "activating" | "reloading" | "refreshing");
        let down = matches!(active, "inactive" | "failed");
        match (self.state, online) {
            (None, _) | (Some(State::Stopped), false) => {}
            (Some(State::Started), false) => ops.push(Op::Start),
            (Some(State::Restarted), false) => ops.push(Op::Restart),
            (Some(State::Reloaded), false) => ops.push(Op::Reload),
            (Some(State::Started), true) if !up => ops.push(Op::Start),
            (Some(State::Stopped), true) if !down => ops.push(Op::Stop),
            (Some(State::Restarted), true) => ops.push(Op::Restart),
            (Some(State::Reloaded), true) => ops.push(if up { Op::Reload } else { Op::Start }),
            _ => {}
        }
        if self.masked == Some(true) && e != E::Masked {
            ops.push(Op::Mask);
        }
        ops
    }

    fn summary(&self, actual: &Actual, ops: &[Op], online: bool, reload: bool) -> String {
        let mut parts: Vec<String> = Vec::new();
        if online && reload {
            parts.push("daemon-reload".into());
        }
        for op in ops {
            parts.push(match (op.is_runtime() && !online, op.runtime_only()) {
                (true, _) => format!("{} skipped (offline)", op.verb()),
                (false, true) => format!("{} (runtime)", op.past()),
                (false, false) => op.past().to_string(),
            });
        }
        let mut text = parts.join("; ");
        if actual.unit != self.unit {
            text.push_str(&format!(" ({} is an alias of {})", self.unit, actual.unit));
        }
        if actual.enablement == Enablement::NotFound {
            text.push_str(&format!(" ({} is not installed yet)", actual.unit));
        }
        text
    }

    /// is-enabled, following an alias to its unit so that enablement is read and changed there.
    fn enablement(&self, host: &Host) -> Result<(String, Enablement), ResourceError> {
        let mut unit = self.unit.clone();
        for _ in 0..8 {
            let state = is_enabled(host, &unit)?;
            if state != Enablement::Alias {
                return Ok((unit, state));
            }
            match alias_target(host, &unit)? {
                Some(target) if target != unit => unit = target,
                _ => break,
            }
        }
        Err(ResourceError::other(format!(
            "{unit} is an alias whose unit tend cannot find in {}; name the unit it points to instead",
            UNIT_DIRS.join(", ")
        )))
    }
}

/// A systemctl command in the root. Offline, SYSTEMD_OFFLINE=1 keeps systemctl from talking to
/// any PID 1 it might reach through a bind-mounted /run, and makes it work on unit files only.
/// When systemd is not running and every operation needs it, the reason they are all skipped.
fn offline_only(ops: &[Op], online: bool) -> Option<String> {
    if online || !ops.iter().all(|op| op.is_runtime()) {
        return None;
    }
    let verbs: Vec<&str> = ops.iter().map(|op| op.verb()).collect();
    Some(format!(
        "offline: systemd is not running; {} skipped",
        verbs.join(", ")
    ))
}

impl Resource for Service {
    type Actual = Actual;

    fn kind(&self) -> &'static str {
        "service"
    }

    fn id(&self) -> String {
        self.unit.clone()
    }

    /// A unit this resource enables is disabled (and stopped) once undeclared; units it only
    /// starts, stops or masks were not tend's to begin with.
    fn managed(&self) -> Vec<Managed> {
        if self.enabled != Some(true) {
            return Vec::new();
        }
        vec![Managed {
            kind: "service".into(),
            key: self.unit.clone(),
            undo: crate::undo::Undo::stopped(&self.unit),
            only_if_created: false,
        }]
    }

    fn announce(&self, host: &Host) {
        let mut flags = host.flags();
        if !flags.units_announced.contains(&self.unit) {
            flags.units_announced.push(self.unit.clone());
        }
    }

    fn read(&self, host: &Host) -> Result<Actual, ResourceError> {
        let (unit, enablement) = self.enablement(host)?;
        let mut actual = Actual {
            unit,
            enablement,
            active: None,
        };
        self.check_usable(&actual, host.check)?;
        if host.systemd_running && self.state.is_some() {
            actual.active = Some(is_active(host, &actual.unit)?);
        }
        Ok(actual)
    }

    fn diff(&self, actual: &Actual, host: &Host) -> Option<Change> {
        let online = host.systemd_running;
        let ops = self.ops(actual, online);
        if ops.is_empty() {
            return None;
        }
        let reload = host.flags().units_changed;
        let change = Change::new(self.summary(actual, &ops, online, reload));
        Some(match offline_only(&ops, online) {
            Some(reason) => change.skipped(reason),
            None => change,
        })
    }

    fn apply(&self, actual: Actual, host: &Host) -> Result<Applied, ResourceError> {
        let online = host.systemd_running;
        let ops = self.ops(&actual, online);
        if let Some(reason) = offline_only(&ops, online) {
            return Ok(Applied::Skipped(reason));
        }
        let reload = online && host.flags().units_changed;
        if reload {
            host.run_command(
                systemctl(host, &["daemon-reload"]),
                "systemctl daemon-reload",
            )?;
            host.flags().units_changed = false;
        }
        for op in ops.into_iter().filter(|op| online || !op.is_runtime()) {
            let mut args = vec![op.verb()];
            if op.runtime_only() {
                args.push("--runtime");
            }
            args.push(&actual.unit);
            host.run_command(
                systemctl(host, &args),
                &format!("systemctl {}", args.join(" ")),
            )?;
        }
        Ok(Applied::Done)
    }
}

#[cfg(test)]
mod tests;
