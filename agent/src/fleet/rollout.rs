//! The `rollout:` block: how a stage's new head spreads over its devices in waves.
//!
//! ```yaml
//! rollout:
//!   production: {waves: 10, spacing: 2h}
//!   canary: {waves: 2, spacing: 30m}
//! ```
//!
//! Keys are stages (the branch a device follows, or the stage of `source.follow: tags`). It may
//! stand in `fleet.yaml` and in group files; a group's entry for a stage replaces fleet.yaml's
//! for the devices in the group, and a later group (higher precedence, see `resolve`) replaces
//! an earlier one's. A stage no entry names has no waves: every device applies a new head at once.
//!
//! The block is part of the signed commit like everything else, so whoever can hold a wave back
//! is whoever can sign; the device only does the arithmetic (`run::waves`).

use std::collections::BTreeMap;

use crate::diag::{Diagnostic, Diagnostics};
use crate::fleet::load::{Fleet, FLEET_FILE};
use crate::fleet::model::{RolloutBlock as Block, Value};
use crate::fleet::resolve::{groups, LoadedGroup};
use crate::source::tree::Tree;

/// The most waves a stage may have: more is a typo, not a rollout.
pub const MAX_WAVES: u64 = 1000;
/// The longest a rollout may take from wave 1 to the last wave.
pub const MAX_SPAN_SECONDS: u64 = 90 * 86400;

/// One stage's rollout, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waves {
    /// 1..=[`MAX_WAVES`].
    pub waves: u32,
    /// Seconds between one wave and the next.
    pub spacing: u64,
}

/// Stage → its rollout, for one device.
pub type Rollouts = BTreeMap<String, Waves>;

/// The rollouts of a device in `groups` (lowest precedence first): fleet.yaml's, each group's
/// replacing them stage by stage. Every entry of every file read is checked.
pub fn for_device(fleet: &Fleet, groups: &[LoadedGroup], diags: &mut Diagnostics) -> Rollouts {
    let mut all = Rollouts::new();
    if let Some(block) = &fleet.file.rollout {
        all.extend(check(FLEET_FILE, block, diags));
    }
    for g in groups {
        if let Some(block) = &g.file.rollout {
            all.extend(check(&Fleet::group_path(&g.name), block, diags));
        }
    }
    all
}

/// The rollouts of device `device_id` (of type `device_type`) in `tree`, read before the tree
/// is validated: fleet.yaml, the device file and its groups only. A problem here is also a
/// problem of validation, which refuses the tree; the caller then need not wait for it.
pub fn of_tree(
    tree: &dyn Tree,
    device_id: &str,
    device_type: Option<&str>,
) -> Result<Rollouts, Diagnostics> {
    let fleet = Fleet::open(tree)?;
    let mut diags = Diagnostics::default();
    let device = fleet.device(device_id).unwrap_or_else(|d| {
        diags.push(d);
        None
    });
    let groups = groups(&fleet, device_id, device.as_ref(), device_type, &mut diags);
    let rollouts = for_device(&fleet, &groups, &mut diags);
    diags.into_result(rollouts)
}

/// Checks a block of `file`; entries with a problem are left out and reported.
pub fn check(file: &str, block: &Block, diags: &mut Diagnostics) -> Rollouts {
    let mut out = Rollouts::new();
    for (stage, entry) in &block.0 {
        if stage.value.trim().is_empty() || stage.value.chars().any(char::is_control) {
            diags.push(
                Diagnostic::new(
                    file,
                    stage.referenced.line(),
                    "a rollout stage name is empty or has control characters",
                )
                .fix("name the branch (or tag stage) the waves are for, e.g. `production:`"),
            );
            continue;
        }
        let e = &entry.value;
        let waves = match count(&e.waves.value) {
            Ok(n) => Some(n),
            Err(m) => {
                diags.push(
                    Diagnostic::new(file, e.waves.referenced.line(), m).fix(format!(
                        "write a whole number of waves from 1 to {MAX_WAVES}, e.g. `waves: 10`"
                    )),
                );
                None
            }
        };
        let spacing = match seconds(&e.spacing.value) {
            Ok(s) => Some(s),
            Err(m) => {
                diags.push(
                    Diagnostic::new(file, e.spacing.referenced.line(), m)
                        .fix("write the time between waves, e.g. `spacing: 2h` (s, m, h or d)"),
                );
                None
            }
        };
        let (Some(waves), Some(spacing)) = (waves, spacing) else {
            continue;
        };
        let span = u64::from(waves - 1).saturating_mul(spacing);
        if span > MAX_SPAN_SECONDS {
            diags.push(
                Diagnostic::new(
                    file,
                    entry.referenced.line(),
                    format!(
                        "the rollout of `{}` takes {} days from its first wave to its last, more \
                         than the {} days allowed",
                        stage.value,
                        span / 86400,
                        MAX_SPAN_SECONDS / 86400
                    ),
                )
                .fix("use fewer waves or a shorter spacing"),
            );
            continue;
        }
        out.insert(stage.value.clone(), Waves { waves, spacing });
    }
    out
}

fn count(v: &Value) -> Result<u32, String> {
    match v.as_u64() {
        Some(n @ 1..=MAX_WAVES) => Ok(n as u32),
        _ => Err(format!(
            "`waves` must be a whole number from 1 to {MAX_WAVES}, not {v}"
        )),
    }
}

fn seconds(v: &Value) -> Result<u64, String> {
    let parsed = match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("`spacing: {n}` is not a whole number of seconds")),
        Value::String(s) => crate::clock::parse_duration(s)
            .map(|d| d.as_secs())
            .map_err(|e| format!("`spacing`: {e}")),
        other => Err(format!("`spacing` must be a duration, not {other}")),
    }?;
    if parsed == 0 {
        return Err("`spacing` must be longer than 0".into());
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> (Rollouts, Vec<String>) {
        #[derive(serde::Deserialize)]
        struct F {
            rollout: Block,
        }
        let f: F = crate::yaml::parse("fleet.yaml", yaml.as_bytes()).unwrap();
        let mut d = Diagnostics::default();
        let r = check("fleet.yaml", &f.rollout, &mut d);
        (r, d.0.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn stages_take_waves_and_spacing_with_units() {
        let (r, errors) = parse(
            "rollout:\n  production: {waves: 10, spacing: 2h}\n  canary: {waves: 2, spacing: 1800}\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            r["production"],
            Waves {
                waves: 10,
                spacing: 7200
            }
        );
        assert_eq!(r["canary"].spacing, 1800);
    }

    #[test]
    fn bad_waves_and_spacing_name_their_line_and_the_fix() {
        let (r, errors) = parse(
            "rollout:\n  production:\n    waves: 0\n    spacing: soon\n  canary: {waves: 2, spacing: 0}\n",
        );
        assert!(r.is_empty());
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("fleet.yaml:3: ") && errors[0].contains("from 1 to 1000"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("fleet.yaml:4: ") && errors[1].contains("e.g. `spacing: 2h`"),
            "{errors:?}"
        );
        assert!(errors[2].contains("longer than 0"), "{errors:?}");
    }

    #[test]
    fn a_rollout_longer_than_ninety_days_is_refused() {
        let (r, errors) = parse("rollout:\n  production: {waves: 100, spacing: 1d}\n");
        assert!(r.is_empty());
        assert!(
            errors[0].starts_with("fleet.yaml:2: ") && errors[0].contains("99 days"),
            "{errors:?}"
        );
    }
}
